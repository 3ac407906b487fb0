//! `faultline stop`: emergency stop. Aborts every run in flight (restoring
//! its faults), has every agent restore everything it holds, and refuses new
//! runs until `faultline resume`.

use faultline_proto::v1;

use super::common::{self, eprint_err, DEFAULT_COORDINATOR};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Coordinator URL.
    #[arg(long, default_value = DEFAULT_COORDINATOR)]
    pub coordinator: String,
    /// Why; shown in the aborted runs' reports and in refusals.
    #[arg(long, default_value = "")]
    pub reason: String,
}

pub async fn main(a: Args) -> i32 {
    let mut c = match common::control_or_exit(&a.coordinator).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c.stop(v1::StopRequest { reason: a.reason }).await {
        Ok(r) => {
            let r = r.into_inner();
            println!(
                "stopped: {} run(s) aborting and restoring ({}); {} agent(s) told to restore everything; new runs are refused until `faultline resume`",
                r.aborted_runs.len(),
                if r.aborted_runs.is_empty() { "none in flight".to_string() } else { r.aborted_runs.join(", ") },
                r.agents_told
            );
            0
        }
        Err(s) => {
            eprint_err(s.message());
            common::status_exit(&s)
        }
    }
}
