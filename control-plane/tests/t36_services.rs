//! Services against real Raft members in this process (in a network namespace of the test's
//! own): ClusterIP and nodePort allocation, through two members at once too; the endpoints
//! controller's EndpointSlices as pods come, turn ready and go; LoadBalancer status. The test
//! acts as the agents, reporting pod and node status.

mod common;

use berth_control_plane::store::allocation::ServiceRanges;
use berth_control_plane::{Member, MemberConfig};
use common::{
    apply, connect, delete, eventually, get, list, member_config, object_of, report_status,
    try_apply, Api,
};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tonic::Code;

fn config(dir: &std::path::Path, name: &str, ranges: &ServiceRanges) -> MemberConfig {
    let mut config = member_config(dir, name);
    config.service_ranges = ranges.clone();
    // The test reports node status itself and sends no heartbeats: nodes stay as reported.
    config.node_lifecycle.grace = Duration::from_secs(3600);
    config
}

/// One member (the first) or more (the others joined through it), with these ranges.
async fn start(
    members: usize,
    ranges: ServiceRanges,
) -> (Vec<Member>, Vec<Api>, tempfile::TempDir) {
    berth_e2e::isolate_network();
    let dir = tempfile::tempdir().unwrap();
    let mut first = config(dir.path(), "m0", &ranges);
    first.init = true;
    let leader = Member::start(first).await.expect("member starts");
    leader
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    let mut started = vec![leader];
    for i in 1..members {
        let mut joiner = config(dir.path(), &format!("m{i}"), &ranges);
        joiner.join = Some(started[0].addr.to_string());
        started.push(Member::start(joiner).await.expect("member joins"));
    }
    let mut apis = Vec::new();
    for member in &started {
        apis.push(connect(member).await);
    }
    (started, apis, dir)
}

async fn stop(members: Vec<Member>) {
    for member in members.into_iter().rev() {
        member.shutdown().await;
    }
}

fn ranges(cidr: &str, ports: &str) -> ServiceRanges {
    ServiceRanges::new(cidr, ports).unwrap()
}

