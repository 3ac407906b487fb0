//! Domain types of an experiment, as the planner and the run engine see them.
//! They can only be built by [`super::parse`], so they are always complete
//! and valid.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use regex::Regex;

/// A hypothesis-driven chaos experiment.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// Short identifier, shown in reports and run lists.
    pub name: String,
    pub description: String,
    pub hypothesis: Hypothesis,
    /// How long probes run before anything is injected, to measure normal.
    pub baseline: Duration,
    /// How long faults stay injected (the observe phase).
    pub duration: Duration,
    /// Longest wait after restore for the hypothesis to hold again.
    pub recovery: Duration,
    pub faults: Vec<Fault>,
    pub blast_radius: BlastRadius,
    /// Lease sent with every fault; the agent restores on its own if it is
    /// not renewed in time.
    pub lease: Duration,
}

/// What must stay true while faults are injected.
#[derive(Debug, Clone)]
pub struct Hypothesis {
    pub description: String,
    pub probes: Vec<Probe>,
}

/// One way of measuring the system, sampled at `interval` in every phase.
#[derive(Debug, Clone)]
pub struct Probe {
    pub name: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub kind: ProbeKind,
    pub tolerances: Vec<Tolerance>,
    /// Tolerances that are also guardrails: checked live during observe
    /// over a sliding window; a violation aborts the run at once.
    pub guardrails: Vec<Guardrail>,
}

/// A tolerance evaluated live while faults are injected.
#[derive(Debug, Clone, PartialEq)]
pub struct Guardrail {
    pub tolerance: Tolerance,
    /// How far back the samples it judges reach. By default, 5 s.
    pub window: Duration,
}

#[derive(Debug, Clone)]
pub enum ProbeKind {
    Http(HttpProbe),
    Tcp(TcpProbe),
    Command(CommandProbe),
}

impl ProbeKind {
    pub fn name(&self) -> &'static str {
        match self {
            ProbeKind::Http(_) => "http",
            ProbeKind::Tcp(_) => "tcp",
            ProbeKind::Command(_) => "command",
        }
    }

    /// What the probe measures, for reports.
    pub fn target(&self) -> String {
        match self {
            ProbeKind::Http(h) => format!("{} {}", h.method, h.url),
            ProbeKind::Tcp(t) => t.address.clone(),
            ProbeKind::Command(c) => c.run.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HttpProbe {
    pub method: String,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    /// Statuses that count as success; empty means any 2xx.
    pub expect_status: Vec<u16>,
    pub body_match: Option<Regex>,
}

#[derive(Debug, Clone)]
pub struct TcpProbe {
    /// host:port to connect to.
    pub address: String,
}

#[derive(Debug, Clone)]
pub struct CommandProbe {
    /// Shell command, run with `sh -c` on the coordinator's host.
    pub run: String,
    pub exit_code: i32,
    pub stdout_match: Option<Regex>,
}

/// Which latency statistic a tolerance bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Percentile {
    P50,
    P90,
    P99,
    Max,
}

impl fmt::Display for Percentile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Percentile::P50 => "p50",
            Percentile::P90 => "p90",
            Percentile::P99 => "p99",
            Percentile::Max => "max",
        })
    }
}

/// A bound the probe's samples must respect for the hypothesis to hold.
#[derive(Debug, Clone, PartialEq)]
pub enum Tolerance {
    /// At least this fraction (0..=1) of samples succeed.
    SuccessRate { min: f64 },
    /// The percentile of successful samples' latency stays at or under `max`.
    Latency { percentile: Percentile, max: Duration },
    /// The percentile stays at or under `factor` × baseline + `plus`.
    RelativeLatency {
        percentile: Percentile,
        factor: f64,
        plus: Duration,
    },
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tolerance::SuccessRate { min } => write!(f, "success rate >= {:.1}%", min * 100.0),
            Tolerance::Latency { percentile, max } => {
                write!(f, "{percentile} latency <= {}", fmt_duration(*max))
            }
            Tolerance::RelativeLatency {
                percentile,
                factor,
                plus,
            } => write!(
                f,
                "{percentile} latency <= {factor} x baseline {percentile} + {}",
                fmt_duration(*plus)
            ),
        }
    }
}

