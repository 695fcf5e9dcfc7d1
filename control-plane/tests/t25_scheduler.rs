//! The leader's scheduler against a real one-member Raft cluster in this process (in a network
//! namespace of the test's own): pods applied without a node are bound, spread, or marked
//! unschedulable.

mod common;

use common::{apply, list, register_node, wait_for_list, Api};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

fn pod(name: &str, memory: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": {"app": "web"}},
           "spec": {"containers": [{"name": "main", "image": "busybox",
                                    "resources": {"requests": {"cpu": "100m", "memory": memory}}}]}})
}

fn node_of(pod: &Value) -> Option<&str> {
    pod.pointer("/spec/nodeName").and_then(Value::as_str)
}

fn scheduled_condition(pod: &Value) -> Option<&Value> {
    pod.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "PodScheduled")
}

#[tokio::test]
async fn t10_pending_pods_are_spread_and_oversized_ones_stay_pending() {
    // These nodes have no agent to send heartbeats: keep them Ready for the whole test.
    let (member, mut api, _dir) =
        common::start(|c| c.node_lifecycle.grace = Duration::from_secs(3600)).await;
    register_node(&mut api, "node-1", "2", "4Gi").await;
    register_node(&mut api, "node-2", "2", "4Gi").await;
    for i in 0..4 {
        apply(&mut api, &pod(&format!("web-{i}"), "64Mi")).await;
    }
    let bound = wait_for_list(&mut api, "Pod", "default", "4 pods bound", |pods| {
        pods.len() == 4 && pods.iter().all(|p| node_of(p).is_some())
    })
    .await;
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for pod in &bound {
        *per_node.entry(node_of(pod).unwrap()).or_default() += 1;
    }
    assert_eq!(
        per_node,
        BTreeMap::from([("node-1", 2), ("node-2", 2)]),
        "replicas of one owner spread over the nodes"
    );

    apply(&mut api, &pod("huge", "100Gi")).await;
    let pods = wait_for_list(
        &mut api,
        "Pod",
        "default",
        "huge marked unschedulable",
        |pods| {
            pods.iter()
                .find(|p| p["metadata"]["name"] == "huge")
                .and_then(scheduled_condition)
                .is_some()
        },
    )
    .await;
    let huge = pods
        .iter()
        .find(|p| p["metadata"]["name"] == "huge")
        .unwrap();
    assert_eq!(node_of(huge), None);
    assert_eq!(huge["status"]["phase"], "Pending");
    let condition = scheduled_condition(huge).unwrap();
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "Unschedulable");
    let message = condition["message"].as_str().unwrap();
    assert!(
        message.contains("Insufficient memory"),
        "unexpected message {message:?}"
    );

    // The condition is written once, not on every pass.
    let version = huge["metadata"]["resourceVersion"].clone();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let again = pods_named(&mut api, "huge").await;
    assert_eq!(again["metadata"]["resourceVersion"], version);
    member.shutdown().await;
}

async fn pods_named(api: &mut Api, name: &str) -> Value {
    list(api, "Pod", "default")
        .await
        .into_iter()
        .find(|p| p["metadata"]["name"] == name)
        .unwrap()
}
