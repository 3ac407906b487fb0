//! Random crash points: runs with latency, block, disk fill and CPU stress
//! on three lab hosts, and a disk fill inside a Docker container on host
//! `a`, with the agent of a random host or the coordinator killed with
//! SIGKILL at a random moment (before, during and after inject and
//! restore), restarted at once, and every host proven clean — no network
//! object, no fill file (on the host or in the container), no stress cgroup,
//! no undo record — within the lease, after every iteration.
//!
//! The three lab agents share this machine's cgroups and Docker Engine, so
//! they run with `--no-sweep`: a restarted agent's orphan sweep would
//! otherwise take the other hosts' live stress cgroups for orphans. What an
//! agent held is restored from its undo journal (written before each
//! object is made), which is what is under test; the sweep has tests of its
//! own.
//!
//! Used by the `crash-points` bench command (≥ 200 iterations, figures in
//! BENCHMARKS.md) and by a short CI test. Needs root (a namespace lab).
//!
//! What the kill point means: the victim's scope (the killed agent's host,
//! or every host for the coordinator) is looked at right before the kill
//! and classified by what it held then and before: nothing yet (`before
//! inject`), some of its faults (`during inject`), all of them
//! (`injected`), some again after having held all (`during restore`), none
//! after having held some (`after restore`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use faultline_agent::cgroup::{self, Layout};
use faultline_agent::faults::cpu_stress;

use crate::docker::DockerLab;
use crate::lab::{CgroupBind, CoordinatorMode, HostSpec, Lab, Tmpfs};

/// The experiment's lease: the bound on "clean within the lease".
pub const LEASE: Duration = Duration::from_secs(3);
/// How long a victim's scope may take to be clean after the kill: the
/// lease, plus the restarted agent's start (it restores before it
/// registers) and this driver's polling.
pub const CLEAN_LIMIT: Duration = Duration::from_millis(3000 + 2000);
/// Each iteration's kill comes at a uniformly random moment in this window
/// after the CLI started the run (the run itself takes about 4 s).
pub const KILL_WINDOW_MS: u64 = 5000;

const HOSTS: [&str; 3] = ["a", "b", "c"];

/// Where a kill landed, seen in the victim's scope right before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KillPoint {
    BeforeInject,
    DuringInject,
    Injected,
    DuringRestore,
    AfterRestore,
}

impl KillPoint {
    pub fn name(self) -> &'static str {
        match self {
            KillPoint::BeforeInject => "before inject",
            KillPoint::DuringInject => "during inject",
            KillPoint::Injected => "injected",
            KillPoint::DuringRestore => "during restore",
            KillPoint::AfterRestore => "after restore",
        }
    }
}

/// One iteration's result.
#[derive(Debug, Clone)]
pub struct Iteration {
    pub victim: String,
    pub point: KillPoint,
    pub kill_after: Duration,
    /// Kill → the victim's scope held nothing (None: it held nothing at
    /// the kill).
    pub time_to_clean: Option<Duration>,
    /// What was wrong, if anything (a failed iteration).
    pub failure: Option<String>,
}

/// A small deterministic generator (xorshift64*), seeded and printed so a
/// failing sequence can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The container the fill of host `a` goes into.
const CONTAINER: &str = "a";
const LOOP: &[&str] = &["/bin/sh", "-c", "while :; do /bin/sleep 1000; done"];
/// Fault indexes (1-based, in file order): the fault id is `<run>-<n>`.
const FIRST_STRESS: usize = 6;

/// The lab the iterations run in: three hosts, a `faultline serve`
/// process (so it can be killed), a tmpfs per host for its fill, a
/// container on host `a`'s node.
pub struct CrashLab {
    pub lab: Lab,
    fills: Vec<Tmpfs>,
    dir: tempfile::TempDir,
    docker: DockerLab,
    container_root: PathBuf,
    _cgroups: CgroupBind,
}

impl CrashLab {
    pub fn build() -> CrashLab {
        let fills: Vec<Tmpfs> = HOSTS.iter().map(|_| Tmpfs::mount(16)).collect();
        let cgroups = CgroupBind::mount();
        let mut docker = DockerLab::new("crashpts");
        docker.run(CONTAINER, &["--tmpfs", "/fill:size=16m"], LOOP);
        let pid = docker.pid(CONTAINER);
        assert!(pid > 0, "the crash-points container is not running");
        let specs = HOSTS
            .iter()
            .zip(&fills)
            .map(|(h, f)| {
                let mut spec = HostSpec::new(h, h)
                    .agent_arg("--no-sweep")
                    .agent_arg("--cgroup-root")
                    .agent_arg(&cgroups.path().display().to_string())
                    .agent_arg("--allow-fill")
                    .agent_arg(&f.path().display().to_string());
                if *h == "a" {
                    spec = spec.agent_arg("--allow-fill").agent_arg("/fill");
                }
                spec
            })
            .collect();
        let lab = Lab::build_with(specs, CoordinatorMode::Process);
        CrashLab {
            lab,
            fills,
            dir: tempfile::tempdir().expect("experiment dir"),
            container_root: PathBuf::from(format!("/proc/{pid}/root/fill")),
            docker,
            _cgroups: cgroups,
        }
    }

