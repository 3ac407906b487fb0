//! The pods of release-gate groups of pods (`hypothesis.groups.NAME.pods`),
//! as the agents see them: only an agent knows which pods its node runs
//! (it reads them off its container runtime's CRI labels, without
//! Kubernetes API rights) and each pod's IP (read from the pod's network
//! namespace). [`query`] sends every agent that may hold a group's pods (the
//! group's `agents` selector, else every agent) a **pod query**: a dry-run
//! Inject with no fault kind and the group's pod selector, answered PLANNED
//! with the matching pods and their addresses. Only agents advertising
//! [`faultline_proto::CAPABILITY_POD_ADDRESSES`] are asked: an older agent
//! would answer a kind-less Inject with a refusal at best.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use faultline_proto::v1;

use crate::experiment::selectors::Member;
use crate::experiment::Experiment;
use crate::registry::Registry;

/// The pods of one group, as the agents answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodsOf {
    /// Every matching pod (sorted by agent, then namespace/name).
    pub members: Vec<Member>,
    /// One "agent: answer" line per agent asked (or not asked, and why),
    /// for a refusal that must say what pods exist.
    pub answers: Vec<String>,
}

impl PodsOf {
    /// What the agents said, for a group no pod matched.
    pub fn known(&self) -> String {
        if self.answers.is_empty() {
            return "no connected agent could be asked (none matches the group's agents selector)".into();
        }
        format!("the agents answered: {}", self.answers.join("; "))
    }
}

/// `${group.address}` for IP `ip`: IPv6 in brackets, so
/// `${group.address}:PORT` stays a valid host and port.
fn address(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => ip.to_string(),
    }
}

