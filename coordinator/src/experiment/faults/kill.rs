//! `kill`: send a signal to the processes a selector matches on each
//! target. Nothing to undo; the agent reports the pids it signalled and
//! how long until a matching process reappeared.

use faultline_proto::v1;
use serde::Deserialize;

use super::{Kind, Observed};
use crate::experiment::values::{self, compile, NumberOrText};
use crate::report::KilledProcess;

/// Parameters of a `kill` fault.
#[derive(Debug, Clone)]
pub struct KillFault {
    pub name: Option<String>,
    /// Regular expression on the command line (already checked to compile).
    pub cmdline: Option<String>,
    pub pid: Option<u32>,
    pub user: Option<String>,
    pub signal: i32,
    pub signal_name: String,
    /// How many matching processes per agent; `None` means all.
    pub count: Option<u32>,
    /// Opt-in for a selector that matches a large part of a node (the agent
    /// refuses such a kill otherwise: see the README's kill section). By
    /// default, false.
    pub allow_mass_kill: bool,
}

/// Why a written `kill` is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kill: set at least one of name, cmdline or pid (a user alone would match every process of that user)")]
    NoSelector,
    #[error(transparent)]
    Value(#[from] values::Error),
    #[error("kill.signal {written:?}: use one of {}", signal_names())]
    Signal { written: String },
    #[error("kill.count: must be at least 1, or \"all\"")]
    CountZero,
    #[error("kill.count {0:?}: write a number or \"all\"")]
    CountText(String),
}

/// A `kill` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKill {
    name: Option<String>,
    cmdline: Option<String>,
    pid: Option<u32>,
    user: Option<String>,
    signal: Option<String>,
    count: Option<RawCount>,
    #[serde(default)]
    allow_mass_kill: bool,
}

enum RawCount {
    N(u32),
    Text(String),
}

impl<'de> Deserialize<'de> for RawCount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumberOrText {
            expecting: "a number of processes (at least 1) or \"all\"",
            number: |v| (v >= 0.0 && v.fract() == 0.0 && v <= f64::from(u32::MAX)).then_some(RawCount::N(v as u32)),
            refused: (
                "kill.count",
                "write a whole number of processes (at least 1) or \"all\"",
            ),
            text: RawCount::Text,
        })
    }
}

/// Signal names accepted in `kill.signal`, with their numbers.
const SIGNALS: &[(&str, i32)] = &[
    ("SIGKILL", 9),
    ("SIGTERM", 15),
    ("SIGINT", 2),
    ("SIGHUP", 1),
    ("SIGQUIT", 3),
    ("SIGSTOP", 19),
    ("SIGCONT", 18),
    ("SIGUSR1", 10),
    ("SIGUSR2", 12),
];

fn signal_names() -> String {
    SIGNALS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

fn parse_signal(s: &str) -> Result<(i32, String), Error> {
    let up = s.trim().to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up.clone()
    } else {
        format!("SIG{up}")
    };
    if let Some((n, num)) = SIGNALS.iter().find(|(n, _)| *n == name) {
        return Ok((*num, n.to_string()));
    }
    if let Ok(num) = up.parse::<i32>() {
        if let Some((n, _)) = SIGNALS.iter().find(|(_, v)| *v == num) {
            return Ok((num, n.to_string()));
        }
    }
    Err(Error::Signal { written: s.to_string() })
}

impl Kind for KillFault {
    const NAME: &'static str = "kill";
    type Raw = RawKill;
    type Error = Error;
    type Wire = v1::KillSpec;
    type Observation = v1::KillObservation;

    fn from_raw(k: RawKill) -> Result<Self, Error> {
        if k.name.is_none() && k.cmdline.is_none() && k.pid.is_none() {
            return Err(Error::NoSelector);
        }
        if let Some(re) = &k.cmdline {
            compile("kill.cmdline", re)?;
        }
        let (signal, signal_name) = parse_signal(k.signal.as_deref().unwrap_or("SIGKILL"))?;
        let count = match k.count {
            None => Some(1),
            Some(RawCount::N(0)) => return Err(Error::CountZero),
            Some(RawCount::N(n)) => Some(n),
            Some(RawCount::Text(t)) if t == "all" => None,
            Some(RawCount::Text(t)) => return Err(Error::CountText(t)),
        };
        Ok(KillFault {
            name: k.name,
            cmdline: k.cmdline,
            pid: k.pid,
            user: k.user,
            signal,
            signal_name,
            count,
            allow_mass_kill: k.allow_mass_kill,
        })
    }

    fn summary(&self) -> String {
        let mut parts = vec![format!("signal {}", self.signal_name)];
        if let Some(n) = &self.name {
            parts.push(format!("name={n}"));
        }
        if let Some(c) = &self.cmdline {
            parts.push(format!("cmdline=~/{c}/"));
        }
        if let Some(p) = self.pid {
            parts.push(format!("pid={p}"));
        }
        if let Some(u) = &self.user {
            parts.push(format!("user={u}"));
        }
        parts.push(match self.count {
            Some(n) => format!("count={n}"),
            None => "count=all".into(),
        });
        if self.allow_mass_kill {
            parts.push("allow_mass_kill".into());
        }
        parts.join(" ")
    }

    fn to_wire(&self, _peers: &[String]) -> v1::KillSpec {
        v1::KillSpec {
            name: self.name.clone().unwrap_or_default(),
            cmdline_regex: self.cmdline.clone().unwrap_or_default(),
            pid: self.pid.unwrap_or(0),
            user: self.user.clone().unwrap_or_default(),
            signal: self.signal,
            count: self.count.unwrap_or(0),
            allow_mass_kill: self.allow_mass_kill,
        }
    }

    fn observe(k: &v1::KillObservation, _state: v1::FaultState, into: &mut Observed) {
        if !k.killed.is_empty() {
            into.killed = k
                .killed
                .iter()
                .map(|p| KilledProcess {
                    pid: p.pid,
                    name: p.name.clone(),
                    cmdline: p.cmdline.clone(),
                })
                .collect();
        }
        if let (Some(ms), Some(pid)) = (k.reappeared_after_ms, k.reappeared_pid) {
            into.reappeared = Some((ms, pid));
        }
        if !into.killed.is_empty() {
            into.set_figure("killed", into.killed.len() as f64, "processes");
        }
        let mut notes: Vec<String> = into
            .killed
            .iter()
            .map(|p| format!("killed pid {} ({}) `{}`", p.pid, p.name, p.cmdline))
            .collect();
        if let Some((ms, pid)) = into.reappeared {
            into.set_figure("reappeared after", ms as f64, "ms");
            notes.push(format!(
                "a matching process reappeared after {:.1}s (pid {pid})",
                ms as f64 / 1000.0
            ));
        } else if !into.killed.is_empty() {
            notes.push("no matching process reappeared while the fault was active".into());
        }
        into.notes = notes;
    }
}
