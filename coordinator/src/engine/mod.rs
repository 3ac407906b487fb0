//! The run engine: plan → baseline → steady? → inject → observe → restore →
//! recover → verdict → report.
//!
//! The shape of [`execute`] guarantees the one property that matters most:
//! once anything may have been injected, the restore phase runs, whatever
//! happened in between (a refused injection, an operator abort, Ctrl-C on the
//! CLI, coordinator shutdown). A placement whose restore is not acknowledged
//! is reported as such; the agent's lease restores it on its own.
//!
//! Layout:
//! - [`phases`]: one run, phase by phase (the body [`execute`] runs).
//! - `panics`: a run whose body panics still restores and ends as `error`.
//! - `context`: the run's clock, phase spans and events.
//! - `placement`: one fault on one agent, its acknowledgement state machine.
//! - `restore`: sending Restore to every placement and waiting for the acks.
//! - `observe`: waiting out baseline and observe (progress, guardrails,
//!   leases, statuses).
//! - `leases`: lease renewals during observe.
//! - [`guardrails`]: guardrail checks during observe.
//! - [`checks`]: guardrail and stop-condition states as run events.
//! - `progress`: probe progress events.
//! - `budget`: the error-budget gate before a run and the budget after it.
//! - [`stops`]: stop conditions evaluated during observe.
//! - `judge`: the run's verdict from its samples (tolerances, recovery).
//! - [`gate`]: the canary judge's samples per group, and how its score
//!   combines with the tolerances.
//! - `assembly`: the report's probe, fault and experiment sections.
//! - [`wire`]: a fault's parameters in wire form.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::events::RunEvents;
use crate::experiment::Experiment;
use crate::policy::Policy;
use crate::registry::Registry;
use crate::report::Report;

mod assembly;
mod budget;
pub mod checks;
mod context;
pub mod gate;
pub mod guardrails;
mod judge;
mod leases;
mod observe;
mod panics;
pub mod phases;
mod placement;
mod progress;
mod restore;
pub mod stops;
#[cfg(test)]
mod testing;
pub mod wire;

pub use guardrails::{guardrail_states, guardrail_violation, GUARDRAIL_EVERY, GUARDRAIL_MIN_SAMPLES};
pub use panics::{execute_with, Sent};
pub use wire::spec_to_wire;

/// How long to wait for every target to acknowledge an inject or a restore.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How many consecutive healthy samples of every probe end the recover phase.
pub const RECOVERY_STREAK: usize = 3;

/// Why a run is being aborted, filled in by whoever cancels it.
pub type AbortReason = Arc<Mutex<Option<String>>>;

/// Everything a run needs.
pub struct RunInput {
    pub run_id: String,
    pub experiment: Experiment,
    pub source_name: String,
    pub registry: Arc<Registry>,
    /// Where the run's events go (store, followers, client).
    pub events: RunEvents,
    pub cancel: CancellationToken,
    pub abort_reason: AbortReason,
    /// The coordinator's policy.
    pub policy: Arc<Policy>,
    /// Other runs in flight when this one was submitted.
    pub running: usize,
    /// Where fault counts and latencies go.
    pub metrics: faultline_proto::metrics::Metrics,
}

/// Result of a run.
pub struct RunOutput {
    pub report: Report,
}

/// Runs one experiment to completion and returns its report.
pub async fn execute(input: RunInput) -> RunOutput {
    execute_with(input, run_body).await
}

/// The body of a run: the phases, given the ledger of what it sends.
pub type Body = fn(RunInput, Sent) -> Pin<Box<dyn Future<Output = RunOutput> + Send>>;

/// The real run body.
pub fn run_body(input: RunInput, sent: Sent) -> Pin<Box<dyn Future<Output = RunOutput> + Send>> {
    Box::pin(phases::execute_inner(input, sent))
}

/// A new run id: sortable by time, unique by a random suffix.
pub fn new_run_id() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    let stamp = now.format(&fmt).unwrap_or_default();
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("r{stamp}-{}", &rand[..6])
}
