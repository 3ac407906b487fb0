//! The fault table: the one task that owns every fault this agent applied.
//!
//! Link handlers send it [`Command`]s; it applies faults, restores them on
//! request, on `RestoreAll`, when a lease runs out, and when the agent shuts
//! down. Every state change goes out as a `FaultStatus` on an unbounded
//! channel the link drains, so statuses produced while the coordinator is
//! unreachable (a lease expiry, typically) are delivered after reconnecting.
//!
//! The table knows no fault kind: it admits an Inject (ids, duplicates,
//! policy), asks the kinds ([`crate::faults::Kinds`]) to prepare it, writes
//! the undo record of what the fault will create *before* applying it,
//! keeps the lease, restores through the fault itself and then deletes the
//! record.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use faultline_proto::metrics::Metrics;
use faultline_proto::v1;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{info, warn};

mod lifecycle;

use self::lifecycle::{inject, preview, restore, status, Active};
pub use self::lifecycle::{Error, Result};
use crate::faults::{Kinds, Setup};
use crate::journal::Journal;
use crate::policy::AgentPolicy;
use crate::process::ProcessTable;

/// What the table is asked to do.
// One command per fault and message, moved once through a channel: the
// size of the Inject variant costs nothing that boxing its spec would save.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Command {
    Inject {
        fault_id: String,
        run_id: String,
        spec: v1::FaultSpec,
        /// Requested lease; capped by [`TableConfig::max_lease`]. Zero means
        /// [`TableConfig::default_lease`].
        lease: Duration,
        /// Check only (for `plan`): answer PLANNED with what would be done,
        /// or REFUSED, touching nothing and writing no undo record.
        dry_run: bool,
        /// Narrows the fault to containers on this node; `None`: the node.
        container: Option<Box<v1::ContainerSelector>>,
    },
    Restore {
        fault_id: String,
    },
    RestoreAll {
        reason: String,
        /// Answered once every fault is restored.
        done: Option<oneshot::Sender<()>>,
    },
    Renew {
        fault_ids: Vec<String>,
        lease: Duration,
    },
}

/// Settings of the fault table.
#[derive(Clone)]
pub struct TableConfig {
    /// Lease used when the coordinator asks for none. By default, 15 s.
    pub default_lease: Duration,
    /// Longest lease the agent accepts, so a buggy or malicious coordinator
    /// cannot switch the dead-man switch off. By default, 60 s.
    pub max_lease: Duration,
    /// The fault kinds, set up for this node.
    pub kinds: Kinds,
    /// Where undo records go before a fault is applied. `None` only in
    /// unit tests of the table itself.
    pub journal: Option<Arc<Journal>>,
    /// The operator's policy file: allowed kinds and the longest a fault
    /// may stay applied.
    pub policy: AgentPolicy,
    /// Injection and restore counts and latencies (Prometheus).
    pub metrics: Metrics,
    /// The node's container runtime, for faults that target containers;
    /// `None` when none was detected (such faults are refused).
    pub runtime: Option<Arc<dyn crate::runtime::ContainerRuntime>>,
    /// Containers no fault targets (the agent's own).
    pub protected_containers: crate::runtime::Protected,
}

impl TableConfig {
    /// A table running `kinds`, with default leases, no journal and no policy.
    pub fn new(kinds: Kinds) -> Self {
        Self {
            default_lease: Duration::from_secs(15),
            max_lease: Duration::from_secs(60),
            kinds,
            journal: None,
            policy: AgentPolicy::default(),
            metrics: Metrics::new(),
            runtime: None,
            protected_containers: crate::runtime::Protected::default(),
        }
    }

    /// A table with no network backends and no fill paths ([`Setup::basic`]).
    pub fn basic(processes: Arc<dyn ProcessTable>) -> Self {
        Self::new(Kinds::new(&Setup::basic(processes)))
    }
}

/// Handle to the running table task.
#[derive(Clone)]
pub struct FaultTable {
    tx: mpsc::Sender<Command>,
    active: Arc<AtomicU32>,
    metrics: Metrics,
}

impl FaultTable {
    /// Starts the table task. Statuses go to `status_tx`.
    pub fn spawn(
        config: TableConfig,
        status_tx: mpsc::UnboundedSender<v1::FaultStatus>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(256);
        let active = Arc::new(AtomicU32::new(0));
        let metrics = config.metrics.clone();
        let task = tokio::spawn(run(config, rx, status_tx, active.clone()));
        (Self { tx, active, metrics }, task)
    }

    /// Sends a command; false if the table has stopped.
    pub async fn send(&self, cmd: Command) -> bool {
        self.tx.send(cmd).await.is_ok()
    }

    /// Restores every fault and waits until done.
    pub async fn restore_all(&self, reason: &str) {
        let (done, wait) = oneshot::channel();
        if self
            .send(Command::RestoreAll {
                reason: reason.to_string(),
                done: Some(done),
            })
            .await
        {
            let _ = wait.await;
        }
    }

    /// The agent's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Number of faults currently applied.
    pub fn active_faults(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }
}