/// Formats a duration the way experiment files write them, in human units:
/// `250ms`, `1.5s`, `5m`, `1h 30m`, `2d 3h`. Under a minute, tenths of a
/// second are kept; from a minute on, whole seconds (what anyone planning
/// a run cares about), largest unit first, zero parts left out.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1000.0 {
        return format!("{}ms", (ms * 10.0).round() / 10.0);
    }
    if d < Duration::from_secs(60) {
        return format!("{}s", (ms / 100.0).round() / 10.0);
    }
    let mut secs = d.as_secs() + u64::from(d.subsec_millis() >= 500);
    let mut parts = Vec::new();
    for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= len {
            parts.push(format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    parts.join(" ")
}

/// A fault and where to inject it.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Name of the fault within the experiment (default: its kind and index).
    pub name: String,
    pub targets: Targets,
    pub kind: FaultKind,
}

/// Which agents a fault goes to.
#[derive(Debug, Clone)]
pub struct Targets {
    /// Every label must match; empty selects every connected agent.
    pub labels: BTreeMap<String, String>,
    pub mode: Mode,
}

/// How many of the matching agents are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    All,
    Count(u32),
    Percent(f64),
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::All => f.write_str("all"),
            Mode::Count(n) => write!(f, "count {n}"),
            Mode::Percent(p) => write!(f, "{p}%"),
        }
    }
}

#[derive(Debug, Clone)]
pub enum FaultKind {
    Kill(KillFault),
    Latency(LatencyFault),
    Block(BlockFault),
    DiskFill(DiskFillFault),
}

impl FaultKind {
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Kill(_) => "kill",
            FaultKind::Latency(_) => "latency",
            FaultKind::Block(_) => "block",
            FaultKind::DiskFill(_) => "disk_fill",
        }
    }

    /// Whether an agent advertising `caps` can run this fault: the kind
    /// itself (`kill`), or the kind with the requested backend
    /// (`latency:nfqueue`), or with any backend when none is requested.
    pub fn runs_on(&self, caps: &[String]) -> bool {
        let kind = self.name();
        match self {
            FaultKind::Latency(LatencyFault { backend: Some(b), .. }) => {
                caps.iter().any(|c| *c == format!("{kind}:{b}"))
            }
            _ => caps.iter().any(|c| c == kind || c.starts_with(&format!("{kind}:"))),
        }
    }

    /// Peers the coordinator resolves to addresses for each target.
    pub fn peers(&self) -> Option<&Peers> {
        match self {
            FaultKind::Latency(l) => Some(&l.to),
            FaultKind::Block(b) => Some(&b.peers),
            FaultKind::Kill(_) | FaultKind::DiskFill(_) => None,
        }
    }

    /// The parameters in words, for plans and reports.
    pub fn summary(&self) -> String {
        match self {
            FaultKind::DiskFill(d) => match d.amount {
                FillAmount::Bytes(b) => format!("fill {} with {}", d.path, fmt_bytes(b)),
                FillAmount::UsedPercent(p) => format!("fill {} until its filesystem is {p}% used", d.path),
                FillAmount::LeaveFree(b) => format!("fill {} until {} are left free", d.path, fmt_bytes(b)),
            },
            FaultKind::Latency(l) => {
                let mut parts = vec![format!("delay {}", fmt_duration(l.delay))];
                if !l.jitter.is_zero() {
                    parts.push(format!("jitter {}", fmt_duration(l.jitter)));
                }
                if l.loss_percent > 0.0 {
                    parts.push(format!("loss {}%", l.loss_percent));
                }
                parts.push(format!("to {}", l.to));
                if let Some(i) = &l.interface {
                    parts.push(format!("via {i}"));
                }
                if let Some(p) = &l.protocol {
                    parts.push(p.clone());
                }
                if !l.dst_ports.is_empty() {
                    parts.push(format!("ports {}", join(&l.dst_ports)));
                }
                if !l.src_ports.is_empty() {
                    parts.push(format!("source ports {}", join(&l.src_ports)));
                }
                if let Some(b) = &l.backend {
                    parts.push(format!("backend {b}"));
                }
                parts.join(" ")
            }
            FaultKind::Block(b) => {
                let mut s = format!("drop {} traffic with {}", b.direction, b.peers);
                if !b.ports.is_empty() {
                    s += &format!(" on ports {}", join(&b.ports));
                }
                s
            }
            FaultKind::Kill(k) => {
                let mut parts = vec![format!("signal {}", k.signal_name)];
                if let Some(n) = &k.name {
                    parts.push(format!("name={n}"));
                }
                if let Some(c) = &k.cmdline {
                    parts.push(format!("cmdline=~/{c}/"));
                }
                if let Some(p) = k.pid {
                    parts.push(format!("pid={p}"));
                }
                if let Some(u) = &k.user {
                    parts.push(format!("user={u}"));
                }
                parts.push(match k.count {
                    Some(n) => format!("count={n}"),
                    None => "count=all".into(),
                });
                if k.allow_mass_kill {
                    parts.push("allow_mass_kill".into());
                }
                parts.join(" ")
            }
        }
    }
}

