//! The scheduler's decisions: which node each pending pod goes to, or why it goes nowhere.
//!
//! ```text
//!  leader's scheduler loop (async shell)          this module (pure, no IO)
//!  ─────────────────────────────────────          ──────────────────────────────────────────
//!  cached Nodes + Pods ────────────────────────▶ Snapshot::new(nodes, pods)
//!                                                 snapshot.schedule(pending, oldest first)
//!                                                   per pod: filter every node, score the
//!                                                   ones left, bind to the best, count it
//!  Raft entries of Bindings ◀──────────────────── Decisions { bindings, unschedulable }
//!  PodScheduled=False + Event per Unschedulable ◀─┘
//! ```
//!
//! Filters, in kube-scheduler's order: the node is Ready; it is not cordoned
//! (`spec.unschedulable`); the pod tolerates its NoSchedule/NoExecute taints; its labels match
//! the pod's `nodeSelector`; the pod's CPU, memory and one more pod fit in what the node
//! allocates minus what its pods request, counting pods bound earlier in the same batch.
//!
//! Scores, compared in order: fewest pods of the same owner on the node (the controller in
//! `ownerReferences`, else the same labels in the same namespace), so replicas spread; then the
//! least allocated node (requested over allocatable, averaged over CPU and memory, with
//! Kubernetes' 100m / 200Mi stand-ins for unrequested resources); then the node name, so the
//! same input always gives the same bindings.
//!
//! Cost: building a snapshot is O(nodes + pods); each pending pod is O(nodes) plus the nodes its
//! owner already has pods on. Running totals live on each node and per-owner counts in a hash
//! map, copied into a per-node scratch array for the scan, so the scan itself touches no map.
//! Reasons are only worked out for a pod that fits nowhere.
//!
//! Not yet considered: resources other than CPU, memory and pod count (extended resources,
//! ephemeral storage), node affinity, pod (anti-)affinity, topology spread constraints,
//! host ports, priorities and preemption.

mod node;
mod requests;
pub mod run;

#[cfg(test)]
mod tests;

use berth_proto::k8s_openapi::api::core::v1::{Node, Pod, Taint};
use berth_proto::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use node::{Candidate, NodeState};
pub use requests::{pod_requests, PodRequests, RequestError, Resources};
use std::collections::{BTreeMap, HashMap};

/// A pending pod placed on a node: what the shell writes to `spec.nodeName` (through Raft, with
/// the uid as a precondition so that a pod deleted and recreated meanwhile is not bound).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
}

/// A pending pod that fits on no node. It stays Pending; `reason` is the message of its
/// `PodScheduled=False` condition (reason `Unschedulable`) and of its event, worded as
/// kube-scheduler does: "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient
/// memory."
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unschedulable {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub reason: String,
}

/// What one scheduling pass decided, in the order the pods were given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decisions {
    pub bindings: Vec<Binding>,
    pub unschedulable: Vec<Unschedulable>,
}

/// Schedules every pending pod in `pods` onto `nodes`, oldest first. `pods` may hold every pod
/// of the cluster: bound ones count against their node, finished ones are ignored.
pub fn schedule(nodes: &[Node], pods: &[Pod]) -> Decisions {
    let mut snapshot = Snapshot::new(nodes, pods);
    snapshot.schedule(pending_oldest_first(pods))
}

/// The pods the scheduler should place, oldest first (by creation time, then namespace and
/// name, so that the order is total).
pub fn pending_oldest_first<'p>(pods: impl IntoIterator<Item = &'p Pod>) -> Vec<&'p Pod> {
    let mut pending: Vec<&Pod> = pods.into_iter().filter(|pod| is_pending(pod)).collect();
    pending.sort_by(|a, b| creation_order(a).cmp(&creation_order(b)));
    pending
}

fn creation_order(pod: &Pod) -> (Option<&Time>, Option<&str>, Option<&str>) {
    let meta = &pod.metadata;
    (
        meta.creation_timestamp.as_ref(),
        meta.namespace.as_deref(),
        meta.name.as_deref(),
    )
}

