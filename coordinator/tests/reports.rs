//! CI reports from a real run: JUnit XML checked by a JUnit parser from
//! crates.io, and the HTML report rendered by headless Chromium.

use std::path::Path;
use std::process::{Command, Stdio};

const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");

/// Runs, in local mode, an experiment whose hypothesis fails: the probe
/// checks that a `sleep` the test started is alive (and not a zombie), and
/// the fault kills it.
/// Writes the JUnit and HTML reports into `dir`; returns the exit code.
fn failing_run(dir: &Path) -> i32 {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let marker = format!("0.{:06}{:03}", std::process::id() % 1_000_000, n);
    // Started through sh so init, not this test, reaps it: a killed child of
    // ours would linger as a zombie that `kill -0` still finds.
    let out = Command::new("sh")
        .args(["-c", &format!("sleep 300 {marker} >/dev/null 2>&1 & echo $!")])
        .output()
        .unwrap();
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let exp = dir.join("exp.yaml");
    std::fs::write(
        &exp,
        format!(
            r#"name: victim-survives
hypothesis:
  description: the victim keeps running
  probes:
    - name: victim-alive
      interval: 50ms
      command: {{ run: "grep -q '^State:.*(sleeping)' /proc/{pid}/status" }}
      tolerances:
        - success_rate: "90%"
        - latency: {{ percentile: p99, max: 1s }}
baseline: 500ms
duration: 1s
recovery: 500ms
faults:
  - name: kill-victim
    kill: {{ cmdline: '^sleep 300 {}$' }}
"#,
            marker.replace('.', "\\.")
        ),
    )
    .unwrap();
    let out = Command::new(FAULTLINE)
        .arg("run")
        .arg(&exp)
        .arg("--junit")
        .arg(dir.join("junit.xml"))
        .arg("--html")
        .arg(dir.join("report.html"))
        .args(["--quiet", "--no-store"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // Ours to clean up if the run did not kill it.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    let code = out.status.code().unwrap_or(-1);
    if code != 1 {
        // Shown with the failing assertion: why the run did not fail as planned.
        eprintln!(
            "faultline run exited {code}; stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    code
}

#[test]
fn junit_report_is_read_by_a_junit_parser_with_measured_vs_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let code = failing_run(dir.path());
    assert_eq!(
        code,
        1,
        "the hypothesis fails; the report says:\n{}",
        std::fs::read_to_string(dir.path().join("junit.xml")).unwrap_or_default()
    );
    let xml = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    let suites = junit_parser::from_reader(std::io::Cursor::new(xml.as_bytes())).expect("valid JUnit XML");
    assert_eq!(suites.suites.len(), 1);
    let suite = &suites.suites[0];
    assert_eq!(suite.name, "victim-survives");
    // Two tolerances and "recovers after restore".
    assert_eq!(suite.tests, 3, "{xml}");
    assert!(suite.failures >= 1, "{xml}");
    let failed: Vec<_> = suite.cases.iter().filter(|c| c.status.is_failure()).collect();
    let f = failed
        .iter()
        .find(|c| c.original_name == "success rate >= 90.0%")
        .unwrap_or_else(|| panic!("the success-rate case failed: {:#?}", suite.cases));
    let msg = f.status.failure_as_ref().message.clone();
    assert!(msg.contains("measured") && msg.contains("allowed >= 90.0%"), "{msg}");
    assert_eq!(f.classname.as_deref(), Some("faultline.victim-survives.victim-alive"));
    let out = suite.system_out.clone().unwrap_or_default();
    assert!(out.contains("# faultline: victim-survives — FAILED"), "{out}");
}

/// Headless Chromium, if this machine has it: CI installs Debian's.
fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|b| {
        ["/usr/bin", "/usr/local/bin", "/snap/bin"]
            .iter()
            .map(|d| format!("{d}/{b}"))
            .find(|p| Path::new(p).exists())
    })
}

#[test]
fn html_report_draws_its_timeline_in_headless_chromium() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is not installed and CI=true forbids skipping (install Debian's chromium)"
        );
        eprintln!("skipping: chromium is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(failing_run(dir.path()), 1);
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    for fetch in ["src=\"http", "href=\"http", "<link", "<script", "@import", "url("] {
        assert!(!html.contains(fetch), "self-contained: found {fetch}");
    }
    assert!(html.contains("class=\"latency\"") && html.contains("class=\"error\"") && html.contains("class=\"fault\""));
    let shot = dir.path().join("shot.png");
    let profile = dir.path().join("profile");
    let out = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1000,700",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", dir.path().join("report.html").display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&out.stderr));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    let count = |(r, g, b): (i32, i32, i32)| {
        buf[..info.buffer_size()]
            .chunks(px)
            .filter(|c| (c[0] as i32 - r).abs() < 24 && (c[1] as i32 - g).abs() < 24 && (c[2] as i32 - b).abs() < 24)
            .count()
    };
    // The latency line (#1f77b4) and the error marks (#d62728) were drawn.
    let line = count((0x1f, 0x77, 0xb4));
    let errors = count((0xd6, 0x27, 0x28));
    eprintln!(
        "screenshot {}x{}: {line} latency-line pixels, {errors} error-mark pixels",
        info.width, info.height
    );
    assert!(line > 300, "the latency line is drawn ({line} pixels)");
    assert!(errors > 20, "error marks are drawn ({errors} pixels)");
}

