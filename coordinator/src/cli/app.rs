//! Flag definitions and dispatch.

use clap::{Parser, Subcommand};

use super::*;

/// faultline: hypothesis-driven chaos experiments with a baseline, a blast
/// radius, and a guaranteed restore.
#[derive(Parser, Debug)]
#[command(name = "faultline", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run an experiment and print its report (local mode without --coordinator).
    Run(run::Args),
    /// Release gate for CI: run an experiment with a canary judge and print
    /// the score and each metric's classification; exit 0 only if it passes.
    Gate(gate::Args),
    /// Check an experiment file without running it.
    Validate(validate::Args),
    /// Show which agents each fault would hit and the blast-radius headroom.
    Plan(plan::Args),
    /// Run the coordinator (gRPC: AgentLink for agents, Control for clients).
    Serve(serve::Args),
    /// List the agents connected to a coordinator.
    Agents(agents::Args),
    /// Abort a run: restore its faults now.
    Abort(abort::Args),
    /// Follow a run on a coordinator (started by anyone): its events so far,
    /// then live until it ends; prints its report.
    Follow(follow::Args),
    /// Run history, newest first.
    Runs(runs::Args),
    /// A run's report: json, md, junit or html.
    Report(report::Args),
    /// Who submitted, aborted, stopped or resumed what.
    Audit(audit::Args),
    /// Run a game day: several experiments in order, one summary with a resilience score.
    Gameday(gameday::Args),
    /// Game-day runs with their resilience scores; --name NAME: one game
    /// day's score history and trend.
    Gamedays(gamedays::Args),
    /// Run experiments on a cron schedule (on a coordinator).
    Schedule(schedule::Args),
    /// Make a CA and certificates for mTLS between coordinator and agents.
    Certs(certs::Args),
    /// Emergency stop: abort every run, restore every fault, refuse new runs.
    Stop(stop::Args),
    /// End an emergency stop.
    Resume(resume::Args),
    /// Run the kill demo: a supervised HTTP service, killed and measured.
    Demo(demo::Args),
    /// The demo's HTTP service (started by `faultline demo`).
    #[command(hide = true)]
    DemoService(demo_service::Args),
}

impl Cli {
    /// The default log level (`FAULTLINE_LOG` overrides it): `serve` logs
    /// at info; other commands print their own progress and log warnings,
    /// or only errors with `--quiet`.
    pub fn log_level(&self) -> &'static str {
        match &self.command {
            Command::Serve(_) => "info",
            Command::Run(a) if a.quiet => "error",
            Command::Gate(a) if !a.progress => "error",
            Command::Gameday(a) if a.quiet => "error",
            Command::Follow(a) if a.quiet => "error",
            _ => "warn",
        }
    }
}

/// Runs the CLI and returns the process exit code.
pub async fn main_with(cli: Cli) -> i32 {
    match cli.command {
        Command::Run(a) => run::main(a).await,
        Command::Gate(a) => gate::main(a).await,
        Command::Validate(a) => validate::main(a),
        Command::Plan(a) => plan::main(a).await,
        Command::Serve(a) => serve::main(a).await,
        Command::Agents(a) => agents::main(a).await,
        Command::Abort(a) => abort::main(a).await,
        Command::Follow(a) => follow::main(a).await,
        Command::Runs(a) => runs::main(a).await,
        Command::Report(a) => report::main(a).await,
        Command::Audit(a) => audit::main(a).await,
        Command::Certs(a) => certs::main(a),
        Command::Schedule(a) => schedule::main(a).await,
        Command::Gameday(a) => gameday::main(a).await,
        Command::Gamedays(a) => gamedays::main(a).await,
        Command::Stop(a) => stop::main(a).await,
        Command::Resume(a) => resume::main(a).await,
        Command::Demo(a) => demo::main(a).await,
        Command::DemoService(a) => demo_service::main(a).await,
    }
}
