//! Fault kinds, one per file.

pub mod kill;

pub use kill::{AppliedKill, KillSpec, Protection};
