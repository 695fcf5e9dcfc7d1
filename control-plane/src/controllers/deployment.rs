//! The Deployment decider: one ReplicaSet per pod template, scaled by the rollout strategy.
//!
//! ```text
//!   Deployment + ReplicaSets of its namespace + pod counts per ReplicaSet + now
//!      │ claim ReplicaSets by selector; the new one is the one whose template (minus
//!      │ pod-template-hash) equals the Deployment's; the others are old
//!      ▼
//!   paused, or spec.replicas changed ──▶ scale only (proportionally across active sets)
//!   RollingUpdate ──▶ create/scale up new ≤ replicas + maxSurge in total,
//!                     scale down old while available ≥ replicas − maxUnavailable
//!   Recreate      ──▶ old to 0 ─▶ wait until their pods are gone ─▶ new to replicas
//!      ▼
//!   complete ──▶ delete empty old sets beyond revisionHistoryLimit
//!   status: replicas, updated, ready, available, unavailable, Available, Progressing
//! ```
//!
//! The steps, annotations and conditions follow Kubernetes' deployment controller, so a
//! rollout reads the same in `berth rollout status` as in `kubectl rollout status`. One step
//! writes once and returns; the next step sees the result, as Kubernetes' controller does.
//! Availability comes from pod counts the shell takes ([`super::count_pods_by_owner`]),
//! fresher than the ReplicaSets' own status.

use super::{
    adopted, claim, controller_reference, released, safe_encode, Claim, ControllerError, PodCounts,
};
use berth_proto::k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use berth_proto::k8s_openapi::api::core::v1::PodTemplateSpec;
use berth_proto::k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, Time,
};
use berth_proto::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::time::Duration;

/// The label that ties a ReplicaSet and its pods to one pod template.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// The rollout revision, on the Deployment and on each of its ReplicaSets.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// The Deployment's replicas when the ReplicaSet was last scaled by it.
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
/// replicas + maxSurge at that time: the base of proportional scaling.
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";

const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;
const DEFAULT_SURGE_OR_UNAVAILABLE: &str = "25%";

const AVAILABLE: &str = "Available";
const PROGRESSING: &str = "Progressing";

/// Annotations of the Deployment that are not copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    "deployment.kubernetes.io/revision-history",
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
];

/// Every write one reconcile step of a Deployment needs, in the order to write them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeploymentDecision {
    /// The ReplicaSet for the current template (no uid yet: the store assigns it).
    pub create: Option<ReplicaSet>,
    /// ReplicaSets changed in place: scaled, annotated, adopted or released (resourceVersion
    /// kept: write them conditionally).
    pub update: Vec<ReplicaSet>,
    /// Names of old, empty ReplicaSets beyond revisionHistoryLimit.
    pub delete: Vec<String>,
    /// The Deployment with its revision annotation brought up to date.
    pub deployment: Option<Deployment>,
    /// The new status, when it differs from the stored one.
    pub status: Option<DeploymentStatus>,
    /// Run again after this long even if nothing changes: the progress deadline falls then.
    pub requeue_after: Option<Duration>,
}

/// Decides one step for `deployment`, given the ReplicaSets of its namespace (any owner), pod
/// counts by ReplicaSet uid ([`super::count_pods_by_owner`] with the Deployment's
/// minReadySeconds) and now.
pub fn decide(
    deployment: &Deployment,
    replica_sets: &[ReplicaSet],
    pods: &BTreeMap<String, PodCounts>,
    now: Timestamp,
) -> Result<DeploymentDecision, ControllerError> {
    let fenceposts = Fenceposts::of(deployment)?;
    let meta = &deployment.metadata;
    let spec = &deployment.spec;
    let mut released_sets = Vec::new();
    // (as stored, as this step leaves it): a difference is a write.
    let mut claimed: Vec<(&ReplicaSet, ReplicaSet)> = Vec::new();
    for rs in replica_sets {
        match claim(meta, &spec.selector, &rs.metadata) {
            Claim::Owned => claimed.push((rs, rs.clone())),
            Claim::Adopt => {
                let mut working = rs.clone();
                working.metadata = adopted::<Deployment>(meta, working.metadata);
                claimed.push((rs, working));
            }
            Claim::Release => {
                let mut rs = rs.clone();
                rs.metadata = released(meta, rs.metadata);
                released_sets.push(rs);
            }
            Claim::Ignore => {}
        }
    }
    claimed.sort_by(|(a, _), (b, _)| {
        (&a.metadata.creation_timestamp, &a.metadata.name)
            .cmp(&(&b.metadata.creation_timestamp, &b.metadata.name))
    });
    let (stored, sets): (Vec<&ReplicaSet>, Vec<ReplicaSet>) = claimed.into_iter().unzip();
    let new = sets
        .iter()
        .position(|rs| same_template(rs.spec.template.as_ref(), &spec.template));
    let mut rollout = Rollout {
        deployment,
        replicas: spec.replicas.unwrap_or(1),
        fenceposts,
        sets,
        new,
        pods,
        conditions: deployment
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default(),
        collision_count: deployment.status.as_ref().and_then(|s| s.collision_count),
        taken_names: replica_sets.iter().map(|rs| name(rs).to_string()).collect(),
        now,
    };
    // Releases and adoptions are writes of their own, whatever else this step does.
    let mut decision = DeploymentDecision {
        update: released_sets,
        ..DeploymentDecision::default()
    };

    let paused = spec.paused == Some(true);
    let progress = if meta.deletion_timestamp.is_some() {
        Progress::StatusOnly
    } else {
        rollout.note_paused(paused);
        if paused || rollout.is_scaling_event() {
            rollout.sync_revision(&mut decision);
            rollout.scale();
            if paused {
                rollout.clean_up(&mut decision);
            }
            Progress::StatusOnly
        } else if fenceposts.recreate {
            rollout.recreate(&mut decision)
        } else {
            rollout.rolling_update(&mut decision)
        }
    };

    for (i, rs) in rollout.sets.iter().enumerate() {
        if rollout.new == Some(i) && decision.create.is_some() {
            // Created in this step: create it as the step left it.
            decision.create = Some(rs.clone());
            continue;
        }
        if stored.get(i).copied() != Some(rs) && !decision.delete.iter().any(|d| d == name(rs)) {
            decision.update.push(rs.clone());
        }
    }
    let status = rollout.status(progress == Progress::Rollout);
    decision.requeue_after = rollout.requeue_after(&status);
    if deployment.status.as_ref() != Some(&status) {
        decision.status = Some(status);
    }
    Ok(decision)
}

