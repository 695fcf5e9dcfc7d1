//! How `berth get` and `berth describe` print objects: kubectl's tables, describe text and AGE
//! column, close enough that a kubectl user reads them without a second look.
//!
//! Everything here is a pure function of objects and the current time, so the formats are
//! tested without a cluster; the commands fetch objects and print what these functions return.
//! Tables and describe text both go through [`align`], a copy of the Go tabwriter kubectl
//! prints through: that is what makes column widths and continuation lines come out the same.

use berth_proto::k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use berth_proto::k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, ContainerState, ContainerStateTerminated, ContainerStatus,
    EnvFromSource, EnvVar, HTTPGetAction, LoadBalancerIngress, Namespace, Node, NodeCondition, Pod,
    PodTemplateSpec, Probe, Secret, Service, ServicePort, ServiceSpec, Taint, Volume,
};
use berth_proto::k8s_openapi::api::discovery::v1::EndpointSlice;
use berth_proto::k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use berth_proto::k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, Time,
};
use berth_proto::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use berth_proto::{Kind, Resource, DEFAULT_NAMESPACE};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

/// What kubectl prints for a missing or empty value.
const NONE: &str = "<none>";

/// `kubectl get` tables: its tabwriter pads columns by 3 spaces, to at least 6 characters.
const TABLE: Layout = Layout {
    min_width: 6,
    padding: 3,
};

/// `kubectl describe` text: its tabwriter pads columns by 2 spaces.
const DESCRIBE: Layout = Layout {
    min_width: 0,
    padding: 2,
};

/// How `berth get` lays out a table.
#[derive(Debug, Clone, Copy)]
pub struct TableOptions {
    /// `-o wide`: the extra columns kubectl adds (IP and NODE for pods...).
    pub wide: bool,
    /// `-A`: a NAMESPACE column first; cluster-scoped kinds ignore it.
    pub all_namespaces: bool,
    /// Prefix names with "deployment.apps/" (kubectl does this when several kinds are listed).
    pub show_kind: bool,
    /// The time AGE counts up to.
    pub now: Timestamp,
}

/// Plain rows (the first a header) as left-aligned columns three spaces apart, for tables
/// that are not objects (members, registry images).
pub fn columns(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            format!("{}\n", cells.join("   ").trim_end())
        })
        .collect()
}

/// A kubectl-style table (header row + one row per object, columns left-aligned and padded
/// with at least 3 spaces like kubectl's tabwriter), ending with '\n'. Empty `objects` → empty
/// string. `objects` are expected to be of `kind`, which picks the columns.
pub fn table(kind: Kind, objects: &[Resource], options: &TableOptions) -> String {
    if objects.is_empty() {
        return String::new();
    }
    if kind == Kind::Event {
        return events::table(objects, options.all_namespaces, options.wide, options.now);
    }
    let namespace_column = options.all_namespaces && kind.namespaced();
    let (columns, wide_columns) = headers(kind);
    let namespace = namespace_column.then_some("NAMESPACE");
    let wide = if options.wide { wide_columns } else { &[] };
    let header = namespace.into_iter().chain(["NAME"]);
    let header = header.chain(columns.iter().chain(wide).copied());
    let mut lines = vec![header.map(String::from).collect()];
    lines.extend(objects.iter().map(|o| row(o, options, namespace_column)));
    align(&lines, TABLE)
}

pub mod events;

/// kubectl describe-style text for one object, ending with the events about it (`events`
/// may hold others: only this object's are shown). `slices` give a Service its `Endpoints:`
/// (they may hold other Services' too).
pub fn describe(
    object: &Resource,
    events: &[berth_proto::k8s_openapi::api::core::v1::Event],
    slices: &[EndpointSlice],
    now: Timestamp,
) -> String {
    let mut w = Writer::default();
    describe_metadata(&mut w, object);
    match object {
        Resource::Pod(pod) => describe_pod(&mut w, pod, now),
        Resource::Service(service) => describe_service(&mut w, service, slices),
        Resource::ConfigMap(config_map) => describe_config_map(&mut w, config_map),
        Resource::Secret(secret) => describe_secret(&mut w, secret),
        Resource::Namespace(namespace) => describe_namespace(&mut w, namespace),
        Resource::Node(node) => describe_node(&mut w, node),
        Resource::Deployment(deployment) => describe_deployment(&mut w, deployment),
        Resource::ReplicaSet(replica_set) => describe_replica_set(&mut w, replica_set),
        Resource::Event(event) => events::describe_event(&mut w, event),
        Resource::EndpointSlice(slice) => describe_endpoint_slice(&mut w, slice),
    }
    let about = events::events_about(object, events);
    events::describe_events(&mut w, &about, now);
    w.finish()
}

/// kubectl's AGE, k8s.io/apimachinery's `duration.HumanDuration` of the time since `created`:
/// about two significant figures ("119s", "5m3s", "37m", "125m", "5h5m", "15h", "3d2h",
/// "400d", "2y70d", "9y"), "<unknown>" without a timestamp.
pub fn age(created: Option<&Timestamp>, now: Timestamp) -> String {
    match created {
        Some(created) => human_duration(now.duration_since(*created)),
        None => "<unknown>".to_string(),
    }
}

/// A port of `duration.HumanDuration`: a unit takes over once there are two of it (three for
/// hours), with a remainder in the unit below while under 10 minutes, 8 hours, days or years.
fn human_duration(duration: SignedDuration) -> String {
    let seconds = duration.as_secs();
    let minutes = seconds / 60;
    let hours = minutes / 60;
    let days = hours / 24;
    let years = days / 365;
    match () {
        _ if seconds < -1 => "<invalid>".to_string(),
        // A second in the future is clock skew between machines: it counts as now.
        _ if seconds < 0 => "0s".to_string(),
        _ if seconds < 2 * 60 => format!("{seconds}s"),
        _ if minutes < 10 => units(minutes, "m", seconds % 60, "s"),
        _ if minutes < 3 * 60 => format!("{minutes}m"),
        _ if hours < 8 => units(hours, "h", minutes % 60, "m"),
        _ if hours < 48 => format!("{hours}h"),
        _ if hours < 8 * 24 => units(days, "d", hours % 24, "h"),
        _ if days < 2 * 365 => format!("{days}d"),
        _ if days < 8 * 365 => units(years, "y", days % 365, "d"),
        _ => format!("{years}y"),
    }
}

/// "5m3s", or "5m" when the smaller unit is zero.
fn units(large: i64, large_unit: &str, small: i64, small_unit: &str) -> String {
    match small {
        0 => format!("{large}{large_unit}"),
        _ => format!("{large}{large_unit}{small}{small_unit}"),
    }
}

// ---------------------------------------------------------------------------------------------
// get: one row per object

