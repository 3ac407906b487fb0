//! The run's verdict: steady state, recovery and the hypothesis during the
//! fault, from the probes' samples (the tolerance checks are in
//! [`crate::verdict`]).

use crate::experiment::Experiment;
use crate::outcome::{Outcome, Phase};
use crate::probes;
use crate::report::ProbeReport;
use crate::stats::{PhaseStats, Sample};
use crate::verdict;

use super::{AbortReason, RECOVERY_STREAK};

pub(super) struct Verdict {
    pub(super) outcome: Outcome,
    pub(super) reason: String,
}

pub(super) fn aborted(reason: &AbortReason, when: &str) -> Verdict {
    let who = reason
        .lock()
        .ok()
        .and_then(|r| r.clone())
        .unwrap_or_else(|| "coordinator shutdown".into());
    Verdict {
        outcome: Outcome::Aborted,
        reason: format!("aborted {when}: {who}"),
    }
}

pub(super) fn phase_stats(samples: &probes::Samples, exp: &Experiment, phases: &[Phase]) -> Vec<PhaseStats> {
    let all = samples.lock().map(|s| s.clone()).unwrap_or_default();
    (0..exp.hypothesis.probes.len())
        .map(|i| PhaseStats::of(all.get(i).into_iter().flatten().filter(|s| phases.contains(&s.phase))))
        .collect()
}

/// True when the last RECOVERY_STREAK samples taken since restore of every
/// probe are healthy.
pub(super) fn recovered_now(samples: &probes::Samples, exp: &Experiment, baseline: &[PhaseStats]) -> bool {
    let Ok(all) = samples.lock() else { return false };
    exp.hypothesis.probes.iter().enumerate().all(|(i, p)| {
        let after: Vec<&Sample> = all[i]
            .iter()
            .filter(|s| matches!(s.phase, Phase::Restore | Phase::Recover))
            .collect();
        after.len() >= RECOVERY_STREAK
            && after[after.len() - RECOVERY_STREAK..]
                .iter()
                .all(|s| verdict::healthy(s, &p.tolerances, &baseline[i]))
    })
}

/// The verdict of a run that got through observe and recover.
pub(super) fn judge(exp: &Experiment, probes: &[ProbeReport]) -> Verdict {
    let mut violated = Vec::new();
    for p in probes {
        for t in &p.tolerances {
            if let Some(c) = t.during.as_ref().filter(|c| !c.passed) {
                violated.push(format!("{}: {} (measured {})", p.name, t.tolerance, c.measured));
            }
        }
    }
    let unrecovered: Vec<&str> = probes
        .iter()
        .filter(|p| !p.recovered)
        .map(|p| p.name.as_str())
        .collect();
    if !violated.is_empty() {
        return Verdict {
            outcome: Outcome::Failed,
            reason: format!("hypothesis violated during the fault: {}", violated.join("; ")),
        };
    }
    if !unrecovered.is_empty() {
        return Verdict {
            outcome: Outcome::Failed,
            reason: format!(
                "hypothesis held during the fault but {} did not recover within the {} recovery window",
                unrecovered.join(", "),
                crate::experiment::fmt_duration(exp.recovery)
            ),
        };
    }
    Verdict {
        outcome: Outcome::Passed,
        reason: "hypothesis held during the fault and after restore".into(),
    }
}
