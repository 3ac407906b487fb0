//! Run reports: the model (JSON) and its Markdown rendering.

pub mod markdown;
pub mod model;

pub use markdown::render as render_markdown;
pub use model::*;
