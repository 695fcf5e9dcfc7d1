//! The HTTP/1.1 fast path: one task per client connection reads request heads into a reused
//! buffer, forwards each request on a pooled plain connection to the endpoint the balancer
//! picks, and streams the response back, all without hyper, channels or per-request tasks.
//! A request costs about four system calls (read from the client, one vectored write of head
//! and body to the endpoint, read the response, one vectored write to the client), the same
//! as nginx.
//!
//! ```text
//!  client --bytes--> Session::run: parse head (h1_codec) ----------> forward():
//!     ^                  | h2c preface, HTTP/1.0, Upgrade,           pick, pool checkout,
//!     |                  | Expect, absolute-form, odd codings        send head + body,
//!     |                  v                                           read response head
//!     |               hyper (http::serve_hyper), buffered bytes      (retries, budget,
//!     |               put back in front of the stream                 request timeout)
//!     +--------- relay(): response head + body (Content-Length, chunked, or to close) ---+
//! ```
//!
//! The policies are the hyper path's (`http`): per-request balancing, in-flight accounting,
//! outlier detection on failed connects and 5xx, retries within the budget (a failed connect
//! or a request that never got through whole: any request; a failed exchange: idempotent
//! requests without a body), the request timeout up to the response head, X-Forwarded-For
//! and X-Forwarded-Proto, and the same metrics. A pooled connection that turns out closed
//! before answering is the keep-alive race, not the endpoint's fault: the request goes again
//! on a new connection to the same endpoint (twice at most) without counting as an attempt.

use crate::body::{InFlight, Lease};
use crate::endpoint::Endpoint;
use crate::error::ProxyError;
use crate::h1_codec::{self, Chunked, Framing, Parse, RequestHead, ResponseHead};
use crate::pool::{Upstream, UPSTREAM_BUFFER};
use crate::service::ServicePort;
use bytes::{Buf, Bytes, BytesMut};
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;

/// How long a client connection may wait for (the rest of) a request head, idle keep-alive
/// included (hyper's header read timeout): closed after 30 to 60 s without a request.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// The client connection's read buffer: heads, and request bodies on their way through.
const CLIENT_BUFFER: usize = 16 * 1024;
/// Below this much free room a buffer grows before the next read.
const MIN_READ: usize = 4 * 1024;

/// Serves one client connection until it closes, or until the listener is removed and the
/// request in flight is answered. `secure`: it came over TLS (X-Forwarded-Proto: https).
pub(crate) async fn serve<S>(
    server: Arc<auto::Builder<TokioExecutor>>,
    service: Arc<ServicePort>,
    stream: S,
    client: SocketAddr,
    secure: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let listener = service.clone();
    let closed = listener.closed();
    tokio::pin!(closed);
    let mut timers = Timers {
        idle: Box::pin(tokio::time::sleep(HEAD_TIMEOUT)),
        idle_since: 0,
        request: Box::pin(tokio::time::sleep(service.request_timeout)),
        request_armed: 0,
    };
    let mut session = Session {
        stream,
        service,
        client,
        client_ip: client.ip().to_string().into_bytes(),
        proto: if secure { b"https" } else { b"http" },
        buf: BytesMut::with_capacity(CLIENT_BUFFER),
        head: Vec::with_capacity(1024),
        out: Vec::with_capacity(1024),
        tried: Vec::new(),
        exchanges: 0,
        body_taken: false,
        body_sent: false,
    };
    if session.run(closed.as_mut(), &mut timers).await == End::Fallback {
        let Session {
            stream,
            service,
            mut buf,
            ..
        } = session;
        let prefix = buf.split().freeze();
        crate::http::serve_hyper(server, service, Rewind { prefix, stream }, client, secure).await;
    }
}

#[derive(Debug, PartialEq, Eq)]
enum End {
    Closed,
    /// The rest of the connection is hyper's, from the head at the start of `buf` on.
    Fallback,
}

struct Session<S> {
    stream: S,
    service: Arc<ServicePort>,
    client: SocketAddr,
    /// The client's address as X-Forwarded-For gets it.
    client_ip: Vec<u8>,
    proto: &'static [u8],
    /// Bytes from the client not yet used: the next head, or the body on its way through.
    buf: BytesMut,
    /// The head to send to the endpoint.
    head: Vec<u8>,
    /// The head to send to the client.
    out: Vec<u8>,
    tried: Vec<SocketAddr>,
    /// Exchanges begun on the connection: what the timers check against.
    exchanges: u64,
    /// Bytes of the current request's body left `buf`: it cannot be sent again.
    body_taken: bool,
    /// The current request's body went to the endpoint whole.
    body_sent: bool,
}

