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

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

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
