//! The error-budget gate: every gate (the experiment's, then the policy's)
//! is measured before anything runs; a budget below its minimum refuses
//! the run (outcome `invalid`, exit 2, like a policy refusal: nothing was
//! injected), and a budget that cannot be measured refuses it too (outcome
//! `error`, exit 5): a gate that cannot see is closed. After a run that
//! started, each budget is measured again for the report.

use crate::experiment::error_budget::ErrorBudget;
use crate::outcome::Outcome;
use crate::probes::Clients;
use crate::report::ErrorBudgetReport;
use crate::verdict::num;

use super::judge::Verdict;

fn pct(f: f64) -> String {
    format!("{}%", num((f * 1000.0).round() / 10.0))
}

/// Measures every gate; the refusal, if any, is the first gate that fails.
pub(super) async fn gate(budgets: &[ErrorBudget]) -> (Vec<ErrorBudgetReport>, Option<Verdict>) {
    let clients = Clients::default();
    let mut reports = Vec::new();
    let mut refusal = None;
    for b in budgets {
        let mut r = ErrorBudgetReport {
            query: b.query_text(),
            objective: b.objective,
            window_ms: b.window.as_millis() as u64,
            min_remaining: b.min_remaining,
            remaining_before: None,
            remaining_after: None,
            error: None,
        };
        match b.remaining(&clients).await {
            Ok(left) => {
                r.remaining_before = Some(left);
                if left < b.min_remaining && refusal.is_none() {
                    refusal = Some(Verdict {
                        outcome: Outcome::Invalid,
                        reason: format!(
                            "error budget: {} of the budget remains, below the minimum of {} ({}); the run was not started",
                            pct(left),
                            pct(b.min_remaining),
                            b.describe()
                        ),
                    });
                }
            }
            Err(e) => {
                r.error = Some(e.to_string());
                if refusal.is_none() {
                    refusal = Some(Verdict {
                        outcome: Outcome::Error,
                        reason: format!(
                            "error budget: cannot measure the remaining budget ({e}); the run was not started"
                        ),
                    });
                }
            }
        }
        reports.push(r);
    }
    (reports, refusal)
}

/// Measures every gate again after the run.
pub(super) async fn after(budgets: &[ErrorBudget], reports: &mut [ErrorBudgetReport]) {
    let clients = Clients::default();
    for (b, r) in budgets.iter().zip(reports.iter_mut()) {
        match b.remaining(&clients).await {
            Ok(left) => r.remaining_after = Some(left),
            Err(e) => r.error = Some(format!("after the run: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::testing::{query_api, run_with};
    use crate::outcome::{Outcome, Phase};
    use crate::policy::Policy;

    fn budget(port: u16) -> String {
        format!(
            "error_budget:\n  objective: \"99%\"\n  window: 30d\n  min_remaining: \"25%\"\n  prometheus: {{ url: \"http://127.0.0.1:{port}\", query: \"sum(rate(errors[$window])) / sum(rate(requests[$window]))\" }}\n"
        )
    }

    #[tokio::test]
    async fn an_exhausted_error_budget_refuses_the_run_before_anything_is_injected() {
        // 2% errors against a 1% budget: overspent twice, -100% left.
        let port = query_api("0.02").await;
        let report = run_with("r-budget-refused", &budget(port), Policy::default()).await;
        assert_eq!(report.outcome, Outcome::Invalid, "{}", report.reason);
        assert_eq!(
            report.reason,
            "error budget: -100% of the budget remains, below the minimum of 25% (objective 99% over 30d, at least 25% of the budget left); the run was not started"
        );
        eprintln!("{}", report.reason);
        assert!(
            report.faults.iter().all(|f| f.targets.is_empty()),
            "nothing was injected"
        );
        assert!(!report.phases.iter().any(|p| p.phase == Phase::Baseline));
        let b = &report.error_budgets[0];
        assert_eq!(b.query, "sum(rate(errors[2592000s])) / sum(rate(requests[2592000s]))");
        assert_eq!(b.remaining_before.map(|r| (r * 1000.0).round()), Some(-1000.0));
        assert_eq!(b.remaining_after, None);
        let md = crate::report::render_markdown(&report);
        assert!(md.contains("## Error budget"), "{md}");
    }

    #[tokio::test]
    async fn a_policy_error_budget_with_budget_left_lets_the_run_go_and_reports_before_and_after() {
        // 0.25% errors against a 1% budget: 75% left.
        let port = query_api("0.0025").await;
        let policy = Policy::parse("policy.yaml", &budget(port)).expect("policy");
        let report = run_with("r-budget-ok", "", policy).await;
        assert_eq!(report.outcome, Outcome::Passed, "{}", report.reason);
        let b = &report.error_budgets[0];
        assert_eq!(b.remaining_before.map(|r| (r * 1000.0).round()), Some(750.0));
        assert_eq!(b.remaining_after.map(|r| (r * 1000.0).round()), Some(750.0));
    }

    #[tokio::test]
    async fn an_unmeasurable_error_budget_refuses_the_run() {
        // Nothing listens on the port: the gate cannot see, so it is closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let report = run_with("r-budget-blind", &budget(port), Policy::default()).await;
        assert_eq!(report.outcome, Outcome::Error, "{}", report.reason);
        assert!(
            report
                .reason
                .starts_with("error budget: cannot measure the remaining budget (connection refused)"),
            "{}",
            report.reason
        );
    }

    #[tokio::test]
    async fn the_schedule_gate_names_a_spent_budget_and_passes_one_with_budget_left() {
        let row = |port: u16| {
            crate::store::ScheduleRow {
            id: "s".into(),
            kind: Default::default(),
            source: "e.yaml".into(),
            yaml: format!(
                "name: t\nhypothesis:\n  probes:\n    - name: ok\n      command: {{ run: \"true\" }}\nduration: 1s\nfaults:\n  - kill: {{ name: x }}\n{}",
                budget(port)
            ),
            vars: Default::default(),
            cron: "* * * * *".into(),
            tz: "UTC".into(),
            window: None,
            created_unix_ms: 0,
            last_tick_unix_ms: 0,
            last_run_id: None,
        }
        };
        let gate = crate::schedule::error_budget_gate(std::sync::Arc::new(Policy::default()));
        let spent = query_api("0.02").await;
        assert_eq!(
            gate(&row(spent)).await.as_deref(),
            Some("error budget: -100% of the budget remains, below the minimum of 25% (objective 99% over 30d, at least 25% of the budget left)")
        );
        let left = query_api("0.0025").await;
        assert_eq!(gate(&row(left)).await, None);
    }
}
