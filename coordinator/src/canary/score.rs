//! The canary score: 0–100 and its `pass` / `marginal` / `fail` verdict,
//! after Kayenta's `WeightedSumScorer`.
//!
//! - Weights: a metric's `weight` when set; the metrics without one share
//!   what is left of 100 equally (nothing, if the set weights reach 100).
//!   Negative or non-finite weights count as 0. `MetricResult::weight`
//!   reports the weight after sharing.
//! - Scored metrics: `pass`, `high` and `low`, and `nodata` when the metric
//!   has `must_have_data` (counted as a failure). `nodata` without it is
//!   left out of both sums (its weight is not redistributed).
//! - Score = 100 × (weight of the `pass` metrics) ÷ (weight of the scored
//!   metrics). If every scored metric has weight 0, each counts equally.
//!   With no scored metric at all the score is 0: a judgement without data
//!   is not a pass.
//! - A `critical` metric that is not `pass` (including `nodata`), or any
//!   metric whose change went beyond its critical effect size, sets the
//!   score to 0; `critical_failure` names them.
//! - Verdict: `pass` at or above `JudgeConfig::pass`, `marginal` at or
//!   above `JudgeConfig::marginal`, `fail` below.
//!
//! Differences from Kayenta: Kayenta weighs *groups* of metrics (each
//! group's score is its share of `Pass`) and scores per-metric classes
//! within a group equally; here every metric is its own group, which is the
//! same as Kayenta with one metric per group. Kayenta's `NodataFailMetric`
//! class is expressed here as `nodata` with `must_have_data`; a critical
//! metric's `nodata` is a critical failure in both.

use super::{Classification, JudgeConfig, Judgement, MetricConfig, MetricResult, Samples, ScoreVerdict};

/// Scores the classified metrics (`results[i]` belongs to `metrics[i]`).
pub fn score(config: &JudgeConfig, metrics: &[(MetricConfig, Samples)], mut results: Vec<MetricResult>) -> Judgement {
    let weight_of = |i: usize| {
        metrics
            .get(i)
            .and_then(|(m, _)| m.weight)
            .map(|w| if w.is_finite() && w > 0.0 { w } else { 0.0 })
    };
    let set: f64 = (0..results.len()).filter_map(weight_of).sum();
    let unweighted = (0..results.len()).filter(|&i| weight_of(i).is_none()).count();
    let share = if unweighted > 0 {
        ((100.0 - set) / unweighted as f64).max(0.0)
    } else {
        0.0
    };
    let must_have = |i: usize| metrics.get(i).is_some_and(|(m, _)| m.must_have_data);

    let mut passed = 0.0;
    let mut scored = 0.0;
    let mut passed_n = 0usize;
    let mut scored_n = 0usize;
    let mut critical = Vec::new();
    for (i, r) in results.iter_mut().enumerate() {
        r.weight = weight_of(i).unwrap_or(share);
        let counted = match r.classification {
            Classification::Pass | Classification::High | Classification::Low => true,
            Classification::Nodata => must_have(i),
        };
        if r.classification == Classification::Nodata {
            let note = if must_have(i) {
                "; must_have_data: scored as a failure"
            } else {
                "; not scored"
            };
            if !r.reason.ends_with(note) {
                r.reason.push_str(note);
            }
        }
        if counted {
            scored += r.weight;
            scored_n += 1;
            if r.classification == Classification::Pass {
                passed += r.weight;
                passed_n += 1;
            }
        }
        if (r.critical && r.classification != Classification::Pass) || r.critical_effect {
            let what = if r.critical_effect {
                "beyond its critical effect size"
            } else {
                "critical"
            };
            critical.push(format!("{} ({}, {what})", r.name, label(r.classification)));
        }
    }
    let score = if !critical.is_empty() || scored_n == 0 {
        0.0
    } else if scored > 0.0 {
        100.0 * passed / scored
    } else {
        100.0 * passed_n as f64 / scored_n as f64
    };
    let verdict = if score >= config.pass {
        ScoreVerdict::Pass
    } else if score >= config.marginal {
        ScoreVerdict::Marginal
    } else {
        ScoreVerdict::Fail
    };
    Judgement {
        metrics: results,
        score,
        verdict,
        critical_failure: if critical.is_empty() {
            None
        } else {
            Some(critical.join(", "))
        },
        config: *config,
    }
}

fn label(c: Classification) -> &'static str {
    match c {
        Classification::Pass => "pass",
        Classification::High => "high",
        Classification::Low => "low",
        Classification::Nodata => "nodata",
    }
}

#[cfg(test)]
mod tests {
    use super::super::{classify, judge, Direction};
    use super::*;

    fn result(name: &str, c: Classification) -> MetricResult {
        let mut r = classify::classify(
            &JudgeConfig::default(),
            &MetricConfig::new(name),
            &Samples::Continuous {
                canary: vec![],
                control: vec![],
            },
        );
        r.classification = c;
        r
    }

    fn cfg(name: &str, weight: Option<f64>) -> (MetricConfig, Samples) {
        let mut m = MetricConfig::new(name);
        m.weight = weight;
        (
            m,
            Samples::Continuous {
                canary: vec![],
                control: vec![],
            },
        )
    }

