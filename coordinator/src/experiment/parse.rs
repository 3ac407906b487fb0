//! Experiment files: YAML text → [`Experiment`].
//!
//! Parsing happens in two steps. First `${var}` placeholders are replaced
//! line by line (see [`super::vars`]; line numbers stay true). Then serde
//! reads the YAML into `Raw*` structs that mirror the file exactly
//! (`deny_unknown_fields`, so a typo is an error, not a silently ignored
//! option), and `TryFrom` turns them into domain types, checking what serde
//! cannot (exactly one probe kind, a regex that compiles, a percent within
//! 0..100). The `Raw*` struct of a fault or probe kind lives in the kind's
//! module; its refusals surface through serde, so they carry the position
//! of the fault or probe. Every error names `file:line:column`, the field,
//! and what is allowed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::durations::{
    fmt_duration, Dur, DEFAULT_BASELINE, DEFAULT_INTERVAL, DEFAULT_LEASE, DEFAULT_RECOVERY, MAX_LEASE, MAX_WINDOW,
};
use super::model::*;
use super::selectors::{Member, Source};
use super::stop_conditions::StopCondition;
use super::vars::substitute;

/// A problem with an experiment file, located in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    pub file: String,
    /// 1-based; 0 when the problem is not tied to a position.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
        }
    }
}

/// Result of parsing.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Parses experiment `source` read from `file`, substituting `vars`.
///
/// Groups that select agents are read with a stand-in agent; the result
/// keeps the text in [`Experiment::unresolved`] for
/// [`crate::group_agents::resolve`] to read again once the agents are known.
pub fn parse(file: &str, source: &str, vars: &HashMap<String, String>) -> Result<Experiment> {
    super::limits::check_source(file, source, vars)?;
    let text = substitute(file, source, vars)?;
    super::limits::check(file, &text)?;
    let exp = parse_text(file, &text, None)?;
    if exp.groups.iter().any(|g| g.selects()) {
        return Ok(Experiment {
            unresolved: Some(std::sync::Arc::new(Source {
                file: file.to_string(),
                text,
            })),
            ..exp
        });
    }
    Ok(exp)
}

/// Reads `source` again with the agents of each group that selects agents
/// (`members`, by group name): each per-group probe once per agent.
pub fn parse_resolved(source: &Source, members: &BTreeMap<String, Vec<Member>>) -> Result<Experiment> {
    parse_text(&source.file, &source.text, Some(members))
}

/// Parses `text` (variables already substituted).
fn parse_text(file: &str, text: &str, members: Option<&BTreeMap<String, Vec<Member>>>) -> Result<Experiment> {
    let groups = super::groups::read(file, text)?;
    if groups.is_empty() {
        let text = super::groups::substitute(file, text, None, None, &[])?;
        let (raw, judge) = read_raw(file, &text)?;
        let exp = raw.into_experiment(file, &text)?;
        super::selectors::check_fault_groups(file, &text, &exp)?;
        return with_judge(file, &text, exp, judge);
    }
    let which = super::selectors::readings(&groups, members);
    let mut readings = Vec::with_capacity(which.len());
    let mut judge = None;
    for r in which {
        let g = &groups[r.group];
        // An error on a line that reads differently per group names the group.
        let in_group = |mut e: Error| {
            let line = e.line.checked_sub(1).and_then(|i| text.lines().nth(i)).unwrap_or("");
            if line.contains("${group.") {
                e.message = match &r.member {
                    Some(m) => format!(
                        "{} (reading the file for group {:?}, agent {:?})",
                        e.message, g.name, m.agent
                    ),
                    None => format!("{} (reading the file for group {:?})", e.message, g.name),
                };
            }
            e
        };
        let member = super::selectors::substituted(&groups, &r);
        let t = super::groups::substitute(file, text, Some(g), member.as_ref(), &groups)?;
        super::limits::check(file, &t)?;
        let (raw, j) = read_raw(file, &t).map_err(in_group)?;
        judge = judge.or(j);
        let exp = raw.into_experiment(file, &t).map_err(in_group)?;
        readings.push((r, exp));
    }
    let exp = super::groups::combine(file, text, groups, readings)?;
    super::selectors::check_fault_groups(file, text, &exp)?;
    with_judge(file, text, exp, judge)
}

