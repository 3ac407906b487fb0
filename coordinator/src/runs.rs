//! Runs known to this coordinator: in flight (with their abort handles) and
//! finished (with their reports). Kept in memory; a restart forgets them.

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
        if let Some(e) = self.lock().get_mut(run_id) {
            e.finished_unix_ms = now_unix_ms();
            e.outcome = Some(report.outcome);
            e.report = Some(report);
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
