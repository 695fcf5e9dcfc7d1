//! This member's blobs: a content store under `DATA_DIR/registry/` (sha256 verified on write
//! and on read), and the files in which uploads grow until they are complete.
//!
//! An upload is a file `uploads/<id>`; its size is the offset the next chunk must start at.
//! Finishing an upload renames the file into the content store if, and only if, it hashes
//! to the digest the client named: a mismatching upload leaves nothing behind.
//!
//! Blobs are never removed yet: garbage collection of blobs no manifest references is to
//! come (it must agree with pushes in flight on other members).

use super::errors::{ErrorCode, RegistryError};
use berth_image::store::parse_digest;
use berth_image::{ContentStore, ImageError};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Uploads untouched for this long are abandoned: removed when the member starts.
const STALE_UPLOAD: Duration = Duration::from_secs(3600);

/// Bytes per chunk when a blob is streamed (to an HTTP client or a peer).
const CHUNK: usize = 256 * 1024;

pub struct LocalBlobs {
    content: ContentStore,
    uploads: PathBuf,
    /// One request at a time writes to an upload.
    busy: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn internal(error: impl std::fmt::Display) -> RegistryError {
    RegistryError::internal(error)
}

impl LocalBlobs {
    /// Opens (creating) the blob store in `dir`, removing abandoned uploads.
    pub fn open(dir: &Path) -> Result<LocalBlobs, ImageError> {
        let content = ContentStore::open(dir)?;
        let uploads = dir.join("uploads");
        std::fs::create_dir_all(&uploads).map_err(|source| ImageError::Io {
            context: format!("create {}", uploads.display()),
            source,
        })?;
        remove_stale(&uploads);
        Ok(LocalBlobs {
            content,
            uploads,
            busy: Mutex::default(),
        })
    }

    /// The size of a blob this member holds, or `None`.
    pub async fn size(&self, digest: &str) -> Option<u64> {
        let path = self.content.blob_path(&parse_digest(digest).ok()?).ok()?;
        let metadata = tokio::fs::metadata(path).await.ok()?;
        metadata.is_file().then_some(metadata.len())
    }

