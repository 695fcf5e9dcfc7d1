//! The ReplicaSet decider: keeps `spec.replicas` pods of the ReplicaSet's template.
//!
//! ```text
//!   ReplicaSet + pods of its namespace + now
//!      │ claim: owned (ours, matching) · adopt (orphans matching) · release (ours, not matching)
//!      │ count: active = owned + adopted, neither terminating nor finished
//!      ▼
//!   create (replicas − active) from the template │ delete (active − replicas), worst first
//!   status: replicas, fullyLabeled, ready, available (minReadySeconds), observedGeneration
//! ```
//!
//! Pods to delete are ranked as Kubernetes ranks them, so a scale-down takes the pods that
//! serve least: unscheduled, then Pending before Unknown before Running, not Ready, Ready for
//! the shortest time, restarted most, created last.

use super::{
    adopted, available_in, claim, controller_reference, is_active, is_ready, released, Claim,
};
use berth_proto::k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use berth_proto::k8s_openapi::api::core::v1::Pod;
use berth_proto::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use jiff::Timestamp;
use std::cmp::Reverse;
use std::time::Duration;

/// At most this many pods are created or deleted in one step (Kubernetes' burstReplicas): a
/// scale to 10,000 goes out in Raft entries of bounded size.
pub const MAX_BURST: usize = 500;

/// `count` pods to create, all alike: `pod` has `generateName` (`<replicaset>-`) but no name.
#[derive(Debug, Clone, PartialEq)]
pub struct PodsToCreate {
    pub count: usize,
    pub pod: Pod,
}

impl PodsToCreate {
    /// One of the pods, named `<replicaset>-<suffix>` (see [`super::name_suffix`]).
    pub fn named(&self, suffix: &str) -> Pod {
        let mut pod = self.pod.clone();
        let prefix = pod.metadata.generate_name.clone().unwrap_or_default();
        pod.metadata.name = Some(format!("{prefix}{suffix}"));
        pod
    }
}

/// Every write one reconcile step of a ReplicaSet needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicaSetDecision {
    pub create: Option<PodsToCreate>,
    /// Names of pods to delete, the first the one that serves least.
    pub delete: Vec<String>,
    /// Orphans matching the selector, with this ReplicaSet's controller reference added
    /// (resourceVersion kept: write them conditionally).
    pub adopt: Vec<Pod>,
    /// Pods this ReplicaSet controlled whose labels no longer match, without its reference.
    pub release: Vec<Pod>,
    /// The new status, when it differs from the stored one.
    pub status: Option<ReplicaSetStatus>,
    /// Run again after this long: a Ready pod becomes available then (minReadySeconds).
    pub requeue_after: Option<Duration>,
}

impl ReplicaSetDecision {
    /// Whether the step writes nothing.
    pub fn is_empty(&self) -> bool {
        self.create.is_none()
            && self.delete.is_empty()
            && self.adopt.is_empty()
            && self.release.is_empty()
            && self.status.is_none()
    }
}

/// Decides one step for `replica_set`, given the pods of its namespace (any owner) and now.
pub fn decide(replica_set: &ReplicaSet, pods: &[Pod], now: Timestamp) -> ReplicaSetDecision {
    let meta = &replica_set.metadata;
    let spec = &replica_set.spec;
    let mut decision = ReplicaSetDecision::default();
    let mut owned: Vec<&Pod> = Vec::new();
    for pod in pods {
        match claim(meta, &spec.selector, &pod.metadata) {
            Claim::Owned => owned.push(pod),
            Claim::Adopt => {
                let mut pod = pod.clone();
                pod.metadata = adopted::<ReplicaSet>(meta, pod.metadata);
                decision.adopt.push(pod);
            }
            Claim::Release => {
                let mut pod = pod.clone();
                pod.metadata = released(meta, pod.metadata);
                decision.release.push(pod);
            }
            Claim::Ignore => {}
        }
    }
    // Adopted pods count at once: they are ours as soon as the adoption commits.
    let mut active: Vec<&Pod> = owned
        .into_iter()
        .chain(&decision.adopt)
        .filter(|p| is_active(p))
        .collect();

    let min_ready_seconds = spec.min_ready_seconds.unwrap_or(0);
    let status = status(replica_set, &active, now);
    if replica_set.status.as_ref() != Some(&status) {
        decision.status = Some(status);
    }
    decision.requeue_after = active
        .iter()
        .filter_map(|p| available_in(p, min_ready_seconds, now))
        .filter(|wait| !wait.is_zero())
        .min();

    if meta.deletion_timestamp.is_some() {
        return decision;
    }
    let want = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    if active.len() < want {
        decision.create = Some(PodsToCreate {
            count: (want - active.len()).min(MAX_BURST),
            pod: pod_from_template(replica_set),
        });
    } else if active.len() > want {
        active.sort_by_cached_key(|p| deletion_rank(p));
        decision.delete = active
            .iter()
            .take((active.len() - want).min(MAX_BURST))
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect();
    }
    decision
}

