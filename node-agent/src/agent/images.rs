//! The node's images: pulled from the cluster registry (served by every control-plane member
//! on its API address) into a local [`ImageStore`] under `DATA_DIR/images`, each layer fetched
//! once, verified and unpacked once; containers get the unpacked layer directories as their
//! overlay's lower layers.
//!
//! Pods of one image pulling at the same time share one pull: pulls of a reference are
//! serialised, and the second finds the image in place. `imagePullPolicy` follows Kubernetes,
//! defaulted the same way (`Always` for `:latest` or no tag, else `IfNotPresent`); `Always`
//! asks the registry for the tag's digest and downloads nothing when the node already has it.

use crate::runtime::spec::ImageConfig;
use berth_image::registry::RegistryClient;
use berth_image::{ImageStore, Reference, ResolvedImage};
use k8s_openapi::api::core::v1::Container;
use oci_spec::image::Digest;
use oci_spec::image::ImageConfiguration;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// When the node asks the registry for an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The container's policy, or Kubernetes' default for its image: `Always` when the image
    /// names no tag or `:latest` (and no digest), else `IfNotPresent`.
    pub fn of(container: &Container) -> PullPolicy {
        match container.image_pull_policy.as_deref() {
            Some("Always") => PullPolicy::Always,
            Some("Never") => PullPolicy::Never,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            _ => {
                let image = container.image.as_deref().unwrap_or_default();
                match Reference::parse(image) {
                    Ok(r) if r.digest.is_none() && r.tag == "latest" => PullPolicy::Always,
                    _ => PullPolicy::IfNotPresent,
                }
            }
        }
    }
}

/// An image ready for a container.
#[derive(Debug, Clone, PartialEq)]
pub struct PulledImage {
    /// Overlay lower directories, topmost layer first (overlayfs `lowerdir=` order).
    pub lowers: Vec<PathBuf>,
    /// What the image contributes to the container's process.
    pub config: ImageConfig,
    /// `REPOSITORY@sha256:...`, the container status' imageID.
    pub image_id: String,
    /// How long its download took; `None` when the node had it (kubelet's Pulled message).
    pub pulled_in: Option<std::time::Duration>,
}

/// Why a container has no image; `reason` is the container's waiting reason.
#[derive(Debug, Clone, PartialEq)]
pub struct PullFailure {
    pub reason: &'static str,
    pub message: String,
}

pub struct Images {
    store: ImageStore,
    registry: RegistryClient,
    /// One lock per reference: concurrent pods of one image share its pull.
    pulls: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Images handed to containers since the last collection: kept by it even if no
    /// container record names them yet.
    handed_out: Mutex<HashSet<Digest>>,
}

impl Images {
    pub fn new(root: PathBuf, registry: RegistryClient) -> Result<Images, berth_image::ImageError> {
        Ok(Images {
            store: ImageStore::open(root)?,
            registry,
            pulls: Mutex::default(),
            handed_out: Mutex::default(),
        })
    }

    /// The image for a container, pulled if the policy says so (`pulling` is called then).
    pub async fn ensure(
        &self,
        image: &str,
        policy: PullPolicy,
        pulling: impl FnOnce(),
    ) -> Result<PulledImage, PullFailure> {
        let reference = Reference::parse(image).map_err(|e| PullFailure {
            reason: "InvalidImageName",
            message: e.to_string(),
        })?;
        let lock = self
            .pulls
            .lock()
            .expect("pulls lock")
            .entry(reference.name_tag())
            .or_default()
            .clone();
        let _pulling = lock.lock().await;
        let local = self.local(&reference).await;
        let mut pulled_in = None;
        let resolved = match (policy, local) {
            (PullPolicy::Never, Some(resolved)) | (PullPolicy::IfNotPresent, Some(resolved)) => {
                resolved
            }
            (PullPolicy::Never, None) => {
                return Err(PullFailure {
                    reason: "ErrImageNeverPull",
                    message: format!(
                        "container image {image:?} is not present on the node and its pull policy is Never"
                    ),
                })
            }
            (PullPolicy::Always, Some(resolved)) if self.is_current(&reference, &resolved).await => {
                resolved
            }
            _ => {
                tracing::info!(%image, "pulling image");
                pulling();
                let started = std::time::Instant::now();
                let resolved = self
                    .registry
                    .pull(&self.store, &reference, |_| {})
                    .await
                    .map_err(|e| PullFailure {
                        reason: "ErrImagePull",
                        message: pull_error_message(&e),
                    })?;
                tracing::info!(
                    %image,
                    digest = %resolved.top_digest,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "image pulled"
                );
                pulled_in = Some(started.elapsed());
                resolved
            }
        };
        let store = self.store.clone();
        let lowers = tokio::task::spawn_blocking({
            let resolved = resolved.clone();
            move || store.layer_dirs(&resolved)
        })
        .await
        .expect("layer lookup does not panic")
        .map_err(|e| PullFailure {
            reason: "ErrImagePull",
            message: format!("image {image:?}: {e}"),
        })?;
        self.handed_out
            .lock()
            .expect("handed_out lock")
            .insert(resolved.top_digest.clone());
        Ok(PulledImage {
            lowers,
            config: image_config(&resolved.config),
            image_id: format!("{}@{}", reference.cluster_repository(), resolved.top_digest),
            pulled_in,
        })
    }

