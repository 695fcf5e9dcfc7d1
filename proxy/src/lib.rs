//! berth-proxy: service load balancing on every node. Each service port gets a listener that
//! forwards to the port's endpoints, either as bytes (L4, TCP) or as HTTP requests (L7,
//! HTTP/1.1 and h2c), with the balancing, health and retry decisions made per connection (L4)
//! or per request (L7).
//!
//! ```text
//!                   Proxy::update(service port, endpoints)  (endpoints controller / config)
//!                                  |  swaps the set; listeners stay bound
//!                                  v
//!  client --> listener --> ServicePort: balancer picks --> Endpoint (pool, EWMA, outlier)
//!             (transport)   tcp.rs: copy both ways          --> pod
//!                           http.rs: per request, retries, timeout, X-Forwarded-*
//!  admin listener: GET /metrics <-- Stats of every service port and endpoint
//! ```
//!
//! Connections are served by one single-threaded runtime per core (`worker`), each with its
//! own upstream connection pools, so a request stays on one thread from client to endpoint.
//!
//! The decisions are pure and tested without sockets: `balancer` (power of two choices over
//! peak-EWMA cost, round robin, client-IP rendezvous hashing), `outlier` (ejection with
//! back-off), `retry` (the budget), `ewma`. The rest is the thin async shell around them.

#![forbid(unsafe_code)]

mod admin;
pub mod balancer;
mod body;
pub mod config;
pub mod endpoint;
pub mod error;
pub mod ewma;
mod h1;
mod h1_codec;
pub mod health;
mod http;
pub mod metrics;
pub mod outlier;
mod pool;
mod proxy;
pub mod retry;
pub mod service;
mod tcp;
pub mod tls;
mod transport;
mod worker;

pub use balancer::Algorithm;
pub use config::{HealthCheckConfig, ListenerConfig, Mode, ProxyConfig, UpstreamProtocol};
pub use endpoint::EndpointSpec;
pub use error::ProxyError;
pub use proxy::Proxy;
pub use tls::{TlsConfig, TlsError};
