//! The API against a real one-member Raft cluster in this process (in a network namespace of
//! the test's own).

mod common;

use berth_control_plane::{Member, MemberConfig};
use berth_proto::pb::{self, ApplyOutcome};
use common::{apply, delete, get, list, object_of, try_apply, Api};
use serde_json::{json, Value};
use tokio_stream::StreamExt;
use tonic::Code;

struct Fixture {
    member: Option<Member>,
    api: Api,
    dir: tempfile::TempDir,
}

async fn start(configure: impl FnOnce(&mut MemberConfig)) -> Fixture {
    let (member, api, dir) = common::start(configure).await;
    Fixture {
        member: Some(member),
        api,
        dir,
    }
}

impl Fixture {
    async fn restart(&mut self) {
        let member = self.member.take().unwrap();
        let member = common::restart(member, self.dir.path()).await;
        self.api = common::connect(&member).await;
        self.member = Some(member);
    }
}

fn config_map(name: &str, value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"key": value}})
}

async fn revision(api: &mut Api) -> u64 {
    api.cluster(pb::ClusterRequest {})
        .await
        .unwrap()
        .into_inner()
        .revision
}

#[tokio::test]
async fn t10_read_after_write_sees_it() {
    let mut f = start(|_| {}).await;
    for i in 0..20 {
        apply(&mut f.api, &config_map("c", &i.to_string())).await;
        let got = get(&mut f.api, "ConfigMap", "default", "c").await.unwrap();
        assert_eq!(got["data"]["key"], i.to_string());
    }
}

/// A stale read is possibly behind the leader, never behind the writes its own member
/// answered: an answer may come before the apply's commit (see raft/state_machine.rs).
#[tokio::test]
async fn t11_stale_read_on_the_member_sees_its_answered_writes() {
    let mut f = start(|_| {}).await;
    for i in 0..50 {
        let answered = apply(&mut f.api, &config_map("c", &i.to_string())).await;
        let request = pb::GetRequest {
            object: common::object_ref("ConfigMap", "default", "c"),
            stale_ok: true,
        };
        let got = object_of(&f.api.get(request).await.unwrap().into_inner().object);
        assert_eq!(got["data"]["key"], i.to_string());
        assert_eq!(
            got["metadata"]["resourceVersion"],
            answered["metadata"]["resourceVersion"]
        );
        let revision = revision(&mut f.api).await;
        let answered_revision: u64 = answered["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            revision >= answered_revision,
            "{revision} < {answered_revision}"
        );
    }
}

#[tokio::test]
async fn t20_same_resource_version_one_wins_one_conflicts() {
    let mut f = start(|_| {}).await;
    let created = apply(&mut f.api, &config_map("shared", "v0")).await;
    let rv = created["metadata"]["resourceVersion"].clone();
    let mut a = config_map("shared", "from-a");
    a["metadata"]["resourceVersion"] = rv.clone();
    let mut b = config_map("shared", "from-b");
    b["metadata"]["resourceVersion"] = rv;
    let (mut api_a, mut api_b) = (f.api.clone(), f.api.clone());
    let (ra, rb) = tokio::join!(try_apply(&mut api_a, &a), try_apply(&mut api_b, &b));
    let results = [ra, rb];
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let conflicts: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(ok, 1, "exactly one update wins: {results:?}");
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].code(), Code::Aborted);
    assert!(
        conflicts[0].message().starts_with("conflict:"),
        "{}",
        conflicts[0].message()
    );
}

#[tokio::test]
async fn t25_concurrent_writes_each_get_their_own_result() {
    // Concurrent writes are proposed together (group commit); each must still get the
    // result of its own command.
    let f = start(|_| {}).await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let mut api = f.api.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("c{i}");
            let response = try_apply(&mut api, &config_map(&name, &i.to_string()))
                .await
                .unwrap();
            (name, response)
        }));
    }
    let mut revisions = std::collections::BTreeSet::new();
    for task in tasks {
        let (name, response) = task.await.unwrap();
        assert_eq!(response.outcome(), ApplyOutcome::Created);
        let object = object_of(&response.object);
        assert_eq!(object["metadata"]["name"], name.as_str());
        revisions.insert(
            object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(revisions.len(), 64, "every write has its own revision");
}

#[tokio::test]
async fn t30_invalid_objects_are_refused_and_nothing_is_stored() {
    let mut f = start(|_| {}).await;
    let before = revision(&mut f.api).await;
    let bad_name =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}});
    assert_eq!(
        try_apply(&mut f.api, &bad_name).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let unknown_kind = json!({"apiVersion": "v1", "kind": "Widget", "metadata": {"name": "w"}});
    assert_eq!(
        try_apply(&mut f.api, &unknown_kind)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let no_namespace = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "nope"}});
    let error = try_apply(&mut f.api, &no_namespace).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    assert!(
        error.message().contains("namespace \"nope\" not found"),
        "{}",
        error.message()
    );
    assert_eq!(
        revision(&mut f.api).await,
        before,
        "a refused write must not advance the revision"
    );
}

