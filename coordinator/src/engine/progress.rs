//! Probe progress events: samples and successes so far in the phase, the
//! samples completed since the previous event (the console's live chart),
//! and the baseline band once the baseline has ended.

use faultline_proto::v1;

use super::context::Ctx;
use crate::experiment::Experiment;
use crate::outcome::Phase;
use crate::probes;
use crate::stats::{nearest_rank, Sample};

/// Most points one event carries: a probe sampling every 10 ms sends 100
/// a second, so only a stalled emitter drops any (the oldest first).
pub(super) const MAX_POINTS: usize = 500;

pub(super) async fn emit_progress(ctx: &Ctx, exp: &Experiment, samples: &probes::Samples, phase: Phase) {
    let events: Vec<v1::ProbeProgress> = {
        let (Ok(all), Ok(mut sent)) = (samples.lock(), ctx.points_sent.lock()) else {
            return;
        };
        sent.resize(all.len(), 0);
        exp.hypothesis
            .probes
            .iter()
            .zip(all.iter())
            .zip(sent.iter_mut())
            .map(|((probe, s), sent)| {
                let progress = progress(&probe.name, s, phase, *sent);
                *sent = s.len();
                progress
            })
            .collect()
    };
    for p in events {
        ctx.emit(v1::run_event::Event::Probe(p)).await;
    }
}

/// A last progress for the phase the run is in, once its probes have
/// stopped, if any sample has not gone out as a point yet.
pub(super) async fn emit_final(ctx: &Ctx, exp: &Experiment, samples: &probes::Samples) {
    let Some(phase) = ctx.phases.last().map(|p| p.phase) else {
        return;
    };
    let unsent = match (samples.lock(), ctx.points_sent.lock()) {
        (Ok(all), Ok(sent)) => all
            .iter()
            .enumerate()
            .any(|(i, s)| s.len() > sent.get(i).copied().unwrap_or(0)),
        _ => false,
    };
    if unsent {
        emit_progress(ctx, exp, samples, phase).await;
    }
}

/// The event for one probe's samples `s`, of which the first `sent` were
/// sent as points already.
fn progress(name: &str, s: &[Sample], phase: Phase, sent: usize) -> v1::ProbeProgress {
    let in_phase: Vec<&Sample> = s.iter().filter(|x| x.phase == phase).collect();
    let last = in_phase.last();
    let fresh = s.get(sent.min(s.len())..).unwrap_or(&[]);
    let fresh = &fresh[fresh.len().saturating_sub(MAX_POINTS)..];
    v1::ProbeProgress {
        probe: name.to_string(),
        phase: phase.to_string(),
        samples: in_phase.len() as u32,
        successes: in_phase.iter().filter(|x| x.ok).count() as u32,
        last_latency_us: last.map(|l| (l.latency_ms * 1000.0) as u64).unwrap_or(0),
        last_error: last.and_then(|l| l.error.clone()).unwrap_or_default(),
        points: fresh
            .iter()
            .map(|x| v1::ProbePoint {
                at_ms: x.at_ms,
                ok: x.ok,
                latency_us: (x.latency_ms * 1000.0) as u64,
                value: x.value,
            })
            .collect(),
        baseline: (phase != Phase::Baseline).then(|| band(s)).flatten(),
    }
}

/// The 5th–95th percentile of the baseline: of the measured values when
/// the probe measures one, else of the successful samples' latency. p5–p95
/// rather than min–max so one slow baseline sample does not widen the
/// band a reader compares the fault window against.
pub(super) fn band(s: &[Sample]) -> Option<v1::ProbeBand> {
    let base: Vec<&Sample> = s.iter().filter(|x| x.phase == Phase::Baseline).collect();
    let values: Vec<f64> = base.iter().filter_map(|x| x.value).filter(|v| v.is_finite()).collect();
    let (mut figures, unit) = if values.is_empty() {
        let lat = base.iter().filter(|x| x.ok).map(|x| x.latency_ms).collect();
        (lat, "ms")
    } else {
        (values, "value")
    };
    figures.sort_by(f64::total_cmp);
    Some(v1::ProbeBand {
        low: nearest_rank(&figures, 5.0)?,
        high: nearest_rank(&figures, 95.0)?,
        unit: unit.to_string(),
        samples: figures.len() as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u64, phase: Phase, ok: bool, latency_ms: f64, value: Option<f64>) -> Sample {
        Sample {
            at_ms,
            phase,
            ok,
            latency_ms,
            value,
            error: (!ok).then(|| "refused".to_string()),
        }
    }

    #[test]
    fn each_sample_is_sent_once_as_a_point_and_the_band_comes_after_the_baseline() {
        let mut s: Vec<Sample> = (1..=20)
            .map(|i| sample(i * 10, Phase::Baseline, true, i as f64, None))
            .collect();
        s.push(sample(210, Phase::Baseline, false, 900.0, None));
        let p = progress("web", &s, Phase::Baseline, 0);
        assert_eq!(p.points.len(), 21);
        assert_eq!((p.samples, p.successes), (21, 20));
        assert!(p.baseline.is_none(), "no band while the baseline runs");

        s.push(sample(300, Phase::Observe, true, 50.0, None));
        let p = progress("web", &s, Phase::Observe, 21);
        assert_eq!(p.points.len(), 1, "only the new sample");
        assert_eq!((p.points[0].at_ms, p.points[0].latency_us), (300, 50_000));
        let b = p.baseline.expect("band after the baseline");
        // Nearest rank over the 20 successful latencies 1..=20 ms: the
        // failed 900 ms sample is left out.
        assert_eq!((b.low, b.high, b.unit.as_str(), b.samples), (1.0, 19.0, "ms", 20));
    }

    #[test]
    fn a_measuring_probe_gets_a_band_of_its_values_and_points_are_capped() {
        let s: Vec<Sample> = (0..1000)
            .map(|i| sample(i, Phase::Baseline, true, 1.0, Some(i as f64)))
            .collect();
        let b = band(&s).unwrap();
        assert_eq!((b.low, b.high, b.unit.as_str()), (49.0, 949.0, "value"));
        let p = progress("q", &s, Phase::Baseline, 0);
        assert_eq!(p.points.len(), MAX_POINTS);
        assert_eq!(p.points[0].at_ms, 500, "the newest are kept");
        assert!(band(&[]).is_none());
    }
}
