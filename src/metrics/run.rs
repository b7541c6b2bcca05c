//! The series of one analysed run: the service graph in the names, labels and meaning Grafana's
//! service graph reads (Tempo's metrics-generator convention), and tracecov's own coverage,
//! failure and error series.
//!
//! Service graph (`traces_service_graph_*`, labels `client`, `server`, `connection_type`):
//! - one series per edge of the run's graph, `client` the caller's node id and `server` the
//!   callee's, in DESIGN's node-id grammar (`db:sqlite/users`, `queue:memory/orders`,
//!   `ext:email-provider`);
//! - `connection_type` as Tempo writes it: `messaging_system` for a hop into or out of a queue
//!   node, `database` for a hop into a database, `virtual_node` for a hop to an external host (a
//!   peer that reported no spans), and empty for a call between two services;
//! - `request_total` counts hops, `request_failed_total` the hops in error (either side, DESIGN's
//!   "in error"); the `request_client_seconds` histogram holds the calling spans' durations and
//!   `request_server_seconds` the answering spans' (a hop with no such span adds no sample).
//!
//! Unlike Tempo, queue hops keep the queue as a node (`checkout → queue:memory/orders →
//! inventory`), as tracecov's graph does; Tempo joins producer and consumer directly.
//!
//! This module does no I/O: it copies what analysis and the report decided.

use std::collections::{BTreeMap, HashMap};

use prometheus_client::registry::Registry;

use crate::graph::NodeKind;
use crate::model::{SpanId, TraceId};
use crate::query::Analysed;
use crate::results::NamedHop;
use crate::runs::Run;

use super::gauges;

/// Histogram bounds in seconds: 1 ms to about 16 s, doubling. Test runs are mostly fast calls,
/// so this starts lower than Tempo's default (100 ms) and still reaches the slow hops.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192, 16.384,
];

/// At most this many failures get a `tracecov_failure_info` series each (the rest are counted in
/// `tracecov_failures` only): a run with thousands of failing tests must not explode the series.
pub const MAX_FAILURE_INFO: usize = 500;

/// Tempo's `connection_type` for a hop between nodes of these kinds.
pub fn connection_type(caller: NodeKind, callee: NodeKind) -> &'static str {
    match (caller, callee) {
        (NodeKind::Messaging, _) | (_, NodeKind::Messaging) => "messaging_system",
        (_, NodeKind::Database) => "database",
        (_, NodeKind::External) => "virtual_node",
        _ => "",
    }
}

/// Registers every series of `analysed`, the analysis of `run`.
/// The service graph is written apart, by `service_graph`.
pub fn register(registry: &mut Registry, run: &Run, analysed: &Analysed) {
    coverage(registry, run, analysed);
    violations(registry, analysed);
}

/// `tracecov_violations{expectation}`: the latest run's violations of each of the manifest's
/// expectations (0 for those that held); absent when the manifest has no `expect:`.
fn violations(registry: &mut Registry, analysed: &Analysed) {
    let report = &analysed.report;
    let (Some(names), Some(violations)) = (&report.expectations, &report.violations) else {
        return;
    };
    gauges(
        registry,
        "tracecov_violations",
        "Broken expectations of the latest run, by expectation (the manifest's expect: names)",
        names.iter().map(|name| {
            let n = violations.iter().filter(|v| v.expectation == *name).count();
            (vec![("expectation", name.clone())], n as f64)
        }),
    );
}

/// A hop the exemplars point at: its trace, its span, its duration in seconds.
#[derive(Debug, Clone, PartialEq)]
struct Pointer {
    trace: String,
    span: String,
    seconds: f64,
}

/// Per edge, the exemplars: a recent hop in each latency bucket of either side, and a recent
/// failing hop.
#[derive(Debug, Default)]
struct EdgeExemplars {
    client: [Option<Pointer>; LATENCY_BUCKETS.len() + 1],
    server: [Option<Pointer>; LATENCY_BUCKETS.len() + 1],
    failed: Option<Pointer>,
}

