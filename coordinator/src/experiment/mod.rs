//! Experiments: the domain model, the YAML parser and the bounds checked
//! before parsing. Each fault kind's YAML, domain type and wire form live in
//! [`faults`]; each probe kind's in [`crate::probes`].

pub mod durations;
pub mod error_budget;
pub mod faults;
pub mod groups;
pub mod judge;
pub mod limits;
pub mod model;
pub mod parse;
pub mod peers;
pub mod selectors;
pub mod stop_conditions;
pub mod targets;
pub mod tolerances;
pub mod values;
pub mod vars;

pub use crate::probes::ProbeKind;
pub use durations::fmt_duration;
pub use faults::FaultKind;
pub use model::*;
pub use parse::{parse, Error as ParseError};
pub use peers::Peers;
