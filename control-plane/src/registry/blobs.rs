//! This member's blobs: a content store under `DATA_DIR/registry/` (sha256 verified on write
//! and on read), and the files in which uploads grow until they are complete.
//!
//! An upload is a file `uploads/<id>` plus an entry in memory: the bytes acknowledged so far
//! and their running sha256, so finishing an upload renames the file into the content store
//! without reading it again, if, and only if, it hashes to the digest the client named.
//!
//! Upload files do not outlive their use: a blob received in one request (a monolithic push,
//! a copy from a peer) is removed with the request unless it was stored, however the request
//! ends; a chunked upload nobody touched for [`STALE_UPLOAD`] is swept every
//! [`SWEEP_INTERVAL`]; a starting member removes them all (their hashes were in the memory
//! of the process that stopped). No blob grows past [`MAX_BLOB_SIZE`].
//!
//! Reads are short operations on the runtime (`tokio::fs`), hashed as they go: a blob whose
//! bytes no longer match its digest ends in an error instead of its last chunk.
//!
//! Blobs are never removed yet: garbage collection of blobs no manifest references is to
//! come (it must agree with pushes in flight on other members).

use super::errors::{ErrorCode, RegistryError};
use axum::http::StatusCode;
use berth_image::store::parse_digest;
use berth_image::{ContentStore, ImageError};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

/// The largest blob the registry takes (a layer of a big image is a few GiB).
pub const MAX_BLOB_SIZE: u64 = 10 << 30;

/// Uploads untouched for this long are abandoned: the sweep removes them.
pub const STALE_UPLOAD: Duration = Duration::from_secs(3600);

/// How often abandoned uploads are looked for.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// Bytes per chunk when a blob is read (for an HTTP client or a peer): small enough that
/// hashing one is a short step on the runtime.
pub(crate) const CHUNK: usize = 64 * 1024;

pub struct LocalBlobs {
    content: ContentStore,
    uploads: PathBuf,
    /// Uploads in progress: chunked ones between their requests, and blobs being received.
    live: Mutex<HashMap<Uuid, Arc<Upload>>>,
    max_blob_size: u64,
}

/// An upload in progress.
struct Upload {
    /// Held by the request that writes to it (one at a time), and by the sweep.
    state: Arc<tokio::sync::Mutex<Written>>,
    /// `state.size`, readable while a request holds the lock (an upload's status).
    size: AtomicU64,
}

/// What an upload holds: the bytes acknowledged so far and their sha256.
struct Written {
    size: u64,
    hasher: Sha256,
}

/// Upload `id`, held for one request ([`LocalBlobs::lock_upload`]).
pub struct HeldUpload {
    id: Uuid,
    path: PathBuf,
    upload: Arc<Upload>,
    written: OwnedMutexGuard<Written>,
}

fn internal(error: impl std::fmt::Display) -> RegistryError {
    RegistryError::internal(error)
}

fn blob_unknown(digest: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUnknown,
        format!("blob {digest} is not in the registry"),
    )
    .with_detail(serde_json::json!({ "digest": digest }))
}

fn too_large(limit: u64) -> RegistryError {
    RegistryError::new(
        ErrorCode::SizeInvalid,
        format!("the blob is over the registry's limit of {limit} bytes"),
    )
    .with_status(StatusCode::PAYLOAD_TOO_LARGE)
}

fn checked_digest(digest: &str) -> Result<Digest, RegistryError> {
    parse_digest(digest).map_err(|e| RegistryError::digest_invalid(e.to_string(), digest))
}

/// The digest of what `hasher` saw.
pub(crate) fn digest_of_hasher(hasher: Sha256) -> Digest {
    parse_digest(&format!("sha256:{:x}", hasher.finalize())).expect("sha256 output is a digest")
}

