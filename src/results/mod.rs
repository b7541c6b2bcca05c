//! Results kept per trace (DESIGN, "Results kept per trace"): what analysis found in one trace,
//! computed once when the trace settles and stored beside its spans, so that a question about a
//! run merges stored results instead of analysing the run's spans again.
//!
//! Owns `TraceResult` (the stored record), `compute` (spans → results, per trace) and `merge`
//! (results → the run's `RunGraph` and `Blame`, exactly what analysing all the spans at once
//! gives). `settle` keeps the stored results up to date; `query` decides when to read them.
//!
//! Key design decisions:
//! - A trace is analysed with the traces it links to and that link to it (its *component*,
//!   usually the trace alone), so that test attribution across links, a consumer naming its
//!   producer's queue and a failure walk into a linked trace see what they need; each trace of
//!   the component keeps only what is its own (its hops, its tests, its failures).
//! - What depends on other traces of the run is kept raw and decided when merging: the callee
//!   of a call that no span answered (a peer name or an address, resolved by the address map that
//!   all of the run's server spans teach), which test a hop belongs to (by the test span's ids,
//!   looked up among the merged tests), and how many failures share a hop.
//! - The record is this module's own type (postcard-encoded), versioned through the
//!   fingerprint: results are derived data, so a new version or another configuration is
//!   recomputed from the spans, never migrated.

pub mod deployment;
mod merge;
pub mod rollup;
pub mod seen;
pub mod settle;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::blame::{self, ErrorClass};
use crate::graph::{self, AnalysisOptions, Forest, NodeKind, Target, TestOutcome, semconv};
use crate::model::{Span, SpanId, SpanKind, TraceId};

pub use deployment::{Deployment, KeptHistory, RunLookup};
pub use merge::{NamedHop, merge, trace_hops};
pub use rollup::Rollup;

/// Bumped when `TraceResult`, `Rollup` or what `compute` puts in them changes: stored results
/// and rollups of another version are recomputed (the fingerprint changes with it).
const RESULTS_VERSION: u64 = 7;

/// Identifies the configuration results were computed with: the results format and the
/// analysis options (test-driver services, aliases). Stable across processes (FNV-1a).
pub fn fingerprint(opts: &AnalysisOptions) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    eat(&RESULTS_VERSION.to_le_bytes());
    let mut services = opts.test_services.clone();
    services.sort();
    services.dedup();
    for s in &services {
        eat(b"test_service");
        eat(s.as_bytes());
    }
    let mut aliases = opts.aliases.clone();
    aliases.sort();
    for (a, s) in &aliases {
        eat(b"alias");
        eat(a.as_bytes());
        eat(s.as_bytes());
    }
    // Expectations in the manifest's order (their order names nothing, but is stable).
    for e in &opts.expectations {
        eat(b"expect");
        eat(format!("{e:?}").as_bytes());
    }
    h as i64
}

/// What one trace contributes to every question about its run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceResult {
    pub trace_id: [u8; 16],
    /// Spans stored for the trace, duplicates included.
    pub spans: u64,
    /// Services that produced spans, sorted.
    pub services: Vec<String>,
    /// Addresses its SERVER spans said they answered on: (host, port, service), sorted.
    pub learned: Vec<(String, Option<u16>, String)>,
    /// Per service, its SERVER spans with no parent.
    pub propagation_breaks: Vec<(String, u64)>,
    pub diagnostics: Counts,
    /// Node ids the hops name, with their kinds.
    pub nodes: Vec<(String, u8)>,
    pub operations: Vec<String>,
    pub hops: Vec<HopRecord>,
    /// The test cases whose spans are in this trace.
    pub tests: Vec<TestRecord>,
    /// The tests the hops belong to, by their span (in this trace or a linked one).
    pub hop_tests: Vec<([u8; 16], [u8; 8])>,
    /// Aligned with `hop_tests`: each test's name and whether it failed, as the trace's
    /// component knew them (what a run's rollup counts its interfaces' tests by).
    pub hop_test_names: Vec<(String, bool)>,
    /// Failures whose failing span (test case or entry request) is in this trace.
    pub failures: Vec<FailureRecord>,
    /// Traces this one links to, sorted.
    pub links: Vec<[u8; 16]>,
    /// Broken expectations whose offending span is in this trace (`crate::expect`).
    pub violations: Vec<crate::expect::Violation>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub orphans: u64,
    pub duplicate_span_ids: u64,
    pub parent_cycles: u64,
    pub missing_end_times: u64,
    pub clock_skew: u64,
    pub unresolved_calls: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HopRecord {
    /// Index in `nodes`.
    pub caller: u32,
    /// Index in `nodes`: the callee as this trace's component named it; `target`, when present,
    /// is named again when merging.
    pub callee: u32,
    pub target: Option<TargetRecord>,
    /// Index in `operations`.
    pub operation: u32,
    pub client_span: Option<[u8; 8]>,
    pub server_span: Option<[u8; 8]>,
    pub client_ns: Option<u64>,
    pub server_ns: Option<u64>,
    pub error: bool,
    /// `ErrorClass` by its position in `ErrorClass::ALL`, for a hop in error.
    pub class: Option<u8>,
    /// Index in `hop_tests`.
    pub test: Option<u32>,
    /// The own time of each node on the critical path below the call (`graph::critical`).
    pub path: Vec<PathStep>,
}