    /// The blob's content, in chunks, verified as it is read: if the bytes on disk no longer
    /// hash to the digest, the stream ends in an error instead of its last chunk.
    pub async fn read(
        &self,
        digest: &str,
    ) -> Result<
        (
            u64,
            impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
        ),
        RegistryError,
    > {
        let parsed = parse_digest(digest)
            .map_err(|e| RegistryError::digest_invalid(e.to_string(), digest))?;
        let content = self.content.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let size = content.size(&parsed)?;
            Ok::<_, ImageError>((size, content.open_blob(&parsed)?))
        })
        .await
        .map_err(internal)?;
        let (size, mut reader) = match opened {
            Ok(opened) => opened,
            Err(ImageError::BlobNotFound(_)) => {
                return Err(RegistryError::new(
                    ErrorCode::BlobUnknown,
                    format!("blob {digest} is not in the registry"),
                )
                .with_detail(serde_json::json!({ "digest": digest })))
            }
            Err(e) => return Err(internal(e)),
        };
        let (chunks, received) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || loop {
            let mut buffer = vec![0; CHUNK];
            let chunk = match reader.read(&mut buffer) {
                Ok(0) => return,
                Ok(n) => {
                    buffer.truncate(n);
                    Ok(Bytes::from(buffer))
                }
                Err(e) => Err(e),
            };
            let failed = chunk.is_err();
            if chunks.blocking_send(chunk).is_err() || failed {
                return;
            }
        });
        Ok((size, tokio_stream::wrappers::ReceiverStream::new(received)))
    }

    /// A new, empty upload; its id.
    pub async fn start_upload(&self) -> Result<String, RegistryError> {
        let id = uuid::Uuid::new_v4().to_string();
        tokio::fs::File::create(self.uploads.join(&id))
            .await
            .map_err(internal)?;
        Ok(id)
    }

    /// The file of upload `id`, if the id is one this member could have made.
    fn upload_path(&self, id: &str) -> Result<PathBuf, RegistryError> {
        uuid::Uuid::parse_str(id)
            .map(|uuid| self.uploads.join(uuid.to_string()))
            .map_err(|_| upload_unknown(id))
    }

    /// How many bytes upload `id` holds so far.
    pub async fn upload_size(&self, id: &str) -> Result<u64, RegistryError> {
        let path = self.upload_path(id)?;
        match tokio::fs::metadata(&path).await {
            Ok(metadata) => Ok(metadata.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(upload_unknown(id)),
            Err(e) => Err(internal(e)),
        }
    }

    /// Holds upload `id` for one request.
    pub async fn lock_upload(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .busy
            .lock()
            .expect("upload locks")
            .entry(id.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    fn forget_lock(&self, id: &str) {
        self.busy.lock().expect("upload locks").remove(id);
    }

    /// Appends `body` to upload `id` (the caller holds its lock). `range` is the chunk's
    /// Content-Range: it must start where the upload ends (416 otherwise), and the body must
    /// be as long as it says. A chunk that fails half-way is cut off again: the upload is
    /// as it was before the request. Returns the upload's new size.
    pub async fn append(
        &self,
        id: &str,
        body: impl Stream<Item = Result<Bytes, impl std::fmt::Display>>,
        range: Option<(u64, u64)>,
    ) -> Result<u64, RegistryError> {
        let path = self.upload_path(id)?;
        let before = self.upload_size(id).await?;
        if let Some((start, _)) = range.filter(|(start, _)| *start != before) {
            return Err(RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!("the chunk starts at byte {start}, but the upload holds {before} bytes"),
            )
            .with_status(axum::http::StatusCode::RANGE_NOT_SATISFIABLE));
        }
        let mut file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .await
            .map_err(internal)?;
        let written = write_all(&mut file, body).await;
        let after = match (written, range) {
            (Ok(n), Some((start, end))) if n != end - start + 1 => Err(RegistryError::new(
                ErrorCode::SizeInvalid,
                format!(
                    "the Content-Range {start}-{end} announced {} bytes, the body held {n}",
                    end - start + 1
                ),
            )
            .with_status(axum::http::StatusCode::RANGE_NOT_SATISFIABLE)),
            (Ok(n), _) => Ok(before + n),
            (Err(e), _) => Err(e),
        };
        if after.is_err() {
            let _ = file.set_len(before).await;
        }
        after
    }

    /// Finishes upload `id` (the caller holds its lock) as blob `digest`: stored if its
    /// content hashes to the digest, discarded either way.
    pub async fn finish_upload(&self, id: &str, digest: &str) -> Result<u64, RegistryError> {
        let path = self.upload_path(id)?;
        let stored = self.adopt(path, digest).await;
        self.forget_lock(id);
        stored
    }

    /// Removes upload `id`.
    pub async fn cancel_upload(&self, id: &str) -> Result<(), RegistryError> {
        let path = self.upload_path(id)?;
        let removed = match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(upload_unknown(id)),
            Err(e) => Err(internal(e)),
        };
        self.forget_lock(id);
        removed
    }

    /// Stores a whole blob from a stream (a monolithic push, a copy from a peer): written
    /// to an upload file first, stored only if it hashes to `digest` (and is `size` bytes,
    /// when given).
    pub async fn receive(
        &self,
        digest: &str,
        size: Option<u64>,
        body: impl Stream<Item = Result<Bytes, impl std::fmt::Display>>,
    ) -> Result<u64, RegistryError> {
        parse_digest(digest).map_err(|e| RegistryError::digest_invalid(e.to_string(), digest))?;
        let id = self.start_upload().await?;
        let path = self.upload_path(&id)?;
        let written = async {
            let mut file = tokio::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .await
                .map_err(internal)?;
            write_all(&mut file, body).await
        }
        .await;
        let checked = written.and_then(|n| match size {
            Some(size) if n != size => Err(RegistryError::new(
                ErrorCode::SizeInvalid,
                format!("blob {digest} was announced as {size} bytes, {n} arrived"),
            )),
            _ => Ok(()),
        });
        if let Err(error) = checked {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(error);
        }
        self.adopt(path, digest).await
    }

    async fn adopt(&self, path: PathBuf, digest: &str) -> Result<u64, RegistryError> {
        let parsed = match parse_digest(digest) {
            Ok(parsed) => parsed,
            Err(e) => {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(RegistryError::digest_invalid(e.to_string(), digest));
            }
        };
        let content = self.content.clone();
        let adopted = tokio::task::spawn_blocking(move || content.adopt(&path, &parsed))
            .await
            .map_err(internal)?;
        match adopted {
            Ok(size) => Ok(size),
            Err(ImageError::DigestMismatch { actual, .. }) => Err(RegistryError::digest_invalid(
                format!("the uploaded content has digest {actual}, not {digest}"),
                digest,
            )),
            Err(ImageError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Err(RegistryError::new(
                    ErrorCode::BlobUploadUnknown,
                    "the upload does not exist (finished, cancelled or abandoned)",
                ))
            }
            Err(e) => Err(internal(e)),
        }
    }
}

fn upload_unknown(id: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUploadUnknown,
        format!("upload {id} is not in progress on this member (finished, cancelled or abandoned); start a new one"),
    )
}

/// Writes every chunk of `body` to `file`; the number of bytes written.
async fn write_all(
    file: &mut tokio::fs::File,
    body: impl Stream<Item = Result<Bytes, impl std::fmt::Display>>,
) -> Result<u64, RegistryError> {
    let mut body = std::pin::pin!(body);
    let mut written = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!("the request body broke off: {e}"),
            )
        })?;
        file.write_all(&chunk).await.map_err(internal)?;
        written += chunk.len() as u64;
    }
    file.flush().await.map_err(internal)?;
    Ok(written)
}

/// Removes uploads nobody has written to for [`STALE_UPLOAD`].
fn remove_stale(uploads: &Path) {
    let Ok(entries) = std::fs::read_dir(uploads) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age > STALE_UPLOAD);
        if stale {
            tracing::info!(upload = ?entry.file_name(), "removing an abandoned registry upload");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
