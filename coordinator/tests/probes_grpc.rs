//! The `grpc` probe against a real tonic server in this process serving
//! `grpc.health.v1.Health/Check`, written the way tonic's generated code
//! routes a unary method (no health crate is needed for the two messages).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use faultline_coordinator::experiment::Probe;
use faultline_coordinator::probes::grpc::{HealthCheckRequest, HealthCheckResponse, CHECK_PATH};
use faultline_coordinator::probes::{check_once, Clients};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::codegen::http;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A health service whose statuses per service name the test sets
/// (1 SERVING, 2 NOT_SERVING); an unknown name answers NOT_FOUND, as the
/// standard health service does.
#[derive(Clone, Default)]
struct Health(Arc<Mutex<HashMap<String, i32>>>);

impl tonic::server::NamedService for Health {
    const NAME: &'static str = "grpc.health.v1.Health";
}

struct CheckSvc(Health);

impl tonic::server::UnaryService<HealthCheckRequest> for CheckSvc {
    type Response = HealthCheckResponse;
    type Future = BoxFuture<Result<tonic::Response<HealthCheckResponse>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<HealthCheckRequest>) -> Self::Future {
        let status = self
            .0
             .0
            .lock()
            .ok()
            .and_then(|m| m.get(&request.get_ref().service).copied());
        Box::pin(async move {
            match status {
                Some(status) => Ok(tonic::Response::new(HealthCheckResponse { status })),
                None => Err(tonic::Status::not_found("unknown service")),
            }
        })
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for Health
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() == CHECK_PATH {
            let svc = CheckSvc(self.clone());
            return Box::pin(async move {
                let codec = tonic_prost::ProstCodec::<HealthCheckResponse, HealthCheckRequest>::default();
                Ok(tonic::server::Grpc::new(codec).unary(svc, req).await)
            });
        }
        Box::pin(async move {
            let mut response = http::Response::new(tonic::body::Body::default());
            response
                .headers_mut()
                .insert(tonic::Status::GRPC_STATUS, (tonic::Code::Unimplemented as i32).into());
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, tonic::metadata::GRPC_CONTENT_TYPE);
            Ok(response)
        })
    }
}

async fn serve(health: Health) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    port
}

fn probe(yaml: &str) -> Probe {
    serde_norway::from_str(yaml).unwrap_or_else(|e| panic!("probe {yaml}: {e}"))
}

async fn check(p: &Probe) -> Result<(), String> {
    check_once(&Clients::default(), p)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn grpc_probe_passes_on_serving_and_fails_on_not_serving_or_unknown() {
    let health = Health::default();
    health.0.lock().expect("lock").insert(String::new(), 1);
    health.0.lock().expect("lock").insert("demo.Api".into(), 1);
    let port = serve(health.clone()).await;

    let whole = probe(&format!(
        "{{name: g, timeout: 2s, grpc: {{address: 'http://127.0.0.1:{port}'}}}}"
    ));
    let api = probe(&format!(
        "{{name: g, timeout: 2s, grpc: {{address: 'http://127.0.0.1:{port}', service: demo.Api}}}}"
    ));
    assert_eq!(check(&whole).await, Ok(()));
    assert_eq!(check(&api).await, Ok(()));
    assert_eq!(api.kind.target(), format!("http://127.0.0.1:{port} service demo.Api"));

    health.0.lock().expect("lock").insert("demo.Api".into(), 2);
    assert_eq!(check(&api).await, Err("NOT_SERVING".into()));

    let unknown = probe(&format!(
        "{{name: g, timeout: 2s, grpc: {{address: 'http://127.0.0.1:{port}', service: nope}}}}"
    ));
    assert_eq!(
        check(&unknown).await,
        Err("grpc status NotFound: unknown service".into())
    );
}

#[tokio::test]
async fn grpc_probe_fails_when_nothing_listens() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let p = probe(&format!(
        "{{name: g, timeout: 1s, grpc: {{address: 'http://127.0.0.1:{port}'}}}}"
    ));
    let err = check(&p).await.expect_err("nothing listens");
    assert!(err.starts_with("connect error"), "{err}");
}

