//! The endpoints controller: each Service's ready and serving pod addresses as EndpointSlices
//! (discovery.k8s.io/v1), which every node's proxy reads; and the addresses LoadBalancer
//! Services answer on.
//!
//! ```text
//!  every member: wake on a Service/EndpointSlice/Pod/Node change (watch hub) or every second
//!    └── leads? ── Services, EndpointSlices, Pods, Nodes (crate::cache, this loop's own)
//!          ├─ per Service with a selector: desired_slices(service, its pods)
//!          │     └─ reconcile(with the slices it has) ─▶ Apply changed/new slices · Delete extra
//!          ├─ slices this controller made whose Service is gone ─▶ Delete
//!          └─ per LoadBalancer Service: load_balancer_status(nodes) ─▶ UpdateStatus if different
//!                 ──▶ one Command::Batch ──▶ Proposer ──▶ Raft (awaited before the next pass)
//! ```
//!
//! A slice holds the endpoints of one set of resolved ports: a named targetPort may resolve
//! to different numbers on different pods, and those pods go into different slices, at most
//! [`MAX_ENDPOINTS_PER_SLICE`] each, as Kubernetes' EndpointSlice controller does. Endpoint
//! conditions: ready = pod Ready and not terminating, serving = pod Ready (also while
//! terminating), terminating = deletionTimestamp set; `publishNotReadyAddresses` makes every
//! endpoint ready. Pods without an IP and finished pods are left out.
//!
//! Slices are written only when their content differs from what is stored, with the
//! resourceVersion read (a stale write fails and the next pass decides again). Services
//! without a selector are left alone: their slices are the user's. A Service whose slices
//! this controller made is found by label and controller reference; slices whose Service (by
//! uid) is gone are deleted.

use super::{controller_of, is_ready, is_terminating, name_suffix};
use crate::cache::{Cache, CacheSource, LeaderCache};
use crate::raft::proposer::Proposer;
use crate::store::{Command, CommandResult};
use berth_proto::k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Node, ObjectReference, Pod, Service, ServicePort,
    ServiceStatus,
};
use berth_proto::k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort, EndpointSlice,
};
use berth_proto::k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use berth_proto::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use berth_proto::{Kind, ObjectKey};
use openraft::ServerState;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming who manages a slice, and this controller's value of it.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.berth.dev";
/// Kubernetes' default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// How often a leader reconciles when nothing wakes it: self-healing after failed writes.
const TICK: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// Deciders

