//! The one validation of identifiers that cross the wire: agent ids, run ids
//! and fault ids.
//!
//! Ids end up in file names (the agent's undo records), kernel object names
//! (nftables tables, iptables chains), log lines, certificate common names and
//! terminal output. Rather than escaping them differently at every one of those
//! places (and risking two ids mapping to the same name, e.g. `c/x` and `c.x`
//! both becoming `c_x`), ids are restricted here to an alphabet that every one
//! of those places accepts unchanged, so a name built from an id is injective.
//! Both daemons and the CLI call these functions; nothing else decides what a
//! valid id is.

use std::fmt;

/// Longest agent id: a fully qualified host name fits.
pub const MAX_AGENT_ID_LEN: usize = 128;
/// Longest run or fault id. Run ids look like `r20261130-160000-ab12cd` and fault
/// ids like `<run id>-<n>`, far below this.
pub const MAX_FAULT_ID_LEN: usize = 64;

/// What kind of id was checked, for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Agent,
    Run,
    Fault,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::Agent => "agent id",
            IdKind::Run => "run id",
            IdKind::Fault => "fault id",
        })
    }
}

/// Why an id was refused. The message names the id (escaped, so control and
/// bidirectional-override characters cannot reach a terminal) and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: IdKind },
    #[error("{kind} {shown} is {len} bytes long; at most {max} are allowed")]
    TooLong {
        kind: IdKind,
        shown: String,
        len: usize,
        max: usize,
    },
    #[error("{kind} {shown} contains {bad:?}; allowed are {allowed}, starting with a letter or digit")]
    BadChar {
        kind: IdKind,
        shown: String,
        bad: char,
        allowed: &'static str,
    },
    #[error("{kind} {shown} must start with a letter or digit")]
    BadStart { kind: IdKind, shown: String },
}

const AGENT_ALLOWED: &str = "ASCII letters, digits, '.', '_' and '-'";
const FAULT_ALLOWED: &str = "ASCII letters, digits, '_' and '-'";

/// An id shortened and escaped for an error message.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(40).flat_map(char::escape_default).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    format!("\"{out}\"")
}

fn check(kind: IdKind, s: &str, max: usize, extra: &[char], allowed: &'static str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > max {
        return Err(IdError::TooLong {
            kind,
            shown: shown(s),
            len: s.len(),
            max,
        });
    }
    if let Some(bad) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || extra.contains(c))) {
        return Err(IdError::BadChar {
            kind,
            shown: shown(s),
            bad,
            allowed,
        });
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(IdError::BadStart { kind, shown: shown(s) });
    }
    Ok(())
}

/// An agent id: 1 to 128 bytes of ASCII letters, digits, `.`, `_` and `-`,
/// starting with a letter or digit (every host name qualifies; `..`, `/`,
/// spaces and control or bidirectional characters do not).
pub fn validate_agent_id(s: &str) -> Result<(), IdError> {
    check(IdKind::Agent, s, MAX_AGENT_ID_LEN, &['.', '_', '-'], AGENT_ALLOWED)
}

/// A run id: 1 to 64 bytes of ASCII letters, digits, `_` and `-`, starting
/// with a letter or digit.
pub fn validate_run_id(s: &str) -> Result<(), IdError> {
    check(IdKind::Run, s, MAX_FAULT_ID_LEN, &['_', '-'], FAULT_ALLOWED)
}

/// A fault id: like a run id. No `.` and no `/`, so the file and kernel
/// object names an agent derives from it map one id to one name.
pub fn validate_fault_id(s: &str) -> Result<(), IdError> {
    check(IdKind::Fault, s, MAX_FAULT_ID_LEN, &['_', '-'], FAULT_ALLOWED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_generated_ids_are_valid() {
        for id in ["node-1", "web01.prod.example.com", "a", "A_b-9"] {
            validate_agent_id(id).unwrap();
        }
        for id in ["r20261130-160000-ab12cd", "r20261130-160000-ab12cd-12"] {
            validate_run_id(id).unwrap();
            validate_fault_id(id).unwrap();
        }
    }

    #[test]
    fn hostile_ids_are_refused_with_the_rule() {
        for id in [
            "",
            "a/b",
            "../../etc/passwd",
            "bad id",
            "x\u{202e}y",
            ".hidden",
            "-x",
            "a\nb",
        ] {
            let e = validate_agent_id(id).unwrap_err();
            assert!(!e.to_string().contains('\u{202e}'), "{e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        assert!(validate_agent_id(&"a".repeat(129)).is_err());
        validate_agent_id(&"a".repeat(128)).unwrap();
        // `.` is fine in a host name but not in a fault id: `c.x` and `c_x`
        // would otherwise be two ids for one nftables table name.
        validate_agent_id("c.x").unwrap();
        assert!(validate_fault_id("c.x").is_err());
        assert!(validate_fault_id("c/x").is_err());
        validate_fault_id("c_x").unwrap();
        let e = validate_fault_id("c/x").unwrap_err().to_string();
        assert!(e.contains("fault id \"c/x\" contains '/'"), "{e}");
    }
}
