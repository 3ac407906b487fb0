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

    /// A metric probe whose value rose during the fault, a stop condition
    /// that turned true and an error budget, as every format shows them.
    fn metric_report() -> Report {
        use crate::outcome::Phase;
        use crate::stats::{PhaseStats, Sample};
        let sample = |at_ms: u64, phase: Phase, value: f64| Sample {
            at_ms,
            phase,
            ok: value <= 0.05,
            latency_ms: 3.0,
            value: Some(value),
            error: (value > 0.05).then(|| format!("value {value} above max 0.05")),
        };
        let samples = vec![
            sample(500, Phase::Baseline, 0.0),
            sample(1000, Phase::Baseline, 0.0),
            sample(1500, Phase::Observe, 0.25),
            sample(2000, Phase::Observe, 0.5),
            sample(2500, Phase::Recover, 0.0),
        ];
        let stats = |phases: &[Phase]| PhaseStats::of(samples.iter().filter(|s| phases.contains(&s.phase)));
        let (baseline, during, recovery) = (
            stats(&[Phase::Baseline]),
            stats(&[Phase::Observe]),
            stats(&[Phase::Recover]),
        );
        let mut r = report_with(TargetReport {
            agent_id: "a1".into(),
            hostname: "h1".into(),
            state: "restored".into(),
            backend: "signal".into(),
            injected_at_ms: Some(1200),
            restored_at_ms: Some(2200),
            restored_by: Some("coordinator".into()),
            detail: String::new(),
            killed: Vec::new(),
            reappeared_after_ms: None,
            reappeared_pid: None,
            peers: Vec::new(),
            objects: Vec::new(),
            packets_delayed: None,
            packets_dropped: None,
            figures: Vec::new(),
            notes: Vec::new(),
        });
        r.duration_ms = 3000;
        r.probes = vec![ProbeReport {
            name: "error-ratio".into(),
            kind: "prometheus".into(),
            target: "http://p:9090 errors / requests".into(),
            interval_ms: 500,
            delta: Delta {
                success_rate_points: -100.0,
                value_mean: Some(0.375),
                ..Delta::default()
            },
            baseline,
            during,
            recovery,
            degraded: true,
            recovered: true,
            time_to_recovery_ms: Some(1300),
            errors: Default::default(),
            tolerances: Vec::new(),
            samples,
        }];
        r.stop_conditions = vec![StopConditionReport {
            name: "errors-seen".into(),
            query: "sum(increase(errors[10s])) > 0".into(),
            severity: crate::experiment::stop_conditions::Severity::Critical,
            fired_at_ms: Some(1600),
            value: Some(3.0),
            restored_after_ms: Some(12),
            evaluations: vec![
                StopEvaluation {
                    at_ms: 1300,
                    fired: false,
                    value: None,
                    error: None,
                },
                StopEvaluation {
                    at_ms: 1600,
                    fired: true,
                    value: Some(3.0),
                    error: None,
                },
            ],
        }];
        r.error_budgets = vec![ErrorBudgetReport {
            query: "1 - (good) / (total)".into(),
            objective: 0.99,
            window_ms: 3_600_000,
            min_remaining: 0.1,
            remaining_before: Some(0.75),
            remaining_after: Some(0.5),
            error: None,
        }];
        r
    }

    #[test]
    fn junit_carries_each_probes_values_per_phase_the_delta_and_the_stop_conditions() {
        let junit = render(&metric_report(), "junit").unwrap();
        for want in [
            r#"<property name="probe.error-ratio.baseline.value_mean" value="0"/>"#,
            r#"<property name="probe.error-ratio.during.value_mean" value="0.375"/>"#,
            r#"<property name="probe.error-ratio.during.value_max" value="0.5"/>"#,
            r#"<property name="probe.error-ratio.recovery.value_mean" value="0"/>"#,
            r#"<property name="probe.error-ratio.during.success_rate" value="0%"/>"#,
            r#"<property name="probe.error-ratio.delta.value_mean" value="0.375"/>"#,
            r#"<property name="probe.error-ratio.delta.success_rate_points" value="-100"/>"#,
            r#"<property name="stop_condition.errors-seen.fired_at_ms" value="1600"/>"#,
            r#"<property name="stop_condition.errors-seen.restored_after_ms" value="12"/>"#,
            r#"<property name="error_budget.0.remaining_before" value="75%"/>"#,
            r#"<property name="error_budget.0.remaining_after" value="50%"/>"#,
            r#"<testcase classname="faultline.e.stop_conditions" name="errors-seen (critical)""#,
            "sum(increase(errors[10s])) &gt; 0 returned 3 at 1.6s; every fault restored 12 ms later",
        ] {
            assert!(junit.contains(want), "{want} missing from:\n{junit}");
        }
    }

    #[test]
    fn html_plots_a_metric_probes_values_and_lists_stop_conditions_and_budgets() {
        let html = render(&metric_report(), "html").unwrap();
        assert!(html.contains(r#"<svg class="values""#), "{html}");
        // Five samples with values: one line through them, two red dots
        // for the failed ones, the baseline mean dashed.
        let chart = &html[html.find(r#"<svg class="values""#).unwrap()..];
        let chart = &chart[..chart.find("</svg>").unwrap()];
        let line = chart
            .split(r#"<polyline class="value""#)
            .nth(1)
            .expect("the value line");
        let points = line.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(points.split(' ').count(), 5, "{points}");
        assert_eq!(chart.matches(r#"class="value-failed""#).count(), 2, "{chart}");
        assert!(chart.contains(r#"class="baseline-mean""#), "{chart}");
        assert!(chart.contains(r#"class="fault""#), "{chart}");
        // The higher value is drawn higher (smaller y).
        let ys: Vec<f64> = points
            .split(' ')
            .map(|p| p.split(',').nth(1).unwrap().parse().unwrap())
            .collect();
        assert!(ys[3] < ys[2] && ys[2] < ys[0], "{ys:?}");
        assert!(
            html.contains("<h2>Values</h2>") && html.contains("<td>+0.375</td>"),
            "{html}"
        );
        assert!(
            html.contains("<h2>Stop conditions</h2>") && html.contains("errors-seen"),
            "{html}"
        );
        assert!(
            html.contains("<h2>Error budget</h2>") && html.contains("<td>75%</td><td>50%</td>"),
            "{html}"
        );
        // A probe without values gets no value chart.
        let mut plain = metric_report();
        plain.probes[0].samples.iter_mut().for_each(|s| s.value = None);
        assert!(!render(&plain, "html").unwrap().contains(r#"<svg class="values""#));
    }
}