#[tokio::test]
async fn t40_apply_reports_created_configured_unchanged() {
    let mut f = start(|_| {}).await;
    let outcome = |r: pb::ApplyResponse| r.outcome();
    assert_eq!(
        outcome(try_apply(&mut f.api, &config_map("c", "1")).await.unwrap()),
        ApplyOutcome::Created
    );
    assert_eq!(
        outcome(try_apply(&mut f.api, &config_map("c", "1")).await.unwrap()),
        ApplyOutcome::Unchanged
    );
    assert_eq!(
        outcome(try_apply(&mut f.api, &config_map("c", "2")).await.unwrap()),
        ApplyOutcome::Configured
    );
    let dry = pb::ApplyRequest {
        object: serde_json::to_vec(&config_map("d", "1")).unwrap(),
        dry_run: true,
    };
    let before = revision(&mut f.api).await;
    assert_eq!(
        f.api.apply(dry).await.unwrap().into_inner().outcome(),
        ApplyOutcome::Created
    );
    assert_eq!(revision(&mut f.api).await, before, "dry run stores nothing");
}

#[tokio::test]
async fn t50_watch_replays_from_a_revision_then_follows() {
    let mut f = start(|_| {}).await;
    let from = revision(&mut f.api).await;
    for i in 0..3 {
        apply(&mut f.api, &config_map(&format!("c{i}"), "x")).await;
    }
    let request = pb::WatchRequest {
        kind: "cm".into(),
        namespace: String::new(),
        label_selector: String::new(),
        from_revision: from,
    };
    let mut stream = f.api.watch(request).await.unwrap().into_inner();
    let mut names = Vec::new();
    for _ in 0..3 {
        let event = stream.next().await.unwrap().unwrap();
        assert_eq!(event.r#type(), pb::EventType::Added);
        names.push(
            object_of(&event.object)["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(names, ["c0", "c1", "c2"]);
    delete(&mut f.api, "ConfigMap", "default", "c1").await;
    let event = stream.next().await.unwrap().unwrap();
    assert_eq!(event.r#type(), pb::EventType::Deleted);
    assert_eq!(object_of(&event.object)["metadata"]["name"], "c1");
}

#[tokio::test]
async fn t60_watch_from_a_revision_no_longer_retained_is_expired() {
    let mut f = start(|c| c.watch_history = 5).await;
    let from = revision(&mut f.api).await;
    for i in 0..10 {
        apply(&mut f.api, &config_map("c", &i.to_string())).await;
    }
    let request = pb::WatchRequest {
        kind: "cm".into(),
        namespace: String::new(),
        label_selector: String::new(),
        from_revision: from,
    };
    let error = match f.api.watch(request).await {
        Err(status) => status,
        Ok(stream) => stream.into_inner().next().await.unwrap().unwrap_err(),
    };
    assert_eq!(error.code(), Code::OutOfRange);
    assert!(
        error.message().starts_with("expired: relist"),
        "{}",
        error.message()
    );
}

#[tokio::test]
async fn t70_snapshots_compact_the_log_and_restart_restores_everything() {
    let mut f = start(|c| c.snapshot_threshold = 10).await;
    for i in 0..40 {
        apply(&mut f.api, &config_map(&format!("c{i}"), "x")).await;
    }
    let raft = f.member.as_ref().unwrap().raft.clone();
    let metrics = raft
        .wait(Some(std::time::Duration::from_secs(10)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= 30),
            "a snapshot covers most writes",
        )
        .await
        .expect("a snapshot is built");
    assert!(metrics.purged.is_some() || metrics.snapshot.is_some());
    let before = revision(&mut f.api).await;
    f.restart().await;
    assert_eq!(revision(&mut f.api).await, before);
    assert_eq!(list(&mut f.api, "ConfigMap", "default").await.len(), 40);
}

#[tokio::test]
async fn t80_label_selectors_filter_lists() {
    let mut f = start(|_| {}).await;
    for (name, tier) in [("a", "front"), ("b", "back"), ("c", "front")] {
        let mut cm = config_map(name, "x");
        cm["metadata"]["labels"] = json!({"tier": tier});
        apply(&mut f.api, &cm).await;
    }
    let list = pb::ListRequest {
        kind: "cm".into(),
        namespace: String::new(),
        label_selector: "tier=front".into(),
        stale_ok: false,
    };
    let objects = f.api.list(list).await.unwrap().into_inner().objects;
    let names: Vec<_> = objects
        .iter()
        .map(|o| {
            object_of(o)["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["a", "c"]);
}

#[tokio::test]
async fn t90_deleting_a_namespace_deletes_its_objects() {
    let mut f = start(|_| {}).await;
    apply(
        &mut f.api,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
    )
    .await;
    let mut cm = config_map("c", "x");
    cm["metadata"]["namespace"] = json!("team");
    apply(&mut f.api, &cm).await;
    delete(&mut f.api, "Namespace", "", "team").await;
    assert_eq!(get(&mut f.api, "ConfigMap", "team", "c").await, None);
}