    /// Stress cgroups of the fault with index `n` of any run (every
    /// controller hierarchy that has one).
    fn stress_cgroups(n: usize) -> Vec<PathBuf> {
        cgroup::find(&Layout::detect(), cpu_stress::CGROUP_PREFIX)
            .into_iter()
            .filter(|d| {
                d.file_name()
                    .is_some_and(|f| f.to_string_lossy().ends_with(&format!("-{n}")))
            })
            .collect()
    }

    /// Whether the container holds a fill file.
    fn container_filled(&self) -> bool {
        std::fs::read_dir(&self.container_root)
            .map(|rd| rd.flatten().next().is_some())
            .unwrap_or(false)
    }

    /// Latency (nfqueue) and a block on every host, and a disk fill of
    /// each host's own tmpfs.
    fn experiment(&self) -> PathBuf {
        let mut y = String::from(
            r#"name: crash-points
hypothesis:
  probes:
    - name: a-http
      interval: 200ms
      http: { url: "http://10.77.0.11:8080/" }
baseline: 600ms
duration: 2s
recovery: 600ms
lease: 3s
faults:
  - name: slow
    targets: { mode: all }
    latency: { delay: 20ms, to: { cidrs: [10.77.0.0/24] }, backend: nfqueue }
  - name: cut
    targets: { mode: all }
    block: { peers: { cidrs: [192.0.2.0/24] } }
"#,
        );
        for (h, f) in HOSTS.iter().zip(&self.fills) {
            y.push_str(&format!(
                "  - name: fill-{h}\n    targets: {{ labels: {{ host: {h} }} }}\n    disk_fill: {{ path: {}, used: \"50%\" }}\n",
                f.path().display()
            ));
        }
        for h in HOSTS {
            y.push_str(&format!(
                "  - name: stress-{h}\n    targets: {{ labels: {{ host: {h} }} }}\n    cpu_stress: {{ workers: 1, load: \"5%\" }}\n"
            ));
        }
        y.push_str(&format!(
            "  - name: fill-container\n    targets: {{ labels: {{ host: a }}, containers: {{ name: \"^{}-{CONTAINER}$\" }} }}\n    disk_fill: {{ path: /fill, used: \"50%\" }}\n",
            self.docker.prefix
        ));
        let file = self.dir.path().join("crash-points.yaml");
        std::fs::write(&file, y).expect("write experiment");
        file
    }

    /// How many faults host `i` holds when all are in.
    fn full(i: usize) -> usize {
        if i == 0 {
            5
        } else {
            4
        }
    }

    /// Which of its faults host `i` holds now: latency (an iptables chain
    /// or NFQUEUE queue), block (an nftables table), fill (a file in its
    /// tmpfs), CPU stress (its cgroup), and for host `a` the fill in the
    /// container.
    fn held(&self, leftovers: &[String], i: usize) -> usize {
        let h = HOSTS[i];
        let mine: Vec<&String> = leftovers.iter().filter(|l| l.starts_with(&format!("{h}: "))).collect();
        let latency = mine.iter().any(|l| l.contains("iptables") || l.contains("nfqueue"));
        let block = mine.iter().any(|l| l.contains(": nft: "));
        let fill = std::fs::read_dir(self.fills[i].path())
            .map(|rd| rd.flatten().next().is_some())
            .unwrap_or(false);
        let stress = !Self::stress_cgroups(FIRST_STRESS + i).is_empty();
        let container = i == 0 && self.container_filled();
        latency as usize + block as usize + fill as usize + stress as usize + container as usize
    }

    /// Faults held in the scope of `victim` (a host index, or every host
    /// for the coordinator) and how many it holds when all are in.
    fn scope_held(&self, victim: Option<usize>) -> (usize, usize) {
        let left = self.lab.leftovers();
        match victim {
            Some(i) => (self.held(&left, i), Self::full(i)),
            None => (
                (0..HOSTS.len()).map(|i| self.held(&left, i)).sum(),
                (0..HOSTS.len()).map(Self::full).sum(),
            ),
        }
    }

    /// Undo records in any agent's journal.
    pub fn journal_records(&self) -> Vec<String> {
        let mut out = Vec::new();
        for h in HOSTS {
            if let Ok(rd) = std::fs::read_dir(self.lab.state_dir(h)) {
                for e in rd.flatten() {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if n.starts_with("undo-") {
                        out.push(format!("{h}: {n}"));
                    }
                }
            }
        }
        out
    }

