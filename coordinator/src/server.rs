//! Serving both gRPC services on one listener, with graceful shutdown that
//! restores every run before the process goes away.

use std::sync::Arc;
use std::time::Duration;

use faultline_proto::v1::{agent_link_server::AgentLinkServer, control_server::ControlServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::control::ControlService;
use crate::link::AgentLinkService;
use crate::policy::Policy;
use crate::registry::Registry;
use crate::runs::Runs;
use crate::security::Security;
use crate::store::Store;
use faultline_proto::metrics::Metrics;

/// How long shutdown waits for runs to restore and finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Shared coordinator state.
#[derive(Clone)]
pub struct Coordinator {
    pub registry: Arc<Registry>,
    pub runs: Arc<Runs>,
    /// Fleet-wide limits every run is planned within.
    pub policy: Arc<Policy>,
    /// Run history and audit log. By default, in memory only.
    pub store: Arc<Store>,
    /// Prometheus metrics (served by `faultline serve --metrics-listen`).
    pub metrics: Metrics,
    /// mTLS and bearer tokens. By default, none (loopback only).
    pub security: Arc<Security>,
    /// The one path of every run's events (store, followers, client),
    /// shared by Control and the web console. Follows `store`.
    pub events: Arc<crate::events::EventLog>,
    /// How often agents heartbeat; an agent silent for three of these is
    /// dropped. By default, 5 s ([`crate::link::HEARTBEAT_INTERVAL`]).
    pub heartbeat_interval: Duration,
    /// Starts runs the way SubmitRun does; set by [`Coordinator::serve`]
    /// for the release-gate endpoint ([`crate::gate`]).
    pub run_starter: Arc<std::sync::OnceLock<crate::gate::StartRun>>,
    /// Game-day runs in flight.
    pub gamedays: Arc<crate::gameday::runner::InFlight>,
    /// Webhooks and the approval webhook (`serve --notify`). By default, none.
    pub notifier: Option<Arc<crate::notify::Notifier>>,
}

impl Default for Coordinator {
    fn default() -> Self {
        let store = Arc::new(Store::in_memory().expect("an in-memory SQLite database always opens"));
        Self {
            registry: Arc::default(),
            runs: Arc::default(),
            policy: Arc::default(),
            events: Arc::new(crate::events::EventLog::new(store.clone())),
            store,
            metrics: coordinator_metrics(),
            security: Arc::default(),
            heartbeat_interval: crate::link::HEARTBEAT_INTERVAL,
            run_starter: Arc::default(),
            gamedays: Arc::default(),
            notifier: None,
        }
    }
}

/// The coordinator's metrics, declared so they show before their first value.
fn coordinator_metrics() -> Metrics {
    let m = Metrics::new();
    for (name, kind, help) in [
        (
            "faultline_connected_agents",
            "gauge",
            "Agents connected to this coordinator.",
        ),
        (
            "faultline_active_faults",
            "gauge",
            "Faults currently injected, by kind.",
        ),
        ("faultline_runs_total", "counter", "Finished runs, by outcome."),
        (
            "faultline_gamedays_total",
            "counter",
            "Finished game days, by result (passed: every experiment passed).",
        ),
        ("faultline_runs_in_flight", "gauge", "Runs in flight."),
        (
            "faultline_inject_ack_seconds",
            "histogram",
            "From sending Inject to the agent's acknowledgement, by kind.",
        ),
        (
            "faultline_restore_ack_seconds",
            "histogram",
            "From sending Restore to the agent's acknowledgement, by kind.",
        ),
        (
            "faultline_lease_expiries_total",
            "counter",
            "Faults the agent restored on its own because the lease ran out, by kind.",
        ),
        (
            "faultline_refusals_total",
            "counter",
            "Faults an agent refused, by kind.",
        ),
    ] {
        m.describe(name, kind, help);
    }
    m
}

impl Coordinator {
    /// Updates the gauges that are read rather than pushed; call before a scrape.
    pub fn refresh_metrics(&self) {
        self.metrics
            .set("faultline_connected_agents", &[], self.registry.agents().len() as f64);
        self.metrics
            .set("faultline_runs_in_flight", &[], self.runs.in_flight() as f64);
    }

    pub fn new() -> Self {
        Self::default()
    }

    /// A coordinator that plans every run within `policy`.
    pub fn with_policy(policy: Policy) -> Self {
        Self {
            policy: Arc::new(policy),
            ..Self::default()
        }
    }

    /// Requires `security` (mTLS, tokens) from agents and clients.
    pub fn with_security(mut self, security: Security) -> Self {
        self.security = Arc::new(security);
        self
    }

    /// Tells agents to heartbeat every `interval` (and drops those silent
    /// for three intervals) instead of every 5 s.
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// Sends webhooks and asks the approval webhook through `notifier`.
    pub fn with_notifier(mut self, notifier: Arc<crate::notify::Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// Keeps history in `store` instead of memory.
    pub fn with_store(mut self, store: Store) -> Self {
        self.store = Arc::new(store);
        self.events = Arc::new(crate::events::EventLog::new(self.store.clone()));
        self
    }

    /// Serves AgentLink and Control on `listener` until `shutdown` fires.
    /// Runs in flight are aborted and restored before this returns.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        let addr = listener.local_addr().ok();
        let runs_token = CancellationToken::new();
        let links_token = CancellationToken::new();
        let tracker = TaskTracker::new();
        match self.store.mark_interrupted(faultline_proto::now_unix_ms()) {
            Ok(ids) if !ids.is_empty() => warn!(
                runs = %ids.join(", "),
                "runs were in flight when the coordinator last stopped: marked interrupted"
            ),
            Ok(_) => {}
            Err(e) => warn!(err = %e, "cannot mark interrupted runs"),
        }
        match self.store.mark_gamedays_interrupted(faultline_proto::now_unix_ms()) {
            Ok(ids) if !ids.is_empty() => warn!(
                gamedays = %ids.join(", "),
                "game days were in flight when the coordinator last stopped: marked interrupted"
            ),
            Ok(_) => {}
            Err(e) => warn!(err = %e, "cannot mark interrupted game days"),
        }
        let events = self.events.clone();
        let link = AgentLinkService {
            registry: self.registry.clone(),
            shutdown: links_token.clone(),
            events: events.clone(),
            security: self.security.clone(),
            heartbeat_interval: self.heartbeat_interval,
        };
        let control = ControlService {
            schedules_changed: Arc::new(tokio::sync::Notify::new()),
            registry: self.registry.clone(),
            runs: self.runs.clone(),
            policy: self.policy.clone(),
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            security: self.security.clone(),
            shutdown: runs_token.clone(),
            tracker: tracker.clone(),
            events,
            gamedays: self.gamedays.clone(),
            notifier: self.notifier.clone(),
        };
        // The gate endpoint starts runs the way SubmitRun does.
        {
            let c = control.clone();
            // ...including the approval webhook's pre-flight check.
            let _ = self.run_starter.set(Arc::new(move |exp, source, who: String| {
                let c = c.clone();
                Box::pin(async move {
                    if let Some(why) = c.runs.stopped() {
                        return Err(crate::control::Error::Stopped(why));
                    }
                    c.approve(&exp, &source, &who).await?;
                    Ok(c.start_run(exp, source, &who))
                })
            }));
        }
        // The scheduler starts runs the way SubmitRun does.
        {
            let c = control.clone();
            let runs = self.runs.clone();
            let submit: crate::schedule::Submit = Arc::new(move |s: &crate::store::ScheduleRow| {
                if let Some(why) = c.runs.stopped() {
                    return Err(crate::control::Error::Stopped(why));
                }
                let who = format!("schedule:{}", s.id);
                if s.kind == crate::store::ScheduleKind::GameDay {
                    // Its experiments are parsed (and refused one by one)
                    // as the game day reaches them.
                    let suite = crate::gameday::Suite::from_json(&s.yaml)?;
                    let id = crate::gameday::runner::new_id();
                    crate::gameday::runner::spawn(
                        &c,
                        suite,
                        crate::gameday::runner::Start {
                            id: id.clone(),
                            who,
                            schedule_id: Some(s.id.clone()),
                            events: None,
                        },
                    );
                    return Ok(id);
                }
                let exp = crate::experiment::parse(&s.source, &s.yaml, &s.vars)?;
                let (id, mut rx) = c.start_run(exp, s.source.clone(), &who);
                // Nobody follows a scheduled run's stream; the store does.
                tokio::spawn(async move { while rx.recv().await.is_some() {} });
                Ok(id)
            });
            let gamedays = self.gamedays.clone();
            let is_running: crate::schedule::IsRunning = Arc::new(move |run_id: &str| {
                gamedays.contains(run_id) || (runs.is_known(run_id) && runs.report(run_id).is_none())
            });
            // The error budgets first, then the approval webhook (a game
            // day asks about each experiment as it reaches it).
            let budget = crate::schedule::error_budget_gate(control.policy.clone());
            let c = control.clone();
            let gate: crate::schedule::Gate = Arc::new(move |s: &crate::store::ScheduleRow| {
                let budget = budget(s);
                let (c, s) = (c.clone(), s.clone());
                Box::pin(async move {
                    if let Some(why) = budget.await {
                        return Some(why);
                    }
                    if s.kind != crate::store::ScheduleKind::Experiment {
                        return None;
                    }
                    let exp = crate::control::parse_off_runtime(s.source.clone(), s.yaml.clone(), s.vars.clone())
                        .await
                        .ok()?;
                    let who = format!("schedule:{}", s.id);
                    c.approve(&exp, &s.source, &who).await.err().map(|r| r.to_string())
                })
            });
            tracker.spawn(crate::schedule::run(
                self.store.clone(),
                submit,
                is_running,
                gate,
                control.schedules_changed.clone(),
                runs_token.clone(),
            ));
        }
        info!(?addr, "coordinator listening");
        let t = tracker.clone();
        let signal = async move {
            shutdown.cancelled().await;
            info!("coordinator shutting down: aborting and restoring runs in flight");
            runs_token.cancel();
            t.close();
            if tokio::time::timeout(SHUTDOWN_GRACE, t.wait()).await.is_err() {
                warn!("runs did not finish within the shutdown grace; agents' leases restore what is left");
            }
            // Only now let go of the agents: restores needed their streams.
            links_token.cancel();
        };
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = self.security.server_tls() {
            builder = builder.tls_config(tls)?;
        }
        builder
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(AgentLinkServer::new(link))
            .add_service(ControlServer::new(control))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal)
            .await
    }
}
