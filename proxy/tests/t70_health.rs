//! Active health checks: an endpoint whose /healthz starts failing is taken out (its traffic
//! moves to the others) and comes back when it passes again; TCP checks take out an endpoint
//! that stops listening; checks speak h2c to h2c endpoints; they stop for removed endpoints.
//! Needs root.

mod fixtures;

use berth_proxy::{EndpointSpec, HealthCheckConfig, ListenerConfig, Mode, Proxy, UpstreamProtocol};
use bytes::Bytes;
use fixtures::{isolated_runtime, metric, tally, Http1Client};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

/// An HTTP endpoint (HTTP/1.1 and h2c) answering its name, with a /healthz that passes or
/// fails at will.
struct Endpoint {
    name: String,
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    /// Health checks received, and the HTTP/2 ones among them.
    checks: Arc<AtomicU64>,
    h2_checks: Arc<AtomicU64>,
    accept: AbortHandle,
}

impl Endpoint {
    async fn start(name: &str) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let healthy = Arc::new(AtomicBool::new(true));
        let checks = Arc::new(AtomicU64::new(0));
        let h2_checks = Arc::new(AtomicU64::new(0));
        let (answer, passing, checked, h2) = (
            name.to_string(),
            healthy.clone(),
            checks.clone(),
            h2_checks.clone(),
        );
        let accept = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (answer, passing, checked, h2) =
                    (answer.clone(), passing.clone(), checked.clone(), h2.clone());
                let handler = service_fn(move |request: Request<Incoming>| {
                    let mut status = StatusCode::OK;
                    if request.uri().path() == "/healthz" {
                        checked.fetch_add(1, Relaxed);
                        if request.version() == Version::HTTP_2 {
                            h2.fetch_add(1, Relaxed);
                        }
                        if !passing.load(Relaxed) {
                            status = StatusCode::SERVICE_UNAVAILABLE;
                        }
                    }
                    let mut response = Response::new(Full::new(Bytes::from(answer.clone())));
                    *response.status_mut() = status;
                    async move { Ok::<_, Infallible>(response) }
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), handler)
                        .await;
                });
            }
        })
        .abort_handle();
        Endpoint {
            name: name.to_string(),
            addr,
            healthy,
            checks,
            h2_checks,
            accept,
        }
    }
}

/// Checks every 50 ms; out after 2 failures, back after 2 passes.
fn quick(path: Option<&str>) -> HealthCheckConfig {
    HealthCheckConfig {
        path: path.map(str::to_string),
        interval_ms: 50,
        timeout_ms: 1_000,
        healthy_threshold: 2,
        unhealthy_threshold: 2,
    }
}

