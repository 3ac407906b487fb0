//! Following a run one did not start (`Control.Follow`).
//!
//! A run's events go to the store first and are then published here, both
//! by the run's one writer ([`crate::events`]), each stored event with its
//! index in the run's stored events. A follower
//! subscribes *before* it reads the store, and notes how many events were
//! published at that moment: those are all in the store, and every later
//! one arrives on its subscription. So it replays the store up to that
//! count and continues live, without a gap or a duplicate. A follower that
//! falls behind the broadcast (it keeps [`LIVE_BUFFER`] events) refills the
//! gap from the store, since every indexed event is stored before it is
//! published. Probe progress is not stored: it is sent live only and has no
//! index. So that a follower who comes late still gets the whole chart,
//! the live run keeps each probe's points so far (the newest
//! [`CHART_POINTS`]) and a subscription hands them over as one progress
//! event per probe, taken under the same lock as the publishing: every
//! point is in that snapshot or arrives live, once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use faultline_proto::v1::{self, run_event::Event};
use tokio::sync::{broadcast, mpsc};

use crate::store::{EventRow, RunRow, Store};

/// Events a slow follower may lag behind before it refills from the store.
/// By default, 256.
pub const LIVE_BUFFER: usize = 256;

/// Chart points kept per probe of a run in flight, for late followers. By
/// default, 5000 (over four minutes of a probe sampling every 50 ms; the
/// console's chart keeps as many).
pub const CHART_POINTS: usize = 5000;

/// One published event: its index among the run's stored events, if stored.
#[derive(Debug, Clone)]
pub struct Published {
    pub index: Option<u64>,
    pub event: v1::RunEvent,
}

/// Runs in flight on this coordinator and their followers.
#[derive(Default)]
pub struct Followers {
    runs: Mutex<HashMap<String, Live>>,
}

struct Live {
    /// Stored events published so far (the next index).
    stored: u64,
    tx: broadcast::Sender<Published>,
    /// Per probe, in the order they first reported: the latest progress
    /// with every point published so far (the newest [`CHART_POINTS`]).
    chart: Vec<v1::RunEvent>,
}

impl Live {
    fn keep_points(&mut self, ev: &v1::RunEvent) {
        let Some(Event::Probe(p)) = &ev.event else { return };
        let kept = self.chart.iter_mut().find_map(|e| match &mut e.event {
            Some(Event::Probe(k)) if k.probe == p.probe => Some((&mut e.elapsed_ms, k)),
            _ => None,
        });
        match kept {
            Some((elapsed, k)) => {
                let mut points = std::mem::take(&mut k.points);
                points.extend(p.points.iter().cloned());
                let over = points.len().saturating_sub(CHART_POINTS);
                points.drain(..over);
                *k = v1::ProbeProgress { points, ..p.clone() };
                *elapsed = ev.elapsed_ms;
            }
            None => self.chart.push(ev.clone()),
        }
    }
}

/// A follower's subscription to a live run.
pub struct Subscription {
    /// Stored events published before the subscription: all in the store.
    pub stored: u64,
    /// Each probe's progress with its chart points published before the
    /// subscription (later ones arrive on `rx`).
    pub chart: Vec<v1::RunEvent>,
    pub rx: broadcast::Receiver<Published>,
}

impl Followers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `run_id` followable; call before its first event.
    pub fn open(&self, run_id: &str) {
        let (tx, _) = broadcast::channel(LIVE_BUFFER);
        self.lock().insert(
            run_id.to_string(),
            Live {
                stored: 0,
                tx,
                chart: Vec::new(),
            },
        );
    }

    /// Publishes an event of `run_id`; `stored` says whether it was written
    /// to the store (it must be written before this call).
    pub fn publish(&self, run_id: &str, stored: bool, event: &v1::RunEvent) {
        let mut runs = self.lock();
        let Some(live) = runs.get_mut(run_id) else { return };
        let index = stored.then(|| {
            live.stored += 1;
            live.stored - 1
        });
        live.keep_points(event);
        if live.tx.receiver_count() > 0 {
            let _ = live.tx.send(Published {
                index,
                event: event.clone(),
            });
        }
    }

    /// Ends `run_id`'s live stream (its followers finish from the store).
    pub fn close(&self, run_id: &str) {
        self.lock().remove(run_id);
    }

    /// Subscribes to `run_id` if it is in flight here.
    pub fn subscribe(&self, run_id: &str) -> Option<Subscription> {
        self.lock().get(run_id).map(|l| Subscription {
            stored: l.stored,
            chart: l.chart.clone(),
            rx: l.tx.subscribe(),
        })
    }
}

