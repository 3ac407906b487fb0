//! The blast-radius checks of a plan, kept apart from the selection of
//! agents ([`crate::planner`]): run-wide limits (the policy's allowed
//! windows, concurrent runs and durations), the policy's protected labels,
//! and per fault the experiment's `blast_radius` (max targets, max percent
//! of the matching agents and of each zone) and the policy's
//! max_fleet_percent. Each check that holds adds a line with its headroom
//! to the plan's limits; one that fails refuses the plan before anything
//! is injected. Faults on containers are counted over containers (or pods)
//! by [`crate::preview::count_containers`] instead, from the agents' dry
//! runs.

use std::collections::BTreeMap;

use crate::experiment::{fmt_duration, Experiment, Fault};
use crate::planner::{zone_of, Context, Error};
use crate::registry::AgentInfo;

/// The name limits are reported under: the policy's source, or "policy".
fn source<'a>(ctx: &'a Context<'_>) -> &'a str {
    if ctx.policy.source.is_empty() {
        "policy"
    } else {
        ctx.policy.source.as_str()
    }
}

/// Run-wide limits: policy windows, concurrency and durations.
pub(crate) fn run_limits(exp: &Experiment, ctx: &Context<'_>, limits: &mut Vec<String>) -> Result<(), Error> {
    let policy = ctx.policy;
    let src = if policy.source.is_empty() {
        "policy"
    } else {
        policy.source.as_str()
    };
    if !policy.allowed_windows.is_empty() {
        let local = policy.local(ctx.now);
        let windows: Vec<String> = policy.allowed_windows.iter().map(|w| w.to_string()).collect();
        let when = format!(
            "{:?} {:02}:{:02} (UTC{})",
            local.weekday(),
            local.hour(),
            local.minute(),
            if local.offset().is_utc() {
                String::new()
            } else {
                local.offset().to_string()
            }
        );
        if !policy.allowed_windows.iter().any(|w| w.contains(local)) {
            return Err(Error::RunLimit {
                limit: format!(
                    "{src} allowed_windows: runs may start only in {}; it is {when}",
                    windows.join(", ")
                ),
            });
        }
        limits.push(format!(
            "{src} allowed_windows {}: now ({when}) is inside",
            windows.join(", ")
        ));
    }
    if let Some(max) = policy.max_concurrent_runs {
        let with_this = ctx.running + 1;
        if with_this > max as usize {
            return Err(Error::RunLimit {
                limit: format!(
                    "{src} max_concurrent_runs {max}: {} run(s) already in flight",
                    ctx.running
                ),
            });
        }
        limits.push(format!(
            "{src} max_concurrent_runs {max}: {with_this} with this run (headroom {})",
            max as usize - with_this
        ));
    }
    for (name, max) in [
        (format!("{src} max_duration"), policy.max_duration),
        ("blast_radius.max_duration".to_string(), exp.blast_radius.max_duration),
    ] {
        let Some(max) = max else { continue };
        if exp.duration > max {
            return Err(Error::RunLimit {
                limit: format!(
                    "{name} {}: the experiment's duration is {}",
                    fmt_duration(max),
                    fmt_duration(exp.duration)
                ),
            });
        }
        limits.push(format!(
            "{name} {}: duration {} (headroom {})",
            fmt_duration(max),
            fmt_duration(exp.duration),
            fmt_duration(max - exp.duration)
        ));
    }
    Ok(())
}

/// Leaves the agents the policy's `protected_labels` protect out of
/// `matching`; refused when that leaves none.
pub(crate) fn protected_labels(
    ctx: &Context<'_>,
    fault: &Fault,
    matching: &mut Vec<&AgentInfo>,
    limits: &mut Vec<String>,
) -> Result<(), Error> {
    let src = source(ctx);
    if !ctx.policy.protected_labels.is_empty() {
        let protected: Vec<String> = matching
            .iter()
            .filter_map(|a| {
                ctx.policy
                    .protected_label(&a.labels)
                    .map(|l| format!("{} ({l})", a.agent_id))
            })
            .collect();
        if protected.len() == matching.len() {
            return Err(Error::BlastRadius {
                fault: fault.name.clone(),
                limit: format!(
                    "{src} protected_labels: every matching agent is protected: {}",
                    protected.join(", ")
                ),
            });
        }
        matching.retain(|a| ctx.policy.protected_label(&a.labels).is_none());
        limits.push(if protected.is_empty() {
            format!(
                "{src} protected_labels: fault {:?} matches no protected agent",
                fault.name
            )
        } else {
            format!(
                "{src} protected_labels: fault {:?} leaves out {}",
                fault.name,
                protected.join(", ")
            )
        });
    }
    Ok(())
}

