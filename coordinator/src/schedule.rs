//! Scheduled runs: a cron expression in a time zone, an optional allowed
//! window, and concurrency forbid.
//!
//! The decision of what to do with due ticks is a pure function of the
//! schedule, the last tick handled, "now" and whether the schedule's
//! previous run is still going ([`due_ticks`]), so it is tested with
//! injected times. The scheduler task ([`run`]) only reads the clock,
//! records each decision in the store, and submits the runs:
//!
//! - the newest due tick (within [`GRACE`]) starts a run, unless the
//!   previous run of the schedule is still going (`skipped: still running`)
//!   or it falls outside the window (`skipped: outside window`), or its
//!   error budget (the experiment's or the policy's) is below the minimum
//!   or cannot be measured (`skipped: error budget: ...`), or the approval
//!   webhook refuses it (`skipped: the approval webhook refused ...`, see
//!   [`Gate`]);
//! - older due ticks — the coordinator was down or busy — are recorded as
//!   `missed` and never replayed in a burst.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Datelike, TimeZone, Timelike};
use croner::parser::{CronParser, Year};
use croner::Cron;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::policy::Window;
use crate::store::{ScheduleRow, Store};

/// A due tick older than this when the scheduler sees it was missed.
pub const GRACE: Duration = Duration::from_secs(60);
/// At most this many missed ticks are recorded one by one per pass; more
/// are summarised in one entry.
pub const MAX_MISSED_RECORDED: usize = 20;

/// Why a schedule's timing is refused. Messages name the value, not a
/// flag: the CLI and Control both show them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("cron expression {cron:?} has {fields} fields; write 5 (minute hour day month weekday, e.g. \"0 9 * * MON-FRI\") or 6 with seconds first")]
    CronFields { cron: String, fields: usize },
    #[error("cron expression {cron:?}: {why}; write e.g. \"0 9 * * MON-FRI\" (minute hour day month weekday)")]
    Cron { cron: String, why: String },
    #[error("cron expression {0:?} never fires (no date matches its day, month and weekday)")]
    NeverFires(String),
    #[error("time zone {0:?} is not an IANA time zone name; write e.g. UTC or Europe/Paris")]
    TimeZone(String),
    #[error(transparent)]
    Window(#[from] crate::policy::WindowError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a scheduled run did not start (the coordinator is stopped, the
/// experiment or the stored game day no longer parses), as the tick records it.
pub type SubmitError = crate::control::Error;

/// A schedule's timing, checked and compiled.
#[derive(Debug, Clone)]
pub struct Timing {
    cron: Cron,
    tz: chrono_tz::Tz,
    window: Option<Window>,
}

impl Timing {
    /// `cron` has 5 fields (minute hour day month weekday) or 6 (with
    /// seconds first) and must fire at least once; `tz` is an IANA name such
    /// as `Europe/Paris` (default UTC); `window` is `"Mon-Fri 09:00-16:00"`
    /// in that zone. Errors name the value, not a flag: the CLI and Control
    /// both use them.
    pub fn new(cron: &str, tz: &str, window: Option<&str>) -> Result<Timing> {
        let fields = cron.split_whitespace().count();
        if !(fields == 5 || fields == 6) || cron.contains('@') {
            return Err(Error::CronFields {
                cron: cron.to_string(),
                fields,
            });
        }
        let parsed = CronParser::builder()
            .year(Year::Disallowed)
            .build()
            .parse(cron)
            .map_err(|e| Error::Cron {
                cron: cron.to_string(),
                why: e.to_string(),
            })?;
        let tz = match tz {
            "" => chrono_tz::UTC,
            t => chrono_tz::Tz::from_str(t).map_err(|_| Error::TimeZone(t.to_string()))?,
        };
        let window = window.map(|w| w.parse::<Window>().map_err(Error::Window)).transpose()?;
        let timing = Timing {
            cron: parsed,
            tz,
            window,
        };
        // A pattern such as "0 0 30 2 *" (February 30) parses but never
        // fires; accepting it would schedule nothing, silently.
        if timing.next_after(faultline_proto::now_unix_ms()).is_none() {
            return Err(Error::NeverFires(cron.to_string()));
        }
        Ok(timing)
    }

    /// The first tick strictly after `after_ms` (Unix ms). Ticks fall on
    /// whole seconds, so the search starts from the second `after_ms` is in.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let t = self
            .tz
            .timestamp_opt(i64::try_from(after_ms / 1000).ok()?, 0)
            .single()?;
        let next = self.cron.find_next_occurrence(&t, false).ok()?;
        u64::try_from(next.timestamp()).ok()?.checked_mul(1000)
    }

    /// Whether a tick at `at_ms` is inside the window (always, without one).
    pub fn in_window(&self, at_ms: u64) -> bool {
        let Some(w) = &self.window else { return true };
        let Some(t) = self.tz.timestamp_millis_opt(at_ms as i64).single() else {
            return false;
        };
        let day = t.weekday().num_days_from_monday() as usize;
        let minute = (t.hour() * 60 + t.minute()) as u16;
        w.days[day] && minute >= w.start && minute < w.end
    }
}

