//! Running firewall commands inside a container's network namespace.
//!
//! A network namespace belongs to a thread, not a process: a dedicated std
//! thread `setns(2)`s into the container's namespace
//! (`/proc/<pid>/ns/net`), runs the command there (`nft` and
//! `iptables-restore` children inherit the calling thread's namespaces) and
//! ends, so no tokio worker ever changes namespace. The namespace's file
//! descriptor is opened once, when the fault is prepared, so every call of
//! one fault reaches the same namespace even if the container's init PID
//! changes; the namespace is named by its inode (sibling containers of a
//! pod share one, and get one set of rules).

use std::fs::File;
use std::sync::Arc;

use nix::sched::{setns, CloneFlags};

use crate::firewall::{self, Family, Firewall};

/// A [`Firewall`] whose every call runs inside one network namespace.
pub struct InNetns {
    inner: Arc<dyn Firewall>,
    ns: Arc<File>,
    /// The namespace's inode, which names it.
    pub inode: u64,
}

impl InNetns {
    /// The network namespace of host PID `pid`.
    pub fn of_pid(inner: Arc<dyn Firewall>, pid: u32) -> std::io::Result<Self> {
        let path = format!("/proc/{pid}/ns/net");
        let ns = File::open(&path)?;
        let inode = super::ns_inode(pid, "net")
            .ok_or_else(|| std::io::Error::other(format!("cannot read the inode of {path}")))?;
        Ok(Self {
            inner,
            ns: Arc::new(ns),
            inode,
        })
    }

    /// Runs `f` on a scoped thread inside the namespace: everything `f`
    /// creates there (netlink sockets, child processes, threads) belongs
    /// to it.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
        enter(&self.ns, f)
    }

    /// Runs `f` on a thread inside the namespace.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Firewall) -> firewall::Result<T> + Send + 'static,
    ) -> firewall::Result<T> {
        let (inner, ns) = (self.inner.clone(), self.ns.clone());
        let inode = self.inode;
        let entered = move || -> firewall::Result<T> {
            setns(ns.as_ref(), CloneFlags::CLONE_NEWNET).map_err(|e| firewall::Error::Failed {
                tool: "setns".into(),
                stderr: format!("cannot enter network namespace net:[{inode}]: {e}"),
            })?;
            f(inner.as_ref())
        };
        std::thread::Builder::new()
            .name("fl-netns".into())
            .spawn(entered)
            .map_err(|source| firewall::Error::Spawn {
                tool: format!("a thread for net:[{inode}]"),
                source,
            })?
            .join()
            .map_err(|_| firewall::Error::Failed {
                tool: "setns".into(),
                stderr: format!("the thread in net:[{inode}] panicked"),
            })?
    }
}

/// Runs `f` on a scoped thread that first enters the network namespace
/// `ns` (an open `/proc/<pid>/ns/net`).
pub fn enter<T: Send>(ns: &File, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("fl-netns".into())
            .spawn_scoped(s, || {
                setns(ns, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                Ok(f())
            })?
            .join()
            .map_err(|_| std::io::Error::other("the thread in a container's network namespace panicked"))?
    })
}

impl Firewall for InNetns {
    fn iptables_restore(&self, family: Family, script: &str) -> firewall::Result<()> {
        let script = script.to_string();
        self.run(move |fw| fw.iptables_restore(family, &script))
    }

    fn iptables_save(&self, family: Family, table: &str) -> firewall::Result<String> {
        let table = table.to_string();
        self.run(move |fw| fw.iptables_save(family, &table))
    }

    fn nft_apply(&self, script: &str) -> firewall::Result<()> {
        let script = script.to_string();
        self.run(move |fw| fw.nft_apply(&script))
    }

    fn nft_tables(&self) -> firewall::Result<Vec<(String, String)>> {
        self.run(|fw| fw.nft_tables())
    }
}