/// One node's own time on a call's critical path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathStep {
    /// Index in `nodes`; with `target`, the node is named again when merging, as a hop's
    /// callee is (the callee of a call no span answered).
    pub node: u32,
    pub target: Option<TargetRecord>,
    pub own_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TargetRecord {
    Peer(String),
    Address(String, Option<u16>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestRecord {
    pub name: String,
    pub span_id: [u8; 8],
    pub failed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    pub failing_span: [u8; 8],
    pub placed_trace: [u8; 16],
    pub placed_span: [u8; 8],
    pub test: Option<String>,
    pub class: u8,
    /// (caller, callee, operation) as the component named it.
    pub hop: Option<(String, String, String)>,
    pub hop_target: Option<TargetRecord>,
    pub status_message: Option<String>,
    pub http_status: Option<i64>,
    pub rpc_status: Option<String>,
    /// (type, message, stacktrace).
    pub exception: Option<(String, String, String)>,
    pub client_ns: Option<u64>,
    pub server_ns: Option<u64>,
    pub collateral: Vec<[u8; 8]>,
    pub path: Vec<([u8; 16], [u8; 8])>,
    pub origin: Option<([u8; 16], [u8; 8])>,
    pub circuit_open: bool,
    pub cut_short: bool,
    /// (time, severity, body) of the error log records kept as evidence.
    pub logs: Vec<(u64, String, String)>,
    pub no_error_recorded: Vec<[u8; 8]>,
}

/// A stored result that cannot be read back (written by a build with another format under the
/// same version, or damaged): it is recomputed from the spans.
#[derive(Debug, thiserror::Error)]
#[error("unreadable trace result: {0}")]
pub struct DecodeError(pub(crate) String);

impl TraceResult {
    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain owned data into a Vec cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        postcard::from_bytes(bytes).map_err(|e| DecodeError(e.to_string()))
    }

    pub fn trace(&self) -> Option<TraceId> {
        TraceId::from_bytes(self.trace_id).ok()
    }

    /// The result of a trace that contributes nothing: one whose spans another instance of the
    /// deployment holds too, and whose results that instance computes.
    pub fn empty(trace: TraceId) -> Self {
        Self::nothing(*trace.as_bytes())
    }

    /// A result of `trace_id` holding nothing yet.
    pub(crate) fn nothing(trace_id: [u8; 16]) -> Self {
        TraceResult {
            trace_id,
            spans: 0,
            services: Vec::new(),
            learned: Vec::new(),
            propagation_breaks: Vec::new(),
            diagnostics: Counts::default(),
            nodes: Vec::new(),
            operations: Vec::new(),
            hops: Vec::new(),
            tests: Vec::new(),
            hop_tests: Vec::new(),
            hop_test_names: Vec::new(),
            failures: Vec::new(),
            links: Vec::new(),
            violations: Vec::new(),
        }
    }
}

pub(crate) fn class_code(class: ErrorClass) -> u8 {
    ErrorClass::ALL
        .iter()
        .position(|c| *c == class)
        .unwrap_or(ErrorClass::ALL.len() - 1) as u8
}

pub(crate) fn class_of(code: u8) -> ErrorClass {
    ErrorClass::ALL
        .get(code as usize)
        .copied()
        .unwrap_or(ErrorClass::CalleeError)
}

pub(crate) fn kind_code(kind: NodeKind) -> u8 {
    match kind {
        NodeKind::Service => 0,
        NodeKind::Database => 1,
        NodeKind::Messaging => 2,
        NodeKind::External => 3,
    }
}

pub(crate) fn kind_of(code: u8) -> NodeKind {
    match code {
        1 => NodeKind::Database,
        2 => NodeKind::Messaging,
        3 => NodeKind::External,
        _ => NodeKind::Service,
    }
}

/// The node a raw target names when no address map or service says otherwise.
fn raw_name(t: &Target) -> String {
    let mut buf = String::new();
    match t {
        Target::Peer(p) => {
            buf.push_str("ext:");
            buf.push_str(p);
        }
        Target::Address { host, port } => semconv::ext_address_node(host, *port, &mut buf),
    }
    buf
}

fn target_record(t: &Target) -> TargetRecord {
    match t {
        Target::Peer(p) => TargetRecord::Peer(p.clone()),
        Target::Address { host, port } => TargetRecord::Address(host.clone(), *port),
    }
}

/// Per result being built: its node, operation and test tables' entries by key.
type TableIndex = (
    HashMap<String, u32>,
    HashMap<String, u32>,
    HashMap<(TraceId, SpanId), u32>,
);

/// Analyses `spans` (one component: a trace and the traces linked to it, or any set of whole
/// traces) and returns the results of each of its traces, sorted by trace id.
pub fn compute(spans: &[Span], opts: &AnalysisOptions) -> Vec<TraceResult> {
    let forest = Forest::build(spans);
    let (run, unresolved) = graph::analyze_forest_counted(&forest, opts);
    let blame = blame::analyze_hops(&forest, &run);

    let mut by_trace: HashMap<TraceId, usize> = HashMap::new();
    let mut out: Vec<TraceResult> = Vec::with_capacity(forest.trees().len());
    let mut interners: Vec<TableIndex> = Vec::new();
    for (t, tree) in forest.trees().iter().enumerate() {
        by_trace.insert(tree.trace_id(), t);
        let d = tree.diagnostics();
        let mut services = BTreeSet::new();
        let mut learned = BTreeSet::new();
        let mut breaks: BTreeMap<String, u64> = BTreeMap::new();
        let mut links = BTreeSet::new();
        for (_, span) in tree.spans() {
            services.insert(span.service().to_owned());
            if span.kind == SpanKind::Server {
                if let Some((host, port)) = semconv::served_address(&span.attributes) {
                    learned.insert((host.to_owned(), port, span.service().to_owned()));
                }
                if span.parent_span_id.is_none() {
                    *breaks.entry(span.service().to_owned()).or_insert(0) += 1;
                }
            }
            for l in &span.links {
                if l.trace_id != tree.trace_id() {
                    links.insert(*l.trace_id.as_bytes());
                }
            }
        }
        out.push(TraceResult {
            trace_id: *tree.trace_id().as_bytes(),
            spans: tree.len() as u64 + d.duplicate_span_ids,
            services: services.into_iter().collect(),
            learned: learned.into_iter().collect(),
            propagation_breaks: breaks.into_iter().collect(),
            diagnostics: Counts {
                orphans: d.orphans,
                duplicate_span_ids: d.duplicate_span_ids,
                parent_cycles: d.parent_cycles,
                missing_end_times: d.missing_end_times,
                clock_skew: d.clock_skew,
                unresolved_calls: unresolved.get(t).copied().unwrap_or(0),
            },
            nodes: Vec::new(),
            operations: Vec::new(),
            hops: Vec::new(),
            tests: Vec::new(),
            hop_tests: Vec::new(),
            hop_test_names: Vec::new(),
            failures: Vec::new(),
            links: links.into_iter().collect(),
            violations: Vec::new(),
        });
        interners.push(Default::default());
    }

    for (i, hop) in run.hops().iter().enumerate() {
        let Some(&t) = by_trace.get(&hop.trace_id) else {
            continue;
        };
        let r = &mut out[t];
        let (nodes, ops, tests) = &mut interners[t];
        let mut node = |id: &str, kind: NodeKind| {
            *nodes.entry(id.to_owned()).or_insert_with(|| {
                r.nodes.push((id.to_owned(), kind_code(kind)));
                (r.nodes.len() - 1) as u32
            })
        };
        let (c, s) = (run.node(hop.caller), run.node(hop.callee));
        let caller = node(&c.id, c.kind);
        // A callee named from a raw target is named again when merging; what is stored is the
        // target's own name, so that a trace's results never depend on the traces it happened
        // to be analysed with.
        let callee = match &hop.target {
            Some(t) => node(&raw_name(t), NodeKind::External),
            None => node(&s.id, s.kind),
        };
        let op = run.operation(hop.operation);
        let operation = *ops.entry(op.to_owned()).or_insert_with(|| {
            r.operations.push(op.to_owned());
            (r.operations.len() - 1) as u32
        });
        let path = hop
            .path
            .iter()
            .map(|(p, own_ns)| {
                let n = run.node(p.node);
                PathStep {
                    node: match &p.target {
                        Some(t) => node(&raw_name(t), NodeKind::External),
                        None => node(&n.id, n.kind),
                    },
                    target: p.target.as_deref().map(target_record),
                    own_ns: *own_ns,
                }
            })
            .collect();
        let test = hop.test.map(|id| {
            let tc = run.test(id);
            *tests.entry((tc.trace_id, tc.span_id)).or_insert_with(|| {
                r.hop_tests
                    .push((*tc.trace_id.as_bytes(), *tc.span_id.as_bytes()));
                r.hop_test_names
                    .push((tc.name.clone(), tc.outcome == TestOutcome::Failed));
                (r.hop_tests.len() - 1) as u32
            })
        });
        r.hops.push(HopRecord {
            caller,
            callee,
            target: hop.target.as_ref().map(target_record),
            operation,
            client_span: hop.client_span.map(|s| *s.as_bytes()),
            server_span: hop.server_span.map(|s| *s.as_bytes()),
            client_ns: hop.client_ns,
            server_ns: hop.server_ns,
            error: hop.error,
            class: blame.hop_class(i).map(class_code),
            test,
            path,
        });
    }

    for tc in run.tests() {
        if let Some(&t) = by_trace.get(&tc.trace_id) {
            out[t].tests.push(TestRecord {
                name: tc.name.clone(),
                span_id: *tc.span_id.as_bytes(),
                failed: tc.outcome == TestOutcome::Failed,
            });
        }
    }

    for f in &blame.failures {
        let Some(&t) = by_trace.get(&f.trace_id) else {
            continue;
        };
        let e = &f.evidence;
        out[t].failures.push(FailureRecord {
            failing_span: *f.failing_span.as_bytes(),
            placed_trace: *f.placed_trace.as_bytes(),
            placed_span: *f.placed_span.as_bytes(),
            test: f.test.clone(),
            class: class_code(f.class),
            hop: f.hop.as_ref().map(|h| {
                let callee = match &f.hop_target {
                    Some(t) => raw_name(t),
                    None => h.callee.clone(),
                };
                (h.caller.clone(), callee, h.operation.clone())
            }),
            hop_target: f.hop_target.as_ref().map(target_record),
            status_message: e.status_message.clone(),
            http_status: e.http_status,
            rpc_status: e.rpc_status.clone(),
            exception: e
                .exception
                .as_ref()
                .map(|x| (x.kind.clone(), x.message.clone(), x.stacktrace.clone())),
            client_ns: e.client_ns,
            server_ns: e.server_ns,
            collateral: f.collateral.iter().map(|s| *s.as_bytes()).collect(),
            path: f
                .path
                .iter()
                .map(|(t, s)| (*t.as_bytes(), *s.as_bytes()))
                .collect(),
            origin: f.origin.map(|(t, s)| (*t.as_bytes(), *s.as_bytes())),
            circuit_open: f.circuit_open,
            cut_short: f.cut_short,
            logs: e
                .logs
                .iter()
                .map(|l| (l.time_ns, l.severity.clone(), l.body.clone()))
                .collect(),
            no_error_recorded: e.no_error_recorded.iter().map(|s| *s.as_bytes()).collect(),
        });
    }
    // Each violation is kept by the trace of its offending span.
    for v in crate::expect::evaluate(&opts.expectations, &forest, &run) {
        if let Ok(t) = TraceId::from_bytes(v.trace_id)
            && let Some(&i) = by_trace.get(&t)
        {
            out[i].violations.push(v);
        }
    }
    out.sort_by_key(|r| r.trace_id);
    out
}
