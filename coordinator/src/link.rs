//! The coordinator's side of `AgentLink.Connect`.
//!
//! The first message must be Hello; the coordinator checks it (a valid
//! agent id, the size limits of [`faultline_proto::hello`], with TLS an agent
//! certificate for that id, and no other stream with that id), answers
//! Welcome and registers the agent. After that, heartbeats update the
//! registry and fault statuses are routed to the run that owns the fault.
//! When the stream ends, breaks, or the agent sends nothing for
//! [`EXPIRY_HEARTBEATS`] heartbeat intervals, the agent is removed and its
//! stream closed; its faults stay under their leases (the agent restores
//! them when renewals stop) and commands to it fail as "not connected".

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

use crate::events::EventLog;
use crate::registry::{AgentInfo, Registry};

/// How often agents heartbeat, by default.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// An agent that sends nothing for this many heartbeat intervals is dropped
/// as if its stream had broken (15 s by default).
pub const EXPIRY_HEARTBEATS: u32 = 3;
/// How long an agent has to send Hello after opening the stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How many `cleaned` lines of one Hello are logged; the rest are counted.
const CLEANED_LOGGED: usize = 5;

pub struct AgentLinkService {
    pub registry: Arc<Registry>,
    pub shutdown: CancellationToken,
    /// Where statuses no run in flight takes go: through their run's event
    /// writer, or into the store for a run that is over (an interrupted
    /// run learns what its agents restored).
    pub events: Arc<EventLog>,
    /// With TLS on, the agent id must match the client certificate.
    pub security: Arc<crate::security::Security>,
    /// Told to agents in Welcome; agents silent for [`EXPIRY_HEARTBEATS`]
    /// of these are dropped. By default, [`HEARTBEAT_INTERVAL`].
    pub heartbeat_interval: Duration,
}

type OutStream = Pin<Box<dyn Stream<Item = Result<v1::CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentLink for AgentLinkService {
    type ConnectStream = OutStream;

    async fn connect(&self, req: Request<Streaming<v1::AgentMessage>>) -> Result<Response<OutStream>, Status> {
        let peer = req.remote_addr();
        let cert = crate::security::peer_cert(&req);
        if self.security.tls.is_some() && cert.is_none() {
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
        let info = AgentInfo::from_hello(hello).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.security.check_agent(cert, &info.agent_id)?;
        let agent_id = info.agent_id.clone();
        let (tx, rx) = mpsc::channel(1024);
        let welcome = v1::CoordinatorMessage {
            msg: Some(v1::coordinator_message::Msg::Welcome(v1::Welcome {
                heartbeat_interval_ms: self.heartbeat_interval.as_millis() as u64,
                coordinator_version: env!("CARGO_PKG_VERSION").into(),
            })),
        };
        tx.try_send(welcome)
            .map_err(|_| Status::internal("cannot queue Welcome"))?;
        let cleaned = info.cleaned.clone();
        let labels = format!("{:?}", info.labels);
        let conn = self
            .registry
            .add(info, tx)
            .map_err(|e| Status::already_exists(e.to_string()))?;
        info!(agent_id = %agent_id, ?peer, labels = %labels, "agent connected");
        log_cleaned(&agent_id, &cleaned);
        // Cancelled when this connection is over, for whatever reason, so
        // the outbound stream ends and the agent sees it closed.
        let gone = self.shutdown.child_token();
        let session = Session {
            agent_id: agent_id.clone(),
            conn,
            registry: self.registry.clone(),
            events: self.events.clone(),
            shutdown: self.shutdown.clone(),
            expiry: self.heartbeat_interval * EXPIRY_HEARTBEATS,
        };
        let g = gone.clone();
        tokio::spawn(async move {
            let _gone = g.drop_guard();
            session.run(inbound).await;
        });
        let out = ReceiverStream::new(rx)
            .map(Ok)
            .take_until(Box::pin(async move { gone.cancelled().await }));
        Ok(Response::new(Box::pin(out)))
    }
}

/// Logs what an agent cleaned up at start: a count and the first few lines,
/// so a Hello with many lines cannot flood the log.
fn log_cleaned(agent_id: &str, cleaned: &[String]) {
    if cleaned.is_empty() {
        return;
    }
    let first = cleaned
        .iter()
        .take(CLEANED_LOGGED)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    let more = cleaned.len().saturating_sub(CLEANED_LOGGED);
    if more > 0 {
        warn!(agent_id = %agent_id, count = cleaned.len(), "agent cleaned up at start: {first}; and {more} more (`faultline agents --json` lists them)");
    } else {
        warn!(agent_id = %agent_id, count = cleaned.len(), "agent cleaned up at start: {first}");
    }
}

/// Why an agent's session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The agent closed the stream.
    Closed,
    /// The stream broke (reset connection, protocol error).
    Broken,
    /// Nothing arrived for the expiry time.
    Expired,
    /// The coordinator is shutting down.
    Shutdown,
}

/// One registered agent's inbound side.
pub struct Session {
    pub agent_id: String,
    /// The registry connection number, to remove exactly this connection.
    pub conn: u64,
    pub registry: Arc<Registry>,
    /// Where statuses no run in flight takes go.
    pub events: Arc<EventLog>,
    pub shutdown: CancellationToken,
    /// How long the agent may stay silent.
    pub expiry: Duration,
}