/// The connection's two timers, armed once and re-armed only when they fire, so that a
/// request costs no timer registration. A timer armed for an earlier exchange fires early:
/// it is then re-armed for the current one.
struct Timers {
    /// Head wait: fires with no exchange since `idle_since` (a count of exchanges): idle.
    idle: Pin<Box<Sleep>>,
    idle_since: u64,
    /// Request timeout of the exchange numbered `request_armed`.
    request: Pin<Box<Sleep>>,
    request_armed: u64,
}

/// A response head from an endpoint, and what the exchange holds until its body is through.
struct Answer {
    endpoint: Arc<Endpoint>,
    lease: Lease,
    upstream: Upstream,
    response: ResponseHead,
    /// When the response head was in.
    answered: Instant,
}

/// Why a request got no answer from an endpoint.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("no ready endpoint")]
    NoEndpoint,
    #[error(transparent)]
    Connect(ProxyError),
    #[error("upstream {endpoint}: {error}")]
    Upstream {
        endpoint: SocketAddr,
        error: io::Error,
    },
    #[error("no response head within the request timeout")]
    Timeout,
    #[error("malformed chunked request body")]
    BadBody,
    #[error("the client went away")]
    ClientGone,
}

impl Failure {
    fn status(&self) -> Option<u16> {
        match self {
            Failure::NoEndpoint => Some(503),
            Failure::Connect(_) | Failure::Upstream { .. } => Some(502),
            Failure::Timeout => Some(504),
            Failure::BadBody => Some(400),
            Failure::ClientGone => None,
        }
    }
}

/// A failed step of an exchange, by the side that failed.
enum Broken {
    /// `answered`: some of a response had arrived.
    Upstream {
        error: io::Error,
        answered: bool,
    },
    Client(Failure),
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn run(
        &mut self,
        mut closed: Pin<&mut impl Future<Output = ()>>,
        timers: &mut Timers,
    ) -> End {
        let mut closing = false;
        loop {
            let head = loop {
                if !self.buf.is_empty() {
                    let parsed = h1_codec::parse_request(
                        &self.buf,
                        &self.client_ip,
                        self.proto,
                        &mut self.head,
                    );
                    match parsed {
                        Parse::Complete(head) => break head,
                        Parse::Partial => {}
                        Parse::Fallback => return End::Fallback,
                        Parse::Reject(status) => {
                            h1_codec::local_response(&mut self.out, status, false, true);
                            let _ = self.write_out_and_close().await;
                            return End::Closed;
                        }
                    }
                } else if closing {
                    return End::Closed;
                }
                reserve(&mut self.buf, CLIENT_BUFFER);
                tokio::select! {
                    biased;
                    () = closed.as_mut(), if !closing => closing = true,
                    read = self.stream.read_buf(&mut self.buf) => match read {
                        Ok(n) if n > 0 => {}
                        _ => return End::Closed,
                    },
                    () = timers.idle.as_mut() => {
                        if timers.idle_since == self.exchanges {
                            return End::Closed;
                        }
                        timers.idle_since = self.exchanges;
                        timers.idle.as_mut().reset((Instant::now() + HEAD_TIMEOUT).into());
                    }
                }
            };
            let mut head = head;
            head.keep_alive &= !closing;
            if !self.exchange(head, timers).await {
                let _ = self.stream.shutdown().await;
                return End::Closed;
            }
        }
    }

