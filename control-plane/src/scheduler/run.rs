//! The scheduler's loop: the async shell around [`super::Snapshot`].
//!
//! ```text
//!  every member: wake on a Pod/Node change (watch hub) or every 200 ms
//!    └── leads? ── cache (crate::cache: Nodes + Pods, decoded once, fed by the hub;
//!                   built after a read barrier when this member starts leading)
//!          ── pending pods, oldest first ── Snapshot::new(nodes, pods)
//!          ── per chunk of BINDS_PER_ENTRY pending pods: snapshot.schedule(chunk)
//!               ──▶ one Command::Batch: Bind per binding, UpdateStatus (PodScheduled=False)
//!                   per unschedulable pod whose condition changed ──▶ Proposer ──▶ Raft
//!               (the next chunk is decided while this one commits)
//! ```
//!
//! The leader's store may trail the log by the entries being applied: the scheduler may then
//! decide from a slightly old view. `Bind`'s preconditions (same uid, still unbound) keep such
//! a decision from binding a pod twice or a namesake; the status update carries the pod's
//! resourceVersion, so it never overwrites a newer status. Failed commands are retried by the
//! next pass, which sees the store as it is then. A pass starts only once the previous pass's
//! binds are applied, and syncs the cache first, so it never decides again for a pod it bound.
//!
//! Bound pods get `PodScheduled=True` from their node's agent, with the rest of their status.

use super::{Decisions, Snapshot};
use crate::cache::{Cache, CacheSource, LeaderCache};
use crate::events::EventRecorder;
use crate::raft::proposer::Proposer;
use crate::store::{Command, CommandResult};
use berth_proto::k8s_openapi::api::core::v1::{ObjectReference, Pod};
use berth_proto::{Kind, ObjectKey};
use openraft::ServerState;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often a leader schedules when nothing wakes it (nodes' resources also free up when pods
/// finish, which a status change reports, but a timer keeps the loop simple and self-healing).
const TICK: Duration = Duration::from_millis(200);

/// Binds per Raft entry: thousands share one fsync, and an entry stays a few hundred KB.
const BINDS_PER_ENTRY: usize = 2048;

/// Runs on every member; acts while it leads. Ends when Raft shuts down.
pub async fn run(source: CacheSource, proposer: Proposer, events: EventRecorder) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let raft = source.raft.clone();
    let mut cache = LeaderCache::new(source, &[Kind::Node, Kind::Pod]);
    loop {
        // A burst of changes (a Deployment's pods) is one pass: the pass syncs them all.
        tokio::select! {
            _ = tick.tick() => {}
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
            Ok((cache, _)) => pass(cache, &proposer, &events).await,
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = result {
            tracing::warn!("scheduling: {error}");
        }
    }
}

/// One chunk's commands on their way through Raft.
struct InFlight {
    decisions: Decisions,
    proposal: JoinHandle<Result<CommandResult, tonic::Status>>,
}

impl InFlight {
    /// Waits for the chunk's result; logs it and records a `Scheduled` event per bound pod.
    async fn finish(self, events: &EventRecorder) -> Result<(), String> {
        let result = self
            .proposal
            .await
            .map_err(|e| e.to_string())?
            .map_err(|status| status.message().to_string())?;
        let CommandResult::Batch(results) = result else {
            return Err(format!("a batch was answered with {result:?}"));
        };
        let mut bound = 0;
        for (binding, result) in self.decisions.bindings.iter().zip(&results) {
            match result {
                CommandResult::Failed(error) => {
                    // Expected when the store moved on since it was read: the next pass retries.
                    tracing::debug!(pod = %binding.name, node = %binding.node, "not bound: {error}");
                }
                _ => {
                    bound += 1;
                    tracing::debug!(namespace = %binding.namespace, pod = %binding.name, node = %binding.node, "bound");
                    let (ns, pod, node) = (&binding.namespace, &binding.name, &binding.node);
                    let message = format!("Successfully assigned {ns}/{pod} to {node}");
                    events.normal(&pod_ref(ns, pod, &binding.uid), "Scheduled", message);
                }
            }
        }
        tracing::info!(
            bound,
            proposed = results.len(),
            "scheduling: binds committed"
        );
        Ok(())
    }
}

/// One scheduling pass over the cache: every pending pod, in chunks of [`BINDS_PER_ENTRY`].
async fn pass(cache: &Cache, proposer: &Proposer, events: &EventRecorder) -> Result<(), String> {
    let objects = &cache.objects;
    let pending = super::pending_oldest_first(objects.pods.values());
    if pending.is_empty() {
        return Ok(());
    }
    let mut snapshot = Snapshot::new(objects.nodes.values(), objects.pods.values());
    let now = jiff::Timestamp::now().to_string();
    let mut in_flight: Option<InFlight> = None;
    for chunk in pending.chunks(BINDS_PER_ENTRY) {
        let decisions = snapshot.schedule(chunk.iter().copied());
        let commands = commands(&decisions, chunk, &now, events);
        // Decided while the previous chunk committed; proposed once it is applied, so that
        // entries stay one chunk each.
        if let Some(previous) = in_flight.take() {
            previous.finish(events).await?;
        }
        if commands.is_empty() {
            continue;
        }
        let proposer = proposer.clone();
        in_flight = Some(InFlight {
            decisions,
            proposal: tokio::spawn(async move { proposer.propose(Command::Batch(commands)).await }),
        });
    }
    if let Some(last) = in_flight {
        last.finish(events).await?;
    }
    Ok(())
}

/// The writes of one chunk's decisions: its binds first (in order), then status updates.
fn commands(
    decisions: &Decisions,
    chunk: &[&Pod],
    now: &str,
    events: &EventRecorder,
) -> Vec<Command> {
    let mut commands: Vec<Command> = decisions
        .bindings
        .iter()
        .map(|binding| Command::Bind {
            key: ObjectKey::new(Kind::Pod, &binding.namespace, &binding.name),
            uid: binding.uid.clone(),
            node: binding.node.clone(),
        })
        .collect();
    let by_uid: HashMap<&str, &Pod> = match decisions.unschedulable.is_empty() {
        true => HashMap::new(),
        false => chunk
            .iter()
            .filter_map(|pod| Some((pod.metadata.uid.as_deref()?, *pod)))
            .collect(),
    };
    for unschedulable in &decisions.unschedulable {
        let pod = by_uid
            .get(unschedulable.uid.as_str())
            .filter(|pod| !marked_unschedulable(pod, &unschedulable.reason));
        let Some(stored) = pod.and_then(|pod| serde_json::to_value(*pod).ok()) else {
            continue;
        };
        if let Some(status) = unschedulable_status(&stored, &unschedulable.reason, now) {
            tracing::info!(namespace = %unschedulable.namespace, pod = %unschedulable.name, "unschedulable: {}", unschedulable.reason);
            let involved = pod_ref(
                &unschedulable.namespace,
                &unschedulable.name,
                &unschedulable.uid,
            );
            events.warning(&involved, "FailedScheduling", &unschedulable.reason);
            commands.push(Command::UpdateStatus {
                key: ObjectKey::new(Kind::Pod, &unschedulable.namespace, &unschedulable.name),
                status,
                resource_version: Some(crate::store::apply::resource_version(&stored)),
                uid: Some(unschedulable.uid.clone()),
            });
        }
    }
    commands
}

/// Whether the pod already says it is unschedulable for `message` (see
/// [`unschedulable_status`]), checked without converting it: most passes find most
/// unschedulable pods already marked.
fn marked_unschedulable(pod: &Pod, message: &str) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Pending")
        && status.conditions.iter().flatten().any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(message)
        })
}

