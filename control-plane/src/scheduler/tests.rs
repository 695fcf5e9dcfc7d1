use super::*;
use serde_json::{json, Value};
use std::collections::HashSet;

/// A Ready node with `cpu` and `memory` allocatable and room for 110 pods.
fn node(name: &str, cpu: &str, memory: &str) -> Value {
    json!({
        "metadata": {"name": name},
        "status": {
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    })
}

/// A pod in `default` with one container requesting `cpu` and `memory` (empty: no request).
fn pod(name: &str, cpu: &str, memory: &str) -> Value {
    let mut requests = serde_json::Map::new();
    if !cpu.is_empty() {
        requests.insert("cpu".into(), cpu.into());
    }
    if !memory.is_empty() {
        requests.insert("memory".into(), memory.into());
    }
    json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"containers": [{"name": "app", "image": "app", "resources": {"requests": requests}}]},
    })
}

fn owned_by(mut pod: Value, owner_uid: &str) -> Value {
    pod["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner_uid, "uid": owner_uid,
        "controller": true,
    }]);
    pod
}

fn bound_to(mut pod: Value, node: &str) -> Value {
    pod["spec"]["nodeName"] = node.into();
    pod
}

fn nodes(values: impl IntoIterator<Item = Value>) -> Vec<Node> {
    values
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("a Node"))
        .collect()
}

fn pods(values: impl IntoIterator<Item = Value>) -> Vec<Pod> {
    values
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("a Pod"))
        .collect()
}

/// (pod, node) for each binding.
fn placed(decisions: &Decisions) -> Vec<(&str, &str)> {
    decisions
        .bindings
        .iter()
        .map(|b| (b.name.as_str(), b.node.as_str()))
        .collect()
}

fn reasons(decisions: &Decisions) -> Vec<(&str, &str)> {
    decisions
        .unschedulable
        .iter()
        .map(|u| (u.name.as_str(), u.reason.as_str()))
        .collect()
}