/// A kind's columns after NAME: those `get` always prints, and those `-o wide` adds.
fn headers(kind: Kind) -> (&'static [&'static str], &'static [&'static str]) {
    const WORKLOAD_WIDE: &[&str] = &["CONTAINERS", "IMAGES", "SELECTOR"];
    match kind {
        Kind::Pod => (&["READY", "STATUS", "RESTARTS", "AGE"], &["IP", "NODE"]),
        Kind::Service => (
            &["TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"],
            &["SELECTOR"],
        ),
        Kind::ConfigMap => (&["DATA", "AGE"], &[]),
        Kind::Secret => (&["TYPE", "DATA", "AGE"], &[]),
        Kind::Namespace => (&["STATUS", "AGE"], &[]),
        Kind::Node => (&["STATUS", "ROLES", "AGE", "VERSION"], &["INTERNAL-IP"]),
        Kind::Deployment => (&["READY", "UP-TO-DATE", "AVAILABLE", "AGE"], WORKLOAD_WIDE),
        Kind::ReplicaSet => (&["DESIRED", "CURRENT", "READY", "AGE"], WORKLOAD_WIDE),
        Kind::Event => (&["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], &[]),
        Kind::EndpointSlice => (&["ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"], &[]),
    }
}

/// One object's cells after NAME, in the order of [`headers`].
struct Cells {
    normal: Vec<String>,
    wide: Vec<String>,
}

fn row(object: &Resource, options: &TableOptions, namespace_column: bool) -> Vec<String> {
    let meta = object.metadata();
    let name = meta.name.as_deref().unwrap_or_default();
    let name = if options.show_kind {
        format!("{}/{name}", object.kind().qualified_name())
    } else {
        name.to_string()
    };
    let age = age(meta.creation_timestamp.as_ref().map(|t| &t.0), options.now);
    let cells = match object {
        Resource::Pod(pod) => pod_cells(pod, age),
        Resource::Service(service) => service_cells(service, age),
        Resource::ConfigMap(config_map) => config_map_cells(config_map, age),
        Resource::Secret(secret) => secret_cells(secret, age),
        Resource::Namespace(namespace) => namespace_cells(namespace, age),
        Resource::Node(node) => node_cells(node, age),
        Resource::Deployment(deployment) => deployment_cells(deployment, age),
        Resource::ReplicaSet(replica_set) => replica_set_cells(replica_set, age),
        Resource::EndpointSlice(slice) => endpoint_slice_cells(slice, age),
        // Event tables have their own layout (events::table); this row is never printed.
        Resource::Event(_) => Cells {
            normal: vec![],
            wide: vec![],
        },
    };
    let namespace = namespace_column.then(|| namespace_of(meta).to_string());
    let wide = if options.wide { cells.wide } else { vec![] };
    let row = namespace.into_iter().chain([name]);
    row.chain(cells.normal).chain(wide).collect()
}

fn pod_cells(pod: &Pod, age: String) -> Cells {
    let spec = or_default(&pod.spec);
    let status = or_default(&pod.status);
    let statuses = container_statuses(pod);
    let ready = statuses.iter().filter(|s| s.ready).count();
    let restarts: i32 = statuses.iter().map(|s| s.restart_count).sum();
    Cells {
        normal: vec![
            format!("{ready}/{}", spec.containers.len()),
            pod_status(pod),
            restarts.to_string(),
            age,
        ],
        wide: vec![
            or_none(status.pod_ip.as_deref()),
            or_none(spec.node_name.as_deref()),
        ],
    }
}

/// The STATUS kubectl shows for a pod: why its first troubled container is not running, else
/// the pod's reason, else its phase.
fn pod_status(pod: &Pod) -> String {
    let status = or_default(&pod.status);
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let finished = matches!(phase, "Succeeded" | "Failed");
    if pod.metadata.deletion_timestamp.is_some() && !finished {
        return "Terminating".to_string();
    }
    let reason = non_empty(status.reason.as_deref()).unwrap_or(phase);
    let trouble = container_statuses(pod).iter().find_map(container_trouble);
    trouble.unwrap_or_else(|| reason.to_string())
}

/// Why a container is not running, as kubectl words it: the reason it waits or terminated, or
/// else the signal or exit code that ended it.
fn container_trouble(status: &ContainerStatus) -> Option<String> {
    let state = status.state.as_ref()?;
    let waiting = state.waiting.as_ref();
    if let Some(reason) = waiting.and_then(|w| non_empty(w.reason.as_deref())) {
        return Some(reason.to_string());
    }
    let terminated = state.terminated.as_ref()?;
    let trouble = match (non_empty(terminated.reason.as_deref()), terminated.signal) {
        (Some(reason), _) => reason.to_string(),
        (None, Some(signal)) if signal != 0 => format!("Signal:{signal}"),
        (None, _) => format!("ExitCode:{}", terminated.exit_code),
    };
    Some(trouble)
}

fn container_statuses(pod: &Pod) -> &[ContainerStatus] {
    let status = pod.status.as_ref();
    status.map_or(&[], |s| items(&s.container_statuses))
}

fn service_cells(service: &Service, age: String) -> Cells {
    let spec = or_default(&service.spec);
    let ports = items(&spec.ports).iter().map(port_and_node_port);
    Cells {
        normal: vec![
            service_type(&spec).to_string(),
            or_none(cluster_ip(&spec)),
            external_ip(service),
            join_or_none(ports, ","),
            age,
        ],
        wide: vec![format_labels(spec.selector.as_ref())],
    }
}

fn service_type(spec: &ServiceSpec) -> &str {
    spec.type_.as_deref().unwrap_or("ClusterIP")
}

fn cluster_ip(spec: &ServiceSpec) -> Option<&str> {
    let first = items(&spec.cluster_ips).first().map(String::as_str);
    first.or(spec.cluster_ip.as_deref())
}

/// EXTERNAL-IP: the load balancer's addresses (`<pending>` until it has some) and any
/// `externalIPs`, or the name an ExternalName service stands for.
fn external_ip(service: &Service) -> String {
    let spec = or_default(&service.spec);
    let external_ips = items(&spec.external_ips).iter().cloned();
    match service_type(&spec) {
        "ClusterIP" | "NodePort" => join_or_none(external_ips, ","),
        "LoadBalancer" => {
            let mut ips = ingress_addresses(service);
            ips.extend(external_ips);
            if ips.is_empty() {
                "<pending>".to_string()
            } else {
                ips.join(",")
            }
        }
        "ExternalName" => spec.external_name.clone().unwrap_or_default(),
        _ => "<unknown>".to_string(),
    }
}

/// The IPs (else host names) the load balancer in front of a service answers on.
fn ingress_addresses(service: &Service) -> Vec<String> {
    let status = service.status.as_ref();
    let load_balancer = status.and_then(|s| s.load_balancer.as_ref());
    let ingress = load_balancer.map_or(&[][..], |lb| items(&lb.ingress));
    let address = |i: &LoadBalancerIngress| {
        let ip = non_empty(i.ip.as_deref());
        ip.or(non_empty(i.hostname.as_deref())).map(String::from)
    };
    ingress.iter().filter_map(address).collect()
}

/// "80/TCP", or "80:30080/TCP" with a node port.
fn port_and_node_port(port: &ServicePort) -> String {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match port.node_port {
        Some(node_port) if node_port != 0 => format!("{}:{node_port}/{protocol}", port.port),
        _ => format!("{}/{protocol}", port.port),
    }
}

fn endpoint_slice_cells(slice: &EndpointSlice, age: String) -> Cells {
    let ports = items(&slice.ports)
        .iter()
        .map(|port| match (port.port, &port.name) {
            (Some(number), _) => number.to_string(),
            (None, Some(name)) => name.clone(),
            (None, None) => "*".to_string(),
        });
    let endpoints = items(&slice.endpoints).iter();
    let addresses = endpoints.flat_map(|e| e.addresses.iter().cloned());
    Cells {
        normal: vec![
            slice.address_type.clone(),
            first_three(ports),
            first_three(addresses),
            age,
        ],
        wide: vec![],
    }
}

/// kubectl's `listWithMoreString`: up to three values, then "+ N more...", `<unset>` for none.
fn first_three(values: impl Iterator<Item = String>) -> String {
    const MAX: usize = 3;
    let values: Vec<String> = values.collect();
    match values.len() {
        0 => "<unset>".to_string(),
        n if n <= MAX => values.join(","),
        n => format!("{} + {} more...", values[..MAX].join(","), n - MAX),
    }
}

fn config_map_cells(config_map: &ConfigMap, age: String) -> Cells {
    let data = config_map.data.as_ref().map_or(0, BTreeMap::len);
    let binary = config_map.binary_data.as_ref().map_or(0, BTreeMap::len);
    Cells {
        normal: vec![(data + binary).to_string(), age],
        wide: vec![],
    }
}

fn secret_cells(secret: &Secret, age: String) -> Cells {
    let data = secret_sizes(secret).len();
    Cells {
        normal: vec![secret_type(secret).to_string(), data.to_string(), age],
        wide: vec![],
    }
}

fn secret_type(secret: &Secret) -> &str {
    secret.type_.as_deref().unwrap_or("Opaque")
}

/// Each key of a Secret with the size of its value: the only thing berth ever prints about
/// secret values. `stringData` (not yet merged into `data` by the server) counts too.
fn secret_sizes(secret: &Secret) -> BTreeMap<&str, usize> {
    let data = secret.data.iter().flatten();
    let data = data.map(|(key, value)| (key.as_str(), value.0.len()));
    let strings = secret.string_data.iter().flatten();
    let strings = strings.map(|(key, value)| (key.as_str(), value.len()));
    data.chain(strings).collect()
}

fn namespace_cells(namespace: &Namespace, age: String) -> Cells {
    Cells {
        normal: vec![namespace_phase(namespace).to_string(), age],
        wide: vec![],
    }
}

fn namespace_phase(namespace: &Namespace) -> &str {
    let phase = namespace.status.as_ref().and_then(|s| s.phase.as_deref());
    phase.unwrap_or("Active")
}

fn node_cells(node: &Node, age: String) -> Cells {
    let status = or_default(&node.status);
    let version = status.node_info.as_ref().map(|i| i.kubelet_version.clone());
    let internal_ip = items(&status.addresses)
        .iter()
        .find(|a| a.type_ == "InternalIP");
    Cells {
        normal: vec![
            node_status(node),
            join_or_none(node_roles(node), ","),
            age,
            version.unwrap_or_default(),
        ],
        wide: vec![or_none(internal_ip.map(|a| a.address.as_str()))],
    }
}

/// "Ready", "NotReady" or "Unknown" from the Ready condition, with ",SchedulingDisabled" for a
/// cordoned node.
fn node_status(node: &Node) -> String {
    let status = or_default(&node.status);
    let ready = items(&status.conditions)
        .iter()
        .find(|c| c.type_ == "Ready");
    let mut text = match ready {
        Some(condition) if condition.status == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }
    .to_string();
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        text.push_str(",SchedulingDisabled");
    }
    text
}

/// The roles a node's labels give it, sorted.
fn node_roles(node: &Node) -> BTreeSet<&str> {
    let labels = node.metadata.labels.iter().flatten();
    let roles = labels.filter_map(|(key, value)| node_role(key, value));
    roles.filter(|role| !role.is_empty()).collect()
}

/// The role one label gives a node: `node-role.kubernetes.io/<role>`, or the older
/// `kubernetes.io/role: <role>`.
fn node_role<'a>(key: &'a str, value: &'a str) -> Option<&'a str> {
    match key.strip_prefix("node-role.kubernetes.io/") {
        Some(role) => Some(role),
        None => (key == "kubernetes.io/role").then_some(value),
    }
}

fn deployment_cells(deployment: &Deployment, age: String) -> Cells {
    let spec = &deployment.spec;
    let status = or_default(&deployment.status);
    let desired = spec.replicas.unwrap_or(1);
    Cells {
        normal: vec![
            format!("{}/{desired}", status.ready_replicas.unwrap_or(0)),
            status.updated_replicas.unwrap_or(0).to_string(),
            status.available_replicas.unwrap_or(0).to_string(),
            age,
        ],
        wide: workload_cells(Some(&spec.template), &spec.selector),
    }
}

fn replica_set_cells(replica_set: &ReplicaSet, age: String) -> Cells {
    let spec = &replica_set.spec;
    let status = or_default(&replica_set.status);
    Cells {
        normal: vec![
            spec.replicas.unwrap_or(1).to_string(),
            status.replicas.to_string(),
            status.ready_replicas.unwrap_or(0).to_string(),
            age,
        ],
        wide: workload_cells(spec.template.as_ref(), &spec.selector),
    }
}

/// CONTAINERS, IMAGES and SELECTOR: the wide columns of the controllers that run pods.
fn workload_cells(template: Option<&PodTemplateSpec>, selector: &LabelSelector) -> Vec<String> {
    let spec = template.and_then(|t| t.spec.as_ref());
    let containers = spec.map_or(&[][..], |s| &s.containers);
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    let images: Vec<&str> = containers.iter().map(image).collect();
    vec![
        names.join(","),
        images.join(","),
        format_label_selector(selector),
    ]
}

fn image(container: &Container) -> &str {
    container.image.as_deref().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// describe: sections several kinds share

/// Name, namespace, labels, annotations and creation time, which every kind starts with.
fn describe_metadata(w: &mut Writer, object: &Resource) {
    let meta = object.metadata();
    let name = meta.name.as_deref().unwrap_or_default();
    w.line(0, format!("Name:\t{name}"));
    if object.kind().namespaced() {
        w.line(0, format!("Namespace:\t{}", namespace_of(meta)));
    }
    w.list(0, "Labels", label_lines(meta.labels.as_ref()));
    let annotations = annotation_lines(meta.annotations.as_ref());
    w.list(0, "Annotations", annotations);
    let created = format_time(meta.creation_timestamp.as_ref());
    w.line(0, format!("CreationTimestamp:\t{created}"));
}

/// `key=value`, sorted, as describe lists labels and selectors.
fn label_lines(labels: Option<&BTreeMap<String, String>>) -> Vec<String> {
    let labels = labels.into_iter().flatten();
    labels
        .map(|(key, value)| format!("{key}={value}"))
        .collect()
}

/// `key: value`, sorted; a value that is long or spans lines goes below its key, its lines cut
/// to length. kubectl leaves out the last-applied-configuration annotation `apply` keeps.
fn annotation_lines(annotations: Option<&BTreeMap<String, String>>) -> Vec<String> {
    const MAX_LENGTH: usize = 140;
    const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
    let annotations = annotations.into_iter().flatten();
    let mut lines = Vec::new();
    for (key, value) in annotations.filter(|(key, _)| *key != LAST_APPLIED) {
        let value = value.strip_suffix('\n').unwrap_or(value);
        if key.len() + value.len() + 2 <= MAX_LENGTH && !value.contains('\n') {
            lines.push(format!("{key}: {value}"));
            continue;
        }
        lines.push(format!("{key}:"));
        let parts = value.split('\n');
        lines.extend(parts.map(|part| format!("  {}", shorten(part, MAX_LENGTH - 2))));
    }
    lines
}

fn shorten(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

/// `Controlled By:  ReplicaSet/web-7d4b9c`, for an object a controller owns.
fn describe_controller(w: &mut Writer, meta: &ObjectMeta) {
    let owners = items(&meta.owner_references);
    if let Some(owner) = owners.iter().find(|o| o.controller == Some(true)) {
        w.line(0, format!("Controlled By:\t{}/{}", owner.kind, owner.name));
    }
}

/// A workload's conditions, as a Type/Status/Reason table.
fn describe_conditions<'a>(w: &mut Writer, rows: impl IntoIterator<Item = [&'a str; 3]>) {
    let rows: Vec<_> = rows.into_iter().collect();
    if rows.is_empty() {
        return;
    }
    w.line(0, "Conditions:");
    w.line(1, "Type\tStatus\tReason");
    w.line(1, "----\t------\t------");
    for [type_, status, reason] in rows {
        w.line(1, format!("{type_} \t{status}\t{reason}"));
    }
}

/// `Pod Template:` alone, as `berth rollout history --revision N` prints a revision.
pub fn pod_template(template: &PodTemplateSpec) -> String {
    let mut w = Writer::default();
    describe_pod_template(&mut w, Some(template));
    w.finish()
}

/// `Pod Template:` of a Deployment or ReplicaSet: its labels, containers and volumes, shifted
/// in by one level.
fn describe_pod_template(w: &mut Writer, template: Option<&PodTemplateSpec>) {
    w.line(0, "Pod Template:");
    let Some(template) = template else {
        w.line(1, "<unset>");
        return;
    };
    let meta = or_default(&template.metadata);
    w.list(1, "Labels", label_lines(meta.labels.as_ref()));
    let annotations = annotation_lines(meta.annotations.as_ref());
    if !annotations.is_empty() {
        w.list(1, "Annotations", annotations);
    }
    let spec = or_default(&template.spec);
    let init = items(&spec.init_containers);
    if !init.is_empty() {
        describe_containers(w, "Init Containers", init, &[], Indent::Template);
    }
    describe_containers(w, "Containers", &spec.containers, &[], Indent::Template);
    describe_volumes(w, items(&spec.volumes), Indent::Template);
}

/// kubectl shifts container and volume lists right by one level inside a pod template, and
/// their names by one more space.
#[derive(Clone, Copy)]
enum Indent {
    Pod,
    Template,
}

impl Indent {
    fn section(self) -> &'static str {
        match self {
            Indent::Pod => "",
            Indent::Template => "  ",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Indent::Pod => "",
            Indent::Template => " ",
        }
    }
}

