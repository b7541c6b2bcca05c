//! Test cases: which spans mark a test, whether the test passed, and which test every span of the
//! run belongs to.
//!
//! Owns `TestCase`, `TestOutcome` and the attribution of spans to tests. It reads the tree and the
//! forest's links, never times: parallel tests overlap in time, so a span belongs to the nearest
//! enclosing test span above it, or, through a span link, to the test of the span it links to (an
//! asynchronous consumer's trace belongs to the test whose producer it links to).
//!
//! Recognized test spans, the nearest one winning when they nest:
//! - a span with `test.case.name`;
//! - a child of a pytest-opentelemetry session root (`test session`, `test run`, `test worker gwN`),
//!   named by its span name (the test's node id);
//! - for a configured test-driver service, its root spans, except a *session root*, whose children
//!   of the same service are the tests instead. A key design decision: a session root is told by
//!   its name (it contains `session` or `suite`, any case) rather than by its shape, because a
//!   test's own steps (arrange, act, assert spans) look structurally just like tests in a session.

use crate::model::{Span, SpanId, SpanKind, StatusCode, TraceId};

use super::forest::{Forest, SpanRef};
use super::semconv;
use super::tree::TraceTree;

/// The root span name pytest-opentelemetry gave a test session in its early releases (and the name
/// DESIGN uses).
pub const SESSION_ROOT_NAME: &str = "test session";

/// Is this the root span a pytest-opentelemetry session puts its tests under? Releases since 1.0
/// name it `test run` (or `$PYTEST_RUN_NAME`), and `test worker gwN` under pytest-xdist; earlier
/// ones `test session`.
pub fn is_pytest_session_root(span: &Span) -> bool {
    span.parent_span_id.is_none()
        && (span.name == SESSION_ROOT_NAME
            || span.name == "test run"
            || span.name.starts_with("test worker "))
}

/// "No test" in the per-span attribution tables.
pub(crate) const NO_TEST: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TestOutcome {
    Passed,
    Failed,
}

impl TestOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            TestOutcome::Passed => "passed",
            TestOutcome::Failed => "failed",
        }
    }
}

/// One test case: the span that marks it and its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCase {
    pub name: String,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub outcome: TestOutcome,
}

impl TestCase {
    pub fn failed(&self) -> bool {
        self.outcome == TestOutcome::Failed
    }
}

/// Index of a test in `RunGraph::tests()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TestId(pub(crate) u32);

impl TestId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The tests of a run, sorted by (name, trace id, span id), and for every span of every tree the
/// test it belongs to (`NO_TEST` when none).
pub(crate) struct Attribution {
    pub tests: Vec<TestCase>,
    pub test_of: Vec<Vec<u32>>,
}

impl Attribution {
    pub fn test_of(&self, r: SpanRef) -> Option<TestId> {
        let t = self.test_of[r.tree][r.span];
        (t != NO_TEST).then_some(TestId(t))
    }
}

pub(crate) fn attribute(forest: &Forest<'_>, test_services: &[String]) -> Attribution {
    let mut found: Vec<(TestCase, SpanRef)> = Vec::new();
    for (t, tree) in forest.trees().iter().enumerate() {
        let mut receivers: Option<Vec<&str>> = None;
        for (ix, span) in tree.spans() {
            let Some(name) = test_name(tree, ix, test_services) else {
                continue;
            };
            let outcome = outcome(tree, ix, &mut receivers);
            found.push((
                TestCase {
                    name: name.to_owned(),
                    trace_id: tree.trace_id(),
                    span_id: span.span_id,
                    outcome,
                },
                SpanRef { tree: t, span: ix },
            ));
        }
    }
    found.sort_by(|a, b| {
        (&a.0.name, a.0.trace_id, a.0.span_id).cmp(&(&b.0.name, b.0.trace_id, b.0.span_id))
    });

    // Test spans by (tree, span), to look up "is this span a test" during the walks.
    let mut own: Vec<(SpanRef, u32)> = found
        .iter()
        .enumerate()
        .map(|(i, (_, r))| (*r, i as u32))
        .collect();
    own.sort_unstable();
    let tests = found.into_iter().map(|(tc, _)| tc).collect();

    let mut test_of: Vec<Vec<u32>> = forest
        .trees()
        .iter()
        .map(|t| vec![NO_TEST; t.len()])
        .collect();
    for t in 0..forest.trees().len() {
        propagate(forest, t, &own, &mut test_of);
    }
    // Links can point into trees walked later, and chains of asynchronous work link through
    // several traces: walk the linking trees again until nothing changes. Each pass can only
    // settle more spans (a span's sources, once resolved, stay resolved), so this terminates; the
    // cap is a guard, not a bound that real data reaches.
    let linking: Vec<usize> = forest
        .trees()
        .iter()
        .enumerate()
        .filter(|(_, tree)| tree.spans().any(|(_, s)| !s.links.is_empty()))
        .map(|(t, _)| t)
        .collect();
    for _ in 0..linking.len().min(64) {
        let mut changed = false;
        for &t in &linking {
            changed |= propagate(forest, t, &own, &mut test_of);
        }
        if !changed {
            break;
        }
    }
    Attribution { tests, test_of }
}