/// Checks the `judge:` section against the experiment's groups and probes.
fn with_judge(
    file: &str,
    text: &str,
    mut exp: Experiment,
    judge: Option<super::judge::RawJudge>,
) -> Result<Experiment> {
    if let Some(j) = judge {
        exp.judge = Some(j.into_spec(&exp, |key, message| {
            let (line, column) = locate_under(text, "judge", key);
            Error {
                file: file.to_string(),
                line,
                column,
                message,
            }
        })?);
    }
    if let Some(p) = exp.hypothesis.probes.iter().find(|p| p.per_group && p.group.is_none()) {
        let (line, column) = locate(text, "hypothesis");
        return Err(Error {
            file: file.to_string(),
            line,
            column,
            message: format!(
                "probe {:?}: per_group: true needs groups; define them under hypothesis.groups (e.g. control and canary)",
                p.name
            ),
        });
    }
    Ok(exp)
}

/// Reads the YAML into the raw experiment; the judge is taken out, to be
/// checked once the groups are combined.
fn read_raw(file: &str, text: &str) -> Result<(RawExperiment, Option<super::judge::RawJudge>)> {
    let mut raw: RawExperiment = serde_norway::from_str(text).map_err(|e| {
        let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
        let mut message = e.to_string();
        // serde_norway appends " at line L column C"; we put it in front.
        if let Some(i) = message.rfind(" at line ") {
            message.truncate(i);
        }
        Error {
            file: file.to_string(),
            line,
            column,
            message: plain_words(&message),
        }
    })?;
    let judge = raw.judge.take();
    Ok((raw, judge))
}

