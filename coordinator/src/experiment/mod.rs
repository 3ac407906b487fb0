//! Experiments: the domain model and the YAML parser.

pub mod model;
pub mod parse;

pub use model::*;
pub use parse::{parse, Error as ParseError};
