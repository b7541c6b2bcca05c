//! The JSON report's structs and their construction from a `RunGraph`.
//!
//! Owns the field names and shapes of DESIGN's "JSON report" for the run, nodes and edges. The
//! structs also deserialize, so that a client of the JSON API (`tracecov report --server`) can
//! read a report back and render it as text.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::blame::{self, Blame};
use crate::graph::{self, RunGraph};

use super::{ReportOptions, RunInfo};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub run: Run,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// Absent in reports of servers that predate blame; read as none.
    #[serde(default)]
    pub failures: Vec<Failure>,
    /// Present when the report was built with coverage (`build_with`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<super::coverage::CoverageSummary>,
    /// Broken expectations: present (possibly empty) whenever the manifest has `expect:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violations: Option<Vec<super::violations::Violation>>,
    /// The names of the manifest's expectations, in its order (with `violations`): what held is
    /// what is named here with no violation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expectations: Option<Vec<String>>,
    /// Interfaces slower than in the baseline run, the worst first: present (possibly empty)
    /// when the report was built against a baseline (`--baseline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regressions: Option<Vec<Regression>>,
}

/// One latency regression of DESIGN's `regressions` (see `crate::regressions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    pub caller: String,
    pub callee: String,
    pub operation: String,
    pub base_p95_ms: f64,
    pub run_p95_ms: f64,
    /// `run_p95_ms / base_p95_ms`, as the thresholds and the gate judged it.
    pub ratio: f64,
    pub base_calls: u64,
    pub calls: u64,
    /// The node whose own time grew most along the slow calls' critical path; null when the
    /// calls' paths were not recorded.
    pub blamed: Option<String>,
}

