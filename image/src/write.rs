//! Making images from directories: a directory becomes a gzip tar layer in the content
//! store ([`layer_from_dir`]), layers and process defaults become an OCI config and manifest
//! ([`write_image`]). The demo image and the Dockerfile builder are made this way.
//!
//! Layers are deterministic: the same tree gives the same bytes, hence the same digest, so a
//! rebuilt layer is stored and pushed once. Entries are sorted by name, mtimes are 0, and
//! the gzip header carries no time or name; what a container sees is kept: uid, gid, mode
//! (setuid/setgid/sticky too), symlink targets, hard links (later paths of one inode link to
//! the first), devices and fifos. Sockets are left out (they cannot be archived); extended
//! attributes are not carried.
//!
//! The tar is streamed: a thread writes it (through gzip) into a bounded channel that the
//! content store reads, so a layer is never held in memory and is written to disk once.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use oci_spec::image::{
    Arch, Config, Descriptor, Digest, History, ImageConfigurationBuilder, ImageManifestBuilder,
    MediaType, Os, RootFsBuilder,
};
use sha2::{Digest as _, Sha256};

use crate::error::{ImageError, IoContext, Result};
use crate::images::{host_arch, ImageStore};
use crate::store::{parse_digest, ContentStore};

/// Bytes per chunk handed from the tar writer to the content store.
const CHUNK: usize = 64 * 1024;

/// A layer written into the content store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDescriptor {
    /// The gzip tar blob (OCI `tar+gzip` layer media type), as the manifest names it.
    pub descriptor: Descriptor,
    /// The digest of the uncompressed tar: the config's `rootfs.diff_ids` entry.
    pub diff_id: Digest,
}

/// How the tree of a layer records deletions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A plain directory: every entry is content.
    Plain,
    /// An overlayfs upper directory: a 0/0 character device is a deleted path and a
    /// directory with `trusted.overlay.opaque=y` hides the lower layers' contents; the
    /// layer gets OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`) for them instead.
    OverlayUpper,
}

/// Archive the tree under `dir` (not `dir` itself) as a deterministic gzip tar layer into
/// `store`. Blocking: call it from `spawn_blocking` in async code.
pub fn layer_from_dir(store: &ContentStore, dir: &Path) -> Result<LayerDescriptor> {
    write_layer(store, dir, Source::Plain)
}

/// Like [`layer_from_dir`], for the upper directory of an overlay mount (what a container
/// changed): its whiteout devices and opaque directories become OCI whiteout entries. A
/// directory overlayfs recorded as renamed (`trusted.overlay.redirect`) is refused: its
/// content lives in a lower layer and a layer of the upper dir alone would lose it.
pub fn layer_from_overlay_upper(store: &ContentStore, dir: &Path) -> Result<LayerDescriptor> {
    write_layer(store, dir, Source::OverlayUpper)
}

fn write_layer(store: &ContentStore, dir: &Path, source: Source) -> Result<LayerDescriptor> {
    let meta = fs::metadata(dir).ctx(|| format!("stat {}", dir.display()))?;
    if !meta.is_dir() {
        return Err(ImageError::Io {
            context: format!("make a layer of {}", dir.display()),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let (tx, rx) = sync_channel(4);
    let (stored, diff_id, store_stopped) = std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            let mut sink = ChunkWriter {
                tx,
                buf: Vec::with_capacity(CHUNK),
                store_stopped: false,
            };
            let result = write_layer_tar(dir, source, &mut sink);
            let store_stopped = sink.store_stopped;
            match &result {
                Ok(_) => sink.finish(),
                Err(e) => sink.fail(e),
            }
            (result, store_stopped)
        });
        let stored = store.ingest(ChunkReader::new(rx), None);
        let (diff_id, store_stopped) = writer.join().expect("layer writer does not panic");
        (stored, diff_id, store_stopped)
    });
    let (diff_id, (digest, size)) = match (diff_id, stored) {
        // The store stopped reading (a full disk): the writer only saw a broken pipe.
        (Err(_), Err(store_error)) if store_stopped => return Err(store_error),
        // Otherwise the writer's error says what went wrong; the store only saw the
        // stream stop.
        (diff_id, stored) => (diff_id?, stored?),
    };
    tracing::debug!(dir = %dir.display(), layer = %digest, size, "layer written");
    Ok(LayerDescriptor {
        descriptor: Descriptor::new(MediaType::ImageLayerGzip, size, digest),
        diff_id,
    })
}

