//! Console sessions: a login with a Control bearer token, an HttpOnly,
//! SameSite=Strict session cookie, a per-session CSRF token, and roles.
//!
//! The token is sent once (the login form's POST) and never stored in the
//! browser: the cookie holds a random session id. `SameSite=Strict` keeps
//! other sites' pages from sending the cookie at all; the CSRF token, which
//! only pages of the console know (it is in their hidden form fields), is
//! checked on every state-changing POST as a second, independent guard.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::security::{constant_time_eq, TokenRole, Tokens};

use super::http::Request;

/// The session cookie's name.
pub const COOKIE: &str = "fl_session";
/// How long a session lasts after login. By default, 12 h (a game day).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once; the oldest goes first beyond that.
pub const MAX_SESSIONS: usize = 10_000;

/// A logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token's name from the token file (the audit log records it).
    pub name: String,
    pub role: TokenRole,
    /// Must come back with every state-changing POST.
    pub csrf: String,
    expires: Instant,
}

impl Session {
    /// The caller as the audit log records it.
    pub fn caller(&self) -> String {
        format!("console:{}", self.name)
    }

    pub fn is_operator(&self) -> bool {
        self.role == TokenRole::Operator
    }

    /// Whether `req` carries this session's CSRF token (form field `csrf`
    /// or header `x-csrf-token`).
    pub fn csrf_ok(&self, req: &Request) -> bool {
        let sent = req
            .header("x-csrf-token")
            .map(str::to_string)
            .or_else(|| req.form().remove("csrf"));
        sent.is_some_and(|s| constant_time_eq(&s, &self.csrf))
    }
}

/// 256 random bits from the OS (two v4 UUIDs, 122 random bits each, as hex).
fn random_id() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// Sessions by id.
pub struct Sessions {
    tokens: Tokens,
    by_id: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn new(tokens: Tokens) -> Self {
        Sessions {
            tokens,
            by_id: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Logs in with a bearer token: the new session's id, or None for a
    /// wrong token.
    pub fn login(&self, token: &str) -> Option<String> {
        let (name, role) = self.tokens.lookup(token.trim())?;
        let id = random_id();
        let now = Instant::now();
        let mut m = self.lock();
        m.retain(|_, s| s.expires > now);
        if m.len() >= MAX_SESSIONS {
            if let Some(oldest) = m.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| k.clone()) {
                m.remove(&oldest);
            }
        }
        m.insert(
            id.clone(),
            Session {
                name: name.to_string(),
                role,
                csrf: random_id(),
                expires: now + SESSION_TTL,
            },
        );
        Some(id)
    }

    /// The session of `req`'s cookie, if it is current.
    pub fn of(&self, req: &Request) -> Option<Session> {
        let id = req.cookie(COOKIE)?;
        let m = self.lock();
        // The lookup is by hash; the id is 256 random bits, so timing
        // cannot narrow a guess down in any useful way.
        m.get(id).filter(|s| s.expires > Instant::now()).cloned()
    }

    pub fn logout(&self, req: &Request) {
        if let Some(id) = req.cookie(COOKIE) {
            self.lock().remove(id);
        }
    }
}

/// The `Set-Cookie` value for a new session. `Secure` when the console
/// serves TLS (a browser would refuse a Secure cookie over plain HTTP).
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that ends a session in the browser.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cookie: &str, body: &str) -> Request {
        let mut headers = HashMap::new();
        headers.insert("cookie".to_string(), cookie.to_string());
        Request {
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_session_needs_a_right_token_and_checks_its_csrf_token() {
        let t = Tokens::parse(
            std::path::Path::new("t"),
            "ro 0123456789abcdef0123 read-only\nop fedcba9876543210fedc\n",
        )
        .unwrap();
        let s = Sessions::new(t);
        assert!(s.login("0123456789abcdef0124").is_none());
        let id = s.login("0123456789abcdef0123").unwrap();
        let sess = s.of(&req(&format!("{COOKIE}={id}"), "")).unwrap();
        assert_eq!((sess.name.as_str(), sess.role), ("ro", TokenRole::ReadOnly));
        assert!(sess.csrf_ok(&req("", &format!("csrf={}", sess.csrf))));
        assert!(!sess.csrf_ok(&req("", "csrf=wrong")));
        assert!(!sess.csrf_ok(&req("", "")));
        s.logout(&req(&format!("{COOKIE}={id}"), ""));
        assert!(s.of(&req(&format!("{COOKIE}={id}"), "")).is_none());
        let op = s.login("fedcba9876543210fedc").unwrap();
        assert!(s.of(&req(&format!("{COOKIE}={op}"), "")).unwrap().is_operator());
    }
}
