//! The leader's node lifecycle against a real one-member Raft cluster in this process (in a
//! network namespace of the test's own): a node whose heartbeats stop becomes NotReady, its
//! pods are evicted, and it is Ready again once heard.

mod common;

use berth_control_plane::nodes::LifecycleConfig;
use berth_proto::pb;
use common::{apply, get, register_node, Api};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const GRACE: Duration = Duration::from_millis(600);
const TOLERATION: Duration = Duration::from_millis(400);
/// How often the test's "agent" beats.
const BEAT: Duration = Duration::from_millis(100);

/// The node's Ready condition as (status, reason).
async fn node_ready(api: &mut Api) -> (String, String) {
    let node = get(api, "Node", "", "node-1")
        .await
        .expect("the node exists");
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    let text = |field: &str| ready[field].as_str().unwrap_or_default().to_string();
    (text("status"), text("reason"))
}

/// Beats for node-1 until aborted.
fn heartbeats(api: &Api) -> tokio::task::JoinHandle<()> {
    let mut api = api.clone();
    tokio::spawn(async move {
        loop {
            let request = pb::NodeHeartbeatRequest {
                node: "node-1".into(),
            };
            api.node_heartbeat(request).await.expect("heartbeat taken");
            tokio::time::sleep(BEAT).await;
        }
    })
}

/// Polls until `done` holds, for up to 5 s; returns how long it took.
async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) -> Duration {
    let start = Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn t10_a_silent_node_goes_not_ready_loses_its_pods_and_comes_back() {
    let (member, mut api, _dir) = common::start(|c| {
        c.node_lifecycle = LifecycleConfig {
            grace: GRACE,
            eviction_toleration: TOLERATION,
        }
    })
    .await;
    register_node(&mut api, "node-1", "2", "4Gi").await;
    let beating = heartbeats(&api);
    apply(
        &mut api,
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
               "spec": {"nodeName": "node-1", "containers": [{"name": "main", "image": "busybox"}]}}),
    )
    .await;

    // Heard all along: past grace and toleration, the node stays Ready and keeps its pod.
    tokio::time::sleep((GRACE + TOLERATION) * 2).await;
    assert_eq!(node_ready(&mut api).await.0, "True");
    assert!(get(&mut api, "Pod", "default", "web").await.is_some());

    beating.abort();
    let silent_since = Instant::now();
    let not_ready = wait_until("node-1 NotReady", || {
        let mut api = api.clone();
        async move {
            node_ready(&mut api).await == ("Unknown".to_string(), "NodeStatusUnknown".to_string())
        }
    })
    .await;
    // The last beat was at most BEAT before the silence began; the loop ticks every 100 ms.
    assert!(
        not_ready + BEAT >= GRACE,
        "NotReady too early: {not_ready:?}"
    );
    assert!(
        not_ready <= GRACE + Duration::from_millis(500),
        "NotReady too late: {not_ready:?}"
    );

    let evicted = wait_until("the pod evicted", || {
        let mut api = api.clone();
        async move { get(&mut api, "Pod", "default", "web").await.is_none() }
    })
    .await
        + not_ready;
    assert!(
        evicted + BEAT >= GRACE + TOLERATION,
        "evicted before the toleration: {evicted:?}"
    );
    assert!(silent_since.elapsed() < GRACE + TOLERATION + Duration::from_secs(1));

    let beating = heartbeats(&api);
    let recovered = wait_until("node-1 Ready again", || {
        let mut api = api.clone();
        async move { node_ready(&mut api).await.0 == "True" }
    })
    .await;
    assert!(
        recovered < Duration::from_millis(500),
        "Ready again after {recovered:?}"
    );
    // Heard from, it stays Ready.
    tokio::time::sleep(GRACE * 2).await;
    assert_eq!(node_ready(&mut api).await.0, "True");
    beating.abort();
    member.shutdown().await;
}
