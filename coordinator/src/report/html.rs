//! A self-contained HTML report: no scripts, no fonts, no network fetches.
//! One SVG timeline per probe — latency of successful samples as a line,
//! failed samples as red marks along the top, the baseline p50–p99 band, the
//! fault windows shaded, and restore and recovery marked; for a probe that
//! measures a value (prometheus) a second SVG of the value itself, with the
//! baseline mean and the probe's bounds — followed by the tables of the
//! Markdown report, the stop conditions and the error budgets.

use std::fmt::Write;

use super::junit::escape;
use super::model::{ProbeReport, Report, TargetReport};
use crate::outcome::Phase;
use crate::stats::PhaseStats;

/// Colour of the latency line (tests look for it in screenshots).
pub const LINE_COLOUR: &str = "#1f77b4";
const ERROR_COLOUR: &str = "#d62728";
/// Colour of a metric probe's value line.
pub const VALUE_COLOUR: &str = "#9467bd";
const W: f64 = 900.0;
const H: f64 = 240.0;
const ML: f64 = 56.0;
const MR: f64 = 16.0;
const MT: f64 = 22.0;
const MB: f64 = 30.0;

fn fmt_ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1} ms")).unwrap_or_else(|| "–".into())
}

fn stats_cells(s: &PhaseStats) -> String {
    format!(
        "<td>{}</td><td>{:.1}%</td><td>{}</td><td>{}</td><td>{}</td>",
        s.samples,
        s.success_rate * 100.0,
        fmt_ms(s.p50_ms),
        fmt_ms(s.p99_ms),
        fmt_ms(s.max_ms)
    )
}

