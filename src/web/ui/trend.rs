//! The edge page's trend: the edge's calls, error rate and p95 over its suite's last runs, as
//! one inline SVG drawn on the server (no script, no external asset, as the UI's policy wants).
//!
//! Three bands share one column per run, oldest on the left: calls as bars coloured by the
//! edge's status in that run, the error rate and the p95 as points joined by lines (a run that
//! did not cross the edge breaks the line). Each column is a link to that run's edge page and
//! carries a tooltip (`<title>`) with the run's figures; the page's own run is outlined. The
//! same figures are in a table below it, for reading without a pointer. Only our own numbers
//! are written unescaped (coordinates); names go through maud's escaping.

use maud::{Markup, html};

use super::href;
use super::layout;
use crate::report::HistoryPoint;

const WIDTH: f64 = 720.0;
const LEFT: f64 = 92.0;
const BAND: f64 = 56.0;
const GAP: f64 = 14.0;

/// A coordinate, short.
fn n(v: f64) -> String {
    format!("{v:.1}")
}

fn rate(p: &HistoryPoint) -> Option<f64> {
    (p.calls > 0).then(|| p.errors as f64 * 100.0 / p.calls as f64)
}

/// The chart and its table. `current` is the id of the page's run.
pub fn chart(
    suite: &str,
    points: &[HistoryPoint],
    caller: &str,
    callee: &str,
    current: &str,
) -> Markup {
    if points.is_empty() {
        return html! { p.muted { "No run of this suite to compare." } };
    }
    let cols = points.len() as f64;
    let step = (WIDTH - LEFT) / cols;
    let x = |i: usize| LEFT + step * (i as f64 + 0.5);
    let max_calls = points.iter().map(|p| p.calls).max().unwrap_or(0).max(1) as f64;
    let max_rate = points
        .iter()
        .filter_map(rate)
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let max_p95 = points
        .iter()
        .filter_map(|p| p.p95_ms)
        .fold(0.0_f64, f64::max)
        .max(0.001);
    let top = |band: usize| 4.0 + band as f64 * (BAND + GAP);
    let bottom = |band: usize| top(band) + BAND;
    // A band's line through the runs that have a value, broken where one has none.
    let line = |band: usize, value: &dyn Fn(&HistoryPoint) -> Option<f64>, max: f64| {
        let mut d = String::new();
        let mut pen_down = false;
        for (i, p) in points.iter().enumerate() {
            match value(p) {
                Some(v) => {
                    let y = bottom(band) - v / max * BAND;
                    d.push_str(&format!(
                        "{}{} {} ",
                        if pen_down { "L" } else { "M" },
                        n(x(i)),
                        n(y)
                    ));
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        d
    };
    let rate_d = line(1, &rate, max_rate);
    let p95_d = line(2, &|p: &HistoryPoint| p.p95_ms, max_p95);
    let height = top(3) + 14.0;
    let bar_w = (step * 0.7).max(1.0);
    html! {
        p.small {
            "The last " (points.len()) " runs of suite " code { (suite) } " up to this one, oldest on the left; "
            "the outlined column is this run. Bars: calls, coloured by the edge's status in that run. "
            "Hover a column for its figures; click it for that run's edge page."
        }
        div.trendwrap {
            svg.trend #trend xmlns="http://www.w3.org/2000/svg" width=(n(WIDTH)) height=(n(height))
                viewBox={ "0 0 " (n(WIDTH)) " " (n(height)) } role="img"
                aria-label="calls, error rate and p95 of the edge over the suite's last runs" {
                @for (band, label, max) in [(0, "calls", format!("{}", max_calls as u64)), (1, "error rate", format!("{max_rate:.1}%")), (2, "p95", layout::ms(Some(max_p95)))] {
                    g.band {
                        line.axis x1=(n(LEFT)) y1=(n(bottom(band))) x2=(n(WIDTH)) y2=(n(bottom(band))) {}
                        text.label x="4" y=(n(top(band) + 14.0)) { (label) }
                        text.max x="4" y=(n(top(band) + 30.0)) { "max " (max) }
                    }
                }
                @for (i, p) in points.iter().enumerate() {
                    @let status = p.status.as_deref().unwrap_or("none");
                    @let h = p.calls as f64 / max_calls * BAND;
                    a href=(href::edge(&p.run, caller, callee)) data-run=(p.run) {
                        @if p.run == current {
                            rect.current x=(n(x(i) - step / 2.0)) y="0" width=(n(step)) height=(n(height - 12.0)) {}
                        }
                        rect class={ "bar st-" (layout::status_class(status)) }
                            x=(n(x(i) - bar_w / 2.0)) y=(n(bottom(0) - h)) width=(n(bar_w)) height=(n(h)) {}
                        @if let Some(r) = rate(p) {
                            circle.rate cx=(n(x(i))) cy=(n(bottom(1) - r / max_rate * BAND)) r="2.5" {}
                        }
                        @if let Some(v) = p.p95_ms {
                            circle.p95 cx=(n(x(i))) cy=(n(bottom(2) - v / max_p95 * BAND)) r="2.5" {}
                        }
                        // The whole column answers the pointer.
                        rect.hit x=(n(x(i) - step / 2.0)) y="0" width=(n(step)) height=(n(height - 12.0)) {
                            title {
                                (p.name) " (" (layout::time(p.created_ns)) "): " (status) ", "
                                (p.calls) " calls, " (p.errors) " errors"
                                @if let Some(r) = rate(p) { " (" (format!("{r:.1}")) "%)" }
                                ", p95 " (layout::ms(p.p95_ms))
                            }
                        }
                    }
                }
                path.rate d=(rate_d) {}
                path.p95 d=(p95_d) {}
            }
        }
        details.trend-table {
            summary { "The figures" }
            table #trend-table {
                thead { tr { th { "run" } th { "started" } th { "status" } th.num { "calls" } th.num { "errors" } th.num { "error rate" } th.num { "p95" } } }
                tbody {
                    @for p in points {
                        tr data-run=(p.run) {
                            td { a href=(href::edge(&p.run, caller, callee)) { (p.name) } @if p.run == current { " (this run)" } }
                            td.small { (layout::time(p.created_ns)) }
                            td { @match &p.status { Some(s) => { (layout::status_badge(s)) } None => { span.muted { "not listed" } } } }
                            td.num { (p.calls) }
                            td.num { (p.errors) }
                            td.num { @match rate(p) { Some(r) => { (format!("{r:.1}%")) } None => { "–" } } }
                            td.num { (layout::ms(p.p95_ms)) }
                        }
                    }
                }
            }
        }
    }
}