/// `Containers:` and, for each, what it runs and with what, plus its state when `statuses`
/// (the pod's status) report one.
fn describe_containers(
    w: &mut Writer,
    title: &str,
    containers: &[Container],
    statuses: &[ContainerStatus],
    indent: Indent,
) {
    let none = if containers.is_empty() { " <none>" } else { "" };
    w.line(0, format!("{}{title}:{none}", indent.section()));
    for container in containers {
        let status = statuses.iter().find(|s| s.name == container.name);
        w.line(1, format!("{}{}:", indent.name(), container.name));
        describe_image(w, container, status);
        describe_ports(w, items(&container.ports));
        describe_command(w, "Command", items(&container.command));
        describe_command(w, "Args", items(&container.args));
        if let Some(status) = status {
            describe_container_status(w, status);
        }
        let resources = or_default(&container.resources);
        describe_quantities(w, 2, "Limits", resources.limits.as_ref());
        describe_quantities(w, 2, "Requests", resources.requests.as_ref());
        describe_probes(w, container);
        describe_env_from(w, items(&container.env_from));
        describe_env(w, container);
        describe_mounts(w, container);
    }
}

fn describe_image(w: &mut Writer, container: &Container, status: Option<&ContainerStatus>) {
    if let Some(id) = status.and_then(|s| non_empty(s.container_id.as_deref())) {
        w.line(2, format!("Container ID:\t{id}"));
    }
    w.line(2, format!("Image:\t{}", image(container)));
    if let Some(image_id) = status.and_then(|s| non_empty(Some(&s.image_id))) {
        w.line(2, format!("Image ID:\t{image_id}"));
    }
}

/// `Port:  8080/TCP (http)` and `Host Port:  0/TCP`, plural when there are several.
fn describe_ports(w: &mut Writer, ports: &[ContainerPort]) {
    let protocol = |p: &ContainerPort| p.protocol.clone().unwrap_or_else(|| "TCP".into());
    let container_ports = ports.iter().map(|p| match non_empty(p.name.as_deref()) {
        Some(name) => format!("{}/{} ({name})", p.container_port, protocol(p)),
        None => format!("{}/{}", p.container_port, protocol(p)),
    });
    let host_ports = ports.iter();
    let host_ports = host_ports.map(|p| format!("{}/{}", p.host_port.unwrap_or(0), protocol(p)));
    describe_port_line(w, "Port", container_ports.collect());
    describe_port_line(w, "Host Port", host_ports.collect());
}

fn describe_port_line(w: &mut Writer, title: &str, ports: Vec<String>) {
    match ports.len() {
        0 => w.line(2, format!("{title}:\t{NONE}")),
        1 => w.line(2, format!("{title}:\t{}", ports[0])),
        _ => w.line(2, format!("{title}s:\t{}", ports.join(", "))),
    }
}

fn describe_command(w: &mut Writer, title: &str, parts: &[String]) {
    if parts.is_empty() {
        return;
    }
    w.line(2, format!("{title}:"));
    for part in parts {
        w.verbatim(3, part);
    }
}

fn describe_container_status(w: &mut Writer, status: &ContainerStatus) {
    describe_state(w, "State", status.state.as_ref());
    let last = status.last_state.as_ref();
    if last.is_some_and(|s| s.terminated.is_some()) {
        describe_state(w, "Last State", last);
    }
    let ready = if status.ready { "True" } else { "False" };
    w.line(2, format!("Ready:\t{ready}"));
    w.line(2, format!("Restart Count:\t{}", status.restart_count));
}

fn describe_state(w: &mut Writer, title: &str, state: Option<&ContainerState>) {
    match state {
        Some(ContainerState {
            running: Some(running),
            ..
        }) => {
            w.line(2, format!("{title}:\tRunning"));
            let started = format_time(running.started_at.as_ref());
            w.line(3, format!("Started:\t{started}"));
        }
        Some(ContainerState {
            waiting: Some(waiting),
            ..
        }) => {
            w.line(2, format!("{title}:\tWaiting"));
            if let Some(reason) = non_empty(waiting.reason.as_deref()) {
                w.line(3, format!("Reason:\t{reason}"));
            }
        }
        Some(ContainerState {
            terminated: Some(terminated),
            ..
        }) => describe_terminated(w, title, terminated),
        _ => w.line(2, format!("{title}:\tWaiting")),
    }
}

fn describe_terminated(w: &mut Writer, title: &str, terminated: &ContainerStateTerminated) {
    w.line(2, format!("{title}:\tTerminated"));
    if let Some(reason) = non_empty(terminated.reason.as_deref()) {
        w.line(3, format!("Reason:\t{reason}"));
    }
    if let Some(message) = non_empty(terminated.message.as_deref()) {
        w.line(3, format!("Message:\t{message}"));
    }
    w.line(3, format!("Exit Code:\t{}", terminated.exit_code));
    if let Some(signal) = terminated.signal.filter(|s| *s > 0) {
        w.line(3, format!("Signal:\t{signal}"));
    }
    let started = format_time(terminated.started_at.as_ref());
    let finished = format_time(terminated.finished_at.as_ref());
    w.line(3, format!("Started:\t{started}"));
    w.line(3, format!("Finished:\t{finished}"));
}