fn pod_ref(namespace: &str, name: &str, uid: &str) -> ObjectReference {
    berth_proto::events::object_ref(Kind::Pod, namespace, name, uid)
}

/// The status that marks a pod unschedulable for `message` (phase Pending, condition
/// `PodScheduled=False` reason `Unschedulable`), or `None` when it already says so: the pass
/// runs every 200 ms and must not write each time.
pub fn unschedulable_status(pod: &Value, message: &str, now: &str) -> Option<Value> {
    let mut status = match pod.get("status") {
        Some(Value::Object(status)) => status.clone(),
        _ => serde_json::Map::new(),
    };
    let mut conditions: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let previous = conditions
        .iter()
        .position(|c| c.get("type").and_then(Value::as_str) == Some("PodScheduled"));
    let field = |i: usize, name: &str| conditions[i].get(name).and_then(Value::as_str);
    let already = previous.is_some_and(|i| {
        field(i, "status") == Some("False")
            && field(i, "reason") == Some("Unschedulable")
            && field(i, "message") == Some(message)
    });
    let pending = status.get("phase").and_then(Value::as_str) == Some("Pending");
    if already && pending {
        return None;
    }
    // The transition is when it stopped being schedulable, not when the reason last changed.
    let since = previous
        .filter(|i| field(*i, "status") == Some("False"))
        .and_then(|i| field(i, "lastTransitionTime"))
        .unwrap_or(now)
        .to_string();
    let condition = json!({
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastTransitionTime": since,
    });
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
    status.insert("phase".into(), "Pending".into());
    status.insert("conditions".into(), Value::Array(conditions));
    Some(Value::Object(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unschedulable_status_is_written_once_per_reason() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {}});
        let status = unschedulable_status(&pod, "0/2 nodes are available", "t1").unwrap();
        assert_eq!(status["phase"], "Pending");
        assert_eq!(
            status["conditions"],
            json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": "0/2 nodes are available", "lastTransitionTime": "t1"}])
        );
        let marked = json!({"metadata": {"name": "p"}, "status": status});
        assert_eq!(
            unschedulable_status(&marked, "0/2 nodes are available", "t2"),
            None
        );
        // A new reason is written, keeping when the pod became unschedulable.
        let changed = unschedulable_status(&marked, "0/3 nodes are available", "t2").unwrap();
        assert_eq!(
            changed["conditions"][0]["message"],
            "0/3 nodes are available"
        );
        assert_eq!(changed["conditions"][0]["lastTransitionTime"], "t1");
        assert_eq!(changed["conditions"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn unschedulable_status_keeps_other_conditions() {
        let pod = json!({"status": {"phase": "Pending", "conditions": [
            {"type": "Initialized", "status": "True"},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "t0"}]}});
        let status = unschedulable_status(&pod, "no nodes", "t1").unwrap();
        assert_eq!(status["conditions"][0]["type"], "Initialized");
        assert_eq!(status["conditions"][1]["status"], "False");
        assert_eq!(status["conditions"][1]["lastTransitionTime"], "t1");
    }
}
