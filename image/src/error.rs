//! The one error type of the image store: every variant names the blob, layer entry or
//! reference it is about, so a user can act on it without reading code.

use std::io;
use std::path::PathBuf;

/// What went wrong in the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A filesystem operation failed; `context` says which and on what.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The content of a blob does not hash to the digest it is stored or announced under.
    #[error("blob {expected} has content {actual}")]
    DigestMismatch { expected: String, actual: String },
    /// A blob's length differs from the size its descriptor announced.
    #[error("blob {digest} is {actual} bytes, expected {expected}")]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    /// A blob is bigger than the caller allows (manifests and configs are capped).
    #[error("blob {digest} is {size} bytes, over the {limit}-byte limit")]
    BlobTooLarge {
        digest: String,
        size: u64,
        limit: u64,
    },
    /// A blob is not in the content store.
    #[error("blob {0} is not in the content store")]
    BlobNotFound(String),
    /// A digest is malformed or not sha256.
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest { digest: String, reason: String },
    /// An image reference could not be parsed.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    /// No image is recorded under this reference.
    #[error("image {0} not found")]
    ImageNotFound(String),
    /// A manifest, index or config is not the JSON document it should be.
    #[error("{what} {digest} is invalid: {reason}")]
    InvalidDocument {
        what: &'static str,
        digest: String,
        reason: String,
    },
    /// A media type this store does not handle (e.g. zstd layers).
    #[error("{what} {digest} has unsupported media type {media_type}")]
    UnsupportedMediaType {
        what: &'static str,
        digest: String,
        media_type: String,
    },
    /// An image index has no manifest for the host platform.
    #[error("image index {digest} has no manifest for {platform}")]
    NoMatchingPlatform { digest: String, platform: String },
    /// A layer entry would be written outside the layer directory.
    #[error("layer {layer}: entry {entry} escapes the layer ({reason})")]
    LayerEscape {
        layer: String,
        entry: String,
        reason: &'static str,
    },
    /// A layer tar is malformed or holds something this store cannot unpack.
    #[error("layer {layer}: {reason}")]
    InvalidLayer { layer: String, reason: String },
    /// An image archive (`docker save` or OCI layout tar) is malformed or truncated.
    #[error("archive {path}: {reason}")]
    InvalidArchive { path: PathBuf, reason: String },
    /// The registry answered with an error: its `{"errors":[{code, message}]}` body, or the
    /// HTTP status when the body has none. `subject` is what was asked for.
    #[error("registry at {addr}: {}", registry_detail(code, message, subject))]
    Registry {
        addr: String,
        status: u16,
        code: String,
        message: String,
        subject: String,
    },
    /// The registry could not be reached, or did not answer in time.
    #[error("cannot reach the registry at {addr}: {reason}")]
    RegistryUnreachable { addr: String, reason: String },
    /// The registry's answer breaks the protocol (a digest that does not match the content,
    /// a missing header, a document over the size limit).
    #[error("registry at {addr}: {reason}")]
    RegistryProtocol { addr: String, reason: String },
    /// Every registry address was tried and each failed with an error another address might
    /// not have had (unreachable, or a server error).
    #[error("no registry address answered: {}", join_errors(.0))]
    NoRegistryAvailable(Vec<ImageError>),
}

impl ImageError {
    /// Whether another registry address may succeed where this one failed: the address was
    /// unreachable or answered with a server error. An answer about the request itself (not
    /// found, invalid) would be the same everywhere.
    pub fn is_retriable(&self) -> bool {
        match self {
            ImageError::RegistryUnreachable { .. } => true,
            ImageError::Registry { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

fn registry_detail(code: &str, message: &str, subject: &str) -> String {
    [code, message, subject]
        .iter()
        .filter(|part| !part.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(": ")
}

fn join_errors(errors: &[ImageError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Result alias of this crate.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// Attach a human context to an io::Error.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| {
            // A verifying reader reports a digest mismatch through io::Error: unwrap it.
            let wraps_ours = source
                .get_ref()
                .is_some_and(|e| e.downcast_ref::<ImageError>().is_some());
            if wraps_ours {
                if let Some(Ok(inner)) = source.into_inner().map(|e| e.downcast::<ImageError>()) {
                    return *inner;
                }
                unreachable!("the inner error was checked to be an ImageError");
            }
            ImageError::Io {
                context: context(),
                source,
            }
        })
    }
}
