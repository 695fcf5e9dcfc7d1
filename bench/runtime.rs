//! Container start benchmark: create → start → exit of `/bin/true` in a busybox rootfs, through
//! berth's runtime (`berth_node_agent::runtime::Runtime`: a `berth shim` per container on
//! youki's libcontainer) against `runc run` and `crun run`, same machine, same run.
//!
//! ```text
//!  each iteration, after warm-ups, in an order rotated per iteration:
//!    berth  Runtime::start ─▶ status every 200 µs until Exited        │ Runtime::remove
//!    runc   overlay + config.json ─▶ runc run (create, start, wait, delete) │ umount, rm bundle
//!    crun   overlay + config.json ─▶ crun run (create, start, wait, delete) │ umount, rm bundle
//!           └──────────────────── timed ──────────────────────────┘   └ timed apart ┘
//! ```
//!
//! All three get the same OCI spec: berth's `spec::build` of a Pod whose container runs
//! `/bin/true` (pid, mount, uts, ipc and a fresh network namespace, Docker's capabilities, the
//! pids limit and device cgroup), the same overlay of the busybox rootfs with a per-container
//! upper, and a cgroup under one bench parent. The benchmark runs in network and mount
//! namespaces of its own (needs root): no packet leaves the machine, no mount outlives it.
//!
//! crun 1.8 refuses the cgroup v1/v2 hybrid layout while a controller (hugetlb, here) is
//! available on the v2 hierarchy: such controllers are mounted as v1 hierarchies for the run
//! (all three runtimes then use them) and unmounted afterwards.
//!
//! Usage: runtime-bench [--berth PATH] [--runs N] [--warmup N] [--runc PATH] [--crun PATH]

use anyhow::{bail, Context, Result};
use berth_node_agent::runtime::rootfs::{self, Overlay};
use berth_node_agent::runtime::spec::{self, ImageConfig, SpecInput};
use berth_node_agent::runtime::{ContainerStatus, Runtime, StartRequest};
use berth_proto::k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use berth_proto::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use clap::Parser;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use oci_spec::runtime::Spec;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use load::percentile;

#[derive(Parser)]
struct Args {
    /// The berth binary (run as the shim).
    #[arg(long, default_value = "target/release/berth")]
    berth: PathBuf,
    /// Measured containers per runtime.
    #[arg(long, default_value_t = 100)]
    runs: usize,
    /// Unmeasured containers per runtime first.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// The runc binary (default: `runc` on PATH).
    #[arg(long)]
    runc: Option<PathBuf>,
    /// The crun binary (default: `crun` on PATH).
    #[arg(long)]
    crun: Option<PathBuf>,
}

const COMMAND: &str = "/bin/true";
/// How often berth's status is polled for the exit.
const POLL: Duration = Duration::from_micros(200);
/// A container that has not exited by then is a failure.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Where a cgroup v1 hierarchy of a controller is mounted (as systemd does).
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Set by SIGINT/SIGTERM: stop after the current iteration, clean up, report what was measured.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// One measured container.
struct Sample {
    /// From just before the runtime is asked to start it until its exit is known.
    start_to_exit: Duration,
    /// The part of `start_to_exit` spent before running runc/crun (overlay mount, config.json);
    /// berth does the same inside `Runtime::start`.
    prepare: Option<Duration>,
    /// Removing what is left: berth's `Runtime::remove`; for runc/crun (whose `run` already
    /// deleted the container and its cgroup) the overlay unmount and the bundle.
    teardown: Duration,
}

enum Kind {
    Berth {
        runtime: Runtime,
        spec: Spec,
        lower: PathBuf,
        logs: PathBuf,
    },
    Oci {
        binary: PathBuf,
        /// Their `--root`: state apart from anything else on the host.
        state_root: PathBuf,
        bundles: PathBuf,
        spec: Spec,
        lower: PathBuf,
        cgroup_parent: String,
    },
}

/// One runtime under test and what it measured, or why it could not.
struct Contender {
    name: &'static str,
    kind: Option<Kind>,
    samples: Vec<Sample>,
    failure: Option<String>,
}

impl Contender {
    fn failed(name: &'static str, why: String) -> Contender {
        Contender {
            name,
            kind: None,
            samples: Vec::new(),
            failure: Some(why),
        }
    }

