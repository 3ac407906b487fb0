//! `faultline run` prints one line when a guardrail changes state: the
//! binary as users run it, in local mode, killing the very process its
//! guardrail probes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");

/// Kills and reaps the child if the test fails before it exits.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_prints_a_line_when_a_guardrail_turns_breached() {
    // The "service": a sleep the run kills, reaped by init once killed.
    let marker = format!("0.{}78", std::process::id());
    let out = Command::new("sh")
        .args(["-c", &format!("sleep 300 {marker} >/dev/null 2>&1 & echo $!")])
        .output()
        .unwrap();
    let victim: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let regex = format!("^sleep 300 {}$", marker.replace('.', "\\."));
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("e.yaml");
    std::fs::write(
        &exp,
        format!(
            "name: guarded\nhypothesis:\n  probes:\n    - name: alive\n      interval: 100ms\n      command: {{ run: \"kill -0 {victim}\" }}\n      tolerances:\n        - success_rate: \"90%\"\n          guardrail: true\n          window: 1s\nbaseline: 1s\nduration: 20s\nrecovery: 300ms\nfaults:\n  - kill: {{ cmdline: '{regex}' }}\n"
        ),
    )
    .unwrap();
    let started = Instant::now();
    let child = Command::new(FAULTLINE)
        .args(["run", exp.to_str().unwrap(), "--no-store", "--format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run faultline");
    let mut child = Reap(child);
    // Bounded: the guardrail aborts the run within a few seconds of inject.
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the run did not end within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(3), "aborted: {stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "aborted early, not after observe"
    );
    let name = "guardrail alive: success rate >= 90.0% over 1s: ";
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(name)).collect();
    let states: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_once(name))
        .map(|(_, rest)| rest.split(' ').next().unwrap_or(""))
        .collect();
    // A killed process may linger as a zombie for a moment (`kill -0`
    // still succeeds), so the guardrail may be seen ok before breached;
    // either way one line per change, starting pending, ending breached.
    assert!(
        states == ["pending", "breached"] || states == ["pending", "ok", "breached"],
        "{states:?}: {stderr}"
    );
    assert!(
        lines[0].ends_with(&format!("{name}pending — 0 of 3 samples in the window")),
        "{stderr}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains(&format!("{name}breached — measured "))),
        "{stderr}"
    );
}
