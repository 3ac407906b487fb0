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

/// History rows from the coordinator at `coordinator` (through `remote`,
/// a Control call) or, without one, from the history database `db`
/// (through `local`); on error prints it and returns the exit code.
pub async fn rows<T, Fut>(
    coordinator: &Option<String>,
    db: &Option<String>,
    remote: impl FnOnce(common::Client) -> Fut,
    local: impl FnOnce(&Store) -> store::Result<Vec<T>>,
) -> Result<Vec<T>, i32>
where
    Fut: std::future::Future<Output = Result<Vec<T>, tonic::Status>>,
{
    match coordinator {
        Some(url) => {
            let c = common::control_or_exit(url).await?;
            remote(c).await.map_err(|s| {
                eprint_err(s.message());
                common::status_exit(&s)
            })
        }
        None => local(&open_db(db)?).map_err(|e| {
            eprint_err(e);
            5
        }),
    }
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
    let (limit, outcome) = (a.limit, a.outcome.clone());
    let runs: Vec<v1::RunSummary> = match rows(
        &a.coordinator,
        &a.db,
        |mut c| async move {
            let r = c
                .list_runs(v1::ListRunsRequest {
                    limit,
                    outcome: outcome.unwrap_or_default(),
                })
                .await?;
            Ok(r.into_inner().runs)
        },
        |db| {
            Ok(db
                .list(a.limit as usize, a.outcome.as_deref())?
                .into_iter()
                .map(Into::into)
                .collect())
        },
    )
    .await
    {
        Ok(r) => r,
        Err(code) => return code,
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
