//! The Schedules page: every schedule with its next ticks and its recent
//! ticks, each with what happened (started, or why it was skipped or missed).

use std::fmt::Write;

use super::auth::Session;
use super::http::{esc, Response};
use super::layout;
use crate::server::Coordinator;
use crate::store::ScheduleKind;

/// Next ticks shown per schedule.
pub const NEXT_TICKS: usize = 3;
/// Recent ticks shown per schedule.
pub const RECENT_TICKS: usize = 20;

pub fn page(c: &Coordinator, session: &Session) -> Response {
    let rows = match c.store.schedules() {
        Ok(r) => r,
        Err(e) => return Response::text(500, format!("cannot read the schedules: {e}\n")),
    };
    let now = faultline_proto::now_unix_ms();
    let mut b = String::new();
    if rows.is_empty() {
        b.push_str("<p>No schedules (<code>faultline schedule add FILE --cron ...</code>).</p>");
    }
    for s in rows {
        let what = match s.kind {
            ScheduleKind::GameDay => crate::gameday::Suite::from_json(&s.yaml)
                .map(|g| format!("game day {}", g.name))
                .unwrap_or_else(|e| e.to_string()),
            ScheduleKind::Experiment => format!("experiment from {}", s.source),
        };
        let timing = crate::schedule::Timing::new(&s.cron, &s.tz, s.window.as_deref());
        let mut next = Vec::new();
        if let Ok(t) = &timing {
            let mut at = now;
            for _ in 0..NEXT_TICKS {
                let Some(n) = t.next_after(at) else { break };
                let inside = if t.in_window(n) {
                    ""
                } else {
                    " (outside the window: will be skipped)"
                };
                next.push(format!("{}{inside}", layout::time(n)));
                at = n;
            }
        }
        let _ = writeln!(
            b,
            "<section class=\"schedule\" id=\"schedule-{id}\"><h2>{id}: {what}</h2>\n<p>cron <code>{cron}</code>{tz}{window}. Next ticks: {next}.</p>",
            id = esc(&s.id),
            what = esc(&what),
            cron = esc(&s.cron),
            tz = if s.tz.is_empty() { String::new() } else { format!(" in {}", esc(&s.tz)) },
            window = s.window.as_deref().map(|w| format!(", window {}", esc(w))).unwrap_or_default(),
            next = match (&timing, next.is_empty()) {
                (Err(e), _) => esc(&e.to_string()),
                (Ok(_), true) => "none".into(),
                (Ok(_), false) => esc(&next.join(", ")),
            },
        );
        let ticks = c.store.schedule_ticks(&s.id, RECENT_TICKS).unwrap_or_default();
        if ticks.is_empty() {
            b.push_str("<p>No tick yet.</p></section>\n");
            continue;
        }
        b.push_str(
            "<table class=\"ticks\"><thead><tr><th>Due</th><th>What happened</th><th>Run</th></tr></thead><tbody>\n",
        );
        for t in ticks {
            let run = match (&t.run_id, s.kind) {
                (Some(r), ScheduleKind::Experiment) => format!("<a href=\"/runs/{r}\">{r}</a>", r = esc(r)),
                (Some(r), ScheduleKind::GameDay) => format!("<a href=\"/gamedays\">{}</a>", esc(r)),
                (None, _) => "-".into(),
            };
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td class=\"tick\">{}</td><td>{run}</td></tr>",
                layout::time(t.due_unix_ms),
                esc(&t.outcome)
            );
        }
        b.push_str("</tbody></table></section>\n");
    }
    layout::page(session, "Schedules", &b, false)
}
