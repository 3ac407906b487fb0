//! Run reports: the model (JSON) and its renderings (Markdown, JUnit XML,
//! self-contained HTML).

pub mod html;
pub mod junit;
pub mod markdown;
pub mod model;

pub use markdown::render as render_markdown;
pub use model::*;

/// Report formats `faultline report --format` and `GetReport` accept.
pub const FORMATS: &[&str] = &["json", "md", "junit", "html"];

/// Renders `r` in `format` (json, md, junit or html); `None` for an
/// unknown format.
pub fn render(r: &Report, format: &str) -> Option<String> {
    Some(match format {
        "" | "json" => serde_json::to_string_pretty(r).unwrap_or_default(),
        "md" | "markdown" => render_markdown(r),
        "junit" | "xml" => junit::render(r),
        "html" => html::render(r),
        _ => return None,
    })
}
