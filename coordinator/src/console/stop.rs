//! The fleet-wide emergency stop: a confirmation page, then a POST that
//! must carry the typed word `STOP` (and the CSRF token); and, while the
//! fleet is stopped, the Resume button that ends the stop (operators only,
//! like `faultline resume`).

use std::fmt::Write;

use super::auth::Session;
use super::http::{esc, Request, Response};
use super::{layout, read_only_refusal};
use crate::server::Coordinator;

/// What the operator types to confirm.
pub const CONFIRM_WORD: &str = "STOP";

pub fn confirm(c: &Coordinator, session: &Session) -> Response {
    let mut body = match c.runs.stopped() {
        Some(why) if session.is_operator() => format!(
            "<p id=\"stopped\">The fleet is stopped ({}): new runs are refused.</p>\n\
<form method=\"post\" action=\"/resume\">{}<button id=\"resume\">Resume: allow runs again</button></form>\n",
            esc(&why),
            layout::csrf_field(session)
        ),
        Some(why) => format!(
            "<p id=\"stopped\">The fleet is stopped ({}): new runs are refused. Read-only session: resuming needs an operator token.</p>\n",
            esc(&why)
        ),
        None => String::new(),
    };
    body += &if session.is_operator() {
        format!(
            "<p>Aborts every run in flight ({} now), tells all {} agent(s) to restore every fault they hold, and refuses new runs until <code>faultline resume</code>.</p>\n\
<form method=\"post\" action=\"/stop\">{}<label>Type {CONFIRM_WORD} to confirm <input name=\"confirm\" required autocomplete=\"off\"></label> \
<label>Reason <input name=\"reason\"></label> <button id=\"stop\">Emergency stop</button></form>",
            c.runs.in_flight(),
            c.registry.len(),
            layout::csrf_field(session)
        )
    } else {
        "<p>Read-only session: the emergency stop needs an operator token.</p>".to_string()
    };
    layout::page(session, "Emergency stop", &body, false)
}

/// The Resume button's POST (CSRF already checked by the router).
pub fn resume(c: &Coordinator, session: &Session) -> Response {
    if !session.is_operator() {
        return read_only_refusal(session, "resuming after an emergency stop");
    }
    let body = if crate::control::actions::resume(&c.runs, &c.store, &session.caller()) {
        "<p id=\"resumed\">Resumed: runs may start again.</p>"
    } else {
        "<p id=\"resumed\">The fleet was not stopped; nothing changed.</p>"
    };
    layout::page(session, "Emergency stop", body, false)
}

pub fn post(c: &Coordinator, session: &Session, req: &Request) -> Response {
    if !session.is_operator() {
        return read_only_refusal(session, "the emergency stop");
    }
    let form = req.form();
    if form.get("confirm").map(|s| s.trim()) != Some(CONFIRM_WORD) {
        return Response::text(
            400,
            format!("not stopped: type {CONFIRM_WORD} in the confirmation field\n"),
        );
    }
    let reason = form.get("reason").map(String::as_str).unwrap_or("").trim();
    let r = crate::control::actions::emergency_stop(&c.runs, &c.registry, &c.store, &session.caller(), reason);
    let mut b = format!(
        "<p id=\"stopped\">Stopped: {} run(s) aborted, {} agent(s) told to restore everything. New runs are refused until <code>faultline resume</code>.</p><ul>",
        r.aborted_runs.len(),
        r.agents_told
    );
    for id in &r.aborted_runs {
        let id = esc(id);
        let _ = write!(b, "<li><a href=\"/runs/{id}\">{id}</a></li>");
    }
    b.push_str("</ul>");
    layout::page(session, "Emergency stop", &b, false)
}
