//! cpu_stress and memory_stress on this node's real cgroups. Need root (to
//! create cgroups): without it each test prints why and returns, except
//! under CI=true, where it fails. Every test removes what it created (a
//! guard sweeps the fault's cgroups) and checks that nothing is left.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use faultline_agent::cgroup::{self, Layout};
use faultline_agent::faults::{self, cpu_stress, memory_stress, Kinds, Setup, Stress, StressPolicy};
use faultline_agent::journal::{Cleaner, Object};
use faultline_proto::v1;

fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: needs root to create cgroups, and CI=true forbids skipping"
    );
    eprintln!("skipping {test}: needs root to create cgroups");
    false
}

fn kinds() -> Kinds {
    let procs = std::sync::Arc::new(faultline_agent::process::SystemProcessTable::new());
    let mut setup = Setup::basic(procs);
    setup.stress = Some(Stress {
        layout: Layout::detect(),
        policy: StressPolicy::default(),
    });
    Kinds::new(&setup)
}

/// Removes a fault's cgroups however the test ends.
struct Guard(Vec<PathBuf>);

impl Drop for Guard {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = cgroup::remove(d);
        }
    }
}

fn cgroup_paths(objects: &[Object]) -> Vec<PathBuf> {
    objects
        .iter()
        .filter_map(|o| match o {
            Object::Cgroup { path } => Some(path.clone()),
            _ => None,
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    // A zombie is dead; the agent reaps its stressors at restore.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

fn applied(kinds: &Kinds, id: &str, spec: v1::fault_spec::Kind) -> (Box<dyn faults::Applied>, Guard) {
    let (_, kind) = kinds.of(&spec).expect("kind");
    let prepared = kind
        .prepare(id, spec, &faultline_agent::faults::Place::Host)
        .expect("prepare");
    let guard = Guard(cgroup_paths(&prepared.undo_objects()));
    assert!(!guard.0.is_empty());
    (prepared.apply().expect("apply"), guard)
}

async fn restore(a: Box<dyn faults::Applied>) -> faults::Report {
    a.restore().await.expect("restore")
}

#[tokio::test]
async fn cpu_stress_reaches_the_requested_load_and_restore_leaves_no_process_or_cgroup() {
    if !root_or_skip("cpu_stress_reaches_the_requested_load") {
        return;
    }
    let kinds = kinds();
    assert!(kinds.capabilities().contains(&"cpu_stress".to_string()));
    let spec = v1::fault_spec::Kind::CpuStress(v1::CpuStressSpec {
        workers: 1,
        load_percent: 50.0,
        ..Default::default()
    });
    let (a, guard) = applied(&kinds, "t-cpu-1", spec);
    let Some(v1::observation::Kind::CpuStress(o)) = a.injected().observation else {
        panic!("no observation")
    };
    assert_eq!(o.pids.len(), 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = restore(a).await;
    let Some(v1::observation::Kind::CpuStress(done)) = report.observation else {
        panic!("no observation")
    };
    eprintln!("{}", report.detail);
    // Within 5 points of what was asked, even on a busy machine: the
    // worker catches up what contention took, the quota caps it.
    assert!(
        (45.0..=55.0).contains(&done.achieved_percent),
        "asked 50% of one core, got {:.1}% (load {})",
        done.achieved_percent,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    assert!(!alive(o.pids[0]), "stressor {} still running", o.pids[0]);
    for d in &guard.0 {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

#[tokio::test]
async fn memory_stress_holds_the_requested_bytes_and_restore_frees_them() {
    if !root_or_skip("memory_stress_holds_the_requested_bytes") {
        return;
    }
    let kinds = kinds();
    let want: u64 = 64 << 20;
    let spec = v1::fault_spec::Kind::MemoryStress(v1::MemoryStressSpec {
        size_bytes: want,
        available_percent: 0.0,
        ramp_ms: 0,
    });
    let (a, guard) = applied(&kinds, "t-mem-1", spec);
    let dir = guard.0[0].clone();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let usage = cgroup::read_u64(&dir, "memory.usage_in_bytes")
            .or_else(|| cgroup::read_u64(&dir, "memory.current"))
            .unwrap_or(0);
        if usage >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let it settle, then read what the fault reports.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = restore(a).await;
    let Some(v1::observation::Kind::MemoryStress(o)) = report.observation else {
        panic!("no observation")
    };
    eprintln!("{}", report.detail);
    let err = (o.resident_bytes as f64 - want as f64) / want as f64 * 100.0;
    assert!(
        err.abs() <= 2.0,
        "asked {want} bytes, {} resident ({err:+.2}%)",
        o.resident_bytes
    );
    assert!(!o.oom_killed);
    assert!(!alive(o.pid));
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[tokio::test]
async fn memory_stress_over_its_cgroup_limit_is_reported_oom_killed_and_the_host_is_fine() {
    if !root_or_skip("memory_stress_over_its_cgroup_limit_is_reported_oom_killed") {
        return;
    }
    let kinds = kinds();
    let spec = v1::fault_spec::Kind::MemoryStress(v1::MemoryStressSpec {
        size_bytes: 256 << 20,
        available_percent: 0.0,
        ramp_ms: 2000,
    });
    let (a, guard) = applied(&kinds, "t-mem-oom", spec);
    let dir = guard.0[0].clone();
    // The test lowers the limit under what the ramp will reach.
    let limit_file = if dir.join("memory.max").exists() {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    cgroup::write(&dir, limit_file, &(32u64 << 20).to_string()).expect("lower the limit");
    let Some(v1::observation::Kind::MemoryStress(o)) = a.injected().observation else {
        panic!("no observation")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(o.pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(o.pid), "the stressor outlived its cgroup limit");
    let report = restore(a).await;
    let Some(v1::observation::Kind::MemoryStress(done)) = report.observation else {
        panic!("no observation")
    };
    eprintln!("{}", report.detail);
    assert!(done.oom_killed, "{}", report.detail);
    assert!(report.detail.contains("OOM-killed"));
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[tokio::test]
async fn stressors_a_dead_agent_left_are_found_and_killed_by_the_sweep() {
    if !root_or_skip("stressors_a_dead_agent_left_are_found_and_killed_by_the_sweep") {
        return;
    }
    let kinds = kinds();
    let spec = v1::fault_spec::Kind::CpuStress(v1::CpuStressSpec {
        workers: 2,
        load_percent: 10.0,
        ..Default::default()
    });
    let (a, guard) = applied(&kinds, "t-cpu-orphan", spec);
    let Some(v1::observation::Kind::CpuStress(o)) = a.injected().observation else {
        panic!("no observation")
    };
    // The agent "dies": it never restores.
    std::mem::forget(a);
    let orphans = Cleaner::default().find_orphans(&[]);
    for d in &guard.0 {
        assert!(orphans.contains(&Object::Cgroup { path: d.clone() }), "{orphans:?}");
    }
    let started = Instant::now();
    for obj in orphans
        .iter()
        .filter(|o| matches!(o, Object::Cgroup { path } if guard.0.contains(path)))
    {
        assert!(Cleaner::default().remove(obj).expect("remove"));
    }
    eprintln!("swept in {:?}", started.elapsed());
    // The test process is their parent here: reap them as init would.
    for pid in &o.pids {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(*pid as i32), None);
        assert!(!alive(*pid), "stressor {pid} survived the sweep");
    }
    for d in &guard.0 {
        assert!(!d.exists());
    }
}

#[test]
fn stress_over_the_agents_caps_is_refused_before_anything_is_made() {
    if !root_or_skip("stress_over_the_agents_caps_is_refused") {
        return;
    }
    let kinds = kinds();
    let too_much_cpu = v1::fault_spec::Kind::CpuStress(v1::CpuStressSpec {
        workers: 1024,
        load_percent: 100.0,
        ..Default::default()
    });
    let too_much_memory = v1::fault_spec::Kind::MemoryStress(v1::MemoryStressSpec {
        available_percent: 95.0,
        ..Default::default()
    });
    for spec in [too_much_cpu, too_much_memory] {
        let (_, kind) = kinds.of(&spec).unwrap();
        let err = kind
            .prepare("t-cap-1", spec, &faultline_agent::faults::Place::Host)
            .err()
            .expect("refused");
        assert!(err.is_refusal() && err.to_string().contains("cap"), "{err}");
    }
    let layout = Layout::detect();
    for prefix in [cpu_stress::CGROUP_PREFIX, memory_stress::CGROUP_PREFIX] {
        assert!(cgroup::find(&layout, prefix)
            .iter()
            .all(|d| !d.ends_with(format!("{prefix}t-cap-1"))));
    }
}
