//! What the node's proxy should serve, decided from the cluster's Services, EndpointSlices and
//! Secrets alone (pure: no socket, no clock), and the steps that take the proxy from what it
//! serves to that ([`plan`]).

use super::annotations;
use crate::agent::informer::Objects;
use berth_proxy::{Algorithm, EndpointSpec, Mode, UpstreamProtocol};
use k8s_openapi::api::core::v1::{Secret, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The node's own addresses, where NodePort and LoadBalancer listeners bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddresses {
    pub internal_ip: IpAddr,
}

/// Which of a service port's addresses a listener serves; also the listener name's suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AddressKind {
    /// `clusterIP:port`, the VIP held by the node's service interface.
    Cluster,
    /// `nodeIP:nodePort` (NodePort and LoadBalancer).
    Node,
    /// `nodeIP:port` (LoadBalancer: the load balancer is the nodes themselves).
    LoadBalancer,
}

impl AddressKind {
    pub fn suffix(self) -> &'static str {
        match self {
            AddressKind::Cluster => "@cluster",
            AddressKind::Node => "@node",
            AddressKind::LoadBalancer => "@lb",
        }
    }
}

/// A listener as the cluster asks for it: every field comparable, so that a change of any
/// (mode, certificate, ...) is seen and the listener made again. [`ListenerSpec::config`]
/// turns it into the proxy's `ListenerConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    pub name: String,
    pub kind: AddressKind,
    pub listen: SocketAddr,
    pub mode: Mode,
    pub upstream: UpstreamProtocol,
    pub balancer: Algorithm,
    pub tls: Option<TlsPem>,
    pub health_check: Option<HealthCheck>,
}

/// The certificate chain and key a TLS port is served with, from a Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsPem {
    /// `namespace/name` of the Secret.
    pub secret: String,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key in a log line.
        write!(
            f,
            "TlsPem({}, {} bytes of certificate)",
            self.secret,
            self.cert.len()
        )
    }
}

/// Active health checking of a listener's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `GET path` expecting a 2xx, or `None`: a TCP connect.
    pub path: Option<String>,
    /// `None`: the proxy's default.
    pub interval_ms: Option<u64>,
}

/// One listener and the endpoints behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredListener {
    pub spec: ListenerSpec,
    /// Sorted by address; each address once.
    pub endpoints: Vec<EndpointSpec>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub listeners: BTreeMap<String, DesiredListener>,
    /// What the agent could not honour, one line each (the caller logs those that are new).
    pub problems: BTreeSet<String>,
}

/// The ClusterIPs `listeners` serve: the addresses the node's service interface must hold.
pub fn cluster_ips(listeners: &BTreeMap<String, DesiredListener>) -> BTreeSet<IpAddr> {
    listeners
        .values()
        .filter(|l| l.spec.kind == AddressKind::Cluster)
        .map(|l| l.spec.listen.ip())
        .collect()
}

