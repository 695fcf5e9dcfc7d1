//! The one place where gRPC servers and client channels are built. Every connection between
//! berth components goes through here, so that mutual TLS is a change in this file only.

use std::time::Duration;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};

/// Where a listener binds when not told otherwise: loopback only.
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:7443";

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{addr:?} is not a valid server address: {source}")]
    InvalidAddress {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("cannot reach the berth server at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
}

/// A server builder with berth's settings.
pub fn server() -> Server {
    Server::builder()
        // The control plane serves its registry (OCI distribution API) on the gRPC port, and
        // registry clients (skopeo, docker) speak HTTP/1.1. gRPC clients still get HTTP/2:
        // the connection's preface tells the two apart.
        .accept_http1(true)
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
}

/// The connections a server accepts on `listener`, with berth's socket settings. (A server
/// given its own listener does not apply the builder's TCP settings: without TCP_NODELAY
/// here, every unary call waits out a 40 ms delayed ACK.)
pub fn incoming(listener: tokio::net::TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// What a stream connection (see [`split_incoming`]) sends first, before its frames.
pub const STREAM_PREFACE: &[u8; 8] = b"BERTH/S1";

/// How long an accepted connection may take to send its first bytes before it is handed to
/// the gRPC server as it is (which then applies its own timeouts).
const PREFACE_WAIT: Duration = Duration::from_secs(3);

/// The connections of one listener, told apart by their first bytes: gRPC and HTTP clients
/// to the server (the first stream, for `serve_with_incoming`), and the stream connections
/// members keep to each other for Raft's replication traffic (which opened with
/// [`STREAM_PREFACE`], already consumed) to `streams`. Both with TCP_NODELAY. Accepting stops
/// once the gRPC server drops its side.
pub fn split_incoming(
    listener: tokio::net::TcpListener,
) -> (
    impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> + Send + 'static,
    tokio::sync::mpsc::UnboundedReceiver<tokio::net::TcpStream>,
) {
    let (grpc_tx, grpc_rx) = tokio::sync::mpsc::unbounded_channel();
    let (streams_tx, streams_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = grpc_tx.closed() => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors and the like: a moment later may do.
                    tracing::warn!("accepting a connection: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let grpc_tx = grpc_tx.clone();
            let streams_tx = streams_tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(PREFACE_WAIT, opens_with_preface(&stream)).await {
                    Ok(Ok(true)) => {
                        let mut stream = stream;
                        let mut preface = [0u8; STREAM_PREFACE.len()];
                        if tokio::io::AsyncReadExt::read_exact(&mut stream, &mut preface)
                            .await
                            .is_ok()
                        {
                            let _ = streams_tx.send(stream);
                        }
                    }
                    Ok(Err(_)) => {}
                    Ok(Ok(false)) | Err(_) => {
                        let _ = grpc_tx.send(Ok(stream));
                    }
                }
            });
        }
    });
    (
        tokio_stream::wrappers::UnboundedReceiverStream::new(grpc_rx),
        streams_rx,
    )
}

/// Whether the connection's first bytes are [`STREAM_PREFACE`]; `false` as soon as they
/// differ from it (an HTTP request or the HTTP/2 preface), or the peer stops sending.
async fn opens_with_preface(stream: &tokio::net::TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; STREAM_PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 || buf[..n] != STREAM_PREFACE[..n] {
            return Ok(false);
        }
        if n == STREAM_PREFACE.len() {
            return Ok(true);
        }
        // Part of it so far: wait for the rest.
        stream.readable().await?;
        tokio::time::sleep(Duration::from_micros(100)).await;
    }
}

/// A stream connection to the member at `addr` (`host:port` or a URL), preface sent.
pub async fn connect_stream(addr: &str) -> Result<tokio::net::TcpStream, TransportError> {
    let host_port = addr
        .split_once("://")
        .map_or(addr, |(_, rest)| rest)
        .trim_end_matches('/');
    let unreachable = |reason: String| TransportError::Unreachable {
        addr: addr.to_string(),
        reason,
    };
    let mut stream = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(host_port),
    )
    .await
    .map_err(|_| unreachable("connect timed out".into()))?
    .map_err(|e| unreachable(e.to_string()))?;
    stream
        .set_nodelay(true)
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::io::AsyncWriteExt::write_all(&mut stream, STREAM_PREFACE)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(stream)
}

