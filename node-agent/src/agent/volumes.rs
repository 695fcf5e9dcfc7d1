//! A pod's volumes on the node, under `DATA_DIR/pods/<uid>/volumes/<name>/`, made before its
//! containers start and removed with the pod (blocking file and mount work; the pod worker
//! calls it off the async threads).
//!
//! - `emptyDir`: a directory (mode 0777, as the kubelet makes it) shared by the pod's
//!   containers; `medium: Memory` makes it a tmpfs, `sizeLimit` its `size=`. It outlives
//!   container restarts and goes with the pod.
//! - `configMap` and `secret`: a file per key (or per item), written the kubelet's atomic way
//!   (`AtomicWriter`): the files go into a fresh `..<timestamp>` directory, the `..data`
//!   symlink is swapped to it with one rename, and each top-level name is a symlink through
//!   `..data`; a reader sees the old set or the new one, never a mix. A secret volume is a
//!   tmpfs of its own: secret data never touches the disk.
//!
//! Containers get them as bind mounts (see `runtime::spec`); a `subPath` is resolved here
//! and must stay inside its volume (a container could plant a symlink in an emptyDir that
//! leads out of it; the check runs at every container start, so a swap between the check and
//! the mount is not ruled out — the kubelet closes that with a file-descriptor dance).
//!
//! Tear-down unmounts every mount under the pod's volume directory, deepest first, then
//! removes it; the agent also runs it for pods it finds on the node but no longer bound to it.

use super::config::VolumeFile;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// The symlink to the current payload directory, as the kubelet names it.
const DATA_LINK: &str = "..data";
const DATA_LINK_TMP: &str = "..data_tmp";

/// A directory, made with `mode` if it does not exist yet.
pub fn ensure_dir(dir: &Path, mode: u32) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// A tmpfs on `dir` (made if missing) unless one is mounted there already (the agent
/// restarted): `mode` for its root, `size` in bytes if given.
pub fn ensure_tmpfs(dir: &Path, size: Option<i64>, mode: u32) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if is_mount_point(dir)? {
        return Ok(());
    }
    let mut options = format!("mode={mode:o}");
    if let Some(size) = size {
        options.push_str(&format!(",size={size}"));
    }
    use nix::mount::MsFlags;
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(io::Error::from)
}

/// Mount points (as /proc/self/mountinfo shows them, unescaped) at or under `dir`, deepest
/// first.
fn mounts_at_or_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let dir = dir.canonicalize()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| m.starts_with(&dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts.dedup();
    Ok(mounts)
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|o| o.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let (b'\\', Some(octal)) = (bytes[i], octal) {
            let value = octal.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
            if let Ok(value) = u8::try_from(value) {
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

fn is_mount_point(dir: &Path) -> io::Result<bool> {
    let dir = dir.canonicalize()?;
    Ok(mounts_at_or_under(&dir)?.contains(&dir))
}

/// Unmounts everything at or under `dir` (deepest first; lazily if busy) and removes it.
pub fn tear_down(dir: &Path) -> io::Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    for mount in mounts_at_or_under(dir)? {
        use nix::mount::{umount2, MntFlags};
        if let Err(e) = umount2(&mount, MntFlags::empty()) {
            tracing::warn!(mount = %mount.display(), "unmounting a volume: {e}; detaching it");
            umount2(&mount, MntFlags::MNT_DETACH).map_err(io::Error::from)?;
        }
    }
    std::fs::remove_dir_all(dir)
}

/// Makes `dir` hold exactly `files` (kubelet's AtomicWriter): unchanged content is left as
/// it is; otherwise a new payload directory is written and swapped in with one rename.
/// Returns whether anything changed.
pub fn write_files(dir: &Path, files: &[VolumeFile]) -> io::Result<bool> {
    for file in files {
        check_relative(&file.path)?;
    }
    let wanted: BTreeMap<String, (Vec<u8>, u32)> = files
        .iter()
        .map(|f| (f.path.clone(), (f.data.clone(), f.mode)))
        .collect();
    let data_link = dir.join(DATA_LINK);
    let old = std::fs::read_link(&data_link).ok();
    let unchanged = old
        .as_ref()
        .is_some_and(|old| read_payload(&dir.join(old)).ok().as_ref() == Some(&wanted));
    if !unchanged {
        let (name, payload) = new_payload_dir(dir)?;
        std::fs::set_permissions(&payload, std::fs::Permissions::from_mode(0o755))?;
        for (path, (data, mode)) in &wanted {
            let target = payload.join(path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&target, data)?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode))?;
        }
        let tmp = dir.join(DATA_LINK_TMP);
        let _ = std::fs::remove_file(&tmp);
        symlink(&name, &tmp)?;
        std::fs::rename(&tmp, &data_link)?;
    }
    // The user-visible names: a symlink through ..data per top-level entry.
    let top: BTreeSet<String> = wanted
        .keys()
        .filter_map(|p| p.split('/').next().map(str::to_string))
        .collect();
    for name in &top {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_LINK).join(name), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") {
            // Payload directories other than the current one are old: they go.
            let current = std::fs::read_link(&data_link).ok();
            let is_payload_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_payload_dir && current.as_deref() != Some(Path::new(&name)) {
                std::fs::remove_dir_all(entry.path())?;
            }
        } else if !top.contains(&name)
            && std::fs::read_link(entry.path()).is_ok_and(|t| t.starts_with(DATA_LINK))
        {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(!unchanged)
}

