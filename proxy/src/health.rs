//! Active health checks. One checker per service port (not per worker) probes every endpoint
//! of the current set each interval: a TCP connect, or an HTTP GET of a path in the service's
//! upstream protocol (HTTP/1.1 or h2c) that passes on 2xx and 3xx. A failing endpoint gets no
//! new work until it passes again; this is independent of passive outlier ejection
//! (`outlier`), and an endpoint takes new work only when both allow it.
//!
//! ```text
//!  checker (one task per service port)
//!    every interval, for each endpoint of the set, concurrently, within the timeout:
//!      TCP connect | GET path --> CheckState (pure):
//!        Healthy --unhealthy_threshold failures in a row--> Unhealthy (no new work)
//!        Unhealthy --healthy_threshold passes in a row--> Healthy
//! ```
//!
//! New endpoints start healthy (as HAProxy's servers do): they come from the endpoints
//! controller as Ready, so their readiness probe passed already, and holding them back would
//! delay every scale-up by `healthy_threshold` intervals. They are checked at the next tick.
//! Endpoints removed from the set are no longer checked; the checker stops with its listener.

use crate::config::{HealthCheckConfig, UpstreamProtocol};
use crate::endpoint::Endpoint;
use crate::service::ServicePort;
use crate::transport;
use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{header, Request, Response, StatusCode, Uri};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

const USER_AGENT: &str = "berth-proxy-health-check";

/// An endpoint's standing with the active checks, as a pure state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckState {
    healthy: bool,
    /// Results in a row that contradict `healthy`.
    streak: u32,
}

impl Default for CheckState {
    fn default() -> Self {
        CheckState {
            healthy: true,
            streak: 0,
        }
    }
}

impl CheckState {
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Records one check's result; returns the new standing when it changed.
    pub fn observe(&mut self, passed: bool, config: &HealthCheckConfig) -> Option<bool> {
        if passed == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let threshold = if self.healthy {
            config.unhealthy_threshold
        } else {
            config.healthy_threshold
        };
        if self.streak < threshold.max(1) {
            return None;
        }
        self.healthy = passed;
        self.streak = 0;
        Some(passed)
    }
}

/// Checks the service port's endpoints until the task is aborted (the listener removed).
pub(crate) async fn run(service: Arc<ServicePort>, config: HealthCheckConfig) {
    let target = match config.path_and_query() {
        Ok(target) => target,
        Err(reason) => {
            // `Proxy::listen` refuses such a config; nothing to check with.
            tracing::warn!(service = %service.name, reason, "health checks off");
            return;
        }
    };
    let mut ticks = tokio::time::interval(config.interval());
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // Dropping the set (when the task is aborted) aborts the checks in flight.
        let mut checks = JoinSet::new();
        for endpoint in service.endpoints().iter().cloned() {
            let target = target.clone();
            let (upstream, timeout) = (service.upstream, config.timeout());
            checks.spawn(async move {
                let check = probe(endpoint.addr, upstream, target, timeout);
                let outcome = match tokio::time::timeout(timeout, check).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
                };
                (endpoint, outcome)
            });
        }
        while let Some(checked) = checks.join_next().await {
            let Ok((endpoint, outcome)) = checked else {
                continue;
            };
            record(&service, &endpoint, outcome, &config);
        }
    }
}

fn record(
    service: &ServicePort,
    endpoint: &Endpoint,
    outcome: Result<(), String>,
    config: &HealthCheckConfig,
) {
    let passed = outcome.is_ok();
    match (endpoint.on_health_check(passed, config), outcome) {
        (Some(true), _) => {
            tracing::info!(service = %service.name, endpoint = %endpoint.addr, "endpoint passes its health checks again");
        }
        (Some(false), Err(reason)) => {
            tracing::warn!(service = %service.name, endpoint = %endpoint.addr, reason, "endpoint failed its health checks: no new work");
        }
        (_, Err(reason)) => {
            tracing::debug!(service = %service.name, endpoint = %endpoint.addr, reason, "health check failed");
        }
        _ => {}
    }
}

