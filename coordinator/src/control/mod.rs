//! The `Control` service: what the CLI, CI and schedules call.
//!
//! Layout:
//! - [`actions`]: abort and emergency stop, shared with the web console.
//! - `approval`: asking the approval webhook about a run's plan.
//! - `error`: errors of Control calls and their gRPC codes.
//! - `gamedays`: `RunGameDay` and `ListGameDays`.
//! - `parsing`: parsing submitted experiments off the runtime, bounded.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use faultline_proto::v1::{self, control_server::Control};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};
use tracing::info;

pub mod actions;
mod approval;
mod error;
mod gamedays;
mod parsing;

pub use error::{Error, RUN_STATUSES};
use parsing::parse_source;
pub use parsing::{parse_off_runtime, PARSE_TIME_LIMIT};

use crate::engine::{self, RunInput};
use crate::experiment::Experiment;
use crate::planner;
use crate::policy::Policy;
use crate::registry::Registry;
use crate::report;
use crate::runs::Runs;
use crate::store::{Store, Stored};

#[derive(Clone)]
pub struct ControlService {
    /// Wakes the scheduler when schedules change.
    pub schedules_changed: Arc<tokio::sync::Notify>,
    pub registry: Arc<Registry>,
    pub runs: Arc<Runs>,
    pub policy: Arc<Policy>,
    /// Run history and the audit log.
    pub store: Arc<Store>,
    pub metrics: faultline_proto::metrics::Metrics,
    /// Who may call (bearer tokens, client certificates).
    pub security: Arc<crate::security::Security>,
    /// Cancelled at coordinator shutdown; every run holds a child token.
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    /// The one path of every run's events: store, followers, client.
    pub events: Arc<crate::events::EventLog>,
    /// Game-day runs in flight.
    pub gamedays: Arc<crate::gameday::runner::InFlight>,
    /// Webhooks and the approval webhook; none by default.
    pub notifier: Option<Arc<crate::notify::Notifier>>,
}

/// Agents per `ListAgents` page when the request does not say.
const AGENTS_PAGE_DEFAULT: usize = 100;
/// Most agents per `ListAgents` page.
const AGENTS_PAGE_MAX: usize = 1000;
/// Most bytes of agents per `ListAgents` page, far below gRPC's 4 MB limit.
const AGENTS_PAGE_BYTES: usize = 1 << 20;

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::RunEvent, Status>> + Send>>;

impl ControlService {
    /// Starts a run (a SubmitRun, or a schedule's tick); returns its id and
    /// its events.
    pub fn start_run(&self, exp: Experiment, source_name: String, who: &str) -> (String, mpsc::Receiver<v1::RunEvent>) {
        self.start_run_with(exp, source_name, who, engine::run_body)
    }

    /// [`Self::start_run`] with the run's body given (tests make it panic
    /// to prove a failed run still ends, restores and frees its slot).
    pub fn start_run_with(
        &self,
        exp: Experiment,
        source_name: String,
        who: &str,
        body: engine::Body,
    ) -> (String, mpsc::Receiver<v1::RunEvent>) {
        let run_id = engine::new_run_id();
        let run_id_out = run_id.clone();
        let running = self.runs.in_flight();
        let cancel = self.shutdown.child_token();
        let reason: engine::AbortReason = Arc::new(Mutex::new(None));
        self.runs.start(&run_id, &exp.name, cancel.clone(), reason.clone());
        info!(run_id = %run_id, experiment = %exp.name, caller = %who, "run submitted");
        self.audit(
            who,
            "submit",
            &run_id,
            &format!("experiment {} from {source_name}", exp.name),
        );
        let notifier = self.notifier.clone();
        if let Some(n) = &notifier {
            n.notify(
                crate::notify::EventKind::RunStart,
                serde_json::json!({ "run_id": run_id, "experiment": exp.name, "source": source_name, "caller": who }),
                format!("faultline: run {run_id} of experiment {} started (by {who})", exp.name),
            );
        }
        let (tx, rx) = mpsc::channel(1024);
        let (events, writer) = self.events.open(&run_id, &exp.name, &source_name, tx);
        self.tracker.spawn(writer);
        let registry = self.registry.clone();
        let runs = self.runs.clone();
        let policy = self.policy.clone();
        let metrics = self.metrics.clone();
        self.tracker.spawn(async move {
            let out = engine::execute_with(
                RunInput {
                    run_id: run_id.clone(),
                    experiment: exp,
                    source_name,
                    registry,
                    events: events.clone(),
                    cancel,
                    abort_reason: reason,
                    policy,
                    running,
                    metrics: metrics.clone(),
                },
                body,
            )
            .await;
            let report = Arc::new(out.report);
            metrics.inc("faultline_runs_total", &[("outcome", report.outcome.as_str())]);
            if let Some(n) = &notifier {
                let kind = if report.outcome == crate::outcome::Outcome::Aborted {
                    crate::notify::EventKind::RunAbort
                } else {
                    crate::notify::EventKind::RunFinish
                };
                n.notify(
                    kind,
                    serde_json::json!({
                        "run_id": report.run_id, "experiment": report.experiment.name,
                        "outcome": report.outcome.as_str(), "exit_code": report.exit_code, "reason": report.reason,
                    }),
                    format!(
                        "faultline: run {} of experiment {} {}: {}",
                        report.run_id,
                        report.experiment.name,
                        report.outcome.as_str(),
                        report.reason
                    ),
                );
            }
            runs.finish(&run_id, report.clone());
            events.finish(report);
        });
        (run_id_out, rx)
    }

