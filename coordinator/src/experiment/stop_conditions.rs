//! Stop conditions: PromQL expressions evaluated while faults are injected,
//! in the style of AWS FIS stop conditions and Krkn's alert profiles. An
//! expression is *true* when it returns at least one series, exactly like a
//! Prometheus alerting rule (`sum(rate(http_errors_total[1m])) > 5` returns
//! nothing while all is well). A `critical` condition aborts the run at once
//! and restores; an `error` condition lets the run finish and fails it.
//!
//! ```yaml
//! stop_conditions:
//!   - name: error-storm
//!     severity: critical
//!     prometheus: { url: "http://127.0.0.1:9090", query: "sum(rate(errors_total[30s])) > 5" }
//! ```
//!
//! The same list may be written in the coordinator's policy file; those
//! conditions are checked for every run.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::durations::{fmt_duration, Dur, MAX_WINDOW, MIN_INTERVAL};
use crate::probes::prometheus::{PrometheusProbe, RawPrometheus};
use crate::probes::Kind;

/// What a true condition does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Abort the run at once (outcome aborted) and restore.
    Critical,
    /// Let the run finish, then fail its verdict.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Critical => "critical",
            Severity::Error => "error",
        })
    }
}

/// How often a condition is evaluated by default.
pub const DEFAULT_STOP_INTERVAL: Duration = Duration::from_secs(1);

/// A checked stop condition.
#[derive(Debug, Clone)]
pub struct StopCondition {
    /// Names the condition in reports; by default, its query.
    pub name: String,
    pub severity: Severity,
    /// How often it is evaluated during observe. By default, 1 s.
    pub interval: Duration,
    /// Where and what to ask; only its URL, query, auth and TLS are used
    /// (bounds and `reduce` are refused: the condition is the query).
    pub query: PrometheusProbe,
}

/// Why a written stop condition is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("stop_conditions: {0}")]
    Prometheus(#[from] crate::probes::prometheus::Error),
    #[error("stop_conditions {name:?}: prometheus.{field} does not apply: a condition is true when its query returns any series; write the comparison in PromQL (e.g. `... > 5`)")]
    ProbeOnlyField { name: String, field: &'static str },
    #[error(
        "stop_conditions {name:?}: interval: must be within {}..={}",
        fmt_duration(MIN_INTERVAL),
        fmt_duration(MAX_WINDOW)
    )]
    Interval { name: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStopCondition {
    name: Option<String>,
    severity: Severity,
    interval: Option<Dur>,
    prometheus: RawPrometheus,
}

impl<'de> Deserialize<'de> for StopCondition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawStopCondition::deserialize(d)?;
        StopCondition::try_from(raw).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<RawStopCondition> for StopCondition {
    type Error = Error;

    fn try_from(raw: RawStopCondition) -> Result<Self, Error> {
        let query = PrometheusProbe::from_raw(raw.prometheus)?;
        let name = raw.name.unwrap_or_else(|| query.query.clone());
        let field = if query.reduce.is_some() {
            Some("reduce")
        } else if query.min.is_some() || query.max.is_some() {
            Some("min/max/between")
        } else if query.on_empty != Default::default() {
            Some("on_empty")
        } else if query.nan_ok {
            Some("on_nan")
        } else {
            None
        };
        if let Some(field) = field {
            return Err(Error::ProbeOnlyField { name, field });
        }
        let interval = raw.interval.map(|d| d.0).unwrap_or(DEFAULT_STOP_INTERVAL);
        if !(MIN_INTERVAL..=MAX_WINDOW).contains(&interval) {
            return Err(Error::Interval { name });
        }
        Ok(StopCondition {
            name,
            severity: raw.severity,
            interval,
            query,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_condition_is_its_query_and_refuses_probe_bounds() {
        let c: StopCondition =
            serde_norway::from_str("{severity: critical, prometheus: {url: 'http://p:9090', query: 'up == 0'}}")
                .expect("valid");
        assert_eq!(c.name, "up == 0");
        assert_eq!(c.severity, Severity::Critical);
        assert_eq!(c.interval, DEFAULT_STOP_INTERVAL);
        let e = serde_norway::from_str::<StopCondition>(
            "{name: s, severity: error, prometheus: {url: 'http://p:9090', query: up, max: 1}}",
        )
        .expect_err("bounds refused")
        .to_string();
        assert!(e.contains("prometheus.min/max/between does not apply"), "{e}");
        let e = serde_norway::from_str::<StopCondition>("{severity: fatal, prometheus: {url: 'http://p', query: up}}")
            .expect_err("unknown severity")
            .to_string();
        assert!(e.contains("critical") && e.contains("error"), "{e}");
    }
}
