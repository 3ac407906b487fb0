//! The report of a run. Field names are stable: the JSON form is a contract
//! for CI scripts and dashboards (documented in the README). Add fields,
//! never rename or remove them; bump `schema_version` if meaning changes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::outcome::{Outcome, Phase};
use crate::stats::{PhaseStats, Sample};
use crate::verdict::Check;

/// Version of the report format.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub run_id: String,
    pub experiment: ExperimentInfo,
    pub outcome: Outcome,
    /// Exit code of `faultline run` for this outcome.
    pub exit_code: i32,
    /// One line explaining the outcome.
    pub reason: String,
    /// RFC 3339 UTC.
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    /// Set when the run was aborted: who or what aborted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_by: Option<String>,
    pub phases: Vec<PhaseSpan>,
    pub probes: Vec<ProbeReport>,
    pub faults: Vec<FaultReport>,
    /// Every stop condition (the experiment's, then the policy's) with its
    /// evaluations. Empty, and left out of the JSON, without any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop_conditions: Vec<StopConditionReport>,
    /// Every error-budget gate (the experiment's, then the policy's) with
    /// the remaining budget before and after the run. Empty, and left out
    /// of the JSON, without any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_budgets: Vec<ErrorBudgetReport>,
    /// What the run history recorded, for a run whose own report was never
    /// written (the coordinator stopped during it: outcome `error`, reason
    /// starting with "interrupted"), including what agents reported after
    /// the coordinator came back. Empty, and left out of the JSON, for a
    /// run that finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventReport>,
    /// The canary judge's judgement, for an experiment with a `judge:`
    /// section whose run got through recovery. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeReport>,
}

/// The canary judge in a report: which groups, which samples, each
/// metric's classification, the score and what it did to the outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JudgeReport {
    pub control: String,
    pub canary: String,
    /// Judged phases as written: `inject`, `recover`.
    pub phases: Vec<String>,
    pub marginal_passes: bool,
    /// True when the score lets the run pass: verdict `pass`, or `marginal`
    /// with `marginal_passes`. The run's outcome also needs every tolerance.
    pub passed: bool,
    /// Each metric's settings as judged (direction, allowed and critical
    /// effect sizes, must_have_data, weight, ...), in the order of the
    /// metrics.
    #[serde(default)]
    pub settings: Vec<crate::canary::MetricConfig>,
    /// Metrics, score, verdict, the critical failure and the settings.
    #[serde(flatten)]
    pub judgement: crate::canary::Judgement,
}

/// One recorded event of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventReport {
    /// RFC 3339 UTC.
    pub at: String,
    /// phase, fault, log, finished, or after (reported by an agent once the
    /// coordinator was back).
    pub kind: String,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExperimentInfo {
    pub name: String,
    pub description: String,
    pub hypothesis: String,
    /// File the experiment came from.
    pub source: String,
    pub baseline_ms: u64,
    pub duration_ms: u64,
    pub recovery_ms: u64,
}

