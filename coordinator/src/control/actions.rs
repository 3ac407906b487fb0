//! The state changes both Control and the web console make: aborting one
//! run and the fleet-wide emergency stop, each audited under its caller.

use faultline_proto::v1;
use tracing::info;

use crate::registry::Registry;
use crate::runs::Runs;
use crate::store::Store;

/// Writes an audit entry; a store that cannot write is logged, not fatal
/// (the action itself already happened).
pub fn audit(store: &Store, caller: &str, action: &str, target: &str, detail: &str) {
    if let Err(e) = store.audit(faultline_proto::now_unix_ms(), caller, action, target, detail) {
        tracing::warn!(err = %e, %action, "cannot write the audit log");
    }
}

/// Aborts run `run_id` if it is in flight here; its faults are restored by
/// the run itself. Returns whether it was found.
pub fn abort_run(runs: &Runs, store: &Store, who: &str, run_id: &str, reason: &str) -> bool {
    let reason = if reason.is_empty() { "operator abort" } else { reason };
    let found = runs.abort(run_id, reason);
    if found {
        info!(run_id = %run_id, %reason, caller = %who, "run aborted");
    }
    let detail = if found {
        reason.to_string()
    } else {
        format!("no such run in flight ({reason})")
    };
    audit(store, who, "abort", run_id, &detail);
    found
}

/// Ends an emergency stop (runs may start again); false if there was none.
/// Audited either way.
pub fn resume(runs: &Runs, store: &Store, who: &str) -> bool {
    let was_stopped = runs.resume();
    audit(
        store,
        who,
        "resume",
        "*",
        if was_stopped { "resumed" } else { "was not stopped" },
    );
    if was_stopped {
        tracing::info!(caller = %who, "resumed after an emergency stop: runs may start again");
    }
    was_stopped
}

/// The emergency stop: aborts every run in flight, refuses new ones until
/// a resume, and tells every agent to restore everything it holds.
pub fn emergency_stop(runs: &Runs, registry: &Registry, store: &Store, who: &str, reason: &str) -> v1::StopResponse {
    let when = crate::timestamp::rfc3339_now();
    let reason = if reason.is_empty() {
        format!("emergency stop at {when}")
    } else {
        format!("emergency stop at {when}: {reason}")
    };
    let aborted_runs = runs.stop(&reason);
    // Belt and braces: every agent restores everything it holds, also
    // faults whose run is already gone.
    let mut agents_told = 0;
    for a in registry.agents() {
        let msg = v1::CoordinatorMessage {
            msg: Some(v1::coordinator_message::Msg::RestoreAll(v1::RestoreAll {
                reason: reason.clone(),
            })),
        };
        if registry.send(&a.agent_id, msg).is_ok() {
            agents_told += 1;
        }
    }
    tracing::warn!(%reason, runs = aborted_runs.len(), agents_told, caller = %who, "emergency stop");
    audit(
        store,
        who,
        "stop",
        "*",
        &format!(
            "{reason}; aborted {} run(s), {agents_told} agent(s) told",
            aborted_runs.len()
        ),
    );
    v1::StopResponse {
        aborted_runs,
        agents_told,
    }
}