/// The slices `service` should have for `pods` (any pods: those of other namespaces or not
/// selected are passed over), unnamed (see [`reconcile`]); empty for Services without a
/// selector and ExternalName Services. With no endpoints, one slice without ports or
/// endpoints stands for the Service, as in Kubernetes.
pub fn desired_slices<'a>(
    service: &Service,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Vec<EndpointSlice> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    let selector = match &spec.selector {
        Some(selector) if !selector.is_empty() => selector,
        _ => return Vec::new(),
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let service_ports = spec.ports.as_deref().unwrap_or_default();
    // Pods by the ports they resolve to, each group in name order.
    let mut groups: BTreeMap<Vec<PortKey>, Vec<Endpoint>> = BTreeMap::new();
    let mut selected: Vec<&Pod> = pods
        .into_iter()
        .filter(|pod| pod.metadata.namespace.as_deref().unwrap_or_default() == namespace)
        .filter(|pod| {
            let labels = pod.metadata.labels.as_ref();
            selector
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .collect();
    selected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for pod in selected {
        let Some(endpoint) = endpoint(pod, publish_not_ready) else {
            continue;
        };
        let ports = service_ports
            .iter()
            .filter_map(|port| resolve(port, pod))
            .collect();
        groups.entry(ports).or_default().push(endpoint);
    }
    let mut slices = Vec::new();
    for (ports, endpoints) in groups {
        let ports: Vec<EndpointPort> = ports.into_iter().map(PortKey::into_port).collect();
        for chunk in endpoints.chunks(MAX_ENDPOINTS_PER_SLICE) {
            slices.push(slice(service, Some(ports.clone()), chunk.to_vec()));
        }
    }
    if slices.is_empty() {
        slices.push(slice(service, None, Vec::new()));
    }
    slices
}

/// A resolved port, ordered and compared as a group key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PortKey {
    name: String,
    port: i32,
    protocol: String,
    app_protocol: Option<String>,
}

impl PortKey {
    fn into_port(self) -> EndpointPort {
        EndpointPort {
            name: Some(self.name),
            port: Some(self.port),
            protocol: Some(self.protocol),
            app_protocol: self.app_protocol,
        }
    }

    fn of(port: &EndpointPort) -> PortKey {
        PortKey {
            name: port.name.clone().unwrap_or_default(),
            port: port.port.unwrap_or_default(),
            protocol: port.protocol.clone().unwrap_or_else(|| "TCP".into()),
            app_protocol: port.app_protocol.clone(),
        }
    }
}

/// The port `pod` serves a Service port on: the targetPort's number, or the number of the
/// container port it names (with the same protocol); `None` when the pod has no such port.
fn resolve(port: &ServicePort, pod: &Pod) -> Option<PortKey> {
    let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
    let number = match &port.target_port {
        None => port.port,
        Some(IntOrString::Int(number)) => *number,
        Some(IntOrString::String(name)) => {
            let containers = pod.spec.as_ref().map(|s| s.containers.as_slice());
            let ports = containers.into_iter().flatten();
            let ports = ports.flat_map(|c| c.ports.iter().flatten());
            let named = ports.into_iter().find(|p| {
                p.name.as_deref() == Some(name.as_str())
                    && p.protocol.as_deref().unwrap_or("TCP") == protocol
            });
            named?.container_port
        }
    };
    Some(PortKey {
        name: port.name.clone().unwrap_or_default(),
        port: number,
        protocol,
        app_protocol: port.app_protocol.clone(),
    })
}

/// `pod` as an endpoint, if it has an address and has not finished.
fn endpoint(pod: &Pod, publish_not_ready: bool) -> Option<Endpoint> {
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let ip = status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
    let terminating = is_terminating(pod);
    let serving = is_ready(pod);
    Some(Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(publish_not_ready || (serving && !terminating)),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    })
}

/// An unnamed slice of `service` holding `endpoints` on `ports`.
fn slice(
    service: &Service,
    ports: Option<Vec<EndpointPort>>,
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    let meta = &service.metadata;
    let mut labels = meta.labels.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: meta.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Service".into(),
                name,
                uid: meta.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(endpoints),
        ports,
    }
}

/// Whether this controller made `slice` (its Service is its controller owner).
fn managed(slice: &EndpointSlice) -> bool {
    let labels = slice.metadata.labels.as_ref();
    labels
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .map(String::as_str)
        == Some(MANAGED_BY)
}

/// The writes that turn a Service's `existing` slices into `desired` ones.
#[derive(Debug, Default, PartialEq)]
pub struct SliceChanges {
    /// New slices and changed ones (these with the resourceVersion they replace).
    pub apply: Vec<EndpointSlice>,
    /// Slices no longer needed.
    pub delete: Vec<ObjectMeta>,
}

/// Names `desired` after the `existing` slices with the same ports (reusing them), new
/// ones by `new_name`, and says what to write: only what differs.
pub fn reconcile(
    desired: Vec<EndpointSlice>,
    existing: &[&EndpointSlice],
    mut new_name: impl FnMut() -> String,
) -> SliceChanges {
    let ports_of = |slice: &EndpointSlice| -> Vec<PortKey> {
        slice.ports.iter().flatten().map(PortKey::of).collect()
    };
    let mut unused: Vec<&EndpointSlice> = existing.to_vec();
    unused.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut changes = SliceChanges::default();
    for mut slice in desired {
        let ports = ports_of(&slice);
        // The stored slice with these ports whose endpoints match best: an unchanged slice
        // stays unchanged.
        let same_ports = unused
            .iter()
            .enumerate()
            .filter(|(_, e)| ports_of(e) == ports);
        let best = same_ports.max_by_key(|(i, e)| (overlap(e, &slice), std::cmp::Reverse(*i)));
        match best.map(|(i, _)| i) {
            Some(i) => {
                let old = unused.remove(i);
                slice.metadata.name = old.metadata.name.clone();
                slice.metadata.resource_version = old.metadata.resource_version.clone();
                if !same_content(old, &slice) {
                    changes.apply.push(slice);
                }
            }
            None => {
                slice.metadata.name = Some(new_name());
                changes.apply.push(slice);
            }
        }
    }
    changes.delete = unused.into_iter().map(|s| s.metadata.clone()).collect();
    changes
}

