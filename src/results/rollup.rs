//! A run's rollup: the sum of its traces' stored results, kept so that a question about the run
//! costs as much as the run has edges, interfaces, tests and failures, never as much as it has
//! spans.
//!
//! Owns `Rollup`: per (caller, callee as the trace named it, operation) the calls, errors, error
//! classes, latency sketches, tests, error examples and the own time of the nodes on the calls'
//! critical paths by latency band; the run's tests, failures, services,
//! learned addresses and diagnostics. Everything in it can be added and taken away again, so a
//! re-opened trace's contribution is replaced rather than added twice (`subtract` then `add`).
//! `graph` turns it into the run's `RunGraph` and `Blame` the way analysing all the spans at once
//! would: what only the whole run knows (the address map resolving raw callees, which test a
//! hop's test span is, how many failures share a hop) is decided there, from what the rollup
//! holds.
//!
//! Rollups are stored per (run, fingerprint) by `settle` in the same transaction as the results
//! they sum; this module does no I/O.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::blame::{Blame, Evidence, ExceptionInfo, Failure, HopName, LogEvidence};
use crate::graph::hops::Extractor;
use crate::graph::run::{InterfaceParts, Interner, Totals, assemble_interfaces};
use crate::graph::{
    AddressMap, AnalysisOptions, Diagnostics, HopSample, NodeKind, PathTimes, RunGraph, SAMPLES,
    Sketch, Target, TestCase, TestOutcome,
};
use crate::model::{SpanId, TraceId};

use super::{Counts, FailureRecord, TargetRecord, TraceResult, class_of, kind_of};

/// A test case or a span by its ids.
pub type SpanKey = ([u8; 16], [u8; 8]);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    /// Traces summed.
    pub traces: u64,
    spans: u64,
    diagnostics: Counts,
    propagation_breaks: BTreeMap<String, u64>,
    /// Services with the number of traces they produced spans in.
    services: BTreeMap<String, u64>,
    learned: BTreeMap<(String, Option<u16>, String), u64>,
    groups: BTreeMap<GroupKey, Group>,
    /// Test cases: name and whether it failed. Stored apart, one row a test case (`run_tests`):
    /// a long run has hundreds of thousands, and storing a trace's results must not rewrite
    /// them all.
    #[serde(skip)]
    tests: BTreeMap<SpanKey, (String, bool)>,
    /// Failures by (trace, failing span).
    failures: BTreeMap<SpanKey, FailureRecord>,
    /// Broken expectations, each with the trace whose results hold it.
    #[serde(default)]
    violations: std::collections::BTreeSet<([u8; 16], crate::expect::Violation)>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct GroupKey {
    /// (node id, kind code)
    caller: (String, u8),
    callee: Callee,
    operation: String,
}

/// The callee as a trace's results named it: a node, or a raw target the address map names
/// when the graph is built.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Callee {
    Node(String, u8),
    Target(TargetRecord),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Group {
    calls: u64,
    errors: u64,
    /// By class code.
    classes: BTreeMap<u8, u64>,
    client: Sketch,
    server: Sketch,
    /// Per test name, the calls of its hops here and those in error inside a failed test; sorted
    /// by name. By name, not by test case: a run's thousands of test cases repeat a few hundred
    /// names, and the report lists names.
    tests: Vec<(String, u64, u64)>,
    /// Hops in error, the first `SAMPLES` by (trace, span).
    samples: Vec<Sample>,
    /// Calls with a duration, by latency band (`graph::critical::band` of the client side's
    /// duration, else the server side's).
    path_calls: BTreeMap<u8, u64>,
    /// Own time on those calls' critical paths, by node (named as a callee is), then band.
    /// Bounded by the nodes on the interface's paths times the bands its calls fall in.
    path: BTreeMap<Callee, BTreeMap<u8, u64>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Sample {
    trace: [u8; 16],
    span: [u8; 8],
    class: Option<u8>,
    test: Option<String>,
}

/// Two sorted per-test lists as one.
fn merge_tests(a: &[(String, u64, u64)], b: &[(String, u64, u64)]) -> Vec<(String, u64, u64)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => {
                out.push(a[i].clone());
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j].clone());
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push((a[i].0.clone(), a[i].1 + b[j].1, a[i].2 + b[j].2));
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

fn bump<K: Ord>(map: &mut BTreeMap<K, u64>, key: K, n: u64, add: bool) {
    if add {
        *map.entry(key).or_insert(0) += n;
    } else if let Some(v) = map.get_mut(&key) {
        *v = v.saturating_sub(n);
        if *v == 0 {
            map.remove(&key);
        }
    }
}