    /// One request and its response; returns whether the connection stays open.
    async fn exchange(&mut self, head: RequestHead, timers: &mut Timers) -> bool {
        let service = self.service.clone();
        let start = Instant::now();
        service.stats.requests.fetch_add(1, Relaxed);
        service.deposit();
        let _in_flight = InFlight::new(service.clone());
        self.buf.advance(head.len);
        self.body_taken = false;
        self.body_sent = head.framing.is_empty();
        self.exchanges += 1;
        let exchange = self.exchanges;
        // Dropped before the answer is used: it borrows the session.
        let forwarded = {
            let forward = self.forward(&service, &head, start);
            tokio::pin!(forward);
            loop {
                tokio::select! {
                    biased;
                    forwarded = forward.as_mut() => break forwarded,
                    () = timers.request.as_mut() => {
                        if timers.request_armed == exchange {
                            break Err(Failure::Timeout);
                        }
                        timers.request_armed = exchange;
                        timers.request.as_mut().reset((start + service.request_timeout).into());
                    }
                }
            }
        };
        let answered = match &forwarded {
            Ok(answer) => answer.answered,
            Err(_) => Instant::now(),
        };
        service.stats.latency.observe(answered - start);
        let mut answer = match forwarded {
            Ok(answer) => answer,
            Err(failure) => {
                tracing::debug!(service = %service.name, %failure, "request failed");
                let Some(status) = failure.status() else {
                    return false;
                };
                if status >= 500 {
                    service.stats.errors.fetch_add(1, Relaxed);
                }
                // A body left unread would be taken for the next request: close instead.
                let close = !head.keep_alive || !self.body_sent;
                h1_codec::local_response(&mut self.out, status, head.is_head, close);
                return if close {
                    let _ = self.write_out_and_close().await;
                    false
                } else {
                    self.stream.write_all(&self.out).await.is_ok()
                        && self.stream.flush().await.is_ok()
                };
            }
        };
        if answer.response.status >= 500 {
            service.stats.errors.fetch_add(1, Relaxed);
        }
        match self
            .relay(&mut answer.upstream, answer.response.framing)
            .await
        {
            Ok(()) => {
                let Answer {
                    endpoint,
                    lease,
                    upstream,
                    response,
                    ..
                } = answer;
                if response.reusable && upstream.buf.is_empty() {
                    endpoint.pool().checkin_upstream(upstream);
                }
                drop(lease);
                !response.close_client && self.stream.flush().await.is_ok()
            }
            Err(Broken::Upstream { error, .. }) => {
                // The client has part of a response: only the closing connection can tell it.
                tracing::debug!(service = %service.name, %error, "response body cut short");
                false
            }
            Err(Broken::Client(_)) => false,
        }
    }

    /// Sends the request to an endpoint, retrying elsewhere where that is safe and the budget
    /// allows; returns the response head.
    async fn forward(
        &mut self,
        service: &ServicePort,
        head: &RequestHead,
        start: Instant,
    ) -> Result<Answer, Failure> {
        let replayable = head.framing.is_empty() && head.idempotent;
        self.tried.clear();
        let mut attempts = 0;
        let mut failure = Failure::NoEndpoint;
        // The endpoint to try again on a new connection after a stale pooled one.
        let mut again: Option<Arc<Endpoint>> = None;
        let mut stale = 0;
        loop {
            let fresh = again.is_some();
            let endpoint = match again.take() {
                Some(endpoint) => endpoint,
                None => {
                    if attempts >= service.retry.max_attempts
                        || (attempts > 0 && !service.may_retry())
                    {
                        break;
                    }
                    attempts += 1;
                    let Some(endpoint) = service.pick(self.client.ip(), &self.tried) else {
                        break;
                    };
                    self.tried.push(endpoint.addr);
                    endpoint
                }
            };
            let lease = Lease::new(endpoint.clone());
            let sent = if attempts == 1 && !fresh {
                start
            } else {
                Instant::now()
            };
            let checkout =
                endpoint
                    .pool()
                    .checkout_upstream(endpoint.addr, service.connect_timeout, fresh);
            let mut upstream = match checkout.await {
                Ok(upstream) => upstream,
                Err(error) => {
                    service.record(&endpoint, sent.elapsed(), error.is_endpoint_failure());
                    failure = Failure::Connect(error);
                    continue;
                }
            };
            let exchanged = match self.send(&mut upstream, head).await {
                Ok(()) => self.read_response(&mut upstream, head).await,
                Err(broken) => Err(broken),
            };
            let (error, answered) = match exchanged {
                Ok(response) => {
                    let answered = Instant::now();
                    service.record(&endpoint, answered - sent, response.status >= 500);
                    return Ok(Answer {
                        endpoint,
                        lease,
                        upstream,
                        response,
                        answered,
                    });
                }
                Err(Broken::Client(failure)) => return Err(failure),
                Err(Broken::Upstream { error, answered }) => (error, answered),
            };
            // Sent again, the request must be whole: no byte of its body may have left `buf`;
            // and an endpoint that may have acted on it gets it again only if that is safe.
            let whole = !self.body_taken;
            let resend = whole && (!self.body_sent || replayable);
            if resend && !answered && upstream.reused && stale < 2 {
                stale += 1;
                again = Some(endpoint);
                continue;
            }
            service.record(&endpoint, sent.elapsed(), true);
            failure = Failure::Upstream {
                endpoint: endpoint.addr,
                error,
            };
            if !resend {
                break;
            }
        }
        Err(failure)
    }

