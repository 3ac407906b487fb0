//! `faultline-proto` holds the `faultline.v1` wire protocol shared by the agent
//! and the coordinator: the `AgentLink` stream that every agent dials out to
//! the coordinator, and the `Control` service that clients call. The code is
//! generated at build time from `proto/faultline/v1/faultline.proto` by protox
//! and tonic-prost-build, so no system `protoc` is needed.
//!
//! Layout:
//! - [`v1`]: generated messages, clients and servers of package `faultline.v1`.
//! - [`metrics`]: Prometheus text exposition, which both daemons serve.
//!
//! Generated types stay at the edge: the agent and coordinator convert them to
//! their own domain types right after receiving them.

pub mod metrics;

/// Package `faultline.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("faultline.v1");
}

/// Current time as Unix epoch milliseconds, the unit of every `*_unix_ms` field.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
