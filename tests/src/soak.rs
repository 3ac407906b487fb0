//! Soak: many consecutive runs against one `faultline serve` process and
//! three real agents in a namespace lab, sampling the coordinator's and the
//! agents' resident memory and open file descriptors and the history
//! database's size every N runs; then the database is pruned with
//! `faultline runs prune` while the coordinator serves.
//!
//! Used by the `soak` bench command (1,000 runs, figures in BENCHMARKS.md)
//! and by a shorter CI test. Needs root (a namespace lab).
//!
//! The bounds asserted ([`check`]): from the first sample (taken after the
//! first N runs, so start-up allocations are behind) to the last, the
//! coordinator's RSS grows by at most [`COORDINATOR_RSS_SLACK_KIB`] and each
//! agent's by at most [`AGENT_RSS_SLACK_KIB`]; open descriptors of every
//! process by at most [`FD_SLACK`]. The database grows with the history it
//! keeps (reported per run) and a prune brings it below its first sample.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::lab::{CoordinatorMode, HostSpec, Lab};

pub const COORDINATOR_RSS_SLACK_KIB: u64 = 16 * 1024;
pub const AGENT_RSS_SLACK_KIB: u64 = 8 * 1024;
pub const FD_SLACK: i64 = 8;

const HOSTS: [&str; 3] = ["a", "b", "c"];

/// Figures of one process at one sample.
#[derive(Debug, Clone, Copy, Default)]
pub struct Proc {
    pub rss_kib: u64,
    pub fds: i64,
}

impl Proc {
    pub fn of(pid: u32) -> Proc {
        let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            })
            .unwrap_or(0);
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|rd| rd.count() as i64)
            .unwrap_or(-1);
        Proc { rss_kib, fds }
    }
}

/// One sample, after `runs` runs.
#[derive(Debug, Clone)]
pub struct SoakSample {
    pub runs: usize,
    pub elapsed: Duration,
    pub coordinator: Proc,
    pub agents: Vec<Proc>,
    /// The database file and its write-ahead log, on disk.
    pub db_bytes: u64,
    pub wal_bytes: u64,
}

/// The whole soak.
#[derive(Debug, Clone)]
pub struct SoakResult {
    pub samples: Vec<SoakSample>,
    /// Exit codes of the runs: (code, how many).
    pub exits: Vec<(i32, usize)>,
    pub db_after_prune: u64,
    pub prune_output: String,
    /// The last lines the CLI printed for the first runs that did not pass.
    pub failures: Vec<String>,
}

