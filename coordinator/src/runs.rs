//! Runs known to this coordinator: in flight (with their abort handles) and
//! the most recently finished ones (with their reports). Kept in memory; a
//! restart forgets them. Finished runs beyond [`KEEP_FINISHED`] are dropped
//! from memory (oldest first): their reports are read from the history
//! store, so a long-lived coordinator's memory does not grow with every run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use faultline_proto::{now_unix_ms, v1};
use tokio_util::sync::CancellationToken;

use crate::engine::AbortReason;
use crate::outcome::Outcome;
use crate::report::Report;

struct Entry {
    experiment: String,
    started_unix_ms: u64,
    finished_unix_ms: u64,
    outcome: Option<Outcome>,
    cancel: CancellationToken,
    reason: AbortReason,
    report: Option<Arc<Report>>,
}

/// Finished runs kept in memory, most recent first; older ones are read
/// from the store.
pub const KEEP_FINISHED: usize = 64;

/// The run table.
#[derive(Default)]
pub struct Runs {
    inner: Mutex<BTreeMap<String, Entry>>,
    /// Set by an emergency stop: why and when; new runs are refused.
    stopped: Mutex<Option<String>>,
}

impl Runs {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a starting run.
    pub fn start(&self, run_id: &str, experiment: &str, cancel: CancellationToken, reason: AbortReason) {
        self.lock().insert(
            run_id.to_string(),
            Entry {
                experiment: experiment.to_string(),
                started_unix_ms: now_unix_ms(),
                finished_unix_ms: 0,
                outcome: None,
                cancel,
                reason,
                report: None,
            },
        );
    }

    pub fn finish(&self, run_id: &str, report: Arc<Report>) {
        let mut inner = self.lock();
        if let Some(e) = inner.get_mut(run_id) {
            e.finished_unix_ms = now_unix_ms();
            e.outcome = Some(report.outcome);
            e.report = Some(report);
        }
        // Forget the oldest finished runs beyond the limit (the store has
        // their reports); runs in flight are never forgotten.
        let mut finished: Vec<(u64, String)> = inner
            .iter()
            .filter(|(_, e)| e.outcome.is_some())
            .map(|(id, e)| (e.finished_unix_ms, id.clone()))
            .collect();
        if finished.len() > KEEP_FINISHED {
            finished.sort();
            let excess = finished.len() - KEEP_FINISHED;
            for (_, id) in finished.into_iter().take(excess) {
                inner.remove(&id);
            }
        }
    }

    /// Runs in flight.
    pub fn in_flight(&self) -> usize {
        self.lock().values().filter(|e| e.outcome.is_none()).count()
    }

    /// Emergency stop: refuse new runs and abort every run in flight;
    /// returns the ids of the aborted runs.
    pub fn stop(&self, reason: &str) -> Vec<String> {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
        let ids: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.outcome.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter().filter(|id| self.abort(id, reason)).collect()
    }

    /// Ends an emergency stop; false if there was none.
    pub fn resume(&self) -> bool {
        self.stopped.lock().unwrap_or_else(|p| p.into_inner()).take().is_some()
    }

    /// Why the coordinator is stopped, if it is.
    pub fn stopped(&self) -> Option<String> {
        self.stopped.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Aborts a run in flight; false if there is none with that id.
    pub fn abort(&self, run_id: &str, reason: &str) -> bool {
        let inner = self.lock();
        match inner.get(run_id) {
            Some(e) if e.outcome.is_none() => {
                if let Ok(mut r) = e.reason.lock() {
                    r.get_or_insert_with(|| reason.to_string());
                }
                e.cancel.cancel();
                true
            }
            _ => false,
        }
    }

    pub fn report(&self, run_id: &str) -> Option<Arc<Report>> {
        self.lock().get(run_id).and_then(|e| e.report.clone())
    }

    pub fn is_known(&self, run_id: &str) -> bool {
        self.lock().contains_key(run_id)
    }

    pub fn list(&self) -> Vec<v1::RunSummary> {
        self.lock()
            .iter()
            .map(|(id, e)| v1::RunSummary {
                run_id: id.clone(),
                experiment: e.experiment.clone(),
                status: e
                    .outcome
                    .map(|o| o.as_str().to_string())
                    .unwrap_or_else(|| "running".into()),
                started_at_unix_ms: e.started_unix_ms,
                finished_at_unix_ms: e.finished_unix_ms,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(run_id: &str) -> Arc<Report> {
        let row = crate::store::RunRow {
            run_id: run_id.to_string(),
            experiment: "exp".into(),
            source: "e.yaml".into(),
            status: "running".into(),
            started_unix_ms: 1_000,
            finished_unix_ms: None,
            exit_code: None,
            reason: None,
        };
        Arc::new(crate::store::interrupted_report(&row, &[]))
    }

    /// Regression: every finished run and its report stayed in memory for
    /// the coordinator's life (the soak saw RSS grow ~1 KiB per run).
    #[test]
    fn only_the_most_recent_finished_runs_stay_in_memory_and_runs_in_flight_always_do() {
        let runs = Runs::default();
        runs.start("r-live", "exp", CancellationToken::new(), AbortReason::default());
        for i in 0..(KEEP_FINISHED + 50) {
            let id = format!("r-{i}");
            runs.start(&id, "exp", CancellationToken::new(), AbortReason::default());
            runs.finish(&id, report(&id));
        }
        let held = runs.list();
        assert_eq!(held.len(), KEEP_FINISHED + 1, "{} runs held", held.len());
        assert!(runs.is_known("r-live") && runs.report("r-live").is_none());
        assert_eq!(runs.in_flight(), 1);
        let last = format!("r-{}", KEEP_FINISHED + 49);
        assert!(runs.report(&last).is_some(), "the newest finished run is kept");
        assert!(
            !runs.is_known("r-0"),
            "the oldest finished run was forgotten (the store has it)"
        );
    }
}