fn counts(a: &mut Counts, b: &Counts, add: bool) {
    let f = |x: &mut u64, y: u64| *x = if add { *x + y } else { x.saturating_sub(y) };
    f(&mut a.orphans, b.orphans);
    f(&mut a.duplicate_span_ids, b.duplicate_span_ids);
    f(&mut a.parent_cycles, b.parent_cycles);
    f(&mut a.missing_end_times, b.missing_end_times);
    f(&mut a.clock_skew, b.clock_skew);
    f(&mut a.unresolved_calls, b.unresolved_calls);
}

impl Group {
    fn add(&mut self, other: &Group) {
        self.calls += other.calls;
        self.errors += other.errors;
        for (&c, &n) in &other.classes {
            bump(&mut self.classes, c, n, true);
        }
        self.client.add(&other.client);
        self.server.add(&other.server);
        if other.tests.len() <= 16 {
            // One trace's tests into a run's: in place.
            for (k, c, e) in &other.tests {
                match self.tests.binary_search_by(|t| t.0.as_str().cmp(k)) {
                    Ok(i) => {
                        self.tests[i].1 += c;
                        self.tests[i].2 += e;
                    }
                    Err(i) => self.tests.insert(i, (k.clone(), *c, *e)),
                }
            }
        } else {
            self.tests = merge_tests(&self.tests, &other.tests);
        }
        self.samples.extend(other.samples.iter().cloned());
        self.samples.sort_by_key(|s| (s.trace, s.span));
        self.samples.dedup_by_key(|s| (s.trace, s.span));
        self.samples.truncate(SAMPLES);
        for (&b, &n) in &other.path_calls {
            bump(&mut self.path_calls, b, n, true);
        }
        for (node, bands) in &other.path {
            let mine = self.path.entry(node.clone()).or_default();
            for (&b, &ns) in bands {
                bump(mine, b, ns, true);
            }
        }
    }

    fn subtract(&mut self, other: &Group, trace: &[u8; 16]) {
        self.calls = self.calls.saturating_sub(other.calls);
        self.errors = self.errors.saturating_sub(other.errors);
        for (&c, &n) in &other.classes {
            bump(&mut self.classes, c, n, false);
        }
        self.client.subtract(&other.client);
        self.server.subtract(&other.server);
        for (k, c, e) in &other.tests {
            if let Ok(i) = self.tests.binary_search_by(|t| t.0.as_str().cmp(k)) {
                let t = &mut self.tests[i];
                t.1 = t.1.saturating_sub(*c);
                t.2 = t.2.saturating_sub(*e);
                if t.1 == 0 {
                    self.tests.remove(i);
                }
            }
        }
        // The trace's examples go with it (another trace's errors may now be missing from the
        // examples; they come back when the group is rebuilt).
        self.samples.retain(|s| &s.trace != trace);
        for (&b, &n) in &other.path_calls {
            bump(&mut self.path_calls, b, n, false);
        }
        for (node, bands) in &other.path {
            if let Some(mine) = self.path.get_mut(node) {
                for (&b, &ns) in bands {
                    bump(mine, b, ns, false);
                }
                if mine.is_empty() {
                    self.path.remove(node);
                }
            }
        }
    }
}

