//! The restore phase: Restore to every placement that may hold a fault,
//! then the wait for acknowledgements. It is never cancelled.

use faultline_proto::v1;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::context::Ctx;
use super::placement::{drain_statuses, wait_for_acks, Placement, TargetState};
use super::ACK_TIMEOUT;
use crate::registry::{Registry, StatusFromAgent};

/// Sends Restore for every target that may hold a fault and waits for acks.
pub(super) async fn restore(
    ctx: &mut Ctx,
    registry: &Registry,
    targets: &mut [Placement],
    rx: &mut mpsc::UnboundedReceiver<StatusFromAgent>,
) {
    drain_statuses(ctx, targets, rx).await;
    ctx.restore_sent_ms = ctx.elapsed_ms();
    for t in targets.iter_mut() {
        if matches!(t.state, TargetState::Injected | TargetState::Pending) {
            let msg = v1::CoordinatorMessage {
                msg: Some(v1::coordinator_message::Msg::Restore(v1::Restore {
                    fault_id: t.fault_id.clone(),
                    run_id: ctx.run_id.clone(),
                })),
            };
            match registry.send(&t.agent_id, msg) {
                Ok(()) => t.restore_sent = true,
                Err(e) => {
                    t.restored_by = Some(format!(
                        "unconfirmed: {e}; the agent restores it when its lease expires"
                    ));
                }
            }
        }
    }
    // Restores are never cancelled: an abort must not stop its own cleanup.
    let never = CancellationToken::new();
    let ok = wait_for_acks(ctx, targets, rx, &never, |t| {
        !t.restore_sent || matches!(t.state, TargetState::Restored | TargetState::Expired)
    })
    .await;
    if !ok {
        for t in targets
            .iter_mut()
            .filter(|t| t.restore_sent && !matches!(t.state, TargetState::Restored | TargetState::Expired))
        {
            t.restored_by = Some(format!(
                "unconfirmed: no restore acknowledgement within {}s; the agent restores it when its lease expires",
                ACK_TIMEOUT.as_secs()
            ));
        }
    }
    let n = targets
        .iter()
        .filter(|t| t.state == TargetState::Restored || t.state == TargetState::Expired)
        .count();
    ctx.log(format!(
        "restore: {n} of {} target(s) confirmed restored",
        targets.len()
    ))
    .await;
}
