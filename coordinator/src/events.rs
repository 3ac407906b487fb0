//! The one path of a run's events.
//!
//! Every event of a run — the engine's, the final RunFinished with the
//! report, and fault statuses that arrive after the run stopped listening
//! (a restore acknowledged late, a lease that expired) — goes through one
//! writer per run. The writer stores the event, then publishes it to
//! followers with its index among the stored events (see [`crate::follow`],
//! which relies on exactly that order), then forwards the engine's events
//! to the client that submitted the run. One writer per run keeps the
//! store's order and the published indexes the same.
//!
//! A status for a run whose writer has already ended (the run is over, or
//! it was interrupted by a restart) is stored directly: nobody follows that
//! run live any more, so there is no index to keep in step.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use faultline_proto::{now_unix_ms, v1};
use tokio::sync::mpsc;
use tracing::warn;

use crate::follow::Followers;
use crate::report::Report;
use crate::store::Store;

/// What a writer is given to write.
enum Entry {
    /// An engine event: stored, published, forwarded to the client.
    Run(v1::RunEvent),
    /// The run's report (stored first), then its RunFinished event.
    Finished(Arc<Report>),
    /// A status after the run stopped listening: stored as `after` and
    /// published, not forwarded (the client has the run's own view).
    Late { agent_id: String, status: v1::FaultStatus },
}

/// The store and followers every run writes to, and the writers of runs
/// still being written.
pub struct EventLog {
    store: Arc<Store>,
    followers: Followers,
    /// Writers by run id. Weak: a writer ends when its run's handles are
    /// all dropped, not when this map lets go.
    writers: Mutex<HashMap<String, mpsc::WeakUnboundedSender<Entry>>>,
}

/// A run's handle on its writer (the engine and the code that started the
/// run hold one each).
#[derive(Clone)]
pub struct RunEvents {
    run_id: String,
    tx: mpsc::UnboundedSender<Entry>,
}

impl RunEvents {
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Writes an engine event. A writer that is gone (coordinator
    /// shutdown) drops it: the run goes on.
    pub fn send(&self, event: v1::RunEvent) {
        let _ = self.tx.send(Entry::Run(event));
    }

    /// Stores the report and writes RunFinished, the run's last event.
    pub fn finish(&self, report: Arc<Report>) {
        let _ = self.tx.send(Entry::Finished(report));
    }
}

impl EventLog {
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            followers: Followers::default(),
            writers: Mutex::default(),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Runs in flight and who follows them.
    pub fn followers(&self) -> &Followers {
        &self.followers
    }

