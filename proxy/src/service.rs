//! A service port as the proxy serves it: its current endpoint set, the balancer that picks
//! from it, the policies (outlier ejection, retries and their budget, timeouts) and its
//! numbers. The set is swapped whole on update (readers clone an `Arc` of it), so an update
//! never waits for traffic and traffic never sees half an update. Endpoints that stay keep
//! their state (latency estimate, ejection, pooled connections); removed ones drain: no new
//! work, while work in flight holds them until it is done.

use crate::balancer::{self, Algorithm};
use crate::config::{ListenerConfig, Mode, UpstreamProtocol};
use crate::endpoint::{Endpoint, EndpointSpec};
use crate::metrics::Stats;
use crate::outlier::OutlierPolicy;
use crate::retry::{RetryBudget, RetryPolicy};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub type EndpointSet = Arc<Vec<Arc<Endpoint>>>;

#[derive(Debug)]
pub struct ServicePort {
    pub name: String,
    pub mode: Mode,
    pub upstream: UpstreamProtocol,
    pub algorithm: Algorithm,
    pub outlier: OutlierPolicy,
    pub retry: RetryPolicy,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    endpoints: RwLock<EndpointSet>,
    workers: usize,
    turn: AtomicUsize,
    budget: RetryBudget,
    pub stats: Stats,
    /// TLS handshakes that failed or timed out (TLS listeners only).
    pub tls_handshake_errors: AtomicU64,
    /// Set when the listener is removed: L7 connections finish their request and close.
    closing: watch::Sender<bool>,
}

impl ServicePort {
    /// `workers`: how many data-plane threads will use it (each gets its own pools).
    pub fn new(config: &ListenerConfig, workers: usize) -> Self {
        let service = ServicePort {
            name: config.name.clone(),
            mode: config.mode,
            upstream: config.upstream,
            algorithm: config.balancer,
            outlier: config.outlier.policy(),
            retry: config.retry.policy(),
            connect_timeout: config.connect_timeout(),
            request_timeout: config.request_timeout(),
            endpoints: RwLock::default(),
            workers,
            turn: AtomicUsize::new(0),
            budget: RetryBudget::new(config.retry.policy(), Instant::now()),
            stats: Stats::default(),
            tls_handshake_errors: AtomicU64::new(0),
            closing: watch::Sender::new(false),
        };
        let specs: Vec<_> = config
            .endpoints
            .iter()
            .copied()
            .map(EndpointSpec::ready)
            .collect();
        service.update(&specs);
        service
    }

    /// The current endpoint set.
    pub fn endpoints(&self) -> EndpointSet {
        self.endpoints
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the endpoint set. Endpoints present before and after keep their state.
    pub fn update(&self, specs: &[EndpointSpec]) {
        let mut current = self
            .endpoints
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut previous: HashMap<SocketAddr, &Arc<Endpoint>> =
            current.iter().map(|e| (e.addr, e)).collect();
        let mut next = Vec::with_capacity(specs.len());
        for spec in specs {
            if next.iter().any(|e: &Arc<Endpoint>| e.addr == spec.addr) {
                continue;
            }
            let endpoint = match previous.remove(&spec.addr) {
                Some(endpoint) => {
                    endpoint.set_terminating(spec.terminating);
                    endpoint.clone()
                }
                None => Arc::new(Endpoint::new(*spec, self.workers)),
            };
            next.push(endpoint);
        }
        for removed in previous.keys() {
            tracing::debug!(service = %self.name, endpoint = %removed, "endpoint removed; draining");
        }
        *current = Arc::new(next);
    }

    /// Chooses an endpoint for new work from `client`, skipping the ones in `tried`. Ready,
    /// available endpoints (passing active health checks, not ejected) first; if no ready one
    /// is available, all ready ones (better a chance than a certain failure, as Envoy's panic
    /// mode); terminating ones only when nothing else is left.
    pub fn pick(&self, client: IpAddr, tried: &[SocketAddr]) -> Option<Arc<Endpoint>> {
        let endpoints = self.endpoints();
        let now = Instant::now();
        let untried = |e: &Endpoint| !tried.contains(&e.addr);
        let tiers: [&dyn Fn(&Endpoint) -> bool; 3] = [
            &|e| !e.is_terminating() && untried(e) && e.is_available(now),
            &|e| !e.is_terminating() && untried(e),
            &|e| untried(e) && e.is_available(now),
        ];
        for eligible in tiers {
            let indices: Vec<usize> = (0..endpoints.len())
                .filter(|&i| eligible(&endpoints[i]))
                .collect();
            let chosen = match self.algorithm {
                Algorithm::PeakEwma => {
                    balancer::power_of_two(&indices, balancer::random(), balancer::random(), |i| {
                        endpoints[i].cost(now)
                    })
                }
                Algorithm::RoundRobin => {
                    balancer::round_robin(&indices, self.turn.fetch_add(1, Relaxed))
                }
                Algorithm::ClientIp => {
                    balancer::rendezvous(&indices, &client, |i| endpoints[i].addr)
                }
            };
            if let Some(i) = chosen {
                return Some(endpoints[i].clone());
            }
        }
        None
    }

    /// Records an outcome against the endpoint: latency estimate and outlier state.
    pub fn record(&self, endpoint: &Endpoint, latency: Duration, failed: bool) {
        let now = Instant::now();
        if failed {
            endpoint.stats.errors.fetch_add(1, Relaxed);
            if let Some(length) = endpoint.on_failure(latency, &self.outlier, now) {
                tracing::warn!(
                    service = %self.name,
                    endpoint = %endpoint.addr,
                    seconds = length.as_secs_f64(),
                    "endpoint ejected"
                );
            }
        } else {
            endpoint.on_success(latency, now);
        }
        endpoint.stats.latency.observe(latency);
    }

    /// The listener was removed: connections finish the work they have and close.
    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once the listener is removed.
    pub(crate) async fn closed(&self) {
        let mut closing = self.closing.subscribe();
        let _ = closing.wait_for(|closing| *closing).await;
    }

    /// A request came in: it pays into the retry budget.
    pub fn deposit(&self) {
        self.budget.deposit();
    }

    /// Whether the budget allows one more retry now (and pays for it).
    pub fn may_retry(&self) -> bool {
        self.budget.withdraw(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }

    fn service(algorithm: Algorithm, ports: &[u16]) -> ServicePort {
        let mut config = ListenerConfig::new("svc", addr(1), Mode::Http);
        config.balancer = algorithm;
        config.endpoints = ports.iter().map(|&p| addr(p)).collect();
        config.outlier.consecutive_failures = 2;
        ServicePort::new(&config, 1)
    }

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));

