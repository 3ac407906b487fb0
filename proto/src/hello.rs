//! Limits on what an agent says about itself in `Hello`.
//!
//! The coordinator keeps every connected agent's Hello in memory and returns
//! it from `ListAgents`, so an unbounded Hello lets one client exhaust the
//! coordinator's memory or make `ListAgents` answers exceed the gRPC message
//! limit. The coordinator refuses a Hello over any of these limits
//! (InvalidArgument naming the field and the limit); the agent checks its own
//! Hello with the same function before it dials, and shortens its `cleaned`
//! lines with [`fit_cleaned`] so a legitimate agent is never refused.
//!
//! Worst case, one agent's entry is about 100 KB; a typical one is well
//! under 1 KB.

use crate::ids::{validate_agent_id, IdError};
use crate::v1::Hello;

/// Longest host name (the DNS limit).
pub const MAX_HOSTNAME_LEN: usize = 253;
/// Most labels per agent.
pub const MAX_LABELS: usize = 64;
/// Longest label key.
pub const MAX_LABEL_KEY_LEN: usize = 63;
/// Longest label value.
pub const MAX_LABEL_VALUE_LEN: usize = 256;
/// Most addresses per agent.
pub const MAX_ADDRESSES: usize = 64;
/// Longest address (an IPv6 address with a zone fits).
pub const MAX_ADDRESS_LEN: usize = 64;
/// Most capabilities per agent.
pub const MAX_CAPABILITIES: usize = 32;
/// Longest capability name.
pub const MAX_CAPABILITY_LEN: usize = 64;
/// Longest version string.
pub const MAX_VERSION_LEN: usize = 64;
/// Most `cleaned` lines (what the agent cleaned up at start).
pub const MAX_CLEANED: usize = 100;
/// Longest `cleaned` line.
pub const MAX_CLEANED_LINE_LEN: usize = 512;

/// Why a Hello was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("Hello.agent_id: {0}")]
    AgentId(#[from] IdError),
    #[error("Hello.{field} has {count} entries; at most {max} are allowed")]
    TooMany {
        field: &'static str,
        count: usize,
        max: usize,
    },
    #[error("Hello.{field} {shown} is {len} bytes long; at most {max} are allowed")]
    TooLong {
        field: &'static str,
        shown: String,
        len: usize,
        max: usize,
    },
    #[error("Hello.{field} {shown} contains a control or bidirectional-override character")]
    Unprintable { field: &'static str, shown: String },
    #[error("Hello.{field} has an empty entry")]
    Empty { field: &'static str },
}

/// A value shortened and escaped for an error message.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(40).flat_map(char::escape_default).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    format!("\"{out}\"")
}

/// Characters that must not reach a terminal or a log line: controls and
/// the bidirectional formatting characters that reorder what is displayed.
fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn text(field: &'static str, s: &str, max: usize) -> Result<(), HelloError> {
    if s.len() > max {
        return Err(HelloError::TooLong {
            field,
            shown: shown(s),
            len: s.len(),
            max,
        });
    }
    if s.chars().any(unprintable) {
        return Err(HelloError::Unprintable { field, shown: shown(s) });
    }
    Ok(())
}

fn list(field: &'static str, v: &[String], max: usize, max_len: usize) -> Result<(), HelloError> {
    if v.len() > max {
        return Err(HelloError::TooMany {
            field,
            count: v.len(),
            max,
        });
    }
    v.iter().try_for_each(|s| text(field, s, max_len))
}

/// Checks labels alone (the agent checks its `--label` flags with it).
pub fn check_labels<'a>(labels: impl ExactSizeIterator<Item = (&'a String, &'a String)>) -> Result<(), HelloError> {
    if labels.len() > MAX_LABELS {
        return Err(HelloError::TooMany {
            field: "labels",
            count: labels.len(),
            max: MAX_LABELS,
        });
    }
    for (k, v) in labels {
        if k.is_empty() {
            return Err(HelloError::Empty { field: "labels" });
        }
        text("labels", k, MAX_LABEL_KEY_LEN)?;
        text("labels", v, MAX_LABEL_VALUE_LEN)?;
    }
    Ok(())
}