/// The experiment's `blast_radius` and the policy's max_fleet_percent over
/// `targets`, the agents chosen of `matching` for `fault`.
pub(crate) fn fault_limits(
    exp: &Experiment,
    ctx: &Context<'_>,
    fault: &Fault,
    targets: &[AgentInfo],
    matching: usize,
    agents: &[AgentInfo],
    limits: &mut Vec<String>,
) -> Result<(), Error> {
    let src = source(ctx);
    if let Some(max) = exp.blast_radius.max_targets {
        if targets.len() > max as usize {
            return Err(Error::BlastRadius {
                fault: fault.name.clone(),
                limit: format!("{} targets exceed blast_radius.max_targets {max}", targets.len()),
            });
        }
        limits.push(format!(
            "blast_radius.max_targets {max}: fault {:?} targets {} (headroom {})",
            fault.name,
            targets.len(),
            max as usize - targets.len()
        ));
    }
    if let Some(maxp) = ctx.policy.max_fleet_percent {
        let pct = targets.len() as f64 * 100.0 / agents.len().max(1) as f64;
        if pct > maxp + 1e-9 {
            return Err(Error::BlastRadius {
                fault: fault.name.clone(),
                limit: format!(
                    "{} of {} connected agents is {pct:.1}%, over {src} max_fleet_percent {maxp}%",
                    targets.len(),
                    agents.len()
                ),
            });
        }
        limits.push(format!(
            "{src} max_fleet_percent {maxp}%: fault {:?} targets {pct:.1}% of {} connected (headroom {:.1} points)",
            fault.name,
            agents.len(),
            maxp - pct
        ));
    }
    // A fault on containers is held to the percentages over containers
    // (or pods), which only the agents can count: see
    // crate::preview::count_containers.
    let on_containers = fault.targets.containers.is_some();
    if let Some(maxz) = exp.blast_radius.max_percent_per_zone.filter(|_| !on_containers) {
        let mut zones: BTreeMap<&str, usize> = BTreeMap::new();
        for t in targets {
            *zones.entry(zone_of(t)).or_default() += 1;
        }
        for (zone, n) in zones {
            let size = agents.iter().filter(|a| zone_of(a) == zone).count().max(1);
            let pct = n as f64 * 100.0 / size as f64;
            if pct > maxz + 1e-9 {
                return Err(Error::BlastRadius {
                    fault: fault.name.clone(),
                    limit: format!(
                        "{n} of {size} agents of zone {zone} is {pct:.1}%, over blast_radius.max_percent_per_zone {maxz}%"
                    ),
                });
            }
            limits.push(format!(
                "blast_radius.max_percent_per_zone {maxz}%: fault {:?} targets {pct:.1}% of zone {zone} ({n} of {size}; headroom {:.1} points)",
                fault.name,
                maxz - pct
            ));
        }
    }
    if let Some(maxp) = exp.blast_radius.max_percent.filter(|_| !on_containers) {
        let pct = targets.len() as f64 * 100.0 / matching as f64;
        if pct > maxp + 1e-9 {
            return Err(Error::BlastRadius {
                fault: fault.name.clone(),
                limit: format!(
                    "{} of {} matching agents is {pct:.1}%, over blast_radius.max_percent {maxp}%",
                    targets.len(),
                    matching
                ),
            });
        }
        limits.push(format!(
            "blast_radius.max_percent {maxp}%: fault {:?} targets {pct:.1}% of {} matching (headroom {:.1} points)",
            fault.name,
            matching,
            maxp - pct
        ));
    }
    Ok(())
}
