//! JUnit XML for CI: one test case per tolerance of each probe (checked on
//! the samples taken during the fault), one per probe for "recovers after
//! restore", with a canary judge one per judged metric (failed when `high`
//! or `low`, or `nodata` with `must_have_data`; its classification, effect
//! size, interval and p-value in the message, the case's `system-out` and
//! the suite's `judge.<metric>.*` properties) and one for the canary score,
//! one per stop condition (a failure when it turned true), and one for the
//! run itself when it ended without a verdict (not steady, aborted, error,
//! invalid). Each probe's figures per phase and their change against the
//! baseline are suite properties (`probe.<probe>.<phase>.<figure>`,
//! `probe.<probe>.delta.<figure>`), as are the error budgets before and
//! after the run. The Markdown report goes into `system-out`, so a CI page
//! shows the whole run next to the failures.

use std::fmt::Write;

use super::model::Report;
use crate::outcome::Outcome;

/// Escapes text for XML attributes and content.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            // XML 1.0 forbids most control characters, even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

enum Result {
    Passed,
    Failed(String),
    Skipped(String),
    Error(String),
}

struct Case {
    class: String,
    name: String,
    result: Result,
    /// The case's `system-out` (the judge's figures in words, so a
    /// passing metric shows them too). junit-10.xsd allows no properties
    /// on a test case: the figures are also suite properties
    /// `judge.<metric>.<figure>`.
    out: Option<String>,
}

/// The probes' figures per phase with their change against the baseline,
/// the stop conditions' and the error budgets' outcomes, as
/// `(property name, value)`.
fn figures(r: &Report) -> Vec<(String, String)> {
    let num = |v: f64| crate::verdict::num((v * 1000.0).round() / 1000.0);
    let mut out = Vec::new();
    for p in &r.probes {
        for (phase, st) in [
            ("baseline", &p.baseline),
            ("during", &p.during),
            ("recovery", &p.recovery),
        ] {
            let prefix = format!("probe.{}.{phase}", p.name);
            out.push((format!("{prefix}.samples"), st.samples.to_string()));
            out.push((
                format!("{prefix}.success_rate"),
                format!("{}%", num(st.success_rate * 100.0)),
            ));
            for (name, v) in [
                ("p50_ms", st.p50_ms),
                ("p99_ms", st.p99_ms),
                ("value_min", st.value_min),
                ("value_mean", st.value_mean),
                ("value_max", st.value_max),
            ] {
                if let Some(v) = v {
                    out.push((format!("{prefix}.{name}"), num(v)));
                }
            }
        }
        let prefix = format!("probe.{}.delta", p.name);
        if p.during.samples > 0 {
            out.push((
                format!("{prefix}.success_rate_points"),
                num(p.delta.success_rate_points),
            ));
        }
        for (name, v) in [
            ("p50_ms", p.delta.p50_ms),
            ("p99_ms", p.delta.p99_ms),
            ("value_mean", p.delta.value_mean),
        ] {
            if let Some(v) = v {
                out.push((format!("{prefix}.{name}"), num(v)));
            }
        }
        if let Some(ttr) = p.time_to_recovery_ms {
            out.push((format!("probe.{}.time_to_recovery_ms", p.name), ttr.to_string()));
        }
    }
    for sc in &r.stop_conditions {
        let prefix = format!("stop_condition.{}", sc.name);
        out.push((format!("{prefix}.evaluations"), sc.evaluations.len().to_string()));
        if let Some(at) = sc.fired_at_ms {
            out.push((format!("{prefix}.fired_at_ms"), at.to_string()));
        }
        if let Some(v) = sc.value {
            out.push((format!("{prefix}.value"), num(v)));
        }
        if let Some(ms) = sc.restored_after_ms {
            out.push((format!("{prefix}.restored_after_ms"), ms.to_string()));
        }
    }
    for (i, b) in r.error_budgets.iter().enumerate() {
        let pct = |v: f64| format!("{}%", num(v * 100.0));
        if let Some(v) = b.remaining_before {
            out.push((format!("error_budget.{i}.remaining_before"), pct(v)));
        }
        if let Some(v) = b.remaining_after {
            out.push((format!("error_budget.{i}.remaining_after"), pct(v)));
        }
    }
    out
}