impl Rollup {
    /// The rollup of one trace's results.
    pub fn of(r: &TraceResult) -> Rollup {
        let mut out = Rollup {
            // An empty result (a split trace another instance counts: `TraceResult::empty`)
            // is no trace.
            traces: u64::from(r.spans > 0),
            spans: r.spans,
            diagnostics: r.diagnostics,
            ..Rollup::default()
        };
        for (s, n) in &r.propagation_breaks {
            bump(&mut out.propagation_breaks, s.clone(), *n, true);
        }
        for s in &r.services {
            out.services.insert(s.clone(), 1);
        }
        for l in &r.learned {
            out.learned.insert(l.clone(), 1);
        }
        let node = |i: u32| r.nodes.get(i as usize).cloned().unwrap_or_default();
        for h in &r.hops {
            let key = GroupKey {
                caller: node(h.caller),
                callee: match &h.target {
                    Some(t) => Callee::Target(t.clone()),
                    None => {
                        let (id, kind) = node(h.callee);
                        Callee::Node(id, kind)
                    }
                },
                operation: r
                    .operations
                    .get(h.operation as usize)
                    .cloned()
                    .unwrap_or_default(),
            };
            let g = out.groups.entry(key).or_default();
            g.calls += 1;
            // As `graph::run` files a hop's critical path: under the band of the latency its
            // p95 is read from.
            if let Some(ns) = h.client_ns.or(h.server_ns) {
                let band = crate::graph::critical::band(ns);
                bump(&mut g.path_calls, band, 1, true);
                for step in h.path.iter().filter(|s| s.own_ns > 0) {
                    let node = match &step.target {
                        Some(t) => Callee::Target(t.clone()),
                        None => {
                            let (id, kind) = node(step.node);
                            Callee::Node(id, kind)
                        }
                    };
                    bump(g.path.entry(node).or_default(), band, step.own_ns, true);
                }
            }
            if let Some(ns) = h.client_ns {
                g.client.record(ns);
            }
            if let Some(ns) = h.server_ns {
                g.server.record(ns);
            }
            let test = h
                .test
                .and_then(|t| r.hop_test_names.get(t as usize))
                .cloned();
            if let Some((name, failed)) = &test {
                g.tests
                    .push((name.clone(), 1, u64::from(h.error && *failed)));
            }
            let test = test.map(|(name, _)| name);
            if h.error {
                g.errors += 1;
                if let Some(c) = h.class {
                    bump(&mut g.classes, c, 1, true);
                }
                if let Some(span) = h.server_span.or(h.client_span) {
                    g.samples.push(Sample {
                        trace: r.trace_id,
                        span,
                        class: h.class,
                        test,
                    });
                }
            }
        }
        for g in out.groups.values_mut() {
            g.tests.sort_by(|a, b| a.0.cmp(&b.0));
            g.tests.dedup_by(|next, kept| {
                let same = next.0 == kept.0;
                if same {
                    kept.1 += next.1;
                    kept.2 += next.2;
                }
                same
            });
            g.samples.sort_by_key(|s| (s.trace, s.span));
            g.samples.dedup_by_key(|s| (s.trace, s.span));
            g.samples.truncate(SAMPLES);
        }
        for t in &r.tests {
            out.tests
                .insert((r.trace_id, t.span_id), (t.name.clone(), t.failed));
        }
        for f in &r.failures {
            out.failures.insert((r.trace_id, f.failing_span), f.clone());
        }
        for v in &r.violations {
            out.violations.insert((r.trace_id, v.clone()));
        }
        out
    }

    /// The rollup of many traces' results (any order).
    pub fn of_all(results: &[TraceResult]) -> Rollup {
        let mut out = Rollup::default();
        for r in results {
            let one = Rollup::of(r);
            // The first is taken as it is rather than added to nothing (copying every group):
            // the expected set "everything seen" is one result of every distinct hop.
            if out.traces == 0 {
                out = one;
            } else {
                out.add(&one);
            }
        }
        out
    }

    /// Adds another rollup: another trace, or another run (a report of several runs).
    pub fn add(&mut self, other: &Rollup) {
        self.traces += other.traces;
        self.spans += other.spans;
        counts(&mut self.diagnostics, &other.diagnostics, true);
        for (s, n) in &other.propagation_breaks {
            bump(&mut self.propagation_breaks, s.clone(), *n, true);
        }
        for (s, n) in &other.services {
            bump(&mut self.services, s.clone(), *n, true);
        }
        for (l, n) in &other.learned {
            bump(&mut self.learned, l.clone(), *n, true);
        }
        for (k, g) in &other.groups {
            match self.groups.get_mut(k) {
                Some(mine) => mine.add(g),
                None => {
                    self.groups.insert(k.clone(), g.clone());
                }
            }
        }
        for (k, t) in &other.tests {
            self.tests.insert(*k, t.clone());
        }
        for (k, f) in &other.failures {
            self.failures.insert(*k, f.clone());
        }
        self.violations.extend(other.violations.iter().cloned());
    }

