//! The page shell every console page shares: title, navigation, the
//! logged-in name and role, and the logout form with its CSRF token.

use super::auth::Session;
use super::http::{esc, Response};

/// A page of the console. There is no stylesheet yet: the CSP
/// (`default-src 'self'`) forbids inline `<style>`, so pages are plain
/// markup in the browser's defaults. `script` adds `/static/console.js`
/// (the live page only).
pub fn page(session: &Session, title: &str, body: &str, script: bool) -> Response {
    let script = if script {
        "<script src=\"/static/console.js\" defer></script>"
    } else {
        ""
    };
    Response::html(
        200,
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} · faultline</title>{script}</head><body>\n\
<nav><a href=\"/fleet\">Fleet</a> · <a href=\"/runs\">Runs</a> · <a href=\"/experiments\">Experiments</a> · \
<a href=\"/gamedays\">Game days</a> · <a href=\"/schedules\">Schedules</a> · <a href=\"/audit\">Audit</a> · \
<a href=\"/stop\">Emergency stop</a> · \
logged in as <b>{name}</b> ({role}) \
<form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button>Log out</button></form></nav>\n\
<h1>{title}</h1>\n{body}\n</body></html>\n",
            title = esc(title),
            name = esc(&session.name),
            role = session.role,
            csrf = esc(&session.csrf),
        ),
    )
}

/// The login page: one password field for a bearer token.
pub fn login(status: u16, error: Option<&str>) -> Response {
    let error = error
        .map(|e| format!("<p role=\"alert\"><b>{}</b></p>", esc(e)))
        .unwrap_or_default();
    Response::html(
        status,
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Log in · faultline</title></head><body>\n\
<h1>faultline console</h1>\n{error}\
<form method=\"post\" action=\"/login\"><label>Bearer token (from the coordinator's --tokens file) \
<input type=\"password\" name=\"token\" autocomplete=\"current-password\" required></label> <button>Log in</button></form>\n</body></html>\n"
        ),
    )
}

/// A hidden CSRF field for a form of `session`.
pub fn csrf_field(session: &Session) -> String {
    format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", esc(&session.csrf))
}

/// `s` percent-encoded for a query value (everything but unreserved characters).
pub fn query_value(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// Unix milliseconds as an RFC 3339 UTC time, or `-` for 0.
pub fn time(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    crate::timestamp::rfc3339_ms(ms)
}
