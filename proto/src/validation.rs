//! The semantic checks every object passes before it is stored.
//!
//! They follow Kubernetes' own validation for the fields berth implements: names, labels, pod
//! specs, workloads, Services, ConfigMaps and Secrets. The API server runs them on every write
//! and [`crate::manifest`] runs them when reading a file, so errors carry only a field path
//! (`spec.template.spec.containers[0].ports[0].containerPort`); the manifest reader maps it
//! back to a line. Map keys appear in brackets: `metadata.labels[app]`.

use crate::quantity;
use crate::Resource;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStrategy, ReplicaSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvFromSource, EnvVar, HTTPGetAction, KeyToPath, LifecycleHandler, Node,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Secret, Service, Volume,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

/// Every problem with `resource`; empty when it is valid.
pub fn validate(resource: &Resource) -> Vec<FieldError> {
    let mut errors = Errors::default();
    object_meta(resource, &mut errors);
    match resource {
        Resource::Pod(pod) => match &pod.spec {
            Some(spec) => pod_spec(spec, "spec", &mut errors),
            None => errors.add("spec", "is required"),
        },
        Resource::Deployment(deployment) => self::deployment(deployment, &mut errors),
        Resource::ReplicaSet(replica_set) => self::replica_set(replica_set, &mut errors),
        Resource::Service(service) => self::service(service, &mut errors),
        Resource::ConfigMap(config_map) => self::config_map(config_map, &mut errors),
        Resource::Secret(secret) => self::secret(secret, &mut errors),
        Resource::Node(node) => self::node(node, &mut errors),
        Resource::Namespace(_) => {}
        Resource::Event(event) => self::event(event, &mut errors),
        Resource::EndpointSlice(slice) => self::endpoint_slice(slice, &mut errors),
    }
    errors.0
}

/// Whether `s` is a DNS-1123 label (`web-1`): what most names of things inside a pod, and
/// Namespace names, must be.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && is_label_chars(s)
}

/// Whether `s` is a DNS-1123 subdomain (`web.example-1`): what most object names must be.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label_chars)
}

fn is_label_chars(s: &str) -> bool {
    let bytes = s.as_bytes();
    let inner = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => edge(first) && edge(last) && bytes.iter().all(inner),
        _ => false,
    }
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// `s` quoted for a message, shortened so that a huge value cannot flood the terminal.
fn quoted(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((end, _)) => format!("{:?}...", &s[..end]),
        None => format!("{s:?}"),
    }
}

fn one_of(value: &str, allowed: &[&str]) -> Option<String> {
    if allowed.contains(&value) {
        return None;
    }
    let (last, rest) = allowed.split_last().expect("a non-empty list of choices");
    Some(format!(
        "{} is not supported: use {} or {last}",
        quoted(value),
        rest.join(", ")
    ))
}

fn check_one_of(errors: &mut Errors, path: String, value: Option<&str>, allowed: &[&str]) {
    if let Some(message) = value.and_then(|v| one_of(v, allowed)) {
        errors.add(path, message);
    }
}

fn at_least(errors: &mut Errors, path: String, value: Option<i64>, min: i64) {
    if let Some(value) = value.filter(|v| *v < min) {
        errors.add(
            path,
            format!("{value} must be greater than or equal to {min}"),
        );
    }
}

fn port_in_range(errors: &mut Errors, path: String, port: i32) {
    if !(1..=65535).contains(&port) {
        errors.add(path, format!("{port} is out of range 1..65535"));
    }
}

// ---------------------------------------------------------------------------------------------
// Names, labels and metadata
// ---------------------------------------------------------------------------------------------

const LABEL_REASON: &str =
    "must be lowercase alphanumeric characters or '-', start and end with an alphanumeric";
const SUBDOMAIN_REASON: &str =
    "must be lowercase alphanumeric characters, '-' or '.', start and end with an alphanumeric";
const DNS1035_REASON: &str =
    "must be lowercase alphanumeric characters or '-', start with a letter and end with an alphanumeric";

/// Why `name` is not a DNS-1123 label, if it is not.
fn label_name_problem(name: &str) -> Option<String> {
    name_problem(name, 63, is_dns1123_label, LABEL_REASON)
}

/// Why `name` is not a DNS-1123 subdomain, if it is not.
fn subdomain_name_problem(name: &str) -> Option<String> {
    name_problem(name, 253, is_dns1123_subdomain, SUBDOMAIN_REASON)
}

/// Why `name` is too long or not of the form `valid` checks, if either.
fn name_problem(name: &str, max: usize, valid: fn(&str) -> bool, reason: &str) -> Option<String> {
    if name.len() > max {
        Some(format!(
            "{} is not a valid name: must be no more than {max} characters",
            quoted(name)
        ))
    } else if !valid(name) {
        Some(format!("{} is not a valid name: {reason}", quoted(name)))
    } else {
        None
    }
}

/// Services become DNS names and environment variable names, so Kubernetes wants a DNS-1035
/// label: a DNS-1123 label that starts with a letter.
fn service_name_problem(name: &str) -> Option<String> {
    label_name_problem(name).or_else(|| {
        (!name.starts_with(|c: char| c.is_ascii_lowercase()))
            .then(|| format!("{} is not a valid name: {DNS1035_REASON}", quoted(name)))
    })
}

fn check_name(errors: &mut Errors, path: String, name: &str, problem: fn(&str) -> Option<String>) {
    if name.is_empty() {
        errors.add(path, "is required");
    } else if let Some(message) = problem(name) {
        errors.add(path, message);
    }
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters: a label name or value.
fn is_qualified_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    let edge = |b: &u8| b.is_ascii_alphanumeric();
    let inner = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    s.len() <= 63
        && match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => edge(first) && edge(last) && bytes.iter().all(inner),
            _ => false,
        }
}

const LABEL_PART_REASON: &str = "must be no more than 63 characters, alphanumeric, '-', '_' or '.', and start and end with an alphanumeric";

/// Why `key` is not a valid label (or annotation) key: an optional DNS subdomain prefix and
/// '/', then a name.
fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let reason = if let Some(prefix) = prefix.filter(|p| p.is_empty() || !is_dns1123_subdomain(p)) {
        format!(
            "prefix {} must be a DNS subdomain like example.com",
            quoted(prefix)
        )
    } else if name.is_empty() {
        "the name after the prefix is empty".to_string()
    } else if !is_qualified_name_part(name) {
        format!("name part {LABEL_PART_REASON}")
    } else {
        return None;
    };
    Some(format!("{} is not a valid key: {reason}", quoted(key)))
}

fn label_value_problem(value: &str) -> Option<String> {
    (!value.is_empty() && !is_qualified_name_part(value)).then(|| {
        format!(
            "{} is not a valid label value: {LABEL_PART_REASON}",
            quoted(value)
        )
    })
}

fn labels(errors: &mut Errors, path: &str, labels: Option<&BTreeMap<String, String>>) {
    for (key, value) in labels.into_iter().flatten() {
        let path = format!("{path}[{key}]");
        if let Some(message) = label_key_problem(key).or_else(|| label_value_problem(value)) {
            errors.add(path, message);
        }
    }
}

