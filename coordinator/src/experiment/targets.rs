//! Which agents a fault goes to, as written: `targets: { labels, mode,
//! count, percent }`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::model::{Mode, Targets};

/// Why a written selector is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("targets.count: must be at least 1")]
    CountZero,
    #[error("targets.percent {0}: must be within (0, 100]")]
    Percent(f64),
    #[error("targets.mode {0:?}: use one of all, one, count (with count: N), percent (with percent: P)")]
    Mode(String),
    #[error(
        "targets: mode all/one takes no count or percent; mode count needs count: N; mode percent needs percent: P"
    )]
    Combination,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTargets {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    mode: Option<String>,
    count: Option<u32>,
    percent: Option<f64>,
}

impl RawTargets {
    /// The selector, checked.
    pub fn check(self) -> Result<Targets, Error> {
        let mode = match (self.mode.as_deref(), self.count, self.percent) {
            (None | Some("all"), None, None) => Mode::All,
            (None | Some("count"), Some(n), None) if n > 0 => Mode::Count(n),
            (None | Some("percent"), None, Some(p)) if p > 0.0 && p <= 100.0 => Mode::Percent(p),
            (Some("one"), None, None) => Mode::Count(1),
            (_, Some(0), _) => return Err(Error::CountZero),
            (_, _, Some(p)) if !(p > 0.0 && p <= 100.0) => return Err(Error::Percent(p)),
            (Some(m), _, _) if !["all", "one", "count", "percent"].contains(&m) => {
                return Err(Error::Mode(m.to_string()))
            }
            _ => return Err(Error::Combination),
        };
        Ok(Targets {
            labels: self.labels,
            mode,
        })
    }
}
