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
}

/// Which group a per-group probe instance measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeGroup {
    /// The probe's name as written (the instance is named `NAME [GROUP]`).
    pub probe: String,
    pub group: String,
}

/// The name of `probe`'s instance for `group`.
pub fn instance_name(probe: &str, group: &str) -> String {
    format!("{probe} [{group}]")
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
                    let values: BTreeMap<String, Scalar> = m.next_value()?;
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
                    for (k, Scalar(v)) in values {
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
                    out.push(Group { name, values: vals });
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

/// A group value: a string, number or boolean as written.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> std::result::Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> std::result::Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

fn valid_name(s: &str) -> bool {
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
            if msg.contains("hypothesis.groups") || msg.contains("a string, number or boolean") {
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

/// Replaces every `${group.KEY}` of `text` with `group`'s value; with no
/// group (the file defines none), any such placeholder is an error.
pub(super) fn substitute(file: &str, text: &str, group: Option<&Group>, all: &[Group]) -> Result<String> {
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
            } else {
                g.values.get(key).map(String::as_str).or(default)
            };
            match value {
                Some(v) => out.push_str(v),
                None => {
                    let missing: Vec<&str> = all
                        .iter()
                        .filter(|o| !o.values.contains_key(key))
                        .map(|o| o.name.as_str())
                        .collect();
                    return Err(err(format!(
                        "${{{name}}}: group {:?} has no value {key:?} (missing in: {}); add `{key}: ...` to each group under hypothesis.groups or write ${{{name}:-default}}",
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

/// Makes one experiment of the per-group readings (in the order of
/// `groups`): per-group probes once per group, everything else from the
/// first reading, which must equal every other.
pub(super) fn combine(file: &str, text: &str, groups: Vec<Group>, readings: Vec<Experiment>) -> Result<Experiment> {
    let at = |key: &str, message: String| {
        let (line, column) = super::parse::locate(text, key);
        Error {
            file: file.to_string(),
            line,
            column,
            message,
        }
    };
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
                    "fault {:?} {uses}; faults are the same for every group (they hit both groups' targets, or a shared dependency, at the same time): select the nodes of every group with targets.labels, or write one fault per group",
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
        for (g, reading) in groups.iter().zip(std::iter::once(&first).chain(&others)) {
            let mut q = reading.hypothesis.probes[i].clone();
            q.group = Some(ProbeGroup {
                probe: q.name.clone(),
                group: g.name.clone(),
            });
            q.name = instance_name(&q.name, &g.name);
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
        }
    }

    #[test]
    fn group_placeholders_take_the_groups_values_and_keep_other_text() {
        let all = [g("control", &[("host", "a:1")]), g("canary", &[])];
        let t = "url: http://${group.host}/x?g=${group.name} ${x} $${group.host}\n";
        assert_eq!(
            substitute("f", t, Some(&all[0]), &all).unwrap(),
            "url: http://a:1/x?g=control ${x} ${group.host}\n"
        );
        let e = substitute("f", "a: 1\nurl: http://${group.host}/\n", Some(&all[1]), &all).unwrap_err();
        assert_eq!((e.line, e.column), (2, 13), "{e}");
        assert!(e.message.contains("group \"canary\" has no value \"host\""), "{e}");
        assert_eq!(
            substitute("f", "u: ${group.host:-b:2}\n", Some(&all[1]), &all).unwrap(),
            "u: b:2\n"
        );
        let e = substitute("f", "u: ${group.host}\n", None, &[]).unwrap_err();
        assert!(e.message.contains("no groups are defined"), "{e}");
    }
}
