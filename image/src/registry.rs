//! The registry client: images move between a local [`ImageStore`] and the cluster registry
//! (the OCI distribution API every control-plane member serves on its API address).
//!
//! ```text
//!            pull: manifest ─▶ (index ─▶ host manifest) ─▶ missing blobs, 3 at a time
//!  registry ─────────────────────────────────────────────────────────────▶ ImageStore
//!  members  ◀───────────────────────────────────────────────────────────── (blobs, layers,
//!            push: HEAD each blob ─▶ upload the missing ─▶ child manifests ─▶ tag   records)
//! ```
//!
//! - Addresses: the client is given every member's `host:port` and tries them in order,
//!   starting from the one that answered last; a connection failure or a 5xx answer moves
//!   on to the next ([`ImageError::is_retriable`]). A multi-request operation that must stay
//!   on one member (a blob upload: POST, PATCH..., PUT) is retried whole.
//! - Integrity: a manifest's digest is computed from its bytes and checked against the
//!   registry's `Docker-Content-Digest` and a pinned `@sha256:`; blobs stream through
//!   [`ContentStore::write`], which stores nothing that does not hash to its digest.
//! - Memory: manifests and configs are read whole up to [`MAX_DOCUMENT_SIZE`]; layers are
//!   never held in memory: they stream between the HTTP body and the disk through a small
//!   bounded channel, the disk side on `spawn_blocking`.
//! - Names: a [`Reference`] names the repository [`Reference::cluster_repository`]; the
//!   lower-level calls take that repository name directly.
//!
//! The HTTP connection pool is the caller's (`berth_proto::transport::http_client()`, the
//! one place connections are built), so this crate does not depend on the API crate.

use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, USER_AGENT};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use nix::fcntl::FlockArg;
use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::error::{ImageError, IoContext, Result};
use crate::images::{
    invalid_doc, is_supported_layer, parse_doc, peek_kind, pick_platform, DocKind, ImageStore,
    ResolvedImage, DOCKER_CONFIG, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST,
};
use crate::reference::Reference;
use crate::store::{digest_of, parse_digest, ContentStore, MAX_DOCUMENT_SIZE};

/// The request body type of the HTTP client: small documents, or a blob streamed from disk.
pub type Body = UnsyncBoxBody<Bytes, io::Error>;

/// The HTTP client the registry client runs on (`berth_proto::transport::http_client()`).
pub type HttpClient = Client<HttpConnector, Body>;

/// The manifest types asked for: OCI and Docker schema 2, single-platform and index.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";
/// Longest wait for the answer to a small request the registry answers at once.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a blob transfer may go without moving: a request body the registry stops
/// reading, a blob GET without its answer or its next bytes.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait, after the last byte sent, for the answer to a request whose work at the
/// registry grows with the blobs: finishing an upload (the file is synced), a manifest PUT
/// (the registry waits, up to 10 min, until a majority of its members hold every blob).
/// TCP keepalives notice a member that went away sooner.
const SLOW_ANSWER_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Blobs moved at once by a pull or a push.
const PARALLEL_BLOBS: usize = 3;
/// Blobs bigger than this are uploaded in PATCH chunks of this size.
const DEFAULT_CHUNK_SIZE: u64 = 32 * 1024 * 1024;
/// Bytes read from disk per body frame.
const READ_CHUNK: usize = 64 * 1024;
/// Cap on an error body (they are a few hundred bytes).
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// Entries asked for per `_catalog` / `tags/list` page.
const DEFAULT_PAGE_SIZE: usize = 1000;
const USER_AGENT_VALUE: &str = concat!("berth/", env!("CARGO_PKG_VERSION"));

/// How far a pull or push has come. Blobs the destination already has are not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Blobs to transfer.
    pub blobs: usize,
    /// Blobs transferred.
    pub blobs_done: usize,
    /// Bytes to transfer.
    pub bytes: u64,
    /// Bytes transferred so far (goes back if a transfer is retried on another member).
    pub bytes_done: u64,
}

/// A manifest or index as the registry serves it, verified against its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteManifest {
    pub digest: Digest,
    pub media_type: String,
    /// The exact bytes: the digest is theirs.
    pub bytes: Bytes,
}

/// A client of the cluster registry, over every member's address.
#[derive(Clone)]
pub struct RegistryClient {
    http: HttpClient,
    endpoints: Arc<[String]>,
    /// The endpoint that answered last: tried first next time.
    preferred: Arc<AtomicUsize>,
    chunk_size: u64,
    page_size: usize,
    timeouts: Timeouts,
}