impl LocalBlobs {
    /// Opens (creating) the blob store in `dir`, removing every upload a previous run left.
    pub fn open(dir: &Path) -> Result<LocalBlobs, ImageError> {
        let content = ContentStore::open(dir)?;
        let uploads = dir.join("uploads");
        std::fs::create_dir_all(&uploads).map_err(|source| ImageError::Io {
            context: format!("create {}", uploads.display()),
            source,
        })?;
        remove_all(&uploads);
        Ok(LocalBlobs {
            content,
            uploads,
            live: Mutex::default(),
            max_blob_size: MAX_BLOB_SIZE,
        })
    }

    /// Refuse blobs over `bytes` (default [`MAX_BLOB_SIZE`]).
    pub fn with_max_blob_size(mut self, bytes: u64) -> Self {
        self.max_blob_size = bytes;
        self
    }

    pub fn max_blob_size(&self) -> u64 {
        self.max_blob_size
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
    ) -> Result<(u64, impl Stream<Item = io::Result<Bytes>> + Send + 'static), RegistryError> {
        let parsed = checked_digest(digest)?;
        let path = self.content.blob_path(&parsed).map_err(internal)?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(blob_unknown(digest)),
            Err(e) => return Err(internal(e)),
        };
        let size = file.metadata().await.map_err(internal)?.len();
        let content = tokio_util::io::ReaderStream::with_capacity(file, CHUNK);
        Ok((size, verified(content, parsed, size)))
    }

    /// A new, empty upload; its id.
    pub async fn start_upload(&self) -> Result<String, RegistryError> {
        let (id, _) = self.create_upload().await?;
        Ok(id.to_string())
    }

    async fn create_upload(&self) -> Result<(Uuid, Arc<Upload>), RegistryError> {
        let id = Uuid::new_v4();
        tokio::fs::File::create(self.uploads.join(id.to_string()))
            .await
            .map_err(internal)?;
        let upload = Arc::new(Upload {
            state: Arc::new(tokio::sync::Mutex::new(Written {
                size: 0,
                hasher: Sha256::new(),
            })),
            size: AtomicU64::new(0),
        });
        self.live
            .lock()
            .expect("uploads")
            .insert(id, upload.clone());
        Ok((id, upload))
    }

    fn upload(&self, id: &str) -> Result<(Uuid, Arc<Upload>), RegistryError> {
        let uuid = Uuid::parse_str(id).map_err(|_| upload_unknown(id))?;
        let upload = self.live.lock().expect("uploads").get(&uuid).cloned();
        upload.map(|u| (uuid, u)).ok_or_else(|| upload_unknown(id))
    }

    /// How many bytes upload `id` holds so far.
    pub async fn upload_size(&self, id: &str) -> Result<u64, RegistryError> {
        Ok(self.upload(id)?.1.size.load(Ordering::Acquire))
    }

    /// Holds upload `id` for one request; an id that names no upload in progress is refused
    /// (and leaves nothing behind).
    pub async fn lock_upload(&self, id: &str) -> Result<HeldUpload, RegistryError> {
        let (uuid, upload) = self.upload(id)?;
        let written = upload.state.clone().lock_owned().await;
        // Finished, cancelled or swept while this request waited for it?
        let current = self
            .live
            .lock()
            .expect("uploads")
            .get(&uuid)
            .is_some_and(|u| Arc::ptr_eq(u, &upload));
        if !current {
            return Err(upload_unknown(id));
        }
        Ok(HeldUpload {
            id: uuid,
            path: self.uploads.join(uuid.to_string()),
            upload,
            written,
        })
    }

    fn forget(&self, id: &Uuid) {
        self.live.lock().expect("uploads").remove(id);
    }

    /// Appends `body` to the held upload. `range` is the chunk's Content-Range: it must
    /// start where the upload ends (416 otherwise), and the body must be as long as it says.
    /// A chunk that fails half-way, or whose request is dropped half-way, is cut off again:
    /// the upload is as it was before the request. Returns the upload's new size.
    pub async fn append(
        &self,
        held: &mut HeldUpload,
        body: impl Stream<Item = Result<Bytes, impl std::fmt::Display>>,
        range: Option<(u64, u64)>,
    ) -> Result<u64, RegistryError> {
        let before = held.written.size;
        if let Some((start, _)) = range.filter(|(start, _)| *start != before) {
            return Err(RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!("the chunk starts at byte {start}, but the upload holds {before} bytes"),
            )
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE));
        }
        if range.is_some_and(|(_, end)| end >= self.max_blob_size) {
            return Err(too_large(self.max_blob_size));
        }
        let mut file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(&held.path)
            .await
            .map_err(internal)?;
        // Bytes past the acknowledged size are of a chunk whose request was dropped.
        if file.metadata().await.map_err(internal)?.len() != before {
            file.set_len(before).await.map_err(internal)?;
        }
        // Only a chunk that arrives whole joins the running hash.
        let mut hasher = held.written.hasher.clone();
        let written = write_all(&mut file, body, &mut hasher, before, self.max_blob_size).await;
        let after = match (written, range) {
            (Ok(n), Some((start, end))) if n != end - start + 1 => Err(RegistryError::new(
                ErrorCode::SizeInvalid,
                format!(
                    "the Content-Range {start}-{end} announced {} bytes, the body held {n}",
                    end - start + 1
                ),
            )
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE)),
            (Ok(n), _) => Ok(before + n),
            (Err(e), _) => Err(e),
        };
        match after {
            Ok(size) => {
                held.written.size = size;
                held.written.hasher = hasher;
                held.upload.size.store(size, Ordering::Release);
            }
            Err(_) => {
                let _ = file.set_len(before).await;
            }
        }
        after
    }

    /// Finishes the held upload as blob `digest`: stored if its content hashes to the
    /// digest, discarded either way.
    pub async fn finish_upload(
        &self,
        held: HeldUpload,
        digest: &str,
    ) -> Result<u64, RegistryError> {
        let parsed = match checked_digest(digest) {
            Ok(parsed) => parsed,
            Err(error) => {
                let _ = self.cancel_upload(held).await;
                return Err(error);
            }
        };
        let hashed = (
            digest_of_hasher(held.written.hasher.clone()),
            held.written.size,
        );
        // Gone for every other request from here on, even if this one is dropped half-way
        // (a file left behind without its entry is swept).
        self.forget(&held.id);
        let stored = self.adopt(&held.path, digest, parsed, hashed).await;
        if stored.is_err() {
            let _ = tokio::fs::remove_file(&held.path).await;
        }
        stored
    }

    /// Removes the held upload.
    pub async fn cancel_upload(&self, held: HeldUpload) -> Result<(), RegistryError> {
        self.forget(&held.id);
        match tokio::fs::remove_file(&held.path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(upload_unknown(&held.id.to_string()))
            }
            Err(e) => Err(internal(e)),
        }
    }

    /// Starts receiving a whole blob into an upload file that is removed when the returned
    /// [`Receiving`] is dropped, unless it was stored.
    pub async fn receive_into(&self) -> Result<Receiving<'_>, RegistryError> {
        let (id, upload) = self.create_upload().await?;
        let held = upload.state.clone().lock_owned().await;
        // From here on, dropping `receiving` removes the file and the entry.
        let mut receiving = Receiving {
            blobs: self,
            id,
            path: self.uploads.join(id.to_string()),
            file: None,
            hasher: Sha256::new(),
            written: 0,
            _held: held,
        };
        let file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(&receiving.path)
            .await
            .map_err(internal)?;
        receiving.file = Some(file);
        Ok(receiving)
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
        checked_digest(digest)?;
        if size.is_some_and(|size| size > self.max_blob_size) {
            return Err(too_large(self.max_blob_size));
        }
        let mut receiving = self.receive_into().await?;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            receiving.write(&chunk.map_err(broke_off)?).await?;
        }
        if let Some(size) = size.filter(|size| *size != receiving.written()) {
            return Err(RegistryError::new(
                ErrorCode::SizeInvalid,
                format!(
                    "blob {digest} was announced as {size} bytes, {} arrived",
                    receiving.written()
                ),
            ));
        }
        receiving.finish(digest).await
    }

    /// Moves an upload file into the content store as `digest`; `hashed` is its digest and
    /// length as hashed while it was written (a file of another length is hashed again).
    async fn adopt(
        &self,
        path: &Path,
        digest: &str,
        parsed: Digest,
        (actual, len): (Digest, u64),
    ) -> Result<u64, RegistryError> {
        let (content, path) = (self.content.clone(), path.to_path_buf());
        let adopted =
            tokio::task::spawn_blocking(move || content.adopt_hashed(&path, &parsed, &actual, len))
                .await
                .map_err(internal)?;
        match adopted {
            Ok(size) => Ok(size),
            Err(ImageError::DigestMismatch { actual, .. }) => Err(RegistryError::digest_invalid(
                format!("the uploaded content has digest {actual}, not {digest}"),
                digest,
            )),
            Err(ImageError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Err(RegistryError::new(
                    ErrorCode::BlobUploadUnknown,
                    "the upload does not exist (finished, cancelled or abandoned)",
                ))
            }
            Err(e) => Err(internal(e)),
        }
    }

    /// Removes the uploads nobody wrote to for `idle` and no request holds; how many.
    pub async fn sweep(&self, idle: Duration) -> usize {
        let Ok(mut entries) = tokio::fs::read_dir(&self.uploads).await else {
            return 0;
        };
        let mut removed = 0;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let age = entry
                .metadata()
                .await
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| modified.elapsed().ok());
            if age.is_none_or(|age| age < idle) {
                continue;
            }
            let id = entry
                .file_name()
                .to_str()
                .and_then(|name| Uuid::parse_str(name).ok());
            let upload = id.and_then(|id| self.live.lock().expect("uploads").get(&id).cloned());
            // A request holds it: in use, however long ago it last wrote.
            let held = match &upload {
                Some(upload) => match upload.state.clone().try_lock_owned() {
                    Ok(held) => Some(held),
                    Err(_) => continue,
                },
                None => None,
            };
            tracing::info!(upload = ?entry.file_name(), "removing an abandoned registry upload");
            if tokio::fs::remove_file(entry.path()).await.is_ok() {
                removed += 1;
            }
            if let Some(id) = id.filter(|_| upload.is_some()) {
                self.forget(&id);
            }
            drop(held);
        }
        removed
    }

    /// Sweeps abandoned uploads every [`SWEEP_INTERVAL`] while the blob store is in use.
    pub fn spawn_sweeper(blobs: &Arc<LocalBlobs>) {
        let blobs: Weak<LocalBlobs> = Arc::downgrade(blobs);
        tokio::spawn(async move {
            let start = tokio::time::Instant::now() + SWEEP_INTERVAL;
            let mut ticks = tokio::time::interval_at(start, SWEEP_INTERVAL);
            loop {
                ticks.tick().await;
                let Some(blobs) = blobs.upgrade() else {
                    return;
                };
                blobs.sweep(STALE_UPLOAD).await;
            }
        });
    }

    /// How many uploads are in progress (files and entries agree on it).
    #[cfg(test)]
    fn uploads_in_progress(&self) -> (usize, usize) {
        let files = std::fs::read_dir(&self.uploads).unwrap().count();
        (files, self.live.lock().unwrap().len())
    }
}

