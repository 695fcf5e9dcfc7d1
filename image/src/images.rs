//! Image records and resolution.
//!
//! `ROOT/images.json` maps a reference (`registry/repository:tag`) to the digest of a
//! manifest or image index in the content store; it is rewritten atomically under
//! `images.lock`. Resolution turns a record into the manifest for the host platform, its
//! config and its ordered layers, checking every blob it names is in the store.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::{
    Descriptor, Digest, ImageConfiguration, ImageIndex, ImageManifest, MediaType,
};
use serde::{Deserialize, Serialize};

use crate::error::{ImageError, IoContext, Result};
use crate::reference::Reference;
use crate::store::{parse_digest, unique_name, ContentStore, MAX_DOCUMENT_SIZE};
use crate::unpack::LayerStore;

pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_FOREIGN_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// An image resolved for the host platform.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The recorded digest: a manifest, or an index the manifest was picked from.
    pub top_digest: Digest,
    /// The platform-specific image manifest.
    pub manifest_digest: Digest,
    pub manifest: ImageManifest,
    /// Entrypoint, cmd, env, working dir, user, exposed ports live in `config.config()`.
    pub config: ImageConfiguration,
    /// Layer descriptors, bottom layer first (manifest order).
    pub layers: Vec<Descriptor>,
}

/// What [`ImageStore::gc`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub blobs_removed: Vec<Digest>,
    pub layers_removed: Vec<Digest>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Records {
    images: BTreeMap<String, String>,
}

/// The image store: content store + unpacked layers + image records.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    content: ContentStore,
    layers: LayerStore,
}

