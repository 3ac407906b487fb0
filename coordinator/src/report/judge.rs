//! The canary judge's section in every format: one row per metric with its
//! classification, effect size (canary ÷ control), the shift's interval and
//! the p-value; the score and what it did to the run. `gate` prints
//! [`summary`]; the coordinator's gate endpoint answers with it.

use std::fmt::Write;

use super::model::{JudgeReport, Report};
use crate::canary::{Classification, MetricResult};
use crate::engine::gate::{classification_name, verdict_name};

fn num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() && v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.is_finite() => format!("{v:.3}"),
        Some(v) => format!("{v}"),
        None => "–".into(),
    }
}

/// `x1.84`, or `–` when undefined.
pub fn effect(m: &MetricResult) -> String {
    m.effect_size.map(|e| format!("x{e:.2}")).unwrap_or_else(|| "–".into())
}

/// `[12.1, 40.3]` (the shift's interval at 1 − alpha), or `–`.
pub fn interval(m: &MetricResult) -> String {
    m.interval
        .map(|(lo, hi)| format!("[{}, {}]", num(Some(lo)), num(Some(hi))))
        .unwrap_or_else(|| "–".into())
}

/// `0.0003`, or `–`.
pub fn p_value(m: &MetricResult) -> String {
    m.p_value
        .map(|p| {
            if p < 0.0001 {
                format!("{p:.1e}")
            } else {
                format!("{p:.4}")
            }
        })
        .unwrap_or_else(|| "–".into())
}

/// One line per metric and the score: what `faultline gate` prints.
pub fn summary(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}: {} (exit {})",
        r.experiment.name,
        r.outcome.as_str().to_uppercase(),
        r.exit_code
    );
    let Some(j) = &r.judge else {
        let _ = writeln!(
            o,
            "no judgement: {}",
            if r.reason.is_empty() {
                "the experiment has no judge"
            } else {
                &r.reason
            }
        );
        return o;
    };
    let _ = writeln!(
        o,
        "score {:.0}/100: {}{} (pass >= {:.0}, marginal >= {:.0}{}); {} vs {} on the {} samples",
        j.judgement.score,
        verdict_name(j.judgement.verdict),
        if j.passed { ", passes" } else { ", does not pass" },
        j.judgement.config.pass,
        j.judgement.config.marginal,
        if j.marginal_passes { ", marginal passes" } else { "" },
        j.canary,
        j.control,
        j.phases.join("+")
    );
    if let Some(c) = &j.judgement.critical_failure {
        let _ = writeln!(o, "critical: {c}");
    }
    let width = j.judgement.metrics.iter().map(|m| m.name.len()).max().unwrap_or(0);
    for m in &j.judgement.metrics {
        let _ = writeln!(
            o,
            "  {:<6} {:<width$}  effect {:>7}  shift {:>9} {:>20}  p {:>8}  n {}/{}{}",
            classification_name(m.classification),
            m.name,
            effect(m),
            num(m.shift),
            interval(m),
            p_value(m),
            m.canary_count,
            m.control_count,
            if m.critical { "  critical" } else { "" }
        );
    }
    let _ = writeln!(o, "{}", r.reason);
    o
}

/// The judge section of the Markdown report.
pub fn markdown(o: &mut String, j: &JudgeReport) {
    let _ = writeln!(o, "## Canary judge\n");
    let _ = writeln!(
        o,
        "**{}** vs **{}** on the samples of the {} phase(s): score **{:.0}** / 100, {}{} (pass ≥ {:.0}, marginal ≥ {:.0}{}, alpha {}).\n",
        j.canary,
        j.control,
        j.phases.join(" and "),
        j.judgement.score,
        verdict_name(j.judgement.verdict),
        if j.passed { ", passes" } else { ", does not pass" },
        j.judgement.config.pass,
        j.judgement.config.marginal,
        if j.marginal_passes { ", marginal passes" } else { "" },
        j.judgement.config.alpha
    );
    if let Some(c) = &j.judgement.critical_failure {
        let _ = writeln!(o, "**Critical:** {c}\n");
    }
    let _ = writeln!(
        o,
        "| metric | class | test | canary | control | effect | shift | interval | p | n canary/control | weight | why |"
    );
    let _ = writeln!(o, "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---|");
    for m in &j.judgement.metrics {
        let _ = writeln!(
            o,
            "| {}{} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} | {:.1} | {} |",
            m.name,
            if m.critical { " (critical)" } else { "" },
            classification_name(m.classification),
            m.test,
            num(m.canary_center),
            num(m.control_center),
            effect(m),
            num(m.shift),
            interval(m),
            p_value(m),
            m.canary_count,
            m.control_count,
            m.weight,
            m.reason.replace('|', "\\|")
        );
    }
    let _ = writeln!(o);
}

