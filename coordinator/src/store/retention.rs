//! Retention: deleting finished runs older than a cutoff, so a long-lived
//! coordinator's history database stays bounded.
//!
//! Runs still `running` are never deleted, whatever their age; the audit
//! log is kept (it is the record of who did what, and small). Schedule tick
//! records older than the cutoff go too, and so do game-day runs that
//! started before it and are not running (with their member lists). After deleting, the database file
//! is compacted (`VACUUM`), so the space goes back to the filesystem.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::params;
use tokio_util::sync::CancellationToken;

use super::{Result, Store};

/// What one prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub runs: usize,
    pub events: usize,
    pub ticks: usize,
    pub gamedays: usize,
}

impl Store {
    /// Deletes every run that started before `cutoff_unix_ms` and is not
    /// running, with its events and report, and schedule ticks due before
    /// the cutoff; then compacts the file.
    pub fn prune(&self, cutoff_unix_ms: u64) -> Result<Pruned> {
        let cutoff = i64::try_from(cutoff_unix_ms).unwrap_or(i64::MAX);
        let pruned = self.with(|c| {
            let tx = c.transaction()?;
            let events = tx.execute(
                "DELETE FROM events WHERE run_id IN
                   (SELECT run_id FROM runs WHERE started_unix_ms < ?1 AND status != 'running')",
                params![cutoff],
            )?;
            let runs = tx.execute(
                "DELETE FROM runs WHERE started_unix_ms < ?1 AND status != 'running'",
                params![cutoff],
            )?;
            let ticks = tx.execute("DELETE FROM schedule_ticks WHERE due_unix_ms < ?1", params![cutoff])?;
            tx.execute(
                "DELETE FROM gameday_members WHERE gameday_id IN
                   (SELECT id FROM gameday_runs WHERE started_unix_ms < ?1 AND status != 'running')",
                params![cutoff],
            )?;
            let gamedays = tx.execute(
                "DELETE FROM gameday_runs WHERE started_unix_ms < ?1 AND status != 'running'",
                params![cutoff],
            )?;
            tx.commit()?;
            Ok(Pruned {
                runs,
                events,
                ticks,
                gamedays,
            })
        })?;
        if pruned.runs > 0 || pruned.ticks > 0 || pruned.gamedays > 0 {
            self.with(|c| c.execute_batch("VACUUM"))?;
            // In WAL mode VACUUM writes the compacted database into the
            // write-ahead log; until a checkpoint the file on disk keeps its
            // size and the log holds a copy more. Fold it back and truncate
            // the log, so the space really returns (best effort: a reader
            // of another process may hold the log for a moment).
            self.with(|c| c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())))?;
        }
        Ok(pruned)
    }
}

/// Prunes runs older than `keep` now and then every `every`, until
/// `shutdown` (`faultline serve --retention`). Failures are logged, never
/// fatal: retention must not take the coordinator down.
pub async fn retain(store: Arc<Store>, keep: Duration, every: Duration, shutdown: CancellationToken) {
    loop {
        let cutoff = faultline_proto::now_unix_ms().saturating_sub(keep.as_millis() as u64);
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.prune(cutoff)).await {
            Ok(Ok(p)) if p.runs > 0 || p.ticks > 0 || p.gamedays > 0 => tracing::info!(
                runs = p.runs,
                events = p.events,
                ticks = p.ticks,
                gamedays = p.gamedays,
                keep = %humantime::format_duration(keep),
                "pruned run history"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(err = %e, "pruning run history failed; trying again later"),
            Err(e) => tracing::warn!(err = %e, "pruning run history stopped; trying again later"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(store: &Store, id: &str, started: u64) {
        store.run_started(id, "exp", "e.yaml", started).unwrap();
        store.event(id, started + 1, "log", "hello").unwrap();
        let row = store
            .list(100, None)
            .unwrap()
            .into_iter()
            .find(|r| r.run_id == id)
            .unwrap();
        let report = super::super::stored::interrupted_report(&row, &[]);
        store.run_finished(&report, started + 10).unwrap();
    }

    #[test]
    fn prune_deletes_old_finished_runs_and_their_events_but_never_running_ones() {
        let store = Store::in_memory().unwrap();
        finished(&store, "r-old", 1_000);
        finished(&store, "r-new", 50_000);
        store.run_started("r-running", "exp", "e.yaml", 500).unwrap();
        store.event("r-running", 501, "log", "still going").unwrap();
        // Game days: an old finished one goes with its members; an old one
        // still running and a new one stay.
        store.gameday_started("g-old", "gd", "gd.yaml", None, 1_000).unwrap();
        let member = crate::store::GameDayMemberRow {
            file: "e.yaml".into(),
            weight: 1.0,
            outcome: "passed".into(),
            run_id: Some("r-old".into()),
        };
        store.gameday_member("g-old", 0, &member).unwrap();
        store
            .gameday_finished("g-old", 2_000, Some(100.0), 1, 1, 0, "{}")
            .unwrap();
        store
            .gameday_started("g-running", "gd", "gd.yaml", None, 1_000)
            .unwrap();
        store.gameday_started("g-new", "gd", "gd.yaml", None, 50_000).unwrap();
        let p = store.prune(10_000).unwrap();
        assert_eq!(
            p,
            Pruned {
                runs: 1,
                events: 1,
                ticks: 0,
                gamedays: 1,
            }
        );
        let gamedays: Vec<String> = store.gamedays(None, 10).unwrap().into_iter().map(|g| g.id).collect();
        assert_eq!(gamedays, ["g-new", "g-running"]);
        assert_eq!(store.gameday_of_run("r-old").unwrap(), None, "its members went too");
        let left: Vec<String> = store.list(10, None).unwrap().into_iter().map(|r| r.run_id).collect();
        assert_eq!(left, vec!["r-new".to_string(), "r-running".to_string()]);
        assert!(store.get("r-old").unwrap().is_none());
        assert!(store.get("r-running").unwrap().is_some());
        // Idempotent.
        assert_eq!(store.prune(10_000).unwrap(), Pruned::default());
    }

    fn on_disk(path: &std::path::Path) -> u64 {
        ["", "-wal"]
            .iter()
            .map(|s| {
                std::fs::metadata(format!("{}{s}", path.display()))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Regression: the database (with its write-ahead log) took more room
    /// on disk after a prune than before it, because VACUUM in WAL mode
    /// writes the compacted copy into the log and nothing truncated it.
    #[test]
    fn a_prune_gives_the_space_back_to_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let store = Store::open(&path).unwrap();
        for i in 0..200u64 {
            let id = format!("r-{i}");
            store.run_started(&id, "exp", "e.yaml", 1_000 + i).unwrap();
            for e in 0..20u64 {
                store.event(&id, 1_001 + i + e, "log", &"x".repeat(500)).unwrap();
            }
            let row = store.list(1, None).unwrap().into_iter().next().unwrap();
            let report = super::super::stored::interrupted_report(&row, &[]);
            store.run_finished(&report, 2_000 + i).unwrap();
        }
        let before = on_disk(&path);
        let p = store.prune(u64::MAX / 2).unwrap();
        assert_eq!(p.runs, 200);
        let after = on_disk(&path);
        assert!(
            after * 4 < before,
            "on disk: {before} bytes before the prune, {after} after"
        );
    }
}