/// A blob being received into an upload file (see [`LocalBlobs::receive_into`]): hashed as
/// it is written, stored by [`Receiving::finish`], removed if dropped before that (a request
/// whose client hung up, a peer stream that broke off).
pub struct Receiving<'a> {
    blobs: &'a LocalBlobs,
    id: Uuid,
    path: PathBuf,
    file: Option<tokio::fs::File>,
    hasher: Sha256,
    written: u64,
    /// The sweep leaves a held upload alone.
    _held: OwnedMutexGuard<Written>,
}

impl Receiving<'_> {
    /// Appends `data`, refusing to grow past the registry's blob size limit.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), RegistryError> {
        if self.written + data.len() as u64 > self.blobs.max_blob_size {
            return Err(too_large(self.blobs.max_blob_size));
        }
        let file = self.file.as_mut().expect("open until finished");
        file.write_all(data).await.map_err(internal)?;
        self.hasher.update(data);
        self.written += data.len() as u64;
        Ok(())
    }

    /// Waits until what was written is in the file (readable through other handles).
    pub async fn flush(&mut self) -> Result<(), RegistryError> {
        let file = self.file.as_mut().expect("open until finished");
        file.flush().await.map_err(internal)
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Another handle on the file being written, to read what has arrived so far.
    pub async fn reader(&self) -> Result<std::fs::File, RegistryError> {
        let file = tokio::fs::File::open(&self.path).await.map_err(internal)?;
        Ok(file.into_std().await)
    }

    /// Stores the blob as `digest` if what was written hashes to it.
    pub async fn finish(mut self, digest: &str) -> Result<u64, RegistryError> {
        let parsed = checked_digest(digest)?;
        let mut file = self.file.take().expect("open until finished");
        file.flush().await.map_err(internal)?;
        drop(file);
        let hashed = (digest_of_hasher(self.hasher.clone()), self.written);
        self.blobs.adopt(&self.path, digest, parsed, hashed).await
    }
}

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        // Gone already if it was stored (renamed) or refused.
        match std::fs::remove_file(&self.path) {
            Ok(()) => tracing::debug!(upload = %self.id, "registry upload cut off: removed"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(upload = %self.id, "removing a registry upload: {e}"),
        }
        self.blobs.forget(&self.id);
    }
}