/// Every listener the node serves: one per TCP service port and address kind.
pub fn desired_listeners(
    services: &Objects<Service>,
    slices: &Objects<EndpointSlice>,
    secrets: &Objects<Secret>,
    node: &NodeAddresses,
) -> Desired {
    let mut desired = Desired::default();
    let mut slices_of: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for ((namespace, _), slice) in slices {
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(SERVICE_NAME_LABEL));
        if let Some(service) = service {
            slices_of
                .entry((namespace.as_str(), service.as_str()))
                .or_default()
                .push(slice);
        }
    }
    for ((namespace, name), service) in services {
        let slices = slices_of
            .get(&(namespace.as_str(), name.as_str()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        service_listeners(
            namespace,
            name,
            service,
            slices,
            secrets,
            node,
            &mut desired,
        );
    }
    desired
}

fn service_listeners(
    namespace: &str,
    name: &str,
    service: &Service,
    slices: &[&EndpointSlice],
    secrets: &Objects<Secret>,
    node: &NodeAddresses,
    desired: &mut Desired,
) {
    let Some(spec) = service.spec.as_ref() else {
        return;
    };
    let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or("");
    // ExternalName is a DNS alias and a headless Service has no virtual address: no proxy.
    if service_type == "ExternalName" || cluster_ip == "None" {
        return;
    }
    let mut problem = |text: String| {
        desired
            .problems
            .insert(format!("service {namespace}/{name}: {text}"));
    };
    let cluster_ip = match cluster_ip {
        // Not allocated yet: the ClusterIP listeners come with the address.
        "" => None,
        ip => match ip.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                problem(format!("clusterIP {ip:?} is not an IP address"));
                None
            }
        },
    };
    let options = annotations::ServiceOptions::of(service, secrets, namespace);
    for text in &options.problems {
        problem(text.clone());
    }
    let mut balancer = options.balancer.unwrap_or_default();
    if spec.session_affinity.as_deref() == Some("ClientIP") {
        balancer = Algorithm::ClientIp;
    }
    let ports = spec.ports.as_deref().unwrap_or_default();
    for port in ports {
        let id = port
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| port.port.to_string());
        let protocol = port.protocol.as_deref().unwrap_or("TCP");
        if protocol != "TCP" {
            problem(format!("port {id}: {protocol} is not proxied (TCP only)"));
            continue;
        }
        let port_name = port.name.as_deref().unwrap_or("");
        let (mut mode, mut upstream) =
            Mode::for_service_port(port_name, port.app_protocol.as_deref());
        let tls = match options.tls_for(port) {
            annotations::PortTls::None => None,
            annotations::PortTls::Terminate(pem) => {
                // TLS is terminated here and HTTP spoken behind.
                if mode == Mode::Tcp {
                    (mode, upstream) = (Mode::Http, UpstreamProtocol::Http1);
                }
                Some(pem)
            }
            annotations::PortTls::Unavailable(why) => {
                // Better no listener than one that serves a TLS port in the clear.
                problem(format!("port {id}: not served: {why}"));
                continue;
            }
        };
        let endpoints = endpoints_for(port, slices, &mut problem);
        let mut addresses = Vec::new();
        if let Some(ip) = cluster_ip {
            addresses.push((
                AddressKind::Cluster,
                SocketAddr::new(ip, port_number(port.port)),
            ));
        }
        if matches!(service_type, "NodePort" | "LoadBalancer") {
            if let Some(node_port) = port.node_port.filter(|p| *p > 0) {
                let addr = SocketAddr::new(node.internal_ip, port_number(node_port));
                addresses.push((AddressKind::Node, addr));
            }
        }
        if service_type == "LoadBalancer" {
            let addr = SocketAddr::new(node.internal_ip, port_number(port.port));
            addresses.push((AddressKind::LoadBalancer, addr));
        }
        for (kind, listen) in addresses {
            let name = format!("{namespace}/{name}:{id}{}", kind.suffix());
            let spec = ListenerSpec {
                name: name.clone(),
                kind,
                listen,
                mode,
                upstream,
                balancer,
                tls: tls.clone(),
                health_check: options.health_check.clone(),
            };
            desired.listeners.insert(
                name,
                DesiredListener {
                    spec,
                    endpoints: endpoints.clone(),
                },
            );
        }
    }
}

/// Validation keeps ports in 1..=65535; anything else becomes 0 and fails to bind loudly.
fn port_number(port: i32) -> u16 {
    u16::try_from(port).unwrap_or(0)
}

/// The endpoints of one service port: from each slice, the slice port of the same name gives
/// the number; ready endpoints take new work, serving and terminating ones only drain.
fn endpoints_for(
    port: &ServicePort,
    slices: &[&EndpointSlice],
    problem: &mut impl FnMut(String),
) -> Vec<EndpointSpec> {
    let name = port.name.as_deref().unwrap_or("");
    // An address in two slices (a pod moving between them) counts as ready if either says so.
    let mut found: BTreeMap<SocketAddr, bool> = BTreeMap::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let number = slice.ports.iter().flatten().find_map(|p| {
            let same_name = p.name.as_deref().unwrap_or("") == name;
            let tcp = p.protocol.as_deref().unwrap_or("TCP") == "TCP";
            (same_name && tcp).then_some(p.port).flatten()
        });
        let Some(number) = number.and_then(|n| u16::try_from(n).ok()) else {
            continue;
        };
        for endpoint in slice.endpoints.iter().flatten() {
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            // Unset conditions mean "ready" (discovery.k8s.io/v1), serving follows ready.
            let ready = conditions.ready.unwrap_or(true);
            let serving = conditions.serving.unwrap_or(ready);
            let terminating = conditions.terminating.unwrap_or(false);
            let draining = if ready {
                false
            } else if serving && terminating {
                true
            } else {
                continue;
            };
            for address in &endpoint.addresses {
                match address.parse::<IpAddr>() {
                    Ok(ip) => {
                        let entry = found.entry(SocketAddr::new(ip, number)).or_insert(draining);
                        *entry &= draining;
                    }
                    Err(_) => problem(format!(
                        "endpointslice {}: address {address:?} is not an IP address",
                        slice.metadata.name.as_deref().unwrap_or("")
                    )),
                }
            }
        }
    }
    found
        .into_iter()
        .map(|(addr, terminating)| EndpointSpec { addr, terminating })
        .collect()
}