async fn run(
    config: TableConfig,
    mut rx: mpsc::Receiver<Command>,
    out: mpsc::UnboundedSender<v1::FaultStatus>,
    active_count: Arc<AtomicU32>,
) {
    let mut active: HashMap<String, Active> = HashMap::new();
    loop {
        active_count.store(active.len() as u32, Ordering::Relaxed);
        let next_deadline = active.values().map(|a| a.deadline).min();
        let cmd = tokio::select! {
            cmd = rx.recv() => cmd,
            _ = sleep_until_opt(next_deadline) => {
                let now = Instant::now();
                let expired: Vec<String> = active
                    .iter()
                    .filter(|(_, a)| a.deadline <= now)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in expired {
                    if let Some(a) = active.remove(&id) {
                        let why = match (a.hard_deadline, config.policy.max_fault_duration) {
                            (Some(h), Some(max)) if h <= now => format!(
                                "agent policy {}: max_fault_duration {} reached",
                                config.policy.source,
                                humantime::format_duration(max)
                            ),
                            _ => "lease expired: no renewal from the coordinator".to_string(),
                        };
                        warn!(fault_id = %id, run_id = %a.run_id, %why, "restoring on our own");
                        let _ = out.send(restore(&config, &id, a, v1::FaultState::Expired, why).await);
                    }
                }
                continue;
            }
        };
        let Some(cmd) = cmd else {
            // Every sender is gone: the agent is shutting down.
            for (id, a) in active.drain() {
                let _ =
                    out.send(restore(&config, &id, a, v1::FaultState::Restored, "agent shutting down".into()).await);
            }
            break;
        };
        match cmd {
            Command::Inject {
                fault_id,
                run_id,
                spec,
                lease,
                dry_run,
                container,
            } => {
                let container = container.map(|c| *c);
                if dry_run && spec.kind.is_none() && container.as_ref().is_some_and(|c| c.pod.is_some()) {
                    let _ = out.send(lifecycle::pod_query(&config, &fault_id, &run_id, container));
                    continue;
                }
                if dry_run {
                    let _ = out.send(preview(&config, &fault_id, &run_id, spec, container, &active));
                    continue;
                }
                let lease = match lease {
                    d if d.is_zero() => config.default_lease,
                    d => d.min(config.max_lease),
                };
                let started = std::time::Instant::now();
                let kind = spec
                    .kind
                    .as_ref()
                    .and_then(|w| config.kinds.of(w))
                    .map_or("", |(r, _)| r.name);
                let result = inject(&config, &fault_id, &run_id, spec, container, &active);
                let st = match &result {
                    Ok((applied, _)) => {
                        let report = applied.injected();
                        info!(%fault_id, %run_id, %kind, detail = %report.detail, "fault injected");
                        let backend = applied.backend();
                        status(
                            &fault_id,
                            &run_id,
                            v1::FaultState::Injected,
                            report.detail,
                            &backend,
                            report.observation,
                        )
                    }
                    Err(e) => {
                        warn!(%fault_id, %run_id, %kind, err = %e, "fault not injected");
                        status(&fault_id, &run_id, e.state(), e.to_string(), e.backend(), None)
                    }
                };
                let label = faultline_proto::fault_state_name(st.state());
                config
                    .metrics
                    .inc("faultline_agent_injections_total", &[("kind", kind), ("result", label)]);
                let _ = out.send(st);
                if let Ok((applied, objects)) = result {
                    config.metrics.observe(
                        "faultline_agent_inject_seconds",
                        &[("kind", kind)],
                        started.elapsed().as_secs_f64(),
                    );
                    config
                        .metrics
                        .gauge_add("faultline_agent_active_faults", &[("kind", kind)], 1.0);
                    let now = Instant::now();
                    let hard_deadline = config.policy.max_fault_duration.map(|d| now + d);
                    let deadline = (now + lease).min(hard_deadline.unwrap_or(now + lease));
                    active.insert(
                        fault_id,
                        Active {
                            run_id,
                            kind,
                            objects,
                            deadline,
                            hard_deadline,
                            applied,
                        },
                    );
                }
            }
            Command::Restore { fault_id } => match active.remove(&fault_id) {
                Some(a) => {
                    let _ = out.send(
                        restore(
                            &config,
                            &fault_id,
                            a,
                            v1::FaultState::Restored,
                            "restored on request".into(),
                        )
                        .await,
                    );
                }
                None => {
                    // Already gone (expired, or restored twice): say so, so the
                    // coordinator's wait for an ack ends.
                    let _ = out.send(status(
                        &fault_id,
                        "",
                        v1::FaultState::Restored,
                        "not active on this agent (already restored)".into(),
                        "",
                        None,
                    ));
                }
            },
            Command::RestoreAll { reason, done } => {
                info!(count = active.len(), %reason, "restoring every fault");
                for (id, a) in active.drain() {
                    let _ = out.send(
                        restore(
                            &config,
                            &id,
                            a,
                            v1::FaultState::Restored,
                            format!("restore all: {reason}"),
                        )
                        .await,
                    );
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Command::Renew { fault_ids, lease } => {
                let lease = if lease.is_zero() {
                    config.default_lease
                } else {
                    lease.min(config.max_lease)
                };
                let deadline = Instant::now() + lease;
                for id in fault_ids {
                    match active.get_mut(&id) {
                        Some(a) => {
                            a.deadline = a.hard_deadline.map_or(deadline, |h| deadline.min(h));
                            tracing::debug!(fault_id = %id, lease_ms = lease.as_millis() as u64, "lease renewed");
                        }
                        None => tracing::debug!(fault_id = %id, "renewal for a fault this agent does not hold"),
                    }
                }
            }
        }
    }
    active_count.store(0, Ordering::Relaxed);
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
