//! Group commit for client writes. openraft 0.9 puts each proposal in its own log entry and
//! makes it durable before taking the next, so one write per fsync would be the ceiling. The
//! proposer queues the commands that arrive while a proposal is in flight and proposes them
//! together as one [`Command::Batch`] entry: one fsync for all of them, each with its own
//! result. A lone client sees no extra wait: its command goes out at once, alone.
//!
//! Each command is serialized once, by the task that proposes it (in parallel, not in the
//! proposing loop), and a batch is built from those bytes (`EncodedCommand::batch`).
//!
//! One proposal in flight per member, not more: measured with 2 and 4 in flight (store-bench,
//! 16 and 256 clients), smaller batches cost more rounds (syncs, AppendEntries, applies) than
//! the shorter queueing won back, on a machine the members share.
//!
//! A result comes back once applied, which may be before the change is visible in this
//! member's store (see state_machine.rs). [`Proposer::propose`] waits for that, for the
//! leader's loops, which read their cache or the store next; [`Proposer::propose_to_answer`]
//! does not, for the API, which only answers its client (whose later reads wait for it).
//!
//! Followers forward their batches to the leader, where they join the leader's own queue, so
//! that the whole cluster's concurrent writes share entries. A forwarded batch is never
//! forwarded again (no loops while leadership moves): the follower's clients retry instead.

use super::leader::LeaderLink;
use super::state_machine::Visible;
use super::{BerthRaft, EncodedCommand};
use crate::store::{Command, CommandResult};
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

/// The most commands one entry carries.
const MAX_BATCH: usize = 512;

/// How long one proposal may take before its clients are told the outcome is unknown. Keeps
/// one stuck proposal (a leader cut off from its quorum, a forward to a member that stopped
/// answering) from holding up every later write of this member.
pub const PROPOSAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A result, and the index of the entry that carried it when proposed here (not forwarded).
type Proposed = Result<(CommandResult, Option<u64>), Status>;
type Reply = oneshot::Sender<Proposed>;

/// Where a queued command came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A client of this member: forwarded to the leader if this member does not lead.
    Client,
    /// Forwarded here by a follower: proposed here or failed.
    Follower,
}

#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::UnboundedSender<(EncodedCommand, Origin, Reply)>,
    visible: Visible,
}

impl Proposer {
    /// Starts the proposing task; it ends when every `Proposer` handle is dropped.
    pub fn start(raft: BerthRaft, leader: LeaderLink, visible: Visible) -> Proposer {
        let (queue, commands) = mpsc::unbounded_channel();
        tokio::spawn(propose_loop(raft, leader, commands));
        Proposer { queue, visible }
    }

    /// Proposes one command and waits for its result, and, when proposed here, until this
    /// member's store shows it.
    pub async fn propose(&self, command: Command) -> Result<CommandResult, Status> {
        let (result, index) = self
            .enqueue(EncodedCommand::new(&command), Origin::Client)
            .await?;
        if let Some(index) = index {
            self.visible
                .reached(index)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
        }
        Ok(result)
    }

    /// Proposes one command and waits for its result, to answer a client with: this
    /// member's stale reads and watches may show it a moment later.
    pub async fn propose_to_answer(&self, command: Command) -> Result<CommandResult, Status> {
        super::stamp("prop.enter", 0);
        let r = self
            .enqueue(EncodedCommand::new(&command), Origin::Client)
            .await;
        super::stamp("prop.reply", 0);
        r.map(|(result, _)| result)
    }

    /// Proposes a follower's batch here; fails if this member no longer leads.
    pub async fn propose_forwarded(
        &self,
        command: EncodedCommand,
    ) -> Result<CommandResult, Status> {
        self.enqueue(command, Origin::Follower)
            .await
            .map(|(result, _)| result)
    }

    async fn enqueue(&self, command: EncodedCommand, origin: Origin) -> Proposed {
        let (reply, result) = oneshot::channel();
        self.queue
            .send((command, origin, reply))
            .map_err(|_| Status::unavailable("the member is shutting down"))?;
        result
            .await
            .map_err(|_| Status::unavailable("the member is shutting down"))?
    }
}

/// Proposes here if this member leads, else forwards to the leader.
async fn propose_or_forward(
    raft: &BerthRaft,
    leader: &LeaderLink,
    proposal: EncodedCommand,
    may_forward: bool,
) -> Proposed {
    // A follower that knows the leader forwards without trying: a proposal there would only
    // come back as ForwardToLeader.
    let metrics = raft.metrics().borrow().clone();
    if may_forward && metrics.current_leader != Some(metrics.id) {
        let node = metrics.current_leader.and_then(|id| {
            metrics
                .membership_config
                .membership()
                .get_node(&id)
                .cloned()
        });
        if let Some(node) = node {
            return leader
                .forward(&node.addr, proposal)
                .await
                .map(|result| (result, None));
        }
    }
    super::stamp("prop.write", 0);
    let r = raft.client_write(proposal).await;
    super::stamp(
        "prop.written",
        r.as_ref().map(|r| r.log_id.index).unwrap_or(0),
    );
    match r {
        Ok(response) => Ok((response.data, Some(response.log_id.index))),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) if !may_forward => {
            Err(Status::unavailable("this member no longer leads; retry"))
        }
        Err(error) => Err(crate::api::errors::write_status(error)),
    }
}

async fn propose_loop(
    raft: BerthRaft,
    leader: LeaderLink,
    mut commands: mpsc::UnboundedReceiver<(EncodedCommand, Origin, Reply)>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while commands.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let may_forward = batch.iter().all(|(_, origin, _)| *origin == Origin::Client);
        let (mut commands_of_batch, replies): (Vec<EncodedCommand>, Vec<Reply>) = batch
            .drain(..)
            .map(|(command, _, reply)| (command, reply))
            .unzip();
        let proposal = if commands_of_batch.len() == 1 {
            commands_of_batch.pop().expect("one command")
        } else {
            EncodedCommand::batch(&commands_of_batch)
        };
        tracing::trace!(commands = replies.len(), "proposing");
        let proposed = tokio::time::timeout(
            PROPOSAL_TIMEOUT,
            propose_or_forward(&raft, &leader, proposal, may_forward),
        );
        let outcome = proposed.await.unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(
                "the write did not complete in time; it may still be applied",
            ))
        });
        match outcome {
            Ok((CommandResult::Batch(results), index)) if replies.len() > 1 => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok((result, index)));
                }
            }
            Ok(proposed) => {
                for reply in replies {
                    let _ = reply.send(Ok(proposed.clone()));
                }
            }
            Err(status) => {
                for reply in replies {
                    let _ = reply.send(Err(status.clone()));
                }
            }
        }
    }
}
