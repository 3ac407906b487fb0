//! The Experiments page (every experiment in the history) and one
//! experiment's trend: its outcomes and key figures over its runs — p99
//! latency during the fault, success rate during the fault, time to
//! recovery — with regressions marked ([`crate::trend`]) and drawn.
//!
//! With several probes, a run's figure is its worst probe's: the highest
//! p99, the lowest success rate, the longest time to recovery.

use std::fmt::Write;

use super::auth::Session;
use super::chart::{self, Series};
use super::http::{esc, parse_form, Request, Response};
use super::layout;
use crate::report::Report;
use crate::server::Coordinator;
use crate::trend::{self, Margin};

/// Most runs drawn on a trend.
pub const TREND_RUNS: usize = 100;
/// Most experiments listed.
pub const EXPERIMENTS_SHOWN: usize = 500;

pub fn index(c: &Coordinator, session: &Session) -> Response {
    let rows = match c.store.experiments(EXPERIMENTS_SHOWN) {
        Ok(r) => r,
        Err(e) => return Response::text(500, format!("cannot read the run history: {e}\n")),
    };
    let mut b =
        String::from("<p>Every experiment in the run history, most recently run first. Open one for its trend.</p>\n");
    b.push_str("<table id=\"experiments\"><thead><tr><th>Experiment</th><th>Runs</th><th>Last run</th><th>Last outcome</th></tr></thead><tbody>\n");
    for e in rows {
        let _ = writeln!(
            b,
            "<tr><td><a href=\"/experiments/trend?name={}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            layout::query_value(&e.name),
            esc(&e.name),
            e.runs,
            layout::time(e.last_started_unix_ms),
            esc(&e.last_status)
        );
    }
    b.push_str("</tbody></table>");
    layout::page(session, "Experiments", &b, false)
}

/// One run's key figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub p99_ms: Option<f64>,
    pub success_percent: Option<f64>,
    pub recovery_ms: Option<f64>,
}

impl Figures {
    pub fn of(r: &Report) -> Figures {
        let during: Vec<_> = r.probes.iter().map(|p| &p.during).filter(|d| d.samples > 0).collect();
        Figures {
            p99_ms: during.iter().filter_map(|d| d.p99_ms).reduce(f64::max),
            success_percent: during.iter().map(|d| d.success_rate * 100.0).reduce(f64::min),
            recovery_ms: r
                .probes
                .iter()
                .filter_map(|p| p.time_to_recovery_ms)
                .max()
                .map(|v| v as f64),
        }
    }
}

pub fn page(c: &Coordinator, session: &Session, req: &Request) -> Response {
    let q = parse_form(&req.query);
    let Some(name) = q.get("name").filter(|n| !n.is_empty()) else {
        return Response::text(400, "which experiment? /experiments/trend?name=NAME\n");
    };
    let rows = match c.store.experiment_runs(name, TREND_RUNS) {
        Ok(r) => r,
        Err(e) => return Response::text(500, format!("cannot read the run history: {e}\n")),
    };
    if rows.is_empty() {
        return Response::text(404, format!("no runs of experiment {name:?} on this coordinator\n"));
    }
    // Oldest first.
    let rows: Vec<_> = rows.into_iter().rev().collect();
    let figures: Vec<Figures> = rows
        .iter()
        .map(|(_, json)| {
            json.as_deref()
                .and_then(|j| serde_json::from_str::<Report>(j).ok())
                .map(|r| Figures::of(&r))
                .unwrap_or_default()
        })
        .collect();
    let outcomes: Vec<&str> = rows.iter().map(|(r, _)| r.status.as_str()).collect();
    let failed_after_pass = trend::outcome_regressions(&outcomes);
    let titles: Vec<String> = rows
        .iter()
        .map(|(r, _)| format!("{} {} ({})", r.run_id, layout::time(r.started_unix_ms), r.status))
        .collect();
    let figure = |get: fn(&Figures) -> Option<f64>, margin: Margin, label: &str, unit: &str, floor: (f64, f64)| {
        let values: Vec<Option<f64>> = figures.iter().map(get).collect();
        let points = trend::points(&values, margin);
        let reasons: Vec<Option<String>> = points
            .iter()
            .map(|p| {
                p.regression.then(|| {
                    format!(
                        "{label} {}{unit} vs median {}{unit} of the previous runs",
                        chart::num(p.value.unwrap_or_default()),
                        chart::num(p.median_before.unwrap_or_default())
                    )
                })
            })
            .collect();
        let svg = chart::line(&Series {
            label: &format!("{label} ({unit})"),
            values: &values,
            regressions: &reasons,
            titles: &titles,
            floor,
        });
        (values, reasons, svg)
    };
    let (p99, p99_why, p99_svg) = figure(|f| f.p99_ms, Margin::LATENCY_MS, "p99 during", "ms", (0.0, 0.0));
    let (succ, succ_why, succ_svg) = figure(
        |f| f.success_percent,
        Margin::SUCCESS_PERCENT,
        "success rate during",
        "%",
        (0.0, 100.0),
    );
    let (ttr, ttr_why, ttr_svg) = figure(
        |f| f.recovery_ms,
        Margin::LATENCY_MS,
        "time to recovery",
        "ms",
        (0.0, 0.0),
    );
    let regressions = (0..rows.len())
        .filter(|&i| failed_after_pass[i] || p99_why[i].is_some() || succ_why[i].is_some() || ttr_why[i].is_some())
        .count();
    let passed = outcomes.iter().filter(|o| **o == "passed").count();
    let mut b = format!(
        "<p>{} runs (oldest first below; the newest {TREND_RUNS} at most), {passed} passed, <b id=\"regression-count\">{regressions}</b> with a regression.</p>\n\
<p>A run regresses when it fails after a passing run, or when a figure is worse than the median of the previous runs: \
p99 {}; success rate {}; time to recovery {}. With several probes, the worst probe's figure counts.</p>\n",
        rows.len(),
        esc(&Margin::LATENCY_MS.describe()),
        esc(&Margin::SUCCESS_PERCENT.describe()),
        esc(&Margin::LATENCY_MS.describe()),
    );
    let _ = write!(
        b,
        "<figure>{p99_svg}</figure>\n<figure>{succ_svg}</figure>\n<figure>{ttr_svg}</figure>\n"
    );
    b.push_str("<table id=\"trend\"><thead><tr><th>Started</th><th>Run</th><th>Outcome</th><th>p99 during (ms)</th><th>Success during (%)</th><th>Time to recovery (ms)</th><th>Regression</th></tr></thead><tbody>\n");
    let cell = |v: Option<f64>| v.map(chart::num).unwrap_or_else(|| "-".into());
    for (i, (r, _)) in rows.iter().enumerate() {
        let mut why: Vec<String> = Vec::new();
        if failed_after_pass[i] {
            why.push(format!("{} after a passing run", r.status));
        }
        why.extend([&p99_why[i], &succ_why[i], &ttr_why[i]].into_iter().flatten().cloned());
        let class = if why.is_empty() { "" } else { " class=\"regression\"" };
        let id = esc(&r.run_id);
        let _ = writeln!(
            b,
            "<tr{class}><td>{}</td><td><a href=\"/runs/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            layout::time(r.started_unix_ms),
            esc(&r.status),
            cell(p99[i]),
            cell(succ[i]),
            cell(ttr[i]),
            esc(&why.join("; ")),
        );
    }
    b.push_str("</tbody></table>");
    layout::page(session, &format!("Experiment trend: {name}"), &b, false)
}
