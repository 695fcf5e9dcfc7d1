//! Events against a real one-member control plane in this process (in a network namespace of
//! the test's own): the scheduler and the controllers record theirs, agents record theirs in
//! batches (RecordEvents), and events older than the TTL go.

mod common;

use berth_control_plane::Member;
use berth_proto::pb;
use common::{apply, list, register_node, wait_for_list, Api};
use serde_json::{json, Value};
use std::time::Duration;

async fn start(event_ttl: Duration) -> (Member, Api, tempfile::TempDir) {
    // These nodes have no agent to send heartbeats: keep them Ready for the whole test.
    start_with(event_ttl, Duration::from_secs(3600)).await
}

async fn start_with(event_ttl: Duration, node_grace: Duration) -> (Member, Api, tempfile::TempDir) {
    common::start(|config| {
        config.node_lifecycle.grace = node_grace;
        config.node_lifecycle.eviction_toleration = Duration::from_millis(200);
        config.event_ttl = event_ttl;
    })
    .await
}

fn field<'a>(event: &'a Value, pointer: &str) -> &'a str {
    event.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The events with `reason` about the object named `name`.
fn with_reason<'a>(events: &'a [Value], reason: &str, name: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| field(e, "/reason") == reason && field(e, "/involvedObject/name") == name)
        .collect()
}

#[tokio::test]
async fn the_scheduler_records_a_failure_once_per_reason_and_the_binding() {
    let (member, mut api, _dir) = start(Duration::from_secs(3600)).await;
    register_node(&mut api, "small", "2", "1Gi").await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big"},
        "spec": {"containers": [{"name": "main", "image": "busybox",
                                 "resources": {"requests": {"memory": "2Gi"}}}]}});
    apply(&mut api, &pod).await;
    let events = wait_for_list(&mut api, "Event", "", "FailedScheduling", |events| {
        !with_reason(events, "FailedScheduling", "big").is_empty()
    })
    .await;
    let failed = with_reason(&events, "FailedScheduling", "big")[0].clone();
    assert_eq!(field(&failed, "/type"), "Warning");
    assert_eq!(field(&failed, "/source/component"), "default-scheduler");
    assert_eq!(field(&failed, "/involvedObject/kind"), "Pod");
    assert!(
        field(&failed, "/message").contains("Insufficient memory"),
        "{failed:#}"
    );
    assert!(field(&failed, "/metadata/name").starts_with("big."));

    // The scheduler passes every 200 ms: after many passes the pod is still one event, once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = list(&mut api, "Event", "").await;
    let failures = with_reason(&events, "FailedScheduling", "big");
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert_eq!(failures[0]["count"], 1, "{failures:#?}");

    // Room appears: the binding is recorded.
    register_node(&mut api, "large", "2", "8Gi").await;
    let events = wait_for_list(&mut api, "Event", "", "Scheduled", |events| {
        !with_reason(events, "Scheduled", "big").is_empty()
    })
    .await;
    let scheduled = with_reason(&events, "Scheduled", "big")[0];
    assert_eq!(
        field(scheduled, "/message"),
        "Successfully assigned default/big to large"
    );
    assert_eq!(field(scheduled, "/type"), "Normal");
    let uid = field(scheduled, "/involvedObject/uid");
    assert!(!uid.is_empty());
    assert_eq!(uid, field(&failed, "/involvedObject/uid"));
    member.shutdown().await;
}

#[tokio::test]
async fn controllers_record_scaling_and_pod_creation() {
    let (member, mut api, _dir) = start(Duration::from_secs(3600)).await;
    apply(
        &mut api,
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "main", "image": "busybox"}]}}}}),
    )
    .await;
    let events = wait_for_list(
        &mut api,
        "Event",
        "",
        "ScalingReplicaSet and two creations",
        |events| {
            let created = events
                .iter()
                .filter(|e| field(e, "/reason") == "SuccessfulCreate")
                .count();
            !with_reason(events, "ScalingReplicaSet", "web").is_empty() && created == 2
        },
    )
    .await;
    let scaling = with_reason(&events, "ScalingReplicaSet", "web")[0];
    assert_eq!(field(scaling, "/involvedObject/kind"), "Deployment");
    assert_eq!(field(scaling, "/source/component"), "deployment-controller");
    let message = field(scaling, "/message");
    assert!(
        message.starts_with("Scaled up replica set web-") && message.ends_with(" to 2"),
        "{message}"
    );
    let created: Vec<&Value> = events
        .iter()
        .filter(|e| field(e, "/reason") == "SuccessfulCreate")
        .collect();
    for event in &created {
        assert_eq!(field(event, "/involvedObject/kind"), "ReplicaSet");
        assert_eq!(field(event, "/source/component"), "replicaset-controller");
        assert!(field(event, "/message").starts_with("Created pod: web-"));
    }

    // Scaled down: the Deployment says so, the ReplicaSet names the pod it deleted.
    apply(
        &mut api,
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "main", "image": "busybox"}]}}}}),
    )
    .await;
    let events = wait_for_list(&mut api, "Event", "", "a scale down", |events| {
        events
            .iter()
            .any(|e| field(e, "/reason") == "SuccessfulDelete")
            && events
                .iter()
                .any(|e| field(e, "/message").starts_with("Scaled down replica set web-"))
    })
    .await;
    let deleted = events
        .iter()
        .find(|e| field(e, "/reason") == "SuccessfulDelete")
        .unwrap();
    assert!(field(deleted, "/message").starts_with("Deleted pod: web-"));
    member.shutdown().await;
}

