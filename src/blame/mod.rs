//! Failing-hop blame (DESIGN, "Failing-hop blame"): which failures a run holds, where each one
//! started, what kind of failure it was, and who is blamed; and the class of every other error,
//! counted on its edge and interface.
//!
//! Entry point: `analyze(forest, graph) -> Blame`, on the same forest the graph was built from.
//! `bug` renders one failure as a bug report.
//!
//! The steps, each in its own file:
//! 1. Failures (here): failing test cases (the graph decided their outcome), and in traces that
//!    hold no test case (nor link into one), entry requests in error.
//! 2. `walk`: from the failing span down to the origin, through the children in error and,
//!    where none is, through calls into other services that recorded no outcome; the spans in
//!    error on the way and the later siblings are collateral, the calls stepped through are
//!    listed (`no_error_recorded`).
//! 3. `classify`: the class at the origin, by DESIGN's precedence. A `timeout` is then moved down
//!    the critical path to the span that held the time; a decode failure after a successful call
//!    is moved onto that call.
//! 4. The hop into the service the failure is placed on, the blamed node, and the evidence (the
//!    error log records of the span it is placed on among it).
//!
//! "In error" is `graph::semconv`'s, for every step and for the graph's error counts alike: a
//! span that recorded no outcome and logged an error is in error there.
//!
//! Pure: no I/O, no clock, no serde. Redaction is applied where text leaves for people
//! (`summary` takes the `Redactor`; the report and the bug report redact the rest).
//!
//! A key design decision: hops come from the `RunGraph` (looked up by their client and server
//! span ids) instead of being recomputed, so a failure's `hop` is always one of the report's
//! interfaces, with the same node ids and operation.

pub mod bug;
mod classify;
mod walk;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::{HashMap, HashSet};

use crate::graph::{Forest, RunGraph, SpanRef, semconv};
use crate::model::{LogRecord, Span, SpanId, SpanKind, TraceId};
use crate::redact::Redactor;

pub use classify::{ErrorClass, answered_ok, grpc_code, grpc_name, is_cancellation};

/// A hop as reports name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HopName {
    pub caller: String,
    pub callee: String,
    pub operation: String,
}

/// An `exception` event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExceptionInfo {
    pub kind: String,
    pub message: String,
    pub stacktrace: String,
}

/// What the spans said about a failure. Unredacted: whoever writes it out redacts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Evidence {
    pub status_message: Option<String>,
    pub http_status: Option<i64>,
    /// The gRPC code's canonical name (`DEADLINE_EXCEEDED`).
    pub rpc_status: Option<String>,
    pub exception: Option<ExceptionInfo>,
    /// The calling side's duration of the failing hop.
    pub client_ns: Option<u64>,
    /// The answering side's duration of the failing hop.
    pub server_ns: Option<u64>,
    /// The error log records of the span the failure is placed on: at most `MAX_LOGS`, ERROR and
    /// above before the records that are evidence only by their exception, earliest first.
    pub logs: Vec<LogEvidence>,
    /// The calls that recorded no outcome the walk stepped through (DESIGN's gaps), in path order.
    pub no_error_recorded: Vec<SpanId>,
}

/// An error log record, as evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvidence {
    pub time_ns: u64,
    /// `LogRecord::severity`: the producer's text, else the name of its number's range.
    pub severity: String,
    pub body: String,
}

/// At most this many log records are evidence of one failure: the first few say what happened,
/// and a failing loop may log thousands.
pub const MAX_LOGS: usize = 5;

/// One failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The trace of the failing span (the test case or the entry request).
    pub trace_id: TraceId,
    /// The failing span: the test case span or the failing entry request.
    pub failing_span: SpanId,
    /// The span the failure is placed on, with its trace (another one when the walk crossed a
    /// span link).
    pub placed_trace: TraceId,
    pub placed_span: SpanId,
    /// The test's name, or none for an entry request failing outside any test.
    pub test: Option<String>,
    pub class: ErrorClass,
    /// None for `silent`, and when the span it is placed on was entered by no recorded hop.
    pub hop: Option<HopName>,
    pub blamed: Option<String>,
    pub evidence: Evidence,
    /// Span ids of the errors that are consequences of this failure.
    pub collateral: Vec<SpanId>,
    /// (trace, span) from the failing span down to the span the failure is placed on.
    pub path: Vec<(TraceId, SpanId)>,
    /// The origin (the deepest span in error); for a timeout or a rejected response the failure
    /// is placed elsewhere.
    pub origin: Option<(TraceId, SpanId)>,
    /// An open circuit breaker refused the call.
    pub circuit_open: bool,
    /// The origin walk (or a timeout's critical path) stopped at its depth limit: the origin
    /// may be deeper than the span named (counted in the report's diagnostics).
    pub cut_short: bool,
    /// Failures of the run with the same hop and class, this one included.
    pub failed_here: usize,
    /// The raw callee of `hop` when the address map or the set of services named it, so that
    /// merged per-trace results can name it again with what the whole run taught (`results`).
    pub hop_target: Option<crate::graph::Target>,
}

