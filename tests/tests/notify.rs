//! Notifications (`serve --notify`) against webhook servers these tests run
//! on loopback: signed bodies (checked with Python's own HMAC), a retry
//! after a 500, a hung webhook that delays no run, and the approval webhook
//! refusing a run with its reason before anything is injected.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_coordinator::notify::{deliver::Retry, Config, Notifier};
use faultline_coordinator::Coordinator;
use faultline_proto::v1;
use faultline_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// One request a webhook server received.
#[derive(Debug, Clone)]
struct Hit {
    headers: Vec<(String, String)>,
    body: String,
}

impl Hit {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// How the server answers the request numbered `n` (from 0): a status and
/// body, or `None` to hold the connection without answering.
type Answer = Arc<dyn Fn(usize) -> Option<(u16, String)> + Send + Sync>;

/// A webhook server on loopback; stops (closing held connections) on drop.
struct Hook {
    url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    stop: CancellationToken,
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn hook(answer: Answer) -> Hook {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", l.local_addr().expect("addr"));
    let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
    let stop = CancellationToken::new();
    let (h, s) = (hits.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            let mut sock = tokio::select! {
                _ = s.cancelled() => return,
                r = l.accept() => match r { Ok((sock, _)) => sock, Err(_) => continue },
            };
            let (h, s, answer) = (h.clone(), s.clone(), answer.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Bounded: 64 KiB and 5 s per request.
                let read = async {
                    loop {
                        let n = sock.read(&mut chunk).await.ok()?;
                        if n == 0 {
                            return None;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        if let Some(i) = text.find("\r\n\r\n") {
                            let head = &text[..i];
                            let len = head
                                .lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    (k.eq_ignore_ascii_case("content-length")).then(|| v.trim().parse().ok())?
                                })
                                .unwrap_or(0usize);
                            if buf.len() >= i + 4 + len {
                                let headers = head
                                    .lines()
                                    .skip(1)
                                    .filter_map(|l| l.split_once(':'))
                                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                                    .collect();
                                let body = String::from_utf8_lossy(&buf[i + 4..i + 4 + len]).to_string();
                                return Some((headers, body));
                            }
                        }
                        if buf.len() > 65_536 {
                            return None;
                        }
                    }
                };
                let Ok(Some((headers, body))) = tokio::time::timeout(Duration::from_secs(5), read).await else {
                    return;
                };
                let n = {
                    let mut hits = h.lock().unwrap();
                    hits.push(Hit { headers, body });
                    hits.len() - 1
                };
                match answer(n) {
                    Some((status, body)) => {
                        let resp = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = sock.write_all(resp.as_bytes()).await;
                    }
                    None => s.cancelled().await,
                }
            });
        }
    });
    Hook { url, hits, stop }
}

