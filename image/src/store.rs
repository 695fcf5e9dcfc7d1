//! Content store: blobs addressed by their sha256 digest under `ROOT/blobs/sha256/<hex>`.
//!
//! Writes stream into `ROOT/tmp/` while hashing, are checked against the expected digest
//! (and size) and only then fsynced and renamed into place, so a final blob path always
//! holds verified content. Reads verify again: [`BlobReader`] fails at EOF if the bytes on
//! disk no longer hash to the digest, so a corrupted blob is never silently served.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use oci_spec::image::{Digest, DigestAlgorithm};
use sha2::{Digest as _, Sha256};

use crate::error::{ImageError, IoContext, Result};

/// Cap for blobs read whole into memory (manifests, indexes, configs).
pub const MAX_DOCUMENT_SIZE: u64 = 4 * 1024 * 1024;

/// Parse `sha256:<64 lowercase hex>`; other algorithms are refused.
pub fn parse_digest(s: &str) -> Result<Digest> {
    let digest = Digest::from_str(s).map_err(|e| ImageError::InvalidDigest {
        digest: s.to_owned(),
        reason: e.to_string(),
    })?;
    check_sha256(&digest)?;
    Ok(digest)
}

/// The hex part of a sha256 digest, checked so it is safe to use as a file name.
pub(crate) fn check_sha256(digest: &Digest) -> Result<&str> {
    let hex = digest.digest();
    let ok = *digest.algorithm() == DigestAlgorithm::Sha256
        && hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !ok {
        return Err(ImageError::InvalidDigest {
            digest: digest.to_string(),
            reason: "only sha256 digests of 64 lowercase hex digits are supported".into(),
        });
    }
    Ok(hex)
}

/// The sha256 digest of `data`.
pub fn digest_of(data: &[u8]) -> Digest {
    digest_from_hasher(Sha256::new_with_prefix(data))
}

fn digest_from_hasher(hasher: Sha256) -> Digest {
    let hex = format!("{:x}", hasher.finalize());
    Digest::from_str(&format!("sha256:{hex}")).expect("sha256 output is a valid digest")
}

/// A unique name for a temp file or dir (pid + counter + time) under this process.
pub(crate) fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

/// Blobs by digest, on disk.
#[derive(Debug, Clone)]
pub struct ContentStore {
    blobs: PathBuf,
    tmp: PathBuf,
}

