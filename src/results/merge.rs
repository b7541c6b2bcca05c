//! Merging per-trace results: into a run's graph and blame (through a `Rollup`), and one trace's
//! hops named the way its run names them (the trace view).

use crate::blame::Blame;
use crate::graph::hops::Extractor;
use crate::graph::run::Interner;
use crate::graph::{AnalysisOptions, NodeKind, RunGraph};
use crate::model::SpanId;

use super::TraceResult;
use super::rollup::{Rollup, target};

/// The run's graph and blame from the results of its traces (any order).
pub fn merge(results: &[TraceResult], opts: &AnalysisOptions) -> (RunGraph, Blame) {
    Rollup::of_all(results).graph(opts)
}

/// One hop of a trace, its nodes named as in its run's graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedHop {
    pub caller: String,
    pub callee: String,
    pub operation: String,
    pub client_span: Option<SpanId>,
    pub server_span: Option<SpanId>,
    /// The calling and answering spans' durations (`/metrics`' exemplars place a hop in its
    /// latency bucket by them).
    pub client_ns: Option<u64>,
    pub server_ns: Option<u64>,
    pub error: bool,
}

/// The hops of one trace's results, raw callees named by what its run (`run`) taught.
pub fn trace_hops(result: &TraceResult, run: &Rollup, opts: &AnalysisOptions) -> Vec<NamedHop> {
    let mut nodes: Interner<NodeKind> = Interner::default();
    for s in run.services() {
        nodes.intern(s, NodeKind::Service);
    }
    let mut address = run.address_map(opts);
    let mut ex = Extractor::new(nodes, &mut address);
    let node = |i: u32| result.nodes.get(i as usize).cloned().unwrap_or_default();
    result
        .hops
        .iter()
        .map(|h| {
            let callee = match h.target.as_ref().map(target) {
                Some(crate::graph::Target::Peer(p)) => {
                    let ix = ex.resolve_peer(&p);
                    ex.nodes.key(ix.index() as u32).to_owned()
                }
                Some(crate::graph::Target::Address { host, port }) => {
                    let ix = ex.resolve_address(&host, port);
                    ex.nodes.key(ix.index() as u32).to_owned()
                }
                None => node(h.callee).0,
            };
            NamedHop {
                caller: node(h.caller).0,
                callee,
                operation: result
                    .operations
                    .get(h.operation as usize)
                    .cloned()
                    .unwrap_or_default(),
                client_span: h.client_span.and_then(|s| SpanId::from_bytes(s).ok()),
                server_span: h.server_span.and_then(|s| SpanId::from_bytes(s).ok()),
                client_ns: h.client_ns,
                server_ns: h.server_ns,
                error: h.error,
            }
        })
        .collect()
}
