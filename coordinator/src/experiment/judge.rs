//! The `judge:` section of an experiment: which two groups the canary
//! judge compares, on which samples, and how each metric is judged. The
//! statistics live in [`crate::canary`]; the engine builds the samples
//! (`engine::gate`).
//!
//! ```yaml
//! judge:
//!   control: control        # group names (these are the defaults)
//!   canary: canary
//!   alpha: 0.05             # significance of every test
//!   pass: 95                # score ≥ pass: the canary passes
//!   marginal: 75            # score ≥ marginal: marginal (fails unless marginal_passes)
//!   marginal_passes: false
//!   phases: [inject]        # samples taken while faults were injected; add `recover`
//!   metrics:                # optional: by default every per-group probe's metrics
//!     - probe: api
//!       metric: latency     # latency | success_rate | value (prometheus probes)
//!       direction: increase
//!       allowed_increase: 1.2
//!       critical_increase: 3.0
//!       must_have_data: true
//!       critical: false
//!       weight: 60
//!       nan: remove         # remove | replace
//!       outliers: keep      # keep | remove (beyond 3 × IQR)
//!       test: mann_whitney  # mann_whitney | welch
//! ```

use std::fmt;

use serde::Deserialize;

use super::parse::{Error, Result};
use super::Experiment;
use crate::canary::{Direction, JudgeConfig, MetricConfig, NanStrategy, Test};
use crate::outcome::Phase;
use crate::probes::ProbeKind;

/// What the judge measures of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Latency of the successful samples, in ms (continuous).
    Latency,
    /// Successes out of samples (a proportion).
    SuccessRate,
    /// The value a measuring probe read (prometheus; continuous).
    Value,
}

impl Metric {
    pub fn as_str(&self) -> &'static str {
        match self {
            Metric::Latency => "latency",
            Metric::SuccessRate => "success_rate",
            Metric::Value => "value",
        }
    }

    /// Which change is bad by default: slower, fewer successes, a higher
    /// value (error ratios, queue lengths).
    fn default_direction(&self) -> Direction {
        match self {
            Metric::SuccessRate => Direction::Decrease,
            Metric::Latency | Metric::Value => Direction::Increase,
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Samples of which run phases the judge compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JudgePhase {
    /// While faults were injected (the run's inject and observe phases).
    Inject,
    /// After restore (the restore and recover phases).
    Recover,
}

impl JudgePhase {
    /// The run phases whose samples this covers.
    pub fn run_phases(&self) -> &'static [Phase] {
        match self {
            JudgePhase::Inject => &[Phase::Inject, Phase::Observe],
            JudgePhase::Recover => &[Phase::Restore, Phase::Recover],
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            JudgePhase::Inject => "inject",
            JudgePhase::Recover => "recover",
        }
    }
}

/// One judged metric: which probe and what of it, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgedMetric {
    /// The probe's name as written (it has `per_group: true`).
    pub probe: String,
    pub metric: Metric,
    /// Its settings; `config.name` is `"<probe> <metric>"` unless written.
    pub config: MetricConfig,
}

/// The judge of an experiment, checked against its groups and probes.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeSpec {
    pub control: String,
    pub canary: String,
    pub config: JudgeConfig,
    /// A marginal score lets the run pass. By default, false: marginal
    /// fails, since a gate that cannot decide should not promote.
    pub marginal_passes: bool,
    /// By default, `[inject]`.
    pub phases: Vec<JudgePhase>,
    pub metrics: Vec<JudgedMetric>,
}

impl JudgeSpec {
    /// The run phases whose samples are judged.
    pub fn run_phases(&self) -> Vec<Phase> {
        self.phases
            .iter()
            .flat_map(|p| p.run_phases().iter().copied())
            .collect()
    }
}

/// `judge:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJudge {
    control: Option<String>,
    canary: Option<String>,
    alpha: Option<f64>,
    pass: Option<f64>,
    marginal: Option<f64>,
    #[serde(default)]
    marginal_passes: bool,
    phases: Option<Vec<JudgePhase>>,
    metrics: Option<Vec<RawJudgedMetric>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Outliers {
    Keep,
    Remove,
}