/// Write an OCI image config (host platform, `created` now, `rootfs.diff_ids` from `layers`,
/// process defaults from `config`) and an OCI manifest naming it and `layers` (bottom
/// first) into `store`; returns the manifest digest. Record it with [`ImageStore::tag`].
/// Blocking: call it from `spawn_blocking` in async code.
pub fn write_image(
    store: &ImageStore,
    config: Config,
    layers: &[LayerDescriptor],
) -> Result<Digest> {
    write_image_with_history(store, config, layers, Vec::new())
}

/// [`write_image`] with the config's `history` (one entry per build step, those that made
/// no layer marked `empty_layer`). Blocking.
pub fn write_image_with_history(
    store: &ImageStore,
    config: Config,
    layers: &[LayerDescriptor],
    history: Vec<History>,
) -> Result<Digest> {
    let build_error = |what: &'static str, e: oci_spec::OciSpecError| ImageError::InvalidDocument {
        what,
        digest: "(new)".into(),
        reason: e.to_string(),
    };
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(
            layers
                .iter()
                .map(|l| l.diff_id.to_string())
                .collect::<Vec<_>>(),
        )
        .build()
        .map_err(|e| build_error("config", e))?;
    let mut image_config = ImageConfigurationBuilder::default()
        .created(jiff::Timestamp::now().to_string())
        .architecture(Arch::from(host_arch()))
        .os(Os::Linux)
        .config(config)
        .rootfs(rootfs)
        .build()
        .map_err(|e| build_error("config", e))?;
    if !history.is_empty() {
        image_config.set_history(Some(history));
    }
    let config_bytes = serde_json::to_vec(&image_config).expect("an image config serializes");
    let config_digest = store.content().write_bytes(&config_bytes)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_bytes.len() as u64,
            config_digest,
        ))
        .layers(
            layers
                .iter()
                .map(|l| l.descriptor.clone())
                .collect::<Vec<_>>(),
        )
        .build()
        .map_err(|e| build_error("manifest", e))?;
    let manifest_bytes = serde_json::to_vec(&manifest).expect("a manifest serializes");
    let digest = store.content().write_bytes(&manifest_bytes)?;
    // Every blob it names must be in the store: a caller's layer from another store fails here.
    store.resolve_digest(&digest)?;
    Ok(digest)
}

/// Write the tar of `dir`'s tree, gzip-compressed, into `sink`; returns the digest of the
/// uncompressed tar.
fn write_layer_tar(dir: &Path, source: Source, sink: &mut impl Write) -> Result<Digest> {
    // An empty file name and OS "unknown": the gzip header says nothing about this machine.
    let gzip = flate2::GzBuilder::new()
        .operating_system(255)
        .write(sink, flate2::Compression::default());
    let mut tar = tar::Builder::new(HashingWriter {
        inner: gzip,
        hasher: Sha256::new(),
    });
    let mut links = HashMap::new();
    append_tree(&mut tar, dir, Path::new(""), source, &mut links)?;
    let hashing = tar
        .into_inner()
        .ctx(|| format!("finish the layer tar of {}", dir.display()))?;
    hashing
        .inner
        .finish()
        .ctx(|| format!("finish the layer gzip of {}", dir.display()))?;
    parse_digest(&format!("sha256:{:x}", hashing.hasher.finalize()))
}

/// Append the entries under `root/rel`, sorted by name, depth first.
fn append_tree<W: Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    source: Source,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
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
        if source == Source::OverlayUpper && is_whiteout(&meta) {
            let mut whiteout = std::ffi::OsString::from(WHITEOUT_PREFIX);
            whiteout.push(&name);
            append_marker(tar, &rel.with_file_name(whiteout))?;
            continue;
        }
        append_entry(tar, &path, &rel, &meta, links)?;
        if meta.is_dir() {
            if source == Source::OverlayUpper {
                if xattr(&path, "trusted.overlay.redirect")?.is_some() {
                    return Err(ImageError::Io {
                        context: format!("make a layer of {}", path.display()),
                        source: io::Error::other(
                            "the directory was renamed by overlayfs (redirect_dir): its \
                             content is in a lower layer; copy it instead of renaming it",
                        ),
                    });
                }
                if xattr(&path, "trusted.overlay.opaque")?.as_deref() == Some(b"y") {
                    append_marker(tar, &rel.join(OPAQUE_MARKER))?;
                }
            }
            append_tree(tar, root, &rel, source, links)?;
        }
    }
    Ok(())
}

