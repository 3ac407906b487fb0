//! A run read back from the store, and the report of a run that was
//! interrupted (its coordinator stopped during it).

use super::{EventRow, Result, RunRow, Store};
use crate::report::Report;

/// A run as the store knows it.
#[derive(Debug, Clone)]
pub enum Stored {
    Finished(Box<Report>),
    /// Still in flight on a live coordinator.
    Running(RunRow),
    /// The coordinator died during it; `events` include what agents
    /// reported afterwards (kind `after`).
    Interrupted {
        run: RunRow,
        events: Vec<EventRow>,
    },
}

impl Store {
    /// Loads `run_id` for a report.
    pub fn load(&self, run_id: &str) -> Result<Option<Stored>> {
        let Some((run, report, events)) = self.get(run_id)? else {
            return Ok(None);
        };
        if let Some(rep) = report.and_then(|j| serde_json::from_str::<Report>(&j).ok()) {
            return Ok(Some(Stored::Finished(Box::new(rep))));
        }
        Ok(Some(if run.status == "running" {
            Stored::Running(run)
        } else {
            Stored::Interrupted { run, events }
        }))
    }
}

/// The report of an interrupted run, in the one report model every run
/// has: outcome `error` (exit 5) with a reason starting with
/// "interrupted", the phases it went through, and the recorded events.
/// There is no verdict: probes were not judged.
pub fn interrupted_report(run: &RunRow, events: &[EventRow]) -> Report {
    use crate::outcome::{Outcome, Phase};
    use crate::report::{EventReport, ExperimentInfo, PhaseSpan, SCHEMA_VERSION};
    let rel = |ms: u64| ms.saturating_sub(run.started_unix_ms);
    // The last thing the run itself recorded; `after` events came later.
    let last_own = events
        .iter()
        .filter(|e| e.kind != "after")
        .map(|e| rel(e.at_unix_ms))
        .max()
        .unwrap_or(0);
    let mut phases: Vec<PhaseSpan> = Vec::new();
    for e in events.iter().filter(|e| e.kind == "phase") {
        let Ok(phase) = serde_json::from_value::<Phase>(serde_json::Value::String(e.text.clone())) else {
            continue;
        };
        let at = rel(e.at_unix_ms);
        if let Some(last) = phases.last_mut() {
            last.end_ms = at;
        }
        phases.push(PhaseSpan {
            phase,
            start_ms: at,
            end_ms: at,
        });
    }
    if let Some(last) = phases.last_mut() {
        last.end_ms = last.end_ms.max(last_own);
    }
    let finished = run.finished_unix_ms.unwrap_or(run.started_unix_ms);
    let why = run
        .reason
        .clone()
        .unwrap_or_else(|| "the coordinator stopped while this run was in flight".into());
    Report {
        schema_version: SCHEMA_VERSION,
        run_id: run.run_id.clone(),
        experiment: ExperimentInfo {
            name: run.experiment.clone(),
            description: String::new(),
            hypothesis: String::new(),
            source: run.source.clone(),
            baseline_ms: 0,
            duration_ms: 0,
            recovery_ms: 0,
        },
        outcome: Outcome::Error,
        exit_code: Outcome::Error.exit_code(),
        reason: format!("interrupted: {why}"),
        started_at: crate::timestamp::rfc3339_ms(run.started_unix_ms),
        finished_at: crate::timestamp::rfc3339_ms(finished),
        duration_ms: finished.saturating_sub(run.started_unix_ms),
        aborted_by: None,
        stop_conditions: Vec::new(),
        error_budgets: Vec::new(),
        phases,
        probes: Vec::new(),
        faults: Vec::new(),
        judge: None,
        events: events
            .iter()
            .map(|e| EventReport {
                at: crate::timestamp::rfc3339_ms(e.at_unix_ms),
                kind: e.kind.clone(),
                text: e.text.clone(),
            })
            .collect(),
    }
}

/// Renders an interrupted run in `format`, through the same renderers as
/// every other report; `None` for an unknown format.
pub fn render_interrupted(run: &RunRow, events: &[EventRow], format: &str) -> Option<String> {
    crate::report::render(&interrupted_report(run, events), format)
}
