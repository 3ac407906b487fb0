//! Tolerances as written under a probe: `success_rate`, or `latency` with
//! an absolute `max` or a `factor`/`plus` relative to the baseline, and the
//! `guardrail`/`window` marking that also checks one live.

use std::time::Duration;

use serde::Deserialize;

use super::durations::{fmt_duration, Dur, DEFAULT_GUARDRAIL_WINDOW, MAX_LATENCY_BOUND, MAX_WINDOW};
use super::model::{Percentile, Tolerance};
use super::values::RawRate;

/// Why a written tolerance is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("tolerance success_rate {0:?}: write a fraction (0.95) or a percentage (\"95%\")")]
    RateText(String),
    #[error("tolerance success_rate {0}: must be within 0..1 (or 0%..100%)")]
    RateRange(f64),
    #[error("tolerance latency.percentile {0:?}: use one of p50, p90, p99, max")]
    Percentile(String),
    #[error("tolerance latency.{field} {}: longer than the limit of {}", fmt_duration(*.value), fmt_duration(MAX_LATENCY_BOUND))]
    BoundTooLong { field: &'static str, value: Duration },
    #[error("tolerance latency: set max (absolute, e.g. max: 250ms) or factor and/or plus (relative to the baseline)")]
    NoBound,
    #[error("tolerance latency.factor {0}: must be at least 1.0")]
    Factor(f64),
    #[error(
        "tolerance latency: max is absolute and cannot be combined with factor/plus (relative); write two tolerances"
    )]
    AbsoluteAndRelative,
    #[error("tolerance value: set min and/or max (absolute) or factor and/or plus (relative to the baseline's mean)")]
    NoValueBound,
    #[error("tolerance value: min/max are absolute and cannot be combined with factor/plus (relative); write two tolerances")]
    ValueAbsoluteAndRelative,
    #[error("tolerance value.{field} {value}: must be a finite number")]
    ValueNotFinite { field: &'static str, value: f64 },
    #[error("tolerance value.factor {0}: must be at least 1.0")]
    ValueFactor(f64),
    #[error("tolerance value: between [lo, hi] is min and max in one; write one of them")]
    ValueBetweenAndBounds,
    #[error("tolerance value: the lower bound {0} exceeds the upper bound {1}")]
    ValueBoundsOrder(f64, f64),
    #[error("a tolerance sets exactly one of success_rate, latency or value")]
    NotExactlyOne,
    #[error("tolerance window: must be at least 100ms")]
    WindowTooShort,
    #[error("tolerance window: {} is longer than the limit of {}", fmt_duration(*.0), fmt_duration(MAX_WINDOW))]
    WindowTooLong(Duration),
    #[error("tolerance window: only applies to a guardrail; add guardrail: true")]
    WindowWithoutGuardrail,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTolerance {
    success_rate: Option<RawRate>,
    latency: Option<RawLatency>,
    value: Option<RawValue>,
    guardrail: Option<bool>,
    window: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLatency {
    percentile: String,
    max: Option<Dur>,
    factor: Option<f64>,
    plus: Option<Dur>,
}

/// Bounds on the mean value of a measuring probe (prometheus).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValue {
    min: Option<f64>,
    max: Option<f64>,
    /// `[lo, hi]`: `min: lo` and `max: hi` in one.
    between: Option<(f64, f64)>,
    factor: Option<f64>,
    plus: Option<f64>,
}

impl TryFrom<RawValue> for Tolerance {
    type Error = Error;

    fn try_from(mut v: RawValue) -> Result<Self, Error> {
        if let Some((lo, hi)) = v.between {
            if v.min.is_some() || v.max.is_some() {
                return Err(Error::ValueBetweenAndBounds);
            }
            (v.min, v.max) = (Some(lo), Some(hi));
        }
        if let (Some(lo), Some(hi)) = (v.min, v.max) {
            if lo > hi {
                return Err(Error::ValueBoundsOrder(lo, hi));
            }
        }
        for (field, x) in [("min", v.min), ("max", v.max), ("factor", v.factor), ("plus", v.plus)] {
            if let Some(value) = x.filter(|x| !x.is_finite()) {
                return Err(Error::ValueNotFinite { field, value });
            }
        }
        let absolute = v.min.is_some() || v.max.is_some();
        let relative = v.factor.is_some() || v.plus.is_some();
        match (absolute, relative) {
            (true, true) => Err(Error::ValueAbsoluteAndRelative),
            (false, false) => Err(Error::NoValueBound),
            (true, false) => Ok(Tolerance::Value { min: v.min, max: v.max }),
            (false, true) => {
                let factor = v.factor.unwrap_or(1.0);
                if factor < 1.0 {
                    return Err(Error::ValueFactor(factor));
                }
                Ok(Tolerance::RelativeValue {
                    factor,
                    plus: v.plus.unwrap_or(0.0),
                })
            }
        }
    }
}

/// A tolerance as written, with its guardrail marking.
pub(crate) struct ToleranceSpec {
    pub tolerance: Tolerance,
    /// The guardrail's window, for a tolerance marked `guardrail: true`.
    pub guardrail: Option<Duration>,
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
                    return Err(serde::de::Error::custom(Error::WindowTooShort));
                }
                if w > MAX_WINDOW {
                    return Err(serde::de::Error::custom(Error::WindowTooLong(w)));
                }
                Some(w)
            }
            (_, Some(_)) => return Err(serde::de::Error::custom(Error::WindowWithoutGuardrail)),
            _ => None,
        };
        Ok(ToleranceSpec { tolerance, guardrail })
    }
}

