//! Groups of probe targets, for release gates: `hypothesis.groups` names
//! groups (e.g. `control` and `canary`), each a map of values; a probe with
//! `per_group: true` runs once per group, with every `${group.KEY}` in it
//! replaced by that group's value of KEY (`${group.name}` is the group's
//! own name). The judge ([`super::judge`]) then compares the groups'
//! samples metric by metric.
//!
//! ```yaml
//! hypothesis:
//!   groups:
//!     control: { host: "10.0.0.1:8080", track: stable }
//!     canary:  { host: "10.0.0.2:8080", track: canary }
//!   probes:
//!     - name: api
//!       per_group: true
//!       http: { url: "http://${group.host}/work" }
//! ```
//!
//! How: the file is read once per group with that group's values put in
//! (line by line, like `${var}`, so every error keeps its file:line:column
//! and names the group), and the per-group probes are taken from each
//! reading. Everything else (faults, shared probes, limits) must read the
//! same for every group: a fault or a probe without `per_group` that
//! mentions `${group.KEY}` is refused, because faults hit both groups'
//! targets (or a shared dependency) at the same time.
//!
//! A group may also select agents by label (`agents: { track: canary }`):
//! its per-group probes then run once per matching agent, with
//! `${group.address}` and `${group.agent}` taken from that agent, once the
//! run is planned (see [`super::selectors`] and [`crate::group_agents`]).
//! Or it may select pods (`pods: { namespace: shop, labels: { track:
//! canary } }`): its per-group probes then run once per matching pod, with
//! `${group.address}` the pod's IP, `${group.pod}` its namespace/name and
//! `${group.agent}` the agent of its node, as the agents answer at plan
//! time ([`crate::group_pods`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::parse::{Error, Result};
use super::vars::split_placeholder;
use super::Experiment;

/// Placeholders starting with this are group values.
pub const PREFIX: &str = "group.";

/// The most groups a hypothesis may define. By default, 8: a gate compares
/// two; more are for A/B/C comparisons, and each multiplies the probes.
pub const MAX_GROUPS: usize = 8;

/// A named group of probe targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    /// Values for `${group.KEY}`, e.g. `host`, `url`, `track`.
    pub values: BTreeMap<String, String>,
    /// `agents: { LABEL: VALUE, ... }`: the agents this group is made of
    /// (every connected agent carrying all these labels), resolved when a
    /// run is planned. None for a group of values only.
    pub agents: Option<BTreeMap<String, String>>,
    /// `pods: { namespace, labels, name, allow_kube_system }`: the pods
    /// this group is made of (on the agents of `agents`, or on every agent
    /// that answers pod queries), resolved when a run is planned by asking
    /// the agents. None for a group that selects no pods.
    pub pods: Option<super::selectors::PodGroup>,
    /// For a group of pods, once the agents answered: its pods, each with
    /// the agent on its node and its IP. None until then.
    pub members: Option<Vec<super::selectors::Member>>,
}

impl Group {
    /// Whether the group is made of members (agents or pods) known only
    /// once a run is planned.
    pub fn selects(&self) -> bool {
        self.agents.is_some() || self.pods.is_some()
    }
}

/// Which group a per-group probe instance measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeGroup {
    /// The probe's name as written (the instance is named `NAME [GROUP]`,
    /// or `NAME [GROUP/AGENT]` for a group that selects agents).
    pub probe: String,
    pub group: String,
    /// The agent this instance measures, for a group that selects agents
    /// (once resolved); the judge pools every agent's instance of a group.
    /// For a group of pods: the agent whose node runs the pod.
    pub agent: Option<String>,
    /// The pod (`namespace/name`) this instance measures, for a group of
    /// pods; the judge pools every pod of a group.
    pub pod: Option<String>,
}

/// The name of `probe`'s instance for `group` (and one of its agents).
pub fn instance_name(probe: &str, group: &str, agent: Option<&str>) -> String {
    match agent {
        Some(a) => format!("{probe} [{group}/{a}]"),
        None => format!("{probe} [{group}]"),
    }
}

/// `hypothesis.groups` as written, in file order.
#[derive(Debug, Default)]
pub(super) struct RawGroups(pub(super) Vec<Group>);

