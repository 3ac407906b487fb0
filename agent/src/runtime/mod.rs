//! Container runtimes: which containers run on this node, and the host PID
//! of each one's init process, from which the fault kinds reach its
//! namespaces (`/proc/<pid>/ns/*`) and its filesystem (`/proc/<pid>/root`).
//!
//! The agent uses **one** runtime, chosen at start ([`detect`], or the
//! `--runtime` flag through [`Choice`]) and advertised as a capability
//! (`runtime:docker`, `runtime:containerd`): the one that answers first of
//! containerd with Kubernetes' namespace `k8s.io` (upstream, k3s/RKE2 and
//! MicroK8s socket paths, [`containerd`]) and the Docker Engine API
//! ([`docker`]). One, not several: a node's Kubernetes containers live in
//! exactly one of them, and a container seen through two runtimes (Docker's
//! containers are also in its containerd's `moby` namespace) must not be
//! selected twice. Docker's own containerd (`moby`) is used only when asked
//! for (`--runtime containerd --runtime-socket
//! /var/run/docker/containerd/containerd.sock --runtime-namespace moby`).
//! CRI-O ([`crio`]: its inspect HTTP API, containers found through their
//! cgroups) comes after containerd in detection; it is proven only against
//! recorded responses.
//!
//! Kubernetes pods are resolved from the runtime's CRI labels ([`pods`]).
//!
//! A fault whose Inject carries a [`ContainerSelector`] is resolved here to
//! a [`Place::Containers`]; the kinds receive the place in
//! [`crate::faults::FaultKind::prepare`].

pub mod containerd;
pub mod crio;
pub mod docker;
pub mod netns;
pub mod pod_addresses;
pub mod pods;
pub mod sweep;

use std::collections::BTreeMap;
use std::sync::Arc;

use faultline_proto::v1;
use regex::Regex;

/// Errors talking to a container runtime or resolving a selector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the {runtime} runtime at {socket}: {source}")]
    Connect {
        runtime: &'static str,
        socket: String,
        source: std::io::Error,
    },
    #[error("the {runtime} runtime answered {request} with {message}")]
    Api {
        runtime: &'static str,
        request: String,
        message: String,
    },
    #[error("container selector: name_regex {regex:?}: {message}")]
    Regex { regex: String, message: String },
    #[error("no container runtime was detected on this node; containers cannot be targeted here")]
    NoRuntime,
    #[error("no running container matches {0}")]
    NoMatch(String),
    #[error("refused: {0}")]
    Protected(String),
    #[error("container selector: percent {0}: must be within (0, 100]")]
    Percent(f64),
    #[error("container selector: pod.namespace is empty; name the pods' namespace")]
    PodNamespace,
    #[error("{percent}% of the {matching} {unit} matching {selector} rounds to zero; raise percent or use count")]
    ZeroPercent {
        percent: f64,
        matching: usize,
        unit: &'static str,
        selector: String,
    },
}

impl Error {
    /// Declined because of what was asked (or what the node lacks), rather
    /// than the runtime failing or nothing matching.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Error::Regex { .. }
                | Error::NoRuntime
                | Error::Protected(_)
                | Error::Percent(_)
                | Error::PodNamespace
                | Error::ZeroPercent { .. }
        )
    }
}

/// Result of the runtime module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One container as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The runtime's full id (64 hex digits for Docker).
    pub id: String,
    /// Name without Docker's leading `/`.
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub running: bool,
    /// Host PID of the container's init process; 0 when not running.
    pub pid: u32,
    /// How often the runtime restarted it (its restart policy).
    pub restart_count: u64,
}

/// A container runtime on this node. Blocking: callers on the async runtime
/// use `spawn_blocking` where it matters (the calls are short unix-socket
/// requests).
pub trait ContainerRuntime: Send + Sync {
    /// Its capability suffix: `docker`.
    fn name(&self) -> &'static str;
    /// Running containers, with their init PIDs.
    fn list(&self) -> Result<Vec<Container>>;
    /// One container by id; `None` once it was removed.
    fn inspect(&self, id: &str) -> Result<Option<Container>>;
    /// Where its writable layer is on the host (overlay2's `UpperDir`), if
    /// the runtime says: files a fault created inside a stopped container
    /// are removed there.
    fn upper_dir(&self, id: &str) -> Result<Option<std::path::PathBuf>>;
}

