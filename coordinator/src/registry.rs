//! The agent registry: who is connected, what they said about themselves,
//! and the channel to send each one commands.
//!
//! State sits behind a `std::sync::Mutex` that is never held across an
//! `.await`: every method copies what it needs out and returns. Fault
//! statuses are routed to the run that owns the fault: by the `run_id` the
//! agent echoes, else by the fault id → run id map [`Registry::inject`]
//! records. Fault ids carry no meaning here.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use faultline_proto::hello::HelloError;
use faultline_proto::{now_unix_ms, v1};
use tokio::sync::{mpsc, watch};

/// What the coordinator knows about a connected agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentInfo {
    pub agent_id: String,
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    pub addresses: Vec<String>,
    pub capabilities: Vec<String>,
    pub version: String,
    pub pid: u32,
    pub connected_at_unix_ms: u64,
    pub last_heartbeat_unix_ms: u64,
    pub active_faults: u32,
    /// What the agent cleaned up at start (undo journal, orphans).
    pub cleaned: Vec<String>,
}

impl AgentInfo {
    /// Builds the registry entry from a Hello, refusing one with an invalid
    /// agent id or over the limits of [`faultline_proto::hello`].
    pub fn from_hello(h: v1::Hello) -> Result<Self, HelloError> {
        faultline_proto::hello::check(&h)?;
        let now = now_unix_ms();
        Ok(Self {
            agent_id: h.agent_id,
            hostname: h.hostname,
            labels: h.labels.into_iter().collect(),
            addresses: h.addresses,
            capabilities: h.capabilities,
            version: h.version,
            pid: h.pid,
            connected_at_unix_ms: now,
            last_heartbeat_unix_ms: now,
            active_faults: 0,
            cleaned: h.cleaned,
        })
    }

    pub fn to_wire(&self) -> v1::AgentInfo {
        v1::AgentInfo {
            agent_id: self.agent_id.clone(),
            hostname: self.hostname.clone(),
            labels: self.labels.clone().into_iter().collect(),
            addresses: self.addresses.clone(),
            capabilities: self.capabilities.clone(),
            version: self.version.clone(),
            connected_at_unix_ms: self.connected_at_unix_ms,
            last_heartbeat_unix_ms: self.last_heartbeat_unix_ms,
            active_faults: self.active_faults,
            pid: self.pid,
            cleaned: self.cleaned.clone(),
        }
    }
}

