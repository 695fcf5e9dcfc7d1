//! The proxy's one error type. Every failure says where it came from — the downstream client,
//! the upstream endpoint, or the proxy itself — and the data path decides retries from the
//! variant, never from message text (Pingora's model).

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The endpoint refused or did not answer the connect: nothing was sent, so any request
    /// may go to another endpoint.
    #[error("connecting to endpoint {endpoint}: {source}")]
    Connect {
        endpoint: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to endpoint {endpoint}: no answer within {timeout_ms} ms")]
    ConnectTimeout {
        endpoint: SocketAddr,
        timeout_ms: u64,
    },
    /// The HTTP exchange with the endpoint failed after the connection was made.
    #[error("upstream {endpoint}: {source}")]
    Upstream {
        endpoint: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("service port {0:?} has no ready endpoint")]
    NoEndpoint(String),
    #[error("no service port named {0:?}: add its listener first")]
    UnknownServicePort(String),
    #[error("a listener named {0:?} exists already")]
    DuplicateListener(String),
    #[error("starting the proxy's worker threads: {0}")]
    Workers(#[source] std::io::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    InvalidHealthCheck(String),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl ProxyError {
    /// Whether the endpoint is to blame (counts toward its ejection).
    pub fn is_endpoint_failure(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect { .. }
                | ProxyError::ConnectTimeout { .. }
                | ProxyError::Upstream { .. }
        )
    }

    /// Whether the request surely never reached the endpoint, so even a non-idempotent one
    /// may be sent elsewhere.
    pub fn is_before_send(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect { .. } | ProxyError::ConnectTimeout { .. }
        )
    }
}
