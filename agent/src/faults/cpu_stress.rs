//! `cpu_stress` fault: worker processes that keep CPUs busy, each for a
//! share of every 100 ms, in the cgroup `faultline-cpu-stress-<fault id>` (see
//! [`super::stress`] for how stressors are started, capped and stopped).
//!
//! The load asked for is also the cgroup's CFS quota, so the stressors can
//! never take more than asked even if a worker overshoots, and the agent's
//! cap (90 % of the node by default) keeps the rest of the node for the
//! agent and everything else. The cgroup's CPU weight is that of as many
//! processes as cores asked, and never less than one process's (v1
//! `cpu.shares` 1024 per core, v2 `cpu.weight` 100 per core, as Kubernetes
//! turns CPU requests into weights): the scheduler shares CPU between
//! cgroups as single entities, so with the default weight a stress of 1.8
//! cores would compete like one process; with a lower weight it would only
//! soak up idle time and stress nothing. On a busy node it still gets less
//! than asked, and the achieved figure says so.
//! Achieved load is read from the cgroup's CPU accounting (`cpuacct.usage`,
//! v2 `cpu.stat` `usage_usec`) over the time the fault ran.
//!
//! On a container target the cgroup is made inside the container's own
//! cgroup ([`stress::Site`]): the container's CPU limit then bounds the
//! stressors too, and their use counts against the container, as a
//! workload's would. The stressors exit by themselves when the container's
//! init does (a restart or stop mid-fault).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use faultline_proto::v1;

use super::stress::{self, Error, Group, Site, Stress, Work};
use crate::cgroup;
use crate::faults::{Applied, FaultKind, Prepared, Registration, Report, Restoring, Setup};
use crate::journal::{Object, Owned};

const KIND_NAME: &str = "cpu_stress";

/// The start of this kind's cgroup names; the orphan sweep removes cgroups
/// named so.
pub const CGROUP_PREFIX: &str = "faultline-cpu-stress-";

/// A validated CPU stress: `workers` processes at `load_percent` each.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuStressSpec {
    pub workers: u32,
    /// Percent of one core, per worker (0 < load <= 100).
    pub load_percent: f64,
    /// CPUs the workers are pinned to, round-robin; empty: not pinned.
    pub cpus: Vec<u32>,
}

impl CpuStressSpec {
    /// The total load, in percent of one core.
    pub fn total_percent(&self) -> f64 {
        self.workers as f64 * self.load_percent
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidSpec {
        kind: KIND_NAME,
        message: message.into(),
    }
}

impl TryFrom<v1::CpuStressSpec> for CpuStressSpec {
    type Error = Error;

    fn try_from(w: v1::CpuStressSpec) -> Result<Self, Error> {
        let cpus = w.cpus;
        if cpus.iter().any(|c| *c >= nix::libc::CPU_SETSIZE as u32) {
            return Err(invalid(format!(
                "cpus {cpus:?}: CPU numbers go up to {}",
                nix::libc::CPU_SETSIZE - 1
            )));
        }
        let (workers, load_percent) = match (w.workers, w.millicores) {
            (0, 0) => return Err(invalid("set workers (with load_percent) or millicores")),
            (n, 0) => {
                if !(w.load_percent > 0.0 && w.load_percent <= 100.0) {
                    return Err(invalid(format!(
                        "load_percent {} must be within (0, 100]",
                        w.load_percent
                    )));
                }
                if n > 1024 {
                    return Err(invalid(format!("{n} workers: at most 1024")));
                }
                (n, w.load_percent)
            }
            (0, m) => {
                if m > 1024 * 1000 {
                    return Err(invalid(format!("{m} millicores: at most 1024 cores")));
                }
                let workers = m.div_ceil(1000) as u32;
                (workers, m as f64 / 10.0 / workers as f64)
            }
            _ => return Err(invalid("set workers or millicores, not both")),
        };
        Ok(CpuStressSpec {
            workers,
            load_percent,
            cpus,
        })
    }
}

/// A kernel CPU list (`0-3,6`), as `Cpus_allowed_list` writes it.
pub fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 4096 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

/// The controllers a CPU stressor's cgroup is made in.
const CONTROLLERS: &[&str] = &["cpu", "cpuacct"];

pub const KIND: Registration = Registration {
    name: KIND_NAME,
    owns: &[Owned::Cgroups { prefix: CGROUP_PREFIX }],
    takes: |w| matches!(w, v1::fault_spec::Kind::CpuStress(_)),
    backend: "cgroup",
    build: |s: &Setup| {
        Arc::new(CpuStress {
            stress: s.stress.clone(),
        })
    },
};

struct CpuStress {
    stress: Option<Stress>,
}

impl FaultKind for CpuStress {
    fn capabilities(&self) -> Vec<String> {
        Stress::capabilities(&self.stress, CONTROLLERS, KIND_NAME)
    }

