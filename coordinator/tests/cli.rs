//! The `faultline` binary as users run it: exit codes, messages, the demo.

use std::process::{Command, Output};

const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");
const EXPERIMENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../experiments");

/// Runs the CLI with its run history in a throwaway database.
fn faultline(args: &[&str]) -> Output {
    let db = tempfile::tempdir().unwrap();
    Command::new(FAULTLINE)
        .args(args)
        .env("FAULTLINE_DB", db.path().join("history.db"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run faultline")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn validate_accepts_the_shipped_kill_experiment() {
    let out = faultline(&["validate", &format!("{EXPERIMENTS}/kill.yaml"), "--var", "port=8080"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("valid"), "{}", text(&out.stdout));
}

#[test]
fn unknown_field_exits_2_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.yaml");
    let src = std::fs::read_to_string(format!("{EXPERIMENTS}/kill.yaml"))
        .unwrap()
        .replace("      interval: 100ms", "      intervl: 100ms");
    std::fs::write(&path, src).unwrap();
    let p = path.to_str().unwrap();
    for cmd in ["validate", "run"] {
        let out = faultline(&[cmd, p, "--var", "port=1"]);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("{p}:")) && err.contains("unknown field `intervl`"),
            "{err}"
        );
        assert!(err.contains("expected one of"), "{err}");
    }
}

/// kill.yaml with its `${port:-8080}` default taken out, so `port` must be
/// set.
fn kill_without_default() -> String {
    let src = std::fs::read_to_string(format!("{EXPERIMENTS}/kill.yaml")).unwrap();
    assert!(src.contains("${port:-8080}"), "kill.yaml writes its port default");
    src.replace("${port:-8080}", "${port}")
}

#[test]
fn missing_variable_exits_2_and_says_which_flag_to_pass() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kill.yaml");
    std::fs::write(&path, kill_without_default()).unwrap();
    let out = faultline(&["validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--var port=VALUE"), "{}", text(&out.stderr));
}

#[test]
fn every_shipped_example_and_game_day_validates_with_no_flags() {
    let mut files: Vec<String> = std::fs::read_dir(EXPERIMENTS)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "one per fault kind and a game day: {files:?}");
    let mut args = vec!["validate"];
    args.extend(files.iter().map(String::as_str));
    let out = faultline(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for f in &files {
        assert!(stdout.contains(&format!("{f}: valid")), "{f}: {stdout}");
    }
    assert!(
        stdout.contains("game day \"examples-game-day\", 4 experiment(s)"),
        "{stdout}"
    );
}