/// `Limits:`, `Capacity:` and the like: one `name:  quantity` line per resource.
fn describe_quantities(
    w: &mut Writer,
    level: usize,
    title: &str,
    quantities: Option<&BTreeMap<String, Quantity>>,
) {
    let Some(quantities) = quantities.filter(|q| !q.is_empty()) else {
        return;
    };
    w.line(level, format!("{title}:"));
    for (name, quantity) in quantities {
        w.line(level + 1, format!("{name}:\t{}", quantity.0));
    }
}

fn describe_probes(w: &mut Writer, container: &Container) {
    let probes = [
        ("Liveness", &container.liveness_probe),
        ("Readiness", &container.readiness_probe),
        ("Startup", &container.startup_probe),
    ];
    for (title, probe) in probes {
        if let Some(probe) = probe {
            w.line(2, format!("{title}:\t{}", probe_text(probe)));
        }
    }
}

/// A probe as kubectl prints it, API server defaults filled in:
/// `http-get http://:http/healthz delay=0s timeout=1s period=10s #success=1 #failure=3`.
fn probe_text(probe: &Probe) -> String {
    let action = if let Some(exec) = &probe.exec {
        format!("exec [{}]", items(&exec.command).join(" "))
    } else if let Some(http) = &probe.http_get {
        format!("http-get {}", http_get_url(http))
    } else if let Some(tcp) = &probe.tcp_socket {
        let host = tcp.host.as_deref().unwrap_or_default();
        format!("tcp-socket {host}:{}", int_or_string(&tcp.port))
    } else if let Some(grpc) = &probe.grpc {
        let service = grpc.service.as_deref().unwrap_or_default();
        format!("grpc <pod>:{} {service}", grpc.port)
    } else {
        "unknown".to_string()
    };
    format!(
        "{action} delay={}s timeout={}s period={}s #success={} #failure={}",
        probe.initial_delay_seconds.unwrap_or(0),
        probe.timeout_seconds.unwrap_or(1),
        probe.period_seconds.unwrap_or(10),
        probe.success_threshold.unwrap_or(1),
        probe.failure_threshold.unwrap_or(3),
    )
}

/// The URL an HTTP probe gets, as Go's `url.URL` writes it: `http://:8080/healthz`, the pod's
/// own address left out unless the probe names a host.
fn http_get_url(http: &HTTPGetAction) -> String {
    let scheme = http.scheme.as_deref().unwrap_or("HTTP").to_lowercase();
    let host = http.host.as_deref().unwrap_or_default();
    let port = int_or_string(&http.port);
    let host = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let path = match http.path.as_deref().unwrap_or_default() {
        path if path.is_empty() || path.starts_with('/') => path.to_string(),
        relative => format!("/{relative}"),
    };
    format!("{scheme}://{host}{path}")
}

fn describe_env_from(w: &mut Writer, sources: &[EnvFromSource]) {
    if sources.is_empty() {
        return;
    }
    w.line(2, "Environment Variables from:");
    for source in sources {
        let (name, from, optional) = match (&source.config_map_ref, &source.secret_ref) {
            (Some(map), _) => (map.name.as_str(), "ConfigMap", map.optional),
            (None, Some(secret)) => (secret.name.as_str(), "Secret", secret.optional),
            (None, None) => ("", "", None),
        };
        let from = match non_empty(source.prefix.as_deref()) {
            Some(prefix) => format!("{from} with prefix '{prefix}'"),
            None => from.to_string(),
        };
        let optional = optional.unwrap_or(false);
        w.line(3, format!("{name}\t{from}\tOptional: {optional}"));
    }
}

fn describe_env(w: &mut Writer, container: &Container) {
    let env = items(&container.env);
    if env.is_empty() {
        w.line(2, format!("Environment:\t{NONE}"));
        return;
    }
    w.line(2, "Environment:");
    for var in env {
        describe_env_var(w, container, var);
    }
}

/// One variable: its value (later lines continuing in the value column), or where the value
/// comes from — never the contents of a Secret.
fn describe_env_var(w: &mut Writer, container: &Container, var: &EnvVar) {
    let name = &var.name;
    let Some(source) = &var.value_from else {
        let value = var.value.as_deref().unwrap_or_default();
        w.list(3, name, value.split('\n').map(String::from).collect());
        return;
    };
    if let Some(field) = &source.field_ref {
        // kubectl looks the value up only for a running pod; this shows where it comes from.
        let version = field.api_version.as_deref().unwrap_or("v1");
        w.line(3, format!("{name}:\t ({version}:{})", field.field_path));
    } else if let Some(resource) = &source.resource_field_ref {
        let value = container_resource(container, &resource.resource);
        w.line(3, format!("{name}:\t{value} ({})", resource.resource));
    } else if let Some(selector) = &source.secret_key_ref {
        let (key, secret) = (&selector.key, &selector.name);
        let optional = selector.optional.unwrap_or(false);
        let text = format!("<set to the key '{key}' in secret '{secret}'>");
        w.line(3, format!("{name}:\t{text}\tOptional: {optional}"));
    } else if let Some(selector) = &source.config_map_key_ref {
        let (key, map) = (&selector.key, &selector.name);
        let optional = selector.optional.unwrap_or(false);
        let text = format!("<set to the key '{key}' of config map '{map}'>");
        w.line(3, format!("{name}:\t{text}\tOptional: {optional}"));
    } else if let Some(selector) = &source.file_key_ref {
        let (key, path) = (&selector.key, &selector.path);
        w.line(
            3,
            format!("{name}:\t<set to the key '{key}' in file '{path}'>"),
        );
    }
}

/// The value a `resourceFieldRef` such as `limits.cpu` reads from its container; an unset limit
/// is the node's allocatable capacity.
fn container_resource(container: &Container, resource: &str) -> String {
    let resources = or_default(&container.resources);
    let (list, name) = match resource.split_once('.') {
        Some(("limits", name)) => (resources.limits.as_ref(), name),
        Some(("requests", name)) => (resources.requests.as_ref(), name),
        _ => (None, resource),
    };
    match list.and_then(|l| l.get(name)) {
        Some(quantity) => quantity.0.clone(),
        None if resource.starts_with("limits.") => "node allocatable".to_string(),
        None => "0".to_string(),
    }
}

fn describe_mounts(w: &mut Writer, container: &Container) {
    let mut mounts: Vec<_> = items(&container.volume_mounts).iter().collect();
    if mounts.is_empty() {
        w.line(2, format!("Mounts:\t{NONE}"));
        return;
    }
    mounts.sort_by(|a, b| a.mount_path.cmp(&b.mount_path));
    w.line(2, "Mounts:");
    for mount in mounts {
        let mode = match mount.read_only {
            Some(true) => "ro",
            _ => "rw",
        };
        let flags = match non_empty(mount.sub_path.as_deref()) {
            Some(sub_path) => format!("{mode},path={sub_path:?}"),
            None => mode.to_string(),
        };
        let (path, volume) = (&mount.mount_path, &mount.name);
        w.verbatim(3, &format!("{path} from {volume} ({flags})"));
    }
}

fn describe_volumes(w: &mut Writer, volumes: &[Volume], indent: Indent) {
    let section = indent.section();
    if volumes.is_empty() {
        w.line(0, format!("{section}Volumes:\t{NONE}"));
        return;
    }
    w.line(0, format!("{section}Volumes:"));
    for volume in volumes {
        w.line(1, format!("{}{}:", indent.name(), volume.name));
        describe_volume_source(w, volume);
    }
}

fn describe_volume_source(w: &mut Writer, volume: &Volume) {
    if let Some(host_path) = &volume.host_path {
        let host_path_type = or_none(host_path.type_.as_deref());
        w.line(2, "Type:\tHostPath (bare host directory volume)");
        w.line(2, format!("Path:\t{}", host_path.path));
        w.line(2, format!("HostPathType:\t{host_path_type}"));
    } else if let Some(empty_dir) = &volume.empty_dir {
        let medium = empty_dir.medium.as_deref().unwrap_or_default();
        let size_limit = empty_dir.size_limit.as_ref().map(|q| q.0.as_str());
        let size_limit = size_limit.unwrap_or("<unset>");
        w.line(
            2,
            "Type:\tEmptyDir (a temporary directory that shares a pod's lifetime)",
        );
        w.line(2, format!("Medium:\t{medium}"));
        w.line(2, format!("SizeLimit:\t{size_limit}"));
    } else if let Some(secret) = &volume.secret {
        let name = secret.secret_name.as_deref().unwrap_or_default();
        let optional = secret.optional.unwrap_or(false);
        w.line(2, "Type:\tSecret (a volume populated by a Secret)");
        w.line(2, format!("SecretName:\t{name}"));
        w.line(2, format!("Optional:\t{optional}"));
    } else if let Some(config_map) = &volume.config_map {
        let optional = config_map.optional.unwrap_or(false);
        w.line(2, "Type:\tConfigMap (a volume populated by a ConfigMap)");
        w.line(2, format!("Name:\t{}", config_map.name));
        w.line(2, format!("Optional:\t{optional}"));
    } else {
        w.line(1, "<unknown>");
    }
}

// ---------------------------------------------------------------------------------------------
// describe: one function per kind