impl Failure {
    /// `blamed` as DESIGN defines it for a class and a hop.
    pub fn blamed_for(class: ErrorClass, hop: &HopName) -> String {
        if class.blames_boundary() {
            format!("{} -> {}", hop.caller, hop.callee)
        } else {
            hop.callee.clone()
        }
    }
}

/// Blame for a run: its failures, and the class of every hop in error.
#[derive(Debug, Clone, Default)]
pub struct Blame {
    pub failures: Vec<Failure>,
    /// Per hop of an analysed `RunGraph::hops()`, its class when the hop is in error; empty when
    /// merged from stored results.
    hop_classes: Vec<Option<ErrorClass>>,
}

impl Blame {
    /// Blame put together from a run's rollup (`results::Rollup::graph`): the failures alone,
    /// the classes being counted in the merged graph.
    pub(crate) fn from_failures(failures: Vec<Failure>) -> Self {
        Self {
            failures,
            hop_classes: Vec::new(),
        }
    }

    /// The class of an analysed hop (`RunGraph::hops`) in error.
    pub(crate) fn hop_class(&self, hop: usize) -> Option<ErrorClass> {
        self.hop_classes.get(hop).copied().flatten()
    }
}

/// Finds and explains the failures of the run in `forest`, and classifies its errors (counted
/// into `graph`'s interfaces and edges as well). `graph` must be `analyze_forest` of the same
/// forest.
pub fn analyze(forest: &Forest<'_>, graph: &mut RunGraph) -> Blame {
    let blame = analyze_hops(forest, graph);
    let classes: Vec<Option<&'static str>> = blame
        .hop_classes
        .iter()
        .map(|c| c.map(ErrorClass::as_str))
        .collect();
    graph.set_hop_classes(&classes);
    blame
}

/// As `analyze`, leaving the graph as it is (per-trace results take the classes per hop).
pub(crate) fn analyze_hops(forest: &Forest<'_>, graph: &RunGraph) -> Blame {
    let hops = HopIndex::new(graph);
    let mut failures = Vec::new();

    for test in graph.tests().iter().filter(|t| t.failed()) {
        let Some(start) = forest.resolve(test.trace_id, test.span_id) else {
            continue;
        };
        let driver = forest.span(start).service();
        failures.push(explain(
            forest,
            graph,
            &hops,
            start,
            Some(driver),
            Some(test.name.clone()),
        ));
    }

    for start in failing_entry_requests(forest, graph) {
        failures.push(explain(forest, graph, &hops, start, None, None));
    }

    finish_failures(&mut failures);

    let hop_classes = graph
        .hops()
        .iter()
        .map(|hop| {
            if !hop.error {
                return None;
            }
            let resolve = |id: Option<SpanId>| id.and_then(|s| forest.resolve(hop.trace_id, s));
            let client = resolve(hop.client_span).filter(|&c| {
                let s = forest.span(c);
                !matches!(s.kind, SpanKind::Server | SpanKind::Consumer)
                    && semconv::client_in_error(s)
            });
            // The caller's view when it saw the error; else the callee's.
            let side = client.or_else(|| resolve(hop.server_span));
            Some(side.map_or(ErrorClass::CalleeError, |r| {
                classify::classify(forest, r).class
            }))
        })
        .collect();

    Blame {
        failures,
        hop_classes,
    }
}

/// Puts a run's failures in report order (tests by name, then failures outside tests) and counts
/// how many share each (class, hop).
pub(crate) fn finish_failures(failures: &mut [Failure]) {
    failures.sort_by(|a, b| {
        (a.test.is_none(), &a.test, a.trace_id, a.failing_span).cmp(&(
            b.test.is_none(),
            &b.test,
            b.trace_id,
            b.failing_span,
        ))
    });
    let mut counts: HashMap<(ErrorClass, Option<HopName>), usize> = HashMap::new();
    for f in failures.iter() {
        *counts.entry((f.class, f.hop.clone())).or_insert(0) += 1;
    }
    for f in failures.iter_mut() {
        f.failed_here = counts[&(f.class, f.hop.clone())];
    }
}

