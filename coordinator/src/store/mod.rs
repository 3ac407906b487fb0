//! The run history store: an embedded SQLite database (compiled in, no
//! system library) holding runs, their events, their reports and the audit
//! log, so history survives a coordinator restart.
//!
//! The schema is versioned with SQLite's `user_version`; [`MIGRATIONS`] are
//! applied in order, each in its own transaction, when the store opens. A
//! run that was in flight when the coordinator died is marked `interrupted`
//! on the next start; statuses the agents send about its faults afterwards
//! (lease expiry, journal restores) are kept as its events.
//!
//! Layout:
//! - `schedules`: schedules and their handled ticks.
//! - `gamedays`: game-day runs, their scores and the runs they contain.
//! - `history`: one experiment's runs over time, and the experiments known.
//! - `stored`: a run read back (finished, running, interrupted) and the
//!   report of an interrupted run.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use crate::report::Report;

mod gamedays;
mod history;
mod retention;
mod schedules;
mod stored;

pub use retention::{retain, Pruned};

pub use gamedays::{GameDayMemberRow, GameDayRunRow};
pub use history::ExperimentRow;
pub use schedules::{ScheduleKind, ScheduleRow, TickRow};
pub use stored::{interrupted_report, render_interrupted, Stored};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("run store {path}: {source}")]
    Sqlite { path: String, source: rusqlite::Error },
    #[error("run store {path}: cannot create its directory: {source}")]
    Dir { path: String, source: std::io::Error },
    #[error(
        "run store {path} has schema version {found}, newer than this faultline knows ({known}); upgrade faultline"
    )]
    TooNew { path: String, found: u32, known: u32 },
}

/// Result of the store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Schema migrations; entry `i` takes the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: runs and their events.
    "CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        experiment TEXT NOT NULL,
        source TEXT NOT NULL,
        status TEXT NOT NULL,            -- running | interrupted | <outcome>
        started_unix_ms INTEGER NOT NULL,
        finished_unix_ms INTEGER,
        exit_code INTEGER,
        reason TEXT,
        report_json TEXT
    );
    CREATE INDEX runs_by_start ON runs (started_unix_ms);
    CREATE TABLE events (
        run_id TEXT NOT NULL REFERENCES runs (run_id),
        seq INTEGER NOT NULL,
        at_unix_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,              -- phase | fault | log | finished | after
        text TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    );",
    // 2: the audit log of state-changing Control calls.
    "CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_unix_ms INTEGER NOT NULL,
        caller TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL
    );",
    // 3: schedules and what happened at each of their ticks.
    "CREATE TABLE schedules (
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        yaml TEXT NOT NULL,
        vars_json TEXT NOT NULL,
        cron TEXT NOT NULL,
        tz TEXT NOT NULL,
        window TEXT,
        created_unix_ms INTEGER NOT NULL,
        last_tick_unix_ms INTEGER NOT NULL,
        last_run_id TEXT
    );
    CREATE TABLE schedule_ticks (
        schedule_id TEXT NOT NULL,
        due_unix_ms INTEGER NOT NULL,
        outcome TEXT NOT NULL,           -- started | skipped: ... | missed ...
        run_id TEXT
    );",
    // 4: game days: a schedule may run a suite (its yaml column then holds
    // the suite as JSON); every game-day run with its score and its runs.
    "ALTER TABLE schedules ADD COLUMN kind TEXT NOT NULL DEFAULT 'experiment';
    CREATE TABLE gameday_runs (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        source TEXT NOT NULL,
        schedule_id TEXT,
        status TEXT NOT NULL,            -- running | interrupted | done
        started_unix_ms INTEGER NOT NULL,
        finished_unix_ms INTEGER,
        score REAL,
        passed INTEGER,
        judged INTEGER,
        exit_code INTEGER,
        summary_json TEXT
    );
    CREATE INDEX gameday_runs_by_name ON gameday_runs (name, started_unix_ms);
    CREATE TABLE gameday_members (
        gameday_id TEXT NOT NULL REFERENCES gameday_runs (id),
        position INTEGER NOT NULL,
        file TEXT NOT NULL,
        weight REAL NOT NULL,
        outcome TEXT NOT NULL,
        run_id TEXT,
        PRIMARY KEY (gameday_id, position)
    );",
];

/// One run as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub run_id: String,
    pub experiment: String,
    pub source: String,
    pub status: String,
    pub started_unix_ms: u64,
    pub finished_unix_ms: Option<u64>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
}

impl From<RunRow> for faultline_proto::v1::RunSummary {
    fn from(r: RunRow) -> Self {
        Self {
            run_id: r.run_id,
            experiment: r.experiment,
            status: r.status,
            started_at_unix_ms: r.started_unix_ms,
            finished_at_unix_ms: r.finished_unix_ms.unwrap_or(0),
        }
    }
}

impl From<AuditRow> for faultline_proto::v1::AuditEntry {
    fn from(a: AuditRow) -> Self {
        Self {
            at_unix_ms: a.at_unix_ms,
            caller: a.caller,
            action: a.action,
            target: a.target,
            detail: a.detail,
        }
    }
}

