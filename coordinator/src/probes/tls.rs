//! TLS for the probes that speak HTTPS (`http` with an `https://` URL,
//! `prometheus`) and for `grpc` over `https://`: which servers to trust and
//! which certificate to show. All three build their rustls configuration
//! here, so `ca`, `cert`/`key` and `insecure_skip_verify` mean the same for
//! each.
//!
//! The client is rustls with the ring provider (the one tonic already uses
//! for the agent links), built once per probe on its first check, so a file
//! that is missing on the machine that only validates the experiment is not
//! an error there; on the coordinator it is the sample's failure, in words
//! that name the file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::Deserialize;

/// The TLS options as written, flattened into the probe's own keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// A PEM file of CA certificates trusted in addition to the system's
    /// roots, for services behind a private CA. By default, only the
    /// system's roots.
    pub ca: Option<PathBuf>,
    /// A PEM client certificate (chain) shown to servers that ask for one
    /// (mutual TLS); needs `key`. By default, none.
    pub cert: Option<PathBuf>,
    /// The PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// Accepts any server certificate, for a lab service with a throwaway
    /// certificate. The name says what it costs: anyone on the path can
    /// answer for the server. By default, false.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Why written TLS options are refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: cert and key go together; set both or neither")]
    CertWithoutKey { field: &'static str },
    #[error("{field}: insecure_skip_verify and ca contradict each other; drop ca, or drop insecure_skip_verify to verify against it")]
    InsecureWithCa { field: &'static str },
}

/// Why a client could not be built from the options.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("tls: cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("tls: {path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("tls: {path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("tls: {0}")]
    Config(String),
}

/// Checked TLS options and the client built from them on first use.
#[derive(Debug, Clone)]
pub struct Tls {
    pub ca: Option<PathBuf>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub insecure_skip_verify: bool,
    client: Arc<OnceLock<Result<reqwest::Client, ClientError>>>,
}

impl Tls {
    /// Checks the options; `field` is the probe's key (`http`, `prometheus`)
    /// for messages.
    pub fn from_raw(field: &'static str, raw: RawTls) -> Result<Self, Error> {
        let client_cert = match (raw.cert, raw.key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(Error::CertWithoutKey { field }),
        };
        if raw.insecure_skip_verify && raw.ca.is_some() {
            return Err(Error::InsecureWithCa { field });
        }
        Ok(Tls {
            ca: raw.ca,
            client_cert,
            insecure_skip_verify: raw.insecure_skip_verify,
            client: Arc::default(),
        })
    }

    /// The probe's HTTPS client, built on the first call.
    pub fn client(&self) -> Result<reqwest::Client, ClientError> {
        self.client.get_or_init(|| self.build()).clone()
    }

    fn build(&self) -> Result<reqwest::Client, ClientError> {
        base_builder()
            .tls_backend_preconfigured(self.config()?)
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))
    }

    /// The rustls client configuration the options describe (no ALPN set;
    /// a caller speaking HTTP/2 directly adds `h2`).
    pub fn config(&self) -> Result<rustls::ClientConfig, ClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        } else {
            let mut roots = rustls::RootCertStore::empty();
            // The system's roots; unreadable ones are skipped, as a browser
            // would, and a private CA can still be named with `ca`.
            let system = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(system.certs);
            if let Some(ca) = &self.ca {
                for cert in read_certs(ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| ClientError::Config(format!("ca {}: {e}", ca.display())))?;
                }
            }
            builder.with_root_certificates(roots)
        };
        Ok(match &self.client_cert {
            Some((cert, key)) => builder
                .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
                .map_err(|e| ClientError::Config(format!("cert {}: {e}", cert.display())))?,
            None => builder.with_no_client_auth(),
        })
    }
}

/// The client of probes without TLS options (plain http, prometheus over
/// http, stop conditions, error budgets): the system's roots as rustls
/// reads them — none at all on a host without a CA bundle, which is fine
/// for plain http. reqwest's own verifier refuses to build a client on
/// such a host ("No CA certificates were loaded from the system"), and a
/// fallback to `reqwest::Client::new()` then panicked, ending every run on
/// a minimal host or container as an internal error.
pub fn default_client() -> reqwest::Client {
    let tls = Tls {
        ca: None,
        client_cert: None,
        insecure_skip_verify: false,
        client: Arc::default(),
    };
    match tls.build() {
        Ok(c) => c,
        Err(e) => {
            // Not reachable with ring and no files to read; kept total.
            tracing::warn!(error = %e, "building the probe client with the system's roots failed; https probes without `ca` will fail");
            let empty = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                });
            match empty {
                Ok(cfg) => base_builder()
                    .tls_backend_preconfigured(cfg)
                    .build()
                    .unwrap_or_default(),
                Err(_) => reqwest::Client::default(),
            }
        }
    }
}

/// The settings every probe client shares. reqwest is built without a
/// crypto provider of its own, so ring is installed as the process's
/// default first (a no-op when one is already installed).
pub fn base_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .user_agent(concat!("faultline/", env!("CARGO_PKG_VERSION")))
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| ClientError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    use rustls::pki_types::pem::PemObject;
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(ClientError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ClientError> {
    use rustls::pki_types::pem::PemObject;
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| ClientError::NoKey { path: path.to_owned() })
}

/// `insecure_skip_verify`: accepts any certificate, but still checks that
/// the handshake was signed by its key, so the connection is encrypted to
/// whoever answered.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
