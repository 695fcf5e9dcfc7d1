//! The members' write path on plain stream connections, beside gRPC: AppendEntries (leader
//! to follower: every write, every heartbeat) and forwarded writes (follower to leader). Each
//! microsecond of their round trips is on a write's path. A gRPC call here costs ~300 µs of
//! task hand-offs (the channel's buffer task, HTTP/2 connection tasks on both sides, a task
//! per stream); a frame written by the calling task and read by the connection's own task on
//! the other side skips all of them. The rare RPCs (vote, snapshot, read index) stay gRPC.
//!
//! The connection comes from `berth_proto::transport` (`connect_stream`, `split_incoming`),
//! like every other, and shares the member's port. On it, strictly one request, then its
//! answer:
//!
//! ```text
//! request    len u32 | kind u8 | body
//!              kind 1: AppendEntries, codec's append request
//!              kind 2: Forward, the command's JSON (as proposed)
//! answer     len u32 | body
//!              AppendEntries: codec's append response
//!              Forward: Result<CommandResult, String> as JSON
//! ```

use super::prevote::LeaderContact;
use super::proposer::Proposer;
use super::BerthRaft;
use bytes::Bytes;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// What a request asks for.
#[derive(Clone, Copy)]
pub enum Kind {
    AppendEntries = 1,
    Forward = 2,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        match byte {
            1 => Some(Kind::AppendEntries),
            2 => Some(Kind::Forward),
            _ => None,
        }
    }
}

/// The largest frame either side accepts (an AppendEntries of large entries).
const MAX_FRAME: usize = 256 << 20;

/// The answering side closes a connection that carried nothing for this long: its peer is
/// likely gone or cut off (a leader heartbeats far more often), and would open a new one.
const IDLE: Duration = Duration::from_secs(30);

/// The calling side reuses a connection only if it was used this recently, well within
/// [`IDLE`], so that it never sends a request on a connection the other side is closing (a
/// request that met a closed connection could not tell whether it had been acted on).
const REUSE_WITHIN: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Connect(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("malformed request: {0}")]
    Malformed(String),
}

/// A connection to one member. An exchange takes the connection out and puts it
/// back only once answered: a call abandoned half-way (a timeout) drops it, so no later call
/// can read an earlier call's answer.
pub struct Connection {
    addr: String,
    /// The connection, and when its last answer came.
    stream: Option<(BufReader<TcpStream>, Instant)>,
}

impl Connection {
    /// Connects on first use.
    pub fn new(addr: &str) -> Self {
        Connection {
            addr: addr.to_string(),
            stream: None,
        }
    }

    /// Sends an encoded request; its encoded answer.
    pub async fn call(&mut self, kind: Kind, request: &[u8]) -> Result<Bytes, WireError> {
        let mut stream = match self.stream.take() {
            Some((stream, used)) if used.elapsed() < REUSE_WITHIN => stream,
            _ => BufReader::new(
                berth_proto::transport::connect_stream(&self.addr)
                    .await
                    .map_err(|e| WireError::Connect(e.to_string()))?,
            ),
        };
        stream
            .get_mut()
            .write_all(&frame(&[&[kind as u8], request]))
            .await?;
        let answer = read_frame(&mut stream).await?;
        self.stream = Some((stream, Instant::now()));
        Ok(answer)
    }
}

/// `len u32 | parts...`, in one buffer: one write.
fn frame(parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

async fn read_frame(stream: &mut BufReader<TcpStream>) -> Result<Bytes, WireError> {
    let len = stream.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(body.into())
}

/// What answers requests: this member's Raft and its proposer.
#[derive(Clone)]
pub struct Handler {
    pub raft: BerthRaft,
    pub contact: LeaderContact,
    pub proposer: Proposer,
}

/// Answers the stream connections of `streams` until `stop`.
pub async fn serve(
    mut streams: tokio::sync::mpsc::UnboundedReceiver<TcpStream>,
    handler: Handler,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            stream = streams.recv() => stream,
            _ = stop.cancelled() => return,
        };
        let Some(stream) = stream else { return };
        let (handler, stop) = (handler.clone(), stop.clone());
        tokio::spawn(async move {
            let result = tokio::select! {
                result = answer(stream, &handler) => result,
                _ = stop.cancelled() => Ok(()),
            };
            if let Err(error) = result {
                tracing::debug!("raft stream connection closed: {error}");
            }
        });
    }
}

/// One connection: request, answer, until the leader closes it or goes quiet.
async fn answer(stream: TcpStream, handler: &Handler) -> Result<(), WireError> {
    let mut stream = BufReader::new(stream);
    loop {
        let request = match tokio::time::timeout(IDLE, read_frame(&mut stream)).await {
            Ok(Ok(request)) => request,
            Ok(Err(WireError::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Ok(())
            }
            Ok(Err(error)) => return Err(error),
            Err(_) => return Ok(()),
        };
        let (&kind, body) = request
            .split_first()
            .ok_or_else(|| WireError::Malformed("empty frame".into()))?;
        let body = request.slice_ref(body);
        let malformed = |e: &dyn std::fmt::Display| WireError::Malformed(e.to_string());
        let answer = match Kind::from_byte(kind) {
            Some(Kind::AppendEntries) => {
                super::service::append_entries(&handler.raft, &handler.contact, body)
                    .await
                    .map_err(|e| malformed(&e))?
            }
            Some(Kind::Forward) => super::service::forwarded(&handler.proposer, body)
                .await
                .map_err(|e| malformed(&e))?,
            None => return Err(malformed(&format!("unknown request kind {kind}"))),
        };
        stream.get_mut().write_all(&frame(&[&answer])).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call abandoned before its answer (a timeout) leaves nothing behind: the next call
    /// gets its own answer, not the late one. The peer here echoes each request's body,
    /// slowly for "slow".
    #[tokio::test]
    async fn an_abandoned_call_does_not_answer_the_next() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (_grpc, mut streams) = berth_proto::transport::split_incoming(listener);
        tokio::spawn(async move {
            while let Some(stream) = streams.recv().await {
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    while let Ok(request) = read_frame(&mut stream).await {
                        if &request[1..] == b"slow" {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                        let echo = frame(&[&request[1..]]);
                        if stream.get_mut().write_all(&echo).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });

        let mut connection = Connection::new(&addr);
        let answer = connection
            .call(Kind::Forward, b"first")
            .await
            .expect("answer");
        assert_eq!(&answer[..], b"first");
        let abandoned = tokio::time::timeout(
            Duration::from_millis(50),
            connection.call(Kind::Forward, b"slow"),
        )
        .await;
        assert!(abandoned.is_err(), "the slow call times out");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let answer = connection
            .call(Kind::Forward, b"next")
            .await
            .expect("answer");
        assert_eq!(&answer[..], b"next");
    }
}