fn join(ports: &[u16]) -> String {
    ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",")
}

/// Remote ends of a network fault: zones (agents whose `zone` label is one
/// of them, resolved to the addresses those agents reported) and networks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Peers {
    pub zones: Vec<String>,
    /// Networks as written (already checked to parse), e.g. `10.0.0.0/8`.
    pub cidrs: Vec<String>,
}

impl Peers {
    pub fn is_empty(&self) -> bool {
        self.zones.is_empty() && self.cidrs.is_empty()
    }
}

impl fmt::Display for Peers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.zones.is_empty() {
            parts.push(format!("zones {}", self.zones.join(",")));
        }
        if !self.cidrs.is_empty() {
            parts.push(self.cidrs.join(","));
        }
        if parts.is_empty() {
            f.write_str("any destination")
        } else {
            f.write_str(&parts.join(" + "))
        }
    }
}

/// Label whose value names an agent's zone.
pub const ZONE_LABEL: &str = "zone";

/// Parameters of a `latency` fault (egress of the target).
#[derive(Debug, Clone)]
pub struct LatencyFault {
    pub delay: Duration,
    pub jitter: Duration,
    /// Percent of matching packets dropped, 0..=100.
    pub loss_percent: f64,
    pub interface: Option<String>,
    /// Destinations; empty means any.
    pub to: Peers,
    pub dst_ports: Vec<u16>,
    pub src_ports: Vec<u16>,
    /// tcp, udp or icmp; `None` means any.
    pub protocol: Option<String>,
    /// netem or nfqueue; `None` lets the agent choose.
    pub backend: Option<String>,
}

/// Parameters of a `block` fault.
#[derive(Debug, Clone)]
pub struct BlockFault {
    /// Never empty.
    pub peers: Peers,
    pub ports: Vec<u16>,
    /// in, out or both.
    pub direction: String,
}

/// How much a disk fill allocates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FillAmount {
    Bytes(u64),
    /// Until the filesystem is this full (0 < p <= 100).
    UsedPercent(f64),
    /// Until only this many bytes are available.
    LeaveFree(u64),
}

/// Parameters of a `disk_fill` fault.
#[derive(Debug, Clone)]
pub struct DiskFillFault {
    /// Directory on the filesystem to fill (absolute).
    pub path: String,
    pub amount: FillAmount,
}

/// `1.5 GiB`-style sizes for reports.
pub fn fmt_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{:.1} {}", v, UNITS[i])
    }
}

/// Parameters of a `kill` fault.
#[derive(Debug, Clone)]
pub struct KillFault {
    pub name: Option<String>,
    /// Regular expression on the command line (already checked to compile).
    pub cmdline: Option<String>,
    pub pid: Option<u32>,
    pub user: Option<String>,
    pub signal: i32,
    pub signal_name: String,
    /// How many matching processes per agent; `None` means all.
    pub count: Option<u32>,
    /// Opt-in for a selector that matches a large part of a node (the agent
    /// refuses such a kill otherwise: see the README's kill section). By
    /// default, false.
    pub allow_mass_kill: bool,
}

/// Limits the experiment puts on itself, checked at plan time.
#[derive(Debug, Clone, Default)]
pub struct BlastRadius {
    /// Most agents any one fault may target.
    pub max_targets: Option<u32>,
    /// Most agents as a percentage of the agents matching the selector.
    pub max_percent: Option<f64>,
    /// Most agents of any one zone (label `zone`), as a percentage of the
    /// connected agents of that zone.
    pub max_percent_per_zone: Option<f64>,
    /// Longest `duration` this experiment accepts for itself.
    pub max_duration: Option<Duration>,
}
