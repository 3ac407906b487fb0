//! Schedules as stored, and the ticks each one handled.

use rusqlite::params;

use super::{Result, Store};

/// What a schedule runs at each tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScheduleKind {
    /// One experiment: `yaml` is its text.
    #[default]
    Experiment,
    /// A game day: `yaml` is the suite as JSON ([`crate::gameday::Suite`]).
    GameDay,
}

impl ScheduleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleKind::Experiment => "experiment",
            ScheduleKind::GameDay => "gameday",
        }
    }

    fn from_column(s: &str) -> ScheduleKind {
        match s {
            "gameday" => ScheduleKind::GameDay,
            _ => ScheduleKind::Experiment,
        }
    }
}

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRow {
    pub id: String,
    pub kind: ScheduleKind,
    pub source: String,
    /// The experiment's YAML, or the game day's suite as JSON.
    pub yaml: String,
    pub vars: std::collections::HashMap<String, String>,
    pub cron: String,
    pub tz: String,
    pub window: Option<String>,
    pub created_unix_ms: u64,
    /// Every tick up to here has been handled.
    pub last_tick_unix_ms: u64,
    pub last_run_id: Option<String>,
}

/// One handled tick of a schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct TickRow {
    pub due_unix_ms: u64,
    pub outcome: String,
    pub run_id: Option<String>,
}

impl Store {
    pub fn add_schedule(&self, s: &ScheduleRow) -> Result<()> {
        let vars = serde_json::to_string(&s.vars).unwrap_or_else(|_| "{}".into());
        self.with(|c| {
            c.execute(
                "INSERT INTO schedules (id, source, yaml, vars_json, cron, tz, window, created_unix_ms, last_tick_unix_ms, kind)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![s.id, s.source, s.yaml, vars, s.cron, s.tz, s.window, s.created_unix_ms as i64, s.last_tick_unix_ms as i64, s.kind.as_str()],
            )
            .map(|_| ())
        })
    }

    /// False if there was no such schedule.
    pub fn remove_schedule(&self, id: &str) -> Result<bool> {
        self.with(|c| c.execute("DELETE FROM schedules WHERE id = ?1", [id]).map(|n| n > 0))
    }

    pub fn schedules(&self) -> Result<Vec<ScheduleRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, source, yaml, vars_json, cron, tz, window, created_unix_ms, last_tick_unix_ms, last_run_id, kind
                 FROM schedules ORDER BY created_unix_ms, id",
            )?;
            let rows = st.query_map([], |r| {
                Ok(ScheduleRow {
                    id: r.get(0)?,
                    kind: ScheduleKind::from_column(&r.get::<_, String>(10)?),
                    source: r.get(1)?,
                    yaml: r.get(2)?,
                    vars: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
                    cron: r.get(4)?,
                    tz: r.get(5)?,
                    window: r.get(6)?,
                    created_unix_ms: r.get::<_, i64>(7)? as u64,
                    last_tick_unix_ms: r.get::<_, i64>(8)? as u64,
                    last_run_id: r.get(9)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Records what happened at a tick (and the run it started).
    pub fn schedule_tick(&self, id: &str, due_ms: u64, outcome: &str, run_id: Option<&str>) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO schedule_ticks (schedule_id, due_unix_ms, outcome, run_id) VALUES (?1, ?2, ?3, ?4)",
                params![id, due_ms as i64, outcome, run_id],
            )?;
            if let Some(r) = run_id {
                c.execute("UPDATE schedules SET last_run_id = ?2 WHERE id = ?1", params![id, r])?;
            }
            Ok(())
        })
    }

    /// Every tick up to `ms` has been handled.
    pub fn schedule_advanced(&self, id: &str, ms: u64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE schedules SET last_tick_unix_ms = MAX(last_tick_unix_ms, ?2) WHERE id = ?1",
                params![id, ms as i64],
            )
            .map(|_| ())
        })
    }

    /// The newest `limit` ticks of a schedule, newest first.
    pub fn schedule_ticks(&self, id: &str, limit: usize) -> Result<Vec<TickRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT due_unix_ms, outcome, run_id FROM schedule_ticks WHERE schedule_id = ?1 ORDER BY rowid DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![id, limit as i64], |r| {
                Ok(TickRow {
                    due_unix_ms: r.get::<_, i64>(0)? as u64,
                    outcome: r.get(1)?,
                    run_id: r.get(2)?,
                })
            })?;
            rows.collect()
        })
    }
}
