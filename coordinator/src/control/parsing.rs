//! Parsing submitted experiments: on the blocking pool, a few at a time,
//! within a time limit, after the size and nesting bounds.

use std::collections::HashMap;
use std::time::Duration;

use faultline_proto::v1;

use super::Error;
use crate::experiment::{self, Experiment};

/// Longest a Control call waits for an experiment to be parsed, waiting
/// for a parsing slot included. By default, 5 s: a file within
/// [`experiment::limits`] parses in well under a second; the rest is room
/// for a queue of them.
pub const PARSE_TIME_LIMIT: Duration = Duration::from_secs(5);

/// Experiments parsed at the same time. By default, 2: parsing is CPU work
/// that runs on tokio's blocking pool, and a flood of large files must leave
/// CPU for the runtime that serves agent links and lease renewals.
const PARALLEL_PARSES: usize = 2;

static PARSE_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(PARALLEL_PARSES);

pub(super) async fn parse_source(src: Option<v1::ExperimentSource>) -> Result<(Experiment, String), Error> {
    let src = src.ok_or(Error::NoSource)?;
    let vars: HashMap<String, String> = src.vars.into_iter().collect();
    let name = if src.name.is_empty() {
        "<experiment>".to_string()
    } else {
        src.name
    };
    let exp = parse_off_runtime(name.clone(), src.yaml, vars).await?;
    Ok((exp, name))
}

/// Parses an experiment on the blocking pool, never on the runtime's
/// threads: the runtime also carries every agent's heartbeats and lease
/// renewals, which must not wait for a parser. Size and nesting are bounded
/// before parsing (see [`experiment::limits`]); this also bounds the time.
pub async fn parse_off_runtime(name: String, yaml: String, vars: HashMap<String, String>) -> Result<Experiment, Error> {
    // The bounds are a linear scan (about a millisecond per MiB): checked
    // here, an over-limit document is refused without waiting for a slot.
    experiment::limits::check_source(&name, &yaml, &vars)?;
    experiment::limits::check(&name, &yaml)?;
    let parse = async {
        let _slot = PARSE_SLOTS.acquire().await.map_err(|_| Error::ShuttingDown)?;
        tokio::task::spawn_blocking(move || experiment::parse(&name, &yaml, &vars))
            .await
            .map_err(|_| Error::ParserFailed)?
            .map_err(Error::Parse)
    };
    tokio::time::timeout(PARSE_TIME_LIMIT, parse)
        .await
        .map_err(|_| Error::ParseTimeout(PARSE_TIME_LIMIT))?
}