fn annotations(errors: &mut Errors, path: &str, annotations: Option<&BTreeMap<String, String>>) {
    const MAX_TOTAL: usize = 256 * 1024;
    let mut total = 0;
    for (key, value) in annotations.into_iter().flatten() {
        total += key.len() + value.len();
        if let Some(message) = label_key_problem(key) {
            errors.add(format!("{path}[{key}]"), message);
        }
    }
    if total > MAX_TOTAL {
        errors.add(path, "must be no more than 256 KiB in total");
    }
}

fn object_meta(resource: &Resource, errors: &mut Errors) {
    use crate::Kind;
    let meta = resource.metadata();
    let problem: fn(&str) -> Option<String> = match resource.kind() {
        Kind::Namespace => label_name_problem,
        Kind::Service => service_name_problem,
        _ => subdomain_name_problem,
    };
    check_name(
        errors,
        "metadata.name".into(),
        meta.name.as_deref().unwrap_or(""),
        problem,
    );
    if let Some(namespace) = meta.namespace.as_deref() {
        check_name(
            errors,
            "metadata.namespace".into(),
            namespace,
            label_name_problem,
        );
    }
    template_meta(meta, "metadata", errors);
}

fn template_meta(meta: &ObjectMeta, path: &str, errors: &mut Errors) {
    labels(errors, &format!("{path}.labels"), meta.labels.as_ref());
    annotations(
        errors,
        &format!("{path}.annotations"),
        meta.annotations.as_ref(),
    );
}

// ---------------------------------------------------------------------------------------------
// Pods
// ---------------------------------------------------------------------------------------------

/// Why `name` is not an IANA service name (a named port), if it is not.
fn port_name_problem(name: &str) -> Option<String> {
    let reason = if name.len() > 15 {
        "must be no more than 15 characters"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        "must contain only lowercase alphanumeric characters or '-'"
    } else if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        "must contain at least one letter"
    } else if name.starts_with('-') || name.ends_with('-') {
        "must not begin or end with '-'"
    } else if name.contains("--") {
        "must not contain consecutive '-'"
    } else {
        return None;
    };
    Some(format!(
        "{} is not a valid port name: {reason}",
        quoted(name)
    ))
}

/// `[-._a-zA-Z][-._a-zA-Z0-9]*`, like Kubernetes' environment variable names.
fn is_env_var_name(name: &str) -> bool {
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
    name.bytes().next().is_some_and(|b| !b.is_ascii_digit()) && name.bytes().all(ok)
}

/// `[-._a-zA-Z0-9]+`, at most 253 characters and not `.` or `..`: a ConfigMap or Secret key.
fn config_key_problem(key: &str) -> Option<String> {
    let reason = if key.is_empty() {
        "must not be empty"
    } else if key.len() > 253 {
        "must be no more than 253 characters"
    } else if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        "must consist of alphanumeric characters, '-', '_' or '.'"
    } else if key == "." || key == ".." || key.starts_with("..") {
        "must not be '.' or '..' or start with '..'"
    } else {
        return None;
    };
    Some(format!("{} is not a valid key: {reason}", quoted(key)))
}

const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

fn pod_spec(spec: &PodSpec, path: &str, errors: &mut Errors) {
    let volume_names = volumes(spec.volumes.as_deref().unwrap_or(&[]), path, errors);

    if spec.containers.is_empty() {
        errors.add(
            format!("{path}.containers"),
            "must have at least one container",
        );
    }
    let mut container_names = BTreeSet::new();
    // Port names are unique across the whole pod: a Service's targetPort names one.
    let mut port_names: HashMap<&str, String> = HashMap::new();
    for (i, container) in spec.containers.iter().enumerate() {
        let path = format!("{path}.containers[{i}]");
        if !container.name.is_empty() && !container_names.insert(container.name.as_str()) {
            errors.add(
                format!("{path}.name"),
                format!("duplicate container name {}", quoted(&container.name)),
            );
        }
        for (j, port) in container.ports.iter().flatten().enumerate() {
            if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                let port_path = format!("{path}.ports[{j}].name");
                if let Some(first) = port_names.get(name) {
                    errors.add(
                        port_path,
                        format!("duplicate port name {} (also {first})", quoted(name)),
                    );
                } else {
                    port_names.insert(name, port_path);
                }
            }
        }
        self::container(container, &path, &volume_names, errors);
    }

    check_one_of(
        errors,
        format!("{path}.restartPolicy"),
        spec.restart_policy.as_deref(),
        &["Always", "OnFailure", "Never"],
    );
    at_least(
        errors,
        format!("{path}.terminationGracePeriodSeconds"),
        spec.termination_grace_period_seconds,
        0,
    );
    labels(
        errors,
        &format!("{path}.nodeSelector"),
        spec.node_selector.as_ref(),
    );
    if let Some(node_name) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        if let Some(message) = subdomain_name_problem(node_name) {
            errors.add(format!("{path}.nodeName"), message);
        }
    }
}

/// Checks the pod's volumes and returns their names.
fn volumes<'a>(volumes: &'a [Volume], path: &str, errors: &mut Errors) -> BTreeSet<&'a str> {
    let mut names = BTreeSet::new();
    for (i, volume) in volumes.iter().enumerate() {
        let path = format!("{path}.volumes[{i}]");
        check_name(
            errors,
            format!("{path}.name"),
            &volume.name,
            label_name_problem,
        );
        if !volume.name.is_empty() && !names.insert(volume.name.as_str()) {
            errors.add(
                format!("{path}.name"),
                format!("duplicate volume name {}", quoted(&volume.name)),
            );
        }
        // Volume has some thirty source fields; counting the serialised ones covers them all,
        // including those added in later Kubernetes versions.
        let sources: Vec<String> = match serde_json::to_value(volume) {
            Ok(serde_json::Value::Object(fields)) => {
                fields.keys().filter(|k| *k != "name").cloned().collect()
            }
            _ => Vec::new(),
        };
        match sources.len() {
            0 => errors.add(
                path.clone(),
                "must specify a volume source (configMap, secret or emptyDir)",
            ),
            // The node agent makes only these.
            1 if !matches!(sources[0].as_str(), "configMap" | "secret" | "emptyDir") => errors.add(
                format!("{path}.{}", sources[0]),
                "is not supported: use configMap, secret or emptyDir",
            ),
            1 => {}
            _ => errors.add(
                path.clone(),
                format!(
                    "must specify exactly one volume source, not {}",
                    sources.join(" and ")
                ),
            ),
        }
        if let Some(medium) = volume
            .empty_dir
            .as_ref()
            .and_then(|e| e.medium.as_deref())
            .filter(|m| !m.is_empty() && *m != "Memory")
        {
            errors.add(
                format!("{path}.emptyDir.medium"),
                format!(
                    "{} is not supported: use \"\" (the node's disk) or \"Memory\"",
                    quoted(medium)
                ),
            );
        }
        if let Some(config_map) = &volume.config_map {
            check_name(
                errors,
                format!("{path}.configMap.name"),
                &config_map.name,
                subdomain_name_problem,
            );
            if config_map.default_user.is_some() {
                errors.add(format!("{path}.configMap.defaultUser"), "is not supported");
            }
            key_to_paths(
                errors,
                &format!("{path}.configMap"),
                config_map.items.as_deref(),
                config_map.default_mode,
            );
        }
        if let Some(secret) = &volume.secret {
            check_name(
                errors,
                format!("{path}.secret.secretName"),
                secret.secret_name.as_deref().unwrap_or(""),
                subdomain_name_problem,
            );
            if secret.default_user.is_some() {
                errors.add(format!("{path}.secret.defaultUser"), "is not supported");
            }
            key_to_paths(
                errors,
                &format!("{path}.secret"),
                secret.items.as_deref(),
                secret.default_mode,
            );
        }
    }
    names
}

