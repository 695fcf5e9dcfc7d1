//! The `Proxy`: the listeners it serves, one per service port, and the handle through which
//! endpoint changes arrive. A listener is bound once; updates swap its endpoint set (or its
//! TLS config) under it, so connections and listening sockets survive every change. Removing
//! a listener closes its socket at once and lets its work in flight finish.
//!
//! A listener's tasks: the accept loop (on the first worker; it hands each connection to the
//! workers in turn, which run the TLS handshake if any and then serve it) and, with active
//! health checks, one checker (on a worker of its own, in turn).

use crate::config::{HealthCheckConfig, ListenerConfig, Mode};
use crate::endpoint::EndpointSpec;
use crate::error::ProxyError;
use crate::metrics::{self, escape, Family};
use crate::service::ServicePort;
use crate::tls::{self, TlsConfig};
use crate::worker::Workers;
use crate::{health, http, tcp, transport};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// A listener's TLS acceptor (none: plain), read for every connection it accepts.
type TlsSlot = Arc<RwLock<Option<TlsAcceptor>>>;

/// A running proxy. Dropping it stops its listeners, its admin listener and its workers
/// (and so every connection it serves).
pub struct Proxy {
    /// What the admin listener reports: the service ports being served.
    services: Arc<RwLock<BTreeMap<String, Arc<ServicePort>>>>,
    /// The tasks serving each listener, by service port name.
    listeners: Mutex<HashMap<String, Listener>>,
    workers: Arc<Workers>,
    /// Spreads the health checkers over the workers.
    turn: AtomicUsize,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// One listener's tasks and its TLS config.
struct Listener {
    service: Arc<ServicePort>,
    /// Owns the listening socket: it is closed when this task ends.
    accept: JoinHandle<()>,
    health: Option<JoinHandle<()>>,
    tls: TlsSlot,
}

impl Listener {
    fn abort(&self) {
        self.accept.abort();
        if let Some(health) = &self.health {
            health.abort();
        }
    }

    /// Stops the tasks and waits until they are gone (so the socket is closed).
    async fn stop(self) {
        self.abort();
        let _ = self.accept.await;
    }
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
            listeners: Mutex::default(),
            workers: Workers::start(workers).map_err(ProxyError::Workers)?,
            turn: AtomicUsize::new(0),
            tasks: Mutex::default(),
        })
    }

    /// Binds the listener and starts serving it (and checking its endpoints, with a health
    /// check); returns the address it is bound to. The TLS and health check configs are
    /// checked before anything binds.
    pub async fn listen(&self, config: ListenerConfig) -> Result<SocketAddr, ProxyError> {
        if self.lock_listeners().contains_key(&config.name) {
            return Err(ProxyError::DuplicateListener(config.name));
        }
        if let Some(check) = &config.health_check {
            check.path_and_query().map_err(|reason| {
                ProxyError::InvalidHealthCheck(format!("listener {:?}: {reason}", config.name))
            })?;
        }
        let tls: TlsSlot = Arc::new(RwLock::new(
            config
                .tls
                .as_ref()
                .map(|tls| tls.acceptor(config.mode))
                .transpose()?,
        ));
        let service = Arc::new(ServicePort::new(&config, self.workers.count()));
        // The listener is registered with the first worker's reactor, so it is made there;
        // accepted connections are handed to the workers in turn.
        let (bound, local) = oneshot::channel();
        let workers = self.workers.clone();
        let accepting = service.clone();
        let accepting_tls = tls.clone();
        let addr = config.listen;
        let accept = self.workers.handles()[0].spawn(async move {
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
            accept(listener, accepting, workers, accepting_tls).await;
        });
        let local = match local.await {
            Ok(Ok(local)) => local,
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(ProxyError::Workers(std::io::Error::other("worker stopped"))),
        };
        let health = config
            .health_check
            .clone()
            .map(|check| self.start_health_checks(&service, check));
        let listener = Listener {
            service: service.clone(),
            accept,
            health,
            tls,
        };
        let lost = {
            let mut listeners = self.lock_listeners();
            // Another listen of the same name may have won the race while this one bound.
            if listeners.contains_key(&config.name) {
                Some(listener)
            } else {
                listeners.insert(config.name.clone(), listener);
                self.services
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(config.name.clone(), service);
                None
            }
        };
        if let Some(listener) = lost {
            listener.stop().await;
            return Err(ProxyError::DuplicateListener(config.name));
        }
        tracing::info!(
            service = %config.name,
            listen = %local,
            mode = ?config.mode,
            tls = config.tls.is_some(),
            health_check = config.health_check.is_some(),
            "listening"
        );
        Ok(local)
    }

    fn start_health_checks(
        &self,
        service: &Arc<ServicePort>,
        check: HealthCheckConfig,
    ) -> JoinHandle<()> {
        let worker = self.turn.fetch_add(1, Relaxed) % self.workers.count();
        self.workers.handles()[worker].spawn(health::run(service.clone(), check))
    }

    /// Turns TLS on, off, or to a new certificate for a listener (a renewed Secret): new
    /// connections handshake with the new config, established ones keep theirs, so nothing
    /// is dropped.
    pub fn update_tls(&self, service_port: &str, tls: Option<TlsConfig>) -> Result<(), ProxyError> {
        let listeners = self.lock_listeners();
        let listener = listeners
            .get(service_port)
            .ok_or_else(|| ProxyError::UnknownServicePort(service_port.to_string()))?;
        let acceptor = tls
            .map(|tls| tls.acceptor(listener.service.mode))
            .transpose()?;
        tracing::info!(
            service = service_port,
            tls = acceptor.is_some(),
            "TLS config updated"
        );
        *listener.tls.write().unwrap_or_else(|p| p.into_inner()) = acceptor;
        Ok(())
    }

    /// Removes a listener: its socket is closed (the port may be bound again once this
    /// returns) and its service port leaves the metrics. Work in flight finishes: TCP
    /// connections run until they close, HTTP connections finish their request in flight
    /// and then close. Returns whether there was such a listener.
    pub async fn remove(&self, service_port: &str) -> bool {
        let listener = {
            let mut listeners = self.lock_listeners();
            let Some(listener) = listeners.remove(service_port) else {
                return false;
            };
            let service = self
                .services
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(service_port);
            if let Some(service) = service {
                service.close();
            }
            listener
        };
        listener.stop().await;
        tracing::info!(service = service_port, "listener removed");
        true
    }

    fn lock_listeners(&self) -> std::sync::MutexGuard<'_, HashMap<String, Listener>> {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
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

