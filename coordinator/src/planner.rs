//! Planning: choosing the agents each fault goes to, within the blast radius.
//!
//! Selection is deterministic: matching agents sorted by id, the first N
//! taken. `faultline plan` therefore shows exactly what `faultline run` will
//! do with the same fleet. Everything here runs before anything is injected.

use std::collections::BTreeMap;

use crate::experiment::{Experiment, Fault, Mode, Peers, ZONE_LABEL};
use crate::outcome::Outcome;
use crate::policy::Policy;
use crate::registry::AgentInfo;

/// Why a plan was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum Error {
    /// No connected agent carries the selector's labels.
    #[error("fault {fault:?}: no connected agent matches labels {selector}; {known}")]
    NoMatch {
        fault: String,
        selector: String,
        known: String,
    },
    /// Fewer agents than the fault asks for.
    #[error("fault {fault:?}: needs {wanted} agents but only {matching} match labels {selector}")]
    TooFew {
        fault: String,
        selector: String,
        wanted: u32,
        matching: usize,
    },
    /// A target cannot run this fault kind.
    #[error("fault {fault:?}: agent {agent} cannot run {kind} faults (it supports: {supports})")]
    Capability {
        fault: String,
        agent: String,
        kind: String,
        supports: String,
    },
    /// A percent of the matching agents rounds down to nothing.
    #[error("fault {fault:?}: {percent}% of {matching} matching agents rounds down to 0 targets; raise targets.percent or use mode count")]
    ZeroTargets {
        fault: String,
        percent: f64,
        matching: usize,
    },
    /// A zone named in a fault's peers has no connected agent.
    #[error("fault {fault:?}: zone {zone:?} has no connected agent (label zone={zone}); known zones: {known}")]
    EmptyZone { fault: String, zone: String, known: String },
    /// A network fault's peers resolve to no address for a target.
    #[error(
        "fault {fault:?}: the peers {peers} resolve to no address other than agent {agent}'s own; nothing to act on"
    )]
    NoPeers {
        fault: String,
        agent: String,
        peers: String,
    },
    /// A blast-radius limit refused the plan.
    #[error("blast radius refused fault {fault:?}: {limit}")]
    BlastRadius { fault: String, limit: String },
    /// A run-wide limit (coordinator policy or the experiment's own
    /// `max_duration`) refused the run.
    #[error("refused by {limit}")]
    RunLimit { limit: String },
    /// A group that selects agents could not be resolved (no agent
    /// matches its labels, or one has no address).
    #[error("{0}")]
    Group(#[from] crate::group_agents::Error),
}

/// What the planner needs besides the experiment and the fleet.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub policy: &'a Policy,
    /// When the run would start.
    pub now: time::OffsetDateTime,
    /// Other runs in flight on this coordinator.
    pub running: usize,
}

impl Context<'static> {
    /// No policy, now, nothing else running.
    pub fn unrestricted() -> Self {
        static NONE: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
        Context {
            policy: NONE.get_or_init(Policy::default),
            now: time::OffsetDateTime::now_utc(),
            running: 0,
        }
    }
}

impl Error {
    /// The run outcome this refusal leads to: a limit refused the run
    /// (invalid, exit 2) or agents are missing (error, exit 5).
    pub fn outcome(&self) -> Outcome {
        match self {
            Error::BlastRadius { .. }
            | Error::ZeroTargets { .. }
            | Error::RunLimit { .. }
            | Error::Group(crate::group_agents::Error::Read(_))
            | Error::Group(crate::group_agents::Error::ZeroPods { .. })
            | Error::Group(crate::group_agents::Error::BlastRadius { .. }) => Outcome::Invalid,
            Error::NoMatch { .. }
            | Error::TooFew { .. }
            | Error::Capability { .. }
            | Error::EmptyZone { .. }
            | Error::NoPeers { .. }
            | Error::Group(_) => Outcome::Error,
        }
    }
}

/// Targets of one fault.
#[derive(Debug, Clone)]
pub struct PlannedFault {
    /// Position in the experiment's `faults` list.
    pub index: usize,
    pub fault: Fault,
    pub targets: Vec<AgentInfo>,
    /// Agents matching the selector before the mode was applied.
    pub matching: usize,
    /// Network faults: for each target (same order), the peer networks its
    /// zones and CIDRs resolve to, without the target's own addresses.
    /// Empty for other kinds, and for a latency fault to any destination.
    pub peers: Vec<Vec<String>>,
}

