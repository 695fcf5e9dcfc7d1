//! The container runtime of the node agent, on youki's libcontainer.
//!
//! ```text
//!  agent (tokio; calls these blocking functions in spawn_blocking)
//!    │ start: bundle dir, overlay rootfs, config.json ──spawn──▶ berth shim run (detached)
//!    │ status/list: state.json written by the shim            │ libcontainer create/start
//!    │ signal/kill_all: the init pid / the cgroup's procs      ▼
//!    │ exec ──spawn──▶ berth shim exec (libcontainer tenant)  container init ──▶ pipes ──▶ log
//!    └ remove: libcontainer delete, cgroup dirs, umount, bundle dir
//! ```
//!
//! libcontainer's create clones with clone3 and changes the process-wide working directory, so
//! it only ever runs in a single-threaded `berth shim` process (see [`shim`]), one per
//! container. The shim is the container's parent and reaper, owns its stdout/stderr, writes
//! them through [`crate::logfile::LogWriter`], records the exit (code, signal, OOM kill) in
//! the bundle's `state.json`, and keeps running when the agent restarts or dies: a restarted
//! agent calls [`Runtime::list`] and [`Runtime::status`] to re-adopt its containers.
//!
//! API (all blocking):
//! - [`Runtime::new`]`(root, shim_binary)`; [`Runtime::with_cgroup_parent`] (default `berth`).
//! - [`Runtime::start`]`(StartRequest) -> ContainerStatus`: returns once the container's
//!   process runs, or `Exited { exit_code: 128, message: Some(reason), started_at: None }` if
//!   it could not be started (e.g. executable not found).
//! - [`Runtime::status`], [`Runtime::list`], [`Runtime::signal`] (to the init),
//!   [`Runtime::kill_all`] (SIGKILL to the whole cgroup), [`Runtime::remove`] (idempotent;
//!   kills first if needed), [`Runtime::exec`] (a process in the container's namespaces and
//!   cgroup: [`ExecProcess`]).
//!
//! Layout under `root`: `bundles/<id>/` holds `config.json`, `shim.json`, `state.json`,
//! `shim.log` (the shim's own diagnostics), `rootfs/` (the overlay mount), `upper/` and
//! `work/`; `libcontainer/<id>/` is libcontainer's state. The cgroup is
//! `/<cgroup parent>/<id>` in every hierarchy; the parent itself is shared and stays.
//!
//! The runtime spec comes from [`spec::build`] (a pure function of the pod, the container and
//! the image config); the seccomp profile from [`seccomp`].

mod cgroups;
mod error;
mod executor;
pub mod rootfs;
pub mod seccomp;
pub mod shim;
pub mod spec;
mod state;

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use error::RuntimeError;
pub use shim::START_ERROR_EXIT_CODE;

use rootfs::Overlay;
use state::{ShimConfig, ShimState};

/// How long [`Runtime::start`] waits for the shim to report.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`Runtime::remove`] waits for killed processes and the shim to go.
const REMOVE_WAIT: Duration = Duration::from_secs(10);

/// Creates, watches and removes containers; cheap to share (`&self` everywhere).
#[derive(Clone, Debug)]
pub struct Runtime {
    bundles: PathBuf,
    libcontainer_root: PathBuf,
    shim_binary: PathBuf,
    cgroup_parent: String,
}

/// Everything needed to start one container.
#[derive(Clone, Debug)]
pub struct StartRequest {
    /// 1-128 characters of `[A-Za-z0-9_.+-]`; unique on this node.
    pub id: String,
    /// From [`spec::build`]; `root.path` and `linux.cgroupsPath` are set by the runtime.
    pub spec: oci_spec::runtime::Spec,
    /// Read-only image layers, topmost first.
    pub lowers: Vec<PathBuf>,
    /// The container's log file (CRI format, see [`crate::logfile`]), rotated by the shim.
    pub log_path: PathBuf,
    pub log_max_bytes: u64,
    pub log_max_files: usize,
}

/// What is known about a container's main process.
#[derive(Clone, Debug, PartialEq)]
pub enum ContainerStatus {
    Running {
        /// Host pid of the container's init.
        pid: i32,
        started_at: Timestamp,
    },
    Exited {
        /// 128+signal when killed by a signal; [`START_ERROR_EXIT_CODE`] when it never started.
        exit_code: i32,
        signal: Option<i32>,
        /// The kernel's OOM killer killed a process of the container.
        oom_killed: bool,
        /// `None` when the process never started.
        started_at: Option<Timestamp>,
        finished_at: Timestamp,
        /// Why it could not be started.
        message: Option<String>,
    },
    /// Neither running nor with a recorded exit: the shim is still starting, or died.
    Unknown,
}