/// When a phase started and ended, in ms since the run started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseSpan {
    pub phase: Phase,
    pub start_ms: u64,
    pub end_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeReport {
    pub name: String,
    /// The probe kind: http, tcp, command, prometheus or grpc.
    pub kind: String,
    /// URL, address, command, or a prometheus probe's URL and query.
    pub target: String,
    pub interval_ms: u64,
    /// Samples taken before anything was injected.
    pub baseline: PhaseStats,
    /// Samples taken while faults were injected (observe phase).
    pub during: PhaseStats,
    /// Samples taken after restore (restore and recover phases).
    pub recovery: PhaseStats,
    pub delta: Delta,
    /// True if any sample after injection was unhealthy (failed, or over a
    /// latency limit).
    pub degraded: bool,
    /// True if the probe was healthy at the end of the run.
    pub recovered: bool,
    /// From the first injection to the first sample of the final unbroken run
    /// of healthy samples. Absent if the probe never degraded or never
    /// recovered.
    pub time_to_recovery_ms: Option<u64>,
    /// Error messages seen after injection, with counts.
    pub errors: BTreeMap<String, u32>,
    pub tolerances: Vec<ToleranceReport>,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

/// During minus baseline.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Delta {
    /// Percentage points.
    pub success_rate_points: f64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// The change of the mean value, for probes that measure one
    /// (prometheus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_mean: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToleranceReport {
    /// The tolerance in words, e.g. "success rate >= 95.0%".
    pub tolerance: String,
    /// Checked against the baseline (absent for tolerances relative to the
    /// baseline itself).
    pub steady: Option<Check>,
    /// Checked against the samples taken during the fault; absent when the
    /// run stopped before injecting.
    pub during: Option<Check>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultReport {
    pub fault_id: String,
    pub name: String,
    pub kind: String,
    /// The parameters in words.
    pub summary: String,
    pub targets: Vec<TargetReport>,
}

/// One fault on one agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetReport {
    pub agent_id: String,
    pub hostname: String,
    /// Last known state: pending, injected, refused, failed, restored, expired.
    pub state: String,
    /// Implementation used by the agent.
    pub backend: String,
    pub injected_at_ms: Option<u64>,
    pub restored_at_ms: Option<u64>,
    /// "coordinator" (restore phase), "lease expiry", or why it is unconfirmed.
    pub restored_by: Option<String>,
    /// Agent's own words on the last state change.
    pub detail: String,
    /// Kill only: processes signalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub killed: Vec<KilledProcess>,
    /// Kill only: time from the kill until a matching process reappeared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reappeared_after_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reappeared_pid: Option<u32>,
    /// Latency and block: the peer networks the coordinator resolved
    /// (zones to agent addresses, plus CIDRs) and sent to this agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// Latency and block: kernel objects the agent created for the fault.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<String>,
    /// Latency with the nfqueue backend: packets delayed / dropped while
    /// the fault was in place (reported at restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets_delayed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets_dropped: Option<u64>,
    /// Every kind: the numbers its observation carried (packets delayed,
    /// bytes written, processes killed, ...), named by the kind. Reports
    /// render them without knowing the kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<Figure>,
    /// Every kind: what its observation said, in words (a killed process,
    /// whether a matching one reappeared).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One number a fault kind observed on a target, e.g. 1200 packets delayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// What was counted or measured, in the kind's words (`delayed`,
    /// `written`, `used after`); stable, so scripts may pick a figure by it.
    pub name: String,
    pub value: f64,
    /// Unit of `value`: `packets`, `bytes`, `%`, `ms`, `processes`, `networks`.
    pub unit: String,
}

impl Figure {
    /// The value with its unit: `1200 packets`, `91.5%`.
    pub fn quantity(&self) -> String {
        let value = if self.value.fract() == 0.0 && self.value.abs() < 1e15 {
            format!("{}", self.value as i64)
        } else {
            format!("{:.1}", self.value)
        };
        match self.unit.as_str() {
            "" => value,
            "%" => format!("{value}%"),
            unit => format!("{value} {unit}"),
        }
    }
}

impl std::fmt::Display for Figure {
    /// `delayed: 1200 packets`, `used after: 91.5%`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.quantity())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KilledProcess {
    pub pid: u32,
    pub name: String,
    pub cmdline: String,
}

/// A stop condition in a report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StopConditionReport {
    pub name: String,
    /// The PromQL expression.
    pub query: String,
    pub severity: crate::experiment::stop_conditions::Severity,
    /// When it first returned a series, in ms since the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_at_ms: Option<u64>,
    /// Its first series' value then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// From turning true to the last fault restored: how long the system
    /// stayed faulted after the condition said stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_after_ms: Option<u64>,
    pub evaluations: Vec<StopEvaluation>,
}

/// One evaluation of a stop condition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StopEvaluation {
    pub at_ms: u64,
    /// The query returned at least one series.
    pub fired: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Why the query failed; a failed evaluation does not fire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An error-budget gate in a report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBudgetReport {
    /// The error-ratio query, `$window` replaced; for a good/total SLI,
    /// `1 - (good) / (total)`.
    pub query: String,
    pub objective: f64,
    pub window_ms: u64,
    pub min_remaining: f64,
    /// The remaining budget (fraction of the whole) measured before the
    /// run; absent when it could not be measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_before: Option<f64>,
    /// Measured after the run's recovery; absent for a refused run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_after: Option<f64>,
    /// Why a measurement failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