fn describe_pod(w: &mut Writer, pod: &Pod, now: Timestamp) {
    let spec = or_default(&pod.spec);
    let status = or_default(&pod.status);
    let host_ip = status.host_ip.as_deref().unwrap_or_default();
    match non_empty(spec.node_name.as_deref()) {
        Some(node) => w.line(0, format!("Node:\t{node}/{host_ip}")),
        None => w.line(0, format!("Node:\t{NONE}")),
    }
    if let Some(start) = &status.start_time {
        w.line(0, format!("Start Time:\t{}", format_time(Some(start))));
    }
    describe_pod_phase(w, pod, now);
    w.line(0, format!("IP:\t{}", or_none(status.pod_ip.as_deref())));
    describe_controller(w, &pod.metadata);
    let init = items(&spec.init_containers);
    if !init.is_empty() {
        let statuses = items(&status.init_container_statuses);
        describe_containers(w, "Init Containers", init, statuses, Indent::Pod);
    }
    let statuses = container_statuses(pod);
    describe_containers(w, "Containers", &spec.containers, statuses, Indent::Pod);
    let conditions = items(&status.conditions);
    if !conditions.is_empty() {
        w.line(0, "Conditions:");
        w.line(1, "Type\tStatus");
        for condition in conditions {
            w.line(1, format!("{} \t{}", condition.type_, condition.status));
        }
    }
    describe_volumes(w, items(&spec.volumes), Indent::Pod);
    let node_selector = label_lines(spec.node_selector.as_ref());
    w.list(0, "Node-Selectors", node_selector);
}

/// `Status:` (with how long a terminating pod has left), and why the pod is in it.
fn describe_pod_phase(w: &mut Writer, pod: &Pod, now: Timestamp) {
    let status = or_default(&pod.status);
    if let Some(deletion) = &pod.metadata.deletion_timestamp {
        let lasts = age(Some(&deletion.0), now);
        w.line(0, format!("Status:\tTerminating (lasts {lasts})"));
        if let Some(grace) = pod.metadata.deletion_grace_period_seconds {
            w.line(0, format!("Termination Grace Period:\t{grace}s"));
        }
    } else {
        let phase = status.phase.as_deref().unwrap_or("Pending");
        w.line(0, format!("Status:\t{phase}"));
    }
    if let Some(reason) = non_empty(status.reason.as_deref()) {
        w.line(0, format!("Reason:\t{reason}"));
    }
    if let Some(message) = non_empty(status.message.as_deref()) {
        w.line(0, format!("Message:\t{message}"));
    }
}

fn describe_service(w: &mut Writer, service: &Service, slices: &[EndpointSlice]) {
    let spec = or_default(&service.spec);
    let selector = format_labels(spec.selector.as_ref());
    w.line(0, format!("Selector:\t{selector}"));
    w.line(0, format!("Type:\t{}", service_type(&spec)));
    if let Some(policy) = &spec.ip_family_policy {
        w.line(0, format!("IP Family Policy:\t{policy}"));
    }
    let families = join_or_none(items(&spec.ip_families), ",");
    w.line(0, format!("IP Families:\t{families}"));
    w.line(0, format!("IP:\t{}", or_none(cluster_ip(&spec))));
    let cluster_ips = items(&spec.cluster_ips);
    if !cluster_ips.is_empty() {
        w.line(0, format!("IPs:\t{}", cluster_ips.join(",")));
    }
    let external_ips = items(&spec.external_ips);
    if !external_ips.is_empty() {
        w.line(0, format!("External IPs:\t{}", external_ips.join(",")));
    }
    if let Some(name) = non_empty(spec.external_name.as_deref()) {
        w.line(0, format!("External Name:\t{name}"));
    }
    let ingress = ingress_addresses(service);
    if !ingress.is_empty() {
        w.line(0, format!("LoadBalancer Ingress:\t{}", ingress.join(", ")));
    }
    let name = service.metadata.name.as_deref().unwrap_or_default();
    let namespace = namespace_of(&service.metadata);
    let slices: Vec<&EndpointSlice> = slices
        .iter()
        .filter(|s| namespace_of(&s.metadata) == namespace)
        .filter(|s| {
            let labels = s.metadata.labels.as_ref();
            let service = labels.and_then(|l| l.get("kubernetes.io/service-name"));
            service.map(String::as_str) == Some(name)
        })
        .collect();
    for port in items(&spec.ports) {
        describe_service_port(w, port);
        w.line(
            0,
            format!("Endpoints:\t{}", service_endpoints(&slices, port)),
        );
    }
    let affinity = spec.session_affinity.as_deref().unwrap_or("None");
    w.line(0, format!("Session Affinity:\t{affinity}"));
    if let Some(policy) = non_empty(spec.external_traffic_policy.as_deref()) {
        w.line(0, format!("External Traffic Policy:\t{policy}"));
    }
}

/// `Port:  http  80/TCP`, `TargetPort:  8080/TCP` and, when exposed on nodes, `NodePort:`.
fn describe_service_port(w: &mut Writer, port: &ServicePort) {
    let name = non_empty(port.name.as_deref()).unwrap_or("<unset>");
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    let target = port.target_port.as_ref().map(int_or_string);
    let target = target.unwrap_or_else(|| port.port.to_string());
    w.line(0, format!("Port:\t{name}\t{}/{protocol}", port.port));
    w.line(0, format!("TargetPort:\t{target}/{protocol}"));
    if let Some(node_port) = port.node_port.filter(|p| *p != 0) {
        w.line(0, format!("NodePort:\t{name}\t{node_port}/{protocol}"));
    }
}

/// As kubectl's describeEndpointSlice: the ports as a small table, then each endpoint with
/// its conditions and where it runs.
fn describe_endpoint_slice(w: &mut Writer, slice: &EndpointSlice) {
    const UNSET: &str = "<unset>";
    w.line(0, format!("AddressType:\t{}", slice.address_type));
    let ports = items(&slice.ports);
    if ports.is_empty() {
        w.line(0, format!("Ports: {UNSET}"));
    } else {
        w.line(0, "Ports:");
        w.line(1, "Name\tPort\tProtocol");
        w.line(1, "----\t----\t--------");
        for port in ports {
            let name = non_empty(port.name.as_deref()).unwrap_or(UNSET);
            let number = port.port.map_or(UNSET.to_string(), |p| p.to_string());
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            w.line(1, format!("{name}\t{number}\t{protocol}"));
        }
    }
    let endpoints = items(&slice.endpoints);
    if endpoints.is_empty() {
        w.line(0, format!("Endpoints: {NONE}"));
        return;
    }
    w.line(0, "Endpoints:");
    for endpoint in endpoints {
        let addresses = match endpoint.addresses.join(", ") {
            a if a.is_empty() => NONE.to_string(),
            a => a,
        };
        w.line(1, format!("- Addresses:\t{addresses}"));
        w.line(2, "Conditions:");
        let conditions = endpoint.conditions.as_ref();
        let ready = conditions.and_then(|c| c.ready);
        w.line(
            3,
            format!(
                "Ready:\t{}",
                ready.map_or(UNSET.to_string(), |r| r.to_string())
            ),
        );
        let hostname = endpoint.hostname.as_deref().unwrap_or(UNSET);
        w.line(2, format!("Hostname:\t{hostname}"));
        if let Some(target) = &endpoint.target_ref {
            let kind = target.kind.as_deref().unwrap_or_default();
            let name = target.name.as_deref().unwrap_or_default();
            w.line(2, format!("TargetRef:\t{kind}/{name}"));
        }
        let node = endpoint.node_name.as_deref().unwrap_or(UNSET);
        w.line(2, format!("NodeName:\t{node}"));
        let zone = endpoint.zone.as_deref().unwrap_or(UNSET);
        w.line(2, format!("Zone:\t{zone}"));
    }
}

/// The ready endpoints of one Service port, `10.244.0.2:8080,...` (three, then how many
/// more), as kubectl's formatEndpointSlices; `<none>` when the Service has no slices.
fn service_endpoints(slices: &[&EndpointSlice], port: &ServicePort) -> String {
    if slices.is_empty() {
        return NONE.to_string();
    }
    let name = port.name.as_deref().unwrap_or_default();
    let mut addresses = Vec::new();
    for slice in slices {
        let ports = items(&slice.ports);
        let Some(number) = ports
            .iter()
            .find(|p| p.name.as_deref().unwrap_or_default() == name)
            .and_then(|p| p.port)
        else {
            continue;
        };
        let endpoints = items(&slice.endpoints).iter();
        let ready =
            endpoints.filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false));
        let ready = ready.flat_map(|e| e.addresses.iter());
        addresses.extend(ready.map(|address| format!("{address}:{number}")));
    }
    match addresses.len() {
        0 => String::new(),
        _ => first_three(addresses.into_iter()),
    }
}

fn describe_config_map(w: &mut Writer, config_map: &ConfigMap) {
    w.line(0, "");
    w.line(0, "Data");
    w.line(0, "====");
    for (key, value) in config_map.data.iter().flatten() {
        w.verbatim(0, &format!("{key}:"));
        w.line(0, "----");
        w.verbatim(0, value);
        w.line(0, "");
    }
    w.line(0, "");
    w.line(0, "BinaryData");
    w.line(0, "====");
    for (key, value) in config_map.binary_data.iter().flatten() {
        w.verbatim(0, &format!("{key}: {} bytes", value.0.len()));
    }
    w.line(0, "");
}

fn describe_secret(w: &mut Writer, secret: &Secret) {
    w.line(0, "");
    w.line(0, format!("Type:\t{}", secret_type(secret)));
    w.line(0, "");
    w.line(0, "Data");
    w.line(0, "====");
    for (key, size) in secret_sizes(secret) {
        w.line(0, format!("{key}:\t{size} bytes"));
    }
}

fn describe_namespace(w: &mut Writer, namespace: &Namespace) {
    w.line(0, format!("Status:\t{}", namespace_phase(namespace)));
}

