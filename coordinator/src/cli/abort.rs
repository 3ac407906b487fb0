//! `faultline abort RUN`: restore one run's faults now; the run ends `aborted`.

use faultline_proto::v1;

use super::common::{self, eprint_err, DEFAULT_COORDINATOR};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run id, as printed when the run started.
    pub run_id: String,
    /// Coordinator URL.
    #[arg(long, default_value = DEFAULT_COORDINATOR)]
    pub coordinator: String,
    /// Why; shown in the run's report.
    #[arg(long, default_value = "operator abort (faultline abort)")]
    pub reason: String,
}

pub async fn main(a: Args) -> i32 {
    let mut c = match common::control_or_exit(&a.coordinator).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c
        .abort(v1::AbortRequest {
            run_id: a.run_id.clone(),
            reason: a.reason,
        })
        .await
    {
        Ok(r) if r.get_ref().found => {
            println!("run {} is aborting; its faults are being restored", a.run_id);
            0
        }
        Ok(_) => {
            eprint_err(format!("no run {} in flight on {}", a.run_id, a.coordinator));
            5
        }
        Err(s) => {
            eprint_err(s.message());
            common::status_exit(&s)
        }
    }
}
