//! Fault kinds, one per file.

pub mod disk_fill;
pub mod kill;

pub use disk_fill::{AppliedFill, DiskFillSpec, FillPolicy};
pub use kill::{AppliedKill, KillSpec, Protection};
