//! The fault table: the one task that owns every fault this agent applied.
//!
//! Link handlers send it [`Command`]s; it applies faults, restores them on
//! request, on `RestoreAll`, when a lease runs out, and when the agent shuts
//! down. Every state change goes out as a `FaultStatus` on an unbounded
//! channel the link drains, so statuses produced while the coordinator is
//! unreachable (a lease expiry, typically) are delivered after reconnecting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use faultline_proto::{now_unix_ms, v1};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::faults::{
    block, disk_fill, kill, latency, AppliedBlock, AppliedFill, AppliedKill, AppliedLatency, Backends, BlockSpec,
    DiskFillSpec, FillPolicy, KillSpec, LatencySpec, Protection,
};
use crate::firewall::{Exempt, Firewall};
use crate::journal::{Journal, Object, Record};
use crate::policy::AgentPolicy;
use crate::process::ProcessTable;
use faultline_proto::metrics::Metrics;

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
    /// Processes a kill never signals.
    pub protection: Protection,
    /// The process boundary (real or fake).
    pub processes: Arc<dyn ProcessTable>,
    /// Where disk fills may go and how full they may leave a filesystem.
    pub fill: FillPolicy,
    /// Latency backends that work on this node.
    pub latency: Backends,
    /// nftables for block faults; `None` when `nft` is not installed.
    pub block: Option<Arc<dyn Firewall>>,
    /// Traffic no network fault touches (the coordinator, SSH).
    pub exempt: Exempt,
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
    /// A table with no network backends: kill and disk_fill only.
    pub fn basic(processes: Arc<dyn ProcessTable>) -> Self {
        Self {
            default_lease: Duration::from_secs(15),
            max_lease: Duration::from_secs(60),
            protection: Protection::default(),
            processes,
            fill: FillPolicy::default(),
            latency: Backends::default(),
            block: None,
            exempt: Exempt::default(),
            journal: None,
            policy: AgentPolicy::default(),
            metrics: Metrics::new(),
        }
    }
}

enum Applied {
    Kill(AppliedKill),
    DiskFill(AppliedFill),
    Latency {
        backend: &'static str,
        applied: Box<dyn AppliedLatency>,
    },
    Block(AppliedBlock),
}

