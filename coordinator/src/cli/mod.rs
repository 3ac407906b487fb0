//! The `faultline` command line, one subcommand per file.

pub mod abort;
pub mod agents;
pub mod app;
pub mod audit;
pub mod certs;
pub mod common;
pub mod demo;
pub mod demo_service;
pub mod follow;
pub mod gameday;
pub mod gamedays;
pub mod gate;
pub mod local_console;
pub mod plan;
pub mod prune;
pub mod report;
pub mod resume;
pub mod run;
pub mod runs;
pub mod schedule;
pub mod serve;
pub mod stop;
pub mod validate;

pub use app::{main_with, Cli};
