//! Layer unpacking per the OCI layer spec, into `ROOT/layers/sha256/<hex>/`, one directory per
//! layer digest, ready to be an overlayfs `lowerdir`.
//!
//! A layer is unpacked into a private temp dir under `ROOT/layers/tmp/` and renamed into
//! place, so a layer dir either holds a complete layer or does not exist; concurrent unpacks
//! of one digest race on the rename and the loser discards its copy.
//!
//! Whiteouts become overlayfs whiteouts: `.wh.NAME` is a 0/0 character device `NAME`, and
//! `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.
//!
//! # Containment rule
//! Nothing an entry writes may land outside the layer dir:
//! - absolute entry paths are made relative (as Docker does); a `..` that climbs above the
//!   layer root is refused;
//! - every parent component of an entry must be a real directory inside the layer: an entry
//!   is never written *through* a symlink (so `evil -> /etc` then `evil/passwd` is refused,
//!   and so is a symlink to a path inside the layer — real images do not need it);
//! - an existing symlink at the entry's own path is replaced, never followed;
//! - a hard link's target must be an existing non-directory inside the layer, reached by the
//!   same rule.
//!
//! Symlinks themselves may point anywhere: their target is interpreted inside the container.

use std::ffi::{CString, OsStr};
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use oci_spec::image::{Descriptor, Digest, MediaType};

use crate::error::{ImageError, IoContext, Result};
use crate::store::{check_sha256, parse_digest, unique_name, ContentStore};

const OPAQUE_MARKER: &str = ".wh..wh..opq";
const WHITEOUT_PREFIX: &str = ".wh.";

/// Unpacked layers, one directory per layer (blob) digest.
#[derive(Debug, Clone)]
pub struct LayerStore {
    dirs: PathBuf,
    tmp: PathBuf,
}

impl LayerStore {
    /// Open (creating) the layer store under `root` (`root/layers/...`).
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let base = root.as_ref().join("layers");
        let dirs = base.join("sha256");
        let tmp = base.join("tmp");
        for dir in [&dirs, &tmp] {
            fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
        }
        Ok(Self { dirs, tmp })
    }

    /// Where the layer with this blob digest is (or would be) unpacked.
    pub fn layer_path(&self, digest: &Digest) -> Result<PathBuf> {
        Ok(self.dirs.join(check_sha256(digest)?))
    }

    /// Whether the layer is unpacked.
    pub fn is_unpacked(&self, digest: &Digest) -> bool {
        self.layer_path(digest).is_ok_and(|p| p.is_dir())
    }

    /// Unpack the layer blob `layer` from `content` (a no-op if already unpacked); returns
    /// its directory. The blob is verified against its digest while it is read.
    pub fn unpack(&self, content: &ContentStore, layer: &Descriptor) -> Result<PathBuf> {
        let digest = layer.digest();
        let target = self.layer_path(digest)?;
        if target.is_dir() {
            return Ok(target);
        }
        if is_zstd(layer.media_type()) {
            return Err(ImageError::UnsupportedMediaType {
                what: "layer",
                digest: digest.to_string(),
                media_type: layer.media_type().to_string(),
            });
        }
        let tmp = self.tmp.join(unique_name("layer"));
        fs::create_dir(&tmp).ctx(|| format!("create {}", tmp.display()))?;
        let res = fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
            .ctx(|| format!("chmod {}", tmp.display()))
            .and_then(|_| unpack_blob(content, digest, &tmp));
        if let Err(e) = res {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        match fs::rename(&tmp, &target) {
            Ok(()) => {
                tracing::debug!(layer = %digest, "layer unpacked");
                Ok(target)
            }
            // Another unpack of the same digest won the race: keep its copy.
            Err(_) if target.is_dir() => {
                let _ = fs::remove_dir_all(&tmp);
                Ok(target)
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                Err(e).ctx(|| format!("rename layer into {}", target.display()))
            }
        }
    }

    /// Digests of all unpacked layers.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dirs).ctx(|| format!("list {}", self.dirs.display()))? {
            let entry = entry.ctx(|| format!("list {}", self.dirs.display()))?;
            if let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| parse_digest(&format!("sha256:{n}")).ok())
            {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Remove an unpacked layer; returns whether it existed. The dir is first renamed away
    /// so a half-removed layer is never taken for an unpacked one.
    pub fn remove(&self, digest: &Digest) -> Result<bool> {
        let path = self.layer_path(digest)?;
        let doomed = self.tmp.join(unique_name("remove"));
        match fs::rename(&path, &doomed) {
            Ok(()) => {
                fs::remove_dir_all(&doomed).ctx(|| format!("remove {}", doomed.display()))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).ctx(|| format!("remove {}", path.display())),
        }
    }
}

