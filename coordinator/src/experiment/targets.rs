//! Which agents a fault goes to, as written: `targets: { labels, mode,
//! count, percent, containers }`.
//!
//! With `containers: { name, image, labels, allow_pid1, pod: { namespace,
//! labels, name }, container, allow_kube_system }` the fault goes to
//! containers on every selected agent's node instead of the node itself:
//! the labels select agents (all that match), and `mode`/`count`/`percent`
//! count containers on each node — pods, with `pod` (`one`: the first
//! matching container or pod by name; `count: N`: up to N; `percent: P`: P %
//! of them rounded down, zero refused; `all`: every match).

use std::collections::BTreeMap;

use serde::Deserialize;

use faultline_proto::v1;

use super::model::{Containers, Mode, Pod, Targets};

impl Containers {
    /// The selector on the wire.
    pub fn to_wire(&self) -> v1::ContainerSelector {
        v1::ContainerSelector {
            name_regex: self.name.clone().unwrap_or_default(),
            image: self.image.clone().unwrap_or_default(),
            labels: self.labels.clone().into_iter().collect(),
            count: self.count,
            allow_pid1: self.allow_pid1,
            pod: self.pod.as_ref().map(|p| v1::PodSelector {
                namespace: p.namespace.clone(),
                labels: p.labels.clone().into_iter().collect(),
                name: p.name.clone().unwrap_or_default(),
            }),
            container_name: self.container.clone().unwrap_or_default(),
            allow_kube_system: self.allow_kube_system,
            percent: self.percent.unwrap_or(0.0),
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
        if let Some(p) = &self.pod {
            parts.push(format!("pod namespace={}", p.namespace));
            if let Some(n) = &p.name {
                parts.push(format!("pod name={n}"));
            }
            parts.extend(p.labels.iter().map(|(k, v)| format!("pod {k}={v}")));
        }
        if let Some(c) = &self.container {
            parts.push(format!("container={c}"));
        }
        let what = if parts.is_empty() {
            "any".into()
        } else {
            parts.join(" ")
        };
        let unit = if self.pod.is_some() { "pods" } else { "containers" };
        match (self.count, self.percent) {
            (_, Some(p)) => format!("containers {what} ({p}% of matching {unit} per node)"),
            (0, None) => format!("containers {what} (all)"),
            (n, None) => format!("containers {what} (at most {n} {unit} per node)"),
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
    #[error("targets.containers.pod.namespace: must not be empty; name the pods' namespace")]
    PodNamespace,
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
    /// Kubernetes pods the containers belong to.
    pod: Option<RawPod>,
    /// The container's name within its pod.
    container: Option<String>,
    /// Pods in kube-system may be targeted. By default, false.
    #[serde(default)]
    allow_kube_system: bool,
}

/// `targets.containers.pod`, as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPod {
    namespace: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    name: Option<String>,
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
                node: None,
            });
        };
        if let Some(re) = &c.name {
            regex::Regex::new(re).map_err(|e| Error::ContainerName {
                regex: re.clone(),
                message: e.to_string(),
            })?;
        }
        let (count, percent) = match mode {
            Mode::All => (0, None),
            Mode::Count(n) => (n, None),
            Mode::Percent(p) => (0, Some(p)),
        };
        let pod = match c.pod {
            Some(p) if p.namespace.is_empty() => return Err(Error::PodNamespace),
            Some(p) => Some(Pod {
                namespace: p.namespace,
                labels: p.labels,
                name: p.name,
            }),
            None => None,
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
                percent,
                allow_pid1: c.allow_pid1,
                pod,
                container: c.container,
                allow_kube_system: c.allow_kube_system,
            }),
            node: None,
        })
    }
}
