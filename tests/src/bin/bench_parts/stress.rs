//! `faultline-bench stress`: accuracy of cpu_stress and memory_stress on
//! this machine's cgroups (the real agent library, as root): requested vs
//! achieved CPU, requested vs resident memory, and the time from restore
//! (what abort, lease expiry and shutdown call) to every stressor gone and
//! its cgroups removed.

use std::time::{Duration, Instant};

use faultline_agent::cgroup::{self, Layout};
use faultline_agent::faults::{cpu_stress, memory_stress, Applied, FillPolicy, Kinds, Setup, Stress, StressPolicy};
use faultline_proto::v1;

fn kinds(fill: &std::path::Path) -> Kinds {
    let mut setup = Setup::basic(std::sync::Arc::new(faultline_agent::process::SystemProcessTable::new()));
    setup.stress = Some(Stress {
        layout: Layout::detect(),
        policy: StressPolicy {
            max_cpu_percent: 100.0,
            max_memory_percent: 80.0,
        },
    });
    setup.fill = FillPolicy {
        allowed: vec![fill.to_path_buf()],
        max_used_percent: 95.0,
    };
    Kinds::new(&setup)
}

fn apply(kinds: &Kinds, id: &str, spec: v1::fault_spec::Kind) -> Box<dyn Applied> {
    let (_, kind) = kinds.of(&spec).expect("a stress kind");
    let prepared = kind
        .prepare(id, spec, &faultline_agent::faults::Place::Host)
        .unwrap_or_else(|e| panic!("{id}: {e}"));
    prepared.apply().unwrap_or_else(|e| panic!("{id}: {e}"))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

fn left() -> usize {
    let layout = Layout::detect();
    [cpu_stress::CGROUP_PREFIX, memory_stress::CGROUP_PREFIX]
        .iter()
        .map(|p| cgroup::find(&layout, p).len())
        .sum()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| !r.trim_start().starts_with('Z')))
}

