//! The controllers' loop: the async shell around the Deployment and ReplicaSet deciders, and
//! a minimal owner garbage collector.
//!
//! ```text
//!  every member: wake on a Pod/ReplicaSet/Deployment change (watch hub), every 200 ms, or
//!  when the earliest requeue_after falls
//!    └── leads? ── Deployments, ReplicaSets, Pods (crate::cache: decoded once, fed by the hub)
//!          ├─ per Deployment: deployment::decide ─▶ Apply RS (create/scale) · Delete RS ·
//!          │                                         Apply Deployment · UpdateStatus
//!          ├─ per ReplicaSet not written above: replicaset::decide ─▶ Apply pods (create,
//!          │                                         adopt, release) · Delete pod · UpdateStatus
//!          └─ owner GC: Pods/ReplicaSets whose controller (ReplicaSet/Deployment) is gone
//!                 ──▶ one Command::Batch ──▶ Proposer ──▶ Raft (awaited: applied locally)
//! ```
//!
//! The deciders remember nothing, so a pass starts only once the previous pass's batch is
//! applied (the proposal is awaited) and never decides twice in one pass for an object: a
//! ReplicaSet the Deployment step writes is left to the next pass, which sees it as written.
//! Updates carry the resourceVersion read, deletes too: a write based on an old view fails
//! on its own and the next pass decides again. Only the leader's controllers write statuses
//! of Deployments and ReplicaSets.
//!
//! Deletion is immediate in this store (no finalizers), so garbage collection is by absence:
//! an object whose controller reference names a uid no longer stored is deleted.

use super::{controller_of, count_pods_by_owner, deployment, name_suffix, replicaset};
use crate::cache::{Cache, CacheSource, LeaderCache};
use crate::events::{reference, EventRecorder, PendingEvents};
use crate::raft::proposer::Proposer;
use crate::store::{Command, CommandResult};
use berth_proto::k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use berth_proto::k8s_openapi::api::core::v1::Pod;
use berth_proto::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use berth_proto::{Kind, ObjectKey};
use openraft::ServerState;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;
use tokio::time::Instant;

/// How often a leader reconciles when nothing wakes it: self-healing after failed writes.
const TICK: Duration = Duration::from_millis(200);

/// Runs on every member; acts while it leads. Ends when Raft shuts down.
pub async fn run(source: CacheSource, proposer: Proposer, events: EventRecorder) {
    const KINDS: &[Kind] = &[Kind::Deployment, Kind::ReplicaSet, Kind::Pod];
    let raft = source.raft.clone();
    let mut cache = LeaderCache::new(source, KINDS);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut requeue: Option<Instant> = None;
    loop {
        let requeued = async {
            match requeue {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        // A burst of changes (a scale's pods) is one pass: the pass syncs them all.
        tokio::select! {
            _ = tick.tick() => {}
            _ = requeued => {}
            alive = cache.changed() => if !alive { return },
        }
        let state = raft.metrics().borrow().state;
        match state {
            ServerState::Shutdown => return,
            ServerState::Leader => {}
            _ => {
                cache.stand_down();
                continue;
            }
        }
        let result = match cache.up_to_date().await {
            Ok((cache, _)) => pass(snapshot(cache), &proposer, &events).await,
            Err(error) => Err(error.to_string()),
        };
        match result {
            Ok(after) => requeue = after.map(|after| Instant::now() + after),
            Err(error) => tracing::warn!("controllers: {error}"),
        }
    }
}

/// The objects one pass decides from, as the leader's cache holds them.
struct Snapshot<'c> {
    deployments: Vec<&'c Deployment>,
    replica_sets: Vec<&'c ReplicaSet>,
    pods: Vec<&'c Pod>,
}

fn snapshot(cache: &Cache) -> Snapshot<'_> {
    let objects = &cache.objects;
    Snapshot {
        deployments: objects.deployments.values().collect(),
        replica_sets: objects.replica_sets.values().collect(),
        pods: objects.pods.values().collect(),
    }
}

