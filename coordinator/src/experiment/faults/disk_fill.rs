//! `disk_fill`: fill the filesystem of a directory on each target with one
//! file (by size, up to a used percentage as `df` counts it, or until only
//! so much is left free). The agent unlinks the file at restore.

use faultline_proto::v1;
use serde::Deserialize;

use super::{Kind, Observed};
use crate::experiment::values::{self, fmt_bytes, RawRate, RawSize};

/// How much a disk fill allocates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FillAmount {
    Bytes(u64),
    /// Until the filesystem is this full (0 < p <= 100).
    UsedPercent(f64),
    /// Until only this many bytes are available.
    LeaveFree(u64),
}

/// Parameters of a `disk_fill` fault.
#[derive(Debug, Clone)]
pub struct DiskFillFault {
    /// Directory on the filesystem to fill (absolute).
    pub path: String,
    pub amount: FillAmount,
}

/// Why a written `disk_fill` is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("disk_fill.path {0:?}: must be an absolute path")]
    RelativePath(String),
    #[error(transparent)]
    Value(#[from] values::Error),
    #[error("disk_fill.used {0:?}: write a percentage, e.g. \"90%\"")]
    UsedText(String),
    #[error("disk_fill.used {0}: must be within (0, 100] percent")]
    UsedRange(f64),
    #[error("disk_fill: set exactly one of size (e.g. 1GiB), used (e.g. \"90%\") or leave_free (e.g. 100MiB)")]
    NotExactlyOneAmount,
}

/// A `disk_fill` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiskFill {
    path: String,
    size: Option<RawSize>,
    used: Option<RawRate>,
    leave_free: Option<RawSize>,
}

impl Kind for DiskFillFault {
    const NAME: &'static str = "disk_fill";
    type Raw = RawDiskFill;
    type Error = Error;
    type Wire = v1::DiskFillSpec;
    type Observation = v1::DiskFillObservation;

    fn from_raw(d: RawDiskFill) -> Result<Self, Error> {
        if !d.path.starts_with('/') {
            return Err(Error::RelativePath(d.path));
        }
        let amount = match (&d.size, &d.used, &d.leave_free) {
            (Some(s), None, None) => FillAmount::Bytes(s.bytes("disk_fill.size")?),
            (None, Some(u), None) => {
                let p = match u {
                    RawRate::Fraction(f) => *f,
                    RawRate::Text(t) => RawRate::percent_text(t).ok_or_else(|| Error::UsedText(t.clone()))?,
                };
                if !(p > 0.0 && p <= 100.0) {
                    return Err(Error::UsedRange(p));
                }
                FillAmount::UsedPercent(p)
            }
            (None, None, Some(l)) => FillAmount::LeaveFree(l.bytes("disk_fill.leave_free")?),
            _ => return Err(Error::NotExactlyOneAmount),
        };
        Ok(DiskFillFault { path: d.path, amount })
    }

    fn summary(&self) -> String {
        match self.amount {
            FillAmount::Bytes(b) => format!("fill {} with {}", self.path, fmt_bytes(b)),
            FillAmount::UsedPercent(p) => format!("fill {} until its filesystem is {p}% used", self.path),
            FillAmount::LeaveFree(b) => format!("fill {} until {} are left free", self.path, fmt_bytes(b)),
        }
    }

    fn to_wire(&self, _peers: &[String]) -> v1::DiskFillSpec {
        let (size_bytes, target_used_percent, leave_free_bytes) = match self.amount {
            FillAmount::Bytes(b) => (b, 0.0, 0),
            FillAmount::UsedPercent(p) => (0, p, 0),
            FillAmount::LeaveFree(b) => (0, 0.0, b),
        };
        v1::DiskFillSpec {
            path: self.path.clone(),
            size_bytes,
            target_used_percent,
            leave_free_bytes,
        }
    }

    fn observe(d: &v1::DiskFillObservation, _state: v1::FaultState, into: &mut Observed) {
        into.objects = vec![format!(
            "file {} ({} bytes by {}, filesystem {:.1}% -> {:.1}% used)",
            d.file, d.bytes, d.method, d.used_percent_before, d.used_percent_after
        )];
        into.set_figure("written", d.bytes as f64, "bytes");
        into.set_figure("used before", d.used_percent_before, "%");
        into.set_figure("used after", d.used_percent_after, "%");
    }
}
