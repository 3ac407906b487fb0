//! Run phases and outcomes, and the exit code of each outcome.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Phases of a run, in order (DESIGN.md, "A run").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Validate,
    Plan,
    Baseline,
    Steady,
    Inject,
    Observe,
    Restore,
    Recover,
    Verdict,
    Report,
}

impl Phase {
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Validate => "validate",
            Phase::Plan => "plan",
            Phase::Baseline => "baseline",
            Phase::Steady => "steady",
            Phase::Inject => "inject",
            Phase::Observe => "observe",
            Phase::Restore => "restore",
            Phase::Recover => "recover",
            Phase::Verdict => "verdict",
            Phase::Report => "report",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run ended. The exit codes are part of the CLI's contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The hypothesis held during the fault and after it.
    Passed,
    /// The hypothesis was violated.
    Failed,
    /// Bad file, bad flag, or the blast radius refused the run.
    Invalid,
    /// A guardrail tripped or an operator aborted the run.
    Aborted,
    /// The baseline already violated the hypothesis; nothing was injected.
    NotSteady,
    /// Agents missing, injection refused or failed, coordinator unreachable.
    Error,
}

impl Outcome {
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Passed => 0,
            Outcome::Failed => 1,
            Outcome::Invalid => 2,
            Outcome::Aborted => 3,
            Outcome::NotSteady => 4,
            Outcome::Error => 5,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Invalid => "invalid",
            Outcome::Aborted => "aborted",
            Outcome::NotSteady => "not_steady",
            Outcome::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        [
            Outcome::Passed,
            Outcome::Failed,
            Outcome::Invalid,
            Outcome::Aborted,
            Outcome::NotSteady,
            Outcome::Error,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
