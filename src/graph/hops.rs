//! Hops: the calls across a boundary that one trace shows, per DESIGN's "Hop".
//!
//! Owns the rules that turn spans into hops and the resolution of a calling span's callee (a
//! service by the address map, or a `db:`, `queue:` or `ext:` node). It reads trees, the forest's
//! links and the test attribution; it does not aggregate (that is `run`).
//!
//! For each span, in this order:
//! 1. A PRODUCER makes `service → queue`. The queue is named from the producer's messaging
//!    attributes, else from a consumer paired with it (a child, or a span linking to it).
//! 2. A CONSUMER makes `queue → service`, the queue named from its own attributes or else from its
//!    paired producer (its parent, or a span it links to, in any trace). A consumer directly below
//!    a consumer of the same service (receive, then process) is one delivery, not two.
//! 3. A span whose parent belongs to another service makes a hop whatever the kinds say: under a
//!    producer it is `queue → service`; a consumer under a non-producer also gets the
//!    `parent's service → queue` hop the missing producer span would have made; anything else is
//!    `parent's service → service`, with the parent as the client span.
//! 4. A CLIENT span (or a PRODUCER with no destination) whose children are all in its own service
//!    calls something that recorded no span: a database, a queue, a peer service, or an address,
//!    which the address map may turn back into a known service (one that is down still gets its
//!    edge). Key design decision: a client with a same-service CLIENT or SERVER child is skipped,
//!    because nested client instrumentation (a `requests` span around a `urllib3` span) would
//!    otherwise count one call twice, and a SERVER child means the service called itself.
//!
//! Once a tree's hops are found, each gets the own time of the nodes on the critical path below
//! the call (`critical`), walked from the calling span (from the answering span when the
//! caller's side is the caller's own SERVER or CONSUMER span, which holds more than the call).
//! A span's own time is its service's, except for a calling span of rule 1 or 4 — a call no span
//! answered — whose time is its callee's (a database, a queue, an external host, a service that
//! did not answer): that is what the caller waited for.

use std::collections::HashMap;
use std::sync::Arc;

use petgraph::graph::NodeIndex;

use crate::model::{Span, SpanKind};

use super::address::AddressMap;
use super::forest::{Forest, SpanRef};
use super::run::{Hop, Interner, NodeKind, OpId, PathNode, Target};
use super::semconv;
use super::testcase::Attribution;

pub(crate) struct Extractor<'x> {
    pub nodes: Interner<NodeKind>,
    pub operations: Interner<()>,
    pub hops: Vec<Hop>,
    pub unresolved_calls: u64,
    /// The same count per tree of the forest (per-trace results report their own).
    pub unresolved_per_tree: Vec<u64>,
    address: &'x mut AddressMap,
    node_buf: String,
    op_buf: String,
    /// Per tree being extracted (reused): each span's service node, by span index.
    span_nodes: Vec<NodeIndex>,
    /// The calling spans no span answered, with the callee their time belongs to.
    unanswered: HashMap<usize, (NodeIndex, Option<Target>)>,
    /// (hop, span its critical path starts from) of the tree's hops.
    roots: Vec<(usize, usize)>,
    walker: super::critical::Walker,
}

/// Node and operation names by the ids the extractor's interners give them, for what needs to
/// name the hops before the graph is assembled (expectations' facts: `expect::Gatherer`).
pub(crate) struct Names<'a>(pub &'a Interner<NodeKind>, pub &'a Interner<()>);

impl crate::expect::Names for Names<'_> {
    fn node(&self, ix: usize) -> &str {
        self.0.key(ix as u32)
    }

    fn operation(&self, ix: usize) -> &str {
        self.1.key(ix as u32)
    }
}