fn service(name: &str, type_: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
           "spec": {"type": type_, "selector": {"app": name},
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
}

fn cluster_ip(service: &Value) -> String {
    service["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn node_ports(service: &Value) -> Vec<i64> {
    let ports = service["spec"]["ports"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ports
        .iter()
        .filter_map(|p| p["nodePort"].as_i64())
        .collect()
}

#[tokio::test]
async fn t10_concurrent_creates_through_two_members_get_distinct_values() {
    // 30 usable addresses and 40 ports for 24 Services created at once.
    let (members, apis, _dir) = start(2, ranges("10.96.0.0/27", "30000-30039")).await;
    let creates = (0..24).map(|i| {
        let mut api = apis[i % 2].clone();
        async move { apply(&mut api, &service(&format!("s{i:02}"), "NodePort")).await }
    });
    let created: Vec<Value> = futures::future::join_all(creates).await;
    let ips: BTreeSet<String> = created.iter().map(cluster_ip).collect();
    let ports: BTreeSet<i64> = created.iter().flat_map(node_ports).collect();
    assert_eq!(ips.len(), 24, "{ips:?}");
    assert_eq!(ports.len(), 24, "{ports:?}");
    let range = ranges("10.96.0.0/27", "30000-30039");
    for ip in &ips {
        assert!(range.cluster_ips.contains(ip.parse().unwrap()), "{ip}");
    }
    assert!(
        ports.iter().all(|p| (30000..=30039).contains(p)),
        "{ports:?}"
    );
    // What each member stores says the same.
    let mut api = apis[1].clone();
    let stored: BTreeSet<String> = list(&mut api, "Service", "default")
        .await
        .iter()
        .map(cluster_ip)
        .collect();
    assert_eq!(stored, ips);
    stop(members).await;
}

#[tokio::test]
async fn t20_taken_and_out_of_range_values_are_refused() {
    let (members, mut apis, _dir) = start(1, ServiceRanges::default()).await;
    let api = &mut apis[0];
    let mut a = service("a", "NodePort");
    a["spec"]["clusterIP"] = json!("10.96.0.5");
    a["spec"]["ports"][0]["nodePort"] = json!(30080);
    let stored = apply(api, &a).await;
    assert_eq!(
        (cluster_ip(&stored), node_ports(&stored)),
        ("10.96.0.5".into(), vec![30080])
    );

    let refusals = [
        ("clusterIP", json!("10.96.0.5"), "spec.clusterIPs: Invalid value: \"10.96.0.5\": provided IP is already allocated"),
        ("clusterIP", json!("10.97.0.5"), "spec.clusterIPs: Invalid value: \"10.97.0.5\": provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/16"),
        ("nodePort", json!(30080), "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"),
        ("nodePort", json!(40000), "spec.ports[0].nodePort: Invalid value: 40000: provided port is not in the valid range. The range of valid ports is 30000-32767"),
    ];
    for (field, value, message) in refusals {
        let mut b = service("b", "NodePort");
        match field {
            "clusterIP" => b["spec"]["clusterIP"] = value,
            _ => b["spec"]["ports"][0]["nodePort"] = value,
        }
        let error = try_apply(api, &b).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
        assert!(error.message().contains(message), "{}", error.message());
    }
    stop(members).await;
}

#[tokio::test]
async fn t30_cluster_ip_is_kept_and_immutable() {
    let (members, mut apis, _dir) = start(1, ServiceRanges::default()).await;
    let api = &mut apis[0];
    let created = apply(api, &service("web", "NodePort")).await;
    let (ip, ports) = (cluster_ip(&created), node_ports(&created));
    assert!(!ip.is_empty() && ports.len() == 1, "{created:#}");
    assert_eq!(created["spec"]["clusterIPs"], json!([ip]));
    // The same manifest again: nothing changes, nothing is picked anew.
    let again = try_apply(api, &service("web", "NodePort")).await.unwrap();
    assert_eq!(again.outcome(), berth_proto::pb::ApplyOutcome::Unchanged);
    let mut moved = service("web", "NodePort");
    moved["spec"]["clusterIP"] = json!("10.96.200.200");
    let error = try_apply(api, &moved).await.unwrap_err();
    assert!(
        error
            .message()
            .contains("spec.clusterIP: Invalid value: \"10.96.200.200\": field is immutable"),
        "{}",
        error.message()
    );
    let stored = get(api, "Service", "default", "web").await.unwrap();
    assert_eq!((cluster_ip(&stored), node_ports(&stored)), (ip, ports));
    stop(members).await;
}

#[tokio::test]
async fn t40_a_full_range_refuses_clearly_and_a_delete_frees() {
    // A /30 has two usable addresses.
    let (members, apis, _dir) = start(1, ranges("10.96.0.0/30", "30000-32767")).await;
    let creates = (0..3).map(|i| {
        let mut api = apis[0].clone();
        async move {
            let service = service(&format!("s{i}"), "ClusterIP");
            try_apply(&mut api, &service)
                .await
                .map(|r| object_of(&r.object))
        }
    });
    let results = futures::future::join_all(creates).await;
    let created: Vec<&Value> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let errors: Vec<&tonic::Status> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(created.len(), 2, "{results:?}");
    let ips: BTreeSet<String> = created.iter().map(|s| cluster_ip(s)).collect();
    assert_eq!(ips, ["10.96.0.1", "10.96.0.2"].map(String::from).into());
    assert!(
        errors[0]
            .message()
            .contains("failed to allocate a serviceIP: range is full"),
        "{}",
        errors[0].message()
    );
    // A headless Service needs no address.
    let mut api = apis[0].clone();
    let mut headless = service("headless", "ClusterIP");
    headless["spec"]["clusterIP"] = json!("None");
    let stored = apply(&mut api, &headless).await;
    assert_eq!(cluster_ip(&stored), "None");
    // Deleting a Service frees its address for the next.
    let name = created[0]["metadata"]["name"].as_str().unwrap().to_string();
    let freed = cluster_ip(created[0]);
    delete(&mut api, "Service", "default", &name).await;
    let late = apply(&mut api, &service("late", "ClusterIP")).await;
    assert_eq!(cluster_ip(&late), freed);
    stop(members).await;
}

#[tokio::test]
async fn t50_type_changes_allocate_and_release_node_ports() {
    let (members, mut apis, _dir) = start(1, ServiceRanges::default()).await;
    let api = &mut apis[0];
    let created = apply(api, &service("web", "ClusterIP")).await;
    assert!(node_ports(&created).is_empty());
    let mut node_port = service("web", "NodePort");
    node_port["spec"]["ports"][0]["nodePort"] = json!(30080);
    let changed = apply(api, &node_port).await;
    assert_eq!(node_ports(&changed), [30080]);
    assert_eq!(cluster_ip(&changed), cluster_ip(&created));
    let mut other = service("other", "NodePort");
    other["spec"]["ports"][0]["nodePort"] = json!(30080);
    assert!(try_apply(api, &other).await.is_err(), "30080 is web's");
    let back = apply(api, &service("web", "ClusterIP")).await;
    assert!(node_ports(&back).is_empty(), "{back:#}");
    let other = try_apply(api, &other).await.expect("30080 is free again");
    let other = object_of(&other.object);
    assert_eq!(node_ports(&other), [30080]);
    stop(members).await;
}

/// A pod of app `web` on node-1 whose container serves `http` on `port`.
fn pod(name: &str, port: i64) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": {"app": "web"}},
           "spec": {"nodeName": "node-1",
                    "containers": [{"name": "main", "image": "web:1",
                                    "ports": [{"name": "http", "containerPort": port}]}]}})
}

