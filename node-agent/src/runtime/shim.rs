//! The per-container shim: the `berth` binary re-executed as `berth shim ...`, single-threaded,
//! before any tokio runtime or logging exists (libcontainer clones with clone3 and changes the
//! working directory, which must not happen inside the agent).
//!
//! ```text
//!  agent ──spawn──▶ berth shim run BUNDLE ──fork──▶ shim (setsid, child subreaper)
//!    ▲                  (exits at once,               │ libcontainer create + start
//!    │                   the agent reaps it)          ├──▶ container init (its child)
//!    └── "ok" on stdout, then state.json ◀────────────┤ poll: stdout/stderr pipes ──▶ LogWriter
//!                                                     └ SIGCHLD (signalfd) ──▶ exit + OOM ──▶ state.json
//!
//!  agent ──spawn──▶ berth shim exec BUNDLE [--console-socket PATH] -- ARGV
//!                       libcontainer tenant in the container's namespaces and cgroup,
//!                       waits for it and exits with its exit code
//! ```
//!
//! `run` outlives the agent: it is in its own session, not the agent's child, and the state
//! file it keeps is how a restarted agent finds the container again.

use std::error::Error;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, pipe2, ForkResult, Pid};

use super::executor::SeccompExecutor;
use super::state::{ExitRecord, ProcessId, ShimConfig, ShimState};
use super::{cgroups, seccomp};
use crate::logfile::{LogWriter, Stream};

/// The exit code recorded when the container's process could not be started (containerd and
/// the kubelet report 128 with reason StartError).
pub const START_ERROR_EXIT_CODE: i32 = 128;

/// After the container's init exits, how long the shim keeps reading output still in the
/// pipes (normally they reach EOF at once: the whole pid namespace dies with its init).
const DRAIN: Duration = Duration::from_secs(2);

const USAGE: &str =
    "usage: berth shim run BUNDLE | berth shim exec BUNDLE [--console-socket PATH] -- ARGV...";

/// Entry point of `berth shim ...` (the berth binary re-executed, single-threaded).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let mut args = args.into_iter();
    match args.next().as_deref().and_then(OsStr::to_str) {
        Some("run") => match args.next() {
            Some(bundle) => run(Path::new(&bundle)),
            None => usage(),
        },
        Some("exec") => exec(args.collect()),
        _ => usage(),
    }
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

