//! What a pod worker needs from outside the pod object before a container starts: its
//! volumes on the node (set up once, configMap and secret volumes refreshed every
//! [`VOLUME_REFRESH`]) and its env from ConfigMaps, Secrets and the downward API.
//!
//! ConfigMaps and Secrets are read from the control plane when needed (a get per object per
//! container start, and per refresh): no watch, no cache. A container whose env cannot be
//! resolved waits as `CreateContainerConfigError` with the kubelet's message and is retried
//! with a back-off (1 s doubling to 10 s, the kubelet's pod-sync retry); while a volume cannot
//! be set up, containers wait as `ContainerCreating` with the `MountVolume.SetUp failed`
//! message, retried the same way. A refresh that fails keeps the volume's last content.

use super::config::{self, Objects, PodFacts, References};
use super::{volumes, NodeContext};
use crate::runtime::spec::{ContainerConfig, VolumeMount};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Volume};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often configMap and secret volumes are brought up to date (the kubelet: within a
/// minute or so).
pub const VOLUME_REFRESH: Duration = Duration::from_secs(10);

/// Why a container cannot start yet, as its Waiting state says, and when to try again.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub reason: &'static str,
    pub message: String,
    pub retry_after: Duration,
}

/// 1 s, 2 s, 4 s, 8 s, then every 10 s.
fn retry_delay(failures: u32) -> Duration {
    Duration::from_secs(1 << failures.saturating_sub(1).min(4)).min(Duration::from_secs(10))
}

/// One pod's volumes and configuration failures, owned by its worker.
pub struct PodConfig {
    dir: PathBuf,
    volumes: Vec<Volume>,
    /// Every volume set up at least once: containers may start.
    ready: bool,
    /// Why the volumes are not ready, as the containers' Waiting message says.
    error: Option<String>,
    volume_failures: u32,
    next_sync: Instant,
    /// Configuration failures in a row, by container.
    failures: HashMap<String, u32>,
}

/// Where a pod's volumes live on the node.
pub fn volumes_dir(context: &NodeContext, uid: &str) -> PathBuf {
    context.pods_dir().join(uid).join("volumes")
}

impl PodConfig {
    pub fn new(context: &NodeContext, pod: &Pod, uid: &str) -> PodConfig {
        PodConfig {
            dir: volumes_dir(context, uid),
            volumes: pod
                .spec
                .as_ref()
                .and_then(|s| s.volumes.clone())
                .unwrap_or_default(),
            ready: false,
            error: None,
            volume_failures: 0,
            next_sync: Instant::now(),
            failures: HashMap::new(),
        }
    }

    /// Sets the volumes up (or refreshes them) when that is due.
    pub async fn sync_volumes(&mut self, context: &Arc<NodeContext>, pod: &Pod) {
        if Instant::now() < self.next_sync {
            return;
        }
        let namespace = namespace(pod);
        let refs = References::of_volumes(pod);
        let objects = match fetch(context, &namespace, &refs).await {
            Ok(objects) => objects,
            Err(e) => {
                self.failed(format!("MountVolume.SetUp failed: {e}"));
                return;
            }
        };
        let dir = self.dir.clone();
        let volumes = self.volumes.clone();
        let result = tokio::task::spawn_blocking(move || set_up(&dir, &volumes, &objects))
            .await
            .unwrap_or_else(|e| Err(format!("setting up volumes: {e}")));
        match result {
            Ok(()) => {
                self.ready = true;
                self.error = None;
                self.volume_failures = 0;
                // Only configMap and secret volumes change.
                self.next_sync = if refs.is_empty() {
                    Instant::now() + Duration::from_secs(365 * 24 * 3600)
                } else {
                    Instant::now() + VOLUME_REFRESH
                };
            }
            Err(e) => self.failed(e),
        }
    }

    fn failed(&mut self, message: String) {
        if self.ready {
            // A refresh: the volumes keep what they had.
            tracing::warn!("refreshing volumes: {message}");
            self.next_sync = Instant::now() + VOLUME_REFRESH;
            return;
        }
        tracing::info!("volumes: {message}");
        self.volume_failures += 1;
        self.next_sync = Instant::now() + retry_delay(self.volume_failures);
        self.error = Some(message);
    }

    /// The container's env and mounts, or why it must wait.
    pub async fn prepare(
        &mut self,
        context: &Arc<NodeContext>,
        pod: &Pod,
        container: &Container,
        pod_ip: Option<String>,
    ) -> Result<ContainerConfig, Waiting> {
        if !self.ready {
            return Err(Waiting {
                reason: "ContainerCreating",
                message: self
                    .error
                    .clone()
                    .unwrap_or_else(|| "setting up volumes".into()),
                retry_after: self.next_sync.saturating_duration_since(Instant::now()),
            });
        }
        match self.resolve(context, pod, container, pod_ip).await {
            Ok(config) => {
                self.failures.remove(&container.name);
                Ok(config)
            }
            Err(message) => {
                let failures = self.failures.entry(container.name.clone()).or_default();
                *failures += 1;
                tracing::info!(container = %container.name, "CreateContainerConfigError: {message}");
                Err(Waiting {
                    reason: "CreateContainerConfigError",
                    message,
                    retry_after: retry_delay(*failures),
                })
            }
        }
    }

