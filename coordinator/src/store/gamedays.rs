//! Game-day runs as stored: each with its score, its summary and the runs
//! it contains, so the score's history survives a coordinator restart.

use rusqlite::{params, OptionalExtension};

use super::{Result, Store};

/// One game-day run as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct GameDayRunRow {
    pub id: String,
    pub name: String,
    pub source: String,
    pub schedule_id: Option<String>,
    /// running | interrupted | done
    pub status: String,
    pub started_unix_ms: u64,
    pub finished_unix_ms: Option<u64>,
    pub score: Option<f64>,
    pub passed: u32,
    pub judged: u32,
    pub exit_code: Option<i32>,
    pub summary_json: Option<String>,
    pub members: Vec<GameDayMemberRow>,
}

/// One experiment of a game-day run.
#[derive(Debug, Clone, PartialEq)]
pub struct GameDayMemberRow {
    pub file: String,
    pub weight: f64,
    /// passed, failed, aborted, invalid, not_steady, error, skipped, or
    /// running while it goes.
    pub outcome: String,
    pub run_id: Option<String>,
}

impl From<GameDayRunRow> for faultline_proto::v1::GameDayRunInfo {
    fn from(g: GameDayRunRow) -> Self {
        Self {
            gameday_run_id: g.id,
            name: g.name,
            source: g.source,
            schedule_id: g.schedule_id.unwrap_or_default(),
            status: g.status,
            started_at_unix_ms: g.started_unix_ms,
            finished_at_unix_ms: g.finished_unix_ms.unwrap_or(0),
            resilience_score: g.score,
            passed: g.passed,
            judged: g.judged,
            run_ids: g.members.into_iter().filter_map(|m| m.run_id).collect(),
            summary_json: g.summary_json.unwrap_or_default(),
        }
    }
}

