//! `command` probe: runs a shell command on the coordinator's host (never on
//! agents); success is the expected exit code and, if set, stdout matching.

use std::process::Stdio;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

use super::{Clients, Kind, Reading};
use crate::experiment::values::{self, compile};

#[derive(Debug, Clone)]
pub struct CommandProbe {
    /// Shell command, run with `sh -c` on the coordinator's host.
    pub run: String,
    pub exit_code: i32,
    pub stdout_match: Option<Regex>,
}

/// Why a written `command` probe is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("command.run: must not be empty")]
    Empty,
    #[error(transparent)]
    Value(#[from] values::Error),
}

/// Why one run of the command failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("cannot start sh: {0}")]
    Spawn(std::io::Error),
    #[error("timeout")]
    Timeout,
    #[error(transparent)]
    Wait(std::io::Error),
    #[error("exit code {code}, expected {expected}")]
    ExitCode { code: i32, expected: i32 },
    #[error("stdout does not match /{0}/")]
    StdoutMismatch(Regex),
}

/// A `command` probe as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommand {
    run: String,
    #[serde(default)]
    exit_code: i32,
    stdout_match: Option<String>,
}

impl Kind for CommandProbe {
    const NAME: &'static str = "command";
    type Raw = RawCommand;
    type Error = Error;
    type Failure = Failure;

    fn from_raw(c: RawCommand) -> Result<Self, Error> {
        if c.run.trim().is_empty() {
            return Err(Error::Empty);
        }
        Ok(CommandProbe {
            run: c.run,
            exit_code: c.exit_code,
            stdout_match: c
                .stdout_match
                .map(|re| compile("command.stdout_match", &re))
                .transpose()?,
        })
    }

    fn target(&self) -> String {
        self.run.clone()
    }

    async fn check(&self, _clients: &Clients, timeout: Duration) -> Result<Reading, Failure> {
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&self.run)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // A probe that overruns its timeout is killed, not left behind.
            .kill_on_drop(true)
            .spawn()
            .map_err(Failure::Spawn)?;
        let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Err(_) => return Err(Failure::Timeout),
            Ok(Err(e)) => return Err(Failure::Wait(e)),
            Ok(Ok(o)) => o,
        };
        let code = out.status.code().unwrap_or(-1);
        if code != self.exit_code {
            return Err(Failure::ExitCode {
                code,
                expected: self.exit_code,
            });
        }
        if let Some(re) = &self.stdout_match {
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !re.is_match(&stdout) {
                return Err(Failure::StdoutMismatch(re.clone()));
            }
        }
        Ok(Reading::Done)
    }
}
