//! TLS termination. A listener with a `TlsConfig` runs the TLS handshake on the worker that
//! serves the connection (bounded by `HANDSHAKE_TIMEOUT`, so a silent client holds nothing
//! but its socket) and then serves what is inside: HTTP (L7; ALPN offers h2 and http/1.1,
//! endpoints see `X-Forwarded-Proto: https`) or plain bytes to the endpoint (L4; no ALPN, as
//! the proxy cannot know what the endpoint speaks).
//!
//! ```text
//!  client --TLS--> listener --accept--> worker: handshake (timeout) --> http.rs | tcp.rs
//!                     ^ acceptor read per connection
//!  Proxy::update_tls --+ swapped whole: new handshakes use the new certificate,
//!                        established connections keep theirs
//! ```
//!
//! Crypto is rustls with the ring provider only, chosen explicitly for every config (never
//! the process-wide default): mixing in aws-lc-rs builds both and breaks at run time.
//! Certificates and keys are checked when the config is made (`TlsConfig::from_pem`), so a
//! bad Secret is an error before any listener binds, not a failed handshake later.

use crate::config::Mode;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{InconsistentKeys, ServerConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_rustls::TlsAcceptor;

/// How long a client has to complete its handshake (nginx allows 60 s; a slow mobile client
/// needs a few round trips, a stalled one should not hold a socket for long).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate chain: {0}")]
    CertificatePem(pem::Error),
    #[error("certificate chain: no CERTIFICATE block found")]
    NoCertificate,
    #[error("certificate chain: the first certificate is not valid: {0}")]
    Certificate(rustls::Error),
    #[error("private key: no PRIVATE KEY block found")]
    NoKey,
    #[error("private key: {0}")]
    KeyPem(pem::Error),
    #[error("private key: {0}")]
    Key(rustls::Error),
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("making the server configuration: {0}")]
    Config(rustls::Error),
}

/// A certificate chain and its private key, checked to belong together. Cheap to clone.
///
/// In a `berth proxy --config` file: `tls: {certFile: PATH, keyFile: PATH}` (PEM files, read
/// when the file is loaded).
#[derive(Clone, Deserialize)]
#[serde(try_from = "TlsFiles")]
pub struct TlsConfig {
    key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsConfig")
            .field("certificates", &self.key.cert.len())
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TlsFiles {
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl TryFrom<TlsFiles> for TlsConfig {
    type Error = TlsError;

    fn try_from(files: TlsFiles) -> Result<Self, TlsError> {
        TlsConfig::from_files(&files.cert_file, &files.key_file)
    }
}

/// The one crypto provider of the proxy.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

impl TlsConfig {
    /// From a PEM certificate chain (end-entity certificate first, as in a kubernetes.io/tls
    /// Secret's `tls.crt`) and a PEM private key (PKCS#8, PKCS#1 or SEC1: `tls.key`).
    pub fn from_pem(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(TlsError::CertificatePem)?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|error| match error {
            pem::Error::NoItemsFound => TlsError::NoKey,
            error => TlsError::KeyPem(error),
        })?;
        let signing_key = provider()
            .key_provider
            .load_private_key(key)
            .map_err(TlsError::Key)?;
        let key = CertifiedKey::new(chain, signing_key);
        match key.keys_match() {
            // ring can always tell; a provider that cannot is not a mismatch.
            Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(_)) => return Err(TlsError::KeyMismatch),
            Err(error) => return Err(TlsError::Certificate(error)),
        }
        Ok(TlsConfig { key: Arc::new(key) })
    }

    /// From PEM files (`certFile`, `keyFile` in a config file).
    pub fn from_files(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        TlsConfig::from_pem(&read(cert_file)?, &read(key_file)?)
    }

    /// The acceptor of a listener in `mode`.
    pub(crate) fn acceptor(&self, mode: Mode) -> Result<TlsAcceptor, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(self.key.clone())));
        if mode == Mode::Http {
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        }
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_with_a_clear_error() {
        let error = TlsConfig::from_pem(b"", b"").unwrap_err();
        assert!(matches!(error, TlsError::NoCertificate), "{error}");
        let truncated = b"-----BEGIN CERTIFICATE-----\nMIIB\n";
        let error = TlsConfig::from_pem(truncated, b"").unwrap_err();
        assert!(matches!(error, TlsError::CertificatePem(_)), "{error}");
        let not_der = b"-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        let error = TlsConfig::from_pem(not_der, b"").unwrap_err();
        assert!(matches!(error, TlsError::NoKey), "{error}");
        assert_eq!(error.to_string(), "private key: no PRIVATE KEY block found");
    }

    #[test]
    fn a_key_must_belong_to_its_certificate() {
        let names = vec!["web.default.svc".to_string()];
        let web = rcgen::generate_simple_self_signed(names.clone()).unwrap();
        let other = rcgen::generate_simple_self_signed(names).unwrap();
        let (cert, key) = (web.cert.pem(), web.signing_key.serialize_pem());
        let config = TlsConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(format!("{config:?}"), "TlsConfig { certificates: 1 }");
        assert!(config.acceptor(Mode::Http).is_ok());

        let foreign = other.signing_key.serialize_pem();
        let error = TlsConfig::from_pem(cert.as_bytes(), foreign.as_bytes()).unwrap_err();
        assert!(matches!(error, TlsError::KeyMismatch), "{error}");
        // A PEM block that is no certificate at all.
        let not_der = b"-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        let error = TlsConfig::from_pem(not_der, key.as_bytes()).unwrap_err();
        assert!(matches!(error, TlsError::Certificate(_)), "{error}");
        // Swapped arguments: a certificate where the key should be.
        let error = TlsConfig::from_pem(cert.as_bytes(), cert.as_bytes()).unwrap_err();
        assert!(matches!(error, TlsError::NoKey), "{error}");
    }
}