/// Resolves `peers` for `target`: every address reported by agents whose
/// zone label is one of the zones (the target itself left out), then the
/// CIDRs as written.
fn resolve_peers(fault: &Fault, peers: &Peers, target: &AgentInfo, agents: &[AgentInfo]) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::new();
    for zone in &peers.zones {
        let members: Vec<&AgentInfo> = agents
            .iter()
            .filter(|a| a.labels.get(ZONE_LABEL) == Some(zone))
            .collect();
        if members.is_empty() {
            let mut known: Vec<&str> = agents
                .iter()
                .filter_map(|a| a.labels.get(ZONE_LABEL).map(String::as_str))
                .collect();
            known.sort_unstable();
            known.dedup();
            return Err(Error::EmptyZone {
                fault: fault.name.clone(),
                zone: zone.clone(),
                known: if known.is_empty() {
                    "none (no agent has a zone label)".into()
                } else {
                    known.join(", ")
                },
            });
        }
        for m in members.into_iter().filter(|m| m.agent_id != target.agent_id) {
            out.extend(m.addresses.iter().cloned());
        }
    }
    out.retain(|a| !target.addresses.contains(a));
    out.extend(peers.cidrs.iter().cloned());
    out.sort();
    out.dedup();
    if out.is_empty() && !peers.is_empty() {
        return Err(Error::NoPeers {
            fault: fault.name.clone(),
            agent: target.agent_id.clone(),
            peers: peers.to_string(),
        });
    }
    Ok(out)
}

/// The whole plan.
#[derive(Debug, Clone)]
pub struct Plan {
    pub faults: Vec<PlannedFault>,
    /// The groups that select agents, with the agents they selected.
    pub groups: Vec<crate::group_agents::GroupAgents>,
    /// Every limit that applied, with its headroom, in words.
    pub limits: Vec<String>,
}

fn fmt_labels(l: &BTreeMap<String, String>) -> String {
    if l.is_empty() {
        return "{} (any agent)".into();
    }
    format!(
        "{{{}}}",
        l.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
    )
}

fn known_labels(agents: &[AgentInfo]) -> String {
    if agents.is_empty() {
        return "no agent is connected (start faultline-agent on the target nodes, or use local mode)".into();
    }
    let mut lines = Vec::new();
    for a in agents {
        lines.push(format!("{} {}", a.agent_id, fmt_labels(&a.labels)));
    }
    format!("connected agents have labels: {}", lines.join("; "))
}

/// Zone of an agent, for per-zone limits.
pub(crate) fn zone_of(a: &AgentInfo) -> &str {
    a.labels.get(ZONE_LABEL).map(String::as_str).unwrap_or("(no zone)")
}

