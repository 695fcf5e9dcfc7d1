//! Test fixtures: objects as the store would hold them, and a fake world that applies the
//! deciders' writes in memory, the way the async shells will through Raft.

use super::deployment::{self, DeploymentDecision};
use super::replicaset::{self, ReplicaSetDecision};
use super::{count_pods_by_owner, is_active, is_ready, name_suffix};
use berth_proto::k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, ReplicaSet, ReplicaSetSpec,
    RollingUpdateDeployment,
};
use berth_proto::k8s_openapi::api::core::v1::{
    Container, Pod, PodCondition, PodSpec, PodStatus, PodTemplateSpec,
};
use berth_proto::k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, Time,
};
use berth_proto::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use jiff::Timestamp;
use std::collections::BTreeMap;

/// `secs` seconds after an arbitrary fixed instant.
pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).unwrap()
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(&[("app", "web")])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "web".into(),
                image: Some(image.into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
    }
}

pub fn selector(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels(pairs)),
        match_expressions: None,
    }
}

pub fn replica_set(name: &str, uid: &str, replicas: i32) -> ReplicaSet {
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            generation: Some(1),
            ..ObjectMeta::default()
        },
        spec: ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: None,
            selector: selector(&[("app", "web")]),
            template: Some(template("web:1")),
        },
        status: None,
    }
}

pub fn deployment(replicas: i32) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("deploy-uid".into()),
            generation: Some(1),
            ..ObjectMeta::default()
        },
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: selector(&[("app", "web")]),
            template: template("web:1"),
            ..DeploymentSpec::default()
        },
        status: None,
    }
}

pub fn rolling(surge: IntOrString, unavailable: IntOrString) -> Option<DeploymentStrategy> {
    Some(DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(surge),
            max_unavailable: Some(unavailable),
        }),
    })
}

/// A pod with these labels, created at `created` seconds, pending and unscheduled.
pub fn pod(name: &str, pairs: &[(&str, &str)], created: i64) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("{name}-uid")),
            labels: Some(labels(pairs)),
            creation_timestamp: Some(Time(at(created))),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec::default()),
        status: Some(PodStatus {
            phase: Some("Pending".into()),
            ..PodStatus::default()
        }),
    }
}

/// Scheduled and running on a node, Ready since `since` if given.
pub fn running(mut pod: Pod, ready_since: Option<i64>) -> Pod {
    pod.spec.get_or_insert_with(PodSpec::default).node_name = Some("node-1".into());
    let status = pod.status.get_or_insert_with(PodStatus::default);
    status.phase = Some("Running".into());
    status.conditions = ready_since.map(|since| {
        vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            last_transition_time: Some(Time(at(since))),
            ..PodCondition::default()
        }]
    });
    pod
}

/// One Deployment, its ReplicaSets and their pods, in memory. Each step runs the deployment
/// decider, applies its writes, then every ReplicaSet's decider and applies those, as the
/// leader's shells will; the test decides when pods become Ready.
pub struct World {
    pub deployment: Deployment,
    pub replica_sets: Vec<ReplicaSet>,
    pub pods: Vec<Pod>,
    pub now: i64,
    next_id: u64,
}

impl World {
    pub fn new(deployment: Deployment) -> Self {
        World {
            deployment,
            replica_sets: Vec::new(),
            pods: Vec::new(),
            now: 0,
            next_id: 0,
        }
    }

    fn uid(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{}", self.next_id)
    }

    /// A spec change as `berth apply` makes it: generation moves.
    pub fn edit(&mut self, change: impl FnOnce(&mut DeploymentSpec)) {
        change(&mut self.deployment.spec);
        let generation = self.deployment.metadata.generation.unwrap_or(0);
        self.deployment.metadata.generation = Some(generation + 1);
    }

    pub fn decide_deployment(&self) -> DeploymentDecision {
        let min_ready = self.deployment.spec.min_ready_seconds.unwrap_or(0);
        let counts = count_pods_by_owner(&self.pods, min_ready, at(self.now));
        deployment::decide(&self.deployment, &self.replica_sets, &counts, at(self.now)).unwrap()
    }

    pub fn apply_deployment(&mut self, decision: DeploymentDecision) {
        if let Some(mut rs) = decision.create {
            rs.metadata.uid = Some(self.uid("rs"));
            rs.metadata.generation = Some(1);
            rs.metadata.creation_timestamp = Some(Time(at(self.now)));
            self.replica_sets.push(rs);
        }
        for rs in decision.update {
            let stored = self
                .replica_sets
                .iter_mut()
                .find(|s| s.metadata.name == rs.metadata.name)
                .unwrap();
            let generation = stored.metadata.generation.unwrap_or(0);
            let spec_changed = stored.spec != rs.spec;
            *stored = rs;
            if spec_changed {
                stored.metadata.generation = Some(generation + 1);
            }
        }
        self.replica_sets
            .retain(|rs| !decision.delete.contains(rs.metadata.name.as_ref().unwrap()));
        if let Some(updated) = decision.deployment {
            self.deployment.metadata.annotations = updated.metadata.annotations;
        }
        if let Some(status) = decision.status {
            self.deployment.status = Some(status);
        }
    }

