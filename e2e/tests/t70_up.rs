//! `berth up --demo`: one process runs a control plane and a node, pushes the demo image and
//! runs its Deployment; Ctrl-C stops every pod and leaves nothing behind; `berth up` again
//! finds the cluster as it left it. Runs on a host (network namespace) of its own.

use berth_e2e::cluster::berth_binary;
use berth_e2e::network::Network;
use berth_e2e::node::{cgroups_with, cleanup_node, mounts_under, pids_with_cmdline};
use berth_e2e::{eventually, TestEnv};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `berth up`; killed (with its node cleaned up) when dropped.
struct Up {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    data_dir: PathBuf,
}

impl Up {
    fn start(network: &Network, env: &TestEnv, data_dir: &Path, extra: &[&str]) -> Up {
        let mut child = network.hosts[0]
            .command_sharing_mounts(&berth_binary())
            .args(["up", "--name", "laptop", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .envs(client_env(env))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG")
                    .unwrap_or_else(|_| "warn,netlink_packet_route=error,libcgroups=error".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn berth up");
        let stdout = child.stdout.take().expect("piped");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("berth up: {line}");
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut up = Up {
            child: Some(child),
            lines,
            data_dir: data_dir.to_path_buf(),
        };
        let first = up.next_line(Duration::from_secs(30));
        assert!(first.starts_with("api: "), "berth up printed {first:?}");
        up
    }

    fn next_line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => line,
            Err(e) => {
                let status = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                panic!("no line from berth up within {timeout:?} ({e}; exit {status:?})")
            }
        }
    }

    /// Lines up to (and without) the first one that starts with `prefix`, which is dropped.
    fn lines_until(&mut self, prefix: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.next_line(left.max(Duration::from_millis(1)));
            if line.starts_with(prefix) {
                return seen;
            }
            seen.push(line);
        }
    }

    /// Ctrl-C, then the exit status.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .expect("SIGINT");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("berth up did not stop within 60 s of Ctrl-C");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        cleanup_node(&self.data_dir.join("agent"));
    }
}

fn client_env(env: &TestEnv) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("XDG_CONFIG_HOME", env.root.path().join("config")),
        ("XDG_DATA_HOME", env.root.path().join("data")),
    ]
}

/// `berth ARGS` on the host, finding the cluster through the config `berth up` wrote.
fn berth(network: &Network, env: &TestEnv, args: &[&str]) -> String {
    let output = network.hosts[0]
        .command_sharing_mounts(&berth_binary())
        .args(args)
        .envs(client_env(env))
        .env_remove("BERTH_SERVER")
        .output()
        .expect("run berth");
    assert!(
        output.status.success(),
        "berth {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn demo_pods(network: &Network, env: &TestEnv) -> Vec<Value> {
    let list: Value = serde_json::from_str(&berth(
        network,
        env,
        &["get", "pods", "-l", "app=demo", "-o", "json"],
    ))
    .expect("json");
    match list["kind"].as_str() {
        Some("List") => list["items"].as_array().cloned().unwrap_or_default(),
        _ => vec![list],
    }
}

use berth_e2e::pod_ready as ready;

/// What a stopped node must not leave: processes, mounts, cgroups of `uids`, interfaces.
fn assert_nothing_left(network: &Network, data_dir: &Path, uids: &[String]) {
    let agent_dir = data_dir.join("agent");
    let left_processes = pids_with_cmdline(&data_dir.display().to_string());
    let left_mounts = mounts_under(data_dir);
    let left_cgroups: Vec<_> = uids.iter().flat_map(|u| cgroups_with(u)).collect();
    let links = Command::new("ip")
        .args(["-n", &network.hosts[0].netns, "-o", "link"])
        .output()
        .expect("ip link");
    let links = String::from_utf8_lossy(&links.stdout).into_owned();
    assert!(
        left_processes.is_empty()
            && left_mounts.is_empty()
            && left_cgroups.is_empty()
            && !links.contains("berth0")
            && !links.contains("berth-svc")
            && !links.contains("veth"),
        "left behind: processes {left_processes:?}, mounts {left_mounts:?}, cgroups \
         {left_cgroups:?}, links {links}"
    );
    assert!(
        std::fs::read_dir(agent_dir.join("containers").join("bundles"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "container bundles left"
    );
}

#[test]
fn berth_up_runs_the_demo_stops_cleanly_and_comes_back_as_it_was() {
    let network = Network::new(1);
    let env = TestEnv::new();
    let data_dir = env.root.path().join("berth");

    let mut up = Up::start(&network, &env, &data_dir, &["--demo"]);
    let said = up.lines_until("Ctrl-C", Duration::from_secs(180));
    let urls: Vec<&str> = said
        .iter()
        .filter_map(|l| l.trim().strip_prefix("curl "))
        .collect();
    assert_eq!(urls.len(), 3, "berth up --demo said: {said:#?}");
    // The printed addresses answer, from the machine (here: the test's host).
    for url in &urls {
        let output = Command::new("ip")
            .args([
                "netns",
                "exec",
                &network.hosts[0].netns,
                "/bin/busybox",
                "wget",
                "-qO-",
            ])
            .arg(url)
            .output()
            .expect("wget");
        let body = String::from_utf8_lossy(&output.stdout);
        assert!(body.starts_with("pod demo-"), "{url}: {body:?}");
    }
    // `berth` works at once, through the config `berth up` wrote.
    let deployments = berth(&network, &env, &["get", "deploy", "demo"]);
    assert!(deployments.contains("3/3"), "{deployments}");
    let pods = demo_pods(&network, &env);
    let uids: Vec<String> = pods
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(uids.len(), 3);

    assert!(up.interrupt().success(), "berth up failed on Ctrl-C");
    assert_nothing_left(&network, &data_dir, &uids);

    // Back as it left it: the same Deployment, its pods running again on the node.
    let mut up = Up::start(&network, &env, &data_dir, &[]);
    let back = eventually(Duration::from_secs(60), || {
        let pods = demo_pods(&network, &env);
        pods.len() == 3 && pods.iter().all(ready)
    });
    assert!(
        back,
        "the demo did not come back: {:#?}",
        demo_pods(&network, &env)
    );
    let uids_again: Vec<String> = demo_pods(&network, &env)
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        {
            let mut u = uids_again.clone();
            u.sort();
            u
        },
        {
            let mut u = uids.clone();
            u.sort();
            u
        },
        "the same pods (the store kept them)"
    );
    assert!(up.interrupt().success());
    assert_nothing_left(&network, &data_dir, &uids);
}
