//! Blocks inside containers: the fault's nftables table is installed in
//! each target container's network namespace ([`InNetns`]), once per
//! namespace (containers sharing one, like the containers of a pod, get one
//! table). The namespace's descriptor is held while the fault is in place,
//! so restore deletes the table in that namespace even after the container
//! restarted (the old namespace lives until the descriptor closes, then
//! goes, rules and all): no lookup of a container that is gone, no error
//! loop.

use std::collections::BTreeMap;
use std::sync::Arc;

use faultline_proto::v1;

use super::{apply, preview, AppliedBlock, BlockSpec, Error, KIND};
use crate::faults::{self, Applied, Prepared, Report, Restoring};
use crate::firewall::{Exempt, Firewall};
use crate::journal::Object;
use crate::runtime::netns::InNetns;
use crate::runtime::Container;

/// One network namespace to block in, and the containers in it.
struct Target {
    firewall: Arc<InNetns>,
    container: Container,
    names: Vec<String>,
}

/// Blocks ready to install, one per network namespace.
pub struct PreparedBlocks {
    targets: Vec<Target>,
    fault_id: String,
    spec: BlockSpec,
    table: String,
    exempt: Exempt,
}

impl PreparedBlocks {
    pub fn new(
        firewall: Arc<dyn Firewall>,
        fault_id: &str,
        spec: BlockSpec,
        table: String,
        containers: &[Container],
        exempt: Exempt,
    ) -> Result<Self, Error> {
        let mut by_ns: BTreeMap<u64, Target> = BTreeMap::new();
        for c in containers {
            let fw = InNetns::of_pid(firewall.clone(), c.pid).map_err(|e| {
                Error::Refused(format!(
                    "cannot open the network namespace of container {}: {e}",
                    c.name
                ))
            })?;
            by_ns
                .entry(fw.inode)
                .or_insert_with(|| Target {
                    firewall: Arc::new(fw),
                    container: c.clone(),
                    names: Vec::new(),
                })
                .names
                .push(c.name.clone());
        }
        Ok(Self {
            targets: by_ns.into_values().collect(),
            fault_id: fault_id.to_string(),
            spec,
            table,
            exempt,
        })
    }
}

impl Prepared for PreparedBlocks {
    fn undo_objects(&self) -> Vec<Object> {
        self.targets
            .iter()
            .map(|t| Object::InContainerNetns {
                container_id: t.container.id.clone(),
                netns_inode: t.firewall.inode,
                object: Box::new(Object::NftTable {
                    family: "inet".into(),
                    name: self.table.clone(),
                }),
            })
            .collect()
    }

    fn preview(&self) -> faults::Result<(String, String)> {
        let mut parts = Vec::new();
        for t in &self.targets {
            let p = preview(t.firewall.as_ref(), &self.fault_id, &self.spec)?;
            parts.push(format!("{p} in net:[{}] of {}", t.firewall.inode, t.names.join(", ")));
        }
        Ok((parts.join("; "), KIND.backend.into()))
    }

    fn apply(self: Box<Self>) -> faults::Result<Box<dyn Applied>> {
        let mut done: Vec<(AppliedBlock, String)> = Vec::new();
        for t in &self.targets {
            let fw: Arc<dyn Firewall> = t.firewall.clone();
            match apply(fw, &self.fault_id, &self.spec, &self.exempt) {
                Ok(a) => done.push((a, format!("net:[{}] of {}", t.firewall.inode, t.names.join(", ")))),
                Err(e) => {
                    for (a, _) in done {
                        let _ = a.restore();
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(Box::new(AppliedBlocks { blocks: done }))
    }
}

/// Tables in place in containers' network namespaces.
pub struct AppliedBlocks {
    blocks: Vec<(AppliedBlock, String)>,
}

impl AppliedBlocks {
    fn observation(&self) -> Option<v1::observation::Kind> {
        self.blocks
            .first()
            .map(|(b, _)| v1::observation::Kind::Block(b.observation()))
    }
}

impl Applied for AppliedBlocks {
    fn backend(&self) -> String {
        KIND.backend.into()
    }

    fn injected(&self) -> Report {
        let parts: Vec<String> = self
            .blocks
            .iter()
            .map(|(b, at)| {
                format!(
                    "dropping traffic to and from {} peer network(s) with nftables table inet {} in {at}",
                    b.peers, b.table
                )
            })
            .collect();
        Report {
            detail: parts.join("; "),
            observation: self.observation(),
        }
    }

    fn restore(self: Box<Self>) -> Restoring {
        let observation = self.observation();
        let mut lines = Vec::new();
        let mut failed = None;
        for (b, at) in self.blocks {
            let table = b.table.clone();
            match b.restore() {
                Ok(()) => lines.push(format!("deleted nftables table inet {table} in {at}")),
                Err(e) => failed = Some(e),
            }
        }
        Box::pin(async move {
            if let Some(e) = failed {
                return Err(e.into());
            }
            Ok(Report {
                detail: lines.join("; "),
                observation,
            })
        })
    }
}