/// A pod of this ReplicaSet, before the shell names it.
fn pod_from_template(replica_set: &ReplicaSet) -> Pod {
    let template = replica_set.spec.template.clone().unwrap_or_default();
    let template_meta = template.metadata.unwrap_or_default();
    let name = replica_set.metadata.name.as_deref().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: replica_set.metadata.namespace.clone(),
            labels: template_meta.labels,
            annotations: template_meta.annotations,
            owner_references: Some(vec![controller_reference::<ReplicaSet>(
                &replica_set.metadata,
            )]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Sorts first the pod whose deletion hurts least (Kubernetes' ActivePods ordering).
fn deletion_rank(pod: &Pod) -> impl Ord {
    let status = pod.status.as_ref();
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = match status.and_then(|s| s.phase.as_deref()) {
        Some("Running") => 2,
        Some("Unknown") => 1,
        _ => 0,
    };
    let restarts: i64 = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| i64::from(c.restart_count))
        .sum();
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(Timestamp::MAX, |t| t.0);
    (
        scheduled,
        phase,
        is_ready(pod),
        Reverse(super::ready_since(pod)),
        Reverse(restarts),
        Reverse(created),
        pod.metadata.name.clone(),
    )
}

fn status(replica_set: &ReplicaSet, active: &[&Pod], now: Timestamp) -> ReplicaSetStatus {
    let min_ready_seconds = replica_set.spec.min_ready_seconds.unwrap_or(0);
    let template_labels = replica_set
        .spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = |pod: &Pod| {
        let labels = pod.metadata.labels.as_ref();
        template_labels
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    };
    let count = |f: &dyn Fn(&Pod) -> bool| active.iter().filter(|p| f(p)).count() as i32;
    let previous = replica_set.status.clone().unwrap_or_default();
    ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(count(&fully_labeled)),
        ready_replicas: Some(count(&is_ready)),
        available_replicas: Some(count(&|p| {
            available_in(p, min_ready_seconds, now) == Some(Duration::ZERO)
        })),
        observed_generation: replica_set.metadata.generation,
        conditions: previous.conditions,
        terminating_replicas: previous.terminating_replicas,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::controller_of;
    use crate::controllers::testing::{at, pod, replica_set, running};
    use berth_proto::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn owned(mut pod: Pod, rs: &ReplicaSet) -> Pod {
        pod.metadata.owner_references =
            Some(vec![controller_reference::<ReplicaSet>(&rs.metadata)]);
        pod
    }

    #[test]
    fn creates_missing_pods_from_the_template_owned_by_the_replica_set() {
        let rs = replica_set("web-abc", "rs-1", 3);
        let existing = owned(pod("web-abc-aaaaa", &[("app", "web")], 0), &rs);
        let decision = decide(&rs, &[existing], at(10));

        let create = decision.create.expect("two pods are missing");
        assert_eq!(create.count, 2);
        assert_eq!(
            create.pod.metadata.generate_name.as_deref(),
            Some("web-abc-")
        );
        assert_eq!(create.pod.metadata.name, None);
        assert_eq!(
            create.pod.metadata.labels,
            rs.spec
                .template
                .as_ref()
                .unwrap()
                .metadata
                .as_ref()
                .unwrap()
                .labels
        );
        let owner = controller_of(&create.pod.metadata).unwrap();
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("ReplicaSet", "rs-1")
        );
        assert_eq!(owner.block_owner_deletion, Some(true));
        let named = create.named("x2k9q");
        assert_eq!(named.metadata.name.as_deref(), Some("web-abc-x2k9q"));
        assert!(decision.delete.is_empty());
    }

    #[test]
    fn deletes_unscheduled_then_not_ready_then_newest_first() {
        let rs = replica_set("web-abc", "rs-1", 1);
        let web = &[("app", "web")];
        let pods = vec![
            owned(running(pod("old-ready", web, 1), Some(5)), &rs),
            owned(running(pod("new-ready", web, 3), Some(6)), &rs),
            owned(running(pod("not-ready", web, 2), None), &rs),
            owned(pod("unscheduled", web, 0), &rs),
            owned(running(pod("newest-ready", web, 4), Some(5)), &rs),
        ];
        let decision = decide(&rs, &pods, at(10));
        assert_eq!(
            decision.delete,
            ["unscheduled", "not-ready", "new-ready", "newest-ready"],
            "the pod Ready longest stays"
        );
        assert_eq!(decision.create, None);
    }

    #[test]
    fn terminating_and_finished_pods_do_not_count() {
        let rs = replica_set("web-abc", "rs-1", 2);
        let web = &[("app", "web")];
        let mut terminating = owned(running(pod("going", web, 0), Some(0)), &rs);
        terminating.metadata.deletion_timestamp = Some(Time(at(5)));
        let mut evicted = owned(pod("evicted", web, 0), &rs);
        evicted.status.as_mut().unwrap().phase = Some("Failed".into());
        let live = owned(running(pod("live", web, 0), Some(0)), &rs);
        let decision = decide(&rs, &[terminating, evicted, live], at(10));
        assert_eq!(decision.create.map(|c| c.count), Some(1));
        assert!(
            decision.delete.is_empty(),
            "nothing counted is beyond replicas"
        );
        assert_eq!(decision.status.unwrap().replicas, 1);
    }

    #[test]
    fn adopts_matching_orphans_and_releases_pods_that_stopped_matching() {
        let rs = replica_set("web-abc", "rs-1", 2);
        let other = replica_set("other", "rs-2", 1);
        let pods = vec![
            pod("orphan", &[("app", "web")], 0),
            pod("stranger", &[("app", "db")], 0),
            owned(pod("theirs", &[("app", "web")], 0), &other),
            owned(pod("relabelled", &[("app", "debug")], 0), &rs),
        ];
        let decision = decide(&rs, &pods, at(10));

        let [adopted] = decision.adopt.as_slice() else {
            panic!("one orphan to adopt: {:?}", decision.adopt);
        };
        assert_eq!(adopted.metadata.name.as_deref(), Some("orphan"));
        assert_eq!(controller_of(&adopted.metadata).unwrap().uid, "rs-1");
        let [released] = decision.release.as_slice() else {
            panic!("one pod to release: {:?}", decision.release);
        };
        assert_eq!(released.metadata.name.as_deref(), Some("relabelled"));
        assert_eq!(released.metadata.owner_references, None);
        // The adopted orphan counts; the other controller's pod does not.
        assert_eq!(decision.create.map(|c| c.count), Some(1));
        assert_eq!(decision.status.unwrap().replicas, 1);
    }

    #[test]
    fn status_counts_ready_available_after_min_ready_seconds_and_fully_labeled() {
        let mut rs = replica_set("web-abc", "rs-1", 3);
        rs.spec.min_ready_seconds = Some(10);
        rs.metadata.generation = Some(4);
        let pods = vec![
            owned(running(pod("a", &[("app", "web")], 0), Some(0)), &rs),
            owned(running(pod("b", &[("app", "web")], 0), Some(15)), &rs),
            owned(
                running(pod("c", &[("app", "web"), ("x", "y")], 0), None),
                &rs,
            ),
        ];
        let decision = decide(&rs, &pods, at(20));
        let status = decision.status.unwrap();
        assert_eq!(status.replicas, 3);
        assert_eq!(status.ready_replicas, Some(2));
        assert_eq!(
            status.available_replicas,
            Some(1),
            "b has been Ready 5s of 10"
        );
        assert_eq!(status.fully_labeled_replicas, Some(3));
        assert_eq!(status.observed_generation, Some(4));
        assert_eq!(decision.requeue_after, Some(Duration::from_secs(5)));

        rs.status = Some(status);
        let again = decide(&rs, &pods, at(20));
        assert!(
            again.is_empty(),
            "a settled ReplicaSet writes nothing: {again:?}"
        );
    }

    #[test]
    fn a_replica_set_being_deleted_creates_and_adopts_nothing() {
        let mut rs = replica_set("web-abc", "rs-1", 3);
        rs.metadata.deletion_timestamp = Some(Time(at(1)));
        let decision = decide(&rs, &[pod("orphan", &[("app", "web")], 0)], at(10));
        assert_eq!(decision.create, None);
        assert!(decision.adopt.is_empty());
    }

    #[test]
    fn creates_and_deletes_at_most_a_burst_per_step() {
        let rs = replica_set("web-abc", "rs-1", 2000);
        assert_eq!(decide(&rs, &[], at(0)).create.unwrap().count, MAX_BURST);
    }
}
