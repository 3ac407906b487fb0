//! cpu_stress and memory_stress inside a container on the machine's real
//! Docker Engine: the stressors' cgroup is a child of the container's, so
//! the container's CPU and memory limits bound them and their use counts
//! against the container; a restart of the container mid-fault leaves no
//! stressor and no cgroup behind. The agent runs in-process on the host (as
//! the DaemonSet runs it: host PID namespace, host cgroup namespace). With
//! `CI=true` a missing engine fails. One test at a time: each checks every
//! stress cgroup on the machine.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use faultline_agent::cgroup::{self, Layout, Membership};
use faultline_agent::faults::{cpu_stress, io_stress, memory_stress};
use faultline_tests::docker::{docker, docker_or_skip, DockerLab};
use faultline_tests::*;
use tokio_util::sync::CancellationToken;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A container whose PID 1 (`sh`) restarts `sleep` whenever it dies.
const LOOP: &[&str] = &["/bin/sh", "-c", "while :; do /bin/sleep 1000; done"];

fn experiment(port: u16, duration: &str, fault: &str) -> String {
    format!(
        r#"name: containers-stress
hypothesis:
  probes:
    - name: web
      interval: 200ms
      http: {{ url: "http://127.0.0.1:{port}/health" }}
baseline: 400ms
duration: {duration}
recovery: 400ms
faults:
  - name: f
{fault}"#
    )
}

/// Every stress cgroup on the machine, at any depth.
fn stress_cgroups() -> Vec<PathBuf> {
    let layout = Layout::detect();
    [
        cpu_stress::CGROUP_PREFIX,
        memory_stress::CGROUP_PREFIX,
        io_stress::CGROUP_PREFIX,
    ]
    .iter()
    .flat_map(|p| cgroup::find(&layout, p))
    .collect()
}

/// The container's cgroup directory of `controller`, as the host sees it.
fn container_cgroup(pid: u32, controller: &'static str) -> PathBuf {
    Membership::of(pid).unwrap().dir(&Layout::detect(), controller).unwrap()
}

fn figure(t: &faultline_coordinator::report::TargetReport, name: &str) -> f64 {
    t.figures
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no figure {name} in {t:?}"))
        .value
}

/// The process exists and is not a zombie.
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| !r.trim_start().starts_with('Z')))
}

/// Polls `f` every 20 ms for at most `limit`.
fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_stress_in_a_container_is_bounded_by_its_cpu_limit_and_counted_against_it() {
    let name = "cpu_stress_in_a_container_is_bounded_by_its_cpu_limit_and_counted_against_it";
    if !docker_or_skip(name) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = DockerLab::new("cpu");
    lab.run("a", &["--cpus", "0.3"], LOOP);
    let pid = lab.pid("a");
    let acct = container_cgroup(pid, "cpuacct");
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[]).await;
    // One worker asking a whole core, in a container limited to 0.3 CPUs.
    let fault = format!(
        "    targets: {{ containers: {{ name: \"^{}-a$\" }} }}\n    cpu_stress: {{ workers: 1, load: \"100%\" }}\n",
        lab.prefix
    );
    let before = cgroup::read_u64(&acct, "cpuacct.usage").unwrap();
    let t0 = Instant::now();
    let r = h.run(&experiment(port, "4s", &fault), &[]).await.unwrap();
    let container_used = cgroup::read_u64(&acct, "cpuacct.usage").unwrap() - before;
    let t = &r.report.faults[0].targets[0];
    println!(
        "cpu_stress in a 0.3-CPU container: {t:?}; container used {container_used} ns over {:?}",
        t0.elapsed()
    );
    assert_eq!(r.exit_code, 0, "{}", r.report.reason);
    assert_eq!(t.state, "restored", "{t:?}");
    assert!(
        r.events
            .iter()
            .any(|e| format!("{e:?}").contains("bounded by its CPU limit of 0.3 cores")),
        "the injected detail says the container's limit bounds the stressor"
    );
    // The stressor's cgroup was inside the container's.
    assert!(
        t.objects.iter().any(|o| o.contains(&acct.display().to_string())),
        "{:?} not under {}",
        t.objects,
        acct.display()
    );
    let achieved = figure(t, "achieved");
    assert!(
        (20.0..=33.0).contains(&achieved),
        "achieved {achieved}% of a core: the container's 30% limit must bound a 100% stressor"
    );
    // Counted against the container: its own accounting grew by at least the
    // stressor's use over the fault (about 4 s at ~30 %).
    assert!(
        container_used as f64 >= 0.8 * achieved / 100.0 * 4e9,
        "the container's cpuacct grew by {container_used} ns only"
    );
    assert!(stress_cgroups().is_empty(), "{:?}", stress_cgroups());
    h.stop().await;
    stop.cancel();
}

