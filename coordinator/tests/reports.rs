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
    out.status.code().unwrap_or(-1)
}

#[test]
fn junit_report_is_read_by_a_junit_parser_with_measured_vs_allowed() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(failing_run(dir.path()), 1, "the hypothesis fails");
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
