//! `faultline-coordinator` plans and runs hypothesis-driven chaos
//! experiments. It serves `AgentLink` (agents dial in and receive faults) and
//! `Control` (clients submit runs and read reports), measures a baseline
//! with probes, injects faults within a blast radius, always restores them,
//! and reports each run against its baseline. It also holds the `faultline`
//! CLI, including local mode: an in-process coordinator and agent over
//! loopback gRPC.
//!
//! Layout:
//! - [`experiment`]: experiment files: the YAML parser (variables, durations,
//!   tolerances, targets, peers, limits) and the domain types; one module per
//!   fault kind in [`experiment::faults`] (YAML, validation, domain type, wire
//!   spec, summary, how its observation reads).
//! - [`planner`]: target selection and blast-radius checks.
//! - [`group_agents`]: the agents of groups that select agents by label, resolved against the registry.
//! - [`group_pods`]: the pods of groups of pods, from the agents' answers to pod queries.
//! - [`preview`]: dry-run Injects, so `plan` shows what each agent would do.
//! - [`policy`]: the coordinator's policy file (fleet-wide limits).
//! - [`engine`]: the run engine, one concept per file (phases, placements, leases, guardrails, judging, report assembly).
//! - [`probes`]: one module per probe kind (http, tcp, command: YAML,
//!   validation, check) and the sampler.
//! - [`stats`]: sample statistics (success rate, percentiles).
//! - [`blast_radius`]: the plan's blast-radius and policy limits, checked before anything is injected.
//! - [`canary`]: the canary judge (canary vs control under a fault, scored 0–100).
//! - [`verdict`]: tolerance checks.
//! - [`report`]: the report model (JSON) and its Markdown, JUnit and HTML renderings.
//! - [`registry`]: connected agents and status routing.
//! - [`runs`]: runs in flight and finished.
//! - [`store`]: the SQLite run history (runs, events, reports, audit), with migrations.
//! - [`link`]: the `AgentLink` service.
//! - [`control`]: the `Control` service.
//! - [`console`]: the web console (`serve --ui-listen`): pages, login, SSE.
//! - [`events`]: the one path of a run's events (store, then followers, then the client).
//! - [`follow`]: following a run's stored and live events (`Control.Follow`).
//! - [`notify`]: webhooks on run and game-day events (signed, retried, never
//!   blocking a run) and the pre-flight approval webhook.
//! - [`gate`]: the release-gate HTTP endpoint (Flagger's webhook contract).
//! - [`gameday`]: game days: suites run and scored on the coordinator, at a
//!   schedule's tick or from `Control.RunGameDay`.
//! - [`trend`]: figures over time and their regressions (trailing median, margins).
//! - [`schedule`]: cron schedules (time zones, windows, concurrency forbid, missed ticks).
//! - [`security`]: mTLS and bearer tokens: who may call which service.
//! - [`certs`]: the CA and role-marked certificates `faultline certs` makes.
//! - [`server`]: serving both services with graceful shutdown.
//! - [`outcome`]: phases, outcomes and exit codes.
//! - [`timestamp`]: the RFC 3339 timestamps of reports, tables and stored runs.
//! - [`local`]: local mode (in-process coordinator + agent).
//! - [`cli`]: the `faultline` command line, one subcommand per file.

pub mod blast_radius;
pub mod canary;
pub mod certs;
pub mod cli;
pub mod console;
pub mod control;
pub mod engine;
pub mod events;
pub mod experiment;
pub mod follow;
pub mod gameday;
pub mod gate;
pub mod group_agents;
pub mod group_pods;
pub mod link;
#[cfg(feature = "local")]
pub mod local;
pub mod notify;
pub mod outcome;
pub mod planner;
pub mod policy;
pub mod preview;
pub mod probes;
pub mod registry;
pub mod report;
pub mod runs;
pub mod schedule;
pub mod security;
pub mod server;
pub mod stats;
pub mod store;
pub mod timestamp;
pub mod trend;
pub mod verdict;

pub use outcome::{Outcome, Phase};
pub use server::Coordinator;
