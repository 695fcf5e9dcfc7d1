//! What the control plane's integration tests share: a real member (or several) in a network
//! namespace of the test's own, an API client to it, the calls the tests make through it
//! (apply, get, list, delete, status reports as an agent sends them) and polling.
//!
//! Every test file compiles this module on its own and uses a part of it, hence the
//! `allow(dead_code)`.
#![allow(dead_code)]

use berth_control_plane::{Member, MemberConfig};
use berth_proto::pb;
use berth_proto::pb::api_client::ApiClient;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub type Api = ApiClient<Channel>;

/// A member keeping its data in `dir/name` and serving on a free loopback port.
pub fn member_config(dir: &Path, name: &str) -> MemberConfig {
    let mut config = MemberConfig::new(dir.join(name));
    config.listen = Some("127.0.0.1:0".parse().unwrap());
    config
}

pub async fn connect(member: &Member) -> Api {
    ApiClient::new(
        berth_proto::transport::connect(&member.addr.to_string())
            .await
            .unwrap(),
    )
}

/// Isolates the test's network, then starts a new one-member cluster in a fresh directory
/// (its data in `member/`), `configure`d by the test.
pub async fn start(configure: impl FnOnce(&mut MemberConfig)) -> (Member, Api, tempfile::TempDir) {
    berth_e2e::isolate_network();
    let dir = tempfile::tempdir().unwrap();
    let mut config = member_config(dir.path(), "member");
    config.init = true;
    configure(&mut config);
    let member = Member::start(config).await.expect("member starts");
    let api = connect(&member).await;
    (member, api, dir)
}

/// Stops a member [`start`]ed in `dir` and starts it again on its data and address, once it
/// leads again.
pub async fn restart(member: Member, dir: &Path) -> Member {
    let addr = member.addr;
    member.shutdown().await;
    let mut config = MemberConfig::new(dir.join("member"));
    config.listen = Some(addr);
    let member = Member::start(config).await.expect("member restarts");
    member
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    member
}

pub fn object_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

pub fn object_ref(kind: &str, namespace: &str, name: &str) -> Option<pb::ObjectRef> {
    Some(pb::ObjectRef {
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
    })
}

pub async fn try_apply(api: &mut Api, object: &Value) -> Result<pb::ApplyResponse, tonic::Status> {
    let request = pb::ApplyRequest {
        object: serde_json::to_vec(object).unwrap(),
        dry_run: false,
    };
    api.apply(request).await.map(|r| r.into_inner())
}

/// Applies `object`, which must be taken; returns it as stored.
pub async fn apply(api: &mut Api, object: &Value) -> Value {
    let response = try_apply(api, object).await.expect("applied");
    object_of(&response.object)
}

/// The object, or `None` if there is none.
pub async fn get(api: &mut Api, kind: &str, namespace: &str, name: &str) -> Option<Value> {
    let request = pb::GetRequest {
        object: object_ref(kind, namespace, name),
        stale_ok: false,
    };
    match api.get(request).await {
        Ok(response) => Some(object_of(&response.into_inner().object)),
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => panic!("get {kind}/{name}: {status}"),
    }
}

/// The objects of `kind` in `namespace` (every namespace if empty).
pub async fn list(api: &mut Api, kind: &str, namespace: &str) -> Vec<Value> {
    let request = pb::ListRequest {
        kind: kind.into(),
        namespace: namespace.into(),
        label_selector: String::new(),
        stale_ok: false,
    };
    let objects = api.list(request).await.unwrap().into_inner().objects;
    objects.iter().map(|bytes| object_of(bytes)).collect()
}

pub async fn delete(api: &mut Api, kind: &str, namespace: &str, name: &str) {
    api.delete(pb::DeleteRequest {
        object: object_ref(kind, namespace, name),
        resource_version: 0,
    })
    .await
    .unwrap();
}

/// Sends one status update; returns its error ("" when taken).
pub async fn update_status(api: &mut Api, update: pb::StatusUpdate) -> String {
    let response = api
        .update_status(pb::UpdateStatusRequest {
            updates: vec![update],
        })
        .await
        .unwrap()
        .into_inner();
    response.results[0].error.clone()
}

/// Reports the status of an object, as its agent (or controller) would; it must be taken.
pub async fn report_status(api: &mut Api, kind: &str, namespace: &str, name: &str, status: &Value) {
    let update = pb::StatusUpdate {
        object: object_ref(kind, namespace, name),
        status: serde_json::to_vec(status).unwrap(),
        resource_version: 0,
        uid: String::new(),
    };
    assert_eq!(update_status(api, update).await, "");
}

/// Registers a Ready node the way the agent does: apply the Node, then report its status,
/// with room for 110 pods and this much `cpu` and `memory`.
pub async fn register_node(api: &mut Api, name: &str, cpu: &str, memory: &str) {
    apply(
        api,
        &json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                "spec": {}}),
    )
    .await;
    let allocatable = json!({"cpu": cpu, "memory": memory, "pods": "110"});
    let status = json!({
        "capacity": allocatable, "allocatable": allocatable,
        "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady"}],
    });
    report_status(api, "Node", "", name, &status).await;
}

/// How long the polls below wait before they fail the test.
const PATIENCE: Duration = Duration::from_secs(20);

/// Polls `check` until it gives a value.
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lists `kind` in `namespace` until `done` holds for the objects; returns them. On time out,
/// the failure shows the last listing.
pub async fn wait_for_list(
    api: &mut Api,
    kind: &str,
    namespace: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let objects = list(api, kind, namespace).await;
        if done(&objects) {
            return objects;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {objects:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
