//! berth's image store: OCI (and Docker v2) images on local disk, ready for overlayfs.
//!
//! ```text
//!  archive.rs ──import──▶ store.rs (blobs by digest) ◀──read── images.rs (names → manifests)
//!  write.rs ───layers,──▶     ▲          │                                  │
//!              images         │          └──────── unpack.rs ◀──layer_dirs──┘
//!  registry.rs ◀─pull/push─▶──┘  (the cluster registry, over HTTP)
//! ```
//!
//! Module map:
//! - [`store`]: content store — blobs by sha256 digest, verified on write and on read.
//! - [`reference`]: docker-style references `NAME[:TAG][@sha256:...]`, normalised.
//! - [`images`]: [`ImageStore`] — image records (`images.json`), resolution of a reference
//!   to manifest + config + layers, `layer_dirs` for overlayfs, and GC.
//! - [`unpack`]: layer unpacking into one directory per layer, with overlay whiteouts and
//!   a containment rule (no entry escapes the layer dir).
//! - [`archive`]: import of OCI image-layout tars and `docker save` tars.
//! - [`write`]: layers from directories (deterministic gzip tars) and images from layers.
//! - [`registry`]: [`RegistryClient`] — pull from and push to the cluster registry, and its
//!   catalog, tags, manifests, deletes; [`Reference::cluster_repository`] names the
//!   repository there.
//! - [`dockerfile`], [`dockerignore`], [`buildcache`]: the pure parts of `berth image
//!   build` — the Dockerfile parser and substitution, `.dockerignore` matching, and the
//!   step cache (keys and `build-cache.json`); the CLI runs the steps.
//! - [`error`]: [`ImageError`], the one error type.
//!
//! On-disk layout under the store root:
//! `blobs/sha256/<hex>`, `tmp/` (in-progress blob writes), `layers/sha256/<hex>/`,
//! `layers/tmp/` (in-progress unpacks), `images.json`, `images.lock`, `gc.lock`.

pub mod archive;
pub mod buildcache;
pub mod dockerfile;
pub mod dockerignore;
pub mod error;
pub mod images;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;
pub mod write;

pub use error::{ImageError, Result};
pub use images::{GcReport, ImageStore, ResolvedImage};
pub use reference::Reference;
pub use registry::{Progress, RegistryClient, RemoteManifest};
pub use store::{BlobReader, ContentStore, MAX_DOCUMENT_SIZE};
pub use unpack::LayerStore;
pub use write::{
    layer_from_dir, layer_from_overlay_upper, write_image, write_image_with_history,
    LayerDescriptor,
};
