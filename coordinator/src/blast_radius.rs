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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use crate::outcome::Outcome;
    use crate::planner::tests::{agent, exp, plan_free};
    use crate::planner::{plan, Context};
    use crate::policy::Policy;
    use crate::registry::AgentInfo;

    fn with_policy<'a>(policy: &'a Policy, now: time::OffsetDateTime, running: usize) -> Context<'a> {
        Context { policy, now, running }
    }

    fn fleet() -> Vec<AgentInfo> {
        vec![
            agent("a1", "a"),
            agent("a2", "a"),
            agent("b1", "b"),
            AgentInfo {
                labels: BTreeMap::from([
                    ("zone".to_string(), "b".to_string()),
                    ("tier".to_string(), "db".to_string()),
                ]),
                ..agent("b2", "b")
            },
        ]
    }

    const TUESDAY_10: time::OffsetDateTime = time::macros::datetime!(2026-11-24 10:00 UTC);

    #[test]
    fn every_policy_limit_refuses_with_its_name_and_shows_headroom_when_it_holds() {
        let policy = Policy::parse(
            "policy.yaml",
            "max_fleet_percent: 50\nprotected_labels: [tier=db]\nallowed_windows: [\"Mon-Fri 09:00-17:00\"]\nmax_concurrent_runs: 2\nmax_duration: 1m\n",
        )
        .unwrap();
        let fleet = fleet();
        // Holds: 2 of 4 agents, inside the window, one other run, 1s < 1m.
        let p = plan(
            &exp("{ labels: { zone: a } }", ""),
            &fleet,
            &with_policy(&policy, TUESDAY_10, 1),
        )
        .unwrap();
        let limits = p.limits.join("\n");
        for want in [
            "policy.yaml allowed_windows Mon-Fri 09:00-17:00: now (Tuesday 10:00 (UTC)) is inside",
            "policy.yaml max_concurrent_runs 2: 2 with this run (headroom 0)",
            "policy.yaml max_duration 1m: duration 1s (headroom 59s)",
            "policy.yaml max_fleet_percent 50%: fault \"kill-1\" targets 50.0% of 4 connected (headroom 0.0 points)",
            "policy.yaml protected_labels: fault \"kill-1\" matches no protected agent",
        ] {
            assert!(limits.contains(want), "missing {want:?} in:\n{limits}");
        }
        let refusals = [
            (
                plan(&exp("{ mode: all }", ""), &fleet, &with_policy(&policy, TUESDAY_10, 0)),
                "max_fleet_percent 50%",
            ),
            (
                plan(
                    &exp("{ labels: { tier: db } }", ""),
                    &fleet,
                    &with_policy(&policy, TUESDAY_10, 0),
                ),
                "protected_labels: every matching agent is protected: b2 (tier=db)",
            ),
            (
                plan(
                    &exp("{ labels: { zone: a } }", ""),
                    &fleet,
                    &with_policy(&policy, time::macros::datetime!(2026-11-28 10:00 UTC), 0),
                ),
                "allowed_windows: runs may start only in Mon-Fri 09:00-17:00; it is Saturday 10:00",
            ),
            (
                plan(
                    &exp("{ labels: { zone: a } }", ""),
                    &fleet,
                    &with_policy(&policy, TUESDAY_10, 2),
                ),
                "max_concurrent_runs 2: 2 run(s) already in flight",
            ),
        ];
        for (r, want) in refusals {
            let e = r.unwrap_err();
            assert_eq!(e.outcome(), Outcome::Invalid, "{e}");
            assert!(e.to_string().contains(want), "{e} should contain {want}");
        }
    }

    #[test]
    fn protected_agents_are_left_out_of_the_selection_and_said_so() {
        let policy = Policy::parse("p.yaml", "protected_labels: [tier=db]\n").unwrap();
        let p = plan(
            &exp("{ labels: { zone: b } }", ""),
            &fleet(),
            &with_policy(&policy, TUESDAY_10, 0),
        )
        .unwrap();
        assert_eq!(
            p.faults[0]
                .targets
                .iter()
                .map(|t| t.agent_id.as_str())
                .collect::<Vec<_>>(),
            vec!["b1"]
        );
        assert!(
            p.limits.iter().any(|l| l.contains("leaves out b2 (tier=db)")),
            "{:?}",
            p.limits
        );
    }

    #[test]
    fn durations_and_per_zone_limits_of_the_experiment() {
        let src = |blast: &str, duration: &str| {
            format!(
                "name: t\nhypothesis:\n  probes:\n    - name: p\n      tcp: {{ address: \"127.0.0.1:1\" }}\nduration: {duration}\nfaults:\n  - targets: {{ labels: {{ zone: a }} }}\n    kill: {{ name: x }}\n{blast}"
            )
        };
        let parse = |t: &str| crate::experiment::parse("t.yaml", t, &HashMap::new()).unwrap();
        // The parser already refuses this; the planner holds the line too.
        let mut long = parse(&src("blast_radius: { max_duration: 1m }\n", "1m"));
        long.blast_radius.max_duration = Some(std::time::Duration::from_secs(30));
        let e = plan_free(&long, &fleet()).unwrap_err();
        assert!(
            e.to_string()
                .contains("blast_radius.max_duration 30s: the experiment's duration is 1m"),
            "{e}"
        );
        let policy = Policy::parse("p.yaml", "max_duration: 30s\n").unwrap();
        let e = plan(&parse(&src("", "1m")), &fleet(), &with_policy(&policy, TUESDAY_10, 0)).unwrap_err();
        assert!(e.to_string().contains("p.yaml max_duration 30s"), "{e}");
        // 2 of the 2 agents of zone a is 100%.
        let e = plan_free(
            &parse(&src("blast_radius: { max_percent_per_zone: 50 }\n", "1s")),
            &fleet(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("2 of 2 agents of zone a is 100.0%, over blast_radius.max_percent_per_zone 50%"),
            "{e}"
        );
        let ok = plan_free(
            &parse(&src("blast_radius: { max_percent_per_zone: 100 }\n", "1s")),
            &fleet(),
        )
        .unwrap();
        assert!(
            ok.limits
                .iter()
                .any(|l| l.contains("zone a (2 of 2; headroom 0.0 points)")),
            "{:?}",
            ok.limits
        );
    }
}