/// OCI whiteout entries: `.wh.NAME` deletes NAME, `.wh..wh..opq` makes its directory opaque.
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// overlayfs marks a deleted path with a character device 0/0.
fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// An empty, root-owned regular file entry: how whiteouts are archived.
fn append_marker<W: Write>(tar: &mut tar::Builder<W>, rel: &Path) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(0);
    tar.append_data(&mut header, rel, io::empty())
        .ctx(|| format!("archive whiteout {}", rel.display()))
}

/// The value of extended attribute `name` of `path` (not following symlinks), if set.
fn xattr(path: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let ctx = || format!("read xattr {name} of {}", path.display());
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(io::Error::from)
        .ctx(ctx)?;
    let c_name = std::ffi::CString::new(name)
        .map_err(io::Error::from)
        .ctx(ctx)?;
    // Values can be long (an overlay redirect is a path): ask for the size, then read; a
    // value that grew in between (ERANGE) is asked for again.
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // SAFETY: both strings are NUL-terminated and outlive the call; `buf` is writable
        // for `buf.len()` bytes (a null pointer with size 0 only asks for the size).
        let n = unsafe {
            libc::lgetxattr(
                c_path.as_ptr(),
                c_name.as_ptr(),
                if buf.is_empty() {
                    std::ptr::null_mut()
                } else {
                    buf.as_mut_ptr().cast()
                },
                buf.len(),
            )
        };
        if n >= 0 {
            let n = n as usize;
            if buf.is_empty() && n > 0 {
                buf = vec![0u8; n];
                continue;
            }
            buf.truncate(n);
            return Ok(Some(buf));
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            Some(libc::ERANGE) => buf.clear(),
            _ => return Err(error).ctx(ctx),
        }
    }
}

fn append_entry<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &Path,
    rel: &Path,
    meta: &Metadata,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let ctx = || format!("archive {}", path.display());
    let file_type = meta.file_type();
    if file_type.is_socket() {
        tracing::debug!(path = %path.display(), "socket left out of the layer");
        return Ok(());
    }
    let mut header = tar::Header::new_gnu();
    header.set_mode(meta.mode() & 0o7777);
    header.set_uid(meta.uid().into());
    header.set_gid(meta.gid().into());
    header.set_mtime(0);
    header.set_size(0);

    if !file_type.is_dir() && meta.nlink() > 1 {
        let inode = (meta.dev(), meta.ino());
        if let Some(first) = links.get(&inode) {
            header.set_entry_type(tar::EntryType::Link);
            return tar.append_link(&mut header, rel, first).ctx(ctx);
        }
        links.insert(inode, rel.to_path_buf());
    }
    if file_type.is_file() {
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(meta.len());
        let file = File::open(path).ctx(ctx)?;
        let exact = ExactReader {
            inner: file.take(meta.len()),
            remaining: meta.len(),
        };
        tar.append_data(&mut header, rel, exact).ctx(ctx)
    } else if file_type.is_dir() {
        header.set_entry_type(tar::EntryType::Directory);
        // The trailing slash is how tar tools mark a directory in the name too.
        let mut name = rel.as_os_str().to_owned();
        name.push("/");
        tar.append_data(&mut header, name, io::empty()).ctx(ctx)
    } else if file_type.is_symlink() {
        header.set_entry_type(tar::EntryType::Symlink);
        let target = fs::read_link(path).ctx(ctx)?;
        tar.append_link(&mut header, rel, target).ctx(ctx)
    } else {
        let kind = if file_type.is_char_device() {
            tar::EntryType::Char
        } else if file_type.is_block_device() {
            tar::EntryType::Block
        } else {
            tar::EntryType::Fifo
        };
        header.set_entry_type(kind);
        if kind != tar::EntryType::Fifo {
            let rdev = meta.rdev();
            let major = u32::try_from(nix::sys::stat::major(rdev)).unwrap_or(u32::MAX);
            let minor = u32::try_from(nix::sys::stat::minor(rdev)).unwrap_or(u32::MAX);
            header.set_device_major(major).ctx(ctx)?;
            header.set_device_minor(minor).ctx(ctx)?;
        }
        tar.append_data(&mut header, rel, io::empty()).ctx(ctx)
    }
}

/// A file's content, failing unless it is exactly as long as its header says: a file that
/// shrinks while it is archived would otherwise leave a corrupt tar.
struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.remaining > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was archived",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What the layer writer hands the content store.
enum Chunk {
    Data(Vec<u8>),
    /// The layer is complete: without it, the end of the stream is an error, so a writer
    /// that failed never leaves a truncated blob behind.
    End,
    Failed(String),
}