/// How many of `desired`'s addresses `old` holds too.
fn overlap(old: &EndpointSlice, desired: &EndpointSlice) -> usize {
    let addresses = |s: &EndpointSlice| -> HashSet<String> {
        let endpoints = s.endpoints.iter().flatten();
        endpoints.flat_map(|e| e.addresses.clone()).collect()
    };
    addresses(old).intersection(&addresses(desired)).count()
}

fn same_content(old: &EndpointSlice, new: &EndpointSlice) -> bool {
    let empty = |e: &Option<Vec<Endpoint>>| e.as_ref().is_none_or(Vec::is_empty);
    let endpoints_same =
        old.endpoints == new.endpoints || (empty(&old.endpoints) && empty(&new.endpoints));
    let ports_same = old.ports == new.ports
        || (old.ports.as_ref().is_none_or(Vec::is_empty)
            && new.ports.as_ref().is_none_or(Vec::is_empty));
    endpoints_same
        && ports_same
        && old.address_type == new.address_type
        && old.metadata.labels == new.metadata.labels
        && old.metadata.owner_references == new.metadata.owner_references
}

/// The status a LoadBalancer Service should have: every Ready node's InternalIP as an
/// ingress address (the proxy answers there); other types have no load balancer.
pub fn load_balancer_status<'a>(
    service: &Service,
    nodes: impl IntoIterator<Item = &'a Node>,
) -> ServiceStatus {
    let spec = service.spec.as_ref();
    let load_balancer = spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
    let mut status = service.status.clone().unwrap_or_default();
    if !load_balancer {
        status.load_balancer = None;
        return status;
    }
    let ips: BTreeSet<&str> = nodes
        .into_iter()
        .filter(|node| node_ready(node))
        .filter_map(|node| {
            let addresses = node.status.as_ref()?.addresses.as_ref()?;
            let internal = addresses.iter().find(|a| a.type_ == "InternalIP")?;
            Some(internal.address.as_str())
        })
        .collect();
    let ingress: Vec<LoadBalancerIngress> = ips
        .into_iter()
        .map(|ip| LoadBalancerIngress {
            ip: Some(ip.to_string()),
            ..LoadBalancerIngress::default()
        })
        .collect();
    status.load_balancer = Some(LoadBalancerStatus {
        ingress: (!ingress.is_empty()).then_some(ingress),
    });
    status
}

fn node_ready(node: &Node) -> bool {
    let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    let ready = conditions
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready");
    ready.is_some_and(|c| c.status == "True")
}

/// Whether two statuses say the same: an absent load balancer and one without addresses
/// alike.
fn same_status(old: Option<&ServiceStatus>, new: &ServiceStatus) -> bool {
    let said = |s: Option<&ServiceStatus>| {
        let lb = s.and_then(|s| s.load_balancer.as_ref());
        let ingress = lb.and_then(|lb| lb.ingress.clone()).unwrap_or_default();
        (ingress, s.and_then(|s| s.conditions.clone()))
    };
    said(old) == said(Some(new))
}

// ---------------------------------------------------------------------------------------------
// The async shell

/// Runs on every member; acts while it leads. Ends when Raft shuts down.
pub async fn run(source: CacheSource, proposer: Proposer) {
    const KINDS: &[Kind] = &[Kind::Service, Kind::EndpointSlice, Kind::Pod, Kind::Node];
    let raft = source.raft.clone();
    let mut cache = LeaderCache::new(source, KINDS);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            alive = cache.changed() => if !alive { return },
        }
        let state = raft.metrics().borrow().state;
        match state {
            ServerState::Shutdown => return,
            ServerState::Leader => {}
            _ => {
                cache.stand_down();
                continue;
            }
        }
        let result = match cache.up_to_date().await {
            Ok((cache, _)) => pass(cache, &proposer).await,
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = result {
            tracing::warn!("endpoints controller: {error}");
        }
    }
}