/// How long requests may go without progress (see the constants).
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    answer: Duration,
    idle: Duration,
    slow_answer: Duration,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("endpoints", &self.endpoints)
            .field("chunk_size", &self.chunk_size)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client of the registry served at `endpoints` (`host:port`, tried in order).
    pub fn new<S: Into<String>>(http: HttpClient, endpoints: impl IntoIterator<Item = S>) -> Self {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|e| {
                let e: String = e.into();
                let e = e.trim();
                let e = e.strip_prefix("http://").unwrap_or(e);
                e.trim_end_matches('/').to_owned()
            })
            .filter(|e| !e.is_empty())
            .collect();
        Self {
            http,
            endpoints: endpoints.into(),
            preferred: Arc::new(AtomicUsize::new(0)),
            chunk_size: DEFAULT_CHUNK_SIZE,
            page_size: DEFAULT_PAGE_SIZE,
            timeouts: Timeouts {
                answer: ANSWER_TIMEOUT,
                idle: IDLE_TIMEOUT,
                slow_answer: SLOW_ANSWER_TIMEOUT,
            },
        }
    }

    /// Upload blobs bigger than `bytes` in PATCH chunks of `bytes` (default 32 MiB).
    pub fn with_chunk_size(mut self, bytes: u64) -> Self {
        self.chunk_size = bytes.max(1);
        self
    }

    /// Ask for `entries` per catalog or tag list page (default 1000).
    pub fn with_page_size(mut self, entries: usize) -> Self {
        self.page_size = entries.max(1);
        self
    }

    /// The registry addresses, in the order given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The digest the registry has for `reference` (a HEAD request), e.g. to skip a pull when
    /// the local record already points there.
    pub async fn remote_digest(&self, reference: &Reference) -> Result<Digest> {
        let repository = reference.cluster_repository();
        let target = manifest_target(reference);
        let subject = subject(&repository, &target);
        let path = format!("/v2/{repository}/manifests/{target}");
        let announced = self
            .failover(|addr| {
                let (path, subject) = (&path, &subject);
                async move {
                    let request = self
                        .request(&addr, Method::HEAD, path)?
                        .header(ACCEPT, MANIFEST_ACCEPT);
                    let response = self
                        .send(&addr, finish(request, empty()), self.timeouts.answer)
                        .await?;
                    let response = check(&addr, response, subject).await?;
                    Ok(header_str(response.headers(), "docker-content-digest").map(str::to_owned))
                }
            })
            .await?;
        match announced {
            Some(d) => parse_digest(&d),
            // Not every registry announces it on HEAD: the content says.
            None => Ok(self.manifest(reference).await?.digest),
        }
    }

    /// The manifest (or index) `reference` names.
    pub async fn manifest(&self, reference: &Reference) -> Result<RemoteManifest> {
        self.manifest_at(&reference.cluster_repository(), &manifest_target(reference))
            .await
    }

    /// The manifest (or index) of `repository` under a tag or a `sha256:` digest; a digest
    /// is checked against the content.
    pub async fn manifest_at(
        &self,
        repository: &str,
        tag_or_digest: &str,
    ) -> Result<RemoteManifest> {
        let pinned = parse_digest(tag_or_digest).ok();
        let subject = subject(repository, tag_or_digest);
        let path = format!("/v2/{repository}/manifests/{tag_or_digest}");
        self.failover(|addr| {
            let (path, subject, pinned) = (&path, &subject, &pinned);
            async move {
                let request = self
                    .request(&addr, Method::GET, path)?
                    .header(ACCEPT, MANIFEST_ACCEPT);
                let response = self
                    .send(&addr, finish(request, empty()), self.timeouts.answer)
                    .await?;
                let response = check(&addr, response, subject).await?;
                let announced =
                    header_str(response.headers(), "docker-content-digest").map(str::to_owned);
                let content_type =
                    header_str(response.headers(), CONTENT_TYPE.as_str()).map(str::to_owned);
                let bytes = read_document(&addr, response, subject).await?;
                let digest = verify_manifest(
                    &addr,
                    subject,
                    &bytes,
                    announced.as_deref(),
                    pinned.as_ref(),
                )?;
                let media_type = manifest_media_type(&bytes, content_type.as_deref());
                Ok(RemoteManifest {
                    digest,
                    media_type,
                    bytes,
                })
            }
        })
        .await
    }

    /// The host platform's manifest of `manifest`: the manifest itself, or the one an index
    /// picks for this host (fetched from `repository`, checked against the index's digest and
    /// size).
    pub async fn platform_manifest(
        &self,
        repository: &str,
        manifest: &RemoteManifest,
    ) -> Result<RemoteManifest> {
        if peek_kind(&manifest.bytes, &manifest.digest)? == DocKind::Manifest {
            return Ok(manifest.clone());
        }
        let index: ImageIndex = parse_doc("image index", &manifest.digest, &manifest.bytes)?;
        let chosen = pick_platform(&index, &manifest.digest)?;
        let child = self
            .manifest_at(repository, chosen.digest().as_ref())
            .await?;
        if child.bytes.len() as u64 != chosen.size() {
            return Err(ImageError::SizeMismatch {
                digest: child.digest.to_string(),
                expected: chosen.size(),
                actual: child.bytes.len() as u64,
            });
        }
        if peek_kind(&child.bytes, &child.digest)? != DocKind::Manifest {
            return Err(invalid_doc("manifest", &child.digest, "nested image index"));
        }
        Ok(child)
    }

    /// A small blob (a config) of `repository`, read whole if it is at most `limit` bytes, and
    /// checked against its digest.
    pub async fn read_blob(&self, repository: &str, digest: &Digest, limit: u64) -> Result<Bytes> {
        let subject = subject(repository, digest.as_ref());
        let path = format!("/v2/{repository}/blobs/{digest}");
        self.failover(|addr| {
            let (path, subject) = (&path, &subject);
            async move {
                let request = self.request(&addr, Method::GET, path)?;
                let response = self
                    .send(&addr, finish(request, empty()), self.timeouts.idle)
                    .await?;
                let response = check(&addr, response, subject).await?;
                if let Some(size) = content_length(response.headers()).filter(|s| *s > limit) {
                    return Err(ImageError::BlobTooLarge {
                        digest: digest.to_string(),
                        size,
                        limit,
                    });
                }
                let bytes = read_limited(&addr, response.into_body(), limit, subject).await?;
                let actual = digest_of(&bytes);
                if actual != *digest {
                    return Err(ImageError::DigestMismatch {
                        expected: digest.to_string(),
                        actual: actual.to_string(),
                    });
                }
                Ok(bytes)
            }
        })
        .await
    }

    /// Pull `reference` into `store`: its manifest (for an index, the host platform's), then
    /// the config and layers the store lacks, each verified and each layer unpacked once;
    /// then the documents, and the record `reference` → top digest (a pinned reference is
    /// recorded under its name and tag too, so GC keeps it).
    pub async fn pull(
        &self,
        store: &ImageStore,
        reference: &Reference,
        progress: impl FnMut(Progress) + Send,
    ) -> Result<ResolvedImage> {
        let repository = reference.cluster_repository();
        let top = self.manifest(reference).await?;
        let platform = self.platform_manifest(&repository, &top).await?;
        let child = (platform.digest != top.digest).then_some(platform);
        let platform = child.as_ref().unwrap_or(&top);
        let manifest: ImageManifest = parse_doc("manifest", &platform.digest, &platform.bytes)?;
        check_pullable(&manifest)?;

        // GC must not collect what is written here before the record exists.
        let gc_guard = {
            let store = store.clone();
            blocking(move || store.lock("gc.lock", FlockArg::LockShared)).await?
        };
        let mut blobs = vec![(manifest.config().clone(), false)];
        for layer in manifest.layers() {
            if !blobs.iter().any(|(b, _)| b.digest() == layer.digest()) {
                blobs.push((layer.clone(), true));
            }
        }
        let missing = {
            let content = store.content().clone();
            let descriptors: Vec<Descriptor> = blobs.iter().map(|(d, _)| d.clone()).collect();
            blocking(move || {
                Ok(descriptors
                    .into_iter()
                    .filter(|d| content.size(d.digest()).ok() != Some(d.size()))
                    .map(|d| d.digest().clone())
                    .collect::<Vec<_>>())
            })
            .await?
        };
        let tracker = Tracker::new(
            progress,
            Progress {
                blobs: missing.len(),
                bytes: blobs
                    .iter()
                    .filter(|(d, _)| missing.contains(d.digest()))
                    .map(|(d, _)| d.size())
                    .sum(),
                ..Progress::default()
            },
        );
        // Owned items: a stream of borrowed ones makes the future not provably Send.
        futures::stream::iter(blobs)
            .map(|(desc, is_layer)| {
                let (tracker, missing, repository) = (&tracker, &missing, &repository);
                async move {
                    if missing.contains(desc.digest()) {
                        self.fetch_blob(store.content(), repository, &desc, tracker)
                            .await?;
                    }
                    if is_layer {
                        let (layers, content, desc) = (
                            store.layers().clone(),
                            store.content().clone(),
                            desc.clone(),
                        );
                        blocking(move || layers.unpack(&content, &desc)).await?;
                    }
                    Ok::<_, ImageError>(())
                }
            })
            .buffer_unordered(PARALLEL_BLOBS)
            .try_collect::<Vec<()>>()
            .await?;

        let store = store.clone();
        let reference = reference.clone();
        let resolved = blocking(move || {
            if let Some(child) = &child {
                store.content().write_bytes(&child.bytes)?;
            }
            store.content().write_bytes(&top.bytes)?;
            store.tag(&reference, &top.digest)?;
            store.resolve_digest(&top.digest)
        })
        .await?;
        drop(gc_guard);
        Ok(resolved)
    }

    /// Push the local image `local` to the registry as `target` (name and tag): every blob the
    /// registry lacks, then child manifests by digest, then the top manifest by tag. Returns
    /// the pushed digest. A local index whose other platforms are not all in the store (a
    /// pulled image keeps only the host's) is pushed as its host-platform manifest.
    pub async fn push(
        &self,
        store: &ImageStore,
        local: &Reference,
        target: &Reference,
        progress: impl FnMut(Progress) + Send,
    ) -> Result<Digest> {
        let plan = {
            let (store, local) = (store.clone(), local.clone());
            blocking(move || plan_push(&store, &local)).await?
        };
        if let Some(pinned) = target.pinned_digest().filter(|d| *d != plan.top.digest) {
            return Err(ImageError::InvalidReference {
                reference: target.to_string(),
                reason: format!("the image is {}, not {pinned}", plan.top.digest),
            });
        }
        let repository = target.cluster_repository();
        let missing: Vec<Descriptor> = futures::stream::iter(plan.blobs.clone())
            .map(|desc| {
                let repository = &repository;
                async move {
                    let has = self.has_blob(repository, desc.digest()).await?;
                    Ok::<_, ImageError>((!has).then_some(desc))
                }
            })
            .buffer_unordered(PARALLEL_BLOBS * 2)
            .try_filter_map(|d| async move { Ok(d) })
            .try_collect()
            .await?;
        let tracker = Tracker::new(
            progress,
            Progress {
                blobs: missing.len(),
                bytes: missing.iter().map(|d| d.size()).sum(),
                ..Progress::default()
            },
        );
        futures::stream::iter(missing)
            .map(|desc| {
                let (tracker, repository) = (&tracker, &repository);
                async move {
                    self.upload_blob(store.content(), repository, &desc, tracker)
                        .await
                }
            })
            .buffer_unordered(PARALLEL_BLOBS)
            .try_collect::<Vec<()>>()
            .await?;
        for child in &plan.children {
            self.put_manifest(&repository, child.digest.as_ref(), child)
                .await?;
        }
        self.put_manifest(&repository, &target.tag, &plan.top)
            .await?;
        Ok(plan.top.digest)
    }

    /// Every repository in the registry, following `Link` pagination.
    pub async fn catalog(&self) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Catalog {
            repositories: Option<Vec<String>>,
        }
        let pages: Vec<Catalog> = self
            .pages(format!("/v2/_catalog?n={}", self.page_size), "catalog")
            .await?;
        Ok(pages
            .into_iter()
            .flat_map(|p| p.repositories.unwrap_or_default())
            .collect())
    }

    /// The tags of `repository`, following `Link` pagination.
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let pages: Vec<TagList> = self
            .pages(
                format!("/v2/{repository}/tags/list?n={}", self.page_size),
                repository,
            )
            .await?;
        Ok(pages
            .into_iter()
            .flat_map(|p| p.tags.unwrap_or_default())
            .collect())
    }

    /// Delete what `reference` names: with a pinned digest, the manifest (and every tag
    /// pointing at it); otherwise the tag only.
    pub async fn delete(&self, reference: &Reference) -> Result<()> {
        let repository = reference.cluster_repository();
        let target = manifest_target(reference);
        let subject = subject(&repository, &target);
        let path = format!("/v2/{repository}/manifests/{target}");
        self.failover(|addr| {
            let (path, subject) = (&path, &subject);
            async move {
                let request = self.request(&addr, Method::DELETE, path)?;
                let response = self
                    .send(&addr, finish(request, empty()), self.timeouts.answer)
                    .await?;
                check(&addr, response, subject).await.map(drop)
            }
        })
        .await
    }

    /// Tag the registry's image `source` as `target` (a name and tag); returns its digest.
    /// Across repositories, the blobs and child manifests are made present in the target
    /// repository first.
    pub async fn tag(&self, source: &Reference, target: &Reference) -> Result<Digest> {
        if target.digest.is_some() {
            return Err(ImageError::InvalidReference {
                reference: target.to_string(),
                reason: "the new name takes a tag, not a digest".into(),
            });
        }
        let manifest = self.manifest(source).await?;
        let (from, to) = (source.cluster_repository(), target.cluster_repository());
        if from != to {
            if peek_kind(&manifest.bytes, &manifest.digest)? == DocKind::Index {
                let index: ImageIndex =
                    parse_doc("image index", &manifest.digest, &manifest.bytes)?;
                for child in index.manifests() {
                    let child = self.manifest_at(&from, child.digest().as_ref()).await?;
                    self.mount_blobs(&from, &to, &child).await?;
                    self.put_manifest(&to, child.digest.as_ref(), &child)
                        .await?;
                }
            } else {
                self.mount_blobs(&from, &to, &manifest).await?;
            }
        }
        self.put_manifest(&to, &target.tag, &manifest).await?;
        Ok(manifest.digest)
    }

    /// Make the config and layers of `manifest` present in repository `to`: already there, or
    /// mounted from `from`.
    async fn mount_blobs(&self, from: &str, to: &str, manifest: &RemoteManifest) -> Result<()> {
        if peek_kind(&manifest.bytes, &manifest.digest)? != DocKind::Manifest {
            return Err(invalid_doc(
                "manifest",
                &manifest.digest,
                "nested image index",
            ));
        }
        let parsed: ImageManifest = parse_doc("manifest", &manifest.digest, &manifest.bytes)?;
        for desc in std::iter::once(parsed.config()).chain(parsed.layers()) {
            if self.has_blob(to, desc.digest()).await? {
                continue;
            }
            let digest = desc.digest();
            let subject = subject(to, digest.as_ref());
            let path = format!("/v2/{to}/blobs/uploads/?mount={digest}&from={from}");
            self.failover(|addr| {
                let (path, subject) = (&path, &subject);
                async move {
                    let request = self
                        .request(&addr, Method::POST, path)?
                        .header(CONTENT_LENGTH, 0);
                    let response = self
                        .send(&addr, finish(request, empty()), self.timeouts.answer)
                        .await?;
                    let response = check(&addr, response, subject).await?;
                    if response.status() != StatusCode::CREATED {
                        return Err(ImageError::RegistryProtocol {
                            addr: addr.clone(),
                            reason: format!(
                                "blob {digest} could not be mounted from {from} into {to}"
                            ),
                        });
                    }
                    Ok(())
                }
            })
            .await?;
        }
        Ok(())
    }

    async fn has_blob(&self, repository: &str, digest: &Digest) -> Result<bool> {
        let subject = subject(repository, digest.as_ref());
        let path = format!("/v2/{repository}/blobs/{digest}");
        self.failover(|addr| {
            let (path, subject) = (&path, &subject);
            async move {
                let request = self.request(&addr, Method::HEAD, path)?;
                let response = self
                    .send(&addr, finish(request, empty()), self.timeouts.answer)
                    .await?;
                if response.status() == StatusCode::NOT_FOUND {
                    return Ok(false);
                }
                check(&addr, response, subject).await.map(|_| true)
            }
        })
        .await
    }

    async fn put_manifest(
        &self,
        repository: &str,
        tag_or_digest: &str,
        manifest: &RemoteManifest,
    ) -> Result<()> {
        let subject = subject(repository, tag_or_digest);
        let path = format!("/v2/{repository}/manifests/{tag_or_digest}");
        self.failover(|addr| {
            let (path, subject) = (&path, &subject);
            async move {
                let request = self
                    .request(&addr, Method::PUT, path)?
                    .header(CONTENT_TYPE, &manifest.media_type)
                    .header(CONTENT_LENGTH, manifest.bytes.len());
                let body = Full::new(manifest.bytes.clone())
                    .map_err(|never| match never {})
                    .boxed_unsync();
                let response = self
                    .send(&addr, finish(request, body), self.timeouts.slow_answer)
                    .await?;
                let response = check(&addr, response, subject).await?;
                match header_str(response.headers(), "docker-content-digest") {
                    Some(d) if d != manifest.digest.as_ref() => Err(ImageError::RegistryProtocol {
                        addr: addr.clone(),
                        reason: format!(
                            "stored manifest {subject} as {d}, but its content is {}",
                            manifest.digest
                        ),
                    }),
                    _ => Ok(()),
                }
            }
        })
        .await
    }

    /// Download one blob into `content` (verified there), retrying on the next member if the
    /// one asked fails.
    async fn fetch_blob(
        &self,
        content: &ContentStore,
        repository: &str,
        desc: &Descriptor,
        tracker: &Tracker<'_>,
    ) -> Result<()> {
        let (digest, size) = (desc.digest(), desc.size());
        let subject = subject(repository, digest.as_ref());
        let path = format!("/v2/{repository}/blobs/{digest}");
        self.failover(|addr| {
            let (path, subject) = (&path, &subject);
            async move {
                let request = self.request(&addr, Method::GET, path)?;
                let response = self
                    .send(&addr, finish(request, empty()), self.timeouts.idle)
                    .await?;
                let response = check(&addr, response, subject).await?;
                if let Some(len) = content_length(response.headers()).filter(|l| *l != size) {
                    return Err(ImageError::SizeMismatch {
                        digest: digest.to_string(),
                        expected: size,
                        actual: len,
                    });
                }
                let (tx, rx) = mpsc::channel(8);
                let writer = {
                    let (content, digest) = (content.clone(), digest.clone());
                    // One byte more than announced is enough to see a blob is too long.
                    blocking(move || {
                        content.write(ChannelReader::new(rx).take(size + 1), &digest, Some(size))
                    })
                };
                let receive = async {
                    let mut body = response.into_body();
                    let mut received = 0u64;
                    let failure = loop {
                        let idle = self.timeouts.idle;
                        match tokio::time::timeout(idle, body.frame()).await {
                            Err(_) => break Some(format!("no data for {} s", idle.as_secs())),
                            Ok(None) => break None,
                            Ok(Some(Err(e))) => break Some(root_cause(&e)),
                            Ok(Some(Ok(frame))) => {
                                let Ok(data) = frame.into_data() else {
                                    continue;
                                };
                                received += data.len() as u64;
                                tracker.update(|p| p.bytes_done += data.len() as u64);
                                // The writer stopped (too long, disk error): it says why.
                                if tx.send(Ok(data)).await.is_err() {
                                    break None;
                                }
                            }
                        }
                    };
                    if let Some(reason) = &failure {
                        let _ = tx.send(Err(io::Error::other(reason.clone()))).await;
                    }
                    drop(tx);
                    (received, failure)
                };
                let ((received, failure), written) = tokio::join!(receive, writer);
                if failure.is_some() || written.is_err() {
                    tracker.update(|p| p.bytes_done = p.bytes_done.saturating_sub(received));
                }
                match failure {
                    Some(reason) => Err(ImageError::RegistryUnreachable {
                        addr: addr.clone(),
                        reason: format!("reading blob {digest}: {reason}"),
                    }),
                    None => written.map(drop),
                }
            }
        })
        .await?;
        tracker.update(|p| p.blobs_done += 1);
        Ok(())
    }

    /// Upload one blob: POST, then one PUT with the content, or PATCH chunks and a closing
    /// PUT. The whole upload moves to the next member if the one asked fails.
    async fn upload_blob(
        &self,
        content: &ContentStore,
        repository: &str,
        desc: &Descriptor,
        tracker: &Tracker<'_>,
    ) -> Result<()> {
        let (digest, size) = (desc.digest(), desc.size());
        let subject = subject(repository, digest.as_ref());
        let start = format!("/v2/{repository}/blobs/uploads/");
        self.failover(|addr| {
            let (start, subject) = (&start, &subject);
            async move {
                let sent = AtomicU64::new(0);
                let result = async {
                    let request = self
                        .request(&addr, Method::POST, start)?
                        .header(CONTENT_LENGTH, 0);
                    let response = self
                        .send(&addr, finish(request, empty()), self.timeouts.answer)
                        .await?;
                    let response = check(&addr, response, subject).await?;
                    let mut location = upload_location(&addr, &response)?;
                    let source = Source { content, digest };
                    if size <= self.chunk_size {
                        let put = with_query(&location, "digest", digest.as_ref());
                        let response = self
                            .send_blob(
                                &addr,
                                Method::PUT,
                                &put,
                                &source,
                                0..size,
                                None,
                                tracker,
                                &sent,
                                self.timeouts.slow_answer,
                            )
                            .await?;
                        return check(&addr, response, subject).await.map(drop);
                    }
                    let mut offset = 0;
                    while offset < size {
                        let end = (offset + self.chunk_size).min(size);
                        let range = format!("{offset}-{}", end - 1);
                        let response = self
                            .send_blob(
                                &addr,
                                Method::PATCH,
                                &location,
                                &source,
                                offset..end,
                                Some(range),
                                tracker,
                                &sent,
                                self.timeouts.answer,
                            )
                            .await?;
                        let response = check(&addr, response, subject).await?;
                        location = upload_location(&addr, &response)?;
                        offset = end;
                    }
                    let put = with_query(&location, "digest", digest.as_ref());
                    let request = self
                        .request(&addr, Method::PUT, &put)?
                        .header(CONTENT_LENGTH, 0);
                    let response = self
                        .send(&addr, finish(request, empty()), self.timeouts.slow_answer)
                        .await?;
                    check(&addr, response, subject).await.map(drop)
                }
                .await;
                if result.is_err() {
                    let sent = sent.load(Ordering::Relaxed);
                    tracker.update(|p| p.bytes_done = p.bytes_done.saturating_sub(sent));
                }
                result
            }
        })
        .await?;
        tracker.update(|p| p.blobs_done += 1);
        Ok(())
    }

    /// Send `range` of a local blob as a request body, read from disk on a blocking thread.
    /// A whole blob is read through the verifying reader: corrupt local content aborts the
    /// request rather than being pushed. `answer` is how long the registry may take to
    /// answer once the body is sent.
    #[allow(clippy::too_many_arguments)]
    async fn send_blob(
        &self,
        addr: &str,
        method: Method,
        path: &str,
        source: &Source<'_>,
        range: Range<u64>,
        content_range: Option<String>,
        tracker: &Tracker<'_>,
        sent: &AtomicU64,
        answer: Duration,
    ) -> Result<Response<Incoming>> {
        let len = range.end - range.start;
        let whole = range.start == 0 && content_range.is_none();
        let (file_tx, mut file_rx) = mpsc::channel::<io::Result<Bytes>>(4);
        let (body_tx, body_rx) = mpsc::channel(4);
        let reader = {
            let (content, digest) = (source.content.clone(), source.digest.clone());
            blocking(move || read_blob_range(&content, &digest, range, whole, file_tx))
        };
        let pump = async move {
            while let Some(item) = file_rx.recv().await {
                if let Ok(data) = &item {
                    sent.fetch_add(data.len() as u64, Ordering::Relaxed);
                    tracker.update(|p| p.bytes_done += data.len() as u64);
                }
                if body_tx.send(item).await.is_err() {
                    break;
                }
            }
        };
        let mut request = self
            .request(addr, method, path)?
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, len);
        if let Some(range) = content_range {
            request = request.header("content-range", range);
        }
        let body = ChannelBody { rx: body_rx, len }.boxed_unsync();
        // The exchange ends the pump: a request given up must not wait for a body the
        // registry stopped reading.
        let exchange = async {
            let send = self.send(addr, finish(request, body), answer);
            tokio::pin!(send, pump);
            let mut pumping = true;
            loop {
                tokio::select! {
                    response = &mut send => break response,
                    () = &mut pump, if pumping => pumping = false,
                }
            }
        };
        let (response, read) = tokio::join!(exchange, reader);
        // A local failure (unreadable or corrupt blob) explains a failed request best.
        read?;
        response
    }

    /// GET `first` and every `Link: <...>; rel="next"` page after it.
    async fn pages<T: serde::de::DeserializeOwned>(
        &self,
        first: String,
        subject: &str,
    ) -> Result<Vec<T>> {
        let mut pages = Vec::new();
        let mut next = Some(first);
        let mut seen = std::collections::HashSet::new();
        while let Some(path) = next.take() {
            if !seen.insert(path.clone()) {
                break; // a registry that links a page to itself would loop forever
            }
            let (page, link) = self
                .failover(|addr| {
                    let path = &path;
                    async move {
                        let request = self.request(&addr, Method::GET, path)?;
                        let response = self
                            .send(&addr, finish(request, empty()), self.timeouts.answer)
                            .await?;
                        let response = check(&addr, response, subject).await?;
                        let link = response
                            .headers()
                            .get_all(http::header::LINK)
                            .iter()
                            .filter_map(|v| v.to_str().ok())
                            .find_map(next_link);
                        let bytes = read_document(&addr, response, subject).await?;
                        let page: T = serde_json::from_slice(&bytes).map_err(|e| {
                            ImageError::RegistryProtocol {
                                addr: addr.clone(),
                                reason: format!("{subject}: invalid list: {e}"),
                            }
                        })?;
                        Ok((page, link))
                    }
                })
                .await?;
            pages.push(page);
            next = link;
        }
        Ok(pages)
    }

    /// Run `attempt` against each address in turn, from the one that answered last, until
    /// one succeeds or fails with an answer another address would give too.
    async fn failover<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let count = self.endpoints.len();
        if count == 0 {
            return Err(ImageError::RegistryUnreachable {
                addr: "(none)".into(),
                reason: "no registry address given".into(),
            });
        }
        let first = self.preferred.load(Ordering::Relaxed) % count;
        let mut failures = Vec::new();
        for i in 0..count {
            let index = (first + i) % count;
            let addr = self.endpoints[index].clone();
            match attempt(addr.clone()).await {
                Ok(value) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(value);
                }
                Err(error) if error.is_retriable() => {
                    tracing::debug!(%addr, %error, "registry address failed, trying the next");
                    failures.push(error);
                }
                Err(error) => return Err(error),
            }
        }
        if failures.len() == 1 {
            Err(failures.pop().expect("one failure"))
        } else {
            Err(ImageError::NoRegistryAvailable(failures))
        }
    }

    fn request(&self, addr: &str, method: Method, path: &str) -> Result<http::request::Builder> {
        let uri: Uri =
            format!("http://{addr}{path}")
                .parse()
                .map_err(|e| ImageError::RegistryProtocol {
                    addr: addr.to_owned(),
                    reason: format!("invalid request URL {path:?}: {e}"),
                })?;
        Ok(Request::builder()
            .method(method)
            .uri(uri)
            .header(USER_AGENT, USER_AGENT_VALUE))
    }

    /// Send `request` and wait for the answer's head. The wait is for progress, not for
    /// the whole exchange: the request body may take as long as it keeps moving (it may not
    /// stall for the idle timeout), then the answer may take `answer` after its last byte.
    async fn send(
        &self,
        addr: &str,
        request: Request<Body>,
        answer: Duration,
    ) -> Result<Response<Incoming>> {
        let unreachable = |reason: String| ImageError::RegistryUnreachable {
            addr: addr.to_owned(),
            reason,
        };
        let body_sent = http_body::Body::is_end_stream(request.body());
        let activity = Arc::new(Activity::new(body_sent));
        let request = request.map(|inner| {
            Watched {
                inner,
                activity: activity.clone(),
                sent: 0,
            }
            .boxed_unsync()
        });
        tokio::select! {
            response = self.http.request(request) => {
                response.map_err(|e| unreachable(root_cause(&e)))
            }
            reason = activity.stalled(self.timeouts.idle, answer) => Err(unreachable(reason)),
        }
    }
}

