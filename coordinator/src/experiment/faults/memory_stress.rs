//! `memory_stress`: hold memory on each target: one process maps `size`
//! bytes (or `available`, a share of the target's MemAvailable) and writes
//! every page, optionally over `ramp`. It runs in a cgroup of the fault's
//! whose limit is the size plus a little, with `oom_score_adj` 1000; an OOM
//! kill of it is reported as such. Host targets only for now.

use faultline_proto::v1;
use serde::Deserialize;

use super::{Kind, Observed};
use crate::experiment::durations::{fmt_duration, Dur};
use crate::experiment::values::{self, fmt_bytes, RawRate, RawSize};

/// How much memory a `memory_stress` holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryAmount {
    Bytes(u64),
    /// Percent of the target's available memory (0 < p <= 100).
    AvailablePercent(f64),
}

/// Parameters of a `memory_stress` fault.
#[derive(Debug, Clone)]
pub struct MemoryStressFault {
    pub amount: MemoryAmount,
    /// Time over which the pages are touched; zero: at once.
    pub ramp: std::time::Duration,
}

/// Why a written `memory_stress` is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("memory_stress: set exactly one of size (e.g. 512MiB) or available (e.g. \"50%\")")]
    NotExactlyOneAmount,
    #[error(transparent)]
    Value(#[from] values::Error),
    #[error("memory_stress.available {0:?}: write a percentage, e.g. \"50%\"")]
    AvailableText(String),
    #[error("memory_stress.available {0}: must be within (0, 100] percent")]
    AvailableRange(f64),
    #[error("memory_stress.ramp {0}: at most 1h")]
    Ramp(String),
}

/// A `memory_stress` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMemoryStress {
    size: Option<RawSize>,
    available: Option<RawRate>,
    ramp: Option<Dur>,
}

impl Kind for MemoryStressFault {
    const NAME: &'static str = "memory_stress";
    type Raw = RawMemoryStress;
    type Error = Error;
    type Wire = v1::MemoryStressSpec;
    type Observation = v1::MemoryStressObservation;

    fn from_raw(r: RawMemoryStress) -> Result<Self, Error> {
        let amount = match (&r.size, &r.available) {
            (Some(s), None) => MemoryAmount::Bytes(s.bytes("memory_stress.size")?),
            (None, Some(a)) => {
                let p = match a {
                    RawRate::Fraction(f) => f * 100.0,
                    RawRate::Text(t) => RawRate::percent_text(t).ok_or_else(|| Error::AvailableText(t.clone()))?,
                };
                if !(p > 0.0 && p <= 100.0) {
                    return Err(Error::AvailableRange(p));
                }
                MemoryAmount::AvailablePercent(p)
            }
            _ => return Err(Error::NotExactlyOneAmount),
        };
        let ramp = r.ramp.map(|d| d.0).unwrap_or_default();
        if ramp > std::time::Duration::from_secs(3600) {
            return Err(Error::Ramp(fmt_duration(ramp)));
        }
        Ok(MemoryStressFault { amount, ramp })
    }

    fn summary(&self) -> String {
        let what = match self.amount {
            MemoryAmount::Bytes(b) => fmt_bytes(b),
            MemoryAmount::AvailablePercent(p) => format!("{p}% of available memory"),
        };
        if self.ramp.is_zero() {
            format!("hold {what}")
        } else {
            format!("hold {what}, reached over {}", fmt_duration(self.ramp))
        }
    }

    fn to_wire(&self, _peers: &[String]) -> v1::MemoryStressSpec {
        let (size_bytes, available_percent) = match self.amount {
            MemoryAmount::Bytes(b) => (b, 0.0),
            MemoryAmount::AvailablePercent(p) => (0, p),
        };
        v1::MemoryStressSpec {
            size_bytes,
            available_percent,
            ramp_ms: self.ramp.as_millis() as u64,
        }
    }

    fn observe(o: &v1::MemoryStressObservation, _state: v1::FaultState, into: &mut Observed) {
        into.objects = vec![format!("cgroup {} (pid {})", o.cgroup, o.pid)];
        into.set_figure("requested", o.requested_bytes as f64, "bytes");
        into.set_figure("resident", o.resident_bytes as f64, "bytes");
        into.set_figure("peak", o.peak_bytes as f64, "bytes");
        if o.oom_killed {
            let note = format!(
                "the stressor was OOM-killed in its cgroup (peak {} of {} asked); the node was not",
                fmt_bytes(o.peak_bytes),
                fmt_bytes(o.requested_bytes)
            );
            if !into.notes.contains(&note) {
                into.notes.push(note);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<MemoryStressFault, Error> {
        MemoryStressFault::from_raw(serde_norway::from_str(y).unwrap())
    }

    #[test]
    fn memory_is_a_size_or_a_share_of_available_with_an_optional_ramp() {
        let f = parse("size: 64MiB\nramp: 10s\n").unwrap();
        assert_eq!(f.amount, MemoryAmount::Bytes(64 << 20));
        assert_eq!(f.to_wire(&[]).ramp_ms, 10_000);
        assert_eq!(
            parse("available: \"25%\"\n").unwrap().amount,
            MemoryAmount::AvailablePercent(25.0)
        );
        assert!(parse("size: 1MiB\navailable: 0.5\n")
            .unwrap_err()
            .to_string()
            .contains("exactly one"));
        assert!(parse("available: \"120%\"\n").is_err());
    }
}
