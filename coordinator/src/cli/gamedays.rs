//! `faultline gamedays`: game-day runs with their resilience scores, newest
//! first — from a coordinator (`--coordinator`), or straight from a history
//! database (local mode's, by default). With `--name NAME`, that game day's
//! score history oldest first, each score against the median of the ones
//! before it, regressions marked (see [`crate::trend`]).

use faultline_proto::v1;

use super::common;
use crate::trend::{self, Margin};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this game day (its `name:`), as a score history with its trend.
    #[arg(long)]
    pub name: Option<String>,
    /// Most game-day runs to show.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Ask this coordinator; without it, read the history database.
    #[arg(long)]
    pub coordinator: Option<String>,
    /// History database to read (default: local mode's; $FAULTLINE_DB overrides).
    #[arg(long, conflicts_with = "coordinator")]
    pub db: Option<String>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn main(a: Args) -> i32 {
    let (name, limit) = (a.name.clone(), a.limit);
    let runs: Vec<v1::GameDayRunInfo> = match super::runs::rows(
        &a.coordinator,
        &a.db,
        |mut c| async move {
            let r = c
                .list_game_days(v1::ListGameDaysRequest {
                    name: name.unwrap_or_default(),
                    limit,
                })
                .await?;
            Ok(r.into_inner().runs)
        },
        |db| {
            Ok(db
                .gamedays(a.name.as_deref(), a.limit as usize)?
                .into_iter()
                .map(Into::into)
                .collect())
        },
    )
    .await
    {
        Ok(r) => r,
        Err(code) => return code,
    };
    if a.json {
        for g in &runs {
            println!(
                "{}",
                serde_json::json!({
                    "gameday_run_id": g.gameday_run_id, "name": g.name, "status": g.status,
                    "schedule_id": g.schedule_id, "started_at_unix_ms": g.started_at_unix_ms,
                    "finished_at_unix_ms": g.finished_at_unix_ms, "resilience_score": g.resilience_score,
                    "passed": g.passed, "judged": g.judged, "run_ids": g.run_ids,
                })
            );
        }
        return 0;
    }
    if runs.is_empty() {
        match &a.name {
            Some(n) => println!("no game-day runs named {n:?}"),
            None => println!("no game-day runs"),
        }
        return 0;
    }
    match &a.name {
        None => print!("{}", table(&runs)),
        Some(_) => print!("{}", history(&runs)),
    }
    0
}

fn score_text(g: &v1::GameDayRunInfo) -> String {
    g.resilience_score
        .map(|s| format!("{s:.1}"))
        .unwrap_or_else(|| "n/a".into())
}

/// Newest first, every game day.
fn table(runs: &[v1::GameDayRunInfo]) -> String {
    let mut o = format!(
        "{:<28} {:<12} {:<26} {:>6} {:>7}  {:<10} name\n",
        "game-day run", "status", "started", "score", "passed", "schedule"
    );
    for g in runs {
        o += &format!(
            "{:<28} {:<12} {:<26} {:>6} {:>7}  {:<10} {}\n",
            g.gameday_run_id,
            g.status,
            common::rfc3339_ms(g.started_at_unix_ms),
            score_text(g),
            format!("{}/{}", g.passed, g.judged),
            if g.schedule_id.is_empty() { "-" } else { &g.schedule_id },
            g.name
        );
    }
    o
}

/// One game day, oldest first, with the trend of its score.
fn history(runs: &[v1::GameDayRunInfo]) -> String {
    let oldest_first: Vec<&v1::GameDayRunInfo> = runs.iter().rev().collect();
    let scores: Vec<Option<f64>> = oldest_first.iter().map(|g| g.resilience_score).collect();
    let points = trend::points(&scores, Margin::SCORE);
    let mut o = format!(
        "{:<26} {:<28} {:>6} {:>8}  runs\n",
        "started", "game-day run", "score", "median"
    );
    for (g, p) in oldest_first.iter().zip(&points) {
        o += &format!(
            "{:<26} {:<28} {:>6} {:>8}  {}{}\n",
            common::rfc3339_ms(g.started_at_unix_ms),
            g.gameday_run_id,
            score_text(g),
            p.median_before.map(|m| format!("{m:.1}")).unwrap_or_else(|| "-".into()),
            g.run_ids.join(" "),
            if p.regression { "  REGRESSION" } else { "" }
        );
    }
    let scored: Vec<f64> = scores.iter().flatten().copied().collect();
    let regressions = points.iter().filter(|p| p.regression).count();
    match (scored.first(), scored.last()) {
        (Some(first), Some(last)) => {
            let dir = if last > first {
                "better"
            } else if last < first {
                "worse"
            } else {
                "unchanged"
            };
            o += &format!(
                "trend: {first:.1} → {last:.1} over {} scored runs ({dir}); {regressions} regression(s) (a score {})\n",
                scored.len(),
                Margin::SCORE.describe()
            );
        }
        _ => o += "trend: no scored run yet\n",
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(id: &str, score: Option<f64>) -> v1::GameDayRunInfo {
        v1::GameDayRunInfo {
            gameday_run_id: id.into(),
            name: "weekly".into(),
            status: "done".into(),
            resilience_score: score,
            run_ids: vec![format!("r-{id}")],
            ..Default::default()
        }
    }

    #[test]
    fn the_history_marks_a_score_drop_and_states_the_trend() {
        // Newest first, as listed.
        let runs = [
            g("g4", Some(50.0)),
            g("g3", None),
            g("g2", Some(100.0)),
            g("g1", Some(90.0)),
        ];
        let h = history(&runs);
        let lines: Vec<&str> = h.lines().collect();
        assert!(lines[1].contains("g1") && lines[4].contains("g4"), "{h}");
        assert!(lines[4].ends_with("REGRESSION"), "{h}");
        assert!(
            !lines[2].contains("REGRESSION") && !lines[3].contains("REGRESSION"),
            "{h}"
        );
        assert!(
            h.contains("trend: 90.0 → 50.0 over 3 scored runs (worse); 1 regression(s)"),
            "{h}"
        );
        assert!(table(&runs).contains("n/a"));
    }
}
