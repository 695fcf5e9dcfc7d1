//! The node's Events (kubelet's): pulls, container starts, kills, back-offs and probe
//! failures, recorded by the pod workers and sent to the control plane in batches.
//!
//! ```text
//!  pod worker ── ContainerEvents::pulled/started/... ──▶ bounded queue ──▶ flusher: repeats
//!  (never waits; a full queue drops)                                      aggregated, kubelet's
//!                                                                         limit (50/s, burst 100),
//!                                                                         one RecordEvents per batch
//! ```
//!
//! The queue and the aggregation of repeats are [`berth_proto::events`]'; this module adds
//! the sink and the pod/container each event is about.

use super::api::ApiConnection;
use super::images::PullFailure;
use super::NodeContext;
use crate::probe::ProbeFailure;
use berth_proto::events::{EventQueue, EventRecorder, RateLimit};
use berth_proto::Kind;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use std::time::Duration;

/// Occurrences waiting to be sent; more are dropped.
const QUEUE: usize = 2048;
/// How long the flusher gathers occurrences into one call.
const WINDOW: Duration = Duration::from_millis(200);
/// The most Events one call carries.
const MAX_BATCH: usize = 256;

/// Starts the node's flusher; events are recorded as `kubelet` on `node`.
pub(super) fn start(api: ApiConnection, node: &str) -> EventRecorder {
    // kubelet's event limits (--event-qps 50 --event-burst 100).
    let (recorder, queue) = berth_proto::events::channel(QUEUE, "kubelet", RateLimit::KUBELET);
    tokio::spawn(flush(api, queue));
    recorder.with_host(node)
}

async fn flush(mut api: ApiConnection, mut queue: EventQueue) {
    while let Some(events) = queue.next_batch(WINDOW, MAX_BATCH).await {
        let dropped = queue.newly_dropped();
        if dropped.any() {
            let (queue_full, over_rate) = (dropped.queue_full, dropped.over_rate);
            tracing::warn!(queue_full, over_rate, "events dropped");
        }
        match api.record_events(&events).await {
            Ok(errors) => {
                for error in errors.into_iter().flatten() {
                    tracing::debug!("event not recorded: {error}");
                }
            }
            Err(e) => tracing::warn!(events = events.len(), "recording events: {e}"),
        }
    }
}

/// Events about one container of a pod (`involvedObject.fieldPath` names the container, as
/// kubelet's do), with kubelet's reasons and messages.
#[derive(Clone)]
pub struct ContainerEvents {
    recorder: EventRecorder,
    involved: ObjectReference,
    container: String,
}

impl ContainerEvents {
    pub fn new(context: &NodeContext, pod: &Pod, container: &str) -> ContainerEvents {
        let mut involved = berth_proto::events::reference(Kind::Pod, &pod.metadata);
        involved.field_path = Some(format!("spec.containers{{{container}}}"));
        ContainerEvents {
            recorder: context.events.clone(),
            involved,
            container: container.to_string(),
        }
    }

    fn normal(&self, reason: &str, message: String) {
        self.recorder.normal(&self.involved, reason, message);
    }

    fn warning(&self, reason: &str, message: String) {
        self.recorder.warning(&self.involved, reason, message);
    }

    pub fn pulling(&self, image: &str) {
        self.normal("Pulling", format!("Pulling image {image:?}"));
    }

    /// `pulled_in`: how long the download took; `None` when the node had the image.
    pub fn pulled(&self, image: &str, pulled_in: Option<Duration>) {
        self.normal("Pulled", pulled_message(image, pulled_in));
    }

    /// The pull failed: what went wrong, then the container's waiting reason.
    pub fn pull_failed(&self, image: &str, failure: &PullFailure) {
        let message = format!("Failed to pull image {image:?}: {}", failure.message);
        self.warning("Failed", message);
        self.warning("Failed", format!("Error: {}", failure.reason));
    }

    pub fn pull_back_off(&self, image: &str) {
        self.normal("BackOff", format!("Back-off pulling image {image:?}"));
    }

    /// The container could not be made or started (its config, the runtime).
    pub fn failed(&self, error: impl std::fmt::Display) {
        self.warning("Failed", format!("Error: {error}"));
    }

    /// Made and started: the runtime does both in one step.
    pub fn started(&self) {
        self.normal("Created", format!("Created container: {}", self.container));
        self.normal("Started", format!("Started container {}", self.container));
    }

    /// Its restart waits out a back-off.
    pub fn back_off(&self) {
        let (name, namespace, uid) = (
            self.involved.name.as_deref().unwrap_or_default(),
            self.involved.namespace.as_deref().unwrap_or_default(),
            self.involved.uid.as_deref().unwrap_or_default(),
        );
        let message = format!(
            "Back-off restarting failed container {} in pod {name}_{namespace}({uid})",
            self.container
        );
        self.warning("BackOff", message);
    }

    /// Stopped because its pod goes.
    pub fn stopping(&self) {
        self.normal("Killing", format!("Stopping container {}", self.container));
    }

    /// Killed because a probe (`liveness`, `startup`) failed.
    pub fn probe_kill(&self, probe: &str) {
        let message = format!(
            "Container {} failed {probe} probe, will be restarted",
            self.container
        );
        self.normal("Killing", message);
    }

    /// One failed check of a probe (`Liveness`, `Readiness`, `Startup`).
    pub fn unhealthy(&self, probe: impl std::fmt::Debug, failure: &ProbeFailure) {
        self.warning("Unhealthy", format!("{probe:?} probe failed: {failure}"));
    }
}

/// kubelet's Pulled message: how long the pull took, or that the node had the image.
pub fn pulled_message(image: &str, pulled_in: Option<Duration>) -> String {
    match pulled_in {
        Some(took) => format!(
            "Successfully pulled image {image:?} in {:.3}s",
            took.as_secs_f64()
        ),
        None => format!("Container image {image:?} already present on machine"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulled_messages_read_like_kubelets() {
        assert_eq!(
            pulled_message("web:v1", Some(Duration::from_millis(1234))),
            "Successfully pulled image \"web:v1\" in 1.234s"
        );
        assert_eq!(
            pulled_message("web:v1", None),
            "Container image \"web:v1\" already present on machine"
        );
    }
}
