//! Three node agents (three hosts, each its own network namespace) under one control-plane
//! member: a Deployment's replicas spread one per node, and when an agent dies (SIGKILL) its
//! pods are replaced on the other nodes. The test prints how long that took.

use berth_e2e::cluster::Cluster;
use berth_e2e::node::Agent;
use berth_e2e::{eventually, isolate_network};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: spread
spec:
  replicas: 3
  selector:
    matchLabels: {app: spread}
  template:
    metadata:
      labels: {app: spread}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "exec sleep 3700"]
        readinessProbe:
          exec: {command: ["true"]}
          periodSeconds: 1
"#;

use berth_e2e::pod_ready as ready;

/// Running and Ready pods of the Deployment, by node.
fn ready_by_node(cluster: &Cluster) -> BTreeMap<String, usize> {
    let run = cluster.berth_on(0, &["get", "pods", "-l", "app=spread", "-o", "json"]);
    let items = run
        .success()
        .then(|| serde_json::from_str::<Value>(&run.stdout()).ok())
        .flatten()
        .and_then(|list| list["items"].as_array().cloned())
        .unwrap_or_default();
    let mut by_node = BTreeMap::new();
    for pod in items.iter().filter(|p| {
        p["status"]["phase"] == "Running"
            && ready(p)
            && p["metadata"]["deletionTimestamp"].is_null()
    }) {
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("").to_string();
        *by_node.entry(node).or_insert(0) += 1;
    }
    by_node
}

#[test]
fn t10_replicas_spread_and_move_off_a_dead_node() {
    isolate_network();
    let cluster = Cluster::with_hosts(4, 1, &[]);
    berth_e2e::images::push_busybox(&cluster, 0, "busybox");
    let mut agents: Vec<Agent> = (1..=3)
        .map(|i| Agent::start(&cluster, i, &format!("node-{i}")))
        .collect();
    cluster.apply_on(0, DEPLOYMENT).ok();

    let spread = eventually(Duration::from_secs(60), || {
        ready_by_node(&cluster)
            .values()
            .copied()
            .collect::<Vec<_>>()
            == [1, 1, 1]
    });
    assert!(
        spread,
        "not one Ready replica per node: {:?}",
        ready_by_node(&cluster)
    );

    // node-3's agent dies; its pod must be replaced on node-1 or node-2.
    let killed = Instant::now();
    agents[2].kill();
    let moved = eventually(Duration::from_secs(60), || {
        let by_node = ready_by_node(&cluster);
        !by_node.contains_key("node-3") && by_node.values().sum::<usize>() == 3
    });
    let elapsed = killed.elapsed();
    assert!(
        moved,
        "the dead node's replica was not replaced: {:?}",
        ready_by_node(&cluster)
    );
    eprintln!(
        "agent SIGKILL → 3 Ready replicas on the other nodes: {} ms",
        elapsed.as_millis()
    );
    let node = cluster
        .berth_on(0, &["get", "node", "node-3", "-o", "json"])
        .ok();
    let node: Value = serde_json::from_str(&node.stdout()).unwrap();
    let condition = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap();
    assert_eq!(condition["status"], "Unknown", "{condition}");
}

#[test]
fn t20_cordon_and_drain_move_pods_away() {
    isolate_network();
    let cluster = Cluster::with_hosts(4, 1, &[]);
    berth_e2e::images::push_busybox(&cluster, 0, "busybox");
    let _agents: Vec<Agent> = (1..=3)
        .map(|i| Agent::start(&cluster, i, &format!("node-{i}")))
        .collect();
    cluster.berth_on(0, &["cordon", "node-3"]).ok();
    cluster.apply_on(0, DEPLOYMENT).ok();
    let placed = eventually(Duration::from_secs(60), || {
        let by_node = ready_by_node(&cluster);
        by_node.values().sum::<usize>() == 3 && !by_node.contains_key("node-3")
    });
    assert!(
        placed,
        "a cordoned node got pods: {:?}",
        ready_by_node(&cluster)
    );

    cluster.berth_on(0, &["uncordon", "node-3"]).ok();
    let drained = cluster.berth_on(0, &["drain", "node-1"]).ok().stdout();
    assert!(drained.contains("node/node-1 drained"), "{drained}");
    let moved = eventually(Duration::from_secs(60), || {
        let by_node = ready_by_node(&cluster);
        by_node.values().sum::<usize>() == 3 && !by_node.contains_key("node-1")
    });
    assert!(
        moved,
        "pods stayed on the drained node: {:?}",
        ready_by_node(&cluster)
    );
}

/// A Deployment whose pods say their version in `VERSION`; 1 pod may be missing and 1 extra
/// may exist during a rolling update.
fn web(replicas: u32, version: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 1}}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "exec sleep 3701"]
        env:
        - {{name: VERSION, value: {version}}}
        readinessProbe:
          exec: {{command: ["true"]}}
          periodSeconds: 1
"#
    )
}

/// The web pods that are not being deleted: (Ready, VERSION).
fn web_pods(cluster: &Cluster) -> Option<Vec<(bool, String)>> {
    let run = cluster.berth_on(0, &["get", "pods", "-l", "app=web", "-o", "json"]);
    let list: Value = serde_json::from_str(&run.stdout()).ok()?;
    let items = match list["kind"].as_str() {
        Some("List") => list["items"].as_array().cloned().unwrap_or_default(),
        Some("Pod") => vec![list],
        _ => return None,
    };
    Some(
        items
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                let version = p["spec"]["containers"][0]["env"][0]["value"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                (p["status"]["phase"] == "Running" && ready(p), version)
            })
            .collect(),
    )
}

fn all_ready_at(cluster: &Cluster, count: usize, version: &str) -> bool {
    web_pods(cluster).is_some_and(|pods| {
        pods.len() == count && pods.iter().all(|(ready, v)| *ready && v == version)
    })
}

