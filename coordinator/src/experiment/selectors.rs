//! Groups that select agents by label, as the experiment file sees them:
//!
//! ```yaml
//! hypothesis:
//!   groups:
//!     control: { agents: { track: stable }, port: "8080" }
//!     canary:  { agents: { track: canary }, port: "8080" }
//!   probes:
//!     - name: api
//!       per_group: true
//!       http: { url: "http://${group.address}:${group.port}/work" }
//! faults:
//!   - name: slow
//!     targets: { groups: [control, canary] }
//! ```
//!
//! Which agents match is known only when a run is planned (the
//! coordinator's registry knows every connected agent's labels and
//! addresses; [`crate::group_agents`] does that). Until then the file is
//! read with a stand-in agent, so `validate` checks every line, and the
//! experiment keeps the text ([`Source`]) to be read again with the real
//! agents: once per matching agent for each per-group probe, with
//! `${group.address}` and `${group.agent}` taken from that agent.

use std::collections::BTreeMap;

use super::model::Experiment;
use super::parse::{Error, Result};

/// The `${group.KEY}` keys a member of a selecting group supplies (`pod`
/// only a group of pods).
pub const FROM_AGENT: [&str; 3] = ["address", "agent", "pod"];

/// A group of pods (`hypothesis.groups.NAME.pods`), the same selector as a
/// fault's `targets.containers.pod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodGroup {
    pub pod: super::model::Pod,
    /// Pods in `kube-system` may be selected. By default, false, as for a
    /// fault's targets.
    pub allow_kube_system: bool,
}

impl PodGroup {
    /// The container selector a fault on this group's pods carries (every
    /// container of every matching pod on a node).
    pub fn containers(&self) -> super::model::Containers {
        super::model::Containers {
            name: None,
            image: None,
            labels: BTreeMap::new(),
            count: 0,
            percent: None,
            allow_pid1: false,
            pod: Some(self.pod.clone()),
            container: None,
            allow_kube_system: self.allow_kube_system,
        }
    }

    /// `{namespace=NS, name=N, k=v, ...}`, as plans and errors write it.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("namespace={}", self.pod.namespace)];
        if let Some(n) = &self.pod.name {
            parts.push(format!("name={n}"));
        }
        parts.extend(self.pod.labels.iter().map(|(k, v)| format!("{k}={v}")));
        format!("{{{}}}", parts.join(", "))
    }
}

/// The address put in while no agent is known (validation): TEST-NET-1
/// (RFC 5737), which routes nowhere, so nothing is ever probed with it.
pub const STAND_IN_ADDRESS: &str = "192.0.2.1";

/// One agent of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The agent's id (`${group.agent}`).
    pub agent: String,
    /// The address probes use to reach it (`${group.address}`).
    pub address: String,
    /// For a group of pods: the pod (`namespace/name`, `${group.pod}`) on
    /// `agent`'s node, whose IP `address` is.
    pub pod: Option<String>,
}

impl Member {
    /// The value of `${group.KEY}` this agent supplies, if any.
    pub fn value(&self, key: &str) -> Option<&str> {
        match key {
            "address" => Some(&self.address),
            "agent" => Some(&self.agent),
            "pod" => self.pod.as_deref(),
            _ => None,
        }
    }

    fn stand_in(pods: bool) -> Member {
        Member {
            agent: "agent".into(),
            address: STAND_IN_ADDRESS.into(),
            pod: pods.then(|| "namespace/pod".into()),
        }
    }
}

/// The file's text with `${var}` already replaced, kept by an experiment
/// whose groups select agents until it is resolved against the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub file: String,
    pub text: String,
}

/// One reading of the file: for group `group` (an index into the groups),
/// and the agent it is read for, when its agents are known.
#[derive(Debug, Clone)]
pub struct Reading {
    pub group: usize,
    pub member: Option<Member>,
}

