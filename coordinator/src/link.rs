//! The coordinator's side of `AgentLink.Connect`.
//!
//! The first message must be Hello; the coordinator answers Welcome and
//! registers the agent. After that, heartbeats update the registry and fault
//! statuses are routed to the run that owns the fault. When the stream ends
//! the agent is removed; its faults stay under their leases.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use faultline_proto::v1::{self, agent_link_server::AgentLink};
use futures::Stream;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::registry::{AgentInfo, Registry};
use crate::store::Store;

/// How often agents heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// How long an agent has to send Hello after opening the stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub struct AgentLinkService {
    pub registry: Arc<Registry>,
    pub shutdown: CancellationToken,
    /// Where statuses for runs no longer in flight go (an interrupted run
    /// learns what its agents restored).
    pub store: Arc<Store>,
    /// With TLS on, the agent id must match the client certificate.
    pub security: Arc<crate::security::Security>,
}

type OutStream = Pin<Box<dyn Stream<Item = Result<v1::CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentLink for AgentLinkService {
    type ConnectStream = OutStream;

    async fn connect(&self, req: Request<Streaming<v1::AgentMessage>>) -> Result<Response<OutStream>, Status> {
        let peer = req.remote_addr();
        let cn = crate::security::peer_common_name(&req);
        if self.security.tls.is_some() && cn.is_none() {
            return Err(Status::unauthenticated(
                "agents must present a client certificate signed by this coordinator's CA",
            ));
        }
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello within 10s of opening AgentLink.Connect"))??;
        let hello = match first.and_then(|m| m.msg) {
            Some(v1::agent_message::Msg::Hello(h)) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message on AgentLink.Connect must be Hello",
                ))
            }
        };
        self.security.check_agent(cn, &hello.agent_id)?;
        let info = AgentInfo::from_hello(hello).map_err(Status::invalid_argument)?;
        let agent_id = info.agent_id.clone();
        let (tx, rx) = mpsc::channel(1024);
        let welcome = v1::CoordinatorMessage {
            msg: Some(v1::coordinator_message::Msg::Welcome(v1::Welcome {
                heartbeat_interval_ms: HEARTBEAT_INTERVAL.as_millis() as u64,
                coordinator_version: env!("CARGO_PKG_VERSION").into(),
            })),
        };
        tx.try_send(welcome)
            .map_err(|_| Status::internal("cannot queue Welcome"))?;
        info!(agent_id = %agent_id, ?peer, labels = ?info.labels, "agent connected");
        for line in &info.cleaned {
            tracing::warn!(agent_id = %agent_id, "agent cleaned up at start: {line}");
        }
        let conn = self.registry.add(info, tx);
        let registry = self.registry.clone();
        let store = self.store.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    m = inbound.message() => m,
                };
                match msg {
                    Ok(Some(v1::AgentMessage { msg: Some(m) })) => match m {
                        v1::agent_message::Msg::Heartbeat(h) => registry.heartbeat(&agent_id, h.active_faults),
                        v1::agent_message::Msg::FaultStatus(st) => {
                            let (run_id, text) =
                                (st.run_id.clone(), faultline_proto::fault_status_line(&agent_id, &st));
                            if !registry.route(&agent_id, st) && !run_id.is_empty() {
                                if let Err(e) = store.event(&run_id, faultline_proto::now_unix_ms(), "after", &text) {
                                    tracing::warn!(err = %e, "cannot record a status for a finished run");
                                }
                            }
                        }
                        v1::agent_message::Msg::Hello(_) => warn!(agent_id = %agent_id, "ignoring a second Hello"),
                    },
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        warn!(agent_id = %agent_id, err = %e, "agent stream broke");
                        break;
                    }
                }
            }
            registry.remove(&agent_id, conn);
            info!(agent_id = %agent_id, "agent disconnected");
        });
        let shutdown = self.shutdown.clone();
        // End the outbound stream on shutdown so agents see it close.
        let out = ReceiverStream::new(rx)
            .map(Ok)
            .take_until(Box::pin(async move { shutdown.cancelled().await }));
        Ok(Response::new(Box::pin(out)))
    }
}