const JUNIT_XSD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/junit-10.xsd");

/// Validates `xml` against the Jenkins/Surefire junit-10.xsd with xmllint;
/// false (after saying why) when xmllint is missing outside CI.
fn valid_against_junit_10_xsd(dir: &Path, name: &str, xml: &str) -> bool {
    if Command::new("xmllint").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "xmllint is not installed and CI=true forbids skipping (install Debian's libxml2-utils)"
        );
        eprintln!("skipping the schema check: xmllint is not installed (Debian package libxml2-utils)");
        return false;
    }
    let path = dir.join(name);
    std::fs::write(&path, xml).unwrap();
    let out = Command::new("xmllint")
        .args(["--noout", "--schema", JUNIT_XSD])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} is not valid against junit-10.xsd:\n{}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// A run the coordinator was in the middle of when it stopped, as the
/// history database keeps it, with times on 2024-01-01.
fn interrupted_run(store: &faultline_coordinator::store::Store) -> String {
    const T0: u64 = 1_704_067_200_000;
    store.run_started("r-int", "kill-demo", "kill.yaml", T0).unwrap();
    store.event("r-int", T0 + 10, "phase", "baseline").unwrap();
    store.event("r-int", T0 + 2_010, "phase", "observe").unwrap();
    store
        .event(
            "r-int",
            T0 + 2_050,
            "fault",
            "agent a1: r-int-1 injected: killed 1 process",
        )
        .unwrap();
    store.mark_interrupted(T0 + 9_000).unwrap();
    store
        .event(
            "r-int",
            T0 + 12_000,
            "after",
            "agent a1: r-int-1 expired: lease expired",
        )
        .unwrap();
    "r-int".into()
}