impl<'x> Extractor<'x> {
    /// `nodes` must already hold every service that produced spans: a peer name is only taken for
    /// a service when such a service exists.
    pub fn new(nodes: Interner<NodeKind>, address: &'x mut AddressMap) -> Self {
        Self {
            nodes,
            operations: Interner::default(),
            hops: Vec::new(),
            unresolved_calls: 0,
            unresolved_per_tree: Vec::new(),
            address,
            node_buf: String::new(),
            op_buf: String::new(),
            span_nodes: Vec::new(),
            unanswered: HashMap::new(),
            roots: Vec::new(),
            walker: Default::default(),
        }
    }

    pub fn extract(&mut self, forest: &Forest<'_>, t: usize, attribution: &Attribution) {
        let tree = forest.tree(t);
        self.span_nodes.clear();
        self.span_nodes.resize(tree.len(), NodeIndex::new(0));
        self.unanswered.clear();
        self.roots.clear();
        for (ix, span) in tree.spans() {
            let here = SpanRef { tree: t, span: ix };
            let test = attribution.test_of(here);
            let service = self.service_node(span);
            self.span_nodes[ix] = service;
            let parent = tree.parent(ix).map(|p| tree.span(p));
            let mut producer_made_hop = false;
            let mut consumer_queue = None;

            match span.kind {
                SpanKind::Producer => {
                    if let Some((queue, named_by)) = self.producer_queue(forest, here) {
                        let hop = self.hop(service, queue, span, Some(span), None, named_by, test);
                        self.emit(hop, ix);
                        self.unanswered.insert(ix, (queue, None));
                        producer_made_hop = true;
                    }
                }
                SpanKind::Consumer
                    if !parent
                        .is_some_and(|p| p.kind == SpanKind::Consumer && same_service(p, span)) =>
                {
                    let producer = paired_producer(forest, here);
                    let queue = self
                        .queue_of(span)
                        .or_else(|| producer.and_then(|p| self.queue_of(p)));
                    if let Some(queue) = queue {
                        let mut hop =
                            self.hop(queue, service, span, None, Some(span), producer, test);
                        // A delivery has no answer to carry an error: it failed when its
                        // processing did, which instrumentation often records one span below the
                        // CONSUMER span (a handler span of the same service).
                        hop.error |= tree.children(ix).any(|c| {
                            let child = tree.span(c);
                            same_service(child, span)
                                && (child.status.code == crate::model::StatusCode::Error
                                    || semconv::server_in_error(child))
                        });
                        self.emit(hop, ix);
                        consumer_queue = Some(queue);
                    }
                }
                _ => {}
            }

            if let Some(p_ix) = tree.parent(ix)
                && !same_service(tree.span(p_ix), span)
            {
                let p = tree.span(p_ix);
                let caller = self.service_node(p);
                let root = call_root(p, p_ix, ix);
                if let Some(queue) = consumer_queue {
                    if p.kind != SpanKind::Producer {
                        let hop = self.hop(caller, queue, span, Some(p), None, Some(span), test);
                        self.emit(hop, root);
                    }
                } else if let Some((queue, _)) = (p.kind == SpanKind::Producer)
                    .then(|| {
                        self.producer_queue(
                            forest,
                            SpanRef {
                                tree: t,
                                span: p_ix,
                            },
                        )
                    })
                    .flatten()
                {
                    let hop = self.hop(queue, service, span, None, Some(span), Some(p), test);
                    self.emit(hop, ix);
                } else {
                    let hop = self.hop(caller, service, span, Some(p), Some(span), None, test);
                    self.emit(hop, root);
                }
            }

            let calls_out = span.kind == SpanKind::Client
                || (span.kind == SpanKind::Producer && !producer_made_hop);
            if calls_out
                && !tree.children(ix).any(|c| {
                    let child = tree.span(c);
                    !same_service(child, span)
                        || matches!(child.kind, SpanKind::Client | SpanKind::Server)
                })
            {
                match self.callee_of(span) {
                    Some((callee, target)) if callee != service => {
                        let mut hop = self.hop(service, callee, span, Some(span), None, None, test);
                        hop.target = target.clone();
                        self.emit(hop, ix);
                        self.unanswered.insert(ix, (callee, target));
                    }
                    Some(_) => {}
                    None => {
                        self.unresolved_calls += 1;
                        if self.unresolved_per_tree.len() <= t {
                            self.unresolved_per_tree.resize(t + 1, 0);
                        }
                        self.unresolved_per_tree[t] += 1;
                    }
                }
            }
        }
        self.critical_paths(tree);
    }

