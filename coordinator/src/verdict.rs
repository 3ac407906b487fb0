//! Evaluating tolerances against measured statistics.

use serde::{Deserialize, Serialize};

use crate::experiment::{fmt_duration, Tolerance};
use crate::stats::{PhaseStats, Sample};

/// The verdict on one tolerance in one phase.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Check {
    pub passed: bool,
    /// The measured value, e.g. "87.5%" or "123.4ms".
    pub measured: String,
    /// The limit it was held to, e.g. ">= 95.0%" or "<= 250ms".
    pub allowed: String,
}

fn ms(v: f64) -> String {
    format!("{:.1}ms", v)
}

/// The latency limit of a tolerance in ms, if it bounds latency.
pub fn latency_limit_ms(t: &Tolerance, baseline: &PhaseStats) -> Option<f64> {
    match t {
        Tolerance::SuccessRate { .. } | Tolerance::Value { .. } | Tolerance::RelativeValue { .. } => None,
        Tolerance::Latency { max, .. } => Some(max.as_secs_f64() * 1000.0),
        Tolerance::RelativeLatency {
            percentile,
            factor,
            plus,
        } => baseline
            .percentile(*percentile)
            .map(|b| b * factor + plus.as_secs_f64() * 1000.0),
    }
}

/// Checks `t` against `stats`; relative tolerances use `baseline`.
pub fn check(t: &Tolerance, stats: &PhaseStats, baseline: &PhaseStats) -> Check {
    match t {
        Tolerance::SuccessRate { min } => Check {
            passed: stats.samples > 0 && stats.success_rate + 1e-9 >= *min,
            measured: if stats.samples == 0 {
                "no samples".into()
            } else {
                format!(
                    "{:.1}% ({}/{})",
                    stats.success_rate * 100.0,
                    stats.successes,
                    stats.samples
                )
            },
            allowed: format!(">= {:.1}%", min * 100.0),
        },
        Tolerance::Latency { percentile, max } => {
            let limit = max.as_secs_f64() * 1000.0;
            match stats.percentile(*percentile) {
                Some(v) => Check {
                    passed: v <= limit,
                    measured: format!("{percentile} {}", ms(v)),
                    allowed: format!("<= {}", fmt_duration(*max)),
                },
                None => Check {
                    passed: false,
                    measured: "no successful sample".into(),
                    allowed: format!("<= {}", fmt_duration(*max)),
                },
            }
        }
        Tolerance::RelativeLatency {
            percentile,
            factor,
            plus,
        } => {
            let Some(limit) = latency_limit_ms(t, baseline) else {
                return Check {
                    passed: false,
                    measured: "no baseline latency".into(),
                    allowed: format!("<= {factor} x baseline + {}", fmt_duration(*plus)),
                };
            };
            match stats.percentile(*percentile) {
                Some(v) => Check {
                    passed: v <= limit,
                    measured: format!("{percentile} {}", ms(v)),
                    allowed: format!("<= {} ({factor} x baseline + {})", ms(limit), fmt_duration(*plus)),
                },
                None => Check {
                    passed: false,
                    measured: "no successful sample".into(),
                    allowed: format!("<= {}", ms(limit)),
                },
            }
        }
        Tolerance::Value { min, max } => {
            let allowed = match (min, max) {
                (Some(lo), Some(hi)) => format!("within {lo}..={hi}"),
                (Some(lo), None) => format!(">= {lo}"),
                (None, Some(hi)) => format!("<= {hi}"),
                (None, None) => "any".into(),
            };
            match stats.value_mean {
                Some(v) => Check {
                    passed: min.is_none_or(|lo| v >= lo) && max.is_none_or(|hi| v <= hi),
                    measured: format!("mean {}", num(v)),
                    allowed,
                },
                None => Check {
                    passed: false,
                    measured: "no value".into(),
                    allowed,
                },
            }
        }
        Tolerance::RelativeValue { factor, plus } => {
            let Some(base) = baseline.value_mean else {
                return Check {
                    passed: false,
                    measured: "no baseline value".into(),
                    allowed: format!("<= {factor} x baseline + {plus}"),
                };
            };
            let limit = base * factor + plus;
            let allowed = format!("<= {} ({factor} x baseline {} + {plus})", num(limit), num(base));
            match stats.value_mean {
                Some(v) => Check {
                    passed: v <= limit,
                    measured: format!("mean {}", num(v)),
                    allowed,
                },
                None => Check {
                    passed: false,
                    measured: "no value".into(),
                    allowed,
                },
            }
        }
    }
}

/// A metric value in reports: up to 6 significant decimals, no trailing
/// zeros.
pub fn num(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// Whether one sample, on its own, is within every latency limit and succeeded.
/// Used to find when a probe recovered.
pub fn healthy(sample: &Sample, tolerances: &[Tolerance], baseline: &PhaseStats) -> bool {
    sample.ok
        && tolerances
            .iter()
            .filter_map(|t| latency_limit_ms(t, baseline))
            .all(|limit| sample.latency_ms <= limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::Percentile;
    use std::time::Duration;

    fn stats(rate: f64, p99: f64) -> PhaseStats {
        PhaseStats {
            samples: 10,
            successes: (rate * 10.0) as u32,
            success_rate: rate,
            p50_ms: Some(p99 / 2.0),
            p90_ms: Some(p99),
            p99_ms: Some(p99),
            max_ms: Some(p99),
            ..Default::default()
        }
    }

    #[test]
    fn relative_latency_uses_the_baseline() {
        let t = Tolerance::RelativeLatency {
            percentile: Percentile::P99,
            factor: 1.5,
            plus: Duration::from_millis(20),
        };
        let base = stats(1.0, 100.0);
        assert!(check(&t, &stats(1.0, 170.0), &base).passed);
        let c = check(&t, &stats(1.0, 171.0), &base);
        assert!(!c.passed);
        assert!(c.allowed.starts_with("<= 170.0ms"), "{}", c.allowed);
    }

    #[test]
    fn success_rate_without_samples_fails() {
        let t = Tolerance::SuccessRate { min: 0.0 };
        assert!(!check(&t, &PhaseStats::default(), &PhaseStats::default()).passed);
        assert!(check(&t, &stats(0.5, 1.0), &PhaseStats::default()).passed);
    }
}
