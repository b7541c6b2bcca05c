//! Merging per-trace results into the run's graph and blame, the way analysing all of the run's
//! spans at once would have built them.
//!
//! What only the whole run knows is decided here: every service of the run is a node before any
//! hop is added; the address map learns from every trace's server spans (and the aliases) before
//! any raw callee is resolved; tests are sorted over the run and hops find theirs by the test
//! span's ids; failures are sorted and counted per hop over the run.

use std::collections::HashMap;

use petgraph::graph::NodeIndex;

use crate::blame::{Blame, Evidence, ExceptionInfo, Failure, HopName};
use crate::graph::hops::Extractor;
use crate::graph::run::{Interner, Parts, assemble};
use crate::graph::{
    AddressMap, AnalysisOptions, Diagnostics, Hop, NodeKind, OpId, RunGraph, Target, TestCase,
    TestId, TestOutcome,
};
use crate::model::{SpanId, TraceId};

use super::{TargetRecord, TraceResult, class_of, kind_of};

fn trace_id(bytes: [u8; 16]) -> Option<TraceId> {
    TraceId::from_bytes(bytes).ok()
}

fn span_id(bytes: [u8; 8]) -> Option<SpanId> {
    SpanId::from_bytes(bytes).ok()
}

fn target(t: &TargetRecord) -> Target {
    match t {
        TargetRecord::Peer(p) => Target::Peer(p.clone()),
        TargetRecord::Address(host, port) => Target::Address {
            host: host.clone(),
            port: *port,
        },
    }
}