    /// Writes the request head and body to the endpoint: the head with the first body bytes
    /// in one vectored write, the rest as it comes from the client.
    async fn send(&mut self, upstream: &mut Upstream, head: &RequestHead) -> Result<(), Broken> {
        let stream = &mut upstream.stream;
        match head.framing {
            Framing::Empty | Framing::Close => stream
                .write_all(&self.head)
                .await
                .map_err(upstream_broken)?,
            Framing::Length(length) => {
                let first = length.min(self.buf.len() as u64) as usize;
                write_two(stream, &self.head, &self.buf[..first])
                    .await
                    .map_err(upstream_broken)?;
                self.take_body(first);
                let mut left = length - first as u64;
                while left > 0 {
                    self.read_client().await?;
                    let take = left.min(self.buf.len() as u64) as usize;
                    stream
                        .write_all(&self.buf[..take])
                        .await
                        .map_err(upstream_broken)?;
                    self.take_body(take);
                    left -= take as u64;
                }
            }
            Framing::Chunked => {
                let mut chunked = Chunked::default();
                let bad = |_| Broken::Client(Failure::BadBody);
                let first = chunked.scan(&self.buf).map_err(bad)?;
                write_two(stream, &self.head, &self.buf[..first])
                    .await
                    .map_err(upstream_broken)?;
                self.take_body(first);
                while !chunked.is_done() {
                    self.read_client().await?;
                    let take = chunked.scan(&self.buf).map_err(bad)?;
                    stream
                        .write_all(&self.buf[..take])
                        .await
                        .map_err(upstream_broken)?;
                    self.take_body(take);
                }
            }
        }
        self.body_sent = true;
        Ok(())
    }

    /// Reads the response head; interim (1xx) responses go to the client on the way.
    async fn read_response(
        &mut self,
        upstream: &mut Upstream,
        head: &RequestHead,
    ) -> Result<ResponseHead, Broken> {
        let mut answered = false;
        loop {
            if !upstream.buf.is_empty() {
                match h1_codec::parse_response(&upstream.buf, head, &mut self.out) {
                    Ok(Some(response)) => {
                        upstream.buf.advance(response.len);
                        if response.status >= 200 {
                            return Ok(response);
                        }
                        answered = true;
                        self.write_out()
                            .await
                            .map_err(|_| Broken::Client(Failure::ClientGone))?;
                        continue;
                    }
                    Ok(None) => {}
                    Err(reason) => {
                        return Err(Broken::Upstream {
                            error: io::Error::new(io::ErrorKind::InvalidData, reason),
                            answered: true,
                        })
                    }
                }
            }
            reserve(&mut upstream.buf, UPSTREAM_BUFFER);
            let read = upstream.stream.read_buf(&mut upstream.buf).await;
            let error = match read {
                Ok(0) => io::ErrorKind::UnexpectedEof.into(),
                Ok(_) => continue,
                Err(error) => error,
            };
            return Err(Broken::Upstream {
                error,
                answered: answered || !upstream.buf.is_empty(),
            });
        }
    }

    /// Writes the response head (in `out`) and streams the body to the client.
    async fn relay(&mut self, upstream: &mut Upstream, framing: Framing) -> Result<(), Broken> {
        let gone = |_| Broken::Client(Failure::ClientGone);
        match framing {
            Framing::Empty => self.write_out().await.map_err(gone)?,
            Framing::Length(length) => {
                let first = length.min(upstream.buf.len() as u64) as usize;
                write_two(&mut self.stream, &self.out, &upstream.buf[..first])
                    .await
                    .map_err(gone)?;
                upstream.buf.advance(first);
                let mut left = length - first as u64;
                while left > 0 {
                    read_upstream(upstream).await?;
                    let take = left.min(upstream.buf.len() as u64) as usize;
                    self.stream
                        .write_all(&upstream.buf[..take])
                        .await
                        .map_err(gone)?;
                    upstream.buf.advance(take);
                    left -= take as u64;
                }
            }
            Framing::Chunked => {
                let mut chunked = Chunked::default();
                let bad = |_| Broken::Upstream {
                    error: io::Error::new(io::ErrorKind::InvalidData, "malformed chunked body"),
                    answered: true,
                };
                let first = chunked.scan(&upstream.buf).map_err(bad)?;
                write_two(&mut self.stream, &self.out, &upstream.buf[..first])
                    .await
                    .map_err(gone)?;
                upstream.buf.advance(first);
                while !chunked.is_done() {
                    read_upstream(upstream).await?;
                    let take = chunked.scan(&upstream.buf).map_err(bad)?;
                    self.stream
                        .write_all(&upstream.buf[..take])
                        .await
                        .map_err(gone)?;
                    upstream.buf.advance(take);
                }
            }
            Framing::Close => {
                write_two(&mut self.stream, &self.out, &upstream.buf)
                    .await
                    .map_err(gone)?;
                upstream.buf.clear();
                loop {
                    reserve(&mut upstream.buf, UPSTREAM_BUFFER);
                    match upstream.stream.read_buf(&mut upstream.buf).await {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(error) => {
                            return Err(Broken::Upstream {
                                error,
                                answered: true,
                            })
                        }
                    }
                    self.stream.write_all(&upstream.buf).await.map_err(gone)?;
                    upstream.buf.clear();
                }
            }
        }
        Ok(())
    }