    fn prepare(
        &self,
        fault_id: &str,
        spec: v1::fault_spec::Kind,
        place: &crate::faults::Place,
    ) -> crate::faults::Result<Box<dyn Prepared>> {
        let v1::fault_spec::Kind::CpuStress(w) = spec else {
            return Err(invalid("not a cpu_stress spec").into());
        };
        let spec = CpuStressSpec::try_from(w)?;
        let stress = Stress::usable_or_refuse(
            &self.stress,
            CONTROLLERS,
            "this agent cannot create cpu cgroups (it needs root and the cpu and cpuacct controllers)",
        )?;
        let cap = stress.policy.max_cpu_percent * stress::cpus() as f64;
        if spec.total_percent() > cap + 1e-9 {
            return Err(Error::Refused(format!(
                "{} workers at {}% is {:.0}% of one core, over the agent's cap of {}% of the node ({cap:.0}% of one core on {} CPUs)",
                spec.workers,
                spec.load_percent,
                spec.total_percent(),
                stress.policy.max_cpu_percent,
                stress::cpus()
            ))
            .into());
        }
        let site = Site::of(&stress, place, KIND_NAME, CONTROLLERS, CGROUP_PREFIX, fault_id)?;
        if !spec.cpus.is_empty() {
            // The target's own CPUs (the agent's, or the container init's:
            // its cpuset), which a pinned worker must stay within.
            let status = format!("/proc/{}/status", site.watch_pid().unwrap_or(std::process::id()));
            let allowed = std::fs::read_to_string(&status)
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                        .map(|l| l.trim().to_string())
                })
                .ok_or_else(|| Error::Refused(format!("cannot read the CPUs the target may use from {status}")))?;
            let set = parse_cpu_list(&allowed).unwrap_or_default();
            if let Some(c) = spec.cpus.iter().find(|c| !set.contains(c)) {
                return Err(Error::Refused(format!(
                    "cpu_stress.cpus: CPU {c} is not among the CPUs the target may use ({allowed}); pick from those"
                ))
                .into());
            }
        }
        Ok(Box::new(PreparedCpu { spec, stress, site }))
    }
}

struct PreparedCpu {
    spec: CpuStressSpec,
    stress: Stress,
    site: Site,
}

impl Prepared for PreparedCpu {
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
                "would start {} CPU stressor(s) at {}% each{} in cgroup {}",
                self.spec.workers,
                self.spec.load_percent,
                self.site.describe(),
                self.site.dirs[0].display()
            ),
            "cgroup".into(),
        ))
    }

    fn apply(self: Box<Self>) -> crate::faults::Result<Box<dyn Applied>> {
        let period_us = stress::PERIOD.as_micros() as u64;
        let mut quota_us = ((self.spec.total_percent() / 100.0 * period_us as f64).ceil() as u64).max(1000);
        // cgroup v1 refuses a child quota above its parent's (EINVAL): in a
        // container with a CPU limit, the stressors get at most that limit,
        // which is what they would get anyway.
        let mut where_ = self.site.describe();
        if !self.spec.cpus.is_empty() {
            where_ = format!("{where_} pinned to CPU(s) {:?}", self.spec.cpus);
        }
        if let Some(limit) = self.container_quota_share() {
            if limit * 100.0 < self.spec.total_percent() {
                where_ = format!("{where_} (bounded by its CPU limit of {limit} cores)");
            }
            quota_us = quota_us.min(((limit * period_us as f64).floor() as u64).max(1000));
        }
        // Never below one process's weight: a small stress wants little and
        // gets it at the default weight; a lighter one would lose it.
        let cores = (self.spec.total_percent() / 100.0).max(1.0);
        let limits: Vec<(&str, String)> = if self.stress.layout.is_v2() {
            vec![
                ("cpu.max", format!("{quota_us} {period_us}")),
                ("cpu.weight", ((100.0 * cores).round() as u64).clamp(1, 10_000).to_string()),
            ]
        } else {
            vec![
                ("cpu.cfs_period_us", period_us.to_string()),
                ("cpu.cfs_quota_us", quota_us.to_string()),
                ("cpu.shares", ((1024.0 * cores).round() as u64).clamp(2, 262_144).to_string()),
            ]
        };
        let group = stress::start(
            self.site.dirs.clone(),
            &limits,
            self.spec.workers,
            self.site.watch_pid(),
            &|i| Work::Cpu {
                load_percent: self.spec.load_percent,
                cpu: match self.spec.cpus.as_slice() {
                    [] => -1,
                    cpus => cpus[i as usize % cpus.len()] as i32,
                },
            },
        )?;
        let start_usage = usage_ns(&self.stress, &group.dirs).unwrap_or(0);
        Ok(Box::new(AppliedCpu {
            spec: self.spec,
            stress: self.stress,
            where_,
            group,
            start_usage,
        }))
    }
}