/// A pod with no node yet that still wants one: not finished, not being deleted.
pub fn is_pending(pod: &Pod) -> bool {
    node_name(pod).is_none() && !is_finished(pod) && pod.metadata.deletion_timestamp.is_none()
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.node_name.as_deref())
        .filter(|name| !name.is_empty())
}

/// Succeeded and Failed pods hold no resources on their node any more.
fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whose replica a pod is, for spreading.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Owner {
    /// The uid of the managing controller in `ownerReferences`.
    Controller(String),
    /// A pod with no controller: its namespace and labels (sorted, as in the BTreeMap).
    Labels(String, Vec<(String, String)>),
}

impl Owner {
    fn of(pod: &Pod) -> Option<Owner> {
        let meta = &pod.metadata;
        let controller = meta
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true));
        if let Some(controller) = controller {
            return Some(Owner::Controller(controller.uid.clone()));
        }
        // A pod with neither is nobody's replica: nothing to spread it from.
        let labels = meta.labels.as_ref().filter(|l| !l.is_empty())?;
        Some(Owner::Labels(
            meta.namespace.clone().unwrap_or_default(),
            labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ))
    }
}

/// The cluster as the scheduler sees it: each node with the running totals of what is placed
/// on it, and how many pods of each owner every node has. Updated as pods are bound, so one
/// snapshot can schedule several batches as long as nothing else changes the cluster.
pub struct Snapshot {
    /// Sorted by name, so that the first of equally good nodes is the first by name.
    nodes: Vec<NodeState>,
    /// Node index -> pods of that owner on it; only nodes with at least one.
    owners: HashMap<Owner, HashMap<usize, u32>>,
    /// The current pod's owner counts laid out by node index during one scan; zero between
    /// scans.
    spread: Vec<u32>,
}

impl Snapshot {
    /// `pods` may be every pod: only the bound, unfinished ones count, each on its node. Pods
    /// bound to nodes not in `nodes` are ignored.
    pub fn new<'n, 'p>(
        nodes: impl IntoIterator<Item = &'n Node>,
        pods: impl IntoIterator<Item = &'p Pod>,
    ) -> Snapshot {
        let mut states: Vec<NodeState> = nodes.into_iter().map(NodeState::new).collect();
        states.sort_by(|a, b| a.name.cmp(&b.name));
        states.dedup_by(|a, b| a.name == b.name);
        let index: HashMap<String, usize> = states
            .iter()
            .enumerate()
            .map(|(i, node)| (node.name.clone(), i))
            .collect();
        let mut snapshot = Snapshot {
            spread: vec![0; states.len()],
            nodes: states,
            owners: HashMap::new(),
        };
        for pod in pods {
            let Some(&at) = node_name(pod).and_then(|name| index.get(name)) else {
                continue;
            };
            if is_finished(pod) {
                continue;
            }
            // Validation keeps unreadable requests out of the store; should one be there, the
            // pod still counts as a pod.
            let requests = pod_requests(pod).unwrap_or_else(|error| {
                tracing::warn!(
                    pod = pod.metadata.name.as_deref().unwrap_or(""),
                    %error,
                    "bound pod has unreadable requests; counting it as requesting nothing"
                );
                PodRequests::default()
            });
            snapshot.place(at, &requests, Owner::of(pod));
        }
        snapshot
    }

