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
//! Resilience score = 100 × Σ weight of experiments that passed ÷ Σ weight
//! of experiments that reached a verdict (passed, failed or aborted).
//! Experiments that could not be judged (invalid, not_steady, error) or were
//! skipped after a failure are listed but do not count; with none judged
//! the score is absent.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use faultline_proto::v1;
use serde::{Deserialize, Serialize};

use super::common::{self, eprint_err, CoordinatorAddr, Source};
use crate::outcome::Outcome;

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

/// One experiment's line in the summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub file: String,
    pub weight: f64,
    /// passed, failed, aborted, invalid, not_steady, error, or skipped.
    pub outcome: String,
    pub run_id: Option<String>,
    pub reason: String,
    /// Longest time to recovery over the run's probes.
    pub time_to_recovery_ms: Option<u64>,
}

/// The game day's summary report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub name: String,
    pub description: String,
    /// 0..=100; absent when no experiment reached a verdict.
    pub resilience_score: Option<f64>,
    pub passed: usize,
    pub judged: usize,
    pub exit_code: i32,
    pub experiments: Vec<Entry>,
}

/// The score of a list of entries (see the module docs).
pub fn score(entries: &[Entry]) -> (Option<f64>, usize, usize) {
    let judged: Vec<&Entry> = entries
        .iter()
        .filter(|e| matches!(e.outcome.as_str(), "passed" | "failed" | "aborted"))
        .collect();
    let passed = judged.iter().filter(|e| e.outcome == "passed").count();
    let total: f64 = judged.iter().map(|e| e.weight).sum();
    let won: f64 = judged.iter().filter(|e| e.outcome == "passed").map(|e| e.weight).sum();
    let s = (total > 0.0).then(|| (100.0 * won / total * 10.0).round() / 10.0);
    (s, passed, judged.len())
}

fn render_md(s: &Summary) -> String {
    let mut o = format!(
        "# game day: {}\n\n{}\n\n**Resilience score:** {} ({} of {} judged experiments passed)\n\n| # | experiment | weight | outcome | run | time to recovery | reason |\n|---:|---|---:|---|---|---:|---|\n",
        s.name,
        s.description,
        s.resilience_score.map(|v| format!("{v:.1}")).unwrap_or_else(|| "n/a".into()),
        s.passed,
        s.judged
    );
    for (i, e) in s.experiments.iter().enumerate() {
        o += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            i + 1,
            e.file,
            e.weight,
            e.outcome,
            e.run_id.as_deref().unwrap_or("–"),
            e.time_to_recovery_ms
                .map(|v| format!("{:.1}s", v as f64 / 1000.0))
                .unwrap_or_else(|| "–".into()),
            e.reason.replace('|', "\\|")
        );
    }
    o
}

/// Submits one experiment and waits for its end.
async fn run_one(url: &str, source: &Source, quiet: bool) -> Result<v1::RunFinished, String> {
    let mut c = common::control(url).await?;
    let mut stream = c
        .submit_run(v1::SubmitRunRequest {
            source: Some(source.to_wire()),
        })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    while let Some(ev) = stream.message().await.map_err(|s| s.message().to_string())? {
        match ev.event {
            Some(v1::run_event::Event::Finished(f)) => return Ok(f),
            Some(v1::run_event::Event::Phase(p)) if !quiet => eprintln!("  [{}] {}", source.name, p.phase),
            _ => {}
        }
    }
    Err("the coordinator closed the stream before the run finished".into())
}

/// A game-day file, read and checked, with every experiment it lists.
pub struct GameDay {
    pub name: String,
    description: String,
    stop_on_failure: bool,
    entries: Vec<RawEntry>,
    /// The experiments of `entries`, in order, each parsed once to check it.
    pub sources: Vec<Source>,
}

/// Whether `text` is a game day rather than an experiment: it lists
/// `experiments:` at the top level, which no experiment has.
pub(crate) fn is_game_day(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("experiments:"))
}

