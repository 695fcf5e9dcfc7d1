//! The pure half of the HTTP/1.1 fast path (`h1`): request and response heads are parsed with
//! `httparse` straight from the connection's buffer and rewritten, in the same pass, into the
//! head to send on (hop-by-hop headers out, X-Forwarded-* in, one framing header); bodies are
//! delimited by Content-Length or scanned chunk by chunk (`Chunked`) and passed through as
//! they came. No I/O and no allocation here: the caller owns and reuses every buffer.
//!
//! ```text
//!  client bytes --parse_request--> RequestHead (framing, keep-alive, ...) + upstream head
//!  endpoint bytes --parse_response--> ResponseHead (framing, reuse, ...) + client head
//! ```
//!
//! What is valid but unusual (h2c preface, HTTP/1.0, Upgrade, Expect, absolute-form targets,
//! transfer codings other than chunked) is `Parse::Fallback`: hyper serves it. What is not
//! valid (smuggling shapes such as Content-Length with Transfer-Encoding, conflicting
//! lengths, malformed heads) is `Parse::Reject` with the status to answer before closing.

use std::io::Write as _;

/// The largest head accepted, request or response (hyper's default buffer limit is ~400 KiB;
/// nginx's large_client_header_buffers default 4 x 8 KiB).
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Headers per head (hyper's default).
const MAX_HEADERS: usize = 100;
/// The start of the HTTP/2 connection preface (RFC 9113 3.4): h2c with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";
/// Trailer section bytes accepted after a chunked body.
const MAX_TRAILERS: usize = 16 * 1024;

/// How a message body is delimited (RFC 9112 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body at all (no Content-Length, no Transfer-Encoding; or HEAD, 1xx, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the sender closes (responses only).
    Close,
}

impl Framing {
    pub fn is_empty(self) -> bool {
        matches!(self, Framing::Empty | Framing::Length(0))
    }
}

/// A parsed client request; its rewritten head is in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestHead {
    /// Bytes of the head in the client's buffer (the body, if any, follows).
    pub len: usize,
    pub framing: Framing,
    /// The client did not ask to close after this exchange.
    pub keep_alive: bool,
    pub is_head: bool,
    /// Safe to send again after a failed exchange (RFC 9110 9.2.2).
    pub idempotent: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parse<T> {
    Complete(T),
    /// More bytes are needed.
    Partial,
    /// Valid, but for hyper to serve (the rest of the connection goes there).
    Fallback,
    /// Not acceptable: answer with this status and close.
    Reject(u16),
}

/// A parsed endpoint response; its rewritten head is in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    pub len: usize,
    pub status: u16,
    pub framing: Framing,
    /// The endpoint keeps the connection open after this response.
    pub reusable: bool,
    /// The client connection closes after this response (the head says so).
    pub close_client: bool,
}

/// Headers the fast path looks at; the rest pass through untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ContentLength,
    TransferEncoding,
    Connection,
    /// Describes one connection, not the message (RFC 9110 7.6.1): never forwarded.
    HopByHop,
    Upgrade,
    Expect,
    ForwardedFor,
    ForwardedProto,
    Other,
}

fn classify(name: &str) -> Kind {
    let name = name.as_bytes();
    let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
    match name.len() {
        2 if is(b"te") => Kind::HopByHop,
        6 if is(b"expect") => Kind::Expect,
        7 if is(b"trailer") => Kind::HopByHop,
        7 if is(b"upgrade") => Kind::Upgrade,
        10 if is(b"connection") => Kind::Connection,
        10 if is(b"keep-alive") => Kind::HopByHop,
        14 if is(b"content-length") => Kind::ContentLength,
        15 if is(b"x-forwarded-for") => Kind::ForwardedFor,
        16 if is(b"proxy-connection") => Kind::HopByHop,
        17 if is(b"transfer-encoding") => Kind::TransferEncoding,
        17 if is(b"x-forwarded-proto") => Kind::ForwardedProto,
        19 if is(b"proxy-authorization") => Kind::HopByHop,
        _ => Kind::Other,
    }
}