/// Which runtime the agent uses (`--runtime`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Choice {
    /// The first that answers ([`detect`]). The default.
    #[default]
    Auto,
    /// No containers are targeted on this node.
    None,
    /// The Docker Engine API at this socket.
    Docker { socket: String },
    /// containerd at this socket, in this namespace.
    Containerd { socket: String, namespace: String },
    /// CRI-O at this socket.
    Crio { socket: String },
}

impl Choice {
    /// The runtime this choice names, if it answers (a `list` succeeds).
    pub fn open(&self) -> Option<Arc<dyn ContainerRuntime>> {
        let candidates: Vec<Arc<dyn ContainerRuntime>> = match self {
            Choice::None => return None,
            Choice::Auto => return detect(),
            Choice::Docker { socket } => vec![Arc::new(docker::Docker::new(socket))],
            Choice::Containerd { socket, namespace } => {
                vec![Arc::new(containerd::Containerd::new(socket, namespace.clone()))]
            }
            Choice::Crio { socket } => vec![Arc::new(crio::Crio::new(socket))],
        };
        first_answering(candidates.into_iter().map(|c| (c, false)).collect())
    }
}

/// The first candidate that answers; one marked `true` must also hold a
/// container (see [`detect`]).
fn first_answering(candidates: Vec<(Arc<dyn ContainerRuntime>, bool)>) -> Option<Arc<dyn ContainerRuntime>> {
    for (rt, needs_containers) in candidates {
        match rt.list() {
            Ok(c) if needs_containers && c.is_empty() => {
                tracing::debug!(
                    runtime = rt.name(),
                    "container runtime answers but holds no Kubernetes container"
                )
            }
            Ok(_) => return Some(rt),
            Err(e) => tracing::debug!(runtime = rt.name(), err = %e, "container runtime not usable"),
        }
    }
    None
}

/// The first runtime that answers on this node, if any: containerd at the
/// Kubernetes socket paths (namespace `k8s.io`), CRI-O, then the Docker
/// Engine. A containerd is taken only if its `k8s.io` namespace holds a
/// container (every Kubernetes node runs sandboxes): Docker's own packages
/// run a containerd at `/run/containerd/containerd.sock` too, with Docker's
/// containers in `moby`, and on such a host Docker is the right choice.
pub fn detect() -> Option<Arc<dyn ContainerRuntime>> {
    let mut candidates: Vec<(Arc<dyn ContainerRuntime>, bool)> = containerd::KUBERNETES_SOCKETS
        .iter()
        .filter(|s| std::path::Path::new(s).exists())
        .map(|s| {
            let rt = Arc::new(containerd::Containerd::new(*s, containerd::KUBERNETES_NAMESPACE));
            (rt as Arc<dyn ContainerRuntime>, true)
        })
        .collect();
    if std::path::Path::new(crio::DEFAULT_SOCKET).exists() {
        candidates.push((Arc::new(crio::Crio::new(crio::DEFAULT_SOCKET)), false));
    }
    candidates.push((Arc::new(docker::Docker::new(docker::DEFAULT_SOCKET)), false));
    first_answering(candidates)
}

/// A checked container selector.
#[derive(Debug, Clone)]
pub struct ContainerSelector {
    pub name: Option<Regex>,
    pub image: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// How many matching containers (by name order); `None`: all.
    pub count: Option<u32>,
    /// A kill may signal the container's PID 1. By default, false.
    pub allow_pid1: bool,
    /// Percent of the matching containers (pods, with `pod`) per node.
    pub percent: Option<f64>,
    /// Kubernetes pods the containers belong to.
    pub pod: Option<pods::PodSelector>,
    /// The container's name within its pod (`io.kubernetes.container.name`).
    pub container_name: Option<String>,
    /// Pods in `kube-system` may be targeted. By default, false.
    pub allow_kube_system: bool,
}

impl TryFrom<v1::ContainerSelector> for ContainerSelector {
    type Error = Error;

