//! The Fleet page: every connected agent with its labels, capabilities,
//! version, last heartbeat, active faults and what its last start cleaned.

use std::fmt::Write;

use super::auth::Session;
use super::http::{esc, Response};
use super::layout;
use crate::server::Coordinator;

pub fn page(c: &Coordinator, session: &Session) -> Response {
    let agents = c.registry.agents();
    let mut b = String::new();
    let stopped = c
        .runs
        .stopped()
        .map(|why| {
            format!(
                "<p role=\"alert\"><b>Stopped:</b> {} (runs are refused until `faultline resume`)</p>\n",
                esc(&why)
            )
        })
        .unwrap_or_default();
    b.push_str(&stopped);
    let _ = writeln!(b, "<p>{} agent(s) connected.</p>", agents.len());
    b.push_str("<table id=\"agents\"><thead><tr><th>Agent</th><th>Host</th><th>Labels</th><th>Capabilities</th><th>Version</th><th>Last heartbeat</th><th>Active faults</th><th>Cleaned at start</th></tr></thead><tbody>\n");
    for a in &agents {
        let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&a.agent_id),
            esc(&a.hostname),
            esc(&labels.join(", ")),
            esc(&a.capabilities.join(", ")),
            esc(&a.version),
            layout::time(a.last_heartbeat_unix_ms),
            a.active_faults,
            esc(&if a.cleaned.is_empty() {
                "-".to_string()
            } else {
                a.cleaned.join("; ")
            }),
        );
    }
    b.push_str("</tbody></table>");
    layout::page(session, "Fleet", &b, false)
}
