//! The admin listener: `GET /metrics` in the Prometheus text format, `GET /ready` for probes.

use crate::service::ServicePort;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;

type Services = Arc<RwLock<BTreeMap<String, Arc<ServicePort>>>>;

pub(crate) async fn serve(listener: TcpListener, services: Services) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let services = services.clone();
        tokio::spawn(async move {
            let handler = service_fn(move |request| {
                let services = services.clone();
                async move { Ok::<_, Infallible>(respond(&services, request)) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), handler)
                .await
            {
                tracing::debug!(%error, "admin connection ended");
            }
        });
    }
}

fn respond(services: &Services, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => {
            let services = services.read().unwrap_or_else(|p| p.into_inner());
            (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                crate::proxy::render(&services),
            )
        }
        (&Method::GET, "/ready") => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}
