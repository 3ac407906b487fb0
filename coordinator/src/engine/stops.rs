//! Evaluating stop conditions while faults are injected: one task per
//! condition, started with the observe phase and stopped when it ends. A
//! condition's every evaluation is sent to the observe loop, which reports
//! its state as a check (see `checks`) and, for a `critical` condition that
//! turned true, aborts the run (and restores); every evaluation is kept for
//! the report.
//!
//! A condition whose query fails (Prometheus down, a bad token) is recorded
//! with its error but does not stop the run: a monitoring outage is not
//! evidence of harm, and a guardrail probe on the service itself covers the
//! service being down.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::checks::State;
use crate::experiment::stop_conditions::{Severity, StopCondition};
use crate::probes::Clients;
use crate::report::{StopConditionReport, StopEvaluation};

/// A critical condition that turned true: why the run is aborted.
#[derive(Debug, Clone)]
pub struct Fired {
    pub why: String,
    pub at_ms: u64,
}

/// One evaluation, as the observe loop sees it.
#[derive(Debug, Clone)]
pub struct Evaluated {
    /// The condition's name.
    pub name: String,
    pub state: State,
    /// The value or the error, in words.
    pub detail: String,
    /// Set when a critical condition turned true: the run must stop.
    pub fired: Option<Fired>,
}

/// The evaluations of every condition, indexed like the conditions.
pub type Evaluations = Arc<Mutex<Vec<Vec<StopEvaluation>>>>;

/// Starts one evaluating task per condition; they end when `stop` fires.
pub fn start(
    conditions: &[StopCondition],
    run_start: Instant,
    stop: CancellationToken,
) -> (Evaluations, mpsc::UnboundedReceiver<Evaluated>) {
    let evals: Evaluations = Arc::new(Mutex::new(vec![Vec::new(); conditions.len()]));
    let (tx, rx) = mpsc::unbounded_channel();
    let clients = Clients::default();
    for (i, cond) in conditions.iter().cloned().enumerate() {
        let (evals, tx, stop, clients) = (evals.clone(), tx.clone(), stop.clone(), clients.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(cond.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let timeout = cond.interval.min(std::time::Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let result = tokio::select! {
                    _ = stop.cancelled() => break,
                    r = tokio::time::timeout(timeout, cond.query.query(&clients, timeout)) => r,
                };
                let at_ms = run_start.elapsed().as_millis() as u64;
                let eval = match result {
                    Ok(Ok(series)) => StopEvaluation {
                        at_ms,
                        fired: !series.is_empty(),
                        value: series.first().map(|s| s.value).filter(|v| v.is_finite()),
                        error: None,
                    },
                    Ok(Err(e)) => StopEvaluation {
                        at_ms,
                        fired: false,
                        value: None,
                        error: Some(e.to_string()),
                    },
                    Err(_) => StopEvaluation {
                        at_ms,
                        fired: false,
                        value: None,
                        error: Some("timeout".into()),
                    },
                };
                let fired = (eval.fired && cond.severity == Severity::Critical).then(|| Fired {
                    why: format!(
                        "stop condition {} (critical) is true: {} returned {}",
                        cond.name,
                        cond.query.query,
                        eval.value.map(crate::verdict::num).unwrap_or_else(|| "a series".into())
                    ),
                    at_ms,
                });
                let value = eval.value.map(crate::verdict::num);
                let (state, detail) = match (&eval.error, eval.fired) {
                    (Some(e), _) => (State::Error, e.clone()),
                    (None, true) => (
                        State::Breached,
                        format!(
                            "true ({} severity): returned {}",
                            cond.severity,
                            value.unwrap_or_else(|| "a series".into())
                        ),
                    ),
                    (None, false) => (State::Ok, "false: no series returned".to_string()),
                };
                let _ = tx.send(Evaluated {
                    name: cond.name.clone(),
                    state,
                    detail,
                    fired,
                });
                if let Ok(mut all) = evals.lock() {
                    all[i].push(eval);
                }
            }
        });
    }
    (evals, rx)
}

