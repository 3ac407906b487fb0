//! `memory_stress` fault: one process that maps anonymous memory and writes
//! a byte into every page of it (so the pages are really resident, not just
//! reserved), optionally spread over a ramp, then holds it until restore.
//! It runs in the cgroup `faultline-memory-stress-<fault id>` (see
//! [`super::stress`]).
//!
//! Safety: the size is capped by the agent's policy (a share of
//! MemAvailable); the cgroup's memory limit is the size plus a small
//! headroom, and the stressor's `oom_score_adj` is 1000, so if memory runs
//! short the OOM killer takes the stressor, inside its cgroup, not the node.
//! An OOM kill is read from the cgroup (`memory.oom_control` / v2
//! `memory.events`, `oom_kill`) and reported as `oom_killed`: an outcome of
//! the fault, not an agent failure. Resident bytes are the cgroup's charge
//! (`memory.usage_in_bytes` / v2 `memory.current`), and its peak.
//!
//! On a container target the cgroup is made inside the container's memory
//! cgroup ([`stress::Site`]): the container's limit bounds the stressor
//! too (it is hierarchical), `available_percent` is a share of that limit
//! when the container has one, and an OOM kill the limit causes takes the
//! stressor first (`oom_score_adj` 1000) and is reported as `oom_killed`.

use std::sync::Arc;
use std::time::Duration;

use faultline_proto::v1;

use super::stress::{self, Error, Group, Site, Stress, Work};
use crate::cgroup;
use crate::faults::{Applied, FaultKind, Prepared, Registration, Report, Restoring, Setup};
use crate::journal::{Object, Owned};

const KIND_NAME: &str = "memory_stress";

/// The start of this kind's cgroup names; the orphan sweep removes cgroups
/// named so.
pub const CGROUP_PREFIX: &str = "faultline-memory-stress-";

/// Room above the size for the stressor's own page tables and stack.
const HEADROOM: u64 = 32 << 20;

/// How much memory to hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Size {
    Bytes(u64),
    /// Percent of MemAvailable at apply time (0 < p <= 100); in a container
    /// with a memory limit, percent of that limit.
    AvailablePercent(f64),
}

/// A validated memory stress.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryStressSpec {
    pub size: Size,
    pub ramp: Duration,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidSpec {
        kind: KIND_NAME,
        message: message.into(),
    }
}

impl TryFrom<v1::MemoryStressSpec> for MemoryStressSpec {
    type Error = Error;

    fn try_from(w: v1::MemoryStressSpec) -> Result<Self, Error> {
        let size = match (w.size_bytes, w.available_percent) {
            (0, 0.0) => return Err(invalid("set size_bytes or available_percent")),
            (b, 0.0) => Size::Bytes(b),
            (0, p) if p > 0.0 && p <= 100.0 => Size::AvailablePercent(p),
            (0, p) => return Err(invalid(format!("available_percent {p} must be within (0, 100]"))),
            _ => return Err(invalid("set size_bytes or available_percent, not both")),
        };
        if w.ramp_ms > 3_600_000 {
            return Err(invalid(format!("ramp_ms {}: at most one hour", w.ramp_ms)));
        }
        Ok(MemoryStressSpec {
            size,
            ramp: Duration::from_millis(w.ramp_ms),
        })
    }
}

/// Bytes to hold for `size` with `available` bytes available, refused over
/// `max_percent` of it.
pub fn bytes_for(size: Size, available: u64, max_percent: f64) -> Result<u64, Error> {
    let bytes = match size {
        Size::Bytes(b) => b,
        Size::AvailablePercent(p) => (available as f64 * p / 100.0) as u64,
    };
    let cap = (available as f64 * max_percent / 100.0) as u64;
    if bytes > cap {
        return Err(Error::Refused(format!(
            "{bytes} bytes is over the agent's cap of {max_percent}% of the {available} bytes available ({cap} bytes)"
        )));
    }
    Ok(bytes)
}

const CONTROLLERS: &[&str] = &["memory"];