fn key_to_paths(errors: &mut Errors, path: &str, items: Option<&[KeyToPath]>, mode: Option<i32>) {
    check_file_mode(errors, format!("{path}.defaultMode"), mode);
    for (i, item) in items.into_iter().flatten().enumerate() {
        let path = format!("{path}.items[{i}]");
        if let Some(message) = config_key_problem(&item.key) {
            errors.add(format!("{path}.key"), message);
        }
        if item.path.is_empty() {
            errors.add(format!("{path}.path"), "is required");
        } else if let Some(message) = relative_path_problem(&item.path) {
            errors.add(format!("{path}.path"), message);
        }
        check_file_mode(errors, format!("{path}.mode"), item.mode);
        if item.user.is_some() {
            errors.add(format!("{path}.user"), "is not supported");
        }
    }
}

fn check_file_mode(errors: &mut Errors, path: String, mode: Option<i32>) {
    if let Some(mode) = mode.filter(|m| !(0..=0o777).contains(m)) {
        errors.add(path, format!("{mode} is not a file mode (0..0777)"));
    }
}

fn relative_path_problem(path: &str) -> Option<String> {
    if path.starts_with('/') {
        Some(format!("{} must be a relative path", quoted(path)))
    } else if path.split('/').any(|part| part == "..") {
        Some(format!("{} must not contain '..'", quoted(path)))
    } else {
        None
    }
}

fn container(container: &Container, path: &str, volumes: &BTreeSet<&str>, errors: &mut Errors) {
    check_name(
        errors,
        format!("{path}.name"),
        &container.name,
        label_name_problem,
    );
    match container.image.as_deref() {
        None | Some("") => errors.add(format!("{path}.image"), "is required"),
        Some(image) if image.trim() != image => errors.add(
            format!("{path}.image"),
            "must not have leading or trailing whitespace",
        ),
        Some(_) => {}
    }
    check_one_of(
        errors,
        format!("{path}.imagePullPolicy"),
        container.image_pull_policy.as_deref(),
        &["Always", "IfNotPresent", "Never"],
    );

    let mut port_names = BTreeSet::new();
    for (i, port) in container.ports.iter().flatten().enumerate() {
        let path = format!("{path}.ports[{i}]");
        port_in_range(errors, format!("{path}.containerPort"), port.container_port);
        if let Some(host_port) = port.host_port.filter(|p| *p != 0) {
            port_in_range(errors, format!("{path}.hostPort"), host_port);
        }
        check_one_of(
            errors,
            format!("{path}.protocol"),
            port.protocol.as_deref(),
            PROTOCOLS,
        );
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            port_names.insert(name);
            if let Some(message) = port_name_problem(name) {
                errors.add(format!("{path}.name"), message);
            }
        }
    }

    for (i, var) in container.env.iter().flatten().enumerate() {
        env_var(var, &format!("{path}.env[{i}]"), errors);
    }
    for (i, source) in container.env_from.iter().flatten().enumerate() {
        env_from(source, &format!("{path}.envFrom[{i}]"), errors);
    }
    if let Some(resources) = &container.resources {
        self::resources(resources, &format!("{path}.resources"), errors);
    }

    for (field, probe) in [
        ("readinessProbe", &container.readiness_probe),
        ("livenessProbe", &container.liveness_probe),
        ("startupProbe", &container.startup_probe),
    ] {
        if let Some(probe) = probe {
            self::probe(
                probe,
                field,
                &format!("{path}.{field}"),
                &port_names,
                errors,
            );
        }
    }
    if let Some(lifecycle) = &container.lifecycle {
        for (field, handler) in [
            ("preStop", &lifecycle.pre_stop),
            ("postStart", &lifecycle.post_start),
        ] {
            if let Some(handler) = handler {
                lifecycle_handler(
                    handler,
                    &format!("{path}.lifecycle.{field}"),
                    &port_names,
                    errors,
                );
            }
        }
    }

    let mut mount_paths = BTreeSet::new();
    for (i, mount) in container.volume_mounts.iter().flatten().enumerate() {
        let path = format!("{path}.volumeMounts[{i}]");
        if mount.name.is_empty() {
            errors.add(format!("{path}.name"), "is required");
        } else if !volumes.contains(mount.name.as_str()) {
            errors.add(
                format!("{path}.name"),
                format!("{} is not a volume of this pod", quoted(&mount.name)),
            );
        }
        if mount.mount_path.is_empty() {
            errors.add(format!("{path}.mountPath"), "is required");
        } else if !mount.mount_path.starts_with('/') {
            errors.add(
                format!("{path}.mountPath"),
                format!("{} must be an absolute path", quoted(&mount.mount_path)),
            );
        } else if !mount_paths.insert(mount.mount_path.trim_end_matches('/')) {
            errors.add(
                format!("{path}.mountPath"),
                format!("{} is mounted more than once", quoted(&mount.mount_path)),
            );
        }
        if let Some(message) = mount.sub_path.as_deref().and_then(relative_path_problem) {
            errors.add(format!("{path}.subPath"), message);
        }
    }
}

