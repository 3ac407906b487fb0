//! Crash tests: kill our own components mid-fault and prove the node is put
//! back. Lab tests (see `faultline_tests::lab`): they need root, skip with
//! a reason without it, and fail under `CI=true`. Each ends by proving every
//! host is clean.

use std::time::{Duration, Instant};

use faultline_coordinator::outcome::{Outcome, Phase};
use faultline_tests::lab::{lab_or_skip, CoordinatorMode, HostSpec, Lab, Tmpfs};

const PHASE_WAIT: Duration = Duration::from_secs(30);

/// Three faults on host b — latency and a block towards zone a, and a disk
/// fill of `fill_dir` — with a probe of b's service from the coordinator.
fn three_faults_on_b(fill_dir: &str, duration: &str, lease: &str) -> String {
    format!(
        r#"name: crash-me
hypothesis:
  probes:
    - name: b-http
      interval: 200ms
      http: {{ url: "http://10.77.0.12:8080/" }}
baseline: 1s
duration: {duration}
recovery: 2s
lease: {lease}
faults:
  - name: slow-b
    targets: {{ labels: {{ host: b }} }}
    latency: {{ delay: 50ms, to: {{ zones: [a] }}, backend: nfqueue }}
  - name: cut-b
    targets: {{ labels: {{ host: b }} }}
    block: {{ peers: {{ zones: [a] }}, ports: [9] }}
  - name: fill-b
    targets: {{ labels: {{ host: b }} }}
    disk_fill: {{ path: {fill_dir}, used: "50%" }}
"#
    )
}

fn fill_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn agent_killed_mid_fault_restores_everything_before_it_registers_again() {
    if !lab_or_skip("agent_killed_mid_fault_restores_everything_before_it_registers_again") {
        return;
    }
    let fill = Tmpfs::mount(16);
    let fill_dir = fill.path().display().to_string();
    let mut lab = Lab::build(vec![
        HostSpec::new("a", "a"),
        HostSpec::new("b", "b").agent_arg("--allow-fill").agent_arg(&fill_dir),
    ]);
    let mut run = lab.submit(&three_faults_on_b(&fill_dir, "20s", "30s"));
    assert!(run.wait_phase("observe", PHASE_WAIT), "the run never reached observe");
    let before = lab.leftovers();
    assert!(
        before.iter().any(|l| l.contains("faultline-")) && before.iter().any(|l| l.contains("nft")),
        "the faults are in place: {before:?}"
    );
    assert_eq!(fill_files(fill.path()).len(), 1, "one fill file");

    lab.kill_agent("b");
    // A dead agent restores nothing: everything is still there.
    assert!(!lab.leftovers().is_empty());
    assert_eq!(fill_files(fill.path()).len(), 1);

    let t = Instant::now();
    lab.start_agent("b");
    let pid = lab.agent_pid("b").expect("restarted");
    let info = lab
        .wait_registered("b", pid, Duration::from_secs(20))
        .expect("the restarted agent registers");
    let registered_after = t.elapsed();
    // Checked right at registration: the agent cleans up before Hello.
    lab.assert_clean();
    assert!(fill_files(fill.path()).is_empty(), "fill file removed");
    eprintln!(
        "agent restart: registered {registered_after:?} after start; cleaned at start: {:#?}",
        info.cleaned
    );
    let cleaned = info.cleaned.join("\n");
    assert!(cleaned.contains("restored latency fault"), "{cleaned}");
    assert!(cleaned.contains("restored block fault"), "{cleaned}");
    assert!(cleaned.contains("restored disk_fill fault"), "{cleaned}");

    let result = run.finish();
    for f in &result.report.faults {
        let t = &f.targets[0];
        assert_eq!(t.state, "restored", "{}: {t:?}", f.name);
        assert!(
            t.restored_by.as_deref().unwrap_or("").contains("undo journal"),
            "{}: restored by {:?}",
            f.name,
            t.restored_by
        );
    }
    lab.assert_clean();
}

/// Latency and a block on every host of a three-host lab.
fn faults_everywhere(duration: &str, lease: &str) -> String {
    format!(
        r#"name: faults-everywhere
hypothesis:
  probes:
    - name: a-http
      interval: 200ms
      http: {{ url: "http://10.77.0.11:8080/" }}
baseline: 1s
duration: {duration}
recovery: 2s
lease: {lease}
faults:
  - name: slow-all
    targets: {{ mode: all }}
    latency: {{ delay: 20ms, to: {{ cidrs: [10.77.0.0/24] }}, backend: nfqueue }}
  - name: cut-test-net
    targets: {{ mode: all }}
    block: {{ peers: {{ cidrs: [192.0.2.0/24] }} }}
"#
    )
}

