//! Reports of a run for people and machines: the JSON report of DESIGN ("JSON report"), built
//! from a `RunGraph`, and its renderings: a terminal summary (`text`), GitHub/GitLab Markdown
//! with a Mermaid graph (`markdown`), JUnit XML for CI test views (`junit`) and a
//! self-contained HTML page (`html`). The JSON shape is also described by the committed JSON
//! Schema `docs/report.schema.json`, which the tests hold the report to.
//!
//! Every renderer starts from `escape::sanitized` (terminal control characters stripped from
//! every string of the report) and escapes span-derived text for its own language.
//!
//! Owns the report's own serde structs (`json`), which are the contract scripts depend on: field
//! names are DESIGN's, and keys are only ever added, never renamed. Analysis types carry no serde
//! derives; this is where the graph becomes a wire format. Rendering does no I/O: callers write
//! the strings wherever they go.
//!
//! Everything comes out in a deterministic order (nodes by id, edges by caller then callee,
//! interfaces by operation, test names sorted), so snapshots and diffs of reports are stable.
//!
//! `build` reports the graph alone; `build_with` adds blame: `failures` and the edges' and
//! interfaces' `error_classes`, with trace links and redaction from `ReportOptions`. Everything
//! a report writes that came from a span goes through the `Redactor`.
//!
//! Coverage (`coverage`, and each edge's and interface's `status`, `expected` and `critical`)
//! is added by `apply_coverage` from a `coverage::Coverage`; `build` leaves it out.

mod coverage;
pub(crate) mod escape;
mod history;
mod html;
mod json;
mod junit;
mod markdown;
mod text;
mod view;
pub mod violations;
pub use view::{edge_lines, is_problem};

pub use coverage::{
    CoverageCounts, CoverageExample, CoverageItem, CoverageSummary, apply_coverage,
    build_with_coverage,
};
pub use escape::{json_escape_controls, strip_controls};
pub use history::{Flaky, HistoryPoint, RunName, flaky_json, flaky_text, history_json};
pub use html::html;
pub use json::{
    Diagnostics, Edge, Evidence, EvidenceLog, Exception, Failure, FailureHop, Interface, LatencyMs,
    Node, Percentiles, Regression, Report, Run, TestCounts, build, build_with, failure, regression,
};
pub use junit::junit;
pub use markdown::markdown;
pub use text::{text, text_styled};
pub use violations::{Violation, violations};

use crate::links::LinkTemplate;
use crate::model::Span;
use crate::redact::Redactor;

/// How a report with blame is written: where trace links point, and what is redacted.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    pub links: LinkTemplate,
    pub redactor: Redactor,
}

/// Analyses a run's spans and builds its full report (graph, blame, links, redaction): what
/// `tracecov report` and the API need in one call. CPU-bound: call it off the async workers.
pub fn from_spans(
    run: &RunInfo,
    spans: &[Span],
    analysis: &crate::graph::AnalysisOptions,
    opts: &ReportOptions,
) -> Report {
    let forest = crate::graph::Forest::build(spans);
    let mut graph = crate::graph::analyze_forest(&forest, analysis);
    let blame = crate::blame::analyze(&forest, &mut graph);
    build_with(run, &graph, &blame, opts)
}

/// The run a report is about, as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunInfo {
    pub id: String,
    pub name: String,
}

/// The JSON report as pretty-printed text, with a trailing newline.
pub fn to_json(report: &Report) -> String {
    // Serializing plain structs of strings, numbers and maps with string keys cannot fail.
    let mut out = json_escape_controls(serde_json::to_string_pretty(report).unwrap_or_default());
    out.push('\n');
    out
}

#[cfg(test)]
mod formats_tests;
#[cfg(test)]
mod tests;
