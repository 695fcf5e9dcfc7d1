//! Events the control plane records, and their expiry.
//!
//! ```text
//!  scheduler, controllers, node lifecycle
//!    └─ EventRecorder::normal/warning ──▶ bounded queue ──▶ flusher (repeats aggregated,
//!       (never waits; a full queue drops)                    │  over 100/s burst 1000 dropped)
//!                                                            └─ leads? one Command::Batch,
//!                                                               an Apply per Event ──▶ Proposer
//!  agents ── RecordEvents (batched) ──▶ api::events ──▶ one Command::Batch
//!  leader, every ttl/4 (100 ms..60 s): list Events ──▶ expiry::expired() ──▶ one Delete batch
//! ```
//!
//! The queue, naming and repeat aggregation are shared with the agents
//! ([`berth_proto::events`]). Events are kept for `--event-ttl` (kube-apiserver's default, one
//! hour) after they last happened; the leader deletes older ones in batches of at most
//! [`expiry::MAX_DELETES`], each delete conditional on the version it saw, so an event that
//! happened again meanwhile stays. The loops that watch the store (scheduler, controllers,
//! node lifecycle) filter on the kinds they act on, so event writes wake none of them.

pub mod expiry;

use crate::raft::proposer::Proposer;
use crate::raft::BerthRaft;
use crate::store::{Command, CommandResult};
pub use berth_proto::events::{reference, EventRecorder};
use berth_proto::events::{EventQueue, RateLimit};
use openraft::ServerState;
use std::time::Duration;

/// Occurrences waiting for the flusher; more are dropped.
const QUEUE: usize = 4096;
/// How long the flusher gathers occurrences into one batch.
const WINDOW: Duration = Duration::from_millis(100);
/// The most Events one flush writes.
const MAX_FLUSH: usize = 512;
/// The control plane's event budget: a Deployment of a few hundred replicas is recorded in
/// full (a create and a bind each), a storm of thousands is sampled. Measured with
/// bench/scheduler.rs (10,000 pods, 5,000 nodes): unlimited events cost about a quarter of the
/// bind throughput.
const RATE: RateLimit = RateLimit {
    per_second: 100.0,
    burst: 1000,
};

/// Starts the flusher of the control plane's events; it ends when every recorder is gone.
pub fn start(raft: BerthRaft, proposer: Proposer) -> EventRecorder {
    let (recorder, queue) = berth_proto::events::channel(QUEUE, "berth-control-plane", RATE);
    tokio::spawn(flush(raft, proposer, queue));
    recorder
}

async fn flush(raft: BerthRaft, proposer: Proposer, mut queue: EventQueue) {
    while let Some(events) = queue.next_batch(WINDOW, MAX_FLUSH).await {
        let dropped = queue.newly_dropped();
        if dropped.any() {
            let (queue_full, over_rate) = (dropped.queue_full, dropped.over_rate);
            tracing::warn!(queue_full, over_rate, "events dropped");
        }
        let state = raft.metrics().borrow().state;
        match state {
            ServerState::Leader => {}
            ServerState::Shutdown => return,
            _ => {
                tracing::debug!(events = events.len(), "not leading: events dropped");
                continue;
            }
        }
        let now = jiff::Timestamp::now().to_string();
        let commands: Vec<Command> = events
            .iter()
            .filter_map(|event| serde_json::to_value(event).ok())
            .map(|object| Command::Apply {
                object,
                uid: uuid::Uuid::new_v4().to_string(),
                now: now.clone(),
            })
            .collect();
        let written = commands.len();
        match proposer.propose(Command::Batch(commands)).await {
            Ok(CommandResult::Batch(results)) => {
                for result in results {
                    if let CommandResult::Failed(error) = result {
                        tracing::debug!("event not written: {error}");
                    }
                }
                tracing::trace!(written, "events flushed");
            }
            Ok(other) => tracing::debug!("events answered with {other:?}"),
            Err(status) => tracing::debug!("events not written: {}", status.message()),
        }
    }
}

/// Events about writes a pass proposes, recorded once the write they describe is applied: a
/// write that fails (the store moved on) is decided again by the next pass, and its event
/// with it.
#[derive(Default)]
pub struct PendingEvents(Vec<Pending>);

struct Pending {
    /// The command's index in the proposed batch.
    command: usize,
    component: &'static str,
    involved: berth_proto::k8s_openapi::api::core::v1::ObjectReference,
    reason: &'static str,
    message: String,
}

impl PendingEvents {
    /// A Normal event from `component`, due when command `command` of the batch is applied.
    pub fn after(
        &mut self,
        command: usize,
        component: &'static str,
        involved: berth_proto::k8s_openapi::api::core::v1::ObjectReference,
        reason: &'static str,
        message: String,
    ) {
        self.0.push(Pending {
            command,
            component,
            involved,
            reason,
            message,
        });
    }

    /// Records the events whose command did not fail.
    pub fn record(self, recorder: &EventRecorder, results: &[CommandResult]) {
        for pending in self.0 {
            if matches!(
                results.get(pending.command),
                None | Some(CommandResult::Failed(_))
            ) {
                continue;
            }
            recorder.with_component(pending.component).normal(
                &pending.involved,
                pending.reason,
                pending.message,
            );
        }
    }
}