    /// Decides for each pod in turn, in the order given (oldest first is the caller's to
    /// choose), and counts each binding before deciding the next pod.
    pub fn schedule<'p>(&mut self, pending: impl IntoIterator<Item = &'p Pod>) -> Decisions {
        let cordon = cordon_taint();
        let mut decisions = Decisions::default();
        // The last pod that fit nowhere, and why, while nothing has been placed since: a pod
        // asking the same of a node fits nowhere either, for the same reason. Replicas share
        // their requests, so a pass over many unschedulable replicas filters the nodes once,
        // not once per replica.
        let mut unfit: Option<(node::Asks<'p>, String)> = None;
        for pod in pending {
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let requests = match pod_requests(pod) {
                Ok(requests) => requests,
                Err(error) => {
                    decisions.unschedulable.push(Unschedulable {
                        namespace,
                        name,
                        uid,
                        reason: format!("pod has an unreadable resource request: {error}"),
                    });
                    continue;
                }
            };
            let spec = pod.spec.as_ref();
            let tolerations = spec
                .and_then(|s| s.tolerations.as_deref())
                .unwrap_or_default();
            let candidate = Candidate {
                requests,
                node_selector: spec
                    .and_then(|s| s.node_selector.as_ref())
                    .filter(|s| !s.is_empty()),
                tolerations,
                tolerates_cordon: tolerations.iter().any(|t| node::tolerates(t, &cordon)),
            };
            let asks = candidate.asks();
            if let Some((_, reason)) = unfit.as_ref().filter(|(unfit, _)| *unfit == asks) {
                decisions.unschedulable.push(Unschedulable {
                    namespace,
                    name,
                    uid,
                    reason: reason.clone(),
                });
                continue;
            }
            let owner = Owner::of(pod);
            match self.best_node(&candidate, owner.as_ref()) {
                Some(at) => {
                    unfit = None;
                    self.place(at, &candidate.requests, owner);
                    decisions.bindings.push(Binding {
                        namespace,
                        name,
                        uid,
                        node: self.nodes[at].name.clone(),
                    });
                }
                None => {
                    let reason = self.why_unschedulable(&candidate);
                    unfit = Some((asks, reason.clone()));
                    decisions.unschedulable.push(Unschedulable {
                        namespace,
                        name,
                        uid,
                        reason,
                    });
                }
            }
        }
        decisions
    }

    fn place(&mut self, at: usize, requests: &PodRequests, owner: Option<Owner>) {
        self.nodes[at].add(requests);
        if let Some(owner) = owner {
            *self.owners.entry(owner).or_default().entry(at).or_default() += 1;
        }
    }

    /// The feasible node with the fewest pods of `owner`, then the least allocated, then the
    /// first by name.
    fn best_node(&mut self, pod: &Candidate<'_>, owner: Option<&Owner>) -> Option<usize> {
        let counts = owner.and_then(|owner| self.owners.get(owner));
        for (&at, &count) in counts.into_iter().flatten() {
            self.spread[at] = count;
        }
        let mut best: Option<(u32, f64, usize)> = None;
        for (at, node) in self.nodes.iter().enumerate() {
            if !node.filter(pod, |_| {}) {
                continue;
            }
            let spread = self.spread[at];
            let allocated = node.allocated_with(&pod.requests.score);
            let better = match best {
                None => true,
                Some((best_spread, best_allocated, _)) => {
                    spread < best_spread || (spread == best_spread && allocated < best_allocated)
                }
            };
            if better {
                best = Some((spread, allocated, at));
            }
        }
        for &at in counts.into_iter().flat_map(HashMap::keys) {
            self.spread[at] = 0;
        }
        best.map(|(_, _, at)| at)
    }

    /// kube-scheduler's summary: how many nodes failed for each reason, a node counted once
    /// per reason, the parts sorted as text.
    fn why_unschedulable(&self, pod: &Candidate<'_>) -> String {
        if self.nodes.is_empty() {
            return "no nodes available to schedule pods".to_string();
        }
        let mut histogram: BTreeMap<String, usize> = BTreeMap::new();
        for node in &self.nodes {
            node.filter(pod, |reason| {
                *histogram.entry(reason.to_string()).or_default() += 1;
            });
        }
        let mut parts: Vec<String> = histogram
            .into_iter()
            .map(|(reason, count)| format!("{count} {reason}"))
            .collect();
        parts.sort();
        format!(
            "0/{} nodes are available: {}.",
            self.nodes.len(),
            parts.join(", ")
        )
    }
}

/// The taint Kubernetes puts on cordoned nodes; tolerating it lets a pod onto them.
fn cordon_taint() -> Taint {
    Taint {
        key: "node.kubernetes.io/unschedulable".to_string(),
        effect: "NoSchedule".to_string(),
        ..Default::default()
    }
}