/// Renders `r` as a JUnit XML document.
pub fn render(r: &Report) -> String {
    let mut cases = Vec::new();
    let exp = &r.experiment.name;
    for p in &r.probes {
        let class = format!("faultline.{exp}.{}", p.name);
        for t in &p.tolerances {
            let result = match &t.during {
                Some(c) if c.passed => Result::Passed,
                Some(c) => Result::Failed(format!(
                    "{}: measured {} while the fault was injected, allowed {}",
                    t.tolerance, c.measured, c.allowed
                )),
                None => Result::Skipped(format!("not evaluated: {}", r.reason)),
            };
            cases.push(Case {
                class: class.clone(),
                name: t.tolerance.clone(),
                result,
                out: None,
            });
        }
        let injected = r
            .faults
            .iter()
            .any(|f| f.targets.iter().any(|t| t.injected_at_ms.is_some()));
        cases.push(Case {
            class,
            name: "recovers after restore".into(),
            result: if !injected {
                Result::Skipped("nothing was injected".into())
            } else if p.recovered {
                Result::Passed
            } else {
                Result::Failed(format!(
                    "{} did not recover within the recovery window ({})",
                    p.name,
                    crate::experiment::fmt_duration(std::time::Duration::from_millis(r.experiment.recovery_ms))
                ))
            },
            out: None,
        });
    }
    // The canary judge: one test case per metric, and one for the score.
    if let Some(j) = &r.judge {
        let class = format!("faultline.{exp}.judge");
        for m in &j.judgement.metrics {
            cases.push(Case {
                class: class.clone(),
                name: m.name.clone(),
                result: match super::judge::junit_failure(j, m) {
                    Some(why) => Result::Failed(why),
                    None => Result::Passed,
                },
                out: Some(super::judge::junit_message(m)),
            });
        }
        cases.push(Case {
            class,
            name: "canary score".into(),
            result: if j.passed {
                Result::Passed
            } else {
                Result::Failed(crate::engine::gate::summary(j))
            },
            out: Some(crate::engine::gate::summary(j)),
        });
    }
    for sc in &r.stop_conditions {
        let result = match (sc.fired_at_ms, sc.evaluations.is_empty()) {
            (Some(at), _) => Result::Failed(format!(
                "{} returned {} at {:.1}s{}",
                sc.query,
                sc.value.map(crate::verdict::num).unwrap_or_else(|| "a series".into()),
                at as f64 / 1000.0,
                sc.restored_after_ms
                    .map(|ms| format!("; every fault restored {ms} ms later"))
                    .unwrap_or_default()
            )),
            (None, true) => Result::Skipped("not evaluated: no fault was injected".into()),
            (None, false) => Result::Passed,
        };
        cases.push(Case {
            class: format!("faultline.{exp}.stop_conditions"),
            name: format!("{} ({})", sc.name, sc.severity),
            result,
            out: None,
        });
    }
    if !matches!(r.outcome, Outcome::Passed | Outcome::Failed) {
        cases.push(Case {
            class: format!("faultline.{exp}"),
            name: "run".into(),
            result: Result::Error(format!("{}: {}", r.outcome.as_str(), r.reason)),
            out: None,
        });
    }
    let count = |f: fn(&Result) -> bool| cases.iter().filter(|c| f(&c.result)).count();
    let failures = count(|r| matches!(r, Result::Failed(_)));
    let errors = count(|r| matches!(r, Result::Error(_)));
    let skipped = count(|r| matches!(r, Result::Skipped(_)));
    let secs = r.duration_ms as f64 / 1000.0;
    let mut o = String::new();
    let _ = writeln!(o, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        o,
        // junit-10.xsd (Jenkins, Surefire) allows no `skipped` on
        // <testsuites>, only on <testsuite>.
        r#"<testsuites name="faultline" tests="{}" failures="{failures}" errors="{errors}" time="{secs:.3}">"#,
        cases.len()
    );
    let _ = writeln!(
        o,
        r#"  <testsuite name="{}" tests="{}" failures="{failures}" errors="{errors}" skipped="{skipped}" time="{secs:.3}" timestamp="{}">"#,
        escape(exp),
        cases.len(),
        escape(r.started_at.trim_end_matches('Z'))
    );
    let _ = writeln!(o, "    <properties>");
    for (k, v) in [
        ("run_id", r.run_id.as_str()),
        ("outcome", r.outcome.as_str()),
        ("exit_code", &r.exit_code.to_string()),
        ("source", r.experiment.source.as_str()),
    ] {
        let _ = writeln!(o, r#"      <property name="{k}" value="{}"/>"#, escape(v));
    }
    // What each fault's kind observed on each target, one property per
    // figure: `fault.<fault>.<agent>.<figure>`.
    for f in &r.faults {
        for t in &f.targets {
            for fig in &t.figures {
                let _ = writeln!(
                    o,
                    r#"      <property name="{}" value="{}"/>"#,
                    escape(&format!("fault.{}.{}.{}", f.name, t.agent_id, fig.name)),
                    escape(&fig.quantity())
                );
            }
        }
    }
    for (name, value) in figures(r) {
        let _ = writeln!(
            o,
            r#"      <property name="{}" value="{}"/>"#,
            escape(&name),
            escape(&value)
        );
    }
    // The judge's figures per metric: `judge.<metric>.<figure>`.
    if let Some(j) = &r.judge {
        let _ = writeln!(
            o,
            r#"      <property name="judge.score" value="{:.1}"/>"#,
            j.judgement.score
        );
        for m in &j.judgement.metrics {
            for (k, v) in [
                (
                    "classification",
                    crate::engine::gate::classification_name(m.classification).to_string(),
                ),
                ("effect_size", super::judge::effect(m)),
                ("interval", super::judge::interval(m)),
                ("p_value", super::judge::p_value(m)),
            ] {
                let _ = writeln!(
                    o,
                    r#"      <property name="{}" value="{}"/>"#,
                    escape(&format!("judge.{}.{k}", m.name)),
                    escape(&v)
                );
            }
        }
    }
    let _ = writeln!(o, "    </properties>");
    for c in &cases {
        let open = format!(
            r#"    <testcase classname="{}" name="{}" time="{secs:.3}""#,
            escape(&c.class),
            escape(&c.name)
        );
        let out = c
            .out
            .as_ref()
            .map(|m| format!("\n      <system-out>{}</system-out>", escape(m)))
            .unwrap_or_default();
        match &c.result {
            Result::Passed if out.is_empty() => {
                let _ = writeln!(o, "{open}/>");
            }
            Result::Passed => {
                let _ = writeln!(o, "{open}>{out}\n    </testcase>");
            }
            Result::Failed(m) => {
                let _ = writeln!(
                    o,
                    "{open}>\n      <failure message=\"{}\" type=\"{}\">{}</failure>{out}\n    </testcase>",
                    escape(m),
                    if c.class.ends_with(".judge") {
                        "canary"
                    } else {
                        "tolerance"
                    },
                    escape(m)
                );
            }
            Result::Skipped(m) => {
                let _ = writeln!(
                    o,
                    "{open}>\n      <skipped message=\"{}\"/>\n    </testcase>",
                    escape(m)
                );
            }
            Result::Error(m) => {
                let _ = writeln!(
                    o,
                    "{open}>\n      <error message=\"{}\" type=\"run\">{}</error>\n    </testcase>",
                    escape(m),
                    escape(m)
                );
            }
        }
    }
    let _ = writeln!(o, "    <system-out>{}</system-out>", escape(&super::render_markdown(r)));
    let _ = writeln!(o, "  </testsuite>\n</testsuites>");
    o
}
