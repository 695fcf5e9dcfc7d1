//! Blobs between members: the `Blobs` gRPC service every member serves, and the calls a
//! member makes to the others: who holds a blob (`Has`), copy one there (`Put`), fetch one
//! from there (`Fetch`). [`super::copies`] runs them, detached from the requests that want
//! them.
//!
//! Who the members are comes from the Raft membership; only voters count toward a majority,
//! and during a membership change a majority of each of the two configurations.
//! A copy that moves no bytes for [`COPY_STALL`] is given up (a peer that is alive but stuck
//! must not hold a push forever).

use super::blobs::LocalBlobs;
use super::errors::{ErrorCode, RegistryError};
use crate::raft::{BerthRaft, MemberId};
use berth_proto::pb::blobs_client::BlobsClient;
use berth_proto::pb::blobs_server::Blobs;
use berth_proto::pb::{BlobChunk, BlobRef, HasReply, PutReply};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

/// How long a peer may take to say whether it holds a blob.
const HAS_TIMEOUT: Duration = Duration::from_secs(5);

/// A copy between members that moves no bytes (nor answers, after the last) for this long
/// is given up.
pub const COPY_STALL: Duration = Duration::from_secs(60);

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

/// The members, as this member sees the Raft membership now.
pub struct View {
    /// The voters: one configuration, or the two of a joint membership (a change under
    /// way), each of which must have a majority.
    pub configs: Vec<BTreeSet<MemberId>>,
    /// Every other member (voter or not) and its address.
    pub others: Vec<(MemberId, String)>,
}

impl View {
    /// Whether `holders` are a majority of every voter configuration.
    pub fn majority(&self, holders: &BTreeSet<MemberId>) -> bool {
        self.shortfall(holders).is_none()
    }

    /// The first configuration `holders` are no majority of: how many of its voters hold
    /// the blob, how many it has, how many must.
    pub fn shortfall(&self, holders: &BTreeSet<MemberId>) -> Option<(usize, usize, usize)> {
        self.configs.iter().find_map(|voters| {
            let held = voters.intersection(holders).count();
            let needed = voters.len() / 2 + 1;
            (held < needed).then_some((held, voters.len(), needed))
        })
    }
}

/// When a transfer last moved, for a deadline that counts from there.
#[derive(Clone)]
struct Activity(Arc<Mutex<Instant>>);

impl Activity {
    fn new() -> Self {
        Activity(Arc::new(Mutex::new(Instant::now())))
    }

    fn touch(&self) {
        *self.0.lock().expect("activity") = Instant::now();
    }

