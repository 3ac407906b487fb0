//! Run reports: the model (JSON) and its renderings (Markdown, JUnit XML,
//! self-contained HTML).

pub mod html;
pub mod judge;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Outcome;

    fn report_with(target: TargetReport) -> Report {
        Report {
            schema_version: SCHEMA_VERSION,
            run_id: "r1".into(),
            experiment: ExperimentInfo {
                name: "e".into(),
                description: String::new(),
                hypothesis: String::new(),
                source: "e.yaml".into(),
                baseline_ms: 1000,
                duration_ms: 1000,
                recovery_ms: 1000,
            },
            outcome: Outcome::Passed,
            exit_code: 0,
            reason: "held".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            finished_at: "2026-01-01T00:00:03Z".into(),
            duration_ms: 3000,
            aborted_by: None,
            stop_conditions: Vec::new(),
            error_budgets: Vec::new(),
            phases: Vec::new(),
            probes: Vec::new(),
            faults: vec![FaultReport {
                fault_id: "r1-1".into(),
                name: "slow".into(),
                kind: "latency".into(),
                summary: "delay 100ms".into(),
                targets: vec![target],
            }],
            events: Vec::new(),
            judge: None,
        }
    }

    #[test]
    fn every_format_shows_a_kinds_figures_and_notes_without_knowing_the_kind() {
        let r = report_with(TargetReport {
            agent_id: "a1".into(),
            hostname: "h1".into(),
            state: "restored".into(),
            backend: "nfqueue".into(),
            injected_at_ms: Some(1000),
            restored_at_ms: Some(2000),
            restored_by: Some("coordinator".into()),
            detail: String::new(),
            killed: Vec::new(),
            reappeared_after_ms: None,
            reappeared_pid: None,
            peers: Vec::new(),
            objects: vec!["nfqueue 17921".into()],
            packets_delayed: Some(1200),
            packets_dropped: Some(3),
            figures: vec![Figure {
                name: "delayed".into(),
                value: 1200.0,
                unit: "packets".into(),
            }],
            notes: vec!["a note & more".into()],
        });
        let json: serde_json::Value = serde_json::from_str(&render(&r, "json").unwrap()).unwrap();
        let t = &json["faults"][0]["targets"][0];
        assert_eq!(t["packets_delayed"], 1200, "the schema-1 field stays: {t}");
        assert_eq!(t["figures"][0]["name"], "delayed");
        assert_eq!(t["figures"][0]["unit"], "packets");
        let md = render(&r, "md").unwrap();
        assert!(md.contains("- a1: delayed: 1200 packets"), "{md}");
        assert!(md.contains("- a1: a note & more"), "{md}");
        let html = render(&r, "html").unwrap();
        assert!(
            html.contains("delayed: 1200 packets") && html.contains("a note &amp; more"),
            "{html}"
        );
        let junit = render(&r, "junit").unwrap();
        assert!(
            junit.contains(r#"<property name="fault.slow.a1.delayed" value="1200 packets"/>"#),
            "{junit}"
        );
    }
}