/// The comma-separated elements of a list header, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// What the Connection headers of a head say.
#[derive(Default)]
struct ConnectionOptions {
    close: bool,
    keep_alive: bool,
    /// They name other headers, which are then hop-by-hop too.
    names_headers: bool,
}

impl ConnectionOptions {
    fn add(&mut self, value: &[u8]) {
        for token in tokens(value) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else {
                self.names_headers = true;
            }
        }
    }
}

/// Whether a Connection header of `headers` names `name`.
fn named_by_connection(headers: &[httparse::Header<'_>], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| classify(h.name) == Kind::Connection)
        .flat_map(|h| tokens(h.value))
        .any(|token| token.eq_ignore_ascii_case(name.as_bytes()))
}

/// A Content-Length value: digits only (a list, even of equal values, is refused).
fn parse_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Parses the request head at the start of `buf` and, if it is one for the fast path, writes
/// the head to send to the endpoint into `out`: the same request line (as HTTP/1.1) and
/// headers, without hop-by-hop ones, with X-Forwarded-For extended by `client` and
/// X-Forwarded-Proto set to `proto`.
pub(crate) fn parse_request(
    buf: &[u8],
    client: &[u8],
    proto: &[u8],
    out: &mut Vec<u8>,
) -> Parse<RequestHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Parse::Reject(431),
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Err(_) if buf.starts_with(H2_PREFACE) => return Parse::Fallback,
        Err(_) if H2_PREFACE.starts_with(buf) => return Parse::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parse::Reject(431),
        Err(_) => return Parse::Reject(400),
    };
    let (Some(method), Some(target), Some(1)) = (request.method, request.path, request.version)
    else {
        // HTTP/1.0: keep-alive by request, no chunked responses; hyper knows the rules.
        return Parse::Fallback;
    };
    if method == "CONNECT" || !(target.starts_with('/') || target == "*") {
        return Parse::Fallback;
    }
    let headers = &*request.headers;
    let mut length = None;
    let mut chunked = false;
    let mut connection = ConnectionOptions::default();
    for header in headers {
        match classify(header.name) {
            Kind::ContentLength => match parse_length(header.value) {
                Some(n) if length.is_none_or(|seen| seen == n) => length = Some(n),
                _ => return Parse::Reject(400),
            },
            Kind::TransferEncoding => {
                if chunked || !header.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return Parse::Fallback;
                }
                chunked = true;
            }
            Kind::Connection => connection.add(header.value),
            Kind::Upgrade | Kind::Expect => return Parse::Fallback,
            _ => {}
        }
    }
    let framing = match (chunked, length) {
        // Both: the classic request smuggling shape (RFC 9112 6.1 allows closing instead).
        (true, Some(_)) => return Parse::Reject(400),
        (true, None) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::Empty,
    };

    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for header in headers {
        if classify(header.name) == Kind::Other
            && !(connection.names_headers && named_by_connection(headers, header.name))
        {
            put_header(out, header.name.as_bytes(), header.value);
        }
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for header in headers {
        if classify(header.name) == Kind::ForwardedFor {
            let previous = header.value.trim_ascii();
            if !previous.is_empty() {
                out.extend_from_slice(previous);
                out.extend_from_slice(b", ");
            }
        }
    }
    out.extend_from_slice(client);
    out.extend_from_slice(b"\r\n");
    put_header(out, b"x-forwarded-proto", proto);
    match framing {
        Framing::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Empty | Framing::Close => {}
    }
    out.extend_from_slice(b"\r\n");
    Parse::Complete(RequestHead {
        len,
        framing,
        keep_alive: !connection.close,
        is_head: method == "HEAD",
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
    })
}

