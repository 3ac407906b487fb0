//! What each target agent would do for a plan: dry-run Injects.
//!
//! `plan` chooses agents; only an agent knows what a fault would hit on its
//! node (how many processes a kill's selector matches, whether a fill fits
//! under its cap, whether its policy allows the kind). [`previews`] sends
//! every planned target an Inject with `dry_run` set, under a throwaway run
//! id, and collects the answers: PLANNED with what the agent would do, or
//! REFUSED with why. Agents touch nothing for a dry run. Only agents that
//! advertise the `dry_run` capability are asked: an agent built before dry
//! runs would ignore the flag and inject for real.

use std::collections::HashMap;
use std::time::Duration;

use faultline_proto::v1;

use crate::engine::spec_to_wire;
use crate::experiment::BlastRadius;
use crate::planner::Plan;
use crate::registry::Registry;

/// How long `plan` waits for the agents' answers. By default, 3 s: an
/// answer is one process-table read or statvfs away.
pub const PREVIEW_TIMEOUT: Duration = Duration::from_secs(3);

/// One "agent-id: detail" line per target of each planned fault, in the
/// plan's order; "agent-id: no answer" for an agent that did not answer
/// within `timeout`.
pub async fn previews(plan: &Plan, registry: &Registry, timeout: Duration) -> Vec<Vec<String>> {
    previews_with_containers(plan, registry, timeout)
        .await
        .into_iter()
        .map(|f| f.into_iter().map(|p| p.line).collect())
        .collect()
}

/// One target's answer to a dry run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Preview {
    /// "agent-id: detail".
    pub line: String,
    /// The containers the agent resolved the fault's selector to, when it
    /// answered PLANNED; `None` for any other answer or none.
    pub containers: Option<Vec<String>>,
    /// With `containers`: (selected, matched) units on that node —
    /// containers, or pods with a pod selector.
    pub units: Option<(u32, u32)>,
}

