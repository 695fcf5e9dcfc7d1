//! A container's root filesystem: an overlayfs of read-only image layers (lower directories,
//! topmost first) and a per-container upper and work directory, mounted at the bundle's
//! `rootfs`. Raw mount(2)/umount2(2) through nix; no `mount` binary.

use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("a rootfs needs at least one lower directory")]
    NoLowers,
    #[error("{0}: overlayfs cannot take a path containing ':' or ','")]
    BadPath(PathBuf),
    #[error("creating {dir}: {source}")]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mounting the overlay at {target}: {source}")]
    Mount {
        target: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("unmounting {target}: {source}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("reading the mount table: {0}")]
    MountInfo(#[source] io::Error),
}

/// The directories of one container's overlay, all inside its bundle.
#[derive(Clone, Debug)]
pub struct Overlay {
    /// Image layers, topmost first; never written.
    pub lowers: Vec<PathBuf>,
    /// The container's writes.
    pub upper: PathBuf,
    /// overlayfs scratch space (same filesystem as `upper`).
    pub work: PathBuf,
    /// Where the merged tree is mounted.
    pub target: PathBuf,
}

impl Overlay {
    /// Creates upper, work and target and mounts the overlay.
    pub fn mount(&self) -> Result<(), RootfsError> {
        if self.lowers.is_empty() {
            return Err(RootfsError::NoLowers);
        }
        let all = self
            .lowers
            .iter()
            .chain([&self.upper, &self.work, &self.target]);
        for path in all {
            let text = path.to_string_lossy();
            if text.contains(':') || text.contains(',') {
                return Err(RootfsError::BadPath(path.clone()));
            }
        }
        for dir in [&self.upper, &self.work, &self.target] {
            std::fs::create_dir_all(dir).map_err(|source| RootfsError::CreateDir {
                dir: dir.clone(),
                source,
            })?;
        }
        let lowers = self
            .lowers
            .iter()
            .map(|p| p.to_string_lossy())
            .collect::<Vec<_>>()
            .join(":");
        let data = format!(
            "lowerdir={lowers},upperdir={},workdir={}",
            self.upper.display(),
            self.work.display()
        );
        mount(
            Some("overlay"),
            &self.target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|source| RootfsError::Mount {
            target: self.target.clone(),
            source,
        })
    }
}

/// Unmounts whatever is mounted at `target` (every stacked mount), if anything. A busy mount
/// is detached lazily: it disappears once its last user goes.
pub fn unmount(target: &Path) -> Result<(), RootfsError> {
    while is_mount_point(target)? {
        match umount2(target, MntFlags::empty()) {
            Ok(()) => {}
            Err(Errno::EBUSY) => {
                umount2(target, MntFlags::MNT_DETACH).map_err(|source| RootfsError::Unmount {
                    target: target.to_path_buf(),
                    source,
                })?
            }
            Err(Errno::EINVAL | Errno::ENOENT) => return Ok(()),
            Err(source) => {
                return Err(RootfsError::Unmount {
                    target: target.to_path_buf(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Whether `path` is a mount point in this process's mount namespace.
pub fn is_mount_point(path: &Path) -> Result<bool, RootfsError> {
    let path = match path.canonicalize() {
        Ok(path) => path,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(RootfsError::MountInfo(e)),
    };
    let table = std::fs::read_to_string("/proc/self/mountinfo").map_err(RootfsError::MountInfo)?;
    Ok(table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount_point| Path::new(&unescape(mount_point)) == path))
}

/// mountinfo escapes space, tab, newline and backslash as octal `\NNN`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("x");
            if let Ok(value) = u8::from_str_radix(digits, 8) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/end\"), r"/end\");
    }
}