/// What serde says about the Rust types behind the file (`expected struct
/// RawProbe`, `expected u32`, `integer ... as u128`), in the file's words.
fn plain_words(message: &str) -> String {
    let probe = format!(
        "expected a mapping with the probe's fields (name, interval, {}, tolerances, ...)",
        crate::probes::NAMES.join("/")
    );
    let fault = format!(
        "expected a mapping with the fault's fields (name, targets, and one of {})",
        super::faults::NAMES.join(", ")
    );
    let words: &[(&str, &str)] = &[
        (
            "expected struct RawExperiment",
            "expected a mapping with the experiment's fields (name, hypothesis, duration, faults, ...)",
        ),
        (
            "expected struct RawHypothesis",
            "expected a mapping with the hypothesis' fields (description, groups, probes)",
        ),
        (
            "expected struct RawJudge",
            "expected a mapping with the judge's fields (control, canary, alpha, pass, marginal, phases, metrics)",
        ),
        ("expected struct RawProbe", &probe),
        (
            "expected struct RawTolerance",
            "expected a mapping with success_rate, latency or value",
        ),
        ("expected struct RawFault", &fault),
        (
            "expected struct RawPrometheus",
            "expected a mapping with the prometheus query's fields (url, query, ...)",
        ),
        (
            "expected struct RawValue",
            "expected a mapping with min/max or factor/plus",
        ),
        (
            "expected struct RawErrorBudget",
            "expected a mapping with the error budget's fields (objective, window, min_remaining, prometheus)",
        ),
        (
            "expected struct RawStopCondition",
            "expected a mapping with the stop condition's fields (name, severity, interval, prometheus)",
        ),
        (
            "expected struct RawBlastRadius",
            "expected a mapping of blast-radius limits",
        ),
        (
            "expected struct RawTargets",
            "expected a mapping with labels, groups, mode, count, percent or containers",
        ),
        ("expected u32", "expected a whole number from 0 to 4294967295"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
        (" as u128", " (too large)"),
        (" as i128", " (too large)"),
    ];
    let mut out = message.to_string();
    for (from, to) in words {
        out = out.replace(from, to);
    }
    // Any other of our internal structs: a mapping is what the file lacks.
    while let Some(i) = out.find("expected struct Raw") {
        let end = out[i + "expected struct ".len()..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .map_or(out.len(), |j| i + "expected struct ".len() + j);
        out.replace_range(i..end, "expected a mapping of fields");
    }
    if let Some(i) = out.find("data did not match any variant of untagged enum") {
        out.replace_range(i.., "unexpected value");
    }
    out
}

/// Finds the line and column of the first line after the top-level
/// `section:` that mentions `needle` (e.g. `probe: api`, `alpha`); the
/// section's own line if none does.
fn locate_under(text: &str, section: &str, needle: &str) -> (usize, usize) {
    let (start, col) = locate(text, section);
    if start == 0 {
        return (0, 0);
    }
    for (i, l) in text.lines().enumerate().skip(start) {
        if !l.is_empty() && !l.starts_with([' ', '\t', '#', '-']) {
            break;
        }
        if let Some(c) = l.find(needle) {
            return (i + 1, c + 1);
        }
    }
    (start, col)
}

/// Finds the line and column of a top-level `key:` for errors about values
/// that serde already accepted.
pub(super) fn locate(text: &str, key: &str) -> (usize, usize) {
    text.lines()
        .position(|l| l.starts_with(&format!("{key}:")))
        .map(|i| (i + 1, 1))
        .unwrap_or((0, 0))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExperiment {
    name: String,
    #[serde(default)]
    description: String,
    hypothesis: RawHypothesis,
    baseline: Option<Dur>,
    duration: Dur,
    recovery: Option<Dur>,
    faults: Vec<Fault>,
    #[serde(default)]
    blast_radius: RawBlastRadius,
    lease: Option<Dur>,
    #[serde(default)]
    stop_conditions: Vec<StopCondition>,
    error_budget: Option<super::error_budget::ErrorBudget>,
    judge: Option<super::judge::RawJudge>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHypothesis {
    #[serde(default)]
    description: String,
    /// Read by [`super::groups::read`] before this parse; here only accepted.
    #[serde(default)]
    #[allow(dead_code)]
    groups: Option<super::groups::RawGroups>,
    probes: Vec<Probe>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBlastRadius {
    max_targets: Option<u32>,
    max_percent: Option<f64>,
    max_percent_per_zone: Option<f64>,
    max_duration: Option<Dur>,
}

impl RawExperiment {
    fn into_experiment(self, file: &str, text: &str) -> Result<Experiment> {
        let at = |key: &str, message: String| {
            let (line, column) = locate(text, key);
            Error {
                file: file.to_string(),
                line,
                column,
                message,
            }
        };
        if self.name.trim().is_empty() {
            return Err(at("name", "name: must not be empty".into()));
        }
        if self.hypothesis.probes.is_empty() {
            return Err(at(
                "hypothesis",
                "hypothesis.probes: at least one probe is needed, otherwise there is nothing to compare against the baseline".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for p in &self.hypothesis.probes {
            if !names.insert(p.name.clone()) {
                return Err(at(
                    "hypothesis",
                    format!(
                        "hypothesis.probes: probe name {:?} is used twice; names must be unique",
                        p.name
                    ),
                ));
            }
        }
        if self.faults.is_empty() {
            return Err(at("faults", "faults: at least one fault is needed".into()));
        }
        let baseline = self.baseline.map(|d| d.0).unwrap_or(DEFAULT_BASELINE);
        let duration = self.duration.0;
        let recovery = self.recovery.map(|d| d.0).unwrap_or(DEFAULT_RECOVERY);
        let max_duration = self.blast_radius.max_duration.map(|d| d.0);
        for (key, field, value) in [
            ("baseline", "baseline", Some(baseline)),
            ("duration", "duration", Some(duration)),
            ("recovery", "recovery", Some(recovery)),
            ("blast_radius", "blast_radius.max_duration", max_duration),
        ] {
            if let Some(v) = value.filter(|v| *v > MAX_WINDOW) {
                return Err(at(
                    key,
                    format!(
                        "{field}: {} is longer than the limit of {}",
                        fmt_duration(v),
                        fmt_duration(MAX_WINDOW)
                    ),
                ));
            }
        }
        let slowest = self
            .hypothesis
            .probes
            .iter()
            .map(|p| p.interval)
            .max()
            .unwrap_or(DEFAULT_INTERVAL);
        if baseline < slowest {
            return Err(at(
                "baseline",
                format!(
                    "baseline: {} is shorter than the slowest probe interval ({}); the baseline needs at least one sample of every probe",
                    fmt_duration(baseline),
                    fmt_duration(slowest)
                ),
            ));
        }
        if duration.is_zero() {
            return Err(at("duration", "duration: must be more than 0s".into()));
        }
        if let Some(p) = self.hypothesis.probes.iter().find(|p| p.interval > duration) {
            return Err(at(
                "duration",
                format!(
                    "duration: {} is shorter than the interval of probe {:?} ({}); the fault needs at least one sample of every probe",
                    fmt_duration(duration),
                    p.name,
                    fmt_duration(p.interval)
                ),
            ));
        }
        // Limits the experiment sets itself that need no fleet to check, so
        // `validate` refuses what `plan` and `run` would refuse.
        if let Some(max) = max_duration.filter(|max| duration > *max) {
            return Err(at(
                "duration",
                format!(
                    "duration: {} is longer than blast_radius.max_duration {}",
                    fmt_duration(duration),
                    fmt_duration(max)
                ),
            ));
        }
        for f in &self.faults {
            let name = if f.name.is_empty() {
                f.kind.name()
            } else {
                f.name.as_str()
            };
            if let (Some(max), Mode::Count(n)) = (self.blast_radius.max_targets, f.targets.mode) {
                if n > max {
                    return Err(at(
                        "faults",
                        format!("fault {name:?}: targets.count {n} exceeds blast_radius.max_targets {max}"),
                    ));
                }
            }
            // On containers, the percentage counts containers (or pods): all
            // nodes may be planned; `count`/`percent` of the selector decide,
            // checked against the agents' dry runs before inject.
            let every_container = f
                .targets
                .containers
                .as_ref()
                .map(|c| c.count == 0 && c.percent.is_none());
            if let (Some(max), Mode::All, None | Some(true)) =
                (self.blast_radius.max_percent, f.targets.mode, every_container)
            {
                if max < 100.0 {
                    return Err(at(
                        "faults",
                        format!(
                            "fault {name:?}: targets mode all selects 100% of the matching agents, over blast_radius.max_percent {max}%; use mode count or percent"
                        ),
                    ));
                }
            }
        }
        if let Some(p) = self.blast_radius.max_percent {
            if !(p > 0.0 && p <= 100.0) {
                return Err(at(
                    "blast_radius",
                    format!("blast_radius.max_percent: {p} is not within (0, 100]"),
                ));
            }
        }
        if let Some(p) = self.blast_radius.max_percent_per_zone {
            if !(p > 0.0 && p <= 100.0) {
                return Err(at(
                    "blast_radius",
                    format!("blast_radius.max_percent_per_zone: {p} is not within (0, 100]"),
                ));
            }
        }
        if self.blast_radius.max_targets == Some(0) {
            return Err(at(
                "blast_radius",
                "blast_radius.max_targets: 0 would refuse every run; use at least 1".into(),
            ));
        }
        let lease = self.lease.map(|d| d.0).unwrap_or(DEFAULT_LEASE);
        if lease < Duration::from_secs(1) {
            return Err(at("lease", "lease: must be at least 1s so renewals can keep up".into()));
        }
        if lease > MAX_LEASE {
            return Err(at(
                "lease",
                format!(
                    "lease: {} is longer than the limit of {} (how long a fault may outlive a crashed coordinator)",
                    fmt_duration(lease),
                    fmt_duration(MAX_LEASE)
                ),
            ));
        }
        let mut faults = self.faults;
        for (i, f) in faults.iter_mut().enumerate() {
            if f.name.is_empty() {
                f.name = format!("{}-{}", f.kind.name(), i + 1);
            }
        }
        Ok(Experiment {
            name: self.name,
            description: self.description,
            hypothesis: Hypothesis {
                description: self.hypothesis.description,
                probes: self.hypothesis.probes,
            },
            baseline,
            duration,
            recovery,
            faults,
            blast_radius: BlastRadius {
                max_targets: self.blast_radius.max_targets,
                max_percent: self.blast_radius.max_percent,
                max_percent_per_zone: self.blast_radius.max_percent_per_zone,
                max_duration,
            },
            lease,
            stop_conditions: self.stop_conditions,
            error_budget: self.error_budget,
            groups: Vec::new(),
            judge: None,
            unresolved: None,
        })
    }
}

#[cfg(test)]
mod tests;
