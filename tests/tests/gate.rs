//! The release-gate endpoint (`serve --gate-listen --gate-dir`), called with
//! requests in exactly the shape Flagger's webhooks send: `POST` with
//! `Content-Type: application/json` and the body
//! `{"name", "namespace", "phase", "checksum", "metadata": {string: string}}`.
//! A real coordinator and agent in this process, real probes of in-process
//! HTTP services on loopback, a real kill of a sleeper this test started.

use std::sync::Arc;
use std::time::Duration;

use faultline_coordinator::gate::{self, Gate};
use faultline_coordinator::security::Tokens;
use faultline_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A release gate: the same HTTP probe against two groups, a kill that
/// hits neither, and the judge.
fn gate_experiment(victim: &str) -> String {
    format!(
        r#"name: gate-test
hypothesis:
  groups:
    control: {{ port: "${{control_port}}" }}
    canary: {{ port: "${{canary_port}}" }}
  probes:
    - name: web
      per_group: true
      interval: 50ms
      timeout: 300ms
      http: {{ url: "http://127.0.0.1:${{group.port}}/${{namespace}}/${{name}}" }}
baseline: 500ms
duration: 1500ms
recovery: 500ms
faults:
  - name: kill-bystander
    kill: {{ cmdline: '{victim}' }}
judge:
  metrics:
    - probe: web
      metric: success_rate
      must_have_data: true
"#
    )
}