    /// Adds a hop whose critical path starts at span `root` of the tree being extracted.
    fn emit(&mut self, hop: Hop, root: usize) {
        self.roots.push((self.hops.len(), root));
        self.hops.push(hop);
    }

    /// The own times along the critical path below each of the tree's hops.
    fn critical_paths(&mut self, tree: &super::TraceTree<'_>) {
        let Self {
            roots,
            walker,
            unanswered,
            span_nodes,
            hops,
            ..
        } = self;
        for &(h, root) in roots.iter() {
            hops[h].path = walker.own_times(tree, root, |i| match unanswered.get(&i) {
                Some((node, target)) => PathNode {
                    node: *node,
                    target: target.clone().map(Box::new),
                },
                None => PathNode {
                    node: span_nodes[i],
                    target: None,
                },
            });
        }
    }

    /// Builds a hop. `at` is the span whose trace the hop is recorded in; `client` and `server`
    /// are the two sides' spans when recorded; `extra` is one more span to name the operation by
    /// when neither side's attributes do (the consumer that named a producer's queue, say).
    #[allow(clippy::too_many_arguments)]
    fn hop(
        &mut self,
        caller: NodeIndex,
        callee: NodeIndex,
        at: &Span,
        client: Option<&Span>,
        server: Option<&Span>,
        extra: Option<&Span>,
        test: Option<super::TestId>,
    ) -> Hop {
        let op_server = server.or(extra);
        let op_client = if server.is_some() {
            client.or(extra)
        } else {
            client
        };
        semconv::operation(op_server, op_client, &mut self.op_buf);
        // A hop always has an operation, even when every span involved has an empty name.
        if self.op_buf.is_empty() {
            self.op_buf.push_str("unknown");
        }
        let operation = OpId(self.operations.intern(&self.op_buf, ()));
        // A caller-side span that is itself the service's entry (a SERVER or CONSUMER parent, when
        // the client span is missing) failing says nothing about this call.
        let client_error = client.is_some_and(|c| {
            !matches!(c.kind, SpanKind::Server | SpanKind::Consumer) && semconv::client_in_error(c)
        });
        let server_error = server.is_some_and(semconv::server_in_error);
        Hop {
            caller,
            callee,
            operation,
            trace_id: at.trace_id,
            client_span: client.map(|c| c.span_id),
            server_span: server.map(|s| s.span_id),
            client_ns: client.and_then(duration),
            server_ns: server.and_then(duration),
            error: client_error || server_error,
            test,
            target: None,
            path: Vec::new(),
            facts: u32::MAX,
        }
    }

    fn service_node(&mut self, span: &Span) -> NodeIndex {
        NodeIndex::new(self.nodes.intern(span.service(), NodeKind::Service) as usize)
    }

    fn queue_of(&mut self, span: &Span) -> Option<NodeIndex> {
        semconv::queue_node(&span.attributes, &mut self.node_buf).then(|| {
            NodeIndex::new(self.nodes.intern(&self.node_buf, NodeKind::Messaging) as usize)
        })
    }