/// What happened to one due tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    Run,
    SkippedRunning,
    SkippedWindow,
    Missed,
    /// `n` more missed ticks, not listed one by one.
    MissedMore(usize),
}

impl Tick {
    pub fn as_str(&self) -> String {
        match self {
            Tick::Run => "started".into(),
            Tick::SkippedRunning => "skipped: the previous run is still going".into(),
            Tick::SkippedWindow => "skipped: outside the allowed window".into(),
            Tick::Missed => "missed: the coordinator was not running or was busy".into(),
            Tick::MissedMore(n) => format!("missed {n} more ticks"),
        }
    }
}

/// The ticks due in `(last_ms, now_ms]` and what to do with each.
pub fn due_ticks(t: &Timing, last_ms: u64, now_ms: u64, running: bool) -> Vec<(u64, Tick)> {
    let mut due = Vec::new();
    let mut at = last_ms;
    // Bounded: a schedule every second over a year is ~31M ticks; we only
    // need the newest one and a count of the rest.
    let mut missed = 0usize;
    let mut newest: Option<u64> = None;
    let grace = GRACE.as_millis() as u64;
    for _ in 0..1_000_000 {
        let Some(n) = t.next_after(at) else { break };
        if n > now_ms {
            break;
        }
        if let Some(prev) = newest.replace(n) {
            if missed < MAX_MISSED_RECORDED {
                due.push((prev, Tick::Missed));
            }
            missed += 1;
        }
        at = n;
    }
    if missed > MAX_MISSED_RECORDED {
        due.push((at, Tick::MissedMore(missed - MAX_MISSED_RECORDED)));
    }
    if let Some(n) = newest {
        let tick = if now_ms.saturating_sub(n) > grace {
            Tick::Missed
        } else if !t.in_window(n) {
            Tick::SkippedWindow
        } else if running {
            Tick::SkippedRunning
        } else {
            Tick::Run
        };
        due.push((n, tick));
    }
    due
}

/// Starts a scheduled run; returns its id, or why it could not start.
pub type Submit = Arc<dyn Fn(&ScheduleRow) -> Result<String, SubmitError> + Send + Sync>;
/// Whether a run is still going.
pub type IsRunning = Arc<dyn Fn(&str) -> bool + Send + Sync>;
/// Why a due run must not start (its error budget, the approval webhook),
/// in words that follow `skipped: ` in the tick's record, checked before
/// [`Submit`]; `None` lets it start.
pub type Gate = Arc<
    dyn Fn(&ScheduleRow) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send>> + Send + Sync,
>;

/// The gate of the error budgets of the schedule's experiment and of
/// `policy`: the refusal in words, or `None`. A schedule whose file no
/// longer parses is let through, so that [`Submit`] records why.
pub fn error_budget_gate(policy: Arc<crate::policy::Policy>) -> Gate {
    Arc::new(move |s: &ScheduleRow| {
        let policy = policy.clone();
        // A game day's budgets are those of every experiment it lists.
        let parsed: Vec<_> = match s.kind {
            crate::store::ScheduleKind::Experiment => vec![crate::experiment::parse(&s.source, &s.yaml, &s.vars)],
            crate::store::ScheduleKind::GameDay => crate::gameday::Suite::from_json(&s.yaml)
                .map(|suite| {
                    suite
                        .members
                        .iter()
                        .map(|m| crate::experiment::parse(&m.source, &m.yaml, &m.vars))
                        .collect()
                })
                .unwrap_or_default(),
        };
        Box::pin(async move {
            let mut budgets: Vec<_> = parsed
                .into_iter()
                .filter_map(Result::ok)
                .flat_map(|exp| exp.error_budget)
                .collect();
            budgets.extend(policy.error_budget.iter().cloned());
            crate::experiment::error_budget::refusal(&budgets)
                .await
                .map(|why| format!("error budget: {why}"))
        })
    })
}

