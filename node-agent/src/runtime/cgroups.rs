//! The container's cgroup as files, for what libcontainer does not do for us: listing its
//! processes (to kill them all), reading its OOM-kill count before it is removed, and removing
//! directories it leaves. Works on cgroup v1, v2 and the hybrid layout: every mounted hierarchy
//! is looked at.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Mount points of all cgroup hierarchies (v1 controllers and the v2 unified tree).
pub(crate) fn hierarchies() -> Vec<PathBuf> {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    table
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            let mount_point = left.split(' ').nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .collect()
}

/// The container's directory in every hierarchy where it exists.
pub(crate) fn dirs(cgroups_path: &str) -> Vec<PathBuf> {
    let relative = cgroups_path.trim_start_matches('/');
    if relative.is_empty() {
        return Vec::new();
    }
    hierarchies()
        .into_iter()
        .map(|h| h.join(relative))
        .filter(|d| d.is_dir())
        .collect()
}

/// Every process in the cgroup (in any hierarchy).
pub(crate) fn procs(cgroups_path: &str) -> Vec<i32> {
    let mut pids: Vec<i32> = dirs(cgroups_path)
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Whether the kernel's OOM killer killed a process of this cgroup: v1 `memory.oom_control`
/// or v2 `memory.events`, line `oom_kill N` with N > 0.
pub(crate) fn oom_killed(cgroups_path: &str) -> bool {
    dirs(cgroups_path).iter().any(|dir| {
        ["memory.oom_control", "memory.events"].iter().any(|file| {
            std::fs::read_to_string(dir.join(file))
                .ok()
                .and_then(|text| {
                    text.lines()
                        .find_map(|l| l.strip_prefix("oom_kill "))
                        .and_then(|n| n.trim().parse::<u64>().ok())
                })
                .is_some_and(|n| n > 0)
        })
    })
}

/// Removes the cgroup's directories (deepest first), retrying while exiting processes leave.
pub(crate) fn remove(cgroups_path: &str) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    for dir in dirs(cgroups_path) {
        remove_tree(&dir, deadline)?;
    }
    Ok(())
}

fn remove_tree(dir: &Path, deadline: Instant) -> std::io::Result<()> {
    // Child cgroups first; plain files in a cgroup directory cannot (and need not) be removed.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path(), deadline)?;
            }
        }
    }
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(nix::libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hierarchies_and_this_process() {
        assert!(
            !hierarchies().is_empty(),
            "no cgroup filesystem mounted on this machine"
        );
        assert!(dirs("").is_empty());
        assert!(dirs("/berth-no-such-cgroup").is_empty());
        assert!(!oom_killed("/berth-no-such-cgroup"));
    }
}