/// A local blob to upload.
struct Source<'a> {
    content: &'a ContentStore,
    digest: &'a Digest,
}

/// What a push sends: documents in the order they are put, and the blobs they name.
struct PushPlan {
    blobs: Vec<Descriptor>,
    /// Manifests of an index, put by digest before it.
    children: Vec<RemoteManifest>,
    top: RemoteManifest,
}

fn plan_push(store: &ImageStore, local: &Reference) -> Result<PushPlan> {
    let image = store.resolve(&local.to_string())?;
    let content = store.content();
    let document = |digest: &Digest| -> Result<RemoteManifest> {
        let bytes = Bytes::from(content.read_all(digest, MAX_DOCUMENT_SIZE)?);
        Ok(RemoteManifest {
            digest: digest.clone(),
            media_type: manifest_media_type(&bytes, None),
            bytes,
        })
    };
    // A manifest with every blob it names, or why not.
    let complete = |digest: &Digest| -> Result<(RemoteManifest, Vec<Descriptor>)> {
        let doc = document(digest)?;
        if peek_kind(&doc.bytes, digest)? != DocKind::Manifest {
            return Err(invalid_doc("manifest", digest, "nested image index"));
        }
        let manifest: ImageManifest = parse_doc("manifest", digest, &doc.bytes)?;
        let blobs: Vec<Descriptor> = std::iter::once(manifest.config())
            .chain(manifest.layers())
            .cloned()
            .collect();
        for blob in &blobs {
            let size = content.size(blob.digest())?;
            if size != blob.size() {
                return Err(ImageError::SizeMismatch {
                    digest: blob.digest().to_string(),
                    expected: blob.size(),
                    actual: size,
                });
            }
        }
        Ok((doc, blobs))
    };
    let mut plan = if image.top_digest == image.manifest_digest {
        let (top, blobs) = complete(&image.top_digest)?;
        PushPlan {
            blobs,
            children: Vec::new(),
            top,
        }
    } else {
        let top = document(&image.top_digest)?;
        let index: ImageIndex = parse_doc("image index", &top.digest, &top.bytes)?;
        let children: Result<Vec<_>> = index
            .manifests()
            .iter()
            .map(|m| complete(m.digest()))
            .collect();
        match children {
            Ok(children) => {
                let (children, blobs): (Vec<_>, Vec<_>) = children.into_iter().unzip();
                PushPlan {
                    blobs: blobs.into_iter().flatten().collect(),
                    children,
                    top,
                }
            }
            Err(missing) => {
                tracing::info!(
                    image = %local,
                    reason = %missing,
                    "not every platform of the index is stored: pushing the host platform's manifest"
                );
                let (top, blobs) = complete(&image.manifest_digest)?;
                PushPlan {
                    blobs,
                    children: Vec::new(),
                    top,
                }
            }
        }
    };
    let mut seen = std::collections::HashSet::new();
    plan.blobs.retain(|b| seen.insert(b.digest().clone()));
    Ok(plan)
}

