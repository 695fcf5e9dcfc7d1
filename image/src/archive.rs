//! Import of image archives into the store: OCI image-layout tars (`oci-layout`,
//! `index.json`, `blobs/sha256/...`) and `docker save` tars (`manifest.json`, layers as
//! `<id>/layer.tar` or `blobs/sha256/...`).
//!
//! The tar is streamed once: every blob goes straight into the content store (verified
//! against its digest when its name carries one), small JSON documents are kept in memory.
//! Then every image is resolved; only if all resolve are the tags recorded, in one atomic
//! write. A failed import thus records nothing (verified blobs may stay: they are
//! content-addressed and GC collects them). A `docker save` image gets a generated OCI
//! manifest; its config is used as is and its layers keep the uncompressed tar media type.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::FlockArg;
use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifestBuilder, MediaType};
use serde::Deserialize;

use crate::error::{ImageError, Result};
use crate::images::ImageStore;
use crate::reference::Reference;
use crate::store::{parse_digest, MAX_DOCUMENT_SIZE};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";
const DOCUMENTS: [&str; 4] = ["index.json", "manifest.json", "oci-layout", "repositories"];

/// One image found in an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    /// The manifest (or index) digest that was recorded.
    pub digest: Digest,
    /// The tags recorded for it (may be empty: an OCI layout entry with a bare
    /// `ref.name` tag has no repository name; tag it with [`ImageStore::tag`]).
    pub tags: Vec<Reference>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

struct Contents {
    documents: HashMap<String, Vec<u8>>,
    blobs: HashMap<String, (Digest, u64)>,
    symlinks: HashMap<String, String>,
}

impl ImageStore {
    /// Import an OCI image-layout tar or a `docker save` tar; returns the images found.
    pub fn import_archive(&self, path: impl AsRef<Path>) -> Result<Vec<ImportedImage>> {
        let path = path.as_ref();
        let bad = |reason: String| ImageError::InvalidArchive {
            path: path.to_path_buf(),
            reason,
        };
        // GC must not collect blobs written here before the tags are recorded.
        let _gc_guard = self.lock("gc.lock", FlockArg::LockShared)?;
        let contents = self.ingest_archive(path)?;

        let images = if let Some(json) = contents.documents.get("manifest.json") {
            self.import_docker_save(&contents, json)
                .map_err(|e| bad(format!("docker save manifest.json: {e}")))?
        } else if let Some(json) = contents.documents.get("index.json") {
            self.import_oci_layout(json)
                .map_err(|e| bad(format!("OCI layout index.json: {e}")))?
        } else {
            return Err(bad(
                "neither manifest.json nor index.json found (not an image archive, or truncated)"
                    .into(),
            ));
        };
        let tags: Vec<_> = images
            .iter()
            .flat_map(|i| i.tags.iter().map(|t| (t.clone(), i.digest.clone())))
            .collect();
        self.tag_all(&tags)?;
        tracing::info!(archive = %path.display(), images = images.len(), "archive imported");
        Ok(images)
    }