struct ChunkWriter {
    tx: SyncSender<Chunk>,
    buf: Vec<u8>,
    /// The content store hung up (it failed): its error is the one to report.
    store_stopped: bool,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.send(Chunk::Data(chunk)).map_err(|_| {
            self.store_stopped = true;
            io::Error::new(io::ErrorKind::BrokenPipe, "the content store stopped")
        })
    }

    fn finish(mut self) {
        if self.send().is_ok() {
            let _ = self.tx.send(Chunk::End);
        }
    }

    fn fail(self, error: &ImageError) {
        let _ = self.tx.send(Chunk::Failed(error.to_string()));
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct ChunkReader {
    rx: Receiver<Chunk>,
    chunk: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl ChunkReader {
    fn new(rx: Receiver<Chunk>) -> Self {
        Self {
            rx,
            chunk: Vec::new(),
            pos: 0,
            ended: false,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Chunk::Data(data)) => {
                    self.chunk = data;
                    self.pos = 0;
                }
                Ok(Chunk::End) => self.ended = true,
                Ok(Chunk::Failed(reason)) => return Err(io::Error::other(reason)),
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the layer writer stopped",
                    ))
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn sample_tree(root: &Path) {
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("etc/app")).unwrap();
        fs::write(root.join("bin/app"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(root.join("bin/app"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::write(root.join("etc/app/config"), vec![7u8; 200_000]).unwrap();
        fs::hard_link(root.join("etc/app/config"), root.join("etc/app/config.bak")).unwrap();
        symlink("../bin/app", root.join("etc/run")).unwrap();
        fs::write(root.join("empty"), b"").unwrap();
        std::os::unix::fs::chown(root.join("empty"), Some(1000), Some(1001)).unwrap();
        nix::unistd::mkfifo(
            &root.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    }

    #[test]
    fn layers_round_trip_and_are_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        sample_tree(&tree);
        let images = ImageStore::open(dir.path().join("store")).unwrap();

        let first = layer_from_dir(images.content(), &tree).unwrap();
        let second = layer_from_dir(images.content(), &tree).unwrap();
        assert_eq!(first, second, "same tree, same layer");
        assert_eq!(first.descriptor.media_type(), &MediaType::ImageLayerGzip);
        assert_eq!(
            images.content().size(first.descriptor.digest()).unwrap(),
            first.descriptor.size()
        );

        // The diff_id is the digest of the uncompressed tar.
        let blob = images
            .content()
            .read_all(first.descriptor.digest(), 1 << 30)
            .unwrap();
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&blob[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(crate::store::digest_of(&tar), first.diff_id);

        let unpacked = images
            .layers()
            .unpack(images.content(), &first.descriptor)
            .unwrap();
        let read = |p: &str| fs::read(unpacked.join(p)).unwrap();
        assert_eq!(read("bin/app"), b"#!/bin/sh\necho hi\n");
        assert_eq!(read("etc/app/config"), vec![7u8; 200_000]);
        let mode = |p: &str| fs::symlink_metadata(unpacked.join(p)).unwrap();
        assert_eq!(mode("bin/app").mode() & 0o7777, 0o4755);
        assert_eq!(
            mode("etc/app/config").ino(),
            mode("etc/app/config.bak").ino()
        );
        assert_eq!(
            fs::read_link(unpacked.join("etc/run")).unwrap(),
            Path::new("../bin/app")
        );
        assert_eq!((mode("empty").uid(), mode("empty").gid()), (1000, 1001));
        assert!(mode("fifo").file_type().is_fifo());
        assert!(!unpacked.join("sock").exists(), "sockets are left out");
        assert_eq!(mode("etc/app/config").mtime(), 0);
    }

    #[test]
    fn written_images_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(&tree).unwrap();
        fs::write(tree.join("hello"), b"hello").unwrap();
        let images = ImageStore::open(dir.path().join("store")).unwrap();
        let layer = layer_from_dir(images.content(), &tree).unwrap();
        let config = oci_spec::image::ConfigBuilder::default()
            .entrypoint(vec!["/hello".to_owned()])
            .env(vec!["A=b".to_owned()])
            .build()
            .unwrap();
        let digest = write_image(&images, config, std::slice::from_ref(&layer)).unwrap();
        let reference = crate::Reference::parse("demo:v1").unwrap();
        images.tag(&reference, &digest).unwrap();

        let image = images.resolve("demo:v1").unwrap();
        assert_eq!(image.manifest_digest, digest);
        assert_eq!(image.layers, vec![layer.descriptor.clone()]);
        assert_eq!(
            image.config.rootfs().diff_ids(),
            &vec![layer.diff_id.to_string()]
        );
        assert_eq!(image.config.architecture().to_string(), host_arch());
        let process = image.config.config().clone().unwrap();
        assert_eq!(process.entrypoint().clone().unwrap(), ["/hello"]);
        assert!(image.config.created().is_some());
    }

    #[test]
    fn a_failed_writer_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path().join("store")).unwrap();
        assert!(layer_from_dir(&store, &dir.path().join("nope")).is_err());

        // A writer that fails after some data, or stops without saying it is done: the
        // store refuses the stream instead of keeping a truncated layer.
        for failed in [true, false] {
            let (tx, rx) = sync_channel(4);
            let mut writer = ChunkWriter {
                tx,
                buf: Vec::new(),
                store_stopped: false,
            };
            writer.write_all(&vec![1u8; CHUNK * 2]).unwrap();
            if failed {
                writer.fail(&ImageError::ImageNotFound("x".into()));
            } else {
                drop(writer);
            }
            assert!(store.ingest(ChunkReader::new(rx), None).is_err());
        }
        assert!(store.list().unwrap().is_empty());
        assert_eq!(
            fs::read_dir(dir.path().join("store/tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn a_failed_store_reports_its_own_error() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(&tree).unwrap();
        // Incompressible, so the writer has more to send than the channel holds.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..CHUNK * 16)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        fs::write(tree.join("noise"), &noise).unwrap();
        let store = ContentStore::open(dir.path().join("store")).unwrap();
        // The store cannot write (as a full disk would not): the writer's broken pipe must
        // not hide that.
        fs::remove_dir_all(dir.path().join("store/tmp")).unwrap();
        let err = layer_from_dir(&store, &tree).unwrap_err();
        assert!(
            err.to_string().contains("store/tmp"),
            "the store's error is reported: {err}"
        );
    }

    #[test]
    fn long_xattr_values_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("renamed");
        fs::create_dir(&path).unwrap();
        let value = format!("/{}", "long-directory-name/".repeat(40));
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: NUL-terminated strings and a value buffer, all live across the call.
        let rc = unsafe {
            libc::lsetxattr(
                c_path.as_ptr(),
                c"trusted.overlay.redirect".as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        assert_eq!(rc, 0, "setxattr: {}", io::Error::last_os_error());
        assert_eq!(
            xattr(&path, "trusted.overlay.redirect").unwrap(),
            Some(value.into_bytes())
        );
        assert_eq!(xattr(&path, "trusted.overlay.opaque").unwrap(), None);
    }

    #[test]
    fn overlay_upper_dirs_get_oci_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path().join("upper");
        fs::create_dir_all(upper.join("opaque")).unwrap();
        fs::write(upper.join("keep"), b"kept").unwrap();
        fs::write(upper.join("opaque/new"), b"new").unwrap();
        nix::sys::stat::mknod(
            &upper.join("gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let c_path = std::ffi::CString::new(upper.join("opaque").as_os_str().as_bytes()).unwrap();
        // SAFETY: NUL-terminated strings and a 1-byte value, all live across the call.
        let rc = unsafe {
            libc::lsetxattr(
                c_path.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        };
        assert_eq!(rc, 0, "setxattr: {}", io::Error::last_os_error());
        let images = ImageStore::open(dir.path().join("store")).unwrap();

        let layer = layer_from_overlay_upper(images.content(), &upper).unwrap();
        let blob = images
            .content()
            .read_all(layer.descriptor.digest(), 1 << 30)
            .unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
        let entries: Vec<(String, tar::EntryType)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().entry_type(),
                )
            })
            .collect();
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                ".wh.gone",
                "keep",
                "opaque/",
                "opaque/.wh..wh..opq",
                "opaque/new"
            ]
        );
        assert_eq!(entries[0].1, tar::EntryType::Regular);

        // Unpacked, they are overlay whiteouts again.
        let unpacked = images
            .layers()
            .unpack(images.content(), &layer.descriptor)
            .unwrap();
        let gone = fs::symlink_metadata(unpacked.join("gone")).unwrap();
        assert!(gone.file_type().is_char_device() && gone.rdev() == 0);
        assert_eq!(
            xattr(&unpacked.join("opaque"), "trusted.overlay.opaque").unwrap(),
            Some(b"y".to_vec())
        );

        // A plain layer of the same tree keeps the device as a device.
        let plain = layer_from_dir(images.content(), &upper).unwrap();
        assert_ne!(plain.diff_id, layer.diff_id);
    }
}
