//! Blob copies between members that outlive the requests that want them: at most one per
//! blob and direction at a time, each on a detached task, so a client that hangs up cancels
//! nothing and a retry (or a second client) joins the copy already under way.
//!
//! ```text
//!  upload finished on A ──▶ replicate(blob) ──copy_to──▶ B, C   (starts at once)
//!  manifest PUT on A ────▶ waits for each blob's replication until a majority of every voter
//!                          configuration holds it; UNAVAILABLE after ACK_DEADLINE
//!  blob GET on B (lacks it) ──▶ fetch(blob) ──Fetch──▶ A ──▶ upload file ──▶ stored
//!                                   └─ the response streams from the file as it grows
//! ```
//!
//! A replication reports who holds the blob as copies land; a fetch reports how much of the
//! blob is on disk, so responses can stream it while it arrives: they get the last byte only
//! once the whole blob is verified and stored.

use super::blobs::{LocalBlobs, CHUNK};
use super::errors::RegistryError;
use super::peers::{Peers, View};
use crate::raft::MemberId;
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a manifest PUT waits for the blobs it references to reach a majority (clients
/// wait longer for its answer: `berth_image::registry`).
pub const ACK_DEADLINE: Duration = Duration::from_secs(600);

/// A replication of a blob this member holds, as it goes.
#[derive(Debug, Clone)]
pub struct Replication {
    /// The members known to hold the blob, this one included.
    pub holders: BTreeSet<MemberId>,
    /// Why copies to the others failed.
    pub failures: Vec<String>,
    /// Every copy has ended.
    pub done: bool,
}

/// A fetch of a blob this member lacks, as it goes.
#[derive(Debug, Clone)]
pub enum Fetch {
    /// Asking the members which holds it.
    Locating,
    /// Arriving from a member (`attempt` counts the members tried): `written` of its
    /// `size` bytes are in `file`.
    Receiving {
        attempt: u32,
        file: Arc<std::fs::File>,
        size: u64,
        written: u64,
    },
    /// Verified and in this member's store.
    Stored { size: u64 },
    /// Not stored: no member holds it, or none that does could deliver it.
    Failed {
        held_elsewhere: bool,
        reason: String,
    },
}

impl Fetch {
    fn ended(&self) -> bool {
        matches!(self, Fetch::Stored { .. } | Fetch::Failed { .. })
    }
}

pub struct Copies {
    blobs: Arc<LocalBlobs>,
    peers: Arc<Peers>,
    replications: Mutex<HashMap<String, watch::Receiver<Replication>>>,
    fetches: Mutex<HashMap<String, watch::Receiver<Fetch>>>,
}

impl Copies {
    pub fn new(blobs: Arc<LocalBlobs>, peers: Arc<Peers>) -> Self {
        Copies {
            blobs,
            peers,
            replications: Mutex::default(),
            fetches: Mutex::default(),
        }
    }

    /// Copies a blob this member holds to every other member, in the background, unless a
    /// replication of it is under way already; either way, the replication to follow.
    pub fn replicate(self: &Arc<Self>, digest: &str) -> watch::Receiver<Replication> {
        let mut running = self.replications.lock().expect("replications");
        if let Some(replication) = running.get(digest).filter(|r| !r.borrow().done) {
            return replication.clone();
        }
        let (progress, replication) = watch::channel(Replication {
            holders: BTreeSet::from([self.peers.id()]),
            failures: Vec::new(),
            done: false,
        });
        running.insert(digest.to_string(), replication.clone());
        drop(running);
        let (copies, digest, ours) = (self.clone(), digest.to_string(), replication.clone());
        tokio::spawn(async move {
            let (peers, blobs) = (&copies.peers, &copies.blobs);
            let mut copying: FuturesUnordered<_> = peers
                .view()
                .others
                .into_iter()
                .map(|(id, addr)| {
                    let digest = &digest;
                    async move { (id, peers.copy_to(blobs, &addr, digest).await, addr) }
                })
                .collect();
            while let Some((id, copied, addr)) = copying.next().await {
                match copied {
                    Ok(()) => progress.send_modify(|r| {
                        r.holders.insert(id);
                    }),
                    Err(status) => {
                        tracing::warn!(
                            digest,
                            peer = addr,
                            "registry: copying a blob to a peer failed (it can fetch it when asked): {}",
                            status.message()
                        );
                        progress.send_modify(|r| {
                            r.failures.push(format!("{addr}: {}", status.message()))
                        });
                    }
                }
            }
            drop(copying);
            progress.send_modify(|r| r.done = true);
            let mut running = copies.replications.lock().expect("replications");
            if running.get(&digest).is_some_and(|r| r.same_channel(&ours)) {
                running.remove(&digest);
            }
        });
        replication
    }

    /// Returns once a majority of every voter configuration holds the blob, which this
    /// member holds (`here`) or fetches first from a member that does: joins the copies
    /// under way (or starts them) and waits for them up to [`ACK_DEADLINE`]. UNAVAILABLE
    /// when no majority could be reached by then.
    pub async fn replicated(
        self: &Arc<Self>,
        digest: &str,
        here: bool,
    ) -> Result<(), RegistryError> {
        let deadline = Instant::now() + ACK_DEADLINE;
        if !here {
            self.fetched(digest, deadline).await?;
        }
        let mut replication = self.replicate(digest);
        loop {
            let state = replication.borrow_and_update().clone();
            let view = self.peers.view();
            if view.majority(&state.holders) {
                return Ok(());
            }
            let timed_out = if state.done {
                false
            } else {
                match tokio::time::timeout_at(deadline, replication.changed()).await {
                    Ok(Ok(())) => continue,
                    // The task is gone: what it reported last is all there is.
                    Ok(Err(_)) => false,
                    Err(_) => true,
                }
            };
            return Err(short_of_majority(digest, &view, &state, timed_out));
        }
    }

    /// Fetches the blob from a member that holds it, in the background, unless a fetch of
    /// it is under way already; either way, the fetch to follow.
    pub fn fetch(self: &Arc<Self>, digest: &str) -> watch::Receiver<Fetch> {
        let mut running = self.fetches.lock().expect("fetches");
        if let Some(fetch) = running.get(digest) {
            return fetch.clone();
        }
        let (progress, fetch) = watch::channel(Fetch::Locating);
        running.insert(digest.to_string(), fetch.clone());
        drop(running);
        let (copies, digest, ours) = (self.clone(), digest.to_string(), fetch.clone());
        tokio::spawn(async move {
            let ended = copies.run_fetch(&digest, &progress).await;
            progress.send_replace(ended);
            let mut running = copies.fetches.lock().expect("fetches");
            if running.get(&digest).is_some_and(|f| f.same_channel(&ours)) {
                running.remove(&digest);
            }
        });
        fetch
    }

    /// Waits (up to `deadline`) until the blob is fetched into this member's store.
    async fn fetched(
        self: &Arc<Self>,
        digest: &str,
        deadline: Instant,
    ) -> Result<(), RegistryError> {
        let mut fetch = self.fetch(digest);
        let ended = tokio::time::timeout_at(deadline, fetch.wait_for(Fetch::ended))
            .await
            .map(|ended| ended.map(|state| state.clone()));
        match ended {
            Ok(Ok(Fetch::Stored { .. })) => Ok(()),
            Ok(Ok(Fetch::Failed { reason, .. })) => Err(RegistryError::unavailable(format!(
                "blob {digest} is on another member, but could not be fetched from it to copy \
                 it on: {reason}; retry shortly"
            ))),
            Ok(Ok(_)) | Ok(Err(_)) => Err(RegistryError::internal(format!(
                "the fetch of blob {digest} ended without a word"
            ))),
            Err(_) => Err(RegistryError::unavailable(format!(
                "blob {digest} was still being fetched from another member after {} s; retry",
                ACK_DEADLINE.as_secs()
            ))),
        }
    }

    async fn run_fetch(&self, digest: &str, progress: &watch::Sender<Fetch>) -> Fetch {
        if let Some(size) = self.blobs.size(digest).await {
            return Fetch::Stored { size };
        }
        let mut holders = std::pin::pin!(self.peers.holders(digest));
        let mut attempt = 0;
        let mut failures = Vec::new();
        while let Some((_, addr, size)) = holders.next().await {
            attempt += 1;
            match self
                .fetch_from(&addr, digest, size, attempt, progress)
                .await
            {
                Ok(size) => {
                    tracing::info!(digest, peer = addr, "registry blob fetched from a peer");
                    return Fetch::Stored { size };
                }
                Err(reason) => {
                    tracing::warn!(
                        digest,
                        peer = addr,
                        "registry: fetching a blob failed: {reason}"
                    );
                    failures.push(format!("{addr}: {reason}"));
                }
            }
        }
        // Pushed here meanwhile?
        if let Some(size) = self.blobs.size(digest).await {
            return Fetch::Stored { size };
        }
        Fetch::Failed {
            held_elsewhere: attempt > 0,
            reason: if failures.is_empty() {
                "no member holds it".to_string()
            } else {
                failures.join("; ")
            },
        }
    }

    /// Fetches the blob (`size` bytes) from the member at `addr` into the store, telling
    /// `progress` how much of it is on disk as it arrives.
    async fn fetch_from(
        &self,
        addr: &str,
        digest: &str,
        size: u64,
        attempt: u32,
        progress: &watch::Sender<Fetch>,
    ) -> Result<u64, String> {
        if size > self.blobs.max_blob_size() {
            return Err(format!(
                "it is {size} bytes, over the limit of {}",
                self.blobs.max_blob_size()
            ));
        }
        let content = self
            .peers
            .open_fetch(addr, digest)
            .await
            .map_err(|status| status.message().to_string())?;
        let mut receiving = self.blobs.receive_into().await.map_err(|e| e.message)?;
        let file = Arc::new(receiving.reader().await.map_err(|e| e.message)?);
        progress.send_replace(Fetch::Receiving {
            attempt,
            file,
            size,
            written: 0,
        });
        let mut content = std::pin::pin!(content);
        while let Some(chunk) = content.next().await {
            let chunk = chunk.map_err(|status| status.message().to_string())?;
            if receiving.written() + chunk.len() as u64 > size {
                return Err(format!("it sent more than the {size} bytes it announced"));
            }
            receiving.write(&chunk).await.map_err(|e| e.message)?;
            // Readers see the bytes through their own handle: they must be in the file.
            receiving.flush().await.map_err(|e| e.message)?;
            let written = receiving.written();
            progress.send_modify(|fetch| {
                if let Fetch::Receiving { written: w, .. } = fetch {
                    *w = written;
                }
            });
        }
        if receiving.written() != size {
            return Err(format!(
                "it sent {} of the {size} bytes it announced",
                receiving.written()
            ));
        }
        receiving.finish(digest).await.map_err(|e| e.message)
    }
}

/// The blob as the fetch `attempt` writes it to `file`: bytes as they arrive, the last one
/// only once the whole blob is verified and stored. The stream fails if the fetch does, or
/// starts over from another member.
pub fn tail(
    fetch: watch::Receiver<Fetch>,
    attempt: u32,
    file: Arc<std::fs::File>,
    size: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures::stream::unfold(Some((fetch, 0u64)), move |state| {
        let file = file.clone();
        async move {
            let (mut fetch, offset) = state?;
            loop {
                let available = match &*fetch.borrow_and_update() {
                    Fetch::Receiving {
                        attempt: current,
                        written,
                        ..
                    } if *current == attempt => (*written).min(size.saturating_sub(1)),
                    Fetch::Stored { .. } => size,
                    Fetch::Failed { reason, .. } => {
                        let error = io::Error::other(format!("fetching the blob failed: {reason}"));
                        return Some((Err(error), None));
                    }
                    _ => {
                        let error = io::Error::other("the fetch started over from another member");
                        return Some((Err(error), None));
                    }
                };
                if offset < available {
                    let len = (available - offset).min(CHUNK as u64) as usize;
                    let read = tokio::task::spawn_blocking(move || {
                        let mut buffer = vec![0; len];
                        file.read_exact_at(&mut buffer, offset)
                            .map(|()| Bytes::from(buffer))
                    })
                    .await
                    .unwrap_or_else(|e| Err(io::Error::other(e)));
                    return Some(match read {
                        Ok(chunk) => (Ok(chunk), Some((fetch, offset + len as u64))),
                        Err(e) => (Err(e), None),
                    });
                }
                if offset >= size {
                    return None;
                }
                if fetch.changed().await.is_err() {
                    // The fetch task has ended: what it said last decides.
                    if !matches!(*fetch.borrow(), Fetch::Stored { .. }) {
                        let error = io::Error::other("the fetch ended before the blob was stored");
                        return Some((Err(error), None));
                    }
                }
            }
        }
    })
}

fn short_of_majority(
    digest: &str,
    view: &View,
    state: &Replication,
    timed_out: bool,
) -> RegistryError {
    let (held, voters, needed) =
        view.shortfall(&state.holders)
            .unwrap_or((state.holders.len(), 0, 0));
    let why = if timed_out {
        format!("copies still under way after {} s", ACK_DEADLINE.as_secs())
    } else {
        state.failures.join("; ")
    };
    RegistryError::unavailable(format!(
        "blob {digest} reached only {held} of the {voters} voting members, {needed} must hold it \
         before the push is acknowledged: {why}; retry when the members are reachable"
    ))
    .with_detail(serde_json::json!({ "digest": digest }))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(
        stream: impl Stream<Item = io::Result<Bytes>>,
    ) -> (Vec<u8>, Option<io::Error>) {
        let mut stream = std::pin::pin!(stream);
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(e) => return (data, Some(e)),
            }
        }
        (data, None)
    }

    fn receiving(file: &Arc<std::fs::File>, attempt: u32, written: u64) -> Fetch {
        Fetch::Receiving {
            attempt,
            file: file.clone(),
            size: 10,
            written,
        }
    }

    #[tokio::test]
    async fn readers_follow_a_fetch_and_get_the_last_byte_once_it_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upload");
        std::fs::write(&path, b"01234").unwrap();
        let file = Arc::new(std::fs::File::open(&path).unwrap());
        let (progress, fetch) = watch::channel(receiving(&file, 1, 5));
        let reader = tokio::spawn(collect(tail(fetch.clone(), 1, file.clone(), 10)));

        let mut written = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut written, b"56789").unwrap();
        progress.send_replace(receiving(&file, 1, 10));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !reader.is_finished(),
            "the last byte waits for the blob to be stored"
        );
        progress.send_replace(Fetch::Stored { size: 10 });
        drop(progress);
        let (data, error) = reader.await.unwrap();
        assert!(error.is_none(), "{error:?}");
        assert_eq!(data, b"0123456789");

        // A fetch that fails, or starts over from another member, fails its readers.
        for ending in [
            Fetch::Failed {
                held_elsewhere: true,
                reason: "reset".into(),
            },
            receiving(&file, 2, 0),
        ] {
            let (progress, fetch) = watch::channel(receiving(&file, 1, 3));
            let reader = tokio::spawn(collect(tail(fetch, 1, file.clone(), 10)));
            tokio::time::sleep(Duration::from_millis(20)).await;
            progress.send_replace(ending);
            let (data, error) = reader.await.unwrap();
            assert_eq!(data, b"012");
            assert!(error.is_some());
        }
        // So does a fetch task that goes away without a word.
        let (progress, fetch) = watch::channel(receiving(&file, 1, 3));
        drop(progress);
        let (_, error) = collect(tail(fetch, 1, file, 10)).await;
        assert!(error.is_some());
    }
}
