//! A run's context: its clock, its phase spans and where its events go.

use std::time::Duration;

use faultline_proto::v1;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::info;

use crate::events::RunEvents;
use crate::outcome::Phase;
use crate::report::PhaseSpan;

pub(super) struct Ctx {
    pub(super) metrics: faultline_proto::metrics::Metrics,
    /// When the inject and restore phases started (ms since start), for
    /// the acknowledgement latency histograms.
    pub(super) inject_sent_ms: u64,
    pub(super) restore_sent_ms: u64,
    pub(super) run_id: String,
    pub(super) start: Instant,
    pub(super) events: RunEvents,
    pub(super) phase_tx: watch::Sender<Phase>,
    pub(super) phases: Vec<PhaseSpan>,
    /// Per probe, how many of its samples went out as chart points in
    /// progress events (each goes out once).
    pub(super) points_sent: std::sync::Mutex<Vec<usize>>,
}

impl Ctx {
    pub(super) fn elapsed_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub(super) async fn emit(&self, event: v1::run_event::Event) {
        // A client that went away does not stop the run.
        self.events.send(v1::RunEvent {
            run_id: self.run_id.clone(),
            elapsed_ms: self.elapsed_ms(),
            event: Some(event),
        });
    }

    pub(super) async fn log(&self, message: String) {
        info!(run_id = %self.run_id, "{message}");
        self.emit(v1::run_event::Event::Log(v1::LogLine { message })).await;
    }

    pub(super) async fn enter(&mut self, phase: Phase, planned: Duration) {
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

    pub(super) fn close_phases(&mut self) {
        let now = self.elapsed_ms();
        if let Some(last) = self.phases.last_mut() {
            last.end_ms = now;
        }
    }
}
