//! Helpers shared by subcommands: reading experiment files, KEY=VALUE flags,
//! dialing the coordinator, and mapping errors to exit codes.

use std::collections::{BTreeMap, HashMap};

use faultline_proto::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use crate::experiment::{self, Experiment};
use crate::outcome::Outcome;

/// Default coordinator address for subcommands that need one.
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:7700";

/// Prints `msg` on stderr prefixed with `faultline: `.
pub fn eprint_err(msg: impl std::fmt::Display) {
    eprintln!("faultline: {msg}");
}

/// Parses repeated `KEY=VALUE` flags.
pub fn key_values(flag: &str, raw: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for kv in raw {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            _ => return Err(format!("{flag} {kv:?}: expected KEY=VALUE, e.g. {flag} port=8080")),
        }
    }
    Ok(out)
}

/// An experiment file read from disk, with its variables.
pub struct Source {
    pub name: String,
    pub yaml: String,
    pub vars: HashMap<String, String>,
}

impl Source {
    /// Reads `path`; errors are already worded for the user.
    pub fn read(path: &str, vars: &[String]) -> Result<Source, String> {
        let yaml = std::fs::read_to_string(path).map_err(|e| format!("cannot read experiment file {path}: {e}"))?;
        let vars = key_values("--var", vars)?.into_iter().collect();
        Ok(Source {
            name: path.to_string(),
            yaml,
            vars,
        })
    }

    pub fn parse(&self) -> Result<Experiment, experiment::ParseError> {
        experiment::parse(&self.name, &self.yaml, &self.vars)
    }

    pub fn to_wire(&self) -> v1::ExperimentSource {
        v1::ExperimentSource {
            name: self.name.clone(),
            yaml: self.yaml.clone(),
            vars: self.vars.clone().into_iter().collect(),
        }
    }
}

/// Dials the Control service.
pub async fn control(url: &str) -> Result<ControlClient<Channel>, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("invalid coordinator URL {url:?}: {e} (expected e.g. {DEFAULT_COORDINATOR})"))?
        .connect_timeout(std::time::Duration::from_secs(5));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot reach the coordinator at {url}: {e}; is `faultline serve` running there?"))?;
    Ok(ControlClient::new(channel))
}

/// The exit code for a failed Control call.
pub fn status_exit(s: &tonic::Status) -> i32 {
    match s.code() {
        tonic::Code::InvalidArgument => Outcome::Invalid.exit_code(),
        _ => Outcome::Error.exit_code(),
    }
}
