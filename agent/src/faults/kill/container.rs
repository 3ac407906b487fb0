//! Kills inside containers: the node's process table seen through the
//! containers' pid namespaces, and the watcher that measures how long a
//! container whose PID 1 was killed takes to run again.
//!
//! A process belongs to a container when its pid namespace
//! (`/proc/<pid>/ns/pid`, compared by inode) is the one of the container's
//! init process. Host PIDs are used throughout: the agent runs in the
//! host's pid namespace (`hostPID` on Kubernetes).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio_util::sync::CancellationToken;

use super::{WATCH_INTERVAL, WATCH_LIMIT};
use crate::process::{self, ProcInfo, ProcessTable};
use crate::runtime::{ns_inode, Container, ContainerRuntime};

/// The processes of some containers, as a [`ProcessTable`]: the kill's
/// selection, preview and restart watcher then work unchanged.
pub struct InContainers {
    inner: Arc<dyn ProcessTable>,
    /// Pid namespaces of the containers, by inode.
    namespaces: HashSet<u64>,
    /// Host PIDs of the containers' init processes, left out of the listing
    /// unless `allow_pid1`.
    inits: HashSet<u32>,
    allow_pid1: bool,
}

impl InContainers {
    pub fn new(inner: Arc<dyn ProcessTable>, containers: &[Container], allow_pid1: bool) -> Self {
        Self {
            inner,
            namespaces: containers.iter().filter_map(|c| ns_inode(c.pid, "pid")).collect(),
            inits: containers.iter().map(|c| c.pid).collect(),
            allow_pid1,
        }
    }
}

impl ProcessTable for InContainers {
    fn list(&self) -> process::Result<Vec<ProcInfo>> {
        Ok(self
            .inner
            .list()?
            .into_iter()
            .filter(|p| ns_inode(p.pid, "pid").is_some_and(|ns| self.namespaces.contains(&ns)))
            .filter(|p| self.allow_pid1 || !self.inits.contains(&p.pid))
            .collect())
    }

    fn signal(&self, pid: u32, signal: Signal) -> process::Result<()> {
        self.inner.signal(pid, signal)
    }
}

/// A container's PID 1 was killed: what comes back is the container (its
/// restart policy), under a new pid namespace the process watcher does not
/// see; the watcher is replaced by one that asks the runtime.
pub(super) fn watch_containers_whose_init_was_killed(
    applied: &mut super::AppliedKill,
    containers: Vec<Container>,
    runtime: Arc<dyn ContainerRuntime>,
) {
    let hit: Vec<Container> = containers
        .into_iter()
        .filter(|c| applied.killed.iter().any(|k| k.pid == c.pid))
        .collect();
    if hit.is_empty() {
        return;
    }
    applied.stop.cancel();
    applied.watcher.abort();
    let stop = CancellationToken::new();
    applied.watcher = tokio::spawn(watch_for_container_restart(runtime, hit, Instant::now(), stop.clone()));
    applied.stop = stop;
    applied.container_restart = true;
}

/// Polls the runtime until one of `containers` (whose init was killed)
/// runs again under a new init PID; returns how long that took and the new
/// PID. A removed container never comes back: the watch ends with `None`.
async fn watch_for_container_restart(
    runtime: Arc<dyn ContainerRuntime>,
    containers: Vec<Container>,
    started: Instant,
    stop: CancellationToken,
) -> Option<(Duration, u32)> {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while started.elapsed() < WATCH_LIMIT {
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tick.tick() => {}
        }
        let (rt, cs) = (runtime.clone(), containers.clone());
        let seen = tokio::task::spawn_blocking(move || {
            cs.iter()
                .filter_map(|c| rt.inspect(&c.id).ok().flatten().map(|now| (c.pid, now)))
                .find(|(old, now)| now.running && now.pid != 0 && now.pid != *old)
                .map(|(_, now)| now.pid)
        })
        .await
        .ok()
        .flatten();
        if let Some(pid) = seen {
            return Some((started.elapsed(), pid));
        }
    }
    None
}
