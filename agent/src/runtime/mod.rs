//! Container runtimes: which containers run on this node, and the host PID
//! of each one's init process, from which the fault kinds reach its
//! namespaces (`/proc/<pid>/ns/*`) and its filesystem (`/proc/<pid>/root`).
//!
//! The agent detects a runtime at start ([`detect`]) and advertises it as a
//! capability (`runtime:docker`). Only Docker (its Engine API over its unix
//! socket, [`docker`]) is implemented; containerd and CRI-O are not yet.
//!
//! A fault whose Inject carries a [`ContainerSelector`] is resolved here to
//! a [`Place::Containers`]; the kinds receive the place in
//! [`crate::faults::FaultKind::prepare`].

pub mod docker;
pub mod netns;

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
}

impl Error {
    /// Declined because of what was asked (or what the node lacks), rather
    /// than the runtime failing or nothing matching.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::Regex { .. } | Error::NoRuntime | Error::Protected(_))
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

/// The first runtime that answers on this node, if any.
pub fn detect() -> Option<Arc<dyn ContainerRuntime>> {
    let d = docker::Docker::new(docker::DEFAULT_SOCKET);
    match d.list() {
        Ok(_) => Some(Arc::new(d)),
        Err(e) => {
            tracing::debug!(err = %e, "no docker runtime");
            None
        }
    }
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
        Ok(Self {
            name,
            image: Some(w.image).filter(|s| !s.is_empty()),
            labels: w.labels.into_iter().collect(),
            count: Some(w.count).filter(|c| *c > 0),
            allow_pid1: w.allow_pid1,
        })
    }
}

impl ContainerSelector {
    fn matches(&self, c: &Container) -> bool {
        c.running
            && c.pid > 0
            && self.name.as_ref().is_none_or(|re| re.is_match(&c.name))
            && self.image.as_ref().is_none_or(|i| *i == c.image)
            && self.labels.iter().all(|(k, v)| c.labels.get(k) == Some(v))
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

/// Resolves `sel` on this node: the running, unprotected containers that
/// match, in name order, at most `count` of them.
pub fn resolve(runtime: &dyn ContainerRuntime, sel: &ContainerSelector, protected: &Protected) -> Result<Place> {
    let mut matching: Vec<Container> = runtime.list()?.into_iter().filter(|c| sel.matches(c)).collect();
    matching.sort_by(|a, b| a.name.cmp(&b.name));
    let mut refused = Vec::new();
    matching.retain(|c| match protected.why(c) {
        Some(why) => {
            refused.push(why);
            false
        }
        None => true,
    });
    if matching.is_empty() {
        return Err(match refused.into_iter().next() {
            Some(why) => Error::Protected(why),
            None => Error::NoMatch(sel.describe()),
        });
    }
    if let Some(n) = sel.count {
        matching.truncate(n as usize);
    }
    Ok(Place::Containers {
        containers: matching,
        allow_pid1: sel.allow_pid1,
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
mod tests {
    use super::fake::{container, FakeRuntime};
    use super::*;

    fn sel(name: &str, labels: &[(&str, &str)], count: u32) -> ContainerSelector {
        ContainerSelector::try_from(v1::ContainerSelector {
            name_regex: name.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            count,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn a_selector_resolves_to_matching_running_containers_in_name_order_up_to_count() {
        let rt = FakeRuntime::default();
        let mut stopped = container("c3", "web-0", &[("app", "web")]);
        stopped.running = false;
        *rt.containers.lock().unwrap() = vec![
            container("c2", "web-2", &[("app", "web")]),
            container("c1", "web-1", &[("app", "web")]),
            container("c4", "db", &[("app", "db")]),
            stopped,
        ];
        let p = resolve(&rt, &sel("^web", &[("app", "web")], 0), &Protected::default()).unwrap();
        let Place::Containers { containers, .. } = p else {
            panic!()
        };
        assert_eq!(
            containers.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["c1", "c2"]
        );
        let p = resolve(&rt, &sel("", &[("app", "web")], 1), &Protected::default()).unwrap();
        let Place::Containers { containers, .. } = p else {
            panic!()
        };
        assert_eq!(containers.len(), 1);
        let err = resolve(&rt, &sel("nope", &[], 0), &Protected::default()).unwrap_err();
        assert!(matches!(err, Error::NoMatch(_)), "{err}");
    }

    #[test]
    fn the_agents_own_container_is_protected() {
        let rt = FakeRuntime::default();
        *rt.containers.lock().unwrap() = vec![container("abc123", "agent", &[])];
        let me = Protected {
            own_pid_ns: None,
            own_cgroup: "12:pids:/docker/abc123\n".into(),
        };
        let err = resolve(&rt, &sel("", &[], 0), &me).unwrap_err();
        assert!(err.to_string().contains("agent's own"), "{err}");
    }

    #[test]
    fn a_bad_name_regex_is_named() {
        let err = ContainerSelector::try_from(v1::ContainerSelector {
            name_regex: "(".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("name_regex"), "{err}");
    }
}