async fn accept(
    listener: TcpListener,
    service: Arc<ServicePort>,
    workers: Arc<Workers>,
    tls: TlsSlot,
) {
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
        let tls = tls.read().unwrap_or_else(|p| p.into_inner()).clone();
        worker.spawn(async move {
            let Ok(stream) = TcpStream::from_std(stream) else {
                return;
            };
            let Some(tls) = tls else {
                match service.mode {
                    Mode::Tcp => tcp::forward(service, stream, client).await,
                    Mode::Http => http::serve(server, service, stream, client, false).await,
                }
                return;
            };
            let stream = match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, tls.accept(stream)).await
            {
                Ok(Ok(stream)) => stream,
                failed => {
                    service.tls_handshake_errors.fetch_add(1, Relaxed);
                    let error = match failed {
                        Ok(Err(error)) => error.to_string(),
                        _ => "timed out".to_string(),
                    };
                    tracing::debug!(service = %service.name, %client, error, "TLS handshake failed");
                    return;
                }
            };
            match service.mode {
                Mode::Tcp => tcp::forward(service, stream, client).await,
                Mode::Http => http::serve(server, service, stream, client, true).await,
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
        for (_, listener) in self
            .listeners
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            listener.abort();
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
    Family {
        name: "berth_proxy_service_tls_handshake_errors_total",
        help: "TLS handshakes that failed or timed out per service port.",
        kind: "counter",
    }
    .header(&mut out);
    for service in services.values() {
        let _ = writeln!(
            out,
            "berth_proxy_service_tls_handshake_errors_total{{service=\"{}\"}} {}",
            escape(&service.name),
            service.tls_handshake_errors.load(Relaxed)
        );
    }
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
        name: "berth_proxy_endpoint_healthy",
        help: "1 while the endpoint passes its active health checks (always without checks).",
        kind: "gauge",
    }
    .header(&mut out);
    for (labels, _, endpoint) in &sets {
        let _ = writeln!(
            out,
            "berth_proxy_endpoint_healthy{{{labels}}} {}",
            u8::from(endpoint.is_healthy())
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