/// The SVG timeline of one probe.
pub fn timeline(r: &Report, p: &ProbeReport) -> String {
    let end = (r.duration_ms.max(1)) as f64;
    let x = |ms: f64| ML + (ms / end).clamp(0.0, 1.0) * (W - ML - MR);
    let ok: Vec<(f64, f64)> = p
        .samples
        .iter()
        .filter(|s| s.ok)
        .map(|s| (s.at_ms as f64, s.latency_ms))
        .collect();
    let top = ok
        .iter()
        .map(|(_, l)| *l)
        .chain(p.baseline.p99_ms)
        .fold(1.0_f64, f64::max)
        * 1.15;
    let y = |ms: f64| H - MB - (ms / top).clamp(0.0, 1.0) * (H - MT - MB);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="{} latency and errors over time">"#,
        escape(&p.name)
    );
    let _ = write!(s, r##"<rect x="0" y="0" width="{W}" height="{H}" fill="#ffffff"/>"##);
    fault_windows(&mut s, r, &x);
    // Baseline band p50..p99.
    if let (Some(lo), Some(hi)) = (p.baseline.p50_ms, p.baseline.p99_ms) {
        let _ = write!(
            s,
            r##"<rect class="baseline" x="{ML}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#2ca02c" fill-opacity="0.18"><title>baseline p50–p99</title></rect>"##,
            y(hi),
            W - ML - MR,
            (y(lo) - y(hi)).max(1.0)
        );
    }
    // Axes and ticks.
    let _ = write!(
        s,
        r##"<line x1="{ML}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#444"/><line x1="{ML}" y1="{MT}" x2="{ML}" y2="{:.1}" stroke="#444"/>"##,
        H - MB,
        W - MR,
        H - MB,
        H - MB
    );
    for frac in [0.0, 0.5, 1.0] {
        let v = top * frac;
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end" fill="#444">{v:.0} ms</text>"##,
            ML - 4.0,
            y(v) + 3.0
        );
    }
    let step = ((end / 1000.0 / 10.0).ceil().max(1.0)) * 1000.0;
    let mut t = 0.0;
    while t <= end {
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="#444">{:.0}s</text>"##,
            x(t),
            H - MB + 14.0,
            t / 1000.0
        );
        t += step;
    }
    // Phase starts, restore and recovery.
    for ph in &r.phases {
        let (label, colour) = match ph.phase {
            Phase::Observe => ("inject", "#d62728"),
            Phase::Restore => ("restore", "#ff7f0e"),
            _ => continue,
        };
        let _ = write!(
            s,
            r##"<line class="{label}" x1="{0:.1}" y1="{MT}" x2="{0:.1}" y2="{1:.1}" stroke="{colour}" stroke-dasharray="4 3"/><text x="{2:.1}" y="{3:.1}" font-size="10" fill="{colour}">{label}</text>"##,
            x(ph.start_ms as f64),
            H - MB,
            x(ph.start_ms as f64) + 3.0,
            MT - 8.0
        );
    }
    let first_inject = r
        .faults
        .iter()
        .flat_map(|f| &f.targets)
        .filter_map(|t| t.injected_at_ms)
        .min();
    if let (Some(i), Some(ttr)) = (first_inject, p.time_to_recovery_ms) {
        let at = x((i + ttr) as f64);
        let _ = write!(
            s,
            r##"<line class="recovered" x1="{at:.1}" y1="{MT}" x2="{at:.1}" y2="{:.1}" stroke="#2ca02c" stroke-width="2"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#2ca02c">recovered</text>"##,
            H - MB,
            at + 3.0,
            MT + 10.0
        );
    }
    // Latency of successful samples: one line per unbroken run of them, so
    // an outage shows as a gap, not as a line drawn across it.
    let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for smp in &p.samples {
        match runs.last_mut() {
            Some(run) if smp.ok => run.push((smp.at_ms as f64, smp.latency_ms)),
            Some(run) if !run.is_empty() => runs.push(Vec::new()),
            _ => {}
        }
    }
    for run in runs.iter().filter(|r| !r.is_empty()) {
        if let [(t, l)] = run.as_slice() {
            let _ = write!(
                s,
                r#"<circle class="latency" cx="{:.1}" cy="{:.1}" r="2.5" fill="{LINE_COLOUR}"/>"#,
                x(*t),
                y(*l)
            );
            continue;
        }
        let pts: Vec<String> = run.iter().map(|(t, l)| format!("{:.1},{:.1}", x(*t), y(*l))).collect();
        let _ = write!(
            s,
            r#"<polyline class="latency" fill="none" stroke="{LINE_COLOUR}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
    }
    // Failed samples.
    for smp in p.samples.iter().filter(|s| !s.ok) {
        let cx = x(smp.at_ms as f64);
        let _ = write!(
            s,
            r#"<line class="error" x1="{cx:.1}" y1="{:.1}" x2="{cx:.1}" y2="{:.1}" stroke="{ERROR_COLOUR}" stroke-width="2"><title>{}</title></line>"#,
            MT + 2.0,
            MT + 12.0,
            escape(smp.error.as_deref().unwrap_or("failed"))
        );
    }
    s.push_str("</svg>");
    s
}

/// Shades each fault window of `r` on a chart whose x axis is `x`.
fn fault_windows(s: &mut String, r: &Report, x: &dyn Fn(f64) -> f64) {
    for f in &r.faults {
        for t in &f.targets {
            if let Some(a) = t.injected_at_ms {
                let b = t.restored_at_ms.unwrap_or(r.duration_ms) as f64;
                let _ = write!(
                    s,
                    r##"<rect class="fault" x="{:.1}" y="{MT}" width="{:.1}" height="{:.1}" fill="#d62728" fill-opacity="0.12"><title>{} on {}</title></rect>"##,
                    x(a as f64),
                    (x(b) - x(a as f64)).max(1.0),
                    H - MT - MB,
                    escape(&f.name),
                    escape(&t.agent_id)
                );
            }
        }
    }
}

/// A number for an axis label: short, whatever its size.
fn axis_num(v: f64) -> String {
    if v != 0.0 && (v.abs() < 0.01 || v.abs() >= 1e6) {
        format!("{v:.1e}")
    } else {
        crate::verdict::num((v * 1000.0).round() / 1000.0)
    }
}

