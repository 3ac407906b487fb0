//! Latency inside a container's network namespace: the chosen backend runs
//! unchanged on a thread that entered the namespace
//! ([`crate::runtime::netns::enter`]), so its iptables rules, its NFQUEUE
//! netlink socket (bound to the namespace it was created in) and its queue
//! thread all belong to the container's network, and delay the packets
//! the container sends. The namespace's descriptor is held until restore,
//! which therefore reaches the same namespace even after a restart.

use std::fs::File;
use std::sync::Arc;

use super::{AppliedLatency, Counters, Error, LatencyBackend, LatencySpec, Result};
use crate::firewall::Exempt;
use crate::journal::Object;
use crate::runtime::{netns, ns_inode, Container};

/// A backend whose every action runs in one container's network namespace.
pub struct InNetnsBackend {
    inner: Arc<dyn LatencyBackend>,
    ns: Arc<File>,
    inode: u64,
    container_id: String,
}

impl InNetnsBackend {
    /// For the containers of a fault: they must share one network
    /// namespace (one container, or the containers of one pod).
    pub fn new(inner: Arc<dyn LatencyBackend>, containers: &[Container]) -> Result<Self> {
        let mut inodes: Vec<u64> = containers.iter().filter_map(|c| ns_inode(c.pid, "net")).collect();
        inodes.dedup();
        let (Some(first), [_]) = (containers.first(), inodes.as_slice()) else {
            return Err(Error::Refused(format!(
                "latency targets one network namespace per fault, and the selector matches {} container(s) in {} namespaces; narrow targets.containers or use count: 1",
                containers.len(),
                inodes.len()
            )));
        };
        let path = format!("/proc/{}/ns/net", first.pid);
        let ns = File::open(&path).map_err(|e| Error::Refused(format!("cannot open {path}: {e}")))?;
        Ok(Self {
            inner,
            ns: Arc::new(ns),
            inode: inodes[0],
            container_id: first.id.clone(),
        })
    }

    fn enter<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        netns::enter(&self.ns, f).map_err(|e| Error::Backend {
            backend: self.inner.name(),
            message: format!("cannot enter net:[{}]: {e}", self.inode),
        })?
    }
}

impl LatencyBackend for InNetnsBackend {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn plan(&self, fault_id: &str, spec: &LatencySpec) -> Result<Vec<Object>> {
        Ok(self
            .inner
            .plan(fault_id, spec)?
            .into_iter()
            .map(|o| Object::InContainerNetns {
                container_id: self.container_id.clone(),
                netns_inode: self.inode,
                object: Box::new(o),
            })
            .collect())
    }

    fn apply(&self, fault_id: &str, spec: &LatencySpec, exempt: &Exempt) -> Result<Box<dyn AppliedLatency>> {
        let applied = self.enter(|| self.inner.apply(fault_id, spec, exempt))?;
        Ok(Box::new(InNetnsApplied {
            applied: Some(applied),
            ns: self.ns.clone(),
            inode: self.inode,
            backend: self.inner.name(),
        }))
    }
}

struct InNetnsApplied {
    applied: Option<Box<dyn AppliedLatency>>,
    ns: Arc<File>,
    inode: u64,
    backend: &'static str,
}

impl AppliedLatency for InNetnsApplied {
    fn objects(&self) -> Vec<String> {
        self.applied
            .as_ref()
            .map(|a| a.objects())
            .unwrap_or_default()
            .into_iter()
            .map(|o| format!("{o} in net:[{}]", self.inode))
            .collect()
    }

    fn restore(mut self: Box<Self>) -> Result<Counters> {
        let Some(applied) = self.applied.take() else {
            return Ok(Counters::default());
        };
        netns::enter(&self.ns, move || applied.restore()).map_err(|e| Error::Backend {
            backend: self.backend,
            message: format!("cannot enter net:[{}]: {e}", self.inode),
        })?
    }
}