/// `berth shim run BUNDLE`: detach, create and start the container, report to the agent on
/// stdout, then supervise the container until it exits.
fn run(bundle: &Path) -> ExitCode {
    let config = match ShimConfig::load(bundle) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("berth shim: reading {}: {e}", bundle.display());
            return ExitCode::FAILURE;
        }
    };
    // SAFETY: `berth shim` branches off in main before any other thread exists.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => return ExitCode::SUCCESS,
        Ok(ForkResult::Child) => {}
        Err(e) => {
            eprintln!("berth shim: fork: {e}");
            return ExitCode::FAILURE;
        }
    }
    // Our own session: not killed with the agent's process group or terminal.
    let _ = nix::unistd::setsid();
    // Orphans of the container (reparented up the tree) are reaped here, not by the host init.
    let _ = nix::sys::prctl::set_child_subreaper(true);

    let mut state = ShimState {
        shim: ProcessId::of(nix::unistd::getpid().as_raw()),
        ..ShimState::default()
    };
    let started = LogWriter::open(&config.log_path, config.log_max_bytes, config.log_max_files)
        .map_err(|e| format!("opening the log file {}: {e}", config.log_path.display()))
        .and_then(|log| create_and_start(&config, bundle).map(|c| (log, c)));
    let (mut log, container) = match started {
        Ok(started) => started,
        Err(message) => {
            eprintln!("berth shim: {message}");
            state.exit = Some(ExitRecord {
                exit_code: START_ERROR_EXIT_CODE,
                signal: None,
                oom_killed: false,
                finished_at: Timestamp::now().to_string(),
                message: Some(message),
            });
            report(state.save(bundle));
            return ExitCode::SUCCESS;
        }
    };
    state.container = ProcessId::of(container.pid.as_raw());
    state.started_at = Some(Timestamp::now().to_string());
    report(state.save(bundle));
    // libcontainer left the working directory in its state directory.
    let _ = std::env::set_current_dir("/");

    let status = supervise(&container, &mut log);
    let (exit_code, signal) = match status {
        WaitStatus::Exited(_, code) => (code, None),
        WaitStatus::Signaled(_, signal, _) => (128 + signal as i32, Some(signal as i32)),
        _ => (-1, None),
    };
    let oom_killed = cgroups::oom_killed(&config.cgroups_path);
    if let Err(e) = log.finish() {
        eprintln!("berth shim: flushing the log: {e}");
    }
    state.exit = Some(ExitRecord {
        exit_code,
        signal,
        oom_killed,
        finished_at: Timestamp::now().to_string(),
        message: None,
    });
    if let Err(e) = state.save(bundle) {
        eprintln!("berth shim: writing the exit state: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Tells the agent (waiting on our stdout) that the state file is written, then lets go of
/// the pipe so the agent's read ends.
fn report(saved: std::io::Result<()>) {
    let line = match saved {
        Ok(()) => "ok\n".to_string(),
        Err(e) => format!("error writing the state file: {e}\n"),
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(line.as_bytes());
    let _ = stdout.flush();
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
}

/// A started container: its init and the read ends of its output pipes.
struct Started {
    pid: Pid,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

fn create_and_start(config: &ShimConfig, bundle: &Path) -> Result<Started, String> {
    let filter = seccomp::default_profile().map_err(|e| e.to_string())?;
    let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
    let (stdout, stdout_w) = pipe()?;
    let (stderr, stderr_w) = pipe()?;
    let stdin = File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    std::fs::create_dir_all(&config.libcontainer_root)
        .map_err(|e| format!("{}: {e}", config.libcontainer_root.display()))?;

    let mut container = ContainerBuilder::new(config.id.clone(), SyscallType::default())
        .validate_id()
        .and_then(|b| b.with_root_path(&config.libcontainer_root))
        .map_err(|e| chain(&e))?
        .with_executor(SeccompExecutor { filter })
        .with_stdin(stdin)
        .with_stdout(stdout_w)
        .with_stderr(stderr_w)
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| chain(&e))?;
    // The builder (and with it our copies of the pipes' write ends) is gone: EOF on the read
    // ends now means every process of the container closed them.
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        return Err(chain(&e));
    }
    let pid = container
        .pid()
        .ok_or_else(|| "libcontainer reported no pid".to_string())?;
    Ok(Started {
        pid,
        stdout,
        stderr,
    })
}

/// Copies the container's output to the log until its init exits and the pipes are drained;
/// returns the init's wait status. One thread: poll(2) over both pipes and a signalfd.
fn supervise(container: &Started, log: &mut LogWriter) -> WaitStatus {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    let signals = mask
        .thread_block()
        .and_then(|()| SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC));
    let signals = match signals {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("berth shim: signalfd: {e}; waiting without reading output");
            return wait_blocking(container.pid);
        }
    };

    let mut streams: Vec<(&OwnedFd, Stream)> = vec![
        (&container.stdout, Stream::Stdout),
        (&container.stderr, Stream::Stderr),
    ];
    let mut exit = reap(container.pid);
    let mut drain_until: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let timeout = match exit {
            None => PollTimeout::NONE,
            Some(_) => {
                if streams.is_empty() {
                    break;
                }
                let until = *drain_until.get_or_insert_with(|| Instant::now() + DRAIN);
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                PollTimeout::try_from(left.as_millis().max(1) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds: Vec<PollFd> = streams
            .iter()
            .map(|(fd, _)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        fds.push(PollFd::new(signals.as_fd(), PollFlags::POLLIN));
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                eprintln!("berth shim: poll: {e}");
                break;
            }
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);

        let mut closed = Vec::new();
        for (i, (fd, stream)) in streams.iter().enumerate() {
            if !ready[i] {
                continue;
            }
            match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                Ok(0) => closed.push(i),
                Ok(n) => {
                    if let Err(e) = log.write(*stream, &buf[..n]) {
                        eprintln!("berth shim: writing the log: {e}");
                    }
                }
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(_) => closed.push(i),
            }
        }
        for i in closed.into_iter().rev() {
            streams.remove(i);
        }
        if ready[ready.len() - 1] {
            while let Ok(Some(_)) = signals.read_signal() {}
            let reaped = reap(container.pid);
            exit = exit.or(reaped);
        }
    }
    exit.unwrap_or_else(|| wait_blocking(container.pid))
}

