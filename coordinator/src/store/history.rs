//! One experiment's runs over time, with their reports: what the console's
//! Experiment trend page reads.

use rusqlite::params;

use super::{row, Result, RunRow, Store};

/// An experiment as the history knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentRow {
    pub name: String,
    pub runs: u64,
    pub last_started_unix_ms: u64,
    pub last_status: String,
}

impl Store {
    /// The newest `limit` runs of experiment `name` (newest first), each
    /// with its report JSON when it finished.
    pub fn experiment_runs(&self, name: &str, limit: usize) -> Result<Vec<(RunRow, Option<String>)>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT run_id, experiment, source, status, started_unix_ms, finished_unix_ms, exit_code, reason, report_json
                 FROM runs WHERE experiment = ?1 ORDER BY started_unix_ms DESC, run_id DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![name, limit as i64], |r| Ok((row(r)?, r.get(8)?)))?;
            rows.collect()
        })
    }

    /// Every experiment name in the history, most recently run first.
    pub fn experiments(&self, limit: usize) -> Result<Vec<ExperimentRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT experiment, COUNT(*), MAX(started_unix_ms),
                        (SELECT status FROM runs r2 WHERE r2.experiment = runs.experiment
                         ORDER BY started_unix_ms DESC, run_id DESC LIMIT 1)
                 FROM runs GROUP BY experiment ORDER BY MAX(started_unix_ms) DESC LIMIT ?1",
            )?;
            let rows = st.query_map([limit as i64], |r| {
                Ok(ExperimentRow {
                    name: r.get(0)?,
                    runs: r.get::<_, i64>(1)? as u64,
                    last_started_unix_ms: r.get::<_, i64>(2)? as u64,
                    last_status: r.get(3)?,
                })
            })?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_experiments_runs_are_listed_newest_first_with_names_by_recency() {
        let s = Store::in_memory().unwrap();
        s.run_started("r1", "kill", "k.yaml", 10).unwrap();
        s.run_started("r2", "fill", "f.yaml", 20).unwrap();
        s.run_started("r3", "kill", "k.yaml", 30).unwrap();
        let runs = s.experiment_runs("kill", 10).unwrap();
        assert_eq!(
            runs.iter().map(|(r, _)| r.run_id.as_str()).collect::<Vec<_>>(),
            ["r3", "r1"]
        );
        assert!(runs[0].1.is_none());
        let names = s.experiments(10).unwrap();
        assert_eq!(
            names.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["kill", "fill"]
        );
        assert_eq!((names[0].runs, names[0].last_started_unix_ms), (2, 30));
        assert_eq!(names[0].last_status, "running");
    }
}
