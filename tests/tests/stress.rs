//! cpu_stress and memory_stress through whole runs: stressors are gone
//! after an abort, after lease expiry (coordinator kill -9) and after an
//! agent kill -9 and restart; io_stress (agent library) on a tmpfs. They need root (cgroups; the lab tests also
//! network namespaces): without it they print why and return, except under
//! CI=true, where they fail. The tests of this file run one at a time: a
//! restarted lab agent sweeps every stress cgroup on the machine.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use faultline_agent::cgroup::{self, Layout};
use faultline_agent::faults::{cpu_stress, io_stress, memory_stress};
use faultline_proto::v1;
use faultline_tests::lab::{lab_or_skip, root_or_skip, CgroupBind, CoordinatorMode, HostSpec, Lab};
use faultline_tests::*;
use tokio_util::sync::CancellationToken;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Every stress cgroup on the machine and the processes in them.
fn stress_cgroups() -> (Vec<PathBuf>, Vec<i32>) {
    let layout = Layout::detect();
    let dirs: Vec<PathBuf> = [
        cpu_stress::CGROUP_PREFIX,
        memory_stress::CGROUP_PREFIX,
        io_stress::CGROUP_PREFIX,
    ]
    .iter()
    .flat_map(|p| cgroup::find(&layout, p))
    .collect();
    let pids = dirs.iter().flat_map(|d| cgroup::pids(d)).collect();
    (dirs, pids)
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| !r.trim_start().starts_with('Z')))
}