/// Hops by the spans on their two sides.
struct HopIndex {
    by_client: HashMap<(TraceId, SpanId), usize>,
    by_server: HashMap<(TraceId, SpanId), usize>,
}

impl HopIndex {
    fn new(graph: &RunGraph) -> Self {
        let mut by_client = HashMap::new();
        let mut by_server = HashMap::new();
        for (i, hop) in graph.hops().iter().enumerate() {
            if let Some(c) = hop.client_span {
                by_client.entry((hop.trace_id, c)).or_insert(i);
            }
            if let Some(s) = hop.server_span {
                by_server.entry((hop.trace_id, s)).or_insert(i);
            }
        }
        Self {
            by_client,
            by_server,
        }
    }

    fn key(forest: &Forest<'_>, r: SpanRef) -> (TraceId, SpanId) {
        let s = forest.span(r);
        (s.trace_id, s.span_id)
    }

    fn made_by(&self, forest: &Forest<'_>, r: SpanRef) -> Option<usize> {
        self.by_client.get(&Self::key(forest, r)).copied()
    }

    /// The hop into the service a failure placed on `r` is in: for a calling span, the hop it
    /// makes; else the hop that brought the request into `r`'s service (`r` itself, or the
    /// nearest ancestor that a hop entered).
    fn into(&self, forest: &Forest<'_>, r: SpanRef) -> Option<usize> {
        let span = forest.span(r);
        if matches!(span.kind, SpanKind::Client | SpanKind::Producer)
            && let Some(h) = self.made_by(forest, r)
        {
            return Some(h);
        }
        let tree = forest.tree(r.tree);
        std::iter::once(r.span)
            .chain(tree.ancestors(r.span))
            .find_map(|ix| {
                self.by_server
                    .get(&Self::key(
                        forest,
                        SpanRef {
                            tree: r.tree,
                            span: ix,
                        },
                    ))
                    .copied()
            })
    }
}

fn explain(
    forest: &Forest<'_>,
    graph: &RunGraph,
    hops: &HopIndex,
    start: SpanRef,
    driver: Option<&str>,
    test: Option<String>,
) -> Failure {
    let makes_hop = |r: SpanRef| hops.made_by(forest, r).is_some();
    let walk = walk::Walker::new(forest, driver, &makes_hop).walk(start);
    let no_error_recorded: Vec<SpanId> = walk
        .no_error_recorded
        .iter()
        .map(|&r| forest.span(r).span_id)
        .collect();
    let mut path = walk.path;
    let mut collateral = walk.collateral;
    let mut cut_short = walk.cut_short;

    let (class, placed, circuit_open) = match walk.origin {
        None => (ErrorClass::Silent, start, false),
        Some(origin) => {
            let verdict = classify::classify(forest, origin);
            let mut placed = origin;
            if verdict.class == ErrorClass::Timeout {
                let (held, cut) = walk::held_time(forest, origin);
                cut_short |= cut;
                if let Some(&deepest) = held.last() {
                    path.extend(&held);
                    placed = deepest;
                }
            } else if let Some(call) = verdict.rejected_call {
                path.push(call);
                placed = call;
            }
            if placed != origin {
                collateral.insert(0, origin);
            }
            collateral.retain(|&c| c != placed);
            (verdict.class, placed, verdict.circuit_open)
        }
    };

    let hop = (class != ErrorClass::Silent)
        .then(|| hops.into(forest, placed))
        .flatten()
        .map(|i| &graph.hops()[i]);
    let hop_name = match (class, hop) {
        (ErrorClass::Silent, _) => None,
        (_, Some(h)) => Some(HopName {
            caller: graph.node(h.caller).id.clone(),
            callee: graph.node(h.callee).id.clone(),
            operation: graph.operation(h.operation).to_owned(),
        }),
        // Entered by no recorded hop (a root request from an uninstrumented client): the caller
        // is unknown, written `*` as the report does for unknown callers.
        (_, None) => {
            let span = forest.span(placed);
            let mut op = String::new();
            semconv::operation(Some(span), None, &mut op);
            Some(HopName {
                caller: "*".to_owned(),
                callee: span.service().to_owned(),
                operation: op,
            })
        }
    };
    let blamed = hop_name.as_ref().map(|h| Failure::blamed_for(class, h));
    let hop_target = hop.and_then(|h| h.target.clone());

    let resolve = |id: Option<SpanId>| {
        hop.and_then(|h| id.and_then(|s| forest.resolve(h.trace_id, s)))
            .map(|r| forest.span(r))
    };
    let client = resolve(hop.and_then(|h| h.client_span));
    let server = resolve(hop.and_then(|h| h.server_span));
    let origin_span = walk.origin.map(|o| forest.span(o));
    let mut evidence = gather_evidence(
        [client, server, origin_span, Some(forest.span(placed))],
        [origin_span, Some(forest.span(placed)), server, client],
        hop.and_then(|h| h.client_ns),
        hop.and_then(|h| h.server_ns),
        forest.span(start),
        class,
    );
    evidence.logs = error_logs(forest.span(placed));
    evidence.no_error_recorded = no_error_recorded;

    let key = |r: SpanRef| {
        let s = forest.span(r);
        (s.trace_id, s.span_id)
    };
    let start_span = forest.span(start);
    let placed_span = forest.span(placed);
    Failure {
        trace_id: start_span.trace_id,
        failing_span: start_span.span_id,
        placed_trace: placed_span.trace_id,
        placed_span: placed_span.span_id,
        test,
        class,
        hop: hop_name,
        blamed,
        evidence,
        collateral: collateral.iter().map(|&c| forest.span(c).span_id).collect(),
        path: path.iter().map(|&r| key(r)).collect(),
        origin: walk.origin.map(key),
        circuit_open,
        failed_here: 1,
        hop_target,
        cut_short,
    }
}

