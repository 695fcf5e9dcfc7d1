//! The node lifecycle's loop: the async shell around [`super::decide`] and
//! [`super::evictions`].
//!
//! ```text
//!  every member, every 100 ms: leads? ── Nodes (crate::cache, fed by the watch hub)
//!     + heartbeats ── decide()
//!     ── some node to evict from, and pods changed since the last look? ── list Pods
//!     ──▶ one Command::Batch: UpdateStatus per changed node, Delete per evicted pod ──▶ Raft
//! ```
//!
//! Heartbeats do not pass through the store, so a timer drives the loop. Nodes come from the
//! leader's cache, decoded once per change rather than listed every tick. Pods are listed only
//! while some node is being evicted from, and again only after a Pod change: a node that never
//! comes back does not cost a full pod list every tick. Status writes carry the node's
//! resourceVersion and deletes the pod's, so a decision from a trailing store never overwrites
//! a newer status or deletes a namesake; the next pass retries what failed.

use super::{decide, evictions, Clock, LifecycleConfig};
use crate::api::nodes::NodeHeartbeats;
use crate::cache::{Cache, CacheSource, LeaderCache};
use crate::events::EventRecorder;
use crate::raft::proposer::Proposer;
use crate::store::{Command, CommandResult, ObjectStore};
use berth_proto::events::object_ref;
use berth_proto::k8s_openapi::api::core::v1::Pod;
use berth_proto::{Kind, ObjectKey};
use openraft::ServerState;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How often the leader looks for silent nodes: detection takes grace plus up to this.
const TICK: Duration = Duration::from_millis(100);

/// Runs on every member; acts while it leads. Ends when Raft shuts down.
pub async fn run(
    source: CacheSource,
    proposer: Proposer,
    heartbeats: NodeHeartbeats,
    config: LifecycleConfig,
    events: EventRecorder,
) {
    let (raft, store) = (source.raft.clone(), source.store.clone());
    let mut cache = LeaderCache::new(source, &[Kind::Node]);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leader_since: Option<Instant> = None;
    // Pods changed since they were last listed (or never listed).
    let mut pods_changed = true;
    let mut last_evicting = BTreeSet::new();
    loop {
        tick.tick().await;
        let state = raft.metrics().borrow().state;
        match state {
            ServerState::Shutdown => return,
            ServerState::Leader => {}
            _ => {
                leader_since = None;
                cache.stand_down();
                continue;
            }
        }
        let nodes = match cache.up_to_date().await {
            Ok((nodes, changed)) => {
                pods_changed |= changed.kind(Kind::Pod);
                nodes
            }
            Err(error) => {
                tracing::warn!("node lifecycle: {error}");
                continue;
            }
        };
        let since = *leader_since.get_or_insert_with(|| {
            pods_changed = true;
            Instant::now()
        });
        let view = View {
            store: &store,
            nodes,
            heartbeats: &heartbeats,
            leader_since: since,
            config,
            events: &events,
        };
        match pass(view, &proposer, pods_changed, &last_evicting).await {
            Ok((evicting, listed)) => {
                // Evictions change pods, which sets the flag again; a quiet store keeps it off.
                pods_changed &= !listed;
                last_evicting = evicting;
            }
            Err(error) => {
                pods_changed = true;
                tracing::warn!("node lifecycle: {error}");
            }
        }
    }
}

struct View<'a> {
    store: &'a ObjectStore,
    /// The leader's cache of Nodes.
    nodes: &'a Cache,
    heartbeats: &'a NodeHeartbeats,
    leader_since: Instant,
    config: LifecycleConfig,
    events: &'a EventRecorder,
}

/// One pass; returns the nodes being evicted from, and whether it listed pods.
async fn pass(
    view: View<'_>,
    proposer: &Proposer,
    pods_changed: bool,
    last_evicting: &BTreeSet<String>,
) -> Result<(BTreeSet<String>, bool), String> {
    let last_heard = view.heartbeats.last_heard();
    let now_text = jiff::Timestamp::now().to_string();
    let clock = Clock {
        last_heard: &last_heard,
        leader_since: view.leader_since,
        now: Instant::now(),
        now_text: &now_text,
    };
    let decisions = decide(view.nodes.objects.nodes.values(), &clock, &view.config);
    let listed =
        !decisions.evicting.is_empty() && (pods_changed || decisions.evicting != *last_evicting);
    let evicted = if listed {
        let pods: Vec<Pod> = list(view.store, Kind::Pod).await?;
        evictions(&pods, &decisions.evicting)
    } else {
        Vec::new()
    };

    let mut commands: Vec<Command> = Vec::new();
    for change in &decisions.status_changes {
        let status = serde_json::to_value(&change.status).map_err(|e| e.to_string())?;
        commands.push(Command::UpdateStatus {
            key: ObjectKey::new(Kind::Node, "", &change.node),
            status,
            resource_version: change.resource_version,
            uid: change.uid.clone(),
        });
    }
    commands.extend(evicted.iter().map(|eviction| Command::Delete {
        key: ObjectKey::new(Kind::Pod, &eviction.namespace, &eviction.name),
        resource_version: eviction.resource_version,
    }));
    if !commands.is_empty() {
        let result = proposer
            .propose(Command::Batch(commands))
            .await
            .map_err(|status| status.message().to_string())?;
        let CommandResult::Batch(results) = result else {
            return Err(format!("a batch was answered with {result:?}"));
        };
        let mut results = results.iter();
        for (change, result) in decisions.status_changes.iter().zip(&mut results) {
            match result {
                CommandResult::Failed(error) => {
                    tracing::debug!(node = %change.node, "Ready not updated: {error}");
                    continue;
                }
                _ if change.ready => tracing::info!(node = %change.node, "node heard again: Ready"),
                _ => tracing::warn!(node = %change.node, "node silent: NotReady"),
            }
            let reason = if change.ready {
                "NodeReady"
            } else {
                "NodeNotReady"
            };
            let node = object_ref(
                Kind::Node,
                "",
                &change.node,
                change.uid.as_deref().unwrap_or(""),
            );
            let message = format!("Node {} status is now: {reason}", change.node);
            view.events.normal(&node, reason, message);
        }
        for (eviction, result) in evicted.iter().zip(results) {
            match result {
                // Expected when the store trailed the log: the pod is already gone or changed.
                CommandResult::Failed(error) => {
                    tracing::debug!(pod = %eviction.name, "not evicted: {error}")
                }
                _ => {
                    tracing::info!(namespace = %eviction.namespace, pod = %eviction.name,
                        node = %eviction.node, "evicted from a silent node");
                    let (ns, name) = (&eviction.namespace, &eviction.name);
                    let message = format!("Marking for deletion Pod {ns}/{name}");
                    let pod = object_ref(Kind::Pod, ns, name, "");
                    view.events
                        .with_component("taint-eviction-controller")
                        .normal(&pod, "TaintManagerEviction", message);
                }
            }
        }
    }
    Ok((decisions.evicting, listed))
}

/// Every object of `kind` in the local store that parses as `T`.
async fn list<T: serde::de::DeserializeOwned>(
    store: &ObjectStore,
    kind: Kind,
) -> Result<Vec<T>, String> {
    let store = store.clone();
    let (objects, _) = tokio::task::spawn_blocking(move || store.list(kind, None))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(objects
        .iter()
        .filter_map(|bytes| serde_json::from_slice(bytes).ok())
        .collect())
}
