//! The orphan sweep inside containers: at start, faultline objects that no
//! undo record names (left by an agent whose state directory was lost) are
//! looked for in every running container's network namespace (iptables
//! chains, nftables tables and root qdiscs named by a fault kind) and in the
//! allowed fill directories as each container sees them (fill files), and
//! returned as [`Object::InContainerNetns`] / [`Object::ContainerFile`] for
//! the journal's [`Cleaner`] to remove. Only names a kind declares
//! ([`crate::faults::owned`]) are ever collected.
//!
//! One look per network namespace (keyed by its inode: a pod's containers
//! share one), and never the agent's own namespace, which the host sweep
//! covers.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::PathBuf;

use crate::journal::{Cleaner, Object, Owned};

use super::{netns, ns_inode, Container};

/// Orphans inside the runtime's running containers, and one line per
/// container that could not be looked into.
pub fn find_orphans(cleaner: &Cleaner, fill_dirs: &[PathBuf]) -> (Vec<Object>, Vec<String>) {
    let mut out = Vec::new();
    let mut lines = Vec::new();
    let Some(rt) = &cleaner.runtime else {
        return (out, lines);
    };
    let containers: Vec<Container> = match rt.list() {
        Ok(all) => all.into_iter().filter(|c| c.running && c.pid > 0).collect(),
        Err(e) => {
            lines.push(format!("could not list containers to sweep inside them: {e}"));
            return (out, lines);
        }
    };
    let own_net = ns_inode(std::process::id(), "net");
    let mut seen = BTreeSet::new();
    // Only what lives in a network namespace: firewall and qdisc objects.
    let in_netns = Cleaner {
        firewall: cleaner.firewall.clone(),
        tc: cleaner.tc.clone(),
        runtime: None,
        cgroups: None,
    };
    for c in &containers {
        let Some(inode) = ns_inode(c.pid, "net") else { continue };
        if Some(inode) == own_net || !seen.insert(inode) {
            continue;
        }
        let found = File::open(format!("/proc/{}/ns/net", c.pid))
            .and_then(|ns| netns::enter(&ns, || in_netns.find_orphans(&[])));
        match found {
            Ok(objects) => out.extend(
                objects
                    .into_iter()
                    .filter(|o| {
                        matches!(
                            o,
                            Object::IptablesChain { .. } | Object::NftTable { .. } | Object::Qdisc { .. }
                        )
                    })
                    .map(|object| Object::InContainerNetns {
                        container_id: c.id.clone(),
                        netns_inode: inode,
                        object: Box::new(object),
                    }),
            ),
            Err(e) => lines.push(format!("could not sweep inside container {}: {e}", c.name)),
        }
    }
    let prefixes: Vec<&str> = crate::faults::owned()
        .filter_map(|o| match o {
            Owned::Files { prefix } => Some(prefix),
            _ => None,
        })
        .collect();
    for c in &containers {
        let root = PathBuf::from(format!("/proc/{}/root", c.pid));
        for dir in fill_dirs {
            // Resolved inside the container's root, as the fill was.
            let Ok(fd) = crate::faults::disk_fill::open_in_root(&root, dir) else {
                continue;
            };
            let listed = std::fs::read_dir(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)));
            let Ok(entries) = listed else { continue };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if prefixes.iter().any(|p| name.starts_with(p)) {
                    out.push(Object::ContainerFile {
                        container_id: c.id.clone(),
                        container_name: c.name.clone(),
                        dir: dir.clone(),
                        name,
                    });
                }
            }
        }
    }
    (out, lines)
}