/// Codes from the first span that has them, in `codes` order (the caller's view first); the
/// message and exception from the first that has them, in `words` order (the origin first). A
/// silent failure has only its test span's own status message.
fn gather_evidence(
    codes: [Option<&Span>; 4],
    words: [Option<&Span>; 4],
    client_ns: Option<u64>,
    server_ns: Option<u64>,
    start: &Span,
    class: ErrorClass,
) -> Evidence {
    if class == ErrorClass::Silent {
        return Evidence {
            status_message: Some(start.status.message.clone()).filter(|m| !m.is_empty()),
            ..Evidence::default()
        };
    }
    let codes = codes.into_iter().flatten();
    let words: Vec<&Span> = words.into_iter().flatten().collect();
    Evidence {
        status_message: words
            .iter()
            .map(|s| s.status.message.as_str())
            .find(|m| !m.is_empty())
            .map(str::to_owned),
        http_status: codes.clone().find_map(classify::http_status),
        rpc_status: codes
            .clone()
            .find_map(|s| grpc_code(&s.attributes))
            .map(|c| grpc_name(c).to_owned()),
        // An exception event first; else one the spans logged.
        exception: words
            .iter()
            .find_map(|s| classify::exceptions(s).next())
            .or_else(|| {
                words
                    .iter()
                    .find_map(|s| classify::logged_exceptions(s).next())
            })
            .map(|(kind, message, stacktrace)| ExceptionInfo {
                kind: kind.to_owned(),
                message: message.to_owned(),
                stacktrace: stacktrace.to_owned(),
            }),
        client_ns,
        server_ns,
        ..Evidence::default()
    }
}

/// The span's error log records as evidence: ERROR and above first, then the records that are
/// evidence by their exception alone, each earliest first; at most `MAX_LOGS`.
fn error_logs(span: &Span) -> Vec<LogEvidence> {
    let mut logs: Vec<&LogRecord> = span.logs.iter().filter(|l| l.is_error_evidence()).collect();
    logs.sort_by_key(|l| (l.severity_number < LogRecord::ERROR, l.time_ns));
    logs.truncate(MAX_LOGS);
    logs.iter()
        .map(|l| LogEvidence {
            time_ns: l.time_ns,
            severity: l.severity(),
            body: l.body.clone(),
        })
        .collect()
}

/// Entry requests in error in the traces that hold no test case and link into none: a SERVER or
/// CONSUMER span whose parent is absent or belongs to a service that received no request in the
/// trace (a driver, a load generator, a browser).
fn failing_entry_requests(forest: &Forest<'_>, graph: &RunGraph) -> Vec<SpanRef> {
    let mut tested: HashSet<usize> = graph
        .tests()
        .iter()
        .filter_map(|t| forest.find_tree(t.trace_id))
        .collect();
    // A trace that links into a tested trace (an asynchronous consumer) is part of that test.
    for _ in 0..16 {
        let before = tested.len();
        for (t, tree) in forest.trees().iter().enumerate() {
            if tested.contains(&t) {
                continue;
            }
            let links_in = tree.spans().any(|(_, s)| {
                s.links.iter().any(|l| {
                    forest
                        .find_tree(l.trace_id)
                        .is_some_and(|lt| tested.contains(&lt))
                })
            });
            if links_in {
                tested.insert(t);
            }
        }
        if tested.len() == before {
            break;
        }
    }

    let mut out = Vec::new();
    for (t, tree) in forest.trees().iter().enumerate() {
        if tested.contains(&t) {
            continue;
        }
        let is_request = |s: &Span| matches!(s.kind, SpanKind::Server | SpanKind::Consumer);
        let receivers: HashSet<&str> = tree
            .spans()
            .filter(|(_, s)| is_request(s))
            .map(|(_, s)| s.service())
            .collect();
        for (ix, span) in tree.spans() {
            let entry = tree
                .parent(ix)
                .is_none_or(|p| !receivers.contains(tree.span(p).service()));
            if is_request(span) && entry && semconv::server_in_error(span) {
                out.push(SpanRef { tree: t, span: ix });
            }
        }
    }
    out
}