fn env_var(var: &EnvVar, path: &str, errors: &mut Errors) {
    if var.name.is_empty() {
        errors.add(format!("{path}.name"), "is required");
    } else if !is_env_var_name(&var.name) {
        errors.add(
            format!("{path}.name"),
            format!(
                "{} is not a valid environment variable name: must be letters, digits, '-', '_' or '.', and not start with a digit",
                quoted(&var.name)
            ),
        );
    }
    let Some(source) = &var.value_from else {
        return;
    };
    let path = format!("{path}.valueFrom");
    if var.value.as_deref().is_some_and(|v| !v.is_empty()) {
        errors.add(path.clone(), "may not be set together with value");
    }
    let sources: Vec<&str> = [
        ("configMapKeyRef", source.config_map_key_ref.is_some()),
        ("secretKeyRef", source.secret_key_ref.is_some()),
        ("fieldRef", source.field_ref.is_some()),
        ("resourceFieldRef", source.resource_field_ref.is_some()),
        ("fileKeyRef", source.file_key_ref.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    match sources.len() {
        0 => errors.add(
            path.clone(),
            "must specify one of configMapKeyRef, secretKeyRef, fieldRef or resourceFieldRef",
        ),
        1 => {}
        _ => errors.add(
            path.clone(),
            format!(
                "must specify exactly one source, not {}",
                sources.join(" and ")
            ),
        ),
    }
    if source.file_key_ref.is_some() {
        errors.add(format!("{path}.fileKeyRef"), "is not supported");
    }
    if let Some(field_ref) = &source.field_ref {
        if !is_env_field_path(&field_ref.field_path) {
            errors.add(
                format!("{path}.fieldRef.fieldPath"),
                format!(
                    "{} is not supported: use metadata.name, metadata.namespace, metadata.uid, metadata.labels['KEY'], metadata.annotations['KEY'], spec.nodeName, spec.serviceAccountName, status.podIP(s) or status.hostIP(s)",
                    quoted(&field_ref.field_path)
                ),
            );
        }
    }
    if let Some(resource_ref) = &source.resource_field_ref {
        let resource = resource_ref.resource.as_str();
        if !ENV_RESOURCES.contains(&resource) {
            errors.add(
                format!("{path}.resourceFieldRef.resource"),
                format!(
                    "{} is not supported: use limits.cpu, limits.memory, requests.cpu or requests.memory",
                    quoted(resource)
                ),
            );
        }
        if let Some(divisor) = &resource_ref.divisor {
            if !quantity::parse_milli(&divisor.0).is_ok_and(|d| d > 0) {
                errors.add(
                    format!("{path}.resourceFieldRef.divisor"),
                    format!("{} must be a positive quantity", quoted(&divisor.0)),
                );
            }
        }
    }
    let key_refs = [
        source
            .config_map_key_ref
            .as_ref()
            .map(|r| ("configMapKeyRef", &r.name, &r.key)),
        source
            .secret_key_ref
            .as_ref()
            .map(|r| ("secretKeyRef", &r.name, &r.key)),
    ];
    for (field, name, key) in key_refs.into_iter().flatten() {
        check_name(
            errors,
            format!("{path}.{field}.name"),
            name,
            subdomain_name_problem,
        );
        if key.is_empty() {
            errors.add(format!("{path}.{field}.key"), "is required");
        } else if let Some(message) = config_key_problem(key) {
            errors.add(format!("{path}.{field}.key"), message);
        }
    }
}

/// The downward API's `fieldRef` paths env supports: what the node agent resolves. `KEY`
/// stands for any label or annotation key (not empty).
pub const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels['KEY']",
    "metadata.annotations['KEY']",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.podIP",
    "status.podIPs",
    "status.hostIP",
    "status.hostIPs",
];

/// The `resourceFieldRef` resources env supports: what the node agent resolves.
pub const ENV_RESOURCES: &[&str] = &[
    "limits.cpu",
    "limits.memory",
    "requests.cpu",
    "requests.memory",
];

/// Whether env can take `path` from the pod: one of [`ENV_FIELD_PATHS`].
pub fn is_env_field_path(path: &str) -> bool {
    ENV_FIELD_PATHS
        .iter()
        .any(|pattern| match pattern.split_once("KEY") {
            Some((prefix, suffix)) => path
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(suffix))
                .is_some_and(|key| !key.is_empty()),
            None => path == *pattern,
        })
}

fn env_from(source: &EnvFromSource, path: &str, errors: &mut Errors) {
    let refs = [
        source
            .config_map_ref
            .as_ref()
            .map(|r| ("configMapRef", &r.name)),
        source.secret_ref.as_ref().map(|r| ("secretRef", &r.name)),
    ];
    match refs.iter().flatten().count() {
        0 => errors.add(path, "must specify configMapRef or secretRef"),
        1 => {}
        _ => errors.add(path, "must specify configMapRef or secretRef, not both"),
    }
    for (field, name) in refs.into_iter().flatten() {
        check_name(
            errors,
            format!("{path}.{field}.name"),
            name,
            subdomain_name_problem,
        );
    }
    if let Some(prefix) = source.prefix.as_deref().filter(|p| !p.is_empty()) {
        if !is_env_var_name(prefix) {
            errors.add(
                format!("{path}.prefix"),
                format!(
                    "{} is not a valid environment variable prefix",
                    quoted(prefix)
                ),
            );
        }
    }
}

/// Why `name` is not a resource a container may request, if it is not.
fn resource_name_problem(name: &str) -> Option<String> {
    let standard = matches!(name, "cpu" | "memory" | "ephemeral-storage")
        || name
            .strip_prefix("hugepages-")
            .is_some_and(|size| quantity::parse_milli(size).is_ok());
    // Anything else is an extended resource, which must be domain-qualified (nvidia.com/gpu).
    let extended = name.contains('/') && label_key_problem(name).is_none();
    (!standard && !extended).then(|| {
        format!(
            "{} is not a known resource name: use cpu, memory, ephemeral-storage, hugepages-<size>, or a domain-qualified name like example.com/gpu",
            quoted(name)
        )
    })
}

fn resources(resources: &ResourceRequirements, path: &str, errors: &mut Errors) {
    let mut parsed: [BTreeMap<&str, i128>; 2] = Default::default();
    for (i, (field, quantities)) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ]
    .into_iter()
    .enumerate()
    {
        for (name, value) in quantities.iter().flatten() {
            let path = format!("{path}.{field}[{name}]");
            if let Some(message) = resource_name_problem(name) {
                errors.add(path, message);
                continue;
            }
            match quantity::parse_milli(&value.0) {
                Err(e) => errors.add(path, e.to_string()),
                Ok(milli) if milli < 0 => errors.add(
                    path,
                    format!("{} must be greater than or equal to 0", value.0),
                ),
                Ok(milli) => {
                    parsed[i].insert(name, milli);
                }
            }
        }
    }
    let [requests, limits] = &parsed;
    for (name, request) in requests {
        if limits.get(name).is_some_and(|limit| request > limit) {
            let limit_text = &resources.limits.as_ref().expect("parsed from limits")[*name].0;
            let request_text = &resources.requests.as_ref().expect("parsed from requests")[*name].0;
            errors.add(
                format!("{path}.requests[{name}]"),
                format!(
                    "{request_text} must be less than or equal to the {name} limit {limit_text}"
                ),
            );
        }
    }
}