#[tokio::test]
async fn grpc_probe_over_tls_trusts_the_ca_it_is_given() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("cert");
    let ca_pem = dir.path().join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).expect("ca");

    let health = Health::default();
    health.0.lock().expect("lock").insert(String::new(), 1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(cert.pem(), key.serialize_pem()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls)
            .expect("tls")
            .add_service(health)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let trusted = probe(&format!(
        "{{name: g, timeout: 2s, grpc: {{address: 'https://localhost:{port}', ca: '{}'}}}}",
        ca_pem.display()
    ));
    assert_eq!(check(&trusted).await, Ok(()));
    let untrusted = probe(&format!(
        "{{name: g, timeout: 2s, grpc: {{address: 'https://localhost:{port}'}}}}"
    ));
    let err = check(&untrusted).await.expect_err("the test CA is not a system root");
    assert!(err.starts_with("connect error"), "{err}");
    assert!(err.contains("UnknownIssuer") || err.contains("certificate"), "{err}");
}

/// `insecure_skip_verify` against tonic-health's standard health service
/// behind a self-signed certificate for a name the probe does not dial:
/// accepted only when asked for, and the service statuses still count.
#[tokio::test]
async fn grpc_probe_with_insecure_skip_verify_accepts_a_self_signed_certificate() {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["faultline-test.invalid".to_string()]).expect("self-signed");
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("demo.Api", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let tls = tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(
        cert.pem(),
        signing_key.serialize_pem(),
    ));
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls)
            .expect("tls")
            .add_service(health)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let insecure = |service: &str| {
        probe(&format!(
            "{{name: g, timeout: 2s, grpc: {{address: 'https://127.0.0.1:{port}', service: '{service}', insecure_skip_verify: true}}}}"
        ))
    };
    assert_eq!(check(&insecure("")).await, Ok(()), "the server as a whole");
    assert_eq!(check(&insecure("demo.Api")).await, Ok(()));
    reporter
        .set_service_status("demo.Api", tonic_health::ServingStatus::NotServing)
        .await;
    assert_eq!(check(&insecure("demo.Api")).await, Err("NOT_SERVING".into()));
    let unknown = check(&insecure("nope")).await.expect_err("unknown service");
    assert!(unknown.starts_with("grpc status NotFound"), "{unknown}");

    // Without the option the same certificate is refused, and plaintext
    // gRPC does not get through a TLS port.
    let verified = probe(&format!(
        "{{name: g, timeout: 2s, grpc: {{address: 'https://127.0.0.1:{port}'}}}}"
    ));
    let err = check(&verified)
        .await
        .expect_err("a self-signed certificate is not trusted");
    assert!(err.starts_with("connect error"), "{err}");
    assert!(err.contains("UnknownIssuer") || err.contains("certificate"), "{err}");
    let plaintext = probe(&format!(
        "{{name: g, timeout: 2s, grpc: {{address: 'http://127.0.0.1:{port}'}}}}"
    ));
    assert!(check(&plaintext).await.is_err(), "plaintext against a TLS port");
}

/// The client certificate (mutual TLS) is shown to a server that demands
/// one, through the same connector.
#[tokio::test]
async fn grpc_probe_shows_its_client_certificate_to_a_server_that_requires_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().expect("key");
    let server_cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&server_key, &issuer)
        .expect("cert");
    let client_key = rcgen::KeyPair::generate().expect("key");
    let client_cert = rcgen::CertificateParams::new(vec!["probe".to_string()])
        .expect("params")
        .signed_by(&client_key, &issuer)
        .expect("cert");
    let path = |n: &str| dir.path().join(n);
    std::fs::write(path("ca.pem"), ca.pem()).expect("ca");
    std::fs::write(path("client.pem"), client_cert.pem()).expect("cert");
    std::fs::write(path("client.key"), client_key.serialize_pem()).expect("key");

    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            server_cert.pem(),
            server_key.serialize_pem(),
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(ca.pem()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls)
            .expect("tls")
            .add_service(health)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let ca_pem = path("ca.pem");
    let with_cert = probe(&format!(
        "{{name: g, timeout: 2s, grpc: {{address: 'https://127.0.0.1:{port}', ca: '{}', cert: '{}', key: '{}'}}}}",
        ca_pem.display(),
        path("client.pem").display(),
        path("client.key").display()
    ));
    assert_eq!(check(&with_cert).await, Ok(()));
    let without = probe(&format!(
        "{{name: g, timeout: 2s, grpc: {{address: 'https://127.0.0.1:{port}', ca: '{}'}}}}",
        ca_pem.display()
    ));
    assert!(
        check(&without).await.is_err(),
        "the server requires a client certificate"
    );
}
