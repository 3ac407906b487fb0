//! Game days: a suite of experiments run in order and scored together.
//!
//! The client reads the game-day file and every experiment file it lists
//! (`cli::gameday`), and sends the [`Suite`]; the coordinator runs it
//! ([`runner`]) — from `Control.RunGameDay` or at a schedule's tick — and
//! records each game-day run with its score and the runs it contains.
//!
//! Resilience score = 100 × Σ weight of experiments that passed ÷ Σ weight
//! of experiments that reached a verdict (passed, failed or aborted).
//! Experiments that could not be judged (invalid, not_steady, error) or were
//! skipped after a failure are listed but do not count; with none judged
//! the score is absent.
//!
//! Layout:
//! - [`runner`]: running a suite on the coordinator and recording it.
//!
//! Scores over time and their regressions: [`crate::trend`].

use std::collections::HashMap;

use faultline_proto::v1;
use serde::{Deserialize, Serialize};

use crate::outcome::Outcome;

pub mod runner;

/// Most experiments in one game day.
pub const MAX_MEMBERS: usize = 100;

/// Why a suite sent by a client is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("game day {source_name}: no name")]
    NoName { source_name: String },
    #[error("game day {source_name}: experiments: at least one is needed")]
    Empty { source_name: String },
    #[error("game day {source_name}: {count} experiments; at most {max} are allowed")]
    TooMany {
        source_name: String,
        count: usize,
        max: usize,
    },
    #[error("game day {source_name}: experiments[{index}] ({file}): weight {weight} must be above 0")]
    Weight {
        source_name: String,
        index: usize,
        file: String,
        weight: f64,
    },
    #[error("game day {source_name}: experiments[{index}] ({file}) has no experiment source")]
    NoSource {
        source_name: String,
        index: usize,
        file: String,
    },
    #[error("stored game day is damaged: {0}")]
    Stored(String),
}

/// One experiment of a suite, with its text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The entry's `file` as written in the game day.
    pub file: String,
    pub weight: f64,
    /// The experiment's file name (for messages), text and variables.
    pub source: String,
    pub yaml: String,
    pub vars: HashMap<String, String>,
}

/// A game day: what a schedule stores and a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suite {
    /// The game-day file name.
    pub source: String,
    pub name: String,
    pub description: String,
    pub stop_on_failure: bool,
    pub members: Vec<Member>,
}

impl Suite {
    /// The suite a client sent, checked (not yet its experiments: see
    /// [`runner::check`]).
    pub fn from_wire(w: v1::GameDaySuite) -> Result<Suite, Error> {
        let source_name = if w.source.is_empty() {
            "<game day>".to_string()
        } else {
            w.source
        };
        if w.name.trim().is_empty() {
            return Err(Error::NoName { source_name });
        }
        if w.experiments.is_empty() {
            return Err(Error::Empty { source_name });
        }
        if w.experiments.len() > MAX_MEMBERS {
            return Err(Error::TooMany {
                source_name,
                count: w.experiments.len(),
                max: MAX_MEMBERS,
            });
        }
        let mut members = Vec::with_capacity(w.experiments.len());
        for (index, m) in w.experiments.into_iter().enumerate() {
            if !(m.weight > 0.0 && m.weight.is_finite()) {
                return Err(Error::Weight {
                    source_name,
                    index,
                    file: m.file,
                    weight: m.weight,
                });
            }
            let Some(src) = m.source else {
                return Err(Error::NoSource {
                    source_name,
                    index,
                    file: m.file,
                });
            };
            members.push(Member {
                file: m.file,
                weight: m.weight,
                source: if src.name.is_empty() {
                    "<experiment>".into()
                } else {
                    src.name
                },
                yaml: src.yaml,
                vars: src.vars.into_iter().collect(),
            });
        }
        Ok(Suite {
            source: source_name,
            name: w.name,
            description: w.description,
            stop_on_failure: w.stop_on_failure,
            members,
        })
    }

    pub fn to_wire(&self) -> v1::GameDaySuite {
        v1::GameDaySuite {
            source: self.source.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            stop_on_failure: self.stop_on_failure,
            experiments: self
                .members
                .iter()
                .map(|m| v1::GameDayMember {
                    file: m.file.clone(),
                    weight: m.weight,
                    source: Some(v1::ExperimentSource {
                        name: m.source.clone(),
                        yaml: m.yaml.clone(),
                        vars: m.vars.clone().into_iter().collect(),
                    }),
                })
                .collect(),
        }
    }