/// The writes of one pass, built in the shell: uids, names and times are chosen here.
struct Writes {
    commands: Vec<Command>,
    now: String,
    /// Events about these writes, recorded once they are applied.
    events: PendingEvents,
}

impl Writes {
    fn apply(&mut self, object: &impl Serialize) {
        match serde_json::to_value(object) {
            Ok(object) => self.commands.push(Command::Apply {
                object,
                uid: uuid::Uuid::new_v4().to_string(),
                now: self.now.clone(),
            }),
            Err(error) => tracing::warn!("controllers: cannot serialise an object: {error}"),
        }
    }

    /// A Normal event about the write just added, about `kind` `meta`.
    fn event(&mut self, kind: Kind, meta: &ObjectMeta, reason: &'static str, message: String) {
        let component = match kind {
            Kind::Deployment => "deployment-controller",
            _ => "replicaset-controller",
        };
        let last = self.commands.len().saturating_sub(1);
        let involved = reference(kind, meta);
        self.events
            .after(last, component, involved, reason, message);
    }

    /// The Deployment's event for the ReplicaSet write just added, if it scales from `old`.
    fn scaled(&mut self, deployment: &ObjectMeta, rs: &ReplicaSet, old: i32) {
        let new = replicas(Some(rs));
        if new == old {
            return;
        }
        let direction = if new > old { "up" } else { "down" };
        let name = rs.metadata.name.as_deref().unwrap_or_default();
        let message = format!("Scaled {direction} replica set {name} to {new}");
        self.event(Kind::Deployment, deployment, "ScalingReplicaSet", message);
    }

    fn delete(&mut self, kind: Kind, meta: &ObjectMeta) {
        self.commands.push(Command::Delete {
            key: key(kind, meta),
            resource_version: resource_version(meta),
        });
    }

    fn update_status(&mut self, kind: Kind, meta: &ObjectMeta, status: &impl Serialize) {
        let Ok(status) = serde_json::to_value(status) else {
            return;
        };
        self.commands.push(Command::UpdateStatus {
            key: key(kind, meta),
            status,
            resource_version: resource_version(meta),
            uid: meta.uid.clone(),
        });
    }
}

