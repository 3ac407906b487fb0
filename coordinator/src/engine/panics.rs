//! A run whose body panics still ends: what it sent Inject for is
//! restored, and it reports `error` instead of holding its slot forever.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use faultline_proto::v1;
use futures::FutureExt;
use tokio::time::Instant;
use tracing::{error, info_span, warn, Instrument};

use super::assembly::experiment_info;
use super::{Body, RunInput, RunOutput};
use crate::outcome::Outcome;
use crate::report::{Report, SCHEMA_VERSION};
use crate::timestamp::rfc3339_now;

/// Faults a run has sent Inject for, as (agent id, fault id). Kept outside
/// the run's own state so that a run which dies half-way (a panic) can
/// still have them restored.
#[derive(Clone, Default)]
pub struct Sent(Arc<Mutex<Vec<(String, String)>>>);

impl Sent {
    pub fn push(&self, agent_id: &str, fault_id: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((agent_id.to_string(), fault_id.to_string()));
    }

    fn take(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Runs `body` and always returns a report: if the body panics, every
/// fault it sent Inject for gets a Restore (the agents' leases back this
/// up), and the run ends as `error` instead of staying "running" forever
/// with its concurrency slot taken.
pub async fn execute_with(input: RunInput, body: Body) -> RunOutput {
    let span = info_span!("run", run_id = %input.run_id, experiment = %input.experiment.name);
    let run_id = input.run_id.clone();
    let registry = input.registry.clone();
    let events = input.events.clone();
    let experiment = experiment_info(&input.experiment, &input.source_name);
    let started_at = rfc3339_now();
    let start = Instant::now();
    let sent = Sent::default();
    let result = AssertUnwindSafe(body(input, sent.clone()).instrument(span))
        .catch_unwind()
        .await;
    let panic = match result {
        Ok(out) => return out,
        Err(p) => p,
    };
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    error!(run_id = %run_id, panic = %what, "run task panicked: restoring what it may have injected");
    registry.unsubscribe(&run_id);
    let targets = sent.take();
    let mut told = 0;
    for (agent_id, fault_id) in &targets {
        let msg = v1::CoordinatorMessage {
            msg: Some(v1::coordinator_message::Msg::Restore(v1::Restore {
                fault_id: fault_id.clone(),
                run_id: run_id.clone(),
            })),
        };
        match registry.send(agent_id, msg) {
            Ok(()) => told += 1,
            Err(e) => {
                warn!(run_id = %run_id, fault_id = %fault_id, agent_id = %agent_id, err = %e, "restore not sent; the agent's lease restores it")
            }
        }
    }
    let reason = format!(
        "internal error, the run stopped: {what}; Restore was sent to {told} of {} target(s) it had injected (their leases restore the rest)",
        targets.len()
    );
    let elapsed_ms = start.elapsed().as_millis() as u64;
    events.send(v1::RunEvent {
        run_id: run_id.clone(),
        elapsed_ms,
        event: Some(v1::run_event::Event::Log(v1::LogLine {
            message: reason.clone(),
        })),
    });
    RunOutput {
        report: Report {
            schema_version: SCHEMA_VERSION,
            run_id,
            experiment,
            outcome: Outcome::Error,
            exit_code: Outcome::Error.exit_code(),
            reason,
            started_at,
            finished_at: rfc3339_now(),
            duration_ms: elapsed_ms,
            aborted_by: None,
            stop_conditions: Vec::new(),
            error_budgets: Vec::new(),
            phases: Vec::new(),
            probes: Vec::new(),
            faults: Vec::new(),
            events: Vec::new(),
            judge: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::time::Duration;

    use faultline_proto::v1;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use crate::engine::testing::exp;
    use crate::engine::{RunInput, RunOutput, Sent};
    use crate::outcome::Outcome;
    use crate::planner;
    use crate::policy::Policy;
    use crate::registry::Registry;

    fn panicking_body(input: RunInput, sent: Sent) -> Pin<Box<dyn Future<Output = RunOutput> + Send>> {
        Box::pin(async move {
            sent.push("a1", &format!("{}-1", input.run_id));
            panic!("injected test panic");
        })
    }

    #[tokio::test]
    async fn a_run_whose_task_panics_ends_as_error_restores_and_frees_its_slot() {
        let registry = Arc::new(Registry::new());
        let (agent_tx, mut agent_rx) = mpsc::channel(8);
        registry
            .add(
                crate::registry::AgentInfo {
                    hostname: "h1".into(),
                    ..super::super::testing::agent_info("a1")
                },
                agent_tx,
            )
            .expect("a new agent id registers");
        let store = Arc::new(crate::store::Store::in_memory().unwrap());
        let control = crate::control::ControlService {
            schedules_changed: Arc::default(),
            registry,
            runs: Arc::default(),
            policy: Arc::new(Policy::parse("p.yaml", "max_concurrent_runs: 1\n").unwrap()),
            store: store.clone(),
            metrics: faultline_proto::metrics::Metrics::new(),
            security: Arc::default(),
            shutdown: CancellationToken::new(),
            tracker: tokio_util::task::TaskTracker::new(),
            events: Arc::new(crate::events::EventLog::new(store.clone())),
            gamedays: Arc::default(),
            notifier: None,
        };
        let (run_id, mut rx) = control.start_run_with(exp(), "t.yaml".into(), "test", panicking_body);
        let finished = loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(v1::RunEvent {
                    event: Some(v1::run_event::Event::Finished(f)),
                    ..
                })) => break f,
                Ok(Some(_)) => {}
                Ok(None) => panic!("the event stream ended without RunFinished"),
                Err(_) => panic!("no RunFinished within 10s: the run is wedged"),
            }
        };
        assert_eq!(finished.outcome, "error");
        assert_eq!(finished.exit_code, Outcome::Error.exit_code());
        assert!(finished.reason.contains("injected test panic"), "{}", finished.reason);
        assert!(
            finished.reason.contains("Restore was sent to 1 of 1 target(s)"),
            "{}",
            finished.reason
        );
        // What it injected is restored.
        match agent_rx.try_recv() {
            Ok(v1::CoordinatorMessage {
                msg: Some(v1::coordinator_message::Msg::Restore(r)),
            }) => assert_eq!(r.fault_id, format!("{run_id}-1")),
            other => panic!("expected a Restore, got {other:?}"),
        }
        // Its slot is free, abort finds nothing to abort, the store has the outcome.
        assert_eq!(control.runs.in_flight(), 0);
        assert!(!control.runs.abort(&run_id, "operator"));
        assert_eq!(control.runs.report(&run_id).unwrap().outcome, Outcome::Error);
        let row = &control.store.list(1, None).unwrap()[0];
        assert_eq!((row.run_id.as_str(), row.status.as_str()), (run_id.as_str(), "error"));
        let plan = planner::plan(
            &exp(),
            &control.registry.agents(),
            &planner::Context {
                policy: &control.policy,
                now: time::OffsetDateTime::now_utc(),
                running: control.runs.in_flight(),
            },
        );
        assert!(plan.is_ok(), "max_concurrent_runs 1 still taken: {:?}", plan.err());
    }
}
