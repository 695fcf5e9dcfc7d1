//! The files a container's bundle holds besides the OCI `config.json`: what the agent tells the
//! shim (`shim.json`) and what the shim reports back (`state.json`, replaced atomically). The
//! state file outlives the agent: a restarted agent reads it to re-adopt its containers.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub(crate) const SHIM_CONFIG: &str = "shim.json";
pub(crate) const STATE: &str = "state.json";

/// How the shim runs one container; written by [`super::Runtime::start`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ShimConfig {
    pub id: String,
    /// libcontainer's state directory (it makes `<root>/<id>`).
    pub libcontainer_root: PathBuf,
    /// `linux.cgroupsPath`, e.g. `/berth/<id>`.
    pub cgroups_path: String,
    pub log_path: PathBuf,
    pub log_max_bytes: u64,
    pub log_max_files: usize,
}

/// A process identified so that a reused pid is not mistaken for it: the pid and its start
/// time in clock ticks since boot (`/proc/<pid>/stat` field 22).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcessId {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcessId {
    /// The process with this pid now (possibly already a zombie).
    pub fn of(pid: i32) -> Option<ProcessId> {
        let (_, start_time) = stat(pid)?;
        Some(ProcessId { pid, start_time })
    }

    /// Still running (not a zombie) and still the same process.
    pub fn alive(&self) -> bool {
        matches!(stat(self.pid), Some((state, start)) if state != 'Z' && start == self.start_time)
    }
}

/// State letter and start time from /proc/<pid>/stat.
fn stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some((state, start_time))
}

/// What the shim knows; each update replaces the whole file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct ShimState {
    pub shim: Option<ProcessId>,
    /// The container's init process (host pid).
    pub container: Option<ProcessId>,
    /// RFC 3339.
    pub started_at: Option<String>,
    pub exit: Option<ExitRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ExitRecord {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    /// RFC 3339.
    pub finished_at: String,
    pub message: Option<String>,
}

impl ShimConfig {
    pub fn load(bundle: &Path) -> io::Result<ShimConfig> {
        let bytes = std::fs::read(bundle.join(SHIM_CONFIG))?;
        serde_json::from_slice(&bytes).map_err(io::Error::other)
    }

    pub fn save(&self, bundle: &Path) -> io::Result<()> {
        write_atomically(&bundle.join(SHIM_CONFIG), &serde_json::to_vec_pretty(self)?)
    }
}

impl ShimState {
    /// `None` if the shim has not written it yet.
    pub fn load(bundle: &Path) -> io::Result<Option<ShimState>> {
        match std::fs::read(bundle.join(STATE)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(io::Error::other),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, bundle: &Path) -> io::Result<()> {
        write_atomically(&bundle.join(STATE), &serde_json::to_vec_pretty(self)?)
    }
}

/// Write to a temporary file and rename it over `path`: readers see the old or the new file.
/// No fsync: the state describes processes, which do not survive the crash an fsync guards
/// against (a torn file after a reboot reads as an error, and the container is gone anyway).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessId::of(std::process::id() as i32).expect("own stat");
        assert!(me.alive());
        let other = ProcessId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.alive());
        assert!(ProcessId::of(i32::MAX).is_none());
    }

    #[test]
    fn state_round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ShimState::load(dir.path()).unwrap().is_none());
        let state = ShimState {
            started_at: Some("2024-01-01T00:00:00Z".into()),
            exit: Some(ExitRecord {
                exit_code: 137,
                signal: Some(9),
                oom_killed: true,
                finished_at: "2024-01-01T00:00:01Z".into(),
                message: None,
            }),
            ..Default::default()
        };
        state.save(dir.path()).unwrap();
        let loaded = ShimState::load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.exit.unwrap().exit_code, 137);
        assert!(!dir.path().join("state.tmp").exists());
    }
}