#[test]
fn junit_reports_of_every_outcome_validate_against_junit_10_xsd() {
    let dir = tempfile::tempdir().unwrap();
    // Failed (failures), refused at plan time (skipped cases and an error),
    // interrupted (an error from the history database).
    let code = failing_run(dir.path());
    assert_eq!(
        code,
        1,
        "the hypothesis fails; the report says:\n{}",
        std::fs::read_to_string(dir.path().join("junit.xml")).unwrap_or_default()
    );
    let failed = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    let refused_path = dir.path().join("refused.xml");
    let out = Command::new(FAULTLINE)
        .arg("run")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../experiments/kill.yaml"))
        .args(["--var", "port=1", "--quiet", "--no-store", "--junit"])
        .arg(&refused_path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    let refused = std::fs::read_to_string(&refused_path).unwrap();
    assert!(refused.contains("<skipped") && refused.contains("<error"), "{refused}");
    let store = faultline_coordinator::store::Store::in_memory().unwrap();
    let id = interrupted_run(&store);
    let Some(faultline_coordinator::store::Stored::Interrupted { run, events }) = store.load(&id).unwrap() else {
        panic!("an interrupted run")
    };
    let interrupted = faultline_coordinator::store::render_interrupted(&run, &events, "junit").unwrap();
    for (name, xml) in [
        ("failed.xml", &failed),
        ("refused.xml", &refused),
        ("interrupted.xml", &interrupted),
    ] {
        assert!(!xml.contains("<testsuites name=\"faultline\" tests=\"0\""), "{name}");
        if !valid_against_junit_10_xsd(dir.path(), name, xml) {
            return;
        }
    }
}

#[test]
fn an_interrupted_run_has_the_one_report_model_with_human_times() {
    use faultline_coordinator::report::Report;
    use faultline_coordinator::store::{render_interrupted, Store, Stored};
    let store = Store::in_memory().unwrap();
    let id = interrupted_run(&store);
    let Some(Stored::Interrupted { run, events }) = store.load(&id).unwrap() else {
        panic!("an interrupted run")
    };
    let json = render_interrupted(&run, &events, "json").unwrap();
    let r: Report = serde_json::from_str(&json).unwrap_or_else(|e| panic!("not the report model: {e}\n{json}"));
    assert_eq!(r.schema_version, faultline_coordinator::report::SCHEMA_VERSION);
    assert_eq!((r.outcome.as_str(), r.exit_code), ("error", 5));
    assert!(r.reason.starts_with("interrupted: "), "{}", r.reason);
    assert_eq!(r.started_at, "2024-01-01T00:00:00Z");
    assert_eq!(r.duration_ms, 9_000);
    let phases: Vec<(&str, u64, u64)> = r
        .phases
        .iter()
        .map(|p| (p.phase.as_str(), p.start_ms, p.end_ms))
        .collect();
    assert_eq!(phases, vec![("baseline", 10, 2_010), ("observe", 2_010, 2_050)]);
    assert_eq!(r.events.len(), 4);
    assert_eq!(r.events[3].at, "2024-01-01T00:00:12Z");
    assert_eq!(r.events[3].kind, "after");
    for format in ["json", "md", "junit", "html"] {
        let text = render_interrupted(&run, &events, format).unwrap();
        assert!(!text.contains("17040672"), "{format} shows epoch milliseconds:\n{text}");
        if format != "json" {
            assert!(
                text.contains("2024-01-01T00:00:12Z"),
                "{format} shows RFC 3339 times:\n{text}"
            );
        }
    }
    let md = render_interrupted(&run, &events, "md").unwrap();
    assert!(
        md.contains("# faultline: kill-demo — ERROR") && md.contains("interrupted: "),
        "{md}"
    );
    let html = render_interrupted(&run, &events, "html").unwrap();
    assert!(
        html.contains("<style>") && html.contains("class=\"outcome error\""),
        "styled like every report:\n{html}"
    );
}

/// `faultline gate` in local mode on a canary that is slower than its
/// control (a real `sleep` in its probe): exit 1, the concise verdict on
/// stdout, and a JUnit report with one test case per judged metric that
/// validates against junit-10.xsd and reads back through a JUnit parser.
#[test]
fn gate_prints_the_score_and_writes_a_junit_case_per_metric() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("0.{:06}999", std::process::id() % 1_000_000);
    let mut victim = Command::new("sleep")
        .args(["300", &marker])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let exp = dir.path().join("gate.yaml");
    std::fs::write(
        &exp,
        format!(
            r#"name: slow-canary
hypothesis:
  groups:
    control: {{ cmd: "true" }}
    canary: {{ cmd: "sleep 0.05" }}
  probes:
    - name: work
      per_group: true
      interval: 100ms
      timeout: 1s
      command: {{ run: "${{group.cmd}}" }}
baseline: 500ms
duration: 2s
recovery: 500ms
faults:
  - name: kill-bystander
    kill: {{ cmdline: '^sleep 300 {}$' }}
judge: {{}}
"#,
            marker.replace('.', "\\.")
        ),
    )
    .unwrap();
    let junit = dir.path().join("gate.xml");
    let out = Command::new(FAULTLINE)
        .arg("gate")
        .arg(&exp)
        .arg("--junit")
        .arg(&junit)
        .arg("--no-store")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = victim.kill();
    let _ = victim.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("slow-canary: FAILED (exit 1)\nscore "), "{stdout}");
    assert!(stdout.contains("high   work latency"), "{stdout}");
    assert!(stdout.contains("pass   work success_rate"), "{stdout}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    valid_against_junit_10_xsd(dir.path(), "gate.xml", &xml);
    let suites = junit_parser::from_reader(std::io::Cursor::new(xml.as_bytes())).unwrap();
    let cases: Vec<&junit_parser::TestCase> = suites.suites[0]
        .cases
        .iter()
        .filter(|c| c.classname.as_deref() == Some("faultline.slow-canary.judge"))
        .collect();
    let names: Vec<&str> = cases.iter().map(|c| c.original_name.as_str()).collect();
    assert_eq!(names, ["work latency", "work success_rate", "canary score"], "{xml}");
    let junit_parser::TestStatus::Failure(f) = &cases[0].status else {
        panic!("the latency case did not fail: {xml}")
    };
    assert!(
        f.message.starts_with("high: effect x") && f.message.contains(", p ") && f.message.contains('['),
        "{}",
        f.message
    );
    assert!(cases[1].status.is_success(), "{xml}");
    assert!(cases[2].status.is_failure(), "{xml}");
}