impl Hook {
    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits (at most 15 s) until `done(hits)`.
    async fn wait(&self, done: impl Fn(&[Hit]) -> bool) -> Vec<Hit> {
        for _ in 0..150 {
            let hits = self.hits();
            if done(&hits) {
                return hits;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the webhook did not see what was expected within 15 s: {:?}",
            self.hits()
        );
    }
}

/// A quick passing run: kills `victim`, probes nothing it needs.
fn experiment(victim: &ChildGuard) -> String {
    format!(
        "name: notified\nhypothesis:\n  probes:\n    - name: p\n      interval: 50ms\n      command: {{ run: \"true\" }}\nbaseline: 200ms\nduration: 300ms\nrecovery: 200ms\nfaults:\n  - kill: {{ cmdline: '{}' }}\n",
        victim.cmdline_regex
    )
}

/// The signature of `body` under the secret in `secret_file`, computed by
/// Python's hmac module (not by the code under test).
fn python_signature(secret_file: &std::path::Path, body: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import hmac,hashlib,sys; print('sha256=' + hmac.new(open(sys.argv[1],'rb').read().strip(), sys.stdin.buffer.read(), hashlib.sha256).hexdigest())",
        ])
        .arg(secret_file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn quick_retry() -> Retry {
    Retry {
        attempts: 3,
        backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        timeout: Duration::from_secs(1),
    }
}

async fn harness(config_yaml: &str, dir: &std::path::Path) -> (Harness, Arc<Notifier>) {
    harness_with(config_yaml, dir, quick_retry()).await
}

async fn harness_with(config_yaml: &str, dir: &std::path::Path, retry: Retry) -> (Harness, Arc<Notifier>) {
    let path = dir.join("notify.yaml");
    std::fs::write(&path, config_yaml).unwrap();
    let config = Config::load(&path).expect("config");
    let c = Coordinator::new();
    let n = Notifier::start(config, c.metrics.clone(), retry);
    let mut h = Harness::start_with("127.0.0.1:0", c.with_notifier(n.clone())).await;
    h.add_agent("node-a", &[]).await;
    (h, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_after_a_500_and_tell_start_and_finish() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "s3cr3t-for-the-hook\n").unwrap();
    // The first request fails with a 500; the rest succeed.
    let hook = hook(Arc::new(|n| {
        Some(if n == 0 { (500, "{}".into()) } else { (200, "{}".into()) })
    }))
    .await;
    let (h, n) = harness(
        &format!("webhooks:\n  - url: {}\n    secret_file: secret\n", hook.url),
        dir.path(),
    )
    .await;
    let victim = sleeper();
    let r = h.run(&experiment(&victim), &[]).await.expect("run");
    assert_eq!(r.report.outcome.as_str(), "passed", "{}", r.report.reason);
    let hits = hook
        .wait(|hits| hits.iter().filter(|h| h.body.contains("run.finished")).count() >= 1 && hits.len() >= 3)
        .await;
    let started: Vec<&Hit> = hits.iter().filter(|h| h.json()["event"] == "run.started").collect();
    assert_eq!(started.len(), 2, "the start was retried after the 500: {hits:?}");
    assert_eq!(started[0].body, started[1].body, "a retry sends the same body");
    let finished = hits.iter().find(|h| h.json()["event"] == "run.finished").unwrap();
    let f = finished.json();
    assert_eq!(f["run_id"], r.report.run_id.as_str());
    assert_eq!(
        (f["experiment"].as_str(), f["outcome"].as_str()),
        (Some("notified"), Some("passed"))
    );
    assert!(
        f["text"].as_str().unwrap().starts_with(&format!(
            "faultline: run {} of experiment notified passed",
            r.report.run_id
        )),
        "Slack-compatible text: {f}"
    );
    for hit in [started[0], finished] {
        let want = python_signature(&dir.path().join("secret"), &hit.body);
        assert!(want.starts_with("sha256=") && want.len() == 71, "{want}");
        assert_eq!(hit.header("x-faultline-signature"), Some(want.as_str()));
        assert_eq!(hit.header("content-type"), Some("application/json"));
    }
    let metrics = h.coordinator.metrics.render();
    for want in [
        "faultline_notifications_total{event=\"run.started\",result=\"delivered\"} 1",
        "faultline_notifications_total{event=\"run.finished\",result=\"delivered\"} 1",
    ] {
        assert!(metrics.contains(want), "lacks {want}:\n{metrics}");
    }
    assert!(n.failures().is_empty(), "{:?}", n.failures());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_webhook_delays_no_run_and_a_failing_one_is_counted_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    // One never answers (each try may wait 30 s); one always answers 500.
    let hung = hook(Arc::new(|_| None)).await;
    let broken = hook(Arc::new(|_| Some((500, "{}".into())))).await;
    let retry = Retry {
        timeout: Duration::from_secs(30),
        ..quick_retry()
    };
    let (h, n) = harness_with(
        &format!(
            "webhooks:\n  - url: {}\n    events: [run_start]\n  - url: {}\n    events: [run_finish]\n",
            hung.url, broken.url
        ),
        dir.path(),
        retry,
    )
    .await;
    let victim = sleeper();
    let r = h.run(&experiment(&victim), &[]).await.expect("run");
    assert_eq!(r.report.outcome.as_str(), "passed", "{}", r.report.reason);
    // The run ended while the hung webhook still held the start
    // notification's first try: it did not wait for the delivery.
    let held = hung.hits();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].json()["event"], "run.started");
    assert!(
        !h.coordinator.metrics.render().contains("event=\"run.started\",result="),
        "the start delivery has not ended"
    );
    // The failing webhook: three tries, then counted and kept for the console.
    let mut failed = false;
    for _ in 0..100 {
        if h.coordinator
            .metrics
            .render()
            .contains("faultline_notifications_total{event=\"run.finished\",result=\"failed\"} 1")
        {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failed, "{}", h.coordinator.metrics.render());
    assert_eq!(broken.hits().len(), 3, "three tries, no more");
    let f = n.failures();
    assert!(
        f.len() == 1 && f[0].contains("run.finished") && f[0].contains("answered 500 after 3 tries"),
        "{f:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approval_webhook_sees_the_planned_targets_and_its_refusal_stops_the_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("approval.secret"), "approve-me-please").unwrap();
    let approver = hook(Arc::new(|_| {
        Some((403, r#"{"reason":"change freeze until Monday"}"#.into()))
    }))
    .await;
    let (h, _n) = harness(
        &format!(
            "approval:\n  url: {}\n  secret_file: approval.secret\n  timeout: 2s\n",
            approver.url
        ),
        dir.path(),
    )
    .await;
    let mut victim = sleeper();
    let mut c = h.control().await;
    let e = c
        .submit_run(v1::SubmitRunRequest {
            source: Some(source(&experiment(&victim), &[])),
        })
        .await
        .expect_err("refused");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        e.message(),
        "the approval webhook refused the run (403): change freeze until Monday"
    );
    let hits = approver.hits();
    assert_eq!(hits.len(), 1);
    let planned = hits[0].json();
    assert_eq!(planned["event"], "run.approval");
    assert_eq!(planned["experiment"], "notified");
    assert_eq!(planned["faults"][0]["kind"], "kill");
    assert_eq!(planned["faults"][0]["targets"], serde_json::json!(["node-a"]));
    assert_eq!(
        hits[0].header("x-faultline-signature"),
        Some(python_signature(&dir.path().join("approval.secret"), &hits[0].body).as_str())
    );
    // Nothing ran: no run recorded, the victim alive.
    let runs = c
        .list_runs(v1::ListRunsRequest {
            limit: 10,
            outcome: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert!(runs.is_empty(), "{runs:?}");
    assert!(victim.child.try_wait().unwrap().is_none(), "the victim was not killed");
    let audit = c
        .list_audit(v1::ListAuditRequest { limit: 10 })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(
        audit
            .iter()
            .any(|a| a.action == "submit" && a.detail.contains("change freeze until Monday")),
        "{audit:?}"
    );
    h.stop().await;
}
