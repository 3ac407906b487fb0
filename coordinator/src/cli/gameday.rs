//! `faultline gameday FILE`: run a list of experiments in order and report
//! them together with a resilience score.
//!
//! ```yaml
//! name: weekly-game-day
//! stop_on_failure: true        # default false: run every experiment
//! experiments:
//!   - file: kill.yaml          # relative to this file
//!     vars: { port: "8080" }
//!     weight: 2                # default 1
//!   - file: zone-outage.yaml
//! ```
//!
//! The suite runs on the coordinator (`--coordinator URL`, or the
//! in-process one of local mode), which records it with its score and the
//! runs it contains (`faultline gamedays`). The score is described in
//! [`crate::gameday`].

use std::collections::BTreeMap;
use std::path::Path;

use faultline_proto::v1;
use serde::Deserialize;

use super::common::{self, eprint_err, CoordinatorAddr, Source};
pub use crate::gameday::{render_md, score, Entry, Member, Suite, Summary};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Game-day file (YAML).
    pub file: String,
    /// Coordinator URL; without it, local mode.
    #[arg(long)]
    pub coordinator: Option<String>,
    /// Local mode only: label of the in-process agent; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Summary format on stdout.
    #[arg(long, default_value = "md", value_parser = ["md", "json"])]
    pub format: String,
    /// No progress and no warnings on stderr (errors only).
    #[arg(long, short)]
    pub quiet: bool,
    /// Local mode only: keep no history.
    #[arg(long)]
    pub no_store: bool,
    /// Local mode only: directory the in-process agent lets disk fills
    /// target (and everything below it); repeatable.
    #[arg(long = "allow-fill", value_name = "DIR")]
    pub allow_fill: Vec<std::path::PathBuf>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a game day: name, experiments and optionally description, stop_on_failure"
)]
struct RawGameDay {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    stop_on_failure: bool,
    experiments: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an experiment entry: file and optionally vars, weight"
)]
struct RawEntry {
    file: String,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    weight: Option<f64>,
}

/// Whether `text` is a game day rather than an experiment: it lists
/// `experiments:` at the top level, which no experiment has.
pub(crate) fn is_game_day(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("experiments:"))
}

/// Why a game-day file was refused. Each message starts with the place
/// (`file:line:column`, and the entry for a listed experiment).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The game-day file could not be read.
    #[error("cannot read game-day file {file}: {source}")]
    Read { file: String, source: std::io::Error },
    /// The file is too large or too deeply nested.
    #[error(transparent)]
    Limits(#[from] crate::experiment::ParseError),
    /// The YAML does not have a game day's shape.
    #[error("{at}: {message}")]
    Yaml { at: String, message: String },
    /// `experiments:` lists nothing.
    #[error("{at}: experiments: at least one is needed")]
    NoExperiments { at: String },
    /// An entry's weight is zero, negative or not a number.
    #[error("{at}.weight {weight}: must be above 0")]
    Weight { at: String, weight: f64 },
    /// A listed experiment could not be read.
    #[error("{at}: {source}")]
    Entry { at: String, source: common::Error },
    /// A listed experiment was refused by the parser: its message names the
    /// experiment's own file and line, and its advice the entry whose vars
    /// set an unset variable.
    #[error(transparent)]
    Experiment(common::Error),
}

/// Reads the game-day file `file` and every experiment it lists, and
/// validates them; errors are already worded for the user
/// (file:line:column first).
pub fn load(file: &str) -> Result<Suite, LoadError> {
    let text = std::fs::read_to_string(file).map_err(|source| LoadError::Read {
        file: file.to_string(),
        source,
    })?;
    crate::experiment::limits::check(file, &text)?;
    let gd: RawGameDay = serde_norway::from_str(&text).map_err(|e| {
        let mut message = e.to_string();
        // serde_norway appends " at line L column C"; it goes in front.
        if let Some(i) = message.rfind(" at line ") {
            message.truncate(i);
        }
        let at = match e.location() {
            Some(l) => format!("{file}:{}:{}", l.line(), l.column()),
            None => file.to_string(),
        };
        LoadError::Yaml { at, message }
    })?;
    if gd.experiments.is_empty() {
        let (line, col) = key_position(&text, "experiments");
        return Err(LoadError::NoExperiments {
            at: format!("{file}:{line}:{col}"),
        });
    }
    let base = Path::new(file).parent().unwrap_or(Path::new("."));
    // Read and validate every experiment first: a typo in the last one
    // should not surface after an hour of chaos.
    let mut members = Vec::new();
    for (i, e) in gd.experiments.iter().enumerate() {
        let (line, col) = entry_position(&text, i);
        let at = format!("{file}:{line}:{col}: experiments[{i}]");
        if let Some(weight) = e.weight.filter(|w| !(*w > 0.0 && w.is_finite())) {
            return Err(LoadError::Weight { at, weight });
        }
        let path = base.join(&e.file);
        let vars: Vec<String> = e.vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let src = Source::read(&path.display().to_string(), &vars)
            .map_err(|source| LoadError::Entry { at: at.clone(), source })?;
        src.parse_advising(|name| format!("set {name} in the vars of {at}"))
            .map_err(LoadError::Experiment)?;
        members.push(Member {
            file: e.file.clone(),
            weight: e.weight.unwrap_or(1.0),
            source: src.name,
            yaml: src.yaml,
            vars: src.vars,
        });
    }
    Ok(Suite {
        source: file.to_string(),
        name: gd.name,
        description: gd.description,
        stop_on_failure: gd.stop_on_failure,
        members,
    })
}