/// The pod-template hash Kubernetes-style: 10 characters of the safe alphabet from the FNV-1a
/// hash of the template's JSON (fields in declaration order, maps sorted: canonical) and the
/// Deployment's collision count.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(template).expect("Kubernetes types serialise to JSON");
    if let Some(count) = collision_count {
        bytes.extend_from_slice(&count.to_le_bytes());
    }
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    safe_encode(hash, 10)
}

/// The revision a ReplicaSet was made for (0 when it carries none).
pub fn revision(replica_set: &ReplicaSet) -> i64 {
    replica_set
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION_ANNOTATION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The pod template of `revision` among a Deployment's ReplicaSets, without its
/// pod-template-hash label, ready to copy into the Deployment for `rollout undo`. Revision 0
/// means the one before the latest (`rollout undo` without `--to-revision`).
pub fn template_of_revision(replica_sets: &[ReplicaSet], revision: i64) -> Option<PodTemplateSpec> {
    let wanted = if revision == 0 {
        let mut revisions: Vec<i64> = replica_sets.iter().map(self::revision).collect();
        revisions.sort_unstable();
        revisions.dedup();
        *revisions.iter().rev().nth(1)?
    } else {
        revision
    };
    let rs = replica_sets
        .iter()
        .find(|rs| self::revision(rs) == wanted)?;
    Some(without_hash(rs.spec.template.clone()?))
}

/// maxSurge and maxUnavailable resolved against spec.replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fenceposts {
    recreate: bool,
    surge: i32,
    unavailable: i32,
}

impl Fenceposts {
    fn of(deployment: &Deployment) -> Result<Self, ControllerError> {
        let replicas = deployment.spec.replicas.unwrap_or(1);
        let strategy = deployment.spec.strategy.as_ref();
        if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
            return Ok(Fenceposts {
                recreate: true,
                surge: 0,
                unavailable: 0,
            });
        }
        let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
        let default = IntOrString::String(DEFAULT_SURGE_OR_UNAVAILABLE.into());
        let surge_value = rolling
            .and_then(|r| r.max_surge.as_ref())
            .unwrap_or(&default);
        let unavailable_value = rolling
            .and_then(|r| r.max_unavailable.as_ref())
            .unwrap_or(&default);
        let surge = scaled(
            surge_value,
            replicas,
            true,
            "spec.strategy.rollingUpdate.maxSurge",
        )?;
        let mut unavailable = scaled(
            unavailable_value,
            replicas,
            false,
            "spec.strategy.rollingUpdate.maxUnavailable",
        )?;
        if is_zero(surge_value) && is_zero(unavailable_value) {
            return Err(ControllerError::NoRolloutProgress);
        }
        // Percentages that round to 0 and 0: Kubernetes lets one pod be unavailable.
        if surge == 0 && unavailable == 0 {
            unavailable = 1;
        }
        Ok(Fenceposts {
            recreate: false,
            surge,
            unavailable: unavailable.min(replicas),
        })
    }
}

fn is_zero(value: &IntOrString) -> bool {
    match value {
        IntOrString::Int(n) => *n == 0,
        IntOrString::String(s) => {
            s.strip_suffix('%').and_then(|d| d.parse::<i64>().ok()) == Some(0)
        }
    }
}

/// An int, or a percent of `total` rounded up (surge) or down (unavailable).
fn scaled(
    value: &IntOrString,
    total: i32,
    round_up: bool,
    field: &'static str,
) -> Result<i32, ControllerError> {
    let invalid = || ControllerError::InvalidIntOrPercent {
        field,
        value: match value {
            IntOrString::Int(n) => n.to_string(),
            IntOrString::String(s) => s.clone(),
        },
    };
    match value {
        IntOrString::Int(n) if *n >= 0 => Ok(*n),
        IntOrString::Int(_) => Err(invalid()),
        IntOrString::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse().ok())
                .ok_or_else(invalid)?;
            let product = percent * i64::from(total.max(0));
            let value = if round_up {
                (product + 99) / 100
            } else {
                product / 100
            };
            Ok(i32::try_from(value).unwrap_or(i32::MAX))
        }
    }
}

/// What the status should say about progress: only a step that could roll out judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    StatusOnly,
    Rollout,
}

/// The working state of one step: the Deployment's ReplicaSets as this step leaves them.
struct Rollout<'a> {
    deployment: &'a Deployment,
    replicas: i32,
    fenceposts: Fenceposts,
    /// Oldest first; a ReplicaSet created in this step is last.
    sets: Vec<ReplicaSet>,
    new: Option<usize>,
    pods: &'a BTreeMap<String, PodCounts>,
    conditions: Vec<DeploymentCondition>,
    collision_count: Option<i32>,
    /// Names of every ReplicaSet in the namespace, whoever owns it.
    taken_names: Vec<String>,
    now: Timestamp,
}

