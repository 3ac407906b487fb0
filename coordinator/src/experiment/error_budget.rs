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
//! The SLI is written one of two ways:
//!
//! - `prometheus.query`: the **error ratio** over the window (errors /
//!   total), as above;
//! - `good:` and `total:` (with `prometheus:` naming only the server): two
//!   expressions, each evaluated to one value for the same instant (the
//!   API's `time`), and the error ratio is `1 - good / total`. A window
//!   with no requests (`total` 0) spent nothing: its error ratio is 0.
//!
//! ```yaml
//! error_budget:
//!   objective: "99.9%"
//!   window: 30d
//!   good: sum(increase(http_requests_total{code!~"5.."}[$window]))
//!   total: sum(increase(http_requests_total[$window]))
//!   prometheus: { url: http://127.0.0.1:9090 }
//! ```
//!
//! The remaining budget is `1 - error_ratio / (1 - objective)`: 100%
//! untouched, 0% spent, negative overspent.

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
    /// What measures the SLI, with `$window` already replaced.
    pub sli: Sli,
}

/// How the error ratio is measured.
#[derive(Debug, Clone)]
pub enum Sli {
    /// One expression: the error ratio itself.
    ErrorRatio(PrometheusProbe),
    /// Two expressions on the same server; the error ratio is
    /// `1 - good / total`.
    GoodTotal {
        good: PrometheusProbe,
        /// Boxed only to keep the two variants of similar size.
        total: Box<PrometheusProbe>,
    },
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
    #[error("error_budget: write the SLI once: either prometheus.query (the error ratio) or good and total, not both")]
    TwoSlis,
    #[error("error_budget: good and total go together; write both (or prometheus.query, the error ratio, instead)")]
    GoodWithoutTotal,
    #[error("error_budget.{0}: must not be empty")]
    EmptyExpression(&'static str),
}

/// Why the remaining budget could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    #[error(transparent)]
    Query(#[from] crate::probes::prometheus::Failure),
    #[error("the query returned no value")]
    NoValue,
    /// One of the good/total expressions failed.
    #[error("{which}: {source}")]
    Part {
        which: &'static str,
        source: Box<MeasureError>,
    },
    #[error("good {good} is not within 0..=total {total}")]
    GoodOverTotal { good: f64, total: f64 },
    #[error("timeout")]
    Timeout,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawErrorBudget {
    objective: RawRate,
    window: Dur,
    min_remaining: Option<RawRate>,
    good: Option<String>,
    total: Option<String>,
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
        let win = promql_duration(window);
        let mut prometheus = raw.prometheus;
        let checked = |p: PrometheusProbe| -> Result<PrometheusProbe, Error> {
            if p.reduce.is_some() {
                return Err(Error::ProbeOnlyField("reduce"));
            }
            if p.min.is_some() || p.max.is_some() {
                return Err(Error::ProbeOnlyField("min/max/between"));
            }
            Ok(p)
        };
        let sli = match (raw.good, raw.total) {
            (None, None) => {
                let mut query = checked(PrometheusProbe::from_raw(prometheus)?)?;
                query.query = query.query.replace("$window", &win);
                Sli::ErrorRatio(query)
            }
            (Some(good), Some(total)) => {
                if prometheus.has_query() {
                    return Err(Error::TwoSlis);
                }
                for (field, e) in [("good", &good), ("total", &total)] {
                    if e.trim().is_empty() {
                        return Err(Error::EmptyExpression(field));
                    }
                }
                prometheus.set_query(good.replace("$window", &win));
                let good = checked(PrometheusProbe::from_raw(prometheus)?)?;
                let mut total_probe = good.clone();
                total_probe.query = total.replace("$window", &win);
                Sli::GoodTotal {
                    good,
                    total: Box::new(total_probe),
                }
            }
            _ => return Err(Error::GoodWithoutTotal),
        };
        Ok(ErrorBudget {
            objective,
            window,
            min_remaining,
            sli,
        })
    }
}

/// Evaluates one expression of a budget to its value, at `at` (Unix
/// seconds) when given.
async fn value_of(query: &PrometheusProbe, clients: &Clients, at: Option<f64>) -> Result<f64, MeasureError> {
    let timeout = Duration::from_secs(10);
    let judged = async { query.judge(query.query_at(clients, timeout, at).await?) };
    match tokio::time::timeout(timeout, judged).await {
        Err(_) => Err(MeasureError::Timeout),
        Ok(Err(e)) => Err(e.into()),
        Ok(Ok(Reading::Value(v))) => Ok(v),
        Ok(Ok(_)) => Err(MeasureError::NoValue),
    }
}

impl ErrorBudget {
    /// The remaining budget for an error ratio: 1 untouched, 0 spent,
    /// negative overspent.
    pub fn remaining_for(&self, error_ratio: f64) -> f64 {
        1.0 - error_ratio / (1.0 - self.objective)
    }