/// Reads the game-day file `file` and validates every experiment it lists;
/// errors are already worded for the user (file:line:column first).
pub fn load(file: &str) -> Result<GameDay, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read game-day file {file}: {e}"))?;
    crate::experiment::limits::check(file, &text).map_err(|e| e.to_string())?;
    let gd: RawGameDay = serde_norway::from_str(&text).map_err(|e| {
        let mut message = e.to_string();
        // serde_norway appends " at line L column C"; it goes in front.
        if let Some(i) = message.rfind(" at line ") {
            message.truncate(i);
        }
        match e.location() {
            Some(l) => format!("{file}:{}:{}: {message}", l.line(), l.column()),
            None => format!("{file}: {message}"),
        }
    })?;
    if gd.experiments.is_empty() {
        let (line, col) = key_position(&text, "experiments");
        return Err(format!("{file}:{line}:{col}: experiments: at least one is needed"));
    }
    let base = Path::new(file).parent().unwrap_or(Path::new("."));
    // Read and validate every experiment first: a typo in the last one
    // should not surface after an hour of chaos.
    let mut sources = Vec::new();
    for (i, e) in gd.experiments.iter().enumerate() {
        let (line, col) = entry_position(&text, i);
        let at = format!("{file}:{line}:{col}: experiments[{i}]");
        if let Some(w) = e.weight.filter(|w| !(*w > 0.0 && w.is_finite())) {
            return Err(format!("{at}.weight {w}: must be above 0"));
        }
        let path = base.join(&e.file);
        let vars: Vec<String> = e.vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let src = Source::read(&path.display().to_string(), &vars).map_err(|err| format!("{at}: {err}"))?;
        src.parse_advising(|name| format!("set {name} in the vars of {at}"))?;
        sources.push(src);
    }
    Ok(GameDay {
        name: gd.name,
        description: gd.description,
        stop_on_failure: gd.stop_on_failure,
        entries: gd.experiments,
        sources,
    })
}

pub async fn main(a: Args) -> i32 {
    let gd = match load(&a.file) {
        Ok(gd) => gd,
        Err(e) => {
            eprint_err(e);
            return 2;
        }
    };
    let sources = &gd.sources;
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
    let mut entries = Vec::new();
    let mut stopped = false;
    for (e, src) in gd.entries.iter().zip(sources) {
        let weight = e.weight.unwrap_or(1.0);
        if stopped {
            entries.push(Entry {
                file: e.file.clone(),
                weight,
                outcome: "skipped".into(),
                run_id: None,
                reason: "stop_on_failure: an earlier experiment did not pass".into(),
                time_to_recovery_ms: None,
            });
            continue;
        }
        if !a.quiet {
            eprintln!("faultline: game day {}: {}", gd.name, e.file);
        }
        let entry = match run_one(&coordinator.url, src, a.quiet).await {
            Ok(f) => {
                let report: Option<crate::report::Report> = serde_json::from_str(&f.report_json).ok();
                Entry {
                    file: e.file.clone(),
                    weight,
                    outcome: f.outcome.clone(),
                    run_id: report.as_ref().map(|r| r.run_id.clone()),
                    reason: f.reason.clone(),
                    time_to_recovery_ms: report
                        .as_ref()
                        .and_then(|r| r.probes.iter().filter_map(|p| p.time_to_recovery_ms).max()),
                }
            }
            Err(err) => Entry {
                file: e.file.clone(),
                weight,
                outcome: "error".into(),
                run_id: None,
                reason: err,
                time_to_recovery_ms: None,
            },
        };
        if gd.stop_on_failure && entry.outcome != "passed" {
            stopped = true;
        }
        entries.push(entry);
    }
    coordinator.stop().await;
    let (resilience_score, passed, judged) = score(&entries);
    let outcomes: HashMap<&str, usize> = entries.iter().fold(HashMap::new(), |mut m, e| {
        *m.entry(e.outcome.as_str()).or_default() += 1;
        m
    });
    let exit_code = if entries.iter().all(|e| e.outcome == "passed") {
        0
    } else if outcomes.contains_key("failed") || outcomes.contains_key("aborted") {
        Outcome::Failed.exit_code()
    } else {
        Outcome::Error.exit_code()
    };
    let summary = Summary {
        name: gd.name,
        description: gd.description,
        resilience_score,
        passed,
        judged,
        exit_code,
        experiments: entries,
    };
    match a.format.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default()),
        _ => print!("{}", render_md(&summary)),
    }
    exit_code
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

    fn e(outcome: &str, weight: f64) -> Entry {
        Entry {
            file: "x.yaml".into(),
            weight,
            outcome: outcome.into(),
            run_id: None,
            reason: String::new(),
            time_to_recovery_ms: None,
        }
    }

    #[test]
    fn the_score_weighs_judged_experiments_only() {
        assert_eq!(score(&[e("passed", 1.0), e("failed", 1.0)]), (Some(50.0), 1, 2));
        assert_eq!(
            score(&[e("passed", 3.0), e("aborted", 1.0), e("error", 5.0), e("skipped", 1.0)]),
            (Some(75.0), 1, 2)
        );
        assert_eq!(score(&[e("not_steady", 1.0), e("invalid", 1.0)]), (None, 0, 0));
    }
}
