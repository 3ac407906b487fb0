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
            message,
        }
    })?;
    raw.into_experiment(file, &text)
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
        if self.duration.0.is_zero() {
            return Err(at("duration", "duration: must be more than 0s".into()));
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
            duration: self.duration.0,
            recovery: self.recovery.map(|d| d.0).unwrap_or(DEFAULT_RECOVERY),
            faults,
            blast_radius: BlastRadius {
                max_targets: self.blast_radius.max_targets,
                max_percent: self.blast_radius.max_percent,
                max_percent_per_zone: self.blast_radius.max_percent_per_zone,
                max_duration: self.blast_radius.max_duration.map(|d| d.0),
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
        if interval < Duration::from_millis(10) {
            return Err(ctx("interval: must be at least 10ms".into()));
        }
        let timeout = r
            .timeout
            .map(|d| d.0)
            .unwrap_or(DEFAULT_TIMEOUT.min(interval.max(Duration::from_millis(100))));
        if timeout.is_zero() {
            return Err(ctx("timeout: must be more than 0s".into()));
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
#[derive(Deserialize)]
#[serde(untagged)]
enum RawRate {
    Fraction(f64),
    Text(String),
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
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSize {
    N(u64),
    Text(String),
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
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCount {
    N(u32),
    Text(String),
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
}
