//! The `prometheus` probe against a real Prometheus server (Debian's
//! `prometheus` package) started by the test on a loopback port, scraping
//! an exporter in this process whose values the test sets. The probe's
//! value is compared with Prometheus's own API answer.
//!
//! Without the `prometheus` binary the tests print why and return, except
//! with `CI=true`, where that is a failure.

#[path = "support/prometheus.rs"]
mod prometheus;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faultline_coordinator::experiment::Probe;
use faultline_coordinator::probes::{check_once, Clients, Reading};
use prometheus::{api_value, prometheus_binary, start_prometheus, wait_for, Exporter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The bcrypt hash (cost 10) of `faultline-test`, for Prometheus's
/// `basic_auth_users`; made once with libxcrypt's `crypt` ($2b$).
const PASSWORD: &str = "faultline-test";
const PASSWORD_BCRYPT: &str = "$2b$10$w2eD/jxw1Yi8BuGz3jDpe.ycuv1e0ttBd0gWbco7ekqok5LP9JCSO";

fn probe(yaml: &str) -> Probe {
    serde_norway::from_str(yaml).unwrap_or_else(|e| panic!("probe {yaml}: {e}"))
}

async fn check(p: &Probe) -> Result<Reading, String> {
    check_once(&Clients::default(), p).await.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_probe_reads_what_prometheus_answers() {
    let Some(bin) = prometheus_binary("prometheus_probe_reads_what_prometheus_answers") else {
        return;
    };
    let exporter = Exporter::default();
    exporter
        .set("faultline_test_gauge 7\nfaultline_test_series{shard=\"a\"} 1\nfaultline_test_series{shard=\"b\"} 3\n");
    let port = exporter.start().await;
    let server = start_prometheus(&bin, port, None);
    let base = &server.base;
    wait_for(base, "faultline_test_gauge", 7.0).await;

    // A single-sample vector: the probe's value is Prometheus's answer.
    let gauge = probe(&format!(
        "{{name: g, timeout: 5s, prometheus: {{url: '{base}', query: faultline_test_gauge, max: 10}}}}"
    ));
    let answer = api_value(base, "faultline_test_gauge").await;
    assert_eq!(check(&gauge).await, Ok(Reading::Value(answer.expect("answer"))));

    // The exporter changes; once Prometheus has scraped it, so does the
    // probe, and the bound fails the sample.
    exporter
        .set("faultline_test_gauge 42\nfaultline_test_series{shard=\"a\"} 1\nfaultline_test_series{shard=\"b\"} 3\n");
    wait_for(base, "faultline_test_gauge", 42.0).await;
    assert_eq!(check(&gauge).await, Err("value 42 above max 10".into()));

    // Several series: refused without reduce, reduced with it, or judged
    // one by one with each.
    let series = |extra: &str| {
        probe(&format!(
            "{{name: s, timeout: 5s, prometheus: {{url: '{base}', query: faultline_test_series{extra}}}}}"
        ))
    };
    assert_eq!(
        check(&series("")).await,
        Err("2 series; set reduce: max|min|sum|avg|each".into())
    );
    assert_eq!(check(&series(", reduce: sum")).await, Ok(Reading::Value(4.0)));
    assert_eq!(check(&series(", reduce: max")).await, Ok(Reading::Value(3.0)));
    let each = check(&series(", reduce: each, max: 2"))
        .await
        .expect_err("shard b is 3");
    assert!(each.starts_with("value 3 above max 2 for {"), "{each}");
    assert!(each.contains("shard=\"b\""), "{each}");

    // Empty, NaN, +Inf, a scalar and a bad expression.
    let q = |query: &str, extra: &str| {
        probe(&format!(
            "{{name: q, timeout: 5s, prometheus: {{url: '{base}', query: '{query}'{extra}}}}}"
        ))
    };
    assert_eq!(check(&q("faultline_test_absent", "")).await, Err("empty result".into()));
    assert_eq!(
        check(&q("faultline_test_absent", ", on_empty: skip")).await,
        Ok(Reading::Skipped)
    );
    assert_eq!(
        check(&q("faultline_test_absent", ", on_empty: pass")).await,
        Ok(Reading::Done)
    );
    assert_eq!(check(&q("0/0", "")).await, Err("value is NaN".into()));
    assert_eq!(check(&q("1/0", ", max: 1")).await, Err("value inf above max 1".into()));
    assert_eq!(check(&q("2*3", "")).await, Ok(Reading::Value(6.0)));
    let bad = check(&q("sum(", "")).await.expect_err("a parse error");
    assert!(bad.starts_with("query error (bad_data)"), "{bad}");
    let matrix = check(&q("faultline_test_gauge[1m]", ""))
        .await
        .expect_err("a range vector");
    assert_eq!(
        matrix,
        "query returns a matrix; write an instant vector or scalar expression"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_probe_logs_in_with_basic_auth_over_tls() {
    let Some(bin) = prometheus_binary("prometheus_probe_logs_in_with_basic_auth_over_tls") else {
        return;
    };
    let exporter = Exporter::default();
    exporter.set("faultline_test_gauge 5\n");
    let port = exporter.start().await;

    // A test CA and a server certificate for 127.0.0.1.
    let pki = tempfile::tempdir().expect("tempdir");
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("cert");
    let (ca_pem, cert_pem, key_pem) = (
        pki.path().join("ca.pem"),
        pki.path().join("s.pem"),
        pki.path().join("s.key"),
    );
    std::fs::write(&ca_pem, ca.pem()).expect("ca");
    std::fs::write(&cert_pem, cert.pem()).expect("cert");
    std::fs::write(&key_pem, key.serialize_pem()).expect("key");
    std::fs::write(pki.path().join("password"), format!("{PASSWORD}\n")).expect("password");

    let web = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  faultline: '{PASSWORD_BCRYPT}'\n",
        cert_pem.display(),
        key_pem.display()
    );
    let server = start_prometheus(&bin, port, Some(&web));
    let base = &server.base;
    let ca = ca_pem.display();
    let password = pki.path().join("password");
    let password = password.display();

    // Wait through the probe itself: the API needs the login.
    let good = probe(&format!(
        "{{name: g, timeout: 5s, prometheus: {{url: '{base}', query: faultline_test_gauge, ca: '{ca}', \
         basic_auth: {{username: faultline, password_file: '{password}'}}}}}}"
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match check(&good).await {
            Ok(Reading::Value(v)) => {
                assert_eq!(v, 5.0);
                break;
            }
            other => assert!(Instant::now() < deadline, "never read the gauge over TLS: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let no_login = probe(&format!(
        "{{name: n, timeout: 5s, prometheus: {{url: '{base}', query: faultline_test_gauge, ca: '{ca}'}}}}"
    ));
    let err = check(&no_login).await.expect_err("basic auth is required");
    assert!(err.starts_with("HTTP 401"), "{err}");

    let untrusted = probe(&format!(
        "{{name: u, timeout: 5s, prometheus: {{url: '{base}', query: faultline_test_gauge, \
         basic_auth: {{username: faultline, password_file: '{password}'}}}}}}"
    ));
    let err = check(&untrusted)
        .await
        .expect_err("the test CA is not trusted without ca");
    assert!(err.starts_with("tls: "), "{err}");
}

/// Bearer tokens are sent as `Authorization: Bearer`, read from the
/// environment at each check. Prometheus itself does not check bearer
/// tokens (a proxy in front of it does), so a stand-in API checks it here.
#[tokio::test]
async fn prometheus_probe_sends_the_bearer_token_from_the_environment() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 65536 {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&got).to_string();
            let auth = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("authorization: ")
                        .or_else(|| l.strip_prefix("Authorization: "))
                })
                .unwrap_or("")
                .to_string();
            seen2.lock().expect("lock").push(auth);
            let body =
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"+Inf"]}]}}"#;
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tcp.write_all(resp.as_bytes()).await;
        }
    });
    // SAFETY: the variable is unique to this test and set before any
    // thread reads it.
    unsafe { std::env::set_var("FAULTLINE_TEST_PROM_TOKEN", "s3cret\n") };
    let p = probe(&format!(
        "{{name: b, timeout: 2s, prometheus: {{url: 'http://127.0.0.1:{port}', query: up, on_nan: pass, \
         bearer_token_env: FAULTLINE_TEST_PROM_TOKEN}}}}"
    ));
    assert_eq!(check(&p).await, Ok(Reading::Value(f64::INFINITY)));
    assert_eq!(seen.lock().expect("lock").as_slice(), ["Bearer s3cret"]);
    assert!(!p.kind.target().contains("s3cret"));

    let missing = probe(&format!(
        "{{name: b, timeout: 2s, prometheus: {{url: 'http://127.0.0.1:{port}', query: up, \
         bearer_token_env: FAULTLINE_TEST_PROM_TOKEN_UNSET}}}}"
    ));
    assert_eq!(
        check(&missing).await,
        Err("cannot read the bearer token: environment variable FAULTLINE_TEST_PROM_TOKEN_UNSET is not set".into())
    );
}
