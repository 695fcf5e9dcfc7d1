//! What a proxy serves: listeners, each for one service port, with its mode, balancing
//! algorithm, policies and (for `berth proxy --config`) static endpoints. The YAML form:
//!
//! ```yaml
//! admin: 127.0.0.1:9901            # /metrics; optional
//! workers: 2                       # data-plane threads; default one per core
//! listeners:
//!   - name: default/web:http       # the service port
//!     listen: 0.0.0.0:8080
//!     mode: http                   # or tcp
//!     balancer: round-robin        # peak-ewma (default) | round-robin | client-ip
//!     endpoints: [10.244.0.2:8080, 10.244.0.3:8080]
//!     tls: {certFile: web.crt, keyFile: web.key}   # optional: terminate TLS (PEM files)
//!     healthCheck:                 # optional: active checks (defaults shown)
//!       path: /healthz             # HTTP GET, 2xx/3xx passes; leave out for a TCP connect
//!       intervalMs: 2000
//!       timeoutMs: 1000
//!       healthyThreshold: 2        # passes in a row that bring an endpoint back
//!       unhealthyThreshold: 3      # failures in a row that take it out
//! ```

use crate::balancer::Algorithm;
use crate::outlier::OutlierPolicy;
use crate::retry::RetryPolicy;
use crate::tls::TlsConfig;
use http::uri::PathAndQuery;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    #[serde(default)]
    pub admin: Option<SocketAddr>,
    /// Data-plane threads; default: one per core.
    #[serde(default)]
    pub workers: Option<usize>,
    pub listeners: Vec<ListenerConfig>,
}

/// L4 forwards bytes and balances per connection; L7 parses HTTP and balances per request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Tcp,
    Http,
}

/// How the proxy talks HTTP to endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    /// h2c with prior knowledge (gRPC endpoints need it).
    Http2,
}

