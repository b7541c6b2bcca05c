//! Expectations (DESIGN, "Expectations"): what each test's traces must have done — call counts,
//! no N+1 (`repeated`), time budgets, required or forbidden attributes — and the violations of a
//! trace's tests.
//!
//! Owns `Expectation` (parsed from the manifest's `expect:` list by `coverage::manifest`), the
//! small glob language its selectors use, and `evaluate`, which judges one analysed component of
//! traces (a forest and its graph, as per-trace results are computed) and returns its
//! violations. Pure: no I/O, never fails on messy traces.
//!
//! Each expectation is judged per test, or per trace when a trace holds no test. A call is a hop
//! of the graph (caller, callee as the trace names it, operation); a hop's own span is its
//! calling span, else its answering one.

mod glob;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::graph::{Forest, Hop, RunGraph, SpanRef};
use crate::model::{Span, SpanId, SpanKind, TraceId};

pub use glob::{Glob, GlobError};

/// One entry of the manifest's `expect:` list.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    pub name: String,
    /// Which tests (by name) it applies to; `None`: every test, and traces with no test.
    pub tests: Option<Glob>,
    pub caller: Option<Glob>,
    pub callee: Option<Glob>,
    pub operation: Option<Glob>,
    pub calls: Option<Bounds>,
    /// `repeated {max}`: at most this many sequential matching calls under one enclosing span.
    pub repeated: Option<u64>,
    /// `duration_ms {max}`: each matching call's answering side (else calling side) at most this.
    pub duration_ms: Option<f64>,
    /// `attributes`: each matching call's spans must have (or not have, or have with a value)
    /// each key.
    pub attributes: Vec<(String, AttrRule)>,
}

// `duration_ms` is never NaN (the manifest refuses anything but a positive number).
impl Eq for Expectation {}

/// `calls {min, max}`, per test.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bounds {
    pub min: Option<u64>,
    pub max: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrRule {
    Present,
    Absent,
    /// The attribute's value, as text, equals this.
    Equals(String),
}

/// A broken expectation in a trace (DESIGN's `violations`, before links are rendered).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Violation {
    pub expectation: String,
    pub test: Option<String>,
    pub trace_id: [u8; 16],
    /// The offending span; for `repeated` the enclosing span, for a missing call the test's.
    pub span_id: [u8; 8],
    /// (caller, callee, operation); none for a missing call.
    pub hop: Option<(String, String, String)>,
    pub expected: String,
    pub observed: String,
}

impl Violation {
    /// One sentence for people.
    pub fn summary(&self) -> String {
        let who = self.test.as_deref().unwrap_or("a request");
        match &self.hop {
            Some((caller, callee, op)) => format!(
                "{}: {who} broke it at {caller} -> {callee} {op}: expected {}, observed {}",
                self.expectation, self.expected, self.observed
            ),
            None => format!(
                "{}: {who} expected {}, observed {}",
                self.expectation, self.expected, self.observed
            ),
        }
    }
}

/// A call as expectations see it.
struct Call<'a> {
    caller: &'a str,
    callee: &'a str,
    operation: &'a str,
    /// Its own span: the calling span, else the answering one.
    span: &'a Span,
    client: Option<&'a Span>,
    server: Option<&'a Span>,
    /// The nearest server, consumer or test-case span enclosing the calling side.
    enclosing: Option<SpanId>,
}

/// Who is judged: a test, or a trace that holds none.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Group {
    Test(usize),
    Trace(TraceId),
}