/// Parses the response head at the start of `buf` (`Ok(None)`: more bytes needed) and writes
/// the head to send to the client into `out`: an HTTP/1.1 status line, the headers without
/// hop-by-hop ones, the framing header, and `connection: close` if the client connection
/// closes after it (the client asked to, or the body ends with the endpoint's connection).
pub(crate) fn parse_response(
    buf: &[u8],
    request: &RequestHead,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err("response head too large")
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("malformed response head"),
    };
    let (Some(version), Some(status)) = (response.version, response.code) else {
        return Err("malformed response head");
    };
    if status == 101 {
        // Upgrade is never forwarded on the fast path, so nothing may switch.
        return Err("unexpected 101 Switching Protocols");
    }
    let headers = &*response.headers;
    let mut length = None;
    let mut chunked = false;
    let mut connection = ConnectionOptions::default();
    for header in headers {
        match classify(header.name) {
            Kind::ContentLength => match parse_length(header.value) {
                Some(n) if length.is_none_or(|seen| seen == n) => length = Some(n),
                _ => return Err("invalid content-length"),
            },
            Kind::TransferEncoding => {
                if chunked || !header.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return Err("unsupported transfer-encoding");
                }
                chunked = true;
            }
            Kind::Connection => connection.add(header.value),
            _ => {}
        }
    }
    let informational = status < 200;
    let framing = if request.is_head || informational || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    let persistent = match version {
        1 => !connection.close,
        _ => connection.keep_alive && !connection.close,
    };
    // With both framings the length is ignored and the connection must close (RFC 9112 6.3).
    let reusable = persistent && framing != Framing::Close && !(chunked && length.is_some());
    let close_client = !informational && (!request.keep_alive || framing == Framing::Close);

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    let _ = write!(out, "{status:03}");
    out.push(b' ');
    out.extend_from_slice(response.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for header in headers {
        let forward = match classify(header.name) {
            Kind::ContentLength => !chunked,
            Kind::TransferEncoding | Kind::Connection | Kind::HopByHop | Kind::Upgrade => false,
            _ => !(connection.names_headers && named_by_connection(headers, header.name)),
        };
        if forward {
            put_header(out, header.name.as_bytes(), header.value);
        }
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if close_client {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(ResponseHead {
        len,
        status,
        framing,
        reusable,
        close_client,
    }))
}

/// A response the proxy makes itself.
pub(crate) fn local_response(out: &mut Vec<u8>, status: u16, is_head: bool, close: bool) {
    let (reason, text) = match status {
        400 => ("Bad Request", "bad request\n"),
        431 => (
            "Request Header Fields Too Large",
            "request header fields too large\n",
        ),
        503 => ("Service Unavailable", "no ready endpoint\n"),
        504 => ("Gateway Timeout", "upstream request timeout\n"),
        _ => ("Bad Gateway", "upstream connect error or disconnect\n"),
    };
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n",
        text.len(),
        if close { "connection: close\r\n" } else { "" }
    );
    if !is_head {
        out.extend_from_slice(text.as_bytes());
    }
}

/// Finds where a chunked body ends (RFC 9112 7.1) while its bytes stream through: chunk
/// sizes, extensions, data and trailers are checked, not changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chunked {
    state: ChunkState,
    /// The chunk size being read, then the data bytes left in the chunk.
    size: u64,
    digits: u8,
    trailers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    /// Whitespace after the size, before an extension or the line end.
    SizeSpace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkError;

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: ChunkState::Size,
            size: 0,
            digits: 0,
            trailers: 0,
        }
    }
}