/// Errors of the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An agent id that is already connected.
    #[error("agent id {agent_id:?} is already connected (since unix ms {connected_at_unix_ms}); a second stream with the same id is accepted once the first one ends or misses its heartbeats")]
    Duplicate {
        agent_id: String,
        connected_at_unix_ms: u64,
    },
    #[error("agent {0} is not connected")]
    NotConnected(String),
    /// The agent's command queue is full: its stream is wedged.
    #[error("agent {0}: command queue full")]
    QueueFull(String),
    #[error("agent {0} disconnected")]
    Disconnected(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A fault status from one agent.
#[derive(Debug, Clone)]
pub struct StatusFromAgent {
    pub agent_id: String,
    pub status: v1::FaultStatus,
}

struct Entry {
    info: AgentInfo,
    conn: u64,
    tx: mpsc::Sender<v1::CoordinatorMessage>,
}

#[derive(Default)]
struct Inner {
    /// By agent id; ordered so `ListAgents` can page through it.
    agents: BTreeMap<String, Entry>,
    /// By run id: where the run's statuses go.
    runs: HashMap<String, Route>,
    /// Fault id → run id, recorded when the run sends the fault's Inject.
    faults: HashMap<String, String>,
}

/// A subscribed run's statuses channel and the faults it injected.
struct Route {
    tx: mpsc::UnboundedSender<StatusFromAgent>,
    faults: Vec<String>,
}

/// Connected agents and the routes of fault statuses to runs.
pub struct Registry {
    inner: Mutex<Inner>,
    next_conn: AtomicU64,
    /// Bumped on every connect and disconnect, so waiters can watch it.
    changes: watch::Sender<u64>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            next_conn: AtomicU64::new(1),
            changes: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the maps half-updated
        // (every update is a single insert/remove), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    /// Adds an agent. An id that is already connected is refused: a second
    /// stream must not take over the first one's commands. The same id is
    /// accepted again once the old stream is removed (it ended, broke, or
    /// missed its heartbeats). Returns the connection number to pass to
    /// [`Registry::remove`].
    pub fn add(&self, info: AgentInfo, tx: mpsc::Sender<v1::CoordinatorMessage>) -> Result<u64> {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        {
            let mut inner = self.lock();
            if let Some(old) = inner.agents.get(&info.agent_id) {
                return Err(Error::Duplicate {
                    agent_id: info.agent_id,
                    connected_at_unix_ms: old.info.connected_at_unix_ms,
                });
            }
            inner.agents.insert(info.agent_id.clone(), Entry { info, conn, tx });
        }
        self.bump();
        Ok(conn)
    }

    /// Removes the agent if `conn` is still its current connection, freeing
    /// everything the registry held for it (its Hello and command queue).
    pub fn remove(&self, agent_id: &str, conn: u64) {
        let mut inner = self.lock();
        if inner.agents.get(agent_id).is_some_and(|e| e.conn == conn) {
            inner.agents.remove(agent_id);
            drop(inner);
            self.bump();
        }
    }

    /// How many agents are connected.
    pub fn len(&self) -> usize {
        self.lock().agents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn heartbeat(&self, agent_id: &str, active_faults: u32) {
        if let Some(e) = self.lock().agents.get_mut(agent_id) {
            e.info.last_heartbeat_unix_ms = now_unix_ms();
            e.info.active_faults = active_faults;
        }
    }

    /// Every connected agent, sorted by id.
    pub fn agents(&self) -> Vec<AgentInfo> {
        self.lock().agents.values().map(|e| e.info.clone()).collect()
    }

    /// Up to `limit` agents with ids after `after` (all when `None`), sorted
    /// by id, and whether more follow.
    pub fn agents_after(&self, after: Option<&str>, limit: usize) -> (Vec<AgentInfo>, bool) {
        let inner = self.lock();
        let start = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        let mut it = inner
            .agents
            .range::<str, _>((start, Bound::Unbounded))
            .map(|(_, e)| e.info.clone());
        let page: Vec<AgentInfo> = it.by_ref().take(limit).collect();
        let more = it.next().is_some();
        (page, more)
    }

    /// Queues `msg` for `agent_id`. Fails if the agent is not connected or
    /// its queue is full (a wedged stream).
    pub fn send(&self, agent_id: &str, msg: v1::CoordinatorMessage) -> Result<()> {
        let tx = self
            .lock()
            .agents
            .get(agent_id)
            .map(|e| e.tx.clone())
            .ok_or_else(|| Error::NotConnected(agent_id.to_string()))?;
        tx.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::QueueFull(agent_id.to_string()),
            mpsc::error::TrySendError::Closed(_) => Error::Disconnected(agent_id.to_string()),
        })
    }

    /// Sends an Inject and records which run its fault belongs to, so the
    /// fault's statuses reach that run whatever its id looks like (also one
    /// that arrives without a run id). Only a subscribed run's faults are
    /// recorded; [`Registry::unsubscribe`] forgets them.
    pub fn inject(&self, agent_id: &str, inject: v1::Inject) -> Result<()> {
        {
            let mut inner = self.lock();
            let Inner { runs, faults, .. } = &mut *inner;
            if let Some(route) = runs.get_mut(&inject.run_id) {
                if !faults.contains_key(&inject.fault_id) {
                    faults.insert(inject.fault_id.clone(), inject.run_id.clone());
                    route.faults.push(inject.fault_id.clone());
                }
            }
        }
        self.send(
            agent_id,
            v1::CoordinatorMessage {
                msg: Some(v1::coordinator_message::Msg::Inject(inject)),
            },
        )
    }

    /// Routes fault statuses with this `run_id` to the returned receiver
    /// until [`Registry::unsubscribe`].
    pub fn subscribe(&self, run_id: &str) -> mpsc::UnboundedReceiver<StatusFromAgent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        let old = inner.runs.insert(run_id.to_string(), Route { tx, faults: Vec::new() });
        // Subscribing again starts afresh: the old route's faults go.
        for f in old.map(|r| r.faults).unwrap_or_default() {
            inner.faults.remove(&f);
        }
        rx
    }

    /// Stops routing `run_id`'s statuses and forgets its faults.
    pub fn unsubscribe(&self, run_id: &str) {
        let mut inner = self.lock();
        if let Some(route) = inner.runs.remove(run_id) {
            for f in route.faults {
                inner.faults.remove(&f);
            }
        }
    }

    /// Delivers a status to the run that owns it: the run its `run_id`
    /// names, or, for a status without one (e.g. the ack of a restore of an
    /// already-gone fault), the run that sent the fault's Inject through
    /// [`Registry::inject`]. Hands the status back if no run in flight
    /// takes it (the caller records it elsewhere).
    pub fn route(&self, agent_id: &str, status: v1::FaultStatus) -> Option<v1::FaultStatus> {
        let inner = self.lock();
        let route = inner
            .runs
            .get(&status.run_id)
            .or_else(|| inner.faults.get(&status.fault_id).and_then(|run| inner.runs.get(run)));
        let Some(Route { tx, .. }) = route else {
            return Some(status);
        };
        let sent = StatusFromAgent {
            agent_id: agent_id.to_string(),
            status,
        };
        tx.send(sent).err().map(|e| e.0.status)
    }

    /// Watches connects and disconnects.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Waits until at least `n` agents are connected or `timeout` passes.
    pub async fn wait_for(&self, n: usize, timeout: std::time::Duration) -> bool {
        let mut rx = self.changes();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.lock().agents.len() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return self.lock().agents.len() >= n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(fault_id: &str, run_id: &str) -> v1::FaultStatus {
        v1::FaultStatus {
            fault_id: fault_id.into(),
            run_id: run_id.into(),
            state: v1::FaultState::Injected as i32,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_status_reaches_the_run_that_injected_its_fault_whatever_the_fault_id() {
        let registry = Registry::new();
        let (tx, mut agent) = mpsc::channel(8);
        registry
            .add(
                AgentInfo::from_hello(v1::Hello {
                    agent_id: "a1".into(),
                    ..Default::default()
                })
                .unwrap(),
                tx,
            )
            .unwrap();
        let mut run = registry.subscribe("r1");
        let inject = v1::Inject {
            fault_id: "fault-not-named-after-its-run".into(),
            run_id: "r1".into(),
            ..Default::default()
        };
        registry.inject("a1", inject).unwrap();
        assert!(matches!(
            agent.recv().await.and_then(|m| m.msg),
            Some(v1::coordinator_message::Msg::Inject(_))
        ));
        // With the run id, and without one (found by the fault id).
        assert!(registry
            .route("a1", status("fault-not-named-after-its-run", "r1"))
            .is_none());
        assert!(registry
            .route("a1", status("fault-not-named-after-its-run", ""))
            .is_none());
        for _ in 0..2 {
            let got = run.try_recv().expect("the run got the status");
            assert_eq!(
                (got.agent_id.as_str(), got.status.fault_id.as_str()),
                ("a1", "fault-not-named-after-its-run")
            );
        }
        // A fault id that merely starts with a run id routes nowhere: ids
        // carry no meaning, only the Inject does.
        assert!(registry.route("a1", status("r1-1", "")).is_some());
        // Once the run unsubscribes, its faults are forgotten.
        registry.unsubscribe("r1");
        let _other = registry.subscribe("r2");
        assert!(registry
            .route("a1", status("fault-not-named-after-its-run", ""))
            .is_some());
    }

    #[test]
    fn sending_to_an_unknown_agent_names_it() {
        let e = Registry::new()
            .send("ghost", v1::CoordinatorMessage::default())
            .unwrap_err();
        assert_eq!(e, Error::NotConnected("ghost".into()));
        assert_eq!(e.to_string(), "agent ghost is not connected");
    }
}