/// The SVG of the values a metric probe (prometheus) measured over time:
/// one line through every sample that has a value (a failed sample's value
/// is drawn too, as a red dot: it is why it failed), the baseline mean as a
/// dashed line, the fault windows shaded. `None` for a probe without values.
pub fn value_timeline(r: &Report, p: &ProbeReport) -> Option<String> {
    let points: Vec<(f64, f64, bool)> = p
        .samples
        .iter()
        .filter_map(|s| s.value.filter(|v| v.is_finite()).map(|v| (s.at_ms as f64, v, s.ok)))
        .collect();
    if points.is_empty() {
        return None;
    }
    let end = (r.duration_ms.max(1)) as f64;
    let x = |ms: f64| ML + (ms / end).clamp(0.0, 1.0) * (W - ML - MR);
    let (mut lo, mut hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, v, _)| {
            (lo.min(*v), hi.max(*v))
        });
    if let Some(b) = p.baseline.value_mean {
        lo = lo.min(b);
        hi = hi.max(b);
    }
    lo = lo.min(0.0);
    if hi - lo < 1e-12 {
        hi = lo + 1.0;
    }
    hi += (hi - lo) * 0.15;
    let y = |v: f64| H - MB - ((v - lo) / (hi - lo)).clamp(0.0, 1.0) * (H - MT - MB);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="values" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="{} value over time">"#,
        escape(&p.name)
    );
    let _ = write!(s, r##"<rect x="0" y="0" width="{W}" height="{H}" fill="#ffffff"/>"##);
    fault_windows(&mut s, r, &x);
    let _ = write!(
        s,
        r##"<line x1="{ML}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#444"/><line x1="{ML}" y1="{MT}" x2="{ML}" y2="{:.1}" stroke="#444"/>"##,
        H - MB,
        W - MR,
        H - MB,
        H - MB
    );
    for frac in [0.0, 0.5, 1.0] {
        let v = lo + (hi - lo) * frac;
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end" fill="#444">{}</text>"##,
            ML - 4.0,
            y(v) + 3.0,
            axis_num(v)
        );
    }
    let step = ((end / 1000.0 / 10.0).ceil().max(1.0)) * 1000.0;
    let mut t = 0.0;
    while t <= end {
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="#444">{:.0}s</text>"##,
            x(t),
            H - MB + 14.0,
            t / 1000.0
        );
        t += step;
    }
    if let Some(b) = p.baseline.value_mean {
        let _ = write!(
            s,
            r##"<line class="baseline-mean" x1="{ML}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#2ca02c" stroke-dasharray="6 3"><title>baseline mean {2}</title></line>"##,
            y(b),
            W - MR,
            axis_num(b)
        );
    }
    let pts: Vec<String> = points
        .iter()
        .map(|(t, v, _)| format!("{:.1},{:.1}", x(*t), y(*v)))
        .collect();
    let _ = write!(
        s,
        r#"<polyline class="value" fill="none" stroke="{VALUE_COLOUR}" stroke-width="2" points="{}"/>"#,
        pts.join(" ")
    );
    for (t, v, ok) in &points {
        let colour = if *ok { VALUE_COLOUR } else { ERROR_COLOUR };
        let _ = write!(
            s,
            r#"<circle class="{}" cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"><title>{} at {:.1}s</title></circle>"#,
            if *ok { "value-ok" } else { "value-failed" },
            x(*t),
            y(*v),
            axis_num(*v),
            t / 1000.0
        );
    }
    s.push_str("</svg>");
    Some(s)
}