impl Chunked {
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Scans the next bytes of the body; returns how many of them belong to it (all, unless
    /// the body ends within them).
    pub fn scan(&mut self, bytes: &[u8]) -> Result<usize, ChunkError> {
        use ChunkState::*;
        let mut i = 0;
        while i < bytes.len() && self.state != Done {
            if self.state == Data {
                let take = self.size.min((bytes.len() - i) as u64);
                self.size -= take;
                i += take as usize;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let byte = bytes[i];
            i += 1;
            self.state = match (self.state, byte) {
                (Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                    self.digits += 1;
                    if self.digits > 15 {
                        return Err(ChunkError);
                    }
                    let digit = (byte as char).to_digit(16).ok_or(ChunkError)?;
                    self.size = self.size * 16 + u64::from(digit);
                    Size
                }
                (Size, _) if self.digits == 0 => return Err(ChunkError),
                (Size | SizeSpace, b' ' | b'\t') => SizeSpace,
                (Size | SizeSpace, b';') => Extension,
                (Size | SizeSpace | Extension, b'\r') => SizeLf,
                (Extension, b'\t' | b' '..=b'~' | 0x80..=0xff) => Extension,
                (SizeLf, b'\n') if self.size == 0 => TrailerStart,
                (SizeLf, b'\n') => Data,
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => {
                    self.digits = 0;
                    Size
                }
                (TrailerStart, b'\r') => EndLf,
                (TrailerStart | Trailer, b'\t' | b' '..=b'~' | 0x80..=0xff) => {
                    self.trailers += 1;
                    if self.trailers > MAX_TRAILERS {
                        return Err(ChunkError);
                    }
                    Trailer
                }
                (Trailer, b'\r') => TrailerLf,
                (TrailerLf, b'\n') => TrailerStart,
                (EndLf, b'\n') => Done,
                _ => return Err(ChunkError),
            };
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &[u8] = b"10.0.0.7";

    fn request(text: &str) -> (Parse<RequestHead>, String) {
        let mut out = Vec::new();
        let parsed = parse_request(text.as_bytes(), CLIENT, b"http", &mut out);
        (parsed, String::from_utf8(out).unwrap())
    }

    fn complete(text: &str) -> (RequestHead, String) {
        match request(text) {
            (Parse::Complete(head), out) => (head, out),
            (other, _) => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn requests_get_forwarding_headers_and_lose_hop_by_hop_ones() {
        let text = "GET /a?b=1 HTTP/1.1\r\nHost: web\r\nConnection: keep-alive, x-private\r\n\
                    X-Private: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
                    X-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: https\r\nAccept: */*\r\n\r\nNEXT";
        let (head, out) = complete(text);
        assert_eq!(head.len, text.len() - 4);
        assert_eq!(head.framing, Framing::Empty);
        assert!(head.keep_alive && head.idempotent && !head.is_head);
        assert_eq!(
            out,
            "GET /a?b=1 HTTP/1.1\r\nHost: web\r\nAccept: */*\r\n\
             x-forwarded-for: 192.0.2.1, 10.0.0.7\r\nx-forwarded-proto: http\r\n\r\n"
        );
    }

    #[test]
    fn request_bodies_keep_one_framing_header() {
        let (head, out) = complete("POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(head.framing, Framing::Length(5));
        assert!(!head.idempotent);
        assert!(out.ends_with("x-forwarded-proto: http\r\ncontent-length: 5\r\n\r\n"));
        let (head, out) = complete(
            "PUT /p HTTP/1.1\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
        );
        assert_eq!(head.framing, Framing::Chunked);
        assert!(!head.keep_alive);
        assert!(out.ends_with("transfer-encoding: chunked\r\n\r\n"));
        assert!(!out.to_ascii_lowercase().contains("connection"));
        // The same length twice is one length.
        let (head, _) =
            complete("POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n");
        assert_eq!(head.framing, Framing::Length(3));
    }

    #[test]
    fn ambiguous_or_malformed_requests_are_rejected() {
        for text in [
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "GET / HTTP/1.1\r\nHost web\r\n\r\n",
            "GET /a b HTTP/1.1\r\n\r\n",
            "\x01GET / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(request(text).0, Parse::Reject(400), "{text:?}");
        }
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("x-{i}: 1\r\n"))
            .collect();
        assert_eq!(
            request(&format!("GET / HTTP/1.1\r\n{many}\r\n")).0,
            Parse::Reject(431)
        );
        let huge = format!("GET / HTTP/1.1\r\nx: {}", "a".repeat(MAX_HEAD));
        assert_eq!(request(&huge).0, Parse::Reject(431));
    }

    #[test]
    fn partial_heads_wait_and_unusual_ones_fall_back() {
        assert_eq!(request("GET / HTTP/1.1\r\nHost: a\r\n").0, Parse::Partial);
        assert_eq!(request("").0, Parse::Partial);
        assert_eq!(request("PRI * HTTP/2").0, Parse::Partial);
        for text in [
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "GET http://web/ HTTP/1.1\r\n\r\n",
            "CONNECT web:443 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        ] {
            assert_eq!(request(text).0, Parse::Fallback, "{text:?}");
        }
        let (head, _) = complete("OPTIONS * HTTP/1.1\r\n\r\n");
        assert!(head.idempotent);
    }

    fn response(text: &str, request_text: &str) -> (ResponseHead, String) {
        let (request, _) = complete(request_text);
        let mut out = Vec::new();
        let head = parse_response(text.as_bytes(), &request, &mut out)
            .unwrap()
            .unwrap();
        (head, String::from_utf8(out).unwrap())
    }

    const GET: &str = "GET / HTTP/1.1\r\n\r\n";

    #[test]
    fn responses_are_framed_by_method_status_and_headers() {
        let (head, out) = response(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\nX-A: b\r\n\r\nok",
            GET,
        );
        assert_eq!(
            (head.status, head.framing, head.reusable, head.close_client),
            (200, Framing::Length(2), true, false)
        );
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\n"
        );
        assert_eq!(head.len, out.len() + "Keep-Alive: timeout=5\r\n".len());

        let (head, out) = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(head.framing, Framing::Chunked);
        assert!(head.close_client);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );

        // No framing: the body runs to the close, and the client's connection closes too.
        let (head, out) = response("HTTP/1.1 200 OK\r\n\r\n", GET);
        assert_eq!(head.framing, Framing::Close);
        assert!(!head.reusable && head.close_client);
        assert!(out.ends_with("connection: close\r\n\r\n"));

        for (text, request) in [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
                "HEAD / HTTP/1.1\r\n\r\n",
            ),
            ("HTTP/1.1 204 No Content\r\n\r\n", GET),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                GET,
            ),
            ("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", GET),
        ] {
            let (head, out) = response(text, request);
            assert_eq!(head.framing, Framing::Empty, "{text:?}");
            assert!(head.reusable && !head.close_client, "{text:?}");
            assert_eq!(
                out.contains("Content-Length: 9"),
                text.contains("Length: 9")
            );
        }

        // HTTP/1.0 endpoints keep connections only when they say so.
        let (head, _) = response("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", GET);
        assert!(!head.reusable);
        let (head, _) = response(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            GET,
        );
        assert!(head.reusable);
        let (head, _) = response(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            GET,
        );
        assert!(!head.reusable && !head.close_client);
    }

    #[test]
    fn broken_responses_are_errors() {
        let (request, _) = complete(GET);
        let mut out = Vec::new();
        for text in [
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(
                parse_response(text.as_bytes(), &request, &mut out).is_err(),
                "{text:?}"
            );
        }
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n", &request, &mut out),
            Ok(None)
        );
    }

