//! A node agent for tests: `berth agent` on a host of a [`Network`](crate::network::Network),
//! sharing the machine's mount namespace (so its overlays and netns files are visible here).
//! Dropping it kills the agent and everything it started (shims, containers), unmounts what
//! it mounted and removes its cgroups, also when a test fails. [`OneNodeCluster`] is the
//! fixture of the single-node tests: a member, an agent, busybox, and the calls they make.

use crate::cluster::{berth_binary, Cluster};
use crate::{eventually, isolate_network, pod_ready, Run};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Agent {
    child: Option<Child>,
    pub name: String,
    pub data_dir: PathBuf,
    pub host: usize,
    args: Vec<String>,
}

impl Agent {
    /// Starts an agent named `name` on host `host`, talking to member 0 of `cluster` (and
    /// pulling images from its registry).
    pub fn start(cluster: &Cluster, host: usize, name: &str) -> Agent {
        let data_dir = cluster.env.root.path().join(format!("agent-{name}"));
        let args = vec![
            "agent".to_string(),
            "--name".into(),
            name.into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--listen".into(),
            format!("{}:10250", cluster.network.hosts[host].addr),
            "--server".into(),
            cluster.addr(0),
        ];
        let mut agent = Agent {
            child: None,
            name: name.to_string(),
            data_dir,
            host,
            args,
        };
        agent.spawn(cluster);
        agent
    }

    fn spawn(&mut self, cluster: &Cluster) {
        let mut child = cluster.network.hosts[self.host]
            .command_sharing_mounts(&berth_binary())
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| {
                    "warn,berth_node_agent=info,netlink_packet_route=error,libcgroups=error".into()
                }),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn berth agent");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("read agent output");
        if !line.starts_with("agent: ") {
            let _ = child.kill();
            let status = child.wait();
            panic!("berth agent did not start (printed {line:?}, exit {status:?})");
        }
        self.child = Some(child);
    }

    /// SIGKILL, as a crash would; containers keep running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self, cluster: &Cluster) {
        assert!(self.child.is_none(), "agent still running");
        self.spawn(cluster);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        cleanup_node(&self.data_dir);
    }
}

/// A cluster of one member (host 0) and one agent named `node-1` (host 1), each in its own
/// network namespace, with the busybox image in the cluster registry as `busybox`.
pub struct OneNodeCluster {
    pub agent: Agent,
    pub cluster: Cluster,
}

impl OneNodeCluster {
    /// Isolates the calling thread's network (see [`isolate_network`]) and starts the cluster.
    pub fn start() -> OneNodeCluster {
        isolate_network();
        let cluster = Cluster::with_hosts(2, 1, &[]);
        crate::images::push_busybox(&cluster, 0, "busybox");
        let agent = Agent::start(&cluster, 1, "node-1");
        OneNodeCluster { agent, cluster }
    }

    /// `berth ARGS` against the member.
    pub fn berth(&self, args: &[&str]) -> Run {
        self.cluster.berth_on(0, args)
    }

    /// `berth apply`, which must succeed.
    pub fn apply(&self, yaml: &str) {
        self.cluster.apply_on(0, yaml).ok();
    }

    /// The pod as `berth get -o json` shows it, if there is one.
    pub fn pod(&self, name: &str) -> Option<Value> {
        let run = self.berth(&["get", "pod", name, "-o", "json"]);
        run.success()
            .then(|| serde_json::from_str(&run.stdout()).ok())
            .flatten()
    }

    /// Waits up to 40 s for `check` to hold for the pod; panics with the last one seen if not.
    pub fn wait_for(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let ok = eventually(Duration::from_secs(40), || {
            self.pod(name).is_some_and(|p| check(&p))
        });
        let pod = self.pod(name);
        assert!(
            ok,
            "pod {name}: {what} never happened; last seen:\n{pod:#?}"
        );
        pod.expect("seen")
    }

    /// Waits for the pod to be Running and Ready.
    pub fn wait_running(&self, name: &str) -> Value {
        self.wait_for(name, "Running and Ready", |p| {
            p["status"]["phase"] == "Running" && pod_ready(p)
        })
    }

    /// `berth exec POD -- COMMAND` (the server flag goes first: after `--` all is the command).
    pub fn exec(&self, pod: &str, command: &[&str]) -> Run {
        self.exec_with(&[], pod, command)
    }

    /// `berth exec FLAGS POD -- COMMAND`, with no stdin.
    pub fn exec_with(&self, flags: &[&str], pod: &str, command: &[&str]) -> Run {
        let output = self
            .exec_command(flags, pod, command)
            .stdin(Stdio::null())
            .output()
            .expect("run berth exec");
        Run(output)
    }

    /// The `berth exec FLAGS POD -- COMMAND` command, for a test to give stdin and run.
    pub fn exec_command(&self, flags: &[&str], pod: &str, command: &[&str]) -> Command {
        let mut exec = self.cluster.network.hosts[0].command(&berth_binary());
        exec.args(["--server", &self.cluster.addr(0), "exec"])
            .args(flags)
            .args([pod, "--"])
            .args(command);
        exec
    }

    /// Mounts pods may leave on the node: all under its data directory but the node's own
    /// (the directory pod netns files live in), which stays.
    pub fn pod_mounts(&self) -> Vec<String> {
        mounts_under(&self.agent.data_dir)
            .into_iter()
            .filter(|m| !m.ends_with("/network/netns"))
            .collect()
    }
}

/// Host pids whose command line contains `needle`.
pub fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) && pid != std::process::id() as i32 {
            pids.push(pid);
        }
    }
    pids
}

/// Mount points under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts
}

/// berth's cgroup directories (every hierarchy) whose name contains `needle`.
pub fn cgroups_with(needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let text = path.display().to_string();
            if text.contains("/berth") && entry.file_name().to_string_lossy().contains(needle) {
                found.push(path.clone());
            }
            // Only descend where berth's cgroups can be: the hierarchies and their berth dirs.
            let depth = path.components().count();
            if depth <= 5 || text.contains("/berth") {
                stack.push(path);
            }
        }
    }
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// Kills and removes everything an agent with this data directory left: shims and their
/// containers, mounts under the directory, the containers' cgroups.
pub fn cleanup_node(data_dir: &Path) {
    let ids: Vec<String> = std::fs::read_dir(data_dir.join("containers").join("bundles"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    for pid in pids_with_cmdline(&data_dir.display().to_string()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    for id in &ids {
        for cgroup in cgroups_with(id) {
            for pid in std::fs::read_to_string(cgroup.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    for mount in mounts_under(data_dir) {
        let _ = nix::mount::umount2(mount.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    for id in &ids {
        for cgroup in cgroups_with(id) {
            let _ = std::fs::remove_dir(&cgroup);
        }
    }
    // berth's parent cgroups, once empty (another node's containers keep them).
    for parent in cgroups_with("berth") {
        let _ = std::fs::remove_dir(&parent);
    }
}