/// How long, in milliseconds, for sentences.
fn ms_text(ns: u64) -> String {
    let ms = ns as f64 / 1e6;
    if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// At most this many characters of a message go into a summary.
const SUMMARY_DETAIL: usize = 160;

impl Failure {
    /// One plain sentence for people, redacted, e.g. "payments answered POST /charge from
    /// checkout with HTTP 500 (`ledger write failed: currency mismatch`); 3 tests failed here".
    pub fn summary(&self, redactor: &Redactor) -> String {
        let e = &self.evidence;
        // Redacted before it is cut, so a cut can never leave half a secret unrecognised.
        let detail = e
            .exception
            .as_ref()
            .map(|x| x.message.as_str())
            .filter(|m| !m.is_empty())
            .or(e.status_message.as_deref())
            .or(e.logs.first().map(|l| l.body.as_str()))
            .map(|m| redactor.text(m))
            .filter(|m| !m.trim().is_empty())
            .map(|m| {
                let m = m.trim().replace('`', "'");
                let cut: String = m.chars().take(SUMMARY_DETAIL).collect();
                let ellipsis = if cut.len() < m.len() { "…" } else { "" };
                format!(" (`{}{ellipsis}`)", cut.trim_end())
            })
            .unwrap_or_default();
        let code = match (e.http_status, &e.rpc_status) {
            (Some(h), _) => Some(format!("HTTP {h}")),
            (None, Some(r)) => Some(format!("gRPC {r}")),
            (None, None) => None,
        };
        let what = if self.test.is_some() {
            "test"
        } else {
            "request"
        };
        let Some(hop) = self
            .hop
            .as_ref()
            .filter(|_| self.class != ErrorClass::Silent)
        else {
            let name = self.test.as_deref().unwrap_or("the request");
            return redactor.text(&format!(
                "{what} {name} failed but no span below it reported an error{detail}"
            ));
        };
        let (caller, callee, op) = (&hop.caller, &hop.callee, &hop.operation);
        let sentence = match self.class {
            ErrorClass::Timeout => {
                let after = e
                    .client_ns
                    .or(e.server_ns)
                    .map(|ns| format!(" after {}", ms_text(ns)))
                    .unwrap_or_default();
                let code = code.map(|c| format!(": {c}")).unwrap_or_default();
                format!("{callee} did not answer {op} from {caller} in time{code}{after}{detail}")
            }
            ErrorClass::Unreachable if self.circuit_open => format!(
                "{caller} did not call {callee} for {op}: its circuit breaker is open{detail}"
            ),
            ErrorClass::Unreachable => {
                format!("{caller} could not reach {callee} for {op}{detail}")
            }
            ErrorClass::Auth => format!(
                "{callee} refused {op} from {caller}{}: the caller's credentials were not \
                 accepted{detail}",
                code.map(|c| format!(" with {c}")).unwrap_or_default()
            ),
            ErrorClass::RejectedRequest => format!(
                "{callee} rejected the {op} request from {caller}{}{detail}",
                code.map(|c| format!(" with {c}")).unwrap_or_default()
            ),
            ErrorClass::ResponseRejected => format!(
                "{callee} answered {op} from {caller} with {}, but {caller} could not use the \
                 answer{detail}",
                code.unwrap_or_else(|| "success".to_owned())
            ),
            ErrorClass::CalleeError | ErrorClass::Silent => match code {
                Some(c) => format!("{callee} answered {op} from {caller} with {c}{detail}"),
                None => format!("{callee} failed {op} from {caller}{detail}"),
            },
        };
        let n = self.failed_here;
        let count = if n == 1 {
            format!("1 {what} failed here")
        } else {
            format!("{n} {what}s failed here")
        };
        redactor.text(&format!("{sentence}; {count}"))
    }
}