/// A process started by [`Runtime::exec`]. Without a terminal, its stdio are the pipes here;
/// with one, `pty` is the terminal's master (stdin and stdout are then `None`). `stderr`
/// always carries the helper's own error message if the process could not be started.
#[derive(Debug)]
pub struct ExecProcess {
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
    pub pty: Option<OwnedFd>,
    helper: Child,
}

impl ExecProcess {
    /// Host pid of the `berth shim exec` helper (the process's parent).
    pub fn helper_pid(&self) -> u32 {
        self.helper.id()
    }

    /// Waits for the exit code: the process's own, 128+signal if it was killed, 126 or 127
    /// if it could not be started (127: not found).
    pub fn wait(&mut self) -> Result<i32, RuntimeError> {
        drop(self.stdin.take());
        let status = self
            .helper
            .wait()
            .map_err(RuntimeError::io("waiting for the exec helper"))?;
        Ok(exit_code(status))
    }

    /// The exit code if the process has exited.
    pub fn try_wait(&mut self) -> Result<Option<i32>, RuntimeError> {
        let status = self
            .helper
            .try_wait()
            .map_err(RuntimeError::io("waiting for the exec helper"))?;
        Ok(status.map(exit_code))
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

impl Runtime {
    /// `root` holds the bundles and libcontainer's state; `shim_binary` is the `berth` binary
    /// (run as `berth shim ...`).
    pub fn new(root: PathBuf, shim_binary: PathBuf) -> Result<Runtime, RuntimeError> {
        let bundles = root.join("bundles");
        let libcontainer_root = root.join("libcontainer");
        for dir in [&bundles, &libcontainer_root] {
            std::fs::create_dir_all(dir)
                .map_err(RuntimeError::io(format!("creating {}", dir.display())))?;
        }
        let absolute = |p: &Path| {
            p.canonicalize()
                .map_err(RuntimeError::io(format!("resolving {}", p.display())))
        };
        Ok(Runtime {
            bundles: absolute(&bundles)?,
            libcontainer_root: absolute(&libcontainer_root)?,
            shim_binary,
            cgroup_parent: "berth".to_string(),
        })
    }

    /// The cgroup (in every hierarchy) under which containers get `<parent>/<id>`.
    pub fn with_cgroup_parent(mut self, parent: impl Into<String>) -> Runtime {
        self.cgroup_parent = parent.into().trim_matches('/').to_string();
        self
    }

    /// The container's bundle directory (`upper/` in it holds the container's writes).
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.bundles.join(id)
    }

    /// `linux.cgroupsPath` of a container.
    pub fn cgroups_path(&self, id: &str) -> String {
        format!("/{}/{id}", self.cgroup_parent)
    }

    /// Mounts the rootfs, writes the bundle, and starts the shim; returns once the container's
    /// process runs, or with its start error recorded as an exit (see [`ContainerStatus`]).
    /// Errors are left for infrastructure failures; the container is then cleaned up.
    pub fn start(&self, request: StartRequest) -> Result<ContainerStatus, RuntimeError> {
        validate_id(&request.id)?;
        let id = request.id.clone();
        let bundle = self.bundle(&id);
        match std::fs::create_dir(&bundle) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(RuntimeError::AlreadyExists(id))
            }
            Err(e) => {
                return Err(RuntimeError::io(format!("creating {}", bundle.display()))(
                    e,
                ))
            }
        }
        let started = self.prepare(&bundle, request).and_then(|()| {
            self.spawn_shim(&id, &bundle)?;
            self.status(&id)
        });
        if started.is_err() {
            if let Err(e) = self.remove(&id) {
                tracing::warn!(%id, "cleaning up after a failed start: {e}");
            }
        }
        started
    }

    fn prepare(&self, bundle: &Path, request: StartRequest) -> Result<(), RuntimeError> {
        let overlay = Overlay {
            lowers: request.lowers,
            upper: bundle.join("upper"),
            work: bundle.join("work"),
            target: bundle.join("rootfs"),
        };
        overlay.mount()?;

        let mut spec = request.spec;
        let mut root = spec.root().clone().unwrap_or_default();
        root.set_path(overlay.target.clone());
        spec.set_root(Some(root));
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_cgroups_path(Some(PathBuf::from(self.cgroups_path(&request.id))));
        spec.set_linux(Some(linux));
        spec.save(bundle.join("config.json"))
            .map_err(|e| RuntimeError::Spec(e.to_string()))?;

        if let Some(dir) = request.log_path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(RuntimeError::io(format!("creating {}", dir.display())))?;
        }
        ShimConfig {
            id: request.id.clone(),
            libcontainer_root: self.libcontainer_root.clone(),
            cgroups_path: self.cgroups_path(&request.id),
            log_path: request.log_path,
            log_max_bytes: request.log_max_bytes,
            log_max_files: request.log_max_files,
        }
        .save(bundle)
        .map_err(RuntimeError::io("writing shim.json"))
    }

    /// Starts `berth shim run` and waits for its "ok" (the state file is written by then).
    /// The process we spawn forks the real shim and exits at once, so we reap it here and the
    /// shim is nobody's zombie-to-be.
    fn spawn_shim(&self, id: &str, bundle: &Path) -> Result<(), RuntimeError> {
        let shim_log = bundle.join("shim.log");
        let stderr = File::create(&shim_log).map_err(RuntimeError::io("creating shim.log"))?;
        let mut child = Command::new(&self.shim_binary)
            .arg("shim")
            .arg("run")
            .arg(bundle)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(RuntimeError::io(format!(
                "running {}",
                self.shim_binary.display()
            )))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let reply = read_line(stdout, START_TIMEOUT);
        let _ = child.wait();
        let fail = |message: String| {
            let log = std::fs::read_to_string(&shim_log).unwrap_or_default();
            let log = log.trim();
            Err(RuntimeError::Shim {
                id: id.to_string(),
                message: if log.is_empty() {
                    message
                } else {
                    format!("{message}; shim log: {log}")
                },
            })
        };
        match reply {
            Ok(line) if line == "ok" => Ok(()),
            Ok(line) if line.is_empty() => fail("exited without reporting".to_string()),
            Ok(line) => fail(line),
            Err(e) => fail(e),
        }
    }

    /// The container's state as the shim last recorded it, checked against the live process.
    pub fn status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let bundle = self.existing_bundle(id)?;
        let Some(state) =
            ShimState::load(&bundle).map_err(RuntimeError::io(format!("reading {id}'s state")))?
        else {
            return Ok(ContainerStatus::Unknown);
        };
        let started_at = state.started_at.as_deref().and_then(|t| t.parse().ok());
        if let Some(exit) = state.exit {
            return Ok(ContainerStatus::Exited {
                exit_code: exit.exit_code,
                signal: exit.signal,
                oom_killed: exit.oom_killed,
                started_at,
                finished_at: exit.finished_at.parse().unwrap_or(Timestamp::UNIX_EPOCH),
                message: exit.message,
            });
        }
        match state.container {
            // A shim still alive is about to record the exit of a container that just ended.
            Some(init) if init.alive() || state.shim.is_some_and(|s| s.alive()) => {
                Ok(ContainerStatus::Running {
                    pid: init.pid,
                    started_at: started_at.unwrap_or(Timestamp::UNIX_EPOCH),
                })
            }
            _ => Ok(ContainerStatus::Unknown),
        }
    }

    /// Removes the containers' parent cgroup where it is empty (other runtimes on the host
    /// may share it: a busy one is left alone).
    pub fn remove_cgroup_parent(&self) {
        for dir in cgroups::dirs(&format!("/{}", self.cgroup_parent)) {
            let _ = std::fs::remove_dir(dir);
        }
    }

    /// Ids of all containers with a bundle on disk, sorted.
    pub fn list(&self) -> Result<Vec<String>, RuntimeError> {
        let entries = std::fs::read_dir(&self.bundles).map_err(RuntimeError::io(format!(
            "listing {}",
            self.bundles.display()
        )))?;
        let mut ids: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Sends `signal` to the container's init (pid 1 inside: it only gets signals it handles).
    pub fn signal(&self, id: &str, signal: Signal) -> Result<(), RuntimeError> {
        let bundle = self.existing_bundle(id)?;
        let init = ShimState::load(&bundle)
            .ok()
            .flatten()
            .and_then(|s| s.container)
            .filter(|init| init.alive())
            .ok_or_else(|| RuntimeError::NotRunning(id.to_string()))?;
        match kill(Pid::from_raw(init.pid), signal) {
            Ok(()) => Ok(()),
            Err(Errno::ESRCH) => Err(RuntimeError::NotRunning(id.to_string())),
            Err(source) => Err(RuntimeError::Signal {
                id: id.to_string(),
                source,
            }),
        }
    }

    /// SIGKILL to every process in the container's cgroup (and its init).
    pub fn kill_all(&self, id: &str) -> Result<(), RuntimeError> {
        let bundle = self.existing_bundle(id)?;
        let state = ShimState::load(&bundle).ok().flatten();
        self.kill_processes(&bundle, id, state.as_ref());
        Ok(())
    }

    fn kill_processes(&self, bundle: &Path, id: &str, state: Option<&ShimState>) {
        if let Some(init) = state.and_then(|s| s.container).filter(|i| i.alive()) {
            let _ = kill(Pid::from_raw(init.pid), Signal::SIGKILL);
        }
        for pid in cgroups::procs(&self.cgroups_path_of(bundle, id)) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// Removes everything of the container: its processes (killed if still running), the
    /// shim (given time to record the exit), libcontainer's state, the cgroup directories, the
    /// overlay mount and the bundle. Idempotent.
    pub fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        validate_id(id)?;
        let bundle = self.bundle(id);
        let cgroups_path = self.cgroups_path_of(&bundle, id);
        let state = ShimState::load(&bundle).ok().flatten();
        let init_alive = || {
            state
                .as_ref()
                .and_then(|s| s.container)
                .is_some_and(|i| i.alive())
        };
        if init_alive() || !cgroups::procs(&cgroups_path).is_empty() {
            self.kill_processes(&bundle, id, state.as_ref());
            wait_until(REMOVE_WAIT, || {
                !init_alive() && cgroups::procs(&cgroups_path).is_empty()
            });
        }
        if let Some(shim) = state.as_ref().and_then(|s| s.shim) {
            if !wait_until(REMOVE_WAIT, || !shim.alive()) {
                tracing::warn!(%id, pid = shim.pid, "the shim did not exit; killing it");
                let _ = kill(Pid::from_raw(shim.pid), Signal::SIGKILL);
                wait_until(REMOVE_WAIT, || !shim.alive());
            }
        }

        let libcontainer_dir = self.libcontainer_root.join(id);
        if libcontainer_dir.exists() {
            match libcontainer::container::Container::load(libcontainer_dir.clone()) {
                Ok(mut container) => {
                    if let Err(e) = container.delete(true) {
                        tracing::warn!(%id, "libcontainer delete: {e}");
                    }
                }
                Err(e) => tracing::warn!(%id, "loading libcontainer state: {e}"),
            }
            remove_dir_all(&libcontainer_dir)?;
        }
        // libcontainer removes the container's cgroup; this catches what it left.
        cgroups::remove(&cgroups_path)
            .map_err(RuntimeError::io(format!("removing cgroup {cgroups_path}")))?;

        let rootfs = bundle.join("rootfs");
        rootfs::unmount(&rootfs)?;
        if rootfs::is_mount_point(&rootfs)? {
            return Err(RuntimeError::StillMounted { path: rootfs });
        }
        remove_dir_all(&bundle)
    }

    /// Runs `argv` in the running container (its namespaces, cgroup, user, capabilities, env
    /// and seccomp profile) through a `berth shim exec` helper; `tty` gives it a terminal.
    pub fn exec(&self, id: &str, argv: &[String], tty: bool) -> Result<ExecProcess, RuntimeError> {
        if argv.is_empty() {
            return Err(RuntimeError::Exec("no command".to_string()));
        }
        if !matches!(self.status(id)?, ContainerStatus::Running { .. }) {
            return Err(RuntimeError::NotRunning(id.to_string()));
        }
        let bundle = self.bundle(id);
        let mut command = Command::new(&self.shim_binary);
        command.arg("shim").arg("exec").arg(&bundle);
        let console = if tty {
            // In the temp dir, not the bundle: a socket path must stay under 108 bytes.
            let path = std::env::temp_dir().join(format!(
                "berth-console-{}-{}.sock",
                std::process::id(),
                Timestamp::now().as_nanosecond() % 1_000_000_000_000
            ));
            let listener = UnixListener::bind(&path)
                .map_err(RuntimeError::io(format!("binding {}", path.display())))?;
            command.arg("--console-socket").arg(&path);
            command.stdin(Stdio::null()).stdout(Stdio::null());
            Some((listener, path))
        } else {
            command.stdin(Stdio::piped()).stdout(Stdio::piped());
            None
        };
        command.arg("--").args(argv).stderr(Stdio::piped());
        let spawned = command
            .spawn()
            .map_err(|e| RuntimeError::Exec(format!("{}: {e}", self.shim_binary.display())));
        let mut helper = match spawned {
            Ok(helper) => helper,
            Err(e) => {
                if let Some((_, path)) = &console {
                    let _ = std::fs::remove_file(path);
                }
                return Err(e);
            }
        };
        let pty = match console {
            None => None,
            Some((listener, path)) => {
                let received = receive_pty(&listener, &mut helper, START_TIMEOUT);
                let _ = std::fs::remove_file(&path);
                match received {
                    Ok(pty) => pty,
                    Err(e) => {
                        let _ = helper.kill();
                        let _ = helper.wait();
                        return Err(e);
                    }
                }
            }
        };
        Ok(ExecProcess {
            stdin: helper.stdin.take(),
            stdout: helper.stdout.take(),
            stderr: helper.stderr.take(),
            pty,
            helper,
        })
    }

    fn existing_bundle(&self, id: &str) -> Result<PathBuf, RuntimeError> {
        validate_id(id)?;
        let bundle = self.bundle(id);
        if bundle.is_dir() {
            Ok(bundle)
        } else {
            Err(RuntimeError::NotFound(id.to_string()))
        }
    }

    fn cgroups_path_of(&self, bundle: &Path, id: &str) -> String {
        ShimConfig::load(bundle)
            .map(|c| c.cgroups_path)
            .unwrap_or_else(|_| self.cgroups_path(id))
    }
}

