//! Running a game day on the coordinator: its experiments one after the
//! other, each started the way `SubmitRun` starts a run (same policy, same
//! audit, same emergency stop), the game-day run recorded in the store as
//! it goes — its members with their run ids, then its score.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use faultline_proto::v1;
use tokio::sync::mpsc;
use tracing::info;

use super::{Entry, Suite, Summary};
use crate::control::{parse_off_runtime, ControlService};
use crate::store::GameDayMemberRow;

/// Game-day runs in flight, by id.
#[derive(Default)]
pub struct InFlight(Mutex<HashSet<String>>);

impl InFlight {
    pub fn contains(&self, id: &str) -> bool {
        self.lock().contains(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Removes a game-day run from [`InFlight`] however its task ends.
struct Leave(Arc<InFlight>, String);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

/// A new game-day run id, e.g. `g20261130-160000-ab12cd` (a valid run id).
pub fn new_id() -> String {
    let run = crate::engine::new_run_id();
    format!("g{}", &run[1..])
}

/// Parses every experiment of `suite` (off the runtime, bounded): a typo in
/// the last one should not surface after an hour of chaos. The error names
/// the entry.
pub async fn check(suite: &Suite) -> Result<(), crate::control::Error> {
    for m in &suite.members {
        parse_off_runtime(m.source.clone(), m.yaml.clone(), m.vars.clone()).await?;
    }
    Ok(())
}

/// Who started a game-day run, and where its events go.
pub struct Start {
    pub id: String,
    /// The caller as the audit log records it (`schedule:<id>` for a tick).
    pub who: String,
    pub schedule_id: Option<String>,
    /// The client's stream; `None` for a scheduled game day.
    pub events: Option<mpsc::Sender<v1::GameDayEvent>>,
}

/// Marks `start.id` in flight now (so a schedule sees it running before
/// its task is first polled) and returns the task that runs the suite.
pub fn spawn(control: &ControlService, suite: Suite, start: Start) {
    control.gamedays.lock().insert(start.id.clone());
    let leave = Leave(control.gamedays.clone(), start.id.clone());
    let c = control.clone();
    control.tracker.spawn(async move {
        let _leave = leave;
        run(&c, suite, start).await
    });
}

/// Runs `suite` to its end and records it; returns its summary.
pub async fn run(control: &ControlService, suite: Suite, start: Start) -> Summary {
    let Start {
        id,
        who,
        schedule_id,
        events,
    } = start;
    let store = &control.store;
    let now = faultline_proto::now_unix_ms();
    if let Err(e) = store.gameday_started(&id, &suite.name, &suite.source, schedule_id.as_deref(), now) {
        tracing::warn!(gameday = %id, err = %e, "cannot record a game-day run");
    }
    crate::control::actions::audit(
        store,
        &who,
        "gameday",
        &id,
        &format!(
            "game day {} from {}, {} experiments",
            suite.name,
            suite.source,
            suite.members.len()
        ),
    );
    info!(gameday = %id, name = %suite.name, caller = %who, "game day started");
    let send = |event: v1::game_day_event::Event| {
        let events = events.clone();
        let id = id.clone();
        async move {
            if let Some(tx) = events {
                // A client that went away does not stop the game day.
                let _ = tx
                    .send(v1::GameDayEvent {
                        gameday_run_id: id,
                        event: Some(event),
                    })
                    .await;
            }
        }
    };
    let mut entries: Vec<Entry> = Vec::with_capacity(suite.members.len());
    let mut stop_reason: Option<String> = None;
    for (i, m) in suite.members.iter().enumerate() {
        let mut entry = Entry {
            file: m.file.clone(),
            weight: m.weight,
            outcome: "skipped".into(),
            run_id: None,
            reason: String::new(),
            time_to_recovery_ms: None,
        };
        if control.shutdown.is_cancelled() {
            stop_reason.get_or_insert_with(|| "the coordinator is shutting down".into());
        }
        if let Some(why) = &stop_reason {
            entry.reason = why.clone();
        } else if let Some(why) = control.runs.stopped() {
            entry.outcome = "error".into();
            entry.reason = crate::control::Error::Stopped(why).to_string();
        } else {
            match parse_off_runtime(m.source.clone(), m.yaml.clone(), m.vars.clone()).await {
                Err(e) => {
                    entry.outcome = "invalid".into();
                    entry.reason = e.to_string();
                }
                // The approval webhook is asked about each experiment as
                // the game day reaches it.
                Ok(exp) => match control.approve(&exp, &m.source, &who).await {
                    Err(refusal) => {
                        entry.outcome = "error".into();
                        entry.reason = refusal.to_string();
                    }
                    Ok(()) => {
                        send(v1::game_day_event::Event::Log(v1::LogLine {
                            message: format!("game day {}: {}", suite.name, m.file),
                        }))
                        .await;
                        let (run_id, mut rx) = control.start_run(exp, m.source.clone(), &who);
                        let _ = store.gameday_member(&id, i, &member(&entry, "running", Some(&run_id)));
                        entry.run_id = Some(run_id);
                        entry.outcome = "error".into();
                        entry.reason = "the run ended without a verdict".into();
                        while let Some(ev) = rx.recv().await {
                            if let Some(v1::run_event::Event::Finished(f)) = &ev.event {
                                let report: Option<crate::report::Report> = serde_json::from_str(&f.report_json).ok();
                                entry.outcome = f.outcome.clone();
                                entry.reason = f.reason.clone();
                                entry.time_to_recovery_ms = report
                                    .as_ref()
                                    .and_then(|r| r.probes.iter().filter_map(|p| p.time_to_recovery_ms).max());
                            }
                            // Probe progress is for live views; the rest is the story.
                            if !matches!(ev.event, Some(v1::run_event::Event::Probe(_))) {
                                send(v1::game_day_event::Event::Run(ev)).await;
                            }
                        }
                    }
                },
            }
        }
        if suite.stop_on_failure && stop_reason.is_none() && entry.outcome != "passed" {
            stop_reason = Some("stop_on_failure: an earlier experiment did not pass".into());
        }
        let _ = store.gameday_member(&id, i, &member(&entry, &entry.outcome, entry.run_id.as_deref()));
        entries.push(entry);
    }
    let summary = Summary::new(&id, &suite, entries);
    let json = serde_json::to_string(&summary).unwrap_or_default();
    if let Err(e) = store.gameday_finished(
        &id,
        faultline_proto::now_unix_ms(),
        summary.resilience_score,
        summary.passed,
        summary.judged,
        summary.exit_code,
        &json,
    ) {
        tracing::warn!(gameday = %id, err = %e, "cannot record a game day's end");
    }
    control.metrics.inc(
        "faultline_gamedays_total",
        &[("result", if summary.exit_code == 0 { "passed" } else { "not_passed" })],
    );
    info!(gameday = %id, score = ?summary.resilience_score, "game day finished");
    if let Some(n) = &control.notifier {
        n.notify(
            crate::notify::EventKind::GamedayFinish,
            serde_json::json!({
                "gameday_run_id": id, "name": suite.name, "resilience_score": summary.resilience_score,
                "passed": summary.passed, "judged": summary.judged, "exit_code": summary.exit_code,
                "run_ids": summary.experiments.iter().filter_map(|e| e.run_id.clone()).collect::<Vec<_>>(),
            }),
            format!(
                "faultline: game day {} ({id}) finished: resilience score {} ({} of {} judged experiments passed)",
                suite.name,
                summary
                    .resilience_score
                    .map(|s| format!("{s:.1}"))
                    .unwrap_or_else(|| "n/a".into()),
                summary.passed,
                summary.judged
            ),
        );
    }
    send(v1::game_day_event::Event::Finished(v1::GameDayFinished {
        summary_json: json,
        exit_code: summary.exit_code,
    }))
    .await;
    summary
}

fn member(e: &Entry, outcome: &str, run_id: Option<&str>) -> GameDayMemberRow {
    GameDayMemberRow {
        file: e.file.clone(),
        weight: e.weight,
        outcome: outcome.to_string(),
        run_id: run_id.map(str::to_string),
    }
}