    fn audit(&self, caller: &str, action: &str, target: &str, detail: &str) {
        actions::audit(&self.store, caller, action, target, detail)
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    type SubmitRunStream = EventStream;

    async fn submit_run(&self, req: Request<v1::SubmitRunRequest>) -> Result<Response<EventStream>, Status> {
        if self.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown.into());
        }
        let who = self.security.control_operator(&req)?;
        if let Some(why) = self.runs.stopped() {
            self.audit(&who, "submit", "-", &format!("refused: {why}"));
            return Err(Error::Stopped(why).into());
        }
        let (exp, source_name) = parse_source(req.into_inner().source).await?;
        if let Err(refusal) = self.approve(&exp, &source_name, &who).await {
            return Err(Status::failed_precondition(refusal.to_string()));
        }
        let (_, rx) = self.start_run(exp, source_name, &who);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
    }

    async fn plan(&self, req: Request<v1::PlanRequest>) -> Result<Response<v1::PlanResponse>, Status> {
        self.security.control_caller(&req)?;
        let (exp, _) = parse_source(req.into_inner().source).await?;
        let exp = crate::group_agents::resolve_off_runtime(&exp, &self.registry)
            .await
            .map_err(|e| Error::Plan(planner::Error::from(e)))?;
        let plan = planner::plan(
            &exp,
            &self.registry.agents(),
            &planner::Context {
                policy: &self.policy,
                now: time::OffsetDateTime::now_utc(),
                running: self.runs.in_flight(),
            },
        )
        .map_err(Error::from)?;
        let answers =
            crate::preview::previews_with_containers(&plan, &self.registry, crate::preview::PREVIEW_TIMEOUT).await;
        let mut limits = plan.limits.clone();
        if crate::preview::counts_containers(&plan, &exp.blast_radius) {
            match crate::preview::count_containers(&plan, &exp.blast_radius, &answers) {
                Ok(lines) => limits.extend(lines),
                Err(reason) => limits.push(format!("a run would be refused: {reason}")),
            }
        }
        let mut previews = answers
            .into_iter()
            .map(|f| f.into_iter().map(|p| p.line).collect::<Vec<_>>());
        Ok(Response::new(v1::PlanResponse {
            experiment: exp.name.clone(),
            faults: plan
                .faults
                .iter()
                .map(|pf| v1::PlannedFault {
                    previews: previews.next().unwrap_or_default(),
                    fault_id: pf.fault.name.clone(),
                    kind: pf.fault.kind.name().into(),
                    agent_ids: pf.targets.iter().map(|t| t.agent_id.clone()).collect(),
                    matching_agents: pf.matching as u32,
                    summary: {
                        let mut s = pf.fault.kind.summary();
                        if let Some(c) = &pf.fault.targets.containers {
                            s += &format!(" in {}", c.describe());
                        }
                        for (t, peers) in pf.targets.iter().zip(&pf.peers) {
                            if !peers.is_empty() {
                                s += &format!("; on {}: peers {}", t.agent_id, peers.join(", "));
                            }
                        }
                        s
                    },
                })
                .collect(),
            groups: planned_groups(&exp, &plan),
            limits,
        }))
    }

    async fn abort(&self, req: Request<v1::AbortRequest>) -> Result<Response<v1::AbortResponse>, Status> {
        let who = self.security.control_operator(&req)?;
        let r = req.into_inner();
        let found = actions::abort_run(&self.runs, &self.store, &who, &r.run_id, &r.reason);
        Ok(Response::new(v1::AbortResponse { found }))
    }

    async fn stop(&self, req: Request<v1::StopRequest>) -> Result<Response<v1::StopResponse>, Status> {
        let who = self.security.control_operator(&req)?;
        let r = req.into_inner();
        Ok(Response::new(actions::emergency_stop(
            &self.runs,
            &self.registry,
            &self.store,
            &who,
            &r.reason,
        )))
    }

    async fn resume(&self, req: Request<v1::ResumeRequest>) -> Result<Response<v1::ResumeResponse>, Status> {
        let who = self.security.control_operator(&req)?;
        let was_stopped = actions::resume(&self.runs, &self.store, &who);
        Ok(Response::new(v1::ResumeResponse { was_stopped }))
    }

    async fn add_schedule(
        &self,
        req: Request<v1::AddScheduleRequest>,
    ) -> Result<Response<v1::AddScheduleResponse>, Status> {
        let who = self.security.control_operator(&req)?;
        let mut r = req.into_inner();
        // Check everything now, not at 3 a.m.
        let (kind, what, source_name, yaml, vars) = match (r.source.take(), r.gameday.take()) {
            (Some(_), Some(_)) => return Err(Error::SourceAndGameDay.into()),
            (None, Some(g)) => {
                let suite = crate::gameday::Suite::from_wire(g).map_err(Error::from)?;
                crate::gameday::runner::check(&suite).await?;
                (
                    crate::store::ScheduleKind::GameDay,
                    format!("game day {}", suite.name),
                    suite.source.clone(),
                    suite.to_json(),
                    Default::default(),
                )
            }
            (src, None) => {
                let wire = src.clone().ok_or(Error::NoSource)?;
                let (exp, source_name) = parse_source(src).await?;
                (
                    crate::store::ScheduleKind::Experiment,
                    format!("experiment {}", exp.name),
                    source_name,
                    wire.yaml,
                    wire.vars.into_iter().collect(),
                )
            }
        };
        let window = (!r.window.is_empty()).then_some(r.window.as_str());
        // Off the runtime: proving that a pattern never fires searches years.
        let timing = {
            let (cron, tz, window) = (r.cron.clone(), r.tz.clone(), window.map(str::to_string));
            tokio::task::spawn_blocking(move || crate::schedule::Timing::new(&cron, &tz, window.as_deref()))
                .await
                .map_err(|_| Status::internal("the schedule check failed"))?
                .map_err(|e| Status::invalid_argument(e.to_string()))?
        };
        let now = faultline_proto::now_unix_ms();
        let id = format!("s{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let row = crate::store::ScheduleRow {
            id: id.clone(),
            kind,
            source: source_name.clone(),
            yaml,
            vars,
            cron: r.cron.clone(),
            tz: r.tz.clone(),
            window: window.map(str::to_string),
            created_unix_ms: now,
            last_tick_unix_ms: now,
            last_run_id: None,
        };
        self.store
            .add_schedule(&row)
            .map_err(|e| Status::internal(e.to_string()))?;
        self.audit(
            &who,
            "schedule-add",
            &id,
            &format!(
                "{what} from {source_name}, cron {:?} tz {:?} window {:?}",
                r.cron, r.tz, r.window
            ),
        );
        self.schedules_changed.notify_one();
        Ok(Response::new(v1::AddScheduleResponse {
            schedule_id: id,
            next_unix_ms: timing.next_after(now).unwrap_or(0),
        }))
    }

    async fn list_schedules(
        &self,
        req: Request<v1::ListSchedulesRequest>,
    ) -> Result<Response<v1::ListSchedulesResponse>, Status> {
        self.security.control_caller(&req)?;
        let now = faultline_proto::now_unix_ms();
        let rows = self.store.schedules().map_err(|e| Status::internal(e.to_string()))?;
        let mut schedules = Vec::with_capacity(rows.len());
        for s in rows {
            let next = crate::schedule::Timing::new(&s.cron, &s.tz, s.window.as_deref())
                .ok()
                .and_then(|t| t.next_after(now))
                .unwrap_or(0);
            let experiment = match s.kind {
                crate::store::ScheduleKind::Experiment => {
                    parse_off_runtime(s.source.clone(), s.yaml.clone(), s.vars.clone())
                        .await
                        .map(|e| e.name)
                        .unwrap_or_else(|e| format!("(no longer parses: {e})"))
                }
                crate::store::ScheduleKind::GameDay => crate::gameday::Suite::from_json(&s.yaml)
                    .map(|g| g.name)
                    .unwrap_or_else(|e| format!("({e})")),
            };
            let recent_ticks = self
                .store
                .schedule_ticks(&s.id, 10)
                .unwrap_or_default()
                .into_iter()
                .map(|t| {
                    let run = t.run_id.map(|r| format!(" {r}")).unwrap_or_default();
                    format!("{} {}{run}", t.due_unix_ms, t.outcome)
                })
                .collect();
            schedules.push(v1::ScheduleInfo {
                kind: s.kind.as_str().into(),
                schedule_id: s.id,
                experiment,
                source: s.source,
                cron: s.cron,
                tz: s.tz,
                window: s.window.unwrap_or_default(),
                next_unix_ms: next,
                last_run_id: s.last_run_id.unwrap_or_default(),
                recent_ticks,
            });
        }
        Ok(Response::new(v1::ListSchedulesResponse { schedules }))
    }

    async fn remove_schedule(
        &self,
        req: Request<v1::RemoveScheduleRequest>,
    ) -> Result<Response<v1::RemoveScheduleResponse>, Status> {
        let who = self.security.control_operator(&req)?;
        let id = req.into_inner().schedule_id;
        let found = self
            .store
            .remove_schedule(&id)
            .map_err(|e| Status::internal(e.to_string()))?;
        self.audit(
            &who,
            "schedule-rm",
            &id,
            if found { "removed" } else { "no such schedule" },
        );
        self.schedules_changed.notify_one();
        Ok(Response::new(v1::RemoveScheduleResponse { found }))
    }

    async fn list_agents(
        &self,
        req: Request<v1::ListAgentsRequest>,
    ) -> Result<Response<v1::ListAgentsResponse>, Status> {
        self.security.control_caller(&req)?;
        let r = req.into_inner();
        let size = match r.page_size {
            0 => AGENTS_PAGE_DEFAULT,
            n => (n as usize).min(AGENTS_PAGE_MAX),
        };
        // The token is the last agent id of the previous page: stable while
        // agents come and go, and checked like any agent id.
        let after = (!r.page_token.is_empty()).then_some(r.page_token.as_str());
        if let Some(t) = after {
            faultline_proto::ids::validate_agent_id(t)
                .map_err(|e| Status::invalid_argument(format!("ListAgentsRequest.page_token: {e}")))?;
        }
        let (page, mut more) = self.registry.agents_after(after, size);
        let mut agents = Vec::with_capacity(page.len());
        let mut bytes = 0;
        for a in &page {
            let w = a.to_wire();
            let len = prost::Message::encoded_len(&w);
            // Always at least one agent, so paging makes progress.
            if !agents.is_empty() && bytes + len > AGENTS_PAGE_BYTES {
                more = true;
                break;
            }
            bytes += len;
            agents.push(w);
        }
        let next_page_token = match agents.last() {
            Some(last) if more => last.agent_id.clone(),
            _ => String::new(),
        };
        Ok(Response::new(v1::ListAgentsResponse {
            agents,
            next_page_token,
        }))
    }

    async fn list_runs(&self, req: Request<v1::ListRunsRequest>) -> Result<Response<v1::ListRunsResponse>, Status> {
        self.security.control_caller(&req)?;
        let r = req.into_inner();
        if !r.outcome.is_empty() && !RUN_STATUSES.contains(&r.outcome.as_str()) {
            return Err(Error::Status(r.outcome).into());
        }
        let limit = if r.limit == 0 { 20 } else { r.limit as usize };
        let status = (!r.outcome.is_empty()).then_some(r.outcome.as_str());
        let rows = self
            .store
            .list(limit, status)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(v1::ListRunsResponse {
            runs: rows.into_iter().map(Into::into).collect(),
        }))
    }

    type FollowStream = EventStream;

    async fn follow(&self, req: Request<v1::FollowRequest>) -> Result<Response<EventStream>, Status> {
        self.security.control_caller(&req)?;
        let r = req.into_inner();
        faultline_proto::ids::validate_run_id(&r.run_id).map_err(Error::from)?;
        let (tx, rx) = mpsc::channel(64);
        let task = crate::follow::follow(self.store.clone(), self.events.followers(), &r.run_id, r.from_event, tx)
            .map_err(Error::from)?;
        // Not on the tracker: shutdown waits for runs, not for readers; a
        // live follow ends with its run anyway.
        tokio::spawn(task);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type RunGameDayStream = gamedays::GameDayStream;

    async fn run_game_day(
        &self,
        req: Request<v1::RunGameDayRequest>,
    ) -> Result<Response<Self::RunGameDayStream>, Status> {
        gamedays::run(self, req).await
    }

    async fn list_game_days(
        &self,
        req: Request<v1::ListGameDaysRequest>,
    ) -> Result<Response<v1::ListGameDaysResponse>, Status> {
        gamedays::list(self, req).await
    }

    async fn list_audit(&self, req: Request<v1::ListAuditRequest>) -> Result<Response<v1::ListAuditResponse>, Status> {
        self.security.control_caller(&req)?;
        let limit = match req.into_inner().limit {
            0 => 50,
            n => n as usize,
        };
        let rows = self
            .store
            .audit_list(limit)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(v1::ListAuditResponse {
            entries: rows.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_report(&self, req: Request<v1::GetReportRequest>) -> Result<Response<v1::GetReportResponse>, Status> {
        self.security.control_caller(&req)?;
        let r = req.into_inner();
        let text = if let Some(rep) = self.runs.report(&r.run_id) {
            report::render(&rep, &r.format)
        } else if self.runs.is_known(&r.run_id) {
            return Err(Error::RunInFlight(r.run_id).into());
        } else {
            match self
                .store
                .load(&r.run_id)
                .map_err(|e| Status::internal(e.to_string()))?
            {
                Some(Stored::Finished(rep)) => report::render(&rep, &r.format),
                Some(Stored::Interrupted { run, events }) => crate::store::render_interrupted(&run, &events, &r.format),
                Some(Stored::Running(_)) => return Err(Error::RunInFlight(r.run_id).into()),
                None => return Err(Error::UnknownRun(r.run_id).into()),
            }
        };
        let text = text.ok_or(Error::Format(r.format))?;
        Ok(Response::new(v1::GetReportResponse { report: text }))
    }
}

/// The hypothesis' groups as `plan` shows them: each with its definition,
/// the agents it resolved to and the probe instances that measure it.
fn planned_groups(exp: &Experiment, plan: &planner::Plan) -> Vec<v1::PlannedGroup> {
    exp.groups
        .iter()
        .map(|g| {
            let resolved = plan.groups.iter().find(|r| r.group == g.name);
            let mut definition: Vec<String> = Vec::new();
            if let Some(pods) = &g.pods {
                definition.push(format!("pods {}", pods.describe()));
            }
            if let Some(sel) = &g.agents {
                definition.push(format!("agents {}", crate::group_agents::fmt_selector(sel)));
            }
            definition.extend(g.values.iter().map(|(k, v)| format!("{k}={v}")));
            v1::PlannedGroup {
                name: g.name.clone(),
                definition: definition.join(", "),
                agents: resolved
                    .into_iter()
                    .flat_map(|r| &r.members)
                    .map(|m| v1::GroupAgent {
                        agent_id: m.agent.clone(),
                        address: m.address.clone(),
                        pod: m.pod.clone().unwrap_or_default(),
                    })
                    .collect(),
                probes: exp
                    .hypothesis
                    .probes
                    .iter()
                    .filter(|p| p.group.as_ref().is_some_and(|pg| pg.group == g.name))
                    .map(|p| format!("{}: {} {}", p.name, p.kind.name(), p.kind.target()))
                    .collect(),
            }
        })
        .collect()
}
