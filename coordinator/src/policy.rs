//! The coordinator's policy file: fleet-wide limits every experiment runs
//! within, whatever it says about itself. The planner intersects it with the
//! experiment's own `blast_radius`; a violation refuses the run before
//! anything is injected.
//!
//! ```yaml
//! max_fleet_percent: 25            # of all connected agents, per fault
//! protected_labels: [tier=db]      # agents carrying any are never targeted
//! allowed_windows: ["Mon-Fri 09:00-17:00"]
//! timezone: "+01:00"               # of the windows; UTC by default
//! max_concurrent_runs: 2
//! max_duration: 10m                # longest observe phase
//! stop_conditions:                 # checked for every run (see experiment::stop_conditions)
//!   - { severity: critical, prometheus: { url: "http://127.0.0.1:9090", query: "up{job=\"api\"} == 0" } }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use time::{OffsetDateTime, UtcOffset, Weekday};

/// A policy problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A mistake in the file, located.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Days and hours when runs may start, in the policy's time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Days the window applies to (Monday = 0).
    pub days: [bool; 7],
    /// Minutes since midnight; `start < end`.
    pub start: u16,
    pub end: u16,
    /// As written, for messages.
    pub text: String,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day(s: &str) -> Option<usize> {
    let s = s.trim().to_ascii_lowercase();
    DAYS.iter().position(|d| s.starts_with(d) && s.len() >= 3)
}

fn hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m) = (h.parse::<u16>().ok()?, m.parse::<u16>().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}

/// Why a window's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// Not `DAYS HH:MM-HH:MM`.
    #[error("window {0:?}: write DAYS HH:MM-HH:MM, e.g. \"Mon-Fri 09:00-17:00\" or \"Sat,Sun 10:00-12:00\"")]
    Syntax(String),
    /// The end is not after the start.
    #[error("window {0:?}: the end must be after the start (windows do not wrap past midnight; write two)")]
    Wraps(String),
}

impl std::str::FromStr for Window {
    type Err = WindowError;

    /// `"Mon-Fri 09:00-17:00"`, `"Sat,Sun 10:00-12:00"`, or `"09:00-17:00"` (every day).
    fn from_str(text: &str) -> std::result::Result<Self, WindowError> {
        let bad = || WindowError::Syntax(text.to_string());
        let (days_part, hours) = match text.trim().rsplit_once(' ') {
            Some((d, h)) => (Some(d), h),
            None => (None, text.trim()),
        };
        let mut days = [days_part.is_none(); 7];
        if let Some(d) = days_part {
            for part in d.split(',') {
                match part.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (day(a).ok_or_else(bad)?, day(b).ok_or_else(bad)?);
                        let mut i = a;
                        loop {
                            days[i] = true;
                            if i == b {
                                break;
                            }
                            i = (i + 1) % 7;
                        }
                    }
                    None => days[day(part).ok_or_else(bad)?] = true,
                }
            }
        }
        let (s, e) = hours.split_once('-').ok_or_else(bad)?;
        let (start, end) = (hhmm(s).ok_or_else(bad)?, hhmm(e).ok_or_else(bad)?);
        if start >= end {
            return Err(WindowError::Wraps(text.to_string()));
        }
        Ok(Window {
            days,
            start,
            end,
            text: text.trim().to_string(),
        })
    }
}

impl Window {
    /// Whether `at` (already in the policy's zone) falls inside.
    pub fn contains(&self, at: OffsetDateTime) -> bool {
        let d = match at.weekday() {
            Weekday::Monday => 0,
            Weekday::Tuesday => 1,
            Weekday::Wednesday => 2,
            Weekday::Thursday => 3,
            Weekday::Friday => 4,
            Weekday::Saturday => 5,
            Weekday::Sunday => 6,
        };
        let m = at.hour() as u16 * 60 + at.minute() as u16;
        self.days[d] && m >= self.start && m < self.end
    }
}

