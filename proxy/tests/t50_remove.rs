//! Removing a listener: its port closes at once and can be bound again, its service port
//! leaves the metrics, and work in flight finishes (a held HTTP request is answered, a TCP
//! connection keeps flowing). Needs root.

mod fixtures;

use berth_proxy::{ListenerConfig, Mode, Proxy};
use fixtures::{isolated_runtime, Backend, Http1Client};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NAME: &str = "default/web:http";

#[test]
fn remove_closes_the_port_and_lets_work_in_flight_finish() {
    isolated_runtime().block_on(async {
        let backend = Backend::start("web").await;
        let proxy = Proxy::new().unwrap();
        let mut config = ListenerConfig::new(NAME, "127.0.0.1:0".parse().unwrap(), Mode::Http);
        config.endpoints = vec![backend.addr];
        let addr = proxy.listen(config.clone()).await.unwrap();

        let mut idle = Http1Client::connect(addr).await;
        assert_eq!(idle.get("/").await.unwrap(), (200, "web".to_string()));
        let held = tokio::spawn(async move {
            let mut client = Http1Client::connect(addr).await;
            client.get("/hold").await
        });
        backend.held.notified().await;

        assert!(proxy.remove(NAME).await);
        assert!(!proxy.remove(NAME).await, "removed twice");
        // The socket is closed: new connections are refused.
        let refused = TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(
            !proxy.render_metrics().contains(NAME),
            "{}",
            proxy.render_metrics()
        );
        assert!(proxy.update(NAME, &[]).is_err());

        // The request in flight is answered; the idle keep-alive connection is closed.
        backend.release();
        assert_eq!(held.await.unwrap().unwrap(), (200, "web".to_string()));
        // (It closes once its worker sees the removal: a request racing that may be served.)
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while idle.get("/").await.is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "idle connection kept open"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }

        // The same port can be bound again, by a new listener of the same name.
        config.listen = addr;
        assert_eq!(proxy.listen(config).await.unwrap(), addr);
        let mut client = Http1Client::connect(addr).await;
        assert_eq!(client.get("/").await.unwrap(), (200, "web".to_string()));
    });
}

#[test]
fn removed_tcp_listener_keeps_its_connections() {
    isolated_runtime().block_on(async {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        let proxy = Proxy::new().unwrap();
        let mut config =
            ListenerConfig::new("default/db:tcp", "127.0.0.1:0".parse().unwrap(), Mode::Tcp);
        config.endpoints = vec![echo_addr];
        let addr: SocketAddr = proxy.listen(config).await.unwrap();

        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut buffer = [0u8; 5];
        stream.write_all(b"hello").await.unwrap();
        stream.read_exact(&mut buffer).await.unwrap();
        assert!(proxy.remove("default/db:tcp").await);
        assert!(TcpStream::connect(addr).await.is_err());
        // The connection made before the removal still carries bytes both ways.
        stream.write_all(b"again").await.unwrap();
        stream.read_exact(&mut buffer).await.unwrap();
        assert_eq!(&buffer, b"again");
    });
}