struct Active {
    run_id: String,
    /// Fault kind, for metrics.
    kind: &'static str,
    /// The kernel objects and files the fault created (its undo record's),
    /// so a later fault that would create one of them is refused.
    objects: Vec<Object>,
    /// When the lease runs out (never after `hard_deadline`).
    deadline: Instant,
    /// The agent policy's max_fault_duration, counted from injection.
    hard_deadline: Option<Instant>,
    applied: Applied,
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
                let kind = kind_of(&spec);
                let started = std::time::Instant::now();
                let (st, applied, objects) = match admit(&fault_id, &run_id, &active) {
                    Ok(()) => inject(&config, &fault_id, &run_id, spec, &active),
                    Err(why) => (
                        not_injected(&fault_id, &run_id, kind, true, why, "").0,
                        None,
                        Vec::new(),
                    ),
                };
                let result = faultline_proto::fault_state_name(st.state());
                config.metrics.inc(
                    "faultline_agent_injections_total",
                    &[("kind", kind), ("result", result)],
                );
                if applied.is_some() {
                    config.metrics.observe(
                        "faultline_agent_inject_seconds",
                        &[("kind", kind)],
                        started.elapsed().as_secs_f64(),
                    );
                    config
                        .metrics
                        .gauge_add("faultline_agent_active_faults", &[("kind", kind)], 1.0);
                }
                let _ = out.send(st);
                if let Some(applied) = applied {
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
fn admit(fault_id: &str, run_id: &str, active: &HashMap<String, Active>) -> Result<(), String> {
    faultline_proto::ids::validate_fault_id(fault_id).map_err(|e| e.to_string())?;
    faultline_proto::ids::validate_run_id(run_id).map_err(|e| e.to_string())?;
    if let Some(a) = active.get(fault_id) {
        return Err(format!(
            "fault {fault_id} (run {}) is already active on this agent; a fault id is injected once",
            a.run_id
        ));
    }
    Ok(())
}

/// Refuses a fault that would create an object an active fault created
/// (names come from fault ids injectively, but a few are hashes or 8-bit
/// handles): its undo record would otherwise undo the other fault's.
fn check_overlap(objects: &[Object], active: &HashMap<String, Active>) -> Result<(), String> {
    for (id, a) in active {
        if let Some(o) = a.objects.iter().find(|o| objects.contains(o)) {
            return Err(format!("{o} belongs to active fault {id}; restore it first"));
        }
    }
    Ok(())
}

/// Answers a dry-run Inject: the same id, policy and spec checks as an
/// inject and the fault's own preview, touching nothing.
fn preview(
    config: &TableConfig,
    fault_id: &str,
    run_id: &str,
    spec: v1::FaultSpec,
    active: &HashMap<String, Active>,
) -> v1::FaultStatus {
    let kind = kind_of(&spec);
    let answer = |r: Result<String, (bool, String)>, backend: &str| match r {
        Ok(detail) => status(fault_id, run_id, v1::FaultState::Planned, detail, backend, None),
        Err((refusal, why)) => {
            let state = if refusal {
                v1::FaultState::Refused
            } else {
                v1::FaultState::Failed
            };
            status(fault_id, run_id, state, why, backend, None)
        }
    };
    let checks = admit(fault_id, run_id, active)
        .and_then(|()| config.policy.allows(kind))
        .and_then(|()| match undo_objects(config, fault_id, &spec) {
            Ok(Some((_, objects))) => check_overlap(&objects, active),
            _ => Ok(()),
        });
    if let Err(why) = checks {
        return answer(Err((true, why)), "");
    }
    let fail = |refusal: bool, e: String| (refusal, e);
    match spec.kind {
        None => answer(
            Err((
                true,
                "fault spec has no kind; this agent supports: kill, disk_fill, latency, block".into(),
            )),
            "",
        ),
        Some(v1::fault_spec::Kind::Kill(k)) => answer(
            KillSpec::try_from(k)
                .and_then(|s| kill::preview(&s, config.processes.as_ref(), &config.protection))
                .map_err(|e| fail(e.is_refusal(), e.to_string())),
            "signal",
        ),
        Some(v1::fault_spec::Kind::DiskFill(d)) => answer(
            DiskFillSpec::try_from(d)
                .and_then(|s| disk_fill::preview(fault_id, &s, &config.fill))
                .map_err(|e| fail(e.is_refusal(), e.to_string())),
            "fallocate",
        ),
        Some(v1::fault_spec::Kind::Latency(l)) => {
            let r = LatencySpec::try_from(l).and_then(|spec| {
                let backend = config.latency.choose(spec.backend)?;
                let objects = backend.plan(fault_id, &spec)?;
                Ok((spec, backend.name(), objects))
            });
            match r {
                Ok((spec, backend, objects)) => answer(
                    Ok(format!(
                        "would delay by {} ms ± {} ms, {}% loss, with {backend}: {}",
                        spec.delay.as_millis(),
                        spec.jitter.as_millis(),
                        spec.loss_percent,
                        objects.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(", ")
                    )),
                    backend,
                ),
                Err(e) => answer(Err((e.is_refusal(), e.to_string())), ""),
            }
        }
        Some(v1::fault_spec::Kind::Block(b)) => answer(
            BlockSpec::try_from(b)
                .and_then(|spec| {
                    let fw = config.block.clone().ok_or_else(|| {
                        block::Error::Refused("nft is not installed on this node, so it cannot block traffic".into())
                    })?;
                    block::preview(fw.as_ref(), fault_id, &spec)
                })
                .map_err(|e| fail(e.is_refusal(), e.to_string())),
            "nftables",
        ),
    }
}

/// What a fault will create, known before it touches anything, for its
/// undo record. `Ok(None)`: nothing to undo (kill). `Err`: the fault cannot
/// be planned (bad spec, no backend), reported as its refusal.
fn undo_objects(
    config: &TableConfig,
    fault_id: &str,
    spec: &v1::FaultSpec,
) -> Result<Option<(String, Vec<Object>)>, String> {
    match &spec.kind {
        Some(v1::fault_spec::Kind::DiskFill(d)) => {
            let dir = std::path::Path::new(&d.path);
            let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
            let name = disk_fill::fill_file_name(fault_id).map_err(|e| e.to_string())?;
            Ok(Some(("disk_fill".into(), vec![Object::File { path: dir.join(name) }])))
        }
        Some(v1::fault_spec::Kind::Block(_)) => Ok(Some((
            "block".into(),
            vec![Object::NftTable {
                family: "inet".into(),
                name: block::table_name(fault_id).map_err(|e| e.to_string())?,
            }],
        ))),
        Some(v1::fault_spec::Kind::Latency(l)) => {
            let spec = LatencySpec::try_from(l.clone()).map_err(|e| e.to_string())?;
            let backend = config.latency.choose(spec.backend).map_err(|e| e.to_string())?;
            let objects = backend.plan(fault_id, &spec).map_err(|e| e.to_string())?;
            Ok(Some(("latency".into(), objects)))
        }
        Some(v1::fault_spec::Kind::Kill(_)) | None => Ok(None),
    }
}

/// The kind name of a wire spec.
fn kind_of(spec: &v1::FaultSpec) -> &'static str {
    match &spec.kind {
        Some(v1::fault_spec::Kind::Kill(_)) => "kill",
        Some(v1::fault_spec::Kind::DiskFill(_)) => "disk_fill",
        Some(v1::fault_spec::Kind::Latency(_)) => "latency",
        Some(v1::fault_spec::Kind::Block(_)) => "block",
        None => "",
    }
}

/// Writes the undo record, applies the fault, and drops the record again
/// if nothing was applied. Returns the status, the applied fault and the
/// objects it created. The caller has [`admit`]ted the ids.
fn inject(
    config: &TableConfig,
    fault_id: &str,
    run_id: &str,
    spec: v1::FaultSpec,
    active: &HashMap<String, Active>,
) -> (v1::FaultStatus, Option<Applied>, Vec<Object>) {
    let kind = kind_of(&spec);
    let refused = |why: String| (not_injected(fault_id, run_id, kind, true, why, "").0, None, Vec::new());
    if let Err(why) = config.policy.allows(kind) {
        return refused(why);
    }
    let (record_kind, objects) = match undo_objects(config, fault_id, &spec) {
        Ok(Some(x)) => x,
        // Nothing to undo (kill), or planning failed: inject_now reports the
        // same problem as a refusal.
        Ok(None) | Err(_) => {
            let (st, applied) = inject_now(config, fault_id, run_id, spec);
            return (st, applied, Vec::new());
        }
    };
    if let Err(why) = check_overlap(&objects, active) {
        return refused(why);
    }
    let Some(journal) = &config.journal else {
        let (st, applied) = inject_now(config, fault_id, run_id, spec);
        return (st, applied, objects);
    };
    // A record already there (an earlier restore of this id that failed)
    // is not ours to overwrite or delete: it is what undoes that fault.
    match journal.contains(fault_id) {
        Ok(false) => {}
        Ok(true) => {
            return refused(format!(
                "an undo record for fault {fault_id} is already in the state directory {} \
                 (a restore of it failed); nothing was injected",
                journal.dir().display()
            ))
        }
        Err(e) => {
            let (st, _) = not_injected(fault_id, run_id, kind, false, e.to_string(), "");
            return (st, None, Vec::new());
        }
    }
    let rec = Record {
        fault_id: fault_id.to_string(),
        run_id: run_id.to_string(),
        kind: record_kind.clone(),
        created_unix_ms: now_unix_ms(),
        objects: objects.clone(),
    };
    if let Err(e) = journal.write(&rec) {
        let (st, _) = not_injected(
            fault_id,
            run_id,
            &record_kind,
            false,
            format!("cannot write the undo journal, so nothing was injected: {e}"),
            "",
        );
        return (st, None, Vec::new());
    }
    let (st, applied) = inject_now(config, fault_id, run_id, spec);
    if applied.is_none() {
        // Only the record this inject wrote (fault ids name records one to one).
        if let Err(e) = journal.remove(fault_id) {
            warn!(%fault_id, err = %e, "cannot delete the undo record of a fault that was not applied");
        }
    }
    (st, applied, objects)
}

fn inject_now(
    config: &TableConfig,
    fault_id: &str,
    run_id: &str,
    spec: v1::FaultSpec,
) -> (v1::FaultStatus, Option<Applied>) {
    let refused = |why: String| status(fault_id, run_id, v1::FaultState::Refused, why, "", None);
    match spec.kind {
        None => (
            refused("fault spec has no kind; this agent supports: kill, disk_fill, latency, block".into()),
            None,
        ),
        Some(v1::fault_spec::Kind::Latency(l)) => {
            let result = LatencySpec::try_from(l).and_then(|spec| {
                let backend = config.latency.choose(spec.backend)?;
                let applied = backend.apply(fault_id, &spec, &config.exempt)?;
                Ok((spec, backend.name(), applied))
            });
            match result {
                Ok((spec, backend, applied)) => {
                    let objects = applied.objects();
                    let detail = format!(
                        "delaying by {} ms ± {} ms, {}% loss, with {backend}: {}",
                        spec.delay.as_millis(),
                        spec.jitter.as_millis(),
                        spec.loss_percent,
                        objects.join(", ")
                    );
                    let obs = v1::observation::Kind::Latency(latency::observation(objects, &Default::default()));
                    injected(
                        fault_id,
                        run_id,
                        "latency",
                        detail,
                        backend,
                        obs,
                        Applied::Latency { backend, applied },
                    )
                }
                Err(e) => not_injected(fault_id, run_id, "latency", e.is_refusal(), e.to_string(), ""),
            }
        }
        Some(v1::fault_spec::Kind::Block(b)) => {
            let result = BlockSpec::try_from(b).and_then(|spec| {
                let fw = config.block.clone().ok_or_else(|| {
                    block::Error::Refused("nft is not installed on this node, so it cannot block traffic".into())
                })?;
                block::apply(fw, fault_id, &spec, &config.exempt)
            });
            match result {
                Ok(applied) => {
                    let detail = format!(
                        "dropping traffic to and from {} peer network(s) with nftables table inet {}",
                        applied.peers, applied.table
                    );
                    let obs = v1::observation::Kind::Block(applied.observation());
                    injected(
                        fault_id,
                        run_id,
                        "block",
                        detail,
                        "nftables",
                        obs,
                        Applied::Block(applied),
                    )
                }
                Err(e) => not_injected(fault_id, run_id, "block", e.is_refusal(), e.to_string(), "nftables"),
            }
        }
        Some(v1::fault_spec::Kind::DiskFill(d)) => {
            let backend = "fallocate";
            let result = DiskFillSpec::try_from(d).and_then(|spec| disk_fill::apply(fault_id, &spec, &config.fill));
            match result {
                Ok(applied) => {
                    let o = applied.observation.clone();
                    let detail = format!(
                        "allocated {} bytes in {} with {} ({:.1}% -> {:.1}% used)",
                        o.bytes, o.file, o.method, o.used_percent_before, o.used_percent_after
                    );
                    let method = o.method.clone();
                    let obs = v1::observation::Kind::DiskFill(o);
                    injected(
                        fault_id,
                        run_id,
                        "disk_fill",
                        detail,
                        &method,
                        obs,
                        Applied::DiskFill(applied),
                    )
                }
                Err(e) => not_injected(fault_id, run_id, "disk_fill", e.is_refusal(), e.to_string(), backend),
            }
        }
        Some(v1::fault_spec::Kind::Kill(k)) => {
            let backend = "signal";
            let result =
                KillSpec::try_from(k).and_then(|spec| kill::apply(spec, config.processes.clone(), &config.protection));
            match result {
                Ok(applied) => {
                    let obs = v1::observation::Kind::Kill(applied.observation());
                    let detail = applied.summary.clone();
                    injected(fault_id, run_id, "kill", detail, backend, obs, Applied::Kill(applied))
                }
                Err(e) => not_injected(fault_id, run_id, "kill", e.is_refusal(), e.to_string(), backend),
            }
        }
    }
}

/// The status and table entry of a fault that was applied.
fn injected(
    fault_id: &str,
    run_id: &str,
    kind: &str,
    detail: String,
    backend: &str,
    obs: v1::observation::Kind,
    applied: Applied,
) -> (v1::FaultStatus, Option<Applied>) {
    info!(%fault_id, %run_id, %kind, %detail, "fault injected");
    let st = status(fault_id, run_id, v1::FaultState::Injected, detail, backend, Some(obs));
    (st, Some(applied))
}

/// The status of a fault that was refused (nothing touched) or failed.
fn not_injected(
    fault_id: &str,
    run_id: &str,
    kind: &str,
    refusal: bool,
    err: String,
    backend: &str,
) -> (v1::FaultStatus, Option<Applied>) {
    let state = if refusal {
        v1::FaultState::Refused
    } else {
        v1::FaultState::Failed
    };
    warn!(%fault_id, %run_id, %kind, %err, "fault not injected");
    (status(fault_id, run_id, state, err, backend, None), None)
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
    let journal = config.journal.as_ref();
    let kind = a.kind;
    let started = std::time::Instant::now();
    let st = restore_now(fault_id, a, state, why).await;
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
        if let Some(j) = journal {
            if let Err(e) = j.remove(fault_id) {
                warn!(%fault_id, err = %e, "restored, but cannot delete the undo record");
            }
        }
    }
    st
}

