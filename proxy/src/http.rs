//! L7: HTTP/1.1 and h2c (prior knowledge, told apart by the connection preface) from clients,
//! balanced per request over pooled connections to endpoints.
//!
//! ```text
//!  client --h1/h2c--> serve() --request--> forward(): pick endpoint --pool--> endpoint
//!                         ^                   | failed connect: any request, elsewhere
//!                         |                   | failed exchange: idempotent + empty body only
//!                         +----response-------+ (max attempts, retry budget, request timeout)
//! ```

use crate::body::{InFlight, Lease, RequestBody, ResponseBody};
use crate::config::UpstreamProtocol;
use crate::endpoint::Endpoint;
use crate::error::ProxyError;
use crate::pool::SendError;
use crate::service::ServicePort;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, uri, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The server side of every L7 listener.
pub(crate) fn server() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Marks the requests of a client connection that came over TLS (X-Forwarded-Proto: https).
#[derive(Clone, Copy)]
pub(crate) struct Tls;

/// Serves one client connection (plain TCP, or TLS with `secure`) until it closes, or until
/// the listener is removed and the request in flight is answered. HTTP/1.1 to HTTP/1.1
/// endpoints takes the fast path (`h1`), which hands what it does not serve to hyper.
pub(crate) async fn serve<S>(
    server: Arc<auto::Builder<TokioExecutor>>,
    service: Arc<ServicePort>,
    stream: S,
    client: SocketAddr,
    secure: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match service.upstream {
        UpstreamProtocol::Http1 => crate::h1::serve(server, service, stream, client, secure).await,
        UpstreamProtocol::Http2 => serve_hyper(server, service, stream, client, secure).await,
    }
}

/// Serves one client connection with hyper (HTTP/1.1 or h2c).
pub(crate) async fn serve_hyper<S>(
    server: Arc<auto::Builder<TokioExecutor>>,
    service: Arc<ServicePort>,
    stream: S,
    client: SocketAddr,
    secure: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let listener = service.clone();
    let handler = service_fn(move |mut request: Request<Incoming>| {
        let service = service.clone();
        if secure {
            request.extensions_mut().insert(Tls);
        }
        async move { Ok::<_, Infallible>(handle(service, client.ip(), request).await) }
    });
    let connection = server.serve_connection(TokioIo::new(stream), handler);
    tokio::pin!(connection);
    let result = tokio::select! {
        biased;
        result = connection.as_mut() => result,
        () = listener.closed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%client, %error, "client connection ended");
    }
}