/// Checks every field of a Hello against the limits above.
pub fn check(h: &Hello) -> Result<(), HelloError> {
    validate_agent_id(&h.agent_id)?;
    text("hostname", &h.hostname, MAX_HOSTNAME_LEN)?;
    check_labels(h.labels.iter())?;
    list("addresses", &h.addresses, MAX_ADDRESSES, MAX_ADDRESS_LEN)?;
    list("capabilities", &h.capabilities, MAX_CAPABILITIES, MAX_CAPABILITY_LEN)?;
    text("version", &h.version, MAX_VERSION_LEN)?;
    list("cleaned", &h.cleaned, MAX_CLEANED, MAX_CLEANED_LINE_LEN)?;
    Ok(())
}

/// Fits an agent's `cleaned` lines into the limits: long lines are cut and
/// control characters replaced, and past [`MAX_CLEANED`] the last line says
/// how many more there were (the agent's own log has them all).
pub fn fit_cleaned(lines: &[String]) -> Vec<String> {
    let fit = |l: &str| -> String {
        let mut out = String::new();
        for c in l.chars().map(|c| if unprintable(c) { '?' } else { c }) {
            if out.len() + c.len_utf8() > MAX_CLEANED_LINE_LEN - 3 {
                out.push_str("...");
                break;
            }
            out.push(c);
        }
        out
    };
    if lines.len() <= MAX_CLEANED {
        return lines.iter().map(|l| fit(l)).collect();
    }
    let mut out: Vec<String> = lines[..MAX_CLEANED - 1].iter().map(|l| fit(l)).collect();
    out.push(format!(
        "... and {} more (see the agent's log)",
        lines.len() - (MAX_CLEANED - 1)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels_map<'a>(
        labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> std::collections::HashMap<String, String> {
        labels
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn hello() -> Hello {
        Hello {
            agent_id: "node-a".into(),
            hostname: "node-a.example".into(),
            labels: labels_map([("zone", "a")]),
            addresses: vec!["10.0.0.1".into()],
            capabilities: vec!["kill".into()],
            version: "0.1.0".into(),
            pid: 1,
            cleaned: vec!["removed chain faultline-x".into()],
        }
    }

    #[test]
    fn a_normal_hello_passes() {
        check(&hello()).unwrap();
    }

    #[test]
    fn oversized_and_hostile_hellos_are_refused_naming_the_field_and_limit() {
        type Edit = Box<dyn Fn(&mut Hello)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|h| h.agent_id = "a/b".into()),
                "Hello.agent_id: agent id \"a/b\"",
            ),
            (
                Box::new(|h| h.hostname = "x".repeat(3_000_000)),
                "Hello.hostname \"xxxx",
            ),
            (
                Box::new(|h| h.labels = (0..100_000).map(|i| (format!("k{i}"), "v".into())).collect()),
                "Hello.labels has 100000 entries; at most 64 are allowed",
            ),
            (
                Box::new(|h| h.cleaned = vec!["x".into(); 100_000]),
                "Hello.cleaned has 100000 entries; at most 100 are allowed",
            ),
            (
                Box::new(|h| h.hostname = "a\u{202e}b".into()),
                "Hello.hostname \"a\\u{202e}b\" contains a control",
            ),
            (
                Box::new(|h| h.labels = labels_map([("", "v")])),
                "Hello.labels has an empty entry",
            ),
        ];
        for (edit, want) in cases {
            let mut h = hello();
            edit(&mut h);
            let e = check(&h).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should contain {want}");
            assert!(e.len() < 300, "the message stays short: {e}");
        }
        let mut h = hello();
        h.hostname = "x".repeat(254);
        assert!(check(&h)
            .unwrap_err()
            .to_string()
            .ends_with("is 254 bytes long; at most 253 are allowed"));
    }

    #[test]
    fn fitted_cleaned_lines_always_pass() {
        let many: Vec<String> = (0..500).map(|i| format!("{i} {}\u{1b}", "é".repeat(400))).collect();
        let fitted = fit_cleaned(&many);
        assert_eq!(fitted.len(), MAX_CLEANED);
        assert_eq!(fitted.last().unwrap(), "... and 401 more (see the agent's log)");
        let mut h = hello();
        h.cleaned = fitted;
        check(&h).unwrap();
    }
}