async fn report_pod(api: &mut Api, name: &str, ip: &str, ready: bool) {
    let ready = if ready { "True" } else { "False" };
    let status = json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                        "conditions": [{"type": "Ready", "status": ready}]});
    report_status(api, "Pod", "default", name, &status).await;
}

/// (resolved port, address, ready, serving, terminating) of every endpoint of `web`'s slices.
async fn endpoints(api: &mut Api) -> BTreeSet<(i64, String, bool, bool, bool)> {
    let mut found = BTreeSet::new();
    for slice in list(api, "EndpointSlice", "default").await {
        if slice["metadata"]["labels"]["kubernetes.io/service-name"] != "web" {
            continue;
        }
        let port = slice["ports"][0]["port"].as_i64().unwrap_or_default();
        for endpoint in slice["endpoints"].as_array().cloned().unwrap_or_default() {
            let condition = |c: &str| endpoint["conditions"][c].as_bool().unwrap_or_default();
            found.insert((
                port,
                endpoint["addresses"][0].as_str().unwrap().to_string(),
                condition("ready"),
                condition("serving"),
                condition("terminating"),
            ));
        }
    }
    found
}

async fn endpoints_become(api: &mut Api, what: &str, expected: &[(i64, &str, bool, bool, bool)]) {
    let expected: BTreeSet<(i64, String, bool, bool, bool)> = expected
        .iter()
        .map(|(port, ip, r, s, t)| (*port, ip.to_string(), *r, *s, *t))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = endpoints(api).await;
        if found == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: endpoints {found:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn t60_endpoint_slices_follow_pods() {
    let (members, mut apis, _dir) = start(1, ServiceRanges::default()).await;
    let api = &mut apis[0];
    let mut web = service("web", "ClusterIP");
    web["spec"]["ports"][0]["targetPort"] = json!("http");
    apply(api, &web).await;
    // Pods whose named port resolves to different numbers land in different slices.
    apply(api, &pod("a", 8080)).await;
    apply(api, &pod("b", 9090)).await;
    report_pod(api, "a", "10.244.0.2", true).await;
    report_pod(api, "b", "10.244.0.3", true).await;
    endpoints_become(
        api,
        "both ready",
        &[
            (8080, "10.244.0.2", true, true, false),
            (9090, "10.244.0.3", true, true, false),
        ],
    )
    .await;
    let slices = list(api, "EndpointSlice", "default").await;
    assert_eq!(slices.len(), 2);
    for slice in &slices {
        assert!(slice["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("web-"));
        assert_eq!(
            slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
            "endpointslice-controller.berth.dev"
        );
        assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
        assert_eq!(slice["addressType"], "IPv4");
        assert_eq!(slice["ports"][0]["name"], "http");
        assert_eq!(slice["endpoints"][0]["nodeName"], "node-1");
        assert_eq!(slice["endpoints"][0]["targetRef"]["kind"], "Pod");
    }

    report_pod(api, "a", "10.244.0.2", false).await;
    endpoints_become(
        api,
        "a not ready",
        &[
            (8080, "10.244.0.2", false, false, false),
            (9090, "10.244.0.3", true, true, false),
        ],
    )
    .await;

    // b on its way out (a graceful delete stores deletionTimestamp): still serving, draining.
    let mut leaving = get(api, "Pod", "default", "b").await.unwrap();
    leaving["metadata"]["deletionTimestamp"] = json!(jiff::Timestamp::now().to_string());
    apply(api, &leaving).await;
    endpoints_become(
        api,
        "b terminating",
        &[
            (8080, "10.244.0.2", false, false, false),
            (9090, "10.244.0.3", false, true, true),
        ],
    )
    .await;
    delete(api, "Pod", "default", "b").await;
    endpoints_become(api, "b gone", &[(8080, "10.244.0.2", false, false, false)]).await;
    let slices = eventually("b's slice deleted", async || {
        let slices = list(api, "EndpointSlice", "default").await;
        (slices.len() == 1).then_some(slices)
    })
    .await;
    assert_eq!(slices[0]["ports"][0]["port"], 8080);

    // A Service without a selector keeps the slices its user writes.
    apply(
        api,
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "manual"},
                       "spec": {"ports": [{"port": 80}]}}),
    )
    .await;
    apply(
        api,
        &json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                       "metadata": {"name": "manual-1",
                                    "labels": {"kubernetes.io/service-name": "manual"}},
                       "addressType": "IPv4",
                       "endpoints": [{"addresses": ["192.0.2.1"]}],
                       "ports": [{"port": 80}]}),
    )
    .await;

    delete(api, "Service", "default", "web").await;
    eventually("web's slices deleted, manual's kept", async || {
        let names: Vec<String> = list(api, "EndpointSlice", "default")
            .await
            .iter()
            .map(|s| s["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        (names == ["manual-1"]).then_some(())
    })
    .await;
    stop(members).await;
}

async fn register_node(api: &mut Api, name: &str, ip: &str, ready: bool) {
    apply(
        api,
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}}),
    )
    .await;
    report_node(api, name, ip, ready).await;
}

