//! `faultline run FILE`: run an experiment, show live progress on stderr and
//! print the report on stdout. Without `--coordinator` it runs in local mode.
//! Ctrl-C aborts the run (faults are restored) and still prints the report;
//! a second Ctrl-C exits at once and leaves the rest to the agents' leases.

use std::io::Write;

use faultline_proto::v1;

use super::common::{self, eprint_err, CoordinatorAddr, ExperimentArgs, LocalAgent, Source};
use crate::outcome::Outcome;
use crate::report::{self, Report};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub experiment: ExperimentArgs,
    /// Also write the report as RUN_ID.json and RUN_ID.md into this directory.
    #[arg(long)]
    pub report_dir: Option<String>,
    /// Report format on stdout.
    #[arg(long, default_value = "md", value_parser = ["md", "json"])]
    pub format: String,
    /// Also write the report as JUnit XML to this file (one test case per
    /// tolerance), for CI.
    #[arg(long, value_name = "PATH")]
    pub junit: Option<String>,
    /// Also write the report as one self-contained HTML file with timelines.
    #[arg(long, value_name = "PATH")]
    pub html: Option<String>,
    /// No progress and no warnings on stderr (errors only).
    #[arg(long, short)]
    pub quiet: bool,
    /// Local mode only: serve the web console on this loopback address
    /// (e.g. 127.0.0.1:7781, or port 0 for any) to watch the run live; it
    /// prints the page's URL and a one-time login token, and stops with the
    /// run.
    #[arg(long, value_name = "ADDR")]
    pub ui: Option<std::net::SocketAddr>,
}

/// What `run` (and `demo`) need, already read.
pub struct RunOpts {
    pub source: Source,
    pub coordinator: Option<String>,
    /// Local mode's in-process agent.
    pub agent: LocalAgent,
    /// Local mode's coordinator policy.
    pub policy: crate::policy::Policy,
    pub report_dir: Option<String>,
    pub format: String,
    pub quiet: bool,
    pub junit: Option<String>,
    pub html: Option<String>,
    /// Local mode's run store.
    pub store: super::common::StoreChoice,
    /// Local mode's console address (`--ui`).
    pub ui: Option<std::net::SocketAddr>,
}

pub async fn main(a: Args) -> i32 {
    let (source, agent) = match a.experiment.load() {
        Ok(x) => x,
        Err(code) => return code,
    };
    let policy = match a.experiment.policy() {
        Ok(p) => p,
        Err(code) => return code,
    };
    let store = a.experiment.store_choice();
    execute(RunOpts {
        source,
        coordinator: a.experiment.coordinator,
        agent,
        policy,
        report_dir: a.report_dir,
        format: a.format,
        quiet: a.quiet,
        junit: a.junit,
        html: a.html,
        store,
        ui: a.ui,
    })
    .await
}

/// Runs the experiment and returns the exit code.
pub async fn execute(o: RunOpts) -> i32 {
    // Validate before anything starts, so a bad file costs nothing.
    if let Err(e) = o.source.parse() {
        eprint_err(e);
        return Outcome::Invalid.exit_code();
    }
    if let Some(ui) = o.ui {
        if o.coordinator.is_some() {
            eprint_err(
                "--ui is for local mode; a coordinator serves its own console (`faultline serve --ui-listen ADDR`)",
            );
            return Outcome::Invalid.exit_code();
        }
        if !ui.ip().is_loopback() {
            eprint_err(format!(
                "--ui {ui}: the local console has no TLS; use a loopback address such as 127.0.0.1:{}",
                ui.port()
            ));
            return Outcome::Invalid.exit_code();
        }
    }
    let coordinator = match CoordinatorAddr::open(
        o.coordinator.clone(),
        o.agent.clone(),
        o.policy.clone(),
        o.store.clone(),
        o.quiet,
    )
    .await
    {
        Ok(t) => t,
        Err(code) => return code,
    };
    let console_stop = tokio_util::sync::CancellationToken::new();
    let mut ui_base = None;
    if let Some(addr) = o.ui {
        match super::local_console::start(&coordinator, addr, console_stop.clone()).await {
            Ok(base) => ui_base = Some(base),
            Err(e) => {
                eprint_err(e);
                coordinator.stop().await;
                return Outcome::Error.exit_code();
            }
        }
    }
    let code = submit_and_follow(&coordinator.url, &o, ui_base.as_deref()).await;
    console_stop.cancel();
    coordinator.stop().await;
    code
}

async fn submit_and_follow(url: &str, o: &RunOpts, ui_base: Option<&str>) -> i32 {
    let mut client = match common::control_or_exit(url).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut stream = match client
        .submit_run(v1::SubmitRunRequest {
            source: Some(o.source.to_wire()),
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => {
            eprint_err(s.message());
            return common::status_exit(&s);
        }
    };
    let mut progress = Progress::new(o.quiet);
    let mut run_id = String::new();
    let mut interrupts = 0;
    loop {
        let msg = tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                interrupts += 1;
                if interrupts > 1 || run_id.is_empty() {
                    eprint_err("second interrupt: exiting now; agents restore what is left when their leases expire");
                    return Outcome::Aborted.exit_code();
                }
                eprint_err(format!("interrupt: aborting run {run_id} and restoring its faults (Ctrl-C again to exit at once)"));
                let reason = format!("Ctrl-C on faultline run (pid {})", std::process::id());
                if let Err(s) = client.abort(v1::AbortRequest { run_id: run_id.clone(), reason }).await {
                    eprint_err(format!("abort failed: {}", s.message()));
                }
                continue;
            }
            m = stream.message() => m,
        };
        let ev = match msg {
            Ok(Some(ev)) => ev,
            Ok(None) => {
                eprint_err("the coordinator closed the run's event stream before the run finished");
                return Outcome::Error.exit_code();
            }
            Err(s) => {
                eprint_err(format!("lost the coordinator while following the run: {}", s.message()));
                return Outcome::Error.exit_code();
            }
        };
        if run_id.is_empty() {
            if let Some(base) = ui_base {
                eprintln!("faultline: watch it live at {base}/runs/{}", ev.run_id);
            }
        }
        run_id = ev.run_id.clone();
        if let Some(v1::run_event::Event::Finished(f)) = &ev.event {
            progress.show(&ev);
            return finish(f, o);
        }
        progress.show(&ev);
    }
}

