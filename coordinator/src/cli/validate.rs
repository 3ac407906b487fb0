//! `faultline validate FILE`: parse and check an experiment without running it.

use super::common::{eprint_err, Source};
use crate::outcome::Outcome;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Experiment file (YAML).
    pub file: String,
    /// Value for a ${var} placeholder, as KEY=VALUE; repeatable.
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
}

pub fn main(a: Args) -> i32 {
    let src = match Source::read(&a.file, &a.vars) {
        Ok(s) => s,
        Err(e) => {
            eprint_err(e);
            return Outcome::Invalid.exit_code();
        }
    };
    match src.parse() {
        Ok(e) => {
            println!(
                "{}: valid — experiment {:?}, {} probe(s), {} fault(s), baseline {}, duration {}, recovery {}",
                a.file,
                e.name,
                e.hypothesis.probes.len(),
                e.faults.len(),
                crate::experiment::fmt_duration(e.baseline),
                crate::experiment::fmt_duration(e.duration),
                crate::experiment::fmt_duration(e.recovery),
            );
            0
        }
        Err(e) => {
            eprint_err(e);
            Outcome::Invalid.exit_code()
        }
    }
}
