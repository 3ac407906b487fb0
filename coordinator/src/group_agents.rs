//! The agents of groups that select agents by label (`hypothesis.groups.
//! NAME.agents`), resolved against the connected agents: the one place
//! where a group's selector meets the registry. The planner takes a fault's
//! `targets.groups` from here, and the run engine and `plan` take the
//! per-group probe instances (one per matching agent, with
//! `${group.address}` and `${group.agent}` of that agent) from [`resolve`].
//!
//! A selector that matches no connected agent refuses the run, naming the
//! group, its selector and the labels the connected agents carry (outcome
//! `error`, exit 5, like a fault whose labels match no agent).
//!
//! Groups of pods (`pods: { namespace, labels }`) are resolved the same
//! way from the agents' answers to pod queries ([`crate::group_pods`]):
//! each matching pod is a member, at its own IP; a selector matching no pod
//! refuses the run naming the group and the pods the agents run. A fault
//! on `targets.groups` of pods becomes one fault per group with the
//! group's pod selector as its container targets ([`expand_pod_faults`]):
//! the same fault, injected at the same time on every group's pods.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::experiment::selectors::Member;
use crate::experiment::{Experiment, ParseError};
use crate::registry::AgentInfo;

/// Why a group's agents could not be resolved.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// No connected agent carries the group's labels.
    #[error("group {group:?}: no connected agent matches agents {selector}; {known}")]
    NoAgent {
        group: String,
        selector: String,
        known: String,
    },
    /// A matching agent reported no address a probe could use.
    #[error("group {group:?}: agent {agent} reports no IP address for ${{group.address}}")]
    NoAddress { group: String, agent: String },
    /// A fault's `percent` of a group's pods rounds to none.
    #[error(
        "fault {fault:?}: its percent of group {group:?}'s {pods} pod(s) rounds to zero; raise percent or use count"
    )]
    ZeroPods { fault: String, group: String, pods: usize },
    /// A fault on groups of pods would hit more pods than
    /// `blast_radius.max_targets`.
    #[error("fault {fault:?}: {pods} pods of its groups exceed blast_radius.max_targets {max}")]
    BlastRadius { fault: String, pods: usize, max: u32 },
    /// No agent runs a pod the group's pod selector matches.
    #[error("group {group:?}: no pod matches pods {selector}; {known}")]
    NoPod {
        group: String,
        selector: String,
        known: String,
    },
    /// The file, read again with the agents, was refused (e.g. an address
    /// that makes a probe's URL invalid).
    #[error("{0}")]
    Read(#[from] ParseError),
    /// The blocking task reading the file again did not finish.
    #[error("reading the experiment again with its groups' agents failed: {0}")]
    Task(String),
}

/// A group that selects agents, with the agents it selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupAgents {
    pub group: String,
    /// The agent selector (empty for a group of pods without `agents`).
    pub selector: BTreeMap<String, String>,
    /// For a group of pods: its pod selector (members are then pods).
    pub pods: Option<crate::experiment::selectors::PodGroup>,
    /// Sorted by agent id.
    pub members: Vec<Member>,
}

/// Whether `agent` carries every label of `selector`.
pub fn matches(selector: &BTreeMap<String, String>, agent: &AgentInfo) -> bool {
    selector.iter().all(|(k, v)| agent.labels.get(k) == Some(v))
}

/// `{k=v, ...}`, as plans and errors write a selector.
pub fn fmt_selector(selector: &BTreeMap<String, String>) -> String {
    format!(
        "{{{}}}",
        selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The address of `agent` that `${group.address}` stands for: its first
/// IPv4 address, else its first IPv6 address (in brackets, so
/// `${group.address}:PORT` stays a valid host and port). Link-local IPv6
/// addresses are left out: they need an interface to be reached.
pub fn address_of(agent: &AgentInfo) -> Option<String> {
    let ips: Vec<IpAddr> = agent.addresses.iter().filter_map(|a| a.parse().ok()).collect();
    if let Some(v4) = ips.iter().find(|ip| ip.is_ipv4()) {
        return Some(v4.to_string());
    }
    ips.iter()
        .find(|ip| matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) != 0xfe80))
        .map(|ip| format!("[{ip}]"))
}

