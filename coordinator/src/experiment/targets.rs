//! Which agents a fault goes to, as written: `targets: { labels, mode,
//! count, percent, containers }`.
//!
//! With `containers: { name, image, labels, allow_pid1 }` the fault goes to
//! containers on every selected agent's node instead of the node itself:
//! the labels select agents (all that match), and `mode`/`count` count
//! containers on each node (`one`: the first matching container by name;
//! `count: N`: up to N; `all`: every match). `percent` is not supported
//! with containers yet.

use std::collections::BTreeMap;

use serde::Deserialize;

use faultline_proto::v1;

use super::model::{Containers, Mode, Targets};

impl Containers {
    /// The selector on the wire.
    pub fn to_wire(&self) -> v1::ContainerSelector {
        v1::ContainerSelector {
            name_regex: self.name.clone().unwrap_or_default(),
            image: self.image.clone().unwrap_or_default(),
            labels: self.labels.clone().into_iter().collect(),
            count: self.count,
            allow_pid1: self.allow_pid1,
        }
    }

    /// The selector in words, for plans.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = &self.name {
            parts.push(format!("name=~/{n}/"));
        }
        if let Some(i) = &self.image {
            parts.push(format!("image={i}"));
        }
        parts.extend(self.labels.iter().map(|(k, v)| format!("{k}={v}")));
        let what = if parts.is_empty() {
            "any".into()
        } else {
            parts.join(" ")
        };
        match self.count {
            0 => format!("containers {what} (all)"),
            n => format!("containers {what} (at most {n} per node)"),
        }
    }
}

/// Why a written selector is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("targets.count: must be at least 1")]
    CountZero,
    #[error("targets.percent {0}: must be within (0, 100]")]
    Percent(f64),
    #[error("targets.mode {0:?}: use one of all, one, count (with count: N), percent (with percent: P)")]
    Mode(String),
    #[error(
        "targets: mode all/one takes no count or percent; mode count needs count: N; mode percent needs percent: P"
    )]
    Combination,
    #[error("targets.containers.name {regex:?}: not a regular expression: {message}")]
    ContainerName { regex: String, message: String },
    #[error("targets: percent cannot count containers yet; use mode all, one or count with targets.containers")]
    ContainerPercent,
}

/// Containers on the selected nodes, as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawContainers {
    /// Regular expression on the container's name (unanchored).
    name: Option<String>,
    /// The image the container was created from, as the runtime records it.
    image: Option<String>,
    /// Runtime labels the container must carry.
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// A kill may signal the container's PID 1. By default, false.
    #[serde(default)]
    allow_pid1: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTargets {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Groups (under hypothesis.groups, each selecting agents) whose agents
    /// the fault goes to; checked against the groups once they are read.
    #[serde(default)]
    groups: Vec<String>,
    mode: Option<String>,
    count: Option<u32>,
    percent: Option<f64>,
    containers: Option<RawContainers>,
}

impl RawTargets {
    /// The selector, checked.
    pub fn check(self) -> Result<Targets, Error> {
        let mode = match (self.mode.as_deref(), self.count, self.percent) {
            (None | Some("all"), None, None) => Mode::All,
            (None | Some("count"), Some(n), None) if n > 0 => Mode::Count(n),
            (None | Some("percent"), None, Some(p)) if p > 0.0 && p <= 100.0 => Mode::Percent(p),
            (Some("one"), None, None) => Mode::Count(1),
            (_, Some(0), _) => return Err(Error::CountZero),
            (_, _, Some(p)) if !(p > 0.0 && p <= 100.0) => return Err(Error::Percent(p)),
            (Some(m), _, _) if !["all", "one", "count", "percent"].contains(&m) => {
                return Err(Error::Mode(m.to_string()))
            }
            _ => return Err(Error::Combination),
        };
        let Some(c) = self.containers else {
            return Ok(Targets {
                labels: self.labels,
                groups: self.groups,
                mode,
                containers: None,
            });
        };
        if let Some(re) = &c.name {
            regex::Regex::new(re).map_err(|e| Error::ContainerName {
                regex: re.clone(),
                message: e.to_string(),
            })?;
        }
        let count = match mode {
            Mode::All => 0,
            Mode::Count(n) => n,
            Mode::Percent(_) => return Err(Error::ContainerPercent),
        };
        Ok(Targets {
            labels: self.labels,
            groups: self.groups,
            mode: Mode::All,
            containers: Some(Containers {
                name: c.name,
                image: c.image,
                labels: c.labels,
                count,
                allow_pid1: c.allow_pid1,
            }),
        })
    }
}
