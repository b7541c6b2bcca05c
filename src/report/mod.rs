//! Reports of a run for people and machines: the JSON report of DESIGN ("JSON report") and a
//! plain-text terminal summary, both built from a `RunGraph`.
//!
//! Owns the report's own serde structs (`json`), which are the contract scripts depend on: field
//! names are DESIGN's, and keys are only ever added, never renamed. Analysis types carry no serde
//! derives; this is where the graph becomes a wire format. Rendering does no I/O: callers write
//! the strings wherever they go.
//!
//! Everything comes out in a deterministic order (nodes by id, edges by caller then callee,
//! interfaces by operation, test names sorted), so snapshots and diffs of reports are stable.
//!
//! Coverage (`coverage`, and each edge's and interface's `status`, `expected` and `critical`)
//! is added by `build_with` from a `coverage::Coverage`; `build` leaves it out. Not here yet, by
//! design rather than as a placeholder: `failures`; `error_classes` is an empty object until
//! errors are classified.

mod coverage;
mod json;
mod text;

pub use coverage::{CoverageCounts, CoverageItem, CoverageSummary, build_with};
pub use json::{
    Diagnostics, Edge, Interface, LatencyMs, Node, Percentiles, Report, Run, TestCounts, build,
};
pub use text::text;

/// The run a report is about, as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunInfo {
    pub id: String,
    pub name: String,
}

/// The JSON report as pretty-printed text, with a trailing newline.
pub fn to_json(report: &Report) -> String {
    // Serializing plain structs of strings, numbers and maps with string keys cannot fail.
    let mut out = serde_json::to_string_pretty(report).unwrap_or_default();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests;
