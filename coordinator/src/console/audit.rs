//! The Audit page: every state-changing call (Control and console), newest
//! first: who did what to which run or schedule; and, with `serve --notify`,
//! the webhook deliveries that failed.

use std::fmt::Write;

use super::auth::Session;
use super::http::{esc, Response};
use super::layout;
use crate::server::Coordinator;

/// Entries shown, newest first.
pub const AUDIT_SHOWN: usize = 500;

pub fn page(c: &Coordinator, session: &Session) -> Response {
    let rows = match c.store.audit_list(AUDIT_SHOWN) {
        Ok(r) => r,
        Err(e) => return Response::text(500, format!("cannot read the audit log: {e}\n")),
    };
    let mut b = format!("<p>The last {AUDIT_SHOWN} entries at most, newest first.</p>\n");
    b.push_str("<table id=\"audit\"><thead><tr><th>When</th><th>Who</th><th>Action</th><th>Target</th><th>Detail</th></tr></thead><tbody>\n");
    for a in rows {
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            layout::time(a.at_unix_ms),
            esc(&a.caller),
            esc(&a.action),
            esc(&a.target),
            esc(&a.detail)
        );
    }
    b.push_str("</tbody></table>");
    if let Some(n) = &c.notifier {
        let failures = n.failures();
        let _ = writeln!(
            b,
            "<h2>Notification failures</h2>\n<p>{} webhook deliveries failed after their retries (the newest {} are kept).</p>",
            failures.len(),
            crate::notify::FAILURES_KEPT
        );
        b.push_str("<ul id=\"notify-failures\">");
        for f in failures.iter().rev() {
            let _ = write!(b, "<li>{}</li>", esc(f));
        }
        b.push_str("</ul>");
    }
    layout::page(session, "Audit", &b, false)
}