/// A run, its report JSON (when it finished) and its events.
pub type RunRecord = (RunRow, Option<String>, Vec<EventRow>);

/// One recorded event of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub at_unix_ms: u64,
    pub kind: String,
    pub text: String,
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub at_unix_ms: u64,
    pub caller: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// The store. Calls are short and synchronous behind a mutex.
pub struct Store {
    path: String,
    conn: Mutex<Connection>,
    /// Last event sequence number per run seen by this process.
    seqs: Mutex<std::collections::HashMap<String, i64>>,
}

/// Where the store lives by default: `$FAULTLINE_DB` if set, else
/// `/var/lib/faultline/faultline.db` as root, else
/// `$HOME/.local/state/faultline/faultline.db`.
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("FAULTLINE_DB").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/faultline/faultline.db");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/state/faultline/faultline.db"),
        None => std::env::temp_dir().join("faultline.db"),
    }
}

impl Store {
    /// Opens (creating) the store at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Store> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Dir {
                path: shown.clone(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| Error::Sqlite {
            path: shown.clone(),
            source,
        })?;
        Self::init(shown, conn)
    }

    /// A store that lives in memory only (tests, `--no-store`).
    pub fn in_memory() -> Result<Store> {
        let conn = Connection::open_in_memory().map_err(|source| Error::Sqlite {
            path: ":memory:".into(),
            source,
        })?;
        Self::init(":memory:".into(), conn)
    }

    fn init(path: String, mut conn: Connection) -> Result<Store> {
        let e = |source| Error::Sqlite {
            path: path.clone(),
            source,
        };
        // Several processes (local runs, a server) may share one file.
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(e)?;
        let _ = conn.pragma_update(None, "journal_mode", "WAL");
        conn.pragma_update(None, "foreign_keys", "ON").map_err(e)?;
        let version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(e)?;
        if version as usize > MIGRATIONS.len() {
            return Err(Error::TooNew {
                path,
                found: version,
                known: MIGRATIONS.len() as u32,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(e)?;
            tx.execute_batch(sql).map_err(e)?;
            tx.pragma_update(None, "user_version", (i + 1) as u32).map_err(e)?;
            tx.commit().map_err(e)?;
        }
        Ok(Store {
            path,
            conn: Mutex::new(conn),
            seqs: Mutex::default(),
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub(super) fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut c).map_err(|source| Error::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    /// The schema version.
    pub fn schema_version(&self) -> Result<u32> {
        self.with(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
    }

    /// Marks every run still `running` as `interrupted` (call at start,
    /// before serving); returns their ids.
    pub fn mark_interrupted(&self, now_ms: u64) -> Result<Vec<String>> {
        self.with(|c| {
            let tx = c.transaction()?;
            let ids: Vec<String> = {
                let mut st = tx.prepare("SELECT run_id FROM runs WHERE status = 'running' ORDER BY run_id")?;
                let rows = st.query_map([], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for id in &ids {
                tx.execute(
                    "UPDATE runs SET status = 'interrupted', finished_unix_ms = ?2,
                       reason = 'the coordinator stopped while this run was in flight; its agents restored by lease expiry'
                     WHERE run_id = ?1",
                    params![id, now_ms as i64],
                )?;
            }
            tx.commit()?;
            Ok(ids)
        })
    }

    pub fn run_started(&self, run_id: &str, experiment: &str, source: &str, started_ms: u64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO runs (run_id, experiment, source, status, started_unix_ms) VALUES (?1, ?2, ?3, 'running', ?4)",
                params![run_id, experiment, source, started_ms as i64],
            )
            .map(|_| ())
        })
    }

    /// Appends an event; false if the run is unknown.
    pub fn event(&self, run_id: &str, at_ms: u64, kind: &str, text: &str) -> Result<bool> {
        // Called once per fault status, so it stays cheap: a cached INSERT
        // with the next sequence number kept in memory. Looking the run up
        // and computing MAX(seq) in SQL on every call was a quarter of the
        // coordinator's instructions during a 1,000-agent fan-out
        // (callgrind; see BENCHMARKS.md).
        let seq = {
            let mut seqs = self.seqs.lock().unwrap_or_else(|p| p.into_inner());
            match seqs.get_mut(run_id) {
                Some(n) => {
                    *n += 1;
                    *n
                }
                None => {
                    let last: Option<Option<i64>> = self.with(|c| {
                        let known: Option<i64> = c
                            .query_row("SELECT 1 FROM runs WHERE run_id = ?1", [run_id], |r| r.get(0))
                            .optional()?;
                        match known {
                            None => Ok(None),
                            Some(_) => c
                                .query_row("SELECT MAX(seq) FROM events WHERE run_id = ?1", [run_id], |r| r.get(0))
                                .map(Some),
                        }
                    })?;
                    let Some(last) = last else { return Ok(false) };
                    let n = last.unwrap_or(0) + 1;
                    seqs.insert(run_id.to_string(), n);
                    n
                }
            }
        };
        self.with(|c| {
            c.prepare_cached("INSERT INTO events (run_id, seq, at_unix_ms, kind, text) VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(params![run_id, seq, at_ms as i64, kind, text])?;
            Ok(true)
        })
    }

    pub fn run_finished(&self, report: &Report, finished_ms: u64) -> Result<()> {
        let json = serde_json::to_string(report).unwrap_or_default();
        self.with(|c| {
            c.execute(
                "UPDATE runs SET status = ?2, finished_unix_ms = ?3, exit_code = ?4, reason = ?5, report_json = ?6 WHERE run_id = ?1",
                params![
                    report.run_id,
                    report.outcome.as_str(),
                    finished_ms as i64,
                    report.exit_code,
                    report.reason,
                    json
                ],
            )
            .map(|_| ())
        })
    }

    /// Newest first; `status` filters (an outcome, `running` or `interrupted`).
    pub fn list(&self, limit: usize, status: Option<&str>) -> Result<Vec<RunRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT run_id, experiment, source, status, started_unix_ms, finished_unix_ms, exit_code, reason
                 FROM runs WHERE (?1 IS NULL OR status = ?1) ORDER BY started_unix_ms DESC, run_id DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![status, limit as i64], row)?;
            rows.collect()
        })
    }

    /// A run, its report (if it finished) and its events.
    pub fn get(&self, run_id: &str) -> Result<Option<RunRecord>> {
        self.with(|c| {
            let found = c
                .query_row(
                    "SELECT run_id, experiment, source, status, started_unix_ms, finished_unix_ms, exit_code, reason, report_json
                     FROM runs WHERE run_id = ?1",
                    [run_id],
                    |r| Ok((row(r)?, r.get::<_, Option<String>>(8)?)),
                )
                .optional()?;
            let Some((run, report)) = found else { return Ok(None) };
            let mut st = c.prepare("SELECT at_unix_ms, kind, text FROM events WHERE run_id = ?1 ORDER BY seq")?;
            let events = st
                .query_map([run_id], |r| {
                    Ok(EventRow {
                        at_unix_ms: r.get::<_, i64>(0)? as u64,
                        kind: r.get(1)?,
                        text: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some((run, report, events)))
        })
    }

    pub fn audit(&self, at_ms: u64, caller: &str, action: &str, target: &str, detail: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO audit (at_unix_ms, caller, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![at_ms as i64, caller, action, target, detail],
            )
            .map(|_| ())
        })
    }

    /// Newest first.
    pub fn audit_list(&self, limit: usize) -> Result<Vec<AuditRow>> {
        self.with(|c| {
            let mut st =
                c.prepare("SELECT at_unix_ms, caller, action, target, detail FROM audit ORDER BY id DESC LIMIT ?1")?;
            let rows = st.query_map([limit as i64], |r| {
                Ok(AuditRow {
                    at_unix_ms: r.get::<_, i64>(0)? as u64,
                    caller: r.get(1)?,
                    action: r.get(2)?,
                    target: r.get(3)?,
                    detail: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        run_id: r.get(0)?,
        experiment: r.get(1)?,
        source: r.get(2)?,
        status: r.get(3)?,
        started_unix_ms: r.get::<_, i64>(4)? as u64,
        finished_unix_ms: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        exit_code: r.get(6)?,
        reason: r.get(7)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_store_is_migrated_and_keeps_its_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            // A store as the first release wrote it.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
            c.execute(
                "INSERT INTO runs (run_id, experiment, source, status, started_unix_ms) VALUES ('r1', 'e', 'e.yaml', 'passed', 1)",
                [],
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as u32);
        assert_eq!(s.list(10, None).unwrap()[0].run_id, "r1");
        s.audit(5, "cli", "stop", "*", "because").unwrap();
        assert_eq!(s.audit_list(10).unwrap()[0].action, "stop");
    }

    #[test]
    fn a_newer_store_is_refused_not_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let e = Store::open(&path).err().unwrap();
        assert!(
            e.to_string()
                .contains("schema version 99, newer than this faultline knows"),
            "{e}"
        );
    }

    #[test]
    fn running_runs_become_interrupted_and_keep_later_events() {
        let s = Store::in_memory().unwrap();
        s.run_started("r1", "exp", "e.yaml", 10).unwrap();
        s.run_started("r2", "exp", "e.yaml", 20).unwrap();
        assert!(s.event("r1", 11, "phase", "observe").unwrap());
        assert!(!s.event("nope", 11, "phase", "observe").unwrap());
        assert_eq!(s.mark_interrupted(30).unwrap(), vec!["r1", "r2"]);
        assert!(s
            .event("r1", 40, "after", "agent a: r1-1 expired: lease expired")
            .unwrap());
        let (run, report, events) = s.get("r1").unwrap().unwrap();
        assert_eq!(run.status, "interrupted");
        assert!(report.is_none());
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].kind, "after");
        // Newest first, filtered by status.
        let rows = s.list(1, Some("interrupted")).unwrap();
        assert_eq!(rows.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), vec!["r2"]);
        assert!(s.list(10, Some("passed")).unwrap().is_empty());
    }
}
