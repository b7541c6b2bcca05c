//! What the rendered formats (Markdown, JUnit, HTML) read off a report in common: the one-line
//! verdict, the expected edges and interfaces with their status, the failures placed on each,
//! and the graph to draw (pruned to the failing and untested part when it is large).
//!
//! Nothing here formats for a particular language; escaping is the renderers' job.

use std::collections::{BTreeMap, BTreeSet};

use super::json::{Failure, Report};

/// Above this many nodes a drawn graph shows only the failing and untested edges and their
/// neighbours: a diagram of hundreds of boxes helps nobody and Mermaid refuses very large ones.
pub const MAX_GRAPH_NODES: usize = 60;

/// An edge (`operation` none) or an interface, with its coverage.
#[derive(Debug, Clone)]
pub struct Item<'a> {
    pub caller: &'a str,
    pub callee: &'a str,
    pub operation: Option<&'a str>,
    /// The coverage status; `covered` when the report was built without coverage and the
    /// item was observed.
    pub status: &'a str,
    pub expected: bool,
    pub critical: bool,
}

/// Every edge and interface in report order, each edge followed by its interfaces.
pub fn items(report: &Report) -> Vec<Item<'_>> {
    let mut out = Vec::new();
    for e in &report.edges {
        out.push(Item {
            caller: &e.caller,
            callee: &e.callee,
            operation: None,
            status: status_or_default(e.status.as_deref()),
            expected: e.expected.unwrap_or(report.coverage.is_none()),
            critical: e.critical.unwrap_or(false),
        });
        for i in &e.interfaces {
            out.push(Item {
                caller: &e.caller,
                callee: &e.callee,
                operation: Some(&i.operation),
                status: status_or_default(i.status.as_deref()),
                expected: i.expected.unwrap_or(report.coverage.is_none()),
                critical: i.critical.unwrap_or(false),
            });
        }
    }
    out
}

fn status_or_default(status: Option<&str>) -> &str {
    status.unwrap_or("covered")
}

/// The failures placed on this item: on its hop (an edge takes every failure on any of its
/// operations).
pub fn failures_at<'r>(report: &'r Report, item: &Item<'_>) -> Vec<&'r Failure> {
    report
        .failures
        .iter()
        .filter(|f| {
            f.hop.as_ref().is_some_and(|h| {
                h.caller == item.caller
                    && h.callee == item.callee
                    && item.operation.is_none_or(|op| op == h.operation)
            })
        })
        .collect()
}

/// Whether the run failed: a test failed or a failure was found.
pub fn failed(report: &Report) -> bool {
    report.run.tests.failed > 0 || !report.failures.is_empty()
}

/// The critical items no test exercised, as listed in the report's coverage.
pub fn untested_critical(report: &Report) -> Vec<&super::CoverageItem> {
    report
        .coverage
        .iter()
        .flat_map(|c| &c.untested)
        .filter(|i| i.critical)
        .collect()
}

/// The example request recorded for an untested item (`operation` `None`: the edge).
pub fn example_of<'r>(
    report: &'r Report,
    caller: &str,
    callee: &str,
    operation: Option<&str>,
) -> Option<&'r super::CoverageExample> {
    report
        .coverage
        .as_ref()?
        .untested
        .iter()
        .find(|i| i.caller == caller && i.callee == callee && i.operation.as_deref() == operation)?
        .example
        .as_ref()
}

/// The verdict in words, without markup: `failed: 1 of 2 tests failed, 1 failure; …`.
pub fn verdict(report: &Report) -> String {
    let t = &report.run.tests;
    let mut parts = Vec::new();
    let head = if failed(report) {
        "failed"
    } else if !untested_critical(report).is_empty() {
        "passed, critical items untested"
    } else {
        "passed"
    };
    parts.push(format!("{} of {} tests failed", t.failed, t.total));
    match report.failures.len() {
        0 => {}
        1 => parts.push("1 failing hop".to_owned()),
        n => parts.push(format!("{n} failing hops")),
    }
    if let Some(c) = &report.coverage {
        let pct = |p: Option<f64>| p.map_or("n/a".to_owned(), |p| format!("{p:.1}%"));
        parts.push(format!(
            "coverage: edges {}, interfaces {}, critical {}",
            pct(c.edges.percent),
            pct(c.interfaces.percent),
            pct(c.critical.percent)
        ));
        let critical = untested_critical(report).len();
        if critical > 0 {
            parts.push(format!("{critical} critical untested"));
        }
    }
    format!("{head}: {}", parts.join("; "))
}

/// A graph to draw: node ids, and edges as indices into them with their status.
#[derive(Debug, Clone, Default)]
pub struct Graph<'a> {
    pub nodes: Vec<&'a str>,
    pub edges: Vec<GraphEdge<'a>>,
    /// Nodes in the whole run, when the graph was pruned to its failing and untested part.
    pub pruned_from: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct GraphEdge<'a> {
    pub from: usize,
    pub to: usize,
    pub status: &'a str,
    pub critical: bool,
}

/// Whether an edge of this status is a problem the pruned graph must keep.
/// Failing or untested: what a reader of a coverage picture must see first.
pub fn is_problem(status: &str) -> bool {
    matches!(status, "failing" | "untested")
}

/// Every edge as (caller, callee, status, critical): what a drawing of the graph needs.
pub fn edge_lines(report: &Report) -> Vec<(&str, &str, &str, bool)> {
    report
        .edges
        .iter()
        .map(|e| {
            (
                e.caller.as_str(),
                e.callee.as_str(),
                status_or_default(e.status.as_deref()),
                e.critical == Some(true),
            )
        })
        .collect()
}

/// The run's graph: every node and edge, or, above `MAX_GRAPH_NODES`, the failing and untested
/// edges, the edges touching their ends, and those edges' other ends.
pub fn graph(report: &Report) -> Graph<'_> {
    let mut all: BTreeSet<&str> = report.nodes.iter().map(|n| n.id.as_str()).collect();
    for e in &report.edges {
        all.insert(&e.caller);
        all.insert(&e.callee);
    }
    let edges = edge_lines(report);
    let mut pruned_from = None;
    let kept_edges: Vec<_> = if all.len() > MAX_GRAPH_NODES {
        pruned_from = Some(all.len());
        let core: BTreeSet<&str> = edges
            .iter()
            .filter(|e| is_problem(e.2))
            .flat_map(|e| [e.0, e.1])
            .collect();
        edges
            .into_iter()
            .filter(|e| core.contains(e.0) || core.contains(e.1))
            .collect()
    } else {
        edges
    };
    let nodes: Vec<&str> = if pruned_from.is_some() {
        kept_edges
            .iter()
            .flat_map(|e| [e.0, e.1])
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    } else {
        all.into_iter().collect()
    };
    let index: BTreeMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    Graph {
        edges: kept_edges
            .into_iter()
            .map(|(a, b, status, critical)| GraphEdge {
                from: index[a],
                to: index[b],
                status,
                critical,
            })
            .collect(),
        nodes,
        pruned_from,
    }
}

/// A node's label: the caller of operations expected from anyone is `*`.
pub fn node_label(id: &str) -> &str {
    if id == "*" { "any caller" } else { id }
}