    fn try_from(w: v1::ContainerSelector) -> Result<Self> {
        let name = match w.name_regex.as_str() {
            "" => None,
            re => Some(Regex::new(re).map_err(|e| Error::Regex {
                regex: re.into(),
                message: e.to_string(),
            })?),
        };
        let percent = match w.percent {
            0.0 => None,
            p if p > 0.0 && p <= 100.0 => Some(p),
            p => return Err(Error::Percent(p)),
        };
        let pod = match w.pod {
            None => None,
            Some(p) if p.namespace.is_empty() => return Err(Error::PodNamespace),
            Some(p) => Some(pods::PodSelector {
                namespace: p.namespace,
                labels: p.labels.into_iter().collect(),
                name: Some(p.name).filter(|n| !n.is_empty()),
            }),
        };
        Ok(Self {
            name,
            image: Some(w.image).filter(|s| !s.is_empty()),
            labels: w.labels.into_iter().collect(),
            count: Some(w.count).filter(|c| *c > 0),
            allow_pid1: w.allow_pid1,
            percent,
            pod,
            container_name: Some(w.container_name).filter(|n| !n.is_empty()),
            allow_kube_system: w.allow_kube_system,
        })
    }
}

impl ContainerSelector {
    /// Whether running application container `c` is selected; `pods`:
    /// the pods' labels by uid.
    fn matches(&self, c: &Container, pod_labels: &BTreeMap<String, BTreeMap<String, String>>) -> bool {
        c.running
            && c.pid > 0
            && !pods::is_sandbox(c)
            && self.name.as_ref().is_none_or(|re| re.is_match(&c.name))
            && self.image.as_ref().is_none_or(|i| *i == c.image)
            && self.labels.iter().all(|(k, v)| c.labels.get(k) == Some(v))
            && self.pod.as_ref().is_none_or(|p| p.matches(c, pod_labels))
            && self
                .container_name
                .as_ref()
                .is_none_or(|n| c.labels.get(pods::CONTAINER_NAME) == Some(n))
    }

    /// The selector in words, for messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(re) = &self.name {
            parts.push(format!("name=~/{re}/"));
        }
        if let Some(i) = &self.image {
            parts.push(format!("image={i}"));
        }
        for (k, v) in &self.labels {
            parts.push(format!("label {k}={v}"));
        }
        if let Some(p) = &self.pod {
            parts.push(p.describe());
        }
        if let Some(n) = &self.container_name {
            parts.push(format!("container {n}"));
        }
        if parts.is_empty() {
            "any container".into()
        } else {
            parts.join(" ")
        }
    }
}

/// Where a fault applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The node itself.
    Host,
    /// These containers, resolved at prepare time (never empty).
    Containers {
        containers: Vec<Container>,
        /// A kill may signal each container's PID 1.
        allow_pid1: bool,
        /// (selected, matched): how many units (containers, or pods with a
        /// pod selector) were selected after `count`/`percent`, of how many
        /// matched; the coordinator's blast-radius percentages use them.
        units: (usize, usize),
    },
}

