//! Expectations (DESIGN, "Expectations"): what each test's traces must have done — call counts,
//! no N+1 (`repeated`), time budgets, required or forbidden attributes — and the violations of a
//! trace's tests.
//!
//! Owns `Expectation` (parsed from the manifest's `expect:` list by `coverage::manifest`), the
//! small glob language its selectors use (`glob`), and `evaluate`, which judges one analysed
//! component of traces (a forest and its graph, as per-trace results are computed) and returns
//! its violations. What judging reads of the calls' spans is gathered while graph analysis finds
//! the hops, when those spans are in the cache (`facts`). Pure: no I/O, never fails on messy
//! traces.
//!
//! Each expectation is judged per test, or per trace when a trace holds no test. A call is a hop
//! of the graph (caller, callee as the trace names it, operation); a hop's own span is its
//! calling span, else its answering one.

mod facts;
mod glob;

use petgraph::graph::NodeIndex;
use serde::{Deserialize, Serialize};

use crate::graph::{Forest, Hop, OpId, RunGraph, TraceTree};
use crate::model::{SpanId, TraceId, Value};

use facts::Facts;
pub(crate) use facts::{Gathered, Gatherer};
pub use glob::{Glob, GlobError};

/// One entry of the manifest's `expect:` list.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    pub name: String,
    /// Which tests (by name) it applies to; `None`: every test, and traces with no test.
    pub tests: Option<Glob>,
    pub caller: Option<Glob>,
    pub callee: Option<Glob>,
    pub operation: Option<Glob>,
    pub calls: Option<Bounds>,
    /// `repeated {max}`: at most this many sequential matching calls under one enclosing span.
    pub repeated: Option<u64>,
    /// `duration_ms {max}`: each matching call's answering side (else calling side) at most this.
    pub duration_ms: Option<f64>,
    /// `attributes`: each matching call's spans must have (or not have, or have with a value)
    /// each key.
    pub attributes: Vec<(String, AttrRule)>,
}

// `duration_ms` is never NaN (the manifest refuses anything but a positive number).
impl Eq for Expectation {}

/// `calls {min, max}`, per test.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bounds {
    pub min: Option<u64>,
    pub max: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrRule {
    Present,
    Absent,
    /// The attribute's value, as text, equals this.
    Equals(String),
}

/// A broken expectation in a trace (DESIGN's `violations`, before links are rendered).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Violation {
    pub expectation: String,
    pub test: Option<String>,
    pub trace_id: [u8; 16],
    /// The offending span; for `repeated` the enclosing span, for a missing call the test's.
    pub span_id: [u8; 8],
    /// (caller, callee, operation); none for a missing call.
    pub hop: Option<(String, String, String)>,
    pub expected: String,
    pub observed: String,
}

impl Violation {
    /// One sentence for people.
    pub fn summary(&self) -> String {
        let who = self.test.as_deref().unwrap_or("a request");
        match &self.hop {
            Some((caller, callee, op)) => format!(
                "{}: {who} broke it at {caller} -> {callee} {op}: expected {}, observed {}",
                self.expectation, self.expected, self.observed
            ),
            None => format!(
                "{}: {who} expected {}, observed {}",
                self.expectation, self.expected, self.observed
            ),
        }
    }
}

/// A call as expectations see it: its hop, and the facts gathered of its spans.
#[derive(Clone, Copy)]
struct Call<'a> {
    /// The judged group it belongs to (an index in `evaluate`'s groups).
    group: u32,
    /// The expectations (of the up to 64 being judged) that select it, one bit each.
    selected_by: u64,
    hop: &'a Hop,
    facts: &'a Facts,
    /// What `repeated` groups it by, (enclosing span, callee, operation), as one number: its
    /// order is the order of the ids.
    stretch: u128,
}

impl<'a> Call<'a> {
    fn new(group: u32, selected_by: u64, hop: &'a Hop, facts: &'a Facts) -> Self {
        let enclosing = facts
            .enclosing
            .map_or(0, |s| u64::from_be_bytes(*s.as_bytes()));
        let stretch = (u128::from(enclosing) << 64)
            | (u128::from(hop.callee.index() as u32) << 32)
            | u128::from(hop.operation.index() as u32);
        Self {
            group,
            selected_by,
            hop,
            facts,
            stretch,
        }
    }

    /// The order `repeated` reads a group's calls in: by (enclosing span, callee, operation),
    /// each of those in start order (ties by span id).
    fn stretch_order(&self) -> (u128, u64, u64, u64) {
        let f = self.facts;
        (
            self.stretch,
            f.start_ns,
            f.end_ns,
            u64::from_be_bytes(*f.span_id.as_bytes()),
        )
    }
}