    /// A producer's queue, and the consumer span that named it when the producer did not.
    fn producer_queue<'a>(
        &mut self,
        forest: &Forest<'a>,
        producer: SpanRef,
    ) -> Option<(NodeIndex, Option<&'a Span>)> {
        let span = forest.span(producer);
        if let Some(q) = self.queue_of(span) {
            return Some((q, None));
        }
        let tree = forest.tree(producer.tree);
        let children = tree.children(producer.span).map(|c| SpanRef {
            tree: producer.tree,
            span: c,
        });
        for consumer in children.chain(forest.linked_from(producer)) {
            let c = forest.span(consumer);
            if c.kind == SpanKind::Consumer
                && let Some(q) = self.queue_of(c)
            {
                return Some((q, Some(c)));
            }
        }
        None
    }

    /// The node a calling span with no answering span calls; see the module docs, rule 4. With
    /// it, the peer or address it was found by, when the address map or the set of services had
    /// a say (a database or queue is named by the span alone).
    fn callee_of(&mut self, span: &Span) -> Option<(NodeIndex, Option<Target>)> {
        let attrs = &span.attributes;
        if semconv::db_node(attrs, &mut self.node_buf) {
            return Some((self.intern_buf(NodeKind::Database), None));
        }
        if let Some(q) = self.queue_of(span) {
            return Some((q, None));
        }
        if let Some(peer) = semconv::peer_service(attrs) {
            let target = Some(Target::Peer(peer.to_owned()));
            return Some((self.resolve_peer(peer), target));
        }
        let (host, port) = semconv::peer_address(attrs)?;
        let target = Some(Target::Address {
            host: host.to_owned(),
            port,
        });
        Some((self.resolve_address(host, port), target))
    }

    /// A peer name: a service of that name, else the service the address map knows by that
    /// host, else `ext:<name>`.
    pub fn resolve_peer(&mut self, peer: &str) -> NodeIndex {
        if let Some((id, NodeKind::Service)) = self.nodes.get(peer) {
            return NodeIndex::new(id as usize);
        }
        if let Some(service) = self.address.lookup(peer, None) {
            let id = self.nodes.intern(service, NodeKind::Service);
            return NodeIndex::new(id as usize);
        }
        self.node_buf.clear();
        self.node_buf.push_str("ext:");
        self.node_buf.push_str(peer);
        self.intern_buf(NodeKind::External)
    }

    /// An address: the service the address map knows there, else `ext:<host>:<port>`.
    pub fn resolve_address(&mut self, host: &str, port: Option<u16>) -> NodeIndex {
        if let Some(service) = self.address.lookup(host, port) {
            let id = self.nodes.intern(service, NodeKind::Service);
            return NodeIndex::new(id as usize);
        }
        semconv::ext_address_node(host, port, &mut self.node_buf);
        self.intern_buf(NodeKind::External)
    }

    fn intern_buf(&mut self, kind: NodeKind) -> NodeIndex {
        NodeIndex::new(self.nodes.intern(&self.node_buf, kind) as usize)
    }
}

/// A consumer's producer: its parent when that is a PRODUCER, else the first PRODUCER it links to.
fn paired_producer<'a>(forest: &Forest<'a>, consumer: SpanRef) -> Option<&'a Span> {
    let tree = forest.tree(consumer.tree);
    if let Some(p) = tree.parent(consumer.span).map(|p| tree.span(p))
        && p.kind == SpanKind::Producer
    {
        return Some(p);
    }
    forest
        .span(consumer)
        .links
        .iter()
        .filter_map(|l| forest.resolve(l.trace_id, l.span_id))
        .map(|r| forest.span(r))
        .find(|s| s.kind == SpanKind::Producer)
}

/// Where the critical path of a call from parent span `p` (index `p_ix`) to span `ix` starts:
/// the calling span, unless it is the caller's own entry (a SERVER or CONSUMER span standing in
/// for a missing client span), which holds more than this call: then the answering span.
fn call_root(p: &Span, p_ix: usize, ix: usize) -> usize {
    if matches!(p.kind, SpanKind::Server | SpanKind::Consumer) {
        ix
    } else {
        p_ix
    }
}

pub(crate) fn same_service(a: &Span, b: &Span) -> bool {
    Arc::ptr_eq(&a.resource, &b.resource) || a.service() == b.service()
}

fn duration(span: &Span) -> Option<u64> {
    (span.end_ns != 0 && span.end_ns >= span.start_ns).then(|| span.end_ns - span.start_ns)
}
