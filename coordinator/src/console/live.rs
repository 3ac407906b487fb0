//! The Live run page: phases with absolute and relative times, each
//! target's state, each guardrail's and stop condition's current state,
//! probe samples with a live chart per probe (samples over time, the
//! baseline band, the fault window) and the log, filled in by
//! `/static/console.js` from the run's Server-Sent Events; and its Abort
//! button (operators only, refused on the server for read-only sessions).

use super::auth::Session;
use super::http::{esc, Response};
use super::{layout, read_only_refusal};
use crate::server::Coordinator;

pub fn page(c: &Coordinator, session: &Session, run_id: &str) -> Response {
    if faultline_proto::ids::validate_run_id(run_id).is_err() {
        return Response::text(404, "no such run\n");
    }
    let run = match c.store.get(run_id) {
        Ok(Some((run, _, _))) => run,
        Ok(None) => return Response::text(404, format!("no run {run_id} on this coordinator\n")),
        Err(e) => return Response::text(500, format!("cannot read run {run_id}: {e}\n")),
    };
    let id = esc(run_id);
    let in_flight = c.runs.is_known(run_id) && c.runs.report(run_id).is_none();
    let abort = match (in_flight, session.is_operator()) {
        (true, true) => format!(
            "<form method=\"post\" action=\"/runs/{id}/abort\">{}<button id=\"abort\">Abort this run</button></form>",
            layout::csrf_field(session)
        ),
        (true, false) => "<p>Read-only session: aborting needs an operator token.</p>".to_string(),
        (false, _) => String::new(),
    };
    let body = format!(
        "<div id=\"run\" data-run=\"{id}\" data-started=\"{started_ms}\">\n\
<p>Experiment <b>{exp}</b>, started {started} · outcome: <b id=\"outcome\">{status}</b> <span id=\"reason\">{reason}</span></p>\n\
{abort}\n<p><a href=\"/runs/{id}/report\">Full report</a> (when the run has ended) · <span id=\"stream\">connecting…</span></p>\n\
<h2>Phases</h2>\n<table id=\"phases\"><thead><tr><th>Phase</th><th>At</th><th>+elapsed</th><th>Planned</th></tr></thead><tbody></tbody></table>\n\
<h2>Targets</h2>\n<table id=\"targets\"><thead><tr><th>Agent</th><th>Fault</th><th>State</th><th>Detail</th><th>Backend</th><th>At</th></tr></thead><tbody></tbody></table>\n\
<h2>Guardrails and stop conditions</h2>\n<p>Each check's current state during observe: pending, ok, breached (a breached guardrail or critical stop condition aborts the run), error (a stop condition's query failed).</p>\n\
<table id=\"checks\"><thead><tr><th>Kind</th><th>Check</th><th>State</th><th>Detail</th><th>Since</th></tr></thead><tbody></tbody></table>\n\
<h2>Probes</h2>\n<p>Charts: latency of successful samples (or the measured value) over time since the start; \
red ticks are failed samples, the blue band is the baseline's p5&ndash;p95, the red shade the fault window (inject until restored).</p>\n\
<div id=\"charts\"></div>\n<table id=\"probes\"><thead><tr><th>Probe</th><th>Phase</th><th>Samples</th><th>Succeeded</th><th>Last latency</th><th>Last error</th></tr></thead><tbody></tbody></table>\n\
<h2>Log</h2>\n<ol id=\"log\"></ol>\n</div>",
        started_ms = run.started_unix_ms,
        exp = esc(&run.experiment),
        started = layout::time(run.started_unix_ms),
        status = esc(&run.status),
        reason = esc(run.reason.as_deref().unwrap_or("")),
    );
    layout::page(session, &format!("Run {run_id}"), &body, true)
}

/// The Abort button's POST (CSRF already checked by the router).
pub fn abort(c: &Coordinator, session: &Session, run_id: &str) -> Response {
    if !session.is_operator() {
        return read_only_refusal(session, "aborting a run");
    }
    if faultline_proto::ids::validate_run_id(run_id).is_err() {
        return Response::text(404, "no such run\n");
    }
    let found =
        crate::control::actions::abort_run(&c.runs, &c.store, &session.caller(), run_id, "aborted from the console");
    if found {
        Response::redirect(&format!("/runs/{run_id}"))
    } else {
        Response::text(404, format!("no run {run_id} in flight on this coordinator\n"))
    }
}