pub async fn main(a: Args) -> i32 {
    let suite = match load(&a.file) {
        Ok(s) => s,
        Err(e) => {
            eprint_err(e);
            return 2;
        }
    };
    let labels = match common::key_values("--label", &a.labels) {
        Ok(l) => l,
        Err(e) => {
            eprint_err(e);
            return 2;
        }
    };
    let store = if a.no_store {
        common::StoreChoice::Memory
    } else {
        common::StoreChoice::Default
    };
    let agent = common::LocalAgent {
        labels,
        allow_fill: a.allow_fill.clone(),
    };
    let coordinator =
        match CoordinatorAddr::open(a.coordinator.clone(), agent, Default::default(), store, a.quiet).await {
            Ok(t) => t,
            Err(code) => return code,
        };
    // The coordinator runs the suite (in local mode, the in-process one) and
    // records it with its score.
    let result = run_on(&coordinator.url, &suite, a.quiet).await;
    coordinator.stop().await;
    let summary = match result {
        Ok(s) => s,
        Err((message, code)) => {
            eprint_err(message);
            return code;
        }
    };
    match a.format.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default()),
        _ => print!("{}", render_md(&summary)),
    }
    summary.exit_code
}

/// Runs `suite` on the coordinator at `url` and waits for its summary;
/// errors come with the exit code.
async fn run_on(url: &str, suite: &Suite, quiet: bool) -> Result<Summary, (String, i32)> {
    let mut c = common::control(url).await.map_err(|e| (e.to_string(), 5))?;
    let status = |s: tonic::Status| (s.message().to_string(), common::status_exit(&s));
    let mut stream = c
        .run_game_day(v1::RunGameDayRequest {
            suite: Some(suite.to_wire()),
        })
        .await
        .map_err(status)?
        .into_inner();
    let mut experiment = String::new();
    while let Some(ev) = stream.message().await.map_err(status)? {
        match ev.event {
            Some(v1::game_day_event::Event::Finished(f)) => {
                return serde_json::from_str(&f.summary_json)
                    .map_err(|e| (format!("the coordinator sent a summary this CLI cannot read: {e}"), 5));
            }
            Some(v1::game_day_event::Event::Log(l)) => {
                experiment = l.message.rsplit(": ").next().unwrap_or_default().to_string();
                if !quiet {
                    eprintln!("faultline: {} ({})", l.message, ev.gameday_run_id);
                }
            }
            Some(v1::game_day_event::Event::Run(r)) if !quiet => {
                if let Some(v1::run_event::Event::Phase(p)) = r.event {
                    eprintln!("  [{experiment}] {}", p.phase);
                }
            }
            _ => {}
        }
    }
    Err((
        "the coordinator closed the stream before the game day finished; `faultline gamedays` shows it".into(),
        5,
    ))
}

/// Line and column (1-based) of top-level `key:` in `text`; 1:1 if absent.
fn key_position(text: &str, key: &str) -> (usize, usize) {
    text.lines()
        .position(|l| l.starts_with(&format!("{key}:")))
        .map_or((1, 1), |i| (i + 1, 1))
}

/// Line and column of the `-` that starts entry `i` of the block sequence
/// under `experiments:`; the key's position when the entries are written
/// another way (a flow sequence).
fn entry_position(text: &str, i: usize) -> (usize, usize) {
    let key = key_position(text, "experiments");
    let mut indent = None;
    let mut n = 0;
    for (lineno, line) in text.lines().enumerate().skip(key.0) {
        let trimmed = line.trim_start_matches(' ');
        let col = line.len() - trimmed.len();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if col == 0 {
            break;
        }
        if (trimmed.starts_with("- ") || trimmed == "-") && *indent.get_or_insert(col) == col {
            if n == i {
                return (lineno + 1, col + 1);
            }
            n += 1;
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_located_by_their_dash() {
        let text = "name: g\nexperiments:\n  - file: a.yaml\n    vars: { p: \"1\" }\n  # comment\n  - file: b.yaml\n    weight: 2\n";
        assert_eq!(entry_position(text, 0), (3, 3));
        assert_eq!(entry_position(text, 1), (6, 3));
        assert_eq!(entry_position("name: g\nexperiments: [{file: a}]\n", 0), (2, 1));
    }
}
