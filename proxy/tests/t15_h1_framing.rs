//! The HTTP/1.1 fast path moves messages whole, whatever their framing: chunked and large
//! bodies both ways, pipelined requests, Connection: close, responses without bodies (HEAD,
//! 204, 304), bodies delimited by the endpoint closing; malformed requests get a 400. The
//! endpoint is a hand-written HTTP/1.1 server, so that the bytes on the wire are known.
//! Needs root (each test runs in a network namespace of its own).

mod fixtures;

use berth_proxy::{ListenerConfig, Mode, Proxy};
use fixtures::isolated_runtime;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A parsed message: status (0 for requests), headers (lower-case names) and body.
#[derive(Debug, Default)]
struct Message {
    status: u16,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Decodes a chunked body at the start of `buf`: the body and the bytes it took, or None
/// if it is not all there yet.
fn dechunk(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&buf[at..line_end]).unwrap();
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).unwrap();
        at = line_end + 2;
        if size == 0 {
            // Trailers up to the empty line.
            loop {
                let end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some((body, at));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return None;
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}

/// A connection that reads HTTP/1.1 messages as a test wants them.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    fn new(stream: TcpStream) -> Wire {
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    async fn connect(addr: SocketAddr) -> Wire {
        Wire::new(TcpStream::connect(addr).await.unwrap())
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads more; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk).await.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next message; `response_to_head`: a response to HEAD (no body). None at the end of
    /// the stream.
    async fn read(&mut self, request: bool, response_to_head: bool) -> Option<Message> {
        let (mut message, len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let parsed = if request {
                let mut head = httparse::Request::new(&mut headers);
                match head.parse(&self.buf).unwrap() {
                    httparse::Status::Complete(len) => Some((
                        Message {
                            method: head.method.unwrap().to_string(),
                            path: head.path.unwrap().to_string(),
                            headers: lower(head.headers),
                            ..Message::default()
                        },
                        len,
                    )),
                    httparse::Status::Partial => None,
                }
            } else {
                let mut head = httparse::Response::new(&mut headers);
                match head.parse(&self.buf).unwrap() {
                    httparse::Status::Complete(len) => Some((
                        Message {
                            status: head.code.unwrap(),
                            headers: lower(head.headers),
                            ..Message::default()
                        },
                        len,
                    )),
                    httparse::Status::Partial => None,
                }
            };
            match parsed {
                Some(done) => break done,
                None => {
                    if !self.fill().await {
                        assert!(self.buf.is_empty(), "cut short: {:?}", self.buf);
                        return None;
                    }
                }
            }
        };
        self.buf.drain(..len);
        let no_body = response_to_head || matches!(message.status, 100..=199 | 204 | 304);
        if no_body {
            return Some(message);
        }
        if message.header("transfer-encoding") == Some("chunked") {
            loop {
                if let Some((body, len)) = dechunk(&self.buf) {
                    message.body = body;
                    self.buf.drain(..len);
                    return Some(message);
                }
                assert!(self.fill().await, "chunked body cut short");
            }
        }
        let length = match message.header("content-length") {
            Some(length) => length.parse::<usize>().unwrap(),
            None if request => 0,
            None => {
                // Delimited by the close.
                while self.fill().await {}
                message.body = std::mem::take(&mut self.buf);
                return Some(message);
            }
        };
        while self.buf.len() < length {
            assert!(self.fill().await, "body cut short");
        }
        message.body = self.buf.drain(..length).collect();
        Some(message)
    }

    /// Whether the peer closed the connection (after everything read so far).
    async fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }
}

fn lower(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8(h.value.to_vec()).unwrap(),
            )
        })
        .collect()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 23) as u8).collect()
}