#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stress_over_a_containers_limit_is_oom_killed_inside_it_and_the_container_lives_on() {
    let name = "memory_stress_over_a_containers_limit_is_oom_killed_inside_it_and_the_container_lives_on";
    if !docker_or_skip(name) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = DockerLab::new("mem");
    lab.run("a", &["--memory", "64m", "--memory-swap", "64m"], LOOP);
    lab.run("b", &["--memory", "256m", "--memory-swap", "256m"], LOOP);
    let pid_a = lab.pid("a");
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[]).await;

    // 128 MiB in a container limited to 64 MiB: the container's limit is
    // hierarchical, so the OOM killer acts inside it and takes the stressor
    // (oom_score_adj 1000), not the container's own process.
    let fault = format!(
        "    targets: {{ containers: {{ name: \"^{}-a$\" }} }}\n    memory_stress: {{ size: 128MiB }}\n",
        lab.prefix
    );
    let r = h.run(&experiment(port, "2s", &fault), &[]).await.unwrap();
    let t = &r.report.faults[0].targets[0];
    println!("memory_stress over a 64 MiB container: {t:?}");
    assert_eq!(
        t.state, "restored",
        "an OOM kill is an outcome, not an agent failure: {t:?}"
    );
    assert!(
        t.notes.iter().any(|n| n.contains("OOM-killed")),
        "the OOM kill is reported: {t:?}"
    );
    assert_eq!(lab.pid("a"), pid_a, "the container's own init was not the victim");
    assert!(figure(t, "peak") <= 64.0 * 1048576.0 + 1.0, "{t:?}");

    // `available_percent` in a container is a share of its limit: 25 % of 256 MiB.
    let fault = format!(
        "    targets: {{ containers: {{ name: \"^{}-b$\" }} }}\n    memory_stress: {{ available: \"25%\" }}\n",
        lab.prefix
    );
    let r = h.run(&experiment(port, "2s", &fault), &[]).await.unwrap();
    let t = &r.report.faults[0].targets[0];
    println!("memory_stress 25% of a 256 MiB container: {t:?}");
    assert_eq!(r.exit_code, 0, "{}", r.report.reason);
    assert_eq!(figure(t, "requested"), 64.0 * 1048576.0, "{t:?}");
    let resident = figure(t, "resident");
    assert!(
        (resident - 64.0 * 1048576.0).abs() <= 0.02 * 64.0 * 1048576.0,
        "resident {resident} for 64 MiB asked"
    );
    assert!(stress_cgroups().is_empty(), "{:?}", stress_cgroups());
    h.stop().await;
    stop.cancel();
}

#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_restarted_mid_stress_leaves_no_stressor_and_no_cgroup() {
    let name = "a_container_restarted_mid_stress_leaves_no_stressor_and_no_cgroup";
    if !docker_or_skip(name) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = DockerLab::new("srestart");
    lab.run("a", &[], LOOP);
    let old_pid = lab.pid("a");
    let old_cpu = container_cgroup(old_pid, "cpu");
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[]).await;
    let fault = format!(
        "    targets: {{ containers: {{ name: \"^{}-a$\" }} }}\n    cpu_stress: {{ workers: 1, load: \"20%\" }}\n",
        lab.prefix
    );
    let h = std::sync::Arc::new(h);
    let yaml = experiment(port, "4s", &fault);
    let run = {
        let h = h.clone();
        tokio::spawn(async move { h.run(&yaml, &[]).await })
    };
    let stressors = || {
        stress_cgroups()
            .iter()
            .flat_map(|d| cgroup::pids(d))
            .collect::<Vec<_>>()
    };
    assert!(tokio::task::block_in_place(|| wait_for(
        Duration::from_secs(10),
        || !stressors().is_empty()
    )));
    let pids = stressors();
    let restarted = Instant::now();
    tokio::task::block_in_place(|| docker(&["restart", "-t", "0", &format!("{}-a", lab.prefix)]));
    // The stressors watch the container's init and leave with it.
    // Exited (a zombie until the agent reaps it at restore) or gone.
    let gone = tokio::task::block_in_place(|| wait_for(Duration::from_secs(5), || pids.iter().all(|p| !running(*p))));
    let stressors_gone = restarted.elapsed();
    assert!(gone, "stressors {pids:?} outlived the container's restart");
    let r = run.await.unwrap().unwrap();
    let clean = restarted.elapsed();
    let t = &r.report.faults[0].targets[0];
    println!(
        "restart mid-stress: stressors gone {stressors_gone:?} after `docker restart` returned; run clean {clean:?} after; {t:?}"
    );
    assert_eq!(t.state, "restored", "{t:?}");
    assert!(stress_cgroups().is_empty(), "{:?}", stress_cgroups());
    // The engine could remove the old container's cgroup: nothing of ours held it.
    let new_cpu = container_cgroup(lab.pid("a"), "cpu");
    assert!(
        old_cpu == new_cpu || !old_cpu.exists(),
        "the old container cgroup {} is left behind",
        old_cpu.display()
    );
    stop.cancel();
}
