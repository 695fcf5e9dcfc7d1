//! Consensus: openraft with its log in a write-ahead log of its own (`wal`) and its state
//! machine in redb; AppendEntries on a stream connection (`wire`), its other RPCs over tonic.
//!
//! ```text
//!   leader                                   follower
//!   openraft ──network::Network──wire/gRPC──▶ wire::serve, service::RaftService ──▶ openraft
//!      │                                                              │
//!   log_store::LogStore (wal, fdatasync)         state_machine::StateMachine ──▶ store tables
//! ```

// openraft's StorageError is large; it is openraft's type, returned as openraft expects.
#![allow(clippy::result_large_err)]

pub mod codec;
pub mod leader;
pub mod log_store;
pub mod network;
pub mod prevote;
pub mod proposer;
pub mod service;
pub mod state_machine;
pub mod wal;
pub mod wire;

use crate::store::CommandResult;
pub use codec::EncodedCommand;
use std::io::Cursor;

/// A member's id in the Raft cluster.
pub type MemberId = u64;

openraft::declare_raft_types!(
    /// berth's Raft: log entries carry [`crate::store::Command`]s, encoded once where they
    /// are proposed (see `codec`); members are addressed by their gRPC address.
    pub TypeConfig:
        D = EncodedCommand,
        R = CommandResult,
        NodeId = MemberId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type BerthRaft = openraft::Raft<TypeConfig>;
pub type StorageError = openraft::StorageError<MemberId>;
pub type LogId = openraft::LogId<MemberId>;
pub type Entry = openraft::Entry<TypeConfig>;

/// Runs blocking redb work off the async runtime's threads.
pub(crate) async fn blocking<T, F>(work: F) -> Result<T, StorageError>
where
    F: FnOnce() -> Result<T, StorageError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| openraft::StorageIOError::write(&e).into())
        .and_then(|r| r)
}

/// A write's progress through a stage (proposal, log sync, replication, apply), for the
/// latency breakdown: `RUST_LOG=berth_timing=debug` logs `T pid stage index micros` lines,
/// which `bench/raft-stages.py` lines up across members. Costs one check when off.
pub fn stamp(stage: &'static str, index: u64) {
    if !tracing::enabled!(target: "berth_timing", tracing::Level::DEBUG) {
        return;
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    tracing::debug!(target: "berth_timing", "T {} {} {} {}", std::process::id(), stage, index, t);
}