fn describe_node(w: &mut Writer, node: &Node) {
    let spec = or_default(&node.spec);
    let status = or_default(&node.status);
    let roles = join_or_none(node_roles(node), ",");
    w.line(0, format!("Roles:\t{roles}"));
    w.list(0, "Taints", items(&spec.taints).iter().map(taint).collect());
    let unschedulable = spec.unschedulable.unwrap_or(false);
    w.line(0, format!("Unschedulable:\t{unschedulable}"));
    describe_node_conditions(w, items(&status.conditions));
    w.line(0, "Addresses:");
    for address in items(&status.addresses) {
        w.line(1, format!("{}:\t{}", address.type_, address.address));
    }
    describe_quantities(w, 0, "Capacity", status.capacity.as_ref());
    describe_quantities(w, 0, "Allocatable", status.allocatable.as_ref());
    if let Some(info) = &status.node_info {
        w.line(0, "System Info:");
        let fields = [
            ("Kernel Version", &info.kernel_version),
            ("OS Image", &info.os_image),
            ("Operating System", &info.operating_system),
            ("Architecture", &info.architecture),
            ("Container Runtime Version", &info.container_runtime_version),
            ("Kubelet Version", &info.kubelet_version),
        ];
        for (title, value) in fields {
            w.line(1, format!("{title}:\t{value}"));
        }
    }
    if let Some(cidr) = non_empty(spec.pod_cidr.as_deref()) {
        w.line(0, format!("PodCIDR:\t{cidr}"));
    }
    let cidrs = items(&spec.pod_cidrs);
    if !cidrs.is_empty() {
        w.line(0, format!("PodCIDRs:\t{}", cidrs.join(",")));
    }
}

/// "dedicated=gpu:NoSchedule", or "dedicated:NoSchedule" without a value.
fn taint(taint: &Taint) -> String {
    match non_empty(taint.value.as_deref()) {
        Some(value) => format!("{}={value}:{}", taint.key, taint.effect),
        None => format!("{}:{}", taint.key, taint.effect),
    }
}

fn describe_node_conditions(w: &mut Writer, conditions: &[NodeCondition]) {
    if conditions.is_empty() {
        return;
    }
    w.line(0, "Conditions:");
    w.line(
        1,
        "Type\tStatus\tLastHeartbeatTime\tLastTransitionTime\tReason\tMessage",
    );
    w.line(
        1,
        "----\t------\t-----------------\t------------------\t------\t-------",
    );
    for condition in conditions {
        let (type_, status) = (&condition.type_, &condition.status);
        let heartbeat = format_time(condition.last_heartbeat_time.as_ref());
        let transition = format_time(condition.last_transition_time.as_ref());
        let reason = condition.reason.as_deref().unwrap_or_default();
        let message = condition.message.as_deref().unwrap_or_default();
        let times = format!("{heartbeat} \t{transition}");
        w.line(
            1,
            format!("{type_} \t{status} \t{times} \t{reason} \t{message}"),
        );
    }
}

fn describe_deployment(w: &mut Writer, deployment: &Deployment) {
    let spec = &deployment.spec;
    let status = or_default(&deployment.status);
    let selector = format_label_selector(&spec.selector);
    w.line(0, format!("Selector:\t{selector}"));
    let desired = spec.replicas.unwrap_or(1);
    let [updated, total, available, unavailable] = [
        status.updated_replicas,
        status.replicas,
        status.available_replicas,
        status.unavailable_replicas,
    ]
    .map(|count| count.unwrap_or(0));
    w.line(
        0,
        format!(
            "Replicas:\t{desired} desired | {updated} updated | {total} total | \
             {available} available | {unavailable} unavailable"
        ),
    );
    describe_strategy(w, deployment);
    describe_pod_template(w, Some(&spec.template));
    let conditions = items(&status.conditions).iter();
    let conditions = conditions.map(|c| [&c.type_, &c.status, &c.reason].map(or_empty));
    describe_conditions(w, conditions);
}

/// `StrategyType:`, `MinReadySeconds:` and, for rolling updates, how far a rollout may go below
/// and above the desired replicas (25% each unless set, as the API server defaults them).
fn describe_strategy(w: &mut Writer, deployment: &Deployment) {
    let spec = &deployment.spec;
    let strategy = or_default(&spec.strategy);
    let strategy_type = strategy.type_.as_deref().unwrap_or("RollingUpdate");
    w.line(0, format!("StrategyType:\t{strategy_type}"));
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    w.line(0, format!("MinReadySeconds:\t{min_ready}"));
    if strategy_type == "RollingUpdate" {
        let rolling = or_default(&strategy.rolling_update);
        let unavailable = rollout_limit(rolling.max_unavailable.as_ref());
        let surge = rollout_limit(rolling.max_surge.as_ref());
        let limits = format!("{unavailable} max unavailable, {surge} max surge");
        w.line(0, format!("RollingUpdateStrategy:\t{limits}"));
    }
}

fn rollout_limit(limit: Option<&IntOrString>) -> String {
    limit.map_or_else(|| "25%".to_string(), int_or_string)
}

fn describe_replica_set(w: &mut Writer, replica_set: &ReplicaSet) {
    let spec = &replica_set.spec;
    let status = or_default(&replica_set.status);
    let selector = format_label_selector(&spec.selector);
    w.line(0, format!("Selector:\t{selector}"));
    describe_controller(w, &replica_set.metadata);
    let (current, desired) = (status.replicas, spec.replicas.unwrap_or(1));
    w.line(
        0,
        format!("Replicas:\t{current} current / {desired} desired"),
    );
    describe_pod_template(w, spec.template.as_ref());
    let conditions = items(&status.conditions).iter();
    let conditions = conditions.map(|c| [&c.type_, &c.status, &c.reason].map(or_empty));
    describe_conditions(w, conditions);
}

// ---------------------------------------------------------------------------------------------
// Values as kubectl spells them

fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
}

/// An optional field's value, or its type's default (what the API server would fill in).
fn or_default<T: Clone + Default>(value: &Option<T>) -> Cow<'_, T> {
    value
        .as_ref()
        .map_or_else(|| Cow::Owned(T::default()), Cow::Borrowed)
}

/// The items of an optional list; none when unset.
fn items<T>(list: &Option<Vec<T>>) -> &[T] {
    list.as_deref().unwrap_or_default()
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty())
}

fn or_empty(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or_default()
}

fn or_none(value: Option<&str>) -> String {
    non_empty(value).unwrap_or(NONE).to_string()
}

fn join_or_none<S: AsRef<str>>(values: impl IntoIterator<Item = S>, separator: &str) -> String {
    let values: Vec<S> = values.into_iter().collect();
    let values: Vec<&str> = values.iter().map(AsRef::as_ref).collect();
    or_none(Some(&values.join(separator)))
}

fn int_or_string(value: &IntOrString) -> String {
    match value {
        IntOrString::Int(number) => number.to_string(),
        IntOrString::String(name) => name.clone(),
    }
}

/// A label map as kubectl's `labels.FormatLabels`: "app=web,tier=front", `<none>` if empty.
fn format_labels(labels: Option<&BTreeMap<String, String>>) -> String {
    join_or_none(label_lines(labels), ",")
}

/// A label selector as kubectl's `metav1.FormatLabelSelector`: requirements sorted by key,
/// "app=web,!canary,env in (prod,staging)", `<none>` if it has none.
fn format_label_selector(selector: &LabelSelector) -> String {
    let labels = selector.match_labels.iter().flatten();
    let mut requirements: Vec<(&str, String)> = labels
        .map(|(key, value)| (key.as_str(), format!("{key}={value}")))
        .collect();
    for expression in items(&selector.match_expressions) {
        let key = &expression.key;
        let values: BTreeSet<&str> = items(&expression.values)
            .iter()
            .map(|v| v.as_str())
            .collect();
        let values = values.into_iter().collect::<Vec<_>>().join(",");
        let requirement = match expression.operator.as_str() {
            "In" => format!("{key} in ({values})"),
            "NotIn" => format!("{key} notin ({values})"),
            "Exists" => key.clone(),
            "DoesNotExist" => format!("!{key}"),
            _ => return "<error>".to_string(),
        };
        requirements.push((key, requirement));
    }
    requirements.sort_by_key(|(key, _)| *key);
    join_or_none(requirements.into_iter().map(|(_, r)| r), ",")
}

/// A time as describe prints it, Go's RFC 1123 with a numeric zone, in UTC:
/// "Mon, 02 Jan 2006 15:04:05 +0000".
fn format_time(time: Option<&Time>) -> String {
    let Some(Time(timestamp)) = time else {
        return "<unknown>".to_string();
    };
    let utc = timestamp.to_zoned(TimeZone::UTC);
    utc.strftime("%a, %d %b %Y %H:%M:%S %z").to_string()
}

// ---------------------------------------------------------------------------------------------
// Layout: Go's text/tabwriter

/// describe's text before layout: lines of tab-separated cells, as kubectl's describers write
/// them into its tabwriter.
#[derive(Default)]
struct Writer {
    lines: Vec<Vec<String>>,
}

impl Writer {
    /// A line indented by `level` steps of two spaces; tabs in `text` separate its cells.
    fn line(&mut self, level: usize, text: impl AsRef<str>) {
        let text = format!("{}{}", "  ".repeat(level), text.as_ref());
        self.lines
            .push(text.split('\t').map(String::from).collect());
    }

    /// Lines of data from the object (a ConfigMap value, a command), printed as they are:
    /// tabs in them are data, not cell separators.
    fn verbatim(&mut self, level: usize, text: &str) {
        let indent = "  ".repeat(level);
        let lines = text.split('\n').map(|line| vec![format!("{indent}{line}")]);
        self.lines.extend(lines);
    }

    /// `Labels:` and the like: the first value beside the title, the rest below it in the
    /// value column, `<none>` when there are none.
    fn list(&mut self, level: usize, title: &str, values: Vec<String>) {
        let mut title = format!("{title}:");
        if values.is_empty() {
            self.line(level, format!("{title}\t{NONE}"));
        }
        for value in values {
            self.line(level, format!("{title}\t{value}"));
            title.clear();
        }
    }