/// Waits until the endpoint's `berth_proxy_endpoint_healthy` gauge reads `healthy`.
async fn wait_for_health(proxy: &Proxy, service: &str, endpoint: SocketAddr, healthy: bool) {
    let sample =
        format!("berth_proxy_endpoint_healthy{{service=\"{service}\",endpoint=\"{endpoint}\"}}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = proxy.render_metrics();
        if metric(&metrics, &sample) == Some(f64::from(u8::from(healthy))) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{endpoint} never became healthy={healthy}:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn answers(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut client = Http1Client::connect(addr).await;
    let mut names = Vec::new();
    for _ in 0..n {
        let (status, name) = client.get("/").await.unwrap();
        assert_eq!(status, 200);
        names.push(name);
    }
    names
}

#[test]
fn failing_endpoint_is_taken_out_and_comes_back() {
    isolated_runtime().block_on(async {
        let endpoints = [
            Endpoint::start("a").await,
            Endpoint::start("b").await,
            Endpoint::start("c").await,
        ];
        let proxy = Proxy::new().unwrap();
        let name = "default/web:http";
        let mut config = ListenerConfig::new(name, "127.0.0.1:0".parse().unwrap(), Mode::Http);
        config.balancer = berth_proxy::Algorithm::RoundRobin;
        config.endpoints = endpoints.iter().map(|e| e.addr).collect();
        config.health_check = Some(quick(Some("/healthz")));
        let addr = proxy.listen(config).await.unwrap();
        let b = &endpoints[1];

        let counts = tally(&answers(addr, 30).await);
        assert_eq!(counts.len(), 3, "{counts:?}");

        b.healthy.store(false, Relaxed);
        wait_for_health(&proxy, name, b.addr, false).await;
        let counts = tally(&answers(addr, 30).await);
        assert_eq!(counts.get(&b.name), None, "{counts:?}");
        assert_eq!((counts["a"], counts["c"]), (15, 15), "{counts:?}");
        // Active checks are not outlier ejection: b is not ejected, only unhealthy.
        let ejected = format!(
            "berth_proxy_endpoint_ejected{{service=\"{name}\",endpoint=\"{}\"}}",
            b.addr
        );
        assert_eq!(metric(&proxy.render_metrics(), &ejected), Some(0.0));

        b.healthy.store(true, Relaxed);
        wait_for_health(&proxy, name, b.addr, true).await;
        let counts = tally(&answers(addr, 30).await);
        assert_eq!(counts.get(&b.name), Some(&10), "{counts:?}");
        assert!(b.checks.load(Relaxed) >= 4);
        assert_eq!(b.h2_checks.load(Relaxed), 0);

        // A removed endpoint is no longer checked: once checks in flight are done (each
        // within its timeout), its count stays put over many intervals.
        proxy
            .update(
                name,
                &[
                    EndpointSpec::ready(endpoints[0].addr),
                    EndpointSpec::ready(endpoints[2].addr),
                ],
            )
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let after_removal = b.checks.load(Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(b.checks.load(Relaxed), after_removal);
        assert!(endpoints[0].checks.load(Relaxed) > 0);

        // The same for every endpoint once the listener is gone.
        assert!(proxy.remove(name).await);
        let counts: Vec<u64> = endpoints.iter().map(|e| e.checks.load(Relaxed)).collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let later: Vec<u64> = endpoints.iter().map(|e| e.checks.load(Relaxed)).collect();
        assert_eq!(counts, later);
    });
}

#[test]
fn tcp_checks_take_out_an_endpoint_that_stops_listening() {
    isolated_runtime().block_on(async {
        let up = Endpoint::start("up").await;
        let down = Endpoint::start("down").await;
        let proxy = Proxy::new().unwrap();
        let name = "default/web:tcp";
        let mut config = ListenerConfig::new(name, "127.0.0.1:0".parse().unwrap(), Mode::Tcp);
        config.balancer = berth_proxy::Algorithm::RoundRobin;
        config.endpoints = vec![up.addr, down.addr];
        config.health_check = Some(quick(None));
        let addr = proxy.listen(config).await.unwrap();
        wait_for_health(&proxy, name, down.addr, true).await;

        down.accept.abort();
        wait_for_health(&proxy, name, down.addr, false).await;
        // Every new connection goes to the one left, at the first try.
        for _ in 0..10 {
            assert_eq!(answers(addr, 1).await, ["up"]);
        }
        let metrics = proxy.render_metrics();
        let connects = format!(
            "berth_proxy_endpoint_requests_total{{service=\"{name}\",endpoint=\"{}\"}}",
            down.addr
        );
        let before = metric(&metrics, &connects).unwrap();
        for _ in 0..10 {
            answers(addr, 1).await;
        }
        assert_eq!(metric(&proxy.render_metrics(), &connects), Some(before));
        assert_eq!(up.checks.load(Relaxed), 0, "TCP checks send no request");
    });
}

#[test]
fn checks_speak_h2c_to_h2c_endpoints() {
    isolated_runtime().block_on(async {
        let grpc = Endpoint::start("grpc").await;
        let proxy = Proxy::new().unwrap();
        let name = "default/api:grpc";
        let mut config = ListenerConfig::new(name, "127.0.0.1:0".parse().unwrap(), Mode::Http);
        config.upstream = UpstreamProtocol::Http2;
        config.endpoints = vec![grpc.addr];
        config.health_check = Some(quick(Some("/healthz?verbose=1")));
        proxy.listen(config).await.unwrap();
        grpc.healthy.store(false, Relaxed);
        wait_for_health(&proxy, name, grpc.addr, false).await;
        grpc.healthy.store(true, Relaxed);
        wait_for_health(&proxy, name, grpc.addr, true).await;
        assert!(grpc.h2_checks.load(Relaxed) >= 4);
        assert_eq!(grpc.h2_checks.load(Relaxed), grpc.checks.load(Relaxed));

        // A path that is no path is refused before anything binds.
        let mut bad = ListenerConfig::new(
            "default/bad:http",
            "127.0.0.1:0".parse().unwrap(),
            Mode::Http,
        );
        bad.health_check = Some(HealthCheckConfig::http("healthz"));
        let error = proxy.listen(bad).await.unwrap_err();
        assert!(
            error.to_string().contains("not an absolute path"),
            "{error}"
        );
    });
}