/// Asks the agents for the pods of every group of pods of `exp`, waiting
/// at most `timeout` for the answers; groups of pods only, by group name.
pub async fn query(exp: &Experiment, registry: &Registry, timeout: Duration) -> BTreeMap<String, PodsOf> {
    let mut out: BTreeMap<String, PodsOf> = BTreeMap::new();
    if !exp.groups.iter().any(|g| g.pods.is_some()) {
        return out;
    }
    let rand = uuid::Uuid::new_v4().simple().to_string();
    // A valid run id that no real run can have (run ids start with `r`),
    // like `plan`'s previews.
    let query_id = format!("plan-{}", &rand[..12]);
    let mut statuses = registry.subscribe(&query_id);
    let mut pending: HashMap<(String, String), String> = HashMap::new();
    let agents = registry.agents();
    let mut n = 0usize;
    for g in &exp.groups {
        let Some(pods) = &g.pods else { continue };
        let entry = out.entry(g.name.clone()).or_default();
        for a in agents
            .iter()
            .filter(|a| g.agents.as_ref().is_none_or(|sel| crate::group_agents::matches(sel, a)))
        {
            if !a
                .capabilities
                .iter()
                .any(|c| c == faultline_proto::CAPABILITY_POD_ADDRESSES)
            {
                entry.answers.push(format!(
                    "{}: not asked (no container runtime there, or a version without pod queries)",
                    a.agent_id
                ));
                continue;
            }
            n += 1;
            let fault_id = format!("{query_id}-{n}");
            let inject = v1::Inject {
                fault_id: fault_id.clone(),
                run_id: query_id.clone(),
                spec: Some(v1::FaultSpec::default()),
                lease_ms: 0,
                dry_run: true,
                container: Some(pods.containers().to_wire()),
            };
            match registry.inject(&a.agent_id, inject) {
                Ok(()) => {
                    pending.insert((fault_id, a.agent_id.clone()), g.name.clone());
                }
                Err(e) => entry.answers.push(format!("{}: not asked: {e}", a.agent_id)),
            }
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    while !pending.is_empty() {
        let Ok(Some(st)) = tokio::time::timeout_at(deadline, statuses.recv()).await else {
            break;
        };
        let Some(group) = pending.remove(&(st.status.fault_id.clone(), st.agent_id.clone())) else {
            continue;
        };
        let entry = out.entry(group).or_default();
        let s = &st.status;
        let state = faultline_proto::fault_state_name(s.state());
        entry.answers.push(match s.state() {
            v1::FaultState::Planned => format!("{}: {}", st.agent_id, s.detail),
            _ => format!("{}: {state}: {}", st.agent_id, s.detail),
        });
        if s.state() == v1::FaultState::Planned {
            entry.members.extend(s.pods.iter().map(|p| Member {
                agent: st.agent_id.clone(),
                address: address(&p.ip),
                pod: Some(format!("{}/{}", p.namespace, p.name)),
            }));
        }
    }
    registry.unsubscribe(&query_id);
    for ((_, agent), group) in pending {
        out.entry(group)
            .or_default()
            .answers
            .push(format!("{agent}: no answer"));
    }
    for p in out.values_mut() {
        p.members.sort_by(|a, b| (&a.agent, &a.pod).cmp(&(&b.agent, &b.pod)));
        p.answers.sort();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::AgentInfo;
    use tokio::sync::mpsc;

    const FILE: &str = "name: pods
hypothesis:
  groups:
    control: { pods: { namespace: shop, labels: { track: stable } } }
    canary: { pods: { namespace: shop, labels: { track: canary } }, agents: { zone: a } }
  probes:
    - name: api
      per_group: true
      interval: 1s
      http: { url: \"http://${group.address}:8080/work?pod=${group.pod}&node=${group.agent}\" }
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

    fn agent(id: &str, zone: &str) -> AgentInfo {
        let mut a = AgentInfo::from_hello(v1::Hello {
            agent_id: id.into(),
            hostname: id.into(),
            capabilities: vec![
                "latency".into(),
                "dry_run".into(),
                "runtime:docker".into(),
                faultline_proto::CAPABILITY_POD_ADDRESSES.into(),
            ],
            ..Default::default()
        })
        .unwrap();
        a.labels.insert("zone".into(), zone.into());
        a
    }

    /// Answers every pod query agent `id` receives with `pods` for pod
    /// selectors whose labels contain `track`.
    fn answer(
        registry: std::sync::Arc<Registry>,
        id: &'static str,
        mut inbox: mpsc::Receiver<v1::CoordinatorMessage>,
        pods: &'static [(&'static str, &'static str, &'static str)],
    ) {
        tokio::spawn(async move {
            while let Some(v1::CoordinatorMessage {
                msg: Some(v1::coordinator_message::Msg::Inject(i)),
            }) = inbox.recv().await
            {
                assert!(i.dry_run && i.spec.as_ref().is_some_and(|s| s.kind.is_none()));
                let sel = i.container.unwrap().pod.unwrap();
                let track = sel.labels.get("track").cloned().unwrap_or_default();
                let matching: Vec<v1::PodAddress> = pods
                    .iter()
                    .filter(|(_, name, _)| name.contains(track.as_str()))
                    .map(|(ns, name, ip)| v1::PodAddress {
                        namespace: ns.to_string(),
                        name: name.to_string(),
                        ip: ip.to_string(),
                        containers: vec![format!("{name}-main")],
                    })
                    .collect();
                registry.route(
                    id,
                    v1::FaultStatus {
                        fault_id: i.fault_id,
                        run_id: i.run_id,
                        state: v1::FaultState::Planned as i32,
                        detail: if matching.is_empty() {
                            format!(
                                "no pod matches; pods on this node: {}",
                                pods.iter().map(|p| p.1).collect::<Vec<_>>().join(", ")
                            )
                        } else {
                            format!("{} pod(s) match", matching.len())
                        },
                        pods: matching,
                        ..Default::default()
                    },
                );
            }
        });
    }

    #[tokio::test]
    async fn groups_of_pods_probe_each_pod_at_its_ip_and_the_fault_goes_to_each_groups_pods() {
        let registry = std::sync::Arc::new(Registry::new());
        let mut inboxes = Vec::new();
        for a in [agent("n1", "a"), agent("n2", "b")] {
            let (tx, rx) = mpsc::channel(8);
            registry.add(a, tx).unwrap();
            inboxes.push(rx);
        }
        let n2 = inboxes.pop().unwrap();
        let n1 = inboxes.pop().unwrap();
        answer(
            registry.clone(),
            "n1",
            n1,
            &[
                ("shop", "web-stable-0", "172.17.0.5"),
                ("shop", "web-canary-0", "172.17.0.6"),
            ],
        );
        answer(registry.clone(), "n2", n2, &[("shop", "web-stable-1", "fd00::7")]);
        let exp = crate::experiment::parse("pods.yaml", FILE, &HashMap::new()).unwrap();
        assert!(exp.unresolved.is_some(), "groups of pods are resolved at plan time");
        let r = crate::group_agents::resolve_off_runtime(&exp, &registry).await.unwrap();
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
                    "api [control/shop/web-stable-0]".to_string(),
                    "GET http://172.17.0.5:8080/work?pod=shop/web-stable-0&node=n1".to_string()
                ),
                (
                    "api [control/shop/web-stable-1]".into(),
                    "GET http://[fd00::7]:8080/work?pod=shop/web-stable-1&node=n2".into()
                ),
                (
                    "api [canary/shop/web-canary-0]".into(),
                    "GET http://172.17.0.6:8080/work?pod=shop/web-canary-0&node=n1".into()
                ),
            ],
            "the canary group is restricted to zone a's agent"
        );
        // One fault per pod, on its node, carrying a selector of that pod.
        let faults: Vec<(String, Option<String>, String)> = r
            .faults
            .iter()
            .map(|f| {
                let c = f.targets.containers.as_ref().unwrap();
                (f.name.clone(), f.targets.node.clone(), c.describe())
            })
            .collect();
        let want = |name: &str, node: &str, pod: &str, track: &str| {
            (
                name.to_string(),
                Some(node.to_string()),
                format!("containers pod namespace=shop pod name={pod} pod track={track} (all)"),
            )
        };
        assert_eq!(
            faults,
            [
                want("slow [control/shop/web-stable-0]", "n1", "web-stable-0", "stable"),
                want("slow [control/shop/web-stable-1]", "n2", "web-stable-1", "stable"),
                want("slow [canary/shop/web-canary-0]", "n1", "web-canary-0", "canary"),
            ]
        );
        let p = crate::planner::plan(&r, &registry.agents(), &crate::planner::Context::unrestricted()).unwrap();
        let targets: Vec<Vec<&str>> = p
            .faults
            .iter()
            .map(|f| f.targets.iter().map(|t| t.agent_id.as_str()).collect())
            .collect();
        assert_eq!(
            targets,
            [vec!["n1"], vec!["n2"], vec!["n1"]],
            "each pod's fault goes to its node"
        );
        // blast_radius.max_targets counts the pods of all groups together.
        let mut small = r.clone();
        small.blast_radius.max_targets = Some(2);
        small.faults = exp.faults.clone();
        for g in small.groups.iter_mut() {
            assert!(g.members.is_some());
        }
        let e = crate::group_agents::expand_pod_faults(&mut small).unwrap_err();
        assert_eq!(
            e.to_string(),
            "fault \"slow\": 3 pods of its groups exceed blast_radius.max_targets 2"
        );
        assert_eq!(
            crate::planner::Error::from(e).outcome(),
            crate::outcome::Outcome::Invalid,
            "exit 2"
        );
        // count: 1 takes the first pod of each group.
        let mut one = r.clone();
        one.faults = exp.faults.clone();
        one.faults[0].targets.mode = crate::experiment::Mode::Count(1);
        crate::group_agents::expand_pod_faults(&mut one).unwrap();
        let names: Vec<&str> = one.faults.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["slow [control/shop/web-stable-0]", "slow [canary/shop/web-canary-0]"]
        );
        type Members = Vec<(String, String, Option<String>)>;
        let groups: Vec<(String, Members)> = p
            .groups
            .iter()
            .map(|g| {
                (
                    g.group.clone(),
                    g.members
                        .iter()
                        .map(|m| (m.agent.clone(), m.address.clone(), m.pod.clone()))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            groups[1].1,
            [(
                "n1".to_string(),
                "172.17.0.6".to_string(),
                Some("shop/web-canary-0".to_string())
            )]
        );
        assert_eq!(groups[0].1.len(), 2);
    }

    #[tokio::test]
    async fn a_pod_selector_matching_nothing_names_the_group_and_the_pods_that_exist() {
        let registry = std::sync::Arc::new(Registry::new());
        let (tx, rx) = mpsc::channel(8);
        registry.add(agent("n1", "a"), tx).unwrap();
        answer(registry.clone(), "n1", rx, &[("shop", "web-stable-0", "172.17.0.5")]);
        let exp = crate::experiment::parse("pods.yaml", FILE, &HashMap::new()).unwrap();
        let e = crate::group_agents::resolve_off_runtime(&exp, &registry)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "group \"canary\": no pod matches pods {namespace=shop, track=canary}; the agents answered: n1: no pod matches; pods on this node: web-stable-0"
        );
        let pe = crate::planner::Error::from(e);
        assert_eq!(pe.outcome(), crate::outcome::Outcome::Error, "exit 5");
    }
}