    fn finish(self) -> String {
        align(&self.lines, DESCRIBE)
    }
}

/// How a tabwriter spaces its columns.
#[derive(Clone, Copy)]
struct Layout {
    min_width: usize,
    padding: usize,
}

/// Lays out lines of cells as Go's `text/tabwriter` does, since kubectl prints through one.
/// A cell followed by another is padded to the width of its column, and a column runs down
/// the consecutive lines that have a cell in it, so a line with fewer cells ends the columns
/// to its right: `Labels:` continuation lines align with their first value, and a section
/// heading starts fresh columns below it. A line's last cell is never padded.
fn align(lines: &[Vec<String>], layout: Layout) -> String {
    let mut out = String::new();
    align_columns(lines, &mut Vec::new(), layout, &mut out);
    out
}

/// Writes `lines`, whose columns left of `widths.len()` have those widths, measuring the next
/// column's width over each block of consecutive lines that have a cell in it.
fn align_columns(lines: &[Vec<String>], widths: &mut Vec<usize>, layout: Layout, out: &mut String) {
    let column = widths.len();
    let has_cell = |line: &Vec<String>| line.len() > column + 1;
    let mut rest = lines;
    while let Some(line) = rest.first() {
        if !has_cell(line) {
            write_line(line, widths, out);
            rest = &rest[1..];
            continue;
        }
        let end = rest.iter().position(|l| !has_cell(l)).unwrap_or(rest.len());
        let (block, after) = rest.split_at(end);
        let cell_widths = block.iter().map(|line| text_width(&line[column]));
        let widest = cell_widths.max().unwrap_or(0);
        widths.push((widest + layout.padding).max(layout.min_width));
        align_columns(block, widths, layout, out);
        widths.pop();
        rest = after;
    }
}

fn write_line(cells: &[String], widths: &[usize], out: &mut String) {
    for (i, cell) in cells.iter().enumerate() {
        out.push_str(cell);
        if let Some(width) = widths.get(i) {
            out.push_str(&" ".repeat(width.saturating_sub(text_width(cell))));
        }
    }
    out.push('\n');
}

