//! Experiment files: YAML text → [`Experiment`].
//!
//! Parsing happens in two steps. First `${var}` placeholders are replaced
//! line by line (so line numbers stay true). Then serde reads the YAML into
//! `Raw*` structs that mirror the file exactly (`deny_unknown_fields`, so a
//! typo is an error, not a silently ignored option), and `TryFrom` turns them
//! into domain types, checking what serde cannot (exactly one probe kind,
//! a regex that compiles, a percent within 0..100). Every error names
//! `file:line:column`, the field, and what is allowed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

use super::model::*;

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

/// Default probe interval. By default, 1 s.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Default probe timeout. By default, 1 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default baseline window. By default, 10 s.
pub const DEFAULT_BASELINE: Duration = Duration::from_secs(10);
/// Default recovery window. By default, 30 s.
pub const DEFAULT_RECOVERY: Duration = Duration::from_secs(30);
/// Default fault lease. By default, 10 s: short enough that a crashed
/// coordinator leaves faults behind for seconds, not minutes.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Longest `baseline`, `duration`, `recovery` and `blast_radius.max_duration`:
/// 7 days. Longer windows are not experiments any more, and bounding them
/// keeps every sum of phases far from overflowing a clock.
pub const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest `lease`: 1 h. The lease is how long a fault outlives a crashed
/// coordinator; more than an hour of unattended fault is never wanted.
pub const MAX_LEASE: Duration = Duration::from_secs(3600);
/// Shortest probe `interval`: 10 ms.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Longest probe `timeout`: 10 min.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest latency bound in a tolerance (`max`, `plus`): 1 h.
pub const MAX_LATENCY_BOUND: Duration = Duration::from_secs(3600);
/// Parses experiment `source` read from `file`, substituting `vars`.
pub fn parse(file: &str, source: &str, vars: &HashMap<String, String>) -> Result<Experiment> {
    super::limits::check_source(file, source, vars)?;
    let text = substitute(file, source, vars)?;
    super::limits::check(file, &text)?;
    let raw: RawExperiment = serde_norway::from_str(&text).map_err(|e| {
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
    raw.into_experiment(file, &text)
}

/// What serde says about the Rust types behind the file (`expected struct
/// RawProbe`, `expected u32`, `integer ... as u128`), in the file's words.
fn plain_words(message: &str) -> String {
    const WORDS: &[(&str, &str)] = &[
        (
            "expected struct RawExperiment",
            "expected a mapping with the experiment's fields (name, hypothesis, duration, faults, ...)",
        ),
        (
            "expected struct RawHypothesis",
            "expected a mapping with the hypothesis' fields (description, probes)",
        ),
        (
            "expected struct RawProbe",
            "expected a mapping with the probe's fields (name, interval, http/tcp/command, tolerances, ...)",
        ),
        (
            "expected struct RawTolerance",
            "expected a mapping with success_rate or latency",
        ),
        (
            "expected struct RawFault",
            "expected a mapping with the fault's fields (name, targets, and one of kill, latency, block, disk_fill)",
        ),
        (
            "expected struct RawBlastRadius",
            "expected a mapping of blast-radius limits",
        ),
        (
            "expected struct RawTargets",
            "expected a mapping with labels, mode, count or percent",
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
    for (from, to) in WORDS {
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

/// Replaces `${name}` with `vars[name]`; `$${` stands for a literal `${`.
fn substitute(file: &str, source: &str, vars: &HashMap<String, String>) -> Result<String> {
    let mut out = String::with_capacity(source.len());
    for (lineno, line) in source.split_inclusive('\n').enumerate() {
        let mut rest = line;
        let mut col = 1;
        while let Some(i) = rest.find("${") {
            if i > 0 && rest.as_bytes()[i - 1] == b'$' {
                out.push_str(&rest[..i - 1]);
                out.push_str("${");
                col += i + 2;
                rest = &rest[i + 2..];
                continue;
            }
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let err = |message: String| Error {
                file: file.to_string(),
                line: lineno + 1,
                column: col + i,
                message,
            };
            let Some(end) = after.find('}') else {
                return Err(err("unterminated ${ placeholder: write ${name}".into()));
            };
            let name = &after[..end];
            match vars.get(name) {
                Some(v) if v.contains('\n') => return Err(err(format!("value of variable {name} contains a newline"))),
                Some(v) => out.push_str(v),
                None => {
                    let mut known: Vec<&str> = vars.keys().map(String::as_str).collect();
                    known.sort_unstable();
                    return Err(err(format!(
                        "variable ${{{name}}} is not set{}",
                        if known.is_empty() {
                            String::new()
                        } else {
                            format!(" (set: {})", known.join(", "))
                        }
                    )));
                }
            }
            col += i + 2 + end + 1;
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// Finds the line and column of a top-level `key:` for errors about values
/// that serde already accepted.
fn locate(text: &str, key: &str) -> (usize, usize) {
    text.lines()
        .position(|l| l.starts_with(&format!("{key}:")))
        .map(|i| (i + 1, 1))
        .unwrap_or((0, 0))
}

/// A duration written as `500ms`, `10s`, `2m`.
#[derive(Debug, Clone, Copy)]
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        // Every field checks its own upper limit (MAX_WINDOW, MAX_LEASE,
        // ...) where its name and position are known.
        humantime::parse_duration(s.trim())
            .map(Dur)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?} ({e}): write e.g. 500ms, 10s or 2m")))
    }
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHypothesis {
    #[serde(default)]
    description: String,
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
            if let (Some(max), Mode::All) = (self.blast_radius.max_percent, f.targets.mode) {
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
        })
    }
}

// ----- probes -----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    name: String,
    interval: Option<Dur>,
    timeout: Option<Dur>,
    http: Option<RawHttp>,
    tcp: Option<RawTcp>,
    command: Option<RawCommand>,
    #[serde(default)]
    tolerances: Vec<ToleranceSpec>,
}

/// Default guardrail window. By default, 5 s.
pub const DEFAULT_GUARDRAIL_WINDOW: Duration = Duration::from_secs(5);

/// A tolerance as written, with its guardrail marking.
struct ToleranceSpec {
    tolerance: Tolerance,
    guardrail: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    url: String,
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    #[serde(default)]
    expect_status: Vec<u16>,
    body_match: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTcp {
    address: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    run: String,
    #[serde(default)]
    exit_code: i32,
    stdout_match: Option<String>,
}

fn compile(what: &str, re: &str) -> Result<Regex, String> {
    Regex::new(re).map_err(|e| format!("{what}: invalid regular expression {re:?}: {e}"))
}

impl<'de> Deserialize<'de> for Probe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Probe::try_from(RawProbe::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<RawProbe> for Probe {
    type Error = String;

    fn try_from(r: RawProbe) -> Result<Self, String> {
        let name = r.name;
        let ctx = |m: String| format!("probe {name:?}: {m}");
        let kinds = [r.http.is_some(), r.tcp.is_some(), r.command.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(ctx("set exactly one of http, tcp or command".into()));
        }
        let kind = if let Some(h) = r.http {
            if h.url.starts_with("https://") {
                return Err(ctx(format!(
                    "http.url {:?}: https is not supported yet; probe the service over plain http",
                    h.url
                )));
            }
            if !h.url.starts_with("http://") {
                return Err(ctx(format!("http.url {:?}: must start with http://", h.url)));
            }
            let method = h.method.unwrap_or_else(|| "GET".into()).to_ascii_uppercase();
            if !["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"].contains(&method.as_str()) {
                return Err(ctx(format!(
                    "http.method {method:?}: use one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
                )));
            }
            if let Some(bad) = h.expect_status.iter().find(|s| !(100..=599).contains(*s)) {
                return Err(ctx(format!(
                    "http.expect_status: {bad} is not an HTTP status (100-599)"
                )));
            }
            ProbeKind::Http(HttpProbe {
                method,
                url: h.url,
                headers: h.headers,
                body: h.body,
                expect_status: h.expect_status,
                body_match: h
                    .body_match
                    .map(|re| compile("http.body_match", &re))
                    .transpose()
                    .map_err(&ctx)?,
            })
        } else if let Some(t) = r.tcp {
            if !t.address.contains(':') {
                return Err(ctx(format!("tcp.address {:?}: write host:port", t.address)));
            }
            ProbeKind::Tcp(TcpProbe { address: t.address })
        } else if let Some(c) = r.command {
            if c.run.trim().is_empty() {
                return Err(ctx("command.run: must not be empty".into()));
            }
            ProbeKind::Command(CommandProbe {
                run: c.run,
                exit_code: c.exit_code,
                stdout_match: c
                    .stdout_match
                    .map(|re| compile("command.stdout_match", &re))
                    .transpose()
                    .map_err(&ctx)?,
            })
        } else {
            unreachable!("exactly one kind was checked above")
        };
        let interval = r.interval.map(|d| d.0).unwrap_or(DEFAULT_INTERVAL);
        if interval < MIN_INTERVAL {
            return Err(ctx(format!(
                "interval: must be at least {}",
                fmt_duration(MIN_INTERVAL)
            )));
        }
        if interval > MAX_WINDOW {
            return Err(ctx(format!(
                "interval: {} is longer than the limit of {}",
                fmt_duration(interval),
                fmt_duration(MAX_WINDOW)
            )));
        }
        let timeout = r
            .timeout
            .map(|d| d.0)
            .unwrap_or(DEFAULT_TIMEOUT.min(interval.max(Duration::from_millis(100))));
        if timeout.is_zero() {
            return Err(ctx("timeout: must be more than 0s".into()));
        }
        if timeout > MAX_TIMEOUT {
            return Err(ctx(format!(
                "timeout: {} is longer than the limit of {}",
                fmt_duration(timeout),
                fmt_duration(MAX_TIMEOUT)
            )));
        }
        let guardrails = r
            .tolerances
            .iter()
            .filter_map(|t| {
                t.guardrail.map(|window| Guardrail {
                    tolerance: t.tolerance.clone(),
                    window,
                })
            })
            .collect();
        Ok(Probe {
            name,
            interval,
            timeout,
            kind,
            tolerances: r.tolerances.into_iter().map(|t| t.tolerance).collect(),
            guardrails,
        })
    }
}

// ----- tolerances -----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTolerance {
    success_rate: Option<RawRate>,
    latency: Option<RawLatency>,
    guardrail: Option<bool>,
    window: Option<Dur>,
}

/// A fraction (0.95) or a percentage string ("95%").
enum RawRate {
    Fraction(f64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawRate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumberOrText {
            expecting: "a fraction (0.95) or a percentage (\"95%\")",
            number: |v| Ok(RawRate::Fraction(v)),
            text: RawRate::Text,
        })
    }
}

/// Reads a scalar that may be a number or text (`count: 3` or `count: all`),
/// so a wrong value is described in the file's words, not as a variant of
/// an internal enum.
struct NumberOrText<T> {
    expecting: &'static str,
    /// Numbers arrive as f64; integers are exact up to 2^53.
    number: fn(f64) -> Result<T, String>,
    text: fn(String) -> T,
}

impl<'de, T> serde::de::Visitor<'de> for NumberOrText<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<T, E> {
        (self.number)(v).map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_f64(v as f64)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
        self.visit_f64(v as f64)
    }

    fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<T, E> {
        Err(E::custom(format!("number too large: expected {}", self.expecting)))
    }

    fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<T, E> {
        Err(E::custom(format!("number too large: expected {}", self.expecting)))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        Ok((self.text)(v.to_string()))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLatency {
    percentile: String,
    max: Option<Dur>,
    factor: Option<f64>,
    plus: Option<Dur>,
}

impl<'de> Deserialize<'de> for ToleranceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut raw = RawTolerance::deserialize(d)?;
        let guard = raw.guardrail.take();
        let window = raw.window.take();
        let tolerance = Tolerance::try_from(raw).map_err(serde::de::Error::custom)?;
        let guardrail = match (guard, window) {
            (Some(true), w) => {
                let w = w.map(|d| d.0).unwrap_or(DEFAULT_GUARDRAIL_WINDOW);
                if w < Duration::from_millis(100) {
                    return Err(serde::de::Error::custom("tolerance window: must be at least 100ms"));
                }
                if w > MAX_WINDOW {
                    return Err(serde::de::Error::custom(format!(
                        "tolerance window: {} is longer than the limit of {}",
                        fmt_duration(w),
                        fmt_duration(MAX_WINDOW)
                    )));
                }
                Some(w)
            }
            (_, Some(_)) => {
                return Err(serde::de::Error::custom(
                    "tolerance window: only applies to a guardrail; add guardrail: true",
                ))
            }
            _ => None,
        };
        Ok(ToleranceSpec { tolerance, guardrail })
    }
}

impl TryFrom<RawTolerance> for Tolerance {
    type Error = String;

    fn try_from(r: RawTolerance) -> Result<Self, String> {
        match (r.success_rate, r.latency) {
            (Some(rate), None) => {
                let min = match rate {
                    RawRate::Fraction(f) => f,
                    RawRate::Text(t) => {
                        let Some(p) = t.trim().strip_suffix('%').and_then(|p| p.trim().parse::<f64>().ok()) else {
                            return Err(format!(
                                "tolerance success_rate {t:?}: write a fraction (0.95) or a percentage (\"95%\")"
                            ));
                        };
                        p / 100.0
                    }
                };
                if !(0.0..=1.0).contains(&min) {
                    return Err(format!(
                        "tolerance success_rate {min}: must be within 0..1 (or 0%..100%)"
                    ));
                }
                Ok(Tolerance::SuccessRate { min })
            }
            (None, Some(l)) => {
                let percentile = match l.percentile.to_ascii_lowercase().as_str() {
                    "p50" | "median" => Percentile::P50,
                    "p90" => Percentile::P90,
                    "p99" => Percentile::P99,
                    "max" => Percentile::Max,
                    other => {
                        return Err(format!(
                            "tolerance latency.percentile {other:?}: use one of p50, p90, p99, max"
                        ))
                    }
                };
                for (field, d) in [("max", l.max), ("plus", l.plus)] {
                    if let Some(d) = d.filter(|d| d.0 > MAX_LATENCY_BOUND) {
                        return Err(format!(
                            "tolerance latency.{field} {}: longer than the limit of {}",
                            fmt_duration(d.0),
                            fmt_duration(MAX_LATENCY_BOUND)
                        ));
                    }
                }
                match (l.max, l.factor, l.plus) {
                    (Some(max), None, None) => Ok(Tolerance::Latency { percentile, max: max.0 }),
                    (None, None, None) => Err(
                        "tolerance latency: set max (absolute, e.g. max: 250ms) or factor and/or plus (relative to the baseline)".into(),
                    ),
                    (None, factor, plus) => {
                        let factor = factor.unwrap_or(1.0);
                        if !(factor >= 1.0 && factor.is_finite()) {
                            return Err(format!("tolerance latency.factor {factor}: must be at least 1.0"));
                        }
                        Ok(Tolerance::RelativeLatency {
                            percentile,
                            factor,
                            plus: plus.map(|d| d.0).unwrap_or(Duration::ZERO),
                        })
                    }
                    (Some(_), _, _) => Err(
                        "tolerance latency: max is absolute and cannot be combined with factor/plus (relative); write two tolerances".into(),
                    ),
                }
            }
            _ => Err("a tolerance sets exactly one of success_rate or latency".into()),
        }
    }
}

// ----- faults -----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    name: Option<String>,
    #[serde(default)]
    targets: RawTargets,
    kill: Option<RawKill>,
    latency: Option<RawLatencyFault>,
    block: Option<RawBlock>,
    disk_fill: Option<RawDiskFill>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiskFill {
    path: String,
    size: Option<RawSize>,
    used: Option<RawRate>,
    leave_free: Option<RawSize>,
}

/// A size: a number of bytes, or text with a unit (`512MiB`, `2 GB`).
enum RawSize {
    N(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumberOrText {
            expecting: "a size: a number of bytes or a number with a unit (512MiB, 2GB)",
            number: |v| {
                if v >= 1.0 && v.fract() == 0.0 && v <= u64::MAX as f64 {
                    Ok(RawSize::N(v as u64))
                } else {
                    Err(format!(
                        "{v} is not a size: write a whole number of bytes or a unit, e.g. 512MiB"
                    ))
                }
            },
            text: RawSize::Text,
        })
    }
}

/// Parses `RawSize` into bytes.
fn parse_size(what: &str, s: &RawSize) -> Result<u64, String> {
    let t = match s {
        RawSize::N(n) => return Ok(*n),
        RawSize::Text(t) => t.trim(),
    };
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "{what} {t:?}: unknown unit; write e.g. 512MiB, 2GB or a number of bytes"
            ))
        }
    };
    match num.parse::<f64>() {
        Ok(n) if n > 0.0 && n.is_finite() => Ok((n * mult as f64) as u64),
        _ => Err(format!("{what} {t:?}: write a positive size, e.g. 512MiB")),
    }
}

