//! A container's configuration from the pod and the cluster's ConfigMaps and Secrets, the
//! kubelet's way: its environment (`env` with `valueFrom`, `envFrom`) and the files of the
//! pod's configMap and secret volumes. Pure: the pod worker fetches the objects the pod names
//! ([`References`]) and hands them here as [`Objects`].
//!
//! Environment, as the kubelet builds it: every `envFrom` source in order (a later one wins,
//! keys get the source's `prefix`), then every `env` entry in order (an entry overrides what
//! came before, envFrom included). A literal `value` expands `$(VAR)` from what is defined so
//! far; values from `valueFrom` are taken as they are. A ConfigMap or Secret (or a key of
//! one) that does not exist fails the container with the kubelet's message unless the
//! reference is `optional`: then the variable (or the whole envFrom source) is left out.
//! envFrom takes a ConfigMap's `data` only (not `binaryData`), as the kubelet does.

use crate::runtime::spec::expand;
use berth_proto::quantity;
use berth_proto::validation::ENV_RESOURCES;
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVarSource, Pod, Secret, Volume};
use std::collections::{BTreeMap, BTreeSet};

/// A file mode that neither the volume nor the item sets: 0644.
pub const DEFAULT_FILE_MODE: u32 = 0o644;

/// Why a container cannot be configured; messages are the kubelet's.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKey {
        key: String,
        namespace: String,
        name: String,
    },
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKey {
        key: String,
        namespace: String,
        name: String,
    },
    #[error("configmap references non-existent config key: {0}")]
    VolumeConfigMapKey(String),
    #[error("secret references non-existent secret key: {0}")]
    VolumeSecretKey(String),
    #[error("unsupported fieldPath: {0}")]
    FieldPath(String),
    #[error("unsupported container resource: {0}")]
    Resource(String),
    #[error("resourceFieldRef: container {0:?} is not in the pod")]
    NoSuchContainer(String),
    #[error("{field}: {message}")]
    Quantity { field: String, message: String },
}

/// The ConfigMaps and Secrets (by name, in the pod's namespace) something refers to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct References {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
}

impl References {
    /// What a container's env and envFrom name.
    pub fn of_container(container: &Container) -> References {
        let mut refs = References::default();
        for source in container.env_from.iter().flatten() {
            if let Some(r) = &source.config_map_ref {
                refs.config_maps.insert(r.name.clone());
            }
            if let Some(r) = &source.secret_ref {
                refs.secrets.insert(r.name.clone());
            }
        }
        for from in container
            .env
            .iter()
            .flatten()
            .filter_map(|v| v.value_from.as_ref())
        {
            if let Some(r) = &from.config_map_key_ref {
                refs.config_maps.insert(r.name.clone());
            }
            if let Some(r) = &from.secret_key_ref {
                refs.secrets.insert(r.name.clone());
            }
        }
        refs
    }

    /// What the pod's configMap and secret volumes name.
    pub fn of_volumes(pod: &Pod) -> References {
        let mut refs = References::default();
        for volume in pod_volumes(pod) {
            if let Some(source) = &volume.config_map {
                refs.config_maps.insert(source.name.clone());
            }
            if let Some(name) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
                refs.secrets.insert(name);
            }
        }
        refs
    }

    pub fn is_empty(&self) -> bool {
        self.config_maps.is_empty() && self.secrets.is_empty()
    }
}

fn pod_volumes(pod: &Pod) -> &[Volume] {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default()
}

/// ConfigMaps and Secrets of one namespace as fetched: `None` for one that does not exist.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    pub namespace: String,
    pub config_maps: BTreeMap<String, Option<ConfigMap>>,
    pub secrets: BTreeMap<String, Option<Secret>>,
}

impl Objects {
    fn config_map(&self, name: &str) -> Option<&ConfigMap> {
        self.config_maps.get(name).and_then(Option::as_ref)
    }

    /// A Secret's values: `data`, with `stringData` on top (as the API server merges them).
    fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let secret = self.secrets.get(name).and_then(Option::as_ref)?;
        let mut values: BTreeMap<String, Vec<u8>> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        for (k, v) in secret.string_data.iter().flatten() {
            values.insert(k.clone(), v.clone().into_bytes());
        }
        Some(values)
    }
}

