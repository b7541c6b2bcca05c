//! The call graph of a run: nodes, edges with their interfaces, the hops behind them, test cases
//! and diagnostics. This is what `analyze` returns and what reports, coverage and blame read.
//!
//! Owns `RunGraph` and its parts, and the aggregation of hops into edges and interfaces (calls,
//! errors, tests, latency percentiles). It does not decide what a hop is (`hops`) or what a test is
//! (`testcase`).
//!
//! Everything is sorted so that output is stable whatever order spans arrived in: nodes by id
//! (petgraph node indices follow that order), edges by (caller id, callee id) (edge indices follow
//! that order), interfaces by operation, and hops grouped by edge then interface, so each edge and
//! interface can name its hops as a range.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use petgraph::graph::{DiGraph, EdgeIndex, NodeIndex};

use crate::model::{SpanId, TraceId};

use super::testcase::{TestCase, TestId};

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeKind {
    Service,
    Database,
    Messaging,
    External,
}

impl NodeKind {
    /// The name used in reports (`kind` in the JSON report).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Service => "service",
            NodeKind::Database => "database",
            NodeKind::Messaging => "messaging",
            NodeKind::External => "external",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node id of DESIGN's grammar (`cart`, `shop/cart`, `db:postgresql/shop`, …).
    pub id: String,
    pub kind: NodeKind,
}

/// Index of an interned operation name; see `RunGraph::operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub(crate) u32);

impl OpId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One call across a boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub caller: NodeIndex,
    pub callee: NodeIndex,
    pub operation: OpId,
    /// The trace of the span that answered (or, with no answering span, of the calling span).
    pub trace_id: TraceId,
    /// The calling side's span, when one was recorded (none for `queue → consumer`).
    pub client_span: Option<SpanId>,
    /// The answering side's span; none for a call to a virtual node or to a service that did not
    /// answer.
    pub server_span: Option<SpanId>,
    pub client_ns: Option<u64>,
    pub server_ns: Option<u64>,
    /// In error as DESIGN defines it, on either side.
    pub error: bool,
    pub test: Option<TestId>,
    /// What a calling span with no answering span named (a peer service or an address), for a
    /// callee the address map or the set of services decided. Kept so per-trace results can
    /// resolve it again when they are merged with what other traces taught (`results`).
    pub target: Option<Target>,
}

/// The raw callee of a call that no span answered, before the address map resolves it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// `service.peer.name` (legacy `peer.service`).
    Peer(String),
    /// `server.address`/`server.port` or the URL's authority.
    Address { host: String, port: Option<u16> },
}

/// Nearest-rank percentiles, in nanoseconds; `None` when there was no sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    pub p50: Option<u64>,
    pub p95: Option<u64>,
    pub p99: Option<u64>,
}

impl Latency {
    /// From samples in any order (sorted in place).
    pub fn from_samples(samples: &mut [u64]) -> Self {
        samples.sort_unstable();
        Self {
            p50: nearest_rank(samples, 50),
            p95: nearest_rank(samples, 95),
            p99: nearest_rank(samples, 99),
        }
    }
}

/// The smallest sample with at least `pct`% of the samples at or below it.
fn nearest_rank(sorted: &[u64], pct: usize) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

/// All hops with one (caller, callee, operation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub operation: String,
    pub calls: u64,
    pub errors: u64,
    /// Names of the tests that exercised it, sorted, deduplicated.
    pub tests: Vec<String>,
    /// Its hops in `RunGraph::hops()`.
    pub hops: Range<usize>,
}

/// All hops with one (caller, callee).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub calls: u64,
    pub errors: u64,
    pub tests: Vec<String>,
    pub client_latency: Latency,
    pub server_latency: Latency,
    /// Sorted by operation.
    pub interfaces: Vec<Interface>,
    pub hops: Range<usize>,
}

/// An edge with its end nodes.
#[derive(Debug, Clone, Copy)]
pub struct EdgeRef<'g> {
    pub index: EdgeIndex,
    pub caller: &'g Node,
    pub callee: &'g Node,
    pub edge: &'g Edge,
}