/// Errors of a follow.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no run {0} on this coordinator")]
    UnknownRun(String),
    #[error("{0}")]
    Store(#[from] crate::store::Error),
}

/// A run's stored events, rebuilt as wire events.
struct Stored {
    run: RunRow,
    report_json: Option<String>,
    events: Vec<EventRow>,
}

impl Stored {
    fn load(store: &Store, run_id: &str) -> Result<Stored, Error> {
        let (run, report_json, events) = store.get(run_id)?.ok_or_else(|| Error::UnknownRun(run_id.into()))?;
        Ok(Stored {
            run,
            report_json,
            events,
        })
    }

    /// Stored event `i` as a wire event. The store keeps a line of text per
    /// event, so a fault status comes back as a log line and the planned
    /// lengths are 0; the final event carries the full report.
    fn event(&self, i: usize) -> Option<v1::RunEvent> {
        let e = self.events.get(i)?;
        let event = match e.kind.as_str() {
            "started" => Event::Started(v1::RunStarted {
                experiment: e.text.clone(),
                planned_ms: 0,
            }),
            "phase" => Event::Phase(v1::PhaseChanged {
                phase: e.text.clone(),
                planned_ms: 0,
            }),
            "finished" => Event::Finished(self.finished(&e.text)),
            "check" => match stored_check(&e.text) {
                Some(c) => Event::Check(c),
                None => Event::Log(v1::LogLine {
                    message: e.text.clone(),
                }),
            },
            _ => Event::Log(v1::LogLine {
                message: e.text.clone(),
            }),
        };
        Some(v1::RunEvent {
            run_id: self.run.run_id.clone(),
            elapsed_ms: e.at_unix_ms.saturating_sub(self.run.started_unix_ms),
            event: Some(event),
        })
    }

    fn finished(&self, text: &str) -> v1::RunFinished {
        let report = self
            .report_json
            .as_deref()
            .and_then(|j| serde_json::from_str::<crate::report::Report>(j).ok());
        match report {
            Some(r) => v1::RunFinished {
                outcome: r.outcome.to_string(),
                exit_code: r.exit_code,
                reason: r.reason.clone(),
                report_json: self.report_json.clone().unwrap_or_default(),
            },
            None => {
                let (outcome, reason) = text.split_once(": ").unwrap_or((text, ""));
                v1::RunFinished {
                    outcome: outcome.to_string(),
                    exit_code: self.run.exit_code.unwrap_or(crate::Outcome::Error.exit_code()),
                    reason: reason.to_string(),
                    report_json: String::new(),
                }
            }
        }
    }
}

/// Where a follower's events go.
pub type Sink = mpsc::Sender<Result<v1::RunEvent, tonic::Status>>;

