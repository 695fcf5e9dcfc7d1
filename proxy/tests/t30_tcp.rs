//! L4: a raw TCP echo service through the proxy, half-close included. Needs root.

mod fixtures;

use berth_proxy::{ListenerConfig, Mode, Proxy};
use fixtures::isolated_runtime;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Echoes everything it reads; after the client's EOF it sends a trailer and closes, which
/// only reaches the client if the proxy forwards the half-close and keeps the other way open.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buffer = vec![0; 64 * 1024];
                let mut total = 0u64;
                loop {
                    let n = stream.read(&mut buffer).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                    stream.write_all(&buffer[..n]).await.unwrap();
                }
                stream
                    .write_all(format!("\nbye after {total} bytes\n").as_bytes())
                    .await
                    .unwrap();
                stream.shutdown().await.unwrap();
            });
        }
    });
    addr
}

#[test]
fn tcp_echo_through_l4_with_half_close() {
    isolated_runtime().block_on(async {
        let echo = echo_server().await;
        // A dead endpoint first in the set: connect failures are retried on the live one.
        let dead = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let proxy = Proxy::new().unwrap();
        let mut config = ListenerConfig::new(
            "default/echo:tcp",
            "127.0.0.1:0".parse().unwrap(),
            Mode::Tcp,
        );
        config.balancer = berth_proxy::Algorithm::RoundRobin;
        config.endpoints = vec![dead, echo];
        let addr = proxy.listen(config).await.unwrap();

        for round in 0..4 {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut read, mut write) = stream.into_split();
            let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8 + round).collect();
            let sent = payload.clone();
            let writer = tokio::spawn(async move {
                write.write_all(&sent).await.unwrap();
                // Half-close: done sending, still reading.
                write.shutdown().await.unwrap();
                write
            });
            let mut received = Vec::new();
            read.read_to_end(&mut received).await.unwrap();
            drop(writer.await.unwrap());
            let trailer = format!("\nbye after {} bytes\n", payload.len());
            assert_eq!(received.len(), payload.len() + trailer.len());
            assert!(received[..payload.len()] == payload[..], "echo differs");
            assert_eq!(&received[payload.len()..], trailer.as_bytes());
        }
    });
}
