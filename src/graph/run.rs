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

use petgraph::graph::{DiGraph, EdgeIndex, NodeIndex};

use crate::model::{SpanId, TraceId};

use super::critical::{PathTimes, band};
use super::sketch::Sketch;
use super::testcase::{TestCase, TestId};

/// Error examples an interface keeps (`Interface::samples`).
pub const SAMPLES: usize = 10;

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
    /// The own time of each node on the critical path below the call (`critical`), from the
    /// calling span (the answering one when the caller's side is its own entry span).
    pub path: Vec<(PathNode, u64)>,
    /// Its facts in `RunGraph::expect_facts` (`u32::MAX` for none): what expectations read of
    /// its spans, gathered when it was found.
    pub(crate) facts: u32,
}

/// Whose own time a part of a call's critical path is: a node, and — when the node is the
/// callee of a call no span answered, named from a raw target — that target, so per-trace
/// results can name it again when merging, as they do the call's callee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathNode {
    pub node: NodeIndex,
    /// Boxed: rare, and a path step is kept per node per hop.
    pub target: Option<Box<Target>>,
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

/// A hop in error, kept as an example of an interface's errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopSample {
    pub trace_id: TraceId,
    /// The answering span, else the calling one.
    pub span_id: SpanId,
    /// Its error class (`ErrorClass::as_str`), once blame classified it.
    pub class: Option<&'static str>,
    /// The name of the test it was part of.
    pub test: Option<String>,
}

/// All hops with one (caller, callee, operation).
#[derive(Debug, Clone, PartialEq)]
pub struct Interface {
    pub operation: String,
    pub calls: u64,
    pub errors: u64,
    /// Hops in error by error class (`ErrorClass::as_str`); empty until blame classified them.
    pub classes: BTreeMap<&'static str, u64>,
    /// Names of the tests that exercised it, sorted, deduplicated.
    pub tests: Vec<String>,
    /// Hops in error inside a failed test.
    pub failing_errors: u64,
    /// Durations of the calling and of the answering spans.
    pub client: Sketch,
    pub server: Sketch,
    /// Up to `SAMPLES` of its hops in error: those first by (trace id, span id).
    pub samples: Vec<HopSample>,
    /// Its calls' critical paths: each node's own time, by the calls' latency band (what a
    /// latency regression is blamed by).
    pub path: PathTimes,
}

