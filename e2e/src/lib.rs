//! Fixtures for tests that run real berth processes.
//!
//! Every cluster a test starts lives in a network namespace of its own with only loopback
//! (and whatever interfaces the test makes): no packet can leave the machine, tests cannot
//! collide on ports, and the namespace disappears with the test's processes.

/// Temporary directories, as the fixtures use them.
pub use tempfile::TempDir;

pub mod cluster;
pub mod images;
pub mod linearizability;
pub mod network;
pub mod node;
pub mod rootfs;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Whether a pod (as JSON) has the condition `Ready=True`.
pub fn pod_ready(pod: &serde_json::Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Moves the calling thread into a new, empty network namespace and brings loopback up.
/// Processes the thread starts afterwards inherit it. Needs root (CI runs as root).
pub fn isolate_network() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET) failed: these tests need root");
    let status = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("running `ip` (iproute2)");
    assert!(status.success(), "ip link set lo up failed");
}

/// A `berth server` process; SIGKILLed when dropped, so a failing test leaves nothing behind.
pub struct Server {
    child: Option<Child>,
    pub addr: String,
    pub data_dir: PathBuf,
}

impl Server {
    /// Starts `berth server` and waits for its `api: ADDR` line.
    pub fn start(berth: &Path, env: &TestEnv, extra: &[&str]) -> Server {
        Server::start_on(None, berth, env, &env.root.path().join("server"), extra)
    }

    /// Starts `berth server` on `host` (or in the caller's namespace) with `data_dir`.
    pub fn start_on(
        host: Option<&network::Host>,
        berth: &Path,
        env: &TestEnv,
        data_dir: &Path,
        extra: &[&str],
    ) -> Server {
        let mut command = match host {
            Some(host) => host.command(berth),
            None => Command::new(berth),
        };
        env.configure(&mut command);
        let mut child = command
            .arg("server")
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn berth server");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read server output");
        let Some(addr) = line.trim().strip_prefix("api: ") else {
            let _ = child.kill();
            let status = child.wait();
            panic!("berth server did not report its address (printed {line:?}, exit {status:?})");
        };
        Server {
            addr: addr.to_string(),
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn pid(&self) -> Option<nix::unistd::Pid> {
        self.child
            .as_ref()
            .map(|c| nix::unistd::Pid::from_raw(c.id() as i32))
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `timeout` for the process to exit by itself; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Some(status) = child.try_wait().expect("poll server") {
                self.child = None;
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        child.wait().expect("wait for server")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private home for one test: config and data directories in a temp dir, removed after.
pub struct TestEnv {
    pub root: tempfile::TempDir,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    pub fn new() -> TestEnv {
        TestEnv {
            root: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A command with this environment's XDG directories and no BERTH_SERVER from outside.
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        self.configure(&mut command);
        command
    }

    fn configure(&self, command: &mut Command) {
        command
            .env("XDG_CONFIG_HOME", self.root.path().join("config"))
            .env("XDG_DATA_HOME", self.root.path().join("data"))
            .env_remove("BERTH_SERVER")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,openraft=off".into()),
            );
    }

    /// Runs a client command to completion.
    pub fn run(&self, berth: &Path, args: &[&str]) -> Run {
        self.run_with_stdin(berth, args, None)
    }

    pub fn run_with_stdin(&self, berth: &Path, args: &[&str], stdin: Option<&[u8]>) -> Run {
        use std::io::Write;
        let mut child = self
            .command(berth)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth");
        if let Some(bytes) = stdin {
            child
                .stdin
                .take()
                .expect("piped stdin")
                .write_all(bytes)
                .expect("write stdin");
        }
        Run(child.wait_with_output().expect("wait for berth"))
    }
}

/// A finished client command.
pub struct Run(pub Output);

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    pub fn success(&self) -> bool {
        self.0.status.success()
    }
    /// Panics with both outputs unless the command succeeded.
    pub fn ok(self) -> Self {
        assert!(
            self.success(),
            "berth failed ({:?})\nstdout:\n{}\nstderr:\n{}",
            self.0.status,
            self.stdout(),
            self.stderr()
        );
        self
    }
    /// Panics unless the command failed.
    pub fn failed(self) -> Self {
        assert!(
            !self.success(),
            "berth should have failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
}

/// Polls `check` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}
