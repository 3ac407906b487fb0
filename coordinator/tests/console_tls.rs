//! The web console over HTTPS (`serve --ui-listen` with `--tls-dir`): it
//! presents the coordinator's certificate from `faultline certs init`, and
//! its session cookie is then `Secure`.

use std::sync::Arc;

use faultline_coordinator::console::Console;
use faultline_coordinator::security::{Security, Tokens};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "op-0123456789abcdef";

#[tokio::test]
async fn the_console_serves_https_with_the_coordinators_certificate_and_a_secure_cookie() {
    let dir = tempfile::tempdir().unwrap();
    faultline_coordinator::certs::init(dir.path(), &[], &[], false).expect("certs init");
    let tokens = Tokens::parse(std::path::Path::new("tokens"), &format!("alice {TOKEN}\n")).unwrap();
    let c = faultline_coordinator::Coordinator::new().with_security(Security {
        tls: None,
        tokens: Some(tokens),
    });
    let console = Console::new(c).unwrap().with_tls_dir(dir.path()).expect("tls files");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    tokio::spawn(console.serve(l, stop));

    // A client that trusts only the CA `certs init` made.
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.path().join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the CA's coordinator certificate is accepted for localhost");
    let body = format!("token={TOKEN}");
    tls.write_all(
        format!(
            "POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 303"), "{out}");
    let cookie = out
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a cookie");
    for attr in ["; HttpOnly", "; SameSite=Strict", "; Secure"] {
        assert!(cookie.contains(attr), "{cookie}");
    }

    // Plain HTTP to the HTTPS port gets no page.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(15), plain.read_to_end(&mut got)).await;
    assert!(
        !String::from_utf8_lossy(&got).contains("HTTP/1.1 200"),
        "plain HTTP is not served"
    );
}
