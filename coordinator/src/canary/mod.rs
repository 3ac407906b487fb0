//! The canary judge: compares a canary group against a control group, metric
//! by metric, on the samples taken while faults were injected, and scores
//! the canary 0–100 — following Kayenta's `NetflixACAJudge` semantics where
//! they fit (see the module docs of [`classify`] and [`score`] for every
//! difference).
//!
//! This module is pure: no I/O, no clock, no async. The engine collects the
//! samples per group and calls [`judge`]; the report renders [`Judgement`].
//!
//! Layout:
//! - [`stats`]: Mann–Whitney U (ties, exact/normal p-values), the
//!   Hodges–Lehmann shift and its confidence interval, two-proportion and
//!   Fisher's exact tests, Welch's t-test; with `selection` (the k-th
//!   of the m·n pairwise differences without storing them) and `special`
//!   (erfc, ln Γ, incomplete beta, Student's t).
//! - [`classify`]: NaN and outlier handling, effect sizes, direction and the
//!   `pass` / `high` / `low` / `nodata` classification of one metric.
//! - [`sim`]: seeded A/A and power simulations (tests and the bench).
//! - [`score`]: the weighted 0–100 score and its `pass` / `marginal` / `fail`
//!   verdict (a critical metric that is not `pass` ends at 0).
//!
//! INTERFACE CONTRACT (lead, 2026-11-30): the types and the signature of
//! [`judge`] below are what the engine/experiment integration codes against.
//! The statistics helper owns this module and may add fields/variants, but
//! must not remove or rename the ones here without telling the lead.

use serde::{Deserialize, Serialize};

pub mod classify;
pub mod score;
mod selection;
pub mod sim;
mod special;
pub mod stats;

/// Which change of the canary relative to the control is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// A higher canary is bad (latency, error ratio).
    #[default]
    Increase,
    /// A lower canary is bad (success rate, throughput).
    Decrease,
    /// Any significant change is bad.
    Either,
}

/// The test used for a continuous metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Test {
    /// Mann–Whitney U with the Hodges–Lehmann shift (Kayenta's default).
    #[default]
    MannWhitney,
    /// Welch's t-test on the means (for A/B comparisons).
    Welch,
}

/// What to do with NaN (and ±Inf) samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NanStrategy {
    /// Drop them (Kayenta's default); the count dropped is reported.
    #[default]
    Remove,
    /// Replace them with 0.
    Replace,
}

/// How one metric is judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricConfig {
    /// e.g. "api latency", "api success rate", "error_ratio".
    pub name: String,
    pub direction: Direction,
    /// Allowed effect size as a ratio canary/control (Kayenta
    /// `allowedIncrease`/`allowedDecrease`, default 1.0 = any significant
    /// change in the bad direction is `high`/`low`).
    pub allowed_increase: f64,
    pub allowed_decrease: f64,
    /// Critical effect sizes: a change beyond these fails the whole
    /// judgement (score 0), as if the metric were critical.
    pub critical_increase: Option<f64>,
    pub critical_decrease: Option<f64>,
    /// With no data on either side: `nodata`, and a failure if true.
    pub must_have_data: bool,
    /// A critical metric that is not `pass` ends the score at 0.
    pub critical: bool,
    /// Weight in the score; metrics without a weight share what is left of 100.
    pub weight: Option<f64>,
    pub nan: NanStrategy,
    /// Remove outliers beyond 3 × IQR before testing.
    pub remove_outliers: bool,
    pub test: Test,
}

impl MetricConfig {
    /// Kayenta's defaults for a metric where higher is worse.
    pub fn new(name: impl Into<String>) -> Self {
        MetricConfig {
            name: name.into(),
            direction: Direction::Increase,
            allowed_increase: 1.0,
            allowed_decrease: 1.0,
            critical_increase: None,
            critical_decrease: None,
            must_have_data: false,
            critical: false,
            weight: None,
            nan: NanStrategy::Remove,
            remove_outliers: false,
            test: Test::MannWhitney,
        }
    }
}

/// The samples of one metric for both groups.
#[derive(Debug, Clone, PartialEq)]
pub enum Samples {
    /// Continuous values (latency of successful samples, a Prometheus value).
    Continuous { canary: Vec<f64>, control: Vec<f64> },
    /// Successes out of trials (a probe's success rate).
    Proportion {
        canary_ok: u64,
        canary_n: u64,
        control_ok: u64,
        control_n: u64,
    },
}

/// The judgement's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct JudgeConfig {
    /// Significance level of every test; the shift's interval has
    /// confidence 1 − alpha. Default 0.05.
    pub alpha: f64,
    /// Score at or above which the canary passes (default 95).
    pub pass: f64,
    /// Score at or above which the canary is marginal (default 75); below: fail.
    pub marginal: f64,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig {
            alpha: 0.05,
            pass: 95.0,
            marginal: 75.0,
        }
    }
}

/// One metric's classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Classification {
    Pass,
    High,
    Low,
    Nodata,
}

/// One metric's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricResult {
    pub name: String,
    pub classification: Classification,
    pub direction: Direction,
    pub critical: bool,
    /// The weight the score gave this metric (after sharing).
    pub weight: f64,
    /// "mann_whitney", "welch", "two_proportion", "fisher_exact" or "none".
    pub test: String,
    pub canary_count: u64,
    pub control_count: u64,
    /// Median (continuous, Mann–Whitney), mean (Welch) or rate (proportion).
    pub canary_center: Option<f64>,
    pub control_center: Option<f64>,
    /// canary_center / control_center (Kayenta's effect size), when defined.
    pub effect_size: Option<f64>,
    /// Hodges–Lehmann shift (canary − control), difference of means
    /// (Welch) or difference of rates (proportion).
    pub shift: Option<f64>,
    /// Confidence interval of `shift` at 1 − alpha.
    pub interval: Option<(f64, f64)>,
    pub p_value: Option<f64>,
    /// NaN/Inf samples removed or replaced, outliers removed (both groups).
    pub nan_handled: u64,
    pub outliers_removed: u64,
    /// One sentence why, for reports.
    pub reason: String,
    /// The change went beyond `critical_increase`/`critical_decrease`:
    /// the score is 0 whether or not the metric is `critical`. (Added by
    /// the statistics; absent in older serialized results → false.)
    #[serde(default)]
    pub critical_effect: bool,
}

/// The canary score's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreVerdict {
    Pass,
    Marginal,
    Fail,
}

/// The whole judgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    pub metrics: Vec<MetricResult>,
    /// 0–100.
    pub score: f64,
    pub verdict: ScoreVerdict,
    /// The critical metric (or critical effect size) that set the score to 0.
    pub critical_failure: Option<String>,
    pub config: JudgeConfig,
}

/// Judges every metric and scores the canary.
pub fn judge(config: &JudgeConfig, metrics: &[(MetricConfig, Samples)]) -> Judgement {
    let results: Vec<MetricResult> = metrics
        .iter()
        .map(|(cfg, samples)| classify::classify(config, cfg, samples))
        .collect();
    score::score(config, metrics, results)
}