/// The judge section of the HTML report (`escape` is the HTML escaper).
pub fn html(o: &mut String, j: &JudgeReport, escape: impl Fn(&str) -> String) {
    let _ = write!(
        o,
        "<h2>Canary judge</h2><p><b>{}</b> vs <b>{}</b> on the {} samples: score <b class=\"{}\">{:.0}</b> / 100, {} (pass ≥ {:.0}, marginal ≥ {:.0}{}, alpha {}){}</p>",
        escape(&j.canary),
        escape(&j.control),
        escape(&j.phases.join("+")),
        if j.passed { "passed" } else { "failed" },
        j.judgement.score,
        verdict_name(j.judgement.verdict),
        j.judgement.config.pass,
        j.judgement.config.marginal,
        if j.marginal_passes { ", marginal passes" } else { "" },
        j.judgement.config.alpha,
        j.judgement
            .critical_failure
            .as_ref()
            .map(|c| format!("; critical: {}", escape(c)))
            .unwrap_or_default()
    );
    o.push_str("<table><tr><th>metric</th><th>class</th><th>test</th><th>canary</th><th>control</th><th>effect</th><th>shift</th><th>interval</th><th>p</th><th>n</th><th>weight</th><th>why</th></tr>");
    for m in &j.judgement.metrics {
        let _ = write!(
            o,
            "<tr><td>{}{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{:.1}</td><td>{}</td></tr>",
            escape(&m.name),
            if m.critical { " (critical)" } else { "" },
            if m.classification == Classification::Pass { "passed" } else { "failed" },
            classification_name(m.classification),
            escape(&m.test),
            num(m.canary_center),
            num(m.control_center),
            effect(m),
            num(m.shift),
            interval(m),
            p_value(m),
            m.canary_count,
            m.control_count,
            m.weight,
            escape(&m.reason)
        );
    }
    o.push_str("</table>");
}

/// Whether a metric's JUnit test case fails: `high` / `low`, and `nodata`
/// when the metric must have data; `None` when it passes. The message
/// carries the classification, effect size, interval and p-value.
pub fn junit_failure(j: &JudgeReport, m: &MetricResult) -> Option<String> {
    let failed = match m.classification {
        Classification::Pass => false,
        Classification::High | Classification::Low => true,
        Classification::Nodata => j
            .settings
            .iter()
            .find(|c| c.name == m.name)
            .is_some_and(|c| c.must_have_data),
    };
    failed.then(|| junit_message(m))
}

/// `high: effect x1.84, shift 31.2 [12.1, 40.3], p 0.0003, n 40/40: why`.
pub fn junit_message(m: &MetricResult) -> String {
    format!(
        "{}: effect {}, shift {} {}, p {}, n {}/{}: {}",
        classification_name(m.classification),
        effect(m),
        num(m.shift),
        interval(m),
        p_value(m),
        m.canary_count,
        m.control_count,
        m.reason
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::{self, JudgeConfig, MetricConfig, Samples};

    fn judged() -> JudgeReport {
        let mut latency = MetricConfig::new("api latency");
        latency.weight = Some(50.0);
        let mut rate = MetricConfig::new("api success_rate");
        rate.direction = canary::Direction::Decrease;
        rate.must_have_data = true;
        let value = MetricConfig::new("queue value");
        let metrics = vec![
            (
                latency,
                Samples::Continuous {
                    canary: (0..30).map(|i| 110.0 + f64::from(i)).collect(),
                    control: (0..30).map(|i| 10.0 + f64::from(i)).collect(),
                },
            ),
            (
                rate,
                Samples::Proportion {
                    canary_ok: 0,
                    canary_n: 0,
                    control_ok: 0,
                    control_n: 0,
                },
            ),
            (
                value,
                Samples::Continuous {
                    canary: vec![],
                    control: vec![],
                },
            ),
        ];
        let judgement = canary::judge(&JudgeConfig::default(), &metrics);
        JudgeReport {
            control: "control".into(),
            canary: "canary".into(),
            phases: vec!["inject".into()],
            marginal_passes: false,
            passed: false,
            settings: metrics.into_iter().map(|(c, _)| c).collect(),
            judgement,
        }
    }

    #[test]
    fn junit_fails_high_and_low_and_nodata_only_when_the_metric_must_have_data() {
        let j = judged();
        let by = |name: &str| j.judgement.metrics.iter().find(|m| m.name == name).unwrap();
        assert_eq!(by("api latency").classification, Classification::High);
        let why = junit_failure(&j, by("api latency")).expect("high fails");
        assert!(why.starts_with("high: effect x"), "{why}");
        assert!(
            why.contains(&interval(by("api latency"))) && why.contains(", p "),
            "{why}"
        );
        assert_eq!(by("api success_rate").classification, Classification::Nodata);
        assert!(junit_failure(&j, by("api success_rate")).is_some(), "must have data");
        assert_eq!(by("queue value").classification, Classification::Nodata);
        assert_eq!(junit_failure(&j, by("queue value")), None, "may lack data");
    }

    #[test]
    fn markdown_and_html_show_a_row_per_metric_with_its_figures() {
        let j = judged();
        let mut md = String::new();
        markdown(&mut md, &j);
        assert!(md.contains("## Canary judge"), "{md}");
        let row = md
            .lines()
            .find(|l| l.starts_with("| api latency |"))
            .expect("latency row");
        assert!(row.contains("| high | mann_whitney |"), "{row}");
        assert!(row.contains(&effect(&j.judgement.metrics[0])), "{row}");
        let mut html = String::new();
        super::html(&mut html, &j, |s| s.replace('<', "&lt;"));
        assert!(
            html.contains("<h2>Canary judge</h2>") && html.matches("<tr><td>").count() == 3,
            "{html}"
        );
    }
}
