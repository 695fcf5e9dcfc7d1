//! The build cache of `berth image build`: a step whose inputs did not change reuses the
//! layer it made last time, and a build whose steps all hit reuses the whole image (same
//! config, same `created` time, so the same digest).
//!
//! A step's key chains its inputs: `sha256(parent key, the step after substitution, the
//! digest of the files it copies)`. The chain starts at the base image's manifest digest,
//! so a moved base tag, a changed ENV or ARG value earlier on, or an edited file each give
//! new keys from that step on. `ROOT/build-cache.json` maps keys to the layer a step made
//! (or none) and final keys to image manifests; entries whose blobs were garbage-collected
//! are treated as misses.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, Digest, MediaType};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{IoContext, Result};
use crate::images::ImageStore;
use crate::store::{parse_digest, unique_name};
use crate::write::LayerDescriptor;

/// The inputs of a build step so far, hashed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(String);

impl CacheKey {
    /// The key of the base image: its manifest digest, or `scratch`.
    pub fn base(image: Option<&Digest>) -> CacheKey {
        let base = image.map_or_else(|| "scratch".to_owned(), ToString::to_string);
        CacheKey(hash(&[b"FROM", base.as_bytes()]))
    }

    /// The key of the step `step` (its canonical text) after this one; `content` is the
    /// digest of the files it brings in from the build context, if any.
    pub fn child(&self, step: &str, content: Option<&Digest>) -> CacheKey {
        let content = content.map(ToString::to_string).unwrap_or_default();
        CacheKey(hash(&[
            self.0.as_bytes(),
            step.as_bytes(),
            content.as_bytes(),
        ]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Length-prefixed parts, so `("ab", "c")` and `("a", "bc")` differ.
fn hash(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    format!("{:x}", hasher.finalize())
}

/// The digest of the tree under `dir` as a layer would hold it: every path, type, mode,
/// owner, file content and symlink target (not times). Blocking.
pub fn tree_digest(dir: &Path) -> Result<Digest> {
    let mut hasher = Sha256::new();
    hash_tree(dir, Path::new(""), &mut hasher)?;
    parse_digest(&format!("sha256:{:x}", hasher.finalize()))
}

fn hash_tree(root: &Path, rel: &Path, hasher: &mut Sha256) -> Result<()> {
    let dir = root.join(rel);
    let mut names = Vec::new();
    for entry in fs::read_dir(&dir).ctx(|| format!("list {}", dir.display()))? {
        names.push(entry.ctx(|| format!("list {}", dir.display()))?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let rel = rel.join(&name);
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path).ctx(|| format!("stat {}", path.display()))?;
        let kind = meta.file_type();
        let path_bytes = rel.as_os_str().as_bytes();
        hasher.update((path_bytes.len() as u64).to_le_bytes());
        hasher.update(path_bytes);
        hasher.update(meta.mode().to_le_bytes());
        hasher.update(meta.uid().to_le_bytes());
        hasher.update(meta.gid().to_le_bytes());
        if kind.is_file() {
            hasher.update(meta.len().to_le_bytes());
            let mut file = File::open(&path).ctx(|| format!("open {}", path.display()))?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = file
                    .read(&mut buf)
                    .ctx(|| format!("read {}", path.display()))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
        } else if kind.is_symlink() {
            let target = fs::read_link(&path).ctx(|| format!("readlink {}", path.display()))?;
            hasher.update(target.as_os_str().as_bytes());
        } else if kind.is_char_device() || kind.is_block_device() {
            hasher.update(meta.rdev().to_le_bytes());
        } else if kind.is_dir() {
            hash_tree(root, &rel, hasher)?;
            // Marks the end of the directory: `a/` then `b` differs from `a/b`.
            hasher.update(b"\0end");
        }
    }
    Ok(())
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    /// Step key → the layer the step made (`None`: it changed no files).
    steps: BTreeMap<String, Option<CachedLayer>>,
    /// Final key → the image manifest digest.
    images: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedLayer {
    digest: String,
    size: u64,
    diff_id: String,
}

/// `build-cache.json` of an image store, loaded; [`BuildCache::save`] writes it back.
#[derive(Debug)]
pub struct BuildCache {
    path: PathBuf,
    file: CacheFile,
}

/// What the cache knows of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CachedStep {
    /// The step made this layer.
    Layer(Box<LayerDescriptor>),
    /// The step changed no files.
    NoLayer,
}

impl BuildCache {
    /// Load the cache at `path` (a missing or unreadable file is an empty cache: it is
    /// only an optimisation).
    pub fn open(path: impl Into<PathBuf>) -> BuildCache {
        let path = path.into();
        let file = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), "ignoring an unreadable build cache: {e}");
                CacheFile::default()
            }),
            Err(_) => CacheFile::default(),
        };
        BuildCache { path, file }
    }

    /// The cached result of step `key`, if its layer is still in `store`.
    pub fn step(&self, key: &CacheKey, store: &ImageStore) -> Option<CachedStep> {
        match self.file.steps.get(key.as_str())? {
            None => Some(CachedStep::NoLayer),
            Some(layer) => {
                let digest = parse_digest(&layer.digest).ok()?;
                let diff_id = parse_digest(&layer.diff_id).ok()?;
                (store.content().size(&digest).ok()? == layer.size).then(|| {
                    CachedStep::Layer(Box::new(LayerDescriptor {
                        descriptor: Descriptor::new(MediaType::ImageLayerGzip, layer.size, digest),
                        diff_id,
                    }))
                })
            }
        }
    }

    /// Record what step `key` made.
    pub fn record_step(&mut self, key: &CacheKey, layer: Option<&LayerDescriptor>) {
        let layer = layer.map(|l| CachedLayer {
            digest: l.descriptor.digest().to_string(),
            size: l.descriptor.size(),
            diff_id: l.diff_id.to_string(),
        });
        self.file.steps.insert(key.as_str().to_owned(), layer);
    }

    /// The image built last time the steps ended at `key`, if it still resolves in `store`.
    pub fn image(&self, key: &CacheKey, store: &ImageStore) -> Option<Digest> {
        let digest = parse_digest(self.file.images.get(key.as_str())?).ok()?;
        store.resolve_digest(&digest).ok().map(|_| digest)
    }

    /// Record the image the steps ending at `key` made.
    pub fn record_image(&mut self, key: &CacheKey, digest: &Digest) {
        self.file
            .images
            .insert(key.as_str().to_owned(), digest.to_string());
    }

    /// Write the cache back (atomically: a crash leaves the old or the new file).
    pub fn save(&self) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(unique_name(".build-cache.json"));
        let json = serde_json::to_vec_pretty(&self.file).expect("the cache serializes");
        let written = fs::write(&tmp, json).and_then(|()| fs::rename(&tmp, &self.path));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.ctx(|| format!("write {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::layer_from_dir;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn keys_chain_their_inputs() {
        let base = CacheKey::base(None);
        let other_base = CacheKey::base(Some(&crate::store::digest_of(b"busybox")));
        assert_ne!(base, other_base);
        let copy = base.child("COPY [\"a\"] /", Some(&crate::store::digest_of(b"1")));
        assert_eq!(
            copy,
            base.child("COPY [\"a\"] /", Some(&crate::store::digest_of(b"1"))),
            "same inputs, same key"
        );
        assert_ne!(
            copy,
            base.child("COPY [\"a\"] /", Some(&crate::store::digest_of(b"2")))
        );
        assert_ne!(
            copy,
            other_base.child("COPY [\"a\"] /", Some(&crate::store::digest_of(b"1")))
        );
        assert_ne!(base.child("RUN ab", None), base.child("RUN a", None));
        let run = copy.child("RUN make", None);
        assert_ne!(run, base.child("RUN make", None), "the parent is an input");
    }

    #[test]
    fn tree_digests_see_content_modes_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("t");
        fs::create_dir_all(tree.join("d")).unwrap();
        fs::write(tree.join("d/f"), b"one").unwrap();
        symlink("d/f", tree.join("l")).unwrap();
        let first = tree_digest(&tree).unwrap();
        assert_eq!(first, tree_digest(&tree).unwrap());
        fs::write(tree.join("d/f"), b"two").unwrap();
        let content = tree_digest(&tree).unwrap();
        assert_ne!(first, content);
        fs::set_permissions(tree.join("d/f"), fs::Permissions::from_mode(0o755)).unwrap();
        let mode = tree_digest(&tree).unwrap();
        assert_ne!(content, mode);
        fs::rename(tree.join("d/f"), tree.join("d/g")).unwrap();
        assert_ne!(mode, tree_digest(&tree).unwrap());
    }

    #[test]
    fn entries_survive_a_reload_and_miss_without_their_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("store")).unwrap();
        let tree = dir.path().join("t");
        fs::create_dir_all(&tree).unwrap();
        fs::write(tree.join("f"), b"x").unwrap();
        let layer = layer_from_dir(store.content(), &tree).unwrap();
        let path = dir.path().join("store/build-cache.json");
        let key = CacheKey::base(None).child("COPY f /", None);
        let empty = CacheKey::base(None).child("WORKDIR /", None);
        let missing = CacheKey::base(None).child("COPY g /", None);

        let mut cache = BuildCache::open(&path);
        assert_eq!(cache.step(&key, &store), None);
        cache.record_step(&key, Some(&layer));
        cache.record_step(&empty, None);
        let mut gone = layer.clone();
        gone.descriptor = Descriptor::new(
            MediaType::ImageLayerGzip,
            1,
            crate::store::digest_of(b"not stored"),
        );
        cache.record_step(&missing, Some(&gone));
        cache.save().unwrap();

        let cache = BuildCache::open(&path);
        assert_eq!(
            cache.step(&key, &store),
            Some(CachedStep::Layer(Box::new(layer)))
        );
        assert_eq!(cache.step(&empty, &store), Some(CachedStep::NoLayer));
        assert_eq!(cache.step(&missing, &store), None, "its blob is gone");
        assert_eq!(cache.image(&key, &store), None);
    }
}