    fn take_body(&mut self, n: usize) {
        self.buf.advance(n);
        self.body_taken |= n > 0;
    }

    /// Reads more of the request body.
    async fn read_client(&mut self) -> Result<(), Broken> {
        reserve(&mut self.buf, CLIENT_BUFFER);
        match self.stream.read_buf(&mut self.buf).await {
            Ok(n) if n > 0 => Ok(()),
            _ => Err(Broken::Client(Failure::ClientGone)),
        }
    }

    async fn write_out(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.out).await?;
        self.stream.flush().await
    }

    async fn write_out_and_close(&mut self) -> io::Result<()> {
        self.write_out().await?;
        self.stream.shutdown().await
    }
}

fn upstream_broken(error: io::Error) -> Broken {
    Broken::Upstream {
        error,
        answered: false,
    }
}

/// Reads more of a response body; the endpoint closing first is an error.
async fn read_upstream(upstream: &mut Upstream) -> Result<(), Broken> {
    reserve(&mut upstream.buf, UPSTREAM_BUFFER);
    match upstream.stream.read_buf(&mut upstream.buf).await {
        Ok(n) if n > 0 => Ok(()),
        Ok(_) => Err(Broken::Upstream {
            error: io::ErrorKind::UnexpectedEof.into(),
            answered: true,
        }),
        Err(error) => Err(Broken::Upstream {
            error,
            answered: true,
        }),
    }
}

/// Makes room for a read (reclaiming the space of consumed bytes first).
fn reserve(buf: &mut BytesMut, size: usize) {
    if buf.capacity() - buf.len() < MIN_READ {
        buf.reserve(size);
    }
}

/// Writes `first` then `second` with as few (vectored) writes as the stream takes.
async fn write_two<W>(writer: &mut W, mut first: &[u8], mut second: &[u8]) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    while !first.is_empty() && !second.is_empty() {
        let n = writer
            .write_vectored(&[IoSlice::new(first), IoSlice::new(second)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if n < first.len() {
            first = &first[n..];
        } else {
            second = &second[n - first.len()..];
            first = &[];
        }
    }
    writer.write_all(first).await?;
    writer.write_all(second).await
}

/// A client stream with the bytes already read from it put back in front, for hyper to
/// read them again.
pub(crate) struct Rewind<S> {
    prefix: Bytes,
    stream: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix[..n]);
        this.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rewind_reads_the_put_back_bytes_first() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut rewind = Rewind {
            prefix: Bytes::from_static(b"GET / "),
            stream: client,
        };
        server.write_all(b"HTTP/1.1\r\n").await.unwrap();
        drop(server);
        let mut all = String::new();
        rewind.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn write_two_writes_both_in_order() {
        // A small pipe forces partial writes at every split.
        let (mut writer, mut reader) = tokio::io::duplex(7);
        let read = tokio::spawn(async move {
            let mut all = Vec::new();
            reader.read_to_end(&mut all).await.unwrap();
            all
        });
        write_two(&mut writer, b"head:", b"0123456789abcdef")
            .await
            .unwrap();
        write_two(&mut writer, b"", b"|tail").await.unwrap();
        write_two(&mut writer, b"|only", b"").await.unwrap();
        drop(writer);
        assert_eq!(read.await.unwrap(), b"head:0123456789abcdef|tail|only");
    }
}