fn is_zstd(media_type: &MediaType) -> bool {
    matches!(
        media_type,
        MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd
    )
}

fn unpack_blob(content: &ContentStore, digest: &Digest, dir: &Path) -> Result<()> {
    let layer = digest.to_string();
    let mut blob = content.open_blob(digest)?;
    let mut buf = BufReader::new(&mut blob);
    let head = buf.fill_buf().ctx(|| format!("read layer {layer}"))?;
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(ImageError::InvalidLayer {
            layer,
            reason: "zstd-compressed layers are not supported".into(),
        });
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        unpack_tar(flate2::read::GzDecoder::new(&mut buf), dir, &layer)?;
    } else {
        unpack_tar(&mut buf, dir, &layer)?;
    }
    // Read to EOF so the blob reader checks the digest of the whole blob.
    io::copy(&mut buf, &mut io::sink()).ctx(|| format!("read layer {layer}"))?;
    Ok(())
}

/// Unpack a tar stream into `root` (an empty, private directory) following the module's
/// containment rule. `layer` names the layer in errors.
pub fn unpack_tar(reader: impl Read, root: &Path, layer: &str) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    let mut dir_mtimes = Vec::new();
    let entries = archive.entries().ctx(|| format!("read layer {layer}"))?;
    for entry in entries {
        let mut entry = entry.ctx(|| format!("read layer {layer}"))?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let escape = |reason| ImageError::LayerEscape {
            layer: layer.to_owned(),
            entry: shown.clone(),
            reason,
        };
        let invalid = |reason: String| ImageError::InvalidLayer {
            layer: layer.to_owned(),
            reason: format!("entry {shown}: {reason}"),
        };
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::GNULongName
        ) {
            continue;
        }
        let components = normalize(&raw).map_err(escape)?;
        let Some((name, parents)) = components.split_last() else {
            continue; // the layer root itself
        };
        let parent = real_parent(root, parents, true).map_err(escape)?;
        let name_str = name.to_string_lossy();

        if name_str == OPAQUE_MARKER {
            set_xattr(&parent, "trusted.overlay.opaque", b"y")
                .ctx(|| format!("layer {layer}: mark {} opaque", parent.display()))?;
            continue;
        }
        if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                continue; // other AUFS metadata (.wh..wh.plnk, ...): not part of the rootfs
            }
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(invalid("invalid whiteout name".into()));
            }
            let target = parent.join(OsStr::from_bytes(hidden));
            clear(&target, false).ctx(|| format!("layer {layer}: whiteout {shown}"))?;
            mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                .map_err(io::Error::from)
                .ctx(|| format!("layer {layer}: whiteout {shown}"))?;
            continue;
        }

        let target = parent.join(name);
        let is_dir = kind == tar::EntryType::Directory;
        let io_ctx = || format!("layer {layer}: entry {shown}");
        clear(&target, is_dir).ctx(io_ctx)?;
        let header = entry.header().clone();
        let mode = header.mode().map_err(|e| invalid(e.to_string()))? & 0o7777;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&target)
                    .ctx(io_ctx)?;
                io::copy(&mut entry, &mut file).ctx(io_ctx)?;
            }
            tar::EntryType::Directory => {
                if !target.is_dir() {
                    fs::create_dir(&target).ctx(io_ctx)?;
                }
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| invalid("symlink without a target".into()))?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target).ctx(io_ctx)?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| invalid("hard link without a target".into()))?;
                let source = link_source(root, &link).map_err(escape)?;
                fs::hard_link(&source, &target).ctx(io_ctx)?;
                continue; // shares the inode (and metadata) of its target
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let sflag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                mknod(
                    &target,
                    sflag,
                    Mode::from_bits_truncate(mode),
                    makedev(major.into(), minor.into()),
                )
                .map_err(io::Error::from)
                .ctx(io_ctx)?;
            }
            other => return Err(invalid(format!("unsupported entry type {other:?}"))),
        }

        let uid = header.uid().map_err(|e| invalid(e.to_string()))?;
        let gid = header.gid().map_err(|e| invalid(e.to_string()))?;
        let ids =
            |v: u64| u32::try_from(v).map_err(|_| invalid(format!("uid/gid {v} out of range")));
        std::os::unix::fs::lchown(&target, Some(ids(uid)?), Some(ids(gid)?)).ctx(io_ctx)?;
        let is_symlink = kind == tar::EntryType::Symlink;
        if !is_symlink {
            // After chown, which clears setuid/setgid.
            fs::set_permissions(&target, fs::Permissions::from_mode(mode)).ctx(io_ctx)?;
        }
        let mtime = header.mtime().unwrap_or(0);
        if is_dir {
            // Later entries inside the dir would bump its mtime: set it at the end.
            dir_mtimes.push((target, mtime));
        } else {
            set_mtime(&target, mtime).ctx(io_ctx)?;
        }
    }
    for (dir, mtime) in dir_mtimes.iter().rev() {
        set_mtime(dir, *mtime).ctx(|| format!("layer {layer}: mtime of {}", dir.display()))?;
    }
    Ok(())
}