/// Width in characters, as the tabwriter counts (runes, not bytes).
fn text_width(text: &str) -> usize {
    text.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;
    use serde_json::json;

    fn object<T: DeserializeOwned>(value: serde_json::Value) -> Resource
    where
        Resource: From<T>,
    {
        Resource::from(serde_json::from_value::<T>(value).expect("valid object"))
    }

    fn at(time: &str) -> Timestamp {
        time.parse().expect("valid timestamp")
    }

    fn options(now: &str) -> TableOptions {
        TableOptions {
            wide: false,
            all_namespaces: false,
            show_kind: false,
            now: at(now),
        }
    }

    fn deployments() -> Vec<Resource> {
        let deployment = |name: &str, created: &str, replicas: i32, ready: i32| {
            object::<Deployment>(json!({
                "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": name, "tier": "front"}},
                    "template": {
                        "metadata": {"labels": {"app": name, "tier": "front"}},
                        "spec": {"containers": [
                            {"name": name, "image": format!("registry.local/{name}:1.0")},
                            {"name": "sidecar", "image": "envoy:1.30"},
                        ]},
                    },
                },
                "status": {"readyReplicas": ready, "updatedReplicas": replicas, "availableReplicas": ready},
            }))
        };
        vec![
            deployment("api", "2024-05-01T11:54:57Z", 1, 1),
            deployment("web", "2024-05-01T11:23:00Z", 3, 2),
        ]
    }

    #[test]
    fn deployment_table() {
        let table = table(
            Kind::Deployment,
            &deployments(),
            &options("2024-05-01T12:00:00Z"),
        );
        assert_eq!(
            table,
            "NAME   READY   UP-TO-DATE   AVAILABLE   AGE\n\
             api    1/1     1            1           5m3s\n\
             web    2/3     3            2           37m\n"
        );
    }

    #[test]
    fn deployment_table_wide_with_kind() {
        let options = TableOptions {
            wide: true,
            show_kind: true,
            ..options("2024-05-01T12:00:00Z")
        };
        let table = table(Kind::Deployment, &deployments()[..1], &options);
        let expected = [
            "NAME                  READY   UP-TO-DATE   AVAILABLE   AGE    CONTAINERS    IMAGES                              SELECTOR",
            "deployment.apps/api   1/1     1            1           5m3s   api,sidecar   registry.local/api:1.0,envoy:1.30   app=api,tier=front",
            "",
        ];
        assert_eq!(table, expected.join("\n"));
    }

    #[test]
    fn missing_replicas_count_as_zero_of_one() {
        let bare = object::<Deployment>(json!({
            "metadata": {"name": "bare"},
            "spec": {"selector": {}, "template": {}},
        }));
        let table = table(Kind::Deployment, &[bare], &options("2024-05-01T12:00:00Z"));
        assert_eq!(
            table,
            "NAME   READY   UP-TO-DATE   AVAILABLE   AGE\n\
             bare   0/1     0            0           <unknown>\n"
        );
    }

    #[test]
    fn service_table_with_node_port() {
        let service = object::<Service>(json!({
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": "2024-05-01T00:00:00Z"},
            "spec": {
                "type": "NodePort",
                "clusterIP": "10.96.0.10",
                "selector": {"app": "web", "tier": "front"},
                "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"},
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                ],
            },
        }));
        let options = TableOptions {
            wide: true,
            ..options("2024-05-01T15:30:00Z")
        };
        assert_eq!(
            table(Kind::Service, &[service], &options),
            "NAME   TYPE       CLUSTER-IP   EXTERNAL-IP   PORT(S)               AGE   SELECTOR\n\
             web    NodePort   10.96.0.10   <none>        80:30080/TCP,53/UDP   15h   app=web,tier=front\n"
        );
    }

    fn slice(name: &str, port: i32, endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default",
                         "creationTimestamp": "2024-05-01T11:00:00Z",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": endpoints,
        }))
        .expect("valid slice")
    }

    fn endpoint(ip: &str, ready: bool) -> serde_json::Value {
        json!({"addresses": [ip], "conditions": {"ready": ready, "serving": ready},
               "nodeName": "node-1", "targetRef": {"kind": "Pod", "name": format!("pod-{ip}")}})
    }

    #[test]
    fn endpoint_slice_table_and_describe() {
        let many: Vec<serde_json::Value> = (2..7)
            .map(|i| endpoint(&format!("10.244.0.{i}"), true))
            .collect();
        let slices = [
            Resource::from(slice("web-abcde", 8080, json!(many))),
            Resource::from(slice(
                "web-fghjk",
                9090,
                json!([endpoint("10.244.1.2", false)]),
            )),
            Resource::from(EndpointSlice {
                metadata: ObjectMeta {
                    name: Some("empty".into()),
                    ..ObjectMeta::default()
                },
                address_type: "IPv4".into(),
                endpoints: None,
                ports: None,
            }),
        ];
        let expected = [
            "NAME        ADDRESSTYPE   PORTS     ENDPOINTS                                      AGE",
            "web-abcde   IPv4          8080      10.244.0.2,10.244.0.3,10.244.0.4 + 2 more...   60m",
            "web-fghjk   IPv4          9090      10.244.1.2                                     60m",
            "empty       IPv4          <unset>   <unset>                                        <unknown>",
            "",
        ];
        assert_eq!(
            table(
                Kind::EndpointSlice,
                &slices,
                &options("2024-05-01T12:00:00Z")
            ),
            expected.join("\n")
        );
        let text = describe(&slices[1], &[], &[], at("2024-05-01T12:00:00Z"));
        let expected = [
            "Name:               web-fghjk",
            "Namespace:          default",
            "Labels:             kubernetes.io/service-name=web",
            "Annotations:        <none>",
            "CreationTimestamp:  Wed, 01 May 2024 11:00:00 +0000",
            "AddressType:        IPv4",
            "Ports:",
            "  Name  Port  Protocol",
            "  ----  ----  --------",
            "  http  9090  TCP",
            "Endpoints:",
            "  - Addresses:  10.244.1.2",
            "    Conditions:",
            "      Ready:    false",
            "    Hostname:   <unset>",
            "    TargetRef:  Pod/pod-10.244.1.2",
            "    NodeName:   node-1",
            "    Zone:       <unset>",
            "Events:         <none>",
            "",
        ];
        assert_eq!(text, expected.join("\n"));
    }

    #[test]
    fn service_describe_shows_node_ports_and_ready_endpoints() {
        let service = object::<Service>(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "type": "NodePort",
                "clusterIP": "10.96.0.10",
                "clusterIPs": ["10.96.0.10"],
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080}],
            },
        }));
        let slices = [
            slice(
                "web-abcde",
                8080,
                json!([endpoint("10.244.0.2", true), endpoint("10.244.0.3", false)]),
            ),
            slice("web-fghjk", 9090, json!([endpoint("10.244.1.2", true)])),
        ];
        let text = describe(&service, &[], &slices, at("2024-05-01T12:00:00Z"));
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.contains(&"NodePort:           http  30080/TCP"),
            "{text}"
        );
        assert!(
            lines.contains(&"Endpoints:          10.244.0.2:8080,10.244.1.2:9090"),
            "{text}"
        );
        let none = describe(&service, &[], &[], at("2024-05-01T12:00:00Z"));
        assert!(
            none.lines().any(|l| l == "Endpoints:          <none>"),
            "{none}"
        );
    }

    #[test]
    fn service_external_ips() {
        let service = |spec: serde_json::Value, status: serde_json::Value| {
            let Resource::Service(service) = object::<Service>(
                json!({"metadata": {"name": "s"}, "spec": spec, "status": status}),
            ) else {
                unreachable!()
            };
            external_ip(&service)
        };
        assert_eq!(
            service(json!({"type": "LoadBalancer"}), json!({})),
            "<pending>"
        );
        let ingress =
            json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"hostname": "lb.example"}]}});
        assert_eq!(
            service(json!({"type": "LoadBalancer"}), ingress),
            "1.2.3.4,lb.example"
        );
        assert_eq!(service(json!({}), json!({})), "<none>");
        let external = json!({"type": "ExternalName", "externalName": "db.example"});
        assert_eq!(service(external, json!({})), "db.example");
    }

    #[test]
    fn config_map_table_across_namespaces() {
        let config_map = |namespace: &str, name: &str, created: &str, data: serde_json::Value| {
            object::<ConfigMap>(json!({
                "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
                "data": data,
                "binaryData": {"logo.png": "iVBORw0K"},
            }))
        };
        let config_maps = [
            config_map(
                "default",
                "settings",
                "2024-04-28T12:00:00Z",
                json!({"a": "1"}),
            ),
            config_map("kube-system", "coredns", "2023-03-28T12:00:00Z", json!({})),
        ];
        let options = TableOptions {
            all_namespaces: true,
            ..options("2024-05-01T12:00:00Z")
        };
        assert_eq!(
            table(Kind::ConfigMap, &config_maps, &options),
            "NAMESPACE     NAME       DATA   AGE\n\
             default       settings   2      3d\n\
             kube-system   coredns    1      400d\n"
        );
    }

    #[test]
    fn cluster_scoped_kinds_ignore_all_namespaces() {
        let node = object::<Node>(json!({
            "metadata": {"name": "node-1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "nodeInfo": {
                    "kubeletVersion": "berth-0.1.0", "architecture": "", "bootID": "",
                    "containerRuntimeVersion": "", "kernelVersion": "", "kubeProxyVersion": "",
                    "machineID": "", "operatingSystem": "", "osImage": "", "systemUUID": "",
                },
            },
        }));
        let options = TableOptions {
            all_namespaces: true,
            ..options("2024-05-01T12:00:00Z")
        };
        assert_eq!(
            table(Kind::Node, &[node], &options),
            "NAME     STATUS                     ROLES           AGE         VERSION\n\
             node-1   Ready,SchedulingDisabled   control-plane   <unknown>   berth-0.1.0\n"
        );
    }

    #[test]
    fn pod_table_shows_why_a_container_is_not_running() {
        let pod = object::<Pod>(json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2024-05-01T11:59:15Z"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "web"}, {"name": "log"}]},
            "status": {
                "phase": "Running",
                "podIP": "10.0.0.7",
                "containerStatuses": [
                    {"name": "web", "image": "", "imageID": "", "ready": false, "restartCount": 4,
                     "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
                    {"name": "log", "image": "", "imageID": "", "ready": true, "restartCount": 1,
                     "state": {"running": {}}},
                ],
            },
        }));
        let options = TableOptions {
            wide: true,
            ..options("2024-05-01T12:00:00Z")
        };
        assert_eq!(
            table(Kind::Pod, &[pod], &options),
            "NAME    READY   STATUS             RESTARTS   AGE   IP         NODE\n\
             web-1   1/2     CrashLoopBackOff   5          45s   10.0.0.7   node-1\n"
        );
    }

    #[test]
    fn no_objects_no_table() {
        assert_eq!(table(Kind::Pod, &[], &options("2024-05-01T12:00:00Z")), "");
    }

    #[test]
    fn age_follows_human_duration() {
        let now = at("2030-01-01T00:00:00Z");
        let age_of = |seconds: i64| age(Some(&(now - SignedDuration::from_secs(seconds))), now);
        let cases = [
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (5 * 60 + 3, "5m3s"),
            (9 * 60, "9m"),
            (37 * 60, "37m"),
            // Minutes alone up to three hours, as HumanDuration has it: 2h5m is "125m".
            (2 * 3600 + 5 * 60, "125m"),
            (5 * 3600 + 5 * 60, "5h5m"),
            (15 * 3600, "15h"),
            (3 * 86400, "3d"),
            (3 * 86400 + 2 * 3600, "3d2h"),
            (400 * 86400, "400d"),
            (800 * 86400, "2y70d"),
            (9 * 365 * 86400, "9y"),
            (-1, "0s"),
            (-5, "<invalid>"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(age_of(seconds), expected, "{seconds}s");
        }
        assert_eq!(age(None, now), "<unknown>");
    }

    #[test]
    fn describe_secret_never_shows_values() {
        let secret = object::<Secret>(json!({
            "metadata": {"name": "db", "namespace": "prod", "creationTimestamp": "2024-05-01T12:00:00Z"},
            "data": {"password": "aHVudGVyMg=="},
            "stringData": {"user": "admin"},
        }));
        let text = describe(&secret, &[], &[], at("2024-05-01T12:00:00Z"));
        assert!(
            !text.contains("hunter2") && !text.contains("aHVudGVyMg=="),
            "{text}"
        );
        assert!(!text.contains("admin"), "{text}");
        assert_eq!(
            text,
            "Name:               db\n\
             Namespace:          prod\n\
             Labels:             <none>\n\
             Annotations:        <none>\n\
             CreationTimestamp:  Wed, 01 May 2024 12:00:00 +0000\n\
             \n\
             Type:  Opaque\n\
             \n\
             Data\n\
             ====\n\
             password:  7 bytes\n\
             user:      5 bytes\n\
             Events:    <none>\n"
        );
    }

    #[test]
    fn describe_deployment_like_kubectl() {
        let deployment = object::<Deployment>(json!({
            "metadata": {
                "name": "web", "namespace": "default", "creationTimestamp": "2024-05-01T12:00:00Z",
                "labels": {"app": "web", "team": "edge"},
                "annotations": {"deployment.kubernetes.io/revision": "2"},
            },
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "web",
                        "image": "nginx:1.25",
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                        "env": [
                            {"name": "MODE", "value": "prod"},
                            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}},
                        ],
                    }]},
                },
            },
        }));
        let text = describe(&deployment, &[], &[], at("2024-05-01T12:00:00Z"));
        let expected = [
            "Name:                   web",
            "Namespace:              default",
            "Labels:                 app=web",
            "                        team=edge",
            "Annotations:            deployment.kubernetes.io/revision: 2",
            "CreationTimestamp:      Wed, 01 May 2024 12:00:00 +0000",
            "Selector:               app=web",
            "Replicas:               3 desired | 0 updated | 0 total | 0 available | 0 unavailable",
            "StrategyType:           RollingUpdate",
            "MinReadySeconds:        0",
            "RollingUpdateStrategy:  25% max unavailable, 25% max surge",
            "Pod Template:",
            "  Labels:  app=web",
            "  Containers:",
            "   web:",
            "    Image:      nginx:1.25",
            "    Port:       8080/TCP (http)",
            "    Host Port:  0/TCP",
            "    Limits:",
            // Limits run on into the Readiness line, so share its column, as in kubectl.
            "      cpu:      500m",
            "      memory:   128Mi",
            "    Readiness:  http-get http://:http/healthz delay=0s timeout=1s period=10s #success=1 #failure=3",
            "    Environment:",
            "      MODE:   prod",
            "      TOKEN:  <set to the key 'token' in secret 'api'>  Optional: false",
            "    Mounts:   <none>",
            "  Volumes:    <none>",
            "Events:       <none>",
            "",
        ];
        assert_eq!(text, expected.join("\n"));
    }

    #[test]
    fn describe_config_map_shows_data() {
        let config_map = object::<ConfigMap>(json!({
            "metadata": {"name": "settings", "namespace": "default"},
            "data": {"app.conf": "level=debug\nport=80"},
        }));
        let text = describe(&config_map, &[], &[], at("2024-05-01T12:00:00Z"));
        assert!(
            text.contains("\nData\n====\napp.conf:\n----\nlevel=debug\nport=80\n\n"),
            "{text}"
        );
        assert!(
            text.ends_with("\nBinaryData\n====\n\nEvents:  <none>\n"),
            "{text}"
        );
    }

    #[test]
    fn describe_pod_shows_container_state() {
        let pod = object::<Pod>(json!({
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "web", "image": "nginx"}]},
            "status": {
                "phase": "Running",
                "hostIP": "192.168.1.10",
                "podIP": "10.0.0.7",
                "containerStatuses": [{
                    "name": "web", "image": "nginx", "imageID": "", "ready": false,
                    "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                }],
            },
        }));
        let text = describe(&pod, &[], &[], at("2024-05-01T12:00:00Z"));
        let expected = [
            "Node:               node-1/192.168.1.10",
            "Status:             Running",
            "IP:                 10.0.0.7",
            "Containers:",
            "  web:",
            "    Image:          nginx",
            "    Port:           <none>",
            "    Host Port:      <none>",
            "    State:          Waiting",
            "      Reason:       CrashLoopBackOff",
            "    Ready:          False",
            "    Restart Count:  2",
            "    Environment:    <none>",
            "    Mounts:         <none>",
            "Volumes:            <none>",
        ];
        assert!(text.contains(&expected.join("\n")), "{text}");
    }

    #[test]
    fn label_selectors_sort_requirements_by_key() {
        let selector: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "dev"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        }))
        .unwrap();
        assert_eq!(
            format_label_selector(&selector),
            "app=web,!canary,env in (dev,prod)"
        );
        assert_eq!(format_label_selector(&LabelSelector::default()), "<none>");
    }

    #[test]
    fn tabwriter_columns_end_at_shorter_lines() {
        let lines: Vec<Vec<String>> = ["a:\t1", "long name:\t2", "section", "b:\t3"]
            .iter()
            .map(|l| l.split('\t').map(String::from).collect())
            .collect();
        assert_eq!(
            align(&lines, DESCRIBE),
            "a:          1\nlong name:  2\nsection\nb:  3\n"
        );
    }
}
