//! `faultline follow RUN`: follow a run someone else started (a schedule, a
//! CI job, a colleague) on a coordinator: its events so far, then live ones
//! until it ends, printed as `faultline run` prints them, with the report on
//! stdout and the run's exit code. A finished run replays and exits at once.
//! Ctrl-C stops following; the run goes on.

use faultline_proto::v1;

use super::common::{self, eprint_err, DEFAULT_COORDINATOR};
use super::run::{write_report, Progress};
use crate::outcome::Outcome;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run id, as `faultline runs --coordinator URL` lists it.
    pub run_id: String,
    /// Coordinator URL.
    #[arg(long, default_value = DEFAULT_COORDINATOR)]
    pub coordinator: String,
    /// Start at this stored event (0: from the start; probe progress is not
    /// counted), e.g. to resume after a broken connection.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub from_event: u64,
    /// Report format on stdout.
    #[arg(long, default_value = "md", value_parser = ["md", "json"])]
    pub format: String,
    /// Also write the report as RUN_ID.json and RUN_ID.md into this directory.
    #[arg(long)]
    pub report_dir: Option<String>,
    /// Also write the report as JUnit XML to this file.
    #[arg(long, value_name = "PATH")]
    pub junit: Option<String>,
    /// Also write the report as one self-contained HTML file.
    #[arg(long, value_name = "PATH")]
    pub html: Option<String>,
    /// No progress and no warnings on stderr (errors only).
    #[arg(long, short)]
    pub quiet: bool,
}

pub async fn main(a: Args) -> i32 {
    let mut client = match common::control_or_exit(&a.coordinator).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut stream = match client
        .follow(v1::FollowRequest {
            run_id: a.run_id.clone(),
            from_event: a.from_event,
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::NotFound => {
            eprint_err(format!(
                "{} (list runs with `faultline runs --coordinator {}`)",
                s.message(),
                a.coordinator
            ));
            return Outcome::Error.exit_code();
        }
        Err(s) => {
            eprint_err(s.message());
            return common::status_exit(&s);
        }
    };
    let mut progress = Progress::new(a.quiet);
    let mut stored = a.from_event;
    loop {
        let ev = match stream.message().await {
            Ok(Some(ev)) => ev,
            Ok(None) => {
                eprint_err(format!(
                    "run {} has no verdict to show (it was interrupted, or the coordinator stopped following it)",
                    a.run_id
                ));
                return Outcome::Error.exit_code();
            }
            Err(s) => {
                eprint_err(format!(
                    "lost the coordinator while following run {}: {}; follow again with --from-event {stored}",
                    a.run_id,
                    s.message()
                ));
                return Outcome::Error.exit_code();
            }
        };
        if !matches!(ev.event, Some(v1::run_event::Event::Probe(_))) {
            stored += 1;
        }
        progress.show(&ev);
        if let Some(v1::run_event::Event::Finished(f)) = &ev.event {
            if f.report_json.is_empty() {
                return f.exit_code;
            }
            return write_report(
                f,
                &a.format,
                a.report_dir.as_deref(),
                a.junit.as_deref(),
                a.html.as_deref(),
            );
        }
    }
}
