//! The error-budget gate: an SLO (objective over a window) measured in
//! Prometheus before a run starts. A run whose service has less than
//! `min_remaining` of its budget left is refused before anything is
//! injected, because the chaos-engineering rule is to spend an error budget
//! on experiments only while there is budget to spend.
//!
//! ```yaml
//! error_budget:
//!   objective: "99.9%"          # the SLO: at most 0.1% errors over the window
//!   window: 30d                 # written into the query as $window
//!   min_remaining: "25%"        # refuse below a quarter of the budget left
//!   prometheus:
//!     url: http://127.0.0.1:9090
//!     query: sum(rate(http_requests_total{code=~"5.."}[$window])) / sum(rate(http_requests_total[$window]))
//! ```
//!
//! The query is the **error ratio** over the window (errors / total); a
//! good/total SLI is written `1 - sum(good) / sum(total)`. The remaining
//! budget is `1 - error_ratio / (1 - objective)`: 100% untouched, 0% spent,
//! negative overspent.

use std::time::Duration;

use serde::Deserialize;

use super::durations::{fmt_duration, Dur};
use super::values::RawRate;
use crate::probes::prometheus::{PrometheusProbe, RawPrometheus};
use crate::probes::{Clients, Kind, Reading};

/// The longest SLO window: a quarter, the longest period SLOs are
/// usually written for.
pub const MAX_SLO_WINDOW: Duration = Duration::from_secs(90 * 24 * 3600);

/// A checked error-budget gate.
#[derive(Debug, Clone)]
pub struct ErrorBudget {
    /// The SLO objective, a fraction in (0, 1), e.g. 0.999.
    pub objective: f64,
    /// The SLO window, written into the query as `$window`.
    pub window: Duration,
    /// The least remaining budget (fraction of the whole) a run may start
    /// with. By default, 0: refuse only an exhausted budget.
    pub min_remaining: f64,
    /// The error-ratio query, with `$window` already replaced.
    pub query: PrometheusProbe,
}

