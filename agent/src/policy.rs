//! The agent's policy file: defence in depth on the node itself. Whatever a
//! coordinator asks, this agent refuses what its operator did not allow.
//!
//! ```yaml
//! allowed_kinds: [kill, latency, block]   # default: every kind
//! protected_processes: [postgres, etcd]   # never signalled (adds to sshd, faultline-agent)
//! allowed_fill_paths: [/var/tmp/chaos]    # adds to --allow-fill
//! max_fill_used_percent: 90               # df's Use%; the lower of this and --max-fill-used-percent
//! max_fault_duration: 5m                  # restored after this, renewed or not
//! max_cpu_percent: 50                     # cpu_stress: of all cores (default 90)
//! max_memory_percent: 50                  # memory_stress: of MemAvailable (default 80)
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Errors of the agent policy: a file that cannot be used, or a fault it
/// does not allow.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A policy file problem, located in it.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("cannot read agent policy {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// A fault kind outside `allowed_kinds`: the refusal of an inject.
    #[error("agent policy {file}: fault kind {kind} is not in allowed_kinds [{}]", allowed.join(", "))]
    NotAllowed {
        file: String,
        kind: String,
        allowed: Vec<String>,
    },
}

/// Result of the agent policy.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The agent's own limits. The default allows everything the flags allow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentPolicy {
    /// The file it came from, named in refusals.
    pub source: String,
    /// `None`: every kind.
    pub allowed_kinds: Option<Vec<String>>,
    pub protected_processes: Vec<String>,
    pub allowed_fill_paths: Vec<PathBuf>,
    /// Highest used percentage a fill may leave, as `df` counts it (used /
    /// (used + available)); the lower of this and the flag applies. By
    /// default, none (the flag's value).
    pub max_fill_used_percent: Option<f64>,
    /// Longest any fault stays applied, renewals or not.
    pub max_fault_duration: Option<Duration>,
    /// Highest load of one cpu_stress, percent of all cores; the lower of
    /// this and the built-in 90 % applies. By default, none.
    pub max_cpu_percent: Option<f64>,
    /// Largest memory_stress, percent of MemAvailable; the lower of this
    /// and the built-in 80 % applies. By default, none.
    pub max_memory_percent: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    allowed_kinds: Option<Vec<String>>,
    #[serde(default)]
    protected_processes: Vec<String>,
    #[serde(default)]
    allowed_fill_paths: Vec<PathBuf>,
    max_fill_used_percent: Option<f64>,
    max_fault_duration: Option<String>,
    max_cpu_percent: Option<f64>,
    max_memory_percent: Option<f64>,
}

