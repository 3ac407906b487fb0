//! JUnit XML for CI: one test case per tolerance of each probe (checked on
//! the samples taken during the fault), one per probe for "recovers after
//! restore", with a canary judge one per judged metric (failed when `high`
//! or `low`, or `nodata` with `must_have_data`; its classification, effect
//! size, interval and p-value in the message, the case's `system-out` and
//! the suite's `judge.<metric>.*` properties) and one for the canary score,
//! and one for the run itself when it ended without a verdict
//! (not steady, aborted, error, invalid). The Markdown report goes into
//! `system-out`, so a CI page shows the whole run next to the failures.

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