fn probe(probe: &Probe, field: &str, path: &str, port_names: &BTreeSet<&str>, errors: &mut Errors) {
    let handlers: Vec<&str> = [
        ("httpGet", probe.http_get.is_some()),
        ("tcpSocket", probe.tcp_socket.is_some()),
        ("exec", probe.exec.is_some()),
        ("grpc", probe.grpc.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    match handlers.len() {
        0 => errors.add(
            path,
            "must specify a handler: httpGet, tcpSocket, exec or grpc",
        ),
        1 => {}
        _ => errors.add(
            path,
            format!(
                "must specify exactly one handler, not {}",
                handlers.join(" and ")
            ),
        ),
    }
    if let Some(http_get) = &probe.http_get {
        self::http_get(http_get, &format!("{path}.httpGet"), port_names, errors);
    }
    if let Some(tcp_socket) = &probe.tcp_socket {
        port_reference(
            &tcp_socket.port,
            &format!("{path}.tcpSocket.port"),
            port_names,
            errors,
        );
    }
    if let Some(exec) = &probe.exec {
        if exec.command.as_ref().is_none_or(|c| c.is_empty()) {
            errors.add(format!("{path}.exec.command"), "is required");
        }
    }
    if let Some(grpc) = &probe.grpc {
        port_in_range(errors, format!("{path}.grpc.port"), grpc.port);
    }

    at_least(
        errors,
        format!("{path}.initialDelaySeconds"),
        probe.initial_delay_seconds.map(i64::from),
        0,
    );
    for (name, value) in [
        ("periodSeconds", probe.period_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("failureThreshold", probe.failure_threshold),
        ("successThreshold", probe.success_threshold),
    ] {
        at_least(errors, format!("{path}.{name}"), value.map(i64::from), 1);
    }
    at_least(
        errors,
        format!("{path}.terminationGracePeriodSeconds"),
        probe.termination_grace_period_seconds,
        1,
    );
    // A liveness or startup probe that needs several successes would make a single failure
    // final; Kubernetes forbids it.
    if field != "readinessProbe" {
        if let Some(threshold) = probe.success_threshold.filter(|t| *t > 1) {
            errors.add(
                format!("{path}.successThreshold"),
                format!("{threshold} must be 1 for a {field}"),
            );
        }
    }
}

fn http_get(action: &HTTPGetAction, path: &str, port_names: &BTreeSet<&str>, errors: &mut Errors) {
    port_reference(&action.port, &format!("{path}.port"), port_names, errors);
    check_one_of(
        errors,
        format!("{path}.scheme"),
        action.scheme.as_deref(),
        &["HTTP", "HTTPS"],
    );
    for (i, header) in action.http_headers.iter().flatten().enumerate() {
        if header.name.is_empty() {
            errors.add(format!("{path}.httpHeaders[{i}].name"), "is required");
        }
    }
}

/// A probe's or hook's port: a number, or the name of one of the container's ports.
fn port_reference(
    port: &IntOrString,
    path: &str,
    port_names: &BTreeSet<&str>,
    errors: &mut Errors,
) {
    match port {
        IntOrString::Int(number) => port_in_range(errors, path.to_string(), *number),
        IntOrString::String(name) => {
            if let Some(message) = port_name_problem(name) {
                errors.add(path, message);
            } else if !port_names.contains(name.as_str()) {
                errors.add(
                    path,
                    format!("{} does not name a port of this container", quoted(name)),
                );
            }
        }
    }
}

fn lifecycle_handler(
    handler: &LifecycleHandler,
    path: &str,
    port_names: &BTreeSet<&str>,
    errors: &mut Errors,
) {
    let handlers: Vec<&str> = [
        ("exec", handler.exec.is_some()),
        ("httpGet", handler.http_get.is_some()),
        ("sleep", handler.sleep.is_some()),
        ("tcpSocket", handler.tcp_socket.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    match handlers.len() {
        0 => errors.add(path, "must specify a handler: exec, httpGet or sleep"),
        1 => {}
        _ => errors.add(
            path,
            format!(
                "must specify exactly one handler, not {}",
                handlers.join(" and ")
            ),
        ),
    }
    if let Some(exec) = &handler.exec {
        if exec.command.as_ref().is_none_or(|c| c.is_empty()) {
            errors.add(format!("{path}.exec.command"), "is required");
        }
    }
    if let Some(http_get) = &handler.http_get {
        self::http_get(http_get, &format!("{path}.httpGet"), port_names, errors);
    }
    if let Some(sleep) = &handler.sleep {
        at_least(
            errors,
            format!("{path}.sleep.seconds"),
            Some(sleep.seconds),
            0,
        );
    }
    if let Some(tcp_socket) = &handler.tcp_socket {
        port_reference(
            &tcp_socket.port,
            &format!("{path}.tcpSocket.port"),
            port_names,
            errors,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Deployments and ReplicaSets
// ---------------------------------------------------------------------------------------------

const SELECTOR_OPERATORS: &[&str] = &["In", "NotIn", "Exists", "DoesNotExist"];

/// Checks a workload's selector and returns whether it is usable for matching.
fn label_selector(selector: &LabelSelector, path: &str, errors: &mut Errors) -> bool {
    let expressions = selector.match_expressions.as_deref().unwrap_or(&[]);
    if selector.match_labels.as_ref().is_none_or(|l| l.is_empty()) && expressions.is_empty() {
        // An empty selector would select every pod in the namespace.
        errors.add(path, "is required");
        return false;
    }
    let before = errors.0.len();
    labels(
        errors,
        &format!("{path}.matchLabels"),
        selector.match_labels.as_ref(),
    );
    for (i, expression) in expressions.iter().enumerate() {
        let path = format!("{path}.matchExpressions[{i}]");
        if let Some(message) = label_key_problem(&expression.key) {
            errors.add(format!("{path}.key"), message);
        }
        let values = expression.values.as_deref().unwrap_or(&[]);
        match expression.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => errors.add(
                format!("{path}.values"),
                format!("must not be empty for operator {}", expression.operator),
            ),
            "Exists" | "DoesNotExist" if !values.is_empty() => errors.add(
                format!("{path}.values"),
                format!("must be empty for operator {}", expression.operator),
            ),
            operator => {
                if let Some(message) = one_of(operator, SELECTOR_OPERATORS) {
                    errors.add(format!("{path}.operator"), message);
                }
            }
        }
        for (j, value) in values.iter().enumerate() {
            if let Some(message) = label_value_problem(value) {
                errors.add(format!("{path}.values[{j}]"), message);
            }
        }
    }
    errors.0.len() == before
}

/// The first requirement of `selector` that `labels` fail, in selector syntax.
fn unmet_requirement(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> Option<String> {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    for (key, value) in selector.match_labels.iter().flatten() {
        if labels.get(key) != Some(value) {
            return Some(format!("{key}={value}"));
        }
    }
    for expression in selector.match_expressions.iter().flatten() {
        let key = &expression.key;
        let values = expression.values.as_deref().unwrap_or(&[]);
        let label = labels.get(key);
        let met = match expression.operator.as_str() {
            "In" => label.is_some_and(|v| values.contains(v)),
            "NotIn" => label.is_none_or(|v| !values.contains(v)),
            "Exists" => label.is_some(),
            "DoesNotExist" => label.is_none(),
            _ => true,
        };
        if !met {
            return Some(match expression.operator.as_str() {
                "Exists" => key.clone(),
                "DoesNotExist" => format!("!{key}"),
                op => format!("{key} {} ({})", op.to_lowercase(), values.join(",")),
            });
        }
    }
    None
}

/// What Deployments and ReplicaSets share: replicas, a selector, and a pod template it matches.
fn workload(
    replicas: Option<i32>,
    selector: &LabelSelector,
    template: Option<&PodTemplateSpec>,
    min_ready_seconds: Option<i32>,
    kind: &str,
    errors: &mut Errors,
) {
    at_least(errors, "spec.replicas".into(), replicas.map(i64::from), 0);
    at_least(
        errors,
        "spec.minReadySeconds".into(),
        min_ready_seconds.map(i64::from),
        0,
    );
    let selector_ok = label_selector(selector, "spec.selector", errors);
    let Some(template) = template else {
        errors.add("spec.template", "is required");
        return;
    };
    let meta = template.metadata.clone().unwrap_or_default();
    template_meta(&meta, "spec.template.metadata", errors);
    if selector_ok {
        if let Some(unmet) = unmet_requirement(selector, meta.labels.as_ref()) {
            errors.add(
                "spec.template.metadata.labels",
                format!("selector does not match template labels (needs {unmet})"),
            );
        }
    }
    match &template.spec {
        None => errors.add("spec.template.spec", "is required"),
        Some(spec) => {
            pod_spec(spec, "spec.template.spec", errors);
            // The controller replaces pods that exit; anything but Always would fight it.
            if let Some(policy) = spec.restart_policy.as_deref().filter(|p| *p != "Always") {
                errors.add(
                    "spec.template.spec.restartPolicy",
                    format!("must be Always for a {kind}, not {}", quoted(policy)),
                );
            }
        }
    }
}

fn deployment(deployment: &Deployment, errors: &mut Errors) {
    let spec = &deployment.spec;
    workload(
        spec.replicas,
        &spec.selector,
        Some(&spec.template),
        spec.min_ready_seconds,
        "Deployment",
        errors,
    );
    if let Some(strategy) = &spec.strategy {
        self::strategy(strategy, errors);
    }
    at_least(
        errors,
        "spec.revisionHistoryLimit".into(),
        spec.revision_history_limit.map(i64::from),
        0,
    );
    at_least(
        errors,
        "spec.progressDeadlineSeconds".into(),
        spec.progress_deadline_seconds.map(i64::from),
        0,
    );
    // Kubernetes defaults the deadline to 600s; a rollout could never make progress in time
    // if pods only count as available after it.
    let deadline = spec.progress_deadline_seconds.unwrap_or(600);
    if let Some(min_ready) = spec.min_ready_seconds.filter(|m| *m >= deadline) {
        if spec.progress_deadline_seconds.is_some() {
            errors.add(
                "spec.progressDeadlineSeconds",
                format!("{deadline} must be greater than minReadySeconds ({min_ready})"),
            );
        } else {
            errors.add(
                "spec.minReadySeconds",
                format!("{min_ready} must be less than progressDeadlineSeconds (600 by default)"),
            );
        }
    }
}

fn strategy(strategy: &DeploymentStrategy, errors: &mut Errors) {
    check_one_of(
        errors,
        "spec.strategy.type".into(),
        strategy.type_.as_deref(),
        &["RollingUpdate", "Recreate"],
    );
    let Some(rolling) = &strategy.rolling_update else {
        return;
    };
    if strategy.type_.as_deref() == Some("Recreate") {
        errors.add(
            "spec.strategy.rollingUpdate",
            "may not be set when type is Recreate",
        );
        return;
    }
    let surge = rolling
        .max_surge
        .as_ref()
        .and_then(|v| int_or_percent(v, "spec.strategy.rollingUpdate.maxSurge", false, errors));
    let unavailable = rolling.max_unavailable.as_ref().and_then(|v| {
        int_or_percent(
            v,
            "spec.strategy.rollingUpdate.maxUnavailable",
            true,
            errors,
        )
    });
    if surge == Some(0) && unavailable == Some(0) {
        errors.add(
            "spec.strategy.rollingUpdate.maxUnavailable",
            "may not be 0 when maxSurge is 0: the rollout could never make progress",
        );
    }
}

/// An integer or a percentage (`25%`) that must not be negative; returns its number.
fn int_or_percent(
    value: &IntOrString,
    path: &str,
    at_most_100_percent: bool,
    errors: &mut Errors,
) -> Option<i64> {
    let number = match value {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(s) => {
            let Some(n) = s
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<i64>().ok())
            else {
                errors.add(
                    path,
                    format!("{} must be a number or a percentage like 25%", quoted(s)),
                );
                return None;
            };
            if at_most_100_percent && n > 100 {
                errors.add(path, format!("{s} must not be greater than 100%"));
            }
            n
        }
    };
    if number < 0 {
        errors.add(path, format!("{number} must be greater than or equal to 0"));
        return None;
    }
    Some(number)
}

fn replica_set(replica_set: &ReplicaSet, errors: &mut Errors) {
    let spec = &replica_set.spec;
    workload(
        spec.replicas,
        &spec.selector,
        spec.template.as_ref(),
        spec.min_ready_seconds,
        "ReplicaSet",
        errors,
    );
}

// ---------------------------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------------------------

fn service(service: &Service, errors: &mut Errors) {
    let Some(spec) = &service.spec else {
        errors.add("spec", "is required");
        return;
    };
    let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    check_one_of(
        errors,
        "spec.type".into(),
        spec.type_.as_deref(),
        &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"],
    );
    let headless = spec.cluster_ip.as_deref() == Some("None");
    if service_type == "ExternalName" {
        match spec.external_name.as_deref() {
            None | Some("") => errors.add("spec.externalName", "is required for type ExternalName"),
            Some(name) => {
                if let Some(message) = subdomain_name_problem(name.trim_end_matches('.')) {
                    errors.add("spec.externalName", message);
                }
            }
        }
    }

    let ports = spec.ports.as_deref().unwrap_or(&[]);
    if ports.is_empty() && service_type != "ExternalName" && !headless {
        errors.add("spec.ports", "must have at least one port");
    }
    let mut names = BTreeSet::new();
    let mut ports_seen = BTreeSet::new();
    let node_ports_allowed = matches!(service_type, "NodePort" | "LoadBalancer");
    for (i, port) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        match port.name.as_deref().filter(|n| !n.is_empty()) {
            None if ports.len() > 1 => errors.add(
                format!("{path}.name"),
                "is required when the service has more than one port",
            ),
            None => {}
            Some(name) => {
                // Unlike container ports (IANA service names, at most 15 characters),
                // Service port names are DNS labels.
                if !is_dns1123_label(name) {
                    errors.add(
                        format!("{path}.name"),
                        format!(
                            "{} is not a valid port name: must be a DNS label (lowercase alphanumeric or '-', at most 63 characters)",
                            quoted(name)
                        ),
                    );
                } else if !names.insert(name) {
                    errors.add(
                        format!("{path}.name"),
                        format!("duplicate port name {}", quoted(name)),
                    );
                }
            }
        }
        port_in_range(errors, format!("{path}.port"), port.port);
        check_one_of(
            errors,
            format!("{path}.protocol"),
            port.protocol.as_deref(),
            PROTOCOLS,
        );
        let protocol = port.protocol.as_deref().unwrap_or("TCP");
        if !ports_seen.insert((port.port, protocol)) {
            errors.add(
                format!("{path}.port"),
                format!("duplicate port {}/{protocol}", port.port),
            );
        }
        match &port.target_port {
            Some(IntOrString::Int(number)) => {
                port_in_range(errors, format!("{path}.targetPort"), *number)
            }
            Some(IntOrString::String(name)) => {
                if let Some(message) = port_name_problem(name) {
                    errors.add(format!("{path}.targetPort"), message);
                }
            }
            None => {}
        }
        if let Some(node_port) = port.node_port.filter(|p| *p != 0) {
            if !node_ports_allowed {
                errors.add(
                    format!("{path}.nodePort"),
                    format!(
                        "may not be set for type {service_type}, only for NodePort or LoadBalancer"
                    ),
                );
            } else {
                // The server checks its own --service-node-port-range when it allocates.
                port_in_range(errors, format!("{path}.nodePort"), node_port);
            }
        }
    }

    check_one_of(
        errors,
        "spec.sessionAffinity".into(),
        spec.session_affinity.as_deref(),
        &["None", "ClientIP"],
    );
    labels(errors, "spec.selector", spec.selector.as_ref());
    if let Some(ip) = spec.cluster_ip.as_deref() {
        if !(ip.is_empty() || ip == "None" || ip.parse::<std::net::IpAddr>().is_ok()) {
            errors.add(
                "spec.clusterIP",
                format!("{} must be an IP address, \"None\" or empty", quoted(ip)),
            );
        }
    }
    for (i, ip) in spec.cluster_ips.iter().flatten().enumerate() {
        if !(ip == "None" || ip.parse::<std::net::IpAddr>().is_ok()) {
            errors.add(
                format!("spec.clusterIPs[{i}]"),
                format!("{} must be an IP address or \"None\"", quoted(ip)),
            );
        }
    }
    if let (Some(ip), Some(first)) = (
        spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty()),
        spec.cluster_ips.as_ref().and_then(|ips| ips.first()),
    ) {
        if ip != first {
            errors.add(
                "spec.clusterIPs[0]",
                format!("must match clusterIP {}", quoted(ip)),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ConfigMaps, Secrets, Nodes
// ---------------------------------------------------------------------------------------------

/// Objects are stored whole in one Raft entry; Kubernetes has the same limit.
const MAX_DATA_BYTES: usize = 1024 * 1024;

fn data_keys<'a, V>(
    errors: &mut Errors,
    field: &str,
    data: Option<&'a BTreeMap<String, V>>,
    size: fn(&V) -> usize,
) -> usize {
    let mut total = 0;
    for (key, value) in data.into_iter().flatten() {
        total += key.len() + size(value);
        if let Some(message) = config_key_problem(key) {
            errors.add(format!("{field}[{key}]"), message);
        }
    }
    total
}

fn config_map(config_map: &ConfigMap, errors: &mut Errors) {
    let total = data_keys(errors, "data", config_map.data.as_ref(), String::len)
        + data_keys(errors, "binaryData", config_map.binary_data.as_ref(), |v| {
            v.0.len()
        });
    if let (Some(data), Some(binary)) = (&config_map.data, &config_map.binary_data) {
        for key in binary.keys().filter(|k| data.contains_key(*k)) {
            errors.add(
                format!("binaryData[{key}]"),
                format!("{} is also in data", quoted(key)),
            );
        }
    }
    if total > MAX_DATA_BYTES {
        errors.add("data", "must be no more than 1 MiB in total");
    }
}

fn secret(secret: &Secret, errors: &mut Errors) {
    let total = data_keys(errors, "data", secret.data.as_ref(), |v| v.0.len())
        + data_keys(
            errors,
            "stringData",
            secret.string_data.as_ref(),
            String::len,
        );
    if total > MAX_DATA_BYTES {
        errors.add("data", "must be no more than 1 MiB in total");
    }
    if secret.type_.as_deref() == Some("") {
        errors.add("type", "must not be empty");
    }
}

fn node(node: &Node, errors: &mut Errors) {
    let Some(spec) = &node.spec else {
        return;
    };
    let cidrs = spec
        .pod_cidr
        .iter()
        .map(|c| ("spec.podCIDR".to_string(), c));
    let more = spec
        .pod_cidrs
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (format!("spec.podCIDRs[{i}]"), c));
    for (path, cidr) in cidrs.chain(more) {
        if !cidr.is_empty() && !is_cidr(cidr) {
            errors.add(
                path,
                format!("{} is not a CIDR like 10.244.1.0/24", quoted(cidr)),
            );
        }
    }
}

/// An Event must say what it is about and why (Kubernetes' minimum), and lives in the
/// namespace of the object it is about.
/// Kubernetes' limits: 1000 endpoints and 100 ports a slice, 100 addresses an endpoint.
fn endpoint_slice(slice: &EndpointSlice, errors: &mut Errors) {
    const ADDRESS_TYPES: &[&str] = &["IPv4", "IPv6", "FQDN"];
    if let Some(message) = one_of(&slice.address_type, ADDRESS_TYPES) {
        errors.add("addressType", message);
    }
    let endpoints = slice.endpoints.as_deref().unwrap_or(&[]);
    if endpoints.len() > 1000 {
        errors.add("endpoints", "must have at most 1000 items");
    }
    for (i, endpoint) in endpoints.iter().enumerate() {
        let path = format!("endpoints[{i}].addresses");
        if endpoint.addresses.is_empty() || endpoint.addresses.len() > 100 {
            errors.add(&path, "must have between 1 and 100 addresses");
        }
        for (j, address) in endpoint.addresses.iter().enumerate() {
            let valid = match slice.address_type.as_str() {
                "IPv4" => address.parse::<std::net::Ipv4Addr>().is_ok(),
                "IPv6" => address.parse::<std::net::Ipv6Addr>().is_ok(),
                _ => is_dns1123_subdomain(address),
            };
            if !valid {
                errors.add(
                    format!("{path}[{j}]"),
                    format!(
                        "{} is not a valid {} address",
                        quoted(address),
                        slice.address_type
                    ),
                );
            }
        }
    }
    let ports = slice.ports.as_deref().unwrap_or(&[]);
    if ports.len() > 100 {
        errors.add("ports", "must have at most 100 items");
    }
    for (i, port) in ports.iter().enumerate() {
        if let Some(number) = port.port {
            port_in_range(errors, format!("ports[{i}].port"), number);
        }
        check_one_of(
            errors,
            format!("ports[{i}].protocol"),
            port.protocol.as_deref(),
            PROTOCOLS,
        );
    }
}

fn event(event: &k8s_openapi::api::core::v1::Event, errors: &mut Errors) {
    let involved = &event.involved_object;
    for (field, value) in [("kind", &involved.kind), ("name", &involved.name)] {
        if value.as_deref().unwrap_or("").is_empty() {
            errors.add(format!("involvedObject.{field}"), "is required");
        }
    }
    let namespace = event.metadata.namespace.as_deref().unwrap_or("default");
    if let Some(involved) = involved.namespace.as_deref().filter(|n| !n.is_empty()) {
        if involved != namespace {
            errors.add(
                "involvedObject.namespace",
                format!(
                    "{} does not match the event's namespace {namespace:?}",
                    quoted(involved)
                ),
            );
        }
    }
    if event.reason.as_deref().unwrap_or("").is_empty() {
        errors.add("reason", "is required");
    }
    check_one_of(
        errors,
        "type".into(),
        event.type_.as_deref(),
        &["Normal", "Warning"],
    );
    at_least(errors, "count".into(), event.count.map(i64::from), 0);
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let max = match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => 32,
        Ok(std::net::IpAddr::V6(_)) => 128,
        Err(_) => return false,
    };
    bits.parse::<u8>().is_ok_and(|b| b <= max) && !bits.starts_with('+')
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, Pod};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    #[test]
    fn dns1123_labels_and_subdomains() {
        for ok in ["a", "web-1", "0", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "Web", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
        for ok in ["a.b", "web-1.example.com", "a", &"a".repeat(100)] {
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        for bad in ["", "a..b", ".a", "a.", "a.-b", "A.b", &"a".repeat(254)] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn label_keys_and_values() {
        for ok in ["app", "app.kubernetes.io/name", "a_b.C-1", "example.com/x"] {
            assert_eq!(label_key_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "-a",
            "a b",
            "Example.com/a",
            "a/b/c",
            &"a".repeat(64),
        ] {
            assert!(label_key_problem(bad).is_some(), "{bad:?}");
        }
        assert_eq!(label_value_problem(""), None);
        assert_eq!(label_value_problem("v1.2_3-A"), None);
        assert!(label_value_problem("a/b").is_some());
        assert!(label_value_problem(&"a".repeat(64)).is_some());
    }

    #[test]
    fn port_names_are_iana_service_names() {
        for ok in ["http", "web-8080", "h2c", "a"] {
            assert_eq!(port_name_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "HTTP",
            "8080",
            "-http",
            "http-",
            "a--b",
            "abcdefghijklmnop",
            "a_b",
        ] {
            assert!(port_name_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn env_names_config_keys_and_resource_names() {
        assert!(is_env_var_name("PATH"));
        assert!(is_env_var_name("my.var-1_x"));
        assert!(is_env_var_name("_X"));
        assert!(!is_env_var_name("1X"));
        assert!(!is_env_var_name("A=B"));
        assert!(!is_env_var_name(""));
        assert_eq!(config_key_problem("app.properties"), None);
        assert!(config_key_problem("..x").is_some());
        assert!(config_key_problem("a/b").is_some());
        for ok in [
            "cpu",
            "memory",
            "ephemeral-storage",
            "hugepages-2Mi",
            "nvidia.com/gpu",
        ] {
            assert_eq!(resource_name_problem(ok), None, "{ok}");
        }
        for bad in ["gpu", "CPU", "hugepages-x", "/gpu"] {
            assert!(resource_name_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn cidrs() {
        assert!(is_cidr("10.244.1.0/24"));
        assert!(is_cidr("fd00::/64"));
        assert!(!is_cidr("10.244.1.0"));
        assert!(!is_cidr("10.244.1.0/33"));
        assert!(!is_cidr("x/8"));
    }

    fn pod(container: Container) -> Resource {
        Resource::from(Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![container],
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn web() -> Container {
        Container {
            name: "web".into(),
            image: Some("nginx".into()),
            ..Default::default()
        }
    }

    fn messages(resource: &Resource) -> Vec<String> {
        validate(resource).iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_minimal_pod_is_valid() {
        assert_eq!(messages(&pod(web())), Vec::<String>::new());
    }

    #[test]
    fn config_sources_the_node_cannot_honour_are_refused() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [{
                "name": "web", "image": "nginx",
                "env": [
                    {"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "status.phase"}}},
                    {"name": "C", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
                    {"name": "D", "valueFrom": {"resourceFieldRef": {"resource": "limits.ephemeral-storage"}}},
                ],
            }],
            "volumes": [
                {"name": "ok", "emptyDir": {"medium": "Memory"}},
                {"name": "host", "hostPath": {"path": "/etc"}},
                {"name": "huge", "emptyDir": {"medium": "HugePages"}},
            ],
        }))
        .unwrap();
        let resource = Resource::from(Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                ..Default::default()
            },
            spec: Some(spec),
            ..Default::default()
        });
        let messages = messages(&resource);
        assert_eq!(messages.len(), 4, "{messages:#?}");
        for expected in [
            "env[1].valueFrom.fieldRef.fieldPath",
            "env[3].valueFrom.resourceFieldRef.resource",
            "volumes[1].hostPath",
            "volumes[2].emptyDir.medium",
        ] {
            assert!(
                messages.iter().any(|m| m.contains(expected)),
                "{expected} not in {messages:#?}"
            );
        }
    }

    #[test]
    fn ports_out_of_range() {
        let container = Container {
            ports: Some(vec![ContainerPort {
                container_port: 70000,
                ..Default::default()
            }]),
            ..web()
        };
        assert_eq!(
            messages(&pod(container)),
            ["spec.containers[0].ports[0].containerPort: 70000 is out of range 1..65535"]
        );
    }

    #[test]
    fn requests_may_not_exceed_limits() {
        let quantities = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect(),
            )
        };
        let container = Container {
            resources: Some(ResourceRequirements {
                requests: quantities(&[("cpu", "2"), ("memory", "-1"), ("gpu", "1")]),
                limits: quantities(&[("cpu", "500m"), ("memory", "lots")]),
                ..Default::default()
            }),
            ..web()
        };
        let messages = messages(&pod(container));
        assert_eq!(messages.len(), 4, "{messages:#?}");
        assert!(messages.contains(
            &"spec.containers[0].resources.requests[cpu]: 2 must be less than or equal to the cpu limit 500m"
                .to_string()
        ));
        assert!(messages.iter().any(|m| m.starts_with(
            "spec.containers[0].resources.limits[memory]: \"lots\" is not a quantity"
        )));
    }

    #[test]
    fn probe_ports_must_name_container_ports() {
        let container = Container {
            ports: Some(vec![ContainerPort {
                container_port: 80,
                name: Some("http".into()),
                ..Default::default()
            }]),
            readiness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    port: IntOrString::String("http".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            liveness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    port: IntOrString::String("metrics".into()),
                    ..Default::default()
                }),
                success_threshold: Some(2),
                ..Default::default()
            }),
            ..web()
        };
        assert_eq!(
            messages(&pod(container)),
            [
                "spec.containers[0].livenessProbe.httpGet.port: \"metrics\" does not name a port of this container",
                "spec.containers[0].livenessProbe.successThreshold: 2 must be 1 for a livenessProbe",
            ]
        );
    }

    #[test]
    fn names_are_checked_per_kind() {
        let mut resource = pod(web());
        resource.metadata_mut().name = Some("Web_1".into());
        assert_eq!(
            messages(&resource),
            ["metadata.name: \"Web_1\" is not a valid name: must be lowercase alphanumeric characters, '-' or '.', start and end with an alphanumeric"]
        );
        let namespace = Resource::from(k8s_openapi::api::core::v1::Namespace {
            metadata: ObjectMeta {
                name: Some("a.b".into()),
                ..Default::default()
            },
            ..Default::default()
        });
        assert_eq!(
            messages(&namespace),
            ["metadata.name: \"a.b\" is not a valid name: must be lowercase alphanumeric characters or '-', start and end with an alphanumeric"]
        );
        let mut nameless = pod(web());
        nameless.metadata_mut().name = None;
        assert_eq!(messages(&nameless), ["metadata.name: is required"]);
    }
}