/// Samples the Ready web pods continuously until stopped; returns the fewest seen.
struct ReadySampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(usize, usize)>,
}

impl ReadySampler {
    fn start(cluster: &Cluster) -> ReadySampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let addr = cluster.addr(0);
        let netns = cluster.network.hosts[0].netns.clone();
        let env_root = cluster.env.root.path().to_path_buf();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut fewest, mut samples) = (usize::MAX, 0);
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                let output = std::process::Command::new("ip")
                    .args(["netns", "exec", &netns])
                    .arg(berth_e2e::cluster::berth_binary())
                    .args([
                        "get", "pods", "-l", "app=web", "-o", "json", "--server", &addr,
                    ])
                    .env("XDG_CONFIG_HOME", env_root.join("config"))
                    .output()
                    .expect("run berth");
                let Ok(list) = serde_json::from_slice::<Value>(&output.stdout) else {
                    continue;
                };
                let ready_pods = list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| {
                        p["metadata"]["deletionTimestamp"].is_null()
                            && p["status"]["phase"] == "Running"
                            && ready(p)
                    })
                    .count();
                fewest = fewest.min(ready_pods);
                samples += 1;
            }
            (fewest, samples)
        });
        ReadySampler { stop, thread }
    }

    fn finish(self) -> (usize, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().expect("sampler")
    }
}

#[test]
fn t30_scale_roll_out_undo_and_a_pod_too_large_for_every_node() {
    isolate_network();
    let cluster = Cluster::with_hosts(4, 1, &[]);
    berth_e2e::images::push_busybox(&cluster, 0, "busybox");
    let _agents: Vec<Agent> = (1..=3)
        .map(|i| Agent::start(&cluster, i, &format!("node-{i}")))
        .collect();
    cluster.apply_on(0, &web(3, "v1")).ok();
    let wait = |count: usize, version: &str| {
        let ok = eventually(Duration::from_secs(90), || {
            all_ready_at(&cluster, count, version)
        });
        assert!(
            ok,
            "not {count} Ready pods of {version}: {:?}",
            web_pods(&cluster)
        );
    };
    wait(3, "v1");

    // Scale 3 → 10 → 2.
    let scaled = cluster
        .berth_on(0, &["scale", "deploy", "web", "--replicas", "10"])
        .ok()
        .stdout();
    assert!(scaled.contains("deployment.apps/web scaled"), "{scaled}");
    wait(10, "v1");
    cluster
        .berth_on(0, &["scale", "deploy", "web", "--replicas", "2"])
        .ok();
    wait(2, "v1");
    cluster
        .berth_on(0, &["scale", "deploy/web", "--replicas", "4"])
        .ok();
    wait(4, "v1");

    // v1 → v2 with at most 1 unavailable: never fewer than 3 Ready pods, sampled throughout.
    let sampler = ReadySampler::start(&cluster);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    cluster.apply_on(0, &web(4, "v2")).ok();
    let status = cluster.berth_on(0, &["rollout", "status", "deploy/web", "--timeout", "120s"]);
    let rolled = started.elapsed();
    assert!(
        status.success(),
        "rollout status: {}{}",
        status.stdout(),
        status.stderr()
    );
    assert!(
        status.stdout().contains("successfully rolled out"),
        "{}",
        status.stdout()
    );
    wait(4, "v2");
    let (fewest, samples) = sampler.finish();
    eprintln!(
        "rolling update v1 → v2 of 4 pods: {} ms, {samples} samples, fewest Ready {fewest}",
        rolled.as_millis()
    );
    assert!(samples > 0);
    assert!(
        fewest >= 3,
        "only {fewest} Ready pods during the rolling update"
    );

    // Undo returns to v1, the same way.
    let sampler = ReadySampler::start(&cluster);
    let undone = cluster
        .berth_on(0, &["rollout", "undo", "deploy/web"])
        .ok()
        .stdout();
    assert!(undone.contains("rolled back"), "{undone}");
    cluster
        .berth_on(0, &["rollout", "status", "deploy/web", "--timeout", "120s"])
        .ok();
    wait(4, "v1");
    let (fewest, _) = sampler.finish();
    assert!(fewest >= 3, "only {fewest} Ready pods during the undo");
    let history = cluster
        .berth_on(0, &["rollout", "history", "deploy/web"])
        .ok()
        .stdout();
    assert!(history.contains('2') && history.contains('3'), "{history}");

    // A pod no node can hold stays Pending and says why.
    cluster
        .apply_on(
            0,
            r#"apiVersion: v1
kind: Pod
metadata:
  name: huge
spec:
  containers:
  - name: main
    image: busybox
    command: ["sleep", "3702"]
    resources:
      requests: {cpu: "1000"}
"#,
        )
        .ok();
    let mut last = Value::Null;
    let said = eventually(Duration::from_secs(30), || {
        let run = cluster.berth_on(0, &["get", "pod", "huge", "-o", "json"]);
        last = serde_json::from_str(&run.stdout()).unwrap_or(Value::Null);
        last["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["type"] == "PodScheduled"
                    && c["status"] == "False"
                    && c["reason"] == "Unschedulable"
                    && c["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("Insufficient cpu")
            })
    });
    assert!(said, "no Unschedulable reason: {last}");
    std::thread::sleep(Duration::from_secs(2));
    let pod: Value = serde_json::from_str(
        &cluster
            .berth_on(0, &["get", "pod", "huge", "-o", "json"])
            .ok()
            .stdout(),
    )
    .unwrap();
    assert_eq!(pod["status"]["phase"], "Pending");
    assert!(pod["spec"]["nodeName"].is_null(), "{pod}");
}
