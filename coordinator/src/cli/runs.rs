//! `faultline runs`: run history, newest first — from a coordinator
//! (`--coordinator`), or straight from a history database (local mode's, by
//! default).

use faultline_proto::v1;

use super::common::{self, eprint_err};
use crate::control::RUN_STATUSES as STATUSES;
use crate::store::{self, Store};

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub action: Option<Action>,
    /// Most runs to show.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Only runs with this status: passed, failed, invalid, aborted,
    /// not_steady, error, running or interrupted.
    #[arg(long)]
    pub outcome: Option<String>,
    /// Ask this coordinator; without it, read the history database.
    #[arg(long)]
    pub coordinator: Option<String>,
    /// History database to read (default: local mode's; $FAULTLINE_DB overrides).
    #[arg(long, conflicts_with = "coordinator")]
    pub db: Option<String>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What `faultline runs` can do besides listing.
#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Delete finished runs older than a duration from a history database.
    Prune(super::prune::Args),
}

/// Opens the database named by `--db` or the default one, for reading.
pub fn open_db(db: &Option<String>) -> Result<Store, i32> {
    let path = db
        .clone()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(store::default_path);
    if !path.exists() {
        eprint_err(format!(
            "no run history at {}: nothing has run in local mode here yet (or pass --coordinator URL / --db PATH)",
            path.display()
        ));
        return Err(5);
    }
    Store::open(&path).map_err(|e| {
        eprint_err(e);
        5
    })
}

pub async fn main(a: Args) -> i32 {
    if let Some(Action::Prune(p)) = a.action {
        return super::prune::main(p);
    }
    if let Some(o) = &a.outcome {
        if !STATUSES.contains(&o.as_str()) {
            eprint_err(format!("--outcome {o:?}: use one of {}", STATUSES.join(", ")));
            return 2;
        }
    }
    let runs: Vec<v1::RunSummary> = match &a.coordinator {
        Some(url) => {
            let mut c = match common::control_or_exit(url).await {
                Ok(c) => c,
                Err(code) => return code,
            };
            match c
                .list_runs(v1::ListRunsRequest {
                    limit: a.limit,
                    outcome: a.outcome.clone().unwrap_or_default(),
                })
                .await
            {
                Ok(r) => r.into_inner().runs,
                Err(s) => {
                    eprint_err(s.message());
                    return common::status_exit(&s);
                }
            }
        }
        None => {
            let db = match open_db(&a.db) {
                Ok(db) => db,
                Err(code) => return code,
            };
            match db.list(a.limit as usize, a.outcome.as_deref()) {
                Ok(rows) => rows.into_iter().map(Into::into).collect(),
                Err(e) => {
                    eprint_err(e);
                    return 5;
                }
            }
        }
    };
    if a.json {
        for r in &runs {
            println!(
                "{}",
                serde_json::json!({
                    "run_id": r.run_id, "experiment": r.experiment, "status": r.status,
                    "started_at_unix_ms": r.started_at_unix_ms, "finished_at_unix_ms": r.finished_at_unix_ms,
                })
            );
        }
        return 0;
    }
    if runs.is_empty() {
        println!("no runs");
        return 0;
    }
    println!(
        "{:<28} {:<12} {:<26} {:>9}  experiment",
        "run", "status", "started", "duration"
    );
    for r in runs {
        let dur = if r.finished_at_unix_ms >= r.started_at_unix_ms && r.finished_at_unix_ms > 0 {
            format!("{:.1}s", (r.finished_at_unix_ms - r.started_at_unix_ms) as f64 / 1000.0)
        } else {
            "-".into()
        };
        println!(
            "{:<28} {:<12} {:<26} {:>9}  {}",
            r.run_id,
            r.status,
            common::rfc3339_ms(r.started_at_unix_ms),
            dur,
            r.experiment
        );
    }
    0
}
