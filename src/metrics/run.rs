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

use std::collections::BTreeMap;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::graph::{NodeKind, Sketch};
use crate::query::Analysed;
use crate::runs::Run;

use super::{Labels, gauges};

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

/// A histogram of `LATENCY_BUCKETS` filled from latency sketches: a run's hops are counted into
/// the buckets from its edges' sketches, never observed one by one. The sum is exact; a sample
/// lies in the bucket of its sketch value (within the sketch's stated error, see `graph::sketch`).
#[derive(Debug, Clone, Default)]
pub struct SketchHistogram {
    inner: std::sync::Arc<std::sync::Mutex<HistogramCounts>>,
}

#[derive(Debug, Default)]
struct HistogramCounts {
    sum_ns: u128,
    count: u64,
    /// Per bound of `LATENCY_BUCKETS`, then +Inf: samples in that bucket alone.
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
}

impl SketchHistogram {
    pub fn observe_sketch(&self, sketch: &Sketch) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        c.sum_ns += u128::from(sketch.sum());
        c.count += sketch.count();
        for (ns, n) in sketch.buckets() {
            let secs = ns as f64 / 1e9;
            let at = LATENCY_BUCKETS.partition_point(|&le| le < secs);
            c.buckets[at] += n;
        }
    }
}

impl TypedMetric for SketchHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for SketchHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(c.buckets.iter().copied())
            .collect();
        encoder.encode_histogram::<NoLabelSet>(c.sum_ns as f64 / 1e9, c.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Registers every series of `analysed`, the analysis of `run`.
/// `own_graph`: in a deployment, this instance's share of the run's graph, which the
/// service-graph counters count (Prometheus sums them over the instances); the coverage gauges
/// describe the whole run, the same on every instance.
pub fn register(
    registry: &mut Registry,
    run: &Run,
    analysed: &Analysed,
    own_graph: Option<&crate::graph::RunGraph>,
) {
    service_graph(registry, own_graph.unwrap_or(&analysed.graph));
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

fn service_graph(registry: &mut Registry, graph: &crate::graph::RunGraph) {
    let total = Family::<Labels, Counter>::default();
    let failed = Family::<Labels, Counter>::default();
    let server = Family::<Labels, SketchHistogram>::default();
    let client = Family::<Labels, SketchHistogram>::default();
    for e in graph.edges() {
        let labels: Labels = vec![
            ("client", e.caller.id.clone()),
            ("server", e.callee.id.clone()),
            (
                "connection_type",
                connection_type(e.caller.kind, e.callee.kind).to_owned(),
            ),
        ];
        total.get_or_create(&labels).inc_by(e.edge.calls);
        // Every edge gets a failed series, zero or not, so error ratios need no `or vector(0)`.
        failed.get_or_create(&labels).inc_by(e.edge.errors);
        server.get_or_create(&labels).observe_sketch(&e.edge.server);
        client.get_or_create(&labels).observe_sketch(&e.edge.client);
    }
    registry.register(
        "traces_service_graph_request",
        "Calls from client to server in the latest run (hops), as Tempo's service graph counts them",
        total,
    );
    registry.register(
        "traces_service_graph_request_failed",
        "Calls from client to server in the latest run that were in error on either side",
        failed,
    );
    registry.register(
        "traces_service_graph_request_server_seconds",
        "Durations of the answering (server or consumer) spans of the latest run's hops",
        server,
    );
    registry.register(
        "traces_service_graph_request_client_seconds",
        "Durations of the calling (client or producer) spans of the latest run's hops",
        client,
    );
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
