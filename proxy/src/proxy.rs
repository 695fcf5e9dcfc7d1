//! The `Proxy`: the listeners it serves, one per service port, and the handle through which
//! endpoint changes arrive. A listener is bound once; updates swap its endpoint set under it,
//! so connections and listening sockets survive every change.

use crate::config::{ListenerConfig, Mode};
use crate::endpoint::EndpointSpec;
use crate::error::ProxyError;
use crate::metrics::{self, escape, Family};
use crate::service::ServicePort;
use crate::{http, tcp, transport};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// A running proxy. Dropping it stops its listeners (and admin listener); connections already
/// accepted finish on their own.
#[derive(Default)]
pub struct Proxy {
    services: Arc<RwLock<BTreeMap<String, Arc<ServicePort>>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Proxy {
    pub fn new() -> Self {
        Proxy::default()
    }

    /// Binds the listener and starts serving it; returns the address it is bound to.
    pub async fn listen(&self, config: ListenerConfig) -> Result<SocketAddr, ProxyError> {
        if self.service(&config.name).is_some() {
            return Err(ProxyError::DuplicateListener(config.name));
        }
        let listener = transport::bind(config.listen).await?;
        let local = listener.local_addr().map_err(|source| ProxyError::Bind {
            addr: config.listen,
            source,
        })?;
        let service = Arc::new(ServicePort::new(&config));
        self.services
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(config.name.clone(), service.clone());
        tracing::info!(service = %config.name, listen = %local, mode = ?config.mode, "listening");
        let server = Arc::new(http::server());
        let task = tokio::spawn(async move {
            loop {
                let (stream, client) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors, most likely: let connections finish.
                        tracing::warn!(service = %service.name, %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                transport::accepted(&stream);
                let service = service.clone();
                match service.mode {
                    Mode::Tcp => tokio::spawn(tcp::forward(service, stream, client)),
                    Mode::Http => {
                        tokio::spawn(http::serve(server.clone(), service, stream, client))
                    }
                };
            }
        });
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
        Ok(local)
    }

    /// Replaces the endpoints of a service port. Endpoints that stay keep their connections
    /// and state; removed ones drain.
    pub fn update(&self, service_port: &str, endpoints: &[EndpointSpec]) -> Result<(), ProxyError> {
        let service = self
            .service(service_port)
            .ok_or_else(|| ProxyError::UnknownServicePort(service_port.to_string()))?;
        service.update(endpoints);
        tracing::debug!(
            service = service_port,
            endpoints = endpoints.len(),
            "endpoints updated"
        );
        Ok(())
    }

    pub fn service(&self, service_port: &str) -> Option<Arc<ServicePort>> {
        self.services
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(service_port)
            .cloned()
    }

    /// The proxy's numbers in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        render(&self.services.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Serves `GET /metrics` on `addr`; returns the bound address.
    pub async fn serve_admin(&self, addr: SocketAddr) -> Result<SocketAddr, ProxyError> {
        let listener = transport::bind(addr).await?;
        let local = listener
            .local_addr()
            .map_err(|source| ProxyError::Bind { addr, source })?;
        let task = tokio::spawn(crate::admin::serve(listener, self.services.clone()));
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
        tracing::info!(admin = %local, "serving /metrics");
        Ok(local)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

pub(crate) fn render(services: &BTreeMap<String, Arc<ServicePort>>) -> String {
    let mut out = String::new();
    let service_sets: Vec<(String, &crate::metrics::Stats)> = services
        .values()
        .map(|s| (format!("service=\"{}\"", escape(&s.name)), &s.stats))
        .collect();
    metrics::render_stats(
        &mut out,
        "berth_proxy_service",
        "service port",
        &service_sets,
    );
    let endpoint_sets: Vec<_> = services
        .values()
        .map(|service| (service, service.endpoints()))
        .collect();
    let mut sets = Vec::new();
    for (service, endpoints) in &endpoint_sets {
        for endpoint in endpoints.iter() {
            let labels = format!(
                "service=\"{}\",endpoint=\"{}\"",
                escape(&service.name),
                endpoint.addr
            );
            sets.push((labels, &endpoint.stats, endpoint));
        }
    }
    let stats: Vec<_> = sets.iter().map(|(l, s, _)| (l.clone(), *s)).collect();
    metrics::render_stats(&mut out, "berth_proxy_endpoint", "endpoint", &stats);
    let now = Instant::now();
    Family {
        name: "berth_proxy_endpoint_ejected",
        help: "1 while outlier detection keeps the endpoint out of balancing.",
        kind: "gauge",
    }
    .header(&mut out);
    for (labels, _, endpoint) in &sets {
        let _ = writeln!(
            out,
            "berth_proxy_endpoint_ejected{{{labels}}} {}",
            u8::from(endpoint.is_ejected(now))
        );
    }
    Family {
        name: "berth_proxy_endpoint_terminating",
        help: "1 while the endpoint drains: work in flight finishes, no new work.",
        kind: "gauge",
    }
    .header(&mut out);
    for (labels, _, endpoint) in &sets {
        let _ = writeln!(
            out,
            "berth_proxy_endpoint_terminating{{{labels}}} {}",
            u8::from(endpoint.is_terminating())
        );
    }
    out
}