impl ImageStore {
    /// Open (creating) an image store rooted at `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        Ok(Self {
            content: ContentStore::open(&root)?,
            layers: LayerStore::open(&root)?,
            root,
        })
    }

    /// The content store.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// The unpacked layers.
    pub fn layers(&self) -> &LayerStore {
        &self.layers
    }

    /// Record `reference` (its name and tag) as pointing at `digest`, a manifest or index
    /// that must resolve.
    pub fn tag(&self, reference: &Reference, digest: &Digest) -> Result<()> {
        self.resolve_digest(digest)?;
        self.update_records(|r| {
            r.images.insert(reference.name_tag(), digest.to_string());
        })
    }

    /// Record several tags at once (one atomic rewrite); digests must already resolve.
    pub(crate) fn tag_all(&self, tags: &[(Reference, Digest)]) -> Result<()> {
        self.update_records(|r| {
            for (reference, digest) in tags {
                r.images.insert(reference.name_tag(), digest.to_string());
            }
        })
    }

    /// Remove a record; returns whether it existed. Blobs stay until [`ImageStore::gc`].
    pub fn untag(&self, reference: &Reference) -> Result<bool> {
        let mut existed = false;
        self.update_records(|r| existed = r.images.remove(&reference.name_tag()).is_some())?;
        Ok(existed)
    }

    /// All records: `registry/repository:tag` → digest.
    pub fn images(&self) -> Result<BTreeMap<String, Digest>> {
        self.read_records()?
            .images
            .into_iter()
            .map(|(name, d)| Ok((name, parse_digest(&d)?)))
            .collect()
    }

    /// Resolve a reference (`busybox:1.36`, `app@sha256:...`) to its image.
    pub fn resolve(&self, reference: &str) -> Result<ResolvedImage> {
        let reference = Reference::parse(reference)?;
        let digest = match reference.pinned_digest() {
            Some(d) => d,
            None => self
                .read_records()?
                .images
                .get(&reference.name_tag())
                .map(|d| parse_digest(d))
                .transpose()?
                .ok_or_else(|| ImageError::ImageNotFound(reference.to_string()))?,
        };
        self.resolve_digest(&digest)
    }

    /// Resolve a manifest or index digest to its image for the host platform.
    pub fn resolve_digest(&self, digest: &Digest) -> Result<ResolvedImage> {
        let bytes = self.content.read_all(digest, MAX_DOCUMENT_SIZE)?;
        let manifest_digest = match peek_kind(&bytes, digest)? {
            DocKind::Manifest => digest.clone(),
            DocKind::Index => {
                let index: ImageIndex = parse_doc("image index", digest, &bytes)?;
                pick_platform(&index, digest)?.digest().clone()
            }
        };
        let (manifest, bytes) = if manifest_digest == *digest {
            (
                parse_doc::<ImageManifest>("manifest", digest, &bytes)?,
                bytes,
            )
        } else {
            let bytes = self.content.read_all(&manifest_digest, MAX_DOCUMENT_SIZE)?;
            if peek_kind(&bytes, &manifest_digest)? != DocKind::Manifest {
                return Err(invalid_doc(
                    "manifest",
                    &manifest_digest,
                    "nested image index",
                ));
            }
            (parse_doc("manifest", &manifest_digest, &bytes)?, bytes)
        };
        drop(bytes);

        let config_desc = manifest.config();
        let config_type = config_desc.media_type();
        if *config_type != MediaType::ImageConfig && config_type.as_ref() != DOCKER_CONFIG {
            return Err(ImageError::UnsupportedMediaType {
                what: "config",
                digest: config_desc.digest().to_string(),
                media_type: config_type.to_string(),
            });
        }
        self.check_present(config_desc)?;
        let config_bytes = self
            .content
            .read_all(config_desc.digest(), MAX_DOCUMENT_SIZE)?;
        let config: ImageConfiguration = parse_doc("config", config_desc.digest(), &config_bytes)?;

        for layer in manifest.layers() {
            if !is_supported_layer(layer.media_type()) {
                return Err(ImageError::UnsupportedMediaType {
                    what: "layer",
                    digest: layer.digest().to_string(),
                    media_type: layer.media_type().to_string(),
                });
            }
            self.check_present(layer)?;
        }
        Ok(ResolvedImage {
            top_digest: digest.clone(),
            manifest_digest,
            layers: manifest.layers().clone(),
            manifest,
            config,
        })
    }

    fn check_present(&self, desc: &Descriptor) -> Result<()> {
        let size = self.content.size(desc.digest())?;
        if size != desc.size() {
            return Err(ImageError::SizeMismatch {
                digest: desc.digest().to_string(),
                expected: desc.size(),
                actual: size,
            });
        }
        Ok(())
    }

    /// The unpacked layer directories of `image`, topmost first (overlayfs `lowerdir=`
    /// order), unpacking the missing ones.
    pub fn layer_dirs(&self, image: &ResolvedImage) -> Result<Vec<PathBuf>> {
        let mut dirs = image
            .layers
            .iter()
            .map(|layer| self.layers.unpack(&self.content, layer))
            .collect::<Result<Vec<_>>>()?;
        dirs.reverse();
        Ok(dirs)
    }

    /// Remove blobs and unpacked layers that no image record references (through its
    /// index, manifest, config and layers). In-progress imports hold `gc.lock` shared, so
    /// GC waits for them; temp files of in-progress writes are never touched.
    pub fn gc(&self) -> Result<GcReport> {
        self.gc_keeping(&[])
    }

    /// [`gc`](Self::gc), also keeping the images `in_use` (manifest or index digests) whose
    /// records now point elsewhere: a node's running containers still stand on their layers
    /// after a newer image took their tag.
    pub fn gc_keeping(&self, in_use: &[Digest]) -> Result<GcReport> {
        let _lock = self.lock("gc.lock", FlockArg::LockExclusive)?;
        let mut keep = HashSet::new();
        for digest in self.images()?.values().chain(in_use) {
            self.collect_refs(digest, &mut keep);
        }
        let mut report = GcReport::default();
        for digest in self.content.list()? {
            if !keep.contains(digest.digest()) && self.content.delete(&digest)? {
                report.blobs_removed.push(digest);
            }
        }
        for digest in self.layers.list()? {
            if !keep.contains(digest.digest()) && self.layers.remove(&digest)? {
                report.layers_removed.push(digest);
            }
        }
        tracing::info!(
            blobs = report.blobs_removed.len(),
            layers = report.layers_removed.len(),
            "image gc done"
        );
        Ok(report)
    }

    /// Add every blob reachable from `digest` to `keep` (hex digests). Lenient: a blob that
    /// cannot be read keeps what was reached so far rather than failing the GC.
    fn collect_refs(&self, digest: &Digest, keep: &mut HashSet<String>) {
        if !keep.insert(digest.digest().to_owned()) {
            return;
        }
        let Ok(bytes) = self.content.read_all(digest, MAX_DOCUMENT_SIZE) else {
            return;
        };
        match peek_kind(&bytes, digest) {
            Ok(DocKind::Index) => {
                if let Ok(index) = parse_doc::<ImageIndex>("image index", digest, &bytes) {
                    for m in index.manifests() {
                        self.collect_refs(m.digest(), keep);
                    }
                }
            }
            Ok(DocKind::Manifest) => {
                if let Ok(m) = parse_doc::<ImageManifest>("manifest", digest, &bytes) {
                    keep.insert(m.config().digest().digest().to_owned());
                    for layer in m.layers() {
                        keep.insert(layer.digest().digest().to_owned());
                    }
                }
            }
            Err(_) => {}
        }
    }

    /// Hold a flock on `ROOT/<name>` until the guard drops.
    pub(crate) fn lock(&self, name: &str, arg: FlockArg) -> Result<Flock<File>> {
        let path = self.root.join(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx(|| format!("open {}", path.display()))?;
        Flock::lock(file, arg)
            .map_err(|(_, errno)| std::io::Error::from(errno))
            .ctx(|| format!("lock {}", path.display()))
    }

    fn records_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    fn read_records(&self) -> Result<Records> {
        let path = self.records_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ImageError::Io {
                context: format!("parse {}", path.display()),
                source: e.into(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Records::default()),
            Err(e) => Err(e).ctx(|| format!("read {}", path.display())),
        }
    }

    fn update_records(&self, change: impl FnOnce(&mut Records)) -> Result<()> {
        let _lock = self.lock("images.lock", FlockArg::LockExclusive)?;
        let mut records = self.read_records()?;
        change(&mut records);
        let path = self.records_path();
        let tmp = self.root.join(unique_name(".images.json"));
        let json = serde_json::to_vec_pretty(&records).expect("records serialize");
        let res = File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(&json)?;
                f.sync_all()
            })
            .and_then(|_| fs::rename(&tmp, &path))
            .and_then(|_| File::open(&self.root)?.sync_all())
            .ctx(|| format!("write {}", path.display()));
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DocKind {
    Manifest,
    Index,
}