fn upload_unknown(id: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUploadUnknown,
        format!("upload {id} is not in progress on this member (finished, cancelled or abandoned); start a new one"),
    )
}

fn broke_off(error: impl std::fmt::Display) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUploadInvalid,
        format!("the request body broke off: {error}"),
    )
}

/// Writes every chunk of `body` to `file` (which holds `already` bytes), hashing them into
/// `hasher`; the number of bytes written. Stops as soon as the file would grow past `limit`.
async fn write_all(
    file: &mut tokio::fs::File,
    body: impl Stream<Item = Result<Bytes, impl std::fmt::Display>>,
    hasher: &mut Sha256,
    already: u64,
    limit: u64,
) -> Result<u64, RegistryError> {
    let mut body = std::pin::pin!(body);
    let mut written = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(broke_off)?;
        if already + written + chunk.len() as u64 > limit {
            return Err(too_large(limit));
        }
        file.write_all(&chunk).await.map_err(internal)?;
        hasher.update(&chunk);
        written += chunk.len() as u64;
    }
    file.flush().await.map_err(internal)?;
    Ok(written)
}

/// `content` (a blob of `size` bytes) checked against `expected` as it passes: the chunk
/// that completes the blob is let through only if the whole hashes to the digest; a blob
/// that is shorter or longer than `size` ends in an error.
fn verified(
    content: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
    expected: Digest,
    size: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    struct Reading<S> {
        content: std::pin::Pin<Box<S>>,
        hasher: Sha256,
        seen: u64,
    }
    let check = move |hasher: Sha256, expected: &Digest| {
        let actual = digest_of_hasher(hasher);
        if actual == *expected {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                ImageError::DigestMismatch {
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                },
            ))
        }
    };
    let start = Reading {
        content: Box::pin(content),
        hasher: Sha256::new(),
        seen: 0,
    };
    futures::stream::unfold(Some(start), move |reading| {
        let expected = expected.clone();
        async move {
            let mut reading = reading?;
            match reading.content.next().await {
                Some(Ok(chunk)) => {
                    reading.seen += chunk.len() as u64;
                    if reading.seen > size {
                        let error = io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("blob {expected} is longer than its {size} bytes"),
                        );
                        return Some((Err(error), None));
                    }
                    reading.hasher.update(&chunk);
                    if reading.seen == size {
                        let checked = check(reading.hasher, &expected).map(|()| chunk);
                        return Some((checked, None));
                    }
                    Some((Ok(chunk), Some(reading)))
                }
                Some(Err(e)) => Some((Err(e), None)),
                None if size == 0 => check(reading.hasher, &expected)
                    .err()
                    .map(|e| (Err(e), None)),
                None => {
                    let error = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "blob {expected} ended after {} of its {size} bytes",
                            reading.seen
                        ),
                    );
                    Some((Err(error), None))
                }
            }
        }
    })
}

