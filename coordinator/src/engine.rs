//! The run engine: plan → baseline → steady? → inject → observe → restore →
//! recover → verdict → report.
//!
//! The shape of [`execute`] guarantees the one property that matters most:
//! once anything may have been injected, the restore phase runs, whatever
//! happened in between (a refused injection, an operator abort, Ctrl-C on the
//! CLI, coordinator shutdown). A target whose restore is not acknowledged is
//! reported as such; the agent's lease restores it on its own.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_proto::{now_unix_ms, v1};
use futures::FutureExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn, Instrument};

use crate::experiment::faults::Observed;
use crate::experiment::{Experiment, FaultKind};
use crate::outcome::{Outcome, Phase};
use crate::planner::{self, Plan};
use crate::policy::Policy;
use crate::probes;
use crate::registry::{Registry, StatusFromAgent};
use crate::report::*;
use crate::stats::{PhaseStats, Sample};
use crate::verdict::{self, Check};

/// How long to wait for every target to acknowledge an inject or a restore.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How many consecutive healthy samples of every probe end the recover phase.
pub const RECOVERY_STREAK: usize = 3;

/// Why a run is being aborted, filled in by whoever cancels it.
pub type AbortReason = Arc<Mutex<Option<String>>>;

/// Everything a run needs.
pub struct RunInput {
    pub run_id: String,
    pub experiment: Experiment,
    pub source_name: String,
    pub registry: Arc<Registry>,
    pub events: mpsc::Sender<v1::RunEvent>,
    pub cancel: CancellationToken,
    pub abort_reason: AbortReason,
    /// The coordinator's policy.
    pub policy: Arc<Policy>,
    /// Other runs in flight when this one was submitted.
    pub running: usize,
    /// Where fault counts and latencies go.
    pub metrics: faultline_proto::metrics::Metrics,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetState {
    Pending,
    Injected,
    Refused,
    Failed,
    Restored,
    Expired,
}

impl TargetState {
    fn as_str(self) -> &'static str {
        match self {
            TargetState::Pending => "pending",
            TargetState::Injected => "injected",
            TargetState::Refused => "refused",
            TargetState::Failed => "failed",
            TargetState::Restored => "restored",
            TargetState::Expired => "expired",
        }
    }
}

/// One fault on one agent, as the run tracks it.
struct Target {
    fault_id: String,
    /// Fault kind, for metrics.
    kind: String,
    agent_id: String,
    hostname: String,
    state: TargetState,
    backend: String,
    detail: String,
    injected_at_ms: Option<u64>,
    restored_at_ms: Option<u64>,
    restored_by: Option<String>,
    restore_sent: bool,
    /// Network faults: resolved peer networks sent to the agent.
    peers: Vec<String>,
    /// What the agent observed, as the fault's kind reads it.
    observed: Observed,
}

struct Ctx {
    metrics: faultline_proto::metrics::Metrics,
    /// When the inject and restore phases started (ms since start), for
    /// the acknowledgement latency histograms.
    inject_sent_ms: u64,
    restore_sent_ms: u64,
    run_id: String,
    start: Instant,
    events: mpsc::Sender<v1::RunEvent>,
    phase_tx: watch::Sender<Phase>,
    phases: Vec<PhaseSpan>,
}

impl Ctx {
    fn elapsed_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    async fn emit(&self, event: v1::run_event::Event) {
        // A client that went away does not stop the run.
        let _ = self
            .events
            .send(v1::RunEvent {
                run_id: self.run_id.clone(),
                elapsed_ms: self.elapsed_ms(),
                event: Some(event),
            })
            .await;
    }

    async fn log(&self, message: String) {
        info!(run_id = %self.run_id, "{message}");
        self.emit(v1::run_event::Event::Log(v1::LogLine { message })).await;
    }

    async fn enter(&mut self, phase: Phase, planned: Duration) {
        let now = self.elapsed_ms();
        if let Some(last) = self.phases.last_mut() {
            last.end_ms = now;
        }
        self.phases.push(PhaseSpan {
            phase,
            start_ms: now,
            end_ms: now,
        });
        self.phase_tx.send_replace(phase);
        info!(run_id = %self.run_id, %phase, "phase");
        self.emit(v1::run_event::Event::Phase(v1::PhaseChanged {
            phase: phase.to_string(),
            planned_ms: planned.as_millis() as u64,
        }))
        .await;
    }

    fn close_phases(&mut self) {
        let now = self.elapsed_ms();
        if let Some(last) = self.phases.last_mut() {
            last.end_ms = now;
        }
    }
}

/// Result of a run.
pub struct RunOutput {
    pub report: Report,
}

/// Runs one experiment to completion and returns its report.
pub async fn execute(input: RunInput) -> RunOutput {
    execute_with(input, run_body).await
}

/// The body of a run: the phases, given the ledger of what it sends.
pub type Body = fn(RunInput, Sent) -> Pin<Box<dyn Future<Output = RunOutput> + Send>>;

