//! Waiting out a timed phase (baseline, observe): progress once a second
//! and, during observe, guardrails, lease renewals and fault statuses.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::checks::{Checks, Kind, State};
use super::context::Ctx;
use super::guardrails::{guardrail_states, GUARDRAIL_EVERY};
use super::leases::renew_leases;
use super::placement::{apply_status, Placement};
use super::progress::emit_progress;
use super::AbortReason;
use crate::experiment::Experiment;
use crate::probes;
use crate::registry::{Registry, StatusFromAgent};
use crate::stats::{PhaseStats, Sample};

/// What the observe phase does besides waiting: renew leases and record
/// fault statuses.
pub(super) struct Observe<'a> {
    pub(super) registry: &'a Registry,
    pub(super) targets: &'a mut Vec<Placement>,
    pub(super) statuses: &'a mut mpsc::UnboundedReceiver<StatusFromAgent>,
    pub(super) lease: Duration,
    /// Baseline statistics per probe, for relative guardrails.
    pub(super) baseline: Vec<PhaseStats>,
    /// Where a tripped guardrail writes why the run is aborted.
    pub(super) abort_reason: &'a AbortReason,
    /// The stop conditions' evaluations (a critical one that turned true
    /// aborts the run).
    pub(super) stop_evaluated: Option<mpsc::UnboundedReceiver<super::stops::Evaluated>>,
    /// The stop conditions' names, shown `pending` until first evaluated.
    pub(super) stop_names: Vec<String>,
}

/// Waits `len` while sending progress once a second; during observe also
/// renews leases and records fault statuses. False if cancelled.
pub(super) async fn wait_with_progress(
    ctx: &mut Ctx,
    exp: &Experiment,
    samples: &probes::Samples,
    len: Duration,
    cancel: &CancellationToken,
    mut observe: Option<Observe<'_>>,
) -> bool {
    let phase = *ctx.phase_tx.borrow();
    let end = Instant::now() + len;
    let mut progress = tokio::time::interval_at(Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
    let renew_every = observe
        .as_ref()
        .map(|o| (o.lease / 3).max(Duration::from_millis(200)))
        .unwrap_or(Duration::from_secs(3600));
    let mut renew = tokio::time::interval_at(Instant::now() + renew_every, renew_every);
    let guarded = observe.is_some() && exp.hypothesis.probes.iter().any(|p| !p.guardrails.is_empty());
    let mut guard = tokio::time::interval_at(Instant::now() + GUARDRAIL_EVERY, GUARDRAIL_EVERY);
    let mut last_progress = Instant::now();
    let mut evaluated_rx = observe.as_mut().and_then(|o| o.stop_evaluated.take());
    // Every check shows from the start of observe, pending until judged.
    let mut checks = Checks::default();
    if let Some(o) = observe.as_ref() {
        let all: Vec<Vec<Sample>> = samples.lock().map(|s| s.clone()).unwrap_or_default();
        for g in guardrail_states(&all, exp, &o.baseline, ctx.elapsed_ms()) {
            checks
                .set(ctx, Kind::Guardrail, &g.name, State::Pending, g.detail)
                .await;
        }
        for name in &o.stop_names {
            checks
                .set(
                    ctx,
                    Kind::StopCondition,
                    name,
                    State::Pending,
                    "not evaluated yet".into(),
                )
                .await;
        }
    }
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep_until(end) => {
                // A final tally, unless a periodic one just went out.
                if last_progress.elapsed() > Duration::from_millis(300) {
                    emit_progress(ctx, exp, samples, phase).await;
                }
                return true;
            }
            _ = progress.tick() => {
                emit_progress(ctx, exp, samples, phase).await;
                last_progress = Instant::now();
            }
            _ = guard.tick(), if guarded => {
                if let Some(o) = observe.as_ref() {
                    let all: Vec<Vec<Sample>> = samples.lock().map(|s| s.clone()).unwrap_or_default();
                    let states = guardrail_states(&all, exp, &o.baseline, ctx.elapsed_ms());
                    for g in &states {
                        checks.set(ctx, Kind::Guardrail, &g.name, g.state, g.detail.clone()).await;
                    }
                    if let Some(why) = states.into_iter().find_map(|g| g.violation) {
                        warn!(run_id = %ctx.run_id, %why, "guardrail tripped: aborting the run");
                        if let Ok(mut r) = o.abort_reason.lock() {
                            r.get_or_insert(why.clone());
                        }
                        ctx.log(format!("{why}: aborting and restoring")).await;
                        return false;
                    }
                }
            }
            _ = renew.tick() => {
                if let Some(o) = observe.as_ref() {
                    renew_leases(o.registry, o.targets, o.lease);
                }
            }
            Some(eval) = recv_evaluated(evaluated_rx.as_mut()) => {
                checks.set(ctx, Kind::StopCondition, &eval.name, eval.state, eval.detail).await;
                if let (Some(o), Some(fired)) = (observe.as_ref(), eval.fired) {
                    warn!(run_id = %ctx.run_id, why = %fired.why, "stop condition: aborting the run");
                    if let Ok(mut r) = o.abort_reason.lock() {
                        r.get_or_insert(fired.why.clone());
                    }
                    ctx.log(format!("{}: aborting and restoring", fired.why)).await;
                    return false;
                }
            }
            Some(st) = recv_opt(observe.as_mut().map(|o| &mut *o.statuses)) => {
                if let Some(o) = observe.as_mut() {
                    apply_status(ctx, o.targets, st).await;
                }
            }
        }
    }
}

async fn recv_opt(rx: Option<&mut mpsc::UnboundedReceiver<StatusFromAgent>>) -> Option<StatusFromAgent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_evaluated(
    rx: Option<&mut mpsc::UnboundedReceiver<super::stops::Evaluated>>,
) -> Option<super::stops::Evaluated> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