/// Refuse, before downloading anything, an image this store could not use.
fn check_pullable(manifest: &ImageManifest) -> Result<()> {
    let config = manifest.config();
    if *config.media_type() != MediaType::ImageConfig
        && config.media_type().as_ref() != DOCKER_CONFIG
    {
        return Err(ImageError::UnsupportedMediaType {
            what: "config",
            digest: config.digest().to_string(),
            media_type: config.media_type().to_string(),
        });
    }
    if config.size() > MAX_DOCUMENT_SIZE {
        return Err(ImageError::BlobTooLarge {
            digest: config.digest().to_string(),
            size: config.size(),
            limit: MAX_DOCUMENT_SIZE,
        });
    }
    for layer in manifest.layers() {
        if !is_supported_layer(layer.media_type()) {
            return Err(ImageError::UnsupportedMediaType {
                what: "layer",
                digest: layer.digest().to_string(),
                media_type: layer.media_type().to_string(),
            });
        }
    }
    Ok(())
}

/// Read `range` of a blob into `tx`, in chunks; a failure is also sent down the channel so
/// the request body ends in an error, not short.
fn read_blob_range(
    content: &ContentStore,
    digest: &Digest,
    range: Range<u64>,
    whole: bool,
    tx: mpsc::Sender<io::Result<Bytes>>,
) -> Result<()> {
    let result = (|| -> Result<()> {
        let mut reader: Box<dyn Read> = if whole {
            Box::new(content.open_blob(digest)?)
        } else {
            let path = content.blob_path(digest)?;
            let mut file = std::fs::File::open(&path).ctx(|| format!("open {}", path.display()))?;
            file.seek(SeekFrom::Start(range.start))
                .ctx(|| format!("seek in {}", path.display()))?;
            Box::new(file.take(range.end - range.start))
        };
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = reader
                .read(&mut buf)
                .ctx(|| format!("read blob {digest}"))?;
            if n == 0 {
                return Ok(());
            }
            if tx
                .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                .is_err()
            {
                return Ok(()); // the request ended; its error says why
            }
        }
    })();
    if let Err(error) = &result {
        let _ = tx.blocking_send(Err(io::Error::other(error.to_string())));
    }
    result
}

