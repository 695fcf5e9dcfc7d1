//! The container runtime against the real kernel: real containers (busybox) created by the
//! `berth shim` through libcontainer, as root.
//!
//! Each test runs in a network namespace of its own (`berth_e2e::isolate_network`; the
//! containers get fresh ones inside it), with its own runtime root and cgroup parent. A
//! [`Fixture`] removes every container it started and its cgroup parent when dropped, also
//! when the test fails. Needs `cargo build -p berth` (the shim is the berth binary) and
//! busybox-static.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_e2e::cluster::berth_binary;
use berth_e2e::TempDir;
use berth_node_agent::runtime::spec::{self, ImageConfig, SpecInput};
use berth_node_agent::runtime::{ContainerStatus, Runtime, RuntimeError, StartRequest};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

/// Docker's default capability set as /proc/<pid>/status shows it.
const DOCKER_CAPS: &str = "00000000a80425fb";

/// The busybox rootfs, built once and kept in Cargo's per-target scratch directory.
fn lower() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    berth_e2e::rootfs::busybox(Path::new(env!("CARGO_TARGET_TMPDIR")))
}

fn spec_for(pod_name: &str, command: &[&str], memory_limit: Option<&str>) -> Spec {
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(pod_name.to_string()),
            ..Default::default()
        },
        spec: Some(PodSpec::default()),
        ..Default::default()
    };
    let container = Container {
        name: "main".to_string(),
        command: Some(command.iter().map(|s| s.to_string()).collect()),
        resources: memory_limit.map(|limit| ResourceRequirements {
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity(limit.to_string()),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    spec::build(&SpecInput {
        pod: &pod,
        container: &container,
        image: &ImageConfig::default(),
        netns: None,
    })
    .expect("spec")
}

/// One test's runtime: its own root directory and cgroup parent, cleaned up on drop.
struct Fixture {
    runtime: Runtime,
    cgroup_parent: String,
    started: Mutex<Vec<String>>,
    dir: TempDir,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        berth_e2e::isolate_network();
        let dir = berth_e2e::TempDir::new().expect("temp dir");
        let cgroup_parent = format!("berth-t10-{}-{name}", std::process::id());
        let runtime = Runtime::new(dir.path().join("root"), berth_binary())
            .expect("runtime")
            .with_cgroup_parent(cgroup_parent.clone());
        Fixture {
            runtime,
            cgroup_parent,
            started: Mutex::new(Vec::new()),
            dir,
        }
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.dir.path().join("logs").join(format!("{id}.log"))
    }

    fn request(&self, id: &str, spec: Spec) -> StartRequest {
        StartRequest {
            id: id.to_string(),
            spec,
            lowers: vec![lower()],
            log_path: self.log_path(id),
            log_max_bytes: 1 << 20,
            log_max_files: 2,
        }
    }

    fn start(&self, id: &str, pod: &str, command: &[&str]) -> ContainerStatus {
        self.start_spec(id, spec_for(pod, command, None))
    }

    fn start_spec(&self, id: &str, spec: Spec) -> ContainerStatus {
        self.started.lock().unwrap().push(id.to_string());
        self.runtime
            .start(self.request(id, spec))
            .unwrap_or_else(|e| panic!("start {id}: {e}"))
    }

    fn wait_exit(&self, id: &str) -> ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.runtime.status(id).expect("status");
            if matches!(status, ContainerStatus::Exited { .. }) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{id} still {status:?}; log:\n{}",
                self.log(id)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The log as `stream tag content` lines.
    fn log(&self, id: &str) -> String {
        let text = std::fs::read_to_string(self.log_path(id)).unwrap_or_default();
        text.lines()
            .filter_map(|line| line.split_once(' ').map(|(_, rest)| rest))
            .map(|rest| format!("{rest}\n"))
            .collect()
    }

    fn wait_log(&self, id: &str, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log(id).contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log of {id}:\n{}",
                self.log(id)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn running_pid(&self, id: &str) -> i32 {
        match self.runtime.status(id).expect("status") {
            ContainerStatus::Running { pid, .. } => pid,
            other => panic!("{id} is not running: {other:?}"),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for id in self.started.lock().unwrap().iter() {
            if let Err(e) = self.runtime.remove(id) {
                eprintln!("cleanup: removing {id}: {e}");
            }
        }
        for dir in cgroup_dirs(&format!("/{}", self.cgroup_parent)) {
            if let Err(e) = std::fs::remove_dir(&dir) {
                eprintln!("cleanup: {}: {e}", dir.display());
            }
        }
    }
}

/// `path` in every mounted cgroup hierarchy where it exists.
fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    table
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            let mount_point = left.split(' ').nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .map(|h| h.join(path.trim_start_matches('/')))
        .filter(|d| d.is_dir())
        .collect()
}

fn is_mounted(path: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let path = path.to_string_lossy();
    table.lines().any(|l| l.split(' ').nth(4) == Some(&*path))
}

fn exited_code(status: &ContainerStatus) -> i32 {
    match status {
        ContainerStatus::Exited { exit_code, .. } => *exit_code,
        other => panic!("not exited: {other:?}"),
    }
}

#[test]
fn the_container_is_isolated() {
    let f = Fixture::new("isolated");
    let script = r#"
        echo pid=$$$$  # $$ is an escaped $ in Kubernetes commands
        echo hostname=$(hostname)
        echo net=$(ls /sys/class/net)
        ps -o pid,comm | tail -n +2 | wc -l | sed 's/^/processes=/'
        ip link add dummy0 type dummy 2>/dev/null; echo dummy=$?
        unshare -U true 2>/dev/null; echo unshare=$?
        grep -E '^(Seccomp|CapEff|CapInh|CapAmb|NoNewPrivs):' /proc/self/status | tr -d '\t '
        cat /proc/kcore 2>/dev/null | wc -c | sed 's/^/kcore=/'
        touch /proc/sys/kernel/hostname 2>/dev/null || echo proc-sys-ro
    "#;
    let started = f.start("iso", "web-1", &["/bin/sh", "-c", script]);
    assert!(
        matches!(started, ContainerStatus::Running { .. }),
        "{started:?}"
    );
    let status = f.wait_exit("iso");
    let log = f.log("iso");
    assert_eq!(exited_code(&status), 0, "{status:?}\n{log}");
    for line in [
        "stdout F pid=1\n",
        "stdout F hostname=web-1\n",
        "stdout F net=lo\n",
        "stdout F dummy=", // not 0: checked below
        "stdout F unshare=1\n",
        "stdout F Seccomp:2\n",
        &format!("stdout F CapEff:{DOCKER_CAPS}\n"),
        "stdout F CapInh:0000000000000000\n",
        "stdout F CapAmb:0000000000000000\n",
        "stdout F NoNewPrivs:1\n",
        "stdout F kcore=0\n",
        "stdout F proc-sys-ro\n",
    ] {
        assert!(log.contains(line), "missing {line:?} in:\n{log}");
    }
    assert!(
        !log.contains("dummy=0"),
        "CAP_NET_ADMIN must be missing:\n{log}"
    );
    // sh, ps, tail, wc, sed: only the container's own processes are visible.
    let processes: usize = log
        .lines()
        .find_map(|l| l.strip_prefix("stdout F processes="))
        .and_then(|n| n.trim().parse().ok())
        .expect("process count");
    assert!(processes <= 6, "{processes} processes visible:\n{log}");
}

#[test]
fn writes_go_to_the_upper_dir_and_the_lower_is_untouched() {
    use std::os::unix::fs::FileTypeExt;
    let f = Fixture::new("upper");
    let script = "echo hello > /tmp/new && rm /bin/ls && echo changed > /etc/passwd";
    f.start("up", "p", &["/bin/sh", "-c", script]);
    assert_eq!(exited_code(&f.wait_exit("up")), 0, "{}", f.log("up"));

    let upper = f.runtime.bundle("up").join("upper");
    assert_eq!(
        std::fs::read_to_string(upper.join("tmp/new")).unwrap(),
        "hello\n"
    );
    let whiteout = std::fs::symlink_metadata(upper.join("bin/ls")).expect("whiteout");
    assert!(whiteout.file_type().is_char_device(), "{whiteout:?}");
    assert_eq!(
        std::fs::read_to_string(upper.join("etc/passwd")).unwrap(),
        "changed\n"
    );

    let lower = lower();
    assert!(std::fs::symlink_metadata(lower.join("bin/ls")).is_ok());
    assert!(!lower.join("tmp/new").exists());
    assert!(std::fs::read_to_string(lower.join("etc/passwd"))
        .unwrap()
        .starts_with("root:x:0:0"));
}

#[test]
fn exit_codes_signals_and_logs_are_reported() {
    let f = Fixture::new("exits");
    f.start(
        "code",
        "p",
        &[
            "/bin/sh",
            "-c",
            "echo out; echo err >&2; printf partial; exit 3",
        ],
    );
    let status = f.wait_exit("code");
    match &status {
        ContainerStatus::Exited {
            exit_code: 3,
            signal: None,
            oom_killed: false,
            started_at: Some(started),
            finished_at,
            message: None,
        } => assert!(started <= finished_at),
        other => panic!("{other:?}"),
    }
    let log = f.log("code");
    for line in ["stdout F out\n", "stderr F err\n", "stdout P partial\n"] {
        assert!(log.contains(line), "missing {line:?} in:\n{log}");
    }

    // A missing executable: the start fails, reported like containerd's StartError.
    let status = f.start("missing", "p", &["/no/such/binary"]);
    match &status {
        ContainerStatus::Exited {
            exit_code: 128,
            started_at: None,
            message: Some(message),
            ..
        } => assert!(message.contains("/no/such/binary"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.runtime.status("missing").unwrap(), status);

    // SIGTERM to pid 1 works only if it handles it.
    let script = "trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done";
    f.start("term", "p", &["/bin/sh", "-c", script]);
    f.wait_log("term", "ready");
    f.runtime.signal("term", Signal::SIGTERM).expect("signal");
    assert_eq!(exited_code(&f.wait_exit("term")), 42);
    assert!(matches!(
        f.runtime.signal("term", Signal::SIGTERM),
        Err(RuntimeError::NotRunning(_))
    ));

    f.start("killed", "p", &["/bin/sleep", "1000"]);
    f.runtime.kill_all("killed").expect("kill_all");
    match f.wait_exit("killed") {
        ContainerStatus::Exited {
            exit_code: 137,
            signal: Some(9),
            oom_killed: false,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_memory_limit_oom_kill_is_reported() {
    let f = Fixture::new("oom");
    let spec = spec_for(
        "p",
        &[
            "/bin/dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=64M",
            "count=1",
        ],
        Some("16Mi"),
    );
    f.start_spec("oom", spec);
    match f.wait_exit("oom") {
        ContainerStatus::Exited {
            exit_code: 137,
            signal: Some(9),
            oom_killed: true,
            ..
        } => {}
        other => panic!("{other:?}\n{}", f.log("oom")),
    }

    // Within the limit: no OOM.
    let spec = spec_for(
        "p",
        &[
            "/bin/dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=1M",
            "count=4",
        ],
        Some("16Mi"),
    );
    f.start_spec("fits", spec);
    match f.wait_exit("fits") {
        ContainerStatus::Exited {
            exit_code: 0,
            oom_killed: false,
            ..
        } => {}
        other => panic!("{other:?}\n{}", f.log("fits")),
    }
}

#[test]
fn exec_runs_in_the_container() {
    let f = Fixture::new("exec");
    f.start("ex", "exec-pod", &["/bin/sleep", "1000"]);
    let argv = |args: &[&str]| args.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let script = "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; grep Seccomp: /proc/self/status; exit 7";
    let mut process = f
        .runtime
        .exec("ex", &argv(&["/bin/sh", "-c", script]), false)
        .expect("exec");
    let mut out = String::new();
    process
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(process.wait().unwrap(), 7);
    assert!(out.contains("exec-pod\n"), "{out}");
    assert!(out.contains("/bin/sleep 1000"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");

    // stdin reaches the process.
    let mut process = f.runtime.exec("ex", &argv(&["cat"]), false).expect("exec");
    process.stdin.take().unwrap().write_all(b"abc").unwrap();
    let mut out = String::new();
    process
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "abc");
    assert_eq!(process.wait().unwrap(), 0);

    // Not found: 127, and why on stderr.
    let mut process = f
        .runtime
        .exec("ex", &argv(&["/nope"]), false)
        .expect("exec");
    let mut err = String::new();
    process
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(process.wait().unwrap(), 127, "{err}");
    assert!(err.contains("/nope"), "{err}");

    // A terminal: the master comes back to us.
    let mut process = f
        .runtime
        .exec("ex", &argv(&["tty"]), true)
        .expect("exec tty");
    let pty = process.pty.take().expect("pty master");
    let mut master = std::fs::File::from(pty);
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    // After the slave side closes, reads fail with EIO.
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(process.wait().unwrap(), 0);
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("/dev/pts/"), "{out:?}");

    // The container itself is unaffected.
    f.running_pid("ex");
}

/// The first part of `the_shim_outlives_its_spawner`, run in a process of its own (this test
/// binary re-executed); does nothing when run directly.
#[test]
#[ignore = "helper, run by the_shim_outlives_its_spawner"]
fn spawner_helper() {
    let Ok(args) = std::env::var("BERTH_T10_SPAWN") else {
        return;
    };
    let [root, cgroup_parent, id, log] = args.split('\n').collect::<Vec<_>>()[..] else {
        panic!("bad BERTH_T10_SPAWN {args:?}");
    };
    let runtime = Runtime::new(PathBuf::from(root), berth_binary())
        .unwrap()
        .with_cgroup_parent(cgroup_parent);
    let script = "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.02; done";
    let status = runtime
        .start(StartRequest {
            id: id.to_string(),
            spec: spec_for("p", &["/bin/sh", "-c", script], None),
            lowers: vec![lower()],
            log_path: PathBuf::from(log),
            log_max_bytes: 1 << 20,
            log_max_files: 2,
        })
        .expect("start");
    assert!(matches!(status, ContainerStatus::Running { .. }));
}

#[test]
fn the_shim_outlives_its_spawner() {
    let f = Fixture::new("outlives");
    let root = f.dir.path().join("root");
    f.started.lock().unwrap().push("survivor".to_string());
    let spawner = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "spawner_helper", "--ignored", "--quiet"])
        .env(
            "BERTH_T10_SPAWN",
            format!(
                "{}\n{}\n{}\n{}",
                root.display(),
                f.cgroup_parent,
                "survivor",
                f.log_path("survivor").display()
            ),
        )
        .output()
        .expect("run the spawner");
    assert!(
        spawner.status.success(),
        "spawner failed:\n{}{}",
        String::from_utf8_lossy(&spawner.stdout),
        String::from_utf8_lossy(&spawner.stderr)
    );

    // The spawner is gone; a new runtime on the same root (an agent restart) finds the
    // container running and its shim still copying output to the log.
    assert_eq!(f.runtime.list().unwrap(), vec!["survivor".to_string()]);
    let pid = f.running_pid("survivor");
    let ticks = |f: &Fixture| f.log("survivor").matches("tick").count();
    let before = ticks(&f);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ticks(&f) < before + 3 {
        assert!(Instant::now() < deadline, "the log stopped growing");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The shim (the init's parent) is in a session of its own and not our child.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let shim: i32 = fields[1].parse().unwrap();
    let shim_stat = std::fs::read_to_string(format!("/proc/{shim}/stat")).unwrap();
    let shim_fields: Vec<&str> = shim_stat[shim_stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .collect();
    assert_ne!(shim_fields[1], std::process::id().to_string(), "ppid");
    assert_eq!(shim_fields[3], shim.to_string(), "session id");

    // It still records the exit.
    f.runtime.kill_all("survivor").unwrap();
    assert_eq!(exited_code(&f.wait_exit("survivor")), 137);
}

#[test]
fn remove_leaves_no_mount_cgroup_or_process() {
    let f = Fixture::new("remove");
    f.start("gone", "p", &["/bin/sleep", "1000"]);
    let pid = f.running_pid("gone");
    let bundle = f.runtime.bundle("gone");
    let cgroup = f.runtime.cgroups_path("gone");
    assert!(is_mounted(&bundle.join("rootfs")));
    assert!(!cgroup_dirs(&cgroup).is_empty(), "no cgroup {cgroup}");

    // Still running: remove kills it first.
    f.runtime.remove("gone").expect("remove");
    assert!(!bundle.exists());
    assert!(!is_mounted(&bundle.join("rootfs")));
    assert_eq!(cgroup_dirs(&cgroup), Vec::<PathBuf>::new());
    assert_eq!(
        kill(Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    );
    assert!(!f.dir.path().join("root/libcontainer/gone").exists());
    assert!(matches!(
        f.runtime.status("gone"),
        Err(RuntimeError::NotFound(_))
    ));
    assert!(f.runtime.list().unwrap().is_empty());
    f.runtime.remove("gone").expect("remove is idempotent");
}

/// create -> start -> exit of /bin/true through the shim; prints the median (see the
/// benchmark against runc/crun for the real comparison).
#[test]
fn start_to_exit_latency_of_true() {
    let f = Fixture::new("latency");
    let mut to_exit = Vec::new();
    let mut with_remove = Vec::new();
    for i in 0..20 {
        let id = format!("true-{i}");
        let t0 = Instant::now();
        f.start(&id, "p", &["/bin/true"]);
        loop {
            if let ContainerStatus::Exited { exit_code, .. } = f.runtime.status(&id).unwrap() {
                assert_eq!(exit_code, 0);
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_micros(500));
        }
        to_exit.push(t0.elapsed());
        f.runtime.remove(&id).unwrap();
        with_remove.push(t0.elapsed());
    }
    to_exit.sort();
    with_remove.sort();
    eprintln!(
        "/bin/true start->exited: median {:?} (min {:?}, max {:?}); with remove: median {:?}",
        to_exit[10], to_exit[0], to_exit[19], with_remove[10]
    );
}