/// The scheduler task: handles due ticks of every schedule until `shutdown`.
/// `changed` wakes it when schedules are added or removed.
pub async fn run(
    store: Arc<Store>,
    submit: Submit,
    is_running: IsRunning,
    gate: Gate,
    changed: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        let now = faultline_proto::now_unix_ms();
        let mut next_wake = now + 30_000;
        let schedules = store.schedules().unwrap_or_else(|e| {
            warn!(err = %e, "cannot read schedules");
            Vec::new()
        });
        for s in schedules {
            let timing = match Timing::new(&s.cron, &s.tz, s.window.as_deref()) {
                Ok(t) => t,
                Err(e) => {
                    warn!(schedule = %s.id, err = %e, "schedule no longer parses; skipping it");
                    continue;
                }
            };
            let running = s.last_run_id.as_deref().map(|r| is_running(r)).unwrap_or(false);
            let mut last = s.last_tick_unix_ms;
            for (due, tick) in due_ticks(&timing, s.last_tick_unix_ms, now, running) {
                let mut tick_text = tick.as_str();
                let mut run_id = None;
                if tick == Tick::Run {
                    if let Some(why) = gate(&s).await {
                        info!(schedule = %s.id, %why, "scheduled run skipped");
                        tick_text = format!("skipped: {why}");
                    } else {
                        match submit(&s) {
                            Ok(id) => {
                                info!(schedule = %s.id, run_id = %id, "scheduled run started");
                                run_id = Some(id);
                            }
                            Err(e) => tick_text = format!("not started: {e}"),
                        }
                    }
                }
                if let Err(e) = store.schedule_tick(&s.id, due, &tick_text, run_id.as_deref()) {
                    warn!(schedule = %s.id, err = %e, "cannot record a schedule tick");
                }
                last = last.max(due);
            }
            // Every tick up to now is handled (run, skipped or missed).
            let _ = store.schedule_advanced(&s.id, last.max(now));
            if let Some(n) = timing.next_after(now) {
                next_wake = next_wake.min(n);
            }
        }
        let wait = Duration::from_millis(next_wake.saturating_sub(faultline_proto::now_unix_ms()).max(10));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-23 (a Monday) 09:00:00 UTC, in ms.
    const MON_9: u64 = 1_795_424_400_000;
    const MIN: u64 = 60_000;

    #[test]
    fn the_newest_due_tick_runs_and_older_ones_are_missed_not_replayed() {
        let t = Timing::new("*/5 * * * *", "UTC", None).unwrap();
        // Nothing due yet.
        assert!(due_ticks(&t, MON_9, MON_9 + 4 * MIN, false).is_empty());
        // One due tick, seen 10 s late: it runs.
        assert_eq!(
            due_ticks(&t, MON_9, MON_9 + 5 * MIN + 10_000, false),
            vec![(MON_9 + 5 * MIN, Tick::Run)]
        );
        // The coordinator was down for an hour: 11 ticks missed, the 12th runs.
        let d = due_ticks(&t, MON_9, MON_9 + 60 * MIN + 1_000, false);
        assert_eq!(d.len(), 12);
        assert!(d[..11].iter().all(|(_, k)| *k == Tick::Missed), "{d:?}");
        assert_eq!(d[11], (MON_9 + 60 * MIN, Tick::Run));
        // Down until past the grace of the newest tick: that one is missed too.
        let d = due_ticks(&t, MON_9, MON_9 + 62 * MIN, false);
        assert!(d.iter().all(|(_, k)| *k == Tick::Missed), "{d:?}");
    }

    #[test]
    fn a_tick_while_the_previous_run_goes_is_skipped() {
        let t = Timing::new("*/5 * * * *", "UTC", None).unwrap();
        assert_eq!(
            due_ticks(&t, MON_9, MON_9 + 5 * MIN, true),
            vec![(MON_9 + 5 * MIN, Tick::SkippedRunning)]
        );
    }

    #[test]
    fn windows_and_time_zones_apply_in_the_schedules_zone() {
        // 09:00-16:00 in Paris (UTC+1 in November): 09:00 UTC is 10:00 there.
        let t = Timing::new("0 * * * *", "Europe/Paris", Some("Mon-Fri 09:00-16:00")).unwrap();
        assert_eq!(
            due_ticks(&t, MON_9 - MIN, MON_9 + 1_000, false),
            vec![(MON_9, Tick::Run)]
        );
        // 15:00 UTC is 16:00 in Paris: outside.
        let at = MON_9 + 6 * 60 * MIN;
        assert_eq!(due_ticks(&t, at - MIN, at, false), vec![(at, Tick::SkippedWindow)]);
        // The cron runs in the zone: "0 9 * * *" is 08:00 UTC in Paris.
        let t = Timing::new("0 9 * * *", "Europe/Paris", None).unwrap();
        assert_eq!(t.next_after(MON_9 - 120 * MIN), Some(MON_9 - 60 * MIN));
    }

    #[test]
    fn a_year_of_missed_seconds_is_summarised() {
        let t = Timing::new("* * * * * *", "UTC", None).unwrap();
        let d = due_ticks(&t, MON_9, MON_9 + 3_600_000, false);
        assert_eq!(d.len(), MAX_MISSED_RECORDED + 2);
        assert!(matches!(d[MAX_MISSED_RECORDED].1, Tick::MissedMore(n) if n > 3_000));
        assert_eq!(d.last().unwrap().1, Tick::Run);
    }

    #[test]
    fn bad_timing_is_explained_without_naming_flags() {
        let e = Timing::new("every day", "UTC", None).unwrap_err().to_string();
        assert!(e.contains("cron expression \"every day\" has 2 fields; write 5"), "{e}");
        let e = Timing::new("0 9 * * * * 2030", "UTC", None).unwrap_err().to_string();
        assert!(
            e.contains("has 7 fields; write 5") && e.contains("or 6 with seconds first"),
            "{e}"
        );
        let e = Timing::new("0 99 * * *", "UTC", None).unwrap_err().to_string();
        assert!(e.starts_with("cron expression \"0 99 * * *\":"), "{e}");
        assert!(Timing::new("0 9 * * *", "Mars/Olympus", None)
            .unwrap_err()
            .to_string()
            .contains("time zone \"Mars/Olympus\""));
        // Named once: the window's own error already starts with it.
        let e = Timing::new("0 9 * * *", "UTC", Some("9-5")).unwrap_err().to_string();
        assert_eq!(e.matches("window \"9-5\"").count(), 1, "{e}");
        for e in [
            Timing::new("every day", "UTC", None).unwrap_err().to_string(),
            Timing::new("0 9 * * *", "Mars/Olympus", None).unwrap_err().to_string(),
        ] {
            assert!(!e.contains("--"), "CLI flags belong to the CLI: {e}");
        }
    }

    #[test]
    fn a_cron_that_never_fires_is_refused() {
        let e = Timing::new("0 0 30 2 *", "UTC", None).unwrap_err().to_string();
        assert!(e.contains("never fires"), "{e}");
        assert!(Timing::new("0 0 31 4 *", "Europe/Paris", None).is_err());
        // February 29 fires, in leap years.
        assert!(Timing::new("0 0 29 2 *", "UTC", None).is_ok());
    }

    #[test]
    fn ticks_fall_on_whole_seconds() {
        let t = Timing::new("*/5 * * * *", "UTC", None).unwrap();
        assert_eq!(t.next_after(MON_9 + 1_234), Some(MON_9 + 5 * MIN));
        let t = Timing::new("*/10 * * * * *", "UTC", None).unwrap();
        assert_eq!(t.next_after(MON_9 + 10_999), Some(MON_9 + 20_000));
        assert_eq!(t.next_after(MON_9 + 9_999), Some(MON_9 + 10_000));
    }

    #[tokio::test]
    async fn a_tick_whose_error_budget_is_spent_is_skipped_and_starts_no_run() {
        let store = Arc::new(Store::in_memory().expect("store"));
        let now = faultline_proto::now_unix_ms();
        store
            .add_schedule(&ScheduleRow {
                id: "s1".into(),
                kind: Default::default(),
                source: "e.yaml".into(),
                yaml: String::new(),
                vars: Default::default(),
                cron: "* * * * * *".into(),
                tz: "UTC".into(),
                window: None,
                created_unix_ms: now,
                last_tick_unix_ms: now,
                last_run_id: None,
            })
            .expect("add");
        let submitted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = submitted.clone();
        let submit: Submit = Arc::new(move |_s: &ScheduleRow| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok("r1".into())
        });
        let gate: Gate = Arc::new(|_s: &ScheduleRow| {
            Box::pin(async { Some("error budget: -100% of the budget remains".to_string()) })
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            store.clone(),
            submit,
            Arc::new(|_: &str| false),
            gate,
            Arc::new(Notify::new()),
            stop.clone(),
        ));
        // Bounded: at most 5 s for the first tick to be handled.
        let mut ticks = Vec::new();
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            ticks = store.schedule_ticks("s1", 10).expect("ticks");
            if !ticks.is_empty() {
                break;
            }
        }
        stop.cancel();
        let _ = task.await;
        assert!(!ticks.is_empty(), "no tick handled within 5 s");
        assert_eq!(ticks[0].outcome, "skipped: error budget: -100% of the budget remains");
        assert_eq!(ticks[0].run_id, None);
        assert_eq!(submitted.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