/// When a request last made progress (a body frame went out), and whether its body is
/// all sent (then the registry's answer is what is waited for).
struct Activity {
    state: Mutex<(tokio::time::Instant, bool)>,
}

impl Activity {
    fn new(body_sent: bool) -> Self {
        Self {
            state: Mutex::new((tokio::time::Instant::now(), body_sent)),
        }
    }

    fn moved(&self, body_sent: bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *state = (tokio::time::Instant::now(), state.1 || body_sent);
    }

    /// Resolves, with the reason, once the body did not move for `idle`, or the answer did
    /// not come within `answer` of the body's end.
    async fn stalled(&self, idle: Duration, answer: Duration) -> String {
        loop {
            let (last, body_sent) = *self.state.lock().unwrap_or_else(|e| e.into_inner());
            let limit = if body_sent { answer } else { idle };
            let deadline = last + limit;
            if tokio::time::Instant::now() >= deadline {
                return if body_sent {
                    format!("no answer within {} s", limit.as_secs())
                } else {
                    format!("the request body did not move for {} s", limit.as_secs())
                };
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A request body that tells its [`Activity`] when it moves.
struct Watched {
    inner: Body,
    activity: Arc<Activity>,
    sent: u64,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                self.sent += len;
                // hyper may not ask again once a body of known length is all sent.
                let whole =
                    self.inner.is_end_stream() || self.inner.size_hint().exact() == Some(self.sent);
                self.activity.moved(whole);
            }
            Poll::Ready(None) => self.activity.moved(true),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body fed from a channel.
struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    len: u64,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

/// The blocking side of a download: reads what the async side received.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    chunk: Bytes,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        Self {
            rx,
            chunk: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(data)) => self.chunk = data,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// The caller's progress callback.
type Report<'a> = Box<dyn FnMut(Progress) + Send + 'a>;

/// Progress shared by the concurrent transfers of one operation. Its lock is held only to
/// update and report, never across an await.
struct Tracker<'a> {
    state: Mutex<(Progress, Report<'a>)>,
}

impl<'a> Tracker<'a> {
    fn new(report: impl FnMut(Progress) + Send + 'a, initial: Progress) -> Self {
        let tracker = Self {
            state: Mutex::new((initial, Box::new(report))),
        };
        tracker.update(|_| {});
        tracker
    }

    fn update(&self, change: impl FnOnce(&mut Progress)) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (progress, report) = &mut *state;
        change(progress);
        report(*progress);
    }
}

/// Run blocking filesystem work off the async runtime threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(ImageError::Io {
            context: "image store work".into(),
            source: io::Error::other(e),
        }),
    }
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