    /// Takes away one trace's results, added before.
    pub fn subtract(&mut self, r: &TraceResult) {
        let other = Rollup::of(r);
        self.traces = self.traces.saturating_sub(other.traces);
        self.spans = self.spans.saturating_sub(other.spans);
        counts(&mut self.diagnostics, &other.diagnostics, false);
        for (s, n) in &other.propagation_breaks {
            bump(&mut self.propagation_breaks, s.clone(), *n, false);
        }
        for (s, n) in &other.services {
            bump(&mut self.services, s.clone(), *n, false);
        }
        for (l, n) in &other.learned {
            bump(&mut self.learned, l.clone(), *n, false);
        }
        for (k, g) in &other.groups {
            if let Some(mine) = self.groups.get_mut(k) {
                mine.subtract(g, &r.trace_id);
                if mine.calls == 0 {
                    self.groups.remove(k);
                }
            }
        }
        self.tests.retain(|(t, _), _| *t != r.trace_id);
        self.failures.retain(|(t, _), _| *t != r.trace_id);
        self.violations.retain(|(t, _)| *t != r.trace_id);
    }

    /// The run's broken expectations.
    pub fn violations(&self) -> impl Iterator<Item = &crate::expect::Violation> {
        self.violations.iter().map(|(_, v)| v)
    }

    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain owned data into a Vec cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, super::DecodeError> {
        postcard::from_bytes(bytes).map_err(|e| super::DecodeError(e.to_string()))
    }

    /// The address map the run's server spans taught, with the aliases over it.
    pub fn address_map(&self, opts: &AnalysisOptions) -> AddressMap {
        let mut address = AddressMap::new();
        for (host, port, service) in self.learned.keys() {
            address.learn(host, *port, service);
        }
        for (addr, service) in &opts.aliases {
            address.alias(addr, service);
        }
        address
    }

    /// The test cases summed (kept apart when stored: see `tests`).
    pub fn test_cases(&self) -> impl Iterator<Item = (&SpanKey, &(String, bool))> {
        self.tests.iter()
    }

    /// Puts back a stored test case.
    pub fn put_test_case(&mut self, key: SpanKey, name: String, failed: bool) {
        self.tests.insert(key, (name, failed));
    }

    /// The services of the run.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.services.keys().map(String::as_str)
    }

    /// The run's graph and blame.
    pub fn graph(&self, opts: &AnalysisOptions) -> (RunGraph, Blame) {
        self.graph_named_by(self, opts)
    }

    /// The graph of this part of a run (one instance's share of it), its callees named as the
    /// whole run (`whole`) names them: a call one instance saw is answered by a server span
    /// another may hold, and the parts' graphs must add up to the whole's.
    pub fn graph_named_by(&self, whole: &Rollup, opts: &AnalysisOptions) -> (RunGraph, Blame) {
        let mut nodes: Interner<NodeKind> = Interner::default();
        for s in whole.services.keys() {
            nodes.intern(s, NodeKind::Service);
        }
        let mut address = whole.address_map(opts);

        let mut tests: Vec<TestCase> = self
            .tests
            .iter()
            .filter_map(|(&(t, s), (name, failed))| {
                Some(TestCase {
                    name: name.clone(),
                    trace_id: TraceId::from_bytes(t).ok()?,
                    span_id: SpanId::from_bytes(s).ok()?,
                    outcome: if *failed {
                        TestOutcome::Failed
                    } else {
                        TestOutcome::Passed
                    },
                })
            })
            .collect();
        tests.sort_by(|a, b| {
            (&a.name, a.trace_id, a.span_id).cmp(&(&b.name, b.trace_id, b.span_id))
        });

        let mut ex = Extractor::new(nodes, &mut address);
        let mut interfaces: HashMap<(u32, u32, u32), InterfaceParts> =
            HashMap::with_capacity(self.groups.len());
        for (key, g) in &self.groups {
            let caller = ex.nodes.intern(&key.caller.0, kind_of(key.caller.1));
            let callee = match &key.callee {
                Callee::Node(id, kind) => ex.nodes.intern(id, kind_of(*kind)),
                Callee::Target(TargetRecord::Peer(p)) => ex.resolve_peer(p).index() as u32,
                Callee::Target(TargetRecord::Address(host, port)) => {
                    ex.resolve_address(host, *port).index() as u32
                }
            };
            let op = ex.operations.intern(&key.operation, ());
            let mut path = PathTimes {
                calls: g.path_calls.clone(),
                own: BTreeMap::new(),
            };
            for (node, bands) in &g.path {
                let id = match node {
                    Callee::Node(id, _) => id.clone(),
                    Callee::Target(TargetRecord::Peer(p)) => {
                        let ix = ex.resolve_peer(p);
                        ex.nodes.key(ix.index() as u32).to_owned()
                    }
                    Callee::Target(TargetRecord::Address(host, port)) => {
                        let ix = ex.resolve_address(host, *port);
                        ex.nodes.key(ix.index() as u32).to_owned()
                    }
                };
                let mine = path.own.entry(id).or_default();
                for (&b, &ns) in bands {
                    *mine.entry(b).or_insert(0) += ns;
                }
            }
            let parts = InterfaceParts {
                calls: g.calls,
                errors: g.errors,
                classes: g
                    .classes
                    .iter()
                    .map(|(&c, &n)| (class_of(c).as_str(), n))
                    .collect(),
                client: g.client.clone(),
                server: g.server.clone(),
                tests: Vec::new(),
                named_tests: g
                    .tests
                    .iter()
                    .map(|(name, _, failing)| (name.clone(), *failing))
                    .collect(),
                samples: g
                    .samples
                    .iter()
                    .filter_map(|s| {
                        Some(HopSample {
                            trace_id: TraceId::from_bytes(s.trace).ok()?,
                            span_id: SpanId::from_bytes(s.span).ok()?,
                            class: s.class.map(|c| class_of(c).as_str()),
                            test: s.test.clone(),
                        })
                    })
                    .collect(),
                path,
            };
            // Most groups are an interface of their own (several share one only when the
            // address map names their raw callees alike): taken as they are, not absorbed into
            // an empty one, which copied every sketch, test and sample.
            match interfaces.entry((caller, callee, op)) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(parts);
                }
                std::collections::hash_map::Entry::Occupied(mut o) => o.get_mut().absorb(parts),
            }
        }

        let mut failures: Vec<Failure> = self
            .failures
            .iter()
            .filter_map(|(&(trace, _), f)| failure(trace, f, &mut ex))
            .collect();
        crate::blame::finish_failures(&mut failures);

        let d = &self.diagnostics;
        let diagnostics = Diagnostics {
            orphans: d.orphans,
            duplicate_span_ids: d.duplicate_span_ids,
            parent_cycles: d.parent_cycles,
            missing_end_times: d.missing_end_times,
            clock_skew: d.clock_skew,
            unresolved_calls: d.unresolved_calls,
            propagation_breaks: self.propagation_breaks.clone(),
        };
        let Extractor {
            nodes, operations, ..
        } = ex;
        let graph = assemble_interfaces(
            Totals {
                nodes,
                operations,
                tests,
                spans: self.spans,
                traces: self.traces,
                diagnostics,
            },
            interfaces.into_iter().collect(),
            Vec::new(),
        );
        (graph, Blame::from_failures(failures))
    }
}

