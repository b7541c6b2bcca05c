//! `tracecov bench pipeline`: time from a run's spans to its JSON report, and peak memory, on a
//! generated run shaped like a real system (about 50 services, call depth up to 6, databases and
//! queues, one test case per trace).
//!
//! The baseline measured in the same run is the least any analysis must do: one pass grouping the
//! spans by trace id. The figure that matters is the ratio of the full analysis to it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::graph::{self, AnalysisOptions};
use crate::model::{Attributes, KeyValue, Resource, Span, SpanId, SpanKind, TraceId};
use crate::report::{self, RunInfo};

const SERVICES: usize = 50;

/// A small deterministic generator (xorshift), so every run analyses the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Gen {
    rng: Rng,
    resources: Vec<Arc<Resource>>,
    next_span: u64,
    spans: Vec<Span>,
}

impl Gen {
    fn span(
        &mut self,
        trace: TraceId,
        parent: Option<SpanId>,
        service: usize,
        name: &str,
        kind: SpanKind,
        start: u64,
    ) -> SpanId {
        self.next_span += 1;
        // The counter starts at 1 and only grows: never the all-zero id.
        let id = SpanId::from_bytes(self.next_span.to_be_bytes()).expect("non-zero span id");
        let mut s = Span::new(trace, id, name);
        s.parent_span_id = parent;
        s.kind = kind;
        s.start_ns = start;
        s.end_ns = start + 1_000_000 + self.rng.below(5_000_000);
        s.resource = self.resources[service].clone();
        self.spans.push(s);
        id
    }

    /// One call from `caller` down the tree, `depth` levels left.
    fn call(&mut self, trace: TraceId, parent: SpanId, caller: usize, depth: u32, start: u64) {
        let kind = self.rng.below(10);
        if depth == 0 || kind == 0 {
            // A database call: a client span with no server span.
            self.span(
                trace,
                Some(parent),
                caller,
                "SELECT orders",
                SpanKind::Client,
                start,
            );
            if let Some(a) = self.spans.last_mut().map(|s| &mut s.attributes) {
                a.push("db.system.name", "postgresql");
                a.push("db.namespace", format!("db{}", caller % 7));
                a.push("db.operation.name", "SELECT");
                a.push("db.collection.name", "orders");
            }
            return;
        }
        if kind == 1 {
            let id = self.span(
                trace,
                Some(parent),
                caller,
                "publish",
                SpanKind::Producer,
                start,
            );
            if let Some(s) = self.spans.last_mut() {
                s.attributes.push("messaging.system", "kafka");
                s.attributes
                    .push("messaging.destination.name", format!("topic{}", caller % 5));
            }
            let consumer = (caller + 1 + self.rng.below(SERVICES as u64 - 1) as usize) % SERVICES;
            self.span(
                trace,
                Some(id),
                consumer,
                "process",
                SpanKind::Consumer,
                start + 10_000,
            );
            return;
        }
        let callee = (caller + 1 + self.rng.below(SERVICES as u64 - 1) as usize) % SERVICES;
        let route = format!("/api/v{}/items/{{id}}", self.rng.below(4));
        let client = self.span(trace, Some(parent), caller, "GET", SpanKind::Client, start);
        if let Some(s) = self.spans.last_mut() {
            s.attributes.push("http.request.method", "GET");
            s.attributes.push("server.address", format!("svc{callee}"));
            s.attributes.push("server.port", 8080_i64);
            s.attributes.push(
                "http.response.status_code",
                if self.rng.below(100) == 0 {
                    500_i64
                } else {
                    200
                },
            );
        }
        let server = self.span(
            trace,
            Some(client),
            callee,
            &format!("GET {route}"),
            SpanKind::Server,
            start + 50_000,
        );
        if let Some(s) = self.spans.last_mut() {
            s.attributes.push("http.request.method", "GET");
            s.attributes.push("http.route", route);
            s.attributes.push("http.response.status_code", 200_i64);
        }
        let fanout = 1 + self.rng.below(2);
        for k in 0..fanout {
            self.call(
                trace,
                server,
                callee,
                depth - 1,
                start + 100_000 + k * 10_000,
            );
        }
    }
}

/// Generates about `target` spans.
pub fn generate(target: usize) -> Vec<Span> {
    generate_from(1, target).0
}