/// The bucket (index in `LATENCY_BUCKETS`, then +Inf) a duration falls in.
fn bucket_of(seconds: f64) -> usize {
    LATENCY_BUCKETS.partition_point(|&le| le < seconds)
}

/// The exemplars of every edge from `hops`, the most recent trace's first: the first hop found
/// for a bucket (or failing) is kept.
fn exemplars(hops: &[(TraceId, NamedHop)]) -> HashMap<(&str, &str), EdgeExemplars> {
    let mut out: HashMap<(&str, &str), EdgeExemplars> = HashMap::new();
    for (trace, h) in hops {
        let e = out
            .entry((h.caller.as_str(), h.callee.as_str()))
            .or_default();
        let pointer = |span: Option<SpanId>, other: Option<SpanId>, ns: Option<u64>| {
            Some(Pointer {
                trace: trace.to_string(),
                span: span.or(other)?.to_string(),
                seconds: ns.unwrap_or(0) as f64 / 1e9,
            })
        };
        if let Some(ns) = h.client_ns {
            let slot = &mut e.client[bucket_of(ns as f64 / 1e9)];
            if slot.is_none() {
                *slot = pointer(h.client_span, h.server_span, Some(ns));
            }
        }
        if let Some(ns) = h.server_ns {
            let slot = &mut e.server[bucket_of(ns as f64 / 1e9)];
            if slot.is_none() {
                *slot = pointer(h.server_span, h.client_span, Some(ns));
            }
        }
        if h.error && e.failed.is_none() {
            e.failed = pointer(h.client_span, h.server_span, h.client_ns.or(h.server_ns));
        }
    }
    out
}