/// Renders the whole report as one HTML document.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>faultline: {name} — {outcome}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 960px; }}
h1 {{ font-size: 20px; }} h2 {{ font-size: 16px; margin-top: 28px; }}
table {{ border-collapse: collapse; margin: 8px 0; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; }}
.outcome {{ font-weight: bold; }} .passed {{ color: #2ca02c; }} .failed, .error, .aborted {{ color: #d62728; }}
.legend span {{ margin-right: 14px; font-size: 12px; }}
</style></head><body>
<h1>{name}: <span class="outcome {outcome}">{outcome}</span></h1>
<p>{reason}</p>
<table><tr><th>run</th><td>{run_id}</td></tr><tr><th>started</th><td>{started}</td></tr><tr><th>duration</th><td>{dur:.1} s</td></tr><tr><th>hypothesis</th><td>{hyp}</td></tr>{aborted}</table>
<h2>Timeline</h2>
<p class="legend"><span style="color:{LINE_COLOUR}">━ latency (successful samples)</span><span style="color:{ERROR_COLOUR}">┃ failed sample</span><span style="color:#2ca02c">▇ baseline p50–p99</span><span style="color:#d62728">▇ fault injected</span></p>
"#,
        name = escape(&r.experiment.name),
        outcome = r.outcome.as_str(),
        reason = escape(&r.reason),
        run_id = escape(&r.run_id),
        started = escape(&r.started_at),
        dur = r.duration_ms as f64 / 1000.0,
        hyp = escape(&r.experiment.hypothesis),
        aborted = r
            .aborted_by
            .as_ref()
            .map(|a| format!("<tr><th>aborted by</th><td>{}</td></tr>", escape(a)))
            .unwrap_or_default(),
    );
    for p in &r.probes {
        let _ = write!(
            o,
            "<h3>{} <small>({} {})</small></h3>\n{}\n",
            escape(&p.name),
            escape(&p.kind),
            escape(&p.target),
            timeline(r, p)
        );
        if let Some(chart) = value_timeline(r, p) {
            let _ = write!(
                o,
                "<p class=\"legend\"><span style=\"color:{VALUE_COLOUR}\">━ value</span><span style=\"color:{ERROR_COLOUR}\">● failed sample's value</span><span style=\"color:#2ca02c\">┅ baseline mean</span></p>\n{chart}\n"
            );
        }
    }
    let _ = write!(
        o,
        "<h2>Probes</h2><table><tr><th>probe</th><th>phase</th><th>samples</th><th>success</th><th>p50</th><th>p99</th><th>max</th></tr>"
    );
    for p in &r.probes {
        for (phase, st) in [
            ("baseline", &p.baseline),
            ("during", &p.during),
            ("recovery", &p.recovery),
        ] {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{phase}</td>{}</tr>",
                escape(&p.name),
                stats_cells(st)
            );
        }
    }
    o.push_str(
        "</table><h2>Tolerances</h2><table><tr><th>probe</th><th>tolerance</th><th>steady</th><th>during</th></tr>",
    );
    for p in &r.probes {
        for t in &p.tolerances {
            let cell = |c: &Option<crate::verdict::Check>| match c {
                Some(c) => format!(
                    "<td class=\"{}\">{} {} (allowed {})</td>",
                    if c.passed { "passed" } else { "failed" },
                    if c.passed { "✔" } else { "✘" },
                    escape(&c.measured),
                    escape(&c.allowed)
                ),
                None => "<td>–</td>".into(),
            };
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td>{}{}</tr>",
                escape(&p.name),
                escape(&t.tolerance),
                cell(&t.steady),
                cell(&t.during)
            );
        }
    }
    o.push_str("</table>");
    values_table(&mut o, r);
    stop_conditions(&mut o, r);
    error_budgets(&mut o, r);
    if let Some(j) = &r.judge {
        super::judge::html(&mut o, j, escape);
    }
    o.push_str("<h2>Faults</h2><table><tr><th>fault</th><th>agent</th><th>state</th><th>backend</th><th>injected</th><th>restored</th><th>restored by</th><th>detail</th><th>observed</th></tr>");
    for f in &r.faults {
        for t in &f.targets {
            let at = |v: Option<u64>| {
                v.map(|v| format!("{:.2} s", v as f64 / 1000.0))
                    .unwrap_or_else(|| "–".into())
            };
            let _ = write!(
                o,
                "<tr><td>{} <small>{}</small></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&f.name),
                escape(&f.summary),
                escape(&t.agent_id),
                escape(&t.state),
                escape(&t.backend),
                at(t.injected_at_ms),
                at(t.restored_at_ms),
                escape(t.restored_by.as_deref().unwrap_or("–")),
                escape(&t.detail),
                observed(t)
            );
        }
    }
    o.push_str("</table><h2>Phases</h2><table><tr><th>phase</th><th>start</th><th>end</th></tr>");
    for ph in &r.phases {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{:.2} s</td><td>{:.2} s</td></tr>",
            ph.phase.as_str(),
            ph.start_ms as f64 / 1000.0,
            ph.end_ms as f64 / 1000.0
        );
    }
    o.push_str("</table>");
    if !r.events.is_empty() {
        o.push_str("<h2>Recorded events</h2><p>kind <code>after</code>: reported by agents once the coordinator was back</p><table><tr><th>at</th><th>kind</th><th>event</th></tr>");
        for e in &r.events {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&e.at),
                escape(&e.kind),
                escape(&e.text)
            );
        }
        o.push_str("</table>");
    }
    o.push_str("</body></html>\n");
    o
}

