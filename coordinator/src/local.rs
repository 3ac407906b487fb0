//! Local mode: an in-process coordinator on a loopback port and an
//! in-process agent for this host, talking real gRPC to each other. Nothing
//! to deploy, and the same code paths as a fleet.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::Coordinator;

/// A running local coordinator + agent.
pub struct Local {
    /// URL of the in-process coordinator.
    pub url: String,
    pub coordinator: Coordinator,
    server_stop: CancellationToken,
    agent_stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    agent: tokio::task::JoinHandle<Result<(), faultline_agent::StartError>>,
}

/// Errors starting local mode.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot bind a loopback port for the local coordinator: {0}")]
    Bind(std::io::Error),
    #[error("the local agent did not connect within {0:?}")]
    AgentTimeout(Duration),
    #[error("the local agent could not start: {0}")]
    AgentStart(String),
}

impl Local {
    /// Starts both and waits until the agent is registered. The agent has
    /// `labels` besides `host=<hostname>`, and lets disk fills target
    /// `allow_fill` (none: every disk_fill is refused).
    pub async fn start(
        labels: BTreeMap<String, String>,
        allow_fill: Vec<std::path::PathBuf>,
        policy: crate::policy::Policy,
        store: crate::store::Store,
    ) -> Result<Local, Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(Error::Bind)?;
        let addr = listener.local_addr().map_err(Error::Bind)?;
        let url = format!("http://{addr}");
        let coordinator = Coordinator::with_policy(policy).with_store(store);
        let server_stop = CancellationToken::new();
        let c = coordinator.clone();
        let s = server_stop.clone();
        let server = tokio::spawn(async move {
            if let Err(e) = c.serve(listener, s).await {
                tracing::error!(err = %e, "local coordinator failed");
            }
        });
        let mut cfg = faultline_agent::AgentConfig::new(url.clone());
        // Local mode has no --id: any host name must give a usable id.
        cfg.agent_id = faultline_agent::node::agent_id_from(&cfg.agent_id);
        let mut all = BTreeMap::from([("host".to_string(), faultline_agent::node::hostname())]);
        all.extend(labels);
        cfg.labels = all;
        cfg.fill.allowed = allow_fill;
        cfg.backoff_initial = Duration::from_millis(20);
        // The in-process agent may share this node with a real agent, so it
        // only restores what its own journal lists (no orphan sweep). Its
        // journal is per user and host; a second local run at the same time
        // gets a private one. The agent decides when it takes the lock (a
        // check here and a lock there would race: two runs started together
        // both saw the shared directory free, and the second agent then
        // failed to start).
        cfg.sweep_orphans = false;
        cfg.state_dir = faultline_agent::default_state_dir(&format!("local-{}", faultline_agent::node::hostname()));
        cfg.state_dir_fallback = Some(std::env::temp_dir().join(format!("faultline-local-{}", std::process::id())));
        let agent_stop = CancellationToken::new();
        let mut agent = tokio::spawn(faultline_agent::run(cfg, agent_stop.clone()));
        let wait = Duration::from_secs(10);
        let registered = tokio::select! {
            ok = coordinator.registry.wait_for(1, wait) => ok,
            // An agent that cannot start says why instead of a timeout.
            ended = &mut agent => {
                server_stop.cancel();
                return Err(match ended {
                    Ok(Err(e)) => Error::AgentStart(e.to_string()),
                    Ok(Ok(())) => Error::AgentStart("it stopped before registering".into()),
                    Err(e) => Error::AgentStart(e.to_string()),
                });
            }
        };
        if !registered {
            agent_stop.cancel();
            server_stop.cancel();
            return Err(Error::AgentTimeout(wait));
        }
        Ok(Local {
            url,
            coordinator,
            server_stop,
            agent_stop,
            server,
            agent,
        })
    }

    /// Stops the agent (which restores anything it still holds and reports
    /// it while the coordinator still listens), then the coordinator (which
    /// aborts any run still in flight).
    pub async fn stop(self) {
        self.agent_stop.cancel();
        let mut agent = self.agent;
        if tokio::time::timeout(Duration::from_secs(20), &mut agent).await.is_err() {
            // Its faults are restored by their leases; a hung agent task must
            // not also hold the coordinator's graceful shutdown (which waits
            // for the agent's stream) for its full timeout.
            tracing::warn!("the in-process agent did not stop within 20s; dropping it");
            agent.abort();
        }
        self.server_stop.cancel();
        if tokio::time::timeout(Duration::from_secs(40), self.server)
            .await
            .is_err()
        {
            tracing::warn!("the local coordinator did not stop within 40s");
        }
    }
}
