//! `grpc` probe: the standard gRPC health check, `grpc.health.v1.Health/Check`
//! (what `grpc_health_probe` and Kubernetes' gRPC probes call); success is
//! status `SERVING`. The two messages are written here by hand with prost
//! (they are stable and tiny), so no health crate or proto file is needed.
//!
//! TLS (`https://` address) uses tonic's rustls client: the system roots
//! plus an optional `ca`, and an optional client `cert`/`key`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::{Clients, Kind, Reading};

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    /// The service to check; empty asks about the server as a whole.
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    /// `ServingStatus`: 0 UNKNOWN, 1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// The health service's method, as gRPC addresses it.
pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// `ServingStatus::SERVING`.
pub const SERVING: i32 = 1;

fn status_name(s: i32) -> String {
    match s {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        n => format!("status {n}"),
    }
}

#[derive(Debug, Clone)]
pub struct GrpcProbe {
    /// `http://host:port` or `https://host:port`.
    pub address: String,
    /// The service name asked about; empty for the whole server.
    pub service: String,
    pub ca: Option<PathBuf>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Why a written `grpc` probe is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("grpc.address {0:?}: write http://host:port (plaintext) or https://host:port (TLS)")]
    Address(String),
    #[error("grpc.address {0:?}: ca, cert and key apply to https:// addresses only")]
    TlsOnPlaintext(String),
    #[error("grpc: cert and key go together; set both or neither")]
    CertWithoutKey,
    #[error("grpc.insecure_skip_verify: not supported for grpc probes; name the server's CA with ca")]
    Insecure,
}

/// Why one health check failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("tls: {0}")]
    Tls(String),
    #[error("connect error: {0}")]
    Connect(String),
    /// The call ended with a gRPC status other than OK (e.g. NOT_FOUND for
    /// an unknown service, UNIMPLEMENTED without a health service).
    #[error("grpc status {code:?}: {message}")]
    Status { code: tonic::Code, message: String },
    #[error("{0}")]
    NotServing(String),
}

/// A `grpc` probe as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrpc {
    address: String,
    #[serde(default)]
    service: String,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

impl Kind for GrpcProbe {
    const NAME: &'static str = "grpc";
    type Raw = RawGrpc;
    type Error = Error;
    type Failure = Failure;

    fn from_raw(r: RawGrpc) -> Result<Self, Error> {
        let https = r.address.starts_with("https://");
        if !https && !r.address.starts_with("http://") {
            return Err(Error::Address(r.address));
        }
        if r.address.parse::<tonic::codegen::http::Uri>().is_err() {
            return Err(Error::Address(r.address));
        }
        if r.insecure_skip_verify {
            return Err(Error::Insecure);
        }
        if !https && (r.ca.is_some() || r.cert.is_some() || r.key.is_some()) {
            return Err(Error::TlsOnPlaintext(r.address));
        }
        let client_cert = match (r.cert, r.key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(Error::CertWithoutKey),
        };
        Ok(GrpcProbe {
            address: r.address,
            service: r.service,
            ca: r.ca,
            client_cert,
        })
    }

    fn target(&self) -> String {
        if self.service.is_empty() {
            self.address.clone()
        } else {
            format!("{} service {}", self.address, self.service)
        }
    }

    async fn check(&self, _clients: &Clients, timeout: Duration) -> Result<Reading, Failure> {
        let mut endpoint = Endpoint::from_shared(self.address.clone())
            .map_err(|e| Failure::Connect(e.to_string()))?
            .connect_timeout(timeout)
            .timeout(timeout);
        if self.address.starts_with("https://") {
            endpoint = endpoint
                .tls_config(self.tls()?)
                .map_err(|e| Failure::Tls(e.to_string()))?;
        }
        let channel = endpoint.connect().await.map_err(|e| Failure::Connect(chain(&e)))?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| Failure::Connect(chain(&e)))?;
        let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
        let request = tonic::Request::new(HealthCheckRequest {
            service: self.service.clone(),
        });
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(CHECK_PATH);
        let response = grpc.unary(request, path, codec).await.map_err(|s| Failure::Status {
            code: s.code(),
            message: s.message().to_string(),
        })?;
        match response.into_inner().status {
            SERVING => Ok(Reading::Done),
            other => Err(Failure::NotServing(status_name(other))),
        }
    }
}

impl GrpcProbe {
    fn tls(&self) -> Result<ClientTlsConfig, Failure> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| Failure::Read {
                path: p.clone(),
                reason: e.to_string(),
            })
        };
        let mut tls = ClientTlsConfig::new().with_native_roots();
        if let Some(ca) = &self.ca {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let Some((cert, key)) = &self.client_cert {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        Ok(tls)
    }
}

/// An error with its sources, for the transport's nested errors.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    for _ in 0..8 {
        let Some(s) = src else { break };
        out = format!("{out}: {s}");
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_mistakes_are_refused() {
        for (yaml, want) in [
            ("{address: '127.0.0.1:50051'}", "write http://host:port"),
            ("{address: 'http://h:1', ca: ca.pem}", "https:// addresses only"),
            ("{address: 'https://h:1', cert: c.pem}", "cert and key go together"),
            (
                "{address: 'https://h:1', insecure_skip_verify: true}",
                "not supported for grpc",
            ),
        ] {
            let raw: RawGrpc = serde_norway::from_str(yaml).expect("yaml");
            let e = GrpcProbe::from_raw(raw).expect_err(yaml).to_string();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }
}
