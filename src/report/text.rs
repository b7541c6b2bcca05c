//! The plain-text summary of a report, for a terminal: tests, failures with their failing hop,
//! class, summary and link, the interfaces slower than the baseline, the edges with their calls, errors (by class), latency, interfaces
//! and tests, and diagnostics.
//!
//! Colours are the caller's choice (`text_styled`): the CLI asks for them only on a terminal and
//! never with `NO_COLOR`; `text` has none, so it reads the same piped into a file or a CI log.
//! Terminal control characters from span content are stripped from the whole report first
//! (`escape::sanitized`), so a span name cannot move the cursor, retitle the terminal or
//! recolour what follows.

use std::fmt::Write;

use super::escape;
use super::json::{Percentiles, Report};

/// The text report without colours.
pub fn text(report: &Report) -> String {
    text_styled(report, false)
}

/// SGR codes, applied only when colour is on.
#[derive(Clone, Copy)]
pub(super) struct Paint(pub bool);

impl Paint {
    pub(super) fn paint(self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\u{1b}[{code}m{text}\u{1b}[0m")
        } else {
            text.to_owned()
        }
    }

    /// A coverage status in its colour: failing red, untested yellow, covered green.
    pub(super) fn status(self, status: &str) -> String {
        let code = match status {
            "failing" => "1;31",
            "untested" => "33",
            "covered" => "32",
            "unexpected" => "35",
            _ => "2",
        };
        self.paint(code, status)
    }
}

/// The text report, with ANSI colours when `color` is set.
pub fn text_styled(report: &Report, color: bool) -> String {
    let report = &escape::sanitized(report);
    let paint = Paint(color);
    let mut out = String::new();
    let run = &report.run;
    let _ = writeln!(
        out,
        "run {} ({}): {} spans in {} traces",
        run.name, run.id, run.spans, run.traces
    );
    if run.aged_out_traces > 0 {
        let _ = writeln!(
            out,
            "note: {} more traces of this run were removed by retention; this report covers the rest",
            run.aged_out_traces
        );
    }
    let _ = writeln!(
        out,
        "tests: {} total, {} passed, {} failed",
        run.tests.total, run.tests.passed, run.tests.failed
    );

    if !report.failures.is_empty() {
        out.push('\n');
        let title = format!("failures ({}):", report.failures.len());
        let _ = writeln!(out, "{}", paint.paint("1;31", &title));
    }
    for f in &report.failures {
        let name = f.test.as_deref().unwrap_or("request");
        match &f.hop {
            Some(hop) => {
                let _ = writeln!(
                    out,
                    "  {name}: {} at {} -> {} {}{}",
                    paint.paint("31", &f.class),
                    hop.caller,
                    hop.callee,
                    hop.operation,
                    if f.flaky {
                        paint.paint("33", " (flaky: it also passed in recent runs)")
                    } else {
                        String::new()
                    }
                );
            }
            None => {
                let _ = writeln!(out, "  {name}: {}", paint.paint("31", &f.class));
            }
        }
        let _ = writeln!(out, "    {}", f.summary);
        let _ = writeln!(out, "    {}", f.link);
    }
    if let Some(vs) = &report.violations {
        out.push('\n');
        if vs.is_empty() {
            out.push_str("expectations: every one held\n");
        } else {
            let title = format!("violations ({}):", vs.len());
            let _ = writeln!(out, "{}", paint.paint("1;33", &title));
        }
        for v in vs {
            let _ = writeln!(out, "  {}", v.line());
            let _ = writeln!(out, "    {}", v.link);
        }
    }

    if let Some(regressions) = &report.regressions {
        out.push('\n');
        if regressions.is_empty() {
            out.push_str("no interface is slower than the baseline\n");
        } else {
            let title = format!("slower than the baseline ({}):", regressions.len());
            let _ = writeln!(out, "{}", paint.paint("1;33", &title));
        }
        for r in regressions {
            let _ = writeln!(
                out,
                "  {} -> {} {}: p95 {} -> {} ms (x{}, {} -> {} calls); blamed: {}",
                r.caller,
                r.callee,
                r.operation,
                num(r.base_p95_ms),
                num(r.run_p95_ms),
                r.ratio,
                r.base_calls,
                r.calls,
                r.blamed.as_deref().unwrap_or("none")
            );
        }
    }

    out.push('\n');
    if report.edges.is_empty() {
        out.push_str("no calls between services were seen\n");
    } else {
        let _ = writeln!(out, "edges ({}):", report.edges.len());
    }
    for edge in &report.edges {
        let _ = writeln!(
            out,
            "  {} -> {}{}: {}, {}{}; client {}; server {}",
            edge.caller,
            edge.callee,
            status(paint, edge.status.as_deref(), edge.critical),
            plural(edge.calls, "call"),
            plural(edge.errors, "error"),
            classes(&edge.error_classes),
            latency(&edge.latency_ms.client),
            latency(&edge.latency_ms.server),
        );
        for i in &edge.interfaces {
            let _ = writeln!(
                out,
                "      {}{}: {}, {}{}",
                i.operation,
                status(paint, i.status.as_deref(), i.critical),
                plural(i.calls, "call"),
                plural(i.errors, "error"),
                classes(&i.error_classes)
            );
        }
        if edge.tests.is_empty() {
            out.push_str("    tests: none\n");
        } else {
            let _ = writeln!(out, "    tests: {}", edge.tests.join(", "));
        }
    }

    out.push_str(&super::coverage::text(report, paint));

    let d = &run.diagnostics;
    out.push('\n');
    let _ = writeln!(
        out,
        "diagnostics: {} orphans, {} duplicate span ids, {} parent cycles, {} missing end times, \
         {} clock skew, {} unresolved calls",
        d.orphans,
        d.duplicate_span_ids,
        d.parent_cycles,
        d.missing_end_times,
        d.clock_skew,
        d.unresolved_calls
    );
    if !d.propagation_breaks.is_empty() {
        let breaks: Vec<String> = d
            .propagation_breaks
            .iter()
            .map(|(service, n)| format!("{service} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "server spans with no parent (context propagation): {}",
            breaks.join(", ")
        );
    }
    if d.walks_cut_short > 0 {
        let _ = writeln!(
            out,
            "origin walks cut short at depth 512: {} (their origin may be deeper than the span named)",
            d.walks_cut_short
        );
    }
    out
}

/// ` (timeout 2, callee_error 1)`, or nothing when no error was classified.
fn classes(classes: &std::collections::BTreeMap<String, u64>) -> String {
    if classes.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = classes.iter().map(|(c, n)| format!("{c} {n}")).collect();
    format!(" ({})", parts.join(", "))
}

/// ` [covered]`, ` [untested, critical]`: nothing when the report has no coverage.
fn status(paint: Paint, status: Option<&str>, critical: Option<bool>) -> String {
    match (status, critical) {
        (Some(s), Some(true)) => format!(" [{}, critical]", paint.status(s)),
        (Some(s), _) => format!(" [{}]", paint.status(s)),
        (None, _) => String::new(),
    }
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn latency(p: &Percentiles) -> String {
    match (p.p50, p.p95, p.p99) {
        (Some(a), Some(b), Some(c)) => {
            format!("p50 {} p95 {} p99 {} ms", num(a), num(b), num(c))
        }
        _ => "n/a".to_owned(),
    }
}

/// Three significant-ish digits: 1234 ms, 12.3 ms, 1.23 ms, 0.012 ms.
fn num(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else if ms >= 1.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.3}")
    }
}