fn key(kind: Kind, meta: &ObjectMeta) -> ObjectKey {
    ObjectKey::new(
        kind,
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

fn resource_version(meta: &ObjectMeta) -> Option<u64> {
    meta.resource_version.as_deref()?.parse().ok()
}

fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or_default()
}

/// One pass over the local store; returns when to run again at the latest (requeue_after).
async fn pass(
    snapshot: Snapshot<'_>,
    proposer: &Proposer,
    events: &EventRecorder,
) -> Result<Option<Duration>, String> {
    let now = jiff::Timestamp::now();
    let mut writes = Writes {
        commands: Vec::new(),
        now: now.to_string(),
        events: PendingEvents::default(),
    };
    let mut requeue: Option<Duration> = None;
    let mut requeue_at = |after: Option<Duration>| {
        requeue = match (requeue, after) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    };

    let mut sets_by_namespace: BTreeMap<&str, Vec<ReplicaSet>> = BTreeMap::new();
    for rs in &snapshot.replica_sets {
        sets_by_namespace
            .entry(namespace(&rs.metadata))
            .or_default()
            .push((*rs).clone());
    }
    // Only namespaces with a controller to decide need their pods (copied: the deciders take
    // slices); a namespace of bare pods costs nothing here.
    let controlled: HashSet<&str> = snapshot
        .deployments
        .iter()
        .map(|d| namespace(&d.metadata))
        .chain(sets_by_namespace.keys().copied())
        .collect();
    let mut pods_by_namespace: BTreeMap<&str, Vec<Pod>> = BTreeMap::new();
    for pod in &snapshot.pods {
        let ns = namespace(&pod.metadata);
        if controlled.contains(ns) {
            pods_by_namespace
                .entry(ns)
                .or_default()
                .push((*pod).clone());
        }
    }

    // ReplicaSets a Deployment step writes: decided again only once that write is applied.
    let mut written_sets: HashSet<(String, String)> = HashSet::new();
    for deploy in &snapshot.deployments {
        let ns = namespace(&deploy.metadata);
        let sets = sets_by_namespace
            .get(ns)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let min_ready_seconds = deploy.spec.min_ready_seconds.unwrap_or(0);
        let pods = pods_by_namespace
            .get(ns)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let counts = count_pods_by_owner(pods, min_ready_seconds, now);
        let decision = match deployment::decide(deploy, sets, &counts, now) {
            Ok(decision) => decision,
            Err(error) => {
                tracing::warn!(namespace = %ns, deployment = ?deploy.metadata.name, "cannot roll out: {error}");
                continue;
            }
        };
        requeue_at(decision.requeue_after);
        let mut mark = |meta: &ObjectMeta| {
            written_sets.insert((ns.to_string(), meta.name.clone().unwrap_or_default()));
        };
        if let Some(rs) = &decision.create {
            tracing::info!(namespace = %ns, replica_set = ?rs.metadata.name, "creating ReplicaSet");
            mark(&rs.metadata);
            writes.apply(rs);
            writes.scaled(&deploy.metadata, rs, 0);
        }
        for rs in &decision.update {
            mark(&rs.metadata);
            writes.apply(rs);
            let old = sets.iter().find(|s| s.metadata.name == rs.metadata.name);
            writes.scaled(&deploy.metadata, rs, replicas(old));
        }
        for name in &decision.delete {
            if let Some(rs) = sets
                .iter()
                .find(|rs| rs.metadata.name.as_ref() == Some(name))
            {
                tracing::info!(namespace = %ns, replica_set = %name, "deleting old ReplicaSet");
                mark(&rs.metadata);
                writes.delete(Kind::ReplicaSet, &rs.metadata);
            }
        }
        match &decision.deployment {
            // The status waits for the next pass: this apply moves the resourceVersion on.
            Some(updated) => writes.apply(updated),
            None => {
                if let Some(status) = &decision.status {
                    writes.update_status(Kind::Deployment, &deploy.metadata, status);
                }
            }
        }
    }

    for rs in &snapshot.replica_sets {
        let ns = namespace(&rs.metadata);
        let name = rs.metadata.name.clone().unwrap_or_default();
        if written_sets.contains(&(ns.to_string(), name)) {
            continue;
        }
        let pods = pods_by_namespace
            .get(ns)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let decision = replicaset::decide(rs, pods, now);
        requeue_at(decision.requeue_after);
        if let Some(create) = &decision.create {
            tracing::info!(namespace = %ns, replica_set = ?rs.metadata.name, count = create.count, "creating pods");
            for _ in 0..create.count {
                let random = uuid::Uuid::new_v4().as_u64_pair().0;
                let pod = create.named(&name_suffix(random));
                writes.apply(&pod);
                let message = format!("Created pod: {}", pod.metadata.name.unwrap_or_default());
                writes.event(Kind::ReplicaSet, &rs.metadata, "SuccessfulCreate", message);
            }
        }
        for pod in decision.adopt.iter().chain(&decision.release) {
            writes.apply(pod);
        }
        for name in &decision.delete {
            if let Some(pod) = pods.iter().find(|p| p.metadata.name.as_ref() == Some(name)) {
                tracing::info!(namespace = %ns, pod = %name, "deleting pod (scale down)");
                writes.delete(Kind::Pod, &pod.metadata);
                let message = format!("Deleted pod: {name}");
                writes.event(Kind::ReplicaSet, &rs.metadata, "SuccessfulDelete", message);
            }
        }
        if let Some(status) = &decision.status {
            writes.update_status(Kind::ReplicaSet, &rs.metadata, status);
        }
    }

    collect_garbage(&snapshot, &mut writes);

    if writes.commands.is_empty() {
        return Ok(requeue);
    }
    let proposed = writes.commands.len();
    let result = proposer
        .propose(Command::Batch(writes.commands))
        .await
        .map_err(|status| status.message().to_string())?;
    let CommandResult::Batch(results) = result else {
        return Err(format!("a batch was answered with {result:?}"));
    };
    writes.events.record(events, &results);
    for result in &results {
        if let CommandResult::Failed(error) = result {
            // Expected when the store moved on since it was read: the next pass decides again.
            tracing::debug!("controller write not applied: {error}");
        }
    }
    tracing::debug!(proposed, "controller pass done");
    Ok(requeue)
}

fn replicas(rs: Option<&ReplicaSet>) -> i32 {
    rs.and_then(|rs| rs.spec.replicas).unwrap_or(1)
}

/// Deletes Pods controlled by a ReplicaSet and ReplicaSets controlled by a Deployment when
/// that controller is no longer stored (deleting a Deployment takes its sets, then their pods).
fn collect_garbage(snapshot: &Snapshot, writes: &mut Writes) {
    let uids = |metas: Vec<&ObjectMeta>| -> BTreeSet<String> {
        metas.into_iter().filter_map(|m| m.uid.clone()).collect()
    };
    let deployments = uids(snapshot.deployments.iter().map(|d| &d.metadata).collect());
    let replica_sets = uids(snapshot.replica_sets.iter().map(|r| &r.metadata).collect());
    let orphaned = |meta: &ObjectMeta, owner_kind: &str, owners: &BTreeSet<String>| {
        controller_of(meta).is_some_and(|r| r.kind == owner_kind && !owners.contains(&r.uid))
    };
    for rs in &snapshot.replica_sets {
        if orphaned(&rs.metadata, "Deployment", &deployments) {
            tracing::info!(namespace = %namespace(&rs.metadata), replica_set = ?rs.metadata.name, "deleting ReplicaSet: its Deployment is gone");
            writes.delete(Kind::ReplicaSet, &rs.metadata);
        }
    }
    for pod in &snapshot.pods {
        if orphaned(&pod.metadata, "ReplicaSet", &replica_sets) {
            tracing::info!(namespace = %namespace(&pod.metadata), pod = ?pod.metadata.name, "deleting pod: its ReplicaSet is gone");
            writes.delete(Kind::Pod, &pod.metadata);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::testing::{pod, replica_set};
    use berth_proto::k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owned_by(mut meta: ObjectMeta, kind: &str, uid: &str) -> ObjectMeta {
        meta.owner_references = Some(vec![OwnerReference {
            kind: kind.into(),
            uid: uid.into(),
            controller: Some(true),
            ..OwnerReference::default()
        }]);
        meta
    }

    #[test]
    fn garbage_is_what_a_missing_controller_owned() {
        let mut kept_rs = replica_set("web-1", "rs-1", 1);
        kept_rs.metadata = owned_by(kept_rs.metadata, "Deployment", "d-live");
        let mut orphan_rs = replica_set("web-2", "rs-2", 1);
        orphan_rs.metadata = owned_by(orphan_rs.metadata, "Deployment", "d-gone");
        let mut kept_pod = pod("web-1-a", &[("app", "web")], 0);
        kept_pod.metadata = owned_by(kept_pod.metadata, "ReplicaSet", "rs-1");
        let mut orphan_pod = pod("web-3-a", &[("app", "web")], 0);
        orphan_pod.metadata = owned_by(orphan_pod.metadata, "ReplicaSet", "rs-gone");
        let bare_pod = pod("bare", &[("app", "web")], 0);
        let mut live = Deployment::default();
        live.metadata.uid = Some("d-live".into());
        let snapshot = Snapshot {
            deployments: vec![&live],
            replica_sets: vec![&kept_rs, &orphan_rs],
            pods: vec![&kept_pod, &orphan_pod, &bare_pod],
        };
        let mut writes = Writes {
            commands: Vec::new(),
            now: "t".into(),
            events: PendingEvents::default(),
        };
        collect_garbage(&snapshot, &mut writes);
        let deleted: Vec<String> = writes
            .commands
            .iter()
            .map(|c| match c {
                Command::Delete { key, .. } => key.storage_key(),
                other => panic!("unexpected {other}"),
            })
            .collect();
        assert_eq!(deleted.len(), 2, "{deleted:?}");
        assert!(deleted[0].contains("web-2"), "{deleted:?}");
        assert!(deleted[1].contains("web-3-a"), "{deleted:?}");
    }
}
