//! Lease renewals: while observe lasts, every agent holding an injected
//! fault is told, every third of the lease, to keep it. An agent that stops
//! hearing this restores on its own when the lease runs out.

use std::collections::BTreeMap;
use std::time::Duration;

use faultline_proto::v1;
use tracing::warn;

use super::placement::{Placement, TargetState};
use crate::registry::Registry;

/// Sends each agent one LeaseRenewal for all its injected faults.
pub(super) fn renew_leases(registry: &Registry, targets: &[Placement], lease: Duration) {
    let mut by_agent: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for t in targets.iter().filter(|t| t.state == TargetState::Injected) {
        by_agent.entry(&t.agent_id).or_default().push(t.fault_id.clone());
    }
    for (agent, ids) in by_agent {
        let msg = v1::CoordinatorMessage {
            msg: Some(v1::coordinator_message::Msg::LeaseRenewal(v1::LeaseRenewal {
                fault_ids: ids,
                lease_ms: lease.as_millis() as u64,
            })),
        };
        if let Err(e) = registry.send(agent, msg) {
            warn!(agent_id = %agent, err = %e, "lease renewal not sent");
        }
    }
}
