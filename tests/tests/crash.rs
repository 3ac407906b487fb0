//! Crash tests: kill our own components mid-fault and prove the node is put
//! back. Lab tests (see `faultline_tests::lab`): they need root, skip with
//! a reason without it, and fail under `CI=true`. Each ends by proving every
//! host is clean.

use std::time::{Duration, Instant};

use faultline_tests::lab::{root_or_skip, HostSpec, Lab, Tmpfs};

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
    if !root_or_skip("agent_killed_mid_fault_restores_everything_before_it_registers_again") {
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