/// A regression as the report writes it.
pub fn regression(r: &crate::regressions::Regression) -> Regression {
    Regression {
        caller: r.caller.clone(),
        callee: r.callee.clone(),
        operation: r.operation.clone(),
        base_p95_ms: ms(r.base_p95_ns),
        run_p95_ms: ms(r.run_p95_ns),
        ratio: r.ratio,
        base_calls: r.base_calls,
        calls: r.calls,
        blamed: r.blamed.clone(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub name: String,
    pub spans: u64,
    pub traces: u64,
    /// Traces of the run that retention removed before this report (absent when none): the
    /// report covers what is left.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub aged_out_traces: u64,
    /// The suite the run belongs to (absent in a report of runs of several suites, or built
    /// without a store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
    pub tests: TestCounts,
    pub diagnostics: Diagnostics,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestCounts {
    pub total: u64,
    pub passed: u64,
    pub failed: u64,
}

/// Counts of what was odd about the run's spans; see `graph::Diagnostics` for each definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostics {
    pub orphans: u64,
    pub duplicate_span_ids: u64,
    pub parent_cycles: u64,
    pub missing_end_times: u64,
    pub clock_skew: u64,
    pub unresolved_calls: u64,
    /// Per service, its SERVER spans with no parent.
    pub propagation_breaks: BTreeMap<String, u64>,
    /// Failures whose origin walk stopped at its depth limit (a chain of spans in error deeper
    /// than 512): their origin may be deeper than the span named.
    #[serde(default)]
    pub walks_cut_short: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    /// `service`, `database`, `messaging` or `external`.
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    pub caller: String,
    pub callee: String,
    pub calls: u64,
    pub errors: u64,
    pub error_classes: BTreeMap<String, u64>,
    pub tests: Vec<String>,
    /// Coverage status (`covered`, `failing`, `untested`, `stubbed`, `unexpected`), with
    /// `expected` and `critical`: present when the report was built with coverage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<bool>,
    pub latency_ms: LatencyMs,
    pub interfaces: Vec<Interface>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyMs {
    pub client: Percentiles,
    pub server: Percentiles,
}

/// Milliseconds, to the microsecond; `null` when there was no sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub operation: String,
    pub calls: u64,
    pub errors: u64,
    pub error_classes: BTreeMap<String, u64>,
    pub tests: Vec<String>,
    /// As on `Edge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<bool>,
}

/// One failure of DESIGN's `failures`: where it is placed, its class, hop, blamed node,
/// summary, evidence, collateral and link. Every text in it is redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub trace_id: String,
    /// The span the failure is placed on.
    pub span_id: String,
    pub test: Option<String>,
    pub class: String,
    /// Null for `silent`.
    pub hop: Option<FailureHop>,
    pub blamed: Option<String>,
    pub summary: String,
    pub evidence: Evidence,
    pub collateral: Vec<String>,
    pub link: String,
    /// The failure's hop is flaky in its run's suite (`history::flaky`): on it, a failure was
    /// placed in some of the suite's last runs while the same tests passed through it in others.
    /// Present only when true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub flaky: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureHop {
    pub caller: String,
    pub callee: String,
    pub operation: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub status_message: Option<String>,
    pub http_status: Option<i64>,
    pub rpc_status: Option<String>,
    pub exception: Option<Exception>,
    pub client_ms: Option<f64>,
    pub server_ms: Option<f64>,
    /// The error log records of the span the failure is placed on (at most five), redacted.
    /// Absent in reports of servers that predate logs; read as none.
    #[serde(default)]
    pub logs: Vec<EvidenceLog>,
    /// Span ids of the calls that recorded no outcome the origin walk stepped through.
    #[serde(default)]
    pub no_error_recorded: Vec<String>,
}

/// A log record as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceLog {
    /// Unix nanoseconds as a decimal string, as OTLP/JSON writes them: a JSON number would lose
    /// digits in JavaScript and jq.
    pub time_unix_nano: String,
    pub severity: String,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exception {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub message: Option<String>,
    pub stacktrace: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The report of one run, with failures and error classes from `blame` (which must be
/// `blame::analyze` of the forest `graph` was built from), links and redaction from `opts`.
pub fn build_with(run: &RunInfo, graph: &RunGraph, blame: &Blame, opts: &ReportOptions) -> Report {
    let mut report = build(run, graph);
    for (edge, e) in report.edges.iter_mut().zip(graph.edges()) {
        edge.error_classes = classes(&e.edge.classes);
        for (iface, i) in edge.interfaces.iter_mut().zip(&e.edge.interfaces) {
            iface.error_classes = classes(&i.classes);
        }
    }
    report.failures = blame.failures.iter().map(|f| failure(f, opts)).collect();
    report.run.diagnostics.walks_cut_short =
        blame.failures.iter().filter(|f| f.cut_short).count() as u64;
    report
}

fn classes(counts: &BTreeMap<&'static str, u64>) -> BTreeMap<String, u64> {
    counts.iter().map(|(c, n)| ((*c).to_owned(), *n)).collect()
}

/// A failure as the report writes it: redacted, with its link.
pub fn failure(f: &blame::Failure, opts: &ReportOptions) -> Failure {
    let r = &opts.redactor;
    let text = |s: &str| r.text(s);
    let some_text = |s: &str| Some(r.text(s)).filter(|t| !t.is_empty());
    let e = &f.evidence;
    Failure {
        trace_id: f.trace_id.to_hex(),
        span_id: f.placed_span.to_hex(),
        test: f.test.as_deref().map(text),
        class: f.class.as_str().to_owned(),
        hop: f.hop.as_ref().map(|h| FailureHop {
            caller: text(&h.caller),
            callee: text(&h.callee),
            operation: text(&h.operation),
        }),
        blamed: f.blamed.as_deref().map(text),
        summary: f.summary(r),
        evidence: Evidence {
            status_message: e.status_message.as_deref().and_then(some_text),
            http_status: e.http_status,
            rpc_status: e.rpc_status.clone(),
            exception: e.exception.as_ref().map(|x| Exception {
                kind: some_text(&x.kind),
                message: some_text(&x.message),
                stacktrace: some_text(&x.stacktrace),
            }),
            client_ms: e.client_ns.map(ms),
            server_ms: e.server_ns.map(ms),
            logs: e
                .logs
                .iter()
                .map(|l| EvidenceLog {
                    time_unix_nano: l.time_ns.to_string(),
                    severity: text(&l.severity),
                    body: text(&l.body),
                })
                .collect(),
            no_error_recorded: e.no_error_recorded.iter().map(|s| s.to_hex()).collect(),
        },
        collateral: f.collateral.iter().map(|s| s.to_hex()).collect(),
        link: opts.links.render(f.placed_trace, f.placed_span),
        flaky: false,
    }
}

/// The report of one run, without blame: no failures, and `error_classes` empty. The graph is
/// already sorted; this keeps its order.
pub fn build(run: &RunInfo, graph: &RunGraph) -> Report {
    let failed = graph.tests().iter().filter(|t| t.failed()).count() as u64;
    let total = graph.tests().len() as u64;
    let d = graph.diagnostics();
    Report {
        run: Run {
            id: run.id.clone(),
            name: run.name.clone(),
            spans: graph.span_count(),
            traces: graph.trace_count(),
            aged_out_traces: 0,
            suite: None,
            tests: TestCounts {
                total,
                passed: total - failed,
                failed,
            },
            diagnostics: Diagnostics {
                orphans: d.orphans,
                duplicate_span_ids: d.duplicate_span_ids,
                parent_cycles: d.parent_cycles,
                missing_end_times: d.missing_end_times,
                clock_skew: d.clock_skew,
                unresolved_calls: d.unresolved_calls,
                propagation_breaks: d.propagation_breaks.clone(),
                walks_cut_short: 0,
            },
        },
        nodes: graph
            .nodes()
            .map(|n| Node {
                id: n.id.clone(),
                kind: n.kind.as_str().to_owned(),
            })
            .collect(),
        edges: graph
            .edges()
            .map(|e| Edge {
                caller: e.caller.id.clone(),
                callee: e.callee.id.clone(),
                calls: e.edge.calls,
                errors: e.edge.errors,
                error_classes: BTreeMap::new(),
                tests: e.edge.tests.clone(),
                status: None,
                expected: None,
                critical: None,
                latency_ms: LatencyMs {
                    client: percentiles(&e.edge.client_latency),
                    server: percentiles(&e.edge.server_latency),
                },
                interfaces: e
                    .edge
                    .interfaces
                    .iter()
                    .map(|i| Interface {
                        operation: i.operation.clone(),
                        calls: i.calls,
                        errors: i.errors,
                        error_classes: BTreeMap::new(),
                        tests: i.tests.clone(),
                        status: None,
                        expected: None,
                        critical: None,
                    })
                    .collect(),
            })
            .collect(),
        failures: Vec::new(),
        coverage: None,
        violations: None,
        expectations: None,
        regressions: None,
    }
}

fn percentiles(l: &graph::Latency) -> Percentiles {
    Percentiles {
        p50: l.p50.map(ms),
        p95: l.p95.map(ms),
        p99: l.p99.map(ms),
    }
}

/// Nanoseconds to milliseconds, rounded to the microsecond: finer digits are clock noise and
/// would make reports differ for no reason.
pub(super) fn ms(ns: u64) -> f64 {
    (ns as f64 / 1_000.0).round() / 1_000.0
}
