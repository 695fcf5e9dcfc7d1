//! berth-proxy: service load balancing on every node. Each service port gets a listener that
//! forwards to the port's endpoints, either as bytes (L4, TCP) or as HTTP requests (L7,
//! HTTP/1.1 and h2c), with the balancing, health and retry decisions made per connection (L4)
//! or per request (L7). A listener may terminate TLS first (`tls`: HTTP or bytes inside).
//!
//! ```text
//!         Proxy::update(service port, endpoints)   swaps the endpoint set
//!         Proxy::update_tls(service port, tls)     swaps the certificate (or TLS on/off)
//!         Proxy::remove(service port)              closes the socket; work in flight drains
//!                                  |  listeners stay bound through updates
//!                                  v
//!  client --> listener --> [TLS handshake] --> ServicePort: balancer picks --> Endpoint --> pod
//!             (transport)   (tls.rs, worker)    tcp.rs: copy both ways     (pool, EWMA, outlier,
//!                                               http.rs: per request,       active health)
//!                                               retries, X-Forwarded-*        ^
//!  health checker (one per service port, health.rs): TCP connect | GET path --+
//!  admin listener: GET /metrics <-- Stats of every service port and endpoint
//! ```
//!
//! The API the node agent drives (all by service port name, `<namespace>/<service>:<port>`
//! plus a suffix per address kind):
//! - `listen(ListenerConfig)` binds and serves; `ListenerConfig.tls: Option<TlsConfig>`
//!   (`TlsConfig::from_pem(tls.crt, tls.key)` checks the pair, errors before binding) and
//!   `ListenerConfig.health_check: Option<HealthCheckConfig>` (checked before binding too).
//! - `update(name, &[EndpointSpec])`: the new endpoint set; endpoints that stay keep state.
//! - `update_tls(name, Option<TlsConfig>)`: a renewed certificate (the Secret changed), or TLS
//!   turned on or off; new handshakes use it, established connections are not dropped.
//!   `listen` with a name in use is an error (`DuplicateListener`); changes of anything else
//!   (mode, balancer, health check, address) are `remove(name).await` then `listen`.
//! - `remove(name).await -> bool`: when it returns, the port is closed and may be bound again;
//!   the service port is gone from the metrics; TCP connections run on until they close, HTTP
//!   connections answer their request in flight and close.
//!
//! An endpoint gets new work only while it is ready (not terminating), passes its active
//! health checks (new endpoints start passing) and is not ejected by passive outlier
//! detection; when no ready endpoint qualifies, all ready ones are tried (panic mode), then
//! terminating ones.
//!
//! Connections are served by one single-threaded runtime per core (`worker`), each with its
//! own upstream connection pools, so a request stays on one thread from client to endpoint.
//!
//! The decisions are pure and tested without sockets: `balancer` (power of two choices over
//! peak-EWMA cost, round robin, client-IP rendezvous hashing), `outlier` (ejection with
//! back-off), `health::CheckState` (active check thresholds), `retry` (the budget), `ewma`.
//! The rest is the thin async shell around them.

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
