//! Shared test helpers of the engine: a small experiment, agents that
//! acknowledge at once, a stand-in Prometheus query API and a run helper.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use faultline_proto::v1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::engine::{execute, AbortReason, RunInput};
use crate::events::EventLog;
use crate::experiment::Experiment;
use crate::policy::Policy;
use crate::registry::Registry;
use crate::report::Report;
use crate::store::Store;

pub(crate) fn exp() -> Experiment {
    crate::experiment::parse(
        "t.yaml",
        "name: t\nhypothesis:\n  probes:\n    - name: web\n      tcp: { address: \"127.0.0.1:1\" }\n      tolerances:\n        - success_rate: \"80%\"\n          guardrail: true\n          window: 1s\nduration: 10s\nfaults:\n  - kill: { name: x }\n",
        &HashMap::new(),
    )
    .unwrap()
}

pub(crate) fn agent_info(id: &str) -> crate::registry::AgentInfo {
    crate::registry::AgentInfo {
        agent_id: id.into(),
        hostname: format!("{id}.test"),
        labels: BTreeMap::new(),
        addresses: vec![],
        capabilities: vec!["kill".into()],
        version: String::new(),
        pid: 1,
        connected_at_unix_ms: 0,
        last_heartbeat_unix_ms: 0,
        active_faults: 0,
        cleaned: vec![],
    }
}

/// An agent that acknowledges every Inject and Restore at once.
pub(crate) fn acking_agent(registry: &Arc<Registry>, id: &str) {
    let (tx, mut rx) = mpsc::channel(64);
    registry.add(agent_info(id), tx).expect("a new agent id registers");
    let (registry, id) = (registry.clone(), id.to_string());
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let (fault_id, run_id, state) = match m.msg {
                Some(v1::coordinator_message::Msg::Inject(i)) => (i.fault_id, i.run_id, v1::FaultState::Injected),
                Some(v1::coordinator_message::Msg::Restore(r)) => (r.fault_id, r.run_id, v1::FaultState::Restored),
                _ => continue,
            };
            registry.route(
                &id,
                v1::FaultStatus {
                    fault_id,
                    run_id,
                    state: state as i32,
                    ..Default::default()
                },
            );
        }
    });
}

/// A stand-in for the Prometheus query API that answers every query
/// with one series of `value`.
pub(crate) async fn query_api(value: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 65536 {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let body = format!(
                    r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"job":"api"}},"value":[1,"{value}"]}}]}}}}"#
                );
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(resp.as_bytes()).await;
            });
        }
    });
    port
}

/// Runs a one-kill experiment (probe `true`, 1s baseline, 4s observe)
/// with `extra` appended to its YAML, against an acking agent.
pub(crate) async fn run_with(run_id: &str, extra: &str, policy: Policy) -> Report {
    let yaml = format!(
        "name: t\nhypothesis:\n  probes:\n    - name: ok\n      interval: 200ms\n      command: {{ run: \"true\" }}\n      tolerances:\n        - success_rate: \"90%\"\nbaseline: 1s\nduration: 4s\nrecovery: 1s\nfaults:\n  - kill: {{ name: x }}\n{extra}"
    );
    run_yaml(run_id, &yaml, policy, |_| {}).await.0
}

/// Runs `yaml` against an acking agent; `on_event` sees each event the
/// submitting client gets, as it gets it. Returns the report and those
/// events.
pub(crate) async fn run_yaml(
    run_id: &str,
    yaml: &str,
    policy: Policy,
    mut on_event: impl FnMut(&v1::RunEvent) + Send + 'static,
) -> (Report, Vec<v1::RunEvent>) {
    let registry = Arc::new(Registry::new());
    acking_agent(&registry, "a1");
    let exp = crate::experiment::parse("t.yaml", yaml, &HashMap::new()).expect("experiment");
    let (client, mut rx) = mpsc::channel(1024);
    let seen = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(ev) = rx.recv().await {
            on_event(&ev);
            all.push(ev);
        }
        all
    });
    let log = Arc::new(EventLog::new(Arc::new(Store::in_memory().expect("store"))));
    let (events, writer) = log.open(run_id, "t", "t.yaml", client);
    let writer = tokio::spawn(writer);
    let report = execute(RunInput {
        run_id: run_id.into(),
        experiment: exp,
        source_name: "t.yaml".into(),
        registry,
        events,
        cancel: CancellationToken::new(),
        abort_reason: AbortReason::default(),
        policy: Arc::new(policy),
        running: 0,
        metrics: faultline_proto::metrics::Metrics::new(),
    })
    .await
    .report;
    // The writer ends once the run's handles are dropped, then the client
    // channel closes.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), writer).await;
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), seen).await;
    (report, seen.ok().and_then(Result::ok).unwrap_or_default())
}
