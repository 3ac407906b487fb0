//! Summary statistics of probe samples.
//!
//! Latency percentiles are computed over *successful* samples only (a timeout
//! or refused connection has no meaningful latency); failures count in the
//! success rate. Percentiles use the nearest-rank method, so every reported
//! value is a latency that was actually observed.

use serde::{Deserialize, Serialize};

use crate::experiment::Percentile;

/// One probe sample.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    /// Milliseconds since the run started, when the sample completed.
    pub at_ms: u64,
    /// The phase in which the sample completed. This is the one definition
    /// of which samples belong to a phase: the steady-state check, the
    /// report's statistics, guardrails and the verdict all select by it.
    pub phase: crate::outcome::Phase,
    pub ok: bool,
    /// Time the check took, success or not.
    pub latency_ms: f64,
    /// What the check measured, for kinds that measure a value
    /// (prometheus), success or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Statistics of one probe over one phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PhaseStats {
    pub samples: u32,
    pub successes: u32,
    /// successes / samples; 0 when there were no samples.
    pub success_rate: f64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// For probes that measure a value (prometheus): the smallest, mean
    /// and largest value of the phase's samples that have one (NaN left
    /// out). Absent for the other kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_max: Option<f64>,
}

impl PhaseStats {
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Self {
        let mut n = 0u32;
        let mut lat: Vec<f64> = Vec::new();
        let mut values: Vec<f64> = Vec::new();
        for s in samples {
            n += 1;
            values.extend(s.value.filter(|v| !v.is_nan()));
            if s.ok {
                lat.push(s.latency_ms);
            }
        }
        lat.sort_by(f64::total_cmp);
        let ok = lat.len() as u32;
        Self {
            samples: n,
            successes: ok,
            success_rate: if n == 0 { 0.0 } else { f64::from(ok) / f64::from(n) },
            p50_ms: nearest_rank(&lat, 50.0),
            p90_ms: nearest_rank(&lat, 90.0),
            p99_ms: nearest_rank(&lat, 99.0),
            max_ms: lat.last().copied(),
            value_min: values.iter().copied().reduce(f64::min),
            value_mean: (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64),
            value_max: values.iter().copied().reduce(f64::max),
        }
    }

    pub fn percentile(&self, p: Percentile) -> Option<f64> {
        match p {
            Percentile::P50 => self.p50_ms,
            Percentile::P90 => self.p90_ms,
            Percentile::P99 => self.p99_ms,
            Percentile::Max => self.max_ms,
        }
    }
}

/// Nearest-rank percentile of sorted values.
pub fn nearest_rank(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Phase;

    fn s(ok: bool, ms: f64) -> Sample {
        Sample {
            at_ms: 0,
            phase: Phase::Observe,
            ok,
            latency_ms: ms,
            value: None,
            error: None,
        }
    }

    #[test]
    fn nearest_rank_picks_observed_values() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&v, 50.0), Some(50.0));
        assert_eq!(nearest_rank(&v, 99.0), Some(99.0));
        assert_eq!(nearest_rank(&[7.0], 99.0), Some(7.0));
        assert_eq!(nearest_rank(&[], 50.0), None);
    }

    #[test]
    fn failures_count_in_rate_but_not_in_latency() {
        let st = PhaseStats::of(&[s(true, 10.0), s(false, 1000.0), s(true, 30.0), s(true, 20.0)]);
        assert_eq!((st.samples, st.successes), (4, 3));
        assert_eq!(st.success_rate, 0.75);
        assert_eq!(st.p50_ms, Some(20.0));
        assert_eq!(st.max_ms, Some(30.0));
    }
}