impl Store {
    pub fn gameday_started(
        &self,
        id: &str,
        name: &str,
        source: &str,
        schedule_id: Option<&str>,
        started_ms: u64,
    ) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO gameday_runs (id, name, source, schedule_id, status, started_unix_ms)
                 VALUES (?1, ?2, ?3, ?4, 'running', ?5)",
                params![id, name, source, schedule_id, started_ms as i64],
            )
            .map(|_| ())
        })
    }

    /// Records (or updates) member `position` of a game-day run.
    pub fn gameday_member(&self, id: &str, position: usize, m: &GameDayMemberRow) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO gameday_members (gameday_id, position, file, weight, outcome, run_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (gameday_id, position) DO UPDATE SET outcome = ?5, run_id = ?6",
                params![id, position as i64, m.file, m.weight, m.outcome, m.run_id],
            )
            .map(|_| ())
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn gameday_finished(
        &self,
        id: &str,
        finished_ms: u64,
        score: Option<f64>,
        passed: usize,
        judged: usize,
        exit_code: i32,
        summary_json: &str,
    ) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE gameday_runs SET status = 'done', finished_unix_ms = ?2, score = ?3, passed = ?4,
                   judged = ?5, exit_code = ?6, summary_json = ?7 WHERE id = ?1",
                params![
                    id,
                    finished_ms as i64,
                    score,
                    passed as i64,
                    judged as i64,
                    exit_code,
                    summary_json
                ],
            )
            .map(|_| ())
        })
    }

    /// Marks every game-day run still `running` as `interrupted` (call at
    /// start, before serving); returns their ids.
    pub fn mark_gamedays_interrupted(&self, now_ms: u64) -> Result<Vec<String>> {
        self.with(|c| {
            let tx = c.transaction()?;
            let ids: Vec<String> = {
                let mut st = tx.prepare("SELECT id FROM gameday_runs WHERE status = 'running' ORDER BY id")?;
                let rows = st.query_map([], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            tx.execute(
                "UPDATE gameday_runs SET status = 'interrupted', finished_unix_ms = ?1 WHERE status = 'running'",
                [now_ms as i64],
            )?;
            tx.commit()?;
            Ok(ids)
        })
    }

    /// Newest first; `name` filters by the game day's name.
    pub fn gamedays(&self, name: Option<&str>, limit: usize) -> Result<Vec<GameDayRunRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, name, source, schedule_id, status, started_unix_ms, finished_unix_ms, score, passed,
                        judged, exit_code, summary_json
                 FROM gameday_runs WHERE (?1 IS NULL OR name = ?1)
                 ORDER BY started_unix_ms DESC, id DESC LIMIT ?2",
            )?;
            let mut runs = st
                .query_map(params![name, limit as i64], |r| {
                    Ok(GameDayRunRow {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        source: r.get(2)?,
                        schedule_id: r.get(3)?,
                        status: r.get(4)?,
                        started_unix_ms: r.get::<_, i64>(5)? as u64,
                        finished_unix_ms: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
                        score: r.get(7)?,
                        passed: r.get::<_, Option<i64>>(8)?.unwrap_or(0) as u32,
                        judged: r.get::<_, Option<i64>>(9)?.unwrap_or(0) as u32,
                        exit_code: r.get(10)?,
                        summary_json: r.get(11)?,
                        members: Vec::new(),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut st = c.prepare_cached(
                "SELECT file, weight, outcome, run_id FROM gameday_members WHERE gameday_id = ?1 ORDER BY position",
            )?;
            for run in &mut runs {
                run.members = st
                    .query_map([&run.id], |r| {
                        Ok(GameDayMemberRow {
                            file: r.get(0)?,
                            weight: r.get(1)?,
                            outcome: r.get(2)?,
                            run_id: r.get(3)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
            }
            Ok(runs)
        })
    }

    /// The game day a run belongs to, if any.
    pub fn gameday_of_run(&self, run_id: &str) -> Result<Option<String>> {
        self.with(|c| {
            c.query_row(
                "SELECT gameday_id FROM gameday_members WHERE run_id = ?1",
                [run_id],
                |r| r.get(0),
            )
            .optional()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(outcome: &str, run: Option<&str>) -> GameDayMemberRow {
        GameDayMemberRow {
            file: "kill.yaml".into(),
            weight: 2.0,
            outcome: outcome.into(),
            run_id: run.map(str::to_string),
        }
    }

    #[test]
    fn a_game_day_run_keeps_its_score_and_its_runs() {
        let s = Store::in_memory().unwrap();
        s.gameday_started("g1", "weekly", "gd.yaml", Some("s1"), 10).unwrap();
        s.gameday_member("g1", 0, &member("running", Some("r1"))).unwrap();
        s.gameday_member("g1", 0, &member("passed", Some("r1"))).unwrap();
        s.gameday_member("g1", 1, &member("skipped", None)).unwrap();
        let running = s.gamedays(None, 10).unwrap();
        assert_eq!(running[0].status, "running");
        assert_eq!(running[0].score, None);
        s.gameday_finished("g1", 20, Some(100.0), 1, 1, 0, "{}").unwrap();
        s.gameday_started("g2", "other", "o.yaml", None, 30).unwrap();
        let all = s.gamedays(None, 10).unwrap();
        assert_eq!(
            all.iter().map(|g| g.id.as_str()).collect::<Vec<_>>(),
            ["g2", "g1"],
            "newest first"
        );
        let g1 = &s.gamedays(Some("weekly"), 10).unwrap()[0];
        assert_eq!(
            (g1.status.as_str(), g1.score, g1.passed, g1.judged),
            ("done", Some(100.0), 1, 1)
        );
        assert_eq!(g1.members, vec![member("passed", Some("r1")), member("skipped", None)]);
        assert_eq!(g1.schedule_id.as_deref(), Some("s1"));
        assert_eq!(s.gameday_of_run("r1").unwrap().as_deref(), Some("g1"));
        assert_eq!(s.mark_gamedays_interrupted(40).unwrap(), vec!["g2"]);
        assert_eq!(s.gamedays(Some("other"), 10).unwrap()[0].status, "interrupted");
    }

    #[test]
    fn a_version_3_store_gains_game_days_and_keeps_its_schedules() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.db");
        {
            let mut c = rusqlite::Connection::open(&path).unwrap();
            let tx = c.transaction().unwrap();
            for sql in &super::super::MIGRATIONS[..3] {
                tx.execute_batch(sql).unwrap();
            }
            tx.execute(
                "INSERT INTO schedules (id, source, yaml, vars_json, cron, tz, created_unix_ms, last_tick_unix_ms)
                 VALUES ('s1', 'e.yaml', 'name: e', '{}', '* * * * *', 'UTC', 1, 1)",
                [],
            )
            .unwrap();
            tx.pragma_update(None, "user_version", 3).unwrap();
            tx.commit().unwrap();
        }
        let s = Store::open(&path).unwrap();
        let rows = s.schedules().unwrap();
        assert_eq!(rows[0].kind, crate::store::ScheduleKind::Experiment);
        s.gameday_started("g1", "weekly", "gd.yaml", None, 10).unwrap();
        assert_eq!(s.gamedays(None, 5).unwrap().len(), 1);
    }
}