async fn handle(
    service: Arc<ServicePort>,
    client: IpAddr,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let start = Instant::now();
    service.stats.requests.fetch_add(1, Relaxed);
    service.deposit();
    let in_flight = InFlight::new(service.clone());
    let forwarded =
        tokio::time::timeout(service.request_timeout, forward(&service, client, request));
    let response = match forwarded.await {
        Ok(Ok((response, lease))) => {
            let (parts, body) = response.into_parts();
            let mut response =
                Response::from_parts(parts, ResponseBody::upstream(body, lease, in_flight));
            strip_hop_by_hop(response.headers_mut());
            response
        }
        Ok(Err(error)) => {
            tracing::debug!(service = %service.name, %error, "request failed");
            let status = match error {
                ProxyError::NoEndpoint(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            };
            local_response(status, in_flight)
        }
        Err(_) => local_response(StatusCode::GATEWAY_TIMEOUT, in_flight),
    };
    if response.status().is_server_error() {
        service.stats.errors.fetch_add(1, Relaxed);
    }
    service.stats.latency.observe(start.elapsed());
    response
}

fn local_response(status: StatusCode, in_flight: InFlight) -> Response<ResponseBody> {
    let text = match status {
        StatusCode::SERVICE_UNAVAILABLE => "no ready endpoint\n",
        StatusCode::GATEWAY_TIMEOUT => "upstream request timeout\n",
        _ => "upstream connect error or disconnect\n",
    };
    let mut response = Response::new(ResponseBody::local(text, in_flight));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// A replayable request's head, to send again after a failed exchange.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    fn request(&self) -> Request<RequestBody> {
        let mut request = Request::new(RequestBody::Empty);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// Sends the request to an endpoint, retrying elsewhere where that is safe and the budget
/// allows; returns the response with its lease on the endpoint.
async fn forward(
    service: &ServicePort,
    client: IpAddr,
    request: Request<Incoming>,
) -> Result<(Response<Incoming>, Lease), ProxyError> {
    let (mut parts, body) = request.into_parts();
    prepare_request(&mut parts, client, service.upstream);
    let body = if body.is_end_stream() {
        RequestBody::Empty
    } else {
        RequestBody::Streaming(body)
    };
    // Replaying is safe for an idempotent method without a body; the one clone it costs is
    // paid only when retries are possible at all.
    let replay =
        (service.retry.max_attempts > 1 && body.is_end_stream() && is_idempotent(&parts.method))
            .then(|| Replay {
                method: parts.method.clone(),
                uri: parts.uri.clone(),
                version: parts.version,
                headers: parts.headers.clone(),
            });
    let mut pending = Some(Request::from_parts(parts, body));
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last_error = None;
    let mut attempts = 0;
    // A request that a pooled connection turned out too stale to take goes to the same
    // endpoint on a new connection, without counting as an attempt (at most twice).
    let mut again: Option<Arc<Endpoint>> = None;
    let mut stale = 0;
    while attempts < service.retry.max_attempts {
        let request = match (pending.take(), &replay) {
            (Some(request), _) => request,
            (None, Some(replay)) => replay.request(),
            (None, None) => break,
        };
        let fresh = again.is_some();
        let endpoint = match again.take() {
            Some(endpoint) => endpoint,
            None => {
                if attempts > 0 && !service.may_retry() {
                    tracing::debug!(service = %service.name, "retry budget exhausted");
                    break;
                }
                attempts += 1;
                let Some(endpoint) = service.pick(client, &tried) else {
                    break;
                };
                tried.push(endpoint.addr);
                endpoint
            }
        };
        let mut lease = Lease::new(endpoint.clone());
        let sent = Instant::now();
        let checkout = endpoint.pool().checkout(
            endpoint.addr,
            service.upstream,
            service.connect_timeout,
            fresh,
        );
        let connection = match checkout.await {
            Ok(connection) => connection,
            Err(error) => {
                service.record(&endpoint, sent.elapsed(), error.is_endpoint_failure());
                pending = Some(request);
                last_error = Some(error);
                continue;
            }
        };
        match connection.send(request).await {
            Ok((response, connection)) => {
                let failed = response.status().is_server_error();
                service.record(&endpoint, sent.elapsed(), failed);
                lease.connection = connection;
                return Ok((response, lease));
            }
            Err(SendError { error, request }) => {
                if request.is_some() && stale < 2 {
                    // Never sent: the endpoint is not to blame.
                    stale += 1;
                    again = Some(endpoint.clone());
                } else {
                    service.record(&endpoint, sent.elapsed(), true);
                }
                pending = request;
                last_error = Some(ProxyError::Upstream {
                    endpoint: endpoint.addr,
                    source: error,
                });
            }
        }
    }
    Err(last_error.unwrap_or_else(|| ProxyError::NoEndpoint(service.name.clone())))
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Makes a client's request one for the endpoint: hop-by-hop headers go, the forwarding
/// headers come, and the head takes the upstream protocol's form.
fn prepare_request(parts: &mut request::Parts, client: IpAddr, upstream: UpstreamProtocol) {
    strip_hop_by_hop(&mut parts.headers);
    let forwarded_for = match parts
        .headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
    {
        Some(previous) => format!("{previous}, {client}"),
        None => client.to_string(),
    };
    if let Ok(value) = HeaderValue::try_from(forwarded_for) {
        parts.headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    let proto = match parts.extensions.get::<Tls>() {
        Some(_) => "https",
        None => "http",
    };
    parts
        .headers
        .insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    // h2 requests name their host in the URI (:authority), HTTP/1.1 in the Host header.
    let authority = parts.uri.authority().cloned().or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|host| uri::Authority::try_from(host.as_bytes()).ok())
    });
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| uri::PathAndQuery::from_static("/"));
    match upstream {
        UpstreamProtocol::Http1 => {
            parts.version = Version::HTTP_11;
            if !parts.headers.contains_key(header::HOST) {
                if let Some(value) = authority.and_then(|a| HeaderValue::try_from(a.as_str()).ok())
                {
                    parts.headers.insert(header::HOST, value);
                }
            }
            if parts.uri.scheme().is_some() {
                parts.uri = Uri::from(path);
            }
        }
        UpstreamProtocol::Http2 => {
            parts.version = Version::HTTP_2;
            parts.headers.remove(header::HOST);
            let mut builder = Uri::builder().scheme("http").path_and_query(path);
            if let Some(authority) = authority {
                builder = builder.authority(authority);
            } else {
                builder = builder.authority("localhost");
            }
            if let Ok(uri) = builder.build() {
                parts.uri = uri;
            }
        }
    }
}

/// Removes the headers that describe one connection, not the message (RFC 9110 7.6.1),
/// including those the Connection header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(request: Request<()>) -> request::Parts {
        request.into_parts().0
    }

    #[test]
    fn requests_get_forwarding_headers_and_lose_hop_by_hop_ones() {
        let mut head = parts(
            Request::get("/a?b=1")
                .header("host", "web")
                .header("connection", "keep-alive, x-private")
                .header("x-private", "1")
                .header("keep-alive", "timeout=5")
                .header("x-forwarded-for", "192.0.2.1")
                .body(())
                .unwrap(),
        );
        prepare_request(
            &mut head,
            "10.0.0.7".parse().unwrap(),
            UpstreamProtocol::Http1,
        );
        assert_eq!(head.headers["x-forwarded-for"], "192.0.2.1, 10.0.0.7");
        assert_eq!(head.headers["x-forwarded-proto"], "http");
        assert_eq!(head.headers["host"], "web");
        for gone in ["connection", "x-private", "keep-alive"] {
            assert!(!head.headers.contains_key(gone), "{gone}");
        }
        assert_eq!(head.uri, "/a?b=1");
    }

    #[test]
    fn h2_requests_become_http1_with_a_host_and_back() {
        let mut head = parts(
            Request::get("http://web.default:8080/x")
                .version(Version::HTTP_2)
                .body(())
                .unwrap(),
        );
        prepare_request(
            &mut head,
            "10.0.0.7".parse().unwrap(),
            UpstreamProtocol::Http1,
        );
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.headers["host"], "web.default:8080");
        assert_eq!(head.uri, "/x");

        let mut head = parts(Request::get("/y").header("host", "web").body(()).unwrap());
        prepare_request(
            &mut head,
            "10.0.0.7".parse().unwrap(),
            UpstreamProtocol::Http2,
        );
        assert_eq!(head.version, Version::HTTP_2);
        assert_eq!(head.uri, "http://web/y");
        assert!(!head.headers.contains_key("host"));
    }

    #[test]
    fn only_idempotent_methods_are_replayed() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }
}