#[test]
fn local_run_with_no_matching_agent_exits_5_and_lists_labels() {
    // The local agent has no service=demo label, so nothing matches; the
    // run stops at plan and never touches a process.
    let out = faultline(&[
        "run",
        &format!("{EXPERIMENTS}/kill.yaml"),
        "--var",
        "port=1",
        "--label",
        "zone=x",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("{service=demo}") && err.contains("zone=x"), "{err}");
    assert!(text(&out.stdout).contains("ERROR"), "the report is still printed");
}

#[test]
fn unreachable_coordinator_exits_5() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = faultline(&["agents", "--coordinator", &format!("http://127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(5));
    assert!(
        text(&out.stderr).contains("cannot reach the coordinator"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn serve_refuses_a_public_address_without_tls() {
    let out = faultline(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--insecure"), "{}", text(&out.stderr));
}

/// The README's first command: a supervised service is killed, errors show
/// up while it is down, and it recovers.
#[test]
fn demo_kills_the_supervised_service_and_reports_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let out = faultline(&["demo", "--format", "json", "--report-dir", dir.path().to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(r["outcome"], "passed");
    let probe = &r["probes"][0];
    assert!(probe["errors"]["connection refused"].as_u64().unwrap() > 0, "{probe}");
    assert_eq!(probe["degraded"], true);
    assert!(probe["time_to_recovery_ms"].as_u64().unwrap() > 0);
    let target = &r["faults"][0]["targets"][0];
    assert_eq!(target["killed"].as_array().unwrap().len(), 1);
    assert!(target["reappeared_after_ms"].as_u64().unwrap() >= 900, "{target}");
    assert!(err.contains("▶ observe") && err.contains("restarting in"), "{err}");
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 2, "json and md written");
}

#[test]
fn plan_shows_targets_and_limits_without_injecting() {
    let out = faultline(&[
        "plan",
        &format!("{EXPERIMENTS}/kill.yaml"),
        "--var",
        "port=1",
        "--label",
        "service=demo",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("1 of 1 matching agent(s)"), "{s}");
    assert!(
        s.contains("blast_radius.max_targets 1") && s.contains("headroom 0"),
        "{s}"
    );
}

/// The shipped kill experiment with its kill selector replaced.
fn kill_experiment(dir: &std::path::Path, kill: &str) -> String {
    let src = std::fs::read_to_string(format!("{EXPERIMENTS}/kill.yaml")).unwrap();
    let start = src.find("    kill:\n").unwrap();
    let end = src.find("blast_radius:").unwrap();
    let src = format!("{}    kill: {kill}\n{}", &src[..start], &src[end..]);
    let path = dir.join("kill.yaml");
    std::fs::write(&path, src).unwrap();
    path.to_str().unwrap().to_string()
}

// Before dry runs, plan only named the agents: nothing said that `.*`
// matched every process on the node, and nothing refused it.
#[test]
fn plan_shows_how_many_processes_a_kill_matches_and_refuses_a_mass_kill() {
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let marker = format!("1000.{}", std::process::id());
    let mut victim = Reap(Command::new("sleep").arg(&marker).spawn().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let exp = kill_experiment(dir.path(), &format!("{{ cmdline: '^sleep {marker}$', count: all }}"));
    let out = faultline(&["plan", &exp, "--var", "port=1", "--label", "service=demo"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let pid = victim.0.id();
    assert!(
        s.contains("would send SIGKILL to 1 of ")
            && s.contains(&format!("1 match cmdline=~/^sleep {marker}$/): {pid} (sleep)")),
        "{s}"
    );
    assert!(victim.0.try_wait().unwrap().is_none(), "plan killed the process");

    let exp = kill_experiment(dir.path(), "{ cmdline: '.*', count: all }");
    let out = faultline(&["plan", &exp, "--var", "port=1", "--label", "service=demo"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains(": refused: the kill selector cmdline=~/.*/ matches "), "{s}");
    assert!(s.contains("allow_mass_kill"), "{s}");
    assert!(victim.0.try_wait().unwrap().is_none());
}

/// Ctrl-C during observe: the run is aborted, its fault restored, the report
/// printed, and the exit code is 3.
#[test]
fn ctrl_c_aborts_restores_and_still_reports() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    // A process of our own, with a command line unique to this test run.
    let marker = format!("0.{:06}", std::process::id() % 1_000_000);
    let mut victim = Command::new("sleep").args(["300", &marker]).spawn().unwrap();
    let file = dir.path().join("long.yaml");
    std::fs::write(
        &file,
        r#"name: long
hypothesis:
  probes:
    - name: self
      interval: 100ms
      command: { run: "true" }
      tolerances: [ { success_rate: 1.0 } ]
baseline: 300ms
duration: 60s
faults:
  - kill: { cmdline: '^sleep 300 MARKER$' }
"#
        .replace("MARKER", &marker.replace('.', "\\.")),
    )
    .unwrap();
    let mut child = Command::new(FAULTLINE)
        .args(["run", file.to_str().unwrap(), "--format", "json", "--no-store"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => {
                let observing = l.contains("▶ observe");
                seen.push(l);
                if observing {
                    break;
                }
            }
            Err(_) => continue,
        }
    }
    assert!(seen.iter().any(|l| l.contains("▶ observe")), "{seen:#?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    if started.elapsed() >= Duration::from_secs(20) {
        // Everything the CLI logged, to tell which step of the abort or of
        // the local shutdown was slow.
        seen.extend(rx.try_iter());
        panic!("aborting took {:?}; stderr:\n{}", started.elapsed(), seen.join("\n"));
    }
    assert_eq!(out.status.code(), Some(3));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report printed after Ctrl-C");
    assert_eq!(r["outcome"], "aborted");
    assert!(
        r["aborted_by"].as_str().unwrap().contains("Ctrl-C"),
        "{}",
        r["aborted_by"]
    );
    assert_eq!(r["faults"][0]["targets"][0]["state"], "restored");
    let killed = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        matches!(victim.try_wait(), Ok(Some(_)))
    });
    let _ = victim.kill();
    let _ = victim.wait();
    assert!(killed, "the run killed our sleeper before it was aborted");
}

#[test]
fn a_policy_limit_refuses_a_local_run_with_exit_2_and_plan_shows_every_limit() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "max_duration: 2s\nmax_concurrent_runs: 1\nprotected_labels: [tier=db]\n",
    )
    .unwrap();
    let policy = policy.to_str().unwrap();
    let kill = format!("{EXPERIMENTS}/kill.yaml");
    // kill.yaml observes for 4s: over the policy's 2s.
    let out = faultline(&[
        "run",
        &kill,
        "--var",
        "port=1",
        "--label",
        "service=demo",
        "--policy",
        policy,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("max_duration 2s: the experiment's duration is 4s"),
        "{err}"
    );

    std::fs::write(
        dir.path().join("policy.yaml"),
        "max_duration: 1m\nmax_concurrent_runs: 1\n",
    )
    .unwrap();
    let out = faultline(&[
        "plan",
        &kill,
        "--var",
        "port=1",
        "--label",
        "service=demo",
        "--policy",
        policy,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for want in [
        "max_duration 1m: duration 4s (headroom 56s)",
        "max_concurrent_runs 1: 1 with this run (headroom 0)",
        "blast_radius.max_targets 1",
    ] {
        assert!(s.contains(want), "missing {want:?} in:\n{s}");
    }

    // A broken policy file is an input error with its position.
    std::fs::write(dir.path().join("policy.yaml"), "max_concurent_runs: 1\n").unwrap();
    let out = faultline(&["plan", &kill, "--var", "port=1", "--policy", policy]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("policy.yaml:1:1: unknown field `max_concurent_runs`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn local_runs_are_kept_in_the_history_database_and_reported_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    let db = db.to_str().unwrap();
    let kill = format!("{EXPERIMENTS}/kill.yaml");
    // A run refused at plan time is history too.
    let out = faultline(&["run", &kill, "--var", "port=1", "--db", db, "--quiet"]);
    assert_eq!(out.status.code(), Some(5));
    let out = faultline(&["runs", "--db", db, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let line = text(&out.stdout);
    let row: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(row["status"], "error");
    let id = row["run_id"].as_str().unwrap().to_string();
    for (format, want) in [
        ("md", "— ERROR"),
        ("json", "\"outcome\": \"error\""),
        ("junit", "<error message=\"error: fault"),
        ("html", "<!DOCTYPE html>"),
    ] {
        let out = faultline(&["report", &id, "--db", db, "--format", format]);
        assert_eq!(out.status.code(), Some(0), "{format}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains(want), "{format}: {}", text(&out.stdout));
    }
    let out = faultline(&["runs", "--db", db, "--outcome", "passed"]);
    assert_eq!(text(&out.stdout).trim(), "no runs");
    let out = faultline(&["runs", "--db", db, "--outcome", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let out = faultline(&["audit", "--db", db]);
    assert!(
        text(&out.stdout).contains("submit") && text(&out.stdout).contains(&id),
        "{}",
        text(&out.stdout)
    );
    let out = faultline(&["report", "r-nope", "--db", db]);
    assert_eq!(out.status.code(), Some(5));
    assert!(text(&out.stderr).contains("no run r-nope"), "{}", text(&out.stderr));
}

/// A `sleep` started through sh, so init reaps it once killed.
fn orphan_sleep(marker: &str) -> i32 {
    let out = Command::new("sh")
        .args(["-c", &format!("sleep 300 {marker} >/dev/null 2>&1 & echo $!")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn a_game_day_runs_in_order_stops_on_failure_and_scores() {
    let dir = tempfile::tempdir().unwrap();
    let (ma, mb) = (
        format!("0.{}1", std::process::id()),
        format!("0.{}2", std::process::id()),
    );
    let (pa, pb) = (orphan_sleep(&ma), orphan_sleep(&mb));
    let exp = |name: &str, probe: &str, marker: &str| {
        format!(
            "name: {name}\nhypothesis:\n  probes:\n    - name: p\n      interval: 50ms\n      command: {{ run: \"{probe}\" }}\n      tolerances:\n        - success_rate: \"90%\"\nbaseline: 300ms\nduration: 500ms\nrecovery: 300ms\nfaults:\n  - kill: {{ cmdline: '^sleep 300 {}$' }}\n",
            marker.replace('.', "\\.")
        )
    };
    std::fs::write(dir.path().join("pass.yaml"), exp("pass", "true", &ma)).unwrap();
    std::fs::write(
        dir.path().join("fail.yaml"),
        exp("fail", &format!("grep -q '^State:.*(sleeping)' /proc/{pb}/status"), &mb),
    )
    .unwrap();
    std::fs::write(dir.path().join("never.yaml"), exp("never", "true", "0.never")).unwrap();
    std::fs::write(
        dir.path().join("gd.yaml"),
        "name: weekly\nstop_on_failure: true\nexperiments:\n  - file: pass.yaml\n  - file: fail.yaml\n  - file: never.yaml\n",
    )
    .unwrap();
    let out = faultline(&[
        "gameday",
        dir.path().join("gd.yaml").to_str().unwrap(),
        "--format",
        "json",
        "--no-store",
        "--quiet",
    ]);
    for p in [pa, pb] {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
    }
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let outcomes: Vec<&str> = s["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["passed", "failed", "skipped"], "{s}");
    assert_eq!(s["resilience_score"], 50.0);
    assert_eq!((s["passed"].as_u64(), s["judged"].as_u64()), (Some(1), Some(2)));

    // A broken experiment in the list is caught before anything runs.
    std::fs::write(dir.path().join("never.yaml"), "name: x\n").unwrap();
    let out = faultline(&["gameday", dir.path().join("gd.yaml").to_str().unwrap(), "--no-store"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("never.yaml"), "{}", text(&out.stderr));
}

#[test]
fn validate_refuses_what_plan_refuses_and_says_durations_in_human_units() {
    let dir = tempfile::tempdir().unwrap();
    let kill = std::fs::read_to_string(format!("{EXPERIMENTS}/kill.yaml")).unwrap();
    assert!(kill.contains("\nduration: "), "kill.yaml has a top-level duration");
    let with = |duration: &str| {
        let mut out = String::new();
        for line in kill.lines() {
            if line.starts_with("duration: ") {
                out += &format!("duration: {duration}\n");
            } else if line.starts_with("blast_radius:") {
                out += "blast_radius:\n  max_duration: 5m\n";
                continue;
            } else if line.starts_with("  max_duration") {
                continue;
            } else {
                out += line;
                out += "\n";
            }
        }
        if !out.contains("blast_radius:") {
            out += "blast_radius:\n  max_duration: 5m\n";
        }
        let path = dir.path().join(format!("d-{}.yaml", duration.replace(' ', "")));
        std::fs::write(&path, out).unwrap();
        path.to_str().unwrap().to_string()
    };
    for (duration, want) in [
        ("99999h", "duration: 4166d 15h is longer than the limit of 7d"),
        ("90m", "duration: 1h 30m is longer than blast_radius.max_duration 5m"),
        ("18446744073709551615s", "is longer than the limit of 7d"),
    ] {
        let file = with(duration);
        for cmd in ["validate", "plan"] {
            let mut args = vec![cmd, file.as_str(), "--var", "port=1"];
            if cmd == "plan" {
                args.extend(["--label", "service=demo"]);
            }
            let out = faultline(&args);
            assert_eq!(out.status.code(), Some(2), "{cmd} {duration}: {}", text(&out.stderr));
            let err = text(&out.stderr);
            assert!(
                err.contains(&format!("{file}:")) && err.contains(want),
                "{cmd} {duration}: {err}"
            );
        }
    }
    let out = faultline(&["validate", &with("4s"), "--var", "port=1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = faultline(&["plan", &with("4s"), "--var", "port=1", "--label", "service=demo"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("blast_radius.max_duration 5m: duration 4s (headroom 4m 56s)"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn certs_init_refuses_to_replace_a_ca_and_add_agent_signs_with_it() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tls");
    let d = dir.to_str().unwrap();
    let out = faultline(&["certs", "init", d, "--agent", "node-a"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();

    // Again: refused, exit 2, nothing replaced, and the way out named.
    let out = faultline(&["certs", "init", d, "--agent", "node-b"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("ca.pem already exists"), "{err}");
    assert!(err.contains("certs add-agent") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), ca, "the CA is untouched");
    assert!(!dir.join("agent-node-b.pem").exists());

    // add-agent signs with the same CA.
    let out = faultline(&["certs", "add-agent", d, "node-b", "node-c"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("agent-node-c.pem"), "{}", text(&out.stdout));
    assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), ca);
    let out = faultline(&["certs", "add-agent", d, "node-b"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("agent-node-b.pem already exists"));

    // --force replaces the CA.
    let out = faultline(&["certs", "init", d, "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_ne!(std::fs::read(dir.join("ca.pem")).unwrap(), ca);
}

#[test]
fn certs_with_a_bad_agent_id_write_nothing() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tls");
    let d = dir.to_str().unwrap();
    let out = faultline(&["certs", "init", d, "--agent", "node-a", "--agent", "bad id/../x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("agent id \"bad id/../x\" contains ' '"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert!(!dir.exists(), "no partial directory");
}

#[test]
fn serve_refuses_non_loopback_metrics_without_metrics_public() {
    // Started as a child with a deadline: a coordinator that accepted the
    // flag would serve until killed.
    let mut child = Command::new(FAULTLINE)
        .args([
            "serve",
            "--no-store",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "0.0.0.0:0",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run faultline serve");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(2),
        "still serving or wrong exit: {err}"
    );
    assert!(
        err.contains("refusing to serve metrics on 0.0.0.0:0") && err.contains("--metrics-public"),
        "{err}"
    );
}

/// A coordinator in this test process (no agents), served on a loopback
/// port until dropped.
struct InProcess {
    rt: tokio::runtime::Runtime,
    url: String,
    stop: tokio_util::sync::CancellationToken,
}

impl InProcess {
    fn start() -> InProcess {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = tokio_util::sync::CancellationToken::new();
        let c = faultline_coordinator::Coordinator::new();
        let s = stop.clone();
        rt.spawn(async move { c.serve(listener, s).await });
        InProcess { rt, url, stop }
    }

    /// Submits `file` and waits for its end; returns the run id.
    fn run(&self, file: &str, vars: &[(&str, &str)]) -> String {
        use faultline_proto::v1;
        let yaml = std::fs::read_to_string(file).unwrap();
        self.rt.block_on(async {
            let mut c = faultline_coordinator::cli::common::control(&self.url).await.unwrap();
            let mut s = c
                .submit_run(v1::SubmitRunRequest {
                    source: Some(v1::ExperimentSource {
                        name: file.into(),
                        yaml,
                        vars: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    }),
                })
                .await
                .unwrap()
                .into_inner();
            let mut run_id = String::new();
            while let Some(ev) = s.message().await.unwrap() {
                run_id = ev.run_id;
            }
            run_id
        })
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[test]
fn follow_replays_a_finished_run_prints_its_report_and_exits_with_its_code() {
    let c = InProcess::start();
    // No agent is connected: the run ends `error` at plan.
    let run_id = c.run(&format!("{EXPERIMENTS}/kill.yaml"), &[("port", "1")]);
    let out = faultline(&["follow", &run_id, "--coordinator", &c.url, "--format", "json"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(r["run_id"], run_id.as_str());
    assert!(err.contains("▶ plan") && err.contains("■ error (exit 5)"), "{err}");

    let out = faultline(&["follow", "r-nope", "--coordinator", &c.url]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("no run r-nope") && err.contains("faultline runs --coordinator"),
        "{err}"
    );
}

#[test]
fn schedule_add_refuses_a_cron_that_never_fires_and_ticks_on_whole_seconds() {
    let c = InProcess::start();
    let file = format!("{EXPERIMENTS}/kill.yaml");
    let out = faultline(&[
        "schedule",
        "add",
        &file,
        "--var",
        "port=1",
        "--cron",
        "0 0 30 2 *",
        "--coordinator",
        &c.url,
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--cron: cron expression \"0 0 30 2 *\" never fires"),
        "{err}"
    );
    assert!(!text(&out.stdout).contains("1970"), "{}", text(&out.stdout));
    let out = faultline(&[
        "schedule",
        "add",
        &file,
        "--var",
        "port=1",
        "--cron",
        "1 2 3 4 5 6 7",
        "--coordinator",
        &c.url,
    ]);
    assert!(
        text(&out.stderr).contains("has 7 fields; write 5"),
        "{}",
        text(&out.stderr)
    );
    // Accepted: the first tick is on a whole second (no fraction shown).
    let out = faultline(&[
        "schedule",
        "add",
        &file,
        "--var",
        "port=1",
        "--cron",
        "0 0 1 1 *",
        "--coordinator",
        &c.url,
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains("first tick at") && stdout.trim_end().ends_with(":00:00Z"),
        "{stdout}"
    );
}

#[test]
fn gameday_on_a_coordinator_is_recorded_scheduled_and_listed_with_its_trend() {
    let c = InProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let kill = std::fs::read_to_string(format!("{EXPERIMENTS}/kill.yaml")).unwrap();
    std::fs::write(dir.path().join("kill.yaml"), kill).unwrap();
    let gd = dir.path().join("gd.yaml");
    std::fs::write(
        &gd,
        "name: nightly\nexperiments:\n  - file: kill.yaml\n    vars: { port: \"1\" }\n    weight: 2\n",
    )
    .unwrap();
    let gd = gd.to_str().unwrap();
    // No agent is connected: the run ends `error` at plan; the game day is
    // still recorded (unscored) on the coordinator.
    let out = faultline(&["gameday", gd, "--coordinator", &c.url, "--format", "json"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json summary");
    assert_eq!(s["experiments"][0]["outcome"], "error", "{s}");
    assert!(s["resilience_score"].is_null(), "{s}");
    let gid = s["gameday_run_id"].as_str().unwrap().to_string();
    assert!(gid.starts_with('g'), "{gid}");
    let run_id = s["experiments"][0]["run_id"].as_str().unwrap().to_string();
    assert!(err.contains(&format!("game day nightly: kill.yaml ({gid})")), "{err}");

    let out = faultline(&["gamedays", "--coordinator", &c.url]);
    let table = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        table.contains(&gid) && table.contains("n/a") && table.contains("nightly"),
        "{table}"
    );
    let out = faultline(&["gamedays", "--coordinator", &c.url, "--name", "nightly"]);
    let history = text(&out.stdout);
    assert!(history.contains(&run_id), "{history}");
    assert!(history.contains("trend: no scored run yet"), "{history}");
    let out = faultline(&["gamedays", "--coordinator", &c.url, "--name", "other"]);
    assert_eq!(text(&out.stdout).trim(), "no game-day runs named \"other\"");

    // The file's kind is detected: a game day is scheduled as one.
    let out = faultline(&["schedule", "add", gd, "--cron", "0 0 1 1 *", "--coordinator", &c.url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("added (game day)"), "{}", text(&out.stdout));
    let out = faultline(&["schedule", "list", "--coordinator", &c.url]);
    assert!(text(&out.stdout).contains("game day nightly"), "{}", text(&out.stdout));
    let out = faultline(&[
        "schedule",
        "add",
        gd,
        "--var",
        "a=b",
        "--cron",
        "0 0 1 1 *",
        "--coordinator",
        &c.url,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("is a game day: --var does not apply"),
        "{}",
        text(&out.stderr)
    );
}

/// Root, or a printed reason and false (a failure under CI=true).
fn root_or_skip(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} needs root, and CI=true forbids skipping"
    );
    eprintln!("skipping {what}: needs root (to mount a tmpfs)");
    false
}

/// A tmpfs mounted on a temporary directory; unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount() -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=16m,mode=0700"),
        )
        .expect("mount tmpfs");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn local_run_fills_a_directory_allowed_with_allow_fill_and_restores_it() {
    if !root_or_skip("local_run_fills_a_directory_allowed_with_allow_fill_and_restores_it") {
        return;
    }
    let fs = Tmpfs::mount();
    let dir = fs.0.path().to_str().unwrap().to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let files = tempfile::tempdir().unwrap();
    let exp = files.path().join("fill.yaml");
    std::fs::write(
        &exp,
        format!(
            "name: local-fill\nhypothesis:\n  probes:\n    - name: port\n      interval: 100ms\n      tcp: {{ address: \"{}\" }}\nbaseline: 300ms\nduration: 1s\nrecovery: 300ms\nfaults:\n  - name: fill\n    disk_fill: {{ path: {dir}, used: \"50%\" }}\n",
            listener.local_addr().unwrap()
        ),
    )
    .unwrap();
    let exp = exp.to_str().unwrap();

    // Without --allow-fill the agent refuses, and says which flag allows it.
    let out = faultline(&["run", exp, "--no-store", "--format", "json"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(all.contains("allow it with --allow-fill DIR"), "{all}");

    let out = faultline(&["run", exp, "--no-store", "--format", "json", "--allow-fill", &dir]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    let t = &r["faults"][0]["targets"][0];
    assert_eq!(t["state"], "restored", "{t}");
    assert!(t["objects"][0].as_str().unwrap().contains("fallocate"), "{t}");
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none(),
        "the fill file is removed"
    );

    // Remote agents are configured on their side.
    let out = faultline(&["run", exp, "--coordinator", "http://127.0.0.1:1", "--allow-fill", &dir]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("faultline-agent --allow-fill"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn quiet_hides_warnings_and_piped_logs_carry_no_colour_codes() {
    let kill = format!("{EXPERIMENTS}/kill.yaml");
    // The plan is refused (no agent has service=demo): a WARN log line.
    let args = [
        "run",
        kill.as_str(),
        "--var",
        "port=1",
        "--label",
        "zone=x",
        "--no-store",
    ];
    let out = faultline(&args);
    let err = text(&out.stderr);
    assert!(err.contains("WARN") && err.contains("plan refused"), "{err}");
    assert!(!err.contains('\u{1b}'), "ANSI escapes in piped logs: {err:?}");
    let out = faultline(&[&args[..], &["-q"]].concat());
    assert_eq!(out.status.code(), Some(5));
    let err = text(&out.stderr);
    assert!(!err.contains("WARN"), "-q still logs warnings: {err}");
}

/// The in-process agent closes its stream before local mode stops the
/// coordinator, so no "agent stream broke" warning (it was seen in about 1
/// of 15 local plans).
#[test]
fn local_plan_shuts_down_without_a_broken_agent_stream() {
    let kill = format!("{EXPERIMENTS}/kill.yaml");
    for _ in 0..30 {
        let out = faultline(&["plan", &kill, "--var", "port=1", "--label", "service=demo"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(!err.contains("stream broke") && !err.contains("WARN"), "{err}");
    }
}

fn faultline_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let db = tempfile::tempdir().unwrap();
    Command::new(FAULTLINE)
        .args(args)
        .env("FAULTLINE_DB", db.path().join("history.db"))
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run faultline")
}

#[test]
fn game_day_errors_are_located_and_name_what_exists_in_a_game_day() {
    let dir = tempfile::tempdir().unwrap();
    let gd = dir.path().join("gd.yaml");
    let gd_s = gd.to_str().unwrap();
    std::fs::write(dir.path().join("kill.yaml"), kill_without_default()).unwrap();
    let run = |yaml: &str| {
        std::fs::write(&gd, yaml).unwrap();
        let out = faultline(&["gameday", gd_s, "--no-store"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    // A variable the experiment needs: set in the entry's vars, not --var
    // (gameday has no such flag).
    let err = run("name: g\nexperiments:\n  - file: kill.yaml\n");
    assert!(
        err.contains("variable ${port} is not set; set port in the vars of ")
            && err.contains(&format!("{gd_s}:3:3: experiments[0]")),
        "{err}"
    );
    assert!(!err.contains("--var"), "{err}");
    // A bad weight: file:line:column of the entry.
    let err = run(
        "name: g\nexperiments:\n  - file: kill.yaml\n    vars: { port: \"1\" }\n  - file: kill.yaml\n    weight: -1\n",
    );
    assert!(
        err.contains(&format!("{gd_s}:5:3: experiments[1].weight -1: must be above 0")),
        "{err}"
    );
    // YAML errors: located once, in front, without serde's type names.
    let err = run("name: g\nexperiments: 3\n");
    assert!(
        err.contains(&format!("{gd_s}:2:")) && !err.contains(" at line "),
        "{err}"
    );
    let err = run("- a\n- b\n");
    assert!(err.contains("expected a game day") && !err.contains("Raw"), "{err}");
    let err = run("name: g\nexperiments:\n  - fil: kill.yaml\n");
    assert!(err.contains(&format!("{gd_s}:3:")) && !err.contains("Raw"), "{err}");
    let err = run("name: g\nexperiments: []\n");
    assert!(
        err.contains(&format!("{gd_s}:2:1: experiments: at least one is needed")),
        "{err}"
    );
}

/// Every `--flag` a message names exists: on `faultline` (any subcommand)
/// or on `faultline-agent`.
#[test]
fn every_flag_named_in_a_message_exists() {
    use clap::CommandFactory;
    fn flags(c: &clap::Command, out: &mut std::collections::BTreeSet<String>) {
        for a in c.get_arguments() {
            if let Some(l) = a.get_long() {
                out.insert(l.to_string());
            }
        }
        for s in c.get_subcommands() {
            flags(s, out);
        }
    }
    let mut known = std::collections::BTreeSet::new();
    flags(&faultline_coordinator::cli::Cli::command(), &mut known);
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    // The agent's flags, from its clap definitions.
    let agent_main = std::fs::read_to_string(format!("{root}/agent/src/main.rs")).unwrap();
    let mut lines = agent_main.lines().peekable();
    while let Some(l) = lines.next() {
        if let Some(rest) = l.trim().strip_prefix("#[arg(long") {
            if let Some(explicit) = rest.split("long = \"").nth(1) {
                known.insert(explicit.split('"').next().unwrap().to_string());
            } else if let Some(field) = lines.peek() {
                let name = field.trim().split(':').next().unwrap().trim_start_matches("pub ");
                known.insert(name.replace('_', "-"));
            }
        }
    }
    assert!(known.contains("allow-fill") && known.contains("state-dir") && known.contains("coordinator"));
    let mut files = Vec::new();
    fn walk(dir: &std::path::Path, files: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, files);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    walk(std::path::Path::new(&format!("{root}/coordinator/src")), &mut files);
    for f in [
        "main.rs",
        "lib.rs",
        "link.rs",
        "journal.rs",
        "policy.rs",
        "faults/disk_fill.rs",
        "faults/latency.rs",
    ] {
        files.push(format!("{root}/agent/src/{f}").into());
    }
    let mut unknown = Vec::new();
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap();
        // Messages only: stop at the unit tests.
        let src = src.split("#[cfg(test)]").next().unwrap();
        for (n, line) in src.lines().enumerate() {
            if line.trim_start().starts_with("//") || line.contains(".args([") {
                continue;
            }
            for (i, lit) in line.split('"').enumerate() {
                if i % 2 == 0 {
                    continue;
                }
                let mut rest = lit;
                while let Some(p) = rest.find("--") {
                    let name: String = rest[p + 2..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                        .collect();
                    let starts_with_letter = name.starts_with(|c: char| c.is_ascii_lowercase());
                    if starts_with_letter && !known.contains(&name) {
                        unknown.push(format!("{}:{}: --{name}", f.display(), n + 1));
                    }
                    rest = &rest[p + 2..];
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "messages name flags that do not exist: {unknown:#?}"
    );
}

#[test]
fn connection_errors_say_what_was_tried_and_the_likely_fix() {
    // No scheme.
    let out = faultline(&["agents", "--coordinator", "127.0.0.1:7700"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("has no scheme: write http://127.0.0.1:7700"), "{err}");
    assert!(err.matches("scheme").count() == 1, "said once: {err}");

    // Nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = text(&faultline(&["agents", "--coordinator", &format!("http://127.0.0.1:{port}")]).stderr);
    assert!(err.contains("nothing listens there (connection refused)"), "{err}");

    // An HTTP/1 server (such as the metrics port) is not a coordinator.
    let http1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", http1.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in http1.incoming().flatten() {
            use std::io::{Read, Write};
            let mut s = s;
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    let err = text(&faultline(&["runs", "--coordinator", &url]).stderr);
    assert!(
        err.contains("did not answer as a faultline coordinator")
            && err.contains("--metrics-listen")
            && err.contains("https://"),
        "{err}"
    );
    assert!(
        !err.contains("Status {") && !err.contains("code: '"),
        "debug formatting: {err}"
    );

    // https:// to a coordinator without TLS.
    let c = InProcess::start();
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path().join("tls");
    let out = faultline(&["certs", "init", dir.to_str().unwrap(), "--host", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let https = c.url.replace("http://", "https://");
    let out = faultline_env(
        &["agents", "--coordinator", &https],
        &[("FAULTLINE_TLS_DIR", dir.to_str().unwrap())],
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("did not answer TLS") && err.contains(&format!("use {}", c.url)),
        "{err}"
    );
}

#[test]
fn runs_prune_deletes_old_finished_runs_and_keeps_running_ones() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    {
        let store = faultline_coordinator::store::Store::open(&db).unwrap();
        store.run_started("r-old", "exp", "e.yaml", 1_000).unwrap();
        store.event("r-old", 1_001, "log", "old").unwrap();
        store.mark_interrupted(2_000).unwrap();
        store.run_started("r-old-running", "exp", "e.yaml", 1_500).unwrap();
        let now = faultline_proto::now_unix_ms();
        store.run_started("r-new", "exp", "e.yaml", now).unwrap();
    }
    let d = db.to_str().unwrap();
    let out = faultline(&["runs", "prune", "--older-than", "1d", "--db", d]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("pruned 1 run(s) older than 1day"),
        "{}",
        text(&out.stdout)
    );
    let out = faultline(&["runs", "--db", d, "--json"]);
    let listed = text(&out.stdout);
    assert!(!listed.contains("\"r-old\""), "{listed}");
    assert!(listed.contains("r-old-running") && listed.contains("r-new"), "{listed}");
    let out = faultline(&["runs", "prune", "--older-than", "soon", "--db", d]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// Regression: on a host without a CA bundle (a minimal container or VM),
/// building the probe client failed ("No CA certificates were loaded from
/// the system"), the fallback `reqwest::Client::new()` panicked, and every
/// run ended as an internal error (exit 5) — even with only a tcp probe.
#[test]
fn a_host_without_ca_certificates_can_still_run_experiments() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // A second number `sleep` adds to the first: unique per test process.
    let marker = format!("0.{}1", std::process::id());
    let mut sleeper = Command::new("sh")
        .args(["-c", &format!("exec sleep 60 {marker}")])
        .spawn()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("no-ca.yaml");
    std::fs::write(
        &file,
        format!(
            r#"name: no-ca
hypothesis:
  probes:
    - name: listener
      interval: 100ms
      tcp: {{ address: "127.0.0.1:{port}" }}
baseline: 300ms
duration: 300ms
recovery: 300ms
faults:
  - name: nudge
    kill: {{ cmdline: "sleep 60 {marker}$", signal: SIGCONT }}
"#
        ),
    )
    .unwrap();
    let db = tempfile::tempdir().unwrap();
    let out = Command::new(FAULTLINE)
        .args(["run", file.to_str().unwrap(), "--quiet"])
        .env("FAULTLINE_DB", db.path().join("history.db"))
        .env("SSL_CERT_FILE", dir.path().join("no-such-bundle.pem"))
        .env("SSL_CERT_DIR", dir.path().join("no-such-dir"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    drop(listener);
    let err = text(&out.stderr);
    assert!(!err.contains("No CA certificates"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}\n{}", text(&out.stdout));
}

/// `serve` with `args`, given 10 s to exit on its own; its exit code (None
/// if it was still serving) and stderr.
fn serve_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(FAULTLINE)
        .arg("serve")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run faultline serve");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status, err)
}

#[test]
fn serve_refuses_a_public_gate_without_gate_public_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let base = [
        "--no-store",
        "--listen",
        "127.0.0.1:0",
        "--gate-dir",
        d,
        "--gate-listen",
        "0.0.0.0:0",
    ];
    let (code, err) = serve_exit(&base);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("refusing to serve the gate on 0.0.0.0:0") && err.contains("--gate-public"),
        "{err}"
    );
    let mut public = base.to_vec();
    public.push("--gate-public");
    let (code, err) = serve_exit(&public);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("without --tokens"), "{err}");
    // The gate needs its directory.
    let (code, err) = serve_exit(&["--no-store", "--listen", "127.0.0.1:0", "--gate-listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--gate-dir"), "{err}");
}

#[test]
fn validate_and_plan_show_both_groups_and_the_judge() {
    let file = format!("{EXPERIMENTS}/canary-gate.yaml");
    let out = faultline(&["validate", &file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for want in [
        "group control (url=http://127.0.0.1:8081/work)",
        "probe work [control]: http GET http://127.0.0.1:8081/work",
        "group canary (url=http://127.0.0.1:8082/work)",
        "probe work [canary]: http GET http://127.0.0.1:8082/work",
        "faults hit both groups at the same time: slow-dependency",
        "judge: canary vs control on the inject samples, alpha 0.05, pass >= 95, marginal >= 75 (marginal fails)",
        "metric \"work latency\": Increase, allowed x1.25/x1, weight 60",
    ] {
        assert!(stdout.contains(want), "{want:?} missing from:\n{stdout}");
    }
    // plan (local mode, no store) prints the same groups after the faults.
    let dir = tempfile::tempdir().unwrap();
    let grouped = dir.path().join("grouped.yaml");
    std::fs::write(
        &grouped,
        "name: g\nhypothesis:\n  groups:\n    control: { port: \"1\" }\n    canary: { port: \"2\" }\n  probes:\n    - name: api\n      per_group: true\n      tcp: { address: \"127.0.0.1:${group.port}\" }\nduration: 1s\nfaults:\n  - kill: { name: faultline-no-such-process }\njudge: {}\n",
    )
    .unwrap();
    let out = faultline(&["plan", grouped.to_str().unwrap(), "--no-store"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("groups:\n  group control (port=1)\n    probe api [control]: tcp 127.0.0.1:1\n  group canary (port=2)\n    probe api [canary]: tcp 127.0.0.1:2\n"),
        "{stdout}"
    );
}

/// `plan` (local mode) shows a group that selects agents with the agent it
/// resolved to, that agent's address and the probe instance at it; a group
/// matching no agent refuses the plan with exit 5, naming the group.
#[test]
fn plan_shows_a_group_of_agents_with_their_addresses_and_refuses_an_empty_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agents.yaml");
    let yaml = |canary: &str| {
        format!(
            "name: g\nhypothesis:\n  groups:\n    control: {{ agents: {{ track: stable }} }}\n    canary: {{ agents: {{ track: {canary} }} }}\n  probes:\n    - name: api\n      per_group: true\n      tcp: {{ address: \"${{group.address}}:1\" }}\nduration: 1s\nfaults:\n  - targets: {{ groups: [control, canary] }}\n    kill: {{ name: faultline-no-such-process }}\njudge: {{}}\n"
        )
    };
    std::fs::write(&file, yaml("stable")).unwrap();
    let out = faultline(&["plan", file.to_str().unwrap(), "--no-store", "--label", "track=stable"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let agent = stdout
        .lines()
        .find_map(|l| l.strip_prefix("    agent "))
        .unwrap_or_else(|| panic!("no agent line in:\n{stdout}"));
    let (id, address) = agent.split_once(" at ").expect("agent ID at ADDRESS");
    assert!(
        stdout.contains(&format!(
            "  group canary (agents {{track=stable}})\n    agent {id} at {address}\n    probe api [canary/{id}]: tcp {address}:1\n"
        )),
        "{stdout}"
    );
    std::fs::write(&file, yaml("canary")).unwrap();
    let out = faultline(&["plan", file.to_str().unwrap(), "--no-store", "--label", "track=stable"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("group \"canary\": no connected agent matches agents {track=canary}"),
        "{stderr}"
    );
}

/// Runs `faultline serve --no-store --listen 127.0.0.1:0 ARGS` with a 10 s
/// deadline; its exit code and stderr.
fn serve_refusal(args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["--no-store", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    serve_exit(&all)
}

#[test]
fn serve_refuses_a_console_off_loopback_without_tls_and_a_console_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "ops 0123456789abcdef0123 operator\nviewer fedcba9876543210fedc read-only\n",
    )
    .unwrap();
    let t = tokens.to_str().unwrap();
    let (code, err) = serve_refusal(&["--tokens", t, "--ui-listen", "0.0.0.0:0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("refusing to serve the console on 0.0.0.0:0 without TLS") && err.contains("--insecure"),
        "{err}"
    );
    let (code, err) = serve_refusal(&["--ui-listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--ui-listen needs --tokens FILE"), "{err}");
    // A token file with an unknown role is refused with its line.
    std::fs::write(&tokens, "ops 0123456789abcdef0123 admin\n").unwrap();
    let (code, err) = serve_refusal(&["--tokens", t, "--ui-listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(":1: unknown role \"admin\""), "{err}");
}
