//! Probe progress events: samples and successes so far in the phase.

use faultline_proto::v1;

use super::context::Ctx;
use crate::experiment::Experiment;
use crate::outcome::Phase;
use crate::probes;
use crate::stats::Sample;

pub(super) async fn emit_progress(ctx: &Ctx, exp: &Experiment, samples: &probes::Samples, phase: Phase) {
    let snapshot: Vec<(u32, u32, u64, String)> = match samples.lock() {
        Ok(all) => all
            .iter()
            .map(|s| {
                let in_phase: Vec<&Sample> = s.iter().filter(|x| x.phase == phase).collect();
                let ok = in_phase.iter().filter(|x| x.ok).count() as u32;
                let last = in_phase.last();
                (
                    in_phase.len() as u32,
                    ok,
                    last.map(|l| (l.latency_ms * 1000.0) as u64).unwrap_or(0),
                    last.and_then(|l| l.error.clone()).unwrap_or_default(),
                )
            })
            .collect(),
        Err(_) => return,
    };
    for (probe, (n, ok, lat, err)) in exp.hypothesis.probes.iter().zip(snapshot) {
        ctx.emit(v1::run_event::Event::Probe(v1::ProbeProgress {
            probe: probe.name.clone(),
            phase: phase.to_string(),
            samples: n,
            successes: ok,
            last_latency_us: lat,
            last_error: err,
        }))
        .await;
    }
}