    fn all_clean(&self) -> anyhow::Result<()> {
        let left = self.lab.leftovers();
        let fills: Vec<String> = HOSTS
            .iter()
            .zip(&self.fills)
            .flat_map(|(h, f)| {
                std::fs::read_dir(f.path())
                    .map(|rd| {
                        rd.flatten()
                            .map(|e| format!("{h}: fill file {}", e.file_name().to_string_lossy()))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            })
            .collect();
        let records = self.journal_records();
        let mut other: Vec<String> = (0..HOSTS.len())
            .flat_map(|i| Self::stress_cgroups(FIRST_STRESS + i))
            .map(|d| format!("stress cgroup {}", d.display()))
            .collect();
        if self.container_filled() {
            other.push(format!("a fill file in container {}", CONTAINER));
        }
        if left.is_empty() && fills.is_empty() && records.is_empty() && other.is_empty() {
            Ok(())
        } else {
            Err(anyhow::anyhow!([left, fills, records, other].concat().join("; ")))
        }
    }

    /// One iteration: start the run, kill a random victim at a random
    /// moment, restart it, and prove every host clean.
    pub fn iteration(&mut self, rng: &mut Rng) -> Iteration {
        let file = self.experiment();
        let pick = rng.below(HOSTS.len() as u64 + 1) as usize;
        let victim = (pick < HOSTS.len()).then_some(pick);
        let victim_name = victim
            .map(|i| format!("agent {}", HOSTS[i]))
            .unwrap_or("coordinator".into());
        let kill_at = Duration::from_millis(rng.below(KILL_WINDOW_MS));

        let mut cli = self.lab.run_cli(&file);
        let started = Instant::now();
        let (mut max_seen, mut full_seen) = (0usize, false);
        // Look at the scope until the kill moment; the last look decides
        // the kill point, and the kill follows it at once.
        let (held, full) = loop {
            let (held, full) = self.scope_held(victim);
            max_seen = max_seen.max(held);
            full_seen |= held == full;
            if started.elapsed() >= kill_at {
                break (held, full);
            }
            std::thread::sleep(Duration::from_millis(20).min(kill_at.saturating_sub(started.elapsed())));
        };
        let point = if held == full {
            KillPoint::Injected
        } else if held == 0 && max_seen == 0 {
            KillPoint::BeforeInject
        } else if held == 0 {
            KillPoint::AfterRestore
        } else if full_seen || held < max_seen {
            KillPoint::DuringRestore
        } else {
            KillPoint::DuringInject
        };
        let kill_after = started.elapsed();
        let killed = Instant::now();
        match victim {
            Some(i) => {
                self.lab.kill_agent(HOSTS[i]);
                self.lab.start_agent(HOSTS[i]);
            }
            None => {
                self.lab.kill_coordinator_process();
                self.lab.start_coordinator_process();
            }
        }
        let mut failure = None;
        // The promise: what the victim's scope held is gone within the lease.
        let time_to_clean = if held > 0 {
            loop {
                let (now, _) = self.scope_held(victim);
                if now == 0 {
                    break Some(killed.elapsed());
                }
                if killed.elapsed() > CLEAN_LIMIT {
                    failure = Some(format!(
                        "{victim_name} killed {}: still holding {now} fault(s) {:?} after the kill: {:?}",
                        point.name(),
                        killed.elapsed(),
                        self.lab.leftovers()
                    ));
                    break None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        } else {
            None
        };
        // The run ends (normally, or with an error when the coordinator
        // died under it); then nothing at all may be left anywhere.
        if !cli.wait_exit(Duration::from_secs(30)) {
            failure.get_or_insert(format!(
                "{victim_name} killed {}: the CLI did not finish within 30 s",
                point.name()
            ));
        }
        self.lab.wait_agents(HOSTS.len());
        let deadline = Instant::now() + LEASE + Duration::from_secs(2);
        loop {
            match self.all_clean() {
                Ok(()) => break,
                Err(left) if Instant::now() > deadline => {
                    failure.get_or_insert(format!(
                        "{victim_name} killed {}: after the run ended, left behind: {left}",
                        point.name()
                    ));
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        Iteration {
            victim: victim_name,
            point,
            kill_after,
            time_to_clean,
            failure,
        }
    }
}

/// The figures of a series of iterations.
pub fn summary(its: &[Iteration]) -> String {
    let mut points: BTreeMap<(String, &str), usize> = BTreeMap::new();
    for it in its {
        *points.entry((it.victim.clone(), it.point.name())).or_default() += 1;
    }
    let mut cleans: Vec<Duration> = its.iter().filter_map(|i| i.time_to_clean).collect();
    cleans.sort();
    let worst = cleans.last().copied();
    let median = cleans.get(cleans.len() / 2).copied();
    let failed = its.iter().filter(|i| i.failure.is_some()).count();
    let mut s = format!(
        "{} iterations, {} failed; kills that found faults to clean: {}; time to clean: median {:?}, worst {:?} (lease {:?})\nkill points hit:\n",
        its.len(),
        failed,
        cleans.len(),
        median.unwrap_or_default(),
        worst.unwrap_or_default(),
        LEASE
    );
    for ((victim, point), n) in &points {
        s.push_str(&format!("  {victim:<14} {point:<15} {n}\n"));
    }
    for it in its.iter().filter(|i| i.failure.is_some()) {
        s.push_str(&format!("FAILED: {}\n", it.failure.as_deref().unwrap_or("")));
    }
    s
}