impl TryFrom<RawTolerance> for Tolerance {
    type Error = Error;

    fn try_from(r: RawTolerance) -> Result<Self, Error> {
        match (r.success_rate, r.latency, r.value) {
            (None, None, Some(v)) => Tolerance::try_from(v),
            (Some(rate), None, None) => {
                let min = match rate {
                    RawRate::Fraction(f) => f,
                    RawRate::Text(t) => match RawRate::percent_text(&t) {
                        Some(p) => p / 100.0,
                        None => return Err(Error::RateText(t)),
                    },
                };
                if !(0.0..=1.0).contains(&min) {
                    return Err(Error::RateRange(min));
                }
                Ok(Tolerance::SuccessRate { min })
            }
            (None, Some(l), None) => {
                let percentile = match l.percentile.to_ascii_lowercase().as_str() {
                    "p50" | "median" => Percentile::P50,
                    "p90" => Percentile::P90,
                    "p99" => Percentile::P99,
                    "max" => Percentile::Max,
                    other => return Err(Error::Percentile(other.to_string())),
                };
                for (field, d) in [("max", l.max), ("plus", l.plus)] {
                    if let Some(d) = d.filter(|d| d.0 > MAX_LATENCY_BOUND) {
                        return Err(Error::BoundTooLong { field, value: d.0 });
                    }
                }
                match (l.max, l.factor, l.plus) {
                    (Some(max), None, None) => Ok(Tolerance::Latency { percentile, max: max.0 }),
                    (None, None, None) => Err(Error::NoBound),
                    (None, factor, plus) => {
                        let factor = factor.unwrap_or(1.0);
                        if !(factor >= 1.0 && factor.is_finite()) {
                            return Err(Error::Factor(factor));
                        }
                        Ok(Tolerance::RelativeLatency {
                            percentile,
                            factor,
                            plus: plus.map(|d| d.0).unwrap_or(Duration::ZERO),
                        })
                    }
                    (Some(_), _, _) => Err(Error::AbsoluteAndRelative),
                }
            }
            _ => Err(Error::NotExactlyOne),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(yaml: &str) -> Result<Tolerance, String> {
        let raw: RawValue = serde_norway::from_str(yaml).map_err(|e| e.to_string())?;
        Tolerance::try_from(raw).map_err(|e| e.to_string())
    }

    #[test]
    fn a_value_tolerance_takes_min_max_or_between_and_refuses_mixed_or_reversed_bounds() {
        assert!(matches!(
            value("{between: [0.1, 0.5]}"),
            Ok(Tolerance::Value {
                min: Some(lo),
                max: Some(hi)
            }) if lo == 0.1 && hi == 0.5
        ));
        assert!(matches!(
            value("{max: 0.05}"),
            Ok(Tolerance::Value {
                min: None,
                max: Some(_)
            })
        ));
        assert!(value("{between: [0, 1], max: 2}")
            .unwrap_err()
            .contains("between [lo, hi] is min and max in one"));
        assert!(value("{between: [2, 1]}")
            .unwrap_err()
            .contains("the lower bound 2 exceeds the upper bound 1"));
        assert!(value("{min: 3, max: 1}").unwrap_err().contains("exceeds"));
        assert!(value("{between: [0, 1], factor: 2}")
            .unwrap_err()
            .contains("cannot be combined with factor/plus"));
    }
}