/// The writes one pass over the cache needs.
fn decide(cache: &Cache) -> Vec<Command> {
    let objects = &cache.objects;
    let mut pods_by_namespace: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for ((namespace, _), pod) in &objects.pods {
        pods_by_namespace.entry(namespace).or_default().push(pod);
    }
    let mut slices_by_owner: BTreeMap<&str, Vec<&EndpointSlice>> = BTreeMap::new();
    let taken: HashSet<(&str, &str)> = objects
        .endpoint_slices
        .keys()
        .map(|(ns, name)| (ns.as_str(), name.as_str()))
        .collect();
    for slice in objects.endpoint_slices.values().filter(|s| managed(s)) {
        if let Some(owner) = controller_of(&slice.metadata) {
            slices_by_owner.entry(&owner.uid).or_default().push(slice);
        }
    }
    let mut commands = Vec::new();
    let mut live = HashSet::new();
    let now = jiff::Timestamp::now().to_string();
    for ((namespace, name), service) in &objects.services {
        let uid = service.metadata.uid.as_deref().unwrap_or_default();
        live.insert(uid);
        let status = load_balancer_status(service, objects.nodes.values());
        if !same_status(service.status.as_ref(), &status) {
            commands.push(Command::UpdateStatus {
                key: ObjectKey::new(Kind::Service, namespace, name),
                status: serde_json::to_value(&status).expect("statuses serialise"),
                resource_version: resource_version(&service.metadata),
                uid: service.metadata.uid.clone(),
            });
        }
        let has_selector = service
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .is_some_and(|s| !s.is_empty());
        if !has_selector {
            continue; // the user's slices, or none
        }
        let pods = pods_by_namespace
            .get(namespace.as_str())
            .into_iter()
            .flatten()
            .copied();
        let desired = desired_slices(service, pods);
        let existing: Vec<&EndpointSlice> = slices_by_owner
            .get(uid)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        let mut fresh = HashSet::new();
        let new_name = || loop {
            let random = uuid::Uuid::new_v4().as_u64_pair().0;
            let candidate = format!("{name}-{}", name_suffix(random));
            if !taken.contains(&(namespace.as_str(), candidate.as_str()))
                && fresh.insert(candidate.clone())
            {
                return candidate;
            }
        };
        let changes = reconcile(desired, &existing, new_name);
        for slice in changes.apply {
            tracing::debug!(namespace = %namespace, slice = ?slice.metadata.name, "writing EndpointSlice");
            commands.push(Command::Apply {
                object: serde_json::to_value(&slice).expect("slices serialise"),
                uid: uuid::Uuid::new_v4().to_string(),
                now: now.clone(),
            });
        }
        for meta in changes.delete {
            commands.push(delete(&meta));
        }
    }
    // Slices whose Service is gone (or was replaced by a namesake).
    for (uid, slices) in &slices_by_owner {
        if !live.contains(uid) {
            commands.extend(slices.iter().map(|s| delete(&s.metadata)));
        }
    }
    commands
}

fn delete(meta: &ObjectMeta) -> Command {
    Command::Delete {
        key: ObjectKey::new(
            Kind::EndpointSlice,
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        ),
        resource_version: resource_version(meta),
    }
}

fn resource_version(meta: &ObjectMeta) -> Option<u64> {
    meta.resource_version.as_deref()?.parse().ok()
}

