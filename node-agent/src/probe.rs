//! Readiness, liveness and startup probes, with Kubernetes semantics.
//!
//! ```text
//!  Probe + Container ──ProbeSpec::from_k8s──▶ ProbeSpec
//!                                               │
//!  spawn_prober: wait initialDelay, then every period:
//!      check (httpGet | tcpSocket | exec via ExecRunner, within timeout) ──▶ Ok | why not
//!        why not ──▶ `failed` (the agent's Unhealthy event)
//!      ProbeTracker::record(bool) ──▶ change of result? ──▶ mpsc (ProbeKind, ProbeResult)
//! ```
//!
//! The tracker is pure: it turns single outcomes into a result once `successThreshold`
//! consecutive successes or `failureThreshold` consecutive failures are seen. The prober is the
//! thin async shell around it; the agent acts on the results (readiness into the pod's Ready
//! condition, liveness and startup failures into a container restart).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const DEFAULT_PERIOD_SECONDS: i32 = 10;
const DEFAULT_TIMEOUT_SECONDS: i32 = 1;
const DEFAULT_SUCCESS_THRESHOLD: i32 = 1;
const DEFAULT_FAILURE_THRESHOLD: i32 = 3;
/// The most of a response read while looking for its status line.
const MAX_STATUS_LINE: usize = 4096;

/// Which of a container's probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Readiness,
    Liveness,
    Startup,
}

/// The overall result of a probe, once its thresholds were reached. Before that it is unknown
/// ([`ProbeTracker::result`] is `None`), which counts as not ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeResult {
    Success,
    Failure,
}

/// A probe that cannot be run as specified.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    #[error("probe has no handler: one of exec, httpGet or tcpSocket is required")]
    NoHandler,
    #[error(
        "probe has more than one handler: exec, httpGet, tcpSocket and grpc exclude each other"
    )]
    MultipleHandlers,
    #[error("grpc probes are not supported")]
    GrpcUnsupported,
    #[error("httpGet scheme {0:?} is not supported (only HTTP)")]
    UnsupportedScheme(String),
    #[error("container has no port named {0:?}")]
    UnknownPortName(String),
    #[error("invalid port {0}: must be in 1..=65535")]
    InvalidPort(i64),
    #[error("exec probe has an empty command")]
    EmptyCommand,
    #[error("invalid httpGet {what}: {value:?}")]
    InvalidHttp { what: &'static str, value: String },
}

/// What a probe checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeHandler {
    /// GET `path`; success is a status in 200..=399. `host` defaults to the pod IP.
    HttpGet {
        host: Option<String>,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    /// A TCP connection can be opened. `host` defaults to the pod IP.
    TcpSocket { host: Option<String>, port: u16 },
    /// The command exits 0, run inside the container by an [`ExecRunner`].
    Exec { command: Vec<String> },
}