/// Lexically normalise an entry path to components under the layer root.
fn normalize(raw: &[u8]) -> std::result::Result<Vec<&OsStr>, &'static str> {
    let mut out = Vec::new();
    for component in Path::new(OsStr::from_bytes(raw)).components() {
        match component {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                if out.pop().is_none() {
                    return Err("'..' climbs out of the layer");
                }
            }
            Component::Normal(c) => out.push(c),
        }
    }
    Ok(out)
}

/// Walk `parents` under `root` without following symlinks: each must be a real directory
/// (created, mode 0755, when missing and `create` is set).
fn real_parent(
    root: &Path,
    parents: &[&OsStr],
    create: bool,
) -> std::result::Result<PathBuf, &'static str> {
    let mut path = root.to_path_buf();
    for component in parents {
        path.push(component);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => return Err("a parent is a symlink"),
            Ok(_) => return Err("a parent is not a directory"),
            Err(_) if create => {
                fs::create_dir(&path).map_err(|_| "cannot create a parent directory")?;
                let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o755));
            }
            Err(_) => return Err("a parent does not exist in the layer"),
        }
    }
    Ok(path)
}

/// The in-layer path of a hard link's target.
fn link_source(root: &Path, link: &[u8]) -> std::result::Result<PathBuf, &'static str> {
    let components = normalize(link).map_err(|_| "hard link target climbs out of the layer")?;
    let Some((name, parents)) = components.split_last() else {
        return Err("hard link to the layer root");
    };
    let source = real_parent(root, parents, false)
        .map_err(|_| "hard link target is not a file inside the layer")?
        .join(name);
    match fs::symlink_metadata(&source) {
        Ok(m) if !m.is_dir() => Ok(source),
        _ => Err("hard link target is not a file inside the layer"),
    }
}

/// Make room for a new entry at `path`: an existing directory stays if the new entry is a
/// directory too; anything else (including a symlink, never followed) is removed.
fn clear(path: &Path, keep_dir: bool) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            if keep_dir {
                Ok(())
            } else {
                fs::remove_dir_all(path)
            }
        }
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn set_mtime(path: &Path, mtime: u64) -> io::Result<()> {
    let secs = i64::try_from(mtime).unwrap_or(i64::MAX);
    let ts = TimeSpec::new(secs, 0);
    utimensat(None, path, &ts, &ts, UtimensatFlags::NoFollowSymlink).map_err(io::Error::from)
}

/// setxattr(2); nix has no wrapper. Does not follow symlinks (callers pass real dirs).
fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    let c_name = CString::new(name)?;
    // SAFETY: both strings are NUL-terminated and live across the call; `value` is a valid
    // buffer of `value.len()` bytes.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_paths() {
        let n = |s: &str| {
            normalize(s.as_bytes()).map(|v| {
                v.iter()
                    .map(|c| c.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(n("/etc/passwd").unwrap(), ["etc", "passwd"]);
        assert_eq!(n("./a/../b").unwrap(), ["b"]);
        assert!(n("../../etc/passwd").is_err());
        assert!(n("a/../../b").is_err());
        assert!(n("./").unwrap().is_empty());
    }
}
