//! The receiving side of the Raft network: a tonic service that hands each RPC to openraft.

use super::BerthRaft;
use berth_proto::pb::raft_server::Raft;
use berth_proto::pb::RaftMessage;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

pub struct RaftService {
    raft: BerthRaft,
}

impl RaftService {
    pub fn new(raft: BerthRaft) -> Self {
        RaftService { raft }
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

#[tonic::async_trait]
impl Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        encode(self.raft.append_entries(decode(request)?).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        encode(self.raft.vote(decode(request)?).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        encode(self.raft.install_snapshot(decode(request)?).await)
    }
}
