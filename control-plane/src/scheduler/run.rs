//! The scheduler's loop: the async shell around [`super::schedule`].
//!
//! ```text
//!  every member: wake on a Pod/Node change (watch hub) or every 200 ms
//!    └── leads? ── list Nodes + Pods (local store) ── schedule() ──▶ one Command::Batch:
//!                    Bind per binding, UpdateStatus (PodScheduled=False) per unschedulable
//!                    pod whose condition changed ──▶ Proposer ──▶ Raft
//! ```
//!
//! The leader's store may trail the log by the entries being applied: the scheduler may then
//! decide from a slightly old view. `Bind`'s preconditions (same uid, still unbound) keep such
//! a decision from binding a pod twice or a namesake; the status update carries the pod's
//! resourceVersion, so it never overwrites a newer status. Failed commands are retried by the
//! next pass, which sees the store as it is then.
//!
//! Bound pods get `PodScheduled=True` from their node's agent, with the rest of their status.

use crate::events::EventRecorder;
use crate::raft::proposer::Proposer;
use crate::raft::BerthRaft;
use crate::store::{Command, CommandResult, Notice, ObjectStore, WatchHub};
use berth_proto::k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use berth_proto::{Kind, ObjectKey};
use openraft::ServerState;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How often a leader schedules when nothing wakes it (nodes' resources also free up when pods
/// finish, which a status change reports, but a timer keeps the loop simple and self-healing).
const TICK: Duration = Duration::from_millis(200);

/// Runs on every member; acts while it leads. Ends when Raft shuts down.
pub async fn run(
    raft: BerthRaft,
    store: ObjectStore,
    hub: WatchHub,
    proposer: Proposer,
    events: EventRecorder,
) {
    let mut changes = hub.subscribe();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            woken = wait_for_change(&mut changes) => if !woken { return },
        }
        // A burst of changes (a Deployment's pods) is one pass, not one per pod.
        while matches!(
            changes.try_recv(),
            Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_))
        ) {}
        let state = raft.metrics().borrow().state;
        match state {
            ServerState::Shutdown => return,
            ServerState::Leader => {}
            _ => continue,
        }
        if let Err(error) = pass(&store, &proposer, &events).await {
            tracing::warn!("scheduling: {error}");
        }
    }
}

/// Waits for a Pod or Node change; false once the hub is gone.
async fn wait_for_change(changes: &mut tokio::sync::broadcast::Receiver<Notice>) -> bool {
    loop {
        match changes.recv().await {
            Ok(Notice::Change(event)) if matches!(event.key.kind, Kind::Pod | Kind::Node) => {
                return true
            }
            Ok(Notice::Change(_)) => {}
            Ok(Notice::Reset) | Err(RecvError::Lagged(_)) => return true,
            Err(RecvError::Closed) => return false,
        }
    }
}

/// One scheduling pass over the local store.
async fn pass(
    store: &ObjectStore,
    proposer: &Proposer,
    events: &EventRecorder,
) -> Result<(), String> {
    let store = store.clone();
    let (nodes, pods) = tokio::task::spawn_blocking(move || {
        let (nodes, _) = store.list(Kind::Node, None)?;
        let (pods, _) = store.list(Kind::Pod, None)?;
        Ok::<_, crate::store::ReadError>((nodes, pods))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let nodes: Vec<Node> = nodes
        .iter()
        .filter_map(|bytes| serde_json::from_slice(bytes).ok())
        .collect();
    let mut raw: HashMap<(String, String), &[u8]> = HashMap::new();
    let mut typed = Vec::with_capacity(pods.len());
    for bytes in &pods {
        let Ok(pod) = serde_json::from_slice::<Pod>(bytes) else {
            continue;
        };
        let (namespace, name) = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        raw.insert((namespace, name), bytes);
        typed.push(pod);
    }
    let decisions = super::schedule(&nodes, &typed);

    let mut commands: Vec<Command> = decisions
        .bindings
        .iter()
        .map(|binding| Command::Bind {
            key: ObjectKey::new(Kind::Pod, &binding.namespace, &binding.name),
            uid: binding.uid.clone(),
            node: binding.node.clone(),
        })
        .collect();
    let now = jiff::Timestamp::now().to_string();
    for pod in &decisions.unschedulable {
        let Some(stored) = raw
            .get(&(pod.namespace.clone(), pod.name.clone()))
            .and_then(|bytes| serde_json::from_slice::<Value>(bytes).ok())
        else {
            continue;
        };
        if let Some(status) = unschedulable_status(&stored, &pod.reason, &now) {
            tracing::info!(namespace = %pod.namespace, pod = %pod.name, "unschedulable: {}", pod.reason);
            let involved = pod_ref(&pod.namespace, &pod.name, &pod.uid);
            events.warning(&involved, "FailedScheduling", &pod.reason);
            commands.push(Command::UpdateStatus {
                key: ObjectKey::new(Kind::Pod, &pod.namespace, &pod.name),
                status,
                resource_version: Some(crate::store::apply::resource_version(&stored)),
                uid: Some(pod.uid.clone()),
            });
        }
    }
    if commands.is_empty() {
        return Ok(());
    }
    let proposed = commands.len();
    let result = proposer
        .propose(Command::Batch(commands))
        .await
        .map_err(|status| status.message().to_string())?;
    let CommandResult::Batch(results) = result else {
        return Err(format!("a batch was answered with {result:?}"));
    };
    for (binding, result) in decisions.bindings.iter().zip(&results) {
        match result {
            CommandResult::Failed(error) => {
                // Expected when the store moved on since it was read: the next pass retries.
                tracing::debug!(pod = %binding.name, node = %binding.node, "not bound: {error}");
            }
            _ => {
                tracing::info!(namespace = %binding.namespace, pod = %binding.name, node = %binding.node, "bound");
                let (ns, pod, node) = (&binding.namespace, &binding.name, &binding.node);
                let message = format!("Successfully assigned {ns}/{pod} to {node}");
                events.normal(&pod_ref(ns, pod, &binding.uid), "Scheduled", message);
            }
        }
    }
    tracing::debug!(proposed, "scheduling pass done");
    Ok(())
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