/// Checks that `run_id` exists and returns the task that streams its events
/// from stored event `from` on into `tx`: the stored ones, then, while the
/// run is in flight here, the live ones until RunFinished.
pub fn follow(
    store: Arc<Store>,
    followers: &Followers,
    run_id: &str,
    from: u64,
    tx: Sink,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, Error> {
    // Subscribe first: what was published before is in the store.
    let subscription = followers.subscribe(run_id);
    let stored = Stored::load(&store, run_id)?;
    let run_id = run_id.to_string();
    Ok(async move {
        let mut next = from;
        let replay_to = match &subscription {
            Some(s) => s.stored,
            None => stored.events.len() as u64,
        };
        if !send_stored(&tx, &stored, &mut next, replay_to).await {
            return;
        }
        let Some(mut sub) = subscription else {
            if stored.run.status == "interrupted" {
                let _ = tx
                    .send(Ok(v1::RunEvent {
                        run_id: run_id.clone(),
                        elapsed_ms: 0,
                        event: Some(Event::Log(v1::LogLine {
                            message: format!(
                                "run {run_id} was interrupted: its coordinator stopped during it; no verdict"
                            ),
                        })),
                    }))
                    .await;
            }
            return;
        };
        for ev in std::mem::take(&mut sub.chart) {
            if tx.send(Ok(ev)).await.is_err() {
                return;
            }
        }
        loop {
            let p = match sub.rx.recv().await {
                Ok(p) => p,
                // Missed events are refilled from the store at the next
                // indexed one.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => {
                    // The run ended before its last events reached us.
                    if let Ok(s) = Stored::load(&store, &run_id) {
                        let end = s.events.len() as u64;
                        send_stored(&tx, &s, &mut next, end).await;
                    }
                    return;
                }
            };
            let finished = matches!(p.event.event, Some(Event::Finished(_)));
            match p.index {
                Some(i) if i < next => continue,
                Some(i) => {
                    if i > next {
                        let Ok(s) = Stored::load(&store, &run_id) else { return };
                        if !send_stored(&tx, &s, &mut next, i).await {
                            return;
                        }
                    }
                    next = i + 1;
                }
                None => {}
            }
            if tx.send(Ok(p.event)).await.is_err() || finished {
                return;
            }
        }
    })
}

/// Sends stored events `*next..end`; false once the follower is gone.
async fn send_stored(tx: &Sink, stored: &Stored, next: &mut u64, end: u64) -> bool {
    while *next < end {
        let Some(ev) = stored.event(*next as usize) else { break };
        if tx.send(Ok(ev)).await.is_err() {
            return false;
        }
        *next += 1;
    }
    true
}

/// A check event as the store keeps it (JSON, see `crate::events`).
fn stored_check(text: &str) -> Option<v1::CheckChanged> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    Some(v1::CheckChanged {
        kind: s("kind")?,
        name: s("name")?,
        state: s("state")?,
        detail: s("detail").unwrap_or_default(),
        at_unix_ms: v.get("at_unix_ms").and_then(|x| x.as_u64()).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(elapsed_ms: u64, probe: &str, at: std::ops::Range<u64>) -> v1::RunEvent {
        v1::RunEvent {
            run_id: "r1".into(),
            elapsed_ms,
            event: Some(Event::Probe(v1::ProbeProgress {
                probe: probe.into(),
                samples: at.end as u32,
                points: at
                    .map(|at_ms| v1::ProbePoint {
                        at_ms,
                        ok: true,
                        latency_us: 1000,
                        value: None,
                    })
                    .collect(),
                ..Default::default()
            })),
        }
    }

    fn points(ev: &v1::RunEvent) -> Vec<u64> {
        match &ev.event {
            Some(Event::Probe(p)) => p.points.iter().map(|x| x.at_ms).collect(),
            other => panic!("not a probe event: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_late_follower_gets_every_chart_point_so_far_once_and_the_rest_live() {
        let f = Followers::default();
        f.open("r1");
        f.publish("r1", false, &progress(1000, "web", 0..3));
        f.publish("r1", false, &progress(1100, "db", 0..1));
        f.publish("r1", false, &progress(2000, "web", 3..5));
        let mut sub = f.subscribe("r1").expect("in flight");
        assert_eq!(sub.chart.len(), 2, "one event per probe");
        assert_eq!(points(&sub.chart[0]), [0, 1, 2, 3, 4]);
        assert_eq!(sub.chart[0].elapsed_ms, 2000, "the latest progress");
        assert!(matches!(&sub.chart[0].event, Some(Event::Probe(p)) if p.samples == 5));
        assert_eq!(points(&sub.chart[1]), [0]);
        f.publish("r1", false, &progress(3000, "web", 5..6));
        let live = sub.rx.recv().await.expect("live");
        assert_eq!(points(&live.event), [5], "only the new point arrives live");
        // A long run keeps the newest points.
        f.publish("r1", false, &progress(4000, "web", 6..(CHART_POINTS as u64 + 10)));
        let sub = f.subscribe("r1").expect("in flight");
        let kept = points(&sub.chart[0]);
        assert_eq!(kept.len(), CHART_POINTS);
        assert_eq!(kept.last(), Some(&(CHART_POINTS as u64 + 9)));
    }
}