/// Removes every file in `uploads` (at startup: no upload can be resumed).
fn remove_all(uploads: &Path) {
    let Ok(entries) = std::fs::read_dir(uploads) else {
        return;
    };
    for entry in entries.flatten() {
        tracing::info!(upload = ?entry.file_name(), "removing a registry upload of a previous run");
        let _ = std::fs::remove_file(entry.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_image::store::digest_of;

    fn chunks(parts: &[&[u8]]) -> impl Stream<Item = Result<Bytes, io::Error>> {
        let parts: Vec<Result<Bytes, io::Error>> = parts
            .iter()
            .map(|p| Ok(Bytes::copy_from_slice(p)))
            .collect();
        futures::stream::iter(parts)
    }

    async fn collect(
        stream: impl Stream<Item = io::Result<Bytes>>,
    ) -> (Vec<u8>, Option<io::Error>) {
        let mut stream = std::pin::pin!(stream);
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(e) => return (data, Some(e)),
            }
        }
        (data, None)
    }

    #[tokio::test]
    async fn reads_are_verified_before_their_last_chunk() {
        let good = digest_of(b"hello world");
        let (data, error) =
            collect(verified(chunks(&[b"hello ", b"world"]), good.clone(), 11)).await;
        assert_eq!(
            (data.as_slice(), error.is_none()),
            (&b"hello world"[..], true)
        );

        // Corrupt: the chunk that completes the blob is withheld.
        let (data, error) =
            collect(verified(chunks(&[b"hello ", b"WORLD"]), good.clone(), 11)).await;
        assert_eq!(data, b"hello ");
        assert_eq!(error.unwrap().kind(), io::ErrorKind::InvalidData);
        // Short and long.
        let (_, error) = collect(verified(chunks(&[b"hello "]), good.clone(), 11)).await;
        assert_eq!(error.unwrap().kind(), io::ErrorKind::UnexpectedEof);
        let (_, error) = collect(verified(chunks(&[b"hello world!"]), good, 11)).await;
        assert_eq!(error.unwrap().kind(), io::ErrorKind::InvalidData);
        // Empty blobs are checked too.
        let (_, error) = collect(verified(chunks(&[]), digest_of(b""), 0)).await;
        assert!(error.is_none());
        let (_, error) = collect(verified(chunks(&[]), digest_of(b"x"), 0)).await;
        assert!(error.is_some());
    }

    #[tokio::test]
    async fn chunked_uploads_keep_their_hash_and_cut_off_broken_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = LocalBlobs::open(dir.path()).unwrap();
        let id = blobs.start_upload().await.unwrap();
        let mut held = blobs.lock_upload(&id).await.unwrap();
        assert_eq!(
            blobs
                .append(&mut held, chunks(&[b"hello "]), None)
                .await
                .unwrap(),
            6
        );
        // A chunk whose body breaks off leaves the upload as it was...
        let broken = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"wor")),
            Err(io::Error::other("reset")),
        ]);
        assert!(blobs.append(&mut held, broken, None).await.is_err());
        // ... and so does one whose request was dropped half-way (its bytes reached the
        // file, not the upload's hash).
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&held.path)
            .unwrap();
        std::io::Write::write_all(&mut file, b"garbage").unwrap();
        drop(held);
        assert_eq!(blobs.upload_size(&id).await.unwrap(), 6);
        let mut held = blobs.lock_upload(&id).await.unwrap();
        blobs
            .append(&mut held, chunks(&[b"world"]), Some((6, 10)))
            .await
            .unwrap();
        let digest = digest_of(b"hello world").to_string();
        assert_eq!(blobs.finish_upload(held, &digest).await.unwrap(), 11);
        let (_, content) = blobs.read(&digest).await.unwrap();
        assert_eq!(collect(content).await.0, b"hello world");
        assert_eq!(blobs.uploads_in_progress(), (0, 0));
        // The upload is gone: its id is refused, and no lock is left for it.
        assert!(blobs.lock_upload(&id).await.is_err());
        assert!(blobs.lock_upload("not-a-uuid").await.is_err());
        assert!(blobs
            .lock_upload(&Uuid::new_v4().to_string())
            .await
            .is_err());
        assert_eq!(blobs.uploads_in_progress(), (0, 0));
    }

    #[tokio::test]
    async fn received_blobs_leave_no_file_however_they_end() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = LocalBlobs::open(dir.path()).unwrap().with_max_blob_size(8);
        let digest = digest_of(b"blob").to_string();

        // Dropped half-way (the client hung up): the future goes, and so does its file.
        let stalled = chunks(&[b"bl"]).chain(futures::stream::pending());
        let receive = blobs.receive(&digest, None, stalled);
        assert!(tokio::time::timeout(Duration::from_millis(50), receive)
            .await
            .is_err());
        assert_eq!(blobs.uploads_in_progress(), (0, 0));

        // Too big, wrong size, wrong digest: refused, nothing kept.
        let error = blobs
            .receive(&digest, None, chunks(&[b"0123", b"45678"]))
            .await
            .unwrap_err();
        assert_eq!(
            (error.code, error.status),
            (ErrorCode::SizeInvalid, StatusCode::PAYLOAD_TOO_LARGE)
        );
        let error = blobs
            .receive(&digest, Some(9), chunks(&[b"blob"]))
            .await
            .unwrap_err();
        assert_eq!(error.status, StatusCode::PAYLOAD_TOO_LARGE);
        let error = blobs
            .receive(&digest, Some(5), chunks(&[b"blob"]))
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::SizeInvalid);
        let error = blobs
            .receive(&digest, None, chunks(&[b"blub"]))
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::DigestInvalid);
        assert_eq!(blobs.uploads_in_progress(), (0, 0));
        assert_eq!(blobs.size(&digest).await, None);

        assert_eq!(
            blobs
                .receive(&digest, Some(4), chunks(&[b"bl", b"ob"]))
                .await
                .unwrap(),
            4
        );
        assert_eq!(blobs.size(&digest).await, Some(4));
        assert_eq!(blobs.uploads_in_progress(), (0, 0));

        // Chunked uploads are held to the limit too.
        let id = blobs.start_upload().await.unwrap();
        let mut held = blobs.lock_upload(&id).await.unwrap();
        let error = blobs
            .append(&mut held, chunks(&[b"0123456789"]), None)
            .await
            .unwrap_err();
        assert_eq!(error.status, StatusCode::PAYLOAD_TOO_LARGE);
        let error = blobs
            .append(&mut held, chunks(&[]), Some((0, 8)))
            .await
            .unwrap_err();
        assert_eq!(error.status, StatusCode::PAYLOAD_TOO_LARGE);
        blobs.cancel_upload(held).await.unwrap();
        assert_eq!(blobs.uploads_in_progress(), (0, 0));
    }

    #[tokio::test]
    async fn abandoned_uploads_are_swept_and_a_restart_removes_all() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = LocalBlobs::open(dir.path()).unwrap();
        let idle = blobs.start_upload().await.unwrap();
        let busy = blobs.start_upload().await.unwrap();
        std::fs::write(dir.path().join("uploads/left-behind"), b"x").unwrap();
        let held = blobs.lock_upload(&busy).await.unwrap();

        // Nothing is old enough yet.
        assert_eq!(blobs.sweep(STALE_UPLOAD).await, 0);
        // Everything is, but a request holds `busy`.
        assert_eq!(blobs.sweep(Duration::ZERO).await, 2);
        assert_eq!(blobs.uploads_in_progress(), (1, 1));
        assert!(blobs.upload_size(&idle).await.is_err());
        drop(held);
        assert_eq!(blobs.upload_size(&busy).await.unwrap(), 0);

        drop(blobs);
        let blobs = LocalBlobs::open(dir.path()).unwrap();
        assert_eq!(blobs.uploads_in_progress(), (0, 0));
    }
}