/// A fresh `..<timestamp>.<n>` directory in `dir` (the kubelet's naming).
fn new_payload_dir(dir: &Path) -> io::Result<(String, PathBuf)> {
    let now = jiff::Timestamp::now();
    let stamp = now.strftime("%Y_%m_%d_%H_%M_%S");
    let nanos = now.subsec_nanosecond();
    for n in 0.. {
        let name = format!("..{stamp}.{:09}", nanos as i64 + n);
        let path = dir.join(&name);
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok((name, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("some name is free")
}

fn check_relative(path: &str) -> io::Result<()> {
    let ok = !path.is_empty()
        && !path.starts_with("..")
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{path:?} is not a relative path inside the volume"),
        ))
    }
}

/// The regular files under a payload directory: relative path → (content, mode).
fn read_payload(dir: &Path) -> io::Result<BTreeMap<String, (Vec<u8>, u32)>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                let path = entry.path();
                let relative = path
                    .strip_prefix(dir)
                    .expect("walked from dir")
                    .to_string_lossy()
                    .into_owned();
                let mode = entry.metadata()?.permissions().mode() & 0o777;
                files.insert(relative, (std::fs::read(&path)?, mode));
            }
        }
    }
    Ok(files)
}

/// Where a mount with `sub_path` of the volume at `volume_dir` comes from: the resolved path,
/// which must lie inside the volume. A missing one is made as a directory when `create` (an
/// emptyDir), never through a symlink.
pub fn sub_path_source(volume_dir: &Path, sub_path: &str, create: bool) -> Result<PathBuf, String> {
    let root = volume_dir
        .canonicalize()
        .map_err(|e| format!("volume directory {}: {e}", volume_dir.display()))?;
    check_relative(sub_path.trim_end_matches('/')).map_err(|e| e.to_string())?;
    if create {
        let mut current = root.clone();
        for part in Path::new(sub_path).components() {
            current.push(part);
            match std::fs::symlink_metadata(&current) {
                Ok(meta) if meta.file_type().is_symlink() => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    std::fs::create_dir(&current)
                        .and_then(|_| {
                            std::fs::set_permissions(
                                &current,
                                std::fs::Permissions::from_mode(0o777),
                            )
                        })
                        .map_err(|e| format!("creating subPath {sub_path:?}: {e}"))?;
                }
                Err(e) => return Err(format!("subPath {sub_path:?}: {e}")),
            }
        }
    }
    let resolved = root
        .join(sub_path)
        .canonicalize()
        .map_err(|e| format!("subPath {sub_path:?}: {e}"))?;
    if !resolved.starts_with(&root) {
        return Err(format!("subPath {sub_path:?} leads outside of its volume"));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &str, mode: u32) -> VolumeFile {
        VolumeFile {
            path: path.into(),
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    fn read(dir: &Path, path: &str) -> String {
        std::fs::read_to_string(dir.join(path)).unwrap()
    }

    #[test]
    fn files_are_written_through_data_and_swapped_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cfg");
        ensure_dir(&dir, 0o755).unwrap();
        let first = [file("a", "1", 0o644), file("conf/b.txt", "2", 0o600)];
        assert!(write_files(&dir, &first).unwrap());
        assert_eq!(read(&dir, "a"), "1");
        assert_eq!(read(&dir, "conf/b.txt"), "2");
        assert_eq!(
            std::fs::read_link(dir.join("a")).unwrap(),
            Path::new("..data/a")
        );
        let mode = std::fs::metadata(dir.join("conf/b.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let payload = std::fs::read_link(dir.join(DATA_LINK)).unwrap();

        // The same content: nothing is rewritten.
        assert!(!write_files(&dir, &first).unwrap());
        assert_eq!(std::fs::read_link(dir.join(DATA_LINK)).unwrap(), payload);

        // New content: a new payload, the old one and stale names gone.
        assert!(write_files(&dir, &[file("a", "3", 0o644), file("c", "4", 0o644)]).unwrap());
        assert_eq!(read(&dir, "a"), "3");
        assert_eq!(read(&dir, "c"), "4");
        assert!(std::fs::symlink_metadata(dir.join("conf")).is_err());
        assert_ne!(std::fs::read_link(dir.join(DATA_LINK)).unwrap(), payload);
        let names: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}"); // a, c, ..data and one payload directory

        assert!(write_files(&dir, &[file("../x", "", 0o644)]).is_err());
        assert!(write_files(&dir, &[file("/x", "", 0o644)]).is_err());
    }

    #[test]
    fn sub_paths_stay_inside_their_volume() {
        let tmp = tempfile::tempdir().unwrap();
        let volume = tmp.path().join("scratch");
        ensure_dir(&volume, 0o777).unwrap();
        let made = sub_path_source(&volume, "a/b", true).unwrap();
        assert!(made.is_dir());
        assert!(made.starts_with(volume.canonicalize().unwrap()));
        // A symlink planted in the volume that leads out of it is refused, and nothing is
        // created through it.
        symlink(tmp.path(), volume.join("escape")).unwrap();
        let err = sub_path_source(&volume, "escape/new", true).unwrap_err();
        assert!(err.contains("subPath"), "{err}");
        assert!(!tmp.path().join("new").exists());
        symlink(tmp.path(), volume.join("out")).unwrap();
        let err = sub_path_source(&volume, "out", false).unwrap_err();
        assert!(err.contains("outside"), "{err}");
        // A symlink inside the volume is followed (a configMap key through ..data).
        symlink("a", volume.join("inside")).unwrap();
        assert_eq!(sub_path_source(&volume, "inside/b", false).unwrap(), made);
        assert!(sub_path_source(&volume, "missing", false).is_err());
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape_mountinfo(r"/plain\"), r"/plain\");
    }
}