/// Hosts that still hold a faultline object.
fn dirty_hosts(lab: &Lab) -> Vec<String> {
    let mut hosts: Vec<String> = lab
        .leftovers()
        .iter()
        .filter_map(|l| l.split(':').next().map(str::to_string))
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// Waits until every host holds a fault; panics after `limit`.
fn wait_all_dirty(lab: &Lab, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if dirty_hosts(lab).len() == lab.hosts.len() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("faults never reached every host: {:?}", lab.leftovers());
}

/// Polls until no host holds a faultline object; returns when each host
/// became clean, measured from `since`.
fn wait_clean(lab: &Lab, since: Instant, limit: Duration) -> Vec<(String, Duration)> {
    let mut clean_at: Vec<(String, Duration)> = Vec::new();
    while since.elapsed() < limit {
        let dirty = dirty_hosts(lab);
        for h in &lab.hosts {
            if !dirty.contains(&h.name) && !clean_at.iter().any(|(n, _)| *n == h.name) {
                clean_at.push((h.name.clone(), since.elapsed()));
            }
        }
        if dirty.is_empty() {
            return clean_at;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("hosts still dirty after {limit:?}: {:?}", lab.leftovers());
}

#[test]
fn coordinator_killed_mid_run_every_agent_restores_within_its_lease() {
    if !lab_or_skip("coordinator_killed_mid_run_every_agent_restores_within_its_lease") {
        return;
    }
    let mut lab = Lab::build_with(
        vec![
            HostSpec::new("a", "a"),
            HostSpec::new("b", "b"),
            HostSpec::new("c", "c"),
        ],
        CoordinatorMode::Process,
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("everywhere.yaml");
    std::fs::write(&file, faults_everywhere("60s", "3s")).unwrap();
    let _cli = lab.run_cli(&file);
    wait_all_dirty(&lab, Duration::from_secs(20));

    let killed = Instant::now();
    lab.kill_coordinator_process();
    let clean = wait_clean(&lab, killed, Duration::from_secs(15));
    let last = clean.iter().map(|(_, d)| *d).max().unwrap_or_default();
    eprintln!("coordinator kill -9 -> restored by lease expiry (lease 3s): per host {clean:?}; last {last:?}");
    // Restored within the lease (3 s from the last renewal, sent every 1 s)
    // plus the agent's timer and the check's polling.
    assert!(last <= Duration::from_millis(3500), "last host clean after {last:?}");
    lab.assert_clean();

    // Restarted on the same history: the run is marked interrupted, and the
    // lease expiries the agents report on reconnecting are kept with it.
    lab.start_coordinator_process();
    let deadline = Instant::now() + Duration::from_secs(20);
    let store = faultline_coordinator::store::Store::open(&lab.coordinator_db()).unwrap();
    loop {
        let runs = store.list(10, None).unwrap();
        let run = runs.first().expect("the run is in the history");
        if let Some((row, _, events)) = store.get(&run.run_id).unwrap() {
            let expired = events
                .iter()
                .filter(|e| e.kind == "after" && e.text.contains("expired"))
                .count();
            if row.status == "interrupted" && expired == 6 {
                eprintln!(
                    "interrupted run {}: {expired} lease expiries recorded after the restart",
                    row.run_id
                );
                break;
            }
            assert!(Instant::now() < deadline, "run {row:?}, events {events:#?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn cut_control_traffic_makes_the_agent_restore_by_lease_expiry() {
    if !lab_or_skip("cut_control_traffic_makes_the_agent_restore_by_lease_expiry") {
        return;
    }
    let lab = Lab::new(&[("a", "a"), ("b", "b")]);
    let mut run = lab.submit(&three_faults_on_b("/nonexistent-no-fill", "12s", "3s").replace(
        "  - name: fill-b\n    targets: { labels: { host: b } }\n    disk_fill: { path: /nonexistent-no-fill, used: \"50%\" }\n",
        "",
    ));
    assert!(run.wait_phase("observe", PHASE_WAIT));
    assert_eq!(dirty_hosts(&lab), vec!["b"]);
    // The test's own table (not named faultline, so the agent never
    // removes it) drops b's traffic with the coordinator both ways.
    let port = lab.coordinator_url().rsplit(':').next().unwrap().to_string();
    let cut = format!(
        "table inet labcut {{\n chain o {{ type filter hook output priority 0; ip daddr 10.77.0.1 tcp dport {port} drop; }}\n chain i {{ type filter hook input priority 0; ip saddr 10.77.0.1 tcp sport {port} drop; }}\n}}\n"
    );
    let netns = lab.host("b").netns.clone();
    let apply = |script: &str| {
        let mut c = std::process::Command::new("ip")
            .args(["netns", "exec", &netns, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        assert!(c.wait().unwrap().success(), "nft {script}");
    };
    let t = Instant::now();
    apply(&cut);
    let clean = wait_clean(&lab, t, Duration::from_secs(10));
    let b_clean = clean
        .iter()
        .find(|(h, _)| h == "b")
        .map(|(_, d)| *d)
        .unwrap_or_default();
    eprintln!("control traffic cut -> b restored by lease expiry (lease 3s) {b_clean:?} after the cut");
    // The last renewal before the cut was at most one renewal period (1 s)
    // before it, so the lease runs out within 3 s of the cut.
    assert!(b_clean <= Duration::from_millis(3500), "{b_clean:?}");
    apply("delete table inet labcut\n");
    let result = run.finish();
    for f in &result.report.faults {
        assert_eq!(
            f.targets[0].restored_by.as_deref(),
            Some("lease expiry"),
            "{}: {:?}",
            f.name,
            f.targets[0]
        );
    }
    lab.assert_clean();
}

#[test]
fn abort_restores_faults_on_three_hosts() {
    if !lab_or_skip("abort_restores_faults_on_three_hosts") {
        return;
    }
    let lab = Lab::new(&[("a", "a"), ("b", "b"), ("c", "c")]);
    let mut run = lab.submit(&faults_everywhere("60s", "10s"));
    assert!(run.wait_phase("observe", PHASE_WAIT));
    assert_eq!(dirty_hosts(&lab).len(), 3);
    let run_id = run.run_id().expect("run id");
    let h = lab.harness().clone();
    let t = Instant::now();
    let found = lab.block_on(async move {
        let mut c = h.control().await;
        c.abort(faultline_proto::v1::AbortRequest {
            run_id,
            reason: "abort test".into(),
        })
        .await
        .map(|r| r.into_inner().found)
    });
    assert!(matches!(found, Ok(true)), "{found:?}");
    let result = run.finish();
    let wall = t.elapsed();
    let observe_end = result
        .report
        .phases
        .iter()
        .find(|p| p.phase == Phase::Observe)
        .map(|p| p.end_ms)
        .unwrap();
    let last_ack = result
        .report
        .faults
        .iter()
        .flat_map(|f| &f.targets)
        .filter_map(|t| t.restored_at_ms)
        .max()
        .unwrap();
    eprintln!(
        "abort -> 6 restores on 3 hosts acknowledged {} ms after the abort took effect; abort call -> run finished {wall:?}",
        last_ack.saturating_sub(observe_end)
    );
    assert_eq!(result.exit_code, 3);
    assert_eq!(result.report.outcome, Outcome::Aborted);
    assert!(result.report.aborted_by.as_deref().unwrap_or("").contains("abort test"));
    for t in result.report.faults.iter().flat_map(|f| &f.targets) {
        assert_eq!(
            (t.state.as_str(), t.restored_by.as_deref()),
            ("restored", Some("coordinator")),
            "{t:?}"
        );
    }
    lab.assert_clean();
}

/// A short series of random crash points (the `crash-points` bench command
/// runs ≥ 200): the agent of a random host or the coordinator is SIGKILLed
/// at a random moment around inject and restore, restarted, and every host
/// must be clean within the lease, with nothing stale in any journal.
#[test]
fn random_crash_points_leave_every_host_clean() {
    if !lab_or_skip("random_crash_points_leave_every_host_clean")
        || !faultline_tests::docker::docker_or_skip("random_crash_points_leave_every_host_clean")
    {
        return;
    }
    use faultline_tests::crashpoints::{summary, CrashLab, Rng};
    let n: usize = std::env::var("CRASH_POINTS_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    eprintln!("random crash points: {n} iterations, seed {seed}");
    let mut rng = Rng::new(seed);
    let mut lab = CrashLab::build();
    let its: Vec<_> = (0..n).map(|_| lab.iteration(&mut rng)).collect();
    let s = summary(&its);
    eprintln!("{s}");
    assert!(its.iter().all(|i| i.failure.is_none()), "seed {seed}:\n{s}");
    lab.lab.assert_clean();
}

/// A shorter soak (the `soak` bench command runs 1,000): consecutive runs
/// against one coordinator process and three agents; memory, descriptors
/// and the database stay within the bounds of `faultline_tests::soak`.
#[test]
fn consecutive_runs_keep_memory_and_descriptors_flat_and_the_history_prunes() {
    if !lab_or_skip("consecutive_runs_keep_memory_and_descriptors_flat_and_the_history_prunes") {
        return;
    }
    use faultline_tests::soak::{check, soak, table};
    let runs: usize = std::env::var("SOAK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let r = soak(runs, (runs / 4).max(1), |_| {});
    let t = table(&r);
    eprintln!("{t}");
    if let Err(e) = check(&r) {
        panic!("{e}\n{t}");
    }
}