/// Fleet-wide limits. Everything is optional; the default limits nothing.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The file it came from, for messages.
    pub source: String,
    /// Most agents one fault may target, as a percentage of every
    /// connected agent.
    pub max_fleet_percent: Option<f64>,
    /// Agents with any of these labels are never targeted.
    pub protected_labels: Vec<(String, String)>,
    /// Runs may only start inside one of these (empty: any time).
    pub allowed_windows: Vec<Window>,
    pub timezone: Option<UtcOffset>,
    /// Most runs in flight at once, this one included.
    pub max_concurrent_runs: Option<u32>,
    /// Longest `duration` (observe phase) an experiment may ask for.
    pub max_duration: Option<Duration>,
    /// Stop conditions checked for every run, after the experiment's own
    /// (see [`crate::experiment::stop_conditions`]). By default, none.
    pub stop_conditions: Vec<crate::experiment::stop_conditions::StopCondition>,
    /// An error-budget gate checked before every run, after the
    /// experiment's own (see [`crate::experiment::error_budget`]). By
    /// default, none.
    pub error_budget: Option<crate::experiment::error_budget::ErrorBudget>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    max_fleet_percent: Option<f64>,
    #[serde(default)]
    protected_labels: Vec<String>,
    #[serde(default)]
    allowed_windows: Vec<String>,
    timezone: Option<String>,
    max_concurrent_runs: Option<u32>,
    max_duration: Option<String>,
    #[serde(default)]
    stop_conditions: Vec<crate::experiment::stop_conditions::StopCondition>,
    error_budget: Option<crate::experiment::error_budget::ErrorBudget>,
}

fn locate(text: &str, key: &str) -> (usize, usize) {
    text.lines()
        .position(|l| l.starts_with(&format!("{key}:")))
        .map(|i| (i + 1, 1))
        .unwrap_or((1, 1))
}

impl Policy {
    /// Parses policy YAML read from `file`.
    pub fn parse(file: &str, text: &str) -> Result<Policy> {
        crate::experiment::limits::check(file, text).map_err(|e| Error::Invalid {
            file: e.file,
            line: e.line,
            column: e.column,
            message: e.message,
        })?;
        let raw: RawPolicy = serde_norway::from_str(text).map_err(|e| {
            let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
            let mut message = e.to_string();
            if let Some(i) = message.rfind(" at line ") {
                message.truncate(i);
            }
            Error::Invalid {
                file: file.into(),
                line,
                column,
                message,
            }
        })?;
        let at = |key: &str, message: String| {
            let (line, column) = locate(text, key);
            Error::Invalid {
                file: file.into(),
                line,
                column,
                message,
            }
        };
        if let Some(p) = raw.max_fleet_percent {
            if !(p > 0.0 && p <= 100.0) {
                return Err(at(
                    "max_fleet_percent",
                    format!("max_fleet_percent {p}: must be within (0, 100]"),
                ));
            }
        }
        let mut protected_labels = Vec::new();
        for l in &raw.protected_labels {
            match l.split_once('=') {
                Some((k, v)) if !k.is_empty() => protected_labels.push((k.to_string(), v.to_string())),
                _ => {
                    return Err(at(
                        "protected_labels",
                        format!("protected_labels: {l:?} is not KEY=VALUE (e.g. tier=db)"),
                    ))
                }
            }
        }
        let allowed_windows = raw
            .allowed_windows
            .iter()
            .map(|w| w.parse::<Window>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| at("allowed_windows", format!("allowed_windows: {m}")))?;
        let timezone = match raw.timezone.as_deref() {
            None | Some("UTC") | Some("utc") | Some("Z") => None,
            Some(tz) => Some(parse_offset(tz).ok_or_else(|| {
                at(
                    "timezone",
                    format!(
                        "timezone {tz:?}: write UTC or a fixed offset such as +01:00 (named zones are not supported)"
                    ),
                )
            })?),
        };
        if raw.max_concurrent_runs == Some(0) {
            return Err(at(
                "max_concurrent_runs",
                "max_concurrent_runs: 0 would refuse every run".into(),
            ));
        }
        let max_duration = match raw.max_duration {
            None => None,
            Some(d) => Some(
                humantime::parse_duration(d.trim())
                    .map_err(|e| at("max_duration", format!("max_duration {d:?}: {e}; write e.g. 10m")))?,
            ),
        };
        Ok(Policy {
            source: file.into(),
            max_fleet_percent: raw.max_fleet_percent,
            protected_labels,
            allowed_windows,
            timezone,
            max_concurrent_runs: raw.max_concurrent_runs,
            max_duration,
            stop_conditions: raw.stop_conditions,
            error_budget: raw.error_budget,
        })
    }

