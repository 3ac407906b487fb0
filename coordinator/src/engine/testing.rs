//! Shared test helpers of the engine: a small experiment and agents that
//! acknowledge at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use faultline_proto::v1;
use tokio::sync::mpsc;

use crate::experiment::Experiment;
use crate::registry::Registry;

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
