//! One fault on one agent, and the state machine its statuses drive:
//! pending → injected | refused | failed → restored | expired.

use faultline_proto::v1;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::context::Ctx;
use super::ACK_TIMEOUT;
use crate::experiment::faults::Observed;
use crate::registry::StatusFromAgent;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TargetState {
    Pending,
    Injected,
    Refused,
    Failed,
    Restored,
    Expired,
}

impl TargetState {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            TargetState::Pending => "pending",
            TargetState::Injected => "injected",
            TargetState::Refused => "refused",
            TargetState::Failed => "failed",
            TargetState::Restored => "restored",
            TargetState::Expired => "expired",
        }
    }
}

/// One fault on one agent (a report's "target"), as the run tracks it.
pub(super) struct Placement {
    pub(super) fault_id: String,
    /// Fault kind, for metrics.
    pub(super) kind: String,
    pub(super) agent_id: String,
    pub(super) hostname: String,
    pub(super) state: TargetState,
    pub(super) backend: String,
    pub(super) detail: String,
    pub(super) injected_at_ms: Option<u64>,
    pub(super) restored_at_ms: Option<u64>,
    pub(super) restored_by: Option<String>,
    pub(super) restore_sent: bool,
    /// Network faults: resolved peer networks sent to the agent.
    pub(super) peers: Vec<String>,
    /// What the agent observed, as the fault's kind reads it.
    pub(super) observed: Observed,
}

/// The target a status is about. Targets are sorted by (fault id, agent
/// id) once injection is sent, so this is a binary search: with 10,000
/// agents a linear scan per acknowledgement made fan-out quadratic.
pub(super) fn find_target(targets: &[Placement], fault_id: &str, agent_id: &str) -> Option<usize> {
    targets
        .binary_search_by(|t| (t.fault_id.as_str(), t.agent_id.as_str()).cmp(&(fault_id, agent_id)))
        .ok()
}

/// Records a status from an agent on the matching placement.
pub(super) async fn apply_status(ctx: &Ctx, targets: &mut [Placement], st: StatusFromAgent) {
    let s = &st.status;
    let Some(i) = find_target(targets, &s.fault_id, &st.agent_id) else {
        return;
    };
    let t = &mut targets[i];
    let at = ctx.elapsed_ms();
    t.detail = s.detail.clone();
    let kind = t.kind.clone();
    let kind = kind.as_str();
    let m = &ctx.metrics;
    match s.state() {
        v1::FaultState::Injected if t.state == TargetState::Pending => {
            m.gauge_add("faultline_active_faults", &[("kind", kind)], 1.0);
            m.observe(
                "faultline_inject_ack_seconds",
                &[("kind", kind)],
                at.saturating_sub(ctx.inject_sent_ms) as f64 / 1000.0,
            );
        }
        v1::FaultState::Restored | v1::FaultState::Expired if t.state == TargetState::Injected => {
            m.gauge_add("faultline_active_faults", &[("kind", kind)], -1.0);
            if t.restore_sent {
                m.observe(
                    "faultline_restore_ack_seconds",
                    &[("kind", kind)],
                    at.saturating_sub(ctx.restore_sent_ms) as f64 / 1000.0,
                );
            }
            if s.state() == v1::FaultState::Expired {
                m.inc("faultline_lease_expiries_total", &[("kind", kind)]);
            }
        }
        v1::FaultState::Refused => m.inc("faultline_refusals_total", &[("kind", kind)]),
        _ => {}
    }
    if !s.backend.is_empty() {
        t.backend = s.backend.clone();
    }
    if let Some(o) = &s.observation {
        t.observed.update(o, s.state());
    }
    match s.state() {
        v1::FaultState::Injected => {
            t.state = TargetState::Injected;
            t.injected_at_ms.get_or_insert(at);
        }
        v1::FaultState::Refused => t.state = TargetState::Refused,
        v1::FaultState::Failed => {
            // A failed restore leaves the fault in place: keep it injected so
            // the report says so.
            if t.state == TargetState::Pending {
                t.state = TargetState::Failed;
            } else {
                t.restored_by = Some(format!("restore failed: {}", s.detail));
            }
        }
        v1::FaultState::Restored => {
            t.state = TargetState::Restored;
            t.restored_at_ms = Some(at);
            let by = if t.restore_sent {
                "coordinator".to_string()
            } else {
                // The agent restored it without being asked: restarted from
                // its undo journal, shut down, or told to restore all.
                format!("agent: {}", s.detail)
            };
            t.restored_by.get_or_insert(by);
        }
        v1::FaultState::Expired => {
            t.state = TargetState::Expired;
            t.restored_at_ms = Some(at);
            t.restored_by = Some("lease expiry".into());
        }
        // Answers to a plan's dry run; a run's Injects never ask for one.
        v1::FaultState::Unspecified | v1::FaultState::Planned => {}
    }
    ctx.emit(v1::run_event::Event::Fault(v1::FaultEvent {
        agent_id: st.agent_id.clone(),
        status: Some(st.status),
    }))
    .await;
}

pub(super) async fn drain_statuses(
    ctx: &Ctx,
    targets: &mut [Placement],
    rx: &mut mpsc::UnboundedReceiver<StatusFromAgent>,
) {
    while let Ok(st) = rx.try_recv() {
        apply_status(ctx, targets, st).await;
    }
}

/// Waits until `done` holds for every target, ACK_TIMEOUT passes, or
/// `cancel` fires (false in the last two cases).
pub(super) async fn wait_for_acks(
    ctx: &mut Ctx,
    targets: &mut [Placement],
    rx: &mut mpsc::UnboundedReceiver<StatusFromAgent>,
    cancel: &CancellationToken,
    done: impl Fn(&Placement) -> bool,
) -> bool {
    let deadline = Instant::now() + ACK_TIMEOUT;
    // Counted once, then kept up to date per status: re-checking every
    // target after each acknowledgement is quadratic in the fleet size.
    let mut remaining = targets.iter().filter(|t| !done(t)).count();
    loop {
        if remaining == 0 {
            return true;
        }
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep_until(deadline) => return false,
            st = rx.recv() => match st {
                Some(st) => {
                    let i = find_target(targets, &st.status.fault_id, &st.agent_id);
                    let before = i.map(|i| done(&targets[i]));
                    apply_status(ctx, targets, st).await;
                    if let (Some(i), Some(before)) = (i, before) {
                        match (before, done(&targets[i])) {
                            (false, true) => remaining -= 1,
                            (true, false) => remaining += 1,
                            _ => {}
                        }
                    }
                }
                None => return false,
            },
        }
    }
}
