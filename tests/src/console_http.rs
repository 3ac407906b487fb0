//! The web console over real HTTP on loopback, for the console tests: a
//! coordinator wanting tokens with its console, raw HTTP/1.1 requests,
//! login, CSRF tokens and the security headers every page must carry; the
//! experiments the console tests run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use faultline_coordinator::console::Console;
use faultline_coordinator::security::{Security, Tokens};
use faultline_coordinator::Coordinator;
use faultline_proto::v1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::{closed_port, source, ChildGuard, Harness};

pub const OPERATOR: &str = "op-0123456789abcdef";
pub const READ_ONLY: &str = "ro-0123456789abcdef";

/// A harness whose coordinator wants tokens, with its console on loopback.
pub struct Lab {
    pub h: Harness,
    pub ui: SocketAddr,
    pub stop: StopOnDrop,
}

/// Stops the console when the test ends, passed or not.
pub struct StopOnDrop(pub CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

pub async fn lab() -> Lab {
    lab_with(Coordinator::new()).await
}

/// [`lab`] over `c` (e.g. with a notifier), given the lab's tokens.
pub async fn lab_with(c: Coordinator) -> Lab {
    let tokens = Tokens::parse(
        std::path::Path::new("tokens"),
        &format!("alice {OPERATOR}\nbob {READ_ONLY} read-only\n"),
    )
    .expect("tokens");
    let c = c.with_security(Security {
        tls: None,
        tokens: Some(tokens),
    });
    let mut h = Harness::start_with("127.0.0.1:0", c).await;
    h.add_agent("node-a", &[("zone", "a")]).await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind console");
    let ui = l.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let console = Console::new(h.coordinator.clone()).expect("console");
    tokio::spawn(console.serve(l, stop.clone()));
    Lab {
        h,
        ui,
        stop: StopOnDrop(stop),
    }
}

/// One HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    /// Header names in lower case; repeated headers joined by "\n".
    pub headers: HashMap<String, String>,
    pub body: String,
}

pub async fn http(addr: SocketAddr, method: &str, path: &str, cookie: Option<&str>, form: Option<&str>) -> Resp {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect console");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: fl_session={c}\r\n"));
    }
    let body = form.unwrap_or("");
    if form.is_some() {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("a response within 10 s")
        .expect("read");
    parse(&String::from_utf8_lossy(&raw))
}

pub fn parse(raw: &str) -> Resp {
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head");
    let mut lines = head.split("\r\n");
    let status = lines.next().expect("status line")[9..12].parse().expect("status");
    let mut headers: HashMap<String, String> = HashMap::new();
    for l in lines {
        let (k, v) = l.split_once(':').expect("header");
        let e = headers.entry(k.trim().to_ascii_lowercase()).or_default();
        if !e.is_empty() {
            e.push('\n');
        }
        e.push_str(v.trim());
    }
    Resp {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Logs in with `token`; the session id from the cookie.
pub async fn login(addr: SocketAddr, token: &str) -> String {
    let r = http(addr, "POST", "/login", None, Some(&format!("token={token}"))).await;
    assert_eq!(r.status, 303, "{r:?}");
    let c = r.headers.get("set-cookie").expect("a session cookie");
    c.strip_prefix("fl_session=")
        .and_then(|c| c.split(';').next())
        .expect("fl_session=ID")
        .to_string()
}

/// The CSRF token in a page's hidden form field.
pub fn csrf_of(page: &str) -> String {
    let i = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + "name=\"csrf\" value=\"".len();
    page[i..].split('"').next().expect("value").to_string()
}

pub async fn csrf(addr: SocketAddr, session: &str) -> String {
    csrf_of(&http(addr, "GET", "/fleet", Some(session), None).await.body)
}

pub fn assert_security_headers(r: &Resp, what: &str) {
    let h = &r.headers;
    let csp = h
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP"));
    // Scripts only from the console itself: no inline script, no other origin.
    assert!(csp.starts_with("default-src 'self';"), "{what}: {csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("script-src"),
        "{what}: {csp}"
    );
    assert_eq!(h.get("x-frame-options").map(String::as_str), Some("DENY"), "{what}");
    assert_eq!(
        h.get("x-content-type-options").map(String::as_str),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        h.get("referrer-policy").map(String::as_str),
        Some("no-referrer"),
        "{what}"
    );
}

/// Submits `yaml` with the operator token; the run id and its event stream.
pub async fn submit(h: &Harness, yaml: &str) -> (String, tonic::Streaming<v1::RunEvent>) {
    let mut c = h.control().await;
    let mut req = tonic::Request::new(v1::SubmitRunRequest {
        source: Some(source(yaml, &[])),
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {OPERATOR}").parse().expect("header"));
    let mut stream = c.submit_run(req).await.expect("submit").into_inner();
    let first = stream.message().await.expect("stream").expect("a first event");
    (first.run_id, stream)
}

/// A run of `duration` killing `victim` on node-a with a probe on `port`.
pub fn experiment(port: u16, victim: &ChildGuard, duration: &str) -> String {
    experiment_with_baseline(port, victim, "500ms", duration)
}

pub fn experiment_with_baseline(port: u16, victim: &ChildGuard, baseline: &str, duration: &str) -> String {
    let cmdline = &victim.cmdline_regex;
    format!(
        r#"name: console
hypothesis:
  probes:
    - name: web
      interval: 50ms
      http: {{ url: "http://127.0.0.1:{port}/" }}
      tolerances:
        - success_rate: "90%"
baseline: {baseline}
duration: {duration}
recovery: 500ms
faults:
  - name: k
    targets: {{ labels: {{ zone: a }} }}
    kill: {{ cmdline: '{cmdline}' }}
"#
    )
}

/// `experiment` with a second probe, `down`, of a port where nothing
/// listens: every sample fails (it has no tolerance, so the run goes on).
pub fn experiment_with_a_failing_probe(port: u16, victim: &ChildGuard, duration: &str) -> String {
    experiment(port, victim, duration).replacen(
        "  probes:\n",
        &format!(
            "  probes:\n    - name: down\n      interval: 100ms\n      timeout: 200ms\n      tcp: {{ address: \"127.0.0.1:{}\" }}\n",
            closed_port()
        ),
        1,
    )
}

/// Waits (at most 10 s) until the run is in its observe phase.
pub async fn wait_observe(stream: &mut tonic::Streaming<v1::RunEvent>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
            Ok(Ok(Some(ev))) => {
                if let Some(v1::run_event::Event::Phase(p)) = &ev.event {
                    if p.phase == "observe" {
                        return;
                    }
                }
            }
            other => panic!("no observe phase: {other:?}"),
        }
    }
    panic!("no observe phase within 10 s");
}
