//! Read-side operations shared by the JSON API and the CLI's `--data` mode, so both answer the
//! same question the same way: resolve a run, load its spans, analyse them, build the report.
//!
//! Everything here blocks (SQLite reads, CPU-bound analysis): async callers run it on the
//! blocking pool.

use std::time::Duration;

use crate::graph::{self, AnalysisOptions};
use crate::model::Span;
use crate::report::{self, Report, RunInfo};
use crate::runs::{self, Run};
use crate::store::{Reader, StoreError};

/// Why a query could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no run {0:?} in the store (give a run id, a run name, or `latest`)")]
    NoSuchRun(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A run with the state a reader wants to know.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunStatus {
    #[serde(flatten)]
    pub run: Run,
    pub open: bool,
    pub settled: bool,
}

impl RunStatus {
    pub fn new(run: Run, now_ns: u64, quiet: Duration) -> Self {
        Self {
            open: !run.is_closed(now_ns),
            settled: run.is_settled(now_ns, quiet),
            run,
        }
    }
}

pub fn resolve_run(reader: &Reader, what: &str) -> Result<Run, QueryError> {
    reader
        .with_conn(|c| runs::find_run(c, what))?
        .ok_or_else(|| QueryError::NoSuchRun(what.to_owned()))
}

/// Every span of a run's traces.
pub fn run_spans(reader: &Reader, run: &Run) -> Result<Vec<Span>, QueryError> {
    let ids = reader.with_conn(|c| runs::run_traces(c, &run.id))?;
    let mut spans = Vec::new();
    for id in ids {
        spans.extend(reader.trace(id)?);
    }
    Ok(spans)
}

/// The JSON report of a run.
pub fn run_report(
    reader: &Reader,
    run: &Run,
    opts: &AnalysisOptions,
) -> Result<Report, QueryError> {
    let spans = run_spans(reader, run)?;
    let graph = graph::analyze(&spans, opts);
    Ok(report::build(
        &RunInfo {
            id: run.id.clone(),
            name: run.name.clone(),
        },
        &graph,
    ))
}

/// What every export passes through before it leaves tracecov: `tracecov export` and
/// `GET /api/runs/{id}/export` both call it, so they agree.
///
// redaction: DESIGN says exports are redacted unless told otherwise. The redactor is being
// written as `crate::redact`; until it lands this is the identity, and this function is the one
// place to call it from (`run_export` already skips it when redaction is turned off).
pub fn prepare_for_export(spans: Vec<Span>) -> Vec<Span> {
    spans
}

/// The spans of a run as they are exported: redacted unless `redact` is false.
pub fn run_export(reader: &Reader, run: &Run, redact: bool) -> Result<Vec<Span>, QueryError> {
    let spans = run_spans(reader, run)?;
    Ok(if redact {
        prepare_for_export(spans)
    } else {
        spans
    })
}