/// The violations of the tests (and test-less traces) of one analysed component.
pub fn evaluate(
    expectations: &[Expectation],
    forest: &Forest<'_>,
    graph: &RunGraph,
) -> Vec<Violation> {
    if expectations.is_empty() {
        return Vec::new();
    }
    let tests = graph.tests();
    let test_spans: std::collections::HashSet<(TraceId, SpanId)> =
        tests.iter().map(|t| (t.trace_id, t.span_id)).collect();
    // Traces that hold a test are judged through their tests; the others as themselves.
    let traces_with_tests: std::collections::HashSet<TraceId> =
        tests.iter().map(|t| t.trace_id).collect();
    let mut calls: BTreeMap<Group, Vec<Call<'_>>> = BTreeMap::new();
    for hop in graph.hops() {
        let Some(call) = call_of(hop, forest, graph, &test_spans) else {
            continue;
        };
        let group = match hop.test {
            Some(t) => Group::Test(t.index()),
            None if !traces_with_tests.contains(&hop.trace_id) => Group::Trace(hop.trace_id),
            None => continue,
        };
        calls.entry(group).or_default().push(call);
    }
    let mut groups: Vec<Group> = (0..tests.len()).map(Group::Test).collect();
    for tree in forest.trees() {
        if !traces_with_tests.contains(&tree.trace_id()) {
            groups.push(Group::Trace(tree.trace_id()));
        }
    }
    let mut out = Vec::new();
    for group in &groups {
        let (name, trace, span) = match group {
            Group::Test(i) => (
                Some(tests[*i].name.as_str()),
                tests[*i].trace_id,
                Some(tests[*i].span_id),
            ),
            Group::Trace(t) => (None, *t, root_span(forest, *t)),
        };
        let empty = Vec::new();
        let its_calls = calls.get(group).unwrap_or(&empty);
        for e in expectations {
            match (&e.tests, name) {
                (Some(g), Some(n)) if !g.matches(n) => continue,
                (Some(_), None) => continue,
                _ => {}
            }
            let matching: Vec<&Call<'_>> = its_calls.iter().filter(|c| selects(e, c)).collect();
            judge(e, name, trace, span, &matching, &mut out);
        }
    }
    out.sort();
    out.dedup();
    out
}

fn selects(e: &Expectation, c: &Call<'_>) -> bool {
    e.caller.as_ref().is_none_or(|g| g.matches(c.caller))
        && e.callee.as_ref().is_none_or(|g| g.matches(c.callee))
        && e.operation.as_ref().is_none_or(|g| g.matches(c.operation))
}

fn plural(n: u64, one: &str) -> String {
    format!("{n} {one}{}", if n == 1 { "" } else { "s" })
}