/// The agents of every group of `exp` that selects agents, in the groups'
/// order; refused when a selector matches no connected agent.
pub fn members(exp: &Experiment, agents: &[AgentInfo]) -> Result<Vec<GroupAgents>, Error> {
    let mut out = Vec::new();
    for g in &exp.groups {
        if let Some(pods) = &g.pods {
            let members = g.members.clone().ok_or_else(|| Error::NoPod {
                group: g.name.clone(),
                selector: pods.describe(),
                known: "the agents were not asked for their pods".into(),
            })?;
            out.push(GroupAgents {
                group: g.name.clone(),
                selector: g.agents.clone().unwrap_or_default(),
                pods: Some(pods.clone()),
                members,
            });
            continue;
        }
        let Some(selector) = &g.agents else { continue };
        let mut matching: Vec<&AgentInfo> = agents.iter().filter(|a| matches(selector, a)).collect();
        matching.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        if matching.is_empty() {
            return Err(Error::NoAgent {
                group: g.name.clone(),
                selector: fmt_selector(selector),
                known: known(agents),
            });
        }
        let members = matching
            .into_iter()
            .map(|a| {
                Ok(Member {
                    pod: None,
                    agent: a.agent_id.clone(),
                    address: address_of(a).ok_or_else(|| Error::NoAddress {
                        group: g.name.clone(),
                        agent: a.agent_id.clone(),
                    })?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        out.push(GroupAgents {
            group: g.name.clone(),
            selector: selector.clone(),
            pods: None,
            members,
        });
    }
    Ok(out)
}

/// `exp` with its groups' agents resolved: each per-group probe of a group
/// that selects agents runs once per matching agent (named `NAME
/// [GROUP/AGENT]`). An experiment with no such group comes back as it is.
pub fn resolve(exp: &Experiment, agents: &[AgentInfo]) -> Result<Experiment, Error> {
    resolve_with_pods(exp, agents, &BTreeMap::new())
}

/// [`resolve`], with the pods of each group of pods as the agents answered
/// ([`crate::group_pods::query`]): each per-group probe of such a group
/// runs once per pod (named `NAME [GROUP/NAMESPACE/POD]`, with
/// `${group.address}` the pod's IP, `${group.pod}` its namespace/name and
/// `${group.agent}` the agent on its node), and faults on the groups go to
/// their pods.
pub fn resolve_with_pods(
    exp: &Experiment,
    agents: &[AgentInfo],
    pods: &BTreeMap<String, crate::group_pods::PodsOf>,
) -> Result<Experiment, Error> {
    let Some(source) = &exp.unresolved else {
        return Ok(exp.clone());
    };
    let mut with_pods = exp.clone();
    for g in with_pods.groups.iter_mut() {
        let Some(sel) = &g.pods else { continue };
        let found = pods.get(&g.name);
        let members = found.map(|f| f.members.clone()).unwrap_or_default();
        if members.is_empty() {
            return Err(Error::NoPod {
                group: g.name.clone(),
                selector: sel.describe(),
                known: found
                    .map(|f| f.known())
                    .unwrap_or_else(|| "the agents were not asked for their pods".into()),
            });
        }
        if let Some(m) = members.iter().find(|m| m.address.is_empty()) {
            return Err(Error::NoAddress {
                group: g.name.clone(),
                agent: format!("{} (pod {})", m.agent, m.pod.as_deref().unwrap_or("?")),
            });
        }
        g.members = Some(members);
    }
    let resolved_groups = members(&with_pods, agents)?;
    let by_group: BTreeMap<String, Vec<Member>> = resolved_groups
        .iter()
        .map(|g| (g.group.clone(), g.members.clone()))
        .collect();
    let mut out = crate::experiment::parse::parse_resolved(source, &by_group)?;
    for g in out.groups.iter_mut() {
        g.members = with_pods
            .groups
            .iter()
            .find(|w| w.name == g.name)
            .and_then(|w| w.members.clone());
    }
    expand_pod_faults(&mut out)?;
    Ok(out)
}

/// Each fault whose `targets.groups` names groups of pods becomes one
/// fault per pod of those groups (named `NAME [GROUP/NAMESPACE/POD]`),
/// on the agent of the pod's node, carrying a selector of exactly that pod
/// (its namespace, name and the group's labels) as container targets.
/// One per pod, not one per group: network faults act on one network
/// namespace per fault, and a group's pods each have their own. The
/// fault's mode picks pods of each group (`one`/`count: N`: the first N by
/// node and name; `percent: P`: P % rounded down). All are injected
/// together, so every pod gets the same fault at the same time; the blast
/// radius is checked over all of them ([`check_pod_blast_radius`]) and per
/// pod from the agents' dry runs.
pub fn expand_pod_faults(exp: &mut Experiment) -> Result<(), Error> {
    use crate::experiment::Mode;
    let mut out = Vec::with_capacity(exp.faults.len());
    for f in std::mem::take(&mut exp.faults) {
        let groups: Vec<&crate::experiment::groups::Group> = f
            .targets
            .groups
            .iter()
            .filter_map(|n| exp.groups.iter().find(|g| &g.name == n))
            .filter(|g| g.pods.is_some())
            .collect();
        if groups.is_empty() {
            out.push(f);
            continue;
        }
        let mut total = 0usize;
        for g in groups {
            let (Some(pg), Some(members)) = (&g.pods, &g.members) else {
                continue;
            };
            let keep = match f.targets.mode {
                Mode::All => members.len(),
                Mode::Count(n) => (n as usize).min(members.len()),
                Mode::Percent(p) => (members.len() as f64 * p / 100.0).floor() as usize,
            };
            if keep == 0 {
                return Err(Error::ZeroPods {
                    fault: f.name.clone(),
                    group: g.name.clone(),
                    pods: members.len(),
                });
            }
            for m in &members[..keep] {
                let Some(pod) = &m.pod else { continue };
                let mut one = f.clone();
                one.name = format!("{} [{}/{pod}]", f.name, g.name);
                one.targets.groups = vec![g.name.clone()];
                one.targets.node = Some(m.agent.clone());
                one.targets.mode = Mode::All;
                let mut c = pg.containers();
                if let Some(p) = c.pod.as_mut() {
                    p.name = pod.split_once('/').map(|(_, n)| n.to_string());
                }
                one.targets.containers = Some(c);
                out.push(one);
                total += 1;
            }
        }
        if let Some(max) = exp.blast_radius.max_targets {
            if total > max as usize {
                return Err(Error::BlastRadius {
                    fault: f.name.clone(),
                    pods: total,
                    max,
                });
            }
        }
    }
    exp.faults = out;
    Ok(())
}

/// [`resolve`] on the blocking pool (reading the file once per agent is
/// parsing, which runs off the async runtime like every other parse),
/// after asking the agents for the pods of every group of pods.
pub async fn resolve_off_runtime(exp: &Experiment, registry: &crate::registry::Registry) -> Result<Experiment, Error> {
    if exp.unresolved.is_none() {
        return Ok(exp.clone());
    }
    let pods = crate::group_pods::query(exp, registry, crate::preview::PREVIEW_TIMEOUT).await;
    let exp = exp.clone();
    let agents = registry.agents();
    tokio::task::spawn_blocking(move || resolve_with_pods(&exp, &agents, &pods))
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

fn known(agents: &[AgentInfo]) -> String {
    if agents.is_empty() {
        return "no agent is connected".into();
    }
    let list: Vec<String> = agents
        .iter()
        .map(|a| format!("{} {}", a.agent_id, fmt_selector(&a.labels)))
        .collect();
    format!("connected agents have labels: {}", list.join("; "))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn agent(id: &str, track: &str, addresses: &[&str]) -> AgentInfo {
        AgentInfo {
            agent_id: id.into(),
            hostname: id.into(),
            labels: BTreeMap::from([("track".to_string(), track.to_string())]),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            capabilities: vec!["latency".into()],
            version: String::new(),
            pid: 1,
            connected_at_unix_ms: 0,
            last_heartbeat_unix_ms: 0,
            active_faults: 0,
            cleaned: Vec::new(),
        }
    }

    const FILE: &str = "name: sel
hypothesis:
  groups:
    control: { agents: { track: stable }, port: \"8080\" }
    canary: { agents: { track: canary }, port: \"8080\" }
  probes:
    - name: api
      per_group: true
      interval: 1s
      http: { url: \"http://${group.address}:${group.port}/work?from=${group.agent}\" }
duration: 2s
faults:
  - name: slow
    targets: { groups: [control, canary] }
    latency: { delay: 10ms }
judge:
  control: control
  canary: canary
  metrics:
    - { probe: api, metric: latency }
";

    #[test]
    fn a_selector_group_probes_each_matching_agent_at_its_own_address() {
        let exp = crate::experiment::parse("sel.yaml", FILE, &HashMap::new()).unwrap();
        assert!(exp.unresolved.is_some());
        let names: Vec<&str> = exp.hypothesis.probes.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["api [control]", "api [canary]"],
            "one stand-in instance per group"
        );
        let agents = [
            agent("n3", "canary", &["fe80::1", "10.0.0.3"]),
            agent("n1", "stable", &["10.0.0.1"]),
            agent("n2", "canary", &["2001:db8::2"]),
        ];
        let r = resolve(&exp, &agents).unwrap();
        assert!(r.unresolved.is_none());
        let got: Vec<(String, String)> = r
            .hypothesis
            .probes
            .iter()
            .map(|p| (p.name.clone(), p.kind.target()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "api [control/n1]".to_string(),
                    "GET http://10.0.0.1:8080/work?from=n1".to_string()
                ),
                (
                    "api [canary/n2]".into(),
                    "GET http://[2001:db8::2]:8080/work?from=n2".into()
                ),
                ("api [canary/n3]".into(), "GET http://10.0.0.3:8080/work?from=n3".into()),
            ]
        );
        let groups: Vec<(&str, Option<&str>)> = r
            .hypothesis
            .probes
            .iter()
            .map(|p| {
                let g = p.group.as_ref().unwrap();
                (g.group.as_str(), g.agent.as_deref())
            })
            .collect();
        assert_eq!(
            groups,
            [("control", Some("n1")), ("canary", Some("n2")), ("canary", Some("n3"))]
        );
        assert!(r.judge.is_some());
    }

    #[test]
    fn a_selector_matching_no_agent_names_the_group_and_its_labels() {
        let exp = crate::experiment::parse("sel.yaml", FILE, &HashMap::new()).unwrap();
        let e = resolve(&exp, &[agent("n1", "stable", &["10.0.0.1"])]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "group \"canary\": no connected agent matches agents {track=canary}; connected agents have labels: n1 {track=stable}"
        );
        let e = resolve(
            &exp,
            &[
                agent("n1", "stable", &["10.0.0.1"]),
                agent("n2", "canary", &["fe80::2"]),
            ],
        )
        .unwrap_err();
        assert_eq!(
            e,
            Error::NoAddress {
                group: "canary".into(),
                agent: "n2".into()
            }
        );
    }

    #[test]
    fn a_fault_on_groups_targets_the_union_of_their_agents_and_an_empty_group_refuses_the_plan() {
        use crate::planner::{plan, Context};
        let agents = [
            agent("n3", "canary", &["10.0.0.3"]),
            agent("n1", "stable", &["10.0.0.1"]),
            agent("n2", "canary", &["10.0.0.2"]),
            agent("n4", "other", &["10.0.0.4"]),
        ];
        let targets_of = |text: &str| -> Vec<String> {
            let exp = crate::experiment::parse("sel.yaml", text, &HashMap::new()).unwrap();
            let p = plan(&resolve(&exp, &agents).unwrap(), &agents, &Context::unrestricted()).unwrap();
            let g: Vec<(String, usize)> = p.groups.iter().map(|g| (g.group.clone(), g.members.len())).collect();
            assert_eq!(g, [("control".to_string(), 1), ("canary".into(), 2)]);
            p.faults[0].targets.iter().map(|t| t.agent_id.clone()).collect()
        };
        assert_eq!(targets_of(FILE), ["n1", "n2", "n3"]);
        let one = FILE.replace("groups: [control, canary]", "groups: [canary]");
        assert_eq!(targets_of(&one), ["n2", "n3"]);
        let both = FILE.replace(
            "groups: [control, canary]",
            "labels: { track: canary }, groups: [control]",
        );
        let exp = crate::experiment::parse("sel.yaml", &both, &HashMap::new()).unwrap();
        let e = plan(&exp, &agents, &Context::unrestricted()).unwrap_err();
        assert!(matches!(e, crate::planner::Error::NoMatch { .. }), "{e}");
        // No canary agent: refused with the group's selector, exit 5.
        let e = plan(&exp, &agents[1..2], &Context::unrestricted()).unwrap_err();
        assert_eq!(e.outcome(), crate::outcome::Outcome::Error);
        assert!(
            e.to_string()
                .starts_with("group \"canary\": no connected agent matches agents {track=canary}"),
            "{e}"
        );
    }
}