fn finish(builder: http::request::Builder, body: Body) -> Request<Body> {
    builder
        .body(body)
        .expect("method, URI and headers were checked")
}

/// The tag or digest a reference asks the registry for (a pinned digest wins).
fn manifest_target(reference: &Reference) -> String {
    reference
        .digest
        .clone()
        .unwrap_or_else(|| reference.tag.clone())
}

/// `repo:tag` or `repo@sha256:...`, as errors name what was asked for.
fn subject(repository: &str, tag_or_digest: &str) -> String {
    if tag_or_digest.contains(':') {
        format!("{repository}@{tag_or_digest}")
    } else {
        format!("{repository}:{tag_or_digest}")
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok())
}

/// Pass a successful answer through; turn an error answer into [`ImageError::Registry`].
async fn check(
    addr: &str,
    response: Response<Incoming>,
    subject: &str,
) -> Result<Response<Incoming>> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    // The body only adds detail: a body that cannot be read leaves the status.
    let body = tokio::time::timeout(
        ANSWER_TIMEOUT,
        Limited::new(response.into_body(), ERROR_BODY_LIMIT).collect(),
    )
    .await
    .ok()
    .and_then(|r| r.ok())
    .map(|c| c.to_bytes())
    .unwrap_or_default();
    Err(registry_error(addr, status, &body, subject))
}

/// The error a registry answer carries: the spec's `{"errors":[{code, message}]}`, or the
/// HTTP status and a short text body.
fn registry_error(addr: &str, status: StatusCode, body: &[u8], subject: &str) -> ImageError {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        code: String,
        #[serde(default)]
        message: String,
    }
    let (code, message) = match serde_json::from_slice::<Errors>(body) {
        Ok(parsed) if !parsed.errors.is_empty() => {
            let mut entries = parsed.errors.into_iter();
            let first = entries.next().expect("not empty");
            let mut message = first.message;
            for more in entries {
                message.push_str(&format!("; {}: {}", more.code, more.message));
            }
            (first.code, message)
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let short = text.len() <= 200 && !text.starts_with(['{', '<']);
            (
                format!("HTTP {status}"),
                if short {
                    text.to_owned()
                } else {
                    String::new()
                },
            )
        }
    };
    ImageError::Registry {
        addr: addr.to_owned(),
        status: status.as_u16(),
        code,
        message,
        subject: subject.to_owned(),
    }
}