fn agent_event(name: &str, last: jiff::Timestamp) -> Value {
    json!({"apiVersion": "v1", "kind": "Event",
           "metadata": {"name": name, "namespace": "default"},
           "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web"},
           "reason": "Started", "message": "Started container main", "type": "Normal",
           "source": {"component": "kubelet", "host": "node-1"}, "count": 1,
           "firstTimestamp": last.to_string(), "lastTimestamp": last.to_string()})
}

#[tokio::test]
async fn agents_record_in_batches_and_old_events_expire() {
    // A 10 s TTL: the leader looks every 2.5 s.
    let (member, mut api, _dir) = start(Duration::from_secs(10)).await;
    let now = jiff::Timestamp::now();
    let hour_ago = now - jiff::SignedDuration::from_secs(3600);
    let batch = [
        agent_event("web.old", hour_ago),
        agent_event("web.fresh", now),
        json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "bad"},
               "involvedObject": {"kind": "Pod", "name": "web"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "not-an-event"}}),
    ];
    let response = api
        .record_events(pb::RecordEventsRequest {
            events: batch
                .iter()
                .map(|e| serde_json::to_vec(e).unwrap())
                .collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.errors[..2], ["", ""]);
    assert!(
        response.errors[2].contains("reason: is required"),
        "{:?}",
        response.errors
    );
    assert!(
        response.errors[3].contains("is not an Event"),
        "{:?}",
        response.errors
    );

    let names = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .map(|e| field(e, "/metadata/name").to_string())
            .collect()
    };
    let events = wait_for_list(&mut api, "Event", "", "the old event to expire", |events| {
        !names(events).contains(&"web.old".to_string())
    })
    .await;
    assert!(
        names(&events).contains(&"web.fresh".to_string()),
        "the fresh event stays: {events:#?}"
    );
    // Events older than the TTL go, the fresh one too once it is.
    wait_for_list(
        &mut api,
        "Event",
        "",
        "the fresh event to expire",
        |events| !names(events).contains(&"web.fresh".to_string()),
    )
    .await;
    member.shutdown().await;
}

#[tokio::test]
async fn a_silent_node_is_recorded_not_ready_and_its_pods_evicted() {
    let (member, mut api, _dir) =
        start_with(Duration::from_secs(3600), Duration::from_millis(300)).await;
    register_node(&mut api, "quiet", "2", "4Gi").await;
    apply(
        &mut api,
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stranded"},
               "spec": {"nodeName": "quiet", "containers": [{"name": "main", "image": "busybox"}]}}),
    )
    .await;
    let events = wait_for_list(
        &mut api,
        "Event",
        "",
        "NodeNotReady and the eviction",
        |events| {
            !with_reason(events, "NodeNotReady", "quiet").is_empty()
                && !with_reason(events, "TaintManagerEviction", "stranded").is_empty()
        },
    )
    .await;
    let not_ready = with_reason(&events, "NodeNotReady", "quiet")[0];
    assert_eq!(field(not_ready, "/involvedObject/kind"), "Node");
    assert_eq!(field(not_ready, "/metadata/namespace"), "default");
    assert_eq!(
        field(not_ready, "/message"),
        "Node quiet status is now: NodeNotReady"
    );
    assert_eq!(field(not_ready, "/source/component"), "node-controller");
    let evicted = with_reason(&events, "TaintManagerEviction", "stranded")[0];
    assert_eq!(
        field(evicted, "/message"),
        "Marking for deletion Pod default/stranded"
    );
    member.shutdown().await;
}