    /// Runs one container; on failure the contender is out of the rest of the run.
    fn run(&mut self, iteration: usize, measured: bool) {
        let Some(kind) = self.kind.as_ref().filter(|_| self.failure.is_none()) else {
            return;
        };
        let id = format!("{}-{iteration}", self.name);
        match kind.run_once(&id) {
            Ok(sample) if measured => self.samples.push(sample),
            Ok(_) => {}
            Err(e) => self.failure = Some(format!("{id}: {e:#}")),
        }
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        if let Some(kind) = &self.kind {
            kind.clean_up();
        }
    }
}

impl Kind {
    fn run_once(&self, id: &str) -> Result<Sample> {
        match self {
            Kind::Berth {
                runtime,
                spec,
                lower,
                logs,
            } => {
                let log_path = logs.join(format!("{id}.log"));
                let request = StartRequest {
                    id: id.to_string(),
                    spec: spec.clone(),
                    lowers: vec![lower.clone()],
                    log_path: log_path.clone(),
                    log_max_bytes: 1 << 20,
                    log_max_files: 1,
                };
                let started = Instant::now();
                let exit = runtime
                    .start(request)
                    .map_err(anyhow::Error::from)
                    .and_then(|_| wait_exit(runtime, id));
                let start_to_exit = started.elapsed();
                // Read before remove deletes the bundle.
                let diagnostics = exit.is_err().then(|| {
                    let shim_log = runtime.bundle(id).join("shim.log");
                    format!(
                        "\nshim log: {}\ncontainer log: {}",
                        std::fs::read_to_string(shim_log).unwrap_or_default().trim(),
                        std::fs::read_to_string(&log_path)
                            .unwrap_or_default()
                            .trim()
                    )
                });
                let removing = Instant::now();
                let removed = runtime.remove(id);
                let teardown = removing.elapsed();
                let _ = std::fs::remove_file(&log_path);
                if let Err(e) = exit {
                    bail!("{e:#}{}", diagnostics.unwrap_or_default());
                }
                removed.context("remove")?;
                Ok(Sample {
                    start_to_exit,
                    prepare: None,
                    teardown,
                })
            }
            Kind::Oci {
                binary,
                state_root,
                bundles,
                spec,
                lower,
                cgroup_parent,
            } => {
                let bundle = bundles.join(id);
                let started = Instant::now();
                let prepared =
                    prepare_bundle(&bundle, spec, lower, &format!("/{cgroup_parent}/{id}"));
                let prepare = started.elapsed();
                let ran = prepared.and_then(|()| {
                    let output = Command::new(binary)
                        .arg("--root")
                        .arg(state_root)
                        .arg("run")
                        .arg("--bundle")
                        .arg(&bundle)
                        .arg(id)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped())
                        .output()
                        .with_context(|| format!("running {}", binary.display()))?;
                    if !output.status.success() {
                        bail!(
                            "{} run: {}; stderr: {}",
                            binary.display(),
                            output.status,
                            String::from_utf8_lossy(&output.stderr).trim()
                        );
                    }
                    Ok(())
                });
                let start_to_exit = started.elapsed();
                let removing = Instant::now();
                let removed = remove_oci(binary, state_root, &bundle, id);
                let teardown = removing.elapsed();
                ran?;
                removed?;
                Ok(Sample {
                    start_to_exit,
                    prepare: Some(prepare),
                    teardown,
                })
            }
        }
    }

    /// Removes containers a failed or interrupted run left behind.
    fn clean_up(&self) {
        match self {
            Kind::Berth { runtime, .. } => {
                for id in runtime.list().unwrap_or_default() {
                    if let Err(e) = runtime.remove(&id) {
                        eprintln!("cleanup: removing berth container {id}: {e}");
                    }
                }
            }
            Kind::Oci {
                binary,
                state_root,
                bundles,
                ..
            } => {
                let Ok(entries) = std::fs::read_dir(bundles) else {
                    return;
                };
                for entry in entries.flatten() {
                    let id = entry.file_name().to_string_lossy().into_owned();
                    if let Err(e) = remove_oci(binary, state_root, &entry.path(), &id) {
                        eprintln!("cleanup: {e:#}");
                    }
                }
            }
        }
    }
}