/// The values of metric probes per phase, with the mean's change.
fn values_table(o: &mut String, r: &Report) {
    let measuring: Vec<&ProbeReport> = r
        .probes
        .iter()
        .filter(|p| p.samples.iter().any(|s| s.value.is_some()))
        .collect();
    if measuring.is_empty() {
        return;
    }
    let num = |v: Option<f64>| v.map(axis_num).unwrap_or_else(|| "–".into());
    o.push_str("<h2>Values</h2><table><tr><th>probe</th><th>phase</th><th>min</th><th>mean</th><th>max</th><th>mean vs baseline</th></tr>");
    for p in measuring {
        for (phase, st) in [
            ("baseline", &p.baseline),
            ("during", &p.during),
            ("recovery", &p.recovery),
        ] {
            let delta = match (phase, st.value_mean.zip(p.baseline.value_mean)) {
                ("baseline", _) | (_, None) => "–".to_string(),
                (_, Some((v, b))) => format!("{}{}", if v >= b { "+" } else { "" }, axis_num(v - b)),
            };
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{phase}</td><td>{}</td><td>{}</td><td>{}</td><td>{delta}</td></tr>",
                escape(&p.name),
                num(st.value_min),
                num(st.value_mean),
                num(st.value_max)
            );
        }
    }
    o.push_str("</table>");
}

/// Each stop condition: evaluations, when it turned true, with what value,
/// and how long the faults stayed after that.
fn stop_conditions(o: &mut String, r: &Report) {
    if r.stop_conditions.is_empty() {
        return;
    }
    o.push_str("<h2>Stop conditions</h2><table><tr><th>condition</th><th>severity</th><th>query</th><th>evaluations</th><th>errors</th><th>true at</th><th>value</th><th>restored after</th></tr>");
    let secs = |v: Option<u64>| v.map(|v| format!("{:.2} s", v as f64 / 1000.0));
    for sc in &r.stop_conditions {
        let errors = sc.evaluations.iter().filter(|e| e.error.is_some()).count();
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{errors}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(&sc.name),
            sc.severity,
            escape(&sc.query),
            sc.evaluations.len(),
            if sc.fired_at_ms.is_some() { "failed" } else { "passed" },
            secs(sc.fired_at_ms).unwrap_or_else(|| "never".into()),
            sc.value.map(axis_num).unwrap_or_else(|| "–".into()),
            sc.restored_after_ms
                .map(|ms| format!("{ms} ms"))
                .unwrap_or_else(|| "–".into())
        );
    }
    o.push_str("</table>");
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
    o.push_str("<h2>Error budget</h2><table><tr><th>error ratio</th><th>objective</th><th>window</th><th>min remaining</th><th>before</th><th>after</th><th>error</th></tr>");
    for b in &r.error_budgets {
        let _ = write!(
            o,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&b.query),
            pct(Some(b.objective)),
            crate::experiment::fmt_duration(std::time::Duration::from_millis(b.window_ms)),
            pct(Some(b.min_remaining)),
            pct(b.remaining_before),
            pct(b.remaining_after),
            escape(b.error.as_deref().unwrap_or("–"))
        );
    }
    o.push_str("</table>");
}

/// What the agent observed of one fault on one target, kind-agnostic:
/// peers, objects, figures and notes, one per line.
fn observed(t: &TargetReport) -> String {
    let mut lines = Vec::new();
    if !t.peers.is_empty() {
        lines.push(format!("peers {}", t.peers.join(", ")));
    }
    lines.extend(t.objects.iter().cloned());
    lines.extend(t.figures.iter().map(ToString::to_string));
    lines.extend(t.notes.iter().cloned());
    lines.iter().map(|l| escape(l)).collect::<Vec<_>>().join("<br>")
}