    #[test]
    fn update_keeps_the_state_of_endpoints_that_stay() {
        let service = service(Algorithm::RoundRobin, &[10, 11]);
        let kept = service.endpoints()[1].clone();
        service.update(&[EndpointSpec::ready(addr(11)), EndpointSpec::ready(addr(12))]);
        let now = service.endpoints();
        assert!(Arc::ptr_eq(&now[0], &kept));
        assert_eq!(now[1].addr, addr(12));
        assert_eq!(now.len(), 2);
    }

    #[test]
    fn ejected_tried_and_terminating_endpoints_get_no_new_work() {
        let service = service(Algorithm::RoundRobin, &[10, 11, 12]);
        let endpoints = service.endpoints();
        for _ in 0..2 {
            service.record(&endpoints[0], Duration::from_millis(1), true);
        }
        assert!(endpoints[0].is_ejected(Instant::now()));
        service.update(&[
            EndpointSpec::ready(addr(10)),
            EndpointSpec::ready(addr(11)),
            EndpointSpec {
                addr: addr(12),
                terminating: true,
            },
        ]);
        for _ in 0..10 {
            assert_eq!(service.pick(CLIENT, &[]).unwrap().addr, addr(11));
        }
        // 11 tried already: 10 is ejected but ready, and ready beats terminating.
        assert_eq!(service.pick(CLIENT, &[addr(11)]).unwrap().addr, addr(10));
        // Only a terminating endpoint left: better than nothing.
        assert_eq!(
            service.pick(CLIENT, &[addr(10), addr(11)]).unwrap().addr,
            addr(12)
        );
        assert!(service
            .pick(CLIENT, &[addr(10), addr(11), addr(12)])
            .is_none());
    }

    #[test]
    fn round_robin_is_exact_over_ready_endpoints() {
        let service = service(Algorithm::RoundRobin, &[10, 11, 12]);
        let mut counts = HashMap::new();
        for _ in 0..300 {
            *counts
                .entry(service.pick(CLIENT, &[]).unwrap().addr)
                .or_insert(0) += 1;
        }
        assert!(counts.values().all(|&n| n == 100), "{counts:?}");
    }

    #[test]
    fn peak_ewma_avoids_a_slow_endpoint() {
        let service = service(Algorithm::PeakEwma, &[10, 11, 12]);
        let endpoints = service.endpoints();
        service.record(&endpoints[2], Duration::from_millis(500), false);
        for e in &endpoints[..2] {
            service.record(e, Duration::from_millis(1), false);
        }
        // With three endpoints, the slowest one loses every pairing it is drawn into.
        assert!((0..200).all(|_| service.pick(CLIENT, &[]).unwrap().addr != addr(12)));
    }

    #[test]
    fn client_ip_affinity_is_sticky() {
        let service = service(Algorithm::ClientIp, &[10, 11, 12]);
        let first = service.pick(CLIENT, &[]).unwrap().addr;
        assert!((0..20).all(|_| service.pick(CLIENT, &[]).unwrap().addr == first));
    }
}