/// One entry of `judge.metrics`, checked where it stands (its errors carry
/// its position).
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawJudgedMetricFields")]
struct RawJudgedMetric {
    probe: String,
    metric: Metric,
    name: Option<String>,
    fields: RawJudgedMetricFields,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJudgedMetricFields {
    probe: String,
    metric: Metric,
    name: Option<String>,
    direction: Option<Direction>,
    allowed_increase: Option<f64>,
    allowed_decrease: Option<f64>,
    critical_increase: Option<f64>,
    critical_decrease: Option<f64>,
    must_have_data: Option<bool>,
    #[serde(default)]
    critical: bool,
    weight: Option<f64>,
    nan: Option<NanStrategy>,
    outliers: Option<Outliers>,
    test: Option<Test>,
}

/// Why an entry of `judge.metrics` was refused; `what` is its probe and
/// metric (`latency-p api latency`). serde places the message at the entry.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum MetricError {
    #[error("{what}: {field}: {value} is not a ratio of at least 1.0 (1.0: any significant change in the bad direction fails; 1.2: up to 20% is allowed)")]
    Allowed {
        what: String,
        field: &'static str,
        value: f64,
    },
    #[error("{what}: {field}: {value} must be a ratio at least the allowed one ({allowed})")]
    Critical {
        what: String,
        field: &'static str,
        value: f64,
        allowed: f64,
    },
    #[error("{what}: weight: {weight} is not within (0, 100]")]
    Weight { what: String, weight: f64 },
    #[error("{what}: test: welch applies to continuous metrics (latency, value); a success rate is compared with a test of proportions")]
    WelchOnRate { what: String },
    #[error("{what}: name: must not be empty")]
    EmptyName { what: String },
}

impl TryFrom<RawJudgedMetricFields> for RawJudgedMetric {
    type Error = MetricError;

    fn try_from(f: RawJudgedMetricFields) -> std::result::Result<Self, MetricError> {
        let what = format!("{} {}", f.probe, f.metric);
        for (field, v) in [
            ("allowed_increase", f.allowed_increase),
            ("allowed_decrease", f.allowed_decrease),
        ] {
            if let Some(value) = v.filter(|v| !(v.is_finite() && *v >= 1.0)) {
                return Err(MetricError::Allowed { what, field, value });
            }
        }
        for (field, v, allowed) in [
            (
                "critical_increase",
                f.critical_increase,
                f.allowed_increase.unwrap_or(1.0),
            ),
            (
                "critical_decrease",
                f.critical_decrease,
                f.allowed_decrease.unwrap_or(1.0),
            ),
        ] {
            if let Some(value) = v.filter(|v| !(v.is_finite() && *v >= allowed)) {
                return Err(MetricError::Critical {
                    what,
                    field,
                    value,
                    allowed,
                });
            }
        }
        if let Some(weight) = f.weight.filter(|w| !(w.is_finite() && *w > 0.0 && *w <= 100.0)) {
            return Err(MetricError::Weight { what, weight });
        }
        if f.test == Some(Test::Welch) && f.metric == Metric::SuccessRate {
            return Err(MetricError::WelchOnRate { what });
        }
        if f.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return Err(MetricError::EmptyName { what });
        }
        Ok(RawJudgedMetric {
            probe: f.probe.clone(),
            metric: f.metric,
            name: f.name.clone(),
            fields: f,
        })
    }
}

/// The settings of `metric` of `probe` when `judge.metrics` does not list it.
fn default_metric(probe: &str, metric: Metric) -> MetricConfig {
    let mut c = MetricConfig::new(format!("{probe} {metric}"));
    c.direction = metric.default_direction();
    // A success rate with no sample means the probe never ran in the
    // window: a broken gate, not a passing one.
    c.must_have_data = metric == Metric::SuccessRate;
    c
}