/// The real run body.
pub fn run_body(input: RunInput, sent: Sent) -> Pin<Box<dyn Future<Output = RunOutput> + Send>> {
    Box::pin(execute_inner(input, sent))
}

/// Faults a run has sent Inject for, as (agent id, fault id). Kept outside
/// the run's own state so that a run which dies half-way (a panic) can
/// still have them restored.
#[derive(Clone, Default)]
pub struct Sent(Arc<Mutex<Vec<(String, String)>>>);

impl Sent {
    pub fn push(&self, agent_id: &str, fault_id: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((agent_id.to_string(), fault_id.to_string()));
    }

    fn take(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Runs `body` and always returns a report: if the body panics, every
/// fault it sent Inject for gets a Restore (the agents' leases back this
/// up), and the run ends as `error` instead of staying "running" forever
/// with its concurrency slot taken.
pub async fn execute_with(input: RunInput, body: Body) -> RunOutput {
    let span = info_span!("run", run_id = %input.run_id, experiment = %input.experiment.name);
    let run_id = input.run_id.clone();
    let registry = input.registry.clone();
    let events = input.events.clone();
    let experiment = experiment_info(&input.experiment, &input.source_name);
    let started_at = rfc3339_now();
    let start = Instant::now();
    let sent = Sent::default();
    let result = AssertUnwindSafe(body(input, sent.clone()).instrument(span))
        .catch_unwind()
        .await;
    let panic = match result {
        Ok(out) => return out,
        Err(p) => p,
    };
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    error!(run_id = %run_id, panic = %what, "run task panicked: restoring what it may have injected");
    registry.unsubscribe(&run_id);
    let targets = sent.take();
    let mut told = 0;
    for (agent_id, fault_id) in &targets {
        let msg = v1::CoordinatorMessage {
            msg: Some(v1::coordinator_message::Msg::Restore(v1::Restore {
                fault_id: fault_id.clone(),
                run_id: run_id.clone(),
            })),
        };
        match registry.send(agent_id, msg) {
            Ok(()) => told += 1,
            Err(e) => {
                warn!(run_id = %run_id, fault_id = %fault_id, agent_id = %agent_id, err = %e, "restore not sent; the agent's lease restores it")
            }
        }
    }
    let reason = format!(
        "internal error, the run stopped: {what}; Restore was sent to {told} of {} target(s) it had injected (their leases restore the rest)",
        targets.len()
    );
    let elapsed_ms = start.elapsed().as_millis() as u64;
    let _ = events
        .send(v1::RunEvent {
            run_id: run_id.clone(),
            elapsed_ms,
            event: Some(v1::run_event::Event::Log(v1::LogLine {
                message: reason.clone(),
            })),
        })
        .await;
    RunOutput {
        report: Report {
            schema_version: SCHEMA_VERSION,
            run_id,
            experiment,
            outcome: Outcome::Error,
            exit_code: Outcome::Error.exit_code(),
            reason,
            started_at,
            finished_at: rfc3339_now(),
            duration_ms: elapsed_ms,
            aborted_by: None,
            phases: Vec::new(),
            probes: Vec::new(),
            faults: Vec::new(),
            events: Vec::new(),
        },
    }
}

/// The experiment part of a report.
fn experiment_info(exp: &Experiment, source: &str) -> ExperimentInfo {
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

struct Verdict {
    outcome: Outcome,
    reason: String,
}

async fn execute_inner(input: RunInput, sent: Sent) -> RunOutput {
    let RunInput {
        run_id,
        experiment: exp,
        source_name,
        registry,
        events,
        cancel,
        abort_reason,
        policy,
        running,
        metrics,
    } = input;
    let started_at = rfc3339_now();
    let (phase_tx, phase_rx) = watch::channel(Phase::Validate);
    let mut ctx = Ctx {
        metrics,
        inject_sent_ms: 0,
        restore_sent_ms: 0,
        run_id: run_id.clone(),
        start: Instant::now(),
        events,
        phase_tx,
        phases: Vec::new(),
    };
    ctx.emit(v1::run_event::Event::Started(v1::RunStarted {
        experiment: exp.name.clone(),
        planned_ms: (exp.baseline + exp.duration + exp.recovery).as_millis() as u64,
    }))
    .await;
    ctx.enter(Phase::Validate, Duration::ZERO).await;
    let mut status_rx = registry.subscribe(&run_id);
    let mut targets: Vec<Target> = Vec::new();
    let mut fault_ids: Vec<String> = Vec::new();
    let mut inject_at_ms: Option<u64> = None;
    let mut steady_checks: Vec<Vec<Option<Check>>> = vec![Vec::new(); exp.hypothesis.probes.len()];

    // ---- plan ----
    ctx.enter(Phase::Plan, Duration::ZERO).await;
    let plan = planner::plan(
        &exp,
        &registry.agents(),
        &planner::Context {
            policy: &policy,
            now: time::OffsetDateTime::now_utc(),
            running,
        },
    );
    let probe_stop = CancellationToken::new();
    // Probe tasks stop when the run ends, however it ends (also a panic).
    let _probes_stop = probe_stop.clone().drop_guard();
    let mut samples: probes::Samples = Arc::new(Mutex::new(vec![Vec::new(); exp.hypothesis.probes.len()]));
    let mut verdict: Option<Verdict> = None;

    let plan: Option<Plan> = match plan {
        Ok(p) => {
            for pf in &p.faults {
                let ids: Vec<&str> = pf.targets.iter().map(|t| t.agent_id.as_str()).collect();
                ctx.log(format!(
                    "plan: {} {} on {} of {} matching agent(s): {}",
                    pf.fault.name,
                    pf.fault.kind.name(),
                    pf.targets.len(),
                    pf.matching,
                    ids.join(", ")
                ))
                .await;
            }
            Some(p)
        }
        Err(e) => {
            warn!(run_id = %run_id, err = %e, "plan refused");
            verdict = Some(Verdict {
                outcome: e.outcome(),
                reason: e.to_string(),
            });
            None
        }
    };

    if let Some(plan) = &plan {
        // ---- baseline ----
        let (s, _tasks) = probes::start(&exp.hypothesis.probes, ctx.start, phase_rx.clone(), probe_stop.clone());
        samples = s;
        ctx.enter(Phase::Baseline, exp.baseline).await;
        if !wait_with_progress(&mut ctx, &exp, &samples, exp.baseline, &cancel, None).await {
            verdict = Some(aborted(&abort_reason, "during the baseline; nothing was injected"));
        }

        // ---- steady? ----
        if verdict.is_none() {
            ctx.enter(Phase::Steady, Duration::ZERO).await;
            let baseline_stats = phase_stats(&samples, &exp, &[Phase::Baseline]);
            let mut problems = Vec::new();
            for (i, probe) in exp.hypothesis.probes.iter().enumerate() {
                for t in &probe.tolerances {
                    let c = match t {
                        crate::experiment::Tolerance::RelativeLatency { .. } => None,
                        _ => Some(verdict::check(t, &baseline_stats[i], &baseline_stats[i])),
                    };
                    if let Some(c) = &c {
                        if !c.passed {
                            problems.push(format!("{}: {t}: measured {}", probe.name, c.measured));
                        }
                    }
                    steady_checks[i].push(c);
                }
                if baseline_stats[i].samples == 0 {
                    problems.push(format!("{}: no sample completed during the baseline", probe.name));
                }
            }
            if !problems.is_empty() {
                verdict = Some(Verdict {
                    outcome: Outcome::NotSteady,
                    reason: format!(
                        "the baseline already violates the hypothesis, so nothing was injected: {}",
                        problems.join("; ")
                    ),
                });
            } else {
                ctx.log("steady state holds: every tolerance is met by the baseline".into())
                    .await;
            }
        }

        // ---- inject ----
        if verdict.is_none() {
            ctx.enter(Phase::Inject, Duration::ZERO).await;
            ctx.inject_sent_ms = ctx.elapsed_ms();
            for pf in &plan.faults {
                let fault_id = format!("{run_id}-{}", pf.index + 1);
                fault_ids.push(fault_id.clone());
                for (ti, agent) in pf.targets.iter().enumerate() {
                    let mut t = Target {
                        fault_id: fault_id.clone(),
                        kind: pf.fault.kind.name().to_string(),
                        agent_id: agent.agent_id.clone(),
                        hostname: agent.hostname.clone(),
                        state: TargetState::Pending,
                        backend: String::new(),
                        detail: String::new(),
                        injected_at_ms: None,
                        restored_at_ms: None,
                        restored_by: None,
                        restore_sent: false,
                        peers: pf.peers.get(ti).cloned().unwrap_or_default(),
                        observed: Observed::default(),
                    };
                    let msg = v1::CoordinatorMessage {
                        msg: Some(v1::coordinator_message::Msg::Inject(v1::Inject {
                            fault_id: fault_id.clone(),
                            run_id: run_id.clone(),
                            spec: Some(spec_to_wire(
                                &pf.fault.kind,
                                pf.peers.get(ti).map(Vec::as_slice).unwrap_or(&[]),
                            )),
                            lease_ms: exp.lease.as_millis() as u64,
                            dry_run: false,
                        })),
                    };
                    sent.push(&agent.agent_id, &fault_id);
                    if let Err(e) = registry.send(&agent.agent_id, msg) {
                        t.state = TargetState::Failed;
                        t.detail = e;
                    }
                    targets.push(t);
                }
            }
            targets.sort_by(|a, b| (&a.fault_id, &a.agent_id).cmp(&(&b.fault_id, &b.agent_id)));
            let acked = wait_for_acks(&mut ctx, &mut targets, &mut status_rx, &cancel, |t| {
                t.state != TargetState::Pending
            })
            .await;
            for t in targets.iter_mut().filter(|t| t.state == TargetState::Pending) {
                t.state = TargetState::Failed;
                t.detail = format!("no inject acknowledgement within {}s", ACK_TIMEOUT.as_secs());
            }
            inject_at_ms = targets.iter().filter_map(|t| t.injected_at_ms).min();
            let bad: Vec<String> = targets
                .iter()
                .filter(|t| matches!(t.state, TargetState::Refused | TargetState::Failed))
                .map(|t| {
                    format!(
                        "agent {} {} fault {}: {}",
                        t.agent_id,
                        t.state.as_str(),
                        t.fault_id,
                        t.detail
                    )
                })
                .collect();
            if !acked && cancel.is_cancelled() {
                verdict = Some(aborted(&abort_reason, "during injection"));
            } else if !bad.is_empty() {
                verdict = Some(Verdict {
                    outcome: Outcome::Error,
                    reason: format!(
                        "injection failed, so every injected target was restored: {}",
                        bad.join("; ")
                    ),
                });
            }
        }

        // ---- observe ----
        if verdict.is_none() {
            ctx.enter(Phase::Observe, exp.duration).await;
            if !wait_with_progress(
                &mut ctx,
                &exp,
                &samples,
                exp.duration,
                &cancel,
                Some(Observe {
                    registry: &registry,
                    targets: &mut targets,
                    statuses: &mut status_rx,
                    lease: exp.lease,
                    baseline: phase_stats(&samples, &exp, &[Phase::Baseline]),
                    abort_reason: &abort_reason,
                }),
            )
            .await
            {
                verdict = Some(aborted(&abort_reason, "while faults were injected"));
            }
        }

        // ---- restore: always, once anything may have been injected ----
        if !targets.is_empty() {
            ctx.enter(Phase::Restore, Duration::ZERO).await;
            restore(&mut ctx, &registry, &mut targets, &mut status_rx).await;
        }

        // ---- recover ----
        if verdict.is_none() {
            ctx.enter(Phase::Recover, exp.recovery).await;
            let baseline_stats = phase_stats(&samples, &exp, &[Phase::Baseline]);
            let deadline = Instant::now() + exp.recovery;
            let step = exp
                .hypothesis
                .probes
                .iter()
                .map(|p| p.interval)
                .min()
                .unwrap_or(Duration::from_secs(1));
            let mut progress =
                tokio::time::interval_at(Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
            loop {
                if recovered_now(&samples, &exp, &baseline_stats) {
                    ctx.log("hypothesis holds again".into()).await;
                    break;
                }
                if Instant::now() >= deadline {
                    break;
                }
                tokio::select! {
                    _ = cancel.cancelled() => {
                        verdict = Some(aborted(&abort_reason, "during recovery (faults were already restored)"));
                        break;
                    }
                    _ = tokio::time::sleep(step.min(deadline.saturating_duration_since(Instant::now()))) => {}
                    _ = progress.tick() => emit_progress(&ctx, &exp, &samples, Phase::Recover).await,
                }
                drain_statuses(&ctx, &mut targets, &mut status_rx).await;
            }
        }
    }

    // ---- verdict ----
    probe_stop.cancel();
    ctx.enter(Phase::Verdict, Duration::ZERO).await;
    drain_statuses(&ctx, &mut targets, &mut status_rx).await;
    registry.unsubscribe(&run_id);
    let all_samples: Vec<Vec<Sample>> = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let probes = probe_reports(
        &exp,
        &all_samples,
        &steady_checks,
        inject_at_ms,
        verdict.is_none() && plan.is_some(),
    );
    let verdict = verdict.unwrap_or_else(|| judge(&exp, &probes));
    ctx.enter(Phase::Report, Duration::ZERO).await;
    ctx.close_phases();
    let aborted_by = (verdict.outcome == Outcome::Aborted)
        .then(|| abort_reason.lock().ok().and_then(|r| r.clone()))
        .flatten();
    let report = Report {
        schema_version: SCHEMA_VERSION,
        run_id: run_id.clone(),
        experiment: experiment_info(&exp, &source_name),
        outcome: verdict.outcome,
        exit_code: verdict.outcome.exit_code(),
        reason: verdict.reason,
        started_at,
        finished_at: rfc3339_now(),
        duration_ms: ctx.elapsed_ms(),
        aborted_by,
        phases: ctx.phases.clone(),
        probes,
        faults: fault_reports(&exp, &fault_ids, &targets),
        events: Vec::new(),
    };
    info!(run_id = %run_id, outcome = %report.outcome, "run finished");
    RunOutput { report }
}

fn aborted(reason: &AbortReason, when: &str) -> Verdict {
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

/// What the observe phase does besides waiting: renew leases and record
/// fault statuses.
struct Observe<'a> {
    registry: &'a Registry,
    targets: &'a mut Vec<Target>,
    statuses: &'a mut mpsc::UnboundedReceiver<StatusFromAgent>,
    lease: Duration,
    /// Baseline statistics per probe, for relative guardrails.
    baseline: Vec<PhaseStats>,
    /// Where a tripped guardrail writes why the run is aborted.
    abort_reason: &'a AbortReason,
}

/// How often guardrails are evaluated during observe.
pub const GUARDRAIL_EVERY: Duration = Duration::from_millis(200);
/// Fewest samples in a guardrail's window before it may trip, so one
/// unlucky sample does not abort a run.
pub const GUARDRAIL_MIN_SAMPLES: usize = 3;

/// The first guardrail violated by the observe samples of the last window
/// before `now_ms`, in words.
pub fn guardrail_violation(
    all: &[Vec<Sample>],
    exp: &Experiment,
    baseline: &[PhaseStats],
    now_ms: u64,
) -> Option<String> {
    for (i, probe) in exp.hypothesis.probes.iter().enumerate() {
        let Some(samples) = all.get(i) else { continue };
        for g in &probe.guardrails {
            let window_ms = g.window.as_millis() as u64;
            let recent: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.phase == Phase::Observe && s.at_ms + window_ms >= now_ms)
                .collect();
            if recent.len() < GUARDRAIL_MIN_SAMPLES {
                continue;
            }
            let stats = PhaseStats::of(recent.iter().copied());
            let empty = PhaseStats::of(std::iter::empty());
            let c = verdict::check(&g.tolerance, &stats, baseline.get(i).unwrap_or(&empty));
            if !c.passed {
                return Some(format!(
                    "guardrail {}: {} over the last {}: measured {} ({} samples)",
                    probe.name,
                    g.tolerance,
                    crate::experiment::fmt_duration(g.window),
                    c.measured,
                    recent.len()
                ));
            }
        }
    }
    None
}

/// Waits `len` while sending progress once a second; during observe also
/// renews leases and records fault statuses. False if cancelled.
async fn wait_with_progress(
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
                    if let Some(why) = guardrail_violation(&all, exp, &o.baseline, ctx.elapsed_ms()) {
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
                    let mut by_agent: BTreeMap<&str, Vec<String>> = BTreeMap::new();
                    for t in o.targets.iter().filter(|t| t.state == TargetState::Injected) {
                        by_agent.entry(&t.agent_id).or_default().push(t.fault_id.clone());
                    }
                    for (agent, ids) in by_agent {
                        let msg = v1::CoordinatorMessage {
                            msg: Some(v1::coordinator_message::Msg::LeaseRenewal(v1::LeaseRenewal {
                                fault_ids: ids,
                                lease_ms: o.lease.as_millis() as u64,
                            })),
                        };
                        if let Err(e) = o.registry.send(agent, msg) {
                            warn!(agent_id = %agent, err = %e, "lease renewal not sent");
                        }
                    }
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

async fn emit_progress(ctx: &Ctx, exp: &Experiment, samples: &probes::Samples, phase: Phase) {
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

/// Records a status from an agent on the matching target.
/// The target a status is about. Targets are sorted by (fault id, agent
/// id) once injection is sent, so this is a binary search: with 10,000
/// agents a linear scan per acknowledgement made fan-out quadratic.
fn find_target(targets: &[Target], fault_id: &str, agent_id: &str) -> Option<usize> {
    targets
        .binary_search_by(|t| (t.fault_id.as_str(), t.agent_id.as_str()).cmp(&(fault_id, agent_id)))
        .ok()
}

async fn apply_status(ctx: &Ctx, targets: &mut [Target], st: StatusFromAgent) {
    let s = &st.status;
    let Some(i) = find_target(targets, &s.fault_id, &st.agent_id) else {
        return;
    };
    let t = &mut targets[i];
    let at = ctx.elapsed_ms();
    t.detail = s.detail.clone();
    let kind = t.kind.clone();
    let kind = kind.as_str();
    let m = &ctx.metrics;
    match s.state() {
        v1::FaultState::Injected if t.state == TargetState::Pending => {
            m.gauge_add("faultline_active_faults", &[("kind", kind)], 1.0);
            m.observe(
                "faultline_inject_ack_seconds",
                &[("kind", kind)],
                at.saturating_sub(ctx.inject_sent_ms) as f64 / 1000.0,
            );
        }
        v1::FaultState::Restored | v1::FaultState::Expired if t.state == TargetState::Injected => {
            m.gauge_add("faultline_active_faults", &[("kind", kind)], -1.0);
            if t.restore_sent {
                m.observe(
                    "faultline_restore_ack_seconds",
                    &[("kind", kind)],
                    at.saturating_sub(ctx.restore_sent_ms) as f64 / 1000.0,
                );
            }
            if s.state() == v1::FaultState::Expired {
                m.inc("faultline_lease_expiries_total", &[("kind", kind)]);
            }
        }
        v1::FaultState::Refused => m.inc("faultline_refusals_total", &[("kind", kind)]),
        _ => {}
    }
    if !s.backend.is_empty() {
        t.backend = s.backend.clone();
    }
    if let Some(o) = &s.observation {
        t.observed.update(o, s.state());
    }
    match s.state() {
        v1::FaultState::Injected => {
            t.state = TargetState::Injected;
            t.injected_at_ms.get_or_insert(at);
        }
        v1::FaultState::Refused => t.state = TargetState::Refused,
        v1::FaultState::Failed => {
            // A failed restore leaves the fault in place: keep it injected so
            // the report says so.
            if t.state == TargetState::Pending {
                t.state = TargetState::Failed;
            } else {
                t.restored_by = Some(format!("restore failed: {}", s.detail));
            }
        }
        v1::FaultState::Restored => {
            t.state = TargetState::Restored;
            t.restored_at_ms = Some(at);
            let by = if t.restore_sent {
                "coordinator".to_string()
            } else {
                // The agent restored it without being asked: restarted from
                // its undo journal, shut down, or told to restore all.
                format!("agent: {}", s.detail)
            };
            t.restored_by.get_or_insert(by);
        }
        v1::FaultState::Expired => {
            t.state = TargetState::Expired;
            t.restored_at_ms = Some(at);
            t.restored_by = Some("lease expiry".into());
        }
        // Answers to a plan's dry run; a run's Injects never ask for one.
        v1::FaultState::Unspecified | v1::FaultState::Planned => {}
    }
    ctx.emit(v1::run_event::Event::Fault(v1::FaultEvent {
        agent_id: st.agent_id.clone(),
        status: Some(st.status),
    }))
    .await;
}

async fn drain_statuses(ctx: &Ctx, targets: &mut [Target], rx: &mut mpsc::UnboundedReceiver<StatusFromAgent>) {
    while let Ok(st) = rx.try_recv() {
        apply_status(ctx, targets, st).await;
    }
}

/// Waits until `done` holds for every target, ACK_TIMEOUT passes, or
/// `cancel` fires (false in the last two cases).
async fn wait_for_acks(
    ctx: &mut Ctx,
    targets: &mut [Target],
    rx: &mut mpsc::UnboundedReceiver<StatusFromAgent>,
    cancel: &CancellationToken,
    done: impl Fn(&Target) -> bool,
) -> bool {
    let deadline = Instant::now() + ACK_TIMEOUT;
    // Counted once, then kept up to date per status: re-checking every
    // target after each acknowledgement is quadratic in the fleet size.
    let mut remaining = targets.iter().filter(|t| !done(t)).count();
    loop {
        if remaining == 0 {
            return true;
        }
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep_until(deadline) => return false,
            st = rx.recv() => match st {
                Some(st) => {
                    let i = find_target(targets, &st.status.fault_id, &st.agent_id);
                    let before = i.map(|i| done(&targets[i]));
                    apply_status(ctx, targets, st).await;
                    if let (Some(i), Some(before)) = (i, before) {
                        match (before, done(&targets[i])) {
                            (false, true) => remaining -= 1,
                            (true, false) => remaining += 1,
                            _ => {}
                        }
                    }
                }
                None => return false,
            },
        }
    }
}

/// Sends Restore for every target that may hold a fault and waits for acks.
async fn restore(
    ctx: &mut Ctx,
    registry: &Registry,
    targets: &mut [Target],
    rx: &mut mpsc::UnboundedReceiver<StatusFromAgent>,
) {
    drain_statuses(ctx, targets, rx).await;
    ctx.restore_sent_ms = ctx.elapsed_ms();
    for t in targets.iter_mut() {
        if matches!(t.state, TargetState::Injected | TargetState::Pending) {
            let msg = v1::CoordinatorMessage {
                msg: Some(v1::coordinator_message::Msg::Restore(v1::Restore {
                    fault_id: t.fault_id.clone(),
                    run_id: ctx.run_id.clone(),
                })),
            };
            match registry.send(&t.agent_id, msg) {
                Ok(()) => t.restore_sent = true,
                Err(e) => {
                    t.restored_by = Some(format!(
                        "unconfirmed: {e}; the agent restores it when its lease expires"
                    ));
                }
            }
        }
    }
    // Restores are never cancelled: an abort must not stop its own cleanup.
    let never = CancellationToken::new();
    let ok = wait_for_acks(ctx, targets, rx, &never, |t| {
        !t.restore_sent || matches!(t.state, TargetState::Restored | TargetState::Expired)
    })
    .await;
    if !ok {
        for t in targets
            .iter_mut()
            .filter(|t| t.restore_sent && !matches!(t.state, TargetState::Restored | TargetState::Expired))
        {
            t.restored_by = Some(format!(
                "unconfirmed: no restore acknowledgement within {}s; the agent restores it when its lease expires",
                ACK_TIMEOUT.as_secs()
            ));
        }
    }
    let n = targets
        .iter()
        .filter(|t| t.state == TargetState::Restored || t.state == TargetState::Expired)
        .count();
    ctx.log(format!(
        "restore: {n} of {} target(s) confirmed restored",
        targets.len()
    ))
    .await;
}

fn phase_stats(samples: &probes::Samples, exp: &Experiment, phases: &[Phase]) -> Vec<PhaseStats> {
    let all = samples.lock().map(|s| s.clone()).unwrap_or_default();
    (0..exp.hypothesis.probes.len())
        .map(|i| PhaseStats::of(all.get(i).into_iter().flatten().filter(|s| phases.contains(&s.phase))))
        .collect()
}

/// True when the last RECOVERY_STREAK samples taken since restore of every
/// probe are healthy.
fn recovered_now(samples: &probes::Samples, exp: &Experiment, baseline: &[PhaseStats]) -> bool {
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

fn probe_reports(
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

/// The verdict of a run that got through observe and recover.
fn judge(exp: &Experiment, probes: &[ProbeReport]) -> Verdict {
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

fn fault_reports(exp: &Experiment, fault_ids: &[String], targets: &[Target]) -> Vec<FaultReport> {
    exp.faults
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let fault_id = fault_ids.get(i).cloned().unwrap_or_default();
            FaultReport {
                fault_id: fault_id.clone(),
                name: f.name.clone(),
                kind: f.kind.name().into(),
                summary: f.kind.summary(),
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

/// The wire form of a fault's parameters; `peers` are the resolved peer
/// networks of this target (network faults only).
pub fn spec_to_wire(kind: &FaultKind, peers: &[String]) -> v1::FaultSpec {
    kind.to_wire(peers)
}

/// Current time as RFC 3339 UTC.
pub fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now_unix_ms().to_string())
}

/// A new run id: sortable by time, unique by a random suffix.
pub fn new_run_id() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    let stamp = now.format(&fmt).unwrap_or_default();
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("r{stamp}-{}", &rand[..6])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn exp() -> Experiment {
        crate::experiment::parse(
            "t.yaml",
            "name: t\nhypothesis:\n  probes:\n    - name: web\n      tcp: { address: \"127.0.0.1:1\" }\n      tolerances:\n        - success_rate: \"80%\"\n          guardrail: true\n          window: 1s\nduration: 10s\nfaults:\n  - kill: { name: x }\n",
            &HashMap::new(),
        )
        .unwrap()
    }

    fn sample(at_ms: u64, ok: bool, phase: Phase) -> Sample {
        Sample {
            at_ms,
            phase,
            ok,
            latency_ms: 1.0,
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

    fn panicking_body(input: RunInput, sent: Sent) -> Pin<Box<dyn Future<Output = RunOutput> + Send>> {
        Box::pin(async move {
            sent.push("a1", &format!("{}-1", input.run_id));
            panic!("injected test panic");
        })
    }

    #[tokio::test]
    async fn a_run_whose_task_panics_ends_as_error_restores_and_frees_its_slot() {
        let registry = Arc::new(Registry::new());
        let (agent_tx, mut agent_rx) = mpsc::channel(8);
        registry
            .add(
                crate::registry::AgentInfo {
                    agent_id: "a1".into(),
                    hostname: "h1".into(),
                    labels: BTreeMap::new(),
                    addresses: vec![],
                    capabilities: vec!["kill".into()],
                    version: String::new(),
                    pid: 1,
                    connected_at_unix_ms: 0,
                    last_heartbeat_unix_ms: 0,
                    active_faults: 0,
                    cleaned: vec![],
                },
                agent_tx,
            )
            .expect("a new agent id registers");
        let control = crate::control::ControlService {
            schedules_changed: Arc::default(),
            registry,
            runs: Arc::default(),
            policy: Arc::new(Policy::parse("p.yaml", "max_concurrent_runs: 1\n").unwrap()),
            store: Arc::new(crate::store::Store::in_memory().unwrap()),
            metrics: faultline_proto::metrics::Metrics::new(),
            security: Arc::default(),
            shutdown: CancellationToken::new(),
            tracker: tokio_util::task::TaskTracker::new(),
            followers: Arc::default(),
        };
        let (run_id, mut rx) = control.start_run_with(exp(), "t.yaml".into(), "test", panicking_body);
        let finished = loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(v1::RunEvent {
                    event: Some(v1::run_event::Event::Finished(f)),
                    ..
                })) => break f,
                Ok(Some(_)) => {}
                Ok(None) => panic!("the event stream ended without RunFinished"),
                Err(_) => panic!("no RunFinished within 10s: the run is wedged"),
            }
        };
        assert_eq!(finished.outcome, "error");
        assert_eq!(finished.exit_code, Outcome::Error.exit_code());
        assert!(finished.reason.contains("injected test panic"), "{}", finished.reason);
        assert!(
            finished.reason.contains("Restore was sent to 1 of 1 target(s)"),
            "{}",
            finished.reason
        );
        // What it injected is restored.
        match agent_rx.try_recv() {
            Ok(v1::CoordinatorMessage {
                msg: Some(v1::coordinator_message::Msg::Restore(r)),
            }) => assert_eq!(r.fault_id, format!("{run_id}-1")),
            other => panic!("expected a Restore, got {other:?}"),
        }
        // Its slot is free, abort finds nothing to abort, the store has the outcome.
        assert_eq!(control.runs.in_flight(), 0);
        assert!(!control.runs.abort(&run_id, "operator"));
        assert_eq!(control.runs.report(&run_id).unwrap().outcome, Outcome::Error);
        let row = &control.store.list(1, None).unwrap()[0];
        assert_eq!((row.run_id.as_str(), row.status.as_str()), (run_id.as_str(), "error"));
        let plan = planner::plan(
            &exp(),
            &control.registry.agents(),
            &planner::Context {
                policy: &control.policy,
                now: time::OffsetDateTime::now_utc(),
                running: control.runs.in_flight(),
            },
        );
        assert!(plan.is_ok(), "max_concurrent_runs 1 still taken: {:?}", plan.err());
    }

    fn agent_info(id: &str) -> crate::registry::AgentInfo {
        crate::registry::AgentInfo {
            agent_id: id.into(),
            hostname: format!("{id}.test"),
            labels: BTreeMap::new(),
            addresses: vec![],
            capabilities: vec!["kill".into()],
            version: String::new(),
            pid: 1,
            connected_at_unix_ms: 0,
            last_heartbeat_unix_ms: 0,
            active_faults: 0,
            cleaned: vec![],
        }
    }

    /// An agent that acknowledges every Inject and Restore at once.
    fn acking_agent(registry: &Arc<Registry>, id: &str) {
        let (tx, mut rx) = mpsc::channel(64);
        registry.add(agent_info(id), tx).expect("a new agent id registers");
        let (registry, id) = (registry.clone(), id.to_string());
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                let (fault_id, run_id, state) = match m.msg {
                    Some(v1::coordinator_message::Msg::Inject(i)) => (i.fault_id, i.run_id, v1::FaultState::Injected),
                    Some(v1::coordinator_message::Msg::Restore(r)) => (r.fault_id, r.run_id, v1::FaultState::Restored),
                    _ => continue,
                };
                registry.route(
                    &id,
                    v1::FaultStatus {
                        fault_id,
                        run_id,
                        state: state as i32,
                        ..Default::default()
                    },
                );
            }
        });
    }

    #[tokio::test]
    async fn the_report_baseline_and_the_steady_check_count_the_same_samples() {
        let registry = Arc::new(Registry::new());
        acking_agent(&registry, "a1");
        // Each check takes 250 ms every 300 ms: the one started at 900 ms is
        // still running when the 1 s baseline ends.
        let exp = crate::experiment::parse(
            "t.yaml",
            "name: t\nhypothesis:\n  probes:\n    - name: slow\n      interval: 300ms\n      timeout: 2s\n      command: { run: \"sleep 0.25\" }\n      tolerances:\n        - success_rate: \"50%\"\n        - latency: { percentile: p99, max: 5s }\nbaseline: 1s\nduration: 300ms\nrecovery: 1s\nfaults:\n  - kill: { name: x }\n",
            &HashMap::new(),
        )
        .unwrap();
        let (events, mut rx) = mpsc::channel(1024);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let out = execute(RunInput {
            run_id: "r-same-samples".into(),
            experiment: exp,
            source_name: "t.yaml".into(),
            registry,
            events,
            cancel: CancellationToken::new(),
            abort_reason: AbortReason::default(),
            policy: Arc::new(Policy::default()),
            running: 0,
            metrics: faultline_proto::metrics::Metrics::new(),
        })
        .await;
        let p = &out.report.probes[0];
        assert!(p.baseline.samples >= 2, "{:?}", p.baseline);
        let rate = p.tolerances[0]
            .steady
            .as_ref()
            .expect("success rate checked on the baseline");
        assert_eq!(
            rate.measured,
            format!("100.0% ({0}/{0})", p.baseline.samples),
            "the steady check and the report's baseline differ"
        );
        let p99 = p.tolerances[1]
            .steady
            .as_ref()
            .expect("latency checked on the baseline");
        assert_eq!(p99.measured, format!("p99 {:.1}ms", p.baseline.p99_ms.unwrap()));
        let tagged = p.samples.iter().filter(|s| s.phase == Phase::Baseline).count() as u32;
        assert_eq!(
            tagged, p.baseline.samples,
            "samples tagged baseline vs the baseline stats"
        );
    }
}