async fn restore_now(fault_id: &str, a: Active, state: v1::FaultState, why: String) -> v1::FaultStatus {
    match a.applied {
        Applied::Latency { backend, applied } => {
            let objects = applied.objects();
            match applied.restore() {
                Ok(c) => status(
                    fault_id,
                    &a.run_id,
                    state,
                    format!(
                        "{why}; removed {}; {} packets delayed, {} dropped",
                        objects.join(", "),
                        c.delayed,
                        c.dropped
                    ),
                    backend,
                    Some(v1::observation::Kind::Latency(latency::observation(objects, &c))),
                ),
                Err(e) => status(
                    fault_id,
                    &a.run_id,
                    v1::FaultState::Failed,
                    format!("{why}; {e}"),
                    backend,
                    None,
                ),
            }
        }
        Applied::Block(b) => {
            let obs = b.observation();
            let table = b.table.clone();
            match b.restore() {
                Ok(()) => status(
                    fault_id,
                    &a.run_id,
                    state,
                    format!("{why}; deleted nftables table inet {table}"),
                    "nftables",
                    Some(v1::observation::Kind::Block(obs)),
                ),
                Err(e) => status(
                    fault_id,
                    &a.run_id,
                    v1::FaultState::Failed,
                    format!("{why}; {e}"),
                    "nftables",
                    None,
                ),
            }
        }
        Applied::DiskFill(f) => match f.restore() {
            Ok(o) => {
                let detail = format!("{why}; removed {}", o.file);
                let method = o.method.clone();
                status(
                    fault_id,
                    &a.run_id,
                    state,
                    detail,
                    &method,
                    Some(v1::observation::Kind::DiskFill(o)),
                )
            }
            Err(e) => status(
                fault_id,
                &a.run_id,
                v1::FaultState::Failed,
                format!("{why}; {e}"),
                "fallocate",
                None,
            ),
        },
        Applied::Kill(k) => {
            let obs = k.restore().await;
            let detail = match (obs.reappeared_after_ms, obs.reappeared_pid) {
                (Some(ms), Some(pid)) => {
                    format!("{why}; a matching process (pid {pid}) reappeared {ms} ms after the kill")
                }
                _ => format!("{why}; no matching process reappeared"),
            };
            status(
                fault_id,
                &a.run_id,
                state,
                detail,
                "signal",
                Some(v1::observation::Kind::Kill(obs)),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::fake::{proc, FakeProcesses};

    fn table() -> (FaultTable, mpsc::UnboundedReceiver<v1::FaultStatus>) {
        table_with(AgentPolicy::default())
    }

    fn table_with(policy: AgentPolicy) -> (FaultTable, mpsc::UnboundedReceiver<v1::FaultStatus>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let procs = vec![proc(4242, 1, "victim", "victim")];
        let (t, _) = FaultTable::spawn(
            TableConfig {
                default_lease: Duration::from_secs(5),
                max_lease: Duration::from_secs(10),
                policy,
                ..TableConfig::basic(Arc::new(FakeProcesses::new(procs)))
            },
            tx,
        );
        (t, rx)
    }

    fn kill_victim() -> v1::FaultSpec {
        v1::FaultSpec {
            kind: Some(v1::fault_spec::Kind::Kill(v1::KillSpec {
                name: "victim".into(),
                ..Default::default()
            })),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lease_expiry_restores_without_the_coordinator() {
        let (t, mut rx) = table();
        t.send(Command::Inject {
            fault_id: "f1".into(),
            run_id: "r1".into(),
            spec: kill_victim(),
            lease: Duration::from_secs(3),
            dry_run: false,
        })
        .await;
        let st = rx.recv().await.unwrap();
        assert_eq!(st.state(), v1::FaultState::Injected);
        // A renewal pushes the deadline out; without further renewals it expires.
        tokio::time::sleep(Duration::from_secs(2)).await;
        t.send(Command::Renew {
            fault_ids: vec!["f1".into()],
            lease: Duration::from_secs(3),
        })
        .await;
        let start = Instant::now();
        let st = rx.recv().await.unwrap();
        assert_eq!(st.state(), v1::FaultState::Expired);
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(2900) && waited <= Duration::from_millis(3200),
            "{waited:?}"
        );
        assert_eq!(t.active_faults(), 0);
    }

    #[tokio::test]
    async fn a_kind_outside_the_agent_policy_is_refused_before_anything_runs() {
        let policy = AgentPolicy::parse("agent.yaml", "allowed_kinds: [latency]\n").unwrap();
        let (t, mut rx) = table_with(policy);
        t.send(Command::Inject {
            fault_id: "f1".into(),
            run_id: "r1".into(),
            spec: kill_victim(),
            lease: Duration::from_secs(3),
            dry_run: false,
        })
        .await;
        let st = rx.recv().await.unwrap();
        assert_eq!(st.state(), v1::FaultState::Refused);
        assert!(
            st.detail
                .contains("agent.yaml: fault kind kill is not in allowed_kinds"),
            "{}",
            st.detail
        );
        assert_eq!(t.active_faults(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn max_fault_duration_restores_even_with_renewals() {
        let policy = AgentPolicy::parse("agent.yaml", "max_fault_duration: 4s\n").unwrap();
        let (t, mut rx) = table_with(policy);
        let start = Instant::now();
        t.send(Command::Inject {
            fault_id: "f1".into(),
            run_id: "r1".into(),
            spec: kill_victim(),
            lease: Duration::from_secs(3),
            dry_run: false,
        })
        .await;
        assert_eq!(rx.recv().await.unwrap().state(), v1::FaultState::Injected);
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            t.send(Command::Renew {
                fault_ids: vec!["f1".into()],
                lease: Duration::from_secs(3),
            })
            .await;
        }
        let st = rx.recv().await.unwrap();
        assert_eq!(st.state(), v1::FaultState::Expired);
        assert!(st.detail.contains("max_fault_duration 4s reached"), "{}", st.detail);
        let at = start.elapsed();
        assert!(
            at >= Duration::from_secs(4) && at <= Duration::from_millis(4100),
            "{at:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn leases_are_capped_by_the_agent() {
        let (t, mut rx) = table();
        let start = Instant::now();
        t.send(Command::Inject {
            fault_id: "f1".into(),
            run_id: "r1".into(),
            spec: kill_victim(),
            lease: Duration::from_secs(3600),
            dry_run: false,
        })
        .await;
        assert_eq!(rx.recv().await.unwrap().state(), v1::FaultState::Injected);
        assert_eq!(rx.recv().await.unwrap().state(), v1::FaultState::Expired);
        assert!(start.elapsed() <= Duration::from_secs(11));
    }

    #[tokio::test]
    async fn unknown_spec_is_refused_with_a_reason() {
        let (t, mut rx) = table();
        t.send(Command::Inject {
            fault_id: "f1".into(),
            run_id: "r1".into(),
            spec: v1::FaultSpec { kind: None },
            lease: Duration::ZERO,
            dry_run: false,
        })
        .await;
        let st = rx.recv().await.unwrap();
        assert_eq!(st.state(), v1::FaultState::Refused);
        assert!(st.detail.contains("supports"), "{}", st.detail);
    }

    fn inject(fault_id: &str, spec: v1::FaultSpec, dry_run: bool) -> Command {
        Command::Inject {
            fault_id: fault_id.into(),
            run_id: "r1".into(),
            spec,
            lease: Duration::from_secs(10),
            dry_run,
        }
    }

    fn fill(dir: &std::path::Path) -> v1::FaultSpec {
        v1::FaultSpec {
            kind: Some(v1::fault_spec::Kind::DiskFill(v1::DiskFillSpec {
                path: dir.display().to_string(),
                size_bytes: 4096,
                ..Default::default()
            })),
        }
    }

    fn kill_cmdline(re: &str, allow_mass_kill: bool) -> v1::FaultSpec {
        v1::FaultSpec {
            kind: Some(v1::fault_spec::Kind::Kill(v1::KillSpec {
                cmdline_regex: re.into(),
                allow_mass_kill,
                ..Default::default()
            })),
        }
    }

    /// A table with an undo journal in `state` that may fill `fill_dir`.
    fn journaled(
        state: &std::path::Path,
        fill_dir: &std::path::Path,
        procs: Vec<crate::process::ProcInfo>,
    ) -> (FaultTable, mpsc::UnboundedReceiver<v1::FaultStatus>, Arc<Journal>) {
        let journal = Arc::new(Journal::open(state).unwrap());
        let mut config = TableConfig::basic(Arc::new(FakeProcesses::new(procs)));
        config.journal = Some(journal.clone());
        config.fill = FillPolicy {
            allowed: vec![fill_dir.to_path_buf()],
            max_used_percent: 100.0,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let (t, _) = FaultTable::spawn(config, tx);
        (t, rx, journal)
    }

    // Before ids were checked, `c.x` and `c/x` named the same undo record
    // as `c_x` (`undo-c_x.json`): the second inject overwrote the first
    // fault's record, and a refused one deleted it. A re-sent `c_x` was
    // acknowledged as injected.
    #[tokio::test]
    async fn colliding_and_duplicate_fault_ids_are_refused_and_the_first_fault_keeps_its_record() {
        let state = tempfile::tempdir().unwrap();
        let fill_dir = tempfile::tempdir().unwrap();
        let (t, mut rx, journal) = journaled(state.path(), fill_dir.path(), vec![]);
        t.send(inject("c_x", fill(fill_dir.path()), false)).await;
        let st = rx.recv().await.unwrap();
        assert_eq!(st.state(), v1::FaultState::Injected, "{}", st.detail);
        let first_file = fill_dir.path().join(".faultline-fill-c_x");
        assert!(first_file.exists());
        let record = state.path().join("undo-c_x.json");
        let before = std::fs::read(&record).unwrap();

        for (id, why) in [
            ("c.x", "fault id \"c.x\" contains '.'"),
            ("c/x", "fault id \"c/x\" contains '/'"),
            ("c_x", "fault c_x (run r1) is already active on this agent"),
        ] {
            t.send(inject(id, fill(fill_dir.path()), false)).await;
            let st = rx.recv().await.unwrap();
            assert_eq!(st.state(), v1::FaultState::Refused, "{id}: {}", st.detail);
            assert!(st.detail.contains(why), "{id}: {}", st.detail);
            // The first fault's record is untouched, its fill still there,
            // and no other record or fill file appeared.
            assert_eq!(std::fs::read(&record).unwrap(), before, "{id}");
            assert!(first_file.exists(), "{id}");
            assert_eq!(journal.load().unwrap().0.len(), 1, "{id}");
            assert_eq!(std::fs::read_dir(fill_dir.path()).unwrap().count(), 1, "{id}");
        }
        assert_eq!(t.active_faults(), 1);

        // The first fault is still restorable, and its record goes with it.
        t.send(Command::Restore { fault_id: "c_x".into() }).await;
        let st = rx.recv().await.unwrap();
        assert_eq!(st.state(), v1::FaultState::Restored, "{}", st.detail);
        assert!(!first_file.exists());
        assert!(!record.exists());
    }

    #[tokio::test]
    async fn an_invalid_run_id_is_refused_before_the_journal_is_touched() {
        let state = tempfile::tempdir().unwrap();
        let fill_dir = tempfile::tempdir().unwrap();
        let (t, mut rx, journal) = journaled(state.path(), fill_dir.path(), vec![]);
        t.send(Command::Inject {
            fault_id: "f1".into(),
            run_id: "../r".into(),
            spec: fill(fill_dir.path()),
            lease: Duration::ZERO,
            dry_run: false,
        })
        .await;
        let st = rx.recv().await.unwrap();
        assert_eq!(st.state(), v1::FaultState::Refused);
        assert!(st.detail.contains("run id"), "{}", st.detail);
        assert!(journal.load().unwrap().0.is_empty());
        assert_eq!(std::fs::read_dir(fill_dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_left_over_undo_record_is_neither_overwritten_nor_deleted() {
        let state = tempfile::tempdir().unwrap();
        let fill_dir = tempfile::tempdir().unwrap();
        let (t, mut rx, journal) = journaled(state.path(), fill_dir.path(), vec![]);
        let old = Record {
            fault_id: "f1".into(),
            run_id: "r0".into(),
            kind: "disk_fill".into(),
            created_unix_ms: 1,
            objects: vec![Object::File {
                path: fill_dir.path().join(".faultline-fill-f1"),
            }],
        };
        journal.write(&old).unwrap();
        t.send(inject("f1", fill(fill_dir.path()), false)).await;
        let st = rx.recv().await.unwrap();
        assert_eq!(st.state(), v1::FaultState::Refused);
        assert!(st.detail.contains("already in the state directory"), "{}", st.detail);
        assert_eq!(journal.load().unwrap().0, vec![old]);
    }

    #[tokio::test]
    async fn a_mass_kill_is_refused_unless_the_fault_allows_it() {
        let state = tempfile::tempdir().unwrap();
        let fill_dir = tempfile::tempdir().unwrap();
        let procs = (100..120).map(|p| proc(p, 1, "w", &format!("w {p}"))).collect();
        let (t, mut rx, _journal) = journaled(state.path(), fill_dir.path(), procs);
        t.send(inject("k1", kill_cmdline(".*", false), false)).await;
        let st = rx.recv().await.unwrap();
        assert_eq!(st.state(), v1::FaultState::Refused);
        assert!(
            st.detail.contains("matches 20 of the 20 user-space processes") && st.detail.contains("allow_mass_kill"),
            "{}",
            st.detail
        );
        t.send(inject("k2", kill_cmdline(".*", true), false)).await;
        let st = rx.recv().await.unwrap();
        assert_eq!(st.state(), v1::FaultState::Injected, "{}", st.detail);
        assert!(st.detail.starts_with("sent SIGKILL to 20 process(es)"), "{}", st.detail);
    }

    #[tokio::test]
    async fn a_dry_run_says_what_it_would_do_and_touches_nothing() {
        let state = tempfile::tempdir().unwrap();
        let fill_dir = tempfile::tempdir().unwrap();
        let procs = (100..120).map(|p| proc(p, 1, "w", &format!("w {p}"))).collect();
        let (t, mut rx, journal) = journaled(state.path(), fill_dir.path(), procs);
        t.send(inject("plan-a-1", kill_cmdline("^w 10[0-2]$", false), true))
            .await;
        let st = rx.recv().await.unwrap();
        assert_eq!(st.state(), v1::FaultState::Planned, "{}", st.detail);
        assert!(
            st.detail.starts_with("would send SIGKILL to 3 of 20 processes"),
            "{}",
            st.detail
        );
        t.send(inject("plan-a-2", kill_cmdline(".*", false), true)).await;
        let st = rx.recv().await.unwrap();
        assert_eq!(st.state(), v1::FaultState::Refused);
        assert!(st.detail.contains("allow_mass_kill"), "{}", st.detail);
        t.send(inject("plan-a-3", fill(fill_dir.path()), true)).await;
        let st = rx.recv().await.unwrap();
        assert_eq!(st.state(), v1::FaultState::Planned, "{}", st.detail);
        assert!(st.detail.starts_with("would allocate 4096 bytes in"), "{}", st.detail);
        t.send(inject("plan.a", fill(fill_dir.path()), true)).await;
        assert_eq!(rx.recv().await.unwrap().state(), v1::FaultState::Refused);
        // Nothing applied, signalled, written or recorded.
        assert_eq!(t.active_faults(), 0);
        assert!(journal.load().unwrap().0.is_empty());
        assert_eq!(std::fs::read_dir(fill_dir.path()).unwrap().count(), 0);
        // The real inject after the preview still works.
        t.send(inject("k1", kill_cmdline("^w 100$", false), false)).await;
        assert_eq!(rx.recv().await.unwrap().state(), v1::FaultState::Injected);
    }
}
