//! The receiving side of the Raft network: a tonic service that hands each RPC to openraft.

use super::codec;
use super::prevote::{self, LeaderContact};
use super::BerthRaft;
use berth_proto::pb::raft_server::Raft;
use berth_proto::pb::RaftMessage;
use openraft::raft::AppendEntriesResponse;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;
use tonic::{Request, Response, Status};

pub struct RaftService {
    raft: BerthRaft,
    barrier: super::leader::ReadBarrier,
    contact: LeaderContact,
    election_timeout: Duration,
    proposer: super::proposer::Proposer,
}

impl RaftService {
    pub fn new(
        raft: BerthRaft,
        barrier: super::leader::ReadBarrier,
        contact: LeaderContact,
        election_timeout: Duration,
        proposer: super::proposer::Proposer,
    ) -> Self {
        RaftService {
            raft,
            barrier,
            contact,
            election_timeout,
            proposer,
        }
    }
}

fn decode<T: DeserializeOwned>(request: Request<RaftMessage>) -> Result<T, Status> {
    serde_json::from_slice(&request.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("malformed Raft message: {e}")))
}

fn encode<T: Serialize>(reply: T) -> Result<Response<RaftMessage>, Status> {
    let data = serde_json::to_vec(&reply).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftMessage { data }))
}

/// Hands an encoded AppendEntries request to openraft; the encoded answer. A leader's
/// message that this member accepts counts as contact (see `prevote`). Shared by the gRPC
/// method and the stream connections (`wire`).
pub(super) async fn append_entries(
    raft: &BerthRaft,
    contact: &LeaderContact,
    request: bytes::Bytes,
) -> Result<Vec<u8>, codec::CodecError> {
    let rpc = codec::decode_append_request(request)?;
    let last = rpc.entries.last().map(|e| e.log_id.index).unwrap_or(0);
    super::stamp("svc.ae.recv", last);
    let result = raft.append_entries(rpc).await;
    super::stamp("svc.ae.done", last);
    if matches!(&result, Ok(response) if !matches!(response, AppendEntriesResponse::HigherVote(_)))
    {
        contact.touch();
    }
    codec::encode_append_response(&result)
}

/// Proposes a follower's forwarded command here: it joins this member's queue (group
/// commit) and is never forwarded again. The command's bytes go into the log as they came
/// (see codec.rs). The answer: `Result<CommandResult, String>` as JSON. Shared by the gRPC
/// method and the stream connections (`wire`).
pub(super) async fn forwarded(
    proposer: &super::proposer::Proposer,
    command: bytes::Bytes,
) -> Result<Vec<u8>, serde_json::Error> {
    let result = proposer
        .propose_forwarded(super::EncodedCommand::from_bytes(command))
        .await
        .map_err(|status| status.message().to_string());
    serde_json::to_vec(&result)
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let data = append_entries(&self.raft, &self.contact, request.into_inner().data.into())
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(RaftMessage { data }))
    }

    async fn pre_vote(
        &self,
        _request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        encode(prevote::would_support(
            &self.raft,
            &self.contact,
            self.election_timeout,
        ))
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        encode(self.raft.vote(decode(request)?).await)
    }

    async fn forward(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let data = forwarded(&self.proposer, request.into_inner().data.into())
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(RaftMessage { data }))
    }

    async fn read_index(
        &self,
        _request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let result = self
            .barrier
            .read_index(&self.raft)
            .await
            .map_err(|e| match e {
                super::leader::ReadIndexError::NotLeader(_) => {
                    "this member is not the leader".to_string()
                }
                super::leader::ReadIndexError::Failed(message) => message,
            });
        encode(result)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        encode(self.raft.install_snapshot(decode(request)?).await)
    }
}