/// A label value in the exposition's quoting.
fn quoted(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn exemplar(out: &mut String, p: Option<&Pointer>, value: f64) {
    if let Some(p) = p {
        out.push_str(&format!(
            " # {{trace_id={},span_id={}}} {value}",
            quoted(&p.trace),
            quoted(&p.span)
        ));
    }
}

/// The service graph's families as OpenMetrics text, with exemplars (`# {trace_id, span_id}`) of
/// recent hops from `hops` on the latency buckets and the failed counter.
///
/// Written here rather than through `prometheus-client`: its exemplars can only be recorded by
/// observing samples one by one, and these histograms are filled from sketches (a run's calls
/// are never observed one by one). `super::classic` strips the exemplars for scrapers that did
/// not ask for OpenMetrics.
///
/// `graph` is the latest run's graph, or in a deployment (`serve --shared-db`) this instance's
/// share of it, so that Prometheus summing the counters over the instances counts each call once;
/// the `tracecov_` gauges (`register`) describe the whole run, the same on every instance.
pub fn service_graph(graph: &crate::graph::RunGraph, hops: &[(TraceId, NamedHop)]) -> String {
    let exemplars = exemplars(hops);
    let none = EdgeExemplars::default();
    let edges: Vec<_> = graph
        .edges()
        .map(|e| {
            let labels = format!(
                "client={},server={},connection_type={}",
                quoted(&e.caller.id),
                quoted(&e.callee.id),
                quoted(connection_type(e.caller.kind, e.callee.kind))
            );
            let ex = exemplars
                .get(&(e.caller.id.as_str(), e.callee.id.as_str()))
                .unwrap_or(&none);
            (labels, e, ex)
        })
        .collect();
    let mut out = String::new();
    let head = |out: &mut String, name: &str, kind: &str, help: &str| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    };
    head(
        &mut out,
        "traces_service_graph_request",
        "counter",
        "Calls from client to server in the latest run (hops), as Tempo's service graph counts them",
    );
    for (labels, e, _) in &edges {
        out.push_str(&format!(
            "traces_service_graph_request_total{{{labels}}} {}\n",
            e.edge.calls
        ));
    }
    // Every edge gets a failed series, zero or not, so error ratios need no `or vector(0)`.
    head(
        &mut out,
        "traces_service_graph_request_failed",
        "counter",
        "Calls from client to server in the latest run that were in error on either side",
    );
    for (labels, e, ex) in &edges {
        out.push_str(&format!(
            "traces_service_graph_request_failed_total{{{labels}}} {}",
            e.edge.errors
        ));
        if e.edge.errors > 0 {
            exemplar(&mut out, ex.failed.as_ref(), 1.0);
        }
        out.push('\n');
    }
    let histogram = |out: &mut String, name: &str, help: &str, client: bool| {
        head(out, name, "histogram", help);
        for (labels, e, ex) in &edges {
            let (sketch, pointers) = if client {
                (&e.edge.client, &ex.client)
            } else {
                (&e.edge.server, &ex.server)
            };
            let mut counts = [0u64; LATENCY_BUCKETS.len() + 1];
            for (ns, n) in sketch.buckets() {
                counts[bucket_of(ns as f64 / 1e9)] += n;
            }
            out.push_str(&format!(
                "{name}_sum{{{labels}}} {}\n{name}_count{{{labels}}} {}\n",
                sketch.sum() as f64 / 1e9,
                sketch.count()
            ));
            let mut cumulative = 0;
            for (i, n) in counts.iter().enumerate() {
                cumulative += n;
                let le = match LATENCY_BUCKETS.get(i) {
                    Some(le) => le.to_string(),
                    None => "+Inf".to_owned(),
                };
                out.push_str(&format!(
                    "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                ));
                if let Some(p) = &pointers[i] {
                    exemplar(out, Some(p), p.seconds);
                }
                out.push('\n');
            }
        }
    };
    histogram(
        &mut out,
        "traces_service_graph_request_server_seconds",
        "Durations of the answering (server or consumer) spans of the latest run's hops",
        false,
    );
    histogram(
        &mut out,
        "traces_service_graph_request_client_seconds",
        "Durations of the calling (client or producer) spans of the latest run's hops",
        true,
    );
    out
}

/// A node's kind from the report's name for it, else from its id's prefix (DESIGN's node-id
/// grammar), for an expected node no trace showed.
fn node_kind(id: &str, reported: Option<&str>) -> NodeKind {
    match reported {
        Some("database") => NodeKind::Database,
        Some("messaging") => NodeKind::Messaging,
        Some("external") => NodeKind::External,
        Some(_) => NodeKind::Service,
        None if id.starts_with("db:") => NodeKind::Database,
        None if id.starts_with("queue:") => NodeKind::Messaging,
        None if id.starts_with("ext:") => NodeKind::External,
        None => NodeKind::Service,
    }
}

fn flag(b: Option<bool>) -> String {
    b.unwrap_or(false).to_string()
}

fn coverage(registry: &mut Registry, run: &Run, analysed: &Analysed) {
    let report = &analysed.report;
    gauges(
        registry,
        "tracecov_run_info",
        "The run the tracecov_ run series describe (the latest run), always 1",
        [(
            vec![("run_id", run.id.clone()), ("run_name", run.name.clone())],
            1.0,
        )],
    );
    let t = report.run.tests;
    gauges(
        registry,
        "tracecov_run_tests",
        "Test cases of the latest run by result",
        [
            (vec![("result", "passed".to_owned())], t.passed as f64),
            (vec![("result", "failed".to_owned())], t.failed as f64),
        ],
    );
    super::gauge(
        registry,
        "tracecov_run_spans",
        "Spans of the latest run",
        report.run.spans as f64,
    );
    super::gauge(
        registry,
        "tracecov_run_traces",
        "Traces of the latest run",
        report.run.traces as f64,
    );
    let d = &report.run.diagnostics;
    let diagnostics = [
        ("orphans", d.orphans),
        ("duplicate_span_ids", d.duplicate_span_ids),
        ("parent_cycles", d.parent_cycles),
        ("missing_end_times", d.missing_end_times),
        ("clock_skew", d.clock_skew),
        ("unresolved_calls", d.unresolved_calls),
        ("propagation_breaks", d.propagation_breaks.values().sum()),
    ];
    gauges(
        registry,
        "tracecov_run_diagnostics",
        "What was odd about the latest run's spans, by kind (the usual causes of a false untested)",
        diagnostics.map(|(kind, n)| (vec![("kind", kind.to_owned())], n as f64)),
    );

    // The status of every edge and interface, one series each with the value 1, the shape of a
    // table: `tracecov_edge_status{status="untested",critical="true"}` lists what a gate's
    // `--critical` would name.
    gauges(
        registry,
        "tracecov_edge_status",
        "Coverage status of each edge of the latest run (covered, failing, untested, stubbed, unexpected), always 1",
        report.edges.iter().filter_map(|e| {
            let status = e.status.clone()?;
            Some((
                vec![
                    ("caller", e.caller.clone()),
                    ("callee", e.callee.clone()),
                    ("status", status),
                    ("critical", flag(e.critical)),
                ],
                1.0,
            ))
        }),
    );
    // The same edges in the service graph's labels (`client`, `server`, `connection_type`), so
    // a node graph panel can draw every edge the run was expected to cross, untested ones too,
    // coloured by status (Tempo's `traces_service_graph_connection_info`, with a status). The
    // `*` caller of interfaces expected from any caller (OpenAPI) is no node, and is left out.
    let kinds: HashMap<&str, NodeKind> = report
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), node_kind(&n.id, Some(&n.kind))))
        .collect();
    let kind = |id: &str| {
        kinds
            .get(id)
            .copied()
            .unwrap_or_else(|| node_kind(id, None))
    };
    gauges(
        registry,
        "tracecov_edge_info",
        "Every edge of the latest run and of the expected topology in the service graph's labels, with its coverage status, always 1",
        report
            .edges
            .iter()
            .filter(|e| e.caller != "*")
            .filter_map(|e| {
                let status = e.status.clone()?;
                Some((
                    vec![
                        ("client", e.caller.clone()),
                        ("server", e.callee.clone()),
                        (
                            "connection_type",
                            connection_type(kind(&e.caller), kind(&e.callee)).to_owned(),
                        ),
                        ("status", status),
                        ("critical", flag(e.critical)),
                    ],
                    1.0,
                ))
            }),
    );
    gauges(
        registry,
        "tracecov_interface_status",
        "Coverage status of each interface (caller, callee, operation) of the latest run, always 1",
        report.edges.iter().flat_map(|e| {
            e.interfaces.iter().filter_map(move |i| {
                let status = i.status.clone()?;
                Some((
                    vec![
                        ("caller", e.caller.clone()),
                        ("callee", e.callee.clone()),
                        ("operation", i.operation.clone()),
                        ("status", status),
                        ("critical", flag(i.critical)),
                    ],
                    1.0,
                ))
            })
        }),
    );

    if let Some(c) = &report.coverage {
        let scopes = [
            ("edges", c.edges),
            ("interfaces", c.interfaces),
            ("critical", c.critical),
        ];
        gauges(
            registry,
            "tracecov_coverage_ratio",
            "Covered (including failing) over expected in the latest run, 0 to 1; absent when nothing is expected",
            scopes
                .iter()
                .filter(|(_, n)| n.expected > 0)
                .map(|(scope, n)| {
                    (
                        vec![("scope", (*scope).to_owned())],
                        n.covered as f64 / n.expected as f64,
                    )
                }),
        );
        gauges(
            registry,
            "tracecov_coverage_expected",
            "Expected edges, interfaces or critical items of the latest run",
            scopes
                .iter()
                .map(|(scope, n)| (vec![("scope", (*scope).to_owned())], n.expected as f64)),
        );
        gauges(
            registry,
            "tracecov_coverage_covered",
            "Covered (including failing) edges, interfaces or critical items of the latest run",
            scopes
                .iter()
                .map(|(scope, n)| (vec![("scope", (*scope).to_owned())], n.covered as f64)),
        );
    }

    // Failures by class and the boundary they were placed on (empty for `silent`).
    let boundary = |f: &crate::report::Failure| match &f.hop {
        Some(h) => (h.caller.clone(), h.callee.clone()),
        None => (String::new(), String::new()),
    };
    gauges(
        registry,
        "tracecov_failures",
        "Failures of the latest run by class and the hop they were placed on",
        report.failures.iter().map(|f| {
            let (caller, callee) = boundary(f);
            (
                vec![
                    ("class", f.class.clone()),
                    ("caller", caller),
                    ("callee", callee),
                ],
                1.0,
            )
        }),
    );
    gauges(
        registry,
        "tracecov_failure_info",
        "One series per failure of the latest run (at most 500), always 1: its trace, test, class, hop and trace link",
        report.failures.iter().take(MAX_FAILURE_INFO).map(|f| {
            let (caller, callee) = boundary(f);
            (
                vec![
                    ("trace_id", f.trace_id.clone()),
                    ("span_id", f.span_id.clone()),
                    ("test", f.test.clone().unwrap_or_default()),
                    ("class", f.class.clone()),
                    ("caller", caller),
                    ("callee", callee),
                    ("link", f.link.clone()),
                ],
                1.0,
            )
        }),
    );
    // Errors (failures' own hops included) by class on each edge, as the report counts them.
    let mut errors: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for e in &report.edges {
        for (class, n) in &e.error_classes {
            *errors
                .entry((class.clone(), e.caller.clone(), e.callee.clone()))
                .or_default() += n;
        }
    }
    gauges(
        registry,
        "tracecov_hop_errors",
        "Hops in error in the latest run by class and edge (failures and tolerated errors alike)",
        errors.into_iter().map(|((class, caller, callee), n)| {
            (
                vec![("class", class), ("caller", caller), ("callee", callee)],
                n as f64,
            )
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(client_ns: u64, error: bool, span: u64) -> NamedHop {
        NamedHop {
            caller: "checkout".into(),
            callee: "payments".into(),
            operation: "POST /charge".into(),
            client_span: Some(SpanId::from_bytes(span.to_be_bytes()).unwrap()),
            server_span: Some(SpanId::from_bytes((span + 100).to_be_bytes()).unwrap()),
            client_ns: Some(client_ns),
            server_ns: None,
            error,
        }
    }

    #[test]
    fn each_bucket_points_at_its_most_recent_hop_and_the_failed_counter_at_a_failing_one() {
        let trace = |n: u8| TraceId::from_bytes([n; 16]).unwrap();
        // Most recent trace first, as `query::recent_hops` gives them.
        let hops = vec![
            (trace(3), hop(3_000_000, false, 1)),
            (trace(2), hop(3_500_000, true, 2)),
            (trace(1), hop(40_000_000_000, true, 3)),
        ];
        let ex = exemplars(&hops);
        let e = &ex[&("checkout", "payments")];
        // 3 ms and 3.5 ms share the (2 ms, 4 ms] bucket: the more recent hop is kept.
        let at = bucket_of(0.003);
        assert_eq!(LATENCY_BUCKETS[at], 0.004);
        let p = e.client[at].as_ref().unwrap();
        assert_eq!(p.trace, trace(3).to_string());
        assert_eq!(p.seconds, 0.003);
        // 40 s is past the last bound: +Inf.
        let inf = e.client[LATENCY_BUCKETS.len()].as_ref().unwrap();
        assert_eq!(inf.trace, trace(1).to_string());
        // The most recent failing hop, by its calling span; no server side was recorded.
        let failed = e.failed.as_ref().unwrap();
        assert_eq!(failed.trace, trace(2).to_string());
        assert_eq!(
            failed.span,
            SpanId::from_bytes(2u64.to_be_bytes()).unwrap().to_string()
        );
        assert!(e.server.iter().all(Option::is_none));
    }

    #[test]
    fn connection_types_follow_tempo() {
        use NodeKind::*;
        assert_eq!(connection_type(Service, Service), "");
        assert_eq!(connection_type(Service, Messaging), "messaging_system");
        assert_eq!(connection_type(Messaging, Service), "messaging_system");
        assert_eq!(connection_type(Service, Database), "database");
        assert_eq!(connection_type(Service, External), "virtual_node");
    }
}