    /// Reads and parses a policy file.
    pub fn load(path: &str) -> Result<Policy> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_string(),
            source,
        })?;
        Policy::parse(path, &text)
    }

    /// The protected label an agent carries, if any.
    pub fn protected_label(&self, labels: &BTreeMap<String, String>) -> Option<String> {
        self.protected_labels
            .iter()
            .find(|(k, v)| labels.get(k) == Some(v))
            .map(|(k, v)| format!("{k}={v}"))
    }

    /// `now` in the policy's zone.
    pub fn local(&self, now: OffsetDateTime) -> OffsetDateTime {
        now.to_offset(self.timezone.unwrap_or(UtcOffset::UTC))
    }
}

fn parse_offset(tz: &str) -> Option<UtcOffset> {
    let (sign, rest) = match tz.as_bytes().first()? {
        b'+' => (1i8, &tz[1..]),
        b'-' => (-1i8, &tz[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    let (h, m) = (h.parse::<i8>().ok()?, m.parse::<i8>().ok()?);
    UtcOffset::from_hms(sign * h, sign * m, 0).ok()
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn parses_a_full_policy() {
        let p = Policy::parse(
            "p.yaml",
            "max_fleet_percent: 25\nprotected_labels: [tier=db]\nallowed_windows: [\"Mon-Fri 09:00-17:00\"]\ntimezone: \"+01:00\"\nmax_concurrent_runs: 2\nmax_duration: 10m\n",
        )
        .unwrap();
        assert_eq!(p.max_fleet_percent, Some(25.0));
        assert_eq!(p.protected_labels, vec![("tier".to_string(), "db".to_string())]);
        assert_eq!(p.max_duration, Some(Duration::from_secs(600)));
        // Tuesday 08:30 UTC is 09:30 at +01:00: inside.
        let w = &p.allowed_windows[0];
        assert!(w.contains(p.local(datetime!(2026-11-24 08:30 UTC))));
        assert!(!w.contains(p.local(datetime!(2026-11-24 07:30 UTC))));
        // Saturday: outside.
        assert!(!w.contains(p.local(datetime!(2026-11-28 10:00 UTC))));
    }

    #[test]
    fn windows_accept_lists_and_wrapping_day_ranges() {
        let w: Window = "Sat,Sun 10:00-12:00".parse().unwrap();
        assert_eq!(w.days, [false, false, false, false, false, true, true]);
        let w: Window = "Fri-Mon 00:00-24:00".parse().unwrap();
        assert_eq!(w.days, [true, false, false, false, true, true, true]);
        assert_eq!(
            "Mon-Fri 17:00-09:00".parse::<Window>(),
            Err(WindowError::Wraps("Mon-Fri 17:00-09:00".into()))
        );
        assert!("someday 10:00-11:00".parse::<Window>().is_err());
    }

    #[test]
    fn mistakes_are_located_and_explained() {
        for (text, want) in [
            ("max_fleet_percent: 0\n", "1:1: max_fleet_percent 0"),
            ("protected_labels: [db]\n", "not KEY=VALUE"),
            ("timezone: Europe/Paris\n", "named zones are not supported"),
            ("max_concurent_runs: 2\n", "unknown field `max_concurent_runs`"),
            ("\nmax_concurrent_runs: 0\n", "2:1: max_concurrent_runs: 0"),
            ("allowed_windows: [\"9-5\"]\n", "allowed_windows: window"),
        ] {
            let e = Policy::parse("p.yaml", text).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should contain {want}");
            assert!(e.starts_with("p.yaml:"), "{e}");
        }
    }
}
