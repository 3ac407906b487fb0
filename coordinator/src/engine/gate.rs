//! The canary judge after a run: the samples of each judged metric from the
//! control's and the canary's probe instances in the judged phases, the
//! judgement ([`crate::canary::judge`]), and how its score combines with
//! the hypothesis' tolerances into the run's outcome.
//!
//! How they combine: a run passes only if every tolerance held (and every
//! probe recovered) *and* the judge lets it pass (score ≥ `pass`, or
//! ≥ `marginal` with `marginal_passes: true`; a critical metric that is not
//! `pass` sets the score to 0). Either failing makes the run `failed`
//! (exit 1), with both reasons. Outcomes decided before the verdict
//! (not steady, aborted, error, invalid) stand; the judge is not run then.

use crate::canary::{self, Classification, MetricConfig, Samples, ScoreVerdict};
use crate::experiment::groups::ProbeGroup;
use crate::experiment::judge::{JudgeSpec, Metric};
use crate::experiment::Experiment;
use crate::outcome::Outcome;
use crate::report::JudgeReport;
use crate::stats::Sample;

use super::judge::Verdict;

/// The samples of `metric` of the probe instances at `indices` (a group
/// that selects agents has one per agent, pooled here), in `phases`.
fn values<'a>(all: &'a [Vec<Sample>], indices: &'a [usize], spec: &'a JudgeSpec) -> impl Iterator<Item = &'a Sample> {
    let phases = spec.run_phases();
    indices
        .iter()
        .filter_map(|&i| all.get(i))
        .flatten()
        .filter(move |s| phases.contains(&s.phase))
}

/// The metric's samples for both groups.
pub(super) fn samples_of(
    exp: &Experiment,
    spec: &JudgeSpec,
    probe: &str,
    metric: Metric,
    all: &[Vec<Sample>],
) -> Samples {
    // Every instance of the probe in the group: one, or one per agent.
    let index = |group: &str| -> Vec<usize> {
        let of = |g: &ProbeGroup| g.probe == probe && g.group == group;
        exp.hypothesis
            .probes
            .iter()
            .enumerate()
            .filter(|(_, p)| p.group.as_ref().is_some_and(of))
            .map(|(i, _)| i)
            .collect()
    };
    let (canary, control) = (index(&spec.canary), index(&spec.control));
    match metric {
        Metric::SuccessRate => {
            let count = |i: &[usize]| {
                let (mut ok, mut n) = (0u64, 0u64);
                for s in values(all, i, spec) {
                    n += 1;
                    ok += u64::from(s.ok);
                }
                (ok, n)
            };
            let ((canary_ok, canary_n), (control_ok, control_n)) = (count(&canary), count(&control));
            Samples::Proportion {
                canary_ok,
                canary_n,
                control_ok,
                control_n,
            }
        }
        // Latency of successful samples only: a timeout's latency is the
        // timeout, not the service's (the success rate counts it).
        Metric::Latency => {
            let lat = |i: &[usize]| values(all, i, spec).filter(|s| s.ok).map(|s| s.latency_ms).collect();
            Samples::Continuous {
                canary: lat(&canary),
                control: lat(&control),
            }
        }
        // Every value read, success or not (a value out of a tolerance's
        // bounds is still what the canary measured); NaN is kept for the
        // metric's `nan` strategy to handle.
        Metric::Value => {
            let val = |i: &[usize]| values(all, i, spec).filter_map(|s| s.value).collect();
            Samples::Continuous {
                canary: val(&canary),
                control: val(&control),
            }
        }
    }
}

/// Judges the run's samples.
pub(super) fn judge(exp: &Experiment, spec: &JudgeSpec, all: &[Vec<Sample>]) -> JudgeReport {
    let metrics: Vec<(MetricConfig, Samples)> = spec
        .metrics
        .iter()
        .map(|m| (m.config.clone(), samples_of(exp, spec, &m.probe, m.metric, all)))
        .collect();
    let judgement = canary::judge(&spec.config, &metrics);
    let passed = match judgement.verdict {
        ScoreVerdict::Pass => true,
        ScoreVerdict::Marginal => spec.marginal_passes,
        ScoreVerdict::Fail => false,
    };
    JudgeReport {
        control: spec.control.clone(),
        canary: spec.canary.clone(),
        phases: spec.phases.iter().map(|p| p.as_str().to_string()).collect(),
        marginal_passes: spec.marginal_passes,
        passed,
        settings: metrics.into_iter().map(|(c, _)| c).collect(),
        judgement,
    }
}

/// The judge's reason in one line: score, verdict, and the metrics that
/// did not pass.
pub fn summary(j: &JudgeReport) -> String {
    let bad: Vec<String> = j
        .judgement
        .metrics
        .iter()
        .filter(|m| m.classification != Classification::Pass)
        .map(|m| {
            format!(
                "{} {}{}",
                m.name,
                classification_name(m.classification),
                m.effect_size.map(|e| format!(" (x{e:.2})")).unwrap_or_default()
            )
        })
        .collect();
    let mut s = format!(
        "canary judge: {} vs {}: score {:.0} ({}; pass >= {:.0}, marginal >= {:.0})",
        j.canary,
        j.control,
        j.judgement.score,
        verdict_name(j.judgement.verdict),
        j.judgement.config.pass,
        j.judgement.config.marginal
    );
    if let Some(c) = &j.judgement.critical_failure {
        s.push_str(&format!("; critical: {c}"));
    }
    if !bad.is_empty() {
        s.push_str(&format!("; {}", bad.join(", ")));
    }
    s
}