fn disk_fill_fault(d: RawDiskFill) -> Result<DiskFillFault, String> {
    if !d.path.starts_with('/') {
        return Err(format!("disk_fill.path {:?}: must be an absolute path", d.path));
    }
    let amount = match (&d.size, &d.used, &d.leave_free) {
        (Some(s), None, None) => FillAmount::Bytes(parse_size("disk_fill.size", s)?),
        (None, Some(u), None) => {
            let p = match u {
                RawRate::Fraction(f) => *f,
                RawRate::Text(t) => t
                    .trim()
                    .strip_suffix('%')
                    .and_then(|p| p.trim().parse::<f64>().ok())
                    .ok_or_else(|| format!("disk_fill.used {t:?}: write a percentage, e.g. \"90%\""))?,
            };
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!("disk_fill.used {p}: must be within (0, 100] percent"));
            }
            FillAmount::UsedPercent(p)
        }
        (None, None, Some(l)) => FillAmount::LeaveFree(parse_size("disk_fill.leave_free", l)?),
        _ => {
            return Err(
                "disk_fill: set exactly one of size (e.g. 1GiB), used (e.g. \"90%\") or leave_free (e.g. 100MiB)"
                    .into(),
            )
        }
    };
    Ok(DiskFillFault { path: d.path, amount })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPeers {
    #[serde(default)]
    zones: Vec<String>,
    #[serde(default)]
    cidrs: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLatencyFault {
    delay: Option<Dur>,
    jitter: Option<Dur>,
    loss: Option<RawRate>,
    interface: Option<String>,
    #[serde(default)]
    to: RawPeers,
    #[serde(default)]
    ports: Vec<u16>,
    #[serde(default)]
    source_ports: Vec<u16>,
    protocol: Option<String>,
    backend: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlock {
    #[serde(default)]
    peers: RawPeers,
    #[serde(default)]
    ports: Vec<u16>,
    direction: Option<String>,
}

/// Checks `addr` or `addr/prefix`.
fn check_cidr(what: &str, c: &str) -> Result<(), String> {
    let (a, p) = match c.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (c, None),
    };
    let Ok(ip) = a.parse::<std::net::IpAddr>() else {
        return Err(format!("{what}: {c:?} is not an IP address or CIDR (e.g. 10.0.0.0/24)"));
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if let Some(p) = p {
        if !matches!(p.parse::<u8>(), Ok(n) if n <= max) {
            return Err(format!("{what}: {c:?} has a prefix outside 0..={max}"));
        }
    }
    Ok(())
}

fn peers(what: &str, r: RawPeers) -> Result<Peers, String> {
    for c in &r.cidrs {
        check_cidr(&format!("{what}.cidrs"), c)?;
    }
    if let Some(z) = r.zones.iter().find(|z| z.trim().is_empty()) {
        return Err(format!("{what}.zones: {z:?} is not a zone name"));
    }
    Ok(Peers {
        zones: r.zones,
        cidrs: r.cidrs,
    })
}

fn check_ports(what: &str, ports: &[u16]) -> Result<(), String> {
    if ports.contains(&0) {
        return Err(format!("{what}: 0 is not a port (1-65535)"));
    }
    if ports.len() > 15 {
        return Err(format!("{what}: at most 15 ports"));
    }
    Ok(())
}

fn latency_fault(l: RawLatencyFault) -> Result<LatencyFault, String> {
    let delay = l.delay.map(|d| d.0).unwrap_or(Duration::ZERO);
    let jitter = l.jitter.map(|d| d.0).unwrap_or(Duration::ZERO);
    let loss_percent = match l.loss {
        None => 0.0,
        Some(RawRate::Fraction(f)) => f,
        Some(RawRate::Text(t)) => match t.trim().strip_suffix('%').map(|p| p.trim().parse::<f64>()) {
            Some(Ok(p)) => p,
            _ => return Err(format!("latency.loss {t:?}: write a percentage, e.g. \"10%\" or 10")),
        },
    };
    if !(0.0..=100.0).contains(&loss_percent) {
        return Err(format!("latency.loss {loss_percent}: must be within 0..100 (percent)"));
    }
    if delay.is_zero() && loss_percent == 0.0 {
        return Err("latency: set delay (e.g. delay: 100ms) and/or loss (e.g. loss: \"10%\")".into());
    }
    if delay > Duration::from_secs(10) {
        return Err(format!("latency.delay {}: at most 10s", fmt_duration(delay)));
    }
    if jitter > delay {
        return Err(format!(
            "latency.jitter {} is larger than the delay {}",
            fmt_duration(jitter),
            fmt_duration(delay)
        ));
    }
    if let Some(i) = &l.interface {
        if i.is_empty() || i.len() > 15 || i.contains(['/', ' ', ':']) {
            return Err(format!("latency.interface {i:?} is not an interface name"));
        }
    }
    let protocol = match l.protocol.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("any") | Some("all") => None,
        Some(p @ ("tcp" | "udp" | "icmp")) => Some(p.to_string()),
        Some(p) => {
            return Err(format!(
                "latency.protocol {p:?}: use tcp, udp or icmp (or leave it out for any)"
            ))
        }
    };
    check_ports("latency.ports", &l.ports)?;
    check_ports("latency.source_ports", &l.source_ports)?;
    if protocol.as_deref() == Some("icmp") && !(l.ports.is_empty() && l.source_ports.is_empty()) {
        return Err("latency: icmp has no ports; remove ports/source_ports or use tcp/udp".into());
    }
    let backend = match l.backend.as_deref() {
        None | Some("auto") => None,
        Some(b @ ("netem" | "nfqueue")) => Some(b.to_string()),
        Some(b) => return Err(format!("latency.backend {b:?}: use netem, nfqueue or auto")),
    };
    Ok(LatencyFault {
        delay,
        jitter,
        loss_percent,
        interface: l.interface,
        to: peers("latency.to", l.to)?,
        dst_ports: l.ports,
        src_ports: l.source_ports,
        protocol,
        backend,
    })
}

fn block_fault(b: RawBlock) -> Result<BlockFault, String> {
    let peers = peers("block.peers", b.peers)?;
    if peers.is_empty() {
        return Err("block.peers: set zones (e.g. zones: [b]) and/or cidrs (e.g. cidrs: [10.0.2.0/24])".into());
    }
    check_ports("block.ports", &b.ports)?;
    let direction = match b.direction.as_deref() {
        None => "both".to_string(),
        Some(d @ ("in" | "out" | "both")) => d.to_string(),
        Some(d) => return Err(format!("block.direction {d:?}: use in, out or both")),
    };
    Ok(BlockFault {
        peers,
        ports: b.ports,
        direction,
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTargets {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    mode: Option<String>,
    count: Option<u32>,
    percent: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKill {
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
            number: |v| {
                if v >= 0.0 && v.fract() == 0.0 && v <= f64::from(u32::MAX) {
                    Ok(RawCount::N(v as u32))
                } else {
                    Err(format!(
                        "kill.count {v}: write a whole number of processes (at least 1) or \"all\""
                    ))
                }
            },
            text: RawCount::Text,
        })
    }
}

impl<'de> Deserialize<'de> for Fault {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Fault::try_from(RawFault::deserialize(d)?).map_err(serde::de::Error::custom)
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

fn parse_signal(s: &str) -> Result<(i32, String), String> {
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
    Err(format!(
        "kill.signal {s:?}: use one of {}",
        SIGNALS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
    ))
}

impl TryFrom<RawFault> for Fault {
    type Error = String;

    fn try_from(r: RawFault) -> Result<Self, String> {
        let label = r.name.clone().unwrap_or_else(|| "(unnamed)".into());
        let ctx = |m: String| format!("fault {label:?}: {m}");
        let t = r.targets;
        let mode = match (t.mode.as_deref(), t.count, t.percent) {
            (None | Some("all"), None, None) => Mode::All,
            (None | Some("count"), Some(n), None) if n > 0 => Mode::Count(n),
            (None | Some("percent"), None, Some(p)) if p > 0.0 && p <= 100.0 => Mode::Percent(p),
            (Some("one"), None, None) => Mode::Count(1),
            (_, Some(0), _) => return Err(ctx("targets.count: must be at least 1".into())),
            (_, _, Some(p)) if !(p > 0.0 && p <= 100.0) => {
                return Err(ctx(format!("targets.percent {p}: must be within (0, 100]")))
            }
            (Some(m), _, _) if !["all", "one", "count", "percent"].contains(&m) => {
                return Err(ctx(format!("targets.mode {m:?}: use one of all, one, count (with count: N), percent (with percent: P)")))
            }
            _ => {
                return Err(ctx(
                    "targets: mode all/one takes no count or percent; mode count needs count: N; mode percent needs percent: P".into(),
                ))
            }
        };
        let kinds = [
            r.kill.is_some(),
            r.latency.is_some(),
            r.block.is_some(),
            r.disk_fill.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(ctx(
                "set exactly one fault kind: kill, latency, block or disk_fill".into()
            ));
        }
        let targets = Targets { labels: t.labels, mode };
        if let Some(d) = r.disk_fill {
            return Ok(Fault {
                name: r.name.unwrap_or_default(),
                targets,
                kind: FaultKind::DiskFill(disk_fill_fault(d).map_err(&ctx)?),
            });
        }
        if let Some(l) = r.latency {
            return Ok(Fault {
                name: r.name.unwrap_or_default(),
                targets,
                kind: FaultKind::Latency(latency_fault(l).map_err(&ctx)?),
            });
        }
        if let Some(b) = r.block {
            return Ok(Fault {
                name: r.name.unwrap_or_default(),
                targets,
                kind: FaultKind::Block(block_fault(b).map_err(&ctx)?),
            });
        }
        let Some(k) = r.kill else {
            unreachable!("exactly one kind was checked above")
        };
        if k.name.is_none() && k.cmdline.is_none() && k.pid.is_none() {
            return Err(ctx(
                "kill: set at least one of name, cmdline or pid (a user alone would match every process of that user)"
                    .into(),
            ));
        }
        if let Some(re) = &k.cmdline {
            compile("kill.cmdline", re).map_err(&ctx)?;
        }
        let (signal, signal_name) = parse_signal(k.signal.as_deref().unwrap_or("SIGKILL")).map_err(&ctx)?;
        let count = match k.count {
            None => Some(1),
            Some(RawCount::N(0)) => return Err(ctx("kill.count: must be at least 1, or \"all\"".into())),
            Some(RawCount::N(n)) => Some(n),
            Some(RawCount::Text(t)) if t == "all" => None,
            Some(RawCount::Text(t)) => return Err(ctx(format!("kill.count {t:?}: write a number or \"all\""))),
        };
        Ok(Fault {
            name: r.name.unwrap_or_default(),
            targets,
            kind: FaultKind::Kill(KillFault {
                name: k.name,
                cmdline: k.cmdline,
                pid: k.pid,
                user: k.user,
                signal,
                signal_name,
                count,
                allow_mass_kill: k.allow_mass_kill,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"name: kill-demo
description: the demo survives a kill
hypothesis:
  description: it keeps answering
  probes:
    - name: web
      interval: 100ms
      http:
        url: http://127.0.0.1:${port}/health
        expect_status: [200]
      tolerances:
        - success_rate: "90%"
        - latency: { percentile: p99, max: 250ms }
        - latency: { percentile: p50, factor: 1.5, plus: 20ms }
baseline: 2s
duration: 5s
recovery: 10s
faults:
  - name: kill-web
    targets: { labels: { role: web }, mode: count, count: 1 }
    kill: { cmdline: "demo --port ${port}", signal: TERM }
"#;

    fn vars() -> HashMap<String, String> {
        HashMap::from([("port".to_string(), "8080".to_string())])
    }

    #[test]
    fn parses_a_complete_experiment() {
        let e = parse("e.yaml", GOOD, &vars()).unwrap();
        assert_eq!(e.name, "kill-demo");
        assert_eq!(e.baseline, Duration::from_secs(2));
        let p = &e.hypothesis.probes[0];
        assert_eq!(p.interval, Duration::from_millis(100));
        assert_eq!(p.tolerances[0], Tolerance::SuccessRate { min: 0.9 });
        assert!(matches!(&p.kind, ProbeKind::Http(h) if h.url == "http://127.0.0.1:8080/health"));
        let FaultKind::Kill(k) = &e.faults[0].kind else {
            panic!("expected a kill fault")
        };
        assert_eq!(k.cmdline.as_deref(), Some("demo --port 8080"));
        assert_eq!((k.signal, k.signal_name.as_str()), (15, "SIGTERM"));
        assert_eq!(e.faults[0].targets.mode, Mode::Count(1));
        assert!(!k.allow_mass_kill, "off unless written");
        let src = GOOD.replace("signal: TERM }", "signal: TERM, allow_mass_kill: true }");
        let e = parse("e.yaml", &src, &vars()).unwrap();
        let FaultKind::Kill(k) = &e.faults[0].kind else {
            panic!("expected a kill fault")
        };
        assert!(k.allow_mass_kill);
        assert!(
            e.faults[0].kind.summary().ends_with("allow_mass_kill"),
            "{}",
            e.faults[0].kind.summary()
        );
    }

    #[test]
    fn unknown_field_names_line_column_and_allowed_fields() {
        let src = GOOD.replace("      interval: 100ms", "      intervall: 100ms");
        let err = parse("e.yaml", &src, &vars()).unwrap_err();
        assert_eq!((err.line, err.column), (7, 7), "{err}");
        let msg = err.to_string();
        assert!(msg.starts_with("e.yaml:7:7: "), "{msg}");
        assert!(
            msg.contains("unknown field `intervall`") && msg.contains("`interval`"),
            "{msg}"
        );
    }

    #[test]
    fn malformed_yaml_is_located() {
        let err = parse("bad.yaml", "name: [oops\nduration: 1s\n", &vars()).unwrap_err();
        assert!(err.line >= 1 && err.column >= 1, "{err}");
        assert!(err.to_string().starts_with("bad.yaml:"), "{err}");
    }

    #[test]
    fn missing_variable_is_named_without_cli_flags() {
        // The CLI adds how to set it where the user is (--var, or a game
        // day's vars:); the parser also serves Control, which has no flags.
        let err = parse("e.yaml", GOOD, &HashMap::new()).unwrap_err();
        assert_eq!(err.line, 9);
        assert!(err.message.starts_with("variable ${port} is not set"), "{err}");
        assert!(!err.message.contains("--"), "{err}");
    }

    #[test]
    fn escaped_placeholder_stays_literal() {
        let out = substitute("f", "a: $${x} ${y}\n", &HashMap::from([("y".into(), "1".into())])).unwrap();
        assert_eq!(out, "a: ${x} 1\n");
    }

    #[test]
    fn semantic_errors_name_the_field_and_the_fix() {
        let cases = [
            (
                "        - success_rate: \"90%\"",
                "        - success_rate: 1.5",
                "within 0..1",
            ),
            ("percentile: p99, max", "percentile: p95, max", "p50, p90, p99, max"),
            ("signal: TERM", "signal: BOOM", "kill.signal"),
            ("duration: 5s", "duration: 5 parsecs", "invalid duration"),
            ("mode: count, count: 1", "mode: some", "targets.mode"),
            ("url: http://", "url: https://", "https is not supported"),
            (
                "baseline: 2s",
                "baseline: 10ms",
                "shorter than the slowest probe interval",
            ),
        ];
        for (from, to, want) in cases {
            let src = GOOD.replace(from, to);
            assert_ne!(src, GOOD, "{from}");
            let err = parse("e.yaml", &src, &vars()).unwrap_err();
            assert!(err.line > 0, "{err}");
            assert!(err.to_string().contains(want), "{want}: {err}");
        }
    }

    fn with_fault(fault: &str) -> String {
        format!(
            "name: t\nhypothesis:\n  probes:\n    - name: p\n      tcp: {{ address: \"127.0.0.1:1\" }}\nduration: 1s\nfaults:\n  - name: f\n{fault}"
        )
    }

    #[test]
    fn parses_latency_and_block_faults() {
        let src = with_fault(
            "    latency:\n      delay: 100ms\n      jitter: 5ms\n      loss: \"2.5%\"\n      to: { zones: [a], cidrs: [10.0.0.0/8] }\n      ports: [80]\n      protocol: TCP\n      backend: nfqueue\n",
        );
        let e = parse("t.yaml", &src, &vars()).unwrap();
        let FaultKind::Latency(l) = &e.faults[0].kind else {
            panic!("expected latency")
        };
        assert_eq!(
            (l.delay, l.jitter, l.loss_percent),
            (Duration::from_millis(100), Duration::from_millis(5), 2.5)
        );
        assert_eq!(l.to.zones, vec!["a"]);
        assert_eq!(l.protocol.as_deref(), Some("tcp"));
        assert_eq!(
            e.faults[0].kind.summary(),
            "delay 100ms jitter 5ms loss 2.5% to zones a + 10.0.0.0/8 tcp ports 80 backend nfqueue"
        );
        let src = GOOD.replace(
            "        - success_rate: \"90%\"\n",
            "        - success_rate: \"90%\"\n          guardrail: true\n          window: 2s\n",
        );
        let e = parse("t.yaml", &src, &vars()).unwrap();
        let p = &e.hypothesis.probes[0];
        assert_eq!(p.tolerances.len(), 3, "a guardrail is still a tolerance");
        assert_eq!(
            p.guardrails,
            vec![Guardrail {
                tolerance: Tolerance::SuccessRate { min: 0.9 },
                window: Duration::from_secs(2)
            }]
        );
        let bad = GOOD.replace(
            "        - success_rate: \"90%\"\n",
            "        - success_rate: \"90%\"\n          window: 2s\n",
        );
        let err = parse("t.yaml", &bad, &vars()).unwrap_err();
        assert!(err.to_string().contains("only applies to a guardrail"), "{err}");
        let src = with_fault("    disk_fill: { path: /var/lib/app, size: 1.5GiB }\n");
        let e = parse("t.yaml", &src, &vars()).unwrap();
        assert_eq!(e.faults[0].kind.summary(), "fill /var/lib/app with 1.5 GiB");
        let src = with_fault("    disk_fill: { path: /var/lib/app, used: \"90%\" }\n");
        let e = parse("t.yaml", &src, &vars()).unwrap();
        assert!(matches!(&e.faults[0].kind, FaultKind::DiskFill(d) if d.amount == FillAmount::UsedPercent(90.0)));
        let src = with_fault("    block:\n      peers: { zones: [a, c] }\n      direction: in\n");
        let e = parse("t.yaml", &src, &vars()).unwrap();
        assert_eq!(e.faults[0].kind.summary(), "drop in traffic with zones a,c");
    }

    #[test]
    fn network_fault_mistakes_name_the_field_and_the_fix() {
        for (fault, want) in [
            ("    latency: { jitter: 0ms }\n", "set delay"),
            (
                "    latency: { delay: 10ms, jitter: 20ms }\n",
                "jitter 20ms is larger than the delay",
            ),
            ("    latency: { delay: 10ms, loss: \"150%\" }\n", "within 0..100"),
            (
                "    latency: { delay: 10ms, to: { cidrs: [10.0.0.0/40] } }\n",
                "prefix outside",
            ),
            (
                "    latency: { delay: 10ms, to: { cidrs: [zone-a] } }\n",
                "not an IP address",
            ),
            ("    latency: { delay: 10ms, protocol: sctp }\n", "use tcp, udp or icmp"),
            (
                "    latency: { delay: 10ms, backend: ebpf }\n",
                "use netem, nfqueue or auto",
            ),
            (
                "    latency: { delay: 10ms, protocol: icmp, ports: [80] }\n",
                "icmp has no ports",
            ),
            (
                "    latency: { delay: 10ms, to: { hosts: [a] } }\n",
                "unknown field `hosts`",
            ),
            ("    block: { ports: [80] }\n", "block.peers: set zones"),
            (
                "    block: { peers: { zones: [a] }, direction: sideways }\n",
                "use in, out or both",
            ),
            (
                "    block: { peers: { zones: [a] } }\n    kill: { name: x }\n",
                "exactly one fault kind",
            ),
        ] {
            let err = parse("t.yaml", &with_fault(fault), &vars()).unwrap_err();
            assert!(err.line > 0, "{err} should have a position");
            assert!(err.to_string().contains(want), "{err} should contain {want}");
        }
    }

    #[test]
    fn overflowing_durations_are_refused_with_field_position_and_limit() {
        const HUGE: &str = "18446744073709551615s";
        for (from, to, line, want) in [
            (
                "duration: 5s",
                format!("duration: {HUGE}"),
                16,
                "duration: 213503982334601d 7h 15s is longer than the limit of 7d",
            ),
            (
                "baseline: 2s",
                format!("baseline: {HUGE}"),
                15,
                "baseline: 213503982334601d 7h 15s is longer than the limit of 7d",
            ),
            (
                "recovery: 10s",
                format!("recovery: {HUGE}"),
                17,
                "recovery: 213503982334601d 7h 15s is longer than the limit of 7d",
            ),
            (
                "      interval: 100ms",
                format!("      interval: {HUGE}"),
                6,
                "probe \"web\": interval: 213503982334601d 7h 15s is longer than the limit of 7d",
            ),
            (
                "recovery: 10s",
                format!("recovery: 10s\nlease: {HUGE}"),
                18,
                "lease: 213503982334601d 7h 15s is longer than the limit of 1h",
            ),
            (
                "recovery: 10s",
                format!("recovery: 10s\nblast_radius: {{ max_duration: {HUGE} }}"),
                18,
                "blast_radius.max_duration: 213503982334601d 7h 15s is longer than the limit of 7d",
            ),
        ] {
            let src = GOOD.replace(from, &to);
            let err = parse("e.yaml", &src, &vars()).unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with(&format!("e.yaml:{line}:")), "{to}: {msg}");
            assert!(msg.contains(want), "{to}: {msg}");
        }
        // Under the limits, but still too long for the field.
        for (from, to, want) in [
            (
                "duration: 5s",
                "duration: 8d",
                "duration: 8d is longer than the limit of 7d",
            ),
            (
                "baseline: 2s",
                "baseline: 200h",
                "baseline: 8d 8h is longer than the limit of 7d",
            ),
            (
                "recovery: 10s",
                "recovery: 30d",
                "recovery: 30d is longer than the limit of 7d",
            ),
            (
                "recovery: 10s",
                "recovery: 10s\nlease: 2h",
                "lease: 2h is longer than the limit of 1h",
            ),
            (
                "duration: 5s",
                "duration: 50ms",
                "duration: 50ms is shorter than the interval of probe \"web\" (100ms)",
            ),
            (
                "      interval: 100ms",
                "      interval: 100ms\n      timeout: 1h",
                "timeout: 1h is longer than the limit of 10m",
            ),
            ("max: 250ms", "max: 2h", "latency.max 2h: longer than the limit of 1h"),
        ] {
            let src = GOOD.replace(from, to);
            assert_ne!(src, GOOD, "{from}");
            let err = parse("e.yaml", &src, &vars()).unwrap_err();
            assert!(err.line > 0, "{err}");
            assert!(err.to_string().contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn experiment_local_limits_are_checked_without_a_fleet() {
        let src = GOOD.replace("duration: 5s", "duration: 99999h\nblast_radius: { max_duration: 5m }");
        assert!(parse("e.yaml", &src, &vars()).is_err());
        let src = GOOD.replace("duration: 5s", "duration: 10m\nblast_radius: { max_duration: 5m }");
        let err = parse("e.yaml", &src, &vars()).unwrap_err();
        assert_eq!(err.line, 16, "{err}");
        assert!(
            err.message
                .contains("duration: 10m is longer than blast_radius.max_duration 5m"),
            "{err}"
        );
        let src = GOOD.replace("recovery: 10s", "recovery: 10s\nblast_radius: { max_targets: 2 }");
        assert!(parse("e.yaml", &src, &vars()).is_ok());
        let src = src.replace("count: 1 }", "count: 3 }");
        let err = parse("e.yaml", &src, &vars()).unwrap_err();
        assert!(
            err.message
                .contains("fault \"kill-web\": targets.count 3 exceeds blast_radius.max_targets 2"),
            "{err}"
        );
        let src = GOOD
            .replace("mode: count, count: 1", "mode: all")
            .replace("recovery: 10s", "recovery: 10s\nblast_radius: { max_percent: 50 }");
        let err = parse("e.yaml", &src, &vars()).unwrap_err();
        assert!(err.message.contains("over blast_radius.max_percent 50%"), "{err}");
    }

    #[test]
    fn wrong_types_are_explained_without_rust_or_serde_names() {
        let kill = |count: &str| GOOD.replace("signal: TERM }", &format!("signal: TERM, count: {count} }}"));
        let cases: Vec<(String, &str)> = vec![
            (kill("[1]"), "expected a number of processes (at least 1) or \"all\""),
            (kill("-1"), "write a whole number of processes"),
            (kill("1.5"), "write a whole number of processes"),
            (kill("99999999999999999999999"), "number too large"),
            ("- a\n".into(), "expected a mapping with the experiment's fields"),
            ("42\n".into(), "expected a mapping with the experiment's fields"),
            (
                GOOD.replace("recovery: 10s", "recovery: 10s\nblast_radius: { max_targets: -1 }"),
                "expected a whole number from 0 to 4294967295",
            ),
            (
                GOOD.replace("recovery: 10s", "recovery: 10s\nblast_radius: { max_percent: abc }"),
                "expected a number",
            ),
            (
                GOOD.replace("success_rate: \"90%\"", "success_rate: [1]"),
                "expected a fraction (0.95) or a percentage",
            ),
            (
                GOOD.replace("    - name: web\n", "    - 3\n    - name: web\n"),
                "expected a mapping with the probe's fields",
            ),
            (
                with_fault("    disk_fill: { path: /x, size: [1] }\n"),
                "expected a size",
            ),
            (
                with_fault("    latency: { delay: 1ms, ports: [70000] }\n"),
                "expected a whole number from 0 to 65535",
            ),
            (with_fault("    kill: { pid: 1.5 }\n"), "expected a whole number"),
        ];
        for (src, want) in cases {
            let err = parse("e.yaml", &src, &vars()).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(want), "{want}: {msg}");
            for leak in [
                "Raw", "untagged", "enum", "struct", "u128", "u32", "u16", "u64", "i32", "f64",
            ] {
                assert!(!msg.contains(leak), "{leak} leaked: {msg}");
            }
        }
    }

    #[test]
    fn durations_print_in_human_units() {
        let d = |s: u64| fmt_duration(Duration::from_secs(s));
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(d(59), "59s");
        assert_eq!(d(300), "5m");
        assert_eq!(d(5400), "1h 30m");
        assert_eq!(d(3 * 86_400 + 3_600 + 1), "3d 1h 1s");
        assert_eq!(d(359_996_400), "4166d 15h");
    }
}