/// Why a written error budget is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("error_budget.{field} {text:?}: write a fraction (0.999) or a percentage (\"99.9%\")")]
    RateText { field: &'static str, text: String },
    #[error("error_budget.objective {0}: must be within (0, 1), e.g. 0.999 or \"99.9%\"")]
    Objective(f64),
    #[error("error_budget.min_remaining {0}: must be within 0..1 (or 0%..100%)")]
    MinRemaining(f64),
    #[error("error_budget.window: must be between 1m and {}", fmt_duration(MAX_SLO_WINDOW))]
    Window,
    #[error("error_budget.prometheus: {0}")]
    Prometheus(#[from] crate::probes::prometheus::Error),
    #[error("error_budget.prometheus.{0} does not apply: the query is the error ratio, judged against min_remaining")]
    ProbeOnlyField(&'static str),
}

/// Why the remaining budget could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    #[error(transparent)]
    Query(#[from] crate::probes::prometheus::Failure),
    #[error("the query returned no value")]
    NoValue,
    #[error("timeout")]
    Timeout,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawErrorBudget {
    objective: RawRate,
    window: Dur,
    min_remaining: Option<RawRate>,
    prometheus: RawPrometheus,
}

fn rate(field: &'static str, r: RawRate) -> Result<f64, Error> {
    match r {
        RawRate::Fraction(f) => Ok(f),
        RawRate::Text(t) => RawRate::percent_text(&t)
            .map(|p| p / 100.0)
            .ok_or(Error::RateText { field, text: t }),
    }
}

/// A duration as PromQL writes it: whole seconds, or milliseconds.
pub fn promql_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl<'de> Deserialize<'de> for ErrorBudget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawErrorBudget::deserialize(d)?;
        ErrorBudget::try_from(raw).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<RawErrorBudget> for ErrorBudget {
    type Error = Error;

    fn try_from(raw: RawErrorBudget) -> Result<Self, Error> {
        let objective = rate("objective", raw.objective)?;
        if !(objective > 0.0 && objective < 1.0) {
            return Err(Error::Objective(objective));
        }
        let min_remaining = raw
            .min_remaining
            .map(|r| rate("min_remaining", r))
            .transpose()?
            .unwrap_or(0.0);
        if !(0.0..=1.0).contains(&min_remaining) {
            return Err(Error::MinRemaining(min_remaining));
        }
        let window = raw.window.0;
        if window < Duration::from_secs(60) || window > MAX_SLO_WINDOW {
            return Err(Error::Window);
        }
        let mut query = PrometheusProbe::from_raw(raw.prometheus)?;
        if query.reduce.is_some() {
            return Err(Error::ProbeOnlyField("reduce"));
        }
        if query.min.is_some() || query.max.is_some() {
            return Err(Error::ProbeOnlyField("min/max/between"));
        }
        query.query = query.query.replace("$window", &promql_duration(window));
        Ok(ErrorBudget {
            objective,
            window,
            min_remaining,
            query,
        })
    }
}

impl ErrorBudget {
    /// The remaining budget for an error ratio: 1 untouched, 0 spent,
    /// negative overspent.
    pub fn remaining_for(&self, error_ratio: f64) -> f64 {
        1.0 - error_ratio / (1.0 - self.objective)
    }

    /// Measures the remaining budget now.
    pub async fn remaining(&self, clients: &Clients) -> Result<f64, MeasureError> {
        let timeout = Duration::from_secs(10);
        match tokio::time::timeout(timeout, self.query.check(clients, timeout)).await {
            Err(_) => Err(MeasureError::Timeout),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(Reading::Value(ratio))) => Ok(self.remaining_for(ratio)),
            Ok(Ok(_)) => Err(MeasureError::NoValue),
        }
    }

    /// The gate in words, for messages.
    pub fn describe(&self) -> String {
        format!(
            "objective {}% over {}, at least {}% of the budget left",
            crate::verdict::num(self.objective * 100.0),
            fmt_duration(self.window),
            crate::verdict::num(self.min_remaining * 100.0)
        )
    }
}

/// Measures `budgets` in order; the first refusal in words: a budget below
/// its minimum, or one that cannot be measured.
pub async fn refusal(budgets: &[ErrorBudget]) -> Option<String> {
    let clients = Clients::default();
    for b in budgets {
        match b.remaining(&clients).await {
            Ok(left) if left < b.min_remaining => {
                return Some(format!(
                    "{}% of the budget remains, below the minimum of {}% ({})",
                    crate::verdict::num((left * 1000.0).round() / 10.0),
                    crate::verdict::num(b.min_remaining * 100.0),
                    b.describe()
                ))
            }
            Ok(_) => {}
            Err(e) => return Some(format!("cannot measure the remaining budget ({e})")),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remaining_budget_follows_the_error_ratio() {
        let b: ErrorBudget = serde_norway::from_str(
            "{objective: '99%', window: 30d, min_remaining: '25%', prometheus: {url: 'http://p:9090', query: 'errors[$window]'}}",
        )
        .expect("valid");
        assert_eq!(b.query.query, "errors[2592000s]");
        assert!((b.remaining_for(0.0) - 1.0).abs() < 1e-9);
        assert!((b.remaining_for(0.0025) - 0.75).abs() < 1e-9);
        assert!((b.remaining_for(0.02) + 1.0).abs() < 1e-9, "overspent is negative");
        assert_eq!(b.describe(), "objective 99% over 30d, at least 25% of the budget left");
    }

    #[test]
    fn written_mistakes_are_refused() {
        for (yaml, want) in [
            (
                "{objective: 1, window: 30d, prometheus: {url: 'http://p', query: q}}",
                "must be within (0, 1)",
            ),
            (
                "{objective: '99', window: 30d, prometheus: {url: 'http://p', query: q}}",
                "write a fraction",
            ),
            (
                "{objective: 0.99, window: 10s, prometheus: {url: 'http://p', query: q}}",
                "between 1m and",
            ),
            (
                "{objective: 0.99, window: 1h, prometheus: {url: 'http://p', query: q, max: 1}}",
                "does not apply",
            ),
        ] {
            let e = serde_norway::from_str::<ErrorBudget>(yaml).expect_err(yaml).to_string();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }
}
