//! Guardrails: tolerances checked during observe over a sliding window;
//! a violation aborts the run, which then restores.

use std::time::Duration;

use super::checks::State;
use crate::experiment::Experiment;
use crate::outcome::Phase;
use crate::stats::{PhaseStats, Sample};
use crate::verdict;

/// How often guardrails are evaluated during observe.
pub const GUARDRAIL_EVERY: Duration = Duration::from_millis(200);
/// Fewest samples in a guardrail's window before it may trip, so one
/// unlucky sample does not abort a run.
pub const GUARDRAIL_MIN_SAMPLES: usize = 3;

/// One guardrail's state at one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardrailState {
    /// `PROBE: TOLERANCE over WINDOW`, unique per guardrail of a run.
    pub name: String,
    pub state: State,
    /// The measured figure, or why it is pending.
    pub detail: String,
    /// Why the run is aborted, when breached.
    pub violation: Option<String>,
}

/// Every guardrail's state over the observe samples of its last window
/// before `now_ms`, in the order of the probes and their guardrails.
pub fn guardrail_states(
    all: &[Vec<Sample>],
    exp: &Experiment,
    baseline: &[PhaseStats],
    now_ms: u64,
) -> Vec<GuardrailState> {
    let mut out = Vec::new();
    for (i, probe) in exp.hypothesis.probes.iter().enumerate() {
        let samples = all.get(i).map(Vec::as_slice).unwrap_or_default();
        for g in &probe.guardrails {
            let window = crate::experiment::fmt_duration(g.window);
            let name = format!("{}: {} over {window}", probe.name, g.tolerance);
            let window_ms = g.window.as_millis() as u64;
            let recent: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.phase == Phase::Observe && s.at_ms + window_ms >= now_ms)
                .collect();
            if recent.len() < GUARDRAIL_MIN_SAMPLES {
                out.push(GuardrailState {
                    name,
                    state: State::Pending,
                    detail: format!("{} of {GUARDRAIL_MIN_SAMPLES} samples in the window", recent.len()),
                    violation: None,
                });
                continue;
            }
            let stats = PhaseStats::of(recent.iter().copied());
            let empty = PhaseStats::of(std::iter::empty());
            let c = verdict::check(&g.tolerance, &stats, baseline.get(i).unwrap_or(&empty));
            let detail = format!("measured {} ({} samples)", c.measured, recent.len());
            let violation = (!c.passed).then(|| {
                format!(
                    "guardrail {}: {} over the last {window}: {detail}",
                    probe.name, g.tolerance
                )
            });
            out.push(GuardrailState {
                name,
                state: if c.passed { State::Ok } else { State::Breached },
                detail,
                violation,
            });
        }
    }
    out
}

/// The first guardrail violated by the observe samples of the last window
/// before `now_ms`, in words.
pub fn guardrail_violation(
    all: &[Vec<Sample>],
    exp: &Experiment,
    baseline: &[PhaseStats],
    now_ms: u64,
) -> Option<String> {
    guardrail_states(all, exp, baseline, now_ms)
        .into_iter()
        .find_map(|g| g.violation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::exp;

    fn sample(at_ms: u64, ok: bool, phase: Phase) -> Sample {
        Sample {
            at_ms,
            phase,
            ok,
            latency_ms: 1.0,
            value: None,
            error: (!ok).then(|| "refused".into()),
        }
    }

    #[test]
    fn guardrails_judge_only_recent_observe_samples_and_need_a_few() {
        let e = exp();
        let base = vec![PhaseStats::of(std::iter::empty())];
        // Two failures are not enough to trip.
        let two = vec![vec![
            sample(5000, false, Phase::Observe),
            sample(5100, false, Phase::Observe),
        ]];
        assert_eq!(guardrail_violation(&two, &e, &base, 5200), None);
        // Old failures (outside the 1 s window) and baseline failures do not count.
        let mut s = vec![sample(100, false, Phase::Baseline), sample(200, false, Phase::Baseline)];
        s.extend((0..5).map(|i| sample(1000 + i * 100, false, Phase::Observe)));
        s.extend((0..5).map(|i| sample(3000 + i * 100, true, Phase::Observe)));
        assert_eq!(guardrail_violation(&[s.clone()], &e, &base, 3500), None);
        // Three recent failures trip it, with the numbers.
        s.extend((0..3).map(|i| sample(3500 + i * 100, false, Phase::Observe)));
        let why = guardrail_violation(&[s], &e, &base, 3800).unwrap();
        assert!(
            why.starts_with("guardrail web: success rate >= 80.0% over the last 1s: measured"),
            "{why}"
        );
    }
}