/// What was odd about the run's spans. Reported always; whether a count matters (propagation
/// breaks only do during a run) is for the caller to decide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics {
    /// Spans whose parent is not in their trace.
    pub orphans: u64,
    /// Spans dropped because another span of the trace had the same id.
    pub duplicate_span_ids: u64,
    /// Parent cycles cut.
    pub parent_cycles: u64,
    /// Spans with no end time (or an end before the start).
    pub missing_end_times: u64,
    /// Spans whose clock disagrees with their parent's (see `tree` for the definition).
    pub clock_skew: u64,
    /// Calling spans (CLIENT, or PRODUCER with no destination) that name nothing a node can be made
    /// of: no server span, no database, queue, peer or address.
    pub unresolved_calls: u64,
    /// Per service, its SERVER spans with no parent at all: context propagation did not reach it.
    pub propagation_breaks: BTreeMap<String, u64>,
}

/// The analysed run.
#[derive(Debug)]
pub struct RunGraph {
    graph: DiGraph<Node, Edge>,
    hops: Vec<Hop>,
    operations: Vec<String>,
    tests: Vec<TestCase>,
    spans: u64,
    traces: u64,
    diagnostics: Diagnostics,
}

impl RunGraph {
    /// The petgraph graph, for graph algorithms (reachability for impact, layouts for the UI).
    pub fn graph(&self) -> &DiGraph<Node, Edge> {
        &self.graph
    }

    /// Nodes sorted by id.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> + '_ {
        self.graph.node_weights()
    }

    pub fn node(&self, ix: NodeIndex) -> &Node {
        &self.graph[ix]
    }

    pub fn find_node(&self, id: &str) -> Option<NodeIndex> {
        let pos = self
            .graph
            .raw_nodes()
            .binary_search_by(|n| n.weight.id.as_str().cmp(id))
            .ok()?;
        Some(NodeIndex::new(pos))
    }

    /// Edges sorted by (caller id, callee id).
    pub fn edges(&self) -> impl ExactSizeIterator<Item = EdgeRef<'_>> + '_ {
        self.graph.edge_indices().map(move |e| self.edge_ref(e))
    }

    pub fn edge(&self, caller: &str, callee: &str) -> Option<EdgeRef<'_>> {
        let e = self
            .graph
            .find_edge(self.find_node(caller)?, self.find_node(callee)?)?;
        Some(self.edge_ref(e))
    }

    fn edge_ref(&self, index: EdgeIndex) -> EdgeRef<'_> {
        let (a, b) = self.graph.edge_endpoints(index).unwrap_or_default();
        EdgeRef {
            index,
            caller: &self.graph[a],
            callee: &self.graph[b],
            edge: &self.graph[index],
        }
    }

    /// All hops, grouped by edge then interface (see `Edge::hops`).
    pub fn hops(&self) -> &[Hop] {
        &self.hops
    }

    pub fn operation(&self, op: OpId) -> &str {
        &self.operations[op.index()]
    }

    /// Test cases sorted by (name, trace id, span id).
    pub fn tests(&self) -> &[TestCase] {
        &self.tests
    }

    pub fn test(&self, id: TestId) -> &TestCase {
        &self.tests[id.index()]
    }

    /// Spans analysed (duplicates included).
    pub fn span_count(&self) -> u64 {
        self.spans
    }

    pub fn trace_count(&self) -> u64 {
        self.traces
    }

    pub fn diagnostics(&self) -> &Diagnostics {
        &self.diagnostics
    }
}