/// A probe with its ports resolved and defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    pub handler: ProbeHandler,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl ProbeSpec {
    /// Resolves named ports against the container's ports and applies the Kubernetes defaults
    /// (period 10s, timeout 1s, success threshold 1, failure threshold 3; unset or
    /// non-positive values take the default).
    pub fn from_k8s(probe: &Probe, container: &Container) -> Result<ProbeSpec, ProbeError> {
        let handlers = [
            probe.exec.is_some(),
            probe.http_get.is_some(),
            probe.tcp_socket.is_some(),
            probe.grpc.is_some(),
        ];
        match handlers.iter().filter(|set| **set).count() {
            0 => return Err(ProbeError::NoHandler),
            1 => {}
            _ => return Err(ProbeError::MultipleHandlers),
        }
        let handler = if let Some(exec) = &probe.exec {
            let command = exec.command.clone().unwrap_or_default();
            if command.is_empty() {
                return Err(ProbeError::EmptyCommand);
            }
            ProbeHandler::Exec { command }
        } else if let Some(http) = &probe.http_get {
            let scheme = http.scheme.as_deref().unwrap_or("HTTP");
            if !scheme.eq_ignore_ascii_case("HTTP") {
                return Err(ProbeError::UnsupportedScheme(scheme.to_string()));
            }
            let path = match http.path.as_deref() {
                None | Some("") => "/".to_string(),
                Some(p) if p.starts_with('/') => p.to_string(),
                Some(p) => format!("/{p}"),
            };
            check_http_token("path", &path, |c| c.is_ascii_graphic())?;
            let headers = http
                .http_headers
                .iter()
                .flatten()
                .map(|h| {
                    check_http_token("header name", &h.name, |c| c.is_ascii_graphic() && c != ':')?;
                    check_http_token("header value", &h.value, |c| c != '\r' && c != '\n')?;
                    Ok((h.name.clone(), h.value.clone()))
                })
                .collect::<Result<_, ProbeError>>()?;
            let host = non_empty(&http.host);
            if let Some(host) = &host {
                check_http_token("host", host, |c| c.is_ascii_graphic())?;
            }
            ProbeHandler::HttpGet {
                host,
                port: resolve_port(&http.port, container)?,
                path,
                headers,
            }
        } else if let Some(tcp) = &probe.tcp_socket {
            ProbeHandler::TcpSocket {
                host: non_empty(&tcp.host),
                port: resolve_port(&tcp.port, container)?,
            }
        } else {
            return Err(ProbeError::GrpcUnsupported);
        };
        let seconds = |value: Option<i32>, default: i32| {
            Duration::from_secs(value.filter(|v| *v > 0).unwrap_or(default) as u64)
        };
        let threshold =
            |value: Option<i32>, default: i32| value.filter(|v| *v > 0).unwrap_or(default) as u32;
        Ok(ProbeSpec {
            handler,
            initial_delay: seconds(probe.initial_delay_seconds, 0),
            period: seconds(probe.period_seconds, DEFAULT_PERIOD_SECONDS),
            timeout: seconds(probe.timeout_seconds, DEFAULT_TIMEOUT_SECONDS),
            success_threshold: threshold(probe.success_threshold, DEFAULT_SUCCESS_THRESHOLD),
            failure_threshold: threshold(probe.failure_threshold, DEFAULT_FAILURE_THRESHOLD),
        })
    }
}

fn non_empty(host: &Option<String>) -> Option<String> {
    host.clone().filter(|h| !h.is_empty())
}

/// Refuses what would break the request line or headers (spaces in a path, CR/LF anywhere).
fn check_http_token(
    what: &'static str,
    value: &str,
    allowed: impl Fn(char) -> bool,
) -> Result<(), ProbeError> {
    if value.chars().all(allowed) {
        Ok(())
    } else {
        Err(ProbeError::InvalidHttp {
            what,
            value: value.to_string(),
        })
    }
}

/// As the kubelet: a number, or the name of one of the container's ports (or, failing that, a
/// number written as a string).
fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, ProbeError> {
    let number = match port {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(name) => {
            let named = container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()));
            match (named, name.parse::<i64>()) {
                (Some(p), _) => i64::from(p.container_port),
                (None, Ok(n)) => n,
                (None, Err(_)) => return Err(ProbeError::UnknownPortName(name.clone())),
            }
        }
    };
    u16::try_from(number)
        .ok()
        .filter(|p| *p > 0)
        .ok_or(ProbeError::InvalidPort(number))
}

/// Turns single probe outcomes into a result, with the thresholds of a [`ProbeSpec`].
#[derive(Clone, Debug)]
pub struct ProbeTracker {
    success_threshold: u32,
    failure_threshold: u32,
    /// The outcome of the current run of equal outcomes, and its length.
    last: Option<bool>,
    run: u32,
    result: Option<ProbeResult>,
}

