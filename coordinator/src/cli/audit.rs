//! `faultline audit`: who changed what (submit, abort, stop, resume), newest
//! first — from a coordinator, or from a history database.

use faultline_proto::v1;

use super::common::{self, eprint_err};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Most entries to show.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Ask this coordinator; without it, read the history database.
    #[arg(long)]
    pub coordinator: Option<String>,
    /// History database to read (default: local mode's; $FAULTLINE_DB overrides).
    #[arg(long, conflicts_with = "coordinator")]
    pub db: Option<String>,
}

pub async fn main(a: Args) -> i32 {
    let entries: Vec<v1::AuditEntry> = match &a.coordinator {
        Some(url) => {
            let mut c = match common::control_or_exit(url).await {
                Ok(c) => c,
                Err(code) => return code,
            };
            match c.list_audit(v1::ListAuditRequest { limit: a.limit }).await {
                Ok(r) => r.into_inner().entries,
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
            match db.audit_list(a.limit as usize) {
                Ok(rows) => rows.into_iter().map(Into::into).collect(),
                Err(e) => {
                    eprint_err(e);
                    return 5;
                }
            }
        }
    };
    if entries.is_empty() {
        println!("no audit entries");
    }
    for e in entries {
        let at = common::rfc3339_ms(e.at_unix_ms);
        println!("{at}  {:<8} {:<28} by {}: {}", e.action, e.target, e.caller, e.detail);
    }
    0
}
