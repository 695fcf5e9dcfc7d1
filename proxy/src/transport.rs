//! Every socket of the data plane is made here: the listeners that take service traffic and
//! the connections to endpoints (component-to-component connections are `berth_proto`'s).
//! Nagle is off both ways: a proxy adds its own latency only if it holds small writes back.

use crate::error::ProxyError;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Accept backlog: bursts of new connections queue here rather than being refused.
const BACKLOG: u32 = 4096;

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ProxyError> {
    let bind = |source| ProxyError::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(bind)?;
    // A restarted proxy rebinds at once, despite connections of its predecessor in TIME_WAIT.
    socket.set_reuseaddr(true).map_err(bind)?;
    socket.bind(addr).map_err(bind)?;
    socket.listen(BACKLOG).map_err(bind)
}

/// Prepares an accepted downstream connection.
pub fn accepted(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
}

pub async fn connect(endpoint: SocketAddr, timeout: Duration) -> Result<TcpStream, ProxyError> {
    match tokio::time::timeout(timeout, TcpStream::connect(endpoint)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(source)) => Err(ProxyError::Connect { endpoint, source }),
        Err(_) => Err(ProxyError::ConnectTimeout {
            endpoint,
            timeout_ms: timeout.as_millis() as u64,
        }),
    }
}