fn judge(
    e: &Expectation,
    test: Option<&str>,
    trace: TraceId,
    group_span: Option<SpanId>,
    calls: &[&Call<'_>],
    out: &mut Vec<Violation>,
) {
    let violation =
        |span: SpanId, hop: Option<&Call<'_>>, expected: String, observed: String| Violation {
            expectation: e.name.clone(),
            test: test.map(str::to_owned),
            trace_id: *hop.map_or(trace, |c| c.span.trace_id).as_bytes(),
            span_id: *span.as_bytes(),
            hop: hop.map(|c| {
                (
                    c.caller.to_owned(),
                    c.callee.to_owned(),
                    c.operation.to_owned(),
                )
            }),
            expected,
            observed,
        };
    let n = calls.len() as u64;
    if let Some(b) = e.calls {
        if let Some(min) = b.min
            && n < min
            && let Some(span) = group_span
        {
            out.push(violation(
                span,
                None,
                format!("at least {}", plural(min, "call")),
                plural(n, "call"),
            ));
        }
        if let Some(max) = b.max
            && n > max
        {
            // The first call over the bound is the offending one.
            let mut ordered = calls.to_vec();
            ordered.sort_by_key(|c| (c.span.start_ns, c.span.span_id));
            let c = ordered[max as usize];
            out.push(violation(
                c.span.span_id,
                Some(c),
                format!("at most {}", plural(max, "call")),
                plural(n, "call"),
            ));
        }
    }
    if let Some(max) = e.repeated {
        let mut runs: BTreeMap<(Option<SpanId>, &str, &str), Vec<&Call<'_>>> = BTreeMap::new();
        for c in calls {
            runs.entry((c.enclosing, c.callee, c.operation))
                .or_default()
                .push(c);
        }
        for ((enclosing, _, _), mut group) in runs {
            group.sort_by_key(|c| (c.span.start_ns, c.span.end_ns, c.span.span_id));
            let longest = longest_sequential(&group);
            if longest > max {
                let span = enclosing.unwrap_or(group[0].span.span_id);
                out.push(violation(
                    span,
                    Some(group[0]),
                    format!("at most {} one after another", plural(max, "call")),
                    format!("{} one after another", plural(longest, "call")),
                ));
            }
        }
    }
    if let Some(max) = e.duration_ms {
        for c in calls {
            let side = c.server.unwrap_or(c.span);
            let ms = side.duration_ns() as f64 / 1e6;
            if ms > max {
                out.push(violation(
                    side.span_id,
                    Some(c),
                    format!("at most {max} ms"),
                    format!("{} ms", (ms * 1000.0).round() / 1000.0),
                ));
            }
        }
    }
    for (key, rule) in &e.attributes {
        for c in calls {
            let value = [c.client, c.server]
                .into_iter()
                .flatten()
                .find_map(|s| s.attributes.get(key));
            let broken = match (rule, value) {
                (AttrRule::Present, None) => Some(format!("{key} present")),
                (AttrRule::Absent, Some(_)) => Some(format!("{key} absent")),
                (AttrRule::Equals(want), Some(v)) if v.to_text() != *want => {
                    Some(format!("{key} = {want}"))
                }
                (AttrRule::Equals(want), None) => Some(format!("{key} = {want}")),
                _ => None,
            };
            if let Some(expected) = broken {
                let observed = match value {
                    Some(v) => format!("{key} = {}", v.to_text()),
                    None => format!("no {key}"),
                };
                out.push(violation(c.span.span_id, Some(c), expected, observed));
            }
        }
    }
}

/// The longest stretch of calls (in start order) each starting after the previous one ended.
fn longest_sequential(calls: &[&Call<'_>]) -> u64 {
    let mut best = 0u64;
    let mut run = 0u64;
    let mut prev_end: Option<u64> = None;
    for c in calls {
        run = match prev_end {
            Some(end) if c.span.start_ns >= end => run + 1,
            _ => 1,
        };
        best = best.max(run);
        prev_end = Some(c.span.end_ns.max(c.span.start_ns));
    }
    best
}

fn root_span(forest: &Forest<'_>, trace: TraceId) -> Option<SpanId> {
    let tree = forest.tree(forest.find_tree(trace)?);
    let root = tree.roots().next()?;
    Some(tree.span(root).span_id)
}

fn call_of<'f>(
    hop: &Hop,
    forest: &Forest<'f>,
    graph: &'f RunGraph,
    test_spans: &std::collections::HashSet<(TraceId, SpanId)>,
) -> Option<Call<'f>> {
    let find = |id: Option<SpanId>| -> Option<(SpanRef, &'f Span)> {
        let r = forest.resolve(hop.trace_id, id?)?;
        Some((r, forest.span(r)))
    };
    let client = find(hop.client_span);
    let server = find(hop.server_span);
    let (own_ref, span) = client.or(server)?;
    let tree = forest.tree(own_ref.tree);
    // The calling side's enclosing span: up from the calling span (a call with only an
    // answering span has no calling side; up from that span then).
    let enclosing = std::iter::successors(tree.parent(own_ref.span), |&ix| tree.parent(ix))
        .map(|ix| tree.span(ix))
        .find(|s| {
            matches!(s.kind, SpanKind::Server | SpanKind::Consumer)
                || test_spans.contains(&(s.trace_id, s.span_id))
        })
        .map(|s| s.span_id);
    Some(Call {
        caller: &graph.node(hop.caller).id,
        callee: &graph.node(hop.callee).id,
        operation: graph.operation(hop.operation),
        span,
        client: client.map(|c| c.1),
        server: server.map(|s| s.1),
        enclosing,
    })
}

#[cfg(test)]
mod tests;
