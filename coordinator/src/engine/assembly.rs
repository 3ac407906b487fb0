//! Assembling the report: the experiment, each probe's phases and
//! recovery, and each fault's placements.

use std::collections::BTreeMap;

use crate::experiment::Experiment;
use crate::outcome::Phase;
use crate::report::*;
use crate::stats::{PhaseStats, Sample};
use crate::verdict::{self, Check};

use super::placement::Placement;

/// The experiment part of a report.
pub(super) fn experiment_info(exp: &Experiment, source: &str) -> ExperimentInfo {
    ExperimentInfo {
        name: exp.name.clone(),
        description: exp.description.clone(),
        hypothesis: exp.hypothesis.description.clone(),
        source: source.to_string(),
        baseline_ms: exp.baseline.as_millis() as u64,
        duration_ms: exp.duration.as_millis() as u64,
        recovery_ms: exp.recovery.as_millis() as u64,
    }
}

pub(super) fn probe_reports(
    exp: &Experiment,
    all: &[Vec<Sample>],
    steady: &[Vec<Option<Check>>],
    inject_at_ms: Option<u64>,
    evaluate_during: bool,
) -> Vec<ProbeReport> {
    exp.hypothesis
        .probes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let s = all.get(i).cloned().unwrap_or_default();
            let of = |phases: &[Phase]| PhaseStats::of(s.iter().filter(|x| phases.contains(&x.phase)));
            let baseline = of(&[Phase::Baseline]);
            let during = of(&[Phase::Observe]);
            let recovery = of(&[Phase::Restore, Phase::Recover]);
            let diff = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a - b);
            let delta = Delta {
                success_rate_points: (during.success_rate - baseline.success_rate) * 100.0,
                p50_ms: diff(during.p50_ms, baseline.p50_ms),
                p90_ms: diff(during.p90_ms, baseline.p90_ms),
                p99_ms: diff(during.p99_ms, baseline.p99_ms),
                max_ms: diff(during.max_ms, baseline.max_ms),
                value_mean: diff(during.value_mean, baseline.value_mean),
            };
            let after: Vec<&Sample> = match inject_at_ms {
                Some(t0) => s
                    .iter()
                    .filter(|x| x.at_ms >= t0 && matches!(x.phase, Phase::Observe | Phase::Restore | Phase::Recover))
                    .collect(),
                None => Vec::new(),
            };
            let mut errors = BTreeMap::new();
            for x in &after {
                if let Some(e) = &x.error {
                    *errors.entry(e.clone()).or_insert(0u32) += 1;
                }
            }
            let healthy: Vec<bool> = after
                .iter()
                .map(|x| verdict::healthy(x, &p.tolerances, &baseline))
                .collect();
            let last_bad = healthy.iter().rposition(|h| !h);
            let (degraded, recovered, ttr) = match last_bad {
                None => (false, true, None),
                Some(j) if j + 1 < after.len() => {
                    (true, true, inject_at_ms.map(|t0| after[j + 1].at_ms.saturating_sub(t0)))
                }
                Some(_) => (true, false, None),
            };
            let tolerances = p
                .tolerances
                .iter()
                .enumerate()
                .map(|(k, t)| ToleranceReport {
                    tolerance: t.to_string(),
                    steady: steady.get(i).and_then(|v| v.get(k)).cloned().flatten(),
                    during: evaluate_during.then(|| verdict::check(t, &during, &baseline)),
                })
                .collect();
            ProbeReport {
                name: p.name.clone(),
                kind: p.kind.name().into(),
                target: p.kind.target(),
                interval_ms: p.interval.as_millis() as u64,
                baseline,
                during,
                recovery,
                delta,
                degraded,
                recovered,
                time_to_recovery_ms: ttr,
                errors,
                tolerances,
                samples: s,
            }
        })
        .collect()
}

pub(super) fn fault_reports(exp: &Experiment, fault_ids: &[String], targets: &[Placement]) -> Vec<FaultReport> {
    exp.faults
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let fault_id = fault_ids.get(i).cloned().unwrap_or_default();
            FaultReport {
                fault_id: fault_id.clone(),
                name: f.name.clone(),
                kind: f.kind.name().into(),
                summary: match &f.targets.containers {
                    Some(c) => format!("{} in {}", f.kind.summary(), c.describe()),
                    None => f.kind.summary(),
                },
                targets: targets
                    .iter()
                    .filter(|t| !fault_id.is_empty() && t.fault_id == fault_id)
                    .map(|t| TargetReport {
                        agent_id: t.agent_id.clone(),
                        hostname: t.hostname.clone(),
                        state: t.state.as_str().into(),
                        backend: t.backend.clone(),
                        injected_at_ms: t.injected_at_ms,
                        restored_at_ms: t.restored_at_ms,
                        restored_by: t.restored_by.clone(),
                        detail: t.detail.clone(),
                        killed: t.observed.killed.clone(),
                        reappeared_after_ms: t.observed.reappeared.map(|r| r.0),
                        reappeared_pid: t.observed.reappeared.map(|r| r.1),
                        peers: t.peers.clone(),
                        objects: t.observed.objects.clone(),
                        packets_delayed: t.observed.packets.map(|p| p.0),
                        packets_dropped: t.observed.packets.map(|p| p.1),
                        figures: t.observed.figures.clone(),
                        notes: t.observed.notes.clone(),
                    })
                    .collect(),
            }
        })
        .collect()
}
