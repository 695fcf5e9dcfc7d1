//! The object store: every object keyed by kind/namespace/name, a cluster-wide revision
//! advanced by every write, and a bounded history of changes for watches. It lives in the same
//! redb file as the Raft log, and only the Raft state machine writes to it.
//!
//! - [`apply`]: pure decisions (what an apply or delete does to an object), no IO.
//! - [`allocation`]: Service ClusterIPs and nodePorts, kept unique across Services.
//! - [`tables`]: the redb tables and the reads the API serves from them.
//! - [`registry`]: the registry's manifests and tags (its blobs are files, not here).

pub mod allocation;
pub mod apply;
pub mod registry;
pub mod tables;
pub mod watch;

pub use apply::{Command, CommandResult, Outcome, StoreError, StoredManifest};
pub use tables::{ObjectStore, ReadError, StoreSnapshot, StoredEvent, WatchEventType};
pub use watch::{Notice, WatchHub};
