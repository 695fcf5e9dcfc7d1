//! The node's service proxy: one `berth_proxy::Proxy` in the agent, serving every Service of
//! the cluster on this node, fed by watching Services, EndpointSlices and Secrets.
//!
//! ```text
//!  control plane ── list + watch ──▶ informers: Services, EndpointSlices, Secrets
//!                                        │ any change (debounced)
//!                                        ▼
//!                 desired::desired_listeners (pure) ──▶ desired::plan (pure) vs what is served
//!                                        │
//!        ┌──────────────────┬────────────┴───────┬──────────────────┐
//!   new: VIP on berth-svc,  endpoints changed:   gone: remove,      config changed
//!   then listen             update (hot, the     then drop the VIP  (mode, TLS, ...):
//!                           socket stays bound;                     remove + listen
//!                           a renewed certificate
//!                           too: update_tls)
//! ```
//!
//! Each TCP service port gets a listener per address kind: `clusterIP:port` (`@cluster`, the
//! VIP held by the node's service interface, see [`crate::network::services`]), for NodePort
//! and LoadBalancer Services also `nodeIP:nodePort` (`@node`), and for LoadBalancer ones
//! `nodeIP:port` (`@lb`: the nodes are the load balancer). Listener names are
//! `<namespace>/<service>:<port name or number>@<kind>`, as the proxy's metrics show them.
//! The port's `appProtocol` or name picks L7 (http, http2, grpc) or L4; TLS, active health
//! checks and the balancer come from annotations ([`annotations`]). Endpoints are the slices'
//! ready addresses; serving-and-terminating ones drain (no new work).
//!
//! A listener that cannot bind (its port taken, its VIP not there yet) is logged and tried
//! again every [`RETRY`]; nothing here stops the agent.

pub mod annotations;
pub mod desired;

pub use desired::{
    cluster_ips, desired_listeners, plan, Action, Desired, DesiredListener, NodeAddresses,
};

use super::api::ApiConnection;
use super::informer::Informer;
use crate::network::services::ServiceInterface;
use berth_proxy::{ListenerConfig, Proxy};
use desired::ListenerSpec;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tracing::{info, warn};

/// How long to let a burst of changes (a rollout's slices, a Service and its slice) settle
/// before acting on them.
const DEBOUNCE: Duration = Duration::from_millis(5);

/// How soon a listener that failed is tried again.
pub const RETRY: Duration = Duration::from_secs(1);

/// Serves the cluster's Services on this node until the task is dropped (which stops every
/// listener). The ClusterIPs stay on `interface` for the next agent.
pub async fn run(
    api: ApiConnection,
    node: NodeAddresses,
    metrics: Option<SocketAddr>,
    interface: ServiceInterface,
) {
    let proxy = match Proxy::new() {
        Ok(proxy) => proxy,
        Err(e) => {
            warn!("the service proxy cannot start: {e}; Services are not served on this node");
            return;
        }
    };
    if let Some(addr) = metrics {
        match proxy.serve_admin(addr).await {
            Ok(addr) => info!(%addr, "service proxy metrics at /metrics"),
            Err(e) => warn!("service proxy metrics: {e}; not served"),
        }
    }
    let mut services = Informer::<Service>::start(api.clone(), "Service");
    let mut slices = Informer::<EndpointSlice>::start(api.clone(), "EndpointSlice");
    let mut secrets = Informer::<Secret>::start(api, "Secret");
    let mut served = Served::default();
    loop {
        tokio::select! {
            () = services.changed() => {}
            () = slices.changed() => {}
            () = secrets.changed() => {}
            () = tokio::time::sleep(RETRY), if served.failing() => {}
        }
        tokio::time::sleep(DEBOUNCE).await;
        let desired = {
            let (services, slices, secrets) =
                (services.current(), slices.current(), secrets.current());
            if !(services.synced && slices.synced && secrets.synced) {
                continue;
            }
            desired_listeners(&services.objects, &slices.objects, &secrets.objects, &node)
        };
        served.apply(&proxy, &interface, desired).await;
    }
}

/// What the proxy serves, and what went wrong (each logged once, until it changes).
#[derive(Default)]
struct Served {
    listeners: BTreeMap<String, DesiredListener>,
    problems: BTreeSet<String>,
    /// Listener name → why it is not served.
    failures: BTreeMap<String, String>,
    interface_error: Option<String>,
}

impl Served {
    fn failing(&self) -> bool {
        !self.failures.is_empty() || self.interface_error.is_some()
    }