/// The readings of the file: one per group, or, for a group that selects
/// agents and whose `members` are given, one per member (a selecting group
/// without members is read once with a stand-in agent).
pub(super) fn readings(
    groups: &[super::groups::Group],
    members: Option<&BTreeMap<String, Vec<Member>>>,
) -> Vec<Reading> {
    let mut out = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        match (g.selects(), members.and_then(|m| m.get(&g.name))) {
            (true, Some(ms)) => out.extend(ms.iter().map(|m| Reading {
                group: i,
                member: Some(m.clone()),
            })),
            _ => out.push(Reading { group: i, member: None }),
        }
    }
    out
}

/// The agent whose values `${group.address}` / `${group.agent}` take in
/// `r`: its member, or a stand-in for a selecting group not yet resolved.
pub(super) fn substituted(groups: &[super::groups::Group], r: &Reading) -> Option<Member> {
    r.member.clone().or_else(|| {
        let g = &groups[r.group];
        g.selects().then(|| Member::stand_in(g.pods.is_some()))
    })
}

/// Why a group's `agents:` or `pods:` selector was refused; serde places
/// the message at the group. `at` is the field's path, e.g.
/// `hypothesis.groups.canary.pods.namespace`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum SelectorError {
    #[error("{at}: expected a string, number or boolean")]
    NotScalar { at: String },
    #[error("{at}: expected true or false")]
    NotBool { at: String },
    #[error("{at}: expected a string")]
    NotString { at: String },
    #[error("{at}: expected a mapping of pod labels, e.g. labels: {{ track: canary }}")]
    NotLabels { at: String },
    #[error("{at}: unknown field {field:?}; use namespace, labels, name, allow_kube_system")]
    UnknownPodField { at: String, field: String },
    #[error("{at}: name the pods' namespace (e.g. pods: {{ namespace: shop, labels: {{ track: canary }} }})")]
    NoNamespace { at: String },
    #[error("{at}: kube-system pods are protected; set allow_kube_system: true in the group's pods to select them")]
    KubeSystem { at: String },
    #[error(
        "{at}: name at least one pod label or the pod's name; a whole namespace is rarely one version of a service"
    )]
    WholeNamespace { at: String },
    #[error("{at}: name at least one label (e.g. agents: {{ track: canary }}); an empty selector would put every agent in the group")]
    EmptyAgents { at: String },
    #[error("{at}: label {key:?}={value:?}: a label key and value must be 1 to 253 characters")]
    LabelLength { at: String, key: String, value: String },
}

/// The values of mapping `key` of group `group`, which must all be
/// strings, numbers or booleans.
pub(super) fn scalars(
    group: &str,
    key: &str,
    m: BTreeMap<String, super::groups::Entry>,
) -> std::result::Result<BTreeMap<String, String>, SelectorError> {
    m.into_iter()
        .map(|(k, v)| match v {
            super::groups::Entry::Scalar(v) => Ok((k, v)),
            super::groups::Entry::Labels(_) => Err(SelectorError::NotScalar {
                at: format!("hypothesis.groups.{group}.{key}.{k}"),
            }),
        })
        .collect()
}

/// Checks `pods:` of group `group`: `namespace` (required), `labels`,
/// `name`, `allow_kube_system`; kube-system only with
/// `allow_kube_system: true`, as a fault's targets.
pub(super) fn check_pods(
    group: &str,
    m: BTreeMap<String, super::groups::Entry>,
) -> std::result::Result<PodGroup, SelectorError> {
    use super::groups::Entry;
    let pods = format!("hypothesis.groups.{group}.pods");
    let at = |k: &str| format!("{pods}.{k}");
    let (mut namespace, mut name, mut labels, mut allow) = (None, None, BTreeMap::new(), false);
    for (k, v) in m {
        match (k.as_str(), v) {
            ("namespace", Entry::Scalar(v)) => namespace = Some(v),
            ("name", Entry::Scalar(v)) => name = Some(v),
            ("labels", Entry::Labels(l)) => labels = scalars(group, "pods.labels", l)?,
            ("allow_kube_system", Entry::Scalar(v)) => {
                allow = match v.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(SelectorError::NotBool { at: at(&k) }),
                }
            }
            ("namespace" | "name" | "allow_kube_system", Entry::Labels(_)) => {
                return Err(SelectorError::NotString { at: at(&k) })
            }
            ("labels", Entry::Scalar(_)) => return Err(SelectorError::NotLabels { at: at(&k) }),
            _ => return Err(SelectorError::UnknownPodField { at: pods, field: k }),
        }
    }
    let Some(namespace) = namespace.filter(|n| !n.is_empty()) else {
        return Err(SelectorError::NoNamespace { at: at("namespace") });
    };
    if namespace == "kube-system" && !allow {
        return Err(SelectorError::KubeSystem { at: pods });
    }
    if labels.is_empty() && name.is_none() {
        return Err(SelectorError::WholeNamespace { at: pods });
    }
    Ok(PodGroup {
        pod: super::model::Pod {
            namespace,
            labels,
            name,
        },
        allow_kube_system: allow,
    })
}

