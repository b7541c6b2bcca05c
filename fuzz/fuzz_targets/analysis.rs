//! Analysis of arbitrary span forests: what the settle worker and a report run on any spans.
//!
//! The input is read as a recipe for up to 32 spans in up to 3 traces (a hand-written byte
//! reader, below): services, span ids from a small pool so that parents may be missing,
//! duplicated, self-referencing or cyclic, kinds, statuses, HTTP/RPC/DB/messaging/test
//! attributes from a small vocabulary, links, exception events, and timestamps anywhere
//! (0, `u64::MAX`, end before start). Then:
//! - per-trace results (`results::compute`), each encoded and decoded again;
//! - the run's rollup of them (`Rollup::of_all`), which must not depend on the order of the traces,
//!   its graph and blame (`Rollup::graph`), and each result subtracted from it again as the
//!   settle worker does when a trace is replaced, which must leave the empty rollup;
//! - the direct analysis (`report::from_spans`: forest, graph, blame, report);
//! - coverage against what was seen (`coverage::expected`, `failing_hops`, `coverage`), the
//!   gate, impact, the report with coverage as JSON;
//! - the bug report of each failure (`blame::bug::bug_report_for`, JSON and Markdown);
//! - each trace's hops as the trace view names them (`results::trace_hops`).
#![no_main]

use std::collections::BTreeSet;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tracecov::coverage::{self, HopKey, Sources};
use tracecov::graph::AnalysisOptions;
use tracecov::model::{
    Attributes, Event, KeyValue, Link, Resource, Span, SpanId, SpanKind, Status, StatusCode,
    TraceId, Value,
};
use tracecov::report::{self, ReportOptions, RunInfo};
use tracecov::results::{self, Rollup, TraceResult};

/// Reads the input a byte at a time; past its end every read is 0.
struct Recipe<'a>(&'a [u8]);

impl Recipe<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn below(&mut self, n: usize) -> usize {
        self.byte() as usize % n
    }
    fn pick<T: Copy>(&mut self, options: &[T]) -> T {
        options[self.below(options.len())]
    }
    fn chance(&mut self) -> bool {
        self.byte() & 1 == 1
    }
    /// A timestamp: small, near either end of the range, or eight raw bytes.
    fn time(&mut self) -> u64 {
        match self.below(8) {
            0 => 0,
            1 => u64::MAX - self.byte() as u64,
            2 => i64::MAX as u64 + self.byte() as u64,
            3 => self.byte() as u64 * 1_000_000,
            4 | 5 => 1_700_000_000_000_000_000 + self.byte() as u64 * 1_000_000,
            _ => u64::from_le_bytes(std::array::from_fn(|_| self.byte())),
        }
    }
    fn int(&mut self) -> i64 {
        match self.below(6) {
            0 => i64::MIN,
            1 => i64::MAX,
            2 => -(self.byte() as i64),
            3 => self.pick(&[200, 201, 204, 301, 400, 404, 409, 429, 500, 502, 503, 504]),
            4 => self.byte() as i64 % 20,
            _ => i64::from_le_bytes(std::array::from_fn(|_| self.byte())),
        }
    }
}

const SERVICES: &[(&str, Option<&str>)] = &[
    ("tests", None),
    ("gateway", None),
    ("cart", None),
    ("payments", Some("shop")),
    ("users", None),
    ("", None),
    ("unknown_service", None),
    ("cart", Some("other")),
];
const NAMES: &[&str] = &[
    "GET /cart/{id}",
    "POST /pay",
    "GET",
    "test_checkout",
    "test session",
    "SELECT orders",
    "shop.Payments/Charge",
    "orders publish",
    "",
    "tests/test_cart.py::test_add[1]",
];
const KEYS: &[&str] = &[
    "http.request.method",
    "http.method",
    "http.response.status_code",
    "http.status_code",
    "http.route",
    "url.full",
    "http.url",
    "url.template",
    "server.address",
    "server.port",
    "net.peer.name",
    "net.peer.port",
    "peer.service",
    "service.peer.name",
    "rpc.system",
    "rpc.service",
    "rpc.method",
    "rpc.grpc.status_code",
    "rpc.response.status_code",
    "db.system",
    "db.system.name",
    "db.statement",
    "db.query.text",
    "db.operation.name",
    "db.collection.name",
    "db.namespace",
    "messaging.system",
    "messaging.destination.name",
    "test.case.name",
    "test.case.result.status",
    "error.type",
    "exception.message",
    "deployment.environment.name",
];
const TEXTS: &[&str] = &[
    "GET",
    "POST",
    "cart",
    "payments",
    "cart:8080",
    "http://cart:8080/cart/1?x=1",
    "https://[::1]:443/",
    "/cart/{id}",
    "grpc",
    "postgresql",
    "SELECT * FROM orders WHERE id = 1",
    "kafka",
    "orders",
    "pass",
    "fail",
    "DEADLINE_EXCEEDED",
    "14",
    "503",
    "",
    "\u{9b}31m\u{1b}[0m",
    "password=hunter2",
    "::",
];

fn value(r: &mut Recipe<'_>, depth: u8) -> Value {
    match r.below(if depth > 1 { 5 } else { 7 }) {
        0 | 1 => Value::Str(r.pick(TEXTS).to_owned()),
        2 => Value::Int(r.int()),
        3 => Value::Bool(r.chance()),
        4 => Value::Double(r.pick(&[0.0, -1.5, 200.0, f64::NAN, f64::INFINITY, 1e300])),
        5 => Value::Array((0..r.below(3)).map(|_| value(r, depth + 1)).collect()),
        _ => Value::Map(
            (0..r.below(3))
                .map(|_| KeyValue::new(r.pick(KEYS), value(r, depth + 1)))
                .collect(),
        ),
    }
}

