//! From spans to the call graph a run exercised: trace trees, node ids, the address map, hops,
//! test cases, edges and interfaces, with diagnostics of what was odd.
//!
//! Entry point: `analyze(spans, options) -> RunGraph`. Walkers that need the trees themselves
//! (failing-hop blame) build a `Forest` and call `analyze_forest`, then walk the same forest.
//!
//! This module is pure: no I/O, no async, no clock, no serde. Analysis never fails: messy input
//! (orphans, duplicate ids, parent cycles, missing end times, clock skew) is counted in
//! `Diagnostics` and analysed as well as it can be.
//!
//! The pipeline, each step in its own file:
//! 1. `forest`/`tree`: group spans by trace with one sort, index each trace as a tree.
//! 2. One pass over all spans: the services (nodes), the address map learned from SERVER spans
//!    (`address`), and propagation breaks.
//! 3. `testcase`: find the test spans, attribute every span to the nearest test above it, or
//!    across span links.
//! 4. `hops`: per tree, the calls across boundaries (`semconv` reads the attributes).
//! 5. `critical`: per hop, the own time of each node on the critical path below the call.
//! 6. `run`: aggregate hops into edges and interfaces on a petgraph graph, sorted.
//!
//! Speed matters (a million spans in about a second): spans are addressed by index, names are
//! built in reused buffers and interned, and nothing allocates per span except the trees' index
//! vectors.

mod address;
pub mod critical;
mod forest;
pub(crate) mod hops;
pub(crate) mod run;
pub mod semconv;
pub mod sketch;
mod testcase;
mod tree;

#[cfg(test)]
pub(crate) mod fixture;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use crate::model::{Span, SpanKind};

pub use address::AddressMap;
pub use critical::{PathSum, PathTimes};
pub use forest::{Forest, SpanRef};
pub use run::{
    Diagnostics, Edge, EdgeRef, Hop, HopSample, Interface, Latency, Node, NodeKind, OpId, PathNode,
    RunGraph, SAMPLES, Target,
};
pub use sketch::Sketch;
pub use testcase::{SESSION_ROOT_NAME, TestCase, TestId, TestOutcome, is_pytest_session_root};
pub use tree::{SKEW_TOLERANCE_NS, TraceTree, TreeDiagnostics};

/// What analysis needs beyond the spans.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnalysisOptions {
    /// Test-driver services (`--test-service`, manifest `test_services`): their root spans, or the
    /// children of their session root, are test cases.
    pub test_services: Vec<String>,
    /// (address, service) pairs from the manifest: `host`, `host:port` or a URL, and the service
    /// that answers there. They win over addresses learned from spans.
    pub aliases: Vec<(String, String)>,
    /// The manifest's `expect:` list, judged per trace when its results are computed.
    pub expectations: Vec<crate::expect::Expectation>,
}

/// Analyses the spans of one run (many traces, any order).
pub fn analyze(spans: &[Span], opts: &AnalysisOptions) -> RunGraph {
    analyze_forest(&Forest::build(spans), opts)
}

/// As `analyze`, on a forest the caller keeps for its own walks.
pub fn analyze_forest(forest: &Forest<'_>, opts: &AnalysisOptions) -> RunGraph {
    analyze_forest_counted(forest, opts).0
}

/// As `analyze_forest`, with the calls that named nothing counted per tree of the forest (what
/// per-trace results need and the run's graph only sums).
pub(crate) fn analyze_forest_counted(
    forest: &Forest<'_>,
    opts: &AnalysisOptions,
) -> (RunGraph, Vec<u64>) {
    let mut nodes = run::Interner::default();
    let mut address = AddressMap::new();
    let mut propagation_breaks: BTreeMap<String, u64> = BTreeMap::new();
    let mut spans = 0u64;
    for tree in forest.trees() {
        for (_, span) in tree.spans() {
            spans += 1;
            nodes.intern(span.service(), NodeKind::Service);
            if span.kind == SpanKind::Server {
                if let Some((host, port)) = semconv::served_address(&span.attributes) {
                    address.learn(host, port, span.service());
                }
                if span.parent_span_id.is_none() {
                    match propagation_breaks.get_mut(span.service()) {
                        Some(n) => *n += 1,
                        None => {
                            propagation_breaks.insert(span.service().to_owned(), 1);
                        }
                    }
                }
            }
        }
    }
    for (addr, service) in &opts.aliases {
        address.alias(addr, service);
    }

    let attribution = testcase::attribute(forest, &opts.test_services);

    let mut extractor = hops::Extractor::new(nodes, &mut address);
    let mut gatherer = crate::expect::Gatherer::new(&opts.expectations);
    for t in 0..forest.trees().len() {
        let first = extractor.hops.len();
        extractor.extract(forest, t, &attribution);
        // What expectations read of this tree's spans, read now that they are in the cache.
        if let Some(g) = &mut gatherer {
            let is_test = |span| {
                attribution
                    .test_of(SpanRef { tree: t, span })
                    .is_some_and(|id| {
                        let test = &attribution.tests[id.index()];
                        test.trace_id == forest.tree(t).trace_id()
                            && test.span_id == forest.tree(t).span(span).span_id
                    })
            };
            let names = hops::Names(&extractor.nodes, &extractor.operations);
            g.gather(
                forest.tree(t),
                &mut extractor.hops[first..],
                &names,
                is_test,
            );
        }
    }

    let tree_diag = forest.diagnostics();
    // Duplicates are not in the trees; count them back so `spans` is what was given.
    spans += tree_diag.duplicate_span_ids;
    let diagnostics = Diagnostics {
        orphans: tree_diag.orphans,
        duplicate_span_ids: tree_diag.duplicate_span_ids,
        parent_cycles: tree_diag.parent_cycles,
        missing_end_times: tree_diag.missing_end_times,
        clock_skew: tree_diag.clock_skew,
        unresolved_calls: extractor.unresolved_calls,
        propagation_breaks,
    };
    let mut unresolved = extractor.unresolved_per_tree;
    unresolved.resize(forest.trees().len(), 0);
    let mut graph = run::assemble(
        run::Totals {
            nodes: extractor.nodes,
            operations: extractor.operations,
            tests: attribution.tests,
            spans,
            traces: forest.trees().len() as u64,
            diagnostics,
        },
        extractor.hops,
    );

    graph.set_expect_facts(gatherer.map(crate::expect::Gatherer::finish));
    (graph, unresolved)
}