/// Like [`previews`], with the containers each PLANNED answer names.
pub async fn previews_with_containers(plan: &Plan, registry: &Registry, timeout: Duration) -> Vec<Vec<Preview>> {
    let rand = uuid::Uuid::new_v4().simple().to_string();
    // A valid run id (faultline_proto::ids) that no real run can have:
    // run ids start with `r`.
    let plan_id = format!("plan-{}", &rand[..12]);
    let mut out: Vec<Vec<Preview>> = plan
        .faults
        .iter()
        .map(|pf| vec![Preview::default(); pf.targets.len()])
        .collect();
    let mut pending: HashMap<(String, String), (usize, usize)> = HashMap::new();
    let mut statuses = registry.subscribe(&plan_id);
    for (fi, pf) in plan.faults.iter().enumerate() {
        let fault_id = format!("{plan_id}-{}", pf.index + 1);
        for (ti, agent) in pf.targets.iter().enumerate() {
            let id = &agent.agent_id;
            if !agent
                .capabilities
                .iter()
                .any(|c| c == faultline_proto::CAPABILITY_DRY_RUN)
            {
                out[fi][ti].line = format!("{id}: no preview (this agent's version does not answer dry runs)");
                continue;
            }
            let inject = v1::Inject {
                fault_id: fault_id.clone(),
                run_id: plan_id.clone(),
                spec: Some(spec_to_wire(
                    &pf.fault.kind,
                    pf.peers.get(ti).map(Vec::as_slice).unwrap_or(&[]),
                )),
                lease_ms: 0,
                dry_run: true,
                container: pf.fault.targets.containers.as_ref().map(|c| c.to_wire()),
            };
            match registry.inject(id, inject) {
                Ok(()) => {
                    pending.insert((fault_id.clone(), id.clone()), (fi, ti));
                }
                Err(e) => out[fi][ti].line = format!("{id}: not asked: {e}"),
            }
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    while !pending.is_empty() {
        let Ok(Some(st)) = tokio::time::timeout_at(deadline, statuses.recv()).await else {
            break;
        };
        let key = (st.status.fault_id.clone(), st.agent_id.clone());
        let Some((fi, ti)) = pending.remove(&key) else {
            continue;
        };
        let s = &st.status;
        if s.state() == v1::FaultState::Planned {
            out[fi][ti].containers = Some(s.containers.clone());
            out[fi][ti].units = Some((s.selected_units, s.matching_units));
        }
        out[fi][ti].line = match s.state() {
            v1::FaultState::Planned => format!("{}: {}", st.agent_id, s.detail),
            other => {
                let state = faultline_proto::fault_state_name(other);
                // Refusals often say "refused: ..." already.
                let detail = s.detail.strip_prefix(&format!("{state}: ")).unwrap_or(&s.detail);
                format!("{}: {state}: {detail}", st.agent_id)
            }
        };
    }
    registry.unsubscribe(&plan_id);
    for (fi, ti) in pending.into_values() {
        out[fi][ti].line = format!("{}: no answer", plan.faults[fi].targets[ti].agent_id);
    }
    out
}

/// For faults that target containers, the blast radius counts
/// **containers** (or pods, with a pod selector), which only the agents
/// know: each planned target is asked for a dry run, and its PLANNED answer
/// names the containers it would hit and how many units it selected of how
/// many matched. `max_targets` caps the containers of all targets together;
/// `max_percent` the units selected over the units matched, all targets
/// together; `max_percent_per_zone` the same within each zone (the agents'
/// `zone` label). Returns one line per limit and fault for the run log, or
/// why the run must not start: over a limit, or a target that could not
/// say (no answer, or a version without dry runs). A target that refused
/// counts none (its real inject will be refused as well).
pub async fn container_blast_radius(
    plan: &Plan,
    limits: &BlastRadius,
    registry: &Registry,
    timeout: Duration,
) -> Result<Vec<String>, String> {
    if !counts_containers(plan, limits) {
        return Ok(Vec::new());
    }
    let answers = previews_with_containers(plan, registry, timeout).await;
    count_containers(plan, limits, &answers)
}

/// Whether [`container_blast_radius`] has anything to check.
pub fn counts_containers(plan: &Plan, limits: &BlastRadius) -> bool {
    (limits.max_targets.is_some() || limits.max_percent.is_some() || limits.max_percent_per_zone.is_some())
        && plan.faults.iter().any(|pf| pf.fault.targets.containers.is_some())
}

/// The counting of [`container_blast_radius`], over answers already had
/// (`plan` shows it next to the previews).
pub fn count_containers(plan: &Plan, limits: &BlastRadius, answers: &[Vec<Preview>]) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    for (pf, answers) in plan.faults.iter().zip(answers) {
        let Some(sel) = &pf.fault.targets.containers else {
            continue;
        };
        let unit = if sel.pod.is_some() { "pod" } else { "container" };
        let mut total = 0usize;
        // zone -> (selected, matched) units
        let mut zones: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
        for (a, agent) in answers.iter().zip(&pf.targets) {
            match &a.containers {
                Some(c) => {
                    total += c.len();
                    let (s, m) = a.units.unwrap_or((c.len() as u32, c.len() as u32));
                    let z = zones.entry(crate::planner::zone_of(agent)).or_default();
                    z.0 += s as u64;
                    z.1 += m as u64;
                }
                None if a.line.contains(": refused: ") || a.line.contains(": failed: ") => {}
                None => {
                    return Err(format!(
                        "fault {:?} targets containers and the blast radius counts them, but {}",
                        pf.fault.name, a.line
                    ))
                }
            }
        }
        if let Some(max) = limits.max_targets {
            if total > max as usize {
                return Err(format!(
                    "fault {:?}: {total} containers exceed blast_radius.max_targets {max} ({})",
                    pf.fault.name,
                    answers.iter().map(|a| a.line.as_str()).collect::<Vec<_>>().join("; ")
                ));
            }
            lines.push(format!(
                "blast_radius.max_targets {max}: fault {:?} targets {total} container(s) (headroom {})",
                pf.fault.name,
                max as usize - total
            ));
        }
        let pct = |(s, m): (u64, u64)| if m == 0 { 0.0 } else { s as f64 * 100.0 / m as f64 };
        if let Some(maxp) = limits.max_percent {
            let all = zones.values().fold((0, 0), |acc, z| (acc.0 + z.0, acc.1 + z.1));
            let p = pct(all);
            if p > maxp + 1e-9 {
                return Err(format!(
                    "fault {:?}: {} of {} matching {unit}s is {p:.1}%, over blast_radius.max_percent {maxp}%",
                    pf.fault.name, all.0, all.1
                ));
            }
            lines.push(format!(
                "blast_radius.max_percent {maxp}%: fault {:?} targets {p:.1}% of {} matching {unit}s (headroom {:.1} points)",
                pf.fault.name,
                all.1,
                maxp - p
            ));
        }
        if let Some(maxz) = limits.max_percent_per_zone {
            for (zone, z) in &zones {
                let p = pct(*z);
                if p > maxz + 1e-9 {
                    return Err(format!(
                        "fault {:?}: {} of {} matching {unit}s of zone {zone} is {p:.1}%, over blast_radius.max_percent_per_zone {maxz}%",
                        pf.fault.name, z.0, z.1
                    ));
                }
                lines.push(format!(
                    "blast_radius.max_percent_per_zone {maxz}%: fault {:?} targets {p:.1}% of zone {zone}'s matching {unit}s ({} of {}; headroom {:.1} points)",
                    pf.fault.name,
                    z.0,
                    z.1,
                    maxz - p
                ));
            }
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::{plan, Context};
    use crate::registry::AgentInfo;
    use tokio::sync::mpsc;

    fn agent(id: &str, caps: &[&str]) -> AgentInfo {
        AgentInfo::from_hello(v1::Hello {
            agent_id: id.into(),
            hostname: id.into(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn each_target_says_what_it_would_do_or_that_it_did_not_answer() {
        let exp = crate::experiment::parse(
            "t.yaml",
            "name: t\nhypothesis:\n  probes:\n    - name: p\n      tcp: { address: \"127.0.0.1:1\" }\nduration: 1s\nfaults:\n  - targets: { mode: all }\n    kill: { name: w, count: all }\n",
            &Default::default(),
        )
        .unwrap();
        let registry = std::sync::Arc::new(Registry::new());
        let fleet = [
            agent("a1", &["kill", "dry_run"]),
            agent("a2", &["kill", "dry_run"]),
            agent("a3", &["kill"]),
        ];
        let mut inboxes = Vec::new();
        for a in &fleet {
            let (tx, rx) = mpsc::channel(8);
            registry.add(a.clone(), tx).expect("a new agent id registers");
            inboxes.push(rx);
        }
        let p = plan(&exp, &registry.agents(), &Context::unrestricted()).unwrap();
        // a1 answers its dry run; a2 never does; a3 is never asked.
        let mut a1 = inboxes.remove(0);
        let r = registry.clone();
        tokio::spawn(async move {
            let Some(v1::CoordinatorMessage {
                msg: Some(v1::coordinator_message::Msg::Inject(i)),
            }) = a1.recv().await
            else {
                return;
            };
            assert!(i.dry_run && i.run_id.starts_with("plan-") && i.fault_id.starts_with(&i.run_id));
            faultline_proto::ids::validate_fault_id(&i.fault_id).unwrap();
            r.route(
                "a1",
                v1::FaultStatus {
                    fault_id: i.fault_id,
                    run_id: i.run_id,
                    state: v1::FaultState::Planned as i32,
                    detail: "would send SIGKILL to 2 of 90 processes".into(),
                    ..Default::default()
                },
            );
        });
        let out = previews(&p, &registry, Duration::from_millis(300)).await;
        assert_eq!(
            out,
            vec![vec![
                "a1: would send SIGKILL to 2 of 90 processes".to_string(),
                "a2: no answer".to_string(),
                "a3: no preview (this agent's version does not answer dry runs)".to_string(),
            ]]
        );
        let mut a3 = inboxes.pop().unwrap();
        assert!(
            a3.try_recv().is_err(),
            "an agent without dry runs would have injected for real"
        );
    }

    #[test]
    fn containers_are_counted_against_max_targets_across_targets() {
        let exp = crate::experiment::parse(
            "t.yaml",
            "name: t\nhypothesis:\n  probes:\n    - name: p\n      tcp: { address: \"127.0.0.1:1\" }\nduration: 1s\nfaults:\n  - targets: { containers: { pod: { namespace: shop } } }\n    kill: { name: w }\nblast_radius: { max_targets: 3 }\n",
            &Default::default(),
        )
        .unwrap();
        let caps = ["kill", "dry_run", "runtime:containerd"];
        let fleet = [agent("a1", &caps), agent("a2", &caps)];
        let p = plan(&exp, &fleet, &Context::unrestricted()).unwrap();
        let planned = |n: usize| Preview {
            line: "aX: would send SIGKILL".into(),
            containers: Some((0..n).map(|i| format!("shop/web-{i}/main")).collect()),
            units: Some((n as u32, n as u32)),
        };
        let limits = BlastRadius {
            max_targets: Some(3),
            ..Default::default()
        };
        let ok = count_containers(&p, &limits, &[vec![planned(2), planned(1)]]).unwrap();
        assert_eq!(
            ok,
            ["blast_radius.max_targets 3: fault \"kill-1\" targets 3 container(s) (headroom 0)"]
        );
        let err = count_containers(&p, &limits, &[vec![planned(2), planned(2)]]).unwrap_err();
        assert!(err.contains("4 containers exceed blast_radius.max_targets 3"), "{err}");
        // A target that refused counts none; one that could not say stops the run.
        let refused = Preview {
            line: "a2: refused: no running container matches".into(),
            ..Default::default()
        };
        assert!(count_containers(&p, &limits, &[vec![planned(3), refused]]).is_ok());
        let silent = Preview {
            line: "a2: no answer".into(),
            ..Default::default()
        };
        let err = count_containers(&p, &limits, &[vec![planned(1), silent]]).unwrap_err();
        assert!(err.contains("a2: no answer"), "{err}");
    }

    #[test]
    fn max_percent_and_per_zone_count_pods_selected_of_pods_matched() {
        let exp = crate::experiment::parse(
            "t.yaml",
            "name: t\nhypothesis:\n  probes:\n    - name: p\n      tcp: { address: \"127.0.0.1:1\" }\nduration: 1s\nfaults:\n  - targets: { percent: 50, containers: { pod: { namespace: shop } } }\n    kill: { name: w }\nblast_radius: { max_percent: 50, max_percent_per_zone: 60 }\n",
            &Default::default(),
        )
        .unwrap();
        let caps = ["kill", "dry_run", "runtime:containerd"];
        let mut a1 = agent("a1", &caps);
        a1.labels.insert("zone".into(), "z1".into());
        let mut a2 = agent("a2", &caps);
        a2.labels.insert("zone".into(), "z2".into());
        let p = plan(&exp, &[a1, a2], &Context::unrestricted()).unwrap();
        // The agent-count percentages do not apply to a container fault: both agents planned.
        assert_eq!(p.faults[0].targets.len(), 2);
        let planned = |sel: u32, matched: u32| Preview {
            line: "aX: would send SIGKILL".into(),
            containers: Some((0..sel * 2).map(|i| format!("shop/web-{i}/c")).collect()),
            units: Some((sel, matched)),
        };
        let ok = count_containers(&p, &exp.blast_radius, &[vec![planned(2, 4), planned(1, 2)]]).unwrap();
        assert!(
            ok.iter().any(|l| l.contains("targets 50.0% of 6 matching pods")),
            "{ok:?}"
        );
        assert!(
            ok.iter().any(|l| l.contains("zone z2's matching pods (1 of 2")),
            "{ok:?}"
        );
        let err = count_containers(&p, &exp.blast_radius, &[vec![planned(3, 4), planned(1, 2)]]).unwrap_err();
        assert!(
            err.contains("4 of 6 matching pods is 66.7%, over blast_radius.max_percent 50%"),
            "{err}"
        );
        let limits = BlastRadius {
            max_percent_per_zone: Some(60.0),
            ..Default::default()
        };
        let err = count_containers(&p, &limits, &[vec![planned(3, 4), planned(0, 2)]]).unwrap_err();
        assert!(err.contains("3 of 4 matching pods of zone z1 is 75.0%"), "{err}");
    }
}
