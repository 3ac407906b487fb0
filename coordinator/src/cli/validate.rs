//! `faultline validate FILE...`: parse and check experiments without running
//! them. A game-day file is checked with every experiment it lists, each
//! with the vars of its entry.

use super::common::{eprint_err, Source};
use super::gameday;
use crate::outcome::Outcome;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Experiment or game-day files (YAML).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<String>,
    /// Value for a ${var} placeholder, as KEY=VALUE; repeatable. Applies to
    /// every experiment file given (a game day sets its own vars per entry).
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
}

pub fn main(a: Args) -> i32 {
    let mut code = 0;
    for file in &a.files {
        if let Err(e) = validate(file, &a.vars) {
            eprint_err(e);
            code = Outcome::Invalid.exit_code();
        }
    }
    code
}

/// Checks one file and prints what it holds.
fn validate(file: &str, vars: &[String]) -> Result<(), String> {
    let src = Source::read(file, vars)?;
    if gameday::is_game_day(&src.yaml) {
        let gd = gameday::load(file)?;
        println!(
            "{file}: valid — game day {:?}, {} experiment(s)",
            gd.name,
            gd.sources.len()
        );
        return Ok(());
    }
    let e = src.parse()?;
    println!(
        "{}: valid — experiment {:?}, {} probe(s), {} fault(s), baseline {}, duration {}, recovery {}",
        file,
        e.name,
        e.hypothesis.probes.len(),
        e.faults.len(),
        crate::experiment::fmt_duration(e.baseline),
        crate::experiment::fmt_duration(e.duration),
        crate::experiment::fmt_duration(e.recovery),
    );
    Ok(())
}
