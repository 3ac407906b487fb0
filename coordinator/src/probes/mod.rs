//! Probes, one kind per file, and the runner that samples them.

pub mod command;
pub mod http;
pub mod runner;
pub mod tcp;

pub use runner::{check_once, start, Samples};