/// Who is judged: a test, or a trace that holds none.
struct Judged<'a> {
    test: Option<&'a str>,
    trace: TraceId,
    /// The test's span, or the trace's root span: where a missing call is reported.
    span: Option<SpanId>,
}

/// The names a call's selectors are matched against, by the ids a graph (or an analysis under
/// way) gives its nodes and operations.
pub(crate) trait Names {
    fn node(&self, ix: usize) -> &str;
    fn operation(&self, ix: usize) -> &str;
}

impl Names for RunGraph {
    fn node(&self, ix: usize) -> &str {
        &RunGraph::node(self, NodeIndex::new(ix)).id
    }

    fn operation(&self, ix: usize) -> &str {
        RunGraph::operation(self, OpId(ix as u32))
    }
}

/// Each expectation's verdict on each caller, callee and operation, by id.
///
/// A key design decision: a component of traces (the settle worker analyses a thousand unlinked
/// traces at once) names the same few callers, callees and operations over and over, so each
/// name is matched against an expectation's glob once and the verdict kept by its id.
struct Verdicts {
    /// Per expectation, per selector (caller, callee, operation), per id: 0 not decided yet,
    /// 1 not selected, 2 selected.
    per: Vec<[Vec<u8>; 3]>,
}

impl Verdicts {
    fn new(expectations: usize) -> Self {
        Self {
            per: vec![Default::default(); expectations],
        }
    }

    /// Whether `x`, the `e`th expectation, selects a call from node `caller` to node `callee`
    /// for operation `op`.
    fn selects(
        &mut self,
        e: usize,
        x: &Expectation,
        (caller, callee, op): (usize, usize, usize),
        names: &impl Names,
    ) -> bool {
        let [callers, callees, ops] = &mut self.per[e];
        decide(callers, caller, x.caller.as_ref(), || names.node(caller))
            && decide(callees, callee, x.callee.as_ref(), || names.node(callee))
            && decide(ops, op, x.operation.as_ref(), || names.operation(op))
    }
}

/// A selector's verdict on the name at `ix`: matched the first time, remembered after.
fn decide<'g>(
    verdicts: &mut Vec<u8>,
    ix: usize,
    glob: Option<&Glob>,
    name: impl FnOnce() -> &'g str,
) -> bool {
    let Some(glob) = glob else {
        return true;
    };
    if verdicts.len() <= ix {
        verdicts.resize(ix + 1, 0);
    }
    if verdicts[ix] == 0 {
        verdicts[ix] = if glob.matches(name()) { 2 } else { 1 };
    }
    verdicts[ix] == 2
}

/// Which of up to 64 expectations select a call, one bit each; the graph's hops come sorted by
/// (caller, callee, operation), so the bits of a run of equal hops are found once for the run.
struct Selection<'e> {
    expectations: &'e [Expectation],
    verdicts: Verdicts,
    last: Option<((NodeIndex, NodeIndex, OpId), u64)>,
}

impl<'e> Selection<'e> {
    fn new(expectations: &'e [Expectation]) -> Self {
        debug_assert!(expectations.len() <= 64);
        Self {
            expectations,
            verdicts: Verdicts::new(expectations.len()),
            last: None,
        }
    }

    /// The expectations that select a call from `caller` to `callee` for `op`, one bit each.
    fn of(&mut self, graph: &RunGraph, caller: NodeIndex, callee: NodeIndex, op: OpId) -> u64 {
        let key = (caller, callee, op);
        if let Some((last, bits)) = self.last
            && last == key
        {
            return bits;
        }
        let ids = (caller.index(), callee.index(), op.index());
        let mut bits = 0u64;
        for (e, x) in self.expectations.iter().enumerate() {
            bits |= u64::from(self.verdicts.selects(e, x, ids, graph)) << e;
        }
        self.last = Some((key, bits));
        bits
    }
}