fn finish(f: &v1::RunFinished, o: &RunOpts) -> i32 {
    write_report(
        f,
        &o.format,
        o.report_dir.as_deref(),
        o.junit.as_deref(),
        o.html.as_deref(),
    )
}

/// Prints a finished run's report on stdout in `format` (md, json, or gate:
/// the judge's summary) and
/// writes the files asked for; returns the run's exit code.
pub(crate) fn write_report(
    f: &v1::RunFinished,
    format: &str,
    report_dir: Option<&str>,
    junit: Option<&str>,
    html: Option<&str>,
) -> i32 {
    let report: Report = match serde_json::from_str(&f.report_json) {
        Ok(r) => r,
        Err(e) => {
            eprint_err(format!("the coordinator sent a report this CLI cannot read: {e}"));
            return Outcome::Error.exit_code();
        }
    };
    let md = report::render_markdown(&report);
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    if let Some(dir) = report_dir {
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            std::fs::write(format!("{dir}/{}.json", report.run_id), &json)?;
            std::fs::write(format!("{dir}/{}.md", report.run_id), &md)?;
            Ok(())
        };
        match write() {
            Ok(()) => eprintln!("faultline: report written to {dir}/{}.{{json,md}}", report.run_id),
            Err(e) => eprint_err(format!("cannot write the report into {dir}: {e}")),
        }
    }
    for (path, what, text) in [
        (junit, "JUnit XML", junit.map(|_| report::junit::render(&report))),
        (html, "HTML", html.map(|_| report::html::render(&report))),
    ] {
        if let (Some(path), Some(text)) = (path, text) {
            match std::fs::write(path, text) {
                Ok(()) => eprintln!("faultline: {what} report written to {path}"),
                Err(e) => eprint_err(format!("cannot write the {what} report to {path}: {e}")),
            }
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = match format {
        "json" => writeln!(out, "{json}"),
        "gate" => write!(out, "{}", report::judge::summary(&report)),
        _ => write!(out, "{md}"),
    };
    f.exit_code
}

/// Live progress lines on stderr.
pub(crate) struct Progress {
    quiet: bool,
    /// When the current phase started and how long it is planned to last
    /// (ms), to show elapsed/planned on probe lines.
    phase_start_ms: u64,
    phase_planned_ms: u64,
}

impl Progress {
    pub(crate) fn new(quiet: bool) -> Progress {
        Progress {
            quiet,
            phase_start_ms: 0,
            phase_planned_ms: 0,
        }
    }

    pub(crate) fn show(&mut self, ev: &v1::RunEvent) {
        use v1::run_event::Event;
        if let Some(Event::Phase(p)) = &ev.event {
            self.phase_start_ms = ev.elapsed_ms;
            self.phase_planned_ms = p.planned_ms;
        }
        if self.quiet {
            return;
        }
        let t = format!("[{:>6.1}s]", ev.elapsed_ms as f64 / 1000.0);
        let line = match &ev.event {
            Some(Event::Started(s)) => format!(
                "{t} run {} of {:?} started (about {:.0}s of probing planned)",
                ev.run_id,
                s.experiment,
                s.planned_ms as f64 / 1000.0
            ),
            Some(Event::Phase(p)) if p.planned_ms > 0 => {
                format!("{t} ▶ {} ({:.1}s)", p.phase, p.planned_ms as f64 / 1000.0)
            }
            Some(Event::Phase(p)) => format!("{t} ▶ {}", p.phase),
            Some(Event::Probe(p)) => {
                let pct = if p.samples == 0 {
                    0.0
                } else {
                    f64::from(p.successes) * 100.0 / f64::from(p.samples)
                };
                let last = if p.last_error.is_empty() {
                    format!("last {:.1}ms", p.last_latency_us as f64 / 1000.0)
                } else {
                    format!("last error: {}", p.last_error)
                };
                let window = if self.phase_planned_ms > 0 {
                    let into = ev
                        .elapsed_ms
                        .saturating_sub(self.phase_start_ms)
                        .min(self.phase_planned_ms);
                    format!(
                        " {:.1}s/{:.1}s",
                        into as f64 / 1000.0,
                        self.phase_planned_ms as f64 / 1000.0
                    )
                } else {
                    String::new()
                };
                format!(
                    "{t}   {}{window} {}: {}/{} ok ({pct:.0}%), {last}",
                    p.phase, p.probe, p.successes, p.samples
                )
            }
            Some(Event::Fault(f)) => match &f.status {
                Some(s) => format!(
                    "{t}   fault {} on {}: {} — {}",
                    s.fault_id,
                    f.agent_id,
                    faultline_proto::fault_state_name(s.state()),
                    s.detail
                ),
                None => return,
            },
            Some(Event::Log(l)) => format!("{t}   {}", l.message),
            Some(Event::Check(c)) => format!("{t}   {}", crate::engine::checks::line(c)),
            Some(Event::Finished(f)) => format!("{t} ■ {} (exit {}): {}", f.outcome, f.exit_code, f.reason),
            None => return,
        };
        eprintln!("{line}");
    }
}