/// One top-down walk of tree `t`: a span's test is its own, else the test of the first linked span
/// that has one, else its parent's. Returns whether anything changed.
fn propagate(
    forest: &Forest<'_>,
    t: usize,
    own: &[(SpanRef, u32)],
    test_of: &mut [Vec<u32>],
) -> bool {
    let tree = forest.tree(t);
    let first = own.partition_point(|(r, _)| r.tree < t);
    let own = &own[first..own.partition_point(|(r, _)| r.tree <= t)];
    let mut changed = false;
    for ix in tree.preorder() {
        let span = tree.span(ix);
        let mine = own
            .binary_search_by_key(&ix, |(r, _)| r.span)
            .ok()
            .map(|pos| own[pos].1);
        let value = mine
            .or_else(|| {
                span.links.iter().find_map(|link| {
                    let r = forest.resolve(link.trace_id, link.span_id)?;
                    let v = test_of[r.tree][r.span];
                    (v != NO_TEST).then_some(v)
                })
            })
            .or_else(|| {
                let v = test_of[t][tree.parent(ix)?];
                (v != NO_TEST).then_some(v)
            })
            .unwrap_or(NO_TEST);
        let slot = &mut test_of[t][ix];
        if *slot != value {
            *slot = value;
            changed = true;
        }
    }
    changed
}

fn test_name<'a>(tree: &TraceTree<'a>, ix: usize, test_services: &[String]) -> Option<&'a str> {
    let span = tree.span(ix);
    if let Some(name) = span.attributes.str(semconv::TEST_CASE_NAME) {
        return Some(name);
    }
    let parent = tree.parent(ix).map(|p| (p, tree.span(p)));
    if let Some((p_ix, p)) = parent
        && tree.parent(p_ix).is_none()
        && is_pytest_session_root(p)
    {
        return Some(&span.name);
    }
    if !test_services.iter().any(|s| s == span.service()) {
        return None;
    }
    match parent {
        None => (!is_session_name(&span.name)).then_some(span.name.as_str()),
        Some((p_ix, p)) => (tree.parent(p_ix).is_none()
            && p.service() == span.service()
            && is_session_name(&p.name))
        .then_some(span.name.as_str()),
    }
}

fn is_session_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.contains("session") || lower.contains("suite")
}

/// `test.case.result.status`, else the span status, else — status unset — failed when an entry
/// request below the test span is in error (DESIGN, "Failures and errors").
fn outcome<'a>(
    tree: &TraceTree<'a>,
    ix: usize,
    receivers: &mut Option<Vec<&'a str>>,
) -> TestOutcome {
    let span = tree.span(ix);
    if let Some(result) = span.attributes.str(semconv::TEST_CASE_RESULT) {
        match result.to_ascii_lowercase().as_str() {
            "pass" | "passed" | "success" | "succeeded" | "ok" => return TestOutcome::Passed,
            "fail" | "failed" | "failure" | "error" | "broken" => return TestOutcome::Failed,
            _ => {}
        }
    }
    match span.status.code {
        StatusCode::Error => return TestOutcome::Failed,
        StatusCode::Ok => return TestOutcome::Passed,
        StatusCode::Unset => {}
    }
    let receivers = receivers.get_or_insert_with(|| {
        let mut services: Vec<&str> = tree
            .spans()
            .filter(|(_, s)| is_request(s))
            .map(|(_, s)| s.service())
            .collect();
        services.sort_unstable();
        services.dedup();
        services
    });
    let entry_failed = tree.subtree(ix).skip(1).any(|d| {
        let s = tree.span(d);
        is_request(s)
            && semconv::server_in_error(s)
            && tree
                .parent(d)
                .is_none_or(|p| receivers.binary_search(&tree.span(p).service()).is_err())
    });
    if entry_failed {
        TestOutcome::Failed
    } else {
        TestOutcome::Passed
    }
}

fn is_request(span: &Span) -> bool {
    matches!(span.kind, SpanKind::Server | SpanKind::Consumer)
}
