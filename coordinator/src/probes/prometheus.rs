//! `prometheus` probe: a PromQL expression evaluated at each interval
//! through the Prometheus HTTP API (`GET /api/v1/query`; Thanos, Mimir and
//! VictoriaMetrics answer the same API). The result becomes one value (a
//! scalar, a single-sample vector, or several series reduced as `reduce`
//! says); the sample fails when the value is outside `min`/`max`/`between`,
//! when the query fails, and, by default, when the result is empty or NaN.
//!
//! Secrets are read from files or environment variables at each check, so
//! a rotated token is picked up, and they never reach a report: the probe's
//! target is its URL and query only.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::http::describe;
use super::tls::{self, RawTls, Tls};
use super::{Clients, Kind, Reading};

/// How several series become one value, or are judged one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reduce {
    Max,
    Min,
    Sum,
    Avg,
    /// Every series must hold the bounds; a failure names the series.
    Each,
}

/// What an empty result (no series) means for the sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnEmpty {
    /// A failed sample: the metric the probe watches has vanished.
    #[default]
    Fail,
    /// A successful sample without a value (e.g. "no errors" written as
    /// an alert-style expression that returns nothing when all is well).
    Pass,
    /// No sample at all: the check is not counted.
    Skip,
}

/// Where a secret comes from; never written inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    File(PathBuf),
    Env(String),
}

#[derive(Debug, Clone)]
pub struct PrometheusProbe {
    /// The API's base URL, e.g. `http://127.0.0.1:9090`.
    pub url: String,
    pub query: String,
    /// Needed when the query may return several series.
    pub reduce: Option<Reduce>,
    pub on_empty: OnEmpty,
    /// Whether a NaN value passes. By default, false: a NaN is 0/0, usually
    /// a rate over no traffic, and says nothing about the steady state.
    pub nan_ok: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub bearer_token: Option<Secret>,
    pub basic_auth: Option<(String, Secret)>,
    pub tls: Option<Tls>,
}