fn file_bytes(db: &Path, suffix: &str) -> u64 {
    std::fs::metadata(format!("{}{suffix}", db.display()))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// The database and its log together: what the history takes on disk.
fn db_bytes(db: &Path) -> u64 {
    file_bytes(db, "") + file_bytes(db, "-wal")
}

const EXPERIMENT: &str = r#"name: soak
hypothesis:
  probes:
    - name: a-http
      interval: 50ms
      http: { url: "http://10.77.0.11:8080/" }
baseline: 150ms
duration: 300ms
recovery: 150ms
lease: 5s
faults:
  - name: slow-b
    targets: { labels: { host: b } }
    latency: { delay: 5ms, to: { cidrs: [10.77.0.11/32] }, backend: nfqueue }
  - name: cut-all
    targets: { mode: all }
    block: { peers: { cidrs: [192.0.2.0/24] } }
"#;

/// Runs `runs` consecutive runs, sampling every `every`, then prunes.
/// `progress` is called after each sample.
pub fn soak(runs: usize, every: usize, mut progress: impl FnMut(&SoakSample)) -> SoakResult {
    let lab = Lab::build_with(
        HOSTS.iter().map(|h| HostSpec::new(h, h)).collect(),
        CoordinatorMode::Process,
    );
    let dir = tempfile::tempdir().expect("experiment dir");
    let file = dir.path().join("soak.yaml");
    std::fs::write(&file, EXPERIMENT).expect("write experiment");
    let coordinator_pid = lab.coordinator_process.as_ref().expect("coordinator").pid();
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut exits: Vec<(i32, usize)> = Vec::new();
    let mut failures = Vec::new();
    for i in 1..=runs {
        let mut cli = lab.run_cli(&file);
        let code = if cli.wait_exit(Duration::from_secs(30)) {
            cli.child.wait().ok().and_then(|s| s.code()).unwrap_or(-1)
        } else {
            -2
        };
        if code != 0 && failures.len() < 5 {
            let mut err = String::new();
            if let Some(mut e) = cli.child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            let tail: Vec<&str> = err.lines().rev().take(3).collect();
            failures.push(format!(
                "run {i}: exit {code}: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
        match exits.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => exits.push((code, 1)),
        }
        if i % every == 0 {
            let s = SoakSample {
                runs: i,
                elapsed: started.elapsed(),
                coordinator: Proc::of(coordinator_pid),
                agents: HOSTS
                    .iter()
                    .map(|h| lab.agent_pid(h).map(Proc::of).unwrap_or_default())
                    .collect(),
                db_bytes: file_bytes(&lab.coordinator_db(), ""),
                wal_bytes: file_bytes(&lab.coordinator_db(), "-wal"),
            };
            progress(&s);
            samples.push(s);
        }
    }
    lab.assert_clean();
    // Prune every finished run while the coordinator serves.
    let out = Command::new(crate::lab::faultline_bin())
        .args(["runs", "prune", "--older-than", "0s", "--db"])
        .arg(lab.coordinator_db())
        .output();
    let prune_output = match out {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("could not run faultline runs prune: {e}"),
    };
    // The WAL is folded back on the next checkpoint; count what is on disk.
    let db_after_prune = db_bytes(&lab.coordinator_db());
    exits.sort();
    SoakResult {
        samples,
        exits,
        db_after_prune,
        prune_output,
        failures,
    }
}

/// The bounds of the module docs; Err names every one broken.
pub fn check(r: &SoakResult) -> anyhow::Result<()> {
    let (Some(first), Some(last)) = (r.samples.first(), r.samples.last()) else {
        anyhow::bail!("no samples");
    };
    let mut broken = Vec::new();
    let grew = |a: u64, b: u64| b.saturating_sub(a);
    if grew(first.coordinator.rss_kib, last.coordinator.rss_kib) > COORDINATOR_RSS_SLACK_KIB {
        broken.push(format!(
            "coordinator RSS {} -> {} KiB (bound +{COORDINATOR_RSS_SLACK_KIB})",
            first.coordinator.rss_kib, last.coordinator.rss_kib
        ));
    }
    if last.coordinator.fds - first.coordinator.fds > FD_SLACK {
        broken.push(format!(
            "coordinator fds {} -> {} (bound +{FD_SLACK})",
            first.coordinator.fds, last.coordinator.fds
        ));
    }
    for (i, h) in HOSTS.iter().enumerate() {
        let (a, b) = (first.agents[i], last.agents[i]);
        if grew(a.rss_kib, b.rss_kib) > AGENT_RSS_SLACK_KIB {
            broken.push(format!(
                "agent {h} RSS {} -> {} KiB (bound +{AGENT_RSS_SLACK_KIB})",
                a.rss_kib, b.rss_kib
            ));
        }
        if b.fds - a.fds > FD_SLACK {
            broken.push(format!("agent {h} fds {} -> {} (bound +{FD_SLACK})", a.fds, b.fds));
        }
    }
    if r.db_after_prune >= first.db_bytes + first.wal_bytes {
        broken.push(format!(
            "database after prune {} B, not below its first sample {} B: {}",
            r.db_after_prune,
            first.db_bytes + first.wal_bytes,
            r.prune_output
        ));
    }
    if r.exits.iter().any(|(c, _)| *c != 0) {
        broken.push(format!("runs that did not pass (exit code, count): {:?}", r.exits));
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(broken.join("\n")))
    }
}

/// One line per sample, then the database per run and after the prune.
pub fn table(r: &SoakResult) -> String {
    let mut s = String::from(
        "  runs  elapsed  coord RSS KiB  coord fds  agents RSS KiB (a b c)  agents fds  db bytes  wal bytes\n",
    );
    for x in &r.samples {
        s.push_str(&format!(
            "{:>6} {:>7.0}s {:>14} {:>10}  {:>22}  {:>10}  {:>8}  {:>9}\n",
            x.runs,
            x.elapsed.as_secs_f64(),
            x.coordinator.rss_kib,
            x.coordinator.fds,
            x.agents
                .iter()
                .map(|p| p.rss_kib.to_string())
                .collect::<Vec<_>>()
                .join(" "),
            x.agents.iter().map(|p| p.fds.to_string()).collect::<Vec<_>>().join(" "),
            x.db_bytes,
            x.wal_bytes
        ));
    }
    if let (Some(a), Some(b)) = (r.samples.first(), r.samples.last()) {
        if b.runs > a.runs {
            s.push_str(&format!(
                "database file: {:.0} bytes per run kept (the log holds up to ~4 MB of recent pages until a checkpoint); database and log after `faultline runs prune --older-than 0s`: {} bytes\n",
                (b.db_bytes as f64 - a.db_bytes as f64) / (b.runs - a.runs) as f64,
                r.db_after_prune
            ));
        }
    }
    s.push_str(&format!("exit codes (code, runs): {:?}\n", r.exits));
    for f in &r.failures {
        s.push_str(&format!("  {f}\n"));
    }
    s
}
