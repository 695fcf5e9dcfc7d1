//! berth-control-plane: the replicated store of desired state and the API in front of it.
//!
//! ```text
//!  berth CLI ──gRPC──▶ api::ApiService ──client_write──▶ openraft ──▶ raft::LogStore (wal)
//!                          │   ▲                              │
//!                          │   └── watch::WatchHub ◀── raft::StateMachine ──▶ store (redb)
//!                          └──────────── reads ─────────────────────────────▶ store
//! ```
//!
//! - [`store`]: objects, revisions and watch history in redb; the pure rules of apply/delete.
//! - [`raft`]: openraft's log, state machine, and network (stream connections for the
//!   write path, tonic for the rest).
//! - [`api`]: the gRPC API server.
//! - [`scheduler`]: the pure decisions of where pending pods go (filter, then score), and the
//!   leader's loop that binds them through Raft.
//! - [`cache`]: the leader loops' watch-fed cache of decoded objects (an informer).
//! - [`nodes`]: the leader's node lifecycle: silent nodes become NotReady, their pods evicted.
//! - [`controllers`]: the leader's ReplicaSet and Deployment controllers, as pure deciders.
//! - [`events`]: the Events the control plane records, and their expiry (`--event-ttl`).
//! - [`registry`]: the image registry (OCI distribution API) every member serves.
//! - [`member`]: one control-plane member: opens its data dir, starts Raft, serves gRPC and
//!   the registry on one address.

pub mod api;
pub mod cache;
pub mod controllers;
pub mod events;
pub mod member;
pub mod membership;
pub mod nodes;
pub mod raft;
pub mod registry;
pub mod scheduler;
pub mod store;

pub use member::{Member, MemberConfig, MemberError};