#[test]
fn each_filter_reports_its_kubernetes_reason() {
    let mut not_ready = node("a", "4", "8Gi");
    not_ready["status"]["conditions"][0]["status"] = "False".into();
    let mut cordoned = node("b", "4", "8Gi");
    cordoned["spec"] = json!({"unschedulable": true});
    let mut tainted = node("c", "4", "8Gi");
    tainted["spec"] =
        json!({"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]});
    let mut hdd = node("d", "4", "8Gi");
    hdd["metadata"]["labels"] = json!({"disk": "hdd"});
    let mut small = node("e", "1", "1Gi");
    small["metadata"]["labels"] = json!({"disk": "ssd"});
    let mut full = node("f", "4", "8Gi");
    full["metadata"]["labels"] = json!({"disk": "ssd"});
    full["status"]["allocatable"]["pods"] = "0".into();
    let mut no_status = node("g", "4", "8Gi");
    no_status["status"] = json!({});

    let mut wants_ssd = pod("p", "2", "2Gi");
    wants_ssd["spec"]["nodeSelector"] = json!({"disk": "ssd"});
    let decisions = schedule(
        &nodes([not_ready, cordoned, tainted, hdd, small, full, no_status]),
        &pods([wants_ssd]),
    );

    assert_eq!(decisions.bindings, []);
    assert_eq!(
        decisions.unschedulable,
        [Unschedulable {
            namespace: "default".into(),
            name: "p".into(),
            uid: "uid-p".into(),
            reason: "0/7 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, \
                     1 Too many pods, 1 node(s) didn't match Pod's node affinity/selector, \
                     1 node(s) had untolerated taint {dedicated: db}, \
                     1 node(s) were unschedulable, 2 node(s) were not ready."
                .into(),
        }]
    );
}

#[test]
fn unschedulable_message_counts_nodes_per_reason() {
    let mut cordoned = node("a", "4", "8Gi");
    cordoned["spec"] = json!({"unschedulable": true});
    let decisions = schedule(
        &nodes([cordoned, node("b", "4", "1Gi"), node("c", "4", "1Gi")]),
        &pods([pod("big", "1", "2Gi")]),
    );
    assert_eq!(
        reasons(&decisions),
        [(
            "big",
            "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient memory."
        )]
    );
}

#[test]
fn pods_asking_the_same_share_the_reason_they_fit_nowhere() {
    // Created oldest first: two oversized replicas, one that fits (and so changes what is
    // free), then another oversized one and a smaller one that still fits.
    let mut created = Vec::new();
    for (i, (name, memory)) in [
        ("big-1", "2Gi"),
        ("big-2", "2Gi"),
        ("fits-1", "600Mi"),
        ("big-3", "2Gi"),
        ("fits-2", "300Mi"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut p = pod(name, "100m", memory);
        p["metadata"]["creationTimestamp"] = format!("2026-01-01T00:00:0{i}Z").into();
        created.push(p);
    }
    let decisions = schedule(&nodes([node("a", "4", "1Gi")]), &pods(created));
    let insufficient = "0/1 nodes are available: 1 Insufficient memory.";
    assert_eq!(
        reasons(&decisions),
        [
            ("big-1", insufficient),
            ("big-2", insufficient),
            ("big-3", insufficient),
        ]
    );
    assert_eq!(placed(&decisions), [("fits-1", "a"), ("fits-2", "a")]);
}

#[test]
fn no_nodes_no_bindings() {
    let decisions = schedule(&[], &pods([pod("p", "", "")]));
    assert_eq!(
        reasons(&decisions),
        [("p", "no nodes available to schedule pods")]
    );
}

#[test]
fn tolerations_let_pods_past_taints_and_cordons() {
    let mut tainted = node("tainted", "4", "8Gi");
    tainted["spec"] = json!({"taints": [
        {"key": "dedicated", "value": "db", "effect": "NoSchedule"},
        {"key": "maintenance", "effect": "NoExecute"},
        {"key": "slow", "effect": "PreferNoSchedule"},
    ]});
    let mut cordoned = node("cordoned", "4", "8Gi");
    cordoned["spec"] = json!({"unschedulable": true});
    let cluster = nodes([tainted, cordoned]);

    let mut db_only = pod("db-only", "", "");
    db_only["spec"]["tolerations"] =
        json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]);
    let mut db = pod("db", "", "");
    db["spec"]["tolerations"] = json!([
        {"key": "dedicated", "operator": "Equal", "value": "db"},
        {"key": "maintenance", "operator": "Exists", "effect": "NoExecute"},
    ]);
    let mut wrong_value = pod("wrong-value", "", "");
    wrong_value["spec"]["tolerations"] = json!([
        {"key": "dedicated", "value": "web"},
        {"key": "maintenance", "operator": "Exists"},
    ]);
    let mut daemon = pod("daemon", "", "");
    daemon["spec"]["tolerations"] = json!([{"operator": "Exists"}]);
    let mut cordon_only = pod("cordon-only", "", "");
    cordon_only["spec"]["tolerations"] = json!([
        {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
    ]);

    let decisions = schedule(
        &cluster,
        &pods([db_only, db, wrong_value, daemon, cordon_only]),
    );
    assert_eq!(
        // Pods created at the same time go by name.
        placed(&decisions),
        [
            ("cordon-only", "cordoned"),
            // Tolerates everything; the tainted node has fewer pods.
            ("daemon", "tainted"),
            ("db", "tainted"),
        ]
    );
    assert_eq!(
        reasons(&decisions),
        [
            (
                "db-only",
                "0/2 nodes are available: 1 node(s) had untolerated taint {maintenance: }, \
                 1 node(s) were unschedulable."
            ),
            (
                "wrong-value",
                "0/2 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, \
                 1 node(s) were unschedulable."
            ),
        ]
    );
}

#[test]
fn requests_add_up_across_a_batch() {
    let decisions = schedule(
        &nodes([node("a", "1", "1Gi")]),
        &pods([
            pod("p1", "400m", "100Mi"),
            pod("p2", "400m", "100Mi"),
            pod("p3", "400m", "100Mi"),
            // Requests no CPU, so a CPU-full node still takes it.
            pod("p4", "", "100Mi"),
        ]),
    );
    assert_eq!(placed(&decisions), [("p1", "a"), ("p2", "a"), ("p4", "a")]);
    assert_eq!(
        reasons(&decisions),
        [("p3", "0/1 nodes are available: 1 Insufficient cpu.")]
    );

    let mut two_pods = node("a", "4", "8Gi");
    two_pods["status"]["allocatable"]["pods"] = "2".into();
    let decisions = schedule(
        &nodes([two_pods]),
        &pods([pod("p1", "", ""), pod("p2", "", ""), pod("p3", "", "")]),
    );
    assert_eq!(placed(&decisions), [("p1", "a"), ("p2", "a")]);
    assert_eq!(
        reasons(&decisions),
        [("p3", "0/1 nodes are available: 1 Too many pods.")]
    );
}

#[test]
fn bound_pods_hold_resources_until_they_finish() {
    let mut finished = bound_to(pod("done", "900m", ""), "a");
    finished["status"] = json!({"phase": "Succeeded"});
    let mut deleting = pod("deleting", "100m", "");
    deleting["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z".into();
    let mut failed_unbound = pod("failed", "100m", "");
    failed_unbound["status"] = json!({"phase": "Failed"});
    let all = pods([
        bound_to(pod("running", "600m", ""), "a"),
        finished,
        bound_to(pod("elsewhere", "900m", ""), "gone"),
        deleting,
        failed_unbound,
        pod("fits", "400m", ""),
        pod("too-much", "1m", ""),
    ]);

    let decisions = schedule(&nodes([node("a", "1", "1Gi")]), &all);
    assert_eq!(placed(&decisions), [("fits", "a")]);
    assert_eq!(
        reasons(&decisions),
        [("too-much", "0/1 nodes are available: 1 Insufficient cpu.")]
    );
}

#[test]
fn node_selector_restricts_to_matching_labels() {
    let mut ssd = node("z-ssd", "4", "8Gi");
    ssd["metadata"]["labels"] = json!({"disk": "ssd", "zone": "1"});
    let mut hdd = node("a-hdd", "4", "8Gi");
    hdd["metadata"]["labels"] = json!({"disk": "hdd", "zone": "1"});
    let mut wants_ssd = pod("wants-ssd", "", "");
    wants_ssd["spec"]["nodeSelector"] = json!({"disk": "ssd", "zone": "1"});
    let mut wants_zone_2 = pod("wants-zone-2", "", "");
    wants_zone_2["spec"]["nodeSelector"] = json!({"zone": "2"});

    let decisions = schedule(
        &nodes([ssd, hdd]),
        &pods([wants_ssd, wants_zone_2, pod("anywhere", "", "")]),
    );
    assert_eq!(
        placed(&decisions),
        [("anywhere", "a-hdd"), ("wants-ssd", "z-ssd")]
    );
    assert_eq!(
        reasons(&decisions),
        [(
            "wants-zone-2",
            "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
        )]
    );
}

#[test]
fn replicas_of_one_owner_spread_before_load_counts() {
    // Node a is by far the least allocated, yet replicas go one per node first.
    let cluster = nodes([
        node("a", "16", "64Gi"),
        node("b", "4", "8Gi"),
        node("c", "4", "8Gi"),
    ]);
    let existing = [
        bound_to(pod("load-b", "2", "4Gi"), "b"),
        bound_to(pod("load-c", "3", "6Gi"), "c"),
    ];
    let replicas = (0..6).map(|i| owned_by(pod(&format!("web-{i}"), "100m", "64Mi"), "rs-web"));
    let decisions = schedule(&cluster, &pods(existing.into_iter().chain(replicas)));

    let mut per_node = BTreeMap::new();
    for (_, node) in placed(&decisions).iter().take(3) {
        *per_node.entry(*node).or_insert(0) += 1;
    }
    assert_eq!(per_node, BTreeMap::from([("a", 1), ("b", 1), ("c", 1)]));
    let mut per_node = BTreeMap::new();
    for (_, node) in placed(&decisions) {
        *per_node.entry(node).or_insert(0) += 1;
    }
    assert_eq!(per_node, BTreeMap::from([("a", 2), ("b", 2), ("c", 2)]));

    // Replicas already bound count too, and pods with no controller spread by their labels.
    let labelled = |name: &str| {
        let mut p = pod(name, "", "");
        p["metadata"]["labels"] = json!({"app": "cache"});
        p
    };
    let bound = bound_to(labelled("cache-0"), "a");
    let decisions = schedule(
        &cluster,
        &pods([bound, labelled("cache-1"), labelled("cache-2")]),
    );
    assert_eq!(placed(&decisions), [("cache-1", "b"), ("cache-2", "c")]);
}

#[test]
fn least_allocated_node_wins_then_name() {
    let cluster = nodes([
        node("a", "4", "8Gi"),
        node("b", "4", "8Gi"),
        node("c", "4", "8Gi"),
    ]);
    let existing = [
        bound_to(pod("load-a", "3", "6Gi"), "a"),
        bound_to(pod("load-b", "1", "2Gi"), "b"),
        bound_to(pod("load-c", "2", "4Gi"), "c"),
    ];
    let pending = (1..=4).map(|i| pod(&format!("p{i}"), "1", "2Gi"));
    let decisions = schedule(&cluster, &pods(existing.into_iter().chain(pending)));
    // p1: b is half full. p2: b and c would both be 3/4 full, b comes first by name.
    // p3: c is the emptier. p4: all three would be full, a comes first by name.
    assert_eq!(
        placed(&decisions),
        [("p1", "b"), ("p2", "b"), ("p3", "c"), ("p4", "a")]
    );
}

#[test]
fn pods_without_requests_still_spread_by_load() {
    let decisions = schedule(
        &nodes([node("a", "4", "8Gi"), node("b", "4", "8Gi")]),
        &pods((1..=4).map(|i| pod(&format!("p{i}"), "", ""))),
    );
    assert_eq!(
        placed(&decisions),
        [("p1", "a"), ("p2", "b"), ("p3", "a"), ("p4", "b")]
    );
}

#[test]
fn same_input_in_any_order_gives_the_same_bindings() {
    let names = ["n3", "n1", "n4", "n2", "n5"];
    let forward = nodes(names.map(|n| node(n, "2", "4Gi")));
    let backward = nodes(names.iter().rev().map(|n| node(n, "2", "4Gi")));
    let batch = pods((0..12).map(|i| {
        owned_by(
            pod(&format!("p{i:02}"), "300m", "256Mi"),
            &format!("rs-{}", i % 3),
        )
    }));

    let first = schedule(&forward, &batch);
    assert_eq!(first, schedule(&forward, &batch));
    assert_eq!(first, schedule(&backward, &batch));
    assert_eq!(first.bindings.len(), 12);
    // Every node is alike and empty: the first pod goes to the first node by name.
    assert_eq!(first.bindings[0].node, "n1");
}

#[test]
fn oldest_pending_pod_goes_first() {
    let mut newer = pod("a-newer", "600m", "");
    newer["metadata"]["creationTimestamp"] = "2024-01-01T00:00:02Z".into();
    let mut older = pod("z-older", "600m", "");
    older["metadata"]["creationTimestamp"] = "2024-01-01T00:00:01Z".into();
    let decisions = schedule(&nodes([node("a", "1", "1Gi")]), &pods([newer, older]));
    assert_eq!(placed(&decisions), [("z-older", "a")]);
    assert_eq!(decisions.unschedulable[0].name, "a-newer");
}

#[test]
fn one_snapshot_schedules_successive_batches() {
    let cluster = nodes([node("a", "1", "1Gi")]);
    let mut snapshot = Snapshot::new(&cluster, &[]);
    let first = pods([pod("p1", "600m", "")]);
    let second = pods([pod("p2", "600m", "")]);
    assert_eq!(placed(&snapshot.schedule(&first)), [("p1", "a")]);
    assert_eq!(
        reasons(&snapshot.schedule(&second)),
        [("p2", "0/1 nodes are available: 1 Insufficient cpu.")]
    );
}

#[test]
fn unreadable_requests_keep_a_pod_pending_with_the_field_named() {
    let decisions = schedule(
        &nodes([node("broken", "lots", "8Gi"), node("a", "4", "8Gi")]),
        &pods([pod("bad", "much", ""), pod("big", "8", "")]),
    );
    assert_eq!(
        reasons(&decisions),
        [
            (
                "bad",
                "pod has an unreadable resource request: \
                 spec.containers[0].resources.requests[cpu]: \"much\" is not a quantity: \
                 expected a number like 100m, 128Mi or 1.5"
            ),
            (
                "big",
                "0/2 nodes are available: 1 Insufficient cpu, \
                 1 node(s) reported an invalid allocatable."
            ),
        ]
    );
}

#[test]
fn pod_requests_follow_kubernetes_rules() {
    let requests = |spec: Value| {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec}))
            .expect("a Pod");
        pod_requests(&pod).expect("readable requests")
    };
    let fit = |cpu_millis, memory_bytes| Resources {
        cpu_millis,
        memory_bytes,
    };
    const MI: i64 = 1024 * 1024;

    // Containers add up; a limit stands in for a missing request.
    let r = requests(json!({"containers": [
        {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
        {"name": "b", "resources": {"limits": {"cpu": "200m", "memory": "32Mi"}}},
    ]}));
    assert_eq!(r.fit, fit(300, 96 * MI));
    assert_eq!(r.score, r.fit);

    // Nothing requested fits anywhere but scores as 100m and 200Mi per container; an explicit
    // zero stays zero.
    let r = requests(json!({"containers": [
        {"name": "a"},
        {"name": "b", "resources": {"requests": {"cpu": "0"}}},
    ]}));
    assert_eq!(r.fit, fit(0, 0));
    assert_eq!(r.score, fit(100, 400 * MI));

    // Init containers run one at a time before the rest: the largest counts, if it is larger.
    // A sidecar keeps running beside later init containers and the app.
    let r = requests(json!({
        "containers": [{"name": "app", "resources": {"requests": {"cpu": "100m", "memory": "10Mi"}}}],
        "initContainers": [
            {"name": "migrate", "resources": {"requests": {"cpu": "1", "memory": "1Mi"}}},
            {"name": "proxy", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m", "memory": "20Mi"}}},
            {"name": "warm", "resources": {"requests": {"cpu": "500m", "memory": "100Mi"}}},
        ],
        "overhead": {"cpu": "10m", "memory": "1Mi"},
    }));
    // cpu: max(100 + 50, 1000, 500 + 50) + 10; memory: max(10 + 20, 1, 100 + 20) + 1.
    assert_eq!(r.fit, fit(1010, 121 * MI));

    // Pod-level requests replace the containers' sum.
    let r = requests(json!({
        "containers": [{"name": "app", "resources": {"requests": {"cpu": "100m", "memory": "10Mi"}}}],
        "resources": {"requests": {"cpu": "2"}},
    }));
    assert_eq!(r.fit, fit(2000, 10 * MI));
}

/// The throughput goal is 10,000 pods/s with 5,000 nodes. Prints the time taken; run
/// in release for a figure worth quoting:
/// `cargo test --release -p berth-control-plane --lib scheduler::tests::ten_thousand -- --nocapture`
#[test]
fn ten_thousand_pods_onto_five_thousand_nodes() {
    const NODES: usize = 5_000;
    const REPLICAS: usize = 10;
    const PODS: usize = 10_000;
    let cluster = nodes((0..NODES).map(|i| node(&format!("node-{i:05}"), "8", "32Gi")));
    let mut all: Vec<Pod> = pods((0..PODS).map(|i| {
        owned_by(
            pod(&format!("pod-{i:05}"), "100m", "128Mi"),
            &format!("rs-{}", i / REPLICAS),
        )
    }));
    // A tenth of the nodes are busy already.
    all.extend(pods((0..NODES / 10).map(|i| {
        bound_to(
            pod(&format!("busy-{i:05}"), "4", "16Gi"),
            &format!("node-{i:05}"),
        )
    })));

    let start = std::time::Instant::now();
    let decisions = schedule(&cluster, &all);
    let elapsed = start.elapsed();
    eprintln!(
        "scheduled {} pods onto {NODES} nodes in {elapsed:?}: {:.0} pods/s",
        decisions.bindings.len(),
        decisions.bindings.len() as f64 / elapsed.as_secs_f64()
    );

    assert_eq!(decisions.bindings.len(), PODS);
    assert!(decisions.unschedulable.is_empty());
    // Each owner's ten replicas land on ten different nodes, none of them a busy one.
    let mut seen = HashSet::new();
    for binding in &decisions.bindings {
        let replica: usize = binding.name["pod-".len()..].parse().expect("numbered");
        assert!(
            seen.insert((replica / REPLICAS, binding.node.clone())),
            "two replicas of one owner on {}",
            binding.node
        );
        let node: usize = binding.node["node-".len()..].parse().expect("numbered");
        assert!(node >= NODES / 10, "{} went to a busy node", binding.name);
    }
}