/// One request in Flagger's shape; returns the status and body.
async fn post(addr: std::net::SocketAddr, path: &str, body: &str, auth: Option<&str>) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect to the gate");
    let auth = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: flagger\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_string(&mut out))
        .await
        .expect("the gate answers within 60s")
        .unwrap();
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn payload(metadata: &str) -> String {
    format!(
        r#"{{"name":"podinfo","namespace":"test","phase":"Progressing","checksum":"85d557f47b","metadata":{{{metadata}}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_answers_flagger_webhooks_200_for_a_passing_canary_and_412_for_a_failing_one() {
    let stop = CancellationToken::new();
    let control = serve_http_in_process(stop.clone()).await;
    let same = serve_http_in_process(stop.clone()).await;
    // A port where nothing listens: a canary that never answers.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let victims = [sleeper(), sleeper(), sleeper()];
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[("zone", "a")]).await;
    let dir = tempfile::tempdir().unwrap();
    for (i, v) in victims.iter().enumerate() {
        std::fs::write(
            dir.path().join(format!("gate-{i}.yaml")),
            gate_experiment(&v.cmdline_regex),
        )
        .unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tokens = Tokens::parse(std::path::Path::new("tokens"), "flagger s3cret-token-for-the-gate\n").unwrap();
    tokio::spawn(gate::serve(
        listener,
        Gate {
            dir: dir.path().to_path_buf(),
            tokens: Some(Arc::new(tokens)),
            start: h.coordinator.run_starter.clone(),
            tls: None,
        },
        stop.clone(),
    ));
    let token = r#""token":"s3cret-token-for-the-gate""#;

    // A/A: the canary is another copy of the control.
    let (status, body) = post(
        addr,
        "/gate/gate-0",
        &payload(&format!(r#""control_port":"{control}","canary_port":"{same}",{token}"#)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("score 100/100: pass"), "{body}");
    assert!(body.contains("pass   web success_rate"), "{body}");

    // The canary never answers: its success rate is lower, the gate halts.
    let (status, body) = post(
        addr,
        "/gate",
        &payload(&format!(
            r#""experiment":"gate-1","control_port":"{control}","canary_port":"{closed}""#
        )),
        Some("s3cret-token-for-the-gate"),
    )
    .await;
    assert_eq!(status, 412, "{body}");
    assert!(
        body.contains("FAILED (exit 1)") && body.contains("low    web success_rate"),
        "{body}"
    );

    // Refusals, each before anything runs.
    let (status, body) = post(addr, "/gate/gate-2", &payload(""), None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = post(addr, "/gate/gate-2", &payload(r#""token":"nope""#), None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = post(addr, "/gate/no-such", &payload(token), None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = post(addr, "/gate/..%2Fetc", &payload(token), None).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(addr, "/gate/gate-2", &payload(token), None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("control_port") && body.contains("metadata"), "{body}");
    let (status, body) = post(addr, "/gate/gate-2", "not json", None).await;
    assert_eq!(status, 400, "{body}");
    h.stop().await;
    stop.cancel();
}

/// A one-request-at-a-time approval webhook on loopback: answers the
/// request numbered `n` (from 0) with `answers[n]` (the last one after
/// that) and keeps every body it received. Bounded: 64 KiB and 5 s per
/// request; stops with `stop`.
async fn approver(
    answers: Vec<(u16, &'static str)>,
    stop: CancellationToken,
) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/approve", l.local_addr().unwrap());
    let bodies: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let seen = bodies.clone();
    tokio::spawn(async move {
        loop {
            let mut sock = tokio::select! {
                _ = stop.cancelled() => return,
                r = l.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
            };
            let read = async {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = sock.read(&mut chunk).await.ok()?;
                    if n == 0 || buf.len() > 65_536 {
                        return None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(i) = text.find("\r\n\r\n") else { continue };
                    let len = text[..i]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0usize);
                    if buf.len() >= i + 4 + len {
                        return Some(String::from_utf8_lossy(&buf[i + 4..i + 4 + len]).to_string());
                    }
                }
            };
            let Ok(Some(body)) = tokio::time::timeout(Duration::from_secs(5), read).await else {
                continue;
            };
            let n = {
                let mut b = seen.lock().unwrap();
                b.push(body);
                b.len() - 1
            };
            let (status, text) = answers[n.min(answers.len() - 1)];
            let resp = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        }
    });
    (url, bodies)
}

/// A gate-triggered run goes through the same pre-flight approval as
/// SubmitRun: a 403 from the approver halts the rollout with the
/// approver's reason (the gate answers 403, nothing is killed, no run is
/// recorded); once the approver answers 200 the same call runs and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_asks_the_approval_webhook_and_a_refusal_halts_the_rollout_with_its_reason() {
    use faultline_coordinator::notify::{deliver::Retry, Config, Notifier};
    let stop = CancellationToken::new();
    let control = serve_http_in_process(stop.clone()).await;
    let same = serve_http_in_process(stop.clone()).await;
    let (url, bodies) = approver(
        vec![
            (403, r#"{"reason":"change freeze until Monday"}"#),
            (200, r#"{"ok":true}"#),
        ],
        stop.clone(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.yaml");
    std::fs::write(&notify, format!("approval:\n  url: {url}\n  timeout: 2s\n")).unwrap();
    let c = faultline_coordinator::Coordinator::new();
    let n = Notifier::start(
        Config::load(&notify).expect("notify config"),
        c.metrics.clone(),
        Retry::default(),
    );
    let mut h = Harness::start_with("127.0.0.1:0", c.with_notifier(n)).await;
    h.add_agent("node-a", &[("zone", "a")]).await;
    let mut victim = sleeper();
    std::fs::write(dir.path().join("gated.yaml"), gate_experiment(&victim.cmdline_regex)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(gate::serve(
        listener,
        Gate {
            dir: dir.path().to_path_buf(),
            tokens: None,
            start: h.coordinator.run_starter.clone(),
            tls: None,
        },
        stop.clone(),
    ));
    let body = payload(&format!(r#""control_port":"{control}","canary_port":"{same}""#));

    let (status, text) = post(addr, "/gate/gated", &body, None).await;
    assert_eq!(status, 403, "{text}");
    assert_eq!(
        text.trim(),
        "the approval webhook refused the run (403): change freeze until Monday"
    );
    let asked: serde_json::Value = serde_json::from_str(&bodies.lock().unwrap()[0]).unwrap();
    assert_eq!(asked["event"], "run.approval");
    assert_eq!(asked["experiment"], "gate-test");
    assert_eq!(asked["faults"][0]["targets"], serde_json::json!(["node-a"]));
    assert!(
        asked["caller"].as_str().unwrap_or("").starts_with("gate:127.0.0.1:"),
        "{asked}"
    );
    assert!(!victim.exited(), "a refused gate run killed its target");
    let mut cc = h.control().await;
    let runs = cc
        .list_runs(faultline_proto::v1::ListRunsRequest {
            limit: 10,
            outcome: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert!(runs.is_empty(), "a refused gate call recorded a run: {runs:?}");

    // Approved: the same call runs the experiment and the canary passes.
    let (status, text) = post(addr, "/gate/gated", &body, None).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(bodies.lock().unwrap().len(), 2);
    assert!(
        victim.wait_exit(Duration::from_secs(5)),
        "the approved run killed its target"
    );
    h.stop().await;
    stop.cancel();
}
