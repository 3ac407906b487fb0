//! `cpu_stress`: keep CPUs of each target busy: `workers` processes at
//! `load` each, or a total in `cores` (e.g. `1.5`) or `millicores`. The
//! agent runs them in a cgroup of the fault's with a CFS quota of exactly
//! the load asked, kills them and removes the cgroup at restore; on a
//! container target, inside the container's cgroup. `cpus` pins the
//! workers, round-robin, to CPUs (a list, or a kernel CPU list "0-3,6").

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
    /// CPUs to pin the workers to, round-robin; empty: not pinned.
    pub cpus: Vec<u32>,
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
    #[error("cpu_stress.cpus {0:?}: write CPU numbers, as a list ([0, 1]) or a CPU list (\"0-3,6\"), each below 1024")]
    Cpus(String),
}

/// `cpus` as written: a list of CPU numbers or a kernel CPU list.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum RawCpus {
    List(Vec<u32>),
    Text(String),
}

impl RawCpus {
    fn parse(self) -> Result<Vec<u32>, Error> {
        let (cpus, text) = match self {
            RawCpus::List(l) => (Some(l.clone()), format!("{l:?}")),
            RawCpus::Text(t) => (parse_cpu_list(&t), t),
        };
        match cpus {
            Some(c) if !c.is_empty() && c.iter().all(|n| *n < 1024) => {
                let mut c = c;
                c.sort_unstable();
                c.dedup();
                Ok(c)
            }
            _ => Err(Error::Cpus(text)),
        }
    }
}

/// A kernel CPU list, `0-3,6`.
fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if b < a || b >= 1024 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
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
    /// CPUs to pin the workers to.
    cpus: Option<RawCpus>,
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
        let cpus = r.cpus.map(RawCpus::parse).transpose()?.unwrap_or_default();
        Ok(CpuStressFault { load, cpus })
    }

    fn summary(&self) -> String {
        let what = match self.load {
            CpuLoad::Workers { workers, load_percent } => {
                format!("keep {workers} CPU worker(s) busy at {load_percent}% of a core each")
            }
            CpuLoad::Millicores(m) => format!("keep {} cores busy", m as f64 / 1000.0),
        };
        if self.cpus.is_empty() {
            what
        } else {
            format!("{what}, pinned to CPU(s) {:?}", self.cpus)
        }
    }

    fn to_wire(&self, _peers: &[String]) -> v1::CpuStressSpec {
        match self.load {
            CpuLoad::Workers { workers, load_percent } => v1::CpuStressSpec {
                workers,
                load_percent,
                millicores: 0,
                cpus: self.cpus.clone(),
            },
            CpuLoad::Millicores(millicores) => v1::CpuStressSpec {
                millicores,
                cpus: self.cpus.clone(),
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
    fn cpus_are_a_list_or_a_kernel_cpu_list() {
        assert_eq!(parse("workers: 2\ncpus: [1, 0, 1]\n").unwrap().cpus, [0, 1]);
        assert_eq!(parse("workers: 2\ncpus: \"0-2,5\"\n").unwrap().cpus, [0, 1, 2, 5]);
        assert!(parse("workers: 1\n").unwrap().cpus.is_empty());
        for bad in ["cpus: []", "cpus: \"2-1\"", "cpus: \"a\"", "cpus: [1024]"] {
            let e = parse(&format!("workers: 1\n{bad}\n")).unwrap_err();
            assert!(e.to_string().contains("cpu_stress.cpus"), "{bad}: {e}");
        }
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
