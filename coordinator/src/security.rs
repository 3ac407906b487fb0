//! Who may talk to the coordinator.
//!
//! - **mTLS** (`faultline serve --tls-dir DIR`, made by `faultline certs
//!   init`): the coordinator presents its certificate; agents must present
//!   one signed by the same CA, and the agent id in Hello must equal the
//!   certificate's common name, so one node cannot pose as another.
//! - **Bearer tokens** (`--tokens FILE`, lines `NAME TOKEN [ROLE]`): Control
//!   calls must carry `authorization: Bearer TOKEN`; the audit log records
//!   NAME. ROLE is `operator` (the default, so files written before roles
//!   existed keep their meaning) or `read-only`: a read-only token may list,
//!   follow and read reports, and is refused every call that changes state
//!   (submit, abort, stop, resume, schedules) by Control and the console.
//!   With TLS on, the CLI certificate from the CA is accepted instead.
//! - **Roles**: every certificate names its role (see [`crate::certs`]). An
//!   agent certificate only opens AgentLink, the CLI certificate only
//!   Control: one compromised node cannot drive the fleet.
//! - Neither: the coordinator only listens on loopback (see `serve`).
//!
//! `faultline certs init` makes the CA and the certificates ([`crate::certs`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Status};

use crate::certs::Role;

/// Errors setting security up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Tokens {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// What a bearer token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRole {
    /// Everything a caller may do: submit, abort, stop, resume, schedules.
    Operator,
    /// Look only: lists, follows, reports; every state change is refused.
    ReadOnly,
}

impl TokenRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Operator => "operator",
            TokenRole::ReadOnly => "read-only",
        }
    }
}

impl std::fmt::Display for TokenRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bearer tokens and the names and roles they stand for.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_token: HashMap<String, (String, TokenRole)>,
}

impl Tokens {
    /// Parses `NAME TOKEN [ROLE]` lines (`#` starts a comment); ROLE is
    /// `operator` (the default) or `read-only`.
    pub fn parse(path: &Path, text: &str) -> Result<Tokens, Error> {
        let mut by_token = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = |message: &str| Error::Tokens {
                path: path.to_path_buf(),
                line: i + 1,
                message: message.to_string(),
            };
            let mut w = line.split_whitespace();
            let (Some(name), Some(token), role, None) = (w.next(), w.next(), w.next(), w.next()) else {
                return Err(err("expected NAME TOKEN [ROLE]"));
            };
            let role = match role {
                None | Some("operator") => TokenRole::Operator,
                Some("read-only") => TokenRole::ReadOnly,
                Some(other) => {
                    return Err(err(&format!(
                        "unknown role {other:?}; the role column is `operator` or `read-only`"
                    )))
                }
            };
            if token.len() < 16 {
                return Err(err("token is shorter than 16 characters; use a long random one"));
            }
            if by_token.insert(token.to_string(), (name.to_string(), role)).is_some() {
                return Err(err("token used twice"));
            }
        }
        if by_token.is_empty() {
            return Err(Error::Tokens {
                path: path.to_path_buf(),
                line: 0,
                message: "no tokens".into(),
            });
        }
        Ok(Tokens { by_token })
    }

    pub fn load(path: &Path) -> Result<Tokens, Error> {
        let text = String::from_utf8_lossy(&read(path)?).into_owned();
        Tokens::parse(path, &text)
    }

    /// The name of a token, compared in constant time per entry.
    pub fn name_of(&self, token: &str) -> Option<&str> {
        self.lookup(token).map(|(n, _)| n)
    }

    /// The name and role of a token, compared in constant time per entry.
    pub fn lookup(&self, token: &str) -> Option<(&str, TokenRole)> {
        self.by_token
            .iter()
            .find(|(t, _)| constant_time_eq(t, token))
            .map(|(_, (n, r))| (n.as_str(), *r))
    }
}

/// Whether two strings are equal, without stopping at the first
/// difference (the time taken does not tell how much of a guess was right).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The coordinator's security settings. The default is none (loopback only).
#[derive(Clone, Default)]
pub struct Security {
    /// PEM of the coordinator's certificate and key, and of the CA agents'
    /// certificates must chain to.
    pub tls: Option<(Identity, Certificate)>,
    pub tokens: Option<Tokens>,
}

impl Security {
    /// Loads `DIR/ca.pem`, `DIR/coordinator.pem`, `DIR/coordinator.key`.
    pub fn tls_from_dir(dir: &Path) -> Result<(Identity, Certificate), Error> {
        let cert = read(&dir.join("coordinator.pem"))?;
        let key = read(&dir.join("coordinator.key"))?;
        let ca = read(&dir.join("ca.pem"))?;
        Ok((Identity::from_pem(cert, key), Certificate::from_pem(ca)))
    }

    pub fn is_on(&self) -> bool {
        self.tls.is_some() || self.tokens.is_some()
    }

    /// The TLS server config: client certificates are verified against the
    /// CA when presented; AgentLink then insists on one, Control accepts a
    /// token instead.
    pub fn server_tls(&self) -> Option<ServerTlsConfig> {
        self.tls.as_ref().map(|(id, ca)| {
            ServerTlsConfig::new()
                .identity(id.clone())
                .client_ca_root(ca.clone())
                .client_auth_optional(true)
        })
    }

