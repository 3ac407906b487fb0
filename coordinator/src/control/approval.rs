//! Asking the approval webhook (`serve --notify`) about a run's plan before
//! it starts: for `SubmitRun`, a schedule's tick and each experiment of a
//! game day.

use crate::experiment::Experiment;
use crate::notify::approval::{self, Refusal};
use crate::planner;

use super::ControlService;

impl ControlService {
    /// Asks the approval webhook, if there is one, about the plan of `exp`;
    /// a refusal is audited. A plan that fails is not asked about: the run
    /// ends at plan with nothing injected.
    pub async fn approve(&self, exp: &Experiment, source_name: &str, who: &str) -> Result<(), Refusal> {
        let Some((a, client)) = self.notifier.as_ref().and_then(|n| n.approval()) else {
            return Ok(());
        };
        let Ok(exp) = &crate::group_agents::resolve_off_runtime(exp, &self.registry).await else {
            return Ok(());
        };
        let Ok(plan) = planner::plan(
            exp,
            &self.registry.agents(),
            &planner::Context {
                policy: &self.policy,
                now: time::OffsetDateTime::now_utc(),
                running: self.runs.in_flight(),
            },
        ) else {
            return Ok(());
        };
        let planned = serde_json::json!({
            "event": "run.approval",
            "experiment": exp.name,
            "source": source_name,
            "caller": who,
            "faults": plan.faults.iter().map(|pf| serde_json::json!({
                "fault": pf.fault.name,
                "kind": pf.fault.kind.name(),
                "summary": pf.fault.kind.summary(),
                "targets": pf.targets.iter().map(|t| t.agent_id.clone()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        let r = approval::ask(a, client, &planned).await;
        if let Err(refusal) = &r {
            self.audit(who, "submit", "-", &format!("refused: {refusal}"));
        }
        r
    }
}
