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

/// The `${group.KEY}` keys an agent of a selecting group supplies.
pub const FROM_AGENT: [&str; 2] = ["address", "agent"];

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
}

impl Member {
    /// The value of `${group.KEY}` this agent supplies, if any.
    pub fn value(&self, key: &str) -> Option<&str> {
        match key {
            "address" => Some(&self.address),
            "agent" => Some(&self.agent),
            _ => None,
        }
    }

    fn stand_in() -> Member {
        Member {
            agent: "agent".into(),
            address: STAND_IN_ADDRESS.into(),
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
        match (&g.agents, members.and_then(|m| m.get(&g.name))) {
            (Some(_), Some(ms)) => out.extend(ms.iter().map(|m| Reading {
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
    r.member
        .clone()
        .or_else(|| groups[r.group].agents.as_ref().map(|_| Member::stand_in()))
}

/// Checks `agents:` of group `group`.
pub(super) fn check_selector(
    group: &str,
    labels: BTreeMap<String, String>,
) -> std::result::Result<BTreeMap<String, String>, String> {
    if labels.is_empty() {
        return Err(format!(
            "hypothesis.groups.{group}.agents: name at least one label (e.g. agents: {{ track: canary }}); an empty selector would put every agent in the group"
        ));
    }
    for (k, v) in &labels {
        if k.is_empty() || v.is_empty() || k.len() > 253 || v.len() > 253 {
            return Err(format!(
                "hypothesis.groups.{group}.agents: label {k:?}={v:?}: a label key and value must be 1 to 253 characters"
            ));
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
                Some(g) if g.agents.is_none() => Some(format!(
                    "fault {:?}: targets.groups names group {name:?}, which selects no agents; give it agents: {{ LABEL: VALUE }} or select the nodes with targets.labels",
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