impl ProbeTracker {
    pub fn new(spec: &ProbeSpec) -> ProbeTracker {
        ProbeTracker {
            success_threshold: spec.success_threshold.max(1),
            failure_threshold: spec.failure_threshold.max(1),
            last: None,
            run: 0,
            result: None,
        }
    }

    /// Records one outcome; returns the new result when it changed.
    pub fn record(&mut self, success: bool) -> Option<ProbeResult> {
        if self.last == Some(success) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(success);
            self.run = 1;
        }
        let (threshold, result) = if success {
            (self.success_threshold, ProbeResult::Success)
        } else {
            (self.failure_threshold, ProbeResult::Failure)
        };
        if self.run < threshold || self.result == Some(result) {
            return None;
        }
        self.result = Some(result);
        Some(result)
    }

    /// The current result; `None` until a threshold was first reached.
    pub fn result(&self) -> Option<ProbeResult> {
        self.result
    }
}

/// Runs a command inside the container (the runtime provides it) and returns its exit code,
/// or why it could not run or did not finish within `timeout`.
pub trait ExecRunner: Send + Sync {
    fn run(&self, argv: Vec<String>, timeout: Duration) -> BoxFuture<'static, Result<i32, String>>;
}

impl<F> ExecRunner for F
where
    F: Fn(Vec<String>, Duration) -> BoxFuture<'static, Result<i32, String>> + Send + Sync,
{
    fn run(&self, argv: Vec<String>, timeout: Duration) -> BoxFuture<'static, Result<i32, String>> {
        self(argv, timeout)
    }
}

/// Why one probe failed, for events and logs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeFailure {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("HTTP probe failed with status code {0}")]
    HttpStatus(u16),
    #[error("{0}")]
    Other(String),
}

/// Runs the probe once, within its timeout.
pub async fn probe_once(spec: &ProbeSpec, pod_ip: IpAddr, exec: &dyn ExecRunner) -> bool {
    match check(spec, pod_ip, exec).await {
        Ok(()) => true,
        Err(failure) => {
            tracing::debug!(handler = ?spec.handler, %failure, "probe failed");
            false
        }
    }
}

/// Runs the probe once, within its timeout, and says why it failed.
pub async fn check(
    spec: &ProbeSpec,
    pod_ip: IpAddr,
    exec: &dyn ExecRunner,
) -> Result<(), ProbeFailure> {
    let attempt = async {
        match &spec.handler {
            ProbeHandler::Exec { command } => match exec.run(command.clone(), spec.timeout).await {
                Ok(0) => Ok(()),
                Ok(code) => Err(ProbeFailure::Other(format!(
                    "command exited with code {code}"
                ))),
                Err(e) => Err(ProbeFailure::Other(format!("exec failed: {e}"))),
            },
            ProbeHandler::TcpSocket { host, port } => {
                connect(host.as_deref(), pod_ip, *port).await.map(drop)
            }
            ProbeHandler::HttpGet {
                host,
                port,
                path,
                headers,
            } => http_get(host.as_deref(), pod_ip, *port, path, headers).await,
        }
    };
    tokio::time::timeout(spec.timeout, attempt)
        .await
        .unwrap_or(Err(ProbeFailure::Timeout(spec.timeout)))
}

async fn target(host: Option<&str>, pod_ip: IpAddr, port: u16) -> Result<SocketAddr, ProbeFailure> {
    let Some(host) = host else {
        return Ok(SocketAddr::new(pod_ip, port));
    };
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| ProbeFailure::Other(format!("resolving {host}: {e}")))?
        .next()
        .ok_or_else(|| ProbeFailure::Other(format!("{host} has no address")))
}

async fn connect(host: Option<&str>, pod_ip: IpAddr, port: u16) -> Result<TcpStream, ProbeFailure> {
    let addr = target(host, pod_ip, port).await?;
    TcpStream::connect(addr)
        .await
        .map_err(|e| ProbeFailure::Other(format!("connecting to {addr}: {e}")))
}