impl Session {
    /// Reads the agent's messages until the stream ends, breaks, goes silent
    /// for `expiry`, or shutdown; then removes the agent from the registry.
    pub async fn run<S>(self, mut inbound: S) -> SessionEnd
    where
        S: Stream<Item = Result<v1::AgentMessage, Status>> + Unpin,
    {
        let agent_id = self.agent_id.as_str();
        let mut second_hellos = 0u64;
        let end = loop {
            let msg = tokio::select! {
                _ = self.shutdown.cancelled() => break SessionEnd::Shutdown,
                m = tokio::time::timeout(self.expiry, inbound.next()) => match m {
                    Ok(m) => m,
                    Err(_) => {
                        warn!(agent_id = %agent_id, silent_for = ?self.expiry, "agent sent no heartbeat: dropping it as if its stream broke");
                        break SessionEnd::Expired;
                    }
                },
            };
            match msg {
                Some(Ok(v1::AgentMessage { msg: Some(m) })) => match m {
                    v1::agent_message::Msg::Heartbeat(h) => self.registry.heartbeat(agent_id, h.active_faults),
                    v1::agent_message::Msg::FaultStatus(st) => {
                        // `route` hands the status back when no run in flight takes it.
                        if let Some(st) = self.registry.route(agent_id, st) {
                            self.events.late_status(agent_id, st);
                        }
                    }
                    v1::agent_message::Msg::Hello(_) => {
                        second_hellos += 1;
                        if second_hellos == 1 {
                            warn!(agent_id = %agent_id, "ignoring a second Hello (further ones are counted, not logged)");
                        }
                    }
                },
                Some(Ok(_)) => {}
                None => break SessionEnd::Closed,
                Some(Err(e)) => {
                    warn!(agent_id = %agent_id, err = %e, "agent stream broke");
                    break SessionEnd::Broken;
                }
            }
        };
        self.registry.remove(agent_id, self.conn);
        if second_hellos > 1 {
            warn!(agent_id = %agent_id, count = second_hellos, "agent sent extra Hellos, all ignored");
        }
        info!(agent_id = %agent_id, how = ?end, "agent disconnected");
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> AgentInfo {
        AgentInfo::from_hello(v1::Hello {
            agent_id: id.into(),
            ..Default::default()
        })
        .unwrap()
    }

    fn heartbeat() -> Result<v1::AgentMessage, Status> {
        Ok(v1::AgentMessage {
            msg: Some(v1::agent_message::Msg::Heartbeat(v1::Heartbeat { active_faults: 0 })),
        })
    }

    /// Registers `id` and runs its session over a channel the test feeds.
    fn start(
        registry: &Arc<Registry>,
        id: &str,
    ) -> (
        mpsc::Sender<Result<v1::AgentMessage, Status>>,
        mpsc::Receiver<v1::CoordinatorMessage>,
        tokio::task::JoinHandle<SessionEnd>,
    ) {
        let (out_tx, out_rx) = mpsc::channel(8);
        let conn = registry.add(info(id), out_tx).unwrap();
        let (in_tx, in_rx) = mpsc::channel(8);
        let session = Session {
            agent_id: id.into(),
            conn,
            registry: registry.clone(),
            events: Arc::new(EventLog::new(Arc::new(crate::store::Store::in_memory().unwrap()))),
            shutdown: CancellationToken::new(),
            expiry: HEARTBEAT_INTERVAL * EXPIRY_HEARTBEATS,
        };
        let task = tokio::spawn(session.run(ReceiverStream::new(in_rx)));
        (in_tx, out_rx, task)
    }

    #[tokio::test(start_paused = true)]
    async fn an_agent_silent_for_three_heartbeats_is_dropped_like_a_broken_stream() {
        let registry = Arc::new(Registry::new());
        let (in_tx, _out, task) = start(&registry, "quiet");
        // Heartbeats keep it: 10 of them, 5 s apart.
        for _ in 0..10 {
            tokio::time::sleep(HEARTBEAT_INTERVAL).await;
            in_tx.send(heartbeat()).await.unwrap();
        }
        tokio::time::sleep(HEARTBEAT_INTERVAL * 2).await;
        assert_eq!(registry.len(), 1, "still within three intervals");
        // Then silence, with the stream still open.
        tokio::time::sleep(HEARTBEAT_INTERVAL * 2).await;
        assert_eq!(task.await.unwrap(), SessionEnd::Expired);
        assert!(registry.is_empty(), "the registry let go of it");
        // Like after a broken stream: commands to it fail, and the same id
        // may register again.
        let e = registry.send("quiet", v1::CoordinatorMessage::default()).unwrap_err();
        assert!(e.to_string().contains("not connected"), "{e}");
        let (_in2, _out2, _t2) = start(&registry, "quiet");
        drop(in_tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_stream_with_a_connected_id_is_refused_until_the_first_ends() {
        let registry = Arc::new(Registry::new());
        let (in_tx, mut out_rx, task) = start(&registry, "node-a");
        let (tx2, _rx2) = mpsc::channel(8);
        let e = registry.add(info("node-a"), tx2.clone()).unwrap_err();
        assert!(e.to_string().contains("\"node-a\" is already connected"), "{e}");
        // The first stream still gets node-a's commands.
        registry.send("node-a", v1::CoordinatorMessage::default()).unwrap();
        assert!(out_rx.recv().await.is_some());
        // The first agent goes away (restart): the same id is accepted.
        drop(in_tx);
        assert_eq!(task.await.unwrap(), SessionEnd::Closed);
        registry.add(info("node-a"), tx2).unwrap();
    }

    #[test]
    fn many_cleaned_lines_make_one_log_line_with_a_count() {
        #[derive(Clone, Default)]
        struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .finish();
        let lines: Vec<String> = (0..100).map(|i| format!("removed chain faultline-{i}")).collect();
        tracing::subscriber::with_default(sub, || log_cleaned("node-a", &lines));
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.contains("faultline-4;") && !out.contains("faultline-5;"), "{out}");
        assert!(out.contains("and 95 more") && out.contains("count=100"), "{out}");
    }
}