    /// Measures the error ratio now.
    pub async fn error_ratio(&self, clients: &Clients) -> Result<f64, MeasureError> {
        match &self.sli {
            Sli::ErrorRatio(q) => value_of(q, clients, None).await,
            Sli::GoodTotal { good, total } => {
                // Both at one instant: `increase` extrapolates to the
                // evaluation time, so two "nows" a few ms apart can put
                // good above total.
                let at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .ok();
                let part = |which| {
                    move |e| MeasureError::Part {
                        which,
                        source: Box::new(e),
                    }
                };
                let (g, t) = tokio::join!(value_of(good, clients, at), value_of(total, clients, at));
                let (g, t) = (g.map_err(part("good"))?, t.map_err(part("total"))?);
                if t == 0.0 && g == 0.0 {
                    // No requests in the window: nothing was spent.
                    return Ok(0.0);
                }
                // Above total by more than rounding: the two expressions
                // do not count the same requests.
                if !(g >= 0.0 && g <= t * (1.0 + 1e-9)) {
                    return Err(MeasureError::GoodOverTotal { good: g, total: t });
                }
                Ok((1.0 - g / t).max(0.0))
            }
        }
    }

    /// Measures the remaining budget now.
    pub async fn remaining(&self, clients: &Clients) -> Result<f64, MeasureError> {
        self.error_ratio(clients).await.map(|r| self.remaining_for(r))
    }

    /// The error ratio as one expression, for reports: the query, or
    /// `1 - (good) / (total)`.
    pub fn query_text(&self) -> String {
        match &self.sli {
            Sli::ErrorRatio(q) => q.query.clone(),
            Sli::GoodTotal { good, total } => format!("1 - ({}) / ({})", good.query, total.query),
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
        assert_eq!(b.query_text(), "errors[2592000s]");
        assert!((b.remaining_for(0.0) - 1.0).abs() < 1e-9);
        assert!((b.remaining_for(0.0025) - 0.75).abs() < 1e-9);
        assert!((b.remaining_for(0.02) + 1.0).abs() < 1e-9, "overspent is negative");
        assert_eq!(b.describe(), "objective 99% over 30d, at least 25% of the budget left");
    }

    #[test]
    fn good_and_total_are_two_expressions_on_one_server() {
        let b: ErrorBudget = serde_norway::from_str(
            "{objective: '99%', window: 1h, good: 'sum(increase(ok[$window]))', total: 'sum(increase(all[$window]))', prometheus: {url: 'http://p:9090', basic_auth: {username: u, password_env: P}}}",
        )
        .expect("valid");
        let Sli::GoodTotal { good, total } = &b.sli else {
            panic!("good/total: {:?}", b.sli)
        };
        assert_eq!(good.query, "sum(increase(ok[3600s]))");
        assert_eq!(total.query, "sum(increase(all[3600s]))");
        assert_eq!(total.url, "http://p:9090");
        assert!(total.basic_auth.is_some(), "the server's login applies to both");
        assert_eq!(
            b.query_text(),
            "1 - (sum(increase(ok[3600s]))) / (sum(increase(all[3600s])))"
        );
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
            (
                "{objective: 0.99, window: 1h, good: g, total: t, prometheus: {url: 'http://p', query: q}}",
                "either prometheus.query (the error ratio) or good and total",
            ),
            (
                "{objective: 0.99, window: 1h, good: g, prometheus: {url: 'http://p'}}",
                "good and total go together",
            ),
            (
                "{objective: 0.99, window: 1h, prometheus: {url: 'http://p'}}",
                "prometheus.query: required",
            ),
            (
                "{objective: 0.99, window: 1h, good: ' ', total: t, prometheus: {url: 'http://p'}}",
                "error_budget.good: must not be empty",
            ),
        ] {
            let e = serde_norway::from_str::<ErrorBudget>(yaml).expect_err(yaml).to_string();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }
}
