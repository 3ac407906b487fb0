//! The Game days page: scheduled suites with their next tick, each game-day
//! run with its score and the runs it contains, and each game day's score
//! over time, regressions marked ([`crate::trend`]).

use std::collections::BTreeMap;
use std::fmt::Write;

use super::auth::Session;
use super::chart::{self, Series};
use super::http::{esc, Response};
use super::layout;
use crate::server::Coordinator;
use crate::store::ScheduleKind;
use crate::trend::{self, Margin};

/// Most game-day runs read for the page.
pub const GAMEDAYS_SHOWN: usize = 500;
/// Most game days charted.
pub const CHARTS: usize = 20;

pub fn page(c: &Coordinator, session: &Session) -> Response {
    let runs = match c.store.gamedays(None, GAMEDAYS_SHOWN) {
        Ok(r) => r,
        Err(e) => return Response::text(500, format!("cannot read the game days: {e}\n")),
    };
    let schedules = c.store.schedules().unwrap_or_default();
    let now = faultline_proto::now_unix_ms();
    let mut b = String::from("<h2>Scheduled suites</h2>\n");
    let scheduled: Vec<_> = schedules.iter().filter(|s| s.kind == ScheduleKind::GameDay).collect();
    if scheduled.is_empty() {
        b.push_str("<p>No game day is scheduled (<code>faultline schedule add GAMEDAY.yaml --cron ...</code>).</p>\n");
    } else {
        b.push_str("<table id=\"suites\"><thead><tr><th>Schedule</th><th>Game day</th><th>Experiments</th><th>Cron</th><th>Next tick</th></tr></thead><tbody>\n");
        for s in scheduled {
            let suite = crate::gameday::Suite::from_json(&s.yaml);
            let (name, members) = match &suite {
                Ok(g) => (
                    g.name.clone(),
                    g.members
                        .iter()
                        .map(|m| format!("{} ×{}", m.file, m.weight))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                Err(e) => (e.to_string(), String::new()),
            };
            let next = crate::schedule::Timing::new(&s.cron, &s.tz, s.window.as_deref())
                .ok()
                .and_then(|t| t.next_after(now))
                .unwrap_or(0);
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code> {}</td><td>{}</td></tr>",
                esc(&s.id),
                esc(&name),
                esc(&members),
                esc(&s.cron),
                esc(&s.tz),
                layout::time(next)
            );
        }
        b.push_str("</tbody></table>\n");
    }

    // Score over time, per game day (oldest first).
    let mut by_name: BTreeMap<&str, Vec<&crate::store::GameDayRunRow>> = BTreeMap::new();
    for g in runs.iter().rev() {
        by_name.entry(g.name.as_str()).or_default().push(g);
    }
    let mut regressed: BTreeMap<&str, bool> = BTreeMap::new();
    let _ = writeln!(
        b,
        "<h2>Score over time</h2>\n<p>A score regresses when it is {}.</p>",
        esc(&Margin::SCORE.describe())
    );
    for (name, list) in by_name.iter().take(CHARTS) {
        let values: Vec<Option<f64>> = list.iter().map(|g| g.score).collect();
        let points = trend::points(&values, Margin::SCORE);
        let reasons: Vec<Option<String>> = points
            .iter()
            .map(|p| {
                p.regression.then(|| {
                    format!(
                        "score {} vs median {}",
                        chart::num(p.value.unwrap_or_default()),
                        chart::num(p.median_before.unwrap_or_default())
                    )
                })
            })
            .collect();
        for (g, r) in list.iter().zip(&reasons) {
            if r.is_some() {
                regressed.insert(g.id.as_str(), true);
            }
        }
        let titles: Vec<String> = list
            .iter()
            .map(|g| format!("{} {}", g.id, layout::time(g.started_unix_ms)))
            .collect();
        let _ = writeln!(
            b,
            "<h3>{}</h3>\n<figure>{}</figure>",
            esc(name),
            chart::line(&Series {
                label: &format!("{name}: resilience score"),
                values: &values,
                regressions: &reasons,
                titles: &titles,
                floor: (0.0, 100.0),
            })
        );
    }

    b.push_str("<h2>Runs</h2>\n<table id=\"gamedays\"><thead><tr><th>Game-day run</th><th>Game day</th><th>Status</th><th>Started</th><th>Score</th><th>Passed / judged</th><th>Schedule</th><th>Experiments</th></tr></thead><tbody>\n");
    for g in &runs {
        let members: Vec<String> = g
            .members
            .iter()
            .map(|m| match &m.run_id {
                Some(r) => format!(
                    "<a href=\"/runs/{r}\">{}</a> {}",
                    esc(&m.file),
                    esc(&m.outcome),
                    r = esc(r)
                ),
                None => format!("{} {}", esc(&m.file), esc(&m.outcome)),
            })
            .collect();
        let class = if regressed.contains_key(g.id.as_str()) {
            " class=\"regression\""
        } else {
            ""
        };
        let _ = writeln!(
            b,
            "<tr{class}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"score\">{}</td><td>{}/{}</td><td>{}</td><td>{}</td></tr>",
            esc(&g.id),
            esc(&g.name),
            esc(&g.status),
            layout::time(g.started_unix_ms),
            g.score.map(chart::num).unwrap_or_else(|| "n/a".into()),
            g.passed,
            g.judged,
            esc(g.schedule_id.as_deref().unwrap_or("-")),
            members.join("<br>")
        );
    }
    b.push_str("</tbody></table>");
    layout::page(session, "Game days", &b, false)
}
