//! Durations in experiment files: how they are written (`500ms`, `10s`,
//! `2m`), how reports print them, and the defaults and bounds of every
//! duration field.

use std::time::Duration;

use serde::Deserialize;

/// Default probe interval. By default, 1 s.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Default probe timeout. By default, 1 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default baseline window. By default, 10 s.
pub const DEFAULT_BASELINE: Duration = Duration::from_secs(10);
/// Default recovery window. By default, 30 s.
pub const DEFAULT_RECOVERY: Duration = Duration::from_secs(30);
/// Default fault lease. By default, 10 s: short enough that a crashed
/// coordinator leaves faults behind for seconds, not minutes.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// Default guardrail window. By default, 5 s.
pub const DEFAULT_GUARDRAIL_WINDOW: Duration = Duration::from_secs(5);

/// Longest `baseline`, `duration`, `recovery` and `blast_radius.max_duration`:
/// 7 days. Longer windows are not experiments any more, and bounding them
/// keeps every sum of phases far from overflowing a clock.
pub const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest `lease`: 1 h. The lease is how long a fault outlives a crashed
/// coordinator; more than an hour of unattended fault is never wanted.
pub const MAX_LEASE: Duration = Duration::from_secs(3600);
/// Shortest probe `interval`: 10 ms.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Longest probe `timeout`: 10 min.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest latency bound in a tolerance (`max`, `plus`): 1 h.
pub const MAX_LATENCY_BOUND: Duration = Duration::from_secs(3600);

/// A duration written as `500ms`, `10s`, `2m`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        // Every field checks its own upper limit (MAX_WINDOW, MAX_LEASE,
        // ...) where its name and position are known.
        humantime::parse_duration(s.trim())
            .map(Dur)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?} ({e}): write e.g. 500ms, 10s or 2m")))
    }
}

/// Formats a duration the way experiment files write them, in human units:
/// `250ms`, `1.5s`, `5m`, `1h 30m`, `2d 3h`. Under a minute, tenths of a
/// second are kept; from a minute on, whole seconds (what anyone planning
/// a run cares about), largest unit first, zero parts left out.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1000.0 {
        return format!("{}ms", (ms * 10.0).round() / 10.0);
    }
    if d < Duration::from_secs(60) {
        return format!("{}s", (ms / 100.0).round() / 10.0);
    }
    let mut secs = d.as_secs() + u64::from(d.subsec_millis() >= 500);
    let mut parts = Vec::new();
    for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= len {
            parts.push(format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_in_human_units() {
        let d = |s: u64| fmt_duration(Duration::from_secs(s));
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(d(59), "59s");
        assert_eq!(d(300), "5m");
        assert_eq!(d(5400), "1h 30m");
        assert_eq!(d(3 * 86_400 + 3_600 + 1), "3d 1h 1s");
        assert_eq!(d(359_996_400), "4166d 15h");
    }
}