/// The violations of the tests (and test-less traces) of one analysed component, sorted.
///
/// Reads the facts analysis gathered of the calls' spans when it was given these expectations
/// (`facts`), else gathers them from the spans now.
pub fn evaluate(
    expectations: &[Expectation],
    forest: &Forest<'_>,
    graph: &RunGraph,
) -> Vec<Violation> {
    if expectations.is_empty() {
        return Vec::new();
    }
    let gathered_now;
    let gathered = match graph.expect_facts() {
        Some(g) if g.is_for(expectations) => g,
        _ => {
            gathered_now = Gathered::of_graph(expectations, forest, graph);
            &gathered_now
        }
    };
    let judging = Judging {
        gathered,
        forest,
        graph,
    };
    let mut out = Vec::new();
    // A call's expectations are a set of bits in a u64: more than 64 are judged 64 at a time.
    for (chunk, some) in expectations.chunks(64).enumerate() {
        judging.evaluate_some(some, chunk * 64, &mut out);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// What judging a component reads.
struct Judging<'a, 'f> {
    gathered: &'a Gathered,
    forest: &'a Forest<'f>,
    graph: &'a RunGraph,
}

impl<'a> Judging<'a, '_> {
    /// `evaluate` of at most 64 expectations, the first being the `first`th of the manifest's;
    /// their violations added to `out`.
    fn evaluate_some(&self, expectations: &[Expectation], first: usize, out: &mut Vec<Violation>) {
        const NONE: u32 = u32::MAX;
        let (forest, graph) = (self.forest, self.graph);
        let tests = graph.tests();
        let trees = forest.trees();
        // Traces that hold a test are judged through their tests; the others as themselves.
        let mut holds_test = vec![false; trees.len()];
        for t in tests {
            if let Some(tree) = forest.find_tree(t.trace_id) {
                holds_test[tree] = true;
            }
        }
        let mut groups: Vec<Judged<'_>> = tests
            .iter()
            .map(|t| Judged {
                test: Some(&t.name),
                trace: t.trace_id,
                span: Some(t.span_id),
            })
            .collect();
        let mut tree_group = vec![NONE; trees.len()];
        for (ix, tree) in trees.iter().enumerate() {
            if !holds_test[ix] {
                tree_group[ix] = groups.len() as u32;
                groups.push(Judged {
                    test: None,
                    trace: tree.trace_id(),
                    span: root_span(tree),
                });
            }
        }

        // The selected calls with their group.
        let mut selection = Selection::new(expectations);
        let mut picked: Vec<Call<'a>> = Vec::new();
        for (position, hop) in graph.hops().iter().enumerate() {
            let selected_by = selection.of(graph, hop.caller, hop.callee, hop.operation);
            if selected_by == 0 {
                continue;
            }
            let group = match hop.test {
                Some(t) => t.index() as u32,
                None => match forest.find_tree(hop.trace_id) {
                    Some(tree) => tree_group[tree],
                    None => NONE,
                },
            };
            if group == NONE {
                continue;
            }
            if let Some(facts) = self.gathered.of(position, hop) {
                picked.push(Call::new(group, selected_by, hop, facts));
            }
        }
        // Into group order by counting (linear in the calls, and within a group the hops' own
        // order): group `g`'s calls are `calls[starts[g]..starts[g + 1]]`.
        let mut starts = vec![0usize; groups.len() + 1];
        for c in &picked {
            starts[c.group as usize + 1] += 1;
        }
        for g in 0..groups.len() {
            starts[g + 1] += starts[g];
        }
        let mut calls = picked.clone();
        let mut next = starts.clone();
        for c in picked {
            calls[next[c.group as usize]] = c;
            next[c.group as usize] += 1;
        }

        let stretches = expectations.iter().any(|e| e.repeated.is_some());
        for (g, judged) in groups.iter().enumerate() {
            let mine = &mut calls[starts[g]..starts[g + 1]];
            if stretches {
                mine.sort_unstable_by_key(Call::stretch_order);
            }
            for (e, x) in expectations.iter().enumerate() {
                match (&x.tests, judged.test) {
                    (Some(glob), Some(name)) if !glob.matches(name) => continue,
                    (Some(_), None) => continue,
                    _ => {}
                }
                self.judge(x, first + e, 1 << e, judged, mine, out);
            }
        }
    }

    /// Judges one group's calls (in `Call::stretch_order` when any expectation has
    /// `repeated`) by expectation `x`, the `e`th of the manifest's, whose bit in
    /// `Call::selected_by` is `bit`.
    fn judge(
        &self,
        x: &Expectation,
        e: usize,
        bit: u64,
        judged: &Judged<'_>,
        calls: &[Call<'_>],
        out: &mut Vec<Violation>,
    ) {
        let graph = self.graph;
        let violation =
            |span: SpanId, call: Option<&Call<'_>>, expected: String, observed: String| Violation {
                expectation: x.name.clone(),
                test: judged.test.map(str::to_owned),
                trace_id: *call.map_or(judged.trace, |c| c.hop.trace_id).as_bytes(),
                span_id: *span.as_bytes(),
                hop: call.map(|c| {
                    (
                        graph.node(c.hop.caller).id.clone(),
                        graph.node(c.hop.callee).id.clone(),
                        graph.operation(c.hop.operation).to_owned(),
                    )
                }),
                expected,
                observed,
            };
        let selected = || calls.iter().filter(move |c| c.selected_by & bit != 0);
        if let Some(b) = x.calls {
            let n = selected().count() as u64;
            if let Some(min) = b.min
                && n < min
                && let Some(span) = judged.span
            {
                out.push(violation(
                    span,
                    None,
                    format!("at least {}", Calls(min)),
                    Calls(n).to_string(),
                ));
            }
            if let Some(max) = b.max
                && n > max
            {
                // The first call over the bound is the offending one.
                let mut ordered: Vec<&Call<'_>> = selected().collect();
                ordered.sort_by_key(|c| (c.facts.start_ns, c.facts.span_id));
                let c = ordered[max as usize];
                out.push(violation(
                    c.facts.span_id,
                    Some(c),
                    format!("at most {}", Calls(max)),
                    Calls(n).to_string(),
                ));
            }
        }
        if let Some(max) = x.repeated {
            // The calls come grouped by (enclosing span, callee, operation), each group in start
            // order: one pass finds each group's longest stretch.
            let mut calls = selected().peekable();
            while let Some(first) = calls.next() {
                let mut stretch = Stretch::default();
                stretch.add(first.facts);
                while let Some(c) = calls.next_if(|c| c.stretch == first.stretch) {
                    stretch.add(c.facts);
                }
                if stretch.longest > max {
                    out.push(violation(
                        first.facts.enclosing.unwrap_or(first.facts.span_id),
                        Some(first),
                        format!("at most {} one after another", Calls(max)),
                        format!("{} one after another", Calls(stretch.longest)),
                    ));
                }
            }
        }
        if let Some(max) = x.duration_ms {
            for c in selected() {
                let (side, ns) = c.facts.timed;
                let ms = ns as f64 / 1e6;
                if ms > max {
                    out.push(violation(
                        side,
                        Some(c),
                        format!("at most {max} ms"),
                        format!("{} ms", (ms * 1000.0).round() / 1000.0),
                    ));
                }
            }
        }
        let first_rule = self.gathered.first_rule_of(e);
        for c in selected() {
            for (r, (key, rule)) in x.attributes.iter().enumerate() {
                if !self.gathered.broken(c.facts, first_rule + r) {
                    continue;
                }
                // Broken: the call's spans are read again for the value's words, if it had one.
                let value = if self.gathered.has_value(c.facts, first_rule + r) {
                    self.value_of(c.hop, key)
                } else {
                    None
                };
                let expected = match rule {
                    AttrRule::Present => format!("{key} present"),
                    AttrRule::Absent => format!("{key} absent"),
                    AttrRule::Equals(want) => format!("{key} = {want}"),
                };
                let observed = match value {
                    Some(v) => format!("{key} = {}", v.to_text()),
                    None => format!("no {key}"),
                };
                out.push(violation(c.facts.span_id, Some(c), expected, observed));
            }
        }
    }

    /// A call's value of an attribute: its calling side's, else its answering side's.
    fn value_of(&self, hop: &Hop, key: &str) -> Option<&'a Value> {
        let tree = self.forest.tree(self.forest.find_tree(hop.trace_id)?);
        [hop.client_span, hop.server_span]
            .into_iter()
            .flatten()
            .filter_map(|id| tree.find(id))
            .find_map(|ix| tree.span(ix).attributes.get(key))
    }
}

/// "1 call", "2 calls": written straight into the text that holds it.
struct Calls(u64);

impl std::fmt::Display for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0;
        write!(f, "{n} call{}", if n == 1 { "" } else { "s" })
    }
}

/// The longest stretch of calls (taken in start order) each starting after the previous one
/// ended.
#[derive(Default)]
struct Stretch {
    longest: u64,
    current: u64,
    previous_end: Option<u64>,
}

impl Stretch {
    fn add(&mut self, c: &Facts) {
        self.current = match self.previous_end {
            Some(end) if c.start_ns >= end => self.current + 1,
            _ => 1,
        };
        self.longest = self.longest.max(self.current);
        self.previous_end = Some(c.end_ns.max(c.start_ns));
    }
}

fn root_span(tree: &TraceTree<'_>) -> Option<SpanId> {
    let root = tree.roots().next()?;
    Some(tree.span(root).span_id)
}

#[cfg(test)]
mod tests;
