//! Connections to one endpoint, kept open between requests. HTTP/1.1 connections carry one
//! request at a time: idle ones wait in a stack (the most recently used first, so that a
//! quiet period lets the others time out), and a connection comes back only once its response
//! body was read to the end. HTTP/2 multiplexes: one shared connection per endpoint.
//! Dropping the pool (the endpoint left its set and its last work finished) closes them all.
//!
//! Two kinds of HTTP/1.1 connection are pooled: plain sockets with their read buffer
//! (`Upstream`, for the fast path in `h1`) and hyper's (for what hyper serves). A pooled socket
//! the endpoint closed meanwhile is noticed at checkout without a system call in the common
//! case: the reactor has seen the FIN and marked it readable.

use crate::body::RequestBody;
use crate::config::UpstreamProtocol;
use crate::error::ProxyError;
use crate::transport;
use bytes::BytesMut;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::net::TcpStream;

/// Idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE: usize = 512;
/// The read buffer of an upstream connection: a typical response (head and body) in one read.
pub(crate) const UPSTREAM_BUFFER: usize = 16 * 1024;

#[derive(Debug, Default)]
pub(crate) struct Pool {
    idle: Mutex<Vec<http1::SendRequest<RequestBody>>>,
    idle_upstreams: Mutex<Vec<Upstream>>,
    shared: Mutex<Option<http2::SendRequest<RequestBody>>>,
}

/// A plain HTTP/1.1 connection to an endpoint and the bytes read from it but not yet used.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub stream: TcpStream,
    pub buf: BytesMut,
    /// It carried an exchange before: a failure before any answer may just mean that the
    /// endpoint closed it while it was idle.
    pub reused: bool,
}

impl Upstream {
    /// Still open, with nothing unread: checked without a system call when the reactor saw
    /// no event on it since its last read.
    fn is_idle(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(
            self.stream.try_read(&mut probe),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock
        )
    }
}

pub(crate) enum Conn {
    Http1(http1::SendRequest<RequestBody>),
    Http2(http2::SendRequest<RequestBody>),
}

/// A request that failed; `request` is the request back if it was never sent.
pub(crate) struct SendError {
    pub error: hyper::Error,
    pub request: Option<Request<RequestBody>>,
}

impl From<TrySendError<Request<RequestBody>>> for SendError {
    fn from(mut error: TrySendError<Request<RequestBody>>) -> Self {
        let request = error.take_message();
        SendError {
            error: error.into_error(),
            request,
        }
    }
}

impl Conn {
    /// Sends `request`; an HTTP/1.1 connection is handed back for pooling once the response's
    /// headers are in.
    pub async fn send(
        self,
        request: Request<RequestBody>,
    ) -> Result<
        (
            Response<hyper::body::Incoming>,
            Option<http1::SendRequest<RequestBody>>,
        ),
        SendError,
    > {
        match self {
            Conn::Http1(mut sender) => {
                let response = sender.try_send_request(request).await?;
                Ok((response, Some(sender)))
            }
            Conn::Http2(mut sender) => {
                let response = sender.try_send_request(request).await?;
                Ok((response, None))
            }
        }
    }
}

impl Pool {
    /// A connection ready for a request: a pooled one (unless `fresh`), else a new one.
    pub async fn checkout(
        &self,
        endpoint: SocketAddr,
        protocol: UpstreamProtocol,
        connect_timeout: Duration,
        fresh: bool,
    ) -> Result<Conn, ProxyError> {
        match protocol {
            UpstreamProtocol::Http1 => {
                while let Some(mut sender) = (!fresh).then(|| self.pop_idle()).flatten() {
                    // Checked in right after its response ended, a connection may need a
                    // moment to become ready again, or turn out to be closing.
                    if !sender.is_closed() && sender.ready().await.is_ok() {
                        return Ok(Conn::Http1(sender));
                    }
                }
                let io = TokioIo::new(transport::connect(endpoint, connect_timeout).await?);
                let (sender, connection) = http1::Builder::new()
                    .handshake(io)
                    .await
                    .map_err(|source| ProxyError::Upstream { endpoint, source })?;
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%endpoint, %error, "upstream connection ended");
                    }
                });
                Ok(Conn::Http1(sender))
            }
            UpstreamProtocol::Http2 => {
                if let Some(sender) = self.shared_h2().filter(|_| !fresh) {
                    return Ok(Conn::Http2(sender));
                }
                let io = TokioIo::new(transport::connect(endpoint, connect_timeout).await?);
                let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                    .handshake(io)
                    .await
                    .map_err(|source| ProxyError::Upstream { endpoint, source })?;
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%endpoint, %error, "upstream connection ended");
                    }
                });
                *self.shared.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender.clone());
                Ok(Conn::Http2(sender))
            }
        }
    }

    /// A plain HTTP/1.1 connection: a pooled one (unless `fresh`), else a new one.
    pub async fn checkout_upstream(
        &self,
        endpoint: SocketAddr,
        connect_timeout: Duration,
        fresh: bool,
    ) -> Result<Upstream, ProxyError> {
        if !fresh {
            loop {
                let idle = self
                    .idle_upstreams
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pop();
                match idle {
                    Some(upstream) if upstream.is_idle() => return Ok(upstream),
                    Some(_) => continue,
                    None => break,
                }
            }
        }
        let stream = transport::connect(endpoint, connect_timeout).await?;
        Ok(Upstream {
            stream,
            buf: BytesMut::with_capacity(UPSTREAM_BUFFER),
            reused: false,
        })
    }

    /// Takes back a connection whose last response was read to the end and nothing more.
    pub fn checkin_upstream(&self, mut upstream: Upstream) {
        upstream.reused = true;
        let mut idle = self
            .idle_upstreams
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(upstream);
        }
    }

    fn pop_idle(&self) -> Option<http1::SendRequest<RequestBody>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn shared_h2(&self) -> Option<http2::SendRequest<RequestBody>> {
        let shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        shared.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// Takes back a connection whose response was read to the end.
    pub fn checkin(&self, sender: http1::SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }
}