/// Tell a manifest from an index by `mediaType` (or, when absent, by shape).
pub(crate) fn peek_kind(bytes: &[u8], digest: &Digest) -> Result<DocKind> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Peek {
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
    }
    let peek: Peek = serde_json::from_slice(bytes)
        .map_err(|e| invalid_doc("manifest", digest, &e.to_string()))?;
    match peek.media_type.as_deref() {
        Some(t) if t == MediaType::ImageManifest.as_ref() || t == DOCKER_MANIFEST => {
            Ok(DocKind::Manifest)
        }
        Some(t) if t == MediaType::ImageIndex.as_ref() || t == DOCKER_MANIFEST_LIST => {
            Ok(DocKind::Index)
        }
        Some(other) => Err(ImageError::UnsupportedMediaType {
            what: "manifest",
            digest: digest.to_string(),
            media_type: other.to_owned(),
        }),
        None if peek.manifests.is_some() => Ok(DocKind::Index),
        None => Ok(DocKind::Manifest),
    }
}

pub(crate) fn parse_doc<T: serde::de::DeserializeOwned>(
    what: &'static str,
    digest: &Digest,
    bytes: &[u8],
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| invalid_doc(what, digest, &e.to_string()))
}

pub(crate) fn invalid_doc(what: &'static str, digest: &Digest, reason: &str) -> ImageError {
    ImageError::InvalidDocument {
        what,
        digest: digest.to_string(),
        reason: reason.to_owned(),
    }
}

/// The host architecture in OCI (GOARCH) spelling.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

pub(crate) fn pick_platform<'a>(index: &'a ImageIndex, digest: &Digest) -> Result<&'a Descriptor> {
    let arch = host_arch();
    index
        .manifests()
        .iter()
        .find(|m| {
            m.platform().as_ref().is_some_and(|p| {
                p.os().to_string() == "linux" && p.architecture().to_string() == arch
            })
        })
        .ok_or_else(|| ImageError::NoMatchingPlatform {
            digest: digest.to_string(),
            platform: format!("linux/{arch}"),
        })
}

pub(crate) fn is_supported_layer(media_type: &MediaType) -> bool {
    match media_type {
        MediaType::ImageLayer
        | MediaType::ImageLayerGzip
        | MediaType::ImageLayerNonDistributable
        | MediaType::ImageLayerNonDistributableGzip => true,
        MediaType::Other(t) => t == DOCKER_LAYER_GZIP || t == DOCKER_FOREIGN_LAYER_GZIP,
        _ => false,
    }
}