    async fn resolve(
        &self,
        context: &Arc<NodeContext>,
        pod: &Pod,
        container: &Container,
        pod_ip: Option<String>,
    ) -> Result<ContainerConfig, String> {
        let namespace = namespace(pod);
        let objects = fetch(context, &namespace, &References::of_container(container)).await?;
        let (cpu, memory) = allocatable();
        let facts = PodFacts {
            pod_ip,
            host_ip: context.node_ip.to_string(),
            allocatable_cpu_millis: cpu,
            allocatable_memory_bytes: memory,
        };
        let env =
            config::container_env(pod, container, &objects, &facts).map_err(|e| e.to_string())?;
        let mut mounts = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let volume = self
                .volumes
                .iter()
                .find(|v| v.name == mount.name)
                .ok_or_else(|| format!("volumeMount {:?}: no such volume", mount.name))?;
            let volume_dir = self.dir.join(&volume.name);
            let projected = volume.config_map.is_some() || volume.secret.is_some();
            let host_path = match mount.sub_path.as_deref().filter(|p| !p.is_empty()) {
                None => volume_dir,
                Some(sub_path) => {
                    let sub_path = sub_path.to_string();
                    tokio::task::spawn_blocking(move || {
                        volumes::sub_path_source(&volume_dir, &sub_path, !projected)
                    })
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
                    .map_err(|e| {
                        format!(
                            "failed to prepare subPath for volumeMount {:?} of container {:?}: {e}",
                            mount.name, container.name
                        )
                    })?
                }
            };
            mounts.push(VolumeMount {
                host_path,
                container_path: mount.mount_path.clone(),
                // configMap and secret volumes are the API's content: always read-only.
                read_only: mount.read_only == Some(true) || projected,
            });
        }
        Ok(ContainerConfig {
            env: Some(env),
            mounts,
        })
    }
}

fn namespace(pod: &Pod) -> String {
    pod.metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into())
}

/// The node's CPU (millicores) and memory (bytes), what an unset limit reads as.
fn allocatable() -> (i64, i64) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    let memory_kib: i64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|l| l.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0);
    (cpus * 1000, memory_kib * 1024)
}

/// Reads what `refs` names from the control plane.
async fn fetch(
    context: &Arc<NodeContext>,
    namespace: &str,
    refs: &References,
) -> Result<Objects, String> {
    let mut objects = Objects {
        namespace: namespace.to_string(),
        ..Default::default()
    };
    let mut api = context.api.clone();
    for name in &refs.config_maps {
        let object = api
            .get("ConfigMap", namespace, name)
            .await
            .map_err(|e| format!("reading configmap {namespace}/{name}: {e}"))?;
        let config_map = object
            .map(serde_json::from_value::<ConfigMap>)
            .transpose()
            .map_err(|e| format!("configmap {namespace}/{name}: {e}"))?;
        objects.config_maps.insert(name.clone(), config_map);
    }
    for name in &refs.secrets {
        let object = api
            .get("Secret", namespace, name)
            .await
            .map_err(|e| format!("reading secret {namespace}/{name}: {e}"))?;
        let secret = object
            .map(serde_json::from_value::<Secret>)
            .transpose()
            .map_err(|e| format!("secret {namespace}/{name}: {e}"))?;
        objects.secrets.insert(name.clone(), secret);
    }
    Ok(objects)
}

/// Makes every volume's directory (or tmpfs) and writes configMap and secret files.
fn set_up(dir: &std::path::Path, volumes: &[Volume], objects: &Objects) -> Result<(), String> {
    if volumes.is_empty() {
        return Ok(());
    }
    // Only root on the node reaches into it: secret files are 0644 on their tmpfs, for the
    // container's users, not the node's.
    volumes::ensure_dir(dir, 0o700).map_err(|e| format!("{}: {e}", dir.display()))?;
    for volume in volumes {
        let path = dir.join(&volume.name);
        let result = (|| -> Result<(), String> {
            if let Some(empty_dir) = &volume.empty_dir {
                if empty_dir.medium.as_deref() == Some("Memory") {
                    let size = empty_dir
                        .size_limit
                        .as_ref()
                        .map(berth_proto::quantity::bytes)
                        .transpose()
                        .map_err(|e| format!("sizeLimit: {e}"))?;
                    volumes::ensure_tmpfs(&path, size, 0o777).map_err(|e| e.to_string())
                } else {
                    volumes::ensure_dir(&path, 0o777).map_err(|e| e.to_string())
                }
            } else {
                let files = config::volume_files(volume, objects)
                    .map_err(|e| e.to_string())?
                    .ok_or("only configMap, secret and emptyDir volumes are supported")?;
                if volume.secret.is_some() {
                    // Secret data stays in memory.
                    volumes::ensure_tmpfs(&path, None, 0o755).map_err(|e| e.to_string())?;
                } else {
                    volumes::ensure_dir(&path, 0o755).map_err(|e| e.to_string())?;
                }
                volumes::write_files(&path, &files).map_err(|e| e.to_string())?;
                Ok(())
            }
        })();
        result.map_err(|e| {
            format!(
                "MountVolume.SetUp failed for volume \"{}\" : {e}",
                volume.name
            )
        })?;
    }
    Ok(())
}

/// Unmounts and removes a pod's volumes (blocking).
pub fn tear_down(pod_dir: &std::path::Path) {
    let dir = pod_dir.join("volumes");
    if let Err(e) = volumes::tear_down(&dir) {
        tracing::warn!("removing the pod's volumes in {}: {e}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_ten_seconds() {
        let delays: Vec<u64> = (1..=7).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10, 10]);
    }
}