/// Polls berth's status until the container's exit is recorded; an error unless it exited 0.
fn wait_exit(runtime: &Runtime, id: &str) -> Result<()> {
    let deadline = Instant::now() + EXIT_TIMEOUT;
    loop {
        match runtime.status(id)? {
            ContainerStatus::Exited { exit_code: 0, .. } => return Ok(()),
            exited @ ContainerStatus::Exited { .. } => bail!("{exited:?}"),
            other if Instant::now() > deadline => {
                bail!("still {other:?} after {EXIT_TIMEOUT:?}")
            }
            _ => std::thread::sleep(POLL),
        }
    }
}

/// What berth's `Runtime::start` does before its shim runs: the overlay rootfs in the bundle
/// and config.json with the rootfs path and the cgroup filled in.
fn prepare_bundle(bundle: &Path, spec: &Spec, lower: &Path, cgroups_path: &str) -> Result<()> {
    std::fs::create_dir(bundle).with_context(|| format!("creating {}", bundle.display()))?;
    let overlay = Overlay {
        lowers: vec![lower.to_path_buf()],
        upper: bundle.join("upper"),
        work: bundle.join("work"),
        target: bundle.join("rootfs"),
    };
    overlay.mount()?;
    let mut spec = spec.clone();
    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path(overlay.target);
    spec.set_root(Some(root));
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_cgroups_path(Some(PathBuf::from(cgroups_path)));
    spec.set_linux(Some(linux));
    spec.save(bundle.join("config.json"))?;
    Ok(())
}

/// Deletes the container if runc/crun still knows it (not after a clean `run`), unmounts the
/// rootfs and removes the bundle.
fn remove_oci(binary: &Path, state_root: &Path, bundle: &Path, id: &str) -> Result<()> {
    if state_root.join(id).exists() {
        let output = Command::new(binary)
            .arg("--root")
            .arg(state_root)
            .args(["delete", "--force", id])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} delete", binary.display()))?;
        if !output.status.success() {
            bail!(
                "{} delete {id}: {}",
                binary.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }
    let target = bundle.join("rootfs");
    rootfs::unmount(&target)?;
    match std::fs::remove_dir_all(bundle) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", bundle.display()))
        }
        _ => Ok(()),
    }
}

/// The host side of the run: the bench's cgroup parent and the controllers moved to v1.
/// Dropping it removes both (cgroups first: an unmounted hierarchy with cgroups left in it
/// would keep its controller away from v2 for good).
struct Host {
    cgroup_parent: String,
    /// Controllers this run mounted as v1 hierarchies, where, and whether it made the mount
    /// point.
    mounted: Vec<(String, PathBuf, bool)>,
}

impl Host {
    /// Moves every controller still available on the v2 hierarchy of a hybrid layout to a v1
    /// hierarchy of its own (`mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb`).
    fn free_unified_controllers(&mut self) -> Result<Vec<String>> {
        let unified = Path::new(CGROUP_ROOT).join("unified/cgroup.controllers");
        let Ok(controllers) = std::fs::read_to_string(&unified) else {
            return Ok(Vec::new()); // not hybrid
        };
        let mut moved = Vec::new();
        for controller in controllers.split_whitespace() {
            let target = Path::new(CGROUP_ROOT).join(controller);
            let created = !target.exists();
            if created {
                std::fs::create_dir(&target)
                    .with_context(|| format!("creating {}", target.display()))?;
            }
            if let Err(e) = mount_v1(controller, &target) {
                if created {
                    let _ = std::fs::remove_dir(&target);
                }
                return Err(e);
            }
            self.mounted.push((controller.to_string(), target, created));
            moved.push(controller.to_string());
        }
        Ok(moved)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for dir in cgroup_dirs(&self.cgroup_parent) {
            remove_cgroup_tree(&dir);
        }
        for (controller, target, created) in self.mounted.drain(..).rev() {
            if let Err(e) = give_back(&controller, &target) {
                eprintln!(
                    "cleanup: the {controller} controller stays on a cgroup v1 hierarchy: {e}; \
                     mount it again (mount -t cgroup -o {controller} cgroup DIR) and unmount it \
                     once it has no child cgroups"
                );
            }
            if created {
                if let Err(e) = std::fs::remove_dir(&target) {
                    eprintln!("cleanup: {}: {e}", target.display());
                }
            }
        }
    }
}