pub const KIND: Registration = Registration {
    name: KIND_NAME,
    owns: &[Owned::Cgroups { prefix: CGROUP_PREFIX }],
    takes: |w| matches!(w, v1::fault_spec::Kind::MemoryStress(_)),
    backend: "cgroup",
    build: |s: &Setup| {
        Arc::new(MemoryStress {
            stress: s.stress.clone(),
        })
    },
};

struct MemoryStress {
    stress: Option<Stress>,
}

impl FaultKind for MemoryStress {
    fn capabilities(&self) -> Vec<String> {
        Stress::capabilities(&self.stress, CONTROLLERS, KIND_NAME)
    }

    fn prepare(
        &self,
        fault_id: &str,
        spec: v1::fault_spec::Kind,
        place: &crate::faults::Place,
    ) -> crate::faults::Result<Box<dyn Prepared>> {
        let v1::fault_spec::Kind::MemoryStress(w) = spec else {
            return Err(invalid("not a memory_stress spec").into());
        };
        let spec = MemoryStressSpec::try_from(w)?;
        let stress = Stress::usable_or_refuse(
            &self.stress,
            CONTROLLERS,
            "this agent cannot create memory cgroups (it needs root and the memory controller)",
        )?;
        let available = stress::mem_available()
            .ok_or_else(|| Error::Refused("cannot read MemAvailable from /proc/meminfo".into()))?;
        let site = Site::of(&stress, place, KIND_NAME, CONTROLLERS, CGROUP_PREFIX, fault_id)?;
        // A share of the container's limit when it has one; the agent's cap
        // is always a share of the node's available memory.
        let size = match (spec.size, container_limit(&site, stress.layout.is_v2())) {
            (Size::AvailablePercent(p), Some(limit)) => Size::Bytes((limit as f64 * p / 100.0) as u64),
            (size, _) => size,
        };
        let bytes = bytes_for(size, available, stress.policy.max_memory_percent)?;
        Ok(Box::new(PreparedMemory {
            ramp: spec.ramp,
            bytes,
            stress,
            site,
        }))
    }
}

/// The memory limit of the container holding `site`'s cgroup (its
/// parent), if it has one below the node's memory.
fn container_limit(site: &Site, v2: bool) -> Option<u64> {
    site.container.as_ref()?;
    let parent = site.dirs.first()?.parent()?;
    let limit = if v2 {
        cgroup::read_u64(parent, "memory.max")?
    } else {
        cgroup::read_u64(parent, "memory.limit_in_bytes")?
    };
    // v1 writes "no limit" as a page-rounded i64::MAX.
    (limit < stress::mem_total().unwrap_or(u64::MAX)).then_some(limit)
}

struct PreparedMemory {
    ramp: Duration,
    bytes: u64,
    stress: Stress,
    site: Site,
}

impl Prepared for PreparedMemory {
    fn undo_objects(&self) -> Vec<Object> {
        self.site
            .dirs
            .iter()
            .map(|d| Object::Cgroup { path: d.clone() })
            .collect()
    }

    fn preview(&self) -> crate::faults::Result<(String, String)> {
        Ok((
            format!(
                "would hold {} bytes (over {:?}){} in cgroup {}",
                self.bytes,
                self.ramp,
                self.site.describe(),
                self.site.dirs[0].display()
            ),
            "cgroup".into(),
        ))
    }

    fn apply(self: Box<Self>) -> crate::faults::Result<Box<dyn Applied>> {
        let limit = (self.bytes + HEADROOM).to_string();
        let limits: Vec<(&str, String)> = if self.stress.layout.is_v2() {
            vec![("memory.max", limit), ("memory.swap.max", "0".into())]
        } else {
            vec![("memory.limit_in_bytes", limit), ("memory.swappiness", "0".into())]
        };
        let group = stress::start(self.site.dirs.clone(), &limits, 1, self.site.watch_pid(), &|_| {
            Work::Memory {
                bytes: self.bytes,
                ramp: self.ramp,
            }
        })?;
        Ok(Box::new(AppliedMemory {
            where_: self.site.describe(),
            bytes: self.bytes,
            v2: self.stress.layout.is_v2(),
            group,
        }))
    }
}

