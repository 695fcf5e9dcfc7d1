//! L4: each client connection goes to one endpoint, chosen when it arrives; bytes are copied
//! both ways until both sides are done. Half-close is kept: when one side finishes sending
//! (EOF), the other side's write half is shut down and the opposite direction keeps flowing,
//! so request/response protocols that signal "done" by closing their write side still work.
//! A failed connect is retried on another endpoint before the client notices anything.
//! The client side may be TLS (terminated by the listener) or plain TCP.

use crate::body::{InFlight, Lease};
use crate::service::ServicePort;
use crate::transport;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};

pub(crate) async fn forward<S>(service: Arc<ServicePort>, mut downstream: S, client: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    service.stats.requests.fetch_add(1, Relaxed);
    service.deposit();
    let _in_flight = InFlight::new(service.clone());
    let start = Instant::now();
    let mut tried = Vec::new();
    let mut connected = None;
    for attempt in 0..service.retry.max_attempts {
        if attempt > 0 && !service.may_retry() {
            break;
        }
        let Some(endpoint) = service.pick(client.ip(), &tried) else {
            break;
        };
        tried.push(endpoint.addr);
        let lease = Lease::new(endpoint.clone());
        let began = Instant::now();
        match transport::connect(endpoint.addr, service.connect_timeout).await {
            Ok(upstream) => {
                service.record(&endpoint, began.elapsed(), false);
                connected = Some((upstream, lease));
                break;
            }
            Err(error) => {
                tracing::debug!(service = %service.name, %error, "connect failed");
                service.record(&endpoint, began.elapsed(), true);
            }
        }
    }
    service.stats.latency.observe(start.elapsed());
    let Some((mut upstream, _lease)) = connected else {
        service.stats.errors.fetch_add(1, Relaxed);
        tracing::debug!(service = %service.name, %client, "no endpoint took the connection");
        return;
    };
    // copy_bidirectional shuts down each side's write half when the other side's read ends.
    if let Err(error) = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
        tracing::debug!(service = %service.name, %client, %error, "connection ended with an error");
    }
}
