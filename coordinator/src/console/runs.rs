//! The Runs page (history from the store, with outcomes; filtered by
//! outcome and experiment name through a GET form, so a filtered view is a
//! link to share) and each run's full HTML report, the same one
//! `faultline report --format html` gives.

use std::fmt::Write;

use super::auth::Session;
use super::http::{esc, parse_form, Request, Response, REPORT_CSP};
use super::layout;
use crate::server::Coordinator;
use crate::store::Stored;

/// Runs listed on the page, newest first.
pub const RUNS_SHOWN: usize = 200;

/// Runs read from the store to filter by experiment name: the page shows
/// the newest [`RUNS_SHOWN`] of those that match.
const RUNS_SCANNED: usize = 5000;

pub fn page(c: &Coordinator, session: &Session, req: &Request) -> Response {
    let q = parse_form(&req.query);
    let outcome = q.get("outcome").map(|s| s.trim()).filter(|s| !s.is_empty());
    if let Some(o) = outcome.filter(|o| !crate::control::RUN_STATUSES.contains(o)) {
        return Response::text(
            400,
            format!(
                "outcome {o:?}: use one of {}\n",
                crate::control::RUN_STATUSES.join(", ")
            ),
        );
    }
    let name = q.get("experiment").map(|s| s.trim()).unwrap_or("");
    let scanned = if name.is_empty() { RUNS_SHOWN } else { RUNS_SCANNED };
    let rows: Vec<_> = match c.store.list(scanned, outcome) {
        Ok(r) => r
            .into_iter()
            .filter(|r| r.experiment.contains(name))
            .take(RUNS_SHOWN)
            .collect(),
        Err(e) => return Response::text(500, format!("cannot read the run history: {e}\n")),
    };
    let options: String = std::iter::once("")
        .chain(crate::control::RUN_STATUSES.iter().copied())
        .map(|o| {
            format!(
                "<option value=\"{o}\"{}>{}</option>",
                if Some(o) == outcome || (o.is_empty() && outcome.is_none()) {
                    " selected"
                } else {
                    ""
                },
                if o.is_empty() { "any" } else { o }
            )
        })
        .collect();
    let mut b = format!(
        "<form method=\"get\" action=\"/runs\" id=\"filters\"><label>Outcome <select name=\"outcome\">{options}</select></label> \
<label>Experiment contains <input name=\"experiment\" value=\"{}\"></label> <button>Filter</button> <a href=\"/runs\">clear</a></form>\n\
<p>{} run(s) shown, newest first (at most {RUNS_SHOWN}).</p>\n",
        esc(name),
        rows.len()
    );
    b.push_str("<table id=\"runs\"><thead><tr><th>Run</th><th>Experiment</th><th>Outcome</th><th>Started</th><th>Finished</th><th>Reason</th><th>Report</th></tr></thead><tbody>\n");
    for r in rows {
        let id = esc(&r.run_id);
        let report = if r.status == "running" {
            "-".to_string()
        } else {
            format!("<a href=\"/runs/{id}/report\">report</a>")
        };
        let _ = writeln!(
            b,
            "<tr><td><a href=\"/runs/{id}\">{id}</a></td><td><a href=\"/experiments/trend?name={}\">{}</a></td><td class=\"outcome\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{report}</td></tr>",
            layout::query_value(&r.experiment),
            esc(&r.experiment),
            esc(&r.status),
            layout::time(r.started_unix_ms),
            layout::time(r.finished_unix_ms.unwrap_or(0)),
            esc(r.reason.as_deref().unwrap_or("")),
        );
    }
    b.push_str("</tbody></table>");
    layout::page(session, "Runs", &b, false)
}

/// The run's self-contained HTML report (inline style and SVG, no script),
/// served with a policy that allows exactly that.
pub fn report(c: &Coordinator, run_id: &str) -> Response {
    if faultline_proto::ids::validate_run_id(run_id).is_err() {
        return Response::text(404, "no such run\n");
    }
    let html = if let Some(rep) = c.runs.report(run_id) {
        Some(crate::report::html::render(&rep))
    } else {
        match c.store.load(run_id) {
            Ok(Some(Stored::Finished(rep))) => Some(crate::report::html::render(&rep)),
            Ok(Some(Stored::Interrupted { run, events })) => crate::store::render_interrupted(&run, &events, "html"),
            Ok(Some(Stored::Running(_))) => {
                return Response::text(
                    409,
                    format!("run {run_id} is still in flight; its report comes at its end\n"),
                )
            }
            Ok(None) => return Response::text(404, format!("no run {run_id} on this coordinator\n")),
            Err(e) => return Response::text(500, format!("cannot read run {run_id}: {e}\n")),
        }
    };
    match html {
        Some(h) => {
            let mut r = Response::html(200, h);
            r.csp = REPORT_CSP;
            r
        }
        None => Response::text(500, format!("run {run_id} has no HTML report\n")),
    }
}