impl Rollout<'_> {
    fn name(&self) -> &str {
        self.deployment.metadata.name.as_deref().unwrap_or_default()
    }

    fn size(&self, i: usize) -> i32 {
        self.sets[i].spec.replicas.unwrap_or(1)
    }

    fn counts(&self, i: usize) -> PodCounts {
        self.sets[i]
            .metadata
            .uid
            .as_ref()
            .and_then(|uid| self.pods.get(uid))
            .copied()
            .unwrap_or_default()
    }

    fn olds(&self) -> Vec<usize> {
        (0..self.sets.len())
            .filter(|i| Some(*i) != self.new)
            .collect()
    }

    fn total_size(&self, sets: &[usize]) -> i32 {
        sets.iter().map(|i| self.size(*i)).sum()
    }

    fn all(&self) -> Vec<usize> {
        (0..self.sets.len()).collect()
    }

    /// Sets the size and records for which Deployment size it was chosen.
    fn scale_to(&mut self, i: usize, replicas: i32) {
        let desired = self.replicas.to_string();
        let max = (self.replicas + self.fenceposts.surge).to_string();
        let rs = &mut self.sets[i];
        rs.spec.replicas = Some(replicas.max(0));
        let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(DESIRED_REPLICAS_ANNOTATION.into(), desired);
        annotations.insert(MAX_REPLICAS_ANNOTATION.into(), max);
    }

    /// Scales when the size differs; says whether it did.
    fn scale_if_needed(&mut self, i: usize, replicas: i32) -> bool {
        if self.size(i) == replicas {
            return false;
        }
        self.scale_to(i, replicas);
        true
    }

    fn set_condition(&mut self, type_: &str, status: &str, reason: &str, message: String) {
        set_condition(
            &mut self.conditions,
            type_,
            status,
            reason,
            message,
            self.now,
        );
    }

    fn progressing_reason(&self) -> Option<&str> {
        self.conditions
            .iter()
            .find(|c| c.type_.as_deref() == Some(PROGRESSING))
            .and_then(|c| c.reason.as_deref())
    }

    fn note_paused(&mut self, paused: bool) {
        let reason = self.progressing_reason();
        if paused && reason != Some("DeploymentPaused") {
            self.set_condition(
                PROGRESSING,
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
            );
        } else if !paused && reason == Some("DeploymentPaused") {
            self.set_condition(
                PROGRESSING,
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".into(),
            );
        }
    }

    /// spec.replicas changed since an active ReplicaSet was last scaled for it.
    fn is_scaling_event(&self) -> bool {
        let replicas = self.replicas.to_string();
        self.sets.iter().any(|rs| {
            rs.spec.replicas.unwrap_or(1) > 0
                && annotation(rs, DESIRED_REPLICAS_ANNOTATION).is_some_and(|d| *d != replicas)
        })
    }

    /// The new ReplicaSet takes the next revision (a rollback revives an old one under a new
    /// number), and the Deployment shows it.
    fn sync_revision(&mut self, decision: &mut DeploymentDecision) {
        let Some(new) = self.new else {
            return;
        };
        let next = self
            .olds()
            .iter()
            .map(|i| revision(&self.sets[*i]))
            .max()
            .unwrap_or(0)
            + 1;
        let min_ready = self.deployment.spec.min_ready_seconds;
        let copied = copied_annotations(self.deployment);
        let rs = &mut self.sets[new];
        let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.extend(copied);
        if revision(rs) < next {
            rs.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(REVISION_ANNOTATION.into(), next.to_string());
        }
        rs.spec.min_ready_seconds = min_ready;
        let rs_name = name(rs).to_string();
        let rs_revision = revision(rs).to_string();
        self.show_revision(&rs_revision, decision);
        if self.progressing_reason().is_none() {
            self.set_condition(
                PROGRESSING,
                "True",
                "FoundNewReplicaSet",
                format!("Found new replica set {rs_name:?}"),
            );
        }
    }

    fn show_revision(&self, revision: &str, decision: &mut DeploymentDecision) {
        let current = self
            .deployment
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION_ANNOTATION));
        if current.map(String::as_str) != Some(revision) {
            let mut deployment = self.deployment.clone();
            deployment
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(REVISION_ANNOTATION.into(), revision.into());
            decision.deployment = Some(deployment);
        }
    }

    /// Makes the ReplicaSet of the current template with `replicas`, unless its name is taken
    /// by a different one: then the collision count moves and the next step hashes anew.
    fn create_new(&mut self, replicas: i32, decision: &mut DeploymentDecision) -> bool {
        let template = &self.deployment.spec.template;
        let hash = pod_template_hash(template, self.collision_count);
        let rs_name = format!("{}-{hash}", self.name());
        if self.taken_names.contains(&rs_name) {
            self.collision_count = Some(self.collision_count.unwrap_or(0) + 1);
            return false;
        }
        let next = self.sets.iter().map(revision).max().unwrap_or(0) + 1;
        let mut template = template.clone();
        let template_meta = template.metadata.get_or_insert_with(ObjectMeta::default);
        let labels = template_meta.labels.get_or_insert_with(BTreeMap::new);
        labels.insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let labels = labels.clone();
        let mut selector: LabelSelector = self.deployment.spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash);
        let mut annotations = copied_annotations(self.deployment);
        annotations.insert(REVISION_ANNOTATION.into(), next.to_string());
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(rs_name.clone()),
                namespace: self.deployment.metadata.namespace.clone(),
                labels: Some(labels),
                annotations: Some(annotations),
                owner_references: Some(vec![controller_reference::<Deployment>(
                    &self.deployment.metadata,
                )]),
                ..ObjectMeta::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: self.deployment.spec.min_ready_seconds,
                selector,
                template: Some(template),
            },
            status: None,
        };
        self.sets.push(rs);
        let new = self.sets.len() - 1;
        self.new = Some(new);
        self.scale_to(new, replicas);
        decision.create = Some(self.sets[new].clone());
        self.show_revision(&next.to_string(), decision);
        self.set_condition(
            PROGRESSING,
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set {rs_name:?}"),
        );
        true
    }

    /// Proportional scaling without a rollout (Kubernetes' `scale`): the only active set
    /// takes all replicas; a saturated new set leaves nothing to the old ones; otherwise the
    /// change is spread in proportion to each set's size.
    fn scale(&mut self) {
        let active: Vec<usize> = self
            .all()
            .into_iter()
            .filter(|i| self.size(*i) > 0)
            .collect();
        let only = match active.as_slice() {
            [] => self.new.or_else(|| self.olds().last().copied()),
            [one] => Some(*one),
            _ => None,
        };
        if let Some(i) = only {
            // Also when only the annotation is stale: else this would count as a scaling
            // event forever and hold the rollout.
            let desired = annotation(&self.sets[i], DESIRED_REPLICAS_ANNOTATION);
            if self.size(i) != self.replicas || desired != Some(&self.replicas.to_string()) {
                self.scale_to(i, self.replicas);
            }
            return;
        }
        if let Some(new) = self.new.filter(|new| self.is_saturated(*new)) {
            for i in active.into_iter().filter(|i| *i != new) {
                self.scale_if_needed(i, 0);
            }
            return;
        }
        if self.fenceposts.recreate {
            return;
        }
        let allowed = if self.replicas > 0 {
            self.replicas + self.fenceposts.surge
        } else {
            0
        };
        let to_add = allowed - self.total_size(&active);
        let mut order = active;
        // Largest first; among equals, the newer takes additions and the older gives up pods.
        order.sort_by(|a, b| {
            let (sa, sb) = (self.size(*a), self.size(*b));
            let newer_first = self.sets[*b]
                .metadata
                .creation_timestamp
                .cmp(&self.sets[*a].metadata.creation_timestamp);
            sb.cmp(&sa).then(if to_add > 0 {
                newer_first
            } else {
                newer_first.reverse()
            })
        });
        let mut added = 0;
        let mut sizes: Vec<i32> = Vec::new();
        for i in &order {
            let proportion = self.proportion(*i, to_add, added);
            sizes.push(self.size(*i) + proportion);
            added += proportion;
        }
        if let Some(first) = sizes.first_mut() {
            *first = (*first + to_add - added).max(0);
        }
        for (i, size) in order.into_iter().zip(sizes) {
            self.scale_to(i, size);
        }
    }

    fn is_saturated(&self, i: usize) -> bool {
        self.size(i) == self.replicas
            && annotation(&self.sets[i], DESIRED_REPLICAS_ANNOTATION)
                == Some(&self.replicas.to_string())
            && self.counts(i).available == self.replicas
    }

    /// This set's share of `to_add`, given `added` already handed out.
    fn proportion(&self, i: usize, to_add: i32, added: i32) -> i32 {
        let size = self.size(i);
        if size == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let fraction = if self.replicas == 0 {
            -size
        } else {
            let base = annotation(&self.sets[i], MAX_REPLICAS_ANNOTATION)
                .and_then(|m| m.parse::<i64>().ok())
                .unwrap_or_else(|| {
                    i64::from(
                        self.deployment
                            .status
                            .as_ref()
                            .and_then(|s| s.replicas)
                            .unwrap_or(0),
                    )
                });
            if base <= 0 {
                0
            } else {
                let target = i64::from(size) * i64::from(self.replicas + self.fenceposts.surge);
                // Round half away from zero, as Kubernetes does.
                ((target + base / 2) / base) as i32 - size
            }
        };
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    fn recreate(&mut self, decision: &mut DeploymentDecision) -> Progress {
        self.sync_revision(decision);
        let mut scaled_down = false;
        for i in self.olds() {
            scaled_down |= self.scale_if_needed(i, 0);
        }
        let old_pods_running = self.olds().iter().any(|i| {
            let counts = self.counts(*i);
            counts.replicas + counts.terminating > 0
        });
        if scaled_down || old_pods_running {
            return Progress::Rollout;
        }
        match self.new {
            None => {
                self.create_new(self.replicas, decision);
            }
            Some(new) => {
                self.scale_if_needed(new, self.replicas);
            }
        }
        if self.stored_status_complete() {
            self.clean_up(decision);
        }
        Progress::Rollout
    }

    fn rolling_update(&mut self, decision: &mut DeploymentDecision) -> Progress {
        self.sync_revision(decision);
        let new = match self.new {
            Some(new) => new,
            None => {
                let replicas = self.new_set_replicas(0);
                if !self.create_new(replicas, decision) {
                    return Progress::Rollout;
                }
                self.new.expect("create_new sets the new ReplicaSet")
            }
        };
        if self.reconcile_new(new) || self.reconcile_old(new) {
            return Progress::Rollout;
        }
        if self.stored_status_complete() {
            self.clean_up(decision);
        }
        Progress::Rollout
    }

    /// How big the new set may grow now: up to replicas, within replicas + maxSurge in total.
    fn new_set_replicas(&self, new_size: i32) -> i32 {
        let others = self.total_size(&self.olds());
        let max_total = self.replicas + self.fenceposts.surge;
        let current = others + new_size;
        if current >= max_total {
            return new_size;
        }
        new_size + (max_total - current).min(self.replicas - new_size).max(0)
    }

    fn reconcile_new(&mut self, new: usize) -> bool {
        let size = self.size(new);
        if size >= self.replicas {
            return self.scale_if_needed(new, self.replicas);
        }
        let target = self.new_set_replicas(size);
        self.scale_if_needed(new, target)
    }

    /// Scales old sets down as far as availability allows: first their unavailable pods,
    /// which cost nothing, then available ones down to replicas − maxUnavailable.
    fn reconcile_old(&mut self, new: usize) -> bool {
        let olds = self.olds();
        if self.total_size(&olds) == 0 {
            return false;
        }
        let min_available = self.replicas - self.fenceposts.unavailable;
        let new_unavailable = (self.size(new) - self.counts(new).available).max(0);
        let max_scaled_down = self.total_size(&self.all()) - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        let mut scaled = 0;
        for &i in &olds {
            let (size, available) = (self.size(i), self.counts(i).available);
            if scaled >= max_scaled_down || size == 0 || available >= size {
                continue;
            }
            let down = (max_scaled_down - scaled).min(size - available);
            self.scale_to(i, size - down);
            scaled += down;
        }
        let available: i32 = self
            .all()
            .into_iter()
            .map(|i| self.counts(i).available)
            .sum();
        let to_scale_down = available - min_available;
        let mut scaled_available = 0;
        for &i in &olds {
            let size = self.size(i);
            if scaled_available >= to_scale_down || size == 0 {
                continue;
            }
            let down = size.min(to_scale_down - scaled_available);
            self.scale_to(i, size - down);
            scaled_available += down;
        }
        scaled + scaled_available > 0
    }

    /// Kubernetes cleans up only once the stored status says the rollout completed.
    fn stored_status_complete(&self) -> bool {
        self.deployment
            .status
            .as_ref()
            .is_some_and(|s| self.is_complete(s))
    }

    fn is_complete(&self, status: &DeploymentStatus) -> bool {
        status.updated_replicas == Some(self.replicas)
            && status.replicas == Some(self.replicas)
            && status.available_replicas == Some(self.replicas)
            && status.observed_generation >= self.deployment.metadata.generation
    }

    /// Deletes the oldest empty old sets beyond revisionHistoryLimit.
    fn clean_up(&self, decision: &mut DeploymentDecision) {
        let limit = self
            .deployment
            .spec
            .revision_history_limit
            .unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT)
            .max(0) as usize;
        let mut alive: Vec<usize> = self
            .olds()
            .into_iter()
            .filter(|i| self.sets[*i].metadata.deletion_timestamp.is_none())
            .collect();
        if alive.len() <= limit {
            return;
        }
        alive.sort_by_key(|i| {
            (
                revision(&self.sets[*i]),
                self.sets[*i].metadata.creation_timestamp.clone(),
            )
        });
        let excess = alive.len() - limit;
        for &i in &alive[..excess] {
            let rs = &self.sets[i];
            let counts = self.counts(i);
            let status = rs.status.as_ref();
            let empty = self.size(i) == 0
                && status.is_none_or(|s| s.replicas == 0)
                && counts.replicas + counts.terminating == 0
                && rs.metadata.generation <= status.and_then(|s| s.observed_generation);
            if empty {
                decision.delete.push(name(rs).to_string());
            }
        }
    }

    fn status(&mut self, judge_progress: bool) -> DeploymentStatus {
        let all = self.all();
        let sum =
            |f: &dyn Fn(PodCounts) -> i32| -> i32 { all.iter().map(|i| f(self.counts(*i))).sum() };
        let available = sum(&|c| c.available);
        let replicas = sum(&|c| c.replicas);
        let ready = sum(&|c| c.ready);
        let updated = self.new.map_or(0, |i| self.counts(i).replicas);
        let unavailable = (self.total_size(&all) - available).max(0);
        let min_available = self.replicas - self.fenceposts.unavailable;
        if available >= min_available {
            self.set_condition(
                AVAILABLE,
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            );
        } else {
            self.set_condition(
                AVAILABLE,
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            );
        }
        let mut status = DeploymentStatus {
            observed_generation: self.deployment.metadata.generation,
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            unavailable_replicas: Some(unavailable),
            collision_count: self.collision_count,
            conditions: None,
            terminating_replicas: self
                .deployment
                .status
                .as_ref()
                .and_then(|s| s.terminating_replicas),
        };
        if judge_progress {
            self.judge_progress(&status);
        }
        status.conditions = Some(self.conditions.clone()).filter(|c| !c.is_empty());
        status
    }

    /// The Progressing condition: complete, still moving, or stuck past the deadline.
    fn judge_progress(&mut self, status: &DeploymentStatus) {
        let Some(deadline) = self.progress_deadline() else {
            self.conditions
                .retain(|c| c.type_.as_deref() != Some(PROGRESSING));
            return;
        };
        let subject = match self.new {
            Some(i) => format!("ReplicaSet {:?}", name(&self.sets[i])),
            None => format!("Deployment {:?}", self.name()),
        };
        let current = self
            .conditions
            .iter()
            .find(|c| c.type_.as_deref() == Some(PROGRESSING))
            .cloned();
        let reason = current.as_ref().and_then(|c| c.reason.as_deref());
        if status.replicas == status.updated_replicas && reason == Some("NewReplicaSetAvailable") {
            return;
        }
        let old = self.deployment.status.clone().unwrap_or_default();
        let old_olds = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
        let new_olds = status.replicas.unwrap_or(0) - status.updated_replicas.unwrap_or(0);
        let more = |new: Option<i32>, old: Option<i32>| new.unwrap_or(0) > old.unwrap_or(0);
        let progressing = more(status.updated_replicas, old.updated_replicas)
            || new_olds < old_olds
            || more(status.ready_replicas, old.ready_replicas)
            || more(status.available_replicas, old.available_replicas);
        let timed_out = match (&current, reason) {
            (_, Some("ProgressDeadlineExceeded")) => true,
            (Some(c), _) => c.last_update_time.as_ref().is_some_and(|t| {
                t.0.checked_add(jiff::SignedDuration::from_secs(deadline))
                    .is_ok_and(|at| at < self.now)
            }),
            (None, _) => false,
        };
        if self.is_complete(status) {
            self.set_condition(
                PROGRESSING,
                "True",
                "NewReplicaSetAvailable",
                format!("{subject} has successfully progressed."),
            );
        } else if progressing {
            // Progress refreshes lastUpdateTime, which is what the deadline counts from.
            let kept = current
                .filter(|c| c.status.as_deref() == Some("True"))
                .and_then(|c| c.last_transition_time);
            self.conditions
                .retain(|c| c.type_.as_deref() != Some(PROGRESSING));
            self.set_condition(
                PROGRESSING,
                "True",
                "ReplicaSetUpdated",
                format!("{subject} is progressing."),
            );
            if let Some(kept) = kept {
                if let Some(c) = self.conditions.last_mut() {
                    c.last_transition_time = Some(kept);
                }
            }
        } else if timed_out {
            self.set_condition(
                PROGRESSING,
                "False",
                "ProgressDeadlineExceeded",
                format!("{subject} has timed out progressing."),
            );
        }
    }

    fn progress_deadline(&self) -> Option<i64> {
        let deadline = self
            .deployment
            .spec
            .progress_deadline_seconds
            .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS);
        (deadline != i32::MAX).then_some(i64::from(deadline))
    }

    /// When the deadline of a rollout still in progress falls.
    fn requeue_after(&self, status: &DeploymentStatus) -> Option<Duration> {
        let deadline = self.progress_deadline()?;
        if self.is_complete(status) {
            return None;
        }
        let condition = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_.as_deref() == Some(PROGRESSING))?;
        if condition.status.as_deref() != Some("True") {
            return None;
        }
        let at = condition
            .last_update_time
            .as_ref()?
            .0
            .checked_add(jiff::SignedDuration::from_secs(deadline))
            .ok()?;
        // One second past the deadline, so the next step sees it passed.
        Some(
            Duration::try_from(at.duration_since(self.now)).unwrap_or(Duration::ZERO)
                + Duration::from_secs(1),
        )
    }
}

