//! The leader's scheduler against a real one-member Raft cluster in this process (in a network
//! namespace of the test's own): pods applied without a node are bound, spread, or marked
//! unschedulable.

use berth_control_plane::{Member, MemberConfig};
use berth_proto::pb;
use berth_proto::pb::api_client::ApiClient;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

async fn start() -> (Member, ApiClient<Channel>, tempfile::TempDir) {
    berth_e2e::isolate_network();
    let dir = tempfile::tempdir().unwrap();
    let mut config = MemberConfig::new(dir.path().join("member"));
    config.init = true;
    config.listen = Some("127.0.0.1:0".parse().unwrap());
    // These nodes have no agent to send heartbeats: keep them Ready for the whole test.
    config.node_lifecycle.grace = Duration::from_secs(3600);
    let member = Member::start(config).await.expect("member starts");
    let api = ApiClient::new(
        berth_proto::transport::connect(&member.addr.to_string())
            .await
            .unwrap(),
    );
    (member, api, dir)
}

async fn apply(api: &mut ApiClient<Channel>, object: Value) {
    api.apply(pb::ApplyRequest {
        object: serde_json::to_vec(&object).unwrap(),
        dry_run: false,
    })
    .await
    .expect("applied");
}

/// Registers a Ready node the way the agent does: apply the Node, then report its status.
async fn register_node(api: &mut ApiClient<Channel>, name: &str) {
    apply(
        api,
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}, "spec": {}}),
    )
    .await;
    let allocatable = json!({"cpu": "2", "memory": "4Gi", "pods": "110"});
    let status = json!({
        "capacity": allocatable, "allocatable": allocatable,
        "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady"}],
    });
    let response = api
        .update_status(pb::UpdateStatusRequest {
            updates: vec![pb::StatusUpdate {
                object: Some(pb::ObjectRef {
                    kind: "Node".into(),
                    namespace: String::new(),
                    name: name.into(),
                }),
                status: serde_json::to_vec(&status).unwrap(),
                resource_version: 0,
                uid: String::new(),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.results[0].error, "");
}

fn pod(name: &str, memory: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": {"app": "web"}},
           "spec": {"containers": [{"name": "main", "image": "busybox",
                                    "resources": {"requests": {"cpu": "100m", "memory": memory}}}]}})
}

async fn pods(api: &mut ApiClient<Channel>) -> Vec<Value> {
    api.list(pb::ListRequest {
        kind: "Pod".into(),
        namespace: "default".into(),
        label_selector: String::new(),
        stale_ok: false,
    })
    .await
    .unwrap()
    .into_inner()
    .objects
    .iter()
    .map(|bytes| serde_json::from_slice(bytes).unwrap())
    .collect()
}

/// Polls the pods until `done` holds for them, for up to 10 s.
async fn wait_for_pods(
    api: &mut ApiClient<Channel>,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pods = pods(api).await;
        if done(&pods) {
            return pods;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {pods:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let (member, mut api, _dir) = start().await;
    register_node(&mut api, "node-1").await;
    register_node(&mut api, "node-2").await;
    for i in 0..4 {
        apply(&mut api, pod(&format!("web-{i}"), "64Mi")).await;
    }
    let bound = wait_for_pods(&mut api, "4 pods bound", |pods| {
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

    apply(&mut api, pod("huge", "100Gi")).await;
    let pods = wait_for_pods(&mut api, "huge marked unschedulable", |pods| {
        pods.iter()
            .find(|p| p["metadata"]["name"] == "huge")
            .and_then(scheduled_condition)
            .is_some()
    })
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

async fn pods_named(api: &mut ApiClient<Channel>, name: &str) -> Value {
    pods(api)
        .await
        .into_iter()
        .find(|p| p["metadata"]["name"] == name)
        .unwrap()
}