    /// Who is calling Control: the token's name, or the common name of
    /// the CLI certificate (agent certificates are refused). Without any security configured, the
    /// peer address (the coordinator is loopback-only then).
    pub fn control_caller<T>(&self, req: &Request<T>) -> Result<String, Status> {
        if let Some(tokens) = &self.tokens {
            if let Some(h) = req.metadata().get("authorization") {
                let token = h.to_str().ok().and_then(bearer_token).unwrap_or("");
                return match tokens.name_of(token) {
                    Some(name) => Ok(format!("token:{name}")),
                    None => Err(Status::unauthenticated("wrong bearer token")),
                };
            }
        }
        if self.tls.is_some() {
            if let Some((cn, role)) = peer_cert(req) {
                // An agent's certificate sits on every node: one compromised
                // node must not be able to drive the fleet.
                return match role {
                    Some(Role::Cli) => Ok(format!("cert:{cn}")),
                    Some(r) => Err(Status::permission_denied(format!(
                        "the client certificate {cn:?} has the {r} role; Control calls need a bearer token or the CLI certificate"
                    ))),
                    None => Err(Status::permission_denied(format!(
                        "the client certificate {cn:?} has no faultline role (OU=faultline-cli); Control calls need a bearer token or the CLI certificate"
                    ))),
                };
            }
        }
        if self.is_on() {
            return Err(Status::unauthenticated(
                "this coordinator needs a bearer token or a client certificate signed by its CA",
            ));
        }
        Ok(match req.remote_addr() {
            Some(a) => format!("anonymous@{a}"),
            None => "anonymous".into(),
        })
    }

    /// Like [`Security::control_caller`], for calls that change state:
    /// a `read-only` token is refused. Certificates and anonymous loopback
    /// callers are operators.
    pub fn control_operator<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let who = self.control_caller(req)?;
        if let (Some(tokens), Some(h)) = (&self.tokens, req.metadata().get("authorization")) {
            let token = h.to_str().ok().and_then(bearer_token).unwrap_or("");
            if let Some((name, TokenRole::ReadOnly)) = tokens.lookup(token) {
                return Err(Status::permission_denied(format!(
                    "token {name:?} is read-only; this call changes state and needs an operator token"
                )));
            }
        }
        Ok(who)
    }

    /// Checks an agent's identity: with TLS on, it must present an agent
    /// certificate (role `faultline-agent`) whose common name is the agent
    /// id it claims. `peer` is the client certificate's common name and
    /// role, read from the request before its stream is consumed.
    pub fn check_agent(&self, peer: Option<(String, Option<Role>)>, agent_id: &str) -> Result<(), Status> {
        if self.tls.is_none() {
            return Ok(());
        }
        match peer {
            None => Err(Status::unauthenticated(
                "agents must present a client certificate signed by this coordinator's CA",
            )),
            Some((cn, role)) if role != Some(Role::Agent) => Err(Status::permission_denied(format!(
                "the client certificate {cn:?} is not an agent certificate (OU=faultline-agent); AgentLink admits agent certificates only"
            ))),
            Some((cn, _)) if cn == agent_id => Ok(()),
            Some((cn, _)) => Err(Status::permission_denied(format!(
                "agent id {agent_id:?} does not match its certificate (common name {cn:?})"
            ))),
        }
    }
}

/// The common name and role of the client certificate (TLS already
/// verified that the CA signed it).
pub fn peer_cert<T>(req: &Request<T>) -> Option<(String, Option<Role>)> {
    let certs = req.peer_certs()?;
    Role::of_der(certs.first()?.as_ref())
}

/// The token of an `authorization` header value: `Bearer TOKEN`, the scheme
/// compared case-insensitively (RFC 6750 uses RFC 7235's auth-scheme).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_checked() {
        let p = Path::new("tokens");
        let t = Tokens::parse(p, "# ci\nci 0123456789abcdef0123\nops fedcba9876543210fedc # pager\n").unwrap();
        assert_eq!(t.name_of("0123456789abcdef0123"), Some("ci"));
        assert_eq!(t.name_of("0123456789abcdef0124"), None);
        assert_eq!(t.name_of(""), None);
        assert_eq!(t.lookup("0123456789abcdef0123"), Some(("ci", TokenRole::Operator)));
        let t = Tokens::parse(
            p,
            "ro 0123456789abcdef0123 read-only\nop fedcba9876543210fedc operator\n",
        )
        .unwrap();
        assert_eq!(t.lookup("0123456789abcdef0123"), Some(("ro", TokenRole::ReadOnly)));
        assert_eq!(t.lookup("fedcba9876543210fedc"), Some(("op", TokenRole::Operator)));
        for (text, want) in [
            ("ci short\n", "tokens:1: token is shorter"),
            ("ci\n", "tokens:1: expected NAME TOKEN [ROLE]"),
            ("ci 0123456789abcdef0123 admin\n", "tokens:1: unknown role \"admin\""),
            (
                "ci 0123456789abcdef0123 read-only x\n",
                "tokens:1: expected NAME TOKEN [ROLE]",
            ),
            (
                "a 0123456789abcdef0123\nb 0123456789abcdef0123\n",
                "tokens:2: token used twice",
            ),
            ("# nothing\n", "no tokens"),
        ] {
            let e = Tokens::parse(p, text).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should contain {want}");
        }
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for h in ["Bearer abc", "bearer abc", "BEARER abc", "  bEaReR   abc  "] {
            assert_eq!(bearer_token(h), Some("abc"), "{h:?}");
        }
        for h in ["Basic abc", "Bearerabc", "abc", ""] {
            assert_eq!(bearer_token(h), None, "{h:?}");
        }
    }
}