    /// Resolves once nothing moved for `limit`.
    async fn stalled(&self, limit: Duration) {
        loop {
            let deadline = *self.0.lock().expect("activity") + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
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

    /// This member's id.
    pub fn id(&self) -> MemberId {
        self.id
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

    pub fn view(&self) -> View {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        View {
            configs: membership.get_joint_config().clone(),
            others: membership
                .nodes()
                .filter(|(id, _)| **id != self.id)
                .map(|(id, node)| (*id, node.addr.clone()))
                .collect(),
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

    /// The other members that hold the blob, with its size there, in the order they answer
    /// (all are asked at once; one that does not answer delays only itself).
    pub fn holders<'a>(
        &'a self,
        digest: &'a str,
    ) -> impl Stream<Item = (MemberId, String, u64)> + Send + 'a {
        let asks: FuturesUnordered<_> = self
            .view()
            .others
            .into_iter()
            .map(|(id, addr)| async move {
                match self.has(&addr, digest).await {
                    Ok(size) => size.map(|size| (id, addr, size)),
                    Err(status) => {
                        tracing::debug!(
                            peer = addr,
                            "registry: has {digest}: {}",
                            status.message()
                        );
                        None
                    }
                }
            })
            .collect();
        asks.filter_map(futures::future::ready)
    }

    /// The size of the blob at some other member: the first that says it holds it.
    pub async fn locate(&self, digest: &str) -> Option<u64> {
        let mut holders = std::pin::pin!(self.holders(digest));
        holders.next().await.map(|(_, _, size)| size)
    }

    /// The content of the blob at `addr`, as it arrives; a stream that stalls for
    /// [`COPY_STALL`] ends in an error.
    pub async fn open_fetch(
        &self,
        addr: &str,
        digest: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, Status>> + Send + 'static, Status> {
        let request = BlobRef {
            digest: digest.to_string(),
        };
        let opened = tokio::time::timeout(COPY_STALL, self.client(addr)?.fetch(request)).await;
        let mut stream = opened
            .map_err(|_| Status::deadline_exceeded("no answer to Fetch"))??
            .into_inner();
        // The first chunk only names the blob; `Has` told its size already.
        stream_message(&mut stream).await?;
        Ok(futures::stream::unfold(Some(stream), |stream| async move {
            let mut stream = stream?;
            match stream_message(&mut stream).await {
                Ok(Some(chunk)) => Some((Ok(Bytes::from(chunk.data)), Some(stream))),
                Ok(None) => None,
                Err(status) => Some((Err(status), None)),
            }
        }))
    }

    /// Makes sure the member at `addr` holds the blob: copies it there unless it has it.
    pub async fn copy_to(
        &self,
        blobs: &LocalBlobs,
        addr: &str,
        digest: &str,
    ) -> Result<(), Status> {
        if self.has(addr, digest).await?.is_some() {
            return Ok(());
        }
        let (size, content) = blobs
            .read(digest)
            .await
            .map_err(|e| Status::internal(e.message))?;
        let activity = Activity::new();
        let moved = activity.clone();
        // A read that fails (the local copy is corrupt) ends the stream early: the receiver
        // then refuses the blob for its size or digest.
        let stream = chunks(digest.to_string(), size, content)
            .take_while(|chunk| futures::future::ready(chunk.is_ok()))
            .filter_map(|chunk| futures::future::ready(chunk.ok()))
            .inspect(move |_| moved.touch());
        let mut client = self.client(addr)?;
        tokio::select! {
            put = client.put(stream) => {
                put?;
            }
            () = activity.stalled(COPY_STALL) => {
                return Err(Status::deadline_exceeded(format!(
                    "the copy moved nothing for {} s",
                    COPY_STALL.as_secs()
                )));
            }
        }
        tracing::debug!(digest, peer = addr, "registry blob copied to a peer");
        Ok(())
    }
}

/// The next message of a stream from a peer, or an error if none comes for [`COPY_STALL`].
async fn stream_message(stream: &mut Streaming<BlobChunk>) -> Result<Option<BlobChunk>, Status> {
    tokio::time::timeout(COPY_STALL, stream.message())
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "the peer sent nothing for {} s",
                COPY_STALL.as_secs()
            ))
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ids: &[MemberId]) -> BTreeSet<MemberId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_majority_of_every_configuration_is_needed() {
        let view = View {
            configs: vec![ids(&[1, 2, 3])],
            others: Vec::new(),
        };
        assert_eq!(view.shortfall(&ids(&[1])), Some((1, 3, 2)));
        assert!(view.majority(&ids(&[1, 3])));
        // Holders that do not vote do not count.
        assert!(!view.majority(&ids(&[1, 4, 5])));

        // Joint: {1,2,3} -> {3,4,5}. A majority of the union ({1,2,3,4}: 4 of 5) is not
        // enough; {1,2} is a majority of the old configuration only.
        let joint = View {
            configs: vec![ids(&[1, 2, 3]), ids(&[3, 4, 5])],
            others: Vec::new(),
        };
        assert_eq!(joint.shortfall(&ids(&[1, 2, 4])), Some((1, 3, 2)));
        assert!(!joint.majority(&ids(&[1, 2])));
        assert!(joint.majority(&ids(&[2, 3, 4])));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_counts_from_the_last_movement() {
        let activity = Activity::new();
        let stalled = activity.stalled(Duration::from_secs(60));
        tokio::pin!(stalled);
        tokio::time::advance(Duration::from_secs(50)).await;
        activity.touch();
        tokio::time::advance(Duration::from_secs(50)).await;
        assert!(
            futures::poll!(&mut stalled).is_pending(),
            "it moved 50 s ago"
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(futures::poll!(&mut stalled).is_ready());
    }
}