/// Waits (bounded) until the stressors of both faults run; returns their pids.
fn wait_stressing(limit: Duration) -> Vec<i32> {
    let deadline = Instant::now() + limit;
    loop {
        let (dirs, mut pids) = stress_cgroups();
        // Both faults' cgroups, each with a stressor in it. Counting
        // directories is not enough: where cpu and cpuacct are separate
        // hierarchies (cgroup v1 here) the cpu fault alone has two, and the
        // memory fault may not have started yet.
        let has = |prefix: &str| {
            dirs.iter().any(|d| {
                d.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)) && !cgroup::pids(d).is_empty()
            })
        };
        if has(cpu_stress::CGROUP_PREFIX) && has(memory_stress::CGROUP_PREFIX) {
            pids.sort_unstable();
            pids.dedup();
            return pids;
        }
        assert!(Instant::now() < deadline, "stressors never started: {dirs:?} {pids:?}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Polls until no stress cgroup is left and every `pid` is dead; returns how
/// long that took from `since`.
fn wait_clean(pids: &[i32], since: Instant, limit: Duration) -> Duration {
    loop {
        let (dirs, _) = stress_cgroups();
        let live: Vec<&i32> = pids.iter().filter(|p| alive(**p)).collect();
        if dirs.is_empty() && live.is_empty() {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < limit,
            "still there after {limit:?}: {dirs:?}, pids {live:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Lab host `a`, whose agent finds the host's cgroups under `bind`.
fn stressed_host(bind: &CgroupBind) -> HostSpec {
    HostSpec::new("a", "a")
        .agent_arg("--cgroup-root")
        .agent_arg(&bind.path().display().to_string())
}

fn stress_experiment(targets: &str, duration: &str, lease: &str, probe_url: &str) -> String {
    format!(
        r#"name: stress
hypothesis:
  probes:
    - name: web
      interval: 200ms
      http: {{ url: "{probe_url}" }}
baseline: 500ms
duration: {duration}
recovery: 1s
lease: {lease}
faults:
  - name: busy
    targets: {targets}
    cpu_stress: {{ workers: 1, load: "30%" }}
  - name: hold
    targets: {targets}
    memory_stress: {{ size: 32MiB }}
"#
    )
}

// The lock only orders this file's tests (each on its own runtime); no
// other task of this runtime takes it.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_of_a_stress_run_kills_every_stressor_and_removes_its_cgroups() {
    if !root_or_skip("abort_of_a_stress_run_kills_every_stressor_and_removes_its_cgroups") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[]).await;
    let yaml = stress_experiment("{}", "30s", "10s", &format!("http://127.0.0.1:{port}/health"));
    let mut c = h.control().await;
    let mut stream = c
        .submit_run(v1::SubmitRunRequest {
            source: Some(source(&yaml, &[])),
        })
        .await
        .unwrap()
        .into_inner();
    let mut clean_after = None;
    let report = loop {
        let ev = tokio::time::timeout(Duration::from_secs(60), stream.message())
            .await
            .expect("an event within 60s")
            .unwrap()
            .expect("events until finished");
        match &ev.event {
            Some(v1::run_event::Event::Phase(p)) if p.phase == "observe" && clean_after.is_none() => {
                let pids = tokio::task::spawn_blocking(|| wait_stressing(Duration::from_secs(10)))
                    .await
                    .unwrap();
                let t = Instant::now();
                let found = c
                    .abort(v1::AbortRequest {
                        run_id: ev.run_id.clone(),
                        reason: "test abort".into(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .found;
                assert!(found);
                let took = tokio::task::spawn_blocking(move || wait_clean(&pids, t, Duration::from_secs(10)))
                    .await
                    .unwrap();
                eprintln!("abort -> every stressor gone and cgroups removed in {took:?}");
                clean_after = Some(took);
            }
            Some(v1::run_event::Event::Finished(f)) => break f.clone(),
            _ => {}
        }
    };
    assert_eq!(report.outcome, "aborted");
    let r: faultline_coordinator::report::Report = serde_json::from_str(&report.report_json).unwrap();
    for f in &r.faults {
        assert_eq!(f.targets[0].state, "restored", "{}: {:?}", f.name, f.targets[0]);
    }
    assert!(clean_after.expect("aborted while observing") < Duration::from_secs(2));
    h.stop().await;
    stop.cancel();
}

#[test]
fn coordinator_killed_mid_stress_the_agent_kills_its_stressors_at_lease_expiry() {
    if !lab_or_skip("coordinator_killed_mid_stress_the_agent_kills_its_stressors_at_lease_expiry") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bind = CgroupBind::mount();
    let mut lab = Lab::build_with(vec![stressed_host(&bind)], CoordinatorMode::Process);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stress.yaml");
    std::fs::write(
        &file,
        stress_experiment("{ mode: all }", "60s", "3s", "http://10.77.0.11:8080/"),
    )
    .unwrap();
    let _cli = lab.run_cli(&file);
    let pids = wait_stressing(Duration::from_secs(30));
    let killed = Instant::now();
    lab.kill_coordinator_process();
    let took = wait_clean(&pids, killed, Duration::from_secs(15));
    eprintln!("coordinator kill -9 -> stressors gone by lease expiry (lease 3s) after {took:?}");
    assert!(took <= Duration::from_millis(4000), "clean after {took:?}");
    lab.assert_clean();
}

#[test]
fn agent_killed_mid_stress_its_stressors_exit_and_the_restart_removes_the_cgroups() {
    if !lab_or_skip("agent_killed_mid_stress_its_stressors_exit_and_the_restart_removes_the_cgroups") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bind = CgroupBind::mount();
    let mut lab = Lab::build(vec![stressed_host(&bind)]);
    let run = lab.submit(&stress_experiment(
        "{ mode: all }",
        "30s",
        "30s",
        "http://10.77.0.11:8080/",
    ));
    let pids = wait_stressing(Duration::from_secs(30));
    let killed = Instant::now();
    lab.kill_agent("a");
    // Orphaned, each stressor sees its parent gone and exits by itself.
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            killed.elapsed() < Duration::from_secs(2),
            "stressors outlived their agent"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("agent kill -9 -> stressors exited after {:?}", killed.elapsed());
    // Their cgroups stay until an agent removes them.
    assert!(!stress_cgroups().0.is_empty());
    lab.start_agent("a");
    let pid = lab.agent_pid("a").expect("restarted");
    let info = lab
        .wait_registered("a", pid, Duration::from_secs(20))
        .expect("the restarted agent registers");
    let (dirs, _) = stress_cgroups();
    assert!(dirs.is_empty(), "cgroups left after the restart: {dirs:?}");
    let cleaned = info.cleaned.join("\n");
    assert!(cleaned.contains("restored cpu_stress fault"), "{cleaned}");
    assert!(cleaned.contains("restored memory_stress fault"), "{cleaned}");
    let result = run.finish();
    for f in &result.report.faults {
        assert_eq!(f.targets[0].state, "restored", "{}: {:?}", f.name, f.targets[0]);
    }
    lab.assert_clean();
}

/// The agent's kinds (library) with stress on and `fill` allowed.
fn kinds_allowing(fill: &std::path::Path) -> faultline_agent::faults::Kinds {
    use faultline_agent::faults::{FillPolicy, Setup, Stress, StressPolicy};
    let mut setup = Setup::basic(std::sync::Arc::new(faultline_agent::process::SystemProcessTable::new()));
    setup.stress = Some(Stress {
        layout: Layout::detect(),
        policy: StressPolicy::default(),
    });
    setup.fill = FillPolicy {
        allowed: vec![fill.to_path_buf()],
        max_used_percent: 95.0,
    };
    faultline_agent::faults::Kinds::new(&setup)
}

fn io_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[allow(clippy::await_holding_lock)] // orders this file's tests only
#[tokio::test]
async fn io_stress_writes_at_the_requested_rate_and_restore_removes_its_files() {
    if !root_or_skip("io_stress_writes_at_the_requested_rate_and_restore_removes_its_files") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let fs = faultline_tests::lab::Tmpfs::mount(64);
    let dir = fs.path().to_path_buf();
    let kinds = kinds_allowing(&dir);
    assert!(kinds.capabilities().contains(&"io_stress".to_string()));
    let spec = v1::fault_spec::Kind::IoStress(v1::IoStressSpec {
        path: dir.display().to_string(),
        workers: 2,
        mode: "write".into(),
        block_bytes: 64 << 10,
        rate_bytes_per_second: 20 << 20,
        file_bytes: 8 << 20,
    });
    let (_, kind) = kinds.of(&spec).unwrap();
    let a = kind
        .prepare("t-io-1", spec, &faultline_agent::faults::Place::Host)
        .expect("prepare")
        .apply()
        .expect("apply");
    let Some(v1::observation::Kind::IoStress(o)) = a.injected().observation else {
        panic!("no observation")
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut during = io_files(&dir);
    during.sort();
    assert_eq!(during, [".faultline-io-t-io-1-0", ".faultline-io-t-io-1-1"]);
    let r = a.restore().await.expect("restore");
    let Some(v1::observation::Kind::IoStress(done)) = r.observation else {
        panic!("no observation")
    };
    eprintln!("{}", r.detail);
    let want = (20 << 20) as f64;
    let err = (done.achieved_bytes_per_second - want) / want * 100.0;
    assert!(
        err.abs() <= 5.0,
        "asked 20 MiB/s, got {:.2} MiB/s ({err:+.1}%)",
        done.achieved_bytes_per_second / (1 << 20) as f64
    );
    assert!(io_files(&dir).is_empty(), "files left: {:?}", io_files(&dir));
    assert!(o.pids.iter().all(|p| !alive(*p as i32)));
    assert!(stress_cgroups().0.is_empty());
}

#[allow(clippy::await_holding_lock)] // orders this file's tests only
#[tokio::test]
async fn io_stress_mixed_reads_back_what_it_writes() {
    if !root_or_skip("io_stress_mixed_reads_back_what_it_writes") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let fs = faultline_tests::lab::Tmpfs::mount(32);
    let dir = fs.path().to_path_buf();
    let kinds = kinds_allowing(&dir);
    let spec = v1::fault_spec::Kind::IoStress(v1::IoStressSpec {
        path: dir.display().to_string(),
        mode: "mixed".into(),
        file_bytes: 4 << 20,
        ..Default::default()
    });
    let (_, kind) = kinds.of(&spec).unwrap();
    let a = kind
        .prepare("t-io-2", spec, &faultline_agent::faults::Place::Host)
        .expect("prepare")
        .apply()
        .expect("apply");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = a.restore().await.expect("restore");
    let Some(v1::observation::Kind::IoStress(done)) = r.observation else {
        panic!("no observation")
    };
    eprintln!("{}", r.detail);
    assert!(done.bytes_written > 0 && done.bytes_read > 0, "{done:?}");
    assert!(done.bytes_read.abs_diff(done.bytes_written) <= 1 << 20, "{done:?}");
    assert!(io_files(&dir).is_empty());
}

#[allow(clippy::await_holding_lock)] // orders this file's tests only
#[tokio::test]
async fn cpu_stress_pins_its_workers_to_the_cpus_asked_and_refuses_cpus_the_target_lacks() {
    if !root_or_skip("cpu_stress_pins_its_workers_to_the_cpus_asked_and_refuses_cpus_the_target_lacks") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let kinds = kinds_allowing(std::path::Path::new("/nonexistent"));
    let last = (faultline_agent::faults::stress::cpus() - 1) as u32;
    let spec = |cpus: Vec<u32>| {
        v1::fault_spec::Kind::CpuStress(v1::CpuStressSpec {
            workers: 2,
            load_percent: 20.0,
            cpus,
            ..Default::default()
        })
    };
    let (_, kind) = kinds.of(&spec(vec![last])).unwrap();
    let a = kind
        .prepare("t-pin-1", spec(vec![last]), &faultline_agent::faults::Place::Host)
        .expect("prepare")
        .apply()
        .expect("apply");
    let Some(v1::observation::Kind::CpuStress(o)) = a.injected().observation else {
        panic!("no observation")
    };
    // Each worker pins itself right after the fork: poll briefly.
    let allowed = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:").map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while o.pids.iter().any(|p| allowed(*p) != last.to_string()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let seen: Vec<String> = o.pids.iter().map(|p| allowed(*p)).collect();
    a.restore().await.expect("restore");
    assert_eq!(o.pids.len(), 2);
    assert!(
        seen.iter().all(|s| *s == last.to_string()),
        "workers on {seen:?}, asked CPU {last}"
    );
    assert!(stress_cgroups().0.is_empty());

    // A CPU the target may not use is refused before anything is made.
    let err = match kind.prepare("t-pin-2", spec(vec![1000]), &faultline_agent::faults::Place::Host) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("CPU 1000 accepted"),
    };
    assert!(err.contains("CPU 1000 is not among the CPUs"), "{err}");
    assert!(stress_cgroups().0.is_empty());
}