impl Mode {
    /// The mode and upstream protocol a Kubernetes service port asks for through its
    /// `appProtocol` or, failing that, its name (`http`, `http-web`, `grpc`, ...).
    pub fn for_service_port(name: &str, app_protocol: Option<&str>) -> (Mode, UpstreamProtocol) {
        let protocol = app_protocol.unwrap_or_else(|| name.split('-').next().unwrap_or(name));
        match protocol.to_ascii_lowercase().as_str() {
            "http" => (Mode::Http, UpstreamProtocol::Http1),
            "http2" | "h2c" | "kubernetes.io/h2c" | "grpc" => (Mode::Http, UpstreamProtocol::Http2),
            _ => (Mode::Tcp, UpstreamProtocol::Http1),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerConfig {
    /// The service port this listener serves (metrics label, `Proxy::update` key).
    pub name: String,
    pub listen: SocketAddr,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub balancer: Algorithm,
    #[serde(default)]
    pub upstream: UpstreamProtocol,
    #[serde(default)]
    pub endpoints: Vec<SocketAddr>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// From the request's arrival to the response's headers, retries included (L7).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    #[serde(default)]
    pub outlier: OutlierConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    /// Terminate TLS on this listener (`Proxy::update_tls` swaps it live).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Check the endpoints actively; without it only passive outlier detection applies.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
}

fn default_connect_timeout_ms() -> u64 {
    1_000
}

fn default_request_timeout_ms() -> u64 {
    15_000
}

impl ListenerConfig {
    pub fn new(name: impl Into<String>, listen: SocketAddr, mode: Mode) -> Self {
        ListenerConfig {
            name: name.into(),
            listen,
            mode,
            balancer: Algorithm::default(),
            upstream: UpstreamProtocol::default(),
            endpoints: Vec::new(),
            connect_timeout_ms: default_connect_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            outlier: OutlierConfig::default(),
            retry: RetryConfig::default(),
            tls: None,
            health_check: None,
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OutlierConfig {
    pub consecutive_failures: u32,
    pub base_ejection_ms: u64,
    pub max_ejection_ms: u64,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        let policy = OutlierPolicy::default();
        OutlierConfig {
            consecutive_failures: policy.consecutive_failures,
            base_ejection_ms: policy.base_ejection.as_millis() as u64,
            max_ejection_ms: policy.max_ejection.as_millis() as u64,
        }
    }
}

impl OutlierConfig {
    pub fn policy(&self) -> OutlierPolicy {
        OutlierPolicy {
            consecutive_failures: self.consecutive_failures.max(1),
            base_ejection: Duration::from_millis(self.base_ejection_ms),
            max_ejection: Duration::from_millis(self.max_ejection_ms),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RetryConfig {
    pub max_attempts: u32,
    pub budget_ratio: f64,
    pub min_retries_per_second: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let policy = RetryPolicy::default();
        RetryConfig {
            max_attempts: policy.max_attempts,
            budget_ratio: policy.ratio,
            min_retries_per_second: policy.min_per_second,
        }
    }
}

impl RetryConfig {
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts.max(1),
            ratio: self.budget_ratio,
            min_per_second: self.min_retries_per_second,
            ..RetryPolicy::default()
        }
    }
}

/// Active health checks of a listener's endpoints (HAProxy's defaults: every 2 s, out after
/// 3 failures in a row, back after 2 passes in a row).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// HTTP GET of this path (with the query, if any); `None`: a TCP connect is the check.
    pub path: Option<String>,
    pub interval_ms: u64,
    /// For the whole check: connect, request and response head.
    pub timeout_ms: u64,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            path: None,
            interval_ms: 2_000,
            timeout_ms: 1_000,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

impl HealthCheckConfig {
    /// An HTTP check of `path` with the default timing.
    pub fn http(path: impl Into<String>) -> Self {
        HealthCheckConfig {
            path: Some(path.into()),
            ..HealthCheckConfig::default()
        }
    }

    /// A TCP connect check with the default timing.
    pub fn tcp() -> Self {
        HealthCheckConfig::default()
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.max(1))
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }

    /// The path as the request target, if it is one (`/healthz`, `/ready?full=1`).
    pub(crate) fn path_and_query(&self) -> Result<Option<PathAndQuery>, String> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        match PathAndQuery::try_from(path.as_str()) {
            Ok(target) if path.starts_with('/') => Ok(Some(target)),
            _ => Err(format!("health check path {path:?}: not an absolute path")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_yaml_form() {
        let config: ProxyConfig = serde_yaml::from_str(
            "admin: 127.0.0.1:9901\nworkers: 1\nlisteners:\n\
             - name: default/web:http\n  listen: 0.0.0.0:8080\n  mode: http\n\
             \x20 balancer: round-robin\n  endpoints: [10.244.0.2:8080, 10.244.0.3:8080]\n\
             \x20 outlier: {consecutiveFailures: 3}\n\
             - name: default/db:tcp\n  listen: 0.0.0.0:5432\n  endpoints: [10.244.0.4:5432]\n",
        )
        .unwrap();
        assert_eq!(config.workers, Some(1));
        let web = &config.listeners[0];
        assert_eq!(web.mode, Mode::Http);
        assert_eq!(web.balancer, Algorithm::RoundRobin);
        assert_eq!(web.endpoints.len(), 2);
        assert_eq!(web.outlier.policy().consecutive_failures, 3);
        assert_eq!(web.request_timeout(), Duration::from_secs(15));
        assert_eq!(web.health_check, None);
        assert!(web.tls.is_none());
        let db = &config.listeners[1];
        assert_eq!((db.mode, db.balancer), (Mode::Tcp, Algorithm::PeakEwma));
        let unknown = serde_yaml::from_str::<ProxyConfig>("listeners: []\nlistner: x\n");
        assert!(unknown.unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn parses_health_checks_and_tls_files() {
        let listener: ListenerConfig = serde_yaml::from_str(
            "name: default/web:http\nlisten: 0.0.0.0:8080\nmode: http\n\
             healthCheck: {path: /healthz, intervalMs: 500}\n",
        )
        .unwrap();
        let check = listener.health_check.unwrap();
        assert_eq!(check.path.as_deref(), Some("/healthz"));
        assert_eq!(check.interval(), Duration::from_millis(500));
        assert_eq!((check.healthy_threshold, check.unhealthy_threshold), (2, 3));
        assert_eq!(check.path_and_query().unwrap().unwrap(), "/healthz");
        assert!(HealthCheckConfig::http("healthz").path_and_query().is_err());
        assert_eq!(HealthCheckConfig::tcp().path_and_query(), Ok(None));

        let dir = std::env::temp_dir().join(format!("berth-proxy-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let web = rcgen::generate_simple_self_signed(vec!["web".to_string()]).unwrap();
        std::fs::write(dir.join("web.crt"), web.cert.pem()).unwrap();
        std::fs::write(dir.join("web.key"), web.signing_key.serialize_pem()).unwrap();
        let yaml = |key: &str| {
            format!(
                "name: default/web:https\nlisten: 0.0.0.0:8443\nmode: http\n\
                 tls: {{certFile: {}, keyFile: {}}}\n",
                dir.join("web.crt").display(),
                dir.join(key).display()
            )
        };
        let listener: ListenerConfig = serde_yaml::from_str(&yaml("web.key")).unwrap();
        assert!(listener.tls.is_some());
        let missing = serde_yaml::from_str::<ListenerConfig>(&yaml("nope.key")).unwrap_err();
        assert!(missing.to_string().contains("nope.key"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn service_ports_pick_their_mode() {
        assert_eq!(Mode::for_service_port("http", None).0, Mode::Http);
        assert_eq!(Mode::for_service_port("http-web", None).0, Mode::Http);
        assert_eq!(
            Mode::for_service_port("web", Some("kubernetes.io/h2c")),
            (Mode::Http, UpstreamProtocol::Http2)
        );
        assert_eq!(
            Mode::for_service_port("grpc", None),
            (Mode::Http, UpstreamProtocol::Http2)
        );
        assert_eq!(Mode::for_service_port("postgres", None).0, Mode::Tcp);
        assert_eq!(Mode::for_service_port("http", Some("tcp")).0, Mode::Tcp);
    }
}