/// One check: connect, then (with a path) one request on that connection, which is closed
/// after the response head.
async fn probe(
    addr: SocketAddr,
    upstream: UpstreamProtocol,
    target: Option<PathAndQuery>,
    timeout: Duration,
) -> Result<(), String> {
    let stream = transport::connect(addr, timeout)
        .await
        .map_err(|error| error.to_string())?;
    let Some(target) = target else {
        return Ok(());
    };
    let io = TokioIo::new(stream);
    let failed = |error: hyper::Error| error.to_string();
    let status = match upstream {
        UpstreamProtocol::Http1 => {
            let (mut sender, connection) = http1::handshake(io).await.map_err(failed)?;
            let request = Request::get(Uri::from(target))
                .header(header::HOST, addr.to_string())
                .header(header::USER_AGENT, USER_AGENT)
                .header(header::CONNECTION, "close")
                .body(Empty::<Bytes>::new())
                .map_err(|error| error.to_string())?;
            exchange(sender.send_request(request), connection).await?
        }
        UpstreamProtocol::Http2 => {
            let (mut sender, connection) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(failed)?;
            let uri = Uri::builder()
                .scheme("http")
                .authority(addr.to_string())
                .path_and_query(target)
                .build()
                .map_err(|error| error.to_string())?;
            let request = Request::get(uri)
                .header(header::USER_AGENT, USER_AGENT)
                .body(Empty::<Bytes>::new())
                .map_err(|error| error.to_string())?;
            exchange(sender.send_request(request), connection).await?
        }
    };
    passes(status)
}

/// Drives the connection until the response head arrives.
async fn exchange(
    response: impl Future<Output = Result<Response<Incoming>, hyper::Error>>,
    connection: impl Future<Output = Result<(), hyper::Error>>,
) -> Result<StatusCode, String> {
    tokio::pin!(response);
    tokio::select! {
        biased;
        response = &mut response => response.map(|r| r.status()).map_err(|e| e.to_string()),
        ended = connection => match response.await {
            // With `Connection: close` the connection ends as soon as the response is in.
            Ok(response) => Ok(response.status()),
            Err(error) => Err(ended.err().unwrap_or(error).to_string()),
        },
    }
}

fn passes(status: StatusCode) -> Result<(), String> {
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HealthCheckConfig {
        HealthCheckConfig {
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            ..HealthCheckConfig::default()
        }
    }

    #[test]
    fn thresholds_count_results_in_a_row() {
        let mut state = CheckState::default();
        assert!(state.is_healthy());
        assert_eq!(state.observe(false, &config()), None);
        assert_eq!(state.observe(false, &config()), None);
        // A pass in between starts the count again.
        assert_eq!(state.observe(true, &config()), None);
        assert_eq!(state.observe(false, &config()), None);
        assert_eq!(state.observe(false, &config()), None);
        assert_eq!(state.observe(false, &config()), Some(false));
        assert!(!state.is_healthy());
        assert_eq!(state.observe(false, &config()), None);
        assert_eq!(state.observe(true, &config()), None);
        assert_eq!(state.observe(false, &config()), None);
        assert_eq!(state.observe(true, &config()), None);
        assert_eq!(state.observe(true, &config()), Some(true));
        assert!(state.is_healthy());
    }

    #[test]
    fn a_zero_threshold_acts_as_one() {
        let config = HealthCheckConfig {
            healthy_threshold: 0,
            unhealthy_threshold: 0,
            ..HealthCheckConfig::default()
        };
        let mut state = CheckState::default();
        assert_eq!(state.observe(false, &config), Some(false));
        assert_eq!(state.observe(true, &config), Some(true));
    }

    #[test]
    fn success_and_redirects_pass() {
        assert!(passes(StatusCode::OK).is_ok());
        assert!(passes(StatusCode::NO_CONTENT).is_ok());
        assert!(passes(StatusCode::FOUND).is_ok());
        assert!(passes(StatusCode::NOT_FOUND).is_err());
        assert_eq!(
            passes(StatusCode::SERVICE_UNAVAILABLE),
            Err("status 503 Service Unavailable".to_string())
        );
    }
}