impl Place {
    /// The containers' names, for details: ` in containers a, b`.
    pub fn describe(&self) -> String {
        match self {
            Place::Host => String::new(),
            Place::Containers { containers, .. } => format!(
                " in container(s) {}",
                containers
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// Containers the agent never targets: the one it runs in, if any (found
/// as the container whose init shares the agent's pid namespace, or whose
/// id appears in the agent's own cgroup path).
#[derive(Debug, Clone, Default)]
pub struct Protected {
    /// The agent's own pid namespace inode (`/proc/self/ns/pid`).
    pub own_pid_ns: Option<u64>,
    /// The agent's own `/proc/self/cgroup`.
    pub own_cgroup: String,
}

impl Protected {
    /// This process's facts.
    pub fn for_this_process() -> Self {
        Self {
            own_pid_ns: ns_inode(std::process::id(), "pid"),
            own_cgroup: std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default(),
        }
    }

    /// Why `c` is protected, if it is.
    fn why(&self, c: &Container) -> Option<String> {
        if !c.id.is_empty() && self.own_cgroup.contains(&c.id) {
            return Some(format!("container {} is the agent's own", c.name));
        }
        // A container sharing the host pid namespace (or the agent's).
        let ns = ns_inode(c.pid, "pid");
        if ns.is_some() && ns == self.own_pid_ns {
            return Some(format!(
                "container {} shares the agent's pid namespace (the agent's own, or --pid=host)",
                c.name
            ));
        }
        None
    }
}

/// The inode of `/proc/<pid>/ns/<ns>` (`pid:[4026531836]`), which names
/// the namespace: two processes share it when their inodes are equal.
pub fn ns_inode(pid: u32, ns: &str) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).ok()?;
    let s = link.to_str()?;
    s.strip_prefix(&format!("{ns}:["))?.strip_suffix(']')?.parse().ok()
}

/// Resolves `sel` on this node: the running, unprotected application
/// containers that match, in name order; then at most `count` (or
/// `percent`) of them — of pods, with a pod selector, every selected
/// pod's matching containers together.
pub fn resolve(runtime: &dyn ContainerRuntime, sel: &ContainerSelector, protected: &Protected) -> Result<Place> {
    let all = runtime.list()?;
    let pod_labels = pods::pod_labels(&all);
    let mut matching: Vec<Container> = all.into_iter().filter(|c| sel.matches(c, &pod_labels)).collect();
    matching.sort_by(|a, b| a.name.cmp(&b.name));
    let mut refused = Vec::new();
    matching.retain(|c| {
        match protected
            .why(c)
            .or_else(|| pods::protected(c, &pod_labels, sel.allow_kube_system))
        {
            Some(why) => {
                refused.push(why);
                false
            }
            None => true,
        }
    });
    if matching.is_empty() {
        return Err(match refused.into_iter().next() {
            Some(why) => Error::Protected(why),
            None => Error::NoMatch(sel.describe()),
        });
    }
    // What count and percent count: containers, or pods (by uid, in the
    // order their first container sorts).
    let unit_of = |c: &Container| match &sel.pod {
        Some(_) => pods::pod_uid(c).unwrap_or(&c.id).to_string(),
        None => c.id.clone(),
    };
    let mut units: Vec<String> = Vec::new();
    for c in &matching {
        let u = unit_of(c);
        if !units.contains(&u) {
            units.push(u);
        }
    }
    let keep = match (sel.count, sel.percent) {
        (_, Some(p)) => {
            let n = (units.len() as f64 * p / 100.0).floor() as usize;
            if n == 0 {
                return Err(Error::ZeroPercent {
                    percent: p,
                    matching: units.len(),
                    unit: if sel.pod.is_some() { "pods" } else { "containers" },
                    selector: sel.describe(),
                });
            }
            n
        }
        (Some(n), None) => n as usize,
        (None, None) => units.len(),
    };
    let matched_units = units.len();
    units.truncate(keep);
    matching.retain(|c| units.contains(&unit_of(c)));
    Ok(Place::Containers {
        containers: matching,
        allow_pid1: sel.allow_pid1,
        units: (units.len(), matched_units),
    })
}

#[cfg(test)]
pub mod fake {
    //! The one recording fake of [`ContainerRuntime`].
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct FakeRuntime {
        pub containers: Mutex<Vec<Container>>,
    }

    impl ContainerRuntime for FakeRuntime {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn list(&self) -> Result<Vec<Container>> {
            Ok(self.containers.lock().map(|c| c.clone()).unwrap_or_default())
        }
        fn inspect(&self, id: &str) -> Result<Option<Container>> {
            Ok(self.list()?.into_iter().find(|c| c.id == id))
        }
        fn upper_dir(&self, _id: &str) -> Result<Option<std::path::PathBuf>> {
            Ok(None)
        }
    }

    pub fn container(id: &str, name: &str, labels: &[(&str, &str)]) -> Container {
        Container {
            id: id.into(),
            name: name.into(),
            image: "img:1".into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            running: true,
            // A pid with no /proc entry: namespaces unreadable, so unprotected.
            pid: 999_999_000,
            restart_count: 0,
        }
    }
}

#[cfg(test)]
mod tests;