    pub fn decide_replica_set(&self, i: usize) -> ReplicaSetDecision {
        replicaset::decide(&self.replica_sets[i], &self.pods, at(self.now))
    }

    pub fn apply_replica_set(&mut self, i: usize, decision: ReplicaSetDecision) {
        if let Some(create) = &decision.create {
            for _ in 0..create.count {
                self.next_id += 1;
                let mut pod = create.named(&name_suffix(self.next_id * 7919));
                pod.metadata.uid = Some(self.uid("pod"));
                pod.metadata.creation_timestamp = Some(Time(at(self.now)));
                pod.status = Some(PodStatus {
                    phase: Some("Pending".into()),
                    ..PodStatus::default()
                });
                self.pods.push(pod);
            }
        }
        self.pods
            .retain(|p| !decision.delete.contains(p.metadata.name.as_ref().unwrap()));
        for changed in decision.adopt.into_iter().chain(decision.release) {
            let stored = self
                .pods
                .iter_mut()
                .find(|p| p.metadata.name == changed.metadata.name)
                .unwrap();
            *stored = changed;
        }
        if let Some(status) = decision.status {
            self.replica_sets[i].status = Some(status);
        }
    }

    /// One round of the control loop; `check` sees the world after every write.
    pub fn step(&mut self, check: &mut dyn FnMut(&World)) {
        let decision = self.decide_deployment();
        self.apply_deployment(decision);
        check(self);
        for i in 0..self.replica_sets.len() {
            let decision = self.decide_replica_set(i);
            self.apply_replica_set(i, decision);
            check(self);
        }
        self.now += 1;
    }

    /// The agent's part: up to `n` pods (oldest first) start and turn Ready now.
    pub fn make_ready(&mut self, n: usize) {
        let now = self.now;
        let mut waiting: Vec<&mut Pod> = self.pods.iter_mut().filter(|p| !is_ready(p)).collect();
        waiting.sort_by_key(|p| p.metadata.creation_timestamp.clone());
        for pod in waiting.into_iter().take(n) {
            *pod = running(pod.clone(), Some(now));
        }
    }

    /// Steps, making `per_step` pods Ready each time, until the rollout is complete.
    pub fn run_until_complete(&mut self, per_step: usize, check: &mut dyn FnMut(&World)) {
        for _ in 0..500 {
            self.step(check);
            if self.is_complete() {
                return;
            }
            self.make_ready(per_step);
        }
        panic!("rollout did not complete: {:#?}", self.deployment.status);
    }

    pub fn is_complete(&self) -> bool {
        let replicas = self.deployment.spec.replicas.unwrap_or(1);
        let status = self.deployment.status.clone().unwrap_or_default();
        status.observed_generation == self.deployment.metadata.generation
            && status.updated_replicas == Some(replicas)
            && status.replicas == Some(replicas)
            && status.available_replicas == Some(replicas)
            && self.active_pods() == replicas as usize
    }

    pub fn active_pods(&self) -> usize {
        self.pods.iter().filter(|p| is_active(p)).count()
    }

    pub fn ready_pods(&self) -> usize {
        self.pods
            .iter()
            .filter(|p| is_active(p) && is_ready(p))
            .count()
    }

    pub fn replica_set_named(&self, name: &str) -> &ReplicaSet {
        self.replica_sets
            .iter()
            .find(|rs| rs.metadata.name.as_deref() == Some(name))
            .unwrap()
    }

    /// The ReplicaSet running the Deployment's current template.
    pub fn current_replica_set(&self) -> &ReplicaSet {
        let image = self
            .deployment
            .spec
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .clone();
        self.replica_sets
            .iter()
            .find(|rs| {
                rs.spec
                    .template
                    .as_ref()
                    .unwrap()
                    .spec
                    .as_ref()
                    .unwrap()
                    .containers[0]
                    .image
                    == image
            })
            .unwrap()
    }

    /// Pods controlled by the ReplicaSet with this uid.
    pub fn pods_of(&self, rs: &ReplicaSet) -> usize {
        self.pods
            .iter()
            .filter(|p| {
                super::controller_of(&p.metadata).map(|r| &r.uid) == rs.metadata.uid.as_ref()
            })
            .count()
    }
}
