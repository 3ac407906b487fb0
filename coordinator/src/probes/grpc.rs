//! `grpc` probe: the standard gRPC health check, `grpc.health.v1.Health/Check`
//! (what `grpc_health_probe` and Kubernetes' gRPC probes call); success is
//! status `SERVING`. The two messages are written here by hand with prost
//! (they are stable and tiny), so no health crate or proto file is needed.
//!
//! TLS (`https://` address) is the same as the `http` probe's (see
//! [`super::tls`]): the system roots plus an optional `ca`, an optional
//! client `cert`/`key`, or `insecure_skip_verify`. tonic's own TLS options
//! cannot take a custom certificate verifier, so the probe makes the TLS
//! connection itself (rustls, ALPN `h2`) and hands tonic the encrypted
//! stream; the requests still say `https` as their scheme.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::Deserialize;
use tonic::codegen::http::Uri;
use tonic::transport::Endpoint;

use super::tls::{self, RawTls, Tls};
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
    /// For `https://` addresses: whom to trust, what to show.
    pub tls: Option<Tls>,
    /// The rustls configuration built from `tls` on the first check.
    config: Arc<OnceLock<Result<Arc<rustls::ClientConfig>, tls::ClientError>>>,
}

/// Why a written `grpc` probe is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("grpc.address {0:?}: write http://host:port (plaintext) or https://host:port (TLS)")]
    Address(String),
    #[error("grpc.address {0:?}: ca, cert, key and insecure_skip_verify apply to https:// addresses only")]
    TlsOnPlaintext(String),
    #[error(transparent)]
    Tls(#[from] tls::Error),
}

/// Why one health check failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Tls(#[from] tls::ClientError),
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
    #[serde(flatten)]
    tls: RawTls,
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
        let t = &r.tls;
        if !https && (t.ca.is_some() || t.cert.is_some() || t.key.is_some() || t.insecure_skip_verify) {
            return Err(Error::TlsOnPlaintext(r.address));
        }
        Ok(GrpcProbe {
            tls: https.then(|| Tls::from_raw("grpc", r.tls)).transpose()?,
            address: r.address,
            service: r.service,
            config: Arc::default(),
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
        let channel = match &self.tls {
            None => Endpoint::from_shared(self.address.clone())
                .map_err(|e| Failure::Connect(e.to_string()))?
                .connect_timeout(timeout)
                .timeout(timeout)
                .connect()
                .await
                .map_err(|e| Failure::Connect(chain(&e)))?,
            Some(tls) => {
                let origin: Uri = self
                    .address
                    .parse()
                    .map_err(|e: tonic::codegen::http::uri::InvalidUri| Failure::Connect(e.to_string()))?;
                let connector = TlsConnector {
                    config: self.config(tls)?,
                    server_name: server_name(&origin)?,
                };
                // tonic would try TLS itself on an https:// endpoint (and
                // refuse without its own TLS options): it dials the
                // plaintext form, the connector encrypts, and the origin
                // keeps `https` in the requests.
                let dial = self.address.replacen("https://", "http://", 1);
                Endpoint::from_shared(dial)
                    .map_err(|e| Failure::Connect(e.to_string()))?
                    .origin(origin)
                    .connect_timeout(timeout)
                    .timeout(timeout)
                    .connect_with_connector(connector)
                    .await
                    .map_err(|e| Failure::Connect(chain(&e)))?
            }
        };
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
    /// The rustls configuration for `tls`, with ALPN `h2` (gRPC is
    /// HTTP/2), built once.
    fn config(&self, tls: &Tls) -> Result<Arc<rustls::ClientConfig>, Failure> {
        let built = self.config.get_or_init(|| {
            tls.config().map(|mut c| {
                c.alpn_protocols = vec![b"h2".to_vec()];
                Arc::new(c)
            })
        });
        Ok(built.clone()?)
    }
}

/// The name the server's certificate must carry: the address's host (a DNS
/// name or an IP address), as a browser would check it.
fn server_name(uri: &Uri) -> Result<ServerName<'static>, Failure> {
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| Failure::Connect(format!("host {host:?}: {e}")))
}

/// Dials TCP and makes the TLS connection for tonic.
#[derive(Clone)]
struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
}

type Io = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl tonic::codegen::Service<Uri> for TlsConnector {
    type Response = Io;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Io, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let tls = tokio_rustls::TlsConnector::from(this.config)
                .connect(this.server_name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
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
            (
                "{address: 'http://h:1', insecure_skip_verify: true}",
                "https:// addresses only",
            ),
            ("{address: 'https://h:1', cert: c.pem}", "cert and key go together"),
            (
                "{address: 'https://h:1', insecure_skip_verify: true, ca: ca.pem}",
                "contradict each other",
            ),
        ] {
            let raw: RawGrpc = serde_norway::from_str(yaml).expect("yaml");
            let e = GrpcProbe::from_raw(raw).expect_err(yaml).to_string();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }
}