/// A minimal HTTP/1.1 GET: sends the request, reads only the status line.
async fn http_get(
    host: Option<&str>,
    pod_ip: IpAddr,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<(), ProbeFailure> {
    let mut stream = connect(host, pod_ip, port).await?;
    let authority = match host {
        Some(host) => format!("{host}:{port}"),
        None => SocketAddr::new(pod_ip, port).to_string(),
    };
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    // As the kubelet: headers from the probe replace the defaults of the same name.
    for (name, value) in [
        ("Host", authority.as_str()),
        ("User-Agent", "berth-probe/1.0"),
        ("Accept", "*/*"),
    ] {
        if !has(name) {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    for (name, value) in headers {
        if !name.eq_ignore_ascii_case("Connection") {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    request.push_str("Connection: close\r\n\r\n");
    let io_error = |e: std::io::Error| ProbeFailure::Other(format!("HTTP probe: {e}"));
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(io_error)?;

    let mut response = Vec::new();
    let mut chunk = [0u8; 512];
    while !response.contains(&b'\n') && response.len() < MAX_STATUS_LINE {
        let n = stream.read(&mut chunk).await.map_err(io_error)?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
    }
    let status = parse_status_line(&response).ok_or_else(|| {
        let line = response.split(|&b| b == b'\n').next().unwrap_or_default();
        ProbeFailure::Other(format!(
            "HTTP probe: malformed status line {:?}",
            String::from_utf8_lossy(line)
        ))
    })?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(ProbeFailure::HttpStatus(status))
    }
}

/// `HTTP/1.x NNN reason` -> NNN.
fn parse_status_line(response: &[u8]) -> Option<u16> {
    let end = response.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&response[..end]).ok()?.trim_end();
    let mut parts = line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// Probes the container: waits `initial_delay`, then probes every `period` and sends each
/// change of result. Kubernetes semantics: a startup probe ends once it reached a result (it
/// is not run again after success; a failure means the container is to be killed), as does a
/// liveness probe after a failure. Otherwise it runs until aborted (`JoinHandle::abort` when
/// the container stops) or until `results` is closed.
pub fn spawn_prober(
    kind: ProbeKind,
    spec: ProbeSpec,
    pod_ip: IpAddr,
    exec: Arc<dyn ExecRunner>,
    results: mpsc::Sender<(ProbeKind, ProbeResult)>,
    failed: impl Fn(&ProbeFailure) + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(spec.initial_delay).await;
        let mut tracker = ProbeTracker::new(&spec);
        let mut ticks = tokio::time::interval(spec.period.max(Duration::from_millis(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let outcome = check(&spec, pod_ip, exec.as_ref()).await;
            if let Err(failure) = &outcome {
                failed(failure);
            }
            let Some(result) = tracker.record(outcome.is_ok()) else {
                continue;
            };
            if results.send((kind, result)).await.is_err() {
                return;
            }
            match (kind, result) {
                (ProbeKind::Startup, _) | (ProbeKind::Liveness, ProbeResult::Failure) => return,
                _ => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use k8s_openapi::api::core::v1::{
        ContainerPort, ExecAction, GRPCAction, HTTPGetAction, HTTPHeader, TCPSocketAction,
    };
    use std::io::{BufRead, BufReader, Write};
    use std::net::Ipv4Addr;
    use std::sync::Mutex;

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn spec(handler: ProbeHandler) -> ProbeSpec {
        ProbeSpec {
            handler,
            initial_delay: Duration::ZERO,
            period: Duration::from_millis(20),
            timeout: Duration::from_secs(2),
            success_threshold: 1,
            failure_threshold: 1,
        }
    }

    fn no_exec() -> impl ExecRunner {
        |_: Vec<String>, _: Duration| async { Err("no exec here".to_string()) }.boxed()
    }

    type Calls = Arc<Mutex<Vec<Vec<String>>>>;

    /// Returns the given exit codes in turn (the last one forever), recording each argv.
    fn scripted_exec(codes: Vec<i32>) -> (Arc<dyn ExecRunner>, Calls) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        let runner = move |argv: Vec<String>, _: Duration| {
            let mut calls = seen.lock().unwrap();
            let code = codes[calls.len().min(codes.len() - 1)];
            calls.push(argv);
            async move { Ok(code) }.boxed()
        };
        (Arc::new(runner), calls)
    }

    fn container() -> Container {
        Container {
            name: "web".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn http_probe(port: IntOrString) -> Probe {
        Probe {
            http_get: Some(HTTPGetAction {
                port,
                path: Some("healthz".into()),
                http_headers: Some(vec![HTTPHeader {
                    name: "X-Probe".into(),
                    value: "yes".into(),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn from_k8s_resolves_named_ports_and_applies_defaults() {
        let probe = http_probe(IntOrString::String("http".into()));
        let spec = ProbeSpec::from_k8s(&probe, &container()).unwrap();
        assert_eq!(
            spec.handler,
            ProbeHandler::HttpGet {
                host: None,
                port: 8080,
                path: "/healthz".into(),
                headers: vec![("X-Probe".into(), "yes".into())],
            }
        );
        assert_eq!(spec.initial_delay, Duration::ZERO);
        assert_eq!(spec.period, Duration::from_secs(10));
        assert_eq!(spec.timeout, Duration::from_secs(1));
        assert_eq!((spec.success_threshold, spec.failure_threshold), (1, 3));

        let tcp = |port| Probe {
            tcp_socket: Some(TCPSocketAction { host: None, port }),
            initial_delay_seconds: Some(5),
            period_seconds: Some(2),
            timeout_seconds: Some(3),
            success_threshold: Some(2),
            failure_threshold: Some(4),
            ..Default::default()
        };
        let spec = ProbeSpec::from_k8s(&tcp(IntOrString::Int(9000)), &container()).unwrap();
        assert_eq!(
            spec.handler,
            ProbeHandler::TcpSocket {
                host: None,
                port: 9000
            }
        );
        assert_eq!(spec.initial_delay, Duration::from_secs(5));
        assert_eq!(spec.period, Duration::from_secs(2));
        assert_eq!(spec.timeout, Duration::from_secs(3));
        assert_eq!((spec.success_threshold, spec.failure_threshold), (2, 4));
        // A number written as a string, as the kubelet accepts.
        let spec = ProbeSpec::from_k8s(&tcp(IntOrString::String("81".into())), &container());
        assert!(matches!(
            spec.unwrap().handler,
            ProbeHandler::TcpSocket { port: 81, .. }
        ));
        assert_eq!(
            ProbeSpec::from_k8s(&tcp(IntOrString::String("grpc".into())), &container()),
            Err(ProbeError::UnknownPortName("grpc".into()))
        );
        assert_eq!(
            ProbeSpec::from_k8s(&tcp(IntOrString::Int(70000)), &container()),
            Err(ProbeError::InvalidPort(70000))
        );
        assert_eq!(
            ProbeSpec::from_k8s(&tcp(IntOrString::Int(0)), &container()),
            Err(ProbeError::InvalidPort(0))
        );
    }

    #[test]
    fn from_k8s_refuses_what_it_cannot_run() {
        let c = container();
        assert_eq!(
            ProbeSpec::from_k8s(&Probe::default(), &c),
            Err(ProbeError::NoHandler)
        );
        let mut https = http_probe(IntOrString::Int(443));
        https.http_get.as_mut().unwrap().scheme = Some("HTTPS".into());
        assert_eq!(
            ProbeSpec::from_k8s(&https, &c),
            Err(ProbeError::UnsupportedScheme("HTTPS".into()))
        );
        let grpc = Probe {
            grpc: Some(GRPCAction {
                port: 9090,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            ProbeSpec::from_k8s(&grpc, &c),
            Err(ProbeError::GrpcUnsupported)
        );
        let both = Probe {
            exec: Some(ExecAction {
                command: Some(vec!["true".into()]),
            }),
            ..http_probe(IntOrString::Int(80))
        };
        assert_eq!(
            ProbeSpec::from_k8s(&both, &c),
            Err(ProbeError::MultipleHandlers)
        );
        let empty = Probe {
            exec: Some(ExecAction { command: None }),
            ..Default::default()
        };
        assert_eq!(
            ProbeSpec::from_k8s(&empty, &c),
            Err(ProbeError::EmptyCommand)
        );
        let mut injected = http_probe(IntOrString::Int(80));
        injected.http_get.as_mut().unwrap().http_headers = Some(vec![HTTPHeader {
            name: "X".into(),
            value: "a\r\nEvil: 1".into(),
        }]);
        assert!(matches!(
            ProbeSpec::from_k8s(&injected, &c),
            Err(ProbeError::InvalidHttp { .. })
        ));
    }

    #[test]
    fn tracker_thresholds() {
        let mut s = spec(ProbeHandler::Exec {
            command: vec!["true".into()],
        });
        s.success_threshold = 2;
        s.failure_threshold = 3;
        let mut t = ProbeTracker::new(&s);
        assert_eq!(t.result(), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(ProbeResult::Success));
        assert_eq!(t.record(true), None);
        assert_eq!(t.result(), Some(ProbeResult::Success));
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(ProbeResult::Failure));
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(ProbeResult::Success));

        // From unknown, failures alone also reach a result.
        let mut t = ProbeTracker::new(&s);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(ProbeResult::Failure));
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 503\r\n"), Some(503));
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK"), None);
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 2000 OK\r\n"), None);
    }

    #[tokio::test]
    async fn tcp_probe_succeeds_on_a_listener_and_fails_on_a_closed_port() {
        let listener = tokio::net::TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        let open = listener.local_addr().unwrap().port();
        let closed = {
            let l = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
            l.local_addr().unwrap().port()
        };
        let tcp = |port| spec(ProbeHandler::TcpSocket { host: None, port });
        assert!(probe_once(&tcp(open), LOCALHOST, &no_exec()).await);
        assert!(!probe_once(&tcp(closed), LOCALHOST, &no_exec()).await);
        // An explicit host replaces the pod IP.
        let unroutable = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let with_host = spec(ProbeHandler::TcpSocket {
            host: Some("127.0.0.1".into()),
            port: open,
        });
        assert!(probe_once(&with_host, unroutable, &no_exec()).await);
    }

    /// Answers one request per status in turn, and hands back the requests it got.
    fn http_server(statuses: Vec<u16>) -> (u16, std::thread::JoinHandle<Vec<String>>) {
        let listener = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for status in statuses {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut request = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    request.push_str(&line);
                }
                requests.push(request);
                let body = "hello";
                let response = format!(
                    "HTTP/1.1 {status} Whatever\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                reader.get_mut().write_all(response.as_bytes()).unwrap();
            }
            requests
        });
        (port, server)
    }

    #[tokio::test]
    async fn http_probe_reads_the_status() {
        let (port, server) = http_server(vec![200, 500, 302]);
        let probe = spec(ProbeHandler::HttpGet {
            host: None,
            port,
            path: "/healthz?full=1".into(),
            headers: vec![("X-Probe".into(), "yes".into())],
        });
        assert_eq!(check(&probe, LOCALHOST, &no_exec()).await, Ok(()));
        assert_eq!(
            check(&probe, LOCALHOST, &no_exec()).await,
            Err(ProbeFailure::HttpStatus(500))
        );
        assert!(probe_once(&probe, LOCALHOST, &no_exec()).await);
        let requests = server.join().unwrap();
        let first = &requests[0];
        assert!(
            first.starts_with("GET /healthz?full=1 HTTP/1.1\r\n"),
            "{first}"
        );
        assert!(
            first.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
            "{first}"
        );
        assert!(first.contains("X-Probe: yes\r\n"), "{first}");
        assert!(first.contains("Connection: close\r\n"), "{first}");
    }

    #[tokio::test]
    async fn http_probe_times_out_on_a_silent_server() {
        let listener = tokio::net::TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut probe = spec(ProbeHandler::HttpGet {
            host: None,
            port,
            path: "/".into(),
            headers: vec![],
        });
        probe.timeout = Duration::from_millis(200);
        assert_eq!(
            check(&probe, LOCALHOST, &no_exec()).await,
            Err(ProbeFailure::Timeout(Duration::from_millis(200)))
        );
    }

    #[tokio::test]
    async fn exec_probe_uses_the_exit_code() {
        let (runner, calls) = scripted_exec(vec![0, 1]);
        let probe = spec(ProbeHandler::Exec {
            command: vec!["cat".into(), "/tmp/healthy".into()],
        });
        assert!(probe_once(&probe, LOCALHOST, runner.as_ref()).await);
        assert!(!probe_once(&probe, LOCALHOST, runner.as_ref()).await);
        assert!(!probe_once(&probe, LOCALHOST, &no_exec()).await);
        assert_eq!(calls.lock().unwrap()[0], vec!["cat", "/tmp/healthy"]);
    }

    async fn next_result(
        rx: &mut mpsc::Receiver<(ProbeKind, ProbeResult)>,
    ) -> Option<(ProbeKind, ProbeResult)> {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a result within 5s")
    }

    #[tokio::test]
    async fn prober_sends_changes_of_result() {
        let (runner, calls) = scripted_exec(vec![0, 0, 1, 1, 0, 0]);
        let mut probe = spec(ProbeHandler::Exec {
            command: vec!["check".into()],
        });
        probe.success_threshold = 2;
        probe.failure_threshold = 2;
        let (tx, mut rx) = mpsc::channel(8);
        let failures = Arc::new(Mutex::new(Vec::new()));
        let seen = failures.clone();
        let failed = move |f: &ProbeFailure| seen.lock().unwrap().push(f.to_string());
        let task = spawn_prober(ProbeKind::Readiness, probe, LOCALHOST, runner, tx, failed);
        use ProbeKind::Readiness;
        assert_eq!(
            next_result(&mut rx).await,
            Some((Readiness, ProbeResult::Success))
        );
        assert_eq!(
            next_result(&mut rx).await,
            Some((Readiness, ProbeResult::Failure))
        );
        assert_eq!(
            next_result(&mut rx).await,
            Some((Readiness, ProbeResult::Success))
        );
        assert!(calls.lock().unwrap().len() >= 6);
        // Every failed check is reported with its cause, not only the change of result.
        let failures = failures.lock().unwrap().clone();
        assert!(failures.len() >= 2, "{failures:?}");
        assert_eq!(failures[0], "command exited with code 1");
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
    }

    #[tokio::test]
    async fn startup_prober_stops_after_success_and_waits_initial_delay() {
        let (runner, calls) = scripted_exec(vec![1, 0]);
        let mut probe = spec(ProbeHandler::Exec {
            command: vec!["check".into()],
        });
        probe.initial_delay = Duration::from_millis(200);
        probe.failure_threshold = 2;
        let (tx, mut rx) = mpsc::channel(8);
        let started = tokio::time::Instant::now();
        let task = spawn_prober(ProbeKind::Startup, probe, LOCALHOST, runner, tx, |_| {});
        assert_eq!(
            next_result(&mut rx).await,
            Some((ProbeKind::Startup, ProbeResult::Success))
        );
        assert!(started.elapsed() >= Duration::from_millis(200));
        // A started container is not probed for startup again.
        task.await.unwrap();
        assert_eq!(next_result(&mut rx).await, None);
        assert_eq!(calls.lock().unwrap().len(), 2);
    }
}