/// Why a written `prometheus` probe is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("prometheus.url {0:?}: must start with http:// or https://")]
    Scheme(String),
    #[error("prometheus.query: required; write a PromQL expression")]
    EmptyQuery,
    #[error("prometheus: between cannot be combined with min or max; write one of them")]
    BetweenAndBounds,
    #[error("prometheus.between [{0}, {1}]: the first bound must not exceed the second")]
    BetweenOrder(f64, f64),
    #[error("prometheus.{field} {value}: must be a finite number")]
    NotFinite { field: &'static str, value: f64 },
    #[error("prometheus.{field}: set exactly one of {field}_file or {field}_env")]
    SecretSource { field: &'static str },
    #[error("prometheus.basic_auth: set exactly one of password_file or password_env")]
    PasswordSource,
    #[error("prometheus: bearer_token_* and basic_auth are two ways to log in; keep one")]
    TwoAuths,
    #[error("prometheus.url {0:?}: ca, cert, key and insecure_skip_verify apply to https:// URLs only")]
    TlsOnPlainHttp(String),
    #[error(transparent)]
    Tls(#[from] tls::Error),
}

/// Why one evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The request did not get an answer, in the `http` probe's words.
    #[error(transparent)]
    Request(#[from] super::http::Failure),
    #[error(transparent)]
    Client(#[from] tls::ClientError),
    #[error("cannot read the {what}: {reason}")]
    Secret { what: &'static str, reason: String },
    #[error("HTTP {status}{}", .detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status { status: u16, detail: Option<String> },
    /// Prometheus answered `status: error` (a bad expression, a timeout).
    #[error("query error ({kind}): {message}")]
    Query { kind: String, message: String },
    #[error("answer is not Prometheus API JSON: {0}")]
    Decode(String),
    #[error("query returns a {0}; write an instant vector or scalar expression")]
    ResultType(String),
    #[error("value {0:?} is not a number")]
    Number(String),
    #[error("empty result")]
    Empty,
    #[error("{series} series; set reduce: max|min|sum|avg|each")]
    NoReduce { series: usize },
    #[error("value is NaN{}", series_suffix(.series))]
    NaN { series: Option<String> },
    #[error("value {} {bound}{}", crate::verdict::num(*.value), series_suffix(.series))]
    OutOfBounds {
        value: f64,
        bound: String,
        series: Option<String>,
    },
}

fn series_suffix(series: &Option<String>) -> String {
    series.as_deref().map(|s| format!(" for {s}")).unwrap_or_default()
}

impl Failure {
    /// The value the failed sample measured, if it measured one.
    pub fn value(&self) -> Option<f64> {
        match self {
            Failure::OutOfBounds {
                value, series: None, ..
            } => Some(*value),
            _ => None,
        }
    }
}

/// A `prometheus` probe as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrometheus {
    url: String,
    /// Required; left out only where the expression is written elsewhere
    /// (an error budget's `good`/`total`), so its absence is our message,
    /// not serde's.
    #[serde(default)]
    query: String,
    reduce: Option<Reduce>,
    #[serde(default)]
    on_empty: OnEmpty,
    #[serde(default)]
    on_nan: Option<NanRule>,
    min: Option<f64>,
    max: Option<f64>,
    between: Option<(f64, f64)>,
    bearer_token_file: Option<PathBuf>,
    bearer_token_env: Option<String>,
    basic_auth: Option<RawBasicAuth>,
    #[serde(flatten)]
    tls: RawTls,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum NanRule {
    Pass,
    Fail,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasicAuth {
    username: String,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
}

impl RawPrometheus {
    /// Whether `query` was written (and is not blank).
    pub fn has_query(&self) -> bool {
        !self.query.trim().is_empty()
    }

    /// Sets the expression, for a caller that writes it elsewhere.
    pub fn set_query(&mut self, query: String) {
        self.query = query;
    }
}

impl Kind for PrometheusProbe {
    const NAME: &'static str = "prometheus";
    type Raw = RawPrometheus;
    type Error = Error;
    type Failure = Failure;

    fn from_raw(r: RawPrometheus) -> Result<Self, Error> {
        let https = r.url.starts_with("https://");
        if !https && !r.url.starts_with("http://") {
            return Err(Error::Scheme(r.url));
        }
        if r.query.trim().is_empty() {
            return Err(Error::EmptyQuery);
        }
        for (field, v) in [("min", r.min), ("max", r.max)] {
            if let Some(value) = v.filter(|v| !v.is_finite()) {
                return Err(Error::NotFinite { field, value });
            }
        }
        let (min, max) = match (r.between, r.min, r.max) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => return Err(Error::BetweenAndBounds),
            (Some((lo, hi)), None, None) => {
                for value in [lo, hi] {
                    if !value.is_finite() {
                        return Err(Error::NotFinite {
                            field: "between",
                            value,
                        });
                    }
                }
                if lo > hi {
                    return Err(Error::BetweenOrder(lo, hi));
                }
                (Some(lo), Some(hi))
            }
            (None, min, max) => (min, max),
        };
        let bearer_token = match (r.bearer_token_file, r.bearer_token_env) {
            (Some(f), None) => Some(Secret::File(f)),
            (None, Some(e)) => Some(Secret::Env(e)),
            (None, None) => None,
            _ => return Err(Error::SecretSource { field: "bearer_token" }),
        };
        let basic_auth = match r.basic_auth {
            None => None,
            Some(b) => match (b.password_file, b.password_env) {
                (Some(f), None) => Some((b.username, Secret::File(f))),
                (None, Some(e)) => Some((b.username, Secret::Env(e))),
                _ => return Err(Error::PasswordSource),
            },
        };
        if bearer_token.is_some() && basic_auth.is_some() {
            return Err(Error::TwoAuths);
        }
        let tls_written =
            r.tls.ca.is_some() || r.tls.cert.is_some() || r.tls.key.is_some() || r.tls.insecure_skip_verify;
        if !https && tls_written {
            return Err(Error::TlsOnPlainHttp(r.url));
        }
        Ok(PrometheusProbe {
            url: r.url.trim_end_matches('/').to_string(),
            query: r.query,
            reduce: r.reduce,
            on_empty: r.on_empty,
            nan_ok: matches!(r.on_nan, Some(NanRule::Pass)),
            min,
            max,
            bearer_token,
            basic_auth,
            tls: https.then(|| Tls::from_raw("prometheus", r.tls)).transpose()?,
        })
    }

    fn target(&self) -> String {
        format!("{} {}", self.url, self.query)
    }

    async fn check(&self, clients: &Clients, timeout: Duration) -> Result<Reading, Failure> {
        let series = self.query(clients, timeout).await?;
        self.judge(series)
    }

    fn failure_value(failure: &Failure) -> Option<f64> {
        failure.value()
    }
}

impl PrometheusProbe {
    /// Asks the API and returns every series (a scalar is one unnamed
    /// series), evaluated now.
    pub async fn query(&self, clients: &Clients, timeout: Duration) -> Result<Vec<Series>, Failure> {
        self.query_at(clients, timeout, None).await
    }

    /// [`Self::query`] evaluated at `at` (Unix seconds; the API's `time`):
    /// two expressions asked for the same instant see the same samples.
    pub async fn query_at(
        &self,
        clients: &Clients,
        timeout: Duration,
        at: Option<f64>,
    ) -> Result<Vec<Series>, Failure> {
        let client = match &self.tls {
            Some(tls) => tls.client()?,
            None => clients.http.clone(),
        };
        // Prometheus bounds its own evaluation with `timeout`; asking for
        // a little less than ours lets its error, not our timeout, explain
        // a slow query.
        let server_timeout = format!("{}ms", (timeout.as_millis() * 9 / 10).max(1));
        let mut req = client
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", self.query.as_str()), ("timeout", server_timeout.as_str())])
            .timeout(timeout);
        if let Some(at) = at {
            req = req.query(&[("time", format!("{at:.3}"))]);
        }
        if let Some(token) = &self.bearer_token {
            req = req.bearer_auth(read_secret(token, "bearer token")?);
        }
        if let Some((user, password)) = &self.basic_auth {
            req = req.basic_auth(user, Some(read_secret(password, "basic_auth password")?));
        }
        let resp = req.send().await.map_err(describe)?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(describe)?;
        let answer: Answer = match serde_json::from_str(&body) {
            Ok(a) => a,
            Err(_) if status != 200 => {
                let detail = body.lines().next().map(|l| l.chars().take(200).collect());
                return Err(Failure::Status { status, detail });
            }
            Err(e) => return Err(Failure::Decode(e.to_string())),
        };
        if answer.status != "success" {
            return Err(Failure::Query {
                kind: answer.error_type.unwrap_or_else(|| "unknown".into()),
                message: answer.error.unwrap_or_default(),
            });
        }
        let data = answer.data.ok_or_else(|| Failure::Decode("no data".into()))?;
        match data.result_type.as_str() {
            "scalar" => {
                let (_, v): (serde_json::Value, String) =
                    serde_json::from_value(data.result).map_err(|e| Failure::Decode(e.to_string()))?;
                Ok(vec![Series {
                    labels: String::new(),
                    value: number(&v)?,
                }])
            }
            "vector" => {
                let samples: Vec<VectorSample> =
                    serde_json::from_value(data.result).map_err(|e| Failure::Decode(e.to_string()))?;
                samples
                    .into_iter()
                    .map(|s| {
                        Ok(Series {
                            labels: labels(&s.metric),
                            value: number(&s.value.1)?,
                        })
                    })
                    .collect()
            }
            other => Err(Failure::ResultType(other.to_string())),
        }
    }

    /// Turns the series into the sample's outcome.
    pub fn judge(&self, series: Vec<Series>) -> Result<Reading, Failure> {
        if series.is_empty() {
            return match self.on_empty {
                OnEmpty::Fail => Err(Failure::Empty),
                OnEmpty::Pass => Ok(Reading::Done),
                OnEmpty::Skip => Ok(Reading::Skipped),
            };
        }
        let value = match (series.len(), self.reduce) {
            (1, None) => series[0].value,
            (n, None) => return Err(Failure::NoReduce { series: n }),
            (_, Some(Reduce::Each)) => {
                for s in &series {
                    self.bounds(s.value, Some(&s.labels))?;
                }
                return Ok(Reading::Done);
            }
            (n, Some(r)) => {
                let values = series.iter().map(|s| s.value);
                match r {
                    Reduce::Max => values.fold(f64::NEG_INFINITY, f64::max),
                    Reduce::Min => values.fold(f64::INFINITY, f64::min),
                    Reduce::Sum => values.sum(),
                    Reduce::Avg => values.sum::<f64>() / n as f64,
                    Reduce::Each => unreachable!("handled above"),
                }
            }
        };
        self.bounds(value, None)?;
        Ok(if value.is_nan() {
            Reading::Done
        } else {
            Reading::Value(value)
        })
    }

    /// Checks one value against NaN and the bounds; `series` names it in
    /// the failure when several are judged one by one.
    fn bounds(&self, value: f64, series: Option<&str>) -> Result<(), Failure> {
        let series = series.map(|s| if s.is_empty() { "{}".to_string() } else { s.to_string() });
        if value.is_nan() {
            return if self.nan_ok {
                Ok(())
            } else {
                Err(Failure::NaN { series })
            };
        }
        // +Inf and -Inf compare as numbers: +Inf is above any max.
        if let Some(min) = self.min.filter(|m| value < *m) {
            return Err(Failure::OutOfBounds {
                value,
                bound: format!("below min {min}"),
                series,
            });
        }
        if let Some(max) = self.max.filter(|m| value > *m) {
            return Err(Failure::OutOfBounds {
                value,
                bound: format!("above max {max}"),
                series,
            });
        }
        Ok(())
    }
}

/// One series of a result: its labels as PromQL writes them, and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: String,
    pub value: f64,
}

fn read_secret(secret: &Secret, what: &'static str) -> Result<String, Failure> {
    let raw = match secret {
        Secret::File(path) => std::fs::read_to_string(path).map_err(|e| Failure::Secret {
            what,
            reason: format!("{}: {e}", path.display()),
        })?,
        Secret::Env(var) => std::env::var(var).map_err(|_| Failure::Secret {
            what,
            reason: format!("environment variable {var} is not set"),
        })?,
    };
    Ok(raw.trim().to_string())
}

/// Prometheus writes values as strings: `"0.25"`, `"NaN"`, `"+Inf"`, `"-Inf"`.
fn number(s: &str) -> Result<f64, Failure> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s.parse().map_err(|_| Failure::Number(s.to_string())),
    }
}

/// `{job="api",code="500"}`, sorted by label name; `{}` for none.
fn labels(metric: &std::collections::BTreeMap<String, String>) -> String {
    let inner: Vec<String> = metric.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(","))
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    data: Option<Data>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorSample {
    #[serde(default)]
    metric: std::collections::BTreeMap<String, String>,
    value: (serde_json::Value, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(yaml: &str) -> PrometheusProbe {
        let raw: RawPrometheus = serde_norway::from_str(yaml).expect("yaml");
        PrometheusProbe::from_raw(raw).expect("valid probe")
    }

    fn refusal(yaml: &str) -> String {
        let raw: RawPrometheus = serde_norway::from_str(yaml).expect("yaml");
        PrometheusProbe::from_raw(raw).expect_err("refused").to_string()
    }

    fn s(labels: &str, value: f64) -> Series {
        Series {
            labels: labels.into(),
            value,
        }
    }

    #[test]
    fn several_series_need_an_explicit_reduce() {
        let p = probe("{url: 'http://p:9090', query: up}");
        let err = p.judge(vec![s("{a=\"1\"}", 1.0), s("{a=\"2\"}", 3.0)]).unwrap_err();
        assert_eq!(err.to_string(), "2 series; set reduce: max|min|sum|avg|each");
        for (reduce, want) in [("max", 3.0), ("min", 1.0), ("sum", 4.0), ("avg", 2.0)] {
            let p = probe(&format!("{{url: 'http://p:9090', query: up, reduce: {reduce}}}"));
            let got = p.judge(vec![s("{a=\"1\"}", 1.0), s("{a=\"2\"}", 3.0)]).unwrap();
            assert_eq!(got, Reading::Value(want), "{reduce}");
        }
    }

    #[test]
    fn reduce_each_names_the_series_out_of_bounds() {
        let p = probe("{url: 'http://p:9090', query: up, reduce: each, max: 2}");
        let err = p.judge(vec![s("{a=\"1\"}", 1.0), s("{a=\"2\"}", 3.0)]).unwrap_err();
        assert_eq!(err.to_string(), "value 3 above max 2 for {a=\"2\"}");
    }

    #[test]
    fn empty_result_fails_unless_on_empty_says_otherwise() {
        let p = probe("{url: 'http://p:9090', query: up}");
        assert_eq!(p.judge(vec![]).unwrap_err().to_string(), "empty result");
        let p = probe("{url: 'http://p:9090', query: up, on_empty: pass}");
        assert_eq!(p.judge(vec![]).unwrap(), Reading::Done);
        let p = probe("{url: 'http://p:9090', query: up, on_empty: skip}");
        assert_eq!(p.judge(vec![]).unwrap(), Reading::Skipped);
    }

    #[test]
    fn nan_fails_unless_on_nan_pass_and_inf_compares_as_a_number() {
        let p = probe("{url: 'http://p:9090', query: up}");
        assert_eq!(p.judge(vec![s("", f64::NAN)]).unwrap_err().to_string(), "value is NaN");
        let p = probe("{url: 'http://p:9090', query: up, on_nan: pass}");
        assert_eq!(p.judge(vec![s("", f64::NAN)]).unwrap(), Reading::Done);
        let p = probe("{url: 'http://p:9090', query: up, max: 1}");
        assert_eq!(
            p.judge(vec![s("", f64::INFINITY)]).unwrap_err().to_string(),
            "value inf above max 1"
        );
        assert_eq!(number("+Inf").unwrap(), f64::INFINITY);
        assert_eq!(number("-Inf").unwrap(), f64::NEG_INFINITY);
        assert!(number("NaN").unwrap().is_nan());
    }

    #[test]
    fn between_sets_both_bounds() {
        let p = probe("{url: 'http://p:9090', query: up, between: [0.5, 1]}");
        assert_eq!(p.judge(vec![s("", 0.75)]).unwrap(), Reading::Value(0.75));
        assert_eq!(
            p.judge(vec![s("", 0.25)]).unwrap_err().to_string(),
            "value 0.25 below min 0.5"
        );
    }

    #[test]
    fn written_mistakes_are_refused_in_the_files_words() {
        let cases = [
            ("{url: 'p:9090', query: up}", "must start with http:// or https://"),
            ("{url: 'http://p', query: ' '}", "prometheus.query: required"),
            ("{url: 'http://p'}", "prometheus.query: required"),
            (
                "{url: 'http://p', query: up, between: [2, 1]}",
                "first bound must not exceed",
            ),
            (
                "{url: 'http://p', query: up, between: [0, 1], max: 2}",
                "between cannot be combined",
            ),
            (
                "{url: 'http://p', query: up, bearer_token_file: t, bearer_token_env: T}",
                "exactly one of bearer_token_file or bearer_token_env",
            ),
            (
                "{url: 'http://p', query: up, bearer_token_env: T, basic_auth: {username: u, password_env: P}}",
                "keep one",
            ),
            (
                "{url: 'http://p', query: up, basic_auth: {username: u}}",
                "password_file or password_env",
            ),
            ("{url: 'http://p', query: up, ca: ca.pem}", "https:// URLs only"),
        ];
        for (yaml, want) in cases {
            let got = refusal(yaml);
            assert!(got.contains(want), "{yaml}: {got}");
        }
    }

    #[test]
    fn the_target_never_shows_a_secret() {
        let p = probe("{url: 'http://p:9090/', query: up, bearer_token_env: PROM_TOKEN}");
        assert_eq!(p.target(), "http://p:9090 up");
    }
}
