//! `faultline runs prune --older-than DUR`: deletes finished runs that
//! started longer ago than DUR from a history database (local mode's by
//! default), with their events and reports. Running runs and the audit log
//! are kept. A coordinator does the same on its own with
//! `faultline serve --retention DUR`.

use std::time::Duration;

use super::common::eprint_err;
use super::runs::open_db;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Delete runs that started longer ago than this, e.g. `30d`, `12h`.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub older_than: Duration,
    /// History database (default: local mode's; $FAULTLINE_DB overrides).
    #[arg(long)]
    pub db: Option<String>,
}

pub fn main(a: Args) -> i32 {
    let db = match open_db(&a.db) {
        Ok(db) => db,
        Err(code) => return code,
    };
    let cutoff = faultline_proto::now_unix_ms().saturating_sub(a.older_than.as_millis() as u64);
    match db.prune(cutoff) {
        Ok(p) => {
            println!(
                "pruned {} run(s) older than {} ({} event(s), {} schedule tick(s), {} game-day run(s)) from {}",
                p.runs,
                humantime::format_duration(a.older_than),
                p.events,
                p.ticks,
                p.gamedays,
                db.path()
            );
            0
        }
        Err(e) => {
            eprint_err(e);
            5
        }
    }
}