fn attributes(r: &mut Recipe<'_>, most: usize) -> Attributes {
    (0..r.below(most + 1))
        .map(|_| KeyValue::new(r.pick(KEYS), value(r, 0)))
        .collect()
}

fn trace_id(n: usize) -> TraceId {
    TraceId::from_bytes([n as u8 + 1; 16]).unwrap()
}

fn span_id(n: usize) -> SpanId {
    SpanId::from_bytes([n as u8 + 1; 8]).unwrap()
}

fn spans(r: &mut Recipe<'_>) -> Vec<Span> {
    let resources: Vec<Arc<Resource>> = SERVICES
        .iter()
        .map(|&(name, ns)| {
            let mut a = Attributes::new();
            if !name.is_empty() {
                a.push("service.name", name);
            }
            if let Some(ns) = ns {
                a.push("service.namespace", ns);
            }
            Arc::new(Resource::new(a))
        })
        .collect();
    let count = 1 + r.below(32);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        // Ids from a pool of 12: parents are missing, repeated, themselves or cyclic by chance.
        let mut s = Span::new(trace_id(r.below(3)), span_id(r.below(12)), r.pick(NAMES));
        s.parent_span_id = r.chance().then(|| span_id(r.below(14)));
        s.kind = SpanKind::from_i32(r.below(7) as i32);
        s.start_ns = r.time();
        s.end_ns = if r.chance() { s.start_ns.wrapping_add(r.byte() as u64 * 1000) } else { r.time() };
        s.resource = resources[r.below(resources.len())].clone();
        s.attributes = attributes(r, 6);
        s.status = Status {
            code: StatusCode::from_i32(r.below(3) as i32),
            message: if r.chance() { r.pick(TEXTS).to_owned() } else { String::new() },
        };
        for _ in 0..r.below(3) {
            let mut a = attributes(r, 2);
            if r.chance() {
                a.push("exception.type", r.pick(&["ValueError", "TimeoutError", ""]));
                a.push("exception.stacktrace", "Traceback\n  line 1");
            }
            s.events.push(Event {
                time_ns: r.time(),
                name: r.pick(&["exception", "retry", "message"]).to_owned(),
                attributes: a,
            });
        }
        for _ in 0..r.below(3) {
            s.links.push(Link {
                trace_id: trace_id(r.below(4)),
                span_id: span_id(r.below(12)),
                attributes: Attributes::new(),
            });
        }
        out.push(s);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut r = Recipe(data);
    let opts = AnalysisOptions {
        test_services: if r.chance() { vec!["tests".to_owned()] } else { Vec::new() },
        aliases: if r.chance() {
            vec![("cart:8080".to_owned(), "cart".to_owned())]
        } else {
            Vec::new()
        },
    };
    let spans = spans(&mut r);

    // Per-trace results, as the settle worker stores them.
    let computed = results::compute(&spans, &opts);
    for t in &computed {
        let back = TraceResult::decode(&t.encode()).expect("a stored result decodes");
        assert_eq!(&back, t);
    }

    // The run's rollup and its graph, as every question about a run reads it.
    // In any order, and every trace's contribution can be taken out again.
    let rollup = Rollup::of_all(&computed);
    let reversed: Vec<TraceResult> = computed.iter().rev().cloned().collect();
    assert_eq!(Rollup::of_all(&reversed), rollup, "a rollup depends on the order of its traces");
    let rollup = Rollup::decode(&rollup.encode()).expect("a stored rollup decodes");
    let (graph, blame) = rollup.graph(&opts);
    let mut emptied = rollup.clone();
    for t in &computed {
        let _ = results::trace_hops(t, &rollup, &opts);
        emptied.subtract(t);
        let _ = emptied.graph(&opts);
    }
    assert_eq!(emptied, Rollup::default(), "subtracting every trace leaves something");
    let (merged, _) = results::merge(&computed, &opts);

    // The direct analysis of the spans.
    let info = RunInfo {
        id: "run".to_owned(),
        name: "fuzz".to_owned(),
    };
    let ropts = ReportOptions::default();
    let _ = report::from_spans(&info, &spans, &opts, &ropts);

    // Coverage against everything seen, the gate and impact, as a report of the run does it.
    let mut report = report::build_with(&info, &graph, &blame, &ropts);
    let expected = coverage::expected(&Sources {
        everything: Some(&merged),
        ..Sources::default()
    });
    let mut failing: BTreeSet<HopKey> = coverage::failing_hops(&graph);
    for f in &blame.failures {
        if let Some(h) = &f.hop {
            failing.insert(HopKey {
                caller: h.caller.clone(),
                callee: h.callee.clone(),
                operation: Some(h.operation.clone()),
            });
        }
    }
    let cov = coverage::coverage(&graph, &expected, &failing);
    report::apply_coverage(&mut report, &cov);
    let _ = report::to_json(&report);
    let _ = coverage::gate(&cov, &coverage::GateConditions {
        critical: true,
        no_failures: true,
        min_edge_coverage: Some(100.0),
        min_interface_coverage: Some(0.0),
    });
    let _ = coverage::impact(&graph, &["cart".to_owned(), "shop/payments".to_owned()]);

    // Bug reports of the failures found.
    for f in blame.failures.iter().take(4) {
        let bug = tracecov::blame::bug::bug_report_for(f, &spans, Some(&info), &ropts);
        let _ = tracecov::blame::bug::bug_json(&bug);
        let _ = tracecov::blame::bug::bug_markdown(&bug);
    }
});