/// What the node knows about the pod beyond its object (the downward API's sources).
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    pub pod_ip: Option<String>,
    pub host_ip: String,
    /// The node's allocatable CPU (millicores) and memory (bytes): a limit that is not set
    /// reads as these, as in the kubelet.
    pub allocatable_cpu_millis: i64,
    pub allocatable_memory_bytes: i64,
}

/// The container's environment, in order (a name appears once), before the image's env.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    objects: &Objects,
    facts: &PodFacts,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut env: Vec<(String, String)> = Vec::new();
    fn set(env: &mut Vec<(String, String)>, name: String, value: String) {
        env.retain(|(n, _)| *n != name);
        env.push((name, value));
    }
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.as_deref().unwrap_or_default();
        if let Some(r) = &source.config_map_ref {
            match objects.config_map(&r.name) {
                Some(config_map) => {
                    for (key, value) in config_map.data.iter().flatten() {
                        set(&mut env, format!("{prefix}{key}"), value.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(ConfigError::ConfigMapNotFound(r.name.clone())),
            }
        }
        if let Some(r) = &source.secret_ref {
            match objects.secret(&r.name) {
                Some(values) => {
                    for (key, value) in values {
                        set(&mut env, format!("{prefix}{key}"), text(value));
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(ConfigError::SecretNotFound(r.name.clone())),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => expand(var.value.as_deref().unwrap_or_default(), &env),
            Some(from) => match value_from(pod, container, from, objects, facts)? {
                Some(value) => value,
                None => continue, // an optional reference to nothing
            },
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// One `valueFrom`; `None` when an optional reference finds nothing.
fn value_from(
    pod: &Pod,
    container: &Container,
    from: &EnvVarSource,
    objects: &Objects,
    facts: &PodFacts,
) -> Result<Option<String>, ConfigError> {
    let namespace = &objects.namespace;
    if let Some(r) = &from.config_map_key_ref {
        let optional = r.optional == Some(true);
        let Some(config_map) = objects.config_map(&r.name) else {
            return if optional {
                Ok(None)
            } else {
                Err(ConfigError::ConfigMapNotFound(r.name.clone()))
            };
        };
        return match config_map.data.as_ref().and_then(|d| d.get(&r.key)) {
            Some(value) => Ok(Some(value.clone())),
            None if optional => Ok(None),
            None => Err(ConfigError::ConfigMapKey {
                key: r.key.clone(),
                namespace: namespace.clone(),
                name: r.name.clone(),
            }),
        };
    }
    if let Some(r) = &from.secret_key_ref {
        let optional = r.optional == Some(true);
        let Some(mut values) = objects.secret(&r.name) else {
            return if optional {
                Ok(None)
            } else {
                Err(ConfigError::SecretNotFound(r.name.clone()))
            };
        };
        return match values.remove(&r.key) {
            Some(value) => Ok(Some(text(value))),
            None if optional => Ok(None),
            None => Err(ConfigError::SecretKey {
                key: r.key.clone(),
                namespace: namespace.clone(),
                name: r.name.clone(),
            }),
        };
    }
    if let Some(r) = &from.field_ref {
        return field_value(pod, &r.field_path, facts).map(Some);
    }
    if let Some(r) = &from.resource_field_ref {
        let target = match r.container_name.as_deref().filter(|n| !n.is_empty()) {
            None => container,
            Some(name) => pod
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .find(|c| c.name == name)
                .ok_or_else(|| ConfigError::NoSuchContainer(name.to_string()))?,
        };
        let divisor = r.divisor.as_ref().map(|d| d.0.as_str());
        return resource_value(target, &r.resource, divisor, facts).map(Some);
    }
    // The validator refuses other sources (fileKeyRef).
    Err(ConfigError::FieldPath(
        "valueFrom without a supported source".into(),
    ))
}

/// `metadata.labels['k']` → ("labels", "k").
fn subscript(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("metadata.")?;
    let (map, rest) = rest.split_once("['")?;
    let key = rest.strip_suffix("']")?;
    matches!(map, "labels" | "annotations").then_some((map, key))
}

fn field_value(pod: &Pod, path: &str, facts: &PodFacts) -> Result<String, ConfigError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    if let Some((map, key)) = subscript(path) {
        let map = if map == "labels" {
            meta.labels.as_ref()
        } else {
            meta.annotations.as_ref()
        };
        return Ok(map.and_then(|m| m.get(key)).cloned().unwrap_or_default());
    }
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_else(|| "default".into()),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        // Kubernetes' admission sets "default" where the pod names none.
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone().unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        _ => return Err(ConfigError::FieldPath(path.to_string())),
    })
}

/// A container's limit or request divided by `divisor` (default 1), rounded up. A limit that
/// is not set is the node's allocatable; a request that is not set is the limit if that is
/// set (the API server's defaulting), else 0.
fn resource_value(
    container: &Container,
    resource: &str,
    divisor: Option<&str>,
    facts: &PodFacts,
) -> Result<String, ConfigError> {
    let (kind, name) = resource
        .split_once('.')
        .filter(|_| ENV_RESOURCES.contains(&resource))
        .ok_or_else(|| ConfigError::Resource(resource.to_string()))?;
    let requirements = container.resources.as_ref();
    let milli = |field: &str,
                 map: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >| {
        map.and_then(|m| m.get(name))
            .map(|q| {
                quantity::parse_milli(&q.0).map_err(|e| ConfigError::Quantity {
                    field: format!("{field}.{name}"),
                    message: e.to_string(),
                })
            })
            .transpose()
    };
    let limit = milli("limits", requirements.and_then(|r| r.limits.as_ref()))?;
    let value = match kind {
        "limits" => limit.unwrap_or_else(|| {
            if name == "cpu" {
                i128::from(facts.allocatable_cpu_millis)
            } else {
                i128::from(facts.allocatable_memory_bytes) * 1000
            }
        }),
        _ => milli("requests", requirements.and_then(|r| r.requests.as_ref()))?
            .or(limit)
            .unwrap_or(0),
    };
    let divisor = match divisor.filter(|d| !d.is_empty()) {
        None => 1000,
        Some(d) => quantity::parse_milli(d).map_err(|e| ConfigError::Quantity {
            field: "divisor".into(),
            message: e.to_string(),
        })?,
    };
    if divisor <= 0 {
        return Err(ConfigError::Quantity {
            field: "divisor".into(),
            message: "must be greater than 0".into(),
        });
    }
    // Rounded up: 500m of cpu with divisor 1 reads 1, as in the kubelet.
    let quotient = value.div_euclid(divisor) + i128::from(value.rem_euclid(divisor) != 0);
    Ok(quotient.to_string())
}

/// One file of a configMap or secret volume, at a path relative to the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFile {
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// The files of a configMap or secret volume; `None` for other volumes (emptyDir). An
/// optional volume whose object does not exist is empty; `items` pick keys (a missing one
/// fails the volume unless it is optional) and name their paths.
pub fn volume_files(
    volume: &Volume,
    objects: &Objects,
) -> Result<Option<Vec<VolumeFile>>, ConfigError> {
    type MissingKey = fn(String) -> ConfigError;
    let (values, items, default_mode, optional, missing_key): (_, _, _, _, MissingKey) =
        if let Some(source) = &volume.config_map {
            let values = objects.config_map(&source.name).map(|c| {
                let mut values: BTreeMap<String, Vec<u8>> = c
                    .binary_data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.0.clone()))
                    .collect();
                for (k, v) in c.data.iter().flatten() {
                    values.insert(k.clone(), v.clone().into_bytes());
                }
                values
            });
            if values.is_none() && source.optional != Some(true) {
                return Err(ConfigError::ConfigMapNotFound(source.name.clone()));
            }
            (
                values,
                source.items.as_deref(),
                source.default_mode,
                source.optional == Some(true),
                ConfigError::VolumeConfigMapKey,
            )
        } else if let Some(source) = &volume.secret {
            let name = source.secret_name.clone().unwrap_or_default();
            let values = objects.secret(&name);
            if values.is_none() && source.optional != Some(true) {
                return Err(ConfigError::SecretNotFound(name));
            }
            (
                values,
                source.items.as_deref(),
                source.default_mode,
                source.optional == Some(true),
                ConfigError::VolumeSecretKey,
            )
        } else {
            return Ok(None);
        };
    let Some(mut values) = values else {
        return Ok(Some(Vec::new()));
    };
    let default_mode = default_mode.map_or(DEFAULT_FILE_MODE, |m| m as u32 & 0o777);
    let mut files = Vec::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (key, data) in values {
                files.push(VolumeFile {
                    path: key,
                    data,
                    mode: default_mode,
                });
            }
        }
        Some(items) => {
            for item in items {
                let Some(data) = values.remove(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(missing_key(item.key.clone()));
                };
                files.push(VolumeFile {
                    path: item.path.trim_end_matches('/').to_string(),
                    data,
                    mode: item.mode.map_or(default_mode, |m| m as u32 & 0o777),
                });
            }
        }
    }
    Ok(Some(files))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::validation::{is_env_field_path, ENV_FIELD_PATHS};
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, ConfigMapVolumeSource, EmptyDirVolumeSource,
        EnvFromSource, EnvVar, KeyToPath, ObjectFieldSelector, PodSpec, ResourceFieldSelector,
        ResourceRequirements, SecretEnvSource, SecretKeySelector, SecretVolumeSource,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;

    fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn objects() -> Objects {
        let mut objects = Objects {
            namespace: "team".into(),
            ..Default::default()
        };
        objects.config_maps.insert(
            "app".into(),
            Some(config_map("app", &[("mode", "fast"), ("level", "3")])),
        );
        objects.config_maps.insert("gone".into(), None);
        objects.secrets.insert(
            "creds".into(),
            Some(secret("creds", &[("password", "s3cret")])),
        );
        objects.secrets.insert("absent".into(), None);
        objects
    }

    fn pod(containers: Vec<Container>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("team".into()),
                uid: Some("u-1".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                annotations: Some([("note".to_string(), "hi".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers,
                node_name: Some("node-1".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn facts() -> PodFacts {
        PodFacts {
            pod_ip: Some("10.244.0.7".into()),
            host_ip: "192.168.0.2".into(),
            allocatable_cpu_millis: 2000,
            allocatable_memory_bytes: 1 << 30,
        }
    }

    fn value(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    fn from(name: &str, source: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(source),
        }
    }

    fn cm_key(name: &str, key: &str, optional: Option<bool>) -> EnvVarSource {
        EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: name.into(),
                key: key.into(),
                optional,
            }),
            ..Default::default()
        }
    }

    fn secret_key(name: &str, key: &str, optional: Option<bool>) -> EnvVarSource {
        EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: name.into(),
                key: key.into(),
                optional,
            }),
            ..Default::default()
        }
    }

    fn field(path: &str) -> EnvVarSource {
        EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..Default::default()
        }
    }

    fn resource(resource: &str, divisor: Option<&str>) -> EnvVarSource {
        EnvVarSource {
            resource_field_ref: Some(ResourceFieldSelector {
                resource: resource.into(),
                divisor: divisor.map(|d| Quantity(d.into())),
                container_name: None,
            }),
            ..Default::default()
        }
    }

    fn env_of(container: Container) -> Result<Vec<(String, String)>, ConfigError> {
        let pod = pod(vec![container.clone()]);
        container_env(&pod, &container, &objects(), &facts())
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_from_then_env_in_order_explicit_wins_and_values_expand() {
        let container = Container {
            name: "main".into(),
            env_from: Some(vec![
                EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "app".into(),
                        optional: None,
                    }),
                    prefix: Some("APP_".into()),
                    secret_ref: None,
                },
                EnvFromSource {
                    secret_ref: Some(SecretEnvSource {
                        name: "creds".into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
                EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "gone".into(),
                        optional: Some(true),
                    }),
                    ..Default::default()
                },
            ]),
            env: Some(vec![
                value("APP_mode", "slow"),
                from("MODE", cm_key("app", "mode", None)),
                value("URL", "$(MODE)://$(password)@$(NOPE)"),
                from("PW", secret_key("creds", "password", None)),
                from("MAYBE", cm_key("gone", "x", Some(true))),
                from("MAYBE_KEY", secret_key("creds", "x", Some(true))),
                // valueFrom is not expanded.
                from("RAW", cm_key("app", "level", None)),
            ]),
            ..Default::default()
        };
        assert_eq!(
            env_of(container).unwrap(),
            pairs(&[
                ("APP_level", "3"),
                ("password", "s3cret"),
                ("APP_mode", "slow"),
                ("MODE", "fast"),
                ("URL", "fast://s3cret@$(NOPE)"),
                ("PW", "s3cret"),
                ("RAW", "3"),
            ])
        );
    }

    #[test]
    fn missing_objects_and_keys_give_the_kubelets_messages() {
        let with = |var: EnvVar| Container {
            name: "main".into(),
            env: Some(vec![var]),
            ..Default::default()
        };
        let message = |c: Container| env_of(c).unwrap_err().to_string();
        assert_eq!(
            message(with(from("A", cm_key("nope", "k", None)))),
            "configmap \"nope\" not found"
        );
        assert_eq!(
            message(with(from("A", cm_key("app", "k", None)))),
            "couldn't find key k in ConfigMap team/app"
        );
        assert_eq!(
            message(with(from("A", secret_key("absent", "k", Some(false))))),
            "secret \"absent\" not found"
        );
        assert_eq!(
            message(with(from("A", secret_key("creds", "k", None)))),
            "couldn't find key k in Secret team/creds"
        );
        let env_from = Container {
            name: "main".into(),
            env_from: Some(vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: "absent".into(),
                    optional: None,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(message(env_from), "secret \"absent\" not found");
    }

    #[test]
    fn field_refs_read_the_pod_and_the_node() {
        let paths = [
            ("metadata.name", "web-1"),
            ("metadata.namespace", "team"),
            ("metadata.uid", "u-1"),
            ("metadata.labels['app']", "web"),
            ("metadata.labels['none']", ""),
            ("metadata.annotations['note']", "hi"),
            ("spec.nodeName", "node-1"),
            ("spec.serviceAccountName", "default"),
            ("status.podIP", "10.244.0.7"),
            ("status.hostIP", "192.168.0.2"),
        ];
        let container = Container {
            name: "main".into(),
            env: Some(paths.iter().map(|(p, _)| from(p, field(p))).collect()),
            ..Default::default()
        };
        assert_eq!(env_of(container).unwrap(), pairs(&paths));
        // Every path the API server lets through resolves here.
        for pattern in ENV_FIELD_PATHS {
            let path = pattern.replace("KEY", "app");
            assert!(is_env_field_path(&path), "{path}");
            let container = Container {
                name: "main".into(),
                env: Some(vec![from("V", field(&path))]),
                ..Default::default()
            };
            assert!(env_of(container).is_ok(), "{path}");
        }
        assert!(!is_env_field_path("metadata.labels"));
        assert!(!is_env_field_path("status.phase"));
        assert!(!is_env_field_path("metadata.labels['KEY']x"));
    }

    #[test]
    fn resource_refs_divide_and_round_up_and_default_to_the_node() {
        let limits = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect(),
            )
        };
        let container = Container {
            name: "main".into(),
            resources: Some(ResourceRequirements {
                limits: limits(&[("cpu", "500m"), ("memory", "64Mi")]),
                requests: limits(&[("memory", "32Mi")]),
                ..Default::default()
            }),
            env: Some(vec![
                from("CPU", resource("limits.cpu", None)),
                from("CPU_M", resource("limits.cpu", Some("1m"))),
                from("MEM_MI", resource("limits.memory", Some("1Mi"))),
                from("REQ_MEM", resource("requests.memory", None)),
                from("REQ_CPU_M", resource("requests.cpu", Some("1m"))),
            ]),
            ..Default::default()
        };
        assert_eq!(
            env_of(container).unwrap(),
            pairs(&[
                ("CPU", "1"),
                ("CPU_M", "500"),
                ("MEM_MI", "64"),
                ("REQ_MEM", "33554432"),
                ("REQ_CPU_M", "500"),
            ])
        );
        let bare = Container {
            name: "main".into(),
            env: Some(vec![
                from("CPU", resource("limits.cpu", None)),
                from("MEM", resource("limits.memory", Some("1Gi"))),
                from("REQ", resource("requests.cpu", None)),
            ]),
            ..Default::default()
        };
        assert_eq!(
            env_of(bare).unwrap(),
            pairs(&[("CPU", "2"), ("MEM", "1"), ("REQ", "0")])
        );
        let odd = Container {
            name: "main".into(),
            env: Some(vec![from("X", resource("limits.nvidia.com/gpu", None))]),
            ..Default::default()
        };
        assert!(matches!(env_of(odd), Err(ConfigError::Resource(_))));
    }

    #[test]
    fn volume_files_from_keys_or_items_with_modes() {
        let cm_volume =
            |items: Option<Vec<KeyToPath>>, optional: Option<bool>, name: &str| Volume {
                name: "cfg".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: name.into(),
                    items,
                    default_mode: Some(0o600),
                    optional,
                    ..Default::default()
                }),
                ..Default::default()
            };
        let files = volume_files(&cm_volume(None, None, "app"), &objects())
            .unwrap()
            .unwrap();
        assert_eq!(
            files,
            vec![
                VolumeFile {
                    path: "level".into(),
                    data: b"3".to_vec(),
                    mode: 0o600
                },
                VolumeFile {
                    path: "mode".into(),
                    data: b"fast".to_vec(),
                    mode: 0o600
                },
            ]
        );
        let items = vec![KeyToPath {
            key: "mode".into(),
            path: "conf/mode.txt".into(),
            mode: Some(0o640),
            ..Default::default()
        }];
        let files = volume_files(&cm_volume(Some(items), None, "app"), &objects())
            .unwrap()
            .unwrap();
        assert_eq!(
            files,
            vec![VolumeFile {
                path: "conf/mode.txt".into(),
                data: b"fast".to_vec(),
                mode: 0o640
            }]
        );
        let missing_key = vec![KeyToPath {
            key: "nope".into(),
            path: "x".into(),
            mode: None,
            ..Default::default()
        }];
        assert_eq!(
            volume_files(
                &cm_volume(Some(missing_key.clone()), None, "app"),
                &objects()
            )
            .unwrap_err()
            .to_string(),
            "configmap references non-existent config key: nope"
        );
        assert_eq!(
            volume_files(&cm_volume(Some(missing_key), Some(true), "app"), &objects()),
            Ok(Some(vec![]))
        );
        assert_eq!(
            volume_files(&cm_volume(None, None, "gone"), &objects()),
            Err(ConfigError::ConfigMapNotFound("gone".into()))
        );
        assert_eq!(
            volume_files(&cm_volume(None, Some(true), "gone"), &objects()),
            Ok(Some(vec![]))
        );

        let secret_volume = Volume {
            name: "sec".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some("creds".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            volume_files(&secret_volume, &objects()).unwrap().unwrap(),
            vec![VolumeFile {
                path: "password".into(),
                data: b"s3cret".to_vec(),
                mode: DEFAULT_FILE_MODE
            }]
        );
        let empty_dir = Volume {
            name: "scratch".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        };
        assert_eq!(volume_files(&empty_dir, &objects()), Ok(None));
    }

    #[test]
    fn references_name_what_env_and_volumes_use() {
        let container = Container {
            name: "main".into(),
            env: Some(vec![
                from("A", cm_key("one", "k", None)),
                from("B", secret_key("two", "k", None)),
                from("C", field("metadata.name")),
            ]),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "three".into(),
                    optional: None,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let refs = References::of_container(&container);
        assert_eq!(refs.config_maps, ["one", "three"].map(String::from).into());
        assert_eq!(refs.secrets, ["two"].map(String::from).into());
        let mut p = pod(vec![container]);
        assert!(References::of_volumes(&p).is_empty());
        p.spec.as_mut().unwrap().volumes = Some(vec![Volume {
            name: "sec".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some("four".into()),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        assert_eq!(
            References::of_volumes(&p).secrets,
            ["four"].map(String::from).into()
        );
    }
}