pub fn classification_name(c: Classification) -> &'static str {
    match c {
        Classification::Pass => "pass",
        Classification::High => "high",
        Classification::Low => "low",
        Classification::Nodata => "nodata",
    }
}

pub fn verdict_name(v: ScoreVerdict) -> &'static str {
    match v {
        ScoreVerdict::Pass => "pass",
        ScoreVerdict::Marginal => "marginal",
        ScoreVerdict::Fail => "fail",
    }
}

/// The run's verdict once the judge has spoken (see the module docs).
pub(super) fn combine(v: Verdict, j: &JudgeReport) -> Verdict {
    match (v.outcome, j.passed) {
        (Outcome::Passed, true) => Verdict {
            outcome: Outcome::Passed,
            reason: format!("{}; {}", v.reason, summary(j)),
        },
        (Outcome::Passed, false) => Verdict {
            outcome: Outcome::Failed,
            reason: format!("the hypothesis held, but the canary did not pass: {}", summary(j)),
        },
        (_, _) => Verdict {
            outcome: v.outcome,
            reason: format!("{}; {}", v.reason, summary(j)),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::canary::{JudgeConfig, Judgement};
    use crate::outcome::Phase;

    const GROUPED: &str = r#"name: gate
hypothesis:
  groups:
    control: { port: "1" }
    canary: { port: "2" }
  probes:
    - name: api
      per_group: true
      interval: 100ms
      tcp: { address: "127.0.0.1:${group.port}" }
duration: 1s
faults:
  - kill: { name: x }
judge:
  phases: [inject, recover]
"#;

    fn sample(phase: Phase, ok: bool, latency_ms: f64) -> Sample {
        Sample {
            at_ms: 0,
            phase,
            ok,
            latency_ms,
            value: None,
            error: None,
        }
    }

    #[test]
    fn each_group_gives_its_own_samples_of_the_judged_phases() {
        let exp = crate::experiment::parse("g.yaml", GROUPED, &HashMap::new()).unwrap();
        let spec = exp.judge.clone().unwrap();
        assert_eq!(exp.hypothesis.probes[0].name, "api [control]");
        assert_eq!(exp.hypothesis.probes[1].name, "api [canary]");
        let all = vec![
            vec![
                sample(Phase::Baseline, true, 1000.0),
                sample(Phase::Observe, true, 1.0),
                sample(Phase::Recover, true, 2.0),
            ],
            vec![
                sample(Phase::Observe, true, 10.0),
                sample(Phase::Observe, false, 500.0),
                sample(Phase::Inject, true, 11.0),
            ],
        ];
        assert_eq!(
            samples_of(&exp, &spec, "api", Metric::Latency, &all),
            Samples::Continuous {
                canary: vec![10.0, 11.0],
                control: vec![1.0, 2.0]
            },
            "baseline samples and the failed sample's latency are not judged"
        );
        assert_eq!(
            samples_of(&exp, &spec, "api", Metric::SuccessRate, &all),
            Samples::Proportion {
                canary_ok: 2,
                canary_n: 3,
                control_ok: 2,
                control_n: 2
            }
        );
        let inject_only = JudgeSpec {
            phases: vec![crate::experiment::judge::JudgePhase::Inject],
            ..spec
        };
        assert_eq!(
            samples_of(&exp, &inject_only, "api", Metric::Latency, &all),
            Samples::Continuous {
                canary: vec![10.0, 11.0],
                control: vec![1.0]
            }
        );
    }

    fn report(verdict: ScoreVerdict, marginal_passes: bool) -> JudgeReport {
        let passed = match verdict {
            ScoreVerdict::Pass => true,
            ScoreVerdict::Marginal => marginal_passes,
            ScoreVerdict::Fail => false,
        };
        JudgeReport {
            control: "control".into(),
            canary: "canary".into(),
            phases: vec!["inject".into()],
            marginal_passes,
            passed,
            settings: Vec::new(),
            judgement: Judgement {
                metrics: Vec::new(),
                score: 80.0,
                verdict,
                critical_failure: None,
                config: JudgeConfig::default(),
            },
        }
    }

    #[test]
    fn the_run_passes_only_when_the_tolerances_and_the_judge_both_pass() {
        let held = || Verdict {
            outcome: Outcome::Passed,
            reason: "held".into(),
        };
        let violated = || Verdict {
            outcome: Outcome::Failed,
            reason: "violated".into(),
        };
        assert_eq!(
            combine(held(), &report(ScoreVerdict::Pass, false)).outcome,
            Outcome::Passed
        );
        let v = combine(held(), &report(ScoreVerdict::Marginal, false));
        assert_eq!(v.outcome, Outcome::Failed, "marginal fails by default");
        assert!(v.reason.contains("score 80 (marginal"), "{}", v.reason);
        assert_eq!(
            combine(held(), &report(ScoreVerdict::Marginal, true)).outcome,
            Outcome::Passed
        );
        assert_eq!(
            combine(held(), &report(ScoreVerdict::Fail, true)).outcome,
            Outcome::Failed
        );
        let v = combine(violated(), &report(ScoreVerdict::Pass, false));
        assert_eq!(v.outcome, Outcome::Failed, "a violated tolerance still fails the run");
        assert!(v.reason.starts_with("violated; canary judge"), "{}", v.reason);
    }
}