pub struct AppliedMemory {
    /// ` in container NAME`, or empty.
    where_: String,
    bytes: u64,
    v2: bool,
    group: Group,
}

impl AppliedMemory {
    /// The cgroup's readings: resident bytes, peak, OOM kills.
    pub fn reading(&self) -> (u64, u64, u64) {
        let Some(d) = self.group.dirs.first() else {
            return (0, 0, 0);
        };
        if self.v2 {
            (
                cgroup::read_u64(d, "memory.current").unwrap_or(0),
                cgroup::read_u64(d, "memory.peak").unwrap_or(0),
                cgroup::keyed(d, "memory.events", "oom_kill").unwrap_or(0),
            )
        } else {
            (
                cgroup::read_u64(d, "memory.usage_in_bytes").unwrap_or(0),
                cgroup::read_u64(d, "memory.max_usage_in_bytes").unwrap_or(0),
                cgroup::keyed(d, "memory.oom_control", "oom_kill").unwrap_or(0),
            )
        }
    }

    fn observation(&self) -> v1::MemoryStressObservation {
        let (resident, peak, ooms) = self.reading();
        v1::MemoryStressObservation {
            cgroup: self
                .group
                .dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            pid: stress::wire_pids(&self.group).first().copied().unwrap_or(0),
            requested_bytes: self.bytes,
            resident_bytes: resident,
            peak_bytes: peak,
            oom_killed: ooms > 0,
        }
    }
}

impl Applied for AppliedMemory {
    fn backend(&self) -> String {
        "cgroup".into()
    }

    fn injected(&self) -> Report {
        let o = self.observation();
        Report {
            detail: format!(
                "started a memory stressor (pid {}) holding {} bytes{} in {}",
                o.pid, o.requested_bytes, self.where_, o.cgroup
            ),
            observation: Some(v1::observation::Kind::MemoryStress(o)),
        }
    }

    fn restore(self: Box<Self>) -> Restoring {
        let o = self.observation();
        let result = stress::stop(self.group);
        Box::pin(async move {
            let ended = result?;
            let oom = o.oom_killed || ended.killed_before_restore > 0 && o.resident_bytes < o.requested_bytes;
            let o = v1::MemoryStressObservation { oom_killed: oom, ..o };
            Ok(Report {
                detail: if o.oom_killed {
                    format!(
                        "the memory stressor was OOM-killed (peak {} of {} bytes asked); removed {}",
                        o.peak_bytes, o.requested_bytes, o.cgroup
                    )
                } else {
                    format!(
                        "stopped the memory stressor ({} bytes resident, peak {}, {} asked) and removed {}",
                        o.resident_bytes, o.peak_bytes, o.requested_bytes, o.cgroup
                    )
                },
                observation: Some(v1::observation::Kind::MemoryStress(o)),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_are_of_available_memory_and_capped_by_policy() {
        let gib = 1u64 << 30;
        assert_eq!(bytes_for(Size::AvailablePercent(50.0), 4 * gib, 80.0).unwrap(), 2 * gib);
        assert_eq!(bytes_for(Size::Bytes(gib), 4 * gib, 80.0).unwrap(), gib);
        assert!(bytes_for(Size::AvailablePercent(90.0), 4 * gib, 80.0)
            .unwrap_err()
            .is_refusal());
    }

    #[test]
    fn specs_need_exactly_one_size() {
        for w in [
            v1::MemoryStressSpec::default(),
            v1::MemoryStressSpec {
                size_bytes: 1,
                available_percent: 1.0,
                ramp_ms: 0,
            },
            v1::MemoryStressSpec {
                available_percent: 101.0,
                ..Default::default()
            },
        ] {
            assert!(MemoryStressSpec::try_from(w).unwrap_err().is_refusal());
        }
    }
}
