//! One node as the scheduler sees it: what it offers, what is already placed on it, and the
//! filters a pod must pass to go there, in kube-scheduler's order and with its wording.

use super::requests::{PodRequests, Resources};
use berth_proto::k8s_openapi::api::core::v1::{Node, Taint, Toleration};
use berth_proto::k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use berth_proto::quantity::{self, QuantityError};
use std::collections::BTreeMap;
use std::fmt;

/// What a pending pod brings to the filters, worked out once per pod rather than once per node.
pub struct Candidate<'p> {
    pub requests: PodRequests,
    /// `spec.nodeSelector`, when it is not empty.
    pub node_selector: Option<&'p BTreeMap<String, String>>,
    pub tolerations: &'p [Toleration],
    /// Whether the pod tolerates `node.kubernetes.io/unschedulable`, so that cordons do not
    /// apply to it (as in Kubernetes, where DaemonSet pods carry this toleration).
    pub tolerates_cordon: bool,
}

/// Everything the filters look at of a pod: two pods that ask the same pass and fail the same
/// filters on every node.
#[derive(PartialEq)]
pub struct Asks<'p> {
    fit: Resources,
    node_selector: Option<&'p BTreeMap<String, String>>,
    tolerations: &'p [Toleration],
    tolerates_cordon: bool,
}

impl<'p> Candidate<'p> {
    pub fn asks(&self) -> Asks<'p> {
        Asks {
            fit: self.requests.fit,
            node_selector: self.node_selector,
            tolerations: self.tolerations,
            tolerates_cordon: self.tolerates_cordon,
        }
    }
}

/// Why a node was filtered out for a pod.
#[derive(Debug, PartialEq)]
pub enum Reason<'n> {
    NotReady,
    /// The node reports an allocatable amount that is not a quantity.
    InvalidAllocatable,
    Unschedulable,
    UntoleratedTaint(&'n Taint),
    NodeSelectorMismatch,
    TooManyPods,
    InsufficientCpu,
    InsufficientMemory,
}

impl fmt::Display for Reason<'_> {
    /// kube-scheduler's words, so that `describe` reads as users of Kubernetes expect.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotReady => f.write_str("node(s) were not ready"),
            Reason::InvalidAllocatable => f.write_str("node(s) reported an invalid allocatable"),
            Reason::Unschedulable => f.write_str("node(s) were unschedulable"),
            Reason::UntoleratedTaint(taint) => write!(
                f,
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            ),
            Reason::NodeSelectorMismatch => {
                f.write_str("node(s) didn't match Pod's node affinity/selector")
            }
            Reason::TooManyPods => f.write_str("Too many pods"),
            Reason::InsufficientCpu => f.write_str("Insufficient cpu"),
            Reason::InsufficientMemory => f.write_str("Insufficient memory"),
        }
    }
}

/// A node and the running totals of the pods placed on it.
pub struct NodeState {
    pub name: String,
    labels: BTreeMap<String, String>,
    /// Only the taints that keep pods off (NoSchedule, NoExecute); PreferNoSchedule only scores.
    taints: Vec<Taint>,
    ready: bool,
    allocatable_valid: bool,
    unschedulable: bool,
    allocatable: Resources,
    max_pods: i64,
    /// What placed pods request, to check fit.
    requested: Resources,
    /// What placed pods request with defaults for the unrequested, to score load.
    scored: Resources,
    pods: i64,
}

impl NodeState {
    pub fn new(node: &Node) -> NodeState {
        let status = node.status.as_ref();
        let spec = node.spec.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
        // A resource the node does not report is one it has none of, as in Kubernetes.
        let allocatable = status.and_then(|s| s.allocatable.as_ref());
        let get = |name: &str, parse: fn(&Quantity) -> Result<i64, QuantityError>| {
            allocatable.and_then(|a| a.get(name)).map_or(Ok(0), parse)
        };
        let cpu = get("cpu", quantity::cpu_millis);
        let memory = get("memory", quantity::bytes);
        let pods = get("pods", quantity::bytes);
        let allocatable_valid = cpu.is_ok() && memory.is_ok() && pods.is_ok();
        NodeState {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec
                .and_then(|s| s.taints.as_ref())
                .into_iter()
                .flatten()
                .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
                .cloned()
                .collect(),
            ready,
            allocatable_valid,
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            allocatable: Resources {
                cpu_millis: cpu.unwrap_or(0),
                memory_bytes: memory.unwrap_or(0),
            },
            max_pods: pods.unwrap_or(0),
            requested: Resources::default(),
            scored: Resources::default(),
            pods: 0,
        }
    }

    /// Counts a pod as placed here.
    pub fn add(&mut self, requests: &PodRequests) {
        self.requested = self.requested.plus(requests.fit);
        self.scored = self.scored.plus(requests.score);
        self.pods += 1;
    }

    /// Runs kube-scheduler's filters in its order. A node that fails one is not checked
    /// further, except that every resource it lacks is reported. `report` hears each reason;
    /// the search for a node passes a no-op and only looks at the answer.
    #[inline]
    pub fn filter<'n>(&'n self, pod: &Candidate<'_>, mut report: impl FnMut(Reason<'n>)) -> bool {
        if !self.ready {
            report(Reason::NotReady);
            return false;
        }
        if !self.allocatable_valid {
            report(Reason::InvalidAllocatable);
            return false;
        }
        if self.unschedulable && !pod.tolerates_cordon {
            report(Reason::Unschedulable);
            return false;
        }
        if !self.taints.is_empty() {
            let untolerated = self
                .taints
                .iter()
                .find(|taint| !pod.tolerations.iter().any(|t| tolerates(t, taint)));
            if let Some(taint) = untolerated {
                report(Reason::UntoleratedTaint(taint));
                return false;
            }
        }
        if let Some(selector) = pod.node_selector {
            let matches = selector
                .iter()
                .all(|(key, value)| self.labels.get(key) == Some(value));
            if !matches {
                report(Reason::NodeSelectorMismatch);
                return false;
            }
        }
        // A resource the pod does not request always fits, even on an overcommitted node.
        let want = pod.requests.fit;
        let mut fits = true;
        if self.pods + 1 > self.max_pods {
            report(Reason::TooManyPods);
            fits = false;
        }
        if want.cpu_millis > 0
            && self.requested.cpu_millis + want.cpu_millis > self.allocatable.cpu_millis
        {
            report(Reason::InsufficientCpu);
            fits = false;
        }
        if want.memory_bytes > 0
            && self.requested.memory_bytes + want.memory_bytes > self.allocatable.memory_bytes
        {
            report(Reason::InsufficientMemory);
            fits = false;
        }
        fits
    }

    /// The share of the node that would be requested with `add` placed on it, averaged over CPU
    /// and memory, each capped at 1: lower is less allocated (kube's LeastAllocated, unrounded).
    #[inline]
    pub fn allocated_with(&self, add: &Resources) -> f64 {
        let share = |used: i64, allocatable: i64| {
            if allocatable <= 0 {
                1.0
            } else {
                (used as f64 / allocatable as f64).min(1.0)
            }
        };
        let cpu = share(
            self.scored.cpu_millis + add.cpu_millis,
            self.allocatable.cpu_millis,
        );
        let memory = share(
            self.scored.memory_bytes + add.memory_bytes,
            self.allocatable.memory_bytes,
        );
        (cpu + memory) / 2.0
    }
}

/// Whether `toleration` tolerates `taint`, by Kubernetes' rules: an empty effect matches every
/// effect, an empty key with `Exists` matches every taint, `Equal` (the default) compares values.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}