pub async fn run(secs: u64) {
    // A tmpfs for the IO rows: never a real filesystem.
    let mnt = tempfile::tempdir().expect("tempdir");
    nix::mount::mount(
        Some("tmpfs"),
        mnt.path(),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=128m"),
    )
    .expect("mount tmpfs");
    let kinds = kinds(mnt.path());
    let mut n = 0;
    let mut id = || {
        n += 1;
        format!("bench-stress-{n}")
    };
    println!("## CPU: requested vs achieved ({secs}s each; % of one core)");
    println!("Each row twice, back to back: the cgroup's CPU weight as shipped (as many");
    println!("processes as cores asked) and reset to the default (one process's).");
    println!("| workers | load each | requested | achieved (weight as shipped) | error | achieved (default weight) | error | load avg before |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (workers, load) in [(1u32, 25.0), (1, 50.0), (1, 100.0), (2, 50.0), (2, 90.0)] {
        let before = loadavg();
        let asked = workers as f64 * load;
        let mut cells = Vec::new();
        for default_weight in [false, true] {
            let a = apply(
                &kinds,
                &id(),
                v1::fault_spec::Kind::CpuStress(v1::CpuStressSpec {
                    workers,
                    load_percent: load,
                    ..Default::default()
                }),
            );
            if default_weight {
                let Some(v1::observation::Kind::CpuStress(o)) = a.injected().observation else {
                    panic!("no observation")
                };
                for dir in o.cgroup.split(", ") {
                    let dir = std::path::Path::new(dir);
                    for (file, value) in [("cpu.shares", "1024"), ("cpu.weight", "100")] {
                        if dir.join(file).exists() {
                            std::fs::write(dir.join(file), value).expect("reset the weight");
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let r = a.restore().await.expect("restore");
            let Some(v1::observation::Kind::CpuStress(o)) = r.observation else {
                panic!("no observation")
            };
            if o.achieved_percent < 0.0 {
                // Not measured: the cgroup was gone at restore (something
                // else removed it, e.g. another agent's orphan sweep).
                cells.push("unknown (cgroup gone) | –".to_string());
            } else {
                cells.push(format!(
                    "{:.1}% | {:+.1}%",
                    o.achieved_percent,
                    (o.achieved_percent - asked) / asked * 100.0
                ));
            }
        }
        println!("| {workers} | {load}% | {asked:.1}% | {} | {} | {before} |", cells[0], cells[1]);
    }
    println!();
    println!("## Memory: requested vs resident (the cgroup's charge, read at restore)");
    println!("| requested | resident | error | time to resident |");
    println!("|---:|---:|---:|---:|");
    for mib in [64u64, 256, 1024] {
        let want = mib << 20;
        let t = Instant::now();
        let a = apply(
            &kinds,
            &id(),
            v1::fault_spec::Kind::MemoryStress(v1::MemoryStressSpec {
                size_bytes: want,
                available_percent: 0.0,
                ramp_ms: 0,
            }),
        );
        let Some(v1::observation::Kind::MemoryStress(o)) = a.injected().observation else {
            panic!("no observation")
        };
        let dir = o.cgroup.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut reached = None;
        while Instant::now() < deadline {
            let usage = cgroup::read_u64(std::path::Path::new(&dir), "memory.usage_in_bytes")
                .or_else(|| cgroup::read_u64(std::path::Path::new(&dir), "memory.current"))
                .unwrap_or(0);
            if usage >= want {
                reached = Some(t.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = a.restore().await.expect("restore");
        let Some(v1::observation::Kind::MemoryStress(o)) = r.observation else {
            panic!("no observation")
        };
        println!(
            "| {mib} MiB | {} bytes | {:+.2}% | {} |",
            o.resident_bytes,
            (o.resident_bytes as f64 - want as f64) / want as f64 * 100.0,
            reached.map_or("not reached".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1000.0))
        );
    }
    println!();
    println!("## IO: requested vs achieved rate (2 writers, 64 KiB blocks, on a tmpfs; {secs}s each)");
    println!("| requested | achieved | error |");
    println!("|---:|---:|---:|");
    for mib in [10u64, 50, 200] {
        let a = apply(
            &kinds,
            &id(),
            v1::fault_spec::Kind::IoStress(v1::IoStressSpec {
                path: mnt.path().display().to_string(),
                workers: 2,
                mode: "write".into(),
                block_bytes: 64 << 10,
                rate_bytes_per_second: mib << 20,
                file_bytes: 16 << 20,
            }),
        );
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let r = a.restore().await.expect("restore");
        let Some(v1::observation::Kind::IoStress(o)) = r.observation else {
            panic!("no observation")
        };
        let want = (mib << 20) as f64;
        println!(
            "| {mib} MiB/s | {:.2} MiB/s | {:+.2}% |",
            o.achieved_bytes_per_second / (1 << 20) as f64,
            (o.achieved_bytes_per_second - want) / want * 100.0
        );
    }
    println!();
    println!("## Restore (abort / lease expiry / shutdown) → every stressor gone, cgroups removed");
    println!("(2 CPU workers at 50% + 256 MiB held, 1 s in place; 5 runs)");
    let mut times = Vec::new();
    for _ in 0..5 {
        let cpu = apply(
            &kinds,
            &id(),
            v1::fault_spec::Kind::CpuStress(v1::CpuStressSpec {
                workers: 2,
                load_percent: 50.0,
                ..Default::default()
            }),
        );
        let mem = apply(
            &kinds,
            &id(),
            v1::fault_spec::Kind::MemoryStress(v1::MemoryStressSpec {
                size_bytes: 256 << 20,
                ..Default::default()
            }),
        );
        let mut pids = Vec::new();
        for a in [&cpu, &mem] {
            match a.injected().observation {
                Some(v1::observation::Kind::CpuStress(o)) => pids.extend(o.pids),
                Some(v1::observation::Kind::MemoryStress(o)) => pids.push(o.pid),
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t = Instant::now();
        let (a, b) = tokio::join!(cpu.restore(), mem.restore());
        a.expect("restore cpu");
        b.expect("restore memory");
        let took = t.elapsed();
        assert!(
            pids.iter().all(|p| !alive(*p)) && left() == 0,
            "not clean after restore"
        );
        times.push(took.as_secs_f64() * 1000.0);
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "median {:.1} ms (runs: {})",
        sorted[sorted.len() / 2],
        times.iter().map(|t| format!("{t:.1}")).collect::<Vec<_>>().join(", ")
    );
    let _ = nix::mount::umount2(mnt.path(), nix::mount::MntFlags::MNT_DETACH);
}