async fn pass(cache: &Cache, proposer: &Proposer) -> Result<(), String> {
    let commands = decide(cache);
    if commands.is_empty() {
        return Ok(());
    }
    let proposed = commands.len();
    let result = proposer
        .propose(Command::Batch(commands))
        .await
        .map_err(|status| status.message().to_string())?;
    let CommandResult::Batch(results) = result else {
        return Err(format!("a batch was answered with {result:?}"));
    };
    for result in &results {
        if let CommandResult::Failed(error) = result {
            // Expected when the store moved on since it was read: the next pass decides again.
            tracing::debug!("endpoints write not applied: {error}");
        }
    }
    tracing::debug!(proposed, "endpoints pass done");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::testing::labels;
    use berth_proto::k8s_openapi::api::core::v1::{
        Container, ContainerPort, NodeAddress, NodeCondition, NodeStatus, PodCondition, PodSpec,
        PodStatus, ServiceSpec,
    };
    use berth_proto::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn service(ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("svc-uid".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(labels(&[("app", "web")])),
                ports: Some(ports),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    fn port(name: &str, target: IntOrString) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port: 80,
            target_port: Some(target),
            ..ServicePort::default()
        }
    }

    /// A running pod of the Service with `ip`, Ready or not, serving `http` on `http_port`.
    fn pod(name: &str, ip: &str, ready: bool, http_port: i32) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some(labels(&[("app", "web")])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-1".into()),
                containers: vec![Container {
                    name: "main".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: http_port,
                        ..ContainerPort::default()
                    }]),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    fn conditions(slice: &EndpointSlice) -> Vec<(String, bool, bool, bool)> {
        slice
            .endpoints
            .iter()
            .flatten()
            .map(|e| {
                let c = e.conditions.clone().unwrap_or_default();
                let (r, s, t) = (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap());
                (e.addresses[0].clone(), r, s, t)
            })
            .collect()
    }

    #[test]
    fn ready_not_ready_and_terminating_pods_get_their_conditions() {
        let service = service(vec![port("http", IntOrString::Int(8080))]);
        let mut leaving = pod("c", "10.244.0.4", true, 8080);
        leaving.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let mut no_ip = pod("d", "", true, 8080);
        no_ip.status.as_mut().unwrap().pod_ip = None;
        let mut done = pod("e", "10.244.0.6", false, 8080);
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let mut other = pod("f", "10.244.0.7", true, 8080);
        other.metadata.labels = Some(labels(&[("app", "db")]));
        let pods = [
            pod("a", "10.244.0.2", true, 8080),
            pod("b", "10.244.0.3", false, 8080),
            leaving,
            no_ip,
            done,
            other,
        ];
        let slices = desired_slices(&service, &pods);
        assert_eq!(slices.len(), 1);
        let slice = &slices[0];
        assert_eq!(
            conditions(slice),
            [
                ("10.244.0.2".to_string(), true, true, false),
                ("10.244.0.3".to_string(), false, false, false),
                ("10.244.0.4".to_string(), false, true, true),
            ]
        );
        let labels = slice.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "web");
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(controller_of(&slice.metadata).unwrap().uid, "svc-uid");
        let ports = slice.ports.as_ref().unwrap();
        assert_eq!(ports[0].port, Some(8080));
        assert_eq!(ports[0].name.as_deref(), Some("http"));
        let endpoint = &slice.endpoints.as_ref().unwrap()[0];
        assert_eq!(endpoint.node_name.as_deref(), Some("node-1"));
        assert_eq!(
            endpoint.target_ref.as_ref().unwrap().name.as_deref(),
            Some("a")
        );

        // publishNotReadyAddresses: every endpoint is ready.
        let mut publish = service.clone();
        publish.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let slices = desired_slices(&publish, &pods);
        assert!(conditions(&slices[0]).iter().all(|(_, ready, _, _)| *ready));
    }

    #[test]
    fn a_named_target_port_resolving_differently_splits_slices() {
        let service = service(vec![port("http", IntOrString::String("http".into()))]);
        let pods = [
            pod("a", "10.244.0.2", true, 8080),
            pod("b", "10.244.0.3", true, 9090),
            pod("c", "10.244.0.4", true, 8080),
        ];
        let slices = desired_slices(&service, &pods);
        let summary: Vec<(i32, usize)> = slices
            .iter()
            .map(|s| {
                (
                    s.ports.as_ref().unwrap()[0].port.unwrap(),
                    s.endpoints.as_ref().unwrap().len(),
                )
            })
            .collect();
        assert_eq!(summary, [(8080, 2), (9090, 1)]);
    }

    #[test]
    fn no_selector_or_external_name_means_no_slices_and_no_pods_a_placeholder() {
        let mut bare = service(vec![port("http", IntOrString::Int(80))]);
        bare.spec.as_mut().unwrap().selector = None;
        assert!(desired_slices(&bare, &[pod("a", "10.244.0.2", true, 80)]).is_empty());
        let mut external = service(vec![]);
        external.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        assert!(desired_slices(&external, &[]).is_empty());
        let slices = desired_slices(&service(vec![port("http", IntOrString::Int(80))]), &[]);
        assert_eq!(slices.len(), 1);
        assert!(slices[0].endpoints.as_ref().unwrap().is_empty() && slices[0].ports.is_none());
    }

    #[test]
    fn large_services_are_cut_into_slices_of_a_hundred() {
        let service = service(vec![port("http", IntOrString::Int(80))]);
        let pods: Vec<Pod> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i:03}"),
                    &format!("10.244.{}.{}", i / 200, i % 200 + 1),
                    true,
                    80,
                )
            })
            .collect();
        let sizes: Vec<usize> = desired_slices(&service, &pods)
            .iter()
            .map(|s| s.endpoints.as_ref().unwrap().len())
            .collect();
        assert_eq!(sizes, [100, 100, 50]);
    }

    fn named(mut slice: EndpointSlice, name: &str, version: &str) -> EndpointSlice {
        slice.metadata.name = Some(name.into());
        slice.metadata.resource_version = Some(version.into());
        slice
    }

    #[test]
    fn reconcile_writes_only_what_differs() {
        let service = service(vec![port("http", IntOrString::String("http".into()))]);
        let pods = vec![
            pod("a", "10.244.0.2", true, 8080),
            pod("b", "10.244.0.3", true, 9090),
        ];
        let mut counter = 0;
        let mut names = || {
            counter += 1;
            format!("web-{counter}")
        };
        let first = reconcile(desired_slices(&service, &pods), &[], &mut names);
        assert_eq!(first.apply.len(), 2);
        assert!(first.delete.is_empty());
        let stored: Vec<EndpointSlice> = first
            .apply
            .iter()
            .map(|s| named(s.clone(), s.metadata.name.as_deref().unwrap(), "7"))
            .collect();
        let stored_refs: Vec<&EndpointSlice> = stored.iter().collect();
        // Nothing changed: nothing to write.
        let again = reconcile(desired_slices(&service, &pods), &stored_refs, &mut names);
        assert_eq!(again, SliceChanges::default());
        // b turns not ready: only its slice is written, under its name and version.
        let mut changed = pods.clone();
        changed[1] = pod("b", "10.244.0.3", false, 9090);
        let update = reconcile(desired_slices(&service, &changed), &stored_refs, &mut names);
        assert_eq!(update.apply.len(), 1);
        assert_eq!(update.apply[0].metadata.name.as_deref(), Some("web-2"));
        assert_eq!(
            update.apply[0].metadata.resource_version.as_deref(),
            Some("7")
        );
        assert!(update.delete.is_empty());
        // b goes away: its slice is deleted.
        let shrink = reconcile(
            desired_slices(&service, &pods[..1]),
            &stored_refs,
            &mut names,
        );
        assert!(shrink.apply.is_empty());
        assert_eq!(shrink.delete.len(), 1);
        assert_eq!(shrink.delete[0].name.as_deref(), Some("web-2"));
    }

    fn node(name: &str, ip: &str, ready: bool) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.into(),
                }]),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..NodeCondition::default()
                }]),
                ..NodeStatus::default()
            }),
        }
    }

    #[test]
    fn load_balancers_answer_on_every_ready_node() {
        let mut lb = service(vec![port("http", IntOrString::Int(80))]);
        lb.spec.as_mut().unwrap().type_ = Some("LoadBalancer".into());
        let nodes = [
            node("n2", "10.0.0.2", true),
            node("n1", "10.0.0.1", true),
            node("n3", "10.0.0.3", false),
        ];
        let status = load_balancer_status(&lb, &nodes);
        let ips: Vec<String> = status
            .load_balancer
            .as_ref()
            .unwrap()
            .ingress
            .iter()
            .flatten()
            .map(|i| i.ip.clone().unwrap())
            .collect();
        assert_eq!(ips, ["10.0.0.1", "10.0.0.2"]);
        assert!(!same_status(None, &status));
        lb.status = Some(status.clone());
        assert!(same_status(
            lb.status.as_ref(),
            &load_balancer_status(&lb, &nodes)
        ));
        // No longer a LoadBalancer: the status goes.
        lb.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        let cleared = load_balancer_status(&lb, &nodes);
        assert!(cleared.load_balancer.is_none());
        assert!(!same_status(lb.status.as_ref(), &cleared));
        // A ClusterIP Service without a status needs no write.
        lb.status = None;
        assert!(same_status(None, &load_balancer_status(&lb, &nodes)));
    }
}