    #[test]
    fn unweighted_metrics_share_equally() {
        // 3 pass of 4 equal metrics: 75, marginal at the default thresholds.
        let metrics: Vec<_> = (0..4).map(|i| cfg(&format!("m{i}"), None)).collect();
        let results = vec![
            result("m0", Classification::Pass),
            result("m1", Classification::Pass),
            result("m2", Classification::High),
            result("m3", Classification::Pass),
        ];
        let j = score(&JudgeConfig::default(), &metrics, results);
        assert_eq!(j.score, 75.0);
        assert_eq!(j.verdict, ScoreVerdict::Marginal);
        assert!(j.metrics.iter().all(|r| r.weight == 25.0));
        assert_eq!(j.critical_failure, None);
    }

    #[test]
    fn set_weights_and_the_rest_of_100() {
        // latency 60 (high), two unweighted metrics share 40 → 20 each, both
        // pass: 40/100 = 40, fail.
        let metrics = vec![cfg("latency", Some(60.0)), cfg("a", None), cfg("b", None)];
        let results = vec![
            result("latency", Classification::High),
            result("a", Classification::Pass),
            result("b", Classification::Pass),
        ];
        let j = score(&JudgeConfig::default(), &metrics, results);
        assert_eq!(j.metrics[1].weight, 20.0);
        assert_eq!(j.score, 40.0);
        assert_eq!(j.verdict, ScoreVerdict::Fail);
    }

    #[test]
    fn nodata_is_left_out_unless_data_is_required() {
        let mut metrics = vec![cfg("a", None), cfg("b", None), cfg("c", None)];
        let results = || {
            vec![
                result("a", Classification::Pass),
                result("b", Classification::Nodata),
                result("c", Classification::Pass),
            ]
        };
        let j = score(&JudgeConfig::default(), &metrics, results());
        assert_eq!(j.score, 100.0);
        assert_eq!(j.verdict, ScoreVerdict::Pass);
        assert!(j.metrics[1].reason.ends_with("not scored"));
        metrics[1].0.must_have_data = true;
        let j = score(&JudgeConfig::default(), &metrics, results());
        assert!((j.score - 200.0 / 3.0).abs() < 1e-12);
        assert_eq!(j.verdict, ScoreVerdict::Fail);
    }

    #[test]
    fn no_data_at_all_is_not_a_pass() {
        let metrics = vec![cfg("a", None)];
        let j = score(
            &JudgeConfig::default(),
            &metrics,
            vec![result("a", Classification::Nodata)],
        );
        assert_eq!(j.score, 0.0);
        assert_eq!(j.verdict, ScoreVerdict::Fail);
    }

    #[test]
    fn critical_metric_not_passing_ends_at_zero() {
        let mut metrics = vec![cfg("errors", Some(10.0)), cfg("latency", Some(90.0))];
        metrics[0].0.critical = true;
        let mut results = vec![
            result("errors", Classification::Low),
            result("latency", Classification::Pass),
        ];
        results[0].critical = true;
        let j = score(&JudgeConfig::default(), &metrics, results);
        assert_eq!(j.score, 0.0);
        assert_eq!(j.verdict, ScoreVerdict::Fail);
        assert_eq!(j.critical_failure.as_deref(), Some("errors (low, critical)"));
    }

    #[test]
    fn critical_effect_size_ends_at_zero_for_any_metric() {
        // Control around 100, canary around 300 (×3): high; critical
        // increase ×2 on a non-critical metric still ends the score at 0.
        let mut m = MetricConfig::new("latency");
        m.critical_increase = Some(2.0);
        m.direction = Direction::Increase;
        let control: Vec<f64> = (0..30).map(|i| 100.0 + i as f64).collect();
        let canary: Vec<f64> = control.iter().map(|v| v * 3.0).collect();
        let mut other = MetricConfig::new("ok");
        other.weight = Some(90.0);
        let same: Vec<f64> = (0..30).map(|i| i as f64).collect();
        let j = judge(
            &JudgeConfig::default(),
            &[
                (m, Samples::Continuous { canary, control }),
                (
                    other,
                    Samples::Continuous {
                        canary: same.clone(),
                        control: same,
                    },
                ),
            ],
        );
        assert_eq!(j.metrics[0].classification, Classification::High);
        assert!(j.metrics[0].critical_effect);
        assert_eq!(j.metrics[1].classification, Classification::Pass);
        assert_eq!(j.score, 0.0);
        assert_eq!(
            j.critical_failure.as_deref(),
            Some("latency (high, beyond its critical effect size)")
        );
    }

    #[test]
    fn thresholds_decide_the_verdict() {
        let metrics: Vec<_> = (0..20).map(|i| cfg(&format!("m{i}"), None)).collect();
        let mk = |fails: usize| -> Vec<MetricResult> {
            (0..20)
                .map(|i| {
                    result(
                        &format!("m{i}"),
                        if i < fails {
                            Classification::High
                        } else {
                            Classification::Pass
                        },
                    )
                })
                .collect()
        };
        let c = JudgeConfig::default();
        assert_eq!(score(&c, &metrics, mk(1)).verdict, ScoreVerdict::Pass); // 95
        assert_eq!(score(&c, &metrics, mk(2)).verdict, ScoreVerdict::Marginal); // 90
        assert_eq!(score(&c, &metrics, mk(5)).verdict, ScoreVerdict::Marginal); // 75
        assert_eq!(score(&c, &metrics, mk(6)).verdict, ScoreVerdict::Fail); // 70
    }
}
