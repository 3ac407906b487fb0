//! `faultline report RUN`: a finished (or interrupted) run's report in
//! json, md, junit or html — from a coordinator, or from a history database.

use faultline_proto::v1;

use super::common::{self, eprint_err};
use crate::store::Stored;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run id, as `faultline runs` lists it.
    pub run_id: String,
    #[arg(long, default_value = "md", value_parser = ["json", "md", "junit", "html"])]
    pub format: String,
    /// Write it to this file instead of stdout.
    #[arg(long, short)]
    pub output: Option<String>,
    /// Ask this coordinator; without it, read the history database.
    #[arg(long)]
    pub coordinator: Option<String>,
    /// History database to read (default: local mode's; $FAULTLINE_DB overrides).
    #[arg(long, conflicts_with = "coordinator")]
    pub db: Option<String>,
}

pub async fn main(a: Args) -> i32 {
    let text = match &a.coordinator {
        Some(url) => {
            let mut c = match common::control_or_exit(url).await {
                Ok(c) => c,
                Err(code) => return code,
            };
            match c
                .get_report(v1::GetReportRequest {
                    run_id: a.run_id.clone(),
                    format: a.format.clone(),
                })
                .await
            {
                Ok(r) => r.into_inner().report,
                Err(s) => {
                    eprint_err(s.message());
                    return common::status_exit(&s);
                }
            }
        }
        None => {
            let db = match super::runs::open_db(&a.db) {
                Ok(db) => db,
                Err(code) => return code,
            };
            let found = match db.load(&a.run_id) {
                Ok(f) => f,
                Err(e) => {
                    eprint_err(e);
                    return 5;
                }
            };
            let text = match found {
                Some(Stored::Finished(r)) => crate::report::render(&r, &a.format),
                Some(Stored::Interrupted { run, events }) => crate::store::render_interrupted(&run, &events, &a.format),
                Some(Stored::Running(_)) => {
                    eprint_err(format!(
                        "run {} is still in flight (or its coordinator died and has not restarted yet)",
                        a.run_id
                    ));
                    return 5;
                }
                None => {
                    eprint_err(format!("no run {} in {}", a.run_id, db.path()));
                    return 5;
                }
            };
            text.unwrap_or_default()
        }
    };
    match &a.output {
        Some(path) => match std::fs::write(path, text) {
            Ok(()) => {
                eprintln!("faultline: {} report written to {path}", a.format);
                0
            }
            Err(e) => {
                eprint_err(format!("cannot write {path}: {e}"));
                5
            }
        },
        None => {
            print!("{text}");
            0
        }
    }
}