impl<'de> Deserialize<'de> for RawGroups {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawGroups;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of group names to their values, e.g. control: { host: \"10.0.0.1:8080\" }")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<RawGroups, A::Error> {
                use serde::de::Error as _;
                let mut out: Vec<Group> = Vec::new();
                while let Some(name) = m.next_key::<String>()? {
                    let values: BTreeMap<String, Entry> = m.next_value()?;
                    if !valid_name(&name) {
                        return Err(A::Error::custom(format!(
                            "hypothesis.groups: group name {name:?}: use letters, digits, '-' and '_'"
                        )));
                    }
                    if out.iter().any(|g| g.name == name) {
                        return Err(A::Error::custom(format!(
                            "hypothesis.groups: group {name:?} is defined twice"
                        )));
                    }
                    let mut vals = BTreeMap::new();
                    let mut agents = None;
                    let mut pods = None;
                    for (k, entry) in values {
                        let v = match (k.as_str(), entry) {
                            ("agents", Entry::Labels(l)) => {
                                let l = super::selectors::scalars(&name, "agents", l).map_err(A::Error::custom)?;
                                agents = Some(super::selectors::check_selector(&name, l).map_err(A::Error::custom)?);
                                continue;
                            }
                            ("pods", Entry::Labels(m)) => {
                                pods = Some(super::selectors::check_pods(&name, m).map_err(A::Error::custom)?);
                                continue;
                            }
                            ("pods", Entry::Scalar(_)) => {
                                return Err(A::Error::custom(format!(
                                    "hypothesis.groups.{name}.pods: expected a pod selector, e.g. pods: {{ namespace: shop, labels: {{ track: canary }} }}"
                                )))
                            }
                            ("agents", Entry::Scalar(_)) => {
                                return Err(A::Error::custom(format!(
                                    "hypothesis.groups.{name}.agents: expected a mapping of agent labels, e.g. agents: {{ track: canary }}"
                                )))
                            }
                            (_, Entry::Labels(_)) => {
                                return Err(A::Error::custom(format!(
                                    "hypothesis.groups.{name}.{k}: a value must be a string, number or boolean (only `agents` and `pods` take a mapping)"
                                )))
                            }
                            (_, Entry::Scalar(v)) => v,
                        };
                        if !valid_name(&k) || k == "name" {
                            return Err(A::Error::custom(format!(
                                "hypothesis.groups.{name}: key {k:?}: use letters, digits, '-' and '_' (and not `name`, which is the group's own name)"
                            )));
                        }
                        if v.contains('\n') {
                            return Err(A::Error::custom(format!(
                                "hypothesis.groups.{name}.{k}: a value must be one line"
                            )));
                        }
                        vals.insert(k, v);
                    }
                    if agents.is_some() || pods.is_some() {
                        if let Some(k) = vals.keys().find(|k| super::selectors::FROM_AGENT.contains(&k.as_str())) {
                            return Err(A::Error::custom(format!(
                                "hypothesis.groups.{name}.{k}: this group selects agents or pods, and ${{group.{k}}} is each member's own; remove `{k}` from the group"
                            )));
                        }
                    }
                    out.push(Group {
                        name,
                        values: vals,
                        agents,
                        pods,
                        members: None,
                    });
                    if out.len() > MAX_GROUPS {
                        return Err(A::Error::custom(format!(
                            "hypothesis.groups: more than {MAX_GROUPS} groups"
                        )));
                    }
                }
                Ok(RawGroups(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// What a group's key holds: a value, or (under `agents` and `pods`) a
/// mapping (whose values may be mappings again: `pods.labels`).
pub(super) enum Entry {
    Scalar(String),
    Labels(BTreeMap<String, Entry>),
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean (or, under agents, a mapping of labels)")
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Entry, E> {
                Ok(Entry::Scalar(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<Entry, E> {
                Ok(Entry::Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<Entry, E> {
                Ok(Entry::Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> std::result::Result<Entry, E> {
                Ok(Entry::Scalar(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> std::result::Result<Entry, E> {
                Ok(Entry::Scalar(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<Entry, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = m.next_entry::<String, Entry>()? {
                    out.insert(k, v);
                }
                Ok(Entry::Labels(out))
            }
        }
        d.deserialize_any(V)
    }
}

pub(super) fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Only the groups, read before the file is parsed per group (everything
/// else is left to the full parse, which reports it with its position).
#[derive(Deserialize)]
struct RawPreExperiment {
    #[serde(default)]
    hypothesis: Option<RawPreHypothesis>,
}

#[derive(Deserialize)]
struct RawPreHypothesis {
    #[serde(default)]
    groups: Option<RawGroups>,
}

/// Reads `hypothesis.groups` from `text` (variables already substituted).
/// A file that is not even YAML of the right shape yields no groups here;
/// the full parse then says what is wrong.
pub(super) fn read(file: &str, text: &str) -> Result<Vec<Group>> {
    if !text.contains("groups") {
        return Ok(Vec::new());
    }
    match serde_norway::from_str::<RawPreExperiment>(text) {
        Ok(pre) => Ok(pre.hypothesis.and_then(|h| h.groups).map(|g| g.0).unwrap_or_default()),
        Err(e) => {
            let msg = e.to_string();
            // Our own refusals of the groups (names, values) are final;
            // anything else is reported by the full parse.
            if msg.contains("hypothesis.groups") || msg.contains("string, number or boolean") {
                let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
                let message = match msg.rfind(" at line ") {
                    Some(i) => msg[..i].to_string(),
                    None => msg,
                };
                Err(Error {
                    file: file.to_string(),
                    line,
                    column,
                    message,
                })
            } else {
                Ok(Vec::new())
            }
        }
    }
}

/// Replaces every `${group.KEY}` of `text` with `group`'s value (and, for
/// a group that selects agents, `${group.address}` / `${group.agent}` with
/// `member`'s); with no group (the file defines none), any such
/// placeholder is an error.
pub(super) fn substitute(
    file: &str,
    text: &str,
    group: Option<&Group>,
    member: Option<&super::selectors::Member>,
    all: &[Group],
) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    for (lineno, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        let mut col = 1;
        while let Some(i) = rest.find("${") {
            let after = &rest[i + 2..];
            if i > 0 && rest.as_bytes()[i - 1] == b'$' {
                // `$${group.KEY}`: a literal `${group.KEY}`.
                out.push_str(&rest[..i - 1]);
                out.push_str("${");
                col += i + 2;
                rest = after;
                continue;
            }
            let Some(end) = after.find('}') else { break };
            let (name, default) = split_placeholder(&after[..end]);
            let Some(key) = name.strip_prefix(PREFIX) else {
                out.push_str(&rest[..i + 2]);
                col += i + 2;
                rest = after;
                continue;
            };
            out.push_str(&rest[..i]);
            let err = |message: String| Error {
                file: file.to_string(),
                line: lineno + 1,
                column: col + i,
                message,
            };
            let Some(g) = group else {
                return Err(err(format!(
                    "${{{name}}}: no groups are defined; define them under hypothesis.groups (e.g. control: {{ {key}: ... }})"
                )));
            };
            let value = if key == "name" {
                Some(g.name.as_str())
            } else if let (true, Some(v)) = (g.selects(), member.and_then(|m| m.value(key))) {
                Some(v)
            } else {
                g.values.get(key).map(String::as_str).or(default)
            };
            match value {
                Some(v) => out.push_str(v),
                None => {
                    let missing: Vec<&str> = all
                        .iter()
                        .filter(|o| {
                            let from_agent = o.selects() && super::selectors::FROM_AGENT.contains(&key);
                            !(o.values.contains_key(key) || from_agent)
                        })
                        .map(|o| o.name.as_str())
                        .collect();
                    return Err(err(format!(
                        "${{{name}}}: group {:?} has no value {key:?} (missing in: {}); add `{key}: ...` to each group under hypothesis.groups or write ${{{name}:-default}} (address and agent come from a group's agents, with agents: {{ LABEL: VALUE }}; address, agent and pod from a group's pods, with pods: {{ namespace: NS, labels: {{ ... }} }})",
                        g.name,
                        missing.join(", ")
                    )));
                }
            }
            col += i + 2 + end + 1;
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// Makes one experiment of the readings (one per group, or per agent of a
/// group that selects agents, in the order of `readings`): per-group
/// probes once per reading, everything else from the first reading, which
/// must equal every other.
pub(super) fn combine(
    file: &str,
    text: &str,
    groups: Vec<Group>,
    readings: Vec<(super::selectors::Reading, Experiment)>,
) -> Result<Experiment> {
    let at = |key: &str, message: String| {
        let (line, column) = super::parse::locate(text, key);
        Error {
            file: file.to_string(),
            line,
            column,
            message,
        }
    };
    let (which, readings): (Vec<super::selectors::Reading>, Vec<Experiment>) = readings.into_iter().unzip();
    let mut readings = readings.into_iter();
    let Some(mut first) = readings.next() else {
        unreachable!("combine is called with one reading per group, and there is at least one group")
    };
    let others: Vec<Experiment> = readings.collect();
    let uses = "mentions ${group.KEY} and so reads differently per group";
    for (i, f) in first.faults.iter().enumerate() {
        let this = format!("{f:?}");
        if others
            .iter()
            .any(|o| o.faults.get(i).map(|g| format!("{g:?}")) != Some(this.clone()))
        {
            return Err(at(
                "faults",
                format!(
                    "fault {:?} {uses}; faults are the same for every group (they hit both groups' targets, or a shared dependency, at the same time): select the nodes of every group with targets.labels (or targets.groups, for groups that select agents), or write one fault per group",
                    f.name
                ),
            ));
        }
    }
    let rest = |e: &Experiment| {
        format!(
            "{:?}{:?}{:?}{:?}{:?}",
            e.stop_conditions, e.error_budget, e.blast_radius, e.description, e.hypothesis.description
        )
    };
    if others.iter().any(|o| rest(o) != rest(&first)) {
        return Err(at(
            "hypothesis",
            format!("only probes with per_group: true may use ${{group.KEY}}; a stop condition, the error budget, the blast radius or a description {uses}"),
        ));
    }
    let mut probes = Vec::new();
    for (i, p) in first.hypothesis.probes.iter().enumerate() {
        if !p.per_group {
            let this = format!("{p:?}");
            if others
                .iter()
                .any(|o| o.hypothesis.probes.get(i).map(|q| format!("{q:?}")) != Some(this.clone()))
            {
                return Err(at(
                    "hypothesis",
                    format!(
                        "probe {:?} {uses}; set per_group: true on it to run it once per group",
                        p.name
                    ),
                ));
            }
            probes.push(p.clone());
            continue;
        }
        for (r, reading) in which.iter().zip(std::iter::once(&first).chain(&others)) {
            let g = &groups[r.group];
            let agent = r.member.as_ref().map(|m| m.agent.clone());
            let pod = r.member.as_ref().and_then(|m| m.pod.clone());
            let mut q = reading.hypothesis.probes[i].clone();
            q.name = instance_name(&q.name, &g.name, pod.as_deref().or(agent.as_deref()));
            q.group = Some(ProbeGroup {
                probe: reading.hypothesis.probes[i].name.clone(),
                group: g.name.clone(),
                agent,
                pod,
            });
            probes.push(q);
        }
    }
    first.hypothesis.probes = probes;
    first.groups = groups;
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(name: &str, kv: &[(&str, &str)]) -> Group {
        Group {
            name: name.into(),
            values: kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            agents: None,
            pods: None,
            members: None,
        }
    }

    #[test]
    fn group_placeholders_take_the_groups_values_and_keep_other_text() {
        let all = [g("control", &[("host", "a:1")]), g("canary", &[])];
        let t = "url: http://${group.host}/x?g=${group.name} ${x} $${group.host}\n";
        assert_eq!(
            substitute("f", t, Some(&all[0]), None, &all).unwrap(),
            "url: http://a:1/x?g=control ${x} ${group.host}\n"
        );
        let e = substitute("f", "a: 1\nurl: http://${group.host}/\n", Some(&all[1]), None, &all).unwrap_err();
        assert_eq!((e.line, e.column), (2, 13), "{e}");
        assert!(e.message.contains("group \"canary\" has no value \"host\""), "{e}");
        assert_eq!(
            substitute("f", "u: ${group.host:-b:2}\n", Some(&all[1]), None, &all).unwrap(),
            "u: b:2\n"
        );
        let e = substitute("f", "u: ${group.host}\n", None, None, &[]).unwrap_err();
        assert!(e.message.contains("no groups are defined"), "{e}");
    }
}
