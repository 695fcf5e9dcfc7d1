//! Reaching the leader from a follower: client commands are forwarded to it, and a
//! linearizable read on a follower first asks it for a read index.

use super::state_machine::Visible;
use super::{wire, BerthRaft, EncodedCommand};
use crate::store::{Command, CommandResult};
use berth_proto::pb::raft_client::RaftClient;
use berth_proto::pb::RaftMessage;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tonic::transport::Channel;
use tonic::Status;

/// Connections to the members that lead (or led) the cluster, by address: gRPC for read
/// indexes, a stream connection (`wire`) for forwarded writes.
#[derive(Clone, Default)]
pub struct LeaderLink {
    clients: Arc<Mutex<HashMap<String, RaftClient<Channel>>>>,
    streams: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<wire::Connection>>>>>,
}

impl LeaderLink {
    fn client(&self, addr: &str) -> Result<RaftClient<Channel>, Status> {
        let mut clients = self.clients.lock().expect("leader link lock");
        if let Some(client) = clients.get(addr) {
            return Ok(client.clone());
        }
        let channel = berth_proto::transport::connect_lazy(addr)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let client = RaftClient::new(channel).max_decoding_message_size(256 << 20);
        clients.insert(addr.to_string(), client.clone());
        Ok(client)
    }

    fn stream(&self, addr: &str) -> Arc<tokio::sync::Mutex<wire::Connection>> {
        let mut streams = self.streams.lock().expect("leader link lock");
        streams
            .entry(addr.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(wire::Connection::new(addr))))
            .clone()
    }

    /// Has the leader at `addr` propose `command`; its result once applied there. The
    /// command's JSON is the message, as it is. (The caller bounds the wait: the proposer's
    /// `PROPOSAL_TIMEOUT`.)
    pub async fn forward(
        &self,
        addr: &str,
        command: EncodedCommand,
    ) -> Result<CommandResult, Status> {
        let stream = self.stream(addr);
        let reply = stream
            .lock()
            .await
            .call(wire::Kind::Forward, command.as_bytes())
            .await
            .map_err(|e| Status::unavailable(format!("forwarding to the leader: {e}")))?;
        let result: Result<CommandResult, String> =
            serde_json::from_slice(&reply).map_err(|e| Status::internal(e.to_string()))?;
        result.map_err(Status::unavailable)
    }

    /// The read index of the leader at `addr`: once this member has applied up to it, a local
    /// read is linearizable.
    pub async fn read_index(&self, addr: &str) -> Result<u64, Status> {
        let reply = self
            .client(addr)?
            .read_index(RaftMessage { data: Vec::new() })
            .await?
            .into_inner();
        let index: Result<u64, String> =
            serde_json::from_slice(&reply.data).map_err(|e| Status::internal(e.to_string()))?;
        index.map_err(Status::unavailable)
    }
}

/// Why a read index could not be had here.
#[derive(Debug, thiserror::Error)]
pub enum ReadIndexError {
    /// This member does not lead; the leader, if known.
    #[error("this member does not lead")]
    NotLeader(Option<openraft::BasicNode>),
    #[error("{0}")]
    Failed(String),
}

/// Makes a leader's read index trustworthy. openraft 0.9 lets a member that restarts with a
/// committed vote of its own lead again in the same term without appending anything; its
/// commit index then lags what it acknowledged before the restart, and so would its read
/// index. The first read of each term therefore commits an empty entry first: committing it
/// commits everything before it.
#[derive(Clone)]
pub struct ReadBarrier {
    /// The term (+1) in which this member last committed a barrier entry; 0: never.
    term: Arc<std::sync::atomic::AtomicU64>,
    /// How far this member's store is readable.
    visible: Visible,
}

impl ReadBarrier {
    pub fn new(visible: Visible) -> Self {
        ReadBarrier {
            term: Arc::default(),
            visible,
        }
    }

    /// The log index a linearizable read must see applied, if this member leads.
    pub async fn read_index(&self, raft: &BerthRaft) -> Result<u64, ReadIndexError> {
        use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
        use std::sync::atomic::Ordering;
        let term = raft.metrics().borrow().current_term;
        if self.term.load(Ordering::Acquire) != term + 1 {
            match raft
                .client_write(EncodedCommand::new(&Command::Batch(Vec::new())))
                .await
            {
                Ok(_) => self.term.store(term + 1, Ordering::Release),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => {
                    return Err(ReadIndexError::NotLeader(to.leader_node))
                }
                Err(e) => return Err(ReadIndexError::Failed(e.to_string())),
            }
        }
        match raft.ensure_linearizable().await {
            Ok(log_id) => Ok(log_id.map(|l| l.index).unwrap_or(0)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to))) => {
                Err(ReadIndexError::NotLeader(to.leader_node))
            }
            Err(e) => Err(ReadIndexError::Failed(e.to_string())),
        }
    }

    /// As leader: waits until this member's store shows everything committed before now (the
    /// leader loops' caches start from it). Fails with `NotLeader` on a follower.
    pub async fn as_leader(&self, raft: &BerthRaft) -> Result<(), ReadIndexError> {
        let index = self.read_index(raft).await?;
        self.visible
            .reached(index)
            .await
            .map_err(|e| ReadIndexError::Failed(e.to_string()))
    }

    /// Waits until this member's store shows everything it has applied (its newest applies
    /// may wait for their commit: see state_machine.rs), so that a stale read on a member
    /// still sees the writes it answered. Reads from the leader may be newer.
    pub async fn applied_here(&self) -> Result<(), Status> {
        self.visible
            .settled()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))
    }
}

/// Makes the next local read linearizable: as leader, passes the read barrier; on a follower,
/// asks the leader for its read index and waits until this member's store shows it. Used by
/// the API's reads and the registry's.
pub async fn linearize(
    raft: &BerthRaft,
    barrier: &ReadBarrier,
    leader: &LeaderLink,
) -> Result<(), Status> {
    match barrier.as_leader(raft).await {
        Ok(()) => Ok(()),
        Err(ReadIndexError::NotLeader(Some(node))) => {
            let index = leader.read_index(&node.addr).await?;
            barrier.visible.reached(index).await.map_err(|e| {
                Status::unavailable(format!(
                    "this member is not catching up with the leader: {e}"
                ))
            })
        }
        Err(ReadIndexError::NotLeader(None)) => {
            Err(Status::unavailable("no leader elected yet; retry shortly"))
        }
        Err(ReadIndexError::Failed(message)) => Err(Status::unavailable(message)),
    }
}
