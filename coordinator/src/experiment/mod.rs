//! Experiments: the domain model, the YAML parser and the bounds checked
//! before parsing.

pub mod limits;
pub mod model;
pub mod parse;

pub use model::*;
pub use parse::{parse, Error as ParseError};