/// libcontainer's rules for ids (they also name files and cgroups).
fn validate_id(id: &str) -> Result<(), RuntimeError> {
    let valid = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(RuntimeError::InvalidId(id.to_string()))
    }
}

fn remove_dir_all(dir: &Path) -> Result<(), RuntimeError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RuntimeError::io(format!("removing {}", dir.display()))(e)),
    }
}

/// Polls `done` (every 1 ms at first, backing off to 10 ms) until it holds or `timeout`
/// passes; whether it held.
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// Reads the shim's one-line reply (without the newline); empty if it exited without one.
fn read_line(mut pipe: ChildStdout, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no reply within {timeout:?}"));
        }
        let millis = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, millis) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        match pipe.read(&mut buf) {
            Ok(0) => return Ok(String::from_utf8_lossy(&line).trim().to_string()),
            Ok(n) => {
                line.extend_from_slice(&buf[..n]);
                if let Some(end) = line.iter().position(|&b| b == b'\n') {
                    return Ok(String::from_utf8_lossy(&line[..end]).trim().to_string());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the shim's reply: {e}")),
        }
    }
}

/// Accepts the console socket connection from the exec'd process's init and receives the
/// terminal master (SCM_RIGHTS). `None` if the helper exited first (it failed to start the
/// process; its stderr says why).
fn receive_pty(
    listener: &UnixListener,
    helper: &mut Child,
    timeout: Duration,
) -> Result<Option<OwnedFd>, RuntimeError> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;

    let deadline = Instant::now() + timeout;
    listener
        .set_nonblocking(true)
        .map_err(RuntimeError::io("console socket"))?;
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if helper
                    .try_wait()
                    .map_err(RuntimeError::io("exec helper"))?
                    .is_some()
                {
                    return Ok(None);
                }
                if Instant::now() >= deadline {
                    return Err(RuntimeError::Exec(
                        "no terminal from the container in time".to_string(),
                    ));
                }
                let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, PollTimeout::from(20u8));
            }
            Err(e) => return Err(RuntimeError::io("accepting on the console socket")(e)),
        }
    };
    stream
        .set_nonblocking(false)
        .map_err(RuntimeError::io("console socket"))?;
    let mut data = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut data)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let message = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| RuntimeError::Exec(format!("receiving the terminal: {e}")))?;
    for cmsg in message
        .cmsgs()
        .map_err(|e| RuntimeError::Exec(format!("receiving the terminal: {e}")))?
    {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor in our table for us.
                return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
    }
    Err(RuntimeError::Exec(
        "the console socket message had no terminal".to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_libcontainer_rules() {
        for good in ["a", "pod-1_main.0", "x+y", &"a".repeat(128)] {
            assert!(validate_id(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", &"a".repeat(129), "ü"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }
}
