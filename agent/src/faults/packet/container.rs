//! Packet faults inside a container's network namespace (nfqueue backend
//! only), the way latency does it (`faults/latency/container.rs`): the
//! whole apply runs on a thread that entered the namespace, so the
//! fault's iptables chain (iptables runs as a child of that thread), its
//! NFQUEUE netlink socket and the raw socket that sends duplicates and DNS
//! answers (both bound to the namespace they are created in) belong to the
//! container's network and take the packets the container sends. Restore
//! enters the same namespace through the descriptor held since prepare;
//! the undo record names the objects as [`Object::InContainerNetns`], so a
//! restarted agent removes them there too.

use std::fs::File;
use std::sync::Arc;

use super::{Error, Result};
use crate::faults::{self, Applied, Prepared, Report, Restoring};
use crate::journal::Object;
use crate::runtime::{netns, ns_inode, Container};

/// The one network namespace of a fault's containers.
pub struct InNetns {
    ns: Arc<File>,
    inode: u64,
    container_id: String,
}

impl InNetns {
    /// The containers must share one network namespace (one container, or
    /// the containers of one pod).
    pub fn new(kind: &'static str, containers: &[Container]) -> Result<Self> {
        let mut inodes: Vec<u64> = containers.iter().filter_map(|c| ns_inode(c.pid, "net")).collect();
        inodes.sort_unstable();
        inodes.dedup();
        let (Some(first), [inode]) = (containers.first(), inodes.as_slice()) else {
            return Err(Error::Refused(format!(
                "{kind} targets one network namespace per fault, and the selector matches {} container(s) in {} namespaces; narrow targets.containers or use count: 1",
                containers.len(),
                inodes.len()
            )));
        };
        let path = format!("/proc/{}/ns/net", first.pid);
        let ns = File::open(&path).map_err(|e| Error::Refused(format!("cannot open {path}: {e}")))?;
        Ok(InNetns {
            ns: Arc::new(ns),
            inode: *inode,
            container_id: first.id.clone(),
        })
    }

    /// `inner`, prepared as for the node, applied and restored in here.
    pub fn wrap(self, inner: Box<dyn Prepared>) -> Box<dyn Prepared> {
        Box::new(PreparedInNetns { inner, netns: self })
    }
}

struct PreparedInNetns {
    inner: Box<dyn Prepared>,
    netns: InNetns,
}

impl Prepared for PreparedInNetns {
    fn undo_objects(&self) -> Vec<Object> {
        self.inner
            .undo_objects()
            .into_iter()
            .map(|o| Object::InContainerNetns {
                container_id: self.netns.container_id.clone(),
                netns_inode: self.netns.inode,
                object: Box::new(o),
            })
            .collect()
    }

    fn preview(&self) -> faults::Result<(String, String)> {
        let (detail, backend) = self.inner.preview()?;
        Ok((format!("{detail} in net:[{}]", self.netns.inode), backend))
    }

    fn apply(self: Box<Self>) -> faults::Result<Box<dyn Applied>> {
        let PreparedInNetns { inner, netns } = *self;
        let applied = netns::enter(&netns.ns, move || inner.apply())
            .map_err(|e| Error::Failed(format!("cannot enter net:[{}]: {e}", netns.inode)))??;
        Ok(Box::new(AppliedInNetns {
            inner: applied,
            ns: netns.ns,
            inode: netns.inode,
        }))
    }
}

struct AppliedInNetns {
    inner: Box<dyn Applied>,
    ns: Arc<File>,
    inode: u64,
}

impl Applied for AppliedInNetns {
    fn backend(&self) -> String {
        self.inner.backend()
    }

    fn injected(&self) -> Report {
        let mut r = self.inner.injected();
        r.detail += &format!(" in net:[{}]", self.inode);
        r
    }

    fn restore(self: Box<Self>) -> Restoring {
        let (inner, inode) = (self.inner, self.inode);
        // The kind removes its rules and stops its queue before it returns
        // the future: that part runs in the namespace.
        match netns::enter(&self.ns, move || inner.restore()) {
            Ok(restoring) => Box::pin(async move {
                let mut r = restoring.await?;
                r.detail += &format!(" in net:[{inode}]");
                Ok(r)
            }),
            Err(e) => {
                Box::pin(
                    async move { Err(Error::Failed(format!("cannot enter net:[{inode}] to restore: {e}")).into()) },
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use faultline_proto::v1;

    use super::*;
    use crate::faults::{Kinds, Place, Setup};

    fn container(pid: u32) -> Container {
        Container {
            id: "c1".into(),
            name: "web".into(),
            image: "img".into(),
            labels: Default::default(),
            running: true,
            pid,
            restart_count: 0,
        }
    }

    fn place(pid: u32) -> Place {
        Place::Containers {
            containers: vec![container(pid)],
            allow_pid1: false,
            units: (1, 1),
        }
    }

    fn duplicate(backend: &str) -> v1::fault_spec::Kind {
        v1::fault_spec::Kind::Duplicate(v1::DuplicateSpec {
            scope: None,
            percent: 20.0,
            backend: backend.into(),
        })
    }

    #[test]
    fn netem_in_a_container_is_refused_naming_nfqueue_and_a_vanished_namespace_too() {
        let procs = Arc::new(crate::process::fake::FakeProcesses::new(vec![]));
        let kinds = Kinds::new(&Setup::basic(procs));
        let kind = kinds.of(&duplicate("netem")).unwrap().1;
        let e = kind.prepare("r1-1", duplicate("netem"), &place(1)).err().unwrap();
        assert!(e.is_refusal());
        assert!(
            e.to_string().contains("runs over nfqueue only; use backend: nfqueue"),
            "{e}"
        );
        // No such process: no namespace to enter, refused before anything.
        let e = kind.prepare("r1-1", duplicate(""), &place(u32::MAX)).err().unwrap();
        assert!(e.is_refusal() && e.to_string().contains("in 0 namespaces"), "{e}");
    }

    #[test]
    fn in_a_container_the_undo_record_names_the_chain_inside_its_namespace() {
        let procs = Arc::new(crate::process::fake::FakeProcesses::new(vec![]));
        let mut setup = Setup::basic(procs);
        // prepare touches no firewall: the real one is only named here.
        setup.nfqueue = Some(crate::faults::packet::Nfqueue {
            firewall: Arc::new(crate::firewall::SystemFirewall::detect()),
            ipv6: false,
        });
        let kinds = Kinds::new(&setup);
        let kind = kinds.of(&duplicate("")).unwrap().1;
        // This test's own network namespace stands in for a container's.
        let me = std::process::id();
        let inode = ns_inode(me, "net").expect("own network namespace");
        let prepared = kind.prepare("r1-1", duplicate(""), &place(me)).unwrap();
        let objects = prepared.undo_objects();
        let [Object::InContainerNetns {
            container_id,
            netns_inode,
            object,
        }] = objects.as_slice()
        else {
            panic!("{objects:?}")
        };
        assert_eq!((container_id.as_str(), *netns_inode), ("c1", inode));
        assert!(
            matches!(object.as_ref(), Object::IptablesChain { chain, ipv6: false, .. } if chain == "faultline-d-r1-1"),
            "{object:?}"
        );
        let (detail, backend) = prepared.preview().unwrap();
        assert_eq!(backend, "nfqueue");
        assert!(detail.ends_with(&format!("in net:[{inode}]")), "{detail}");
    }
}
