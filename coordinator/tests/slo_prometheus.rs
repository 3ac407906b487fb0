//! Steady state from real metrics, end to end: a real Prometheus (Debian's
//! `prometheus`, started on loopback) scrapes a client of the demo service
//! (`faultline demo-service`, under a restarting supervisor as `faultline
//! demo` runs it). The client sends the service `GET /health` every 100 ms
//! and exports what it saw as two counters, so the error ratio Prometheus
//! computes is the one real users would see. Then `faultline run` in local
//! mode (the in-process agent kills the real service):
//!
//! - an error-ratio SLO probe fails while the service is down and recovers
//!   after, with its values per phase in every report format;
//! - a critical stop condition evaluated against Prometheus aborts the run;
//!   an `error` one in the policy file fails a run that would have passed;
//! - an exhausted error budget refuses a run (exit 2) and makes a schedule
//!   tick record `skipped: error budget`.
//!
//! Without the `prometheus` binary the tests print why and return, except
//! with `CI=true`, where that is a failure.

#[path = "support/demo.rs"]
mod demo;
#[path = "support/prometheus.rs"]
mod prometheus;
#[path = "support/reports.rs"]
mod reports;

use std::process::Stdio;
use std::time::{Duration, Instant};

use demo::{start_client, Demo};
use prometheus::{free_port, prometheus_binary, start_prometheus, wait_until, Server};
use reports::{junit_valid, rendered_pixels};

const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");

/// The error ratio clients saw over the last 5 s.
const ERROR_RATIO: &str = "sum(rate(client_errors_total[5s])) / sum(rate(client_requests_total[5s]))";

/// The demo service, its client and Prometheus scraping the client, with
/// the error ratio known to Prometheus (0 while the service is up).
struct Setup {
    demo_port: u16,
    prometheus: Server,
    _demo: Option<Demo>,
}

async fn setup(bin: &std::path::Path, with_service: bool) -> Setup {
    let demo_port = free_port();
    let demo = with_service.then(|| Demo::start(demo_port, Duration::from_secs(1)));
    let client = start_client(demo_port).await;
    let prometheus = start_prometheus(bin, client, None);
    // The ratio exists once Prometheus has two scrapes of the client.
    let want = if with_service { 0.0 } else { 1.0 };
    wait_until(&prometheus.base, ERROR_RATIO, |v| v == want).await;
    Setup {
        demo_port,
        prometheus,
        _demo: demo,
    }
}

/// `faultline run FILE` in local mode with the JSON report on stdout, the
/// JUnit, HTML and Markdown reports in `dir`; returns the exit code, the
/// report and stderr.
async fn run(dir: &std::path::Path, yaml: &str) -> (i32, serde_json::Value, String) {
    let file = dir.join("experiment.yaml");
    std::fs::write(&file, yaml).expect("write experiment");
    run_file(dir, &file, &[]).await
}

/// `faultline run FILE ARGS...`, as [`run`].
async fn run_file(dir: &std::path::Path, file: &std::path::Path, args: &[String]) -> (i32, serde_json::Value, String) {
    let out = tokio::process::Command::new(FAULTLINE)
        .arg("run")
        .arg(file)
        .args(args)
        .args(["--no-store", "--format", "json"])
        .arg("--junit")
        .arg(dir.join("junit.xml"))
        .arg("--html")
        .arg(dir.join("report.html"))
        .arg("--report-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run faultline");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no JSON report ({e}); stderr:\n{stderr}"));
    (out.status.code().unwrap_or(-1), report, stderr)
}