impl ContentStore {
    /// Open (creating) a content store rooted at `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        let blobs = root.join("blobs").join("sha256");
        let tmp = root.join("tmp");
        for dir in [&blobs, &tmp] {
            fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
        }
        Ok(Self { blobs, tmp })
    }

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> Result<PathBuf> {
        Ok(self.blobs.join(check_sha256(digest)?))
    }

    /// Whether the blob is present.
    pub fn has(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// The size of a stored blob.
    pub fn size(&self, digest: &Digest) -> Result<u64> {
        let path = self.blob_path(digest)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(ImageError::BlobNotFound(digest.to_string()))
            }
            Err(e) => Err(e).ctx(|| format!("stat {}", path.display())),
        }
    }

    /// Stream `reader` into the store as blob `expected`. The content is hashed on the way;
    /// on a digest or size mismatch nothing is stored. Returns the blob size.
    pub fn write(&self, reader: impl Read, expected: &Digest, size: Option<u64>) -> Result<u64> {
        let final_path = self.blob_path(expected)?;
        let (tmp_path, actual, written) = self.write_temp(reader)?;
        let check = if actual != *expected {
            Err(ImageError::DigestMismatch {
                expected: expected.to_string(),
                actual: actual.to_string(),
            })
        } else {
            match size {
                Some(size) if size != written => Err(ImageError::SizeMismatch {
                    digest: expected.to_string(),
                    expected: size,
                    actual: written,
                }),
                _ => Ok(()),
            }
        };
        if let Err(e) = check {
            let _ = fs::remove_file(&tmp_path);
            return Err(e);
        }
        self.commit(&tmp_path, &final_path)?;
        Ok(written)
    }

    /// Store `data`, whose digest is computed here (for documents we generate).
    pub fn write_bytes(&self, data: &[u8]) -> Result<Digest> {
        let digest = digest_of(data);
        self.write(data, &digest, Some(data.len() as u64))?;
        Ok(digest)
    }

    /// Store a stream of unknown digest (e.g. a `docker save` `layer.tar`); returns its
    /// digest and size. `expected_size`, when given, catches truncated input.
    pub fn ingest(&self, reader: impl Read, expected_size: Option<u64>) -> Result<(Digest, u64)> {
        let (tmp_path, digest, written) = self.write_temp(reader)?;
        if let Some(size) = expected_size.filter(|s| *s != written) {
            let _ = fs::remove_file(&tmp_path);
            return Err(ImageError::SizeMismatch {
                digest: digest.to_string(),
                expected: size,
                actual: written,
            });
        }
        let final_path = self.blob_path(&digest)?;
        self.commit(&tmp_path, &final_path)?;
        Ok((digest, written))
    }

    /// Move the finished file at `path` into the store as blob `expected`, if its content
    /// hashes to that digest; otherwise remove the file and store nothing. The file must be
    /// on the store's filesystem (it is renamed, not copied): a registry's upload, written
    /// over several requests, becomes a blob without a second copy. Returns the blob size.
    pub fn adopt(&self, path: &Path, expected: &Digest) -> Result<u64> {
        let final_path = self.blob_path(expected)?;
        let hashed = File::open(path).and_then(|mut file| {
            let mut sink = HashingWriter {
                inner: io::sink(),
                hasher: Sha256::new(),
                written: 0,
            };
            io::copy(&mut file, &mut sink)?;
            Ok((digest_from_hasher(sink.hasher), sink.written))
        });
        let (actual, written) = match hashed {
            Ok(hashed) => hashed,
            Err(e) => {
                let _ = fs::remove_file(path);
                return Err(e).ctx(|| format!("read {}", path.display()));
            }
        };
        if actual != *expected {
            let _ = fs::remove_file(path);
            return Err(ImageError::DigestMismatch {
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        self.commit(path, &final_path)?;
        Ok(written)
    }

    /// [`ContentStore::adopt`] for a file whose content the caller hashed as it wrote it
    /// (`hashed`, over its first `len` bytes): no second read of the file. A file that is
    /// no longer `len` bytes long is hashed again instead. Returns the blob size.
    pub fn adopt_hashed(
        &self,
        path: &Path,
        expected: &Digest,
        hashed: &Digest,
        len: u64,
    ) -> Result<u64> {
        let final_path = self.blob_path(expected)?;
        let on_disk = match fs::metadata(path) {
            Ok(m) => m.len(),
            Err(e) => return Err(e).ctx(|| format!("stat {}", path.display())),
        };
        if on_disk != len {
            return self.adopt(path, expected);
        }
        if hashed != expected {
            let _ = fs::remove_file(path);
            return Err(ImageError::DigestMismatch {
                expected: expected.to_string(),
                actual: hashed.to_string(),
            });
        }
        self.commit(path, &final_path)?;
        Ok(len)
    }

    fn write_temp(&self, mut reader: impl Read) -> Result<(PathBuf, Digest, u64)> {
        let tmp_path = self.tmp.join(unique_name("blob"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp_path)
            .ctx(|| format!("create {}", tmp_path.display()))?;
        let mut sink = HashingWriter {
            inner: io::BufWriter::new(file),
            hasher: Sha256::new(),
            written: 0,
        };
        let res = io::copy(&mut reader, &mut sink)
            .and_then(|_| sink.inner.flush())
            .ctx(|| format!("write {}", tmp_path.display()));
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp_path);
            return Err(e);
        }
        Ok((tmp_path, digest_from_hasher(sink.hasher), sink.written))
    }

    fn commit(&self, tmp_path: &Path, final_path: &Path) -> Result<()> {
        let res = File::open(tmp_path)
            .and_then(|f| f.sync_all())
            .and_then(|_| fs::rename(tmp_path, final_path))
            .and_then(|_| File::open(&self.blobs)?.sync_all())
            .ctx(|| format!("commit blob {}", final_path.display()));
        if res.is_err() {
            let _ = fs::remove_file(tmp_path);
        }
        res
    }

    /// A streaming reader of the blob that fails at EOF unless the content hashes to
    /// `digest`.
    pub fn open_blob(&self, digest: &Digest) -> Result<BlobReader<File>> {
        let path = self.blob_path(digest)?;
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ImageError::BlobNotFound(digest.to_string()))
            }
            Err(e) => return Err(e).ctx(|| format!("open {}", path.display())),
        };
        Ok(BlobReader::new(file, digest.clone()))
    }

    /// Read a small blob whole, refusing it (before reading) if it is over `limit` bytes,
    /// and verifying its digest.
    pub fn read_all(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let size = self.size(digest)?;
        if size > limit {
            return Err(ImageError::BlobTooLarge {
                digest: digest.to_string(),
                size,
                limit,
            });
        }
        let mut reader = self.open_blob(digest)?;
        let mut buf = Vec::with_capacity(size as usize);
        // The file may grow between stat and read: never read past the limit.
        (&mut reader)
            .take(limit + 1)
            .read_to_end(&mut buf)
            .ctx(|| format!("read blob {digest}"))?;
        if buf.len() as u64 > limit {
            return Err(ImageError::BlobTooLarge {
                digest: digest.to_string(),
                size: buf.len() as u64,
                limit,
            });
        }
        Ok(buf)
    }

    /// Check a stored blob hashes to its digest (reads it all).
    pub fn verify(&self, digest: &Digest) -> Result<()> {
        let mut reader = self.open_blob(digest)?;
        io::copy(&mut reader, &mut io::sink()).ctx(|| format!("read blob {digest}"))?;
        Ok(())
    }

    /// Remove a blob; returns whether it existed.
    pub fn delete(&self, digest: &Digest) -> Result<bool> {
        let path = self.blob_path(digest)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).ctx(|| format!("remove {}", path.display())),
        }
    }

    /// All stored blobs (temp files of in-progress writes are not listed).
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.blobs).ctx(|| format!("list {}", self.blobs.display()))? {
            let entry = entry.ctx(|| format!("list {}", self.blobs.display()))?;
            let name = entry.file_name();
            if let Some(d) = name
                .to_str()
                .and_then(|n| parse_digest(&format!("sha256:{n}")).ok())
            {
                out.push(d);
            }
        }
        out.sort_by(|a, b| a.digest().cmp(b.digest()));
        Ok(out)
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads a blob and, on reaching EOF, fails with [`ImageError::DigestMismatch`] (wrapped in
/// an `io::Error` of kind `InvalidData`) if the content does not match the digest.
pub struct BlobReader<R> {
    inner: R,
    expected: Digest,
    hasher: Option<Sha256>,
}

impl<R: Read> BlobReader<R> {
    /// Wrap `inner`, expected to hash to `expected`.
    pub fn new(inner: R, expected: Digest) -> Self {
        Self {
            inner,
            expected,
            hasher: Some(Sha256::new()),
        }
    }
}

impl<R: Read> Read for BlobReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            if let Some(h) = self.hasher.as_mut() {
                h.update(&buf[..n]);
            }
        } else if !buf.is_empty() {
            if let Some(h) = self.hasher.take() {
                let actual = digest_from_hasher(h);
                if actual != self.expected {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        ImageError::DigestMismatch {
                            expected: self.expected.to_string(),
                            actual: actual.to_string(),
                        },
                    ));
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let d = store.write_bytes(b"hello").unwrap();
        assert!(store.has(&d));
        assert_eq!(store.size(&d).unwrap(), 5);
        assert_eq!(store.read_all(&d, 100).unwrap(), b"hello");
        assert_eq!(store.list().unwrap(), vec![d.clone()]);

        fs::write(store.blob_path(&d).unwrap(), b"HELLO").unwrap();
        let err = store.read_all(&d, 100).unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(err
            .to_string()
            .starts_with(&format!("blob {d} has content sha256:")));
        assert!(store.verify(&d).is_err());

        assert!(store.delete(&d).unwrap());
        assert!(!store.has(&d));
        assert!(!store.delete(&d).unwrap());
    }

    #[test]
    fn mismatch_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let want = digest_of(b"good");
        let err = store.write(&b"evil"[..], &want, None).unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }));
        let err = store.write(&b"good"[..], &want, Some(5)).unwrap_err();
        assert!(matches!(err, ImageError::SizeMismatch { .. }));
        assert!(!store.has(&want));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn adopt_moves_only_matching_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let upload = dir.path().join("upload");
        fs::write(&upload, b"layer").unwrap();
        let err = store.adopt(&upload, &digest_of(b"other")).unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(!upload.exists(), "a mismatching upload is removed");
        assert!(store.list().unwrap().is_empty());

        fs::write(&upload, b"layer").unwrap();
        let digest = digest_of(b"layer");
        assert_eq!(store.adopt(&upload, &digest).unwrap(), 5);
        assert!(!upload.exists());
        assert_eq!(store.read_all(&digest, 100).unwrap(), b"layer");
    }

    #[test]
    fn adopt_hashed_trusts_the_hash_only_for_the_length_it_covers() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let upload = dir.path().join("upload");
        let digest = digest_of(b"layer");

        fs::write(&upload, b"layer").unwrap();
        let err = store
            .adopt_hashed(&upload, &digest, &digest_of(b"other"), 5)
            .unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(!upload.exists(), "a mismatching upload is removed");

        // The file grew past what was hashed: it is hashed again, and refused.
        fs::write(&upload, b"layer!").unwrap();
        let err = store
            .adopt_hashed(&upload, &digest, &digest, 5)
            .unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(store.list().unwrap().is_empty());

        fs::write(&upload, b"layer").unwrap();
        assert_eq!(store.adopt_hashed(&upload, &digest, &digest, 5).unwrap(), 5);
        assert!(!upload.exists());
        assert_eq!(store.read_all(&digest, 100).unwrap(), b"layer");
    }

    #[test]
    fn non_sha256_digests_refused() {
        assert!(parse_digest("sha512:abcd").is_err());
        assert!(parse_digest("sha256:../../etc").is_err());
    }
}
