//! The agent's side of `AgentLink.Connect`: dial out, say Hello, heartbeat,
//! forward commands to the fault table and statuses back, and reconnect with
//! capped exponential backoff when the stream breaks.
//!
//! Faults keep running across a broken stream only until their lease runs
//! out; the coordinator renews leases over this same stream, so losing it for
//! longer than a lease restores the node (the dead-man switch).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use faultline_proto::v1::{self, agent_link_client::AgentLinkClient};
use tokio::sync::{mpsc, Mutex};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::table::{Command, FaultTable};

/// Errors of one link session.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid coordinator address {url:?}: {source}")]
    Address {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("cannot reach the coordinator at {url}: {source}")]
    Dial {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("coordinator refused the agent: {0}")]
    Refused(tonic::Status),
    #[error("stream to the coordinator broke: {0}")]
    Stream(tonic::Status),
    #[error("coordinator closed the stream")]
    Closed,
    #[error("coordinator sent {0} before Welcome")]
    NoWelcome(&'static str),
}

/// How one session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The agent is shutting down; do not reconnect.
    Shutdown,
    /// The session failed or broke. `established` says whether the
    /// coordinator had accepted the agent, which resets the backoff.
    Lost { established: bool, error: String },
}

/// Runs `session` until it returns [`SessionEnd::Shutdown`] or `shutdown`
/// fires, sleeping `backoff` between attempts.
pub async fn reconnect_loop<F, Fut>(mut backoff: Backoff, shutdown: &CancellationToken, mut session: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = SessionEnd>,
{
    while !shutdown.is_cancelled() {
        match session().await {
            SessionEnd::Shutdown => return,
            SessionEnd::Lost { established, error } => {
                if established {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                warn!(%error, retry_in = ?delay, "link to coordinator lost");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// What the agent says about itself in Hello.
#[derive(Debug, Clone)]
pub struct Identity {
    pub hello: v1::Hello,
    /// With an `https://` coordinator: the CA to verify it with and this
    /// agent's client certificate (whose common name is its agent id).
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

/// One session: dial, Hello, then serve until the stream breaks or shutdown.
pub async fn session(
    url: &str,
    identity: &Identity,
    table: &FaultTable,
    statuses: Arc<Mutex<mpsc::UnboundedReceiver<v1::FaultStatus>>>,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let mut established = false;
    let r = session_inner(url, identity, table, statuses, shutdown, &mut established).await;
    if established {
        table.metrics().set("faultline_agent_connected", &[], 0.0);
    }
    match r {
        Ok(()) => SessionEnd::Shutdown,
        Err(e) => SessionEnd::Lost {
            established,
            error: e.to_string(),
        },
    }
}

async fn session_inner(
    url: &str,
    identity: &Identity,
    table: &FaultTable,
    statuses: Arc<Mutex<mpsc::UnboundedReceiver<v1::FaultStatus>>>,
    shutdown: &CancellationToken,
    established: &mut bool,
) -> Result<(), Error> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|source| Error::Address {
            url: url.to_string(),
            source,
        })?
        .connect_timeout(Duration::from_secs(5))
        // Detect a dead coordinator (or a cut network) even when idle.
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    let endpoint = match &identity.tls {
        Some(tls) => endpoint.tls_config(tls.clone()).map_err(|source| Error::Address {
            url: url.to_string(),
            source,
        })?,
        None => endpoint,
    };
    let channel = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        c = endpoint.connect() => c.map_err(|source| Error::Dial { url: url.to_string(), source })?,
    };
    let mut client = AgentLinkClient::new(channel);
    let (tx, rx) = mpsc::channel::<v1::AgentMessage>(256);
    let send = |msg| v1::AgentMessage { msg: Some(msg) };
    // The channel has room: this cannot block.
    let _ = tx
        .send(send(v1::agent_message::Msg::Hello(identity.hello.clone())))
        .await;
    let mut inbound = client
        .connect(ReceiverStream::new(rx))
        .await
        .map_err(Error::Refused)?
        .into_inner();

    let heartbeat_every = match inbound.message().await {
        Ok(Some(v1::CoordinatorMessage {
            msg: Some(v1::coordinator_message::Msg::Welcome(w)),
        })) => Duration::from_millis(w.heartbeat_interval_ms.clamp(100, 60_000)),
        Ok(Some(_)) => return Err(Error::NoWelcome("a command")),
        Ok(None) => return Err(Error::Closed),
        Err(s) => return Err(Error::Refused(s)),
    };
    *established = true;
    table.metrics().set("faultline_agent_connected", &[], 1.0);
    info!(agent_id = %identity.hello.agent_id, coordinator = %url, "connected to coordinator");

    let mut statuses = statuses.lock().await;
    let mut heartbeat = tokio::time::interval(heartbeat_every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                // Put the node back while the coordinator can still hear
                // about it, then flush those statuses.
                table.restore_all("agent shutting down").await;
                while let Ok(st) = statuses.try_recv() {
                    let _ = tx.send(send(v1::agent_message::Msg::FaultStatus(st))).await;
                }
                // Close our half of the stream and wait (briefly) for the
                // coordinator to close its half: dropping the connection
                // right away can cut the end of our stream off, and the
                // coordinator then reads a broken body instead of a goodbye.
                drop(tx);
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Ok(Some(_)) = inbound.message().await {}
                })
                .await;
                return Ok(());
            }
            _ = heartbeat.tick() => {
                let hb = v1::Heartbeat { active_faults: table.active_faults() };
                if tx.send(send(v1::agent_message::Msg::Heartbeat(hb))).await.is_err() {
                    return Err(Error::Closed);
                }
            }
            Some(st) = statuses.recv() => {
                debug!(fault_id = %st.fault_id, state = ?st.state(), "fault status");
                if tx.send(send(v1::agent_message::Msg::FaultStatus(st))).await.is_err() {
                    return Err(Error::Closed);
                }
            }
            msg = inbound.message() => {
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => return Err(Error::Closed),
                    Err(s) => return Err(Error::Stream(s)),
                };
                if let Some(cmd) = command_from_wire(msg) {
                    if !table.send(cmd).await {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Converts a coordinator message into a fault-table command.
pub fn command_from_wire(msg: v1::CoordinatorMessage) -> Option<Command> {
    use v1::coordinator_message::Msg;
    match msg.msg? {
        Msg::Welcome(_) => None,
        Msg::Inject(i) => Some(Command::Inject {
            fault_id: i.fault_id,
            run_id: i.run_id,
            spec: i.spec.unwrap_or_default(),
            lease: Duration::from_millis(i.lease_ms),
            dry_run: i.dry_run,
            container: i.container.map(Box::new),
        }),
        Msg::Restore(r) => Some(Command::Restore { fault_id: r.fault_id }),
        Msg::RestoreAll(r) => Some(Command::RestoreAll {
            reason: r.reason,
            done: None,
        }),
        Msg::LeaseRenewal(l) => Some(Command::Renew {
            fault_ids: l.fault_ids,
            lease: Duration::from_millis(l.lease_ms),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn reconnects_with_capped_exponential_backoff() {
        let shutdown = CancellationToken::new();
        let start = Instant::now();
        let calls = Arc::new(StdMutex::new(Vec::new()));
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(500)).with_jitter(0.0);
        let c = calls.clone();
        reconnect_loop(backoff, &shutdown, move || {
            let c = c.clone();
            async move {
                let mut calls = c.lock().unwrap();
                calls.push(start.elapsed().as_millis() as u64);
                match calls.len() {
                    // The fourth attempt gets in, then the stream breaks.
                    4 => SessionEnd::Lost {
                        established: true,
                        error: "broke".into(),
                    },
                    8 => SessionEnd::Shutdown,
                    _ => SessionEnd::Lost {
                        established: false,
                        error: "refused".into(),
                    },
                }
            }
        })
        .await;
        // Gaps: 100, 200, 400, then reset to 100 after the established session, 200, 400, 500 (cap).
        assert_eq!(*calls.lock().unwrap(), vec![0, 100, 300, 700, 800, 1000, 1400, 1900]);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_interrupts_the_backoff_sleep() {
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            s.cancel();
        });
        let start = Instant::now();
        let backoff = Backoff::new(Duration::from_secs(60), Duration::from_secs(60)).with_jitter(0.0);
        reconnect_loop(backoff, &shutdown, || async {
            SessionEnd::Lost {
                established: false,
                error: "down".into(),
            }
        })
        .await;
        assert_eq!(start.elapsed().as_secs(), 1);
    }
}
