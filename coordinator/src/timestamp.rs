//! The one timestamp format of reports, tables and stored runs: RFC 3339
//! in UTC, to the millisecond.

use faultline_proto::now_unix_ms;

/// Unix milliseconds as RFC 3339 UTC (`2024-05-01T09:30:00.123Z`); the
/// number itself if it is out of range.
pub fn rfc3339_ms(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// The current time as RFC 3339 UTC.
pub fn rfc3339_now() -> String {
    rfc3339_ms(now_unix_ms())
}
