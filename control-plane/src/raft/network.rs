//! openraft's network: AppendEntries (every write, every heartbeat) in `codec`'s binary
//! encoding on a stream connection of its own (`wire`), the rare others over tonic as JSON in
//! a [`RaftMessage`]. The remote side answers `Result<response, RaftError>`.

use super::log_store::Durable;
use super::{codec, wire};
use super::{MemberId, TypeConfig};
use berth_proto::pb::raft_client::RaftClient;
use berth_proto::pb::RaftMessage;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;

/// Makes a client per peer; channels connect lazily, so a peer that is down is only an
/// `Unreachable` error on the RPCs that try it.
#[derive(Clone)]
pub struct NetworkFactory {
    durable: Durable,
}

impl NetworkFactory {
    /// `durable`: this member's log; no commit index leaves before the log holds it durably.
    pub fn new(durable: Durable) -> Self {
        NetworkFactory { durable }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: MemberId, node: &BasicNode) -> Network {
        Network {
            target,
            durable: self.durable.clone(),
            stream: wire::Connection::new(&node.addr),
            client: berth_proto::transport::connect_lazy(&node.addr)
                .ok()
                .map(RaftClient::new),
        }
    }
}

pub struct Network {
    target: MemberId,
    durable: Durable,
    stream: wire::Connection,
    client: Option<RaftClient<Channel>>,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<MemberId, BasicNode, RaftError<MemberId, E>>>;

impl Network {
    /// A request as JSON, its answer as JSON.
    async fn call<Req, Resp, E>(
        &mut self,
        method: Method,
        request: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data =
            serde_json::to_vec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let reply = self.send(method, data, option).await?;
        let result: Result<Resp, RaftError<MemberId, E>> =
            serde_json::from_slice(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// Sends an encoded request; the encoded answer.
    async fn send<E: std::error::Error>(
        &mut self,
        method: Method,
        data: Vec<u8>,
        option: &RPCOption,
    ) -> RpcResult<Vec<u8>, E> {
        let Some(client) = self.client.as_mut() else {
            return Err(RPCError::Unreachable(Unreachable::new(
                &std::io::Error::other("invalid member address"),
            )));
        };
        let mut message = tonic::Request::new(RaftMessage { data });
        message.set_timeout(option.hard_ttl());
        let reply = match method {
            Method::Vote => client.vote(message).await,
            Method::InstallSnapshot => client.install_snapshot(message).await,
        };
        let reply = reply.map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                RPCError::Unreachable(Unreachable::new(&status))
            }
            _ => RPCError::Network(NetworkError::new(&status)),
        })?;
        Ok(reply.into_inner().data)
    }
}

#[derive(Clone, Copy)]
enum Method {
    Vote,
    InstallSnapshot,
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<MemberId>> {
        // The leader's own entries are reported flushed before they are (see log_store.rs):
        // the commit index that includes them is only told once they are durable here.
        let last = rpc.entries.last().map(|e| e.log_id.index).unwrap_or(0);
        super::stamp("net.ae.start", last);
        if let Some(committed) = rpc.leader_commit {
            self.durable.reached(committed.index).await;
        }
        let data = codec::encode_append_request(&rpc)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        super::stamp("net.ae.send", last);
        let reply = tokio::time::timeout(
            option.hard_ttl(),
            self.stream.call(wire::Kind::AppendEntries, &data),
        )
        .await
        .map_err(|_| {
            RPCError::Unreachable(Unreachable::new(&std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "AppendEntries timed out",
            )))
        })?
        .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        super::stamp("net.ae.reply", last);
        codec::decode_append_response(reply)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<MemberId>, InstallSnapshotError> {
        self.call(Method::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MemberId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<MemberId>> {
        self.call(Method::Vote, &rpc, &option).await
    }
}