/// Plans `exp` over the connected `agents`, within `ctx`'s policy.
pub fn plan(exp: &Experiment, agents: &[AgentInfo], ctx: &Context<'_>) -> Result<Plan, Error> {
    let mut out = Vec::new();
    let mut limits = Vec::new();
    crate::blast_radius::run_limits(exp, ctx, &mut limits)?;
    let groups = crate::group_agents::members(exp, agents)?;
    for (index, fault) in exp.faults.iter().enumerate() {
        let mut selector = fmt_labels(&fault.targets.labels);
        if !fault.targets.groups.is_empty() {
            selector += &format!(" in groups {}", fault.targets.groups.join(", "));
        }
        // With targets.groups: the union of those groups' agents.
        let in_groups = |a: &AgentInfo| {
            fault.targets.groups.is_empty()
                || groups
                    .iter()
                    .filter(|g| fault.targets.groups.contains(&g.group))
                    .any(|g| g.members.iter().any(|m| m.agent == a.agent_id))
        };
        let mut matching: Vec<&AgentInfo> = agents
            .iter()
            .filter(|a| {
                fault.targets.labels.iter().all(|(k, v)| a.labels.get(k) == Some(v))
                    && in_groups(a)
                    && fault.targets.node.as_ref().is_none_or(|n| *n == a.agent_id)
            })
            .collect();
        matching.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        if matching.is_empty() {
            return Err(Error::NoMatch {
                fault: fault.name.clone(),
                selector,
                known: known_labels(agents),
            });
        }
        crate::blast_radius::protected_labels(ctx, fault, &mut matching, &mut limits)?;
        let n = match fault.targets.mode {
            Mode::All => matching.len(),
            Mode::Count(c) => {
                if c as usize > matching.len() {
                    return Err(Error::TooFew {
                        fault: fault.name.clone(),
                        selector,
                        wanted: c,
                        matching: matching.len(),
                    });
                }
                c as usize
            }
            Mode::Percent(p) => {
                let n = (matching.len() as f64 * p / 100.0).floor() as usize;
                if n == 0 {
                    return Err(Error::ZeroTargets {
                        fault: fault.name.clone(),
                        percent: p,
                        matching: matching.len(),
                    });
                }
                n
            }
        };
        let targets: Vec<AgentInfo> = matching.iter().take(n).map(|a| (*a).clone()).collect();
        if let Some(a) = targets.iter().find(|a| !fault.kind.runs_on(&a.capabilities)) {
            let kind = fault.kind.requirement();
            return Err(Error::Capability {
                fault: fault.name.clone(),
                agent: a.agent_id.clone(),
                kind,
                supports: a
                    .capabilities
                    .iter()
                    .filter(|c| faultline_proto::is_fault_kind_capability(c))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        if fault.targets.containers.is_some() {
            if let Some(a) = targets
                .iter()
                .find(|a| !a.capabilities.iter().any(|c| c.starts_with("runtime:")))
            {
                return Err(Error::Capability {
                    fault: fault.name.clone(),
                    agent: a.agent_id.clone(),
                    kind: "a container runtime (targets.containers)".into(),
                    supports: a.capabilities.join(", "),
                });
            }
        }
        let peers = match fault.kind.peers() {
            Some(p) => targets
                .iter()
                .map(|t| resolve_peers(fault, p, t, agents))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        crate::blast_radius::fault_limits(exp, ctx, fault, &targets, matching.len(), agents, &mut limits)?;
        out.push(PlannedFault {
            index,
            fault: fault.clone(),
            targets,
            matching: matching.len(),
            peers,
        });
    }
    if limits.is_empty() {
        limits.push(
            "no blast_radius in the experiment and no coordinator policy: every selected agent is targeted".into(),
        );
    }
    Ok(Plan {
        faults: out,
        limits,
        groups,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    pub(crate) fn plan_free(exp: &Experiment, agents: &[AgentInfo]) -> Result<Plan, Error> {
        plan(exp, agents, &Context::unrestricted())
    }

    pub(crate) fn agent(id: &str, zone: &str) -> AgentInfo {
        AgentInfo {
            agent_id: id.into(),
            hostname: id.into(),
            labels: BTreeMap::from([("zone".to_string(), zone.to_string())]),
            addresses: vec![],
            capabilities: vec!["kill".into()],
            version: "t".into(),
            pid: 1,
            connected_at_unix_ms: 0,
            last_heartbeat_unix_ms: 0,
            active_faults: 0,
            cleaned: vec![],
        }
    }

    pub(crate) fn exp(targets: &str, blast: &str) -> Experiment {
        let src = format!(
            "name: t\nhypothesis:\n  probes:\n    - name: p\n      tcp: {{ address: \"127.0.0.1:1\" }}\nduration: 1s\nfaults:\n  - targets: {targets}\n    kill: {{ name: x }}\n{blast}"
        );
        crate::experiment::parse("t.yaml", &src, &HashMap::new()).unwrap()
    }

    #[test]
    fn no_match_lists_the_labels_agents_have() {
        let err = plan_free(
            &exp("{ labels: { zone: z } }", ""),
            &[agent("a1", "a"), agent("b1", "b")],
        )
        .unwrap_err();
        assert_eq!(err.outcome(), Outcome::Error);
        let msg = err.to_string();
        assert!(
            msg.contains("{zone=z}") && msg.contains("a1 {zone=a}") && msg.contains("b1 {zone=b}"),
            "{msg}"
        );
    }

    #[test]
    fn percent_rounds_down_and_zero_is_refused() {
        let fleet = [agent("a1", "a"), agent("a2", "a"), agent("a3", "a")];
        let p = plan_free(&exp("{ percent: 70 }", ""), &fleet).unwrap();
        assert_eq!(p.faults[0].targets.len(), 2);
        let err = plan_free(&exp("{ percent: 10 }", ""), &fleet).unwrap_err();
        assert!(matches!(err, Error::ZeroTargets { .. }), "{err}");
        assert_eq!(err.outcome(), Outcome::Invalid);
    }

    #[test]
    fn blast_radius_refuses_with_the_limit() {
        let fleet = [agent("a1", "a"), agent("a2", "a")];
        let err = plan_free(&exp("{ mode: all }", "blast_radius: { max_targets: 1 }\n"), &fleet).unwrap_err();
        assert!(err.to_string().contains("max_targets 1"), "{err}");
        let err = plan_free(&exp("{ count: 2 }", "blast_radius: { max_percent: 50 }\n"), &fleet).unwrap_err();
        assert!(err.to_string().contains("max_percent 50"), "{err}");
        let ok = plan_free(
            &exp("{ count: 1 }", "blast_radius: { max_targets: 1, max_percent: 50 }\n"),
            &fleet,
        )
        .unwrap();
        assert_eq!(ok.faults[0].targets[0].agent_id, "a1");
        assert_eq!(ok.limits.len(), 2);
    }

    fn net_agent(id: &str, zone: &str, addr: &str, caps: &[&str]) -> AgentInfo {
        AgentInfo {
            addresses: vec![addr.into()],
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            ..agent(id, zone)
        }
    }

    fn net_exp(fault: &str) -> Experiment {
        let src = format!(
            "name: t\nhypothesis:\n  probes:\n    - name: p\n      tcp: {{ address: \"127.0.0.1:1\" }}\nduration: 1s\nfaults:\n  - name: f\n    targets: {{ labels: {{ zone: b }} }}\n    {fault}\n"
        );
        crate::experiment::parse("t.yaml", &src, &HashMap::new()).unwrap()
    }

    #[test]
    fn zones_resolve_to_the_addresses_of_their_agents_without_the_target() {
        let fleet = [
            net_agent("a1", "a", "10.9.0.2", &["block"]),
            net_agent("b1", "b", "10.9.0.3", &["block"]),
            net_agent("b2", "b", "10.9.0.4", &["block"]),
            net_agent("c1", "c", "10.9.0.5", &["block"]),
        ];
        let p = plan_free(
            &net_exp("block: { peers: { zones: [a, b, c], cidrs: [192.0.2.0/24] } }"),
            &fleet,
        )
        .unwrap();
        let pf = &p.faults[0];
        assert_eq!(pf.targets.len(), 2);
        // b1 is cut off from a, c, the other b host and the CIDR, not from itself.
        assert_eq!(pf.peers[0], vec!["10.9.0.2", "10.9.0.4", "10.9.0.5", "192.0.2.0/24"]);
        assert_eq!(pf.peers[1], vec!["10.9.0.2", "10.9.0.3", "10.9.0.5", "192.0.2.0/24"]);
    }

    #[test]
    fn an_empty_zone_is_an_error_not_an_unscoped_fault() {
        let fleet = [net_agent("b1", "b", "10.9.0.3", &["latency:nfqueue"])];
        let err = plan_free(&net_exp("latency: { delay: 10ms, to: { zones: [x] } }"), &fleet).unwrap_err();
        assert_eq!(err.outcome(), Outcome::Error);
        assert!(
            err.to_string().contains("zone \"x\" has no connected agent") && err.to_string().contains("known zones: b"),
            "{err}"
        );
        // A zone holding only the target resolves to nothing: refused too.
        let err = plan_free(&net_exp("latency: { delay: 10ms, to: { zones: [b] } }"), &fleet).unwrap_err();
        assert!(matches!(err, Error::NoPeers { .. }), "{err}");
    }

    #[test]
    fn latency_needs_a_backend_capability_and_the_requested_backend() {
        // Only fault kinds are listed: not what else the agent can do.
        let fleet = [
            net_agent(
                "a1",
                "a",
                "10.9.0.2",
                &["kill", "dry_run", "pod_addresses", "runtime:docker"],
            ),
            net_agent("b1", "b", "10.9.0.3", &["kill"]),
        ];
        let err = plan_free(&net_exp("latency: { delay: 10ms, to: { zones: [a] } }"), &fleet).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot run latency faults (it supports: kill)"),
            "{err}"
        );
        let fleet = [
            net_agent("a1", "a", "10.9.0.2", &[]),
            net_agent("b1", "b", "10.9.0.3", &["latency:nfqueue"]),
        ];
        assert!(plan_free(&net_exp("latency: { delay: 10ms, to: { zones: [a] } }"), &fleet).is_ok());
        let err = plan_free(
            &net_exp("latency: { delay: 10ms, backend: netem, to: { zones: [a] } }"),
            &fleet,
        )
        .unwrap_err();
        assert!(err.to_string().contains("latency (backend netem)"), "{err}");
    }
}