    /// Removes blobs and layers no image record and no container uses: images whose tag
    /// moved on (an `Always` pull of a new `:latest`) once their last container is gone.
    /// `in_use`: the imageIDs (`REPOSITORY@sha256:...`) of the node's containers.
    pub async fn collect_garbage(&self, in_use: Vec<String>) {
        let mut keep: Vec<Digest> = in_use
            .iter()
            .filter_map(|id| id.rsplit_once('@'))
            .filter_map(|(_, digest)| berth_image::store::parse_digest(digest).ok())
            .collect();
        keep.extend(std::mem::take(
            &mut *self.handed_out.lock().expect("handed_out lock"),
        ));
        let store = self.store.clone();
        let kept = keep.clone();
        match tokio::task::spawn_blocking(move || store.gc_keeping(&kept)).await {
            Ok(Ok(report)) => {
                if !report.layers_removed.is_empty() || !report.blobs_removed.is_empty() {
                    tracing::info!(
                        layers = report.layers_removed.len(),
                        blobs = report.blobs_removed.len(),
                        "removed unused image data"
                    );
                }
            }
            Ok(Err(e)) => tracing::warn!("image garbage collection: {e}"),
            Err(e) => tracing::warn!("image garbage collection: {e}"),
        }
        // What was handed out during the collection stays protected until the next one.
        self.handed_out
            .lock()
            .expect("handed_out lock")
            .extend(keep);
    }

    /// The node's copy of an image, if it has one.
    async fn local(&self, reference: &Reference) -> Option<ResolvedImage> {
        let store = self.store.clone();
        let key = reference.to_string();
        tokio::task::spawn_blocking(move || store.resolve(&key).ok())
            .await
            .ok()
            .flatten()
    }

    /// Whether the registry's image for `reference` is the one the node has. A registry that
    /// cannot be asked counts as "no": the pull that follows reports why.
    async fn is_current(&self, reference: &Reference, local: &ResolvedImage) -> bool {
        if reference.digest.is_some() {
            return true;
        }
        match self.registry.remote_digest(reference).await {
            Ok(digest) => digest == local.top_digest,
            Err(_) => false,
        }
    }
}

/// What a user reads in the pod's status when a pull failed: the registry's answer, and for
/// an image the registry does not have, where images come from.
fn pull_error_message(error: &berth_image::ImageError) -> String {
    match error {
        berth_image::ImageError::Registry { code, .. }
            if code == "MANIFEST_UNKNOWN" || code == "NAME_UNKNOWN" =>
        {
            format!(
                "{error} (nodes pull only from the cluster registry: push the image with `berth image load` or `berth image push`)"
            )
        }
        _ => error.to_string(),
    }
}

/// An OCI image config's process defaults, as the runtime spec takes them.
pub fn image_config(config: &ImageConfiguration) -> ImageConfig {
    let Some(c) = config.config() else {
        return ImageConfig::default();
    };
    ImageConfig {
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        env: c.env().clone().unwrap_or_default(),
        working_dir: c.working_dir().clone().filter(|d| !d.is_empty()),
        user: c.user().clone().filter(|u| !u.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(image: &str, policy: Option<&str>) -> Container {
        Container {
            name: "c".into(),
            image: Some(image.into()),
            image_pull_policy: policy.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn pull_policy_defaults_follow_kubernetes() {
        use PullPolicy::*;
        assert_eq!(PullPolicy::of(&container("busybox", None)), Always);
        assert_eq!(PullPolicy::of(&container("busybox:latest", None)), Always);
        assert_eq!(
            PullPolicy::of(&container("busybox:1.36", None)),
            IfNotPresent
        );
        let pinned = format!("busybox@sha256:{}", "a".repeat(64));
        assert_eq!(PullPolicy::of(&container(&pinned, None)), IfNotPresent);
        assert_eq!(PullPolicy::of(&container("busybox", Some("Never"))), Never);
        assert_eq!(
            PullPolicy::of(&container("busybox", Some("IfNotPresent"))),
            IfNotPresent
        );
        assert_eq!(
            PullPolicy::of(&container("busybox:1", Some("Always"))),
            Always
        );
    }

    #[test]
    fn image_config_takes_the_process_defaults() {
        let config: ImageConfiguration = serde_json::from_value(serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "config": {
                "Entrypoint": ["/berth"],
                "Cmd": ["demo-server"],
                "Env": ["PATH=/bin"],
                "WorkingDir": "/srv",
                "User": ""
            }
        }))
        .unwrap();
        let image = image_config(&config);
        assert_eq!(image.entrypoint, ["/berth"]);
        assert_eq!(image.cmd, ["demo-server"]);
        assert_eq!(image.env, ["PATH=/bin"]);
        assert_eq!(image.working_dir.as_deref(), Some("/srv"));
        assert_eq!(image.user, None);
    }
}