/// Checks `agents:` of group `group`.
pub(super) fn check_selector(
    group: &str,
    labels: BTreeMap<String, String>,
) -> std::result::Result<BTreeMap<String, String>, SelectorError> {
    let at = || format!("hypothesis.groups.{group}.agents");
    if labels.is_empty() {
        return Err(SelectorError::EmptyAgents { at: at() });
    }
    for (k, v) in &labels {
        if k.is_empty() || v.is_empty() || k.len() > 253 || v.len() > 253 {
            return Err(SelectorError::LabelLength {
                at: at(),
                key: k.clone(),
                value: v.clone(),
            });
        }
    }
    Ok(labels)
}

/// Checks every fault's `targets.groups` against the groups: each must be
/// a group that selects agents. The error points at the fault's line.
pub(super) fn check_fault_groups(file: &str, text: &str, exp: &Experiment) -> Result<()> {
    for f in &exp.faults {
        for name in &f.targets.groups {
            let problem = match exp.groups.iter().find(|g| &g.name == name) {
                None if exp.groups.is_empty() => Some(format!(
                    "fault {:?}: targets.groups names group {name:?}, but no groups are defined; define it under hypothesis.groups with agents: {{ LABEL: VALUE }}",
                    f.name
                )),
                None => Some(format!(
                    "fault {:?}: targets.groups names group {name:?}, which is not defined (groups: {})",
                    f.name,
                    exp.groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>().join(", ")
                )),
                Some(g) if !g.selects() => Some(format!(
                    "fault {:?}: targets.groups names group {name:?}, which selects no agents or pods; give it agents: {{ LABEL: VALUE }} (or pods: {{ namespace: NS, labels: {{ ... }} }}) or select the nodes with targets.labels",
                    f.name
                )),
                Some(g)
                    if g.pods.is_some()
                        && f.targets.groups.iter().any(|o| {
                            exp.groups.iter().any(|h| &h.name == o && h.agents.is_some() && h.pods.is_none())
                        }) =>
                {
                    Some(format!(
                        "fault {:?}: targets.groups mixes groups of pods ({name:?}) and groups of agents; write one fault for each",
                        f.name
                    ))
                }
                Some(g) if g.pods.is_some() && f.targets.containers.is_some() => Some(format!(
                    "fault {:?}: targets.groups names group {name:?}, a group of pods, so the fault goes to the group's pods; remove targets.containers",
                    f.name
                )),
                Some(_) => None,
            };
            if let Some(message) = problem {
                let (line, column) = locate_fault_group(text, name);
                return Err(Error {
                    file: file.to_string(),
                    line,
                    column,
                    message,
                });
            }
        }
    }
    Ok(())
}

/// The first line under `faults:` that mentions `groups` and `name`; the
/// `faults:` line if none does.
fn locate_fault_group(text: &str, name: &str) -> (usize, usize) {
    let (start, col) = super::parse::locate(text, "faults");
    if start == 0 {
        return (0, 0);
    }
    let mut in_groups = false;
    for (i, l) in text.lines().enumerate().skip(start) {
        if !l.is_empty() && !l.starts_with([' ', '\t', '#', '-']) {
            break;
        }
        // `groups: [a, b]` on one line, or `groups:` then `- a` lines.
        if l.contains("groups") {
            in_groups = true;
        }
        if in_groups {
            if let Some(c) = l.find(name) {
                return (i + 1, c + 1);
            }
        }
    }
    (start, col)
}

#[cfg(test)]
mod tests;