fn endpoint(addr: &str) -> Result<Endpoint, TransportError> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(uri)
        .map_err(|source| TransportError::InvalidAddress {
            addr: addr.to_string(),
            source,
        })?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        // Short keepalives: a connection that died in a partition is noticed within seconds,
        // not left to TCP's retransmission back-off.
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(1))
        .keep_alive_while_idle(true))
}

/// A channel to `addr` (`host:port` or a URL), connected now: an unreachable server is
/// reported here, in one line.
pub async fn connect(addr: &str) -> Result<Channel, TransportError> {
    endpoint(addr)?
        .connect()
        .await
        .map_err(|e| TransportError::Unreachable {
            addr: addr.to_string(),
            reason: root_cause(&e),
        })
}

/// A channel to `addr` that connects on first use (for peers that may not be up yet).
pub fn connect_lazy(addr: &str) -> Result<Channel, TransportError> {
    Ok(endpoint(addr)?.connect_lazy())
}

/// The innermost cause of an error: "Connection refused (os error 111)", not a chain of
/// "transport error: ...".
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// An HTTP/1.1 client for the registry API every member serves on its API address (plain
/// HTTP until mutual TLS lands here): TCP_NODELAY, a short connect timeout, and a pool that
/// keeps a few idle connections per member so a pull's many blob requests reuse them. `B` is
/// the request body type (the registry client streams blobs through its own). TCP keepalives
/// notice within half a minute a member that went away while a slow answer (a manifest PUT)
/// is awaited.
pub fn http_client<B>(
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, B>
where
    B: http_body::Body + Send,
    B::Data: Send,
{
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(3)));
    connector.set_keepalive(Some(Duration::from_secs(10)));
    connector.set_keepalive_interval(Some(Duration::from_secs(5)));
    connector.set_keepalive_retries(Some(3));
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(8)
        .build(connector)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt;

    async fn read_n(stream: &mut tokio::net::TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
            .await
            .expect("bytes arrive in time")
            .expect("read");
        buf
    }

    /// One port, two kinds of connection: those that open with the preface reach `streams`
    /// without it (also when it comes in pieces), everything else reaches the server whole.
    /// Once the server's side is dropped, the port is let go.
    #[tokio::test]
    async fn a_listener_splits_by_the_first_bytes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (mut grpc, mut streams) = split_incoming(listener);

        let mut client = connect_stream(&addr.to_string()).await.expect("connects");
        client.write_all(b"hello").await.expect("write");
        let mut accepted = streams.recv().await.expect("a stream connection");
        assert_eq!(read_n(&mut accepted, 5).await, b"hello");

        let mut http = tokio::net::TcpStream::connect(addr).await.expect("connect");
        http.write_all(b"GET /v2/ HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let mut accepted = grpc.next().await.expect("a connection").expect("accepted");
        assert_eq!(read_n(&mut accepted, 8).await, b"GET /v2/");

        let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
        slow.write_all(&STREAM_PREFACE[..3]).await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        slow.write_all(&STREAM_PREFACE[3..]).await.expect("write");
        slow.write_all(b"x").await.expect("write");
        let mut accepted = streams.recv().await.expect("a stream connection");
        assert_eq!(read_n(&mut accepted, 1).await, b"x");

        // A connection that only looks like the preface at first is the server's, whole.
        let mut almost = tokio::net::TcpStream::connect(addr).await.expect("connect");
        almost.write_all(b"BERTH/X").await.expect("write");
        let mut accepted = grpc.next().await.expect("a connection").expect("accepted");
        assert_eq!(read_n(&mut accepted, 7).await, b"BERTH/X");

        drop(grpc);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(_) => break,
                Err(error) if std::time::Instant::now() > deadline => {
                    panic!("the port is still held: {error}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}
