//! `io_stress`: keep a filesystem of each target busy: workers writing
//! and/or reading their own file in `path` (which must be under the agent's
//! allowed fill paths), optionally at a total rate. The agent kills the
//! workers and removes their files at restore.

use faultline_proto::v1;
use serde::Deserialize;

use super::{Kind, Observed};
use crate::experiment::values::{self, fmt_bytes, RawSize};

/// Parameters of an `io_stress` fault.
#[derive(Debug, Clone)]
pub struct IoStressFault {
    /// Directory for the workers' files (absolute).
    pub path: String,
    pub workers: u32,
    /// `write`, `read` or `mixed`.
    pub mode: String,
    pub block_size: u64,
    /// Total bytes per second; 0: as fast as the filesystem goes.
    pub rate: u64,
    pub file_size: u64,
}

/// Why a written `io_stress` is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("io_stress.path {0:?}: must be an absolute path")]
    RelativePath(String),
    #[error("io_stress.mode {0:?}: use write, read or mixed")]
    Mode(String),
    #[error("io_stress.workers {0}: must be within 1..=64")]
    Workers(u32),
    #[error("io_stress.block_size {0}: must be within 512B..=64MiB")]
    Block(u64),
    #[error("io_stress.file_size {file}: must be at least block_size ({block})")]
    File { file: u64, block: u64 },
    #[error(transparent)]
    Value(#[from] values::Error),
}

/// An `io_stress` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIoStress {
    path: String,
    /// Default 1.
    workers: Option<u32>,
    /// Default write.
    mode: Option<String>,
    /// Default 1MiB.
    block_size: Option<RawSize>,
    /// Bytes per second over all workers, e.g. 20MiB; default unlimited.
    rate: Option<RawSize>,
    /// Each worker's file, default 64MiB.
    file_size: Option<RawSize>,
}

impl Kind for IoStressFault {
    const NAME: &'static str = "io_stress";
    type Raw = RawIoStress;
    type Error = Error;
    type Wire = v1::IoStressSpec;
    type Observation = v1::IoStressObservation;

    fn from_raw(r: RawIoStress) -> Result<Self, Error> {
        if !r.path.starts_with('/') {
            return Err(Error::RelativePath(r.path));
        }
        let mode = r.mode.unwrap_or_else(|| "write".into());
        if !["write", "read", "mixed"].contains(&mode.as_str()) {
            return Err(Error::Mode(mode));
        }
        let workers = r.workers.unwrap_or(1);
        if !(1..=64).contains(&workers) {
            return Err(Error::Workers(workers));
        }
        let size = |v: &Option<RawSize>, field, default| v.as_ref().map_or(Ok(default), |s| s.bytes(field));
        let block_size = size(&r.block_size, "io_stress.block_size", 1 << 20)?;
        if !(512..=(64 << 20)).contains(&block_size) {
            return Err(Error::Block(block_size));
        }
        let file_size = size(&r.file_size, "io_stress.file_size", 64 << 20)?;
        if file_size < block_size {
            return Err(Error::File {
                file: file_size,
                block: block_size,
            });
        }
        Ok(IoStressFault {
            path: r.path,
            workers,
            mode,
            block_size,
            rate: size(&r.rate, "io_stress.rate", 0)?,
            file_size,
        })
    }

    fn summary(&self) -> String {
        let rate = if self.rate == 0 {
            "as fast as it goes".to_string()
        } else {
            format!("at {}/s", fmt_bytes(self.rate))
        };
        format!(
            "{} IO worker(s) ({}, {} blocks) in {}, {rate}",
            self.workers,
            self.mode,
            fmt_bytes(self.block_size),
            self.path
        )
    }

    fn to_wire(&self, _peers: &[String]) -> v1::IoStressSpec {
        v1::IoStressSpec {
            path: self.path.clone(),
            workers: self.workers,
            mode: self.mode.clone(),
            block_bytes: self.block_size,
            rate_bytes_per_second: self.rate,
            file_bytes: self.file_size,
        }
    }

    fn observe(o: &v1::IoStressObservation, state: v1::FaultState, into: &mut Observed) {
        into.objects = o.files.iter().map(|f| format!("file {f}")).collect();
        if !o.cgroup.is_empty() {
            into.objects.push(format!("cgroup {} (pids {:?})", o.cgroup, o.pids));
        }
        // Counted until the workers die: final at restore.
        if state == v1::FaultState::Restored {
            into.set_figure("written", o.bytes_written as f64, "bytes");
            into.set_figure("read", o.bytes_read as f64, "bytes");
            into.set_figure("achieved", o.achieved_bytes_per_second.round(), "bytes/s");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<IoStressFault, Error> {
        IoStressFault::from_raw(serde_norway::from_str(y).unwrap())
    }

    #[test]
    fn io_stress_defaults_and_refusals() {
        let f = parse("path: /var/tmp/chaos\nrate: 20MiB\n").unwrap();
        assert_eq!(
            (f.workers, f.mode.as_str(), f.block_size, f.rate),
            (1, "write", 1 << 20, 20 << 20)
        );
        assert!(parse("path: tmp\n").unwrap_err().to_string().contains("absolute"));
        assert!(parse("path: /t\nmode: append\n")
            .unwrap_err()
            .to_string()
            .contains("mixed"));
        assert!(parse("path: /t\nblock_size: 2MiB\nfile_size: 1MiB\n").is_err());
    }
}
