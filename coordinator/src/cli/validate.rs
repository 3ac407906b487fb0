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

/// Why a file did not validate.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Experiment(#[from] super::common::Error),
    #[error(transparent)]
    GameDay(#[from] gameday::LoadError),
}

/// Checks one file and prints what it holds.
fn validate(file: &str, vars: &[String]) -> Result<(), Error> {
    let src = Source::read(file, vars)?;
    if gameday::is_game_day(&src.yaml) {
        let gd = gameday::load(file)?;
        println!(
            "{file}: valid — game day {:?}, {} experiment(s)",
            gd.name,
            gd.members.len()
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
    print!("{}", groups_and_judge(&e));
    Ok(())
}

/// The groups with the probes that run for each, and the judge: what
/// `validate` and `plan` show of a release gate. Empty without groups.
pub fn groups_and_judge(e: &crate::experiment::Experiment) -> String {
    let mut o = group_lines(e);
    o += &judge_lines(e);
    o
}

/// The groups with the probes that run for each. A group that selects
/// agents shows its selector; its probes run once per matching agent,
/// which only `plan` (and a run) knows.
fn group_lines(e: &crate::experiment::Experiment) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    for g in &e.groups {
        let mut values: Vec<String> = g.values.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if let Some(sel) = &g.agents {
            values.insert(0, format!("agents {}", crate::group_agents::fmt_selector(sel)));
        }
        if let Some(pods) = &g.pods {
            values.insert(0, format!("pods {}", pods.describe()));
        }
        let _ = writeln!(o, "  group {} ({})", g.name, values.join(", "));
        if g.pods.is_some() {
            let _ = writeln!(
                o,
                "    (one probe instance per matching pod, with its IP as ${{group.address}}, ${{group.pod}} and ${{group.agent}}, resolved when the run is planned by asking the agents)"
            );
            continue;
        }
        if g.agents.is_some() {
            let _ = writeln!(
                o,
                "    (one probe instance per matching agent, with its ${{group.address}} and ${{group.agent}}, resolved when the run is planned)"
            );
            continue;
        }
        for p in e
            .hypothesis
            .probes
            .iter()
            .filter(|p| p.group.as_ref().is_some_and(|pg| pg.group == g.name))
        {
            let _ = writeln!(o, "    probe {}: {} {}", p.name, p.kind.name(), p.kind.target());
        }
    }
    o
}

/// Shared probes, the faults and the judge of a release gate.
pub fn judge_lines(e: &crate::experiment::Experiment) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let shared: Vec<&str> = e
        .hypothesis
        .probes
        .iter()
        .filter(|p| p.group.is_none())
        .map(|p| p.name.as_str())
        .collect();
    if !e.groups.is_empty() && !shared.is_empty() {
        let _ = writeln!(o, "  shared probes (once, not judged): {}", shared.join(", "));
    }
    if !e.groups.is_empty() {
        let _ = writeln!(
            o,
            "  faults hit both groups at the same time: {}",
            e.faults.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(j) = &e.judge {
        let _ = writeln!(
            o,
            "  judge: {} vs {} on the {} samples, alpha {}, pass >= {}, marginal >= {} ({})",
            j.canary,
            j.control,
            j.phases.iter().map(|p| p.as_str()).collect::<Vec<_>>().join("+"),
            j.config.alpha,
            j.config.pass,
            j.config.marginal,
            if j.marginal_passes {
                "marginal passes"
            } else {
                "marginal fails"
            }
        );
        for m in &j.metrics {
            let c = &m.config;
            let _ = writeln!(
                o,
                "    metric {:?}: {:?}, allowed x{}/x{}{}{}{}{}",
                c.name,
                c.direction,
                c.allowed_increase,
                c.allowed_decrease,
                c.weight.map(|w| format!(", weight {w}")).unwrap_or_default(),
                if c.critical { ", critical" } else { "" },
                if c.must_have_data { ", must have data" } else { "" },
                if c.test == crate::canary::Test::Welch {
                    ", welch"
                } else {
                    ""
                },
            );
        }
    }
    o
}