/// Unmounts the v1 hierarchy of `controller` so that the kernel destroys it and the
/// controller returns to v2. The kernel only does that if the hierarchy has no child cgroups
/// when its last mount goes, and a just-removed cgroup stays a child until it is released
/// (asynchronously): so while it has not returned, mount it again and retry.
fn give_back(controller: &str, target: &Path) -> Result<()> {
    for attempt in 0..20 {
        if attempt > 0 {
            mount_v1(controller, target)?;
        }
        umount2(target, MntFlags::empty())
            .with_context(|| format!("unmounting {}", target.display()))?;
        let deadline = Instant::now() + Duration::from_millis(100 + 50 * attempt);
        while Instant::now() < deadline {
            if hierarchy_of(controller) == Some(0) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    bail!("not released after 20 unmounts")
}

fn mount_v1(controller: &str, target: &Path) -> Result<()> {
    mount(
        Some("cgroup"),
        target,
        Some("cgroup"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(controller),
    )
    .with_context(|| {
        format!(
            "mounting the {controller} controller as cgroup v1 at {}",
            target.display()
        )
    })
}

/// The hierarchy `controller` is bound to, from /proc/cgroups (0: the v2 hierarchy).
fn hierarchy_of(controller: &str) -> Option<u32> {
    let table = std::fs::read_to_string("/proc/cgroups").ok()?;
    table.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        (fields.next()? == controller).then(|| fields.next()?.parse().ok())?
    })
}

/// `path` (relative to a hierarchy's root) in every mounted cgroup hierarchy where it exists.
fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
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

/// Removes a cgroup directory and its children, deepest first (cgroupfs only lets rmdir
/// remove empty cgroups; their control files go with them).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        eprintln!("cleanup: {}: {e}", dir.display());
    }
}

/// `name` as given, or found on PATH.
fn find_binary(given: Option<&Path>, name: &str) -> Option<PathBuf> {
    if let Some(path) = given {
        return path.exists().then(|| path.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// berth's spec of a Pod whose one container runs `/bin/true` in its own network namespace.
fn container_spec() -> Result<Spec> {
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("runtime-bench".to_string()),
            ..Default::default()
        },
        spec: Some(PodSpec::default()),
        ..Default::default()
    };
    let container = Container {
        name: "main".to_string(),
        command: Some(vec![COMMAND.to_string()]),
        ..Default::default()
    };
    Ok(spec::build(&SpecInput {
        pod: &pod,
        container: &container,
        image: &ImageConfig::default(),
        netns: None,
    })?)
}

/// Network and mount namespaces of the bench's own; mounts made here propagate nowhere.
/// Must run while the process has one thread (unshare of a mount namespace needs that).
fn isolate() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS): the benchmark needs root")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making / private")?;
    berth_e2e::isolate_network();
    let handler = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(signal, &handler) }?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let berth = args.berth.canonicalize().with_context(|| {
        format!(
            "{}: build it with cargo build --release -p berth",
            args.berth.display()
        )
    })?;
    isolate()?;

    let dir = berth_e2e::TempDir::new()?;
    let lower = berth_e2e::rootfs::busybox(dir.path());
    let spec = container_spec()?;
    let mut host = Host {
        cgroup_parent: format!("berth-bench-{}", std::process::id()),
        mounted: Vec::new(),
    };

    let runc = find_binary(args.runc.as_deref(), "runc");
    let crun = find_binary(args.crun.as_deref(), "crun");
    // Only crun needs it, and only if it will run.
    let moved = match crun {
        Some(_) => host.free_unified_controllers(),
        None => Ok(Vec::new()),
    };

    let mut contenders = vec![berth_contender(&berth, dir.path(), &spec, &lower, &host)];
    for (name, binary) in [("runc", runc), ("crun", crun)] {
        let contender = match (binary, &moved) {
            (None, _) => Contender::failed(name, format!("not installed (apt-get install {name})")),
            (Some(_), Err(e)) if name == "crun" => Contender::failed(name, format!("{e:#}")),
            (Some(binary), _) => oci_contender(name, binary, dir.path(), &spec, &lower, &host),
        };
        contenders.push(contender);
    }

    let total = args.warmup + args.runs;
    for iteration in 0..total {
        if STOP.load(Ordering::SeqCst) {
            eprintln!("interrupted after {iteration} iterations");
            break;
        }
        let count = contenders.len();
        for k in 0..count {
            contenders[(iteration + k) % count].run(iteration, iteration >= args.warmup);
        }
    }

    report(&args, &contenders, moved.as_deref().unwrap_or_default());
    drop(contenders);
    drop(host);
    Ok(())
}