/// The report's section: each condition with its evaluations, when it
/// first turned true, and how long after that every fault was restored.
pub fn reports(
    conditions: &[StopCondition],
    evals: &Evaluations,
    restored_at_ms: Option<u64>,
) -> Vec<StopConditionReport> {
    let all = evals.lock().map(|e| e.clone()).unwrap_or_default();
    conditions
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let evaluations = all.get(i).cloned().unwrap_or_default();
            let first = evaluations.iter().find(|e| e.fired);
            let fired_at_ms = first.map(|e| e.at_ms);
            StopConditionReport {
                name: c.name.clone(),
                query: c.query.query.clone(),
                severity: c.severity,
                fired_at_ms,
                value: first.and_then(|e| e.value),
                restored_after_ms: fired_at_ms.zip(restored_at_ms).map(|(f, r)| r.saturating_sub(f)),
                evaluations,
            }
        })
        .collect()
}

/// The first `error` condition that turned true, in words, for the verdict.
pub fn error_fired(reports: &[StopConditionReport]) -> Option<String> {
    reports
        .iter()
        .find(|r| r.severity == Severity::Error && r.fired_at_ms.is_some())
        .map(|r| {
            format!(
                "stop condition {} (error) turned true at {:.1}s{}",
                r.name,
                r.fired_at_ms.unwrap_or_default() as f64 / 1000.0,
                r.value
                    .map(|v| format!(" with value {}", crate::verdict::num(v)))
                    .unwrap_or_default()
            )
        })
}

#[cfg(test)]
mod tests {
    use crate::engine::testing::{query_api, run_with};
    use crate::outcome::Outcome;
    use crate::policy::Policy;

    #[tokio::test]
    async fn a_critical_stop_condition_aborts_the_run_and_restores() {
        let port = query_api("7").await;
        let report = run_with(
            "r-stop-critical",
            &format!(
                "stop_conditions:\n  - name: error-storm\n    severity: critical\n    prometheus: {{ url: \"http://127.0.0.1:{port}\", query: \"sum(rate(errors_total[30s])) > 5\" }}\n"
            ),
            Policy::default(),
        )
        .await;
        assert_eq!(report.outcome, Outcome::Aborted, "{}", report.reason);
        let by = report.aborted_by.as_deref().expect("aborted_by");
        assert!(by.contains("stop condition error-storm (critical)"), "{by}");
        assert!(by.contains("returned 7"), "{by}");
        let s = &report.stop_conditions[0];
        let fired = s.fired_at_ms.expect("fired");
        let restored_after = s.restored_after_ms.expect("restored after firing");
        eprintln!("stop condition true at {fired} ms; every fault restored {restored_after} ms later");
        // Evaluated every second from the start of observe; the abort and
        // the restore follow the first true evaluation at once.
        assert!(
            restored_after < 1000,
            "restored {restored_after} ms after the condition was true"
        );
        let observe = report
            .phases
            .iter()
            .find(|p| p.phase == crate::outcome::Phase::Observe)
            .expect("observe");
        assert!(
            fired >= observe.start_ms && fired < observe.start_ms + 2000,
            "{fired} vs {observe:?}"
        );
        assert_eq!(s.value, Some(7.0));
        let md = crate::report::render_markdown(&report);
        assert!(md.contains("## Stop conditions"), "{md}");
        assert!(md.contains("| error-storm | critical |"), "{md}");
        assert!(report
            .faults
            .iter()
            .all(|f| f.targets.iter().all(|t| t.restored_at_ms.is_some())));
    }

    #[tokio::test]
    async fn an_error_stop_condition_from_the_policy_fails_the_verdict_without_aborting() {
        let port = query_api("7").await;
        let policy = Policy::parse(
            "policy.yaml",
            &format!(
                "stop_conditions:\n  - name: slo-burn\n    severity: error\n    prometheus: {{ url: \"http://127.0.0.1:{port}\", query: \"slo:burn_rate > 2\" }}\n"
            ),
        )
        .expect("policy");
        let report = run_with("r-stop-error", "", policy).await;
        assert_eq!(report.outcome, Outcome::Failed, "{}", report.reason);
        assert!(
            report.reason.contains("stop condition slo-burn (error) turned true"),
            "{}",
            report.reason
        );
        assert!(report.aborted_by.is_none());
        assert!(
            report.stop_conditions[0].evaluations.len() >= 3,
            "evaluated through observe"
        );
    }
}
