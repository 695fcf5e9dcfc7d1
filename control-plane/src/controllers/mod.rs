//! Controllers: the leader's reconcile loops for ReplicaSets, Deployments and Service
//! endpoints, as pure deciders.
//!
//! ```text
//!   store watch ──▶ async shell ──(desired + observed, now)──▶ decider ──▶ Decision
//!        ▲              │                                     (pure, no IO)    │
//!        │              └──────────── writes (Apply / Delete / UpdateStatus) ◀──┘
//!        └──────────────────────────── Raft commit ◀────────────┘
//! ```
//!
//! A decider gets one object, what it owns (or could own) and the time, and returns every
//! write one reconcile step needs. It never remembers anything: the shell reruns it whenever
//! a watched object changes, after a decision's writes have committed (so it never sees its
//! own creates as missing and creates twice), and again after `requeue_after`.
//!
//! - [`replicaset`]: pods created and deleted to match `spec.replicas`, adopted and released
//!   by selector, and the ReplicaSet's status.
//! - [`deployment`]: one ReplicaSet per pod-template hash, scaled by the rollout strategy.
//! - [`run`]: the leader's loop that runs both and deletes what lost its controller.
//! - [`endpoints`]: each Service's pod addresses as EndpointSlices, and LoadBalancer
//!   status; a leader loop of its own.
//!
//! Names, labels, annotations and orderings are Kubernetes' own, so that `kubectl`-trained
//! eyes read `berth get rs,pods` the same way.

pub mod deployment;
pub mod endpoints;
mod error;
pub mod replicaset;
pub mod run;

pub use error::ControllerError;

use berth_proto::k8s_openapi::api::core::v1::Pod;
use berth_proto::k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference,
};
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::time::Duration;

/// The characters Kubernetes uses in generated names: no vowels (no words), no look-alikes.
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `len` characters of [`SAFE_ALPHABET`], taken from `value` in base 27.
fn safe_encode(mut value: u64, len: usize) -> String {
    let base = SAFE_ALPHABET.len() as u64;
    (0..len)
        .map(|_| {
            let c = SAFE_ALPHABET[(value % base) as usize] as char;
            value /= base;
            c
        })
        .collect()
}

/// The 5-character suffix of a generated name (`web-7d9f8b6c4-x2k9q`), from a random number
/// the shell draws: deciders stay deterministic.
pub fn name_suffix(random: u64) -> String {
    safe_encode(random, 5)
}

/// Whether `labels` satisfy `selector`. An empty selector matches nothing here: a controller
/// with one would otherwise adopt every pod of its namespace (validation rejects it anyway).
pub fn selector_matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let match_labels = selector.match_labels.as_ref().filter(|m| !m.is_empty());
    let expressions = selector
        .match_expressions
        .as_ref()
        .filter(|e| !e.is_empty());
    if match_labels.is_none() && expressions.is_none() {
        return false;
    }
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let labels_match = match_labels
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_match = expressions.into_iter().flatten().all(|e| {
        let label = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => label.is_some_and(|v| values.contains(v)),
            "NotIn" => label.is_none_or(|v| !values.contains(v)),
            "Exists" => label.is_some(),
            "DoesNotExist" => label.is_none(),
            // Validation admits no other operator; matching nothing is the safe reading.
            _ => false,
        }
    });
    labels_match && expressions_match
}

/// The owner reference with `controller: true`, if the object has one.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// The reference an owner of kind `K` puts on what it controls.
fn controller_reference<K: berth_proto::k8s_openapi::Resource>(
    owner: &ObjectMeta,
) -> OwnerReference {
    OwnerReference {
        api_version: K::API_VERSION.to_string(),
        kind: K::KIND.to_string(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// How an owner relates to one object it might control (Kubernetes' ClaimObject).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// Controlled by this owner and matching its selector.
    Owned,
    /// Controlled by nobody and matching: take it.
    Adopt,
    /// Controlled by this owner but its labels moved away: let it go.
    Release,
    /// Someone else's, or not a match.
    Ignore,
}

fn claim(owner: &ObjectMeta, selector: &LabelSelector, object: &ObjectMeta) -> Claim {
    let owner_deleting = owner.deletion_timestamp.is_some();
    let matches = selector_matches(selector, object.labels.as_ref());
    match controller_of(object) {
        Some(r) if Some(&r.uid) != owner.uid.as_ref() => Claim::Ignore,
        Some(_) if matches => Claim::Owned,
        // An owner on its way out keeps what it has until the garbage collector acts.
        Some(_) if owner_deleting => Claim::Ignore,
        Some(_) => Claim::Release,
        None if matches && !owner_deleting && object.deletion_timestamp.is_none() => Claim::Adopt,
        None => Claim::Ignore,
    }
}

/// `object` with this owner's controller reference added.
fn adopted<K: berth_proto::k8s_openapi::Resource>(
    owner: &ObjectMeta,
    mut object: ObjectMeta,
) -> ObjectMeta {
    object
        .owner_references
        .get_or_insert_with(Vec::new)
        .push(controller_reference::<K>(owner));
    object
}

/// `object` without this owner's references.
fn released(owner: &ObjectMeta, mut object: ObjectMeta) -> ObjectMeta {
    if let Some(refs) = &mut object.owner_references {
        refs.retain(|r| Some(&r.uid) != owner.uid.as_ref());
        if refs.is_empty() {
            object.owner_references = None;
        }
    }
    object
}

/// A pod on its way out (deletionTimestamp set): it no longer counts as a replica.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Whether a pod is done for good: with restartPolicy Always only an eviction gets here.
fn has_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// A pod that counts as a replica: neither terminating nor finished.
pub fn is_active(pod: &Pod) -> bool {
    !is_terminating(pod) && !has_finished(pod)
}

/// Since when the pod has been Ready, if it is (its Ready condition's last transition; the
/// epoch when the agent did not say).
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let ready = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        ready
            .last_transition_time
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0),
    )
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` as of `now`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    available_in(pod, min_ready_seconds, now) == Some(Duration::ZERO)
}

/// How long until a Ready pod becomes available (zero if it is); `None` if it is not Ready.
fn available_in(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<Duration> {
    let since = ready_since(pod)?;
    if min_ready_seconds <= 0 {
        return Some(Duration::ZERO);
    }
    let at = since
        .checked_add(jiff::SignedDuration::from_secs(i64::from(
            min_ready_seconds,
        )))
        .unwrap_or(Timestamp::MAX);
    Some(Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO))
}

/// What a Deployment needs to know about the pods of one of its ReplicaSets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodCounts {
    /// Active pods (not terminating, not finished).
    pub replicas: i32,
    /// Active and Ready.
    pub ready: i32,
    /// Ready for at least minReadySeconds.
    pub available: i32,
    /// Terminating but not gone yet: Recreate waits for these too.
    pub terminating: i32,
}

/// Counts `pods` by the uid of their controller (the ReplicaSet that owns them).
pub fn count_pods_by_owner<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    min_ready_seconds: i32,
    now: Timestamp,
) -> BTreeMap<String, PodCounts> {
    let mut counts: BTreeMap<String, PodCounts> = BTreeMap::new();
    for pod in pods {
        let Some(owner) = controller_of(&pod.metadata) else {
            continue;
        };
        let entry = counts.entry(owner.uid.clone()).or_default();
        if is_active(pod) {
            entry.replicas += 1;
            entry.ready += i32::from(is_ready(pod));
            entry.available += i32::from(is_available(pod, min_ready_seconds, now));
        } else if !has_finished(pod) {
            entry.terminating += 1;
        }
    }
    counts
}

#[cfg(test)]
pub(crate) mod testing;
