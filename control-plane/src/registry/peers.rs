//! Blobs between members: the `Blobs` gRPC service every member serves, and the calls a
//! member makes to the others: to copy a pushed blob to a majority before the push is
//! acknowledged, and to fetch a blob it lacks from one that has it.
//!
//! ```text
//!  manifest PUT on A ──▶ replicate(blob) ──Has/Put──▶ B, C  (ack once a majority holds it;
//!                                                           the rest copy in the background)
//!  blob GET on B (lacks it) ──▶ fetch ──Has/Fetch──▶ A or C ──▶ verified, stored, served
//! ```
//!
//! Who the members are comes from the Raft membership; only voters count toward a majority.

use super::blobs::LocalBlobs;
use super::errors::{ErrorCode, RegistryError};
use crate::raft::{BerthRaft, MemberId};
use berth_proto::pb::blobs_client::BlobsClient;
use berth_proto::pb::blobs_server::Blobs;
use berth_proto::pb::{BlobChunk, BlobRef, HasReply, PutReply};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

/// How long a peer may take to say whether it holds a blob.
const HAS_TIMEOUT: Duration = Duration::from_secs(5);

/// The receiving side: serves this member's blobs to the others and stores theirs.
pub struct BlobService {
    blobs: Arc<LocalBlobs>,
}

impl BlobService {
    pub fn new(blobs: Arc<LocalBlobs>) -> Self {
        BlobService { blobs }
    }
}

fn status_of(error: RegistryError) -> Status {
    match error.code {
        ErrorCode::BlobUnknown => Status::not_found(error.message),
        ErrorCode::DigestInvalid | ErrorCode::SizeInvalid | ErrorCode::BlobUploadInvalid => {
            Status::invalid_argument(error.message)
        }
        _ => Status::internal(error.message),
    }
}

