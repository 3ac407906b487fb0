//! Fault kinds, one per file.

pub mod block;
pub mod disk_fill;
pub mod kill;
pub mod latency;

pub use block::{AppliedBlock, BlockSpec};
pub use disk_fill::{AppliedFill, DiskFillSpec, FillPolicy};
pub use kill::{AppliedKill, KillSpec, Protection};
pub use latency::{AppliedLatency, Backends, LatencySpec};