impl RawJudge {
    /// Checks the judge against the experiment's groups and probes.
    /// `at(key, message)` locates an error at a key under `judge:`.
    pub(super) fn into_spec(self, exp: &Experiment, at: impl Fn(&str, String) -> Error) -> Result<JudgeSpec> {
        let control = self.control.unwrap_or_else(|| "control".into());
        let canary = self.canary.unwrap_or_else(|| "canary".into());
        let names: Vec<&str> = exp.groups.iter().map(|g| g.name.as_str()).collect();
        if names.is_empty() {
            return Err(at(
                "judge",
                "judge: needs groups to compare; define them under hypothesis.groups (e.g. control and canary) and set per_group: true on the probes to judge".into(),
            ));
        }
        for (field, g) in [("control", &control), ("canary", &canary)] {
            if !names.contains(&g.as_str()) {
                return Err(at(
                    field,
                    format!(
                        "judge.{field}: group {g:?} is not defined under hypothesis.groups (defined: {})",
                        names.join(", ")
                    ),
                ));
            }
        }
        if control == canary {
            return Err(at(
                "canary",
                format!("judge.canary: {canary:?} is also the control; compare two different groups"),
            ));
        }
        let d = JudgeConfig::default();
        let config = JudgeConfig {
            alpha: self.alpha.unwrap_or(d.alpha),
            pass: self.pass.unwrap_or(d.pass),
            marginal: self.marginal.unwrap_or(d.marginal),
        };
        if !(config.alpha > 0.0 && config.alpha <= 0.5) {
            return Err(at(
                "alpha",
                format!("judge.alpha: {} is not within (0, 0.5]; 0.05 is usual", config.alpha),
            ));
        }
        for (field, v) in [("pass", config.pass), ("marginal", config.marginal)] {
            if !(0.0..=100.0).contains(&v) {
                return Err(at(field, format!("judge.{field}: {v} is not a score within 0..=100")));
            }
        }
        if config.marginal > config.pass {
            return Err(at(
                "marginal",
                format!(
                    "judge.marginal: {} is above judge.pass {}; a marginal score lies below the pass score",
                    config.marginal, config.pass
                ),
            ));
        }
        let phases = self.phases.unwrap_or_else(|| vec![JudgePhase::Inject]);
        if phases.is_empty() {
            return Err(at(
                "phases",
                "judge.phases: name at least one of inject, recover".into(),
            ));
        }
        let judged: Vec<&crate::experiment::Probe> = exp
            .hypothesis
            .probes
            .iter()
            .filter(|p| p.group.as_ref().is_some_and(|g| g.group == control))
            .collect();
        if judged.is_empty() {
            return Err(at(
                "judge",
                "judge: no probe has per_group: true, so there is nothing to compare; set per_group: true on the probes to judge".into(),
            ));
        }
        let probe_kind = |name: &str| {
            judged
                .iter()
                .find(|p| p.group.as_ref().is_some_and(|g| g.probe == name))
                .map(|p| &p.kind)
        };
        let metrics = match self.metrics {
            None => judged
                .iter()
                .flat_map(|p| {
                    let base = p.group.as_ref().map(|g| g.probe.clone()).unwrap_or_default();
                    let mut m = vec![Metric::Latency, Metric::SuccessRate];
                    if matches!(p.kind, ProbeKind::Prometheus(_)) {
                        m = vec![Metric::Value, Metric::SuccessRate];
                    }
                    m.into_iter().map(move |metric| JudgedMetric {
                        config: default_metric(&base, metric),
                        probe: base.clone(),
                        metric,
                    })
                })
                .collect(),
            Some(list) => {
                let mut out: Vec<JudgedMetric> = Vec::new();
                for m in list {
                    let needle = format!("probe: {}", m.probe);
                    let Some(kind) = probe_kind(&m.probe) else {
                        let known: Vec<&str> = judged
                            .iter()
                            .filter_map(|p| p.group.as_ref().map(|g| g.probe.as_str()))
                            .collect();
                        return Err(at(
                            &needle,
                            format!(
                                "judge.metrics: probe {:?} is not a probe with per_group: true (those are: {})",
                                m.probe,
                                known.join(", ")
                            ),
                        ));
                    };
                    if m.metric == Metric::Value && !matches!(kind, ProbeKind::Prometheus(_)) {
                        return Err(at(
                            &needle,
                            format!(
                                "judge.metrics: {} value: a {} probe measures no value; judge its latency or success_rate (value is for prometheus probes)",
                                m.probe,
                                kind.name()
                            ),
                        ));
                    }
                    let f = &m.fields;
                    let mut c = default_metric(&m.probe, m.metric);
                    if let Some(n) = &m.name {
                        c.name = n.clone();
                    }
                    c.direction = f.direction.unwrap_or(c.direction);
                    c.allowed_increase = f.allowed_increase.unwrap_or(c.allowed_increase);
                    c.allowed_decrease = f.allowed_decrease.unwrap_or(c.allowed_decrease);
                    c.critical_increase = f.critical_increase;
                    c.critical_decrease = f.critical_decrease;
                    c.must_have_data = f.must_have_data.unwrap_or(c.must_have_data);
                    c.critical = f.critical;
                    c.weight = f.weight;
                    c.nan = f.nan.unwrap_or(c.nan);
                    c.remove_outliers = f.outliers == Some(Outliers::Remove);
                    c.test = f.test.unwrap_or(c.test);
                    if out.iter().any(|o| o.config.name == c.name) {
                        return Err(at(
                            &needle,
                            format!(
                                "judge.metrics: {:?} is listed twice; each probe's metric once (or give one a name)",
                                c.name
                            ),
                        ));
                    }
                    out.push(JudgedMetric {
                        probe: m.probe,
                        metric: m.metric,
                        config: c,
                    });
                }
                if out.is_empty() {
                    return Err(at(
                        "metrics",
                        "judge.metrics: empty; list at least one metric, or leave metrics out to judge every per-group probe's latency and success rate".into(),
                    ));
                }
                out
            }
        };
        let weights: f64 = metrics.iter().filter_map(|m| m.config.weight).sum();
        if weights > 100.0 + 1e-9 {
            return Err(at(
                "metrics",
                format!("judge.metrics: the weights add up to {weights}, over 100"),
            ));
        }
        Ok(JudgeSpec {
            control,
            canary,
            config,
            marginal_passes: self.marginal_passes,
            phases,
            metrics,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::experiment::parse;

    fn file(groups: &str, probe_extra: &str, judge: &str) -> String {
        format!(
            r#"name: gate
hypothesis:
  groups:
{groups}
  probes:
    - name: api
      per_group: true
      interval: 100ms
      http: {{ url: "http://${{group.host}}/work" }}
{probe_extra}
    - name: dependency
      tcp: {{ address: "127.0.0.1:9" }}
duration: 1s
faults:
  - kill: {{ name: x }}
{judge}"#
        )
    }

    const GROUPS: &str = "    control: { host: \"127.0.0.1:8081\" }\n    canary: { host: \"127.0.0.1:8082\" }";

    #[test]
    fn a_per_group_probe_runs_once_per_group_and_is_judged_by_default() {
        let e = parse("g.yaml", &file(GROUPS, "", "judge: {}\n"), &HashMap::new()).unwrap();
        let names: Vec<&str> = e.hypothesis.probes.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["api [control]", "api [canary]", "dependency"]);
        let url = |i: usize| match &e.hypothesis.probes[i].kind {
            ProbeKind::Http(h) => h.url.clone(),
            _ => unreachable!(),
        };
        assert_eq!(url(0), "http://127.0.0.1:8081/work");
        assert_eq!(url(1), "http://127.0.0.1:8082/work");
        let j = e.judge.unwrap();
        assert_eq!((j.control.as_str(), j.canary.as_str()), ("control", "canary"));
        assert_eq!(j.phases, [JudgePhase::Inject]);
        assert_eq!(j.run_phases(), [Phase::Inject, Phase::Observe]);
        let m: Vec<(&str, Direction, bool)> = j
            .metrics
            .iter()
            .map(|m| (m.config.name.as_str(), m.config.direction, m.config.must_have_data))
            .collect();
        assert_eq!(
            m,
            [
                ("api latency", Direction::Increase, false),
                ("api success_rate", Direction::Decrease, true)
            ]
        );
        assert_eq!(j.config, JudgeConfig::default());
        assert!(!j.marginal_passes);
    }

    #[test]
    fn metric_settings_are_read_and_checked_where_they_stand() {
        let judge = "judge:\n  alpha: 0.01\n  pass: 90\n  marginal: 50\n  marginal_passes: true\n  metrics:\n    - probe: api\n      metric: latency\n      allowed_increase: 1.2\n      critical_increase: 3\n      critical: true\n      weight: 70\n      outliers: remove\n      nan: replace\n      test: welch\n";
        let e = parse("g.yaml", &file(GROUPS, "", judge), &HashMap::new()).unwrap();
        let j = e.judge.unwrap();
        assert_eq!(j.config.alpha, 0.01);
        assert!(j.marginal_passes);
        let c = &j.metrics[0].config;
        assert_eq!(c.allowed_increase, 1.2);
        assert_eq!(c.critical_increase, Some(3.0));
        assert!(c.critical && c.remove_outliers);
        assert_eq!(
            (c.weight, c.nan, c.test),
            (Some(70.0), NanStrategy::Replace, Test::Welch)
        );

        let bad = judge.replace("allowed_increase: 1.2", "allowed_increase: 0.8");
        let err = parse("g.yaml", &file(GROUPS, "", &bad), &HashMap::new()).unwrap_err();
        assert!(
            err.message
                .contains("allowed_increase: 0.8 is not a ratio of at least 1.0"),
            "{err}"
        );
        assert_eq!(err.line, 23, "{err}");
        assert!(!err.message.contains("reading the file for group"), "{err}");

        let bad = judge.replace("metric: latency", "metric: value");
        let err = parse("g.yaml", &file(GROUPS, "", &bad), &HashMap::new()).unwrap_err();
        assert!(err.message.contains("a http probe measures no value"), "{err}");
        assert_eq!((err.line, err.column), (23, 7), "{err}");

        let bad = judge.replace("probe: api", "probe: dependency");
        let err = parse("g.yaml", &file(GROUPS, "", &bad), &HashMap::new()).unwrap_err();
        assert!(
            err.message
                .contains("not a probe with per_group: true (those are: api)"),
            "{err}"
        );

        let bad = judge.replace("marginal: 50", "marginal: 95");
        let err = parse("g.yaml", &file(GROUPS, "", &bad), &HashMap::new()).unwrap_err();
        assert_eq!((err.line, err.column), (20, 3), "{err}");
        assert!(
            err.message.contains("judge.marginal: 95 is above judge.pass 90"),
            "{err}"
        );
    }

    #[test]
    fn group_mistakes_name_the_place_and_the_fix() {
        let src = file(GROUPS, "", "judge:\n  canary: green\n");
        let err = parse("g.yaml", &src, &HashMap::new()).unwrap_err();
        assert_eq!((err.line, err.column), (18, 3), "{err}");
        assert!(err.message.contains("group \"green\" is not defined"), "{err}");

        // A group without the value a probe uses.
        let groups = "    control: { host: \"127.0.0.1:8081\" }\n    canary: { hots: \"x\" }";
        let err = parse("g.yaml", &file(groups, "", ""), &HashMap::new()).unwrap_err();
        assert_eq!((err.line, err.column), (10, 28), "{err}");
        assert!(err.message.contains("group \"canary\" has no value \"host\""), "{err}");

        // A fault that reads differently per group.
        let src = file(GROUPS, "", "").replace("kill: { name: x }", "kill: { name: \"${group.host}\" }");
        let err = parse("g.yaml", &src, &HashMap::new()).unwrap_err();
        assert!(err.message.contains("faults are the same for every group"), "{err}");
        assert_eq!(err.line, 15, "{err}");

        // A shared probe that uses a group value.
        let src = file(GROUPS, "", "").replace("127.0.0.1:9", "${group.host}");
        let err = parse("g.yaml", &src, &HashMap::new()).unwrap_err();
        assert!(err.message.contains("set per_group: true on it"), "{err}");

        // per_group without groups, and group placeholders without groups.
        let src = "name: g\nhypothesis:\n  probes:\n    - name: api\n      per_group: true\n      tcp: { address: \"127.0.0.1:9\" }\nduration: 1s\nfaults:\n  - kill: { name: x }\n";
        let err = parse("g.yaml", src, &HashMap::new()).unwrap_err();
        assert!(err.message.contains("per_group: true needs groups"), "{err}");
        let err = parse("g.yaml", &src.replace("127.0.0.1:9", "${group.host}"), &HashMap::new()).unwrap_err();
        assert_eq!((err.line, err.column), (6, 24), "{err}");
        assert!(err.message.contains("no groups are defined"), "{err}");

        // A bad group name.
        let err = parse("g.yaml", &file("    \"can ary\": { host: x }", "", ""), &HashMap::new()).unwrap_err();
        assert!(err.message.contains("group name \"can ary\""), "{err}");
        assert_eq!(err.line, 4, "{err}");

        // A judge without groups.
        let src = "name: g\nhypothesis:\n  probes:\n    - name: api\n      tcp: { address: \"127.0.0.1:9\" }\nduration: 1s\nfaults:\n  - kill: { name: x }\njudge: {}\n";
        let err = parse("g.yaml", src, &HashMap::new()).unwrap_err();
        assert_eq!(err.line, 9, "{err}");
        assert!(err.message.contains("judge: needs groups"), "{err}");
    }
}