/// The Markdown report `--report-dir` wrote.
fn markdown(dir: &std::path::Path, report: &serde_json::Value) -> String {
    let id = report["run_id"].as_str().expect("run_id");
    std::fs::read_to_string(dir.join(format!("{id}.md"))).expect("markdown report")
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_demo_service_fails_an_error_ratio_slo_probe_which_recovers_after_restore() {
    let Some(bin) =
        prometheus_binary("killing_the_demo_service_fails_an_error_ratio_slo_probe_which_recovers_after_restore")
    else {
        return;
    };
    let s = setup(&bin, true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, port) = (&s.prometheus.base, s.demo_port);
    let (code, report, stderr) = run(
        dir.path(),
        &format!(
            r#"name: error-ratio-slo
hypothesis:
  description: the error ratio clients see stays under 5%
  probes:
    - name: error-ratio
      interval: 500ms
      timeout: 2s
      prometheus:
        url: {base}
        query: {ERROR_RATIO}
        max: 0.05
      tolerances:
        - success_rate: "100%"
        - value: {{ factor: 1, plus: 0.05 }}
baseline: 3s
duration: 5s
recovery: 40s
faults:
  - name: kill-demo-service
    kill: {{ cmdline: "demo-service --port {port}$", signal: SIGKILL }}
error_budget:
  objective: "90%"
  window: 1m
  good: sum(increase(client_requests_total[$window])) - sum(increase(client_errors_total[$window]))
  total: sum(increase(client_requests_total[$window]))
  prometheus: {{ url: {base} }}
"#
        ),
    )
    .await;
    let md = markdown(dir.path(), &report);
    eprintln!("{md}");
    assert_eq!(
        code, 1,
        "the SLO is violated while the service is down; stderr:\n{stderr}\n{md}"
    );
    assert_eq!(report["outcome"], "failed", "{md}");
    let killed = &report["faults"][0]["targets"][0];
    assert_eq!(killed["state"], "restored", "{killed}");
    assert!(!killed["killed"].as_array().expect("killed").is_empty(), "{killed}");

    let p = &report["probes"][0];
    // Baseline: no errors. During: the ratio rose over the bound. After:
    // back to no errors, recovered.
    assert_eq!(f(&p["baseline"]["value_max"]), 0.0, "{md}");
    assert_eq!(f(&p["baseline"]["success_rate"]), 1.0, "{md}");
    assert!(f(&p["during"]["value_max"]) > 0.05, "{md}");
    assert!(f(&p["during"]["success_rate"]) < 1.0, "{md}");
    assert!(f(&p["delta"]["value_mean"]) > 0.0, "{md}");
    assert_eq!(p["degraded"], true, "{md}");
    assert_eq!(p["recovered"], true, "{md}");
    assert!(p["time_to_recovery_ms"].as_u64().is_some(), "{md}");
    let last = p["samples"]
        .as_array()
        .expect("samples")
        .last()
        .expect("a sample")
        .clone();
    assert_eq!(last["ok"], true, "{last}");
    assert!(f(&last["value"]) <= 0.05, "{last}");
    let errors = p["errors"].as_object().expect("errors");
    assert!(errors.keys().any(|e| e.contains("above max 0.05")), "{errors:?}");

    // The run spent budget: remaining before > after, both from Prometheus.
    let b = &report["error_budgets"][0];
    let (before, after) = (f(&b["remaining_before"]), f(&b["remaining_after"]));
    assert!(before > after, "before {before}, after {after}");
    assert!(
        b["query"].as_str().expect("query").starts_with("1 - (sum(increase("),
        "{b}"
    );

    // Markdown, JUnit and HTML show the values per phase and the delta.
    assert!(
        md.contains("| probe | phase | min | mean | max | mean vs baseline |"),
        "{md}"
    );
    assert!(md.contains("## Error budget"), "{md}");
    let junit = std::fs::read_to_string(dir.path().join("junit.xml")).expect("junit");
    for prop in [
        "probe.error-ratio.baseline.value_mean",
        "probe.error-ratio.during.value_max",
        "probe.error-ratio.recovery.value_mean",
        "probe.error-ratio.delta.value_mean",
        "error_budget.0.remaining_after",
    ] {
        assert!(junit.contains(&format!("<property name=\"{prop}\"")), "{prop}: {junit}");
    }
    junit_valid(dir.path());
    let html = std::fs::read_to_string(dir.path().join("report.html")).expect("html");
    assert!(html.contains("<svg class=\"values\""), "no value chart");
    assert!(
        html.contains("class=\"value-failed\""),
        "the failed samples' values are drawn"
    );
    // Rendered: the value line (#9467bd) is on screen.
    if let Some(n) = rendered_pixels(dir.path(), (0x94, 0x67, 0xbd)) {
        eprintln!("screenshot: {n} value-line pixels");
        assert!(n > 300, "the value line is drawn ({n} pixels)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_stop_condition_evaluated_by_prometheus_aborts_the_run() {
    let Some(bin) = prometheus_binary("a_critical_stop_condition_evaluated_by_prometheus_aborts_the_run") else {
        return;
    };
    let s = setup(&bin, true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, port) = (&s.prometheus.base, s.demo_port);
    let query = "sum(increase(client_errors_total[10s])) > 0";
    let (code, report, stderr) = run(
        dir.path(),
        &format!(
            r#"name: stop-on-errors
hypothesis:
  probes:
    - name: error-ratio
      interval: 500ms
      timeout: 2s
      prometheus: {{ url: {base}, query: "{ERROR_RATIO}" }}
baseline: 2s
duration: 60s
recovery: 5s
faults:
  - name: kill-demo-service
    kill: {{ cmdline: "demo-service --port {port}$", signal: SIGKILL }}
stop_conditions:
  - name: client-errors
    severity: critical
    interval: 250ms
    prometheus: {{ url: {base}, query: "{query}" }}
"#
        ),
    )
    .await;
    let md = markdown(dir.path(), &report);
    eprintln!("{md}");
    assert_eq!(code, 3, "aborted; stderr:\n{stderr}\n{md}");
    assert_eq!(report["outcome"], "aborted");
    let by = report["aborted_by"].as_str().expect("aborted_by");
    assert!(
        by.starts_with("stop condition client-errors (critical) is true: "),
        "{by}"
    );
    assert!(by.contains(query), "{by}");
    let sc = &report["stop_conditions"][0];
    let value = f(&sc["value"]);
    assert!(value > 0.0, "{sc}");
    assert!(
        by.ends_with(&format!("returned {}", faultline_coordinator::verdict::num(value))),
        "{by}"
    );
    // Aborted long before the 60 s duration; the kill was restored.
    let target = &report["faults"][0]["targets"][0];
    let injected = target["injected_at_ms"].as_u64().expect("injected");
    let restored = target["restored_at_ms"].as_u64().expect("restored");
    let fired = sc["fired_at_ms"].as_u64().expect("fired");
    let restored_after = sc["restored_after_ms"].as_u64().expect("restored after");
    assert_eq!(restored_after, restored - fired);
    assert!(
        restored - injected < 20_000,
        "aborted {} ms after the kill",
        restored - injected
    );
    let evals = sc["evaluations"].as_array().expect("evaluations");
    assert!(
        evals.iter().any(|e| e["fired"] == false),
        "false before the kill took effect: {sc}"
    );
    eprintln!(
        "kill at {injected} ms; condition true at {fired} ms ({} ms after the kill); every fault restored {restored_after} ms after the condition was true",
        fired - injected
    );
    // The whole abort path (observe loop, restore sent, agent's ack) is
    // well under the 250 ms evaluation interval on an idle machine; the
    // bound only catches a run that kept going.
    assert!(restored_after < 5_000, "{restored_after} ms");
    assert!(
        md.contains("## Stop conditions") && md.contains("| client-errors | critical |"),
        "{md}"
    );
    let junit = std::fs::read_to_string(dir.path().join("junit.xml")).expect("junit");
    assert!(junit.contains("name=\"client-errors (critical)\""), "{junit}");
    junit_valid(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_budget_spent_in_prometheus_refuses_a_run_and_skips_a_schedule_tick() {
    let Some(bin) = prometheus_binary("an_error_budget_spent_in_prometheus_refuses_a_run_and_skips_a_schedule_tick")
    else {
        return;
    };
    // No service: every request the client makes fails.
    let s = setup(&bin, false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, port) = (&s.prometheus.base, s.demo_port);
    let good = "sum(increase(client_requests_total[$window])) - sum(increase(client_errors_total[$window]))";
    let total = "sum(increase(client_requests_total[$window]))";
    let yaml = format!(
        r#"name: budget-gated-kill
hypothesis:
  probes:
    - name: error-ratio
      interval: 500ms
      prometheus: {{ url: {base}, query: "{ERROR_RATIO}", on_nan: pass }}
baseline: 2s
duration: 2s
faults:
  - name: kill-demo-service
    kill: {{ cmdline: "demo-service --port {port}$" }}
error_budget:
  objective: "99%"
  window: 1m
  min_remaining: "10%"
  good: {good}
  total: {total}
  prometheus: {{ url: {base} }}
"#
    );
    // Prometheus's own answer: nothing good, so the ratio is 1 and the
    // remaining budget 1 - 1/(1 - 0.99) = -9900%.
    let total_now = wait_until(base, &total.replace("$window", "1m"), |v| v > 0.0).await;
    let good_now = wait_until(base, &good.replace("$window", "1m"), |_| true).await;
    assert_eq!(good_now, 0.0, "total {total_now}");

    let (code, report, stderr) = run(dir.path(), &yaml).await;
    let reason = report["reason"].as_str().expect("reason");
    eprintln!("$ faultline run budget-gated-kill.yaml\nexit {code}: {reason}");
    assert_eq!(code, 2, "refused; stderr:\n{stderr}");
    assert_eq!(report["outcome"], "invalid");
    assert_eq!(
        reason,
        "error budget: -9900% of the budget remains, below the minimum of 10% (objective 99% over 1m, at least 10% of the budget left); the run was not started"
    );
    let before = f(&report["error_budgets"][0]["remaining_before"]);
    assert!((before + 99.0).abs() < 1e-9, "{before}");
    assert!(report["error_budgets"][0].get("remaining_after").is_none());
    assert!(
        report["faults"][0]["targets"].as_array().is_none_or(|t| t.is_empty()),
        "nothing injected"
    );
    assert!(
        report["probes"][0]["baseline"]["samples"].as_u64().unwrap_or(0) == 0,
        "no baseline was taken"
    );

    // A schedule ticking every second on a coordinator in this process:
    // its tick is skipped with the same measurement, and no run starts.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let coordinator = faultline_coordinator::Coordinator::new();
    tokio::spawn(async move { coordinator.serve(listener, stop).await });
    let file = dir.path().join("scheduled.yaml");
    std::fs::write(&file, &yaml).expect("write");
    let cli = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(FAULTLINE)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run faultline");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = cli(vec![
        "schedule".into(),
        "add".into(),
        file.display().to_string(),
        "--cron".into(),
        "* * * * * *".into(),
        "--coordinator".into(),
        url.clone(),
    ])
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let listing = loop {
        let (_, out, err) = cli(vec![
            "schedule".into(),
            "list".into(),
            "--coordinator".into(),
            url.clone(),
        ])
        .await;
        if out.contains("skipped: error budget") {
            break out;
        }
        assert!(Instant::now() < deadline, "no tick skipped within 30 s:\n{out}{err}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("$ faultline schedule list\n{listing}");
    assert!(
        listing.contains("skipped: error budget: -9900% of the budget remains, below the minimum of 10%"),
        "{listing}"
    );
    assert!(!listing.contains(" started"), "no tick started a run:\n{listing}");
    let (_, runs, err) = cli(vec!["runs".into(), "--coordinator".into(), url.clone()]).await;
    assert!(!runs.contains("budget-gated-kill"), "no run was started:\n{runs}{err}");
}

/// `experiments/slo-kill.yaml` as shipped, against the demo service and a
/// Prometheus scraping the service's own `/metrics`: the supervisor brings
/// the service back within its tolerances, so the run passes, with its
/// error budget measured before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slo_kill_example_runs_against_the_demo_service_and_a_real_prometheus() {
    let Some(bin) = prometheus_binary("the_slo_kill_example_runs_against_the_demo_service_and_a_real_prometheus")
    else {
        return;
    };
    let port = free_port();
    // A quicker restart than `faultline demo`'s 1 s, so that the example's
    // tolerances hold on a loaded machine too.
    let _demo = Demo::start(port, Duration::from_millis(500));
    let server = start_prometheus(&bin, port, None);
    let base = &server.base;
    // Two scrapes of the service: `up` and its averages exist.
    wait_until(base, "count_over_time(up{job=\"exporter\"}[1m])", |v| v >= 2.0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../experiments/slo-kill.yaml"));
    let args: Vec<String> = [
        "--var",
        &format!("port={port}"),
        "--var",
        &format!("prometheus={base}"),
        "--var",
        "job=exporter",
        "--label",
        "service=demo",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (code, report, stderr) = run_file(dir.path(), file, &args).await;
    let md = markdown(dir.path(), &report);
    eprintln!("{md}");
    assert_eq!(code, 0, "stderr:\n{stderr}\n{md}");
    let target = &report["faults"][0]["targets"][0];
    assert!(target["reappeared_after_ms"].as_u64().is_some(), "{target}");
    let ratio = report["probes"]
        .as_array()
        .expect("probes")
        .iter()
        .find(|p| p["name"] == "error-ratio")
        .expect("the error-ratio probe");
    for phase in ["baseline", "during", "recovery"] {
        assert!(ratio[phase]["value_mean"].as_f64().is_some(), "{phase}: {ratio}");
    }
    let sc = &report["stop_conditions"][0];
    assert!(!sc["evaluations"].as_array().expect("evaluations").is_empty(), "{sc}");
    assert!(sc.get("fired_at_ms").is_none(), "the job never vanished for 3 s: {sc}");
    let b = &report["error_budgets"][0];
    assert_eq!(f(&b["remaining_before"]), 1.0, "no failed scrape before the run: {b}");
    assert!(b["remaining_after"].as_f64().is_some(), "{b}");
}

/// The coordinator's policy list, checked for every run: an `error`
/// condition evaluated by Prometheus fails a run whose own hypothesis held,
/// without aborting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_stop_condition_in_the_policy_fails_a_run_that_would_have_passed() {
    let Some(bin) = prometheus_binary("an_error_stop_condition_in_the_policy_fails_a_run_that_would_have_passed")
    else {
        return;
    };
    let s = setup(&bin, true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, port) = (&s.prometheus.base, s.demo_port);
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "stop_conditions:\n  - name: policy-errors\n    severity: error\n    interval: 250ms\n    prometheus: {{ url: {base}, query: \"sum(increase(client_errors_total[10s])) > 0\" }}\n"
        ),
    )
    .expect("write policy");
    let file = dir.path().join("experiment.yaml");
    // The hypothesis only asks that Prometheus answers: it holds.
    std::fs::write(
        &file,
        format!(
            r#"name: policy-stop
hypothesis:
  probes:
    - name: error-ratio
      interval: 500ms
      timeout: 2s
      prometheus: {{ url: {base}, query: "{ERROR_RATIO}" }}
baseline: 2s
duration: 4s
recovery: 5s
faults:
  - name: kill-demo-service
    kill: {{ cmdline: "demo-service --port {port}$", signal: SIGKILL }}
"#
        ),
    )
    .expect("write experiment");
    let args = vec!["--policy".to_string(), policy.display().to_string()];
    let (code, report, stderr) = run_file(dir.path(), &file, &args).await;
    let md = markdown(dir.path(), &report);
    assert_eq!(code, 1, "failed by the policy's condition; stderr:\n{stderr}\n{md}");
    let reason = report["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("stop condition policy-errors (error) turned true at "),
        "{reason}"
    );
    assert!(report.get("aborted_by").is_none(), "not aborted: {reason}");
    let sc = &report["stop_conditions"][0];
    assert_eq!(sc["severity"], "error");
    assert!(f(&sc["value"]) > 0.0, "{sc}");
    // The run went on for its whole duration after the condition fired.
    let target = &report["faults"][0]["targets"][0];
    let held =
        target["restored_at_ms"].as_u64().expect("restored") - target["injected_at_ms"].as_u64().expect("injected");
    assert!(held >= 4_000, "the fault stayed its 4 s: {held} ms");
}