/// Generates about `target` spans in traces numbered from `first` on; returns them and the
/// number of the next trace, so a large run can be generated (and sent) a part at a time.
pub fn generate_from(first: u64, target: usize) -> (Vec<Span>, u64) {
    let resources = (0..=SERVICES)
        .map(|i| {
            let name = if i == SERVICES {
                "suite".to_owned()
            } else {
                format!("svc{i}")
            };
            Arc::new(Resource::new(Attributes(vec![
                KeyValue::new("service.name", name),
                KeyValue::new("service.version", "1.0.0"),
            ])))
        })
        .collect();
    let mut g = Gen {
        rng: Rng(0x9e37_79b9_7f4a_7c15 ^ (first - 1).wrapping_mul(0x2545_f491_4f6c_dd1d)),
        resources,
        next_span: (first - 1) << 24,
        spans: Vec::with_capacity(target + 64),
    };
    let mut t: u64 = first - 1;
    while g.spans.len() < target {
        t += 1;
        let trace = TraceId::from_bytes(u128::from(t).to_be_bytes()).expect("non-zero trace id");
        let start = 1_700_000_000_000_000_000 + t * 1_000_000_000;
        let test = g.span(
            trace,
            None,
            SERVICES,
            &format!("test_{}", t % 400),
            SpanKind::Internal,
            start,
        );
        if let Some(s) = g.spans.last_mut() {
            s.attributes
                .push("test.case.name", format!("test_{}", t % 400));
            s.attributes.push("test.case.result.status", "pass");
        }
        g.call(trace, test, SERVICES, 6, start + 1_000);
    }
    (g.spans, t + 1)
}

/// The whole pipeline a report took before results were kept: graph, failing-hop blame,
/// coverage against the default expected set (everything seen: `everything`, or these spans when
/// they are all there is), the report's structs and their JSON.
pub(crate) fn report_from_spans(
    spans: &[Span],
    run: &str,
    everything: Option<&graph::RunGraph>,
) -> report::Report {
    let forest = graph::Forest::build(spans);
    let mut graph = graph::analyze_forest(&forest, &AnalysisOptions::default());
    let blame = crate::blame::analyze(&forest, &mut graph);
    let mut rep = report::build_with(
        &RunInfo {
            id: run.into(),
            name: run.into(),
        },
        &graph,
        &blame,
        &report::ReportOptions::default(),
    );
    let expected = crate::coverage::expected(&crate::coverage::Sources {
        everything: Some(everything.unwrap_or(&graph)),
        ..Default::default()
    });
    let failing = crate::coverage::failing_hops(&graph);
    report::apply_coverage(
        &mut rep,
        &crate::coverage::coverage(&graph, &expected, &failing),
    );
    rep
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in bytes.
pub(crate) fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

fn current_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn run(spans: usize, runs: usize) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let data = generate(spans);
    let gen_s = t0.elapsed().as_secs_f64();
    let rss_spans = current_rss().unwrap_or(0);
    println!(
        "analysis benchmark: {} spans generated in {:.2} s ({} services + a test driver, depth up to 6), {} runs",
        data.len(),
        gen_s,
        SERVICES,
        runs
    );
    let mut base = Vec::new();
    let mut full = Vec::new();
    let mut report_bytes = 0;
    let mut edges = 0;
    for run in 1..=runs {
        let start = Instant::now();
        let mut by_trace: HashMap<TraceId, Vec<u32>> = HashMap::new();
        for (i, s) in data.iter().enumerate() {
            by_trace.entry(s.trace_id).or_default().push(i as u32);
        }
        let b = start.elapsed().as_secs_f64();
        let traces = by_trace.len();
        drop(by_trace);

        let start = Instant::now();
        let rep = report_from_spans(&data, "bench", None);
        let json = report::to_json(&rep);
        let f = start.elapsed().as_secs_f64();
        report_bytes = json.len();
        edges = rep.edges.len();
        println!(
            "  run {run}: group by trace {b:.3} s ({traces} traces)   spans → JSON report {f:.3} s   ratio {:.1}",
            f / b
        );
        base.push(b);
        full.push(f);
    }
    let (b, f) = (median(base), median(full));
    let peak = peak_rss().unwrap_or(0);
    println!(
        "median: group by trace {b:.3} s, spans → JSON report {f:.3} s ({:.2} s per million spans), ratio {:.1}; report {edges} edges, {report_bytes} bytes",
        f / (data.len() as f64 / 1e6),
        f / b
    );
    println!(
        "memory: {:.0} MiB resident holding the spans, {:.0} MiB peak; analysis added {:.0} MiB ({:.0} MiB per million spans)",
        rss_spans as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        peak.saturating_sub(rss_spans) as f64 / 1048576.0,
        peak.saturating_sub(rss_spans) as f64 / 1048576.0 / (data.len() as f64 / 1e6)
    );
    Ok(())
}