/// The endpoint: answers by path.
///   /echo           the request body back (Content-Length), x-framing: how it came
///   /head           the request's headers, one `name: value` per line
///   /chunked        a chunked body with an extension and a trailer
///   /large/N        N bytes (Content-Length); /large-chunked/N the same, chunked
///   /status/N       status N without a body (a 304 says content-length: 5 all the same)
///   /until-close    a body without framing, ended by closing the connection
///   /hang           no answer at all
async fn endpoint() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut wire = Wire::new(stream);
                while let Some(request) = wire.read(true, false).await {
                    let close = answer(&mut wire, &request).await;
                    if close {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Answers one request; returns whether the connection closes.
async fn answer(wire: &mut Wire, request: &Message) -> bool {
    let head_only = request.method == "HEAD";
    let mut parts = request.path.trim_start_matches('/').split('/');
    let (kind, arg) = (parts.next().unwrap(), parts.next().unwrap_or("0"));
    let n: usize = arg.parse().unwrap_or(0);
    let mut out = Vec::new();
    match kind {
        "echo" => {
            let framing = if request.header("transfer-encoding").is_some() {
                "chunked"
            } else if request.header("content-length").is_some() {
                "length"
            } else {
                "none"
            };
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\nx-framing: {framing}\r\ncontent-length: {}\r\n\r\n",
                    request.body.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(&request.body);
        }
        "head" => {
            let text: String = request
                .headers
                .iter()
                .map(|(n, v)| format!("{n}: {v}\n"))
                .collect();
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
                    text.len()
                )
                .as_bytes(),
            );
        }
        "chunked" => out.extend_from_slice(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              4;note=\"x\"\r\nwiki\r\n5\r\npedia\r\n0\r\nx-checksum: 9\r\n\r\n",
        ),
        "large" => {
            out.extend_from_slice(
                format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n").as_bytes(),
            );
            if !head_only {
                out.extend_from_slice(&pattern(n));
            }
        }
        "large-chunked" => {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
            for piece in pattern(n).chunks(10_000) {
                out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                out.extend_from_slice(piece);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        }
        "status" => out.extend_from_slice(
            format!("HTTP/1.1 {n} Status\r\ncontent-length: 5\r\nx-status: {n}\r\n\r\n").as_bytes(),
        ),
        "hang" => {
            // Never answers; the connection stays open.
            std::future::pending::<()>().await;
        }
        "until-close" => {
            wire.send(b"HTTP/1.1 200 OK\r\n\r\nuntil ").await;
            wire.send(b"the end").await;
            return true;
        }
        _ => out.extend_from_slice(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"),
    }
    wire.send(&out).await;
    false
}

async fn proxy_to(endpoint: SocketAddr) -> (Proxy, SocketAddr) {
    proxy_with(endpoint, |_| {}).await
}

async fn proxy_with(
    endpoint: SocketAddr,
    configure: impl FnOnce(&mut ListenerConfig),
) -> (Proxy, SocketAddr) {
    let proxy = Proxy::new().unwrap();
    let mut config = ListenerConfig::new(
        "default/web:http",
        "127.0.0.1:0".parse().unwrap(),
        Mode::Http,
    );
    config.endpoints = vec![endpoint];
    configure(&mut config);
    let addr = proxy.listen(config).await.unwrap();
    (proxy, addr)
}

#[test]
fn chunked_bodies_pass_both_ways() {
    isolated_runtime().block_on(async {
        let (_proxy, addr) = proxy_to(endpoint().await).await;
        let mut client = Wire::connect(addr).await;
        // A chunked request body with an extension and a trailer, in pieces.
        client
            .send(b"POST /echo HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhel")
            .await;
        client.send(b"lo\r\n6\r\n world\r\n0\r\nx-sum: 1\r\n\r\n").await;
        let response = client.read(false, false).await.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("x-framing"), Some("chunked"));
        assert_eq!(response.body, b"hello world");

        client.send(b"GET /chunked HTTP/1.1\r\nHost: web\r\n\r\n").await;
        let response = client.read(false, false).await.unwrap();
        assert_eq!(response.header("transfer-encoding"), Some("chunked"));
        assert_eq!(response.body, b"wikipedia");
        // Still the same connection.
        client.send(b"GET /large/3 HTTP/1.1\r\nHost: web\r\n\r\n").await;
        assert_eq!(client.read(false, false).await.unwrap().body, b"abc");
    });
}

#[test]
fn large_bodies_stream_both_ways() {
    isolated_runtime().block_on(async {
        let (_proxy, addr) = proxy_to(endpoint().await).await;
        let mut client = Wire::connect(addr).await;
        let body = pattern(5_000_000);
        let head = format!(
            "PUT /echo HTTP/1.1\r\nHost: web\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        // The endpoint reads the whole body before it answers.
        client.send(head.as_bytes()).await;
        client.send(&body).await;
        let response = client.read(false, false).await.unwrap();
        assert_eq!(response.header("x-framing"), Some("length"));
        assert!(response.body == pattern(5_000_000), "echoed body differs");

        client
            .send(b"GET /large/8000000 HTTP/1.1\r\nHost: web\r\n\r\n")
            .await;
        let response = client.read(false, false).await.unwrap();
        assert!(response.body == pattern(8_000_000), "large body differs");

        client
            .send(b"GET /large-chunked/3000001 HTTP/1.1\r\nHost: web\r\n\r\n")
            .await;
        let response = client.read(false, false).await.unwrap();
        assert!(response.body == pattern(3_000_001), "chunked body differs");
    });
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    isolated_runtime().block_on(async {
        let (_proxy, addr) = proxy_to(endpoint().await).await;
        let mut client = Wire::connect(addr).await;
        client
            .send(
                b"GET /large/2 HTTP/1.1\r\nHost: web\r\n\r\n\
                  POST /echo HTTP/1.1\r\nHost: web\r\nContent-Length: 4\r\n\r\nping\
                  HEAD /large/9 HTTP/1.1\r\nHost: web\r\n\r\n\
                  POST /echo HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n\
                  GET /chunked HTTP/1.1\r\nHost: web\r\n\r\n",
            )
            .await;
        assert_eq!(client.read(false, false).await.unwrap().body, b"ab");
        assert_eq!(client.read(false, false).await.unwrap().body, b"ping");
        let head = client.read(false, true).await.unwrap();
        assert_eq!(head.header("content-length"), Some("9"));
        assert_eq!(client.read(false, false).await.unwrap().body, b"ok");
        assert_eq!(client.read(false, false).await.unwrap().body, b"wikipedia");
    });
}

#[test]
fn connection_close_and_close_delimited_bodies_end_the_connection() {
    isolated_runtime().block_on(async {
        let (_proxy, addr) = proxy_to(endpoint().await).await;
        let mut client = Wire::connect(addr).await;
        client
            .send(b"GET /large/5 HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
            .await;
        let response = client.read(false, false).await.unwrap();
        assert_eq!(response.body, b"abcde");
        assert_eq!(response.header("connection"), Some("close"));
        assert!(client.closed().await);

        // The endpoint ends its body by closing: the proxy closes the client's connection too.
        let mut client = Wire::connect(addr).await;
        client
            .send(b"GET /until-close HTTP/1.1\r\nHost: web\r\n\r\n")
            .await;
        let response = client.read(false, false).await.unwrap();
        assert_eq!(response.header("connection"), Some("close"));
        assert_eq!(response.body, b"until the end");
        assert!(client.closed().await);
    });
}

#[test]
fn responses_without_bodies_keep_the_connection() {
    isolated_runtime().block_on(async {
        let (_proxy, addr) = proxy_to(endpoint().await).await;
        let mut client = Wire::connect(addr).await;
        client
            .send(b"HEAD /large/100 HTTP/1.1\r\nHost: web\r\n\r\n")
            .await;
        let response = client.read(false, true).await.unwrap();
        assert_eq!(response.header("content-length"), Some("100"));
        for status in [204, 304] {
            client
                .send(format!("GET /status/{status} HTTP/1.1\r\nHost: web\r\n\r\n").as_bytes())
                .await;
            let response = client.read(false, false).await.unwrap();
            assert_eq!(response.status, status);
            assert_eq!(
                response.header("x-status"),
                Some(status.to_string().as_str())
            );
        }
        // Nothing stray was left on the connection: the next exchange is whole.
        client
            .send(b"GET /large/4 HTTP/1.1\r\nHost: web\r\n\r\n")
            .await;
        assert_eq!(client.read(false, false).await.unwrap().body, b"abcd");
    });
}

#[test]
fn malformed_requests_get_a_400_and_the_connection_closes() {
    isolated_runtime().block_on(async {
        let (proxy, addr) = proxy_to(endpoint().await).await;
        for request in [
            &b"GET / HTTP/1.1\r\nHost web\r\n\r\n"[..],
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello!\r\n0\r\n\r\n",
        ] {
            let mut client = Wire::connect(addr).await;
            client.send(request).await;
            let response = client.read(false, false).await.unwrap();
            assert_eq!(
                response.status,
                400,
                "{:?}",
                String::from_utf8_lossy(request)
            );
            assert_eq!(response.header("connection"), Some("close"));
            assert!(client.closed().await);
        }
        // Client mistakes are not the service's errors.
        let metrics = proxy.render_metrics();
        assert!(
            metrics.contains("berth_proxy_service_errors_total{service=\"default/web:http\"} 0\n"),
            "{metrics}"
        );
    });
}

#[test]
fn forwarding_headers_are_added_and_hop_by_hop_ones_removed() {
    isolated_runtime().block_on(async {
        let (_proxy, addr) = proxy_to(endpoint().await).await;
        let mut client = Wire::connect(addr).await;
        client
            .send(
                b"GET /head HTTP/1.1\r\nHost: web\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\n\
                  Keep-Alive: timeout=5\r\nX-Forwarded-For: 192.0.2.1\r\nX-Kept: yes\r\n\r\n",
            )
            .await;
        let response = client.read(false, false).await.unwrap();
        let seen = String::from_utf8(response.body).unwrap();
        assert!(
            seen.contains("x-forwarded-for: 192.0.2.1, 127.0.0.1\n"),
            "{seen}"
        );
        assert!(seen.contains("x-forwarded-proto: http\n"), "{seen}");
        assert!(
            seen.contains("host: web\n") && seen.contains("x-kept: yes\n"),
            "{seen}"
        );
        for gone in ["connection", "x-hop", "keep-alive"] {
            assert!(!seen.contains(&format!("{gone}:")), "{gone} in {seen}");
        }
    });
}

#[test]
fn what_the_fast_path_leaves_to_hyper_still_works() {
    isolated_runtime().block_on(async {
        let (_proxy, addr) = proxy_to(endpoint().await).await;
        // HTTP/1.0, after a fast-path exchange on the same connection.
        let mut client = Wire::connect(addr).await;
        client.send(b"GET /large/2 HTTP/1.1\r\nHost: web\r\n\r\n").await;
        assert_eq!(client.read(false, false).await.unwrap().body, b"ab");
        client.send(b"GET /large/3 HTTP/1.0\r\nHost: web\r\n\r\n").await;
        assert_eq!(client.read(false, false).await.unwrap().body, b"abc");

        // Expect: 100-continue: the interim response comes before the body is sent.
        let mut client = Wire::connect(addr).await;
        client
            .send(b"POST /echo HTTP/1.1\r\nHost: web\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
            .await;
        let interim = client.read(false, false).await.unwrap();
        assert_eq!(interim.status, 100);
        client.send(b"hi").await;
        let response = client.read(false, false).await.unwrap();
        assert_eq!((response.status, response.body.as_slice()), (200, &b"hi"[..]));
    });
}

#[test]
fn a_request_without_an_answer_times_out_and_the_connection_goes_on() {
    isolated_runtime().block_on(async {
        let (proxy, addr) = proxy_with(endpoint().await, |config| {
            config.request_timeout_ms = 300;
        })
        .await;
        let mut client = Wire::connect(addr).await;
        for _ in 0..2 {
            client
                .send(b"GET /hang HTTP/1.1\r\nHost: web\r\n\r\n")
                .await;
            let response = client.read(false, false).await.unwrap();
            assert_eq!(response.status, 504);
            // Each request gets its own full timeout, however long the connection has been up.
            client
                .send(b"GET /large/2 HTTP/1.1\r\nHost: web\r\n\r\n")
                .await;
            assert_eq!(client.read(false, false).await.unwrap().body, b"ab");
        }
        let metrics = proxy.render_metrics();
        assert!(
            metrics.contains("berth_proxy_service_errors_total{service=\"default/web:http\"} 2\n"),
            "{metrics}"
        );
    });
}
