//! Requests spread over a service's endpoints: per request in L7, HTTP/1.1 and h2c alike.
//! Needs root (each test runs in a network namespace of its own).

mod fixtures;

use berth_proxy::{Algorithm, ListenerConfig, Mode, Proxy};
use bytes::Bytes;
use fixtures::{isolated_runtime, tally, Backend, Http1Client};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;

async fn three_backends() -> Vec<Backend> {
    vec![
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ]
}

async fn http_proxy(proxy: &Proxy, backends: &[Backend], algorithm: Algorithm) -> SocketAddr {
    let mut config = ListenerConfig::new(
        "default/web:http",
        "127.0.0.1:0".parse().unwrap(),
        Mode::Http,
    );
    config.balancer = algorithm;
    config.endpoints = backends.iter().map(|b| b.addr).collect();
    proxy.listen(config).await.unwrap()
}

/// `clients` keep-alive connections, each sending `per_client` GETs; the answering backends.
async fn load(addr: SocketAddr, clients: usize, per_client: usize) -> Vec<String> {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        tasks.push(tokio::spawn(async move {
            let mut client = Http1Client::connect(addr).await;
            let mut names = Vec::new();
            for _ in 0..per_client {
                let (status, body) = client.get("/").await.unwrap();
                assert_eq!(status, 200);
                names.push(body);
            }
            names
        }));
    }
    let mut names = Vec::new();
    for task in tasks {
        names.extend(task.await.unwrap());
    }
    names
}

#[test]
fn round_robin_gives_three_backends_equal_shares() {
    isolated_runtime().block_on(async {
        let backends = three_backends().await;
        let proxy = Proxy::new().unwrap();
        let addr = http_proxy(&proxy, &backends, Algorithm::RoundRobin).await;
        let names = load(addr, 6, 100).await;
        let counts = tally(&names);
        assert_eq!(counts.len(), 3, "{counts:?}");
        assert!(counts.values().all(|&n| n == 200), "{counts:?}");
        for backend in &backends {
            let (forwarded_for, proto) = backend.forwarded.lock().unwrap().clone().unwrap();
            assert_eq!(forwarded_for, "127.0.0.1");
            assert_eq!(proto, "http");
        }
    });
}

#[test]
fn peak_ewma_gives_three_backends_fair_shares_under_load() {
    isolated_runtime().block_on(async {
        let backends = three_backends().await;
        let proxy = Proxy::new().unwrap();
        let addr = http_proxy(&proxy, &backends, Algorithm::PeakEwma).await;
        let names = load(addr, 16, 100).await;
        let counts = tally(&names);
        // Identical backends: power of two choices follows in-flight counts, which even out.
        assert_eq!(counts.len(), 3, "{counts:?}");
        assert!(counts.values().all(|&n| n >= names.len() / 6), "{counts:?}");
    });
}

#[test]
fn h2c_requests_on_one_connection_spread_across_backends() {
    isolated_runtime().block_on(async {
        let backends = three_backends().await;
        let proxy = Proxy::new().unwrap();
        let addr = http_proxy(&proxy, &backends, Algorithm::RoundRobin).await;
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        // Concurrent streams on the one connection, then sequential ones.
        let mut streams = Vec::new();
        for _ in 0..30 {
            let mut sender = sender.clone();
            streams.push(tokio::spawn(async move {
                let request = http::Request::get("http://web.default/")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                assert_eq!(response.status(), 200);
                assert_eq!(response.version(), http::Version::HTTP_2);
                let body = response.into_body().collect().await.unwrap().to_bytes();
                String::from_utf8(body.to_vec()).unwrap()
            }));
        }
        let mut names = Vec::new();
        for stream in streams {
            names.push(stream.await.unwrap());
        }
        let counts = tally(&names);
        assert_eq!(counts.len(), 3, "{counts:?}");
        assert!(counts.values().all(|&n| n == 10), "{counts:?}");
    });
}

#[test]
fn http1_clients_reach_h2c_endpoints() {
    isolated_runtime().block_on(async {
        let backends = three_backends().await;
        let proxy = Proxy::new().unwrap();
        let mut config = ListenerConfig::new(
            "default/grpc:grpc",
            "127.0.0.1:0".parse().unwrap(),
            Mode::Http,
        );
        config.balancer = Algorithm::RoundRobin;
        config.upstream = berth_proxy::UpstreamProtocol::Http2;
        config.endpoints = backends.iter().map(|b| b.addr).collect();
        let addr = proxy.listen(config).await.unwrap();
        let names = load(addr, 3, 20).await;
        let counts = tally(&names);
        assert_eq!(counts.len(), 3, "{counts:?}");
        assert!(counts.values().all(|&n| n == 20), "{counts:?}");
    });
}
