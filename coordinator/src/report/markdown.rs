//! Markdown rendering of a report, for terminals and PR comments.

use std::fmt::Write;

use super::model::*;
use crate::stats::PhaseStats;

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}ms")).unwrap_or_else(|| "–".into())
}

fn signed_ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:+.1}ms")).unwrap_or_else(|| "–".into())
}

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

fn stats_row(out: &mut String, probe: &str, phase: &str, s: &PhaseStats) {
    let _ = writeln!(
        out,
        "| {probe} | {phase} | {} | {:.1}% | {} | {} | {} | {} |",
        s.samples,
        s.success_rate * 100.0,
        ms(s.p50_ms),
        ms(s.p90_ms),
        ms(s.p99_ms),
        ms(s.max_ms)
    );
}

/// Renders `r` as Markdown.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# faultline: {} — {}\n",
        r.experiment.name,
        r.outcome.as_str().to_uppercase()
    );
    let _ = writeln!(
        o,
        "Run `{}` from `{}`, started {}, took {}, exit code {}.\n",
        r.run_id,
        r.experiment.source,
        r.started_at,
        secs(r.duration_ms),
        r.exit_code
    );
    let _ = writeln!(o, "**Outcome:** {} — {}\n", r.outcome, r.reason);
    if let Some(by) = &r.aborted_by {
        let _ = writeln!(o, "**Aborted by:** {by}\n");
    }
    if !r.experiment.hypothesis.is_empty() {
        let _ = writeln!(o, "**Hypothesis:** {}\n", r.experiment.hypothesis);
    }

    if r.probes.is_empty() {
        let _ = writeln!(o, "No probe results were recorded: the run has no verdict.\n");
    } else {
        probes_and_tolerances(&mut o, r);
    }
    if let Some(j) = &r.judge {
        super::judge::markdown(&mut o, j);
    }
    faults(&mut o, r);
    stop_conditions(&mut o, r);
    error_budgets(&mut o, r);

    let _ = writeln!(o, "## Timeline\n");
    let _ = writeln!(o, "| phase | start | end |");
    let _ = writeln!(o, "|---|---:|---:|");
    for p in &r.phases {
        let _ = writeln!(o, "| {} | {} | {} |", p.phase, secs(p.start_ms), secs(p.end_ms));
    }
    if !r.events.is_empty() {
        let _ = writeln!(
            o,
            "\n## Recorded events\n\n(kind `after`: reported by agents once the coordinator was back)\n"
        );
        let _ = writeln!(o, "| at | kind | event |");
        let _ = writeln!(o, "|---|---|---|");
        for e in &r.events {
            let _ = writeln!(o, "| {} | {} | {} |", e.at, e.kind, e.text.replace('|', "\\|"));
        }
    }
    o
}

/// The values of probes that measure one (prometheus), per phase, with
/// the change of the mean against the baseline.
fn values(o: &mut String, r: &Report) {
    let measuring: Vec<&ProbeReport> = r
        .probes
        .iter()
        .filter(|p| p.baseline.value_mean.is_some() || p.during.value_mean.is_some() || p.recovery.value_mean.is_some())
        .collect();
    if measuring.is_empty() {
        return;
    }
    let num = |v: Option<f64>| v.map(crate::verdict::num).unwrap_or_else(|| "–".into());
    let _ = writeln!(o, "| probe | phase | min | mean | max | mean vs baseline |");
    let _ = writeln!(o, "|---|---|---:|---:|---:|---:|");
    for p in measuring {
        for (phase, s) in [
            ("baseline", &p.baseline),
            ("during", &p.during),
            ("recovery", &p.recovery),
        ] {
            let delta = s.value_mean.zip(p.baseline.value_mean).map(|(v, b)| v - b);
            let delta = match (phase, delta) {
                ("baseline", _) | (_, None) => "–".to_string(),
                (_, Some(d)) => format!("{}{}", if d >= 0.0 { "+" } else { "" }, crate::verdict::num(d)),
            };
            let name = if phase == "baseline" { p.name.as_str() } else { "" };
            let _ = writeln!(
                o,
                "| {name} | {phase} | {} | {} | {} | {delta} |",
                num(s.value_min),
                num(s.value_mean),
                num(s.value_max)
            );
        }
    }
    let _ = writeln!(o);
}