pub(super) fn target(t: &TargetRecord) -> Target {
    match t {
        TargetRecord::Peer(p) => Target::Peer(p.clone()),
        TargetRecord::Address(host, port) => Target::Address {
            host: host.clone(),
            port: *port,
        },
    }
}

/// A stored failure with its hop's callee named by the run's address map.
fn failure(trace: [u8; 16], f: &FailureRecord, ex: &mut Extractor<'_>) -> Option<Failure> {
    let trace = TraceId::from_bytes(trace).ok()?;
    let failing = SpanId::from_bytes(f.failing_span).ok()?;
    let placed_trace = TraceId::from_bytes(f.placed_trace).ok()?;
    let placed_span = SpanId::from_bytes(f.placed_span).ok()?;
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
    let pair = |(t, s): ([u8; 16], [u8; 8])| {
        Some((TraceId::from_bytes(t).ok()?, SpanId::from_bytes(s).ok()?))
    };
    Some(Failure {
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
            exception: f
                .exception
                .as_ref()
                .map(|(kind, message, stacktrace)| ExceptionInfo {
                    kind: kind.clone(),
                    message: message.clone(),
                    stacktrace: stacktrace.clone(),
                }),
            client_ns: f.client_ns,
            server_ns: f.server_ns,
            logs: f
                .logs
                .iter()
                .map(|(time_ns, severity, body)| LogEvidence {
                    time_ns: *time_ns,
                    severity: severity.clone(),
                    body: body.clone(),
                })
                .collect(),
            no_error_recorded: f
                .no_error_recorded
                .iter()
                .filter_map(|&s| SpanId::from_bytes(s).ok())
                .collect(),
        },
        collateral: f
            .collateral
            .iter()
            .filter_map(|&s| SpanId::from_bytes(s).ok())
            .collect(),
        path: f.path.iter().filter_map(|&p| pair(p)).collect(),
        origin: f.origin.and_then(pair),
        circuit_open: f.circuit_open,
        cut_short: f.cut_short,
        failed_here: 1,
        hop_target,
    })
}