/// The run's graph and blame from the results of its traces (any order).
pub fn merge(results: &[TraceResult], opts: &AnalysisOptions) -> (RunGraph, Blame) {
    let mut nodes: Interner<NodeKind> = Interner::default();
    let mut address = AddressMap::new();
    let mut spans = 0u64;
    let mut diagnostics = Diagnostics::default();
    let mut tests: Vec<TestCase> = Vec::new();
    for r in results {
        spans += r.spans;
        for s in &r.services {
            nodes.intern(s, NodeKind::Service);
        }
        for (host, port, service) in &r.learned {
            address.learn(host, *port, service);
        }
        let d = &r.diagnostics;
        diagnostics.orphans += d.orphans;
        diagnostics.duplicate_span_ids += d.duplicate_span_ids;
        diagnostics.parent_cycles += d.parent_cycles;
        diagnostics.missing_end_times += d.missing_end_times;
        diagnostics.clock_skew += d.clock_skew;
        diagnostics.unresolved_calls += d.unresolved_calls;
        for (service, n) in &r.propagation_breaks {
            *diagnostics
                .propagation_breaks
                .entry(service.clone())
                .or_insert(0) += n;
        }
        let Some(trace) = r.trace() else { continue };
        for t in &r.tests {
            let Some(span) = span_id(t.span_id) else {
                continue;
            };
            tests.push(TestCase {
                name: t.name.clone(),
                trace_id: trace,
                span_id: span,
                outcome: if t.failed {
                    TestOutcome::Failed
                } else {
                    TestOutcome::Passed
                },
            });
        }
    }
    for (addr, service) in &opts.aliases {
        address.alias(addr, service);
    }
    tests.sort_by(|a, b| (&a.name, a.trace_id, a.span_id).cmp(&(&b.name, b.trace_id, b.span_id)));
    let test_ids: HashMap<(TraceId, SpanId), TestId> = tests
        .iter()
        .enumerate()
        .map(|(i, t)| ((t.trace_id, t.span_id), TestId(i as u32)))
        .collect();

    let mut ex = Extractor::new(nodes, &mut address);
    let mut hops: Vec<Hop> = Vec::new();
    // (trace, client span, server span) → class, to line the classes up with the sorted hops.
    let mut classes: HashMap<(TraceId, Option<SpanId>, Option<SpanId>), u8> = HashMap::new();
    let mut failures: Vec<Failure> = Vec::new();
    for r in results {
        let Some(trace) = r.trace() else { continue };
        // Interned when a hop uses them: a callee named again from its target must not leave
        // the name the trace's component gave it behind as a node.
        let mut node_ids: Vec<Option<NodeIndex>> = vec![None; r.nodes.len()];
        let mut node = |ex: &mut Extractor<'_>, i: u32| {
            *node_ids[i as usize].get_or_insert_with(|| {
                let (id, kind) = &r.nodes[i as usize];
                NodeIndex::new(ex.nodes.intern(id, kind_of(*kind)) as usize)
            })
        };
        let op_ids: Vec<OpId> = r
            .operations
            .iter()
            .map(|op| OpId(ex.operations.intern(op, ())))
            .collect();
        let hop_tests: Vec<Option<TestId>> = r
            .hop_tests
            .iter()
            .map(|&(t, s)| test_ids.get(&(trace_id(t)?, span_id(s)?)).copied())
            .collect();
        for h in &r.hops {
            let target = h.target.as_ref().map(target);
            let callee = match &target {
                Some(Target::Peer(p)) => ex.resolve_peer(p),
                Some(Target::Address { host, port }) => ex.resolve_address(host, *port),
                None => node(&mut ex, h.callee),
            };
            let hop = Hop {
                caller: node(&mut ex, h.caller),
                callee,
                operation: op_ids[h.operation as usize],
                trace_id: trace,
                client_span: h.client_span.and_then(span_id),
                server_span: h.server_span.and_then(span_id),
                client_ns: h.client_ns,
                server_ns: h.server_ns,
                error: h.error,
                test: h
                    .test
                    .and_then(|t| hop_tests.get(t as usize).copied().flatten()),
                target,
            };
            if let Some(c) = h.class {
                classes.insert((trace, hop.client_span, hop.server_span), c);
            }
            hops.push(hop);
        }
        for f in &r.failures {
            let (Some(failing), Some(placed_trace), Some(placed_span)) = (
                span_id(f.failing_span),
                trace_id(f.placed_trace),
                span_id(f.placed_span),
            ) else {
                continue;
            };
            let class = class_of(f.class);
            let hop_target = f.hop_target.as_ref().map(target);
            let hop = f.hop.as_ref().map(|(caller, callee, operation)| {
                let callee = match &hop_target {
                    Some(Target::Peer(p)) => {
                        let ix = ex.resolve_peer(p);
                        ex.nodes.key(ix.index() as u32).to_owned()
                    }
                    Some(Target::Address { host, port }) => {
                        let ix = ex.resolve_address(host, *port);
                        ex.nodes.key(ix.index() as u32).to_owned()
                    }
                    None => callee.clone(),
                };
                HopName {
                    caller: caller.clone(),
                    callee,
                    operation: operation.clone(),
                }
            });
            let pair = |(t, s): ([u8; 16], [u8; 8])| Some((trace_id(t)?, span_id(s)?));
            failures.push(Failure {
                trace_id: trace,
                failing_span: failing,
                placed_trace,
                placed_span,
                test: f.test.clone(),
                class,
                blamed: hop.as_ref().map(|h| Failure::blamed_for(class, h)),
                hop,
                evidence: Evidence {
                    status_message: f.status_message.clone(),
                    http_status: f.http_status,
                    rpc_status: f.rpc_status.clone(),
                    exception: f.exception.as_ref().map(|(kind, message, stacktrace)| {
                        ExceptionInfo {
                            kind: kind.clone(),
                            message: message.clone(),
                            stacktrace: stacktrace.clone(),
                        }
                    }),
                    client_ns: f.client_ns,
                    server_ns: f.server_ns,
                },
                collateral: f.collateral.iter().filter_map(|&s| span_id(s)).collect(),
                path: f.path.iter().filter_map(|&p| pair(p)).collect(),
                origin: f.origin.and_then(pair),
                circuit_open: f.circuit_open,
                failed_here: 1,
                hop_target,
            });
        }
    }
    let Extractor {
        nodes, operations, ..
    } = ex;
    let graph = assemble(Parts {
        nodes,
        operations,
        hops,
        tests,
        spans,
        traces: results.len() as u64,
        diagnostics,
    });
    let hop_classes = graph
        .hops()
        .iter()
        .map(|h| {
            classes
                .get(&(h.trace_id, h.client_span, h.server_span))
                .map(|&c| class_of(c))
        })
        .collect();
    crate::blame::finish_failures(&mut failures);
    (graph, Blame::from_parts(failures, hop_classes))
}