/// Reaps every exited child (we are a subreaper); returns the init's status if it was one.
fn reap(init: Pid) -> Option<WaitStatus> {
    let mut found = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return found,
            Ok(status) => {
                if status.pid() == Some(init)
                    && matches!(status, WaitStatus::Exited(..) | WaitStatus::Signaled(..))
                {
                    found = Some(status);
                }
            }
            Err(Errno::EINTR) => {}
            Err(_) => return found,
        }
    }
}

fn wait_blocking(pid: Pid) -> WaitStatus {
    loop {
        match waitpid(pid, None) {
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return status,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return WaitStatus::StillAlive,
        }
    }
}

/// `berth shim exec BUNDLE [--console-socket PATH] -- ARGV`: one more process in a running
/// container, with this process's stdio (or a terminal whose master goes to the console
/// socket); exits with the process's exit code (128+signal if killed; 126/127 if it could not
/// be started, with the reason on stderr).
fn exec(args: Vec<OsString>) -> ExitCode {
    let Some(split) = args.iter().position(|a| a == "--") else {
        return usage();
    };
    let (options, argv) = (&args[..split], &args[split + 1..]);
    let (bundle, console_socket) = match options {
        [bundle] => (PathBuf::from(bundle), None),
        [bundle, flag, path] if flag == "--console-socket" => {
            (PathBuf::from(bundle), Some(PathBuf::from(path)))
        }
        _ => return usage(),
    };
    let argv: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if argv.is_empty() {
        return usage();
    }
    match exec_in(&bundle, argv, console_socket) {
        Ok(pid) => match wait_blocking(pid) {
            WaitStatus::Exited(_, code) => ExitCode::from(code as u8),
            WaitStatus::Signaled(_, signal, _) => ExitCode::from(128 + signal as u8),
            _ => ExitCode::from(126),
        },
        Err(message) => {
            eprintln!("berth exec: {message}");
            let not_found = message.contains("not found");
            ExitCode::from(if not_found { 127 } else { 126 })
        }
    }
}

fn exec_in(bundle: &Path, argv: Vec<String>, console: Option<PathBuf>) -> Result<Pid, String> {
    let config = ShimConfig::load(bundle).map_err(|e| format!("{}: {e}", bundle.display()))?;
    let spec = oci_spec::runtime::Spec::load(bundle.join("config.json"))
        .map_err(|e| format!("the container's spec: {e}"))?;
    // The container's own process settings (user, capabilities, env, cwd) with other args.
    let mut process = spec
        .process()
        .clone()
        .ok_or("the container's spec has no process")?;
    process.set_args(Some(argv));
    process.set_terminal(Some(console.is_some()));
    let process_file = bundle.join(format!("exec-{}.json", std::process::id()));
    let json = serde_json::to_vec(&process).map_err(|e| e.to_string())?;
    std::fs::write(&process_file, json).map_err(|e| format!("{}: {e}", process_file.display()))?;

    let result = (|| {
        let filter = seccomp::default_profile().map_err(|e| e.to_string())?;
        let stdio = |fd: std::os::fd::BorrowedFd| {
            fd.try_clone_to_owned()
                .map_err(|e| format!("duplicating stdio: {e}"))
        };
        let mut builder = ContainerBuilder::new(config.id.clone(), SyscallType::default())
            .with_root_path(&config.libcontainer_root)
            .map_err(|e| chain(&e))?
            .with_executor(SeccompExecutor { filter })
            .with_stdin(stdio(std::io::stdin().as_fd())?)
            .with_stdout(stdio(std::io::stdout().as_fd())?)
            .with_stderr(stdio(std::io::stderr().as_fd())?);
        let tty = console.is_some();
        if let Some(console) = console {
            builder = builder.with_console_socket(Some(console));
        }
        builder
            .as_tenant()
            .with_process(Some(&process_file))
            .with_detach(tty)
            .build()
            .map_err(|e| chain(&e))
    })();
    let _ = std::fs::remove_file(&process_file);
    result
}

/// An error with its causes, as one line.
fn chain(error: &dyn Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
