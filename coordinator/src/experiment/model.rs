//! Domain types of an experiment that no fault or probe kind owns, as the
//! planner and the run engine see them. They can only be built by
//! [`super::parse`], so they are always complete and valid. Each kind's own
//! type lives in its module ([`super::faults`], [`crate::probes`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::durations::fmt_duration;
use super::faults::FaultKind;
use crate::probes::ProbeKind;

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
    /// PromQL conditions evaluated while faults are injected; see
    /// [`super::stop_conditions`]. By default, none.
    pub stop_conditions: Vec<super::stop_conditions::StopCondition>,
    /// The SLO whose remaining budget gates the run; see
    /// [`super::error_budget`]. By default, none.
    pub error_budget: Option<super::error_budget::ErrorBudget>,
    /// Named groups of probe targets (release gates); see
    /// [`super::groups`]. By default, none.
    pub groups: Vec<super::groups::Group>,
    /// The canary judge: compares two groups metric by metric; see
    /// [`super::judge`]. By default, none.
    pub judge: Option<super::judge::JudgeSpec>,
    /// The text to read again once the agents of the groups that select
    /// agents are known ([`crate::group_agents::resolve`]); None when no
    /// group selects agents, and once resolved. Until then each per-group
    /// probe of such a group has one stand-in instance.
    pub unresolved: Option<std::sync::Arc<super::selectors::Source>>,
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
    /// Written `per_group: true`: the probe runs once per group of
    /// [`Experiment::groups`]. By default, false.
    pub per_group: bool,
    /// For a per-group probe's instance: the probe as written and the group
    /// it measures (its `name` is then `NAME [GROUP]`).
    pub group: Option<super::groups::ProbeGroup>,
}

/// A tolerance evaluated live while faults are injected.
#[derive(Debug, Clone, PartialEq)]
pub struct Guardrail {
    pub tolerance: Tolerance,
    /// How far back the samples it judges reach. By default, 5 s.
    pub window: Duration,
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
    /// The mean of a measuring probe's values (prometheus) over the phase
    /// stays within `min`..=`max` (either may be open).
    Value { min: Option<f64>, max: Option<f64> },
    /// The mean value stays at or under `factor` × the baseline's mean +
    /// `plus`: "the error ratio may at most double".
    RelativeValue { factor: f64, plus: f64 },
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
            Tolerance::Value { min, max } => match (min, max) {
                (Some(lo), Some(hi)) => write!(f, "mean value within {lo}..={hi}"),
                (Some(lo), None) => write!(f, "mean value >= {lo}"),
                (None, Some(hi)) => write!(f, "mean value <= {hi}"),
                (None, None) => write!(f, "mean value (unbounded)"),
            },
            Tolerance::RelativeValue { factor, plus } => {
                write!(f, "mean value <= {factor} x baseline mean + {plus}")
            }
        }
    }
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
    /// `targets.groups`: only the agents of these groups (each selects
    /// agents by label), all of them together. Empty: no group narrows.
    pub groups: Vec<String>,
    pub mode: Mode,
    /// Narrows the fault to containers on each selected node; `None`: the
    /// nodes themselves.
    pub containers: Option<Containers>,
    /// The one agent the fault goes to: set when a fault on groups of pods
    /// becomes one fault per pod ([`crate::group_agents::expand_pod_faults`]),
    /// to the agent of the pod's node; never written in a file. None: any.
    pub node: Option<String>,
}

/// Containers on a node a fault goes to (resolved by the agent through its
/// container runtime). Every set field must match.
#[derive(Debug, Clone, PartialEq)]
pub struct Containers {
    /// Regular expression on the container name (checked at parse time).
    pub name: Option<String>,
    pub image: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Containers (pods, with `pod`) per node; 0: all that match.
    pub count: u32,
    /// Percent of the matching containers (pods, with `pod`) per node,
    /// rounded down by the agent, which refuses a result of zero.
    pub percent: Option<f64>,
    /// A kill may signal the container's PID 1 (e.g. to test a restart
    /// policy). By default, false.
    pub allow_pid1: bool,
    /// Kubernetes pods the containers belong to.
    pub pod: Option<Pod>,
    /// The container's name within its pod.
    pub container: Option<String>,
    /// Pods in `kube-system` may be targeted. By default, false: they are
    /// protected.
    pub allow_kube_system: bool,
}

/// Kubernetes pods, resolved on each node from its runtime's CRI labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    /// Labels the pod carries, all of them.
    pub labels: BTreeMap<String, String>,
    /// The pod's exact name.
    pub name: Option<String>,
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

/// Label whose value names an agent's zone.
pub const ZONE_LABEL: &str = "zone";

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