fn berth_contender(berth: &Path, dir: &Path, spec: &Spec, lower: &Path, host: &Host) -> Contender {
    let kind = Runtime::new(dir.join("berth"), berth.to_path_buf()).map(|runtime| Kind::Berth {
        runtime: runtime.with_cgroup_parent(host.cgroup_parent.clone()),
        spec: spec.clone(),
        lower: lower.to_path_buf(),
        logs: dir.join("logs"),
    });
    match kind {
        Ok(kind) => Contender {
            name: "berth",
            kind: Some(kind),
            samples: Vec::new(),
            failure: None,
        },
        Err(e) => Contender::failed("berth", e.to_string()),
    }
}

fn oci_contender(
    name: &'static str,
    binary: PathBuf,
    dir: &Path,
    spec: &Spec,
    lower: &Path,
    host: &Host,
) -> Contender {
    let state_root = dir.join(format!("{name}-state"));
    let bundles = dir.join(format!("{name}-bundles"));
    if let Err(e) =
        std::fs::create_dir_all(&state_root).and_then(|()| std::fs::create_dir_all(&bundles))
    {
        return Contender::failed(name, e.to_string());
    }
    Contender {
        name,
        kind: Some(Kind::Oci {
            binary,
            state_root,
            bundles,
            spec: spec.clone(),
            lower: lower.to_path_buf(),
            cgroup_parent: host.cgroup_parent.clone(),
        }),
        samples: Vec::new(),
        failure: None,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn sorted(samples: &[Sample], f: impl Fn(&Sample) -> Option<Duration>) -> Vec<Duration> {
    let mut values: Vec<Duration> = samples.iter().filter_map(f).collect();
    values.sort();
    values
}

fn report(args: &Args, contenders: &[Contender], moved: &[String]) {
    println!(
        "container create→start→exit of {COMMAND}, busybox rootfs as an overlay with a \
         per-container upper, {} runs each after {} warm-up, interleaved",
        args.runs, args.warmup
    );
    println!(
        "{:<8} {:>6} {:>10} {:>8} {:>8} {:>12} {:>12}",
        "", "runs", "median ms", "p90 ms", "min ms", "prepare ms", "teardown ms"
    );
    let mut medians = Vec::new();
    for c in contenders {
        let total = sorted(&c.samples, |s| Some(s.start_to_exit));
        let prepare = sorted(&c.samples, |s| s.prepare);
        let teardown = sorted(&c.samples, |s| Some(s.teardown));
        if total.is_empty() {
            println!("{:<8} {:>6} {:>10}", c.name, 0, "failed");
            medians.push(None);
            continue;
        }
        let median = percentile(&total, 0.5);
        medians.push(Some(median));
        let prepare = if prepare.is_empty() {
            "-".to_string()
        } else {
            format!("{:.2}", ms(percentile(&prepare, 0.5)))
        };
        println!(
            "{:<8} {:>6} {:>10.2} {:>8.2} {:>8.2} {:>12} {:>12.2}",
            c.name,
            total.len(),
            ms(median),
            ms(percentile(&total, 0.9)),
            ms(total[0]),
            prepare,
            ms(percentile(&teardown, 0.5)),
        );
    }
    for (i, peer) in [(2, "crun"), (1, "runc")] {
        let ratio = match (medians[0], medians[i]) {
            (Some(b), Some(p)) if !p.is_zero() => {
                format!("{:.2}", b.as_secs_f64() / p.as_secs_f64())
            }
            _ => "-".to_string(),
        };
        println!("berth/{peer} (medians) {ratio:>8}");
    }
    println!(
        "berth: Runtime::start until status reports Exited (polled every {} µs); teardown = \
         Runtime::remove (libcontainer delete, cgroup, umount, bundle).",
        POLL.as_micros()
    );
    println!(
        "runc/crun: `run` (create, start, wait, delete incl. the cgroup) plus the bench's own \
         prepare (overlay mount, config.json; berth's start does the same inside); teardown = \
         umount, rm bundle. Same spec as berth's; berth also installs its seccomp profile, \
         runc/crun run without one (the spec has none)."
    );
    if !moved.is_empty() {
        println!(
            "cgroup controllers moved from v2 to v1 hierarchies for the run (crun 1.8 refuses \
             hybrid otherwise), used by all three: {}",
            moved.join(", ")
        );
    }
    for c in contenders {
        if let Some(failure) = &c.failure {
            println!("{} failed: {failure}", c.name);
        }
    }
}
