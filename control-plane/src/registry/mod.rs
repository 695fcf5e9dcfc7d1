//! The cluster's image registry (the OCI distribution API), served by every control-plane
//! member on its API address, next to gRPC.
//!
//! ```text
//!  skopeo/docker ──HTTP/1.1──▶ http (axum, on the tonic server)
//!                                │ blobs: uploads ──▶ blobs::LocalBlobs (files by digest);
//!                                │        a finished one ──copies──▶ the other members at once
//!                                │ manifest PUT: waits until a majority of the members hold
//!                                │               every blob it references, then ──Raft──▶ store
//!                                │ manifest GET, tags: read barrier ──▶ store (redb)
//!                                └ blob GET on a member that lacks it ──copies──▶ fetched from
//!                                            a member that has it, streamed as it arrives
//! ```
//!
//! - Manifests and tags go through Raft (`Command::Registry*`, tables in
//!   `store::registry`), so every member serves the same ones.
//! - Blobs are files by digest on each member, global to the registry (not per repository).
//!   A push is acknowledged (the manifest PUT) only once a majority of the voting members
//!   hold every blob it references: losing the member that received the push loses nothing.
//! - Copies between members run detached from the requests that want them, one per blob
//!   at a time (`copies`): a client that hangs up cancels nothing, a retry joins the copy.
//! - Not here yet: authentication and TLS (plain HTTP until the transport has mutual TLS),
//!   garbage collection of unreferenced blobs, the referrers API.
//!
//! Modules: [`names`] (URL grammar, pure), [`manifest`] (validation, pure), [`errors`] (the
//! spec's error bodies), [`blobs`] (local blob store and uploads), [`peers`] (blob calls
//! between members), [`copies`] (those calls as shared background copies), `http` (the
//! handlers).

pub mod blobs;
pub mod copies;
pub mod errors;
mod http;
pub mod manifest;
pub mod names;
pub mod peers;

use crate::raft::leader::{LeaderLink, ReadBarrier};
use crate::raft::proposer::Proposer;
use crate::raft::{BerthRaft, MemberId};
use crate::store::ObjectStore;
use berth_proto::pb::blobs_server::BlobsServer;
use blobs::LocalBlobs;
use copies::Copies;
use peers::{BlobService, Peers};
use std::path::Path;
use std::sync::Arc;

/// One member's registry: its blobs, its way to the other members' blobs, and the Raft
/// store its manifests and tags live in.
pub struct Registry {
    blobs: Arc<LocalBlobs>,
    peers: Arc<Peers>,
    copies: Arc<Copies>,
    raft: BerthRaft,
    barrier: ReadBarrier,
    leader: LeaderLink,
    proposer: Proposer,
    store: ObjectStore,
}

/// What a member needs to serve its registry.
pub(crate) struct RegistryParts {
    pub id: MemberId,
    pub raft: BerthRaft,
    pub barrier: ReadBarrier,
    pub leader: LeaderLink,
    pub proposer: Proposer,
    pub store: ObjectStore,
}

impl Registry {
    /// Opens the registry whose blobs live in `dir` (`DATA_DIR/registry`); on a runtime (it
    /// starts the sweep of abandoned uploads).
    pub(crate) fn open(
        dir: &Path,
        parts: RegistryParts,
    ) -> Result<Arc<Registry>, berth_image::ImageError> {
        let blobs = Arc::new(LocalBlobs::open(dir)?);
        LocalBlobs::spawn_sweeper(&blobs);
        let peers = Arc::new(Peers::new(parts.raft.clone(), parts.id));
        Ok(Arc::new(Registry {
            copies: Arc::new(Copies::new(blobs.clone(), peers.clone())),
            blobs,
            peers,
            raft: parts.raft,
            barrier: parts.barrier,
            leader: parts.leader,
            proposer: parts.proposer,
            store: parts.store,
        }))
    }

    /// The HTTP routes (`/v2/...`), to serve next to the gRPC services.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        http::router(self.clone())
    }

    /// The gRPC service the other members copy blobs through.
    pub fn blob_service(&self) -> BlobsServer<BlobService> {
        BlobsServer::new(BlobService::new(self.blobs.clone()))
    }
}