/// Read a manifest or list body, refusing it before reading past [`MAX_DOCUMENT_SIZE`].
async fn read_document(addr: &str, response: Response<Incoming>, subject: &str) -> Result<Bytes> {
    if let Some(size) = content_length(response.headers()).filter(|s| *s > MAX_DOCUMENT_SIZE) {
        return Err(ImageError::RegistryProtocol {
            addr: addr.to_owned(),
            reason: format!("{subject} is {size} bytes, over the {MAX_DOCUMENT_SIZE}-byte limit"),
        });
    }
    read_limited(addr, response.into_body(), MAX_DOCUMENT_SIZE, subject).await
}

async fn read_limited(addr: &str, body: Incoming, limit: u64, subject: &str) -> Result<Bytes> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match tokio::time::timeout(ANSWER_TIMEOUT, Limited::new(body, limit).collect()).await {
        Err(_) => Err(ImageError::RegistryUnreachable {
            addr: addr.to_owned(),
            reason: format!(
                "{subject}: no complete answer within {} s",
                ANSWER_TIMEOUT.as_secs()
            ),
        }),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ImageError::RegistryProtocol {
                addr: addr.to_owned(),
                reason: format!("{subject} is over the {limit}-byte limit"),
            })
        }
        Ok(Err(e)) => Err(ImageError::RegistryUnreachable {
            addr: addr.to_owned(),
            reason: format!("{subject}: {}", root_cause(&*e)),
        }),
    }
}

/// The digest of a manifest's bytes, checked against what the registry announced and what
/// the caller pinned.
fn verify_manifest(
    addr: &str,
    subject: &str,
    bytes: &[u8],
    announced: Option<&str>,
    pinned: Option<&Digest>,
) -> Result<Digest> {
    let digest = digest_of(bytes);
    let mismatch = |claimed: &str| ImageError::RegistryProtocol {
        addr: addr.to_owned(),
        reason: format!("manifest {subject} has content {digest}, not {claimed}"),
    };
    if let Some(announced) = announced.filter(|a| *a != digest.as_ref()) {
        return Err(mismatch(announced));
    }
    if let Some(pinned) = pinned.filter(|p| **p != digest) {
        return Err(mismatch(pinned.as_ref()));
    }
    Ok(digest)
}

/// A manifest's media type: its `mediaType` field, else the Content-Type it came with, else
/// its shape (an index has `manifests`).
fn manifest_media_type(bytes: &[u8], content_type: Option<&str>) -> String {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Peek {
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
    }
    let peek = serde_json::from_slice::<Peek>(bytes).ok();
    if let Some(t) = peek.as_ref().and_then(|p| p.media_type.clone()) {
        return t;
    }
    let known = [
        MediaType::ImageManifest.to_string(),
        MediaType::ImageIndex.to_string(),
        DOCKER_MANIFEST.to_owned(),
        DOCKER_MANIFEST_LIST.to_owned(),
    ];
    if let Some(t) = content_type
        .map(|t| t.split(';').next().unwrap_or(t).trim())
        .filter(|t| known.iter().any(|k| k == t))
    {
        return t.to_owned();
    }
    if peek.is_some_and(|p| p.manifests.is_some()) {
        MediaType::ImageIndex.to_string()
    } else {
        MediaType::ImageManifest.to_string()
    }
}

/// The path and query of a URL the registry sent (absolute or a path): requests stay on the
/// member that was asked, since an upload lives on the member that started it.
fn path_of(url: &str) -> Option<String> {
    let url = url.trim();
    let path = match url.split_once("://") {
        Some((_, rest)) => &rest[rest.find('/')?..],
        None => url,
    };
    path.starts_with('/').then(|| path.to_owned())
}

/// The `rel="next"` target of a `Link` header value (`<URL>; rel="next"`, maybe among
/// other comma-separated links).
fn next_link(value: &str) -> Option<String> {
    value.split(',').find_map(|link| {
        let (target, params) = link.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        if is_next {
            path_of(target)
        } else {
            None
        }
    })
}

fn upload_location(addr: &str, response: &Response<Incoming>) -> Result<String> {
    header_str(response.headers(), LOCATION.as_str())
        .and_then(path_of)
        .ok_or_else(|| ImageError::RegistryProtocol {
            addr: addr.to_owned(),
            reason: format!(
                "upload answer ({}) without a usable Location",
                response.status()
            ),
        })
}

fn with_query(path: &str, key: &str, value: &str) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}{key}={value}")
}

