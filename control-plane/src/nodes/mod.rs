//! Node lifecycle: the leader turns missed heartbeats into NotReady nodes and evicts their pods.
//!
//! ```text
//!  agent ── NodeHeartbeat every 500 ms ──▶ leader's memory (api::nodes::NodeHeartbeats)
//!  leader, every 100 ms: silent > grace              ──▶ Ready=Unknown (NodeStatusUnknown)
//!                        silent > grace + toleration ──▶ delete the node's pods
//!                        heard again, marked by us   ──▶ Ready=True
//! ```
//!
//! Heartbeats never go through Raft: a node costs the log one write when it goes NotReady and
//! one when it comes back. Silence is measured from the later of the last heartbeat and the
//! moment this member started leading, so a new leader (which has heard nobody yet) gives every
//! node a fresh grace period instead of evicting the whole cluster.
//!
//! Only the Ready condition this module wrote is turned back to True: a NotReady an agent
//! reports for its own reasons stays. Agents post Ready=True themselves when they register.
//!
//! Evicted pods are deleted; their ReplicaSet replaces them, and the scheduler skips nodes that
//! are not Ready. A node that comes back finds its pods gone: its agent stops their workers when
//! the watch reports the deletions (or relists), and removes leftover containers at restart.
//!
//! [`decide`] and [`evictions`] are pure; [`run`] is the leader's loop around them.

pub mod run;

use berth_proto::k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus, Pod};
use berth_proto::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// The reason and message Kubernetes' node lifecycle controller gives a silent node.
pub const SILENT_REASON: &str = "NodeStatusUnknown";
pub const SILENT_MESSAGE: &str = "Kubelet stopped posting node status.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// Silence after which a node is NotReady.
    pub grace: Duration,
    /// How long a node stays NotReady before its pods are evicted.
    pub eviction_toleration: Duration,
}

impl Default for LifecycleConfig {
    /// Agents beat every 500 ms: 1.5 s is three missed beats, and 0.5 s more before eviction
    /// leaves about 1 s of a 3 s budget for the replacement to be created, bound and started.
    fn default() -> Self {
        LifecycleConfig {
            grace: Duration::from_millis(1500),
            eviction_toleration: Duration::from_millis(500),
        }
    }
}

/// A new Node status to write: the Ready condition changed.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    pub node: String,
    pub uid: Option<String>,
    pub resource_version: Option<u64>,
    pub ready: bool,
    pub status: NodeStatus,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct NodeDecisions {
    pub status_changes: Vec<StatusChange>,
    /// Nodes silent past grace and toleration: their pods go.
    pub evicting: BTreeSet<String>,
}

/// A pod to delete because its node is gone silent.
#[derive(Debug, Clone, PartialEq)]
pub struct Eviction {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub resource_version: Option<u64>,
}

/// What the leader knows when it decides.
pub struct Clock<'a> {
    /// When each node was last heard from.
    pub last_heard: &'a HashMap<String, Instant>,
    /// When this member became leader.
    pub leader_since: Instant,
    pub now: Instant,
    /// `now` as RFC 3339, for lastTransitionTime.
    pub now_text: &'a str,
}

/// The status writes and evictions `nodes` call for.
pub fn decide<'n>(
    nodes: impl IntoIterator<Item = &'n Node>,
    clock: &Clock,
    config: &LifecycleConfig,
) -> NodeDecisions {
    let mut decisions = NodeDecisions::default();
    for node in nodes {
        let Some(name) = node.metadata.name.as_deref() else {
            continue;
        };
        let heard = clock
            .last_heard
            .get(name)
            .map_or(clock.leader_since, |at| (*at).max(clock.leader_since));
        let silent = clock.now.saturating_duration_since(heard);
        let ready = ready_condition(node);
        let marked_silent = ready
            .is_some_and(|c| c.status == "Unknown" && c.reason.as_deref() == Some(SILENT_REASON));
        let ready_now = if silent > config.grace {
            if silent > config.grace + config.eviction_toleration {
                decisions.evicting.insert(name.to_string());
            }
            (!marked_silent).then_some(false)
        } else {
            marked_silent.then_some(true)
        };
        if let Some(ready) = ready_now {
            decisions.status_changes.push(StatusChange {
                node: name.to_string(),
                uid: node.metadata.uid.clone(),
                resource_version: node
                    .metadata
                    .resource_version
                    .as_deref()
                    .and_then(|v| v.parse().ok()),
                ready,
                status: with_ready(node, ready, clock.now_text),
            });
        }
    }
    decisions
}

/// The pods bound to `evicting` nodes, except those already on their way out.
pub fn evictions(pods: &[Pod], evicting: &BTreeSet<String>) -> Vec<Eviction> {
    pods.iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| {
            let node = pod.spec.as_ref()?.node_name.as_ref()?;
            evicting.contains(node).then(|| Eviction {
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                name: pod.metadata.name.clone().unwrap_or_default(),
                node: node.clone(),
                resource_version: pod
                    .metadata
                    .resource_version
                    .as_deref()
                    .and_then(|v| v.parse().ok()),
            })
        })
        .collect()
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// The node's status with its Ready condition replaced; the rest stays as the agent wrote it.
fn with_ready(node: &Node, ready: bool, now: &str) -> NodeStatus {
    let mut status = node.status.clone().unwrap_or_default();
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let previous = conditions.iter().position(|c| c.type_ == "Ready");
    let transition = now
        .parse::<jiff::Timestamp>()
        .ok()
        .map(Time)
        .or_else(|| previous.and_then(|i| conditions[i].last_transition_time.clone()));
    let condition = if ready {
        NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("AgentReady".into()),
            message: Some("berth agent is posting heartbeats again".into()),
            last_heartbeat_time: transition.clone(),
            last_transition_time: transition,
        }
    } else {
        NodeCondition {
            type_: "Ready".into(),
            status: "Unknown".into(),
            reason: Some(SILENT_REASON.into()),
            message: Some(SILENT_MESSAGE.into()),
            // When the agent last said anything, as it reported it.
            last_heartbeat_time: previous.and_then(|i| conditions[i].last_heartbeat_time.clone()),
            last_transition_time: transition,
        }
    };
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
    status
}

#[cfg(test)]
mod tests;