impl AgentPolicy {
    /// Parses policy YAML read from `file`.
    pub fn parse(file: &str, text: &str) -> Result<AgentPolicy> {
        let err = |line: usize, column: usize, message: String| Error::Invalid {
            file: file.into(),
            line,
            column,
            message,
        };
        let raw: Raw = serde_norway::from_str(text).map_err(|e| {
            let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
            let mut message = e.to_string();
            if let Some(i) = message.rfind(" at line ") {
                message.truncate(i);
            }
            err(line, column, message)
        })?;
        let at = |key: &str, message: String| {
            let line = text
                .lines()
                .position(|l| l.starts_with(&format!("{key}:")))
                .map(|i| i + 1)
                .unwrap_or(1);
            err(line, 1, message)
        };
        if let Some(kinds) = &raw.allowed_kinds {
            if let Some(k) = kinds.iter().find(|k| !crate::faults::names().any(|n| n == k.as_str())) {
                return Err(at(
                    "allowed_kinds",
                    format!(
                        "allowed_kinds: unknown kind {k:?}; use {}",
                        crate::faults::names().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        if let Some(p) = raw.allowed_fill_paths.iter().find(|p| !p.is_absolute()) {
            return Err(at(
                "allowed_fill_paths",
                format!("allowed_fill_paths: {} is not an absolute path", p.display()),
            ));
        }
        if let Some(p) = raw.max_fill_used_percent {
            if !(p > 0.0 && p <= 100.0) {
                return Err(at(
                    "max_fill_used_percent",
                    format!("max_fill_used_percent {p}: must be within (0, 100]"),
                ));
            }
        }
        for (key, v) in [
            ("max_cpu_percent", raw.max_cpu_percent),
            ("max_memory_percent", raw.max_memory_percent),
        ] {
            if let Some(p) = v.filter(|p| !(*p > 0.0 && *p <= 100.0)) {
                return Err(at(key, format!("{key} {p}: must be within (0, 100]")));
            }
        }
        let max_fault_duration = match raw.max_fault_duration {
            None => None,
            Some(d) => Some(humantime::parse_duration(d.trim()).map_err(|e| {
                at(
                    "max_fault_duration",
                    format!("max_fault_duration {d:?}: {e}; write e.g. 5m"),
                )
            })?),
        };
        if max_fault_duration == Some(Duration::ZERO) {
            return Err(at(
                "max_fault_duration",
                "max_fault_duration: 0 would restore every fault at once".into(),
            ));
        }
        Ok(AgentPolicy {
            source: file.into(),
            allowed_kinds: raw.allowed_kinds,
            protected_processes: raw.protected_processes,
            allowed_fill_paths: raw.allowed_fill_paths,
            max_fill_used_percent: raw.max_fill_used_percent,
            max_fault_duration,
            max_cpu_percent: raw.max_cpu_percent,
            max_memory_percent: raw.max_memory_percent,
        })
    }

    /// Reads and parses a policy file.
    pub fn load(path: &str) -> Result<AgentPolicy> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.into(),
            source,
        })?;
        AgentPolicy::parse(path, &text)
    }

    /// Whether a fault kind may run; `Err` is the refusal.
    pub fn allows(&self, kind: &str) -> Result<()> {
        match &self.allowed_kinds {
            Some(k) if !k.iter().any(|x| x == kind) => Err(Error::NotAllowed {
                file: self.source.clone(),
                kind: kind.into(),
                allowed: k.clone(),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_kinds() {
        let p = AgentPolicy::parse(
            "agent.yaml",
            "allowed_kinds: [kill, latency]\nprotected_processes: [postgres]\nallowed_fill_paths: [/var/tmp/chaos]\nmax_fill_used_percent: 90\nmax_fault_duration: 5m\n",
        )
        .unwrap();
        assert_eq!(p.max_fault_duration, Some(Duration::from_secs(300)));
        assert!(p.allows("kill").is_ok());
        let e = p.allows("block").unwrap_err().to_string();
        assert!(
            e.contains("agent policy agent.yaml: fault kind block is not in allowed_kinds [kill, latency]"),
            "{e}"
        );
        assert!(AgentPolicy::default().allows("block").is_ok());
        let p = AgentPolicy::parse("agent.yaml", "max_cpu_percent: 50\nmax_memory_percent: 25\n").unwrap();
        assert_eq!((p.max_cpu_percent, p.max_memory_percent), (Some(50.0), Some(25.0)));
    }

    #[test]
    fn the_packet_kinds_are_kinds_a_policy_may_allow() {
        let p = AgentPolicy::parse("agent.yaml", "allowed_kinds: [corrupt, duplicate, reorder, dns]\n").unwrap();
        assert!(p.allows("dns").is_ok() && p.allows("reorder").is_ok());
        assert!(p.allows("latency").is_err());
    }

    #[test]
    fn mistakes_are_located() {
        for (text, want) in [
            (
                "allowed_kinds: [kill, nuke]\n",
                "1:1: allowed_kinds: unknown kind \"nuke\"",
            ),
            (
                "\nallowed_fill_paths: [tmp]\n",
                "2:1: allowed_fill_paths: tmp is not an absolute path",
            ),
            ("max_fill_used_percent: 120\n", "within (0, 100]"),
            ("max_fault_duration: forever\n", "max_fault_duration \"forever\""),
            (
                "\nmax_cpu_percent: 0\n",
                "2:1: max_cpu_percent 0: must be within (0, 100]",
            ),
            (
                "max_memory_percent: 101\n",
                "max_memory_percent 101: must be within (0, 100]",
            ),
            ("protect: [x]\n", "unknown field `protect`"),
        ] {
            let e = AgentPolicy::parse("agent.yaml", text).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should contain {want}");
        }
    }
}