    fn writers(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::WeakUnboundedSender<Entry>>> {
        self.writers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a starting run and opens its writer; `client` gets the run's
    /// events after the store and followers (a client that goes away stops
    /// nothing). Returns the run's handle and the writer task, which ends
    /// once every handle is dropped and what they sent is written.
    pub fn open(
        self: &Arc<Self>,
        run_id: &str,
        experiment: &str,
        source: &str,
        client: mpsc::Sender<v1::RunEvent>,
    ) -> (RunEvents, impl Future<Output = ()> + Send + 'static) {
        if let Err(e) = self.store.run_started(run_id, experiment, source, now_unix_ms()) {
            warn!(run_id = %run_id, err = %e, "cannot record the run in the store");
        }
        self.followers.open(run_id);
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.writers().insert(run_id.to_string(), tx.downgrade());
        let log = self.clone();
        let id = run_id.to_string();
        let writer = async move {
            // Late statuses have no clock of their own: they carry the
            // run's last elapsed time.
            let mut elapsed_ms = 0;
            while let Some(entry) = rx.recv().await {
                let (event, to_client) = match entry {
                    Entry::Run(ev) => {
                        elapsed_ms = ev.elapsed_ms;
                        (ev, true)
                    }
                    Entry::Finished(report) => {
                        if let Err(e) = log.store.run_finished(&report, now_unix_ms()) {
                            warn!(run_id = %id, err = %e, "cannot record the run's report in the store");
                        }
                        (finished_event(&report), true)
                    }
                    Entry::Late { agent_id, status } => (
                        v1::RunEvent {
                            run_id: id.clone(),
                            elapsed_ms,
                            event: Some(v1::run_event::Event::Fault(v1::FaultEvent {
                                agent_id,
                                status: Some(status),
                            })),
                        },
                        false,
                    ),
                };
                log.record(&id, &event, !to_client);
                if to_client {
                    let _ = client.send(event).await;
                }
            }
            // No handle is left, so no late status reaches this writer any
            // more (its weak sender no longer upgrades).
            log.writers().remove(&id);
            log.followers.close(&id);
        };
        (
            RunEvents {
                run_id: run_id.to_string(),
                tx,
            },
            writer,
        )
    }

    /// A status no run in flight took (see [`crate::registry::Registry::route`]):
    /// through its run's writer while that is open, else straight into the
    /// store. A status without a run id has no run to go to and is dropped.
    pub fn late_status(&self, agent_id: &str, status: v1::FaultStatus) {
        if status.run_id.is_empty() {
            return;
        }
        let writer = self.writers().get(&status.run_id).and_then(|w| w.upgrade());
        let entry = Entry::Late {
            agent_id: agent_id.to_string(),
            status,
        };
        let entry = match writer {
            Some(tx) => match tx.send(entry) {
                Ok(()) => return,
                Err(mpsc::error::SendError(entry)) => entry,
            },
            None => entry,
        };
        if let Entry::Late { agent_id, status } = entry {
            let event = v1::RunEvent {
                run_id: status.run_id.clone(),
                elapsed_ms: 0,
                event: Some(v1::run_event::Event::Fault(v1::FaultEvent {
                    agent_id,
                    status: Some(status),
                })),
            };
            self.record(&event.run_id, &event, true);
        }
    }

    /// Stores `event` (as `after` when it is a late status) and publishes
    /// it to followers with whether it was stored: the store first, so a
    /// follower that reads the store finds everything published before.
    fn record(&self, run_id: &str, event: &v1::RunEvent, late: bool) {
        let stored = match stored_event(event) {
            Some((kind, text)) => {
                let kind = if late { "after" } else { kind };
                match self.store.event(run_id, now_unix_ms(), kind, &text) {
                    Ok(stored) => stored,
                    Err(e) => {
                        warn!(run_id = %run_id, err = %e, "cannot record a run event in the store");
                        false
                    }
                }
            }
            None => false,
        };
        self.followers.publish(run_id, stored, event);
    }
}

/// The last event of a run: its outcome and the whole report.
fn finished_event(r: &Report) -> v1::RunEvent {
    v1::RunEvent {
        run_id: r.run_id.clone(),
        elapsed_ms: r.duration_ms,
        event: Some(v1::run_event::Event::Finished(v1::RunFinished {
            outcome: r.outcome.to_string(),
            exit_code: r.exit_code,
            reason: r.reason.clone(),
            report_json: serde_json::to_string(r).unwrap_or_default(),
        })),
    }
}

/// What of a run event goes into the store: its kind and a line of text.
/// Probe progress is live only.
fn stored_event(ev: &v1::RunEvent) -> Option<(&'static str, String)> {
    use v1::run_event::Event;
    Some(match ev.event.as_ref()? {
        Event::Started(s) => ("started", s.experiment.clone()),
        Event::Phase(p) => ("phase", p.phase.clone()),
        Event::Fault(f) => (
            "fault",
            faultline_proto::fault_status_line(&f.agent_id, f.status.as_ref()?),
        ),
        Event::Log(l) => ("log", l.message.clone()),
        Event::Finished(f) => ("finished", format!("{}: {}", f.outcome, f.reason)),
        // JSON, so a late follower gets the check back (see `follow`) and
        // a live page its current state.
        Event::Check(c) => (
            "check",
            serde_json::json!({
                "kind": c.kind, "name": c.name, "state": c.state,
                "detail": c.detail, "at_unix_ms": c.at_unix_ms,
            })
            .to_string(),
        ),
        Event::Probe(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::follow::Published;

    fn status(fault_id: &str, run_id: &str, state: v1::FaultState) -> v1::FaultStatus {
        v1::FaultStatus {
            fault_id: fault_id.into(),
            run_id: run_id.into(),
            state: state as i32,
            detail: "lease expired".into(),
            ..Default::default()
        }
    }

    fn kinds(store: &Store, run_id: &str) -> Vec<(String, String)> {
        let (_, _, events) = store.get(run_id).unwrap().unwrap();
        events.into_iter().map(|e| (e.kind, e.text)).collect()
    }

    #[tokio::test]
    async fn late_statuses_are_stored_once_and_reach_followers() {
        let store = Arc::new(Store::in_memory().unwrap());
        let log = Arc::new(EventLog::new(store.clone()));
        let (client, mut client_rx) = mpsc::channel(16);
        let (events, writer) = log.open("r1", "exp", "t.yaml", client);
        let writer = tokio::spawn(writer);
        let mut follower = log.followers().subscribe("r1").expect("an open run is followable");
        events.send(v1::RunEvent {
            run_id: "r1".into(),
            elapsed_ms: 5,
            event: Some(v1::run_event::Event::Log(v1::LogLine {
                message: "restore: 1 of 1 target(s) confirmed restored".into(),
            })),
        });
        // After the run stopped listening, while its writer is open.
        log.late_status("a1", status("f-7", "r1", v1::FaultState::Expired));
        let Published { index, event } = follower.rx.recv().await.unwrap();
        assert_eq!(index, Some(0));
        assert!(matches!(event.event, Some(v1::run_event::Event::Log(_))));
        let Published { index, event } = follower.rx.recv().await.unwrap();
        assert_eq!(index, Some(1), "the late status is published with its store index");
        assert_eq!(event.elapsed_ms, 5, "it carries the run's last elapsed time");
        match event.event {
            Some(v1::run_event::Event::Fault(f)) => {
                assert_eq!(f.agent_id, "a1");
                assert_eq!(f.status.unwrap().fault_id, "f-7");
            }
            other => panic!("expected the late fault status, got {other:?}"),
        }
        // The client gets the run's own events, not the late ones.
        assert!(matches!(
            client_rx.recv().await.and_then(|e| e.event),
            Some(v1::run_event::Event::Log(_))
        ));
        // The run is over: the next late status goes straight to the store.
        drop(events);
        writer.await.unwrap();
        assert!(log.followers().subscribe("r1").is_none());
        log.late_status("a1", status("f-8", "r1", v1::FaultState::Restored));
        // And one without a run id has nowhere to go.
        log.late_status("a1", status("f-9", "", v1::FaultState::Restored));
        let stored = kinds(&store, "r1");
        assert_eq!(stored.len(), 3, "{stored:?}");
        assert_eq!(stored[0].0, "log");
        assert_eq!(
            stored[1..].iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["after", "after"]
        );
        assert!(stored[1].1.contains("f-7") && stored[2].1.contains("f-8"), "{stored:?}");
        assert!(
            client_rx.recv().await.is_none(),
            "the client's stream ends with the writer"
        );
    }

    #[tokio::test]
    async fn a_check_is_stored_and_a_late_follower_gets_it_back_as_a_check() {
        let store = Arc::new(Store::in_memory().unwrap());
        let log = Arc::new(EventLog::new(store.clone()));
        let (client, _client_rx) = mpsc::channel(16);
        let (events, writer) = log.open("r1", "exp", "t.yaml", client);
        let writer = tokio::spawn(writer);
        let check = v1::CheckChanged {
            kind: "guardrail".into(),
            name: "web: success rate >= 90.0% over 1s".into(),
            state: "breached".into(),
            detail: "measured 0.0% (10 samples)".into(),
            at_unix_ms: 1_700_000_000_000,
        };
        events.send(v1::RunEvent {
            run_id: "r1".into(),
            elapsed_ms: 5,
            event: Some(v1::run_event::Event::Check(check.clone())),
        });
        drop(events);
        writer.await.unwrap();
        assert_eq!(kinds(&store, "r1")[0].0, "check");
        // Followed after the fact (from the store), it is a check again,
        // so a live page opened late shows the state, not a log line.
        let (tx, mut rx) = mpsc::channel(16);
        let task = crate::follow::follow(store.clone(), log.followers(), "r1", 0, tx).expect("known run");
        tokio::spawn(task);
        let got = rx.recv().await.expect("one event").expect("ok");
        assert_eq!(got.event, Some(v1::run_event::Event::Check(check)));
    }
}
