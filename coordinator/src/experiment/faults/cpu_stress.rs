//! `cpu_stress`: keep CPUs of each target busy: `workers` processes at
//! `load` each, or a total in `cores` (e.g. `1.5`) or `millicores`. The
//! agent runs them in a cgroup of the fault's with a CFS quota of exactly
//! the load asked, kills them and removes the cgroup at restore. Host
//! targets only for now (not yet inside a container's cgroup).

use faultline_proto::v1;
use serde::Deserialize;

use super::{Kind, Observed};
use crate::experiment::values::RawRate;

/// How much CPU a `cpu_stress` keeps busy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CpuLoad {
    /// `workers` processes, each busy `load_percent` of one core.
    Workers { workers: u32, load_percent: f64 },
    /// A total in thousandths of a core.
    Millicores(u64),
}

/// Parameters of a `cpu_stress` fault.
#[derive(Debug, Clone)]
pub struct CpuStressFault {
    pub load: CpuLoad,
}

/// Why a written `cpu_stress` is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cpu_stress: set workers (with load, e.g. \"80%\"), cores (e.g. 1.5) or millicores (e.g. 1500), exactly one way")]
    NotExactlyOneAmount,
    #[error("cpu_stress.load {0:?}: write a percentage of one core, e.g. \"80%\"")]
    LoadText(String),
    #[error("cpu_stress.load {0}: must be within (0, 100] percent of one core")]
    LoadRange(f64),
    #[error("cpu_stress.workers {0}: must be within 1..=1024")]
    Workers(u32),
    #[error("cpu_stress.{field} {value}: must be more than 0 and at most 1024 cores")]
    Total { field: &'static str, value: f64 },
}

/// A `cpu_stress` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCpuStress {
    /// Worker processes (with `load`; default load 100 %).
    workers: Option<u32>,
    /// Load of each worker: a percentage of one core ("80%") or a fraction (0.8).
    load: Option<RawRate>,
    /// Total load in cores, e.g. 1.5.
    cores: Option<f64>,
    /// Total load in thousandths of a core.
    millicores: Option<u64>,
}

impl Kind for CpuStressFault {
    const NAME: &'static str = "cpu_stress";
    type Raw = RawCpuStress;
    type Error = Error;
    type Wire = v1::CpuStressSpec;
    type Observation = v1::CpuStressObservation;

    fn from_raw(r: RawCpuStress) -> Result<Self, Error> {
        let total = |field: &'static str, cores: f64| {
            if cores > 0.0 && cores <= 1024.0 {
                Ok(CpuLoad::Millicores((cores * 1000.0).round() as u64))
            } else {
                Err(Error::Total { field, value: cores })
            }
        };
        let load = match (r.workers, &r.load, r.cores, r.millicores) {
            (Some(w), _, None, None) => {
                if !(1..=1024).contains(&w) {
                    return Err(Error::Workers(w));
                }
                let p = match &r.load {
                    None => 100.0,
                    Some(RawRate::Fraction(f)) => f * 100.0,
                    Some(RawRate::Text(t)) => RawRate::percent_text(t).ok_or_else(|| Error::LoadText(t.clone()))?,
                };
                if !(p > 0.0 && p <= 100.0) {
                    return Err(Error::LoadRange(p));
                }
                CpuLoad::Workers {
                    workers: w,
                    load_percent: p,
                }
            }
            (None, None, Some(c), None) => total("cores", c)?,
            (None, None, None, Some(m)) => total("millicores", m as f64 / 1000.0)?,
            _ => return Err(Error::NotExactlyOneAmount),
        };
        Ok(CpuStressFault { load })
    }

    fn summary(&self) -> String {
        match self.load {
            CpuLoad::Workers { workers, load_percent } => {
                format!("keep {workers} CPU worker(s) busy at {load_percent}% of a core each")
            }
            CpuLoad::Millicores(m) => format!("keep {} cores busy", m as f64 / 1000.0),
        }
    }

    fn to_wire(&self, _peers: &[String]) -> v1::CpuStressSpec {
        match self.load {
            CpuLoad::Workers { workers, load_percent } => v1::CpuStressSpec {
                workers,
                load_percent,
                millicores: 0,
            },
            CpuLoad::Millicores(millicores) => v1::CpuStressSpec {
                millicores,
                ..Default::default()
            },
        }
    }

    fn observe(o: &v1::CpuStressObservation, state: v1::FaultState, into: &mut Observed) {
        into.objects = vec![format!("cgroup {} (pids {:?})", o.cgroup, o.pids)];
        into.set_figure("requested", o.workers as f64 * o.load_percent, "% of a core");
        // The CPU used is measured over the whole fault: final at restore.
        // Negative: not measured (the target container's cgroup went away).
        if state == v1::FaultState::Restored && o.achieved_percent >= 0.0 {
            into.set_figure("achieved", (o.achieved_percent * 10.0).round() / 10.0, "% of a core");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<CpuStressFault, Error> {
        CpuStressFault::from_raw(serde_norway::from_str(y).unwrap())
    }

    #[test]
    fn load_is_workers_at_a_share_or_a_total_in_cores() {
        assert_eq!(
            parse("workers: 2\nload: \"50%\"\n").unwrap().load,
            CpuLoad::Workers {
                workers: 2,
                load_percent: 50.0
            }
        );
        assert_eq!(parse("cores: 1.5\n").unwrap().load, CpuLoad::Millicores(1500));
        assert_eq!(parse("millicores: 250\n").unwrap().load, CpuLoad::Millicores(250));
        assert!(parse("workers: 1\ncores: 1\n")
            .unwrap_err()
            .to_string()
            .contains("exactly one"));
        assert!(parse("workers: 1\nload: \"150%\"\n")
            .unwrap_err()
            .to_string()
            .contains("(0, 100]"));
    }
}
