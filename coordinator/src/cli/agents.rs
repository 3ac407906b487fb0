//! `faultline agents`: the agents connected to a coordinator.

use faultline_proto::{now_unix_ms, v1};

use super::common::{self, eprint_err, DEFAULT_COORDINATOR};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Coordinator URL.
    #[arg(long, default_value = DEFAULT_COORDINATOR)]
    pub coordinator: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn main(a: Args) -> i32 {
    let mut c = match common::control_or_exit(&a.coordinator).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let agents = match fetch_all(&mut c).await {
        Ok(a) => a,
        Err(s) => {
            eprint_err(s.message());
            return common::status_exit(&s);
        }
    };
    if a.json {
        let v: Vec<serde_json::Value> = agents
            .iter()
            .map(|a| {
                serde_json::json!({
                    "agent_id": a.agent_id, "hostname": a.hostname, "labels": a.labels,
                    "addresses": a.addresses, "capabilities": a.capabilities, "version": a.version,
                    "active_faults": a.active_faults, "last_heartbeat_unix_ms": a.last_heartbeat_unix_ms,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return 0;
    }
    if agents.is_empty() {
        println!("no agents connected to {}", a.coordinator);
        return 0;
    }
    println!(
        "{:<24} {:<20} {:<30} {:<12} {:>6} {:>10}",
        "AGENT", "HOST", "LABELS", "CAPS", "FAULTS", "HEARTBEAT"
    );
    let now = now_unix_ms();
    for ag in agents {
        let mut labels: Vec<String> = ag.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        println!(
            "{:<24} {:<20} {:<30} {:<12} {:>6} {:>9.1}s",
            ag.agent_id,
            ag.hostname,
            labels.join(","),
            ag.capabilities.join(","),
            ag.active_faults,
            now.saturating_sub(ag.last_heartbeat_unix_ms) as f64 / 1000.0
        );
    }
    0
}

/// Every connected agent, following `ListAgents` pages (a large fleet does
/// not fit one gRPC message).
pub async fn fetch_all<T>(c: &mut v1::control_client::ControlClient<T>) -> Result<Vec<v1::AgentInfo>, tonic::Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut agents = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_agents(v1::ListAgentsRequest {
                page_size: 0,
                page_token: token.clone(),
            })
            .await?
            .into_inner();
        agents.extend(page.agents);
        if page.next_page_token.is_empty() {
            return Ok(agents);
        }
        if page.next_page_token <= token {
            return Err(tonic::Status::internal(
                "the coordinator's ListAgents pages do not advance",
            ));
        }
        token = page.next_page_token;
    }
}
