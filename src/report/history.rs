//! History's answers as JSON and text: `tracecov flaky` and `GET /api/flaky` (DESIGN's
//! `[{"caller", "callee", "operation", "runs", "failed_runs", "classes", "tests",
//! "last_failed_run"}]`), and `GET /api/history`'s points (`[{"run", "name", "created_ns",
//! "status", "calls", "errors", "p95_ms"}]`).
//!
//! Owns those field names, as `json` owns the report's; the structs also deserialize, so that
//! `tracecov flaky --server` reads the API's answer back and renders it as text. Every name that
//! came from a span goes through the `Redactor`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::history::{FlakyHop, TrendPoint};
use crate::redact::Redactor;

/// One flaky hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flaky {
    pub caller: String,
    pub callee: String,
    pub operation: String,
    /// Runs of the window that crossed the hop (or had a failure placed on it).
    pub runs: u64,
    /// Of those, the runs with a failure placed on it.
    pub failed_runs: u64,
    /// Times the hop's outcome changed from one of those runs to the next.
    pub flips: u64,
    /// Per error class, the failed runs with a failure of that class on the hop.
    pub classes: BTreeMap<String, u64>,
    /// The tests whose failures were placed on it.
    pub tests: Vec<String>,
    pub last_failed_run: RunName,
}

/// A run by id and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunName {
    pub id: String,
    pub name: String,
}

/// One run of an edge's or interface's trend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// The run's id.
    pub run: String,
    pub name: String,
    pub created_ns: u64,
    /// The item's coverage status in that run, as its report names it; null where the report
    /// would not list the item.
    pub status: Option<String>,
    pub calls: u64,
    pub errors: u64,
    /// The calling side's p95 (the answering side's where no calling span measured it); null
    /// with no call.
    pub p95_ms: Option<f64>,
}

/// Flaky hops as the JSON answer holds them, redacted.
pub fn flaky_json(hops: &[FlakyHop], r: &Redactor) -> Vec<Flaky> {
    hops.iter()
        .map(|h| Flaky {
            caller: r.text(&h.caller),
            callee: r.text(&h.callee),
            operation: r.text(&h.operation),
            runs: h.runs,
            failed_runs: h.failed_runs,
            flips: h.flips,
            classes: h.classes.clone(),
            tests: h.tests.iter().map(|t| r.text(t)).collect(),
            last_failed_run: RunName {
                id: h.last_failed_run.0.clone(),
                name: r.text(&h.last_failed_run.1),
            },
        })
        .collect()
}

/// A trend as the JSON answer holds it.
pub fn history_json(points: &[TrendPoint], r: &Redactor) -> Vec<HistoryPoint> {
    points
        .iter()
        .map(|p| HistoryPoint {
            run: p.run.clone(),
            name: r.text(&p.name),
            created_ns: p.created_ns,
            status: p.status.map(|s| s.as_str().to_owned()),
            calls: p.calls,
            errors: p.errors,
            p95_ms: p.p95_ns.map(super::json::ms),
        })
        .collect()
}

/// `tracecov flaky`'s text: a header naming the suite and the window, then a paragraph a hop.
pub fn flaky_text(suite: &str, last: usize, hops: &[Flaky]) -> String {
    let mut out = String::new();
    let clean = |s: &str| super::strip_controls(s).replace('\n', " ");
    let window = format!("suite {:?}, its last {last} runs", clean(suite));
    if hops.is_empty() {
        let _ = writeln!(out, "no flaky hop in {window}");
        return out;
    }
    let _ = writeln!(out, "flaky hops in {window} ({}):", hops.len());
    for h in hops {
        let classes: Vec<String> = h
            .classes
            .iter()
            .map(|(c, n)| format!("{c} in {n}"))
            .collect();
        let _ = writeln!(
            out,
            "  {} -> {} {}",
            clean(&h.caller),
            clean(&h.callee),
            clean(&h.operation)
        );
        let _ = writeln!(
            out,
            "    failed in {} of {} runs, outcome changed {} times; {}",
            h.failed_runs,
            h.runs,
            h.flips,
            classes.join(", ")
        );
        let tests: Vec<String> = h.tests.iter().map(|t| clean(t)).collect();
        let _ = writeln!(out, "    tests: {}", tests.join(", "));
        let _ = writeln!(
            out,
            "    last failed in run {} ({})",
            clean(&h.last_failed_run.name),
            clean(&h.last_failed_run.id)
        );
    }
    out
}
