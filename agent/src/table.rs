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
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use faultline_proto::metrics::Metrics;
use faultline_proto::{now_unix_ms, v1};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::faults::{self, Applied, Kinds, Prepared, Registration, Setup};
use crate::journal::{self, Journal, Object, Record};
use crate::policy::{self, AgentPolicy};
use crate::process::ProcessTable;

/// What the table is asked to do.
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
        }
    }

    /// A table with no network backends and no fill paths ([`Setup::basic`]).
    pub fn basic(processes: Arc<dyn ProcessTable>) -> Self {
        Self::new(Kinds::new(&Setup::basic(processes)))
    }
}

/// Why the table did not inject (or preview) a fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Ids outside the one id rule (`faultline_proto::ids`), so every name
    /// derived from a fault id is injective.
    #[error(transparent)]
    Id(#[from] faultline_proto::ids::IdError),
    #[error("fault {fault_id} (run {run_id}) is already active on this agent; a fault id is injected once")]
    Duplicate { fault_id: String, run_id: String },
    #[error("fault spec has no kind; this agent supports: {}", faults::names().collect::<Vec<_>>().join(", "))]
    NoKind,
    #[error(transparent)]
    Policy(#[from] policy::Error),
    /// The fault would create an object an active fault created (names
    /// come from fault ids injectively, but a few are hashes or 8-bit
    /// handles): its undo record would otherwise undo the other fault's.
    #[error("{object} belongs to active fault {owner}; restore it first")]
    Overlap { object: Object, owner: String },
    /// A record already there (an earlier restore of this id that failed)
    /// is not ours to overwrite or delete: it is what undoes that fault.
    #[error(
        "an undo record for fault {fault_id} is already in the state directory {} \
         (a restore of it failed); nothing was injected",
        dir.display()
    )]
    LeftOverRecord { fault_id: String, dir: PathBuf },
    #[error(transparent)]
    Journal(journal::Error),
    #[error("cannot write the undo journal, so nothing was injected: {0}")]
    RecordNotWritten(journal::Error),
    /// The fault kind's own refusal or failure; `backend` is what its
    /// status names.
    #[error("{source}")]
    Fault {
        source: faults::Error,
        backend: &'static str,
    },
}

impl Error {
    /// REFUSED (nothing was touched, because of what was asked) rather than FAILED.
    fn is_refusal(&self) -> bool {
        match self {
            Error::Journal(_) | Error::RecordNotWritten(_) => false,
            Error::Fault { source, .. } => source.is_refusal(),
            _ => true,
        }
    }

    /// The backend a status of this error names.
    fn backend(&self) -> &'static str {
        match self {
            Error::Fault { backend, .. } => backend,
            _ => "",
        }
    }

    fn state(&self) -> v1::FaultState {
        if self.is_refusal() {
            v1::FaultState::Refused
        } else {
            v1::FaultState::Failed
        }
    }
}