    #[test]
    fn local_responses_are_complete_messages() {
        let mut out = Vec::new();
        local_response(&mut out, 502, false, true);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{text}");
        assert!(text.contains("connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nupstream connect error or disconnect\n"));
        local_response(&mut out, 503, true, false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("content-length: 18\r\n\r\n"), "{text}");
    }

    /// Scans `body` in pieces of `step` bytes; returns the bytes that belong to the body.
    fn scan(body: &[u8], step: usize) -> Result<usize, ChunkError> {
        let mut chunked = Chunked::default();
        let mut taken = 0;
        for piece in body.chunks(step) {
            taken += chunked.scan(piece)?;
            if chunked.is_done() {
                return Ok(taken);
            }
        }
        Err(ChunkError)
    }

    #[test]
    fn chunked_bodies_end_where_they_end_in_any_split() {
        let body = b"5\r\nhello\r\n1a; name=\"v\"\r\nabcdefghijklmnopqrstuvwxyz\r\n\
                     0 ;last\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n";
        let mut pipelined = body.to_vec();
        pipelined.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        for step in 1..=pipelined.len() {
            assert_eq!(scan(&pipelined, step), Ok(body.len()), "step {step}");
        }
        assert_eq!(scan(b"0\r\n\r\n", 1), Ok(5));
        assert_eq!(scan(b"A\r\n0123456789\r\n0\r\n\r\n", 4), Ok(20));
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for body in [
            &b"\r\n"[..],
            b"x\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\n",
            b"1000000000000000\r\n",
            b"5;\x01\r\n",
            b"0\r\nbad\ntrailer\r\n\r\n",
        ] {
            assert_eq!(scan(body, 3), Err(ChunkError), "{body:?}");
        }
    }
}
