//! The coordinator's wire edge on arbitrary bytes. The first byte picks a
//! message; the rest is decoded with prost:
//! - AgentLink: a Hello (size/count limits, id rule → `AgentInfo`) and a
//!   FaultStatus routed through an empty registry;
//! - Control: every request handled by the real `ControlService` with an
//!   in-memory store and no agents — except that SubmitRun only parses its
//!   experiment (a run would execute `command` probes on this host).
//! Every call must answer (OK or a status) within 5 s and never panic.
#![no_main]
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use faultline_coordinator::control::ControlService;
use faultline_coordinator::registry::{AgentInfo, Registry};
use faultline_proto::v1;
use faultline_proto::v1::control_server::Control;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::Request;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

fn control() -> ControlService {
    let store = Arc::new(faultline_coordinator::store::Store::in_memory().expect("an in-memory store"));
    ControlService {
        schedules_changed: Arc::default(),
        registry: Arc::new(Registry::new()),
        runs: Arc::default(),
        policy: Arc::default(),
        store: store.clone(),
        metrics: faultline_proto::metrics::Metrics::new(),
        security: Arc::default(),
        shutdown: tokio_util::sync::CancellationToken::new(),
        tracker: tokio_util::task::TaskTracker::new(),
        events: Arc::new(faultline_coordinator::events::EventLog::new(store)),
        gamedays: Arc::default(),
        notifier: None,
    }
}

async fn answer<T>(f: impl std::future::Future<Output = Result<T, tonic::Status>>) {
    let _ = tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .expect("a Control call answers within 5 s");
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    runtime().block_on(async move {
        let c = control();
        match which % 12 {
            0 => {
                if let Ok(h) = v1::Hello::decode(rest) {
                    let _ = AgentInfo::from_hello(h);
                }
            }
            1 => {
                if let Ok(st) = v1::FaultStatus::decode(rest) {
                    let _ = c.registry.route("agent-1", st);
                }
            }
            2 => {
                if let Ok(r) = v1::SubmitRunRequest::decode(rest) {
                    if let Some(src) = r.source {
                        let vars = src.vars.into_iter().collect();
                        let _ = faultline_coordinator::experiment::parse(&src.name, &src.yaml, &vars);
                    }
                }
            }
            3 => {
                if let Ok(r) = v1::PlanRequest::decode(rest) {
                    answer(c.plan(Request::new(r))).await;
                }
            }
            4 => {
                if let Ok(r) = v1::AbortRequest::decode(rest) {
                    answer(c.abort(Request::new(r))).await;
                }
            }
            5 => {
                if let Ok(r) = v1::ListAgentsRequest::decode(rest) {
                    answer(c.list_agents(Request::new(r))).await;
                }
            }
            6 => {
                if let Ok(r) = v1::ListRunsRequest::decode(rest) {
                    answer(c.list_runs(Request::new(r))).await;
                }
            }
            7 => {
                if let Ok(r) = v1::GetReportRequest::decode(rest) {
                    answer(c.get_report(Request::new(r))).await;
                }
            }
            8 => {
                if let Ok(r) = v1::StopRequest::decode(rest) {
                    answer(c.stop(Request::new(r))).await;
                    answer(c.resume(Request::new(v1::ResumeRequest {}))).await;
                }
            }
            9 => {
                if let Ok(r) = v1::AddScheduleRequest::decode(rest) {
                    answer(c.add_schedule(Request::new(r))).await;
                    answer(c.list_schedules(Request::new(v1::ListSchedulesRequest {}))).await;
                }
            }
            10 => {
                if let Ok(r) = v1::RemoveScheduleRequest::decode(rest) {
                    answer(c.remove_schedule(Request::new(r))).await;
                }
            }
            _ => {
                if let Ok(r) = v1::FollowRequest::decode(rest) {
                    // Unknown or invalid runs are refused at once; no run exists here.
                    answer(c.follow(Request::new(r))).await;
                }
            }
        }
    });
});