/// Result of the fault table.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A fault the table holds.
struct Active {
    run_id: String,
    /// Fault kind name, for metrics.
    kind: &'static str,
    /// The kernel objects and files the fault created (its undo record's),
    /// so a later fault that would create one of them is refused.
    objects: Vec<Object>,
    /// When the lease runs out (never after `hard_deadline`).
    deadline: Instant,
    /// The agent policy's max_fault_duration, counted from injection.
    hard_deadline: Option<Instant>,
    applied: Box<dyn Applied>,
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

fn status(
    fault_id: &str,
    run_id: &str,
    state: v1::FaultState,
    detail: String,
    backend: &str,
    observation: Option<v1::observation::Kind>,
) -> v1::FaultStatus {
    v1::FaultStatus {
        fault_id: fault_id.to_string(),
        run_id: run_id.to_string(),
        state: state as i32,
        detail,
        backend: backend.to_string(),
        at_unix_ms: now_unix_ms(),
        observation: observation.map(|k| v1::Observation { kind: Some(k) }),
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
            } => {
                if dry_run {
                    let _ = out.send(preview(&config, &fault_id, &run_id, spec, &active));
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
                let result = inject(&config, &fault_id, &run_id, spec, &active);
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

/// Whether an Inject may go ahead at all: its ids are valid (the one
/// validation of `faultline_proto::ids`, so every name derived from a fault
/// id is injective) and the fault id is not already active. Checked before
/// anything, the journal included, is touched.
fn admit(fault_id: &str, run_id: &str, active: &HashMap<String, Active>) -> Result<()> {
    faultline_proto::ids::validate_fault_id(fault_id)?;
    faultline_proto::ids::validate_run_id(run_id)?;
    if let Some(a) = active.get(fault_id) {
        return Err(Error::Duplicate {
            fault_id: fault_id.into(),
            run_id: a.run_id.clone(),
        });
    }
    Ok(())
}

/// Refuses a fault that would create an object an active fault created.
fn check_overlap(objects: &[Object], active: &HashMap<String, Active>) -> Result<()> {
    for (id, a) in active {
        if let Some(o) = a.objects.iter().find(|o| objects.contains(o)) {
            return Err(Error::Overlap {
                object: o.clone(),
                owner: id.clone(),
            });
        }
    }
    Ok(())
}

/// Everything short of touching the node: [`admit`], a kind this agent
/// knows and its policy allows, the kind's own checks of the spec, and no
/// object shared with an active fault. Returns the kind and the prepared
/// fault.
fn prepare(
    config: &TableConfig,
    fault_id: &str,
    run_id: &str,
    spec: v1::FaultSpec,
    active: &HashMap<String, Active>,
) -> Result<(&'static Registration, Box<dyn Prepared>)> {
    admit(fault_id, run_id, active)?;
    let wire = spec.kind.ok_or(Error::NoKind)?;
    let (reg, kind) = config.kinds.of(&wire).ok_or(Error::NoKind)?;
    config.policy.allows(reg.name)?;
    let prepared = kind.prepare(fault_id, wire).map_err(|source| Error::Fault {
        source,
        backend: reg.backend,
    })?;
    check_overlap(&prepared.undo_objects(), active)?;
    Ok((reg, prepared))
}

/// Answers a dry-run Inject: the same checks as an inject and the fault's
/// own preview, touching nothing and writing no undo record.
fn preview(
    config: &TableConfig,
    fault_id: &str,
    run_id: &str,
    spec: v1::FaultSpec,
    active: &HashMap<String, Active>,
) -> v1::FaultStatus {
    let planned = prepare(config, fault_id, run_id, spec, active).and_then(|(reg, prepared)| {
        prepared.preview().map_err(|source| Error::Fault {
            source,
            backend: reg.backend,
        })
    });
    match planned {
        Ok((detail, backend)) => status(fault_id, run_id, v1::FaultState::Planned, detail, &backend, None),
        Err(e) => status(fault_id, run_id, e.state(), e.to_string(), e.backend(), None),
    }
}

/// Prepares the fault, writes its undo record, applies it, and drops the
/// record again if nothing was applied. Returns the applied fault and the
/// objects it created.
fn inject(
    config: &TableConfig,
    fault_id: &str,
    run_id: &str,
    spec: v1::FaultSpec,
    active: &HashMap<String, Active>,
) -> Result<(Box<dyn Applied>, Vec<Object>)> {
    let (reg, prepared) = prepare(config, fault_id, run_id, spec, active)?;
    let objects = prepared.undo_objects();
    let apply = |prepared: Box<dyn Prepared>| {
        prepared.apply().map_err(|source| Error::Fault {
            source,
            backend: reg.backend,
        })
    };
    let journal = match &config.journal {
        // Nothing to undo (kill), or no journal (unit tests of the table).
        Some(j) if !objects.is_empty() => j,
        _ => return Ok((apply(prepared)?, objects)),
    };
    if journal.contains(fault_id).map_err(Error::Journal)? {
        return Err(Error::LeftOverRecord {
            fault_id: fault_id.into(),
            dir: journal.dir().to_path_buf(),
        });
    }
    let rec = Record {
        fault_id: fault_id.to_string(),
        run_id: run_id.to_string(),
        kind: reg.name.to_string(),
        created_unix_ms: now_unix_ms(),
        objects: objects.clone(),
    };
    journal.write(&rec).map_err(Error::RecordNotWritten)?;
    let applied = apply(prepared).inspect_err(|_| {
        // Only the record this inject wrote (fault ids name records one to one).
        if let Err(e) = journal.remove(fault_id) {
            warn!(%fault_id, err = %e, "cannot delete the undo record of a fault that was not applied");
        }
    })?;
    Ok((applied, objects))
}

/// Restores a fault and, once it is gone, deletes its undo record; a
/// failed restore keeps the record so the next agent start retries it.
async fn restore(
    config: &TableConfig,
    fault_id: &str,
    a: Active,
    state: v1::FaultState,
    why: String,
) -> v1::FaultStatus {
    let kind = a.kind;
    let started = std::time::Instant::now();
    let backend = a.applied.backend();
    let st = match a.applied.restore().await {
        Ok(r) => status(
            fault_id,
            &a.run_id,
            state,
            format!("{why}; {}", r.detail),
            &backend,
            r.observation,
        ),
        Err(e) => status(
            fault_id,
            &a.run_id,
            v1::FaultState::Failed,
            format!("{why}; {e}"),
            &backend,
            None,
        ),
    };
    let m = &config.metrics;
    m.gauge_add("faultline_agent_active_faults", &[("kind", kind)], -1.0);
    if st.state() == v1::FaultState::Failed {
        m.inc("faultline_agent_restore_failures_total", &[("kind", kind)]);
    } else {
        m.observe(
            "faultline_agent_restore_seconds",
            &[("kind", kind)],
            started.elapsed().as_secs_f64(),
        );
    }
    if state == v1::FaultState::Expired {
        m.inc("faultline_agent_lease_expiries_total", &[("kind", kind)]);
    }
    if st.state() != v1::FaultState::Failed {
        if let Some(j) = &config.journal {
            if let Err(e) = j.remove(fault_id) {
                warn!(%fault_id, err = %e, "restored, but cannot delete the undo record");
            }
        }
    }
    st
}

#[cfg(test)]
mod tests;
