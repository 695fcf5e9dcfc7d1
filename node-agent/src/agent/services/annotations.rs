//! The Service annotations the node's proxy acts on (berth's own; Kubernetes has no field for
//! these):
//!
//! | annotation | meaning |
//! |---|---|
//! | `service.berth.dev/tls-secret: NAME` | terminate TLS with the Secret's `tls.crt` and `tls.key` (type `kubernetes.io/tls`, same namespace); HTTP behind |
//! | `service.berth.dev/tls-ports: "https,8443"` | which ports, by name or number (default: those named `https` or with appProtocol `https`) |
//! | `service.berth.dev/health-check-path: /healthz` | active HTTP health checks (`GET` expecting 2xx) |
//! | `service.berth.dev/health-check: tcp` | active TCP (connect) health checks (`http` = path `/`) |
//! | `service.berth.dev/health-check-interval: 2s` | how often |
//! | `service.berth.dev/load-balancer: round-robin` | or `peak-ewma` (the default); `sessionAffinity: ClientIP` selects client-IP hashing |

use super::desired::{HealthCheck, TlsPem};
use crate::agent::informer::Objects;
use berth_proxy::Algorithm;
use k8s_openapi::api::core::v1::{Secret, Service, ServicePort};
use std::collections::BTreeMap;

pub const TLS_SECRET: &str = "service.berth.dev/tls-secret";
pub const TLS_PORTS: &str = "service.berth.dev/tls-ports";
pub const HEALTH_CHECK: &str = "service.berth.dev/health-check";
pub const HEALTH_CHECK_PATH: &str = "service.berth.dev/health-check-path";
pub const HEALTH_CHECK_INTERVAL: &str = "service.berth.dev/health-check-interval";
pub const LOAD_BALANCER: &str = "service.berth.dev/load-balancer";

/// A Service's listener options, from its annotations.
#[derive(Debug, Default)]
pub struct ServiceOptions {
    pub balancer: Option<Algorithm>,
    pub health_check: Option<HealthCheck>,
    tls: Option<Tls>,
    /// Annotations that could not be honoured.
    pub problems: Vec<String>,
}

#[derive(Debug)]
struct Tls {
    /// Port names and numbers; `None`: the default (named or appProtocol `https`).
    ports: Option<Vec<String>>,
    pem: Result<TlsPem, String>,
}

/// Whether and how a port is served over TLS.
#[derive(Debug)]
pub enum PortTls {
    None,
    Terminate(TlsPem),
    /// A TLS port whose certificate is missing or unusable: why.
    Unavailable(String),
}

impl ServiceOptions {
    pub fn of(service: &Service, secrets: &Objects<Secret>, namespace: &str) -> ServiceOptions {
        let empty = BTreeMap::new();
        let annotations = service.metadata.annotations.as_ref().unwrap_or(&empty);
        let get = |key: &str| annotations.get(key).map(|v| v.trim());
        let mut options = ServiceOptions::default();

        if let Some(value) = get(LOAD_BALANCER) {
            match serde_json::from_value::<Algorithm>(serde_json::Value::String(value.into())) {
                Ok(algorithm) => options.balancer = Some(algorithm),
                Err(_) => options.problems.push(format!(
                    "{LOAD_BALANCER}: {value:?} is not one of round-robin, peak-ewma"
                )),
            }
        }

        let path = match (get(HEALTH_CHECK_PATH), get(HEALTH_CHECK)) {
            (Some(path), _) if path.starts_with('/') => Some(Some(path.to_string())),
            (Some(path), _) => {
                options.problems.push(format!(
                    "{HEALTH_CHECK_PATH}: {path:?} is not a path (it starts with /)"
                ));
                None
            }
            (None, Some(kind)) if kind.eq_ignore_ascii_case("tcp") => Some(None),
            (None, Some(kind)) if kind.eq_ignore_ascii_case("http") => Some(Some("/".into())),
            (None, Some(kind)) => {
                options
                    .problems
                    .push(format!("{HEALTH_CHECK}: {kind:?} is not one of tcp, http"));
                None
            }
            (None, None) => None,
        };
        if let Some(path) = path {
            let interval_ms = get(HEALTH_CHECK_INTERVAL).and_then(|text| {
                match parse_duration(text) {
                    Some(interval) => Some(interval),
                    None => {
                        options.problems.push(format!(
                            "{HEALTH_CHECK_INTERVAL}: {text:?} is not a positive duration like 2s or 500ms"
                        ));
                        None
                    }
                }
            });
            options.health_check = Some(HealthCheck { path, interval_ms });
        }

        let ports = get(TLS_PORTS).map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        });
        match get(TLS_SECRET) {
            Some(secret) => {
                options.tls = Some(Tls {
                    ports,
                    pem: tls_pem(secrets, namespace, secret),
                })
            }
            None if ports.is_some() => options
                .problems
                .push(format!("{TLS_PORTS} without {TLS_SECRET}: no TLS")),
            None => {}
        }
        options
    }

    pub fn tls_for(&self, port: &ServicePort) -> PortTls {
        let Some(tls) = &self.tls else {
            return PortTls::None;
        };
        let name = port.name.as_deref().unwrap_or("");
        let wanted = match &tls.ports {
            Some(ports) => ports
                .iter()
                .any(|p| (!name.is_empty() && p == name) || *p == port.port.to_string()),
            None => {
                name.eq_ignore_ascii_case("https")
                    || port
                        .app_protocol
                        .as_deref()
                        .is_some_and(|p| p.eq_ignore_ascii_case("https"))
            }
        };
        match (&tls.pem, wanted) {
            (_, false) => PortTls::None,
            (Ok(pem), true) => PortTls::Terminate(pem.clone()),
            (Err(why), true) => PortTls::Unavailable(why.clone()),
        }
    }
}

/// `tls.crt` and `tls.key` of the Secret (its `data`, with `stringData` on top).
fn tls_pem(secrets: &Objects<Secret>, namespace: &str, name: &str) -> Result<TlsPem, String> {
    let secret = secrets
        .get(&(namespace.to_string(), name.to_string()))
        .ok_or_else(|| format!("secret {namespace}/{name} not found"))?;
    let value = |key: &str| -> Option<Vec<u8>> {
        let from_strings = secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| v.clone().into_bytes());
        from_strings.or_else(|| secret.data.as_ref()?.get(key).map(|v| v.0.clone()))
    };
    match (value("tls.crt"), value("tls.key")) {
        (Some(cert), Some(key)) if !cert.is_empty() && !key.is_empty() => Ok(TlsPem {
            secret: format!("{namespace}/{name}"),
            cert,
            key,
        }),
        _ => Err(format!(
            "secret {namespace}/{name} has no tls.crt and tls.key"
        )),
    }
}

/// `2s`, `500ms`, `1m`, or a bare number of seconds; positive only. In milliseconds.
fn parse_duration(text: &str) -> Option<u64> {
    let duration = match text.parse::<u64>() {
        Ok(seconds) => std::time::Duration::from_secs(seconds),
        Err(_) => {
            let signed: jiff::SignedDuration = text.parse().ok()?;
            std::time::Duration::try_from(signed).ok()?
        }
    };
    let ms = u64::try_from(duration.as_millis()).ok()?;
    (ms > 0).then_some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Some(2000));
        assert_eq!(parse_duration("500ms"), Some(500));
        assert_eq!(parse_duration("1m"), Some(60_000));
        assert_eq!(parse_duration("3"), Some(3000));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("soon"), None);
    }
}
