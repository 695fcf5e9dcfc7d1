//! The `Proxy`: the listeners it serves, one per service port, and the handle through which
//! endpoint changes arrive. A listener is bound once; updates swap its endpoint set under it,
//! so connections and listening sockets survive every change.

use crate::config::{ListenerConfig, Mode};
use crate::endpoint::EndpointSpec;
use crate::error::ProxyError;
use crate::metrics::{self, escape, Family};
use crate::service::ServicePort;
use crate::worker::Workers;
use crate::{http, tcp, transport};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running proxy. Dropping it stops its listeners, its admin listener and its workers
/// (and so every connection it serves).
pub struct Proxy {
    services: Arc<RwLock<BTreeMap<String, Arc<ServicePort>>>>,
    workers: Arc<Workers>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Proxy {
    /// A proxy with one worker thread per core.
    pub fn new() -> Result<Self, ProxyError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Proxy::with_workers(cores)
    }

    pub fn with_workers(workers: usize) -> Result<Self, ProxyError> {
        Ok(Proxy {
            services: Arc::default(),
            workers: Workers::start(workers).map_err(ProxyError::Workers)?,
            tasks: Mutex::default(),
        })
    }

    /// Binds the listener and starts serving it; returns the address it is bound to.
    pub async fn listen(&self, config: ListenerConfig) -> Result<SocketAddr, ProxyError> {
        if self.service(&config.name).is_some() {
            return Err(ProxyError::DuplicateListener(config.name));
        }
        let service = Arc::new(ServicePort::new(&config, self.workers.count()));
        // The listener is registered with the first worker's reactor, so it is made there;
        // accepted connections are handed to the workers in turn.
        let (bound, local) = oneshot::channel();
        let workers = self.workers.clone();
        let accepting = service.clone();
        let addr = config.listen;
        let task = self.workers.handles()[0].spawn(async move {
            let listener = match transport::bind(addr).await {
                Ok(listener) => listener,
                Err(error) => {
                    let _ = bound.send(Err(error));
                    return;
                }
            };
            let local = listener
                .local_addr()
                .map_err(|source| ProxyError::Bind { addr, source });
            let _ = bound.send(local);
            accept(listener, accepting, workers).await;
        });
        let local = local
            .await
            .map_err(|_| ProxyError::Workers(std::io::Error::other("worker stopped")))??;
        self.services
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(config.name.clone(), service);
        tracing::info!(service = %config.name, listen = %local, mode = ?config.mode, "listening");
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

async fn accept(listener: TcpListener, service: Arc<ServicePort>, workers: Arc<Workers>) {
    let server = Arc::new(http::server());
    let mut turn = 0usize;
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
        let worker = &workers.handles()[turn % workers.count()];
        turn = turn.wrapping_add(1);
        // Moving a socket to another worker's reactor goes through its std form.
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let (service, server) = (service.clone(), server.clone());
        worker.spawn(async move {
            let Ok(stream) = TcpStream::from_std(stream) else {
                return;
            };
            match service.mode {
                Mode::Tcp => tcp::forward(service, stream, client).await,
                Mode::Http => http::serve(server, service, stream, client).await,
            }
        });
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