    async fn apply(&mut self, proxy: &Proxy, interface: &ServiceInterface, desired: Desired) {
        for problem in desired.problems.difference(&self.problems) {
            warn!("{problem}");
        }
        self.problems = desired.problems;
        // Until removed below, served listeners keep their VIPs.
        let vips: BTreeSet<IpAddr> = cluster_ips(&desired.listeners)
            .union(&cluster_ips(&self.listeners))
            .copied()
            .collect();
        // A listener on a ClusterIP binds only once the node holds the address.
        let mut interface_error = interface.add(&vips).await.err().map(|e| e.to_string());

        let mut failures = BTreeMap::new();
        for action in plan(&self.listeners, &desired.listeners) {
            match action {
                Action::Remove(name) => {
                    proxy.remove(&name).await;
                    self.listeners.remove(&name);
                }
                Action::Replace(name) => {
                    proxy.remove(&name).await;
                    self.listeners.remove(&name);
                    self.listen(proxy, &desired.listeners[&name], &mut failures)
                        .await;
                }
                Action::Listen(name) => {
                    self.listen(proxy, &desired.listeners[&name], &mut failures)
                        .await;
                }
                Action::Renew(name) => {
                    let wanted = &desired.listeners[&name];
                    let renewed = listener_config(&wanted.spec).and_then(|config| {
                        proxy
                            .update_tls(&name, config.tls)
                            .and_then(|()| proxy.update(&name, &wanted.endpoints))
                            .map_err(|e| e.to_string())
                    });
                    match renewed {
                        Ok(()) => {
                            self.listeners.insert(name, wanted.clone());
                        }
                        // The old certificate stays until the Secret holds a usable one.
                        Err(e) => {
                            failures.insert(name.clone(), e);
                        }
                    }
                }
                Action::Update(name) => {
                    let wanted = &desired.listeners[&name];
                    match proxy.update(&name, &wanted.endpoints) {
                        Ok(()) => {
                            self.listeners.insert(name, wanted.clone());
                        }
                        // Not there after all: listen again next time.
                        Err(e) => {
                            failures.insert(name.clone(), e.to_string());
                            self.listeners.remove(&name);
                        }
                    }
                }
            }
        }
        // Removed listeners' VIPs go once nothing listens on them.
        if interface_error.is_none() {
            let wanted: BTreeSet<IpAddr> = cluster_ips(&desired.listeners)
                .union(&cluster_ips(&self.listeners))
                .copied()
                .collect();
            interface_error = interface.retain(&wanted).await.err().map(|e| e.to_string());
        }

        for (name, error) in &failures {
            if self.failures.get(name) != Some(error) {
                warn!(listener = name, "not served: {error}; retrying");
            }
        }
        self.failures = failures;
        if interface_error.is_some() && interface_error != self.interface_error {
            warn!(
                interface = interface.name(),
                "service addresses: {}; retrying",
                interface_error.as_deref().unwrap_or_default()
            );
        }
        self.interface_error = interface_error;
    }

    async fn listen(
        &mut self,
        proxy: &Proxy,
        wanted: &DesiredListener,
        failures: &mut BTreeMap<String, String>,
    ) {
        let name = &wanted.spec.name;
        let bound = match listener_config(&wanted.spec) {
            Ok(config) => proxy.listen(config).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let result = bound.and_then(|_| {
            proxy
                .update(name, &wanted.endpoints)
                .map_err(|e| e.to_string())
        });
        match result {
            Ok(()) => {
                if self.failures.contains_key(name) {
                    info!(listener = name, "served after all");
                }
                self.listeners.insert(name.clone(), wanted.clone());
            }
            Err(error) => {
                // Half made (bound, but the endpoints not set): start over next time.
                proxy.remove(name).await;
                failures.insert(name.clone(), error);
            }
        }
    }
}

/// The proxy's configuration of a listener.
fn listener_config(spec: &ListenerSpec) -> Result<ListenerConfig, String> {
    let mut config = ListenerConfig::new(spec.name.clone(), spec.listen, spec.mode);
    config.upstream = spec.upstream;
    config.balancer = spec.balancer;
    if let Some(pem) = &spec.tls {
        let tls = berth_proxy::TlsConfig::from_pem(&pem.cert, &pem.key)
            .map_err(|e| format!("the certificate of secret {}: {e}", pem.secret))?;
        config.tls = Some(tls);
    }
    if let Some(check) = &spec.health_check {
        let mut health = berth_proxy::HealthCheckConfig {
            path: check.path.clone(),
            ..Default::default()
        };
        if let Some(interval_ms) = check.interval_ms {
            health.interval_ms = interval_ms;
        }
        config.health_check = Some(health);
    }
    Ok(config)
}