    fn ingest_archive(&self, path: &Path) -> Result<Contents> {
        let bad = |reason: String| ImageError::InvalidArchive {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(|e| bad(format!("open: {e}")))?;
        let mut archive = tar::Archive::new(BufReader::new(file));
        let mut contents = Contents {
            documents: HashMap::new(),
            blobs: HashMap::new(),
            symlinks: HashMap::new(),
        };
        let entries = archive.entries().map_err(|e| bad(format!("read: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| bad(format!("read (truncated?): {e}")))?;
            let name = match normalize(&entry.path_bytes()) {
                Some(n) => n,
                None => continue,
            };
            let kind = entry.header().entry_type();
            if kind == tar::EntryType::Symlink {
                if let Some(target) = entry.link_name_bytes() {
                    let parent = Path::new(&name).parent().unwrap_or(Path::new(""));
                    let joined = parent.join(String::from_utf8_lossy(&target).as_ref());
                    if let Some(t) = normalize(joined.as_os_str().as_encoded_bytes()) {
                        contents.symlinks.insert(name, t);
                    }
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let size = entry.size();
            let in_entry = |e: ImageError| bad(format!("entry {name}: {e}"));
            if DOCUMENTS.contains(&name.as_str()) {
                if size > MAX_DOCUMENT_SIZE {
                    return Err(bad(format!("{name} is {size} bytes, over the limit")));
                }
                let mut buf = Vec::with_capacity(size as usize);
                entry
                    .read_to_end(&mut buf)
                    .map_err(|e| bad(format!("entry {name}: {e}")))?;
                if buf.len() as u64 != size {
                    return Err(bad(format!("entry {name} is truncated")));
                }
                contents.documents.insert(name, buf);
            } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                let digest = parse_digest(&format!("sha256:{hex}")).map_err(in_entry)?;
                self.content()
                    .write(&mut entry, &digest, Some(size))
                    .map_err(in_entry)?;
                contents.blobs.insert(name, (digest, size));
            } else if name.ends_with("/layer.tar")
                || (name.ends_with(".json") && !name.contains('/'))
            {
                let stored = self
                    .content()
                    .ingest(&mut entry, Some(size))
                    .map_err(in_entry)?;
                contents.blobs.insert(name, stored);
            }
        }
        Ok(contents)
    }

    fn import_docker_save(&self, contents: &Contents, json: &[u8]) -> Result<Vec<ImportedImage>> {
        let entries: Vec<DockerSaveEntry> =
            serde_json::from_slice(json).map_err(|e| doc_error(&e.to_string()))?;
        let mut out = Vec::new();
        for entry in entries {
            let (config_digest, config_size) = lookup(contents, &entry.config)?;
            let config = Descriptor::new(MediaType::ImageConfig, config_size, config_digest);
            let layers = entry
                .layers
                .iter()
                .map(|l| {
                    let (d, size) = lookup(contents, l)?;
                    Ok(Descriptor::new(MediaType::ImageLayer, size, d))
                })
                .collect::<Result<Vec<_>>>()?;
            let manifest = ImageManifestBuilder::default()
                .schema_version(2u32)
                .media_type(MediaType::ImageManifest)
                .config(config)
                .layers(layers)
                .build()
                .map_err(|e| doc_error(&e.to_string()))?;
            let bytes = serde_json::to_vec(&manifest).map_err(|e| doc_error(&e.to_string()))?;
            let digest = self.content().write_bytes(&bytes)?;
            self.resolve_digest(&digest)?;
            let tags = entry
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| Reference::parse(t))
                .collect::<Result<Vec<_>>>()?;
            out.push(ImportedImage { digest, tags });
        }
        Ok(out)
    }

    fn import_oci_layout(&self, json: &[u8]) -> Result<Vec<ImportedImage>> {
        let index: ImageIndex =
            serde_json::from_slice(json).map_err(|e| doc_error(&e.to_string()))?;
        let mut out = Vec::new();
        for desc in index.manifests() {
            self.resolve_digest(desc.digest())?;
            let annotations = desc.annotations().clone().unwrap_or_default();
            let name = match annotations.get(REF_NAME) {
                // A full reference; a bare ref.name is only a tag.
                Some(r) if r.contains(['/', ':', '@']) => Some(r.clone()),
                _ => annotations.get(CONTAINERD_NAME).cloned(),
            };
            let tags = name.map(|n| Reference::parse(&n)).transpose()?;
            out.push(ImportedImage {
                digest: desc.digest().clone(),
                tags: tags.into_iter().collect(),
            });
        }
        Ok(out)
    }
}

fn doc_error(reason: &str) -> ImageError {
    ImageError::InvalidDocument {
        what: "archive index",
        digest: "-".into(),
        reason: reason.to_owned(),
    }
}

/// The stored blob an archive path names, following `docker save` symlinks.
fn lookup(contents: &Contents, path: &str) -> Result<(Digest, u64)> {
    let mut name = normalize(path.as_bytes()).unwrap_or_default();
    for _ in 0..8 {
        if let Some(found) = contents.blobs.get(&name) {
            return Ok(found.clone());
        }
        match contents.symlinks.get(&name) {
            Some(target) => name = target.clone(),
            None => break,
        }
    }
    Err(ImageError::BlobNotFound(format!("{path} (archive entry)")))
}

/// `./a/b` → `a/b`; `None` for paths climbing out or empty.
fn normalize(raw: &[u8]) -> Option<String> {
    let path = PathBuf::from(String::from_utf8_lossy(raw).into_owned());
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop()?;
            }
            _ => {}
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}