/// All hops with one (caller, callee).
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub calls: u64,
    pub errors: u64,
    pub classes: BTreeMap<&'static str, u64>,
    pub tests: Vec<String>,
    pub client_latency: Latency,
    pub server_latency: Latency,
    pub client: Sketch,
    pub server: Sketch,
    /// Sorted by operation.
    pub interfaces: Vec<Interface>,
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
    /// The facts expectations read of the hops' spans, gathered as the hops were found (when
    /// analysis had expectations).
    expect_facts: Option<crate::expect::Gathered>,
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

    /// The hops of a graph analysed from spans, sorted by (caller, callee, operation) and in trace
    /// order within; empty for a graph merged from stored results, which keeps only what its
    /// edges and interfaces say. Only analysis (blame, per-trace results) reads them.
    pub(crate) fn hops(&self) -> &[Hop] {
        &self.hops
    }

    /// What expectations read of the hops' spans, when gathered during analysis.
    pub(crate) fn expect_facts(&self) -> Option<&crate::expect::Gathered> {
        self.expect_facts.as_ref()
    }

    pub(crate) fn set_expect_facts(&mut self, facts: Option<crate::expect::Gathered>) {
        self.expect_facts = facts;
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

/// What is known of one interface before the graph is assembled: from its hops (analysis), or
/// from a rollup of stored results.
#[derive(Debug, Clone, Default)]
pub(crate) struct InterfaceParts {
    pub calls: u64,
    pub errors: u64,
    pub classes: BTreeMap<&'static str, u64>,
    pub client: Sketch,
    pub server: Sketch,
    /// The tests of its hops with how many of their hops were in error (a test may repeat).
    pub tests: Vec<(TestId, u64)>,
    /// Tests known by name only (a rollup's), with their hops in error inside a failed test.
    pub named_tests: Vec<(String, u64)>,
    /// Candidates for `Interface::samples`, any number, any order.
    pub samples: Vec<HopSample>,
    pub path: PathTimes,
}

impl InterfaceParts {
    fn add_hop(&mut self, hop: &Hop, tests: &[TestCase], nodes: &Interner<NodeKind>) {
        self.calls += 1;
        // Filed under the latency its p95 is read from: the calling side's, else the answer's.
        if let Some(ns) = hop.client_ns.or(hop.server_ns) {
            self.path.record(
                band(ns),
                hop.path
                    .iter()
                    .map(|(p, own)| (nodes.key(p.node.index() as u32), *own)),
            );
        }
        if let Some(ns) = hop.client_ns {
            self.client.record(ns);
        }
        if let Some(ns) = hop.server_ns {
            self.server.record(ns);
        }
        if let Some(t) = hop.test {
            self.tests.push((t, u64::from(hop.error)));
        }
        if hop.error {
            self.errors += 1;
            if let Some(span_id) = hop.server_span.or(hop.client_span) {
                self.samples.push(HopSample {
                    trace_id: hop.trace_id,
                    span_id,
                    class: None,
                    test: hop.test.map(|t| tests[t.index()].name.clone()),
                });
            }
        }
    }

    /// Another part with the same (caller, callee, operation).
    pub fn absorb(&mut self, other: InterfaceParts) {
        self.calls += other.calls;
        self.errors += other.errors;
        for (c, n) in other.classes {
            *self.classes.entry(c).or_insert(0) += n;
        }
        self.client.add(&other.client);
        self.server.add(&other.server);
        self.tests.extend(other.tests);
        self.named_tests.extend(other.named_tests);
        self.samples.extend(other.samples);
        self.path.add(&other.path);
    }
}

/// The graph of analysed hops (kept, for blame and per-trace results), which refer to nodes and
/// operations by interner id.
pub(crate) fn assemble(totals: Totals, hops: Vec<Hop>) -> RunGraph {
    let mut interfaces: HashMap<(u32, u32, u32), InterfaceParts> = HashMap::new();
    for hop in &hops {
        interfaces
            .entry((
                hop.caller.index() as u32,
                hop.callee.index() as u32,
                hop.operation.0,
            ))
            .or_default()
            .add_hop(hop, &totals.tests, &totals.nodes);
    }
    assemble_interfaces(totals, interfaces.into_iter().collect(), hops)
}

/// What a graph holds besides its interfaces; `tests` sorted by (name, trace id, span id), as
/// `TestId`s index them.
pub(crate) struct Totals {
    pub nodes: Interner<NodeKind>,
    pub operations: Interner<()>,
    pub tests: Vec<TestCase>,
    pub spans: u64,
    pub traces: u64,
    pub diagnostics: Diagnostics,
}

/// The graph from its interfaces, keyed by (caller, callee, operation) interner ids; `hops`
/// (those of an analysis, or none) use the same ids.
pub(crate) fn assemble_interfaces(
    totals: Totals,
    interfaces: Vec<((u32, u32, u32), InterfaceParts)>,
    mut hops: Vec<Hop>,
) -> RunGraph {
    let Totals {
        nodes,
        operations,
        tests,
        spans,
        traces,
        diagnostics,
    } = totals;
    let (nodes, node_remap) = nodes.into_sorted();
    let (operations, op_remap) = operations.into_sorted();
    let operations: Vec<String> = operations.into_iter().map(|(s, ())| s).collect();
    for hop in &mut hops {
        hop.caller = NodeIndex::new(node_remap[hop.caller.index()] as usize);
        hop.callee = NodeIndex::new(node_remap[hop.callee.index()] as usize);
        hop.operation = OpId(op_remap[hop.operation.index()]);
        for (p, _) in &mut hop.path {
            p.node = NodeIndex::new(node_remap[p.node.index()] as usize);
        }
    }
    // Stable: hops of one interface stay in trace order.
    hops.sort_by_key(|h| (h.caller, h.callee, h.operation));
    let mut interfaces: Vec<((u32, u32, u32), InterfaceParts)> = interfaces
        .into_iter()
        .map(|((a, b, op), p)| {
            (
                (
                    node_remap[a as usize],
                    node_remap[b as usize],
                    op_remap[op as usize],
                ),
                p,
            )
        })
        .collect();
    interfaces.sort_by_key(|(k, _)| *k);

    let mut graph = DiGraph::with_capacity(nodes.len(), 0);
    for (id, kind) in nodes {
        graph.add_node(Node { id, kind });
    }

    let mut parts = interfaces.into_iter().peekable();
    while let Some(((caller, callee, op), first)) = parts.next() {
        let mut group = vec![(op, first)];
        while let Some(((a, b, op), _)) = parts.peek() {
            if (*a, *b) != (caller, callee) {
                break;
            }
            let op = *op;
            if let Some((_, p)) = parts.next() {
                group.push((op, p));
            }
        }
        let mut edge = Edge {
            calls: 0,
            errors: 0,
            classes: BTreeMap::new(),
            tests: Vec::new(),
            client_latency: Latency::default(),
            server_latency: Latency::default(),
            client: Sketch::default(),
            server: Sketch::default(),
            interfaces: Vec::with_capacity(group.len()),
        };
        for (op, p) in group {
            let iface = finish_interface(operations[op as usize].clone(), p, &tests);
            edge.calls += iface.calls;
            edge.errors += iface.errors;
            for (c, n) in &iface.classes {
                *edge.classes.entry(c).or_insert(0) += n;
            }
            edge.client.add(&iface.client);
            edge.server.add(&iface.server);
            edge.tests.extend(iface.tests.iter().cloned());
            edge.interfaces.push(iface);
        }
        // Tests are sorted by name, so names sort as their ids do.
        edge.tests.sort_unstable();
        edge.tests.dedup();
        edge.client_latency = edge.client.latency();
        edge.server_latency = edge.server.latency();
        graph.add_edge(
            NodeIndex::new(caller as usize),
            NodeIndex::new(callee as usize),
            edge,
        );
    }

    RunGraph {
        graph,
        hops,
        expect_facts: None,
        operations,
        tests,
        spans,
        traces,
        diagnostics,
    }
}

fn finish_interface(operation: String, p: InterfaceParts, tests: &[TestCase]) -> Interface {
    let failing_errors = p
        .tests
        .iter()
        .filter(|(t, _)| tests[t.index()].failed())
        .map(|(_, e)| e)
        .chain(p.named_tests.iter().map(|(_, e)| e))
        .sum();
    let mut samples = p.samples;
    samples.sort_by_key(|s| (s.trace_id, s.span_id));
    samples.dedup_by_key(|s| (s.trace_id, s.span_id));
    samples.truncate(SAMPLES);
    let mut names = test_names(p.tests.into_iter().map(|(t, _)| t).collect(), tests);
    if !p.named_tests.is_empty() {
        names.extend(p.named_tests.into_iter().map(|(n, _)| n));
        names.sort_unstable();
        names.dedup();
    }
    Interface {
        operation,
        calls: p.calls,
        errors: p.errors,
        classes: p.classes,
        tests: names,
        failing_errors,
        client: p.client,
        server: p.server,
        samples,
        path: p.path,
    }
}

/// Tests are sorted by name, so sorting their ids sorts their names; names repeat when a test ran
/// more than once (retries, several traces), hence the second dedup.
fn test_names(mut ids: Vec<TestId>, tests: &[TestCase]) -> Vec<String> {
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

impl RunGraph {
    /// Counts blame's classes of the analysed hops into their interfaces and edges, and onto the
    /// samples (`classes` is aligned with `hops()`).
    pub(crate) fn set_hop_classes(&mut self, classes: &[Option<&'static str>]) {
        for (hop, class) in self.hops.iter().zip(classes) {
            let Some(class) = *class else { continue };
            let Some(e) = self.graph.find_edge(hop.caller, hop.callee) else {
                continue;
            };
            let op = self.operations[hop.operation.index()].as_str();
            let edge = &mut self.graph[e];
            *edge.classes.entry(class).or_insert(0) += 1;
            let Ok(i) = edge
                .interfaces
                .binary_search_by(|i| i.operation.as_str().cmp(op))
            else {
                continue;
            };
            let iface = &mut edge.interfaces[i];
            *iface.classes.entry(class).or_insert(0) += 1;
            if let Some(span) = hop.server_span.or(hop.client_span)
                && let Some(s) = iface
                    .samples
                    .iter_mut()
                    .find(|s| s.trace_id == hop.trace_id && s.span_id == span)
            {
                s.class = Some(class);
            }
        }
    }
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