    /// As a schedule stores it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Suite, Error> {
        serde_json::from_str(text).map_err(|e| Error::Stored(e.to_string()))
    }
}

/// One experiment's line in the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The game-day run's id (absent in summaries older than stored runs).
    #[serde(default)]
    pub gameday_run_id: String,
    pub name: String,
    pub description: String,
    /// 0..=100; absent when no experiment reached a verdict.
    pub resilience_score: Option<f64>,
    pub passed: usize,
    pub judged: usize,
    pub exit_code: i32,
    pub experiments: Vec<Entry>,
}

impl Summary {
    /// The summary of `entries`: score, counts and exit code.
    pub fn new(gameday_run_id: &str, suite: &Suite, entries: Vec<Entry>) -> Summary {
        let (resilience_score, passed, judged) = score(&entries);
        Summary {
            gameday_run_id: gameday_run_id.to_string(),
            name: suite.name.clone(),
            description: suite.description.clone(),
            resilience_score,
            passed,
            judged,
            exit_code: exit_code(&entries),
            experiments: entries,
        }
    }
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

/// 0 when every experiment passed; 1 when one failed or aborted; else 5.
pub fn exit_code(entries: &[Entry]) -> i32 {
    if entries.iter().all(|e| e.outcome == "passed") {
        0
    } else if entries.iter().any(|e| e.outcome == "failed" || e.outcome == "aborted") {
        Outcome::Failed.exit_code()
    } else {
        Outcome::Error.exit_code()
    }
}

/// The summary as Markdown.
pub fn render_md(s: &Summary) -> String {
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
    if !s.gameday_run_id.is_empty() {
        o += &format!("\ngame-day run {}\n", s.gameday_run_id);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(exit_code(&[e("passed", 1.0)]), 0);
        assert_eq!(exit_code(&[e("passed", 1.0), e("aborted", 1.0), e("error", 1.0)]), 1);
        assert_eq!(exit_code(&[e("passed", 1.0), e("skipped", 1.0)]), 5);
    }

    fn wire() -> v1::GameDaySuite {
        v1::GameDaySuite {
            source: "gd.yaml".into(),
            name: "weekly".into(),
            description: String::new(),
            stop_on_failure: true,
            experiments: vec![v1::GameDayMember {
                file: "kill.yaml".into(),
                weight: 2.0,
                source: Some(v1::ExperimentSource {
                    name: "dir/kill.yaml".into(),
                    yaml: "name: k".into(),
                    vars: [("port".to_string(), "80".to_string())].into_iter().collect(),
                }),
            }],
        }
    }

    #[test]
    fn a_suite_goes_over_the_wire_and_into_a_schedule_unchanged() {
        let s = Suite::from_wire(wire()).unwrap();
        assert_eq!(Suite::from_wire(s.to_wire()).unwrap(), s);
        assert_eq!(Suite::from_json(&s.to_json()).unwrap(), s);
        assert_eq!(s.members[0].vars["port"], "80");
    }

    #[test]
    fn a_bad_suite_is_refused_naming_the_entry() {
        let mut w = wire();
        w.experiments[0].weight = 0.0;
        let e = Suite::from_wire(w).unwrap_err().to_string();
        assert_eq!(
            e,
            "game day gd.yaml: experiments[0] (kill.yaml): weight 0 must be above 0"
        );
        let mut w = wire();
        w.experiments[0].source = None;
        assert!(Suite::from_wire(w)
            .unwrap_err()
            .to_string()
            .contains("has no experiment source"));
        let mut w = wire();
        w.experiments.clear();
        assert!(Suite::from_wire(w).unwrap_err().to_string().contains("at least one"));
        let mut w = wire();
        let one = w.experiments[0].clone();
        w.experiments = vec![one; MAX_MEMBERS + 1];
        assert!(Suite::from_wire(w).unwrap_err().to_string().contains("at most 100"));
        assert!(Suite::from_json("{")
            .unwrap_err()
            .to_string()
            .starts_with("stored game day is damaged"));
    }
}
