//! TLS termination: HTTP/1.1 and h2 (by ALPN) over TLS to plain HTTP endpoints, TLS to a TCP
//! endpoint, certificate renewal without dropping connections, and handshakes that fail or
//! stall without hurting anyone else. Certificates are made by rcgen; the client is rustls.
//! Needs root.

mod fixtures;

use berth_proxy::{ListenerConfig, Mode, Proxy, TlsConfig};
use bytes::Bytes;
use fixtures::{isolated_runtime, metric, Backend, Http1Client};
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const HOST: &str = "web.default.svc";

/// A self-signed certificate for HOST: its DER form and the proxy's config made from PEM.
fn certificate() -> (CertificateDer<'static>, TlsConfig) {
    let made = rcgen::generate_simple_self_signed(vec![HOST.to_string()]).unwrap();
    let tls = TlsConfig::from_pem(
        made.cert.pem().as_bytes(),
        made.signing_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    (made.cert.der().clone(), tls)
}

/// A client that trusts `roots` and offers `alpn`.
fn connector(roots: &[&CertificateDer<'static>], alpn: &[&[u8]]) -> TlsConnector {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add((*root).clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

async fn handshake(connector: &TlsConnector, addr: SocketAddr) -> TlsStream<TcpStream> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(HOST).unwrap();
    connector.connect(name, stream).await.unwrap()
}

/// The certificate the server presented.
fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// One HTTP/1.1 keep-alive connection over TLS.
struct Https1 {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Https1 {
    async fn over(stream: TlsStream<TcpStream>) -> Https1 {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        Https1 { sender }
    }

    async fn get(&mut self, path: &str) -> Result<(u16, String), hyper::Error> {
        self.sender.ready().await?;
        let request = Request::get(path)
            .header("host", HOST)
            .body(Empty::new())
            .unwrap();
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

#[test]
fn https_reaches_plain_http_endpoints_by_http1_and_h2() {
    isolated_runtime().block_on(async {
        let backend = Backend::start("web").await;
        let (der, tls) = certificate();
        let proxy = Proxy::new().unwrap();
        let mut config = ListenerConfig::new(
            "default/web:https",
            "127.0.0.1:0".parse().unwrap(),
            Mode::Http,
        );
        config.endpoints = vec![backend.addr];
        config.tls = Some(tls);
        let addr = proxy.listen(config).await.unwrap();

        // HTTP/1.1: the client offers only http/1.1.
        let stream = handshake(&connector(&[&der], &[b"http/1.1"]), addr).await;
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let mut client = Https1::over(stream).await;
        for _ in 0..3 {
            assert_eq!(client.get("/").await.unwrap(), (200, "web".to_string()));
        }
        let (forwarded_for, proto) = backend.forwarded.lock().unwrap().clone().unwrap();
        assert_eq!(
            (forwarded_for.as_str(), proto.as_str()),
            ("127.0.0.1", "https")
        );

        // h2, chosen by ALPN; the endpoint behind speaks HTTP/1.1.
        let stream = handshake(&connector(&[&der], &[b"h2", b"http/1.1"]), addr).await;
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = Request::get(format!("https://{HOST}/h2"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(response.headers()["x-backend"], "web");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"web");

        // A plain-HTTP client on the TLS port: the handshake fails, and is counted.
        let mut plain = Http1Client::connect(addr).await;
        assert!(plain.get("/").await.is_err());
        // The client may see the alert before the worker has counted the failure.
        let errors =
            "berth_proxy_service_tls_handshake_errors_total{service=\"default/web:https\"}";
        let deadline = Instant::now() + Duration::from_secs(10);
        while metric(&proxy.render_metrics(), errors) != Some(1.0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let metrics = proxy.render_metrics();
        assert_eq!(metric(&metrics, errors), Some(1.0), "{metrics}");
        assert_eq!(
            metric(
                &metrics,
                "berth_proxy_service_requests_total{service=\"default/web:https\"}"
            ),
            Some(4.0),
            "{metrics}"
        );
    });
}

#[test]
fn tls_in_front_of_a_tcp_endpoint() {
    isolated_runtime().block_on(async {
        // An endpoint that answers each line in upper case.
        let endpoint = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint_addr = endpoint.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = endpoint.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buffer = vec![0; 1024];
                    loop {
                        let n = stream.read(&mut buffer).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        let upper = buffer[..n].to_ascii_uppercase();
                        stream.write_all(&upper).await.unwrap();
                    }
                    stream.shutdown().await.unwrap();
                });
            }
        });
        let (der, tls) = certificate();
        let proxy = Proxy::new().unwrap();
        let mut config =
            ListenerConfig::new("default/db:tls", "127.0.0.1:0".parse().unwrap(), Mode::Tcp);
        config.endpoints = vec![endpoint_addr];
        config.tls = Some(tls);
        let addr = proxy.listen(config).await.unwrap();

        // L4 offers no ALPN: the proxy cannot know what the endpoint speaks.
        let mut stream = handshake(&connector(&[&der], &[b"h2"]), addr).await;
        assert_eq!(stream.get_ref().1.alpn_protocol(), None);
        stream.write_all(b"hello tls\n").await.unwrap();
        let mut buffer = [0u8; 10];
        stream.read_exact(&mut buffer).await.unwrap();
        assert_eq!(&buffer, b"HELLO TLS\n");
        // close_notify reaches the endpoint as EOF; its close comes back as ours.
        stream.shutdown().await.unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    });
}

#[test]
fn certificate_renewal_keeps_established_connections() {
    isolated_runtime().block_on(async {
        let backend = Backend::start("web").await;
        let (old_der, old_tls) = certificate();
        let (new_der, new_tls) = certificate();
        let proxy = Proxy::new().unwrap();
        let name = "default/web:https";
        let mut config = ListenerConfig::new(name, "127.0.0.1:0".parse().unwrap(), Mode::Http);
        config.endpoints = vec![backend.addr];
        config.tls = Some(old_tls);
        let addr = proxy.listen(config).await.unwrap();
        let both = connector(&[&old_der, &new_der], &[b"http/1.1"]);

        let stream = handshake(&both, addr).await;
        assert_eq!(presented(&stream), old_der);
        let mut established = Https1::over(stream).await;
        assert_eq!(established.get("/").await.unwrap().0, 200);
        // A handshake that stalls (a client that never speaks) holds up nobody.
        let _silent = TcpStream::connect(addr).await.unwrap();

        proxy.update_tls(name, Some(new_tls)).unwrap();
        let fresh = handshake(&both, addr).await;
        assert_eq!(presented(&fresh), new_der);
        let mut fresh = Https1::over(fresh).await;
        assert_eq!(fresh.get("/").await.unwrap(), (200, "web".to_string()));
        // The connection made under the old certificate carries on.
        for _ in 0..3 {
            assert_eq!(
                established.get("/").await.unwrap(),
                (200, "web".to_string())
            );
        }

        // TLS off: the same port now speaks plain HTTP to new connections.
        proxy.update_tls(name, None).unwrap();
        let mut plain = Http1Client::connect(addr).await;
        assert_eq!(plain.get("/").await.unwrap(), (200, "web".to_string()));
        assert!(proxy.update_tls("default/none:https", None).is_err());
    });
}
