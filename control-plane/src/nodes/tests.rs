use super::*;
use serde_json::json;

const GRACE: Duration = Duration::from_millis(1500);
const TOLERATION: Duration = Duration::from_millis(500);

fn config() -> LifecycleConfig {
    LifecycleConfig {
        grace: GRACE,
        eviction_toleration: TOLERATION,
    }
}

fn node(name: &str, ready: &str, reason: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": "7"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": ready, "reason": reason,
                 "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"},
            ],
        },
    }))
    .unwrap()
}

fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "3"},
        "spec": {"nodeName": node, "containers": []},
    }))
    .unwrap()
}

/// Decides for `nodes` at `now` (offset from the leader's start), with `heard` offsets.
fn decide_at(nodes: &[Node], heard: &[(&str, Duration)], now: Duration) -> NodeDecisions {
    let start = Instant::now();
    let last_heard = heard
        .iter()
        .map(|(name, at)| (name.to_string(), start + *at))
        .collect();
    let clock = Clock {
        last_heard: &last_heard,
        leader_since: start,
        now: start + now,
        now_text: "2026-01-02T00:00:00Z",
    };
    decide(nodes, &clock, &config())
}

fn ready_of(status: &NodeStatus) -> &NodeCondition {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .unwrap()
}

#[test]
fn a_node_heard_within_grace_is_left_alone() {
    let nodes = [node("a", "True", "AgentReady")];
    let heard = [("a", Duration::from_secs(10))];
    let decisions = decide_at(&nodes, &heard, Duration::from_secs(10) + GRACE);
    assert_eq!(decisions, NodeDecisions::default());
}

#[test]
fn a_node_silent_past_grace_becomes_unknown_keeping_the_rest_of_its_status() {
    let nodes = [node("a", "True", "AgentReady")];
    let heard = [("a", Duration::from_secs(10))];
    let now = Duration::from_secs(10) + GRACE + Duration::from_millis(1);
    let decisions = decide_at(&nodes, &heard, now);
    assert!(decisions.evicting.is_empty());
    let [change] = decisions.status_changes.as_slice() else {
        panic!("one change: {decisions:?}");
    };
    assert_eq!(
        (change.node.as_str(), change.ready, change.resource_version),
        ("a", false, Some(7))
    );
    assert_eq!(change.uid.as_deref(), Some("uid-a"));
    let ready = ready_of(&change.status);
    assert_eq!(ready.status, "Unknown");
    assert_eq!(ready.reason.as_deref(), Some(SILENT_REASON));
    assert_eq!(ready.message.as_deref(), Some(SILENT_MESSAGE));
    let transition = ready.last_transition_time.as_ref().unwrap().0.to_string();
    assert_eq!(transition, "2026-01-02T00:00:00Z");
    // The agent's last heartbeat time stays what it reported.
    let heartbeat = ready.last_heartbeat_time.as_ref().unwrap().0.to_string();
    assert_eq!(heartbeat, "2026-01-01T00:00:00Z");
    let status = &change.status;
    assert_eq!(status.conditions.as_ref().unwrap().len(), 2);
    assert_eq!(status.addresses.as_ref().unwrap()[0].address, "10.0.0.1");
}

#[test]
fn a_node_already_marked_is_not_written_again() {
    let nodes = [node("a", "Unknown", SILENT_REASON)];
    let decisions = decide_at(&nodes, &[("a", Duration::ZERO)], GRACE * 2);
    assert!(decisions.status_changes.is_empty());
}

#[test]
fn a_new_leader_gives_every_node_a_fresh_grace_period() {
    // Heard long before this member led (or never): silence counts from the election.
    let nodes = [
        node("a", "True", "AgentReady"),
        node("b", "True", "AgentReady"),
    ];
    let start = Instant::now();
    let last_heard = HashMap::from([("a".to_string(), start)]);
    let leader_since = start + Duration::from_secs(60);
    let clock = |now: Duration| Clock {
        last_heard: &last_heard,
        leader_since,
        now: leader_since + now,
        now_text: "2026-01-02T00:00:00Z",
    };
    assert_eq!(
        decide(&nodes, &clock(GRACE), &config()),
        NodeDecisions::default()
    );
    let later = decide(&nodes, &clock(GRACE + TOLERATION * 2), &config());
    assert_eq!(later.status_changes.len(), 2);
    assert_eq!(later.evicting, BTreeSet::from(["a".into(), "b".into()]));
}

#[test]
fn pods_are_evicted_only_after_the_toleration() {
    let nodes = [node("a", "Unknown", SILENT_REASON)];
    let heard = [("a", Duration::ZERO)];
    assert!(decide_at(&nodes, &heard, GRACE + TOLERATION)
        .evicting
        .is_empty());
    let evicting = decide_at(
        &nodes,
        &heard,
        GRACE + TOLERATION + Duration::from_millis(1),
    )
    .evicting;
    assert_eq!(evicting, BTreeSet::from(["a".into()]));

    let mut leaving = pod("leaving", "a");
    leaving.metadata.deletion_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
    let pods = [pod("web-1", "a"), pod("web-2", "b"), leaving];
    let evicted = evictions(&pods, &evicting);
    assert_eq!(
        evicted,
        vec![Eviction {
            namespace: "default".into(),
            name: "web-1".into(),
            node: "a".into(),
            resource_version: Some(3),
        }]
    );
}

#[test]
fn a_node_heard_again_is_ready_once() {
    let nodes = [node("a", "Unknown", SILENT_REASON)];
    let heard = [("a", Duration::from_secs(30))];
    let decisions = decide_at(&nodes, &heard, Duration::from_secs(30) + TOLERATION);
    let [change] = decisions.status_changes.as_slice() else {
        panic!("one change: {decisions:?}");
    };
    assert!(change.ready);
    let ready = ready_of(&change.status);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("True", Some("AgentReady"))
    );
    // Once Ready, nothing more to write.
    let recovered = Node {
        status: Some(change.status.clone()),
        ..nodes[0].clone()
    };
    assert_eq!(
        decide_at(&[recovered], &heard, Duration::from_secs(30) + TOLERATION),
        NodeDecisions::default()
    );
}

#[test]
fn a_not_ready_reported_by_the_agent_is_not_overridden() {
    let nodes = [node("a", "False", "DiskFull")];
    let decisions = decide_at(
        &nodes,
        &[("a", Duration::from_secs(5))],
        Duration::from_secs(5),
    );
    assert_eq!(decisions, NodeDecisions::default());
}
