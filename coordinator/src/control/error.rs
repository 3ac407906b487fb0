//! Errors of Control calls, and the one mapping of them to gRPC codes.

use std::time::Duration;

use tonic::Status;

use crate::experiment;
use crate::outcome::Outcome;
use crate::planner;

/// Errors of Control calls.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("request has no experiment source")]
    NoSource,
    #[error("{0}")]
    Parse(#[from] experiment::ParseError),
    #[error("the experiment was not parsed within {0:?} (the coordinator is busy parsing other experiments, or this one is too large)")]
    ParseTimeout(Duration),
    #[error("the experiment parser failed on this document")]
    ParserFailed,
    #[error("{0}")]
    Plan(#[from] planner::Error),
    #[error("no run {0} on this coordinator")]
    UnknownRun(String),
    #[error("run {0} has not finished yet; its report is available when it ends")]
    RunInFlight(String),
    #[error("report format {0:?}: use json, md, junit or html")]
    Format(String),
    #[error("{0}")]
    Follow(#[from] crate::follow::Error),
    #[error("{0}")]
    RunId(#[from] faultline_proto::ids::IdError),
    #[error("run status {0:?}: use one of {list}", list = RUN_STATUSES.join(", "))]
    Status(String),
    #[error("the coordinator is shutting down")]
    ShuttingDown,
    #[error("the coordinator is stopped ({0}); no run starts until it is resumed")]
    Stopped(String),
    #[error("{0}")]
    GameDay(#[from] crate::gameday::Error),
    #[error("set either an experiment source or a game day, not both")]
    SourceAndGameDay,
    /// The approval webhook said no (or could not be asked).
    #[error("{0}")]
    NotApproved(#[from] crate::notify::approval::Refusal),
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let msg = e.to_string();
        match e {
            Error::NoSource
            | Error::Parse(_)
            | Error::Format(_)
            | Error::RunId(_)
            | Error::Status(_)
            | Error::GameDay(_)
            | Error::SourceAndGameDay => Status::invalid_argument(msg),
            Error::Follow(crate::follow::Error::UnknownRun(_)) => Status::not_found(msg),
            Error::Follow(_) => Status::internal(msg),
            Error::ParseTimeout(_) => Status::resource_exhausted(msg),
            Error::ParserFailed => Status::internal(msg),
            Error::Plan(p) if p.outcome() == Outcome::Invalid => Status::invalid_argument(msg),
            Error::Plan(_) => Status::failed_precondition(msg),
            Error::UnknownRun(_) => Status::not_found(msg),
            Error::RunInFlight(_) => Status::failed_precondition(msg),
            Error::ShuttingDown => Status::unavailable(msg),
            Error::Stopped(_) | Error::NotApproved(_) => Status::failed_precondition(msg),
        }
    }
}

/// The statuses a run can have in the store: an outcome, `running` or
/// `interrupted` (what `ListRuns.outcome` filters on).
pub const RUN_STATUSES: &[&str] = &[
    "passed",
    "failed",
    "invalid",
    "aborted",
    "not_steady",
    "error",
    "running",
    "interrupted",
];