/// A blob as a stream of chunks: a first one that names it (no data), then its content.
fn chunks(
    digest: String,
    size: u64,
    content: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
) -> impl Stream<Item = std::io::Result<BlobChunk>> + Send + 'static {
    let header = BlobChunk {
        digest,
        size,
        data: Vec::new(),
    };
    futures::stream::once(async move { Ok(header) }).chain(content.map(|chunk| {
        chunk.map(|data| BlobChunk {
            data: data.to_vec(),
            ..BlobChunk::default()
        })
    }))
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<BlobChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Blobs for BlobService {
    async fn has(&self, request: Request<BlobRef>) -> Result<Response<HasReply>, Status> {
        let size = self.blobs.size(&request.into_inner().digest).await;
        Ok(Response::new(HasReply {
            present: size.is_some(),
            size: size.unwrap_or(0),
        }))
    }

    async fn put(
        &self,
        request: Request<Streaming<BlobChunk>>,
    ) -> Result<Response<PutReply>, Status> {
        let mut stream = request.into_inner();
        let header = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("put: no chunk named the blob"))?;
        if let Some(size) = self.blobs.size(&header.digest).await {
            return Ok(Response::new(PutReply { size }));
        }
        let content = stream.map(|chunk| chunk.map(|c| Bytes::from(c.data)));
        let size = self
            .blobs
            .receive(&header.digest, Some(header.size), content)
            .await
            .map_err(status_of)?;
        tracing::debug!(
            digest = header.digest,
            size,
            "registry blob received from a peer"
        );
        Ok(Response::new(PutReply { size }))
    }

    type FetchStream = ChunkStream;

    async fn fetch(&self, request: Request<BlobRef>) -> Result<Response<ChunkStream>, Status> {
        let digest = request.into_inner().digest;
        let (size, content) = self.blobs.read(&digest).await.map_err(status_of)?;
        let stream = chunks(digest, size, content)
            .map(|chunk| chunk.map_err(|e| Status::data_loss(format!("reading the blob: {e}"))));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The other members, as this member sees the Raft membership now.
struct View {
    /// How many voters there are, and whether this member is one.
    voters: usize,
    voter_here: bool,
    /// Every other member's address, and whether it votes.
    others: Vec<(String, bool)>,
}

/// The calling side: channels to the other members' `Blobs` service.
pub struct Peers {
    raft: BerthRaft,
    id: MemberId,
    clients: Mutex<HashMap<String, BlobsClient<Channel>>>,
}

impl Peers {
    pub fn new(raft: BerthRaft, id: MemberId) -> Self {
        Peers {
            raft,
            id,
            clients: Mutex::default(),
        }
    }

    fn client(&self, addr: &str) -> Result<BlobsClient<Channel>, Status> {
        let mut clients = self.clients.lock().expect("blob clients");
        if let Some(client) = clients.get(addr) {
            return Ok(client.clone());
        }
        let channel = berth_proto::transport::connect_lazy(addr)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let client = BlobsClient::new(channel);
        clients.insert(addr.to_string(), client.clone());
        Ok(client)
    }

    fn view(&self) -> View {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: Vec<MemberId> = membership.voter_ids().collect();
        let others = membership
            .nodes()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, node)| (node.addr.clone(), voters.contains(id)))
            .collect();
        View {
            voters: voters.len(),
            voter_here: voters.contains(&self.id),
            others,
        }
    }

    /// The blob's size at `addr`, or `None` if that member lacks it.
    async fn has(&self, addr: &str, digest: &str) -> Result<Option<u64>, Status> {
        let mut request = Request::new(BlobRef {
            digest: digest.to_string(),
        });
        request.set_timeout(HAS_TIMEOUT);
        let reply = self.client(addr)?.has(request).await?.into_inner();
        Ok(reply.present.then_some(reply.size))
    }

    /// The members that hold the blob, with its size there (asked all at once).
    async fn holders(&self, digest: &str) -> Vec<(String, u64)> {
        let asks = self.view().others.into_iter().map(|(addr, _)| async move {
            match self.has(&addr, digest).await {
                Ok(size) => size.map(|size| (addr, size)),
                Err(status) => {
                    tracing::debug!(peer = addr, "registry: has {digest}: {}", status.message());
                    None
                }
            }
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// The size of the blob at some other member, if any holds it.
    pub async fn locate(&self, digest: &str) -> Option<u64> {
        self.holders(digest).await.first().map(|(_, size)| *size)
    }

    /// Copies the blob from a member that holds it into `blobs`; false if none does (or
    /// none could deliver it).
    pub async fn fetch(&self, blobs: &LocalBlobs, digest: &str) -> bool {
        for (addr, size) in self.holders(digest).await {
            let fetched = async {
                let mut stream = self
                    .client(&addr)?
                    .fetch(BlobRef {
                        digest: digest.to_string(),
                    })
                    .await?
                    .into_inner();
                // The first chunk only names the blob; `has` told its size already.
                stream.message().await?;
                let content = stream.map(|chunk| chunk.map(|c| Bytes::from(c.data)));
                blobs
                    .receive(digest, Some(size), content)
                    .await
                    .map_err(status_of)
            };
            match fetched.await {
                Ok(_) => {
                    tracing::info!(digest, peer = addr, "registry blob fetched from a peer");
                    return true;
                }
                Err(status) => tracing::warn!(
                    digest,
                    peer = addr,
                    "registry: fetching a blob failed: {}",
                    status.message()
                ),
            }
        }
        false
    }

    /// Makes sure the member at `addr` holds the blob: copies it there unless it has it.
    async fn copy_to(&self, blobs: &LocalBlobs, addr: &str, digest: &str) -> Result<(), Status> {
        if self.has(addr, digest).await?.is_some() {
            return Ok(());
        }
        let (size, content) = blobs
            .read(digest)
            .await
            .map_err(|e| Status::internal(e.message))?;
        // A read that fails (the local copy is corrupt) ends the stream early: the receiver
        // then refuses the blob for its size or digest.
        let stream = chunks(digest.to_string(), size, content)
            .take_while(|chunk| futures::future::ready(chunk.is_ok()))
            .filter_map(|chunk| futures::future::ready(chunk.ok()));
        self.client(addr)?.put(stream).await?;
        tracing::debug!(digest, peer = addr, "registry blob copied to a peer");
        Ok(())
    }

    /// Returns once a majority of the voting members (this one included, which holds the
    /// blob) hold it; copies to the others go on in the background. UNAVAILABLE when no
    /// majority could be reached.
    pub async fn replicate(
        self: &Arc<Self>,
        blobs: &Arc<LocalBlobs>,
        digest: &str,
    ) -> Result<(), RegistryError> {
        let view = self.view();
        let needed = view.voters / 2 + 1;
        let mut held = usize::from(view.voter_here);
        let mut copies: FuturesUnordered<_> = view
            .others
            .into_iter()
            .map(|(addr, voter)| {
                let (peers, blobs, digest) = (self.clone(), blobs.clone(), digest.to_string());
                async move {
                    let copied = peers.copy_to(&blobs, &addr, &digest).await;
                    (addr, voter, copied)
                }
            })
            .collect();
        let mut failures = Vec::new();
        while held < needed {
            match copies.next().await {
                Some((_, voter, Ok(()))) => held += usize::from(voter),
                Some((addr, _, Err(status))) => {
                    failures.push(format!("{addr}: {}", status.message()))
                }
                None => break,
            }
        }
        if !copies.is_empty() {
            let digest = digest.to_string();
            tokio::spawn(async move {
                while let Some((addr, _, copied)) = copies.next().await {
                    if let Err(status) = copied {
                        tracing::warn!(
                            digest,
                            peer = addr,
                            "registry: copying a blob to a peer failed (it can fetch it when asked): {}",
                            status.message()
                        );
                    }
                }
            });
        }
        if held >= needed {
            return Ok(());
        }
        Err(RegistryError::unavailable(format!(
            "blob {digest} reached only {held} of the {} voting members, {needed} must hold it \
             before the push is acknowledged: {}; retry when the members are reachable",
            view.voters,
            failures.join("; ")
        ))
        .with_detail(serde_json::json!({ "digest": digest })))
    }
}
