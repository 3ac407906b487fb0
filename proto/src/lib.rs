//! `faultline-proto` holds the `faultline.v1` wire protocol shared by the agent
//! and the coordinator: the `AgentLink` stream that every agent dials out to
//! the coordinator, and the `Control` service that clients call. The code is
//! generated at build time from `proto/faultline/v1/faultline.proto` by protox
//! and tonic-prost-build, so no system `protoc` is needed.
//!
//! Layout:
//! - [`v1`]: generated messages, clients and servers of package `faultline.v1`.
//! - [`metrics`]: Prometheus text exposition, which both daemons serve.
//! - [`ids`]: the one validation of agent, run and fault ids.
//! - [`hello`]: the limits on an agent's Hello, checked on both sides.
//!
//! Generated types stay at the edge: the agent and coordinator convert them to
//! their own domain types right after receiving them.

pub mod hello;
pub mod ids;
pub mod metrics;

/// Package `faultline.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("faultline.v1");
}

/// The capability an agent advertises in Hello when it answers an Inject
/// with `dry_run` set (PLANNED or REFUSED, touching nothing). Agents built
/// before dry runs would ignore the flag and inject, so the coordinator asks
/// only agents that advertise this.
pub const CAPABILITY_DRY_RUN: &str = "dry_run";

/// The capability an agent advertises when it answers a **pod query**: a
/// dry-run Inject whose spec has no fault kind and whose container
/// selector has a pod selector, answered PLANNED with the matching pods and
/// their IP addresses (`FaultStatus.pods`). The coordinator resolves groups
/// of pods (`hypothesis.groups.NAME.pods`) with it.
pub const CAPABILITY_POD_ADDRESSES: &str = "pod_addresses";

/// Whether capability `c` names a fault kind (`kill`, `latency:netem`),
/// not something else the agent can do (`dry_run`, `pod_addresses`,
/// `runtime:*`): what a refusal lists as the kinds an agent supports.
pub fn is_fault_kind_capability(c: &str) -> bool {
    c != CAPABILITY_DRY_RUN && c != CAPABILITY_POD_ADDRESSES && !c.starts_with("runtime:")
}

/// The lower-case name of a fault state ("injected", "restored", ...), as
/// logs, events and metric labels show it.
pub fn fault_state_name(state: v1::FaultState) -> &'static str {
    match state {
        v1::FaultState::Unspecified => "unspecified",
        v1::FaultState::Injected => "injected",
        v1::FaultState::Restored => "restored",
        v1::FaultState::Refused => "refused",
        v1::FaultState::Failed => "failed",
        v1::FaultState::Expired => "expired",
        v1::FaultState::Planned => "planned",
    }
}

/// One line describing a fault status from `agent_id`, as run events keep it.
pub fn fault_status_line(agent_id: &str, st: &v1::FaultStatus) -> String {
    format!(
        "agent {agent_id}: fault {} {}: {}",
        st.fault_id,
        fault_state_name(st.state()),
        st.detail
    )
}

/// Current time as Unix epoch milliseconds, the unit of every `*_unix_ms` field.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
