//! An inline SVG line chart of one figure over runs (oldest on the left),
//! regressions drawn as larger red points with their reason as a tooltip.
//! Presentation attributes only (no `style`), so the console's CSP holds.

use std::fmt::Write;

use super::http::esc;

const W: f64 = 640.0;
const H: f64 = 180.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 26.0;

/// One figure to draw.
pub struct Series<'a> {
    /// What is drawn, e.g. "p99 during (ms)".
    pub label: &'a str,
    /// Oldest first; `None` leaves a gap.
    pub values: &'a [Option<f64>],
    /// Per point: why it is a regression, if it is.
    pub regressions: &'a [Option<String>],
    /// Hover text per point (e.g. the run id and time).
    pub titles: &'a [String],
    /// The y axis always includes this range (e.g. 0–100 for percentages).
    pub floor: (f64, f64),
}

/// The chart as an `<svg>` element. `data-points` counts drawn points and
/// `data-regressions` the marked ones (for tests and scripts).
pub fn line(s: &Series) -> String {
    let n = s.values.len();
    let present: Vec<f64> = s.values.iter().flatten().copied().filter(|v| v.is_finite()).collect();
    let lo = present.iter().copied().fold(s.floor.0, f64::min);
    let mut hi = present.iter().copied().fold(s.floor.1, f64::max);
    if hi <= lo {
        hi = lo + 1.0;
    }
    // Headroom above the data, not above a fixed range such as 0–100 %.
    let hi = if hi > s.floor.1 { hi + (hi - lo) * 0.05 } else { hi };
    let x = |i: usize| {
        if n <= 1 {
            LEFT + (W - LEFT - RIGHT) / 2.0
        } else {
            LEFT + (W - LEFT - RIGHT) * i as f64 / (n - 1) as f64
        }
    };
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (v - lo) / (hi - lo));
    let drawn = present.len();
    let marked = s.regressions.iter().filter(|r| r.is_some()).count();
    let mut o = format!(
        r##"<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="{label}" data-points="{drawn}" data-regressions="{marked}">"##,
        label = esc(s.label)
    );
    let _ = write!(
        o,
        r##"<rect x="0" y="0" width="{W}" height="{H}" fill="#ffffff"/><text x="{LEFT}" y="11" font-size="11" fill="#333333">{}</text>"##,
        esc(s.label)
    );
    // Axes with the range's ends.
    let _ = write!(
        o,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}" stroke="#888888"/><line x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}" stroke="#888888"/><text x="{tx}" y="{ty_hi}" font-size="10" text-anchor="end" fill="#333333">{hi}</text><text x="{tx}" y="{ty_lo}" font-size="10" text-anchor="end" fill="#333333">{lo}</text><text x="{LEFT}" y="{tb}" font-size="10" fill="#333333">oldest</text><text x="{r}" y="{tb}" font-size="10" text-anchor="end" fill="#333333">newest</text>"##,
        b = H - BOTTOM,
        r = W - RIGHT,
        tx = LEFT - 4.0,
        ty_hi = y(hi) + 10.0,
        ty_lo = y(lo),
        hi = num(hi),
        lo = num(lo),
        tb = H - 8.0,
    );
    if drawn == 0 {
        let _ = write!(
            o,
            r##"<text x="{}" y="{}" font-size="12" text-anchor="middle" fill="#666666">no value in these runs</text>"##,
            W / 2.0,
            H / 2.0
        );
    }
    // The line, broken where a run has no figure.
    let mut run: Vec<String> = Vec::new();
    let flush = |o: &mut String, run: &mut Vec<String>| {
        if run.len() > 1 {
            let _ = write!(
                o,
                r##"<polyline fill="none" stroke="#1f6fb2" stroke-width="2" points="{}"/>"##,
                run.join(" ")
            );
        }
        run.clear();
    };
    for (i, v) in s.values.iter().enumerate() {
        match v.filter(|v| v.is_finite()) {
            Some(v) => run.push(format!("{:.1},{:.1}", x(i), y(v))),
            None => flush(&mut o, &mut run),
        }
    }
    flush(&mut o, &mut run);
    for (i, v) in s.values.iter().enumerate() {
        let Some(v) = v.filter(|v| v.is_finite()) else { continue };
        let title = s.titles.get(i).map(String::as_str).unwrap_or("");
        match s.regressions.get(i).and_then(|r| r.as_deref()) {
            Some(why) => {
                let _ = write!(
                    o,
                    r##"<circle class="regression" cx="{:.1}" cy="{:.1}" r="6" fill="#c62828"><title>{}: {} — regression: {}</title></circle>"##,
                    x(i),
                    y(v),
                    esc(title),
                    num(v),
                    esc(why)
                );
            }
            None => {
                let _ = write!(
                    o,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="#1f6fb2"><title>{}: {}</title></circle>"##,
                    x(i),
                    y(v),
                    esc(title),
                    num(v)
                );
            }
        }
    }
    o.push_str("</svg>");
    o
}

/// A figure for axes and tooltips: at most one decimal.
pub fn num(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_gaps_and_regressions_are_drawn_and_counted() {
        let values = [Some(10.0), None, Some(12.0), Some(40.0)];
        let regressions = [None, None, None, Some("worse than the median".to_string())];
        let titles: Vec<String> = (0..4).map(|i| format!("r{i}")).collect();
        let svg = line(&Series {
            label: "p99 during (ms) <b>",
            values: &values,
            regressions: &regressions,
            titles: &titles,
            floor: (0.0, 0.0),
        });
        assert!(svg.starts_with("<svg class=\"chart\""), "{svg}");
        assert!(svg.contains("data-points=\"3\" data-regressions=\"1\""), "{svg}");
        // The gap splits the line: only the last two points are joined.
        assert_eq!(svg.matches("<polyline").count(), 1, "{svg}");
        assert!(svg.contains("r3: 40 — regression: worse than the median"), "{svg}");
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"), "escaped: {svg}");
        assert!(!svg.contains("style"), "no inline style under the CSP: {svg}");
        let empty = line(&Series {
            label: "x",
            values: &[None],
            regressions: &[None],
            titles: &[],
            floor: (0.0, 100.0),
        });
        assert!(empty.contains("no value in these runs") && empty.contains("data-points=\"0\""));
    }
}
