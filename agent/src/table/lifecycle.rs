//! One fault's way through the table: admission (ids, duplicates, kind,
//! policy, the kind's own checks, objects of active faults), the undo record
//! written before apply and deleted after restore, and the statuses that
//! say so. Kind-agnostic: a kind is only ever a [`Registration`] and its
//! trait objects.

use std::collections::HashMap;
use std::path::PathBuf;

use faultline_proto::{now_unix_ms, v1};
use tokio::time::Instant;
use tracing::warn;

use super::TableConfig;
use crate::faults::{self, Applied, Prepared, Registration};
use crate::journal::{self, Object, Record};
use crate::policy;
use crate::runtime::{self, Place};

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
    /// The fault's container selector could not be resolved on this node.
    #[error(transparent)]
    Containers(#[from] crate::runtime::Error),
    #[error("{source}")]
    Fault {
        source: faults::Error,
        backend: &'static str,
    },
}

impl Error {
    /// REFUSED (nothing was touched, because of what was asked) rather than FAILED.
    pub fn is_refusal(&self) -> bool {
        match self {
            Error::Journal(_) | Error::RecordNotWritten(_) => false,
            Error::Fault { source, .. } => source.is_refusal(),
            Error::Containers(e) => e.is_refusal(),
            _ => true,
        }
    }

    /// The backend a status of this error names.
    pub fn backend(&self) -> &'static str {
        match self {
            Error::Fault { backend, .. } => backend,
            _ => "",
        }
    }

    /// REFUSED or FAILED.
    pub fn state(&self) -> v1::FaultState {
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
pub(super) struct Active {
    pub(super) run_id: String,
    /// Fault kind name, for metrics.
    pub(super) kind: &'static str,
    /// The kernel objects and files the fault created (its undo record's),
    /// so a later fault that would create one of them is refused.
    pub(super) objects: Vec<Object>,
    /// When the lease runs out (never after `hard_deadline`).
    pub(super) deadline: Instant,
    /// The agent policy's max_fault_duration, counted from injection.
    pub(super) hard_deadline: Option<Instant>,
    pub(super) applied: Box<dyn Applied>,
}

pub(super) fn status(
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
        containers: Vec::new(),
        matching_units: 0,
        selected_units: 0,
        pods: Vec::new(),
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
    container: Option<v1::ContainerSelector>,
    active: &HashMap<String, Active>,
) -> Result<(&'static Registration, Box<dyn Prepared>, Place)> {
    admit(fault_id, run_id, active)?;
    let wire = spec.kind.ok_or(Error::NoKind)?;
    let (reg, kind) = config.kinds.of(&wire).ok_or(Error::NoKind)?;
    config.policy.allows(reg.name)?;
    let place = match container {
        None => Place::Host,
        Some(sel) => {
            let sel = runtime::ContainerSelector::try_from(sel)?;
            let rt = config.runtime.as_deref().ok_or(runtime::Error::NoRuntime)?;
            runtime::resolve(rt, &sel, &config.protected_containers)?
        }
    };
    let prepared = kind.prepare(fault_id, wire, &place).map_err(|source| Error::Fault {
        source,
        backend: reg.backend,
    })?;
    check_overlap(&prepared.undo_objects(), active)?;
    Ok((reg, prepared, place))
}

/// Answers a dry-run Inject: the same checks as an inject and the fault's
/// own preview, touching nothing and writing no undo record.
pub(super) fn preview(
    config: &TableConfig,
    fault_id: &str,
    run_id: &str,
    spec: v1::FaultSpec,
    container: Option<v1::ContainerSelector>,
    active: &HashMap<String, Active>,
) -> v1::FaultStatus {
    let planned = prepare(config, fault_id, run_id, spec, container, active).and_then(|(reg, prepared, place)| {
        let containers = match place {
            Place::Host => (Vec::new(), (0, 0)),
            Place::Containers { containers, units, .. } => (containers.into_iter().map(|c| c.name).collect(), units),
        };
        prepared
            .preview()
            .map(|p| (p, containers))
            .map_err(|source| Error::Fault {
                source,
                backend: reg.backend,
            })
    });
    match planned {
        Ok(((detail, backend), (containers, (selected, matched)))) => {
            let mut st = status(fault_id, run_id, v1::FaultState::Planned, detail, &backend, None);
            st.containers = containers;
            st.selected_units = selected as u32;
            st.matching_units = matched as u32;
            st
        }
        Err(e) => status(fault_id, run_id, e.state(), e.to_string(), e.backend(), None),
    }
}

/// Answers a pod query (a dry run with no fault kind and a pod selector,
/// see [`faultline_proto::CAPABILITY_POD_ADDRESSES`]): PLANNED with the
/// matching pods and their addresses (none: the detail names the pods this
/// node runs), REFUSED for a protected pod or no runtime. Touches nothing.
pub(super) fn pod_query(
    config: &TableConfig,
    fault_id: &str,
    run_id: &str,
    container: Option<v1::ContainerSelector>,
) -> v1::FaultStatus {
    let answer = (|| {
        let sel = runtime::ContainerSelector::try_from(container.unwrap_or_default())?;
        let rt = config.runtime.as_deref().ok_or(runtime::Error::NoRuntime)?;
        let proc = std::path::Path::new("/proc");
        runtime::pod_addresses::query(rt, &sel, &config.protected_containers, proc)
    })();
    match answer {
        Ok(a) => {
            let detail = if a.pods.is_empty() {
                match a.seen.is_empty() {
                    true => "no pod matches; this node runs no pod".to_string(),
                    false => format!("no pod matches; pods on this node: {}", a.seen.join("; ")),
                }
            } else {
                format!("{} pod(s) match", a.pods.len())
            };
            let mut st = status(fault_id, run_id, v1::FaultState::Planned, detail, "", None);
            st.pods = a.pods;
            st
        }
        Err(e) => {
            let state = if e.is_refusal() {
                v1::FaultState::Refused
            } else {
                v1::FaultState::Failed
            };
            status(fault_id, run_id, state, e.to_string(), "", None)
        }
    }
}

/// Prepares the fault, writes its undo record, applies it, and drops the
/// record again if nothing was applied. Returns the applied fault and the
/// objects it created.
pub(super) fn inject(
    config: &TableConfig,
    fault_id: &str,
    run_id: &str,
    spec: v1::FaultSpec,
    container: Option<v1::ContainerSelector>,
    active: &HashMap<String, Active>,
) -> Result<(Box<dyn Applied>, Vec<Object>)> {
    let (reg, prepared, _) = prepare(config, fault_id, run_id, spec, container, active)?;
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
pub(super) async fn restore(
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