impl PreparedCpu {
    /// The CFS limit of the target container (v1: its `cpu.cfs_quota_us`
    /// over its period), in cores; `None` on a host target, on v2 (which
    /// takes any child limit and applies the tighter one itself) and for a
    /// container without a limit.
    fn container_quota_share(&self) -> Option<f64> {
        self.site.container.as_ref()?;
        if self.stress.layout.is_v2() {
            return None;
        }
        let parent = stress::dir_of(&self.stress.layout, &self.site.dirs, "cpu")?.parent()?;
        let quota: i64 = cgroup::read(parent, "cpu.cfs_quota_us").ok()?.parse().ok()?;
        let period = cgroup::read_u64(parent, "cpu.cfs_period_us")?;
        (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
    }
}

/// CPU time the cgroup has used, in nanoseconds; `None` once the cgroup is
/// gone (a container's runtime removes the stressors' cgroup with the
/// container's when the container stops and the stressors left with it).
fn usage_ns(stress: &Stress, dirs: &[PathBuf]) -> Option<u64> {
    if stress.layout.is_v2() {
        dirs.first()
            .and_then(|d| cgroup::keyed(d, "cpu.stat", "usage_usec"))
            .map(|us| us * 1000)
    } else {
        stress::dir_of(&stress.layout, dirs, "cpuacct").and_then(|d| cgroup::read_u64(d, "cpuacct.usage"))
    }
}

pub struct AppliedCpu {
    spec: CpuStressSpec,
    stress: Stress,
    /// ` in container NAME`, or empty.
    where_: String,
    group: Group,
    start_usage: u64,
}

impl AppliedCpu {
    fn observation(&self, achieved_percent: f64, elapsed: Duration) -> v1::CpuStressObservation {
        v1::CpuStressObservation {
            cgroup: self
                .group
                .dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            pids: stress::wire_pids(&self.group),
            workers: self.spec.workers,
            load_percent: self.spec.load_percent,
            achieved_percent,
            elapsed_ms: elapsed.as_millis() as u64,
        }
    }

    /// CPU used so far, in percent of one core, and the time it ran; the
    /// percentage is `None` when the cgroup is gone (see [`usage_ns`]).
    pub fn achieved(&self) -> (Option<f64>, Duration) {
        let elapsed = self.group.started.elapsed();
        let pct = usage_ns(&self.stress, &self.group.dirs).map(|u| {
            if elapsed.is_zero() {
                0.0
            } else {
                u.saturating_sub(self.start_usage) as f64 * 100.0 / elapsed.as_nanos() as f64
            }
        });
        (pct, elapsed)
    }
}

impl Applied for AppliedCpu {
    fn backend(&self) -> String {
        "cgroup".into()
    }

    fn injected(&self) -> Report {
        let o = self.observation(0.0, Duration::ZERO);
        Report {
            detail: format!(
                "started {} CPU stressor(s) at {}% each{} (pids {:?}) in {}",
                o.workers, o.load_percent, self.where_, o.pids, o.cgroup
            ),
            observation: Some(v1::observation::Kind::CpuStress(o)),
        }
    }

    fn restore(self: Box<Self>) -> Restoring {
        let (pct, elapsed) = self.achieved();
        // A negative figure on the wire: not measured.
        let o = self.observation(pct.unwrap_or(-1.0), elapsed);
        let result = stress::stop(self.group);
        Box::pin(async move {
            result?;
            let used = match pct {
                Some(p) => format!("{p:.1}% of one core used"),
                None => "CPU use unknown (the container's runtime removed the cgroup with the container)".into(),
            };
            Ok(Report {
                detail: format!(
                    "stopped {} CPU stressor(s) and removed {}: {used} over {:.1}s (asked {:.1}%)",
                    o.workers,
                    o.cgroup,
                    elapsed.as_secs_f64(),
                    o.workers as f64 * o.load_percent
                ),
                observation: Some(v1::observation::Kind::CpuStress(o)),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_read_like_the_kernel_writes_them() {
        assert_eq!(parse_cpu_list("0-3,6"), Some(vec![0, 1, 2, 3, 6]));
        assert_eq!(parse_cpu_list("1"), Some(vec![1]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn millicores_are_spread_over_as_few_workers_as_hold_them() {
        let s = CpuStressSpec::try_from(v1::CpuStressSpec {
            millicores: 1500,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.workers, 2);
        assert!((s.load_percent - 75.0).abs() < 1e-9);
        assert!((s.total_percent() - 150.0).abs() < 1e-9);
    }

    #[test]
    fn specs_need_one_amount_and_a_load_within_range() {
        for w in [
            v1::CpuStressSpec::default(),
            v1::CpuStressSpec {
                workers: 1,
                load_percent: 120.0,
                ..Default::default()
            },
            v1::CpuStressSpec {
                workers: 1,
                load_percent: 50.0,
                millicores: 500,
                ..Default::default()
            },
            v1::CpuStressSpec {
                workers: 1,
                load_percent: 50.0,
                cpus: vec![1 << 20],
                ..Default::default()
            },
        ] {
            assert!(CpuStressSpec::try_from(w).unwrap_err().is_refusal());
        }
    }
}