/// Kubernetes' SetDeploymentCondition: same status and reason change nothing; same status
/// keeps the transition time.
fn set_condition(
    conditions: &mut Vec<DeploymentCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) {
    let current = conditions
        .iter()
        .find(|c| c.type_.as_deref() == Some(type_));
    if current
        .is_some_and(|c| c.status.as_deref() == Some(status) && c.reason.as_deref() == Some(reason))
    {
        return;
    }
    let transition = current
        .filter(|c| c.status.as_deref() == Some(status))
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    conditions.retain(|c| c.type_.as_deref() != Some(type_));
    conditions.push(DeploymentCondition {
        type_: Some(type_.into()),
        status: Some(status.into()),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(transition),
    });
}

fn name(rs: &ReplicaSet) -> &str {
    rs.metadata.name.as_deref().unwrap_or_default()
}

fn annotation<'a>(rs: &'a ReplicaSet, key: &str) -> Option<&'a String> {
    rs.metadata.annotations.as_ref()?.get(key)
}

fn copied_annotations(deployment: &Deployment) -> BTreeMap<String, String> {
    deployment
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn without_hash(mut template: PodTemplateSpec) -> PodTemplateSpec {
    if let Some(meta) = &mut template.metadata {
        if let Some(labels) = &mut meta.labels {
            labels.remove(POD_TEMPLATE_HASH_LABEL);
            if labels.is_empty() {
                meta.labels = None;
            }
        }
    }
    template
}

/// Whether a ReplicaSet runs this template (its pod-template-hash label aside).
fn same_template(rs_template: Option<&PodTemplateSpec>, template: &PodTemplateSpec) -> bool {
    rs_template.is_some_and(|t| without_hash(t.clone()) == without_hash(template.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::testing::{at, deployment, replica_set, rolling, template, World};
    use berth_proto::k8s_openapi::api::apps::v1::DeploymentStrategy;

    fn int(n: i32) -> IntOrString {
        IntOrString::Int(n)
    }

    fn percent(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    fn set_image(world: &mut World, image: &str) {
        world.edit(|spec| spec.template = template(image));
    }

    fn condition<'a>(world: &'a World, type_: &str) -> &'a DeploymentCondition {
        world
            .deployment
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_.as_deref() == Some(type_))
            .unwrap_or_else(|| panic!("no {type_} condition"))
    }

    /// Rolls web:1 out, then web:2, making `per_step` pods Ready per step, and checks after
    /// every single write that availability and surge stay within bounds.
    fn rolling_update_within_bounds(
        replicas: i32,
        surge: IntOrString,
        unavailable: IntOrString,
        (max_surge, max_unavailable): (usize, usize),
        per_step: usize,
    ) {
        let mut d = deployment(replicas);
        d.spec.strategy = rolling(surge, unavailable);
        let mut world = World::new(d);
        world.run_until_complete(replicas as usize, &mut |_| {});
        let v1 = world.current_replica_set().clone();
        assert_eq!(world.pods_of(&v1), replicas as usize);

        set_image(&mut world, "web:2");
        let replicas = replicas as usize;
        let (mut lowest_ready, mut highest_total) = (usize::MAX, 0);
        world.run_until_complete(per_step, &mut |w| {
            lowest_ready = lowest_ready.min(w.ready_pods());
            highest_total = highest_total.max(w.active_pods());
        });
        assert!(
            lowest_ready >= replicas - max_unavailable,
            "Ready pods fell to {lowest_ready}, below {replicas} - {max_unavailable}"
        );
        assert!(
            highest_total <= replicas + max_surge,
            "pods rose to {highest_total}, above {replicas} + {max_surge}"
        );
        // The bounds were used, not merely respected.
        assert_eq!(highest_total, replicas + max_surge);
        assert_eq!(lowest_ready, replicas - max_unavailable);

        let v2 = world.current_replica_set().clone();
        assert_ne!(v2.metadata.name, v1.metadata.name);
        assert_eq!(
            world.pods_of(&v2),
            replicas,
            "every pod runs the new template"
        );
        assert_eq!(
            world
                .replica_set_named(v1.metadata.name.as_deref().unwrap())
                .spec
                .replicas,
            Some(0)
        );
        assert_eq!(revision(&v2), 2);
        assert_eq!(
            annotation_of(&world.deployment, REVISION_ANNOTATION),
            Some("2")
        );
        let progressing = condition(&world, PROGRESSING);
        assert_eq!(
            progressing.reason.as_deref(),
            Some("NewReplicaSetAvailable")
        );
        assert_eq!(condition(&world, AVAILABLE).status.as_deref(), Some("True"));
    }

    fn annotation_of<'a>(d: &'a Deployment, key: &str) -> Option<&'a str> {
        d.metadata
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    #[test]
    fn rolling_update_with_default_25_percent_keeps_availability() {
        // 10 replicas: surge 25% rounds up to 3, unavailable 25% rounds down to 2.
        rolling_update_within_bounds(10, percent("25%"), percent("25%"), (3, 2), 2);
    }

    #[test]
    fn rolling_update_surge_only_never_loses_a_ready_pod() {
        rolling_update_within_bounds(3, int(1), int(0), (1, 0), 1);
    }

    #[test]
    fn rolling_update_unavailable_only_never_adds_a_pod() {
        rolling_update_within_bounds(4, int(0), int(1), (0, 1), 1);
    }

    #[test]
    fn rolling_update_with_slow_readiness_still_completes() {
        rolling_update_within_bounds(7, percent("30%"), percent("10%"), (3, 0), 1);
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        let fenceposts = |replicas, surge, unavailable| {
            let mut d = deployment(replicas);
            d.spec.strategy = rolling(surge, unavailable);
            Fenceposts::of(&d).map(|f| (f.surge, f.unavailable))
        };
        assert_eq!(fenceposts(10, percent("25%"), percent("25%")), Ok((3, 2)));
        assert_eq!(fenceposts(1, percent("25%"), percent("25%")), Ok((1, 0)));
        assert_eq!(
            fenceposts(5, percent("0%"), percent("10%")),
            Ok((0, 1)),
            "never both 0"
        );
        assert_eq!(
            fenceposts(3, int(2), int(5)),
            Ok((2, 3)),
            "unavailable capped at replicas"
        );
        assert_eq!(
            fenceposts(3, int(0), percent("0%")),
            Err(ControllerError::NoRolloutProgress)
        );
        assert!(matches!(
            fenceposts(3, percent("lots"), int(1)),
            Err(ControllerError::InvalidIntOrPercent {
                field: "spec.strategy.rollingUpdate.maxSurge",
                ..
            })
        ));
        let mut defaulted = deployment(4);
        defaulted.spec.strategy = None;
        assert_eq!(
            Fenceposts::of(&defaulted).map(|f| (f.surge, f.unavailable)),
            Ok((1, 1))
        );
    }

    #[test]
    fn scales_up_and_down_without_a_new_revision() {
        let mut world = World::new(deployment(3));
        world.run_until_complete(3, &mut |_| {});
        let rs = world.current_replica_set().metadata.name.clone();
        for replicas in [10, 2] {
            world.edit(|spec| spec.replicas = Some(replicas));
            world.run_until_complete(10, &mut |_| {});
            assert_eq!(world.replica_sets.len(), 1);
            let current = world.current_replica_set();
            assert_eq!(current.metadata.name, rs);
            assert_eq!(current.spec.replicas, Some(replicas));
            assert_eq!(
                annotation_of_rs(current, DESIRED_REPLICAS_ANNOTATION),
                Some(replicas.to_string().as_str())
            );
            assert_eq!(world.active_pods(), replicas as usize);
        }
        assert_eq!(
            annotation_of(&world.deployment, REVISION_ANNOTATION),
            Some("1")
        );
    }

    fn annotation_of_rs<'a>(rs: &'a ReplicaSet, key: &str) -> Option<&'a str> {
        annotation(rs, key).map(String::as_str)
    }

    #[test]
    fn scaling_mid_rollout_spreads_the_change_proportionally() {
        let mut d = deployment(10);
        d.spec.strategy = rolling(int(3), int(2));
        let mut world = World::new(d);
        world.run_until_complete(10, &mut |_| {});
        set_image(&mut world, "web:2");
        world.step(&mut |_| {});
        // New 3 (maxSurge), old 8 (maxUnavailable 2 of 10 gone)... now double the Deployment.
        let sizes = |w: &World| -> Vec<i32> {
            w.replica_sets
                .iter()
                .map(|rs| rs.spec.replicas.unwrap())
                .collect()
        };
        let before = sizes(&world);
        assert_eq!(before, [8, 3]);
        world.edit(|spec| spec.replicas = Some(20));
        let decision = world.decide_deployment();
        assert!(decision.create.is_none());
        world.apply_deployment(decision);
        let after = sizes(&world);
        assert_eq!(
            after.iter().sum::<i32>(),
            23,
            "replicas + maxSurge: {before:?} -> {after:?}"
        );
        assert!(
            after.iter().zip(&before).all(|(a, b)| a > b),
            "both grew: {before:?} -> {after:?}"
        );
        world.run_until_complete(5, &mut |w| assert!(w.active_pods() <= 23));
    }

    #[test]
    fn recreate_removes_every_old_pod_before_creating_new_ones() {
        let mut d = deployment(3);
        d.spec.strategy = Some(DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        });
        let mut world = World::new(d);
        world.run_until_complete(3, &mut |_| {});
        let v1 = world.current_replica_set().clone();
        set_image(&mut world, "web:2");

        let decision = world.decide_deployment();
        assert!(
            decision.create.is_none(),
            "no new ReplicaSet while old pods exist"
        );
        let [scaled] = decision.update.as_slice() else {
            panic!("the old ReplicaSet scales down: {decision:?}");
        };
        assert_eq!(scaled.spec.replicas, Some(0));

        // Old pods terminating but not gone: still wait.
        let mut counts = BTreeMap::new();
        counts.insert(
            v1.metadata.uid.clone().unwrap(),
            PodCounts {
                terminating: 1,
                ..PodCounts::default()
            },
        );
        let mut old = v1.clone();
        old.spec.replicas = Some(0);
        let waiting = super::decide(&world.deployment, &[old.clone()], &counts, at(100)).unwrap();
        assert!(waiting.create.is_none());
        let gone = super::decide(&world.deployment, &[old], &BTreeMap::new(), at(100)).unwrap();
        assert_eq!(gone.create.and_then(|rs| rs.spec.replicas), Some(3));

        world.run_until_complete(3, &mut |w| {
            let old = w.replica_set_named(v1.metadata.name.as_deref().unwrap());
            let new_pods = w.active_pods() - w.pods_of(old);
            assert!(
                new_pods == 0 || w.pods_of(old) == 0,
                "old and new pods side by side"
            );
        });
        assert_eq!(world.pods_of(world.current_replica_set()), 3);
    }

    #[test]
    fn paused_deployment_scales_but_does_not_roll_out() {
        let mut world = World::new(deployment(3));
        world.run_until_complete(3, &mut |_| {});
        world.edit(|spec| spec.paused = Some(true));
        set_image(&mut world, "web:2");
        world.edit(|spec| spec.replicas = Some(5));
        for _ in 0..5 {
            world.step(&mut |_| {});
            world.make_ready(5);
        }
        assert_eq!(world.replica_sets.len(), 1, "no rollout while paused");
        assert_eq!(world.replica_sets[0].spec.replicas, Some(5));
        assert_eq!(world.active_pods(), 5);
        assert_eq!(
            condition(&world, PROGRESSING).reason.as_deref(),
            Some("DeploymentPaused")
        );

        world.edit(|spec| spec.paused = Some(false));
        world.run_until_complete(5, &mut |_| {});
        assert_eq!(world.replica_sets.len(), 2);
        assert_eq!(world.pods_of(world.current_replica_set()), 5);
    }

    #[test]
    fn history_keeps_only_revision_history_limit_old_replica_sets() {
        let mut d = deployment(2);
        d.spec.revision_history_limit = Some(2);
        let mut world = World::new(d);
        world.run_until_complete(2, &mut |_| {});
        for version in 2..=5 {
            set_image(&mut world, &format!("web:{version}"));
            world.run_until_complete(2, &mut |_| {});
            // Cleanup waits for a step that finds the stored status complete.
            world.step(&mut |_| {});
        }
        let mut revisions: Vec<i64> = world.replica_sets.iter().map(revision).collect();
        revisions.sort();
        assert_eq!(
            revisions,
            [3, 4, 5],
            "the two newest old revisions and the current one"
        );
    }

    #[test]
    fn undo_revives_the_old_replica_set_under_a_new_revision() {
        let mut world = World::new(deployment(3));
        world.run_until_complete(3, &mut |_| {});
        let v1 = world.current_replica_set().metadata.name.clone();
        set_image(&mut world, "web:2");
        world.run_until_complete(3, &mut |_| {});

        let previous = template_of_revision(&world.replica_sets, 0).unwrap();
        assert_eq!(
            previous,
            template("web:1"),
            "the hash label is not part of it"
        );
        assert_eq!(
            template_of_revision(&world.replica_sets, 2),
            Some(template("web:2"))
        );
        assert_eq!(template_of_revision(&world.replica_sets, 7), None);

        world.edit(|spec| spec.template = previous);
        world.run_until_complete(3, &mut |_| {});
        assert_eq!(world.replica_sets.len(), 2, "no third ReplicaSet");
        let current = world.current_replica_set();
        assert_eq!(current.metadata.name, v1);
        assert_eq!(revision(current), 3);
        assert_eq!(
            annotation_of(&world.deployment, REVISION_ANNOTATION),
            Some("3")
        );
    }

    #[test]
    fn a_rollout_that_makes_no_progress_exceeds_its_deadline() {
        let mut d = deployment(2);
        d.spec.progress_deadline_seconds = Some(30);
        let mut world = World::new(d);
        world.step(&mut |_| {});
        assert_eq!(
            condition(&world, PROGRESSING).reason.as_deref(),
            Some("NewReplicaSetCreated")
        );
        world.step(&mut |_| {});
        assert_eq!(
            condition(&world, PROGRESSING).reason.as_deref(),
            Some("ReplicaSetUpdated"),
            "pods created count as progress"
        );
        let requeue = world.decide_deployment().requeue_after.unwrap();
        assert!(
            requeue <= Duration::from_secs(31) && requeue > Duration::from_secs(25),
            "{requeue:?}"
        );

        world.now += 40;
        world.step(&mut |_| {});
        let progressing = condition(&world, PROGRESSING);
        assert_eq!(progressing.status.as_deref(), Some("False"));
        assert_eq!(
            progressing.reason.as_deref(),
            Some("ProgressDeadlineExceeded")
        );
        assert_eq!(
            condition(&world, AVAILABLE).status.as_deref(),
            Some("False")
        );

        // Pods turning Ready is progress again.
        world.make_ready(2);
        world.run_until_complete(2, &mut |_| {});
        assert_eq!(
            condition(&world, PROGRESSING).reason.as_deref(),
            Some("NewReplicaSetAvailable")
        );
    }

    #[test]
    fn template_hash_is_deterministic_and_kubernetes_shaped() {
        let hash = pod_template_hash(&template("web:1"), None);
        assert_eq!(hash, pod_template_hash(&template("web:1"), None));
        assert_eq!(hash.len(), 10);
        assert!(hash
            .bytes()
            .all(|b| crate::controllers::SAFE_ALPHABET.contains(&b)));
        assert_ne!(hash, pod_template_hash(&template("web:2"), None));
        assert_ne!(hash, pod_template_hash(&template("web:1"), Some(1)));
    }

    #[test]
    fn a_name_taken_by_another_replica_set_moves_the_collision_count() {
        let d = deployment(2);
        let hash = pod_template_hash(&d.spec.template, None);
        let mut squatter = replica_set(&format!("web-{hash}"), "other", 0);
        squatter.spec.selector = crate::controllers::testing::selector(&[("app", "other")]);
        squatter.metadata.labels = Some(crate::controllers::testing::labels(&[("app", "other")]));
        let mut world = World::new(d);
        world.replica_sets.push(squatter);
        world.step(&mut |_| {});
        assert_eq!(
            world.deployment.status.as_ref().unwrap().collision_count,
            Some(1)
        );
        assert_eq!(
            world.replica_sets.len(),
            1,
            "nothing created on a collision"
        );
        world.run_until_complete(2, &mut |_| {});
        let expected = format!(
            "web-{}",
            pod_template_hash(&world.deployment.spec.template, Some(1))
        );
        assert_eq!(world.pods_of(world.replica_set_named(&expected)), 2);
    }

    #[test]
    fn adopts_orphan_replica_sets_and_releases_ones_that_stopped_matching() {
        let d = deployment(1);
        let mut orphan = replica_set("web-orphan", "rs-o", 0);
        orphan.spec.template = Some(template("web:0"));
        orphan.metadata.labels = Some(crate::controllers::testing::labels(&[("app", "web")]));
        let mut moved = replica_set("web-moved", "rs-m", 0);
        moved.metadata.labels = Some(crate::controllers::testing::labels(&[("app", "elsewhere")]));
        moved.metadata.owner_references =
            Some(vec![controller_reference::<Deployment>(&d.metadata)]);
        let decision = super::decide(&d, &[orphan, moved], &BTreeMap::new(), at(0)).unwrap();
        let by_name = |n: &str| decision.update.iter().find(|rs| name(rs) == n).unwrap();
        let owner = crate::controllers::controller_of(&by_name("web-orphan").metadata).unwrap();
        assert_eq!(owner.uid, "deploy-uid");
        assert_eq!(by_name("web-moved").metadata.owner_references, None);
        assert!(
            decision.create.is_some(),
            "the adopted set runs an old template"
        );
    }
}
