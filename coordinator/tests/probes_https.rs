//! The `http` probe over https, against a real TLS server in this process
//! (tokio-rustls) with certificates from a test CA made by rcgen.

use std::path::Path;
use std::sync::Arc;

use faultline_coordinator::experiment::Probe;
use faultline_coordinator::probes::{check_once, Clients};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A test CA, a server certificate for 127.0.0.1/localhost and a client
/// certificate, all written as PEM into a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    ca_der: CertificateDer<'static>,
    server: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().expect("server key");
    let server_cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("server params")
        .signed_by(&server_key, &issuer)
        .expect("server cert");
    let client_key = KeyPair::generate().expect("client key");
    let client_cert = CertificateParams::new(vec!["probe".to_string()])
        .expect("client params")
        .signed_by(&client_key, &issuer)
        .expect("client cert");

    std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write ca");
    std::fs::write(dir.path().join("client.pem"), client_cert.pem()).expect("write cert");
    std::fs::write(dir.path().join("client.key"), client_key.serialize_pem()).expect("write key");
    Pki {
        ca_der: ca.der().clone(),
        server: (
            vec![server_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        ),
        dir,
    }
}

/// Serves `200 OK` with body `healthy` over TLS until the test ends; when
/// `require_client_cert`, only to clients with a certificate from the CA.
async fn serve(pki: &Pki, require_client_cert: bool) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca_der.clone()).expect("ca root");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("client verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(pki.server.0.clone(), pki.server.1.clone_key())
        .expect("server cert");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                // One request per connection: read the head, answer, close.
                while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 65536 {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nhealthy")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
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

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

#[tokio::test]
async fn https_probe_trusts_a_private_ca_named_in_ca() {
    let pki = pki();
    let port = serve(&pki, false).await;
    let ca = path(pki.dir.path(), "ca.pem");
    let p = probe(&format!(
        "{{name: web, timeout: 2s, http: {{url: 'https://127.0.0.1:{port}/', ca: '{ca}', body_match: healthy}}}}"
    ));
    assert_eq!(check(&p).await, Ok(()));
}

#[tokio::test]
async fn https_probe_refuses_a_certificate_from_an_unknown_ca() {
    let pki = pki();
    let port = serve(&pki, false).await;
    let p = probe(&format!(
        "{{name: web, timeout: 2s, http: {{url: 'https://127.0.0.1:{port}/'}}}}"
    ));
    let err = check(&p).await.expect_err("the test CA is not a system root");
    assert!(err.starts_with("tls: "), "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn https_probe_with_insecure_skip_verify_accepts_any_certificate() {
    let pki = pki();
    let port = serve(&pki, false).await;
    let p = probe(&format!(
        "{{name: web, timeout: 2s, http: {{url: 'https://127.0.0.1:{port}/', insecure_skip_verify: true}}}}"
    ));
    assert_eq!(check(&p).await, Ok(()));
}

#[tokio::test]
async fn https_probe_shows_its_client_certificate_to_a_server_that_asks() {
    let pki = pki();
    let port = serve(&pki, true).await;
    let dir = pki.dir.path();
    let (ca, cert, key) = (path(dir, "ca.pem"), path(dir, "client.pem"), path(dir, "client.key"));
    let with = probe(&format!(
        "{{name: web, timeout: 2s, http: {{url: 'https://127.0.0.1:{port}/', ca: '{ca}', cert: '{cert}', key: '{key}'}}}}"
    ));
    assert_eq!(check(&with).await, Ok(()));
    let without = probe(&format!(
        "{{name: web, timeout: 2s, http: {{url: 'https://127.0.0.1:{port}/', ca: '{ca}'}}}}"
    ));
    let err = check(&without)
        .await
        .expect_err("the server requires a client certificate");
    assert!(!err.is_empty());
}

#[tokio::test]
async fn https_probe_names_an_unreadable_ca_file() {
    let p = probe("{name: web, timeout: 1s, http: {url: 'https://127.0.0.1:1/', ca: /nonexistent/ca.pem}}");
    let err = check(&p).await.expect_err("no such file");
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}

#[test]
fn tls_options_are_refused_on_plain_http_and_cert_needs_key() {
    let e = serde_norway::from_str::<Probe>("{name: web, http: {url: 'http://x/', ca: ca.pem}}")
        .expect_err("ca on http://")
        .to_string();
    assert!(e.contains("https:// URLs only"), "{e}");
    let e = serde_norway::from_str::<Probe>("{name: web, http: {url: 'https://x/', cert: c.pem}}")
        .expect_err("cert without key")
        .to_string();
    assert!(e.contains("cert and key go together"), "{e}");
}
