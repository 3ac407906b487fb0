//! `faultline resume`: end an emergency stop so runs may start again.

use faultline_proto::v1;

use super::common::{self, eprint_err, DEFAULT_COORDINATOR};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Coordinator URL.
    #[arg(long, default_value = DEFAULT_COORDINATOR)]
    pub coordinator: String,
}

pub async fn main(a: Args) -> i32 {
    let mut c = match common::control_or_exit(&a.coordinator).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c.resume(v1::ResumeRequest {}).await {
        Ok(r) if r.get_ref().was_stopped => {
            println!("resumed: runs may start again");
            0
        }
        Ok(_) => {
            println!("the coordinator was not stopped; nothing to resume");
            0
        }
        Err(s) => {
            eprint_err(s.message());
            common::status_exit(&s)
        }
    }
}