async fn report_node(api: &mut Api, name: &str, ip: &str, ready: bool) {
    let ready = if ready { "True" } else { "False" };
    let status = json!({"addresses": [{"type": "InternalIP", "address": ip}],
                        "conditions": [{"type": "Ready", "status": ready}]});
    report_status(api, "Node", "", name, &status).await;
}

async fn ingress(api: &mut Api, name: &str) -> Vec<String> {
    let service = get(api, "Service", "default", name).await.unwrap();
    let ingress = service.pointer("/status/loadBalancer/ingress").cloned();
    let ingress = ingress
        .and_then(|i| i.as_array().cloned())
        .unwrap_or_default();
    ingress
        .iter()
        .map(|i| i["ip"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn t70_load_balancers_list_ready_nodes() {
    let (members, mut apis, _dir) = start(1, ServiceRanges::default()).await;
    let api = &mut apis[0];
    register_node(api, "n1", "10.0.0.1", true).await;
    register_node(api, "n2", "10.0.0.2", true).await;
    register_node(api, "n3", "10.0.0.3", false).await;
    let created = apply(api, &service("lb", "LoadBalancer")).await;
    assert_eq!(node_ports(&created).len(), 1, "LoadBalancers get nodePorts");
    eventually("ingress of the ready nodes", async || {
        (ingress(api, "lb").await == ["10.0.0.1", "10.0.0.2"]).then_some(())
    })
    .await;
    report_node(api, "n2", "10.0.0.2", false).await;
    report_node(api, "n3", "10.0.0.3", true).await;
    eventually("ingress follows readiness", async || {
        (ingress(api, "lb").await == ["10.0.0.1", "10.0.0.3"]).then_some(())
    })
    .await;
    // No longer a LoadBalancer: no ingress.
    apply(api, &service("lb", "ClusterIP")).await;
    eventually("ingress cleared", async || {
        ingress(api, "lb").await.is_empty().then_some(())
    })
    .await;
    stop(members).await;
}