fn probes_and_tolerances(o: &mut String, r: &Report) {
    let _ = writeln!(o, "## Probes\n");
    let _ = writeln!(o, "| probe | phase | samples | success | p50 | p90 | p99 | max |");
    let _ = writeln!(o, "|---|---|---:|---:|---:|---:|---:|---:|");
    for p in &r.probes {
        stats_row(o, &p.name, "baseline", &p.baseline);
        stats_row(o, "", "during", &p.during);
        stats_row(o, "", "recovery", &p.recovery);
    }
    let _ = writeln!(o);
    values(o, r);
    for p in &r.probes {
        let _ = writeln!(o, "**{}** ({} {}):", p.name, p.kind, p.target);
        if p.during.samples > 0 {
            let _ = writeln!(
                o,
                "- during vs baseline: success {:+.1} points, p50 {}, p99 {}",
                p.delta.success_rate_points,
                signed_ms(p.delta.p50_ms),
                signed_ms(p.delta.p99_ms)
            );
        }
        let ttr = match (p.degraded, p.recovered, p.time_to_recovery_ms) {
            (false, _, _) => "not degraded".to_string(),
            (true, true, Some(t)) => format!("degraded, recovered {} after the first injection", secs(t)),
            (true, _, _) => "degraded and **did not recover** before the run ended".to_string(),
        };
        let _ = writeln!(o, "- time to recovery: {ttr}");
        if !p.errors.is_empty() {
            let errs: Vec<String> = p.errors.iter().map(|(e, n)| format!("{e} ×{n}")).collect();
            let _ = writeln!(o, "- errors after injection: {}", errs.join(", "));
        }
        let _ = writeln!(o);
    }

    let _ = writeln!(o, "## Tolerances\n");
    let _ = writeln!(o, "| probe | tolerance | baseline | during | verdict |");
    let _ = writeln!(o, "|---|---|---|---|---|");
    for p in &r.probes {
        for t in &p.tolerances {
            let cell = |c: &Option<crate::verdict::Check>| match c {
                Some(c) => format!(
                    "{} ({} {})",
                    c.measured,
                    if c.passed { "within" } else { "outside" },
                    c.allowed
                ),
                None => "–".into(),
            };
            let verdict = match (&t.steady, &t.during) {
                (Some(s), _) if !s.passed => "not steady",
                (_, Some(d)) if !d.passed => "**violated**",
                (_, Some(_)) => "held",
                _ => "not evaluated",
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                p.name,
                t.tolerance,
                cell(&t.steady),
                cell(&t.during),
                verdict
            );
        }
    }
    let _ = writeln!(o);
}

fn faults(o: &mut String, r: &Report) {
    let _ = writeln!(o, "## Faults\n");
    if !r.events.is_empty() && r.faults.is_empty() {
        let _ = writeln!(o, "Faults as recorded in the events below.\n");
    } else if r.faults.iter().all(|f| f.targets.is_empty()) {
        let _ = writeln!(o, "Nothing was injected.\n");
    }
    for f in &r.faults {
        let _ = writeln!(o, "**{}** `{}` ({}: {})\n", f.name, f.fault_id, f.kind, f.summary);
        if f.targets.is_empty() {
            continue;
        }
        let _ = writeln!(
            o,
            "| agent | state | backend | injected | restored | restored by | detail |"
        );
        let _ = writeln!(o, "|---|---|---|---:|---:|---|---|");
        for t in &f.targets {
            let at = |v: Option<u64>| v.map(secs).unwrap_or_else(|| "–".into());
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} |",
                t.agent_id,
                t.state,
                t.backend,
                at(t.injected_at_ms),
                at(t.restored_at_ms),
                t.restored_by.as_deref().unwrap_or("–"),
                t.detail.replace('|', "\\|")
            );
        }
        for t in &f.targets {
            if !t.peers.is_empty() {
                let _ = writeln!(o, "- {}: peers {}", t.agent_id, t.peers.join(", "));
            }
            if !t.objects.is_empty() {
                let _ = writeln!(o, "- {}: kernel objects {}", t.agent_id, t.objects.join("; "));
            }
            if !t.figures.is_empty() {
                let figures: Vec<String> = t.figures.iter().map(ToString::to_string).collect();
                let _ = writeln!(o, "- {}: {}", t.agent_id, figures.join(", "));
            }
            for n in &t.notes {
                let _ = writeln!(o, "- {}: {n}", t.agent_id);
            }
        }
        let _ = writeln!(o);
    }
}

/// Each stop condition: how often it was evaluated, when it first turned
/// true and how long the faults stayed after that.
fn stop_conditions(o: &mut String, r: &Report) {
    if r.stop_conditions.is_empty() {
        return;
    }
    let _ = writeln!(o, "## Stop conditions\n");
    let _ = writeln!(
        o,
        "| condition | severity | query | evaluations | errors | true at | value | restored after |"
    );
    let _ = writeln!(o, "|---|---|---|---:|---:|---:|---:|---:|");
    for s in &r.stop_conditions {
        let errors = s.evaluations.iter().filter(|e| e.error.is_some()).count();
        let _ = writeln!(
            o,
            "| {} | {} | `{}` | {} | {} | {} | {} | {} |",
            s.name.replace('|', "\\|"),
            s.severity,
            s.query.replace('|', "\\|"),
            s.evaluations.len(),
            errors,
            s.fired_at_ms.map(secs).unwrap_or_else(|| "never".into()),
            s.value.map(crate::verdict::num).unwrap_or_else(|| "–".into()),
            // In ms: an abort path is measured in milliseconds.
            s.restored_after_ms
                .map(|ms| format!("{ms} ms"))
                .unwrap_or_else(|| "–".into()),
        );
    }
    let _ = writeln!(o);
}

/// Each error-budget gate with the budget left before and after the run.
fn error_budgets(o: &mut String, r: &Report) {
    if r.error_budgets.is_empty() {
        return;
    }
    let pct = |v: Option<f64>| {
        v.map(|v| format!("{}%", crate::verdict::num((v * 1000.0).round() / 10.0)))
            .unwrap_or_else(|| "–".into())
    };
    let _ = writeln!(o, "## Error budget\n");
    let _ = writeln!(
        o,
        "| error ratio | objective | window | min remaining | before | after |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|");
    for b in &r.error_budgets {
        let _ = writeln!(
            o,
            "| `{}` | {} | {} | {} | {} | {} |",
            b.query.replace('|', "\\|"),
            pct(Some(b.objective)),
            crate::experiment::fmt_duration(std::time::Duration::from_millis(b.window_ms)),
            pct(Some(b.min_remaining)),
            pct(b.remaining_before),
            pct(b.remaining_after),
        );
        if let Some(e) = &b.error {
            let _ = writeln!(o, "\n- {e}");
        }
    }
    let _ = writeln!(o);
}
