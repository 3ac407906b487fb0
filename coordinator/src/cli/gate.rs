//! `faultline gate FILE`: a release gate for CI. Runs the experiment like
//! `run` (local mode without `--coordinator`) and prints only the verdict:
//! the canary score and each judged metric's classification, effect size,
//! interval and p-value. The exit code is the run's: 0 when the gate
//! passes (every tolerance held and the canary score passed), 1 when it
//! fails, 2–5 as for `run` (invalid, aborted, not steady, error).

use super::common::{eprint_err, ExperimentArgs};
use super::run::{execute, RunOpts};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub experiment: ExperimentArgs,
    /// Output on stdout: `text` (score and one line per metric) or `json`
    /// (the whole report).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
    /// Also write the report as JUnit XML to this file: one test case per
    /// judged metric and one for the score, besides the tolerances.
    #[arg(long, value_name = "PATH")]
    pub junit: Option<String>,
    /// Also write the report as RUN_ID.json and RUN_ID.md into this directory.
    #[arg(long)]
    pub report_dir: Option<String>,
    /// Also write the report as one self-contained HTML file.
    #[arg(long, value_name = "PATH")]
    pub html: Option<String>,
    /// Show the run's progress on stderr (by default only errors).
    #[arg(long)]
    pub progress: bool,
}

pub async fn main(a: Args) -> i32 {
    let (source, agent) = match a.experiment.load() {
        Ok(x) => x,
        Err(code) => return code,
    };
    match source.parse() {
        Ok(e) if e.judge.is_none() => eprint_err(format!(
            "{}: no judge: section, so the gate is the hypothesis' tolerances alone (add judge: and groups to compare a canary with its control)",
            source.name
        )),
        _ => {}
    }
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
        format: if a.format == "json" {
            "json".into()
        } else {
            "gate".into()
        },
        quiet: !a.progress,
        junit: a.junit,
        html: a.html,
        store,
        ui: None,
    })
    .await
}
