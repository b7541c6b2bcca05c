//! Trends (DESIGN, "History across runs"): one edge's or interface's calls, errors, p95 and
//! coverage status in each run of a suite's window, oldest first (`GET /api/history`, the edge
//! page's chart).
//!
//! The status is the one the run's report names, worked out by `coverage::coverage` itself over
//! the caller's part of the run's digest (a graph of the caller's interfaces) against the
//! expected topology of the configured sources. With no source configured the report's expected
//! set is everything the store has seen, which holds every item any run crossed: an item the run
//! crossed has the status its own tests give it, and one it did not cross is `untested` there.
//! With sources configured, an item the sources do not expect is `unexpected` where the run
//! crossed it and has no status (`null`) where it did not, as the report does not list it.
//! Background traffic as a source beside others (`background: true`) is not consulted here.
//!
//! Pure: digests and the expected topology in, points out.

use crate::coverage::{self, Expected, HopKey, Status};
use crate::graph::RunGraph;

use super::digest::RunDigest;
use super::flaky::WindowRun;

/// The item a trend follows: an edge (`operation` none) or an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrendItem {
    pub caller: String,
    pub callee: String,
    pub operation: Option<String>,
}

/// One run of a trend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrendPoint {
    pub run: String,
    pub name: String,
    pub created_ns: u64,
    pub status: Option<Status>,
    pub calls: u64,
    pub errors: u64,
    pub p95_ns: Option<u64>,
}

/// What the item's status is judged against: the expected topology of the configured sources
/// (mocks included), and whether any source is configured.
pub struct Judge<'a> {
    pub expected: &'a Expected,
    pub configured: bool,
}

/// The item's trend over `window` (oldest first), with each run's created time.
pub fn trend(
    window: &[(WindowRun<'_>, u64)],
    item: &TrendItem,
    judge: &Judge<'_>,
) -> Vec<TrendPoint> {
    window
        .iter()
        .map(|(run, created_ns)| {
            let d = run.digest;
            let found = match &item.operation {
                Some(op) => d.interface(&item.caller, &item.callee, op),
                None => d.edge(&item.caller, &item.callee),
            };
            let (calls, errors, p95_ns) = found.map_or((0, 0, None), |f| {
                (f.item.calls, f.item.errors, f.item.p95_ns)
            });
            TrendPoint {
                run: run.id.to_owned(),
                name: run.name.to_owned(),
                created_ns: *created_ns,
                status: status(d, item, judge),
                calls,
                errors,
                p95_ns,
            }
        })
        .collect()
}

/// The item's status in the run whose digest is `d`, as its report would name it.
fn status(d: &RunDigest, item: &TrendItem, judge: &Judge<'_>) -> Option<Status> {
    // The rows that decide the item's status: the caller's calls to the callee and to any mock
    // standing in for it.
    let mut callees = vec![item.callee.as_str()];
    callees.extend(
        judge
            .expected
            .mocks
            .iter()
            .filter(|(_, real)| **real == item.callee)
            .map(|(mock, _)| mock.as_str()),
    );
    let graph = caller_graph(d, &item.caller, &callees);
    let mut failing = coverage::failing_hops(&graph);
    for f in d.failures().filter(|f| f.caller == item.caller) {
        failing.insert(HopKey {
            caller: f.caller.to_owned(),
            callee: f.callee.to_owned(),
            operation: Some(f.operation.to_owned()),
        });
    }
    let own;
    let expected = if judge.configured {
        judge.expected
    } else {
        // Everything seen is expected: what this run crossed is, the rest is judged below.
        let mut e = judge.expected.clone();
        e.add_graph(&graph);
        own = e;
        &own
    };
    let cov = coverage::coverage(&graph, expected, &failing);
    let found = cov
        .edge(&item.caller, &item.callee)
        .and_then(|row| match &item.operation {
            None => Some(row.status),
            Some(op) => row
                .interfaces
                .iter()
                .find(|i| &i.operation == op)
                .map(|i| i.status),
        });
    match found {
        Some(s) => Some(s),
        None if judge.configured => None,
        // Seen in some run, not crossed in this one.
        None => Some(Status::Untested),
    }
}

/// The caller's interfaces to `callees` in the run, as a graph: enough for `coverage` to name
/// the status of the caller's edge to the first of them and of its interfaces.
fn caller_graph(d: &RunDigest, caller: &str, callees: &[&str]) -> RunGraph {
    super::digest::graph_of(
        d.interfaces_from(caller)
            .filter(|i| callees.contains(&i.callee)),
    )
}