/// The innermost cause: "Connection refused (os error 111)", not "client error (Connect)".
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn error_bodies() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"tag":"latest"}}]}"#;
        let error = registry_error(
            "127.0.0.1:7443",
            StatusCode::NOT_FOUND,
            body,
            "busybox:latest",
        );
        assert_eq!(
            error.to_string(),
            "registry at 127.0.0.1:7443: MANIFEST_UNKNOWN: manifest unknown: busybox:latest"
        );
        assert!(!error.is_retriable());

        let two = br#"{"errors":[{"code":"DIGEST_INVALID","message":"a"},{"code":"SIZE_INVALID","message":"b"}]}"#;
        let error = registry_error("r:1", StatusCode::BAD_REQUEST, two, "app@sha256:x");
        assert_eq!(
            error.to_string(),
            "registry at r:1: DIGEST_INVALID: a; SIZE_INVALID: b: app@sha256:x"
        );

        let error = registry_error("r:1", StatusCode::SERVICE_UNAVAILABLE, b"", "app:v1");
        assert_eq!(
            error.to_string(),
            "registry at r:1: HTTP 503 Service Unavailable: app:v1"
        );
        assert!(
            error.is_retriable(),
            "a server error may pass on another member"
        );

        let error = registry_error("r:1", StatusCode::BAD_GATEWAY, b"upstream gone\n", "app:v1");
        assert_eq!(
            error.to_string(),
            "registry at r:1: HTTP 502 Bad Gateway: upstream gone: app:v1"
        );
        let html = registry_error("r:1", StatusCode::NOT_FOUND, b"<html>...</html>", "x:y");
        assert_eq!(html.to_string(), "registry at r:1: HTTP 404 Not Found: x:y");
    }

    #[test]
    fn link_headers() {
        assert_eq!(
            next_link(r#"</v2/_catalog?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/_catalog?last=b&n=2")
        );
        assert_eq!(
            next_link(r#"<http://10.0.0.1:7443/v2/app/tags/list?n=1&last=v1>; rel="next""#)
                .as_deref(),
            Some("/v2/app/tags/list?n=1&last=v1")
        );
        assert_eq!(
            next_link(r#"</v2/a?x>; rel="prev", </v2/b?y>; rel=next"#).as_deref(),
            Some("/v2/b?y")
        );
        assert_eq!(next_link(r#"</v2/a>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
        assert_eq!(next_link(r#"<relative>; rel="next""#), None);
    }

    #[test]
    fn upload_locations_stay_on_the_member() {
        assert_eq!(
            path_of("http://other:7443/v2/app/blobs/uploads/u1?state=x").as_deref(),
            Some("/v2/app/blobs/uploads/u1?state=x")
        );
        assert_eq!(
            path_of("/v2/app/blobs/uploads/u1").as_deref(),
            Some("/v2/app/blobs/uploads/u1")
        );
        assert_eq!(path_of("http://host-without-path"), None);
        assert_eq!(
            with_query("/v2/app/blobs/uploads/u1", "digest", "sha256:ab"),
            "/v2/app/blobs/uploads/u1?digest=sha256:ab"
        );
        assert_eq!(
            with_query("/v2/app/blobs/uploads/u1?state=x", "digest", "sha256:ab"),
            "/v2/app/blobs/uploads/u1?state=x&digest=sha256:ab"
        );
    }

    #[test]
    fn manifests_are_verified() {
        let bytes = br#"{"schemaVersion":2}"#;
        let digest = digest_of(bytes);
        assert_eq!(
            verify_manifest("r", "app:v1", bytes, None, None).unwrap(),
            digest
        );
        assert_eq!(
            verify_manifest("r", "app:v1", bytes, Some(digest.as_ref()), Some(&digest)).unwrap(),
            digest
        );
        let other = digest_of(b"other");
        let err = verify_manifest("r", "app:v1", bytes, Some(other.as_ref()), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("registry at r: manifest app:v1 has content {digest}, not {other}")
        );
        assert!(verify_manifest("r", "app:v1", bytes, None, Some(&other)).is_err());
    }

    #[test]
    fn media_types() {
        let oci = MediaType::ImageManifest.to_string();
        let index = MediaType::ImageIndex.to_string();
        assert_eq!(
            manifest_media_type(
                format!(r#"{{"mediaType":"{DOCKER_MANIFEST}"}}"#).as_bytes(),
                Some(&oci)
            ),
            DOCKER_MANIFEST
        );
        assert_eq!(
            manifest_media_type(
                b"{}",
                Some(&format!("{DOCKER_MANIFEST_LIST}; charset=utf-8"))
            ),
            DOCKER_MANIFEST_LIST
        );
        assert_eq!(
            manifest_media_type(br#"{"manifests":[]}"#, Some("application/json")),
            index
        );
        assert_eq!(manifest_media_type(br#"{"layers":[]}"#, None), oci);
    }

    #[test]
    fn subjects_and_targets() {
        let r = Reference::parse("team/app:v1").unwrap();
        assert_eq!(manifest_target(&r), "v1");
        assert_eq!(subject("team/app", "v1"), "team/app:v1");
        let hex = "c".repeat(64);
        let r = Reference::parse(&format!("app:v1@sha256:{hex}")).unwrap();
        assert_eq!(manifest_target(&r), format!("sha256:{hex}"));
        assert_eq!(
            subject("app", &manifest_target(&r)),
            format!("app@sha256:{hex}")
        );
    }

    #[test]
    fn endpoints_are_normalised() {
        let http: HttpClient = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let client = RegistryClient::new(http, ["http://127.0.0.1:7443/", " 10.0.0.2:7443", ""]);
        assert_eq!(client.endpoints(), ["127.0.0.1:7443", "10.0.0.2:7443"]);

        // The node agent runs pulls on spawned tasks: the futures must be Send.
        fn send<T: Send>(_: T) {}
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let reference = Reference::parse("app").unwrap();
        send(client.pull(&store, &reference, |_| {}));
        send(client.push(&store, &reference, &reference, |_| {}));
        send(client.remote_digest(&reference));
    }

    /// A registry on loopback that reads each request head, then lets `answer` handle the
    /// connection (one thread per connection).
    fn fake_registry(
        answer: impl Fn(&str, &mut std::net::TcpStream, u64) + Send + Sync + Clone + 'static,
    ) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let (Ok(mut stream), answer) = (stream, answer.clone()) else {
                    return;
                };
                std::thread::spawn(move || loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8];
                    while !head.ends_with(b"\r\n\r\n") {
                        if stream.read(&mut byte).unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    let request_line = head.lines().next().unwrap_or_default().to_owned();
                    answer(&request_line, &mut stream, length);
                });
            }
        });
        addr
    }

    fn quick_client(addr: String) -> RegistryClient {
        let http: HttpClient = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let mut client = RegistryClient::new(http, [addr]);
        client.timeouts = Timeouts {
            answer: Duration::from_millis(300),
            idle: Duration::from_millis(300),
            slow_answer: Duration::from_secs(10),
        };
        client
    }

    #[tokio::test]
    async fn a_manifest_put_may_take_long_a_small_request_not() {
        let addr = fake_registry(|request, stream, length| {
            std::io::copy(&mut (&*stream).take(length), &mut std::io::sink()).unwrap();
            // The registry copies blobs to its members before it acknowledges a manifest.
            std::thread::sleep(Duration::from_millis(1200));
            let status = if request.starts_with("put") {
                "201 Created"
            } else {
                "200 OK"
            };
            let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            let _ = stream.write_all(answer.as_bytes());
        });
        let client = quick_client(addr);
        let bytes = Bytes::from_static(br#"{"schemaVersion":2}"#);
        let manifest = RemoteManifest {
            digest: digest_of(&bytes),
            media_type: MediaType::ImageManifest.to_string(),
            bytes,
        };
        client.put_manifest("app", "v1", &manifest).await.unwrap();
        let err = client.has_blob("app", &digest_of(b"x")).await.unwrap_err();
        assert!(err.to_string().contains("no answer within"), "{err}");
    }

    #[tokio::test]
    async fn an_upload_the_registry_stops_reading_is_given_up() {
        let addr = fake_registry(|request, stream, _| {
            if request.starts_with("post") {
                let answer = "HTTP/1.1 202 Accepted\r\nlocation: /v2/app/blobs/uploads/u1\r\n\
                              content-length: 0\r\n\r\n";
                stream.write_all(answer.as_bytes()).unwrap();
            } else {
                // Never reads the body (nor answers): the client's socket buffers fill.
                std::thread::sleep(Duration::from_secs(20));
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let content = ContentStore::open(dir.path()).unwrap();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let blob: Vec<u8> = (0..48 << 20)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let digest = content.write_bytes(&blob).unwrap();
        let desc = Descriptor::new(MediaType::ImageLayerGzip, blob.len() as u64, digest);
        let client = quick_client(addr).with_chunk_size(64 << 20);
        let tracker = Tracker::new(|_| {}, Progress::default());
        let started = std::time::Instant::now();
        let err = client
            .upload_blob(&content, "app", &desc, &tracker)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("did not move"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "given up when it stalled"
        );
    }

    #[tokio::test]
    async fn unreachable_members_are_all_reported() {
        // Two closed loopback ports: nothing listens, nothing leaves the machine.
        let closed: Vec<String> = (0..2)
            .map(|_| {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                listener.local_addr().unwrap().to_string()
            })
            .collect();
        let http: HttpClient = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let client = RegistryClient::new(http, closed.clone());
        let err = client.catalog().await.unwrap_err();
        let ImageError::NoRegistryAvailable(failures) = &err else {
            panic!("expected every address to be reported: {err}");
        };
        assert_eq!(failures.len(), 2);
        for addr in &closed {
            assert!(err.to_string().contains(addr), "{err}");
        }
    }
}
