//! One run, phase by phase: validate, plan, baseline, steady?, inject,
//! observe, restore (always, once anything may have been injected),
//! recover, verdict, report.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_proto::v1;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::assembly::{experiment_info, fault_reports, probe_reports};
use super::budget;
use super::context::Ctx;
use super::gate;
use super::judge::{aborted, judge, phase_stats, recovered_now, Verdict};
use super::observe::{wait_with_progress, Observe};
use super::placement::{drain_statuses, wait_for_acks, Placement, TargetState};
use super::progress::{emit_final, emit_progress};
use super::restore::restore;
use super::stops;
use super::{spec_to_wire, RunInput, RunOutput, Sent, ACK_TIMEOUT};
use crate::experiment::faults::Observed;
use crate::outcome::{Outcome, Phase};
use crate::planner::{self, Plan};
use crate::probes;
use crate::report::{Report, SCHEMA_VERSION};
use crate::stats::Sample;
use crate::timestamp::rfc3339_now;
use crate::verdict::{self, Check};

pub(super) async fn execute_inner(input: RunInput, sent: Sent) -> RunOutput {
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
        points_sent: Default::default(),
    };
    ctx.emit(v1::run_event::Event::Started(v1::RunStarted {
        experiment: exp.name.clone(),
        planned_ms: (exp.baseline + exp.duration + exp.recovery).as_millis() as u64,
    }))
    .await;
    ctx.enter(Phase::Validate, Duration::ZERO).await;
    // Groups that select agents: their per-group probes (one instance per
    // matching agent) are known only now; a group with no agent refuses
    // the plan below.
    let (exp, unresolved) = match crate::group_agents::resolve_off_runtime(&exp, &registry).await {
        Ok(resolved) => (resolved, None),
        Err(e) => (exp, Some(e)),
    };
    let mut status_rx = registry.subscribe(&run_id);
    let mut targets: Vec<Placement> = Vec::new();
    let mut fault_ids: Vec<String> = Vec::new();
    let mut inject_at_ms: Option<u64> = None;
    let mut steady_checks: Vec<Vec<Option<Check>>> = vec![Vec::new(); exp.hypothesis.probes.len()];

    // ---- plan ----
    ctx.enter(Phase::Plan, Duration::ZERO).await;
    let plan = match unresolved {
        Some(e) => Err(planner::Error::from(e)),
        None => planner::plan(
            &exp,
            &registry.agents(),
            &planner::Context {
                policy: &policy,
                now: time::OffsetDateTime::now_utc(),
                running,
            },
        ),
    };
    let probe_stop = CancellationToken::new();
    // Probe tasks stop when the run ends, however it ends (also a panic).
    let _probes_stop = probe_stop.clone().drop_guard();
    let mut samples: probes::Samples = Arc::new(Mutex::new(vec![Vec::new(); exp.hypothesis.probes.len()]));
    let mut verdict: Option<Verdict> = None;
    // The experiment's stop conditions, then the policy's.
    let stop_conditions: Vec<_> = exp
        .stop_conditions
        .iter()
        .chain(&policy.stop_conditions)
        .cloned()
        .collect();
    let mut stop_evals: stops::Evaluations = Arc::new(Mutex::new(vec![Vec::new(); stop_conditions.len()]));

    let plan: Option<Plan> = match plan {
        Ok(p) => {
            for g in &p.groups {
                let members: Vec<String> = g
                    .members
                    .iter()
                    .map(|m| match &m.pod {
                        Some(pod) => format!("{pod} {} on {}", m.address, m.agent),
                        None => format!("{} {}", m.agent, m.address),
                    })
                    .collect();
                let selector = match &g.pods {
                    Some(p) => format!("pods {}", p.describe()),
                    None => format!("agents {}", crate::group_agents::fmt_selector(&g.selector)),
                };
                ctx.log(format!("plan: group {} ({selector}): {}", g.group, members.join(", ")))
                    .await;
            }
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

    // ---- blast radius over containers: only the agents can count them ----
    let plan = match plan {
        Some(p) => {
            match crate::preview::container_blast_radius(
                &p,
                &exp.blast_radius,
                &registry,
                crate::preview::PREVIEW_TIMEOUT,
            )
            .await
            {
                Ok(lines) => {
                    for l in lines {
                        ctx.log(l).await;
                    }
                    Some(p)
                }
                Err(reason) => {
                    warn!(run_id = %run_id, %reason, "blast radius over containers: run refused");
                    verdict = Some(Verdict {
                        outcome: Outcome::Invalid,
                        reason,
                    });
                    None
                }
            }
        }
        None => None,
    };

    // ---- error budget: measured before anything runs ----
    let budgets: Vec<_> = exp.error_budget.iter().chain(&policy.error_budget).cloned().collect();
    let mut budget_reports = Vec::new();
    let plan = if plan.is_some() && !budgets.is_empty() {
        let (reports, refusal) = budget::gate(&budgets).await;
        budget_reports = reports;
        match refusal {
            Some(v) => {
                ctx.log(v.reason.clone()).await;
                warn!(run_id = %run_id, reason = %v.reason, "error budget: run refused");
                verdict = Some(v);
                None
            }
            None => plan,
        }
    } else {
        plan
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
                        crate::experiment::Tolerance::RelativeLatency { .. }
                        | crate::experiment::Tolerance::RelativeValue { .. } => None,
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
                    let mut t = Placement {
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
                    let inject = v1::Inject {
                        fault_id: fault_id.clone(),
                        run_id: run_id.clone(),
                        spec: Some(spec_to_wire(
                            &pf.fault.kind,
                            pf.peers.get(ti).map(Vec::as_slice).unwrap_or(&[]),
                        )),
                        lease_ms: exp.lease.as_millis() as u64,
                        dry_run: false,
                        container: pf.fault.targets.containers.as_ref().map(|c| c.to_wire()),
                    };
                    sent.push(&agent.agent_id, &fault_id);
                    if let Err(e) = registry.inject(&agent.agent_id, inject) {
                        t.state = TargetState::Failed;
                        t.detail = e.to_string();
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
            let stops_stop = CancellationToken::new();
            let _stops_stop = stops_stop.clone().drop_guard();
            let (evals, fired) = stops::start(&stop_conditions, ctx.start, stops_stop);
            stop_evals = evals;
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
                    stop_evaluated: Some(fired),
                    stop_names: stop_conditions.iter().map(|c| c.name.clone()).collect(),
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

    // ---- error budget after the run (only one that started) ----
    if plan.is_some() {
        budget::after(&budgets, &mut budget_reports).await;
    }

    // ---- verdict ----
    probe_stop.cancel();
    // Restore and recover often end before a progress tick: their samples
    // would never reach a chart.
    emit_final(&ctx, &exp, &samples).await;
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
    let restored_at_ms = targets.iter().filter_map(|t| t.restored_at_ms).max();
    let stop_reports = stops::reports(&stop_conditions, &stop_evals, restored_at_ms);
    let reached_verdict = verdict.is_none() && plan.is_some();
    let verdict = verdict.unwrap_or_else(|| {
        let v = judge(&exp, &probes);
        match stops::error_fired(&stop_reports) {
            Some(why) if v.outcome == Outcome::Passed => Verdict {
                outcome: Outcome::Failed,
                reason: why,
            },
            _ => v,
        }
    });
    // ---- the canary judge, for a run that got through recovery ----
    let judge_report = exp
        .judge
        .as_ref()
        .filter(|_| reached_verdict)
        .map(|spec| gate::judge(&exp, spec, &all_samples));
    let verdict = match &judge_report {
        Some(j) => {
            ctx.log(gate::summary(j)).await;
            gate::combine(verdict, j)
        }
        None => verdict,
    };
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
        stop_conditions: stop_reports,
        error_budgets: budget_reports,
        events: Vec::new(),
        judge: judge_report,
    };
    info!(run_id = %run_id, outcome = %report.outcome, "run finished");
    RunOutput { report }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use crate::engine::testing::acking_agent;
    use crate::engine::{execute, AbortReason, RunInput};
    use crate::events::EventLog;
    use crate::outcome::Phase;
    use crate::policy::Policy;
    use crate::registry::Registry;
    use crate::store::Store;

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
        let (client, mut rx) = mpsc::channel(1024);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let log = Arc::new(EventLog::new(Arc::new(Store::in_memory().unwrap())));
        let (events, writer) = log.open("r-same-samples", "t", "t.yaml", client);
        tokio::spawn(writer);
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