/// One step towards the desired listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop serving the listener (connections in flight finish).
    Remove(String),
    /// Its configuration changed (mode, address, ...): remove, then listen again.
    Replace(String),
    /// Only its certificate changed (a renewed Secret): swapped under the bound listener,
    /// established connections keep theirs; endpoints updated too.
    Renew(String),
    /// A new listener.
    Listen(String),
    /// Only its endpoints changed: swapped under the bound listener.
    Update(String),
}

/// The steps from `current` (what the proxy serves) to `desired`, in the order to take them:
/// removals first, so that an address a removed listener held is free for a new one.
pub fn plan(
    current: &BTreeMap<String, DesiredListener>,
    desired: &BTreeMap<String, DesiredListener>,
) -> Vec<Action> {
    let mut actions: Vec<Action> = current
        .keys()
        .filter(|name| !desired.contains_key(*name))
        .map(|name| Action::Remove(name.clone()))
        .collect();
    let mut listens = Vec::new();
    let mut updates = Vec::new();
    for (name, wanted) in desired {
        match current.get(name) {
            None => listens.push(Action::Listen(name.clone())),
            Some(served) if served.spec != wanted.spec => {
                let renewed = served.spec.tls.is_some()
                    && wanted.spec.tls.is_some()
                    && ListenerSpec {
                        tls: None,
                        ..served.spec.clone()
                    } == ListenerSpec {
                        tls: None,
                        ..wanted.spec.clone()
                    };
                if renewed {
                    updates.push(Action::Renew(name.clone()));
                } else {
                    actions.push(Action::Replace(name.clone()));
                }
            }
            Some(served) if served.endpoints != wanted.endpoints => {
                updates.push(Action::Update(name.clone()))
            }
            Some(_) => {}
        }
    }
    actions.extend(listens);
    actions.extend(updates);
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node() -> NodeAddresses {
        NodeAddresses {
            internal_ip: "10.77.0.1".parse().unwrap(),
        }
    }

    fn objects<T: serde::de::DeserializeOwned>(values: &[serde_json::Value]) -> Objects<T> {
        values
            .iter()
            .map(|v| {
                let key = (
                    v["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    v["metadata"]["name"].as_str().unwrap().to_string(),
                );
                (key, serde_json::from_value(v.clone()).unwrap())
            })
            .collect()
    }

    fn service(name: &str, spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"namespace": "default", "name": name}, "spec": spec})
    }

    fn slice(
        name: &str,
        service: &str,
        ports: serde_json::Value,
        endpoints: serde_json::Value,
    ) -> serde_json::Value {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"namespace": "default", "name": name,
                            "labels": {SERVICE_NAME_LABEL: service}},
               "addressType": "IPv4", "ports": ports, "endpoints": endpoints})
    }

    fn endpoint(ip: &str, ready: bool, serving: bool, terminating: bool) -> serde_json::Value {
        json!({"addresses": [ip],
               "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
    }

    fn desired(services: &[serde_json::Value], slices: &[serde_json::Value]) -> Desired {
        desired_with(services, slices, &[])
    }

    fn desired_with(
        services: &[serde_json::Value],
        slices: &[serde_json::Value],
        secrets: &[serde_json::Value],
    ) -> Desired {
        desired_listeners(
            &objects(services),
            &objects(slices),
            &objects(secrets),
            &node(),
        )
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_port_gets_a_listener_per_address_kind() {
        let services = [
            service(
                "web",
                json!({"clusterIP": "10.96.0.10",
                "ports": [{"name": "http", "port": 80, "targetPort": 8080},
                          {"name": "metrics", "port": 9090}]}),
            ),
            service(
                "np",
                json!({"type": "NodePort", "clusterIP": "10.96.0.11",
                "ports": [{"port": 80, "nodePort": 30080}]}),
            ),
            service(
                "lb",
                json!({"type": "LoadBalancer", "clusterIP": "10.96.0.12",
                "ports": [{"name": "http", "port": 8000, "nodePort": 30081}]}),
            ),
        ];
        let desired = desired(&services, &[]);
        let listeners: Vec<(&str, SocketAddr)> = desired
            .listeners
            .values()
            .map(|l| (l.spec.name.as_str(), l.spec.listen))
            .collect();
        assert_eq!(
            listeners,
            [
                ("default/lb:http@cluster", addr("10.96.0.12:8000")),
                ("default/lb:http@lb", addr("10.77.0.1:8000")),
                ("default/lb:http@node", addr("10.77.0.1:30081")),
                ("default/np:80@cluster", addr("10.96.0.11:80")),
                ("default/np:80@node", addr("10.77.0.1:30080")),
                ("default/web:http@cluster", addr("10.96.0.10:80")),
                ("default/web:metrics@cluster", addr("10.96.0.10:9090")),
            ]
        );
        let web = &desired.listeners["default/web:http@cluster"].spec;
        assert_eq!((web.mode, web.balancer), (Mode::Http, Algorithm::PeakEwma));
        assert_eq!(
            desired.listeners["default/web:metrics@cluster"].spec.mode,
            Mode::Tcp
        );
        assert_eq!(
            cluster_ips(&desired.listeners)
                .into_iter()
                .collect::<Vec<_>>(),
            ["10.96.0.10", "10.96.0.11", "10.96.0.12"].map(|ip| ip.parse::<IpAddr>().unwrap())
        );
        assert!(desired.problems.is_empty(), "{:?}", desired.problems);
    }

    #[test]
    fn headless_external_name_and_unallocated_services_get_no_cluster_listener() {
        let services = [
            service(
                "headless",
                json!({"clusterIP": "None", "ports": [{"port": 80}]}),
            ),
            service(
                "ext",
                json!({"type": "ExternalName", "externalName": "example.org"}),
            ),
            service(
                "new",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30000}]}),
            ),
            service(
                "udp",
                json!({"clusterIP": "10.96.0.20",
                "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}),
            ),
        ];
        let desired = desired(&services, &[]);
        assert_eq!(
            desired.listeners.keys().collect::<Vec<_>>(),
            ["default/new:80@node"]
        );
        assert_eq!(
            desired.problems.iter().collect::<Vec<_>>(),
            ["service default/udp: port dns: UDP is not proxied (TCP only)"]
        );
    }

    #[test]
    fn endpoints_come_from_the_slices_port_of_the_same_name() {
        let services = [service(
            "web",
            json!({"clusterIP": "10.96.0.10",
            "ports": [{"name": "http", "port": 80, "targetPort": "web"},
                      {"name": "admin", "port": 81}]}),
        )];
        let slices = [
            // Pods whose named port resolves to 8080...
            slice(
                "web-a",
                "web",
                json!([{"name": "http", "port": 8080, "protocol": "TCP"},
                       {"name": "admin", "port": 9000}]),
                json!([
                    endpoint("10.244.1.2", true, true, false),
                    endpoint("10.244.1.3", false, true, true),
                    endpoint("10.244.1.4", false, false, false),
                    endpoint("10.244.1.5", false, false, true)
                ]),
            ),
            // ... and others to 8081, in a slice of their own.
            slice(
                "web-b",
                "web",
                json!([{"name": "http", "port": 8081}]),
                json!([endpoint("10.244.2.2", true, true, false),
                       {"addresses": ["10.244.2.3"]}]),
            ),
            slice(
                "other",
                "other",
                json!([{"name": "http", "port": 1}]),
                json!([endpoint("10.244.3.2", true, true, false)]),
            ),
        ];
        let desired = desired(&services, &slices);
        let http = &desired.listeners["default/web:http@cluster"].endpoints;
        assert_eq!(
            http,
            &[
                EndpointSpec::ready(addr("10.244.1.2:8080")),
                EndpointSpec {
                    addr: addr("10.244.1.3:8080"),
                    terminating: true
                },
                EndpointSpec::ready(addr("10.244.2.2:8081")),
                // No conditions at all: ready, as discovery.k8s.io/v1 says.
                EndpointSpec::ready(addr("10.244.2.3:8081")),
            ]
        );
        let admin = &desired.listeners["default/web:admin@cluster"].endpoints;
        assert_eq!(
            admin,
            &[
                EndpointSpec::ready(addr("10.244.1.2:9000")),
                EndpointSpec {
                    addr: addr("10.244.1.3:9000"),
                    terminating: true
                },
            ]
        );
    }

    #[test]
    fn an_unnamed_port_matches_the_unnamed_slice_port() {
        let services = [service(
            "db",
            json!({"clusterIP": "10.96.0.30",
            "ports": [{"port": 5432}]}),
        )];
        let slices = [slice(
            "db-x",
            "db",
            json!([{"port": 5433}]),
            json!([endpoint("10.244.1.9", true, true, false)]),
        )];
        let desired = desired(&services, &slices);
        assert_eq!(
            desired.listeners["default/db:5432@cluster"].endpoints,
            [EndpointSpec::ready(addr("10.244.1.9:5433"))]
        );
    }

    #[test]
    fn an_address_in_two_slices_is_ready_if_one_says_so() {
        let services = [service(
            "web",
            json!({"clusterIP": "10.96.0.10",
            "ports": [{"name": "http", "port": 80}]}),
        )];
        let slices = [
            slice(
                "web-a",
                "web",
                json!([{"name": "http", "port": 8080}]),
                json!([endpoint("10.244.1.2", false, true, true)]),
            ),
            slice(
                "web-b",
                "web",
                json!([{"name": "http", "port": 8080}]),
                json!([endpoint("10.244.1.2", true, true, false)]),
            ),
        ];
        let desired = desired(&services, &slices);
        assert_eq!(
            desired.listeners["default/web:http@cluster"].endpoints,
            [EndpointSpec::ready(addr("10.244.1.2:8080"))]
        );
    }

    #[test]
    fn annotations_and_session_affinity_choose_the_balancer() {
        let mut rr = service(
            "rr",
            json!({"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}),
        );
        rr["metadata"]["annotations"] = json!({"service.berth.dev/load-balancer": "round-robin"});
        let sticky = service(
            "sticky",
            json!({"clusterIP": "10.96.0.2",
            "sessionAffinity": "ClientIP", "ports": [{"port": 80}]}),
        );
        let mut bad = service(
            "bad",
            json!({"clusterIP": "10.96.0.3", "ports": [{"port": 80}]}),
        );
        bad["metadata"]["annotations"] = json!({"service.berth.dev/load-balancer": "random"});
        let desired = desired(&[rr, sticky, bad], &[]);
        let balancer = |name: &str| desired.listeners[name].spec.balancer;
        assert_eq!(balancer("default/rr:80@cluster"), Algorithm::RoundRobin);
        assert_eq!(balancer("default/sticky:80@cluster"), Algorithm::ClientIp);
        assert_eq!(balancer("default/bad:80@cluster"), Algorithm::PeakEwma);
        assert_eq!(desired.problems.len(), 1, "{:?}", desired.problems);
        assert!(desired.problems.iter().next().unwrap().contains("random"));
    }

    #[test]
    fn health_check_annotations() {
        let mut http = service(
            "h",
            json!({"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}),
        );
        http["metadata"]["annotations"] = json!({
            "service.berth.dev/health-check-path": "/healthz",
            "service.berth.dev/health-check-interval": "2s"});
        let mut tcp = service(
            "t",
            json!({"clusterIP": "10.96.0.2", "ports": [{"port": 80}]}),
        );
        tcp["metadata"]["annotations"] = json!({"service.berth.dev/health-check": "tcp"});
        let none = service(
            "n",
            json!({"clusterIP": "10.96.0.3", "ports": [{"port": 80}]}),
        );
        let desired = desired(&[http, tcp, none], &[]);
        let check = |name: &str| desired.listeners[name].spec.health_check.clone();
        assert_eq!(
            check("default/h:80@cluster"),
            Some(HealthCheck {
                path: Some("/healthz".into()),
                interval_ms: Some(2000)
            })
        );
        assert_eq!(
            check("default/t:80@cluster"),
            Some(HealthCheck {
                path: None,
                interval_ms: None
            })
        );
        assert_eq!(check("default/n:80@cluster"), None);
    }

    fn tls_secret(name: &str) -> serde_json::Value {
        // "cert" and "key", base64.
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
               "metadata": {"namespace": "default", "name": name},
               "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}})
    }

    #[test]
    fn tls_ports_terminate_with_the_secrets_certificate() {
        let mut web = service(
            "web",
            json!({"clusterIP": "10.96.0.1",
            "ports": [{"name": "https", "port": 443}, {"name": "http", "port": 80},
                      {"name": "alt", "port": 8443}]}),
        );
        web["metadata"]["annotations"] = json!({"service.berth.dev/tls-secret": "web-tls"});
        let desired = desired_with(&[web.clone()], &[], &[tls_secret("web-tls")]);
        let https = &desired.listeners["default/web:https@cluster"].spec;
        let pem = https.tls.as_ref().expect("TLS on the port named https");
        assert_eq!(
            (pem.cert.as_slice(), pem.key.as_slice()),
            (&b"cert"[..], &b"key"[..])
        );
        // TLS is terminated: HTTP behind it.
        assert_eq!(
            (https.mode, https.upstream),
            (Mode::Http, UpstreamProtocol::Http1)
        );
        assert!(desired.listeners["default/web:http@cluster"]
            .spec
            .tls
            .is_none());
        assert!(desired.listeners["default/web:alt@cluster"]
            .spec
            .tls
            .is_none());

        // tls-ports by name and number instead of the default.
        web["metadata"]["annotations"]["service.berth.dev/tls-ports"] = json!("http, 8443");
        let desired = desired_with(&[web.clone()], &[], &[tls_secret("web-tls")]);
        let tls = |name: &str| desired.listeners[name].spec.tls.is_some();
        assert!(!tls("default/web:https@cluster"));
        assert!(tls("default/web:http@cluster"));
        assert!(tls("default/web:alt@cluster"));

        // Without the Secret, the TLS ports are not served at all (never in the clear).
        let desired = desired_with(&[web], &[], &[]);
        assert!(!desired.listeners.contains_key("default/web:http@cluster"));
        assert!(desired.listeners.contains_key("default/web:https@cluster"));
        assert_eq!(desired.problems.len(), 2, "{:?}", desired.problems);
        assert!(desired.problems.iter().all(|p| p.contains("web-tls")));
    }

    #[test]
    fn https_ports_without_a_tls_secret_pass_through() {
        let web = service(
            "web",
            json!({"clusterIP": "10.96.0.1",
            "ports": [{"name": "https", "port": 443}]}),
        );
        let desired = desired(&[web], &[]);
        let https = &desired.listeners["default/web:https@cluster"].spec;
        assert_eq!((https.mode, https.tls.is_some()), (Mode::Tcp, false));
    }

    fn listener(name: &str, port: u16, endpoints: &[&str]) -> (String, DesiredListener) {
        let spec = ListenerSpec {
            name: name.into(),
            kind: AddressKind::Cluster,
            listen: SocketAddr::new("10.96.0.1".parse().unwrap(), port),
            mode: Mode::Tcp,
            upstream: UpstreamProtocol::Http1,
            balancer: Algorithm::PeakEwma,
            tls: None,
            health_check: None,
        };
        let endpoints = endpoints
            .iter()
            .map(|e| EndpointSpec::ready(addr(e)))
            .collect();
        (name.to_string(), DesiredListener { spec, endpoints })
    }

    #[test]
    fn plan_removes_first_replaces_changed_configs_and_updates_endpoints_in_place() {
        let current: BTreeMap<_, _> = [
            listener("gone", 1, &[]),
            listener("same", 2, &["10.244.0.2:80"]),
            listener("moved", 3, &[]),
            listener("scaled", 4, &["10.244.0.2:80"]),
        ]
        .into();
        let desired: BTreeMap<_, _> = [
            listener("same", 2, &["10.244.0.2:80"]),
            listener("moved", 30, &[]),
            listener("scaled", 4, &["10.244.0.2:80", "10.244.0.3:80"]),
            listener("new", 5, &[]),
        ]
        .into();
        assert_eq!(
            plan(&current, &desired),
            [
                Action::Remove("gone".into()),
                Action::Replace("moved".into()),
                Action::Listen("new".into()),
                Action::Update("scaled".into()),
            ]
        );
        assert!(plan(&desired, &desired).is_empty());
    }

    #[test]
    fn a_new_certificate_is_swapped_in_and_turning_tls_on_replaces() {
        let pem = |cert: &str| TlsPem {
            secret: "default/web-tls".into(),
            cert: cert.as_bytes().to_vec(),
            key: b"key".to_vec(),
        };
        let with_tls = |cert: Option<&str>| {
            let (name, mut listener) = listener("web", 443, &[]);
            listener.spec.tls = cert.map(pem);
            BTreeMap::from([(name, listener)])
        };
        assert_eq!(
            plan(&with_tls(Some("old")), &with_tls(Some("new"))),
            [Action::Renew("web".into())]
        );
        assert_eq!(
            plan(&with_tls(None), &with_tls(Some("new"))),
            [Action::Replace("web".into())]
        );
    }
}