/// Interns strings to dense ids, so hops carry integers and a run allocates one `String` per
/// distinct node or operation rather than one per hop. Lookups take `&str`.
#[derive(Debug)]
pub(crate) struct Interner<T> {
    items: Vec<(String, T)>,
    index: HashMap<String, u32>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<T: Copy> Interner<T> {
    /// The id of `key`, adding it with `value` if new (an existing entry keeps its value).
    pub fn intern(&mut self, key: &str, value: T) -> u32 {
        if let Some(&id) = self.index.get(key) {
            return id;
        }
        let id = self.items.len() as u32;
        self.items.push((key.to_owned(), value));
        self.index.insert(key.to_owned(), id);
        id
    }

    /// The key of an id `intern` returned.
    pub fn key(&self, id: u32) -> &str {
        &self.items[id as usize].0
    }

    pub fn get(&self, key: &str) -> Option<(u32, T)> {
        let id = *self.index.get(key)?;
        Some((id, self.items[id as usize].1))
    }

    /// The entries sorted by key, and for each old id its new position.
    fn into_sorted(self) -> (Vec<(String, T)>, Vec<u32>) {
        let mut order: Vec<u32> = (0..self.items.len() as u32).collect();
        order.sort_by(|&a, &b| self.items[a as usize].0.cmp(&self.items[b as usize].0));
        let mut remap = vec![0u32; order.len()];
        for (new, &old) in order.iter().enumerate() {
            remap[old as usize] = new as u32;
        }
        let mut items: Vec<Option<(String, T)>> = self.items.into_iter().map(Some).collect();
        let sorted = order
            .iter()
            .filter_map(|&old| items[old as usize].take())
            .collect();
        (sorted, remap)
    }
}

/// Everything analysis found, before aggregation. Hops refer to nodes and operations by interner
/// id.
pub(crate) struct Parts {
    pub nodes: Interner<NodeKind>,
    pub operations: Interner<()>,
    pub hops: Vec<Hop>,
    pub tests: Vec<TestCase>,
    pub spans: u64,
    pub traces: u64,
    pub diagnostics: Diagnostics,
}

pub(crate) fn assemble(parts: Parts) -> RunGraph {
    let Parts {
        nodes,
        operations,
        mut hops,
        tests,
        spans,
        traces,
        diagnostics,
    } = parts;
    let (nodes, node_remap) = nodes.into_sorted();
    let (operations, op_remap) = operations.into_sorted();
    let operations: Vec<String> = operations.into_iter().map(|(s, ())| s).collect();
    for hop in &mut hops {
        hop.caller = NodeIndex::new(node_remap[hop.caller.index()] as usize);
        hop.callee = NodeIndex::new(node_remap[hop.callee.index()] as usize);
        hop.operation = OpId(op_remap[hop.operation.index()]);
    }
    // Stable: hops of one interface stay in trace order.
    hops.sort_by_key(|h| (h.caller, h.callee, h.operation));

    let mut graph = DiGraph::with_capacity(nodes.len(), 0);
    for (id, kind) in nodes {
        graph.add_node(Node { id, kind });
    }

    let mut samples = Vec::new();
    let mut start = 0;
    while start < hops.len() {
        let key = (hops[start].caller, hops[start].callee);
        let end = start + hops[start..].partition_point(|h| (h.caller, h.callee) == key);
        let edge_hops = &hops[start..end];

        let mut interfaces = Vec::new();
        let mut at = start;
        while at < end {
            let op = hops[at].operation;
            let op_end = at + hops[at..end].partition_point(|h| h.operation == op);
            let group = &hops[at..op_end];
            interfaces.push(Interface {
                operation: operations[op.index()].clone(),
                calls: group.len() as u64,
                errors: group.iter().filter(|h| h.error).count() as u64,
                tests: test_names(group, &tests),
                hops: at..op_end,
            });
            at = op_end;
        }

        samples.clear();
        samples.extend(edge_hops.iter().filter_map(|h| h.client_ns));
        let client_latency = Latency::from_samples(&mut samples);
        samples.clear();
        samples.extend(edge_hops.iter().filter_map(|h| h.server_ns));
        let server_latency = Latency::from_samples(&mut samples);

        graph.add_edge(
            key.0,
            key.1,
            Edge {
                calls: edge_hops.len() as u64,
                errors: edge_hops.iter().filter(|h| h.error).count() as u64,
                tests: test_names(edge_hops, &tests),
                client_latency,
                server_latency,
                interfaces,
                hops: start..end,
            },
        );
        start = end;
    }

    RunGraph {
        graph,
        hops,
        operations,
        tests,
        spans,
        traces,
        diagnostics,
    }
}

/// Tests are sorted by name, so sorting their ids sorts their names; names repeat when a test ran
/// more than once (retries, several traces), hence the second dedup.
fn test_names(hops: &[Hop], tests: &[TestCase]) -> Vec<String> {
    let mut ids: Vec<TestId> = hops.iter().filter_map(|h| h.test).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut names: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        let name = &tests[id.index()].name;
        if names.last() != Some(name) {
            names.push(name.clone());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<u64> = (1..=100).rev().collect();
        let l = Latency::from_samples(&mut samples);
        assert_eq!((l.p50, l.p95, l.p99), (Some(50), Some(95), Some(99)));
        let l = Latency::from_samples(&mut [7]);
        assert_eq!((l.p50, l.p95, l.p99), (Some(7), Some(7), Some(7)));
        assert_eq!(Latency::from_samples(&mut []), Latency::default());
        let l = Latency::from_samples(&mut [10, 20, 30]);
        assert_eq!((l.p50, l.p99), (Some(20), Some(30)));
    }
}
