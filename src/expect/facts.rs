//! What judging expectations reads of a call's spans — its times, the span enclosing it, the
//! verdicts of the attribute rules — gathered into `Facts` while graph analysis finds its hop.
//!
//! A key design decision: expectations are judged once a whole component is analysed (a test's
//! calls may lie in several traces), but by then most spans of a batch of a thousand traces have
//! left the cache, and reading them again — above all their attributes — was most of what
//! judging cost (BENCHMARKS.md, "Expectations"). So `graph` hands each trace's hops to `Gatherer::gather` as soon as it has found
//! them, while that trace's spans are in the cache, and keeps what it gathers beside its hops
//! (`RunGraph::expect_facts`); `evaluate` then reads a span only to word a broken attribute rule.
//! A graph analysed with other expectations, or none, has its facts gathered from the spans when
//! it is judged, by the same code (`Gathered::of_graph`).
//!
//! Pure: no I/O, and nothing here fails; a hop whose spans cannot be found has no facts and is
//! not judged.

use crate::graph::{Forest, Hop, RunGraph, SpanRef, TraceTree};
use crate::model::{Span, SpanId, SpanKind, Value};

use super::{AttrRule, Expectation, Names, Verdicts};

/// The attribute rules of a list of expectations, numbered in order (the first expectation's
/// rules first): rule `r` is bit `r % 64` of word `r / 64` of a call's broken-rule bits.
#[derive(Debug, Clone, Default, PartialEq)]
struct Rules {
    rules: Vec<(String, AttrRule)>,
    /// Per expectation, the number of its first rule.
    first: Vec<usize>,
}

impl Rules {
    fn of(expectations: &[Expectation]) -> Self {
        let mut out = Self::default();
        for e in expectations {
            out.first.push(out.rules.len());
            out.rules.extend(e.attributes.iter().cloned());
        }
        out
    }

    fn words(&self) -> usize {
        self.rules.len().div_ceil(64)
    }
}

/// What expectations need of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Facts {
    /// Its own span (the calling span, else the answering one).
    pub span_id: SpanId,
    pub start_ns: u64,
    pub end_ns: u64,
    /// The side a time budget is judged on (the answering span, else its own) and its duration.
    pub timed: (SpanId, u64),
    /// The nearest server, consumer or test-case span enclosing the calling side.
    pub enclosing: Option<SpanId>,
    /// Where its rule bits start in `Gathered::bits`.
    broken_at: u32,
}

/// The facts of a graph's hops, gathered for one list of expectations.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    /// The expectations they were gathered for: a call none of them selects has none.
    expectations: Vec<Expectation>,
    rules: Rules,
    /// Indexed by `Hop::facts`, or by `by_position`.
    facts: Vec<Facts>,
    /// Per entry of `facts`, `rules.words()` words of broken-rule bits, then as many of
    /// bits saying whether each rule's key had a value (a broken rule is worded without reading
    /// the spans again when it had none).
    bits: Vec<u64>,
    /// For facts gathered after analysis: each hop's index in `facts` by its position in the
    /// graph's hops (`u32::MAX` for none).
    by_position: Option<Vec<u32>>,
}

impl Gathered {
    /// The number of the first attribute rule of the `e`th expectation (its rules follow in
    /// order).
    pub(crate) fn first_rule_of(&self, e: usize) -> usize {
        self.rules.first[e]
    }

    /// Whether they were gathered for these expectations.
    pub(crate) fn is_for(&self, expectations: &[Expectation]) -> bool {
        self.expectations == expectations
    }

    /// The facts of a hop, the `position`th of its graph (none when its spans were not found).
    pub(crate) fn of(&self, position: usize, hop: &Hop) -> Option<&Facts> {
        let ix = match &self.by_position {
            Some(by_position) => by_position[position],
            None => hop.facts,
        };
        self.facts.get(ix as usize)
    }

    /// Whether attribute rule `r` is broken by the call with these facts.
    pub(crate) fn broken(&self, facts: &Facts, r: usize) -> bool {
        self.bit(facts, 0, r)
    }

    /// Whether the call with these facts has a value for the key of attribute rule `r`.
    pub(crate) fn has_value(&self, facts: &Facts, r: usize) -> bool {
        self.bit(facts, self.rules.words(), r)
    }

    fn bit(&self, facts: &Facts, offset: usize, r: usize) -> bool {
        let word = self.bits[facts.broken_at as usize + offset + r / 64];
        word & (1 << (r % 64)) != 0
    }

    /// The facts of every hop of `graph`, gathered from the spans now, indexed by each hop's
    /// position in `graph.hops()` (what a graph analysed with other expectations, or none, is
    /// judged by).
    pub(crate) fn of_graph(
        expectations: &[Expectation],
        forest: &Forest<'_>,
        graph: &RunGraph,
    ) -> Self {
        let mut test_spans: Vec<SpanRef> = graph
            .tests()
            .iter()
            .filter_map(|t| forest.resolve(t.trace_id, t.span_id))
            .collect();
        test_spans.sort_unstable();
        let mut gatherer = Gatherer::with(expectations);
        let by_position = graph
            .hops()
            .iter()
            .map(|hop| {
                let facts = forest.find_tree(hop.trace_id).and_then(|tree| {
                    let is_test = |span| test_spans.binary_search(&SpanRef { tree, span }).is_ok();
                    gatherer.facts_of(forest.tree(tree), hop, graph, is_test)
                });
                gatherer.push(facts)
            })
            .collect();
        gatherer.out.by_position = Some(by_position);
        gatherer.out
    }
}

/// Gathers the facts of hops as graph analysis finds them.
pub(crate) struct Gatherer {
    out: Gathered,
    verdicts: Verdicts,
    /// Scratch: the expectations that select the hop being gathered.
    selected: Vec<usize>,
}

impl Gatherer {
    /// A gatherer for these expectations; none when there are no expectations to gather for.
    pub(crate) fn new(expectations: &[Expectation]) -> Option<Self> {
        (!expectations.is_empty()).then(|| Self::with(expectations))
    }

    fn with(expectations: &[Expectation]) -> Self {
        Self {
            out: Gathered {
                expectations: expectations.to_vec(),
                rules: Rules::of(expectations),
                ..Gathered::default()
            },
            verdicts: Verdicts::new(expectations.len()),
            selected: Vec::new(),
        }
    }

    /// Gathers the facts of `hops`, all found in `tree` (whose spans are in the cache now), and
    /// numbers each hop's `facts`. `names` names the hops' nodes and operations by their ids;
    /// `is_test` says whether a span of the tree is a test case's.
    pub(crate) fn gather(
        &mut self,
        tree: &TraceTree<'_>,
        hops: &mut [Hop],
        names: &impl Names,
        is_test: impl Fn(usize) -> bool,
    ) {
        for hop in hops {
            let facts = self.facts_of(tree, hop, names, &is_test);
            hop.facts = self.push(facts);
        }
    }

    pub(crate) fn finish(self) -> Gathered {
        self.out
    }

    /// Keeps `facts`, returning their index (`u32::MAX` for none).
    fn push(&mut self, facts: Option<Facts>) -> u32 {
        match facts {
            Some(f) => {
                self.out.facts.push(f);
                (self.out.facts.len() - 1) as u32
            }
            None => u32::MAX,
        }
    }

    /// A hop's facts from its spans in `tree`, its broken-rule bits appended; none when no
    /// expectation selects it or its spans are not there.
    fn facts_of(
        &mut self,
        tree: &TraceTree<'_>,
        hop: &Hop,
        names: &impl Names,
        is_test: impl Fn(usize) -> bool,
    ) -> Option<Facts> {
        let ids = (
            hop.caller.index(),
            hop.callee.index(),
            hop.operation.index(),
        );
        let Self {
            out,
            verdicts,
            selected,
        } = self;
        // The expectations that select it: their attribute rules are the ones judged.
        selected.clear();
        for (e, x) in out.expectations.iter().enumerate() {
            if verdicts.selects(e, x, ids, names) {
                selected.push(e);
            }
        }
        if selected.is_empty() {
            return None;
        }
        let find = |id: Option<SpanId>| -> Option<(usize, &Span)> {
            let ix = tree.find(id?)?;
            Some((ix, tree.span(ix)))
        };
        let client = find(hop.client_span);
        let server = find(hop.server_span);
        let (own, span) = client.or(server)?;
        // The calling side's enclosing span: up from the calling span (a call with only an
        // answering span has no calling side; up from that span then).
        let enclosing = std::iter::successors(tree.parent(own), |&ix| tree.parent(ix))
            .find(|&ix| {
                matches!(tree.span(ix).kind, SpanKind::Server | SpanKind::Consumer) || is_test(ix)
            })
            .map(|ix| tree.span(ix).span_id);
        let timed = server.map_or(span, |s| s.1);
        let broken_at = out.bits.len() as u32;
        judge_rules(
            &out.rules,
            selected,
            [client.map(|c| c.1), server.map(|s| s.1)],
            &mut out.bits,
        );
        Some(Facts {
            span_id: span.span_id,
            start_ns: span.start_ns,
            end_ns: span.end_ns,
            timed: (timed.span_id, timed.duration_ns()),
            enclosing,
            broken_at,
        })
    }
}

/// Appends to `bits` a call's words for `rules`, given its spans (calling side, answering
/// side): each rule of the `selected` expectations broken or not, and whether its key had a
/// value (the other rules' bits stay clear).
fn judge_rules(rules: &Rules, selected: &[usize], spans: [Option<&Span>; 2], bits: &mut Vec<u64>) {
    let (start, words) = (bits.len(), rules.words());
    bits.resize(start + 2 * words, 0);
    for &e in selected {
        let end = rules.first.get(e + 1).copied().unwrap_or(rules.rules.len());
        for r in rules.first[e]..end {
            let (key, rule) = &rules.rules[r];
            // The calling side's value, else the answering side's.
            let value = spans
                .into_iter()
                .flatten()
                .find_map(|s| s.attributes.get(key));
            let bit = 1 << (r % 64);
            if rule_broken(rule, value) {
                bits[start + r / 64] |= bit;
            }
            if value.is_some() {
                bits[start + words + r / 64] |= bit;
            }
        }
    }
}

/// Whether an attribute rule is broken by the value a call's spans hold for its key.
pub(crate) fn rule_broken(rule: &AttrRule, value: Option<&Value>) -> bool {
    match (rule, value) {
        (AttrRule::Present, None) | (AttrRule::Absent, Some(_)) => true,
        (AttrRule::Equals(want), Some(v)) => !text_equals(v, want),
        (AttrRule::Equals(_), None) => true,
        _ => false,
    }
}

/// Whether a value's text (`Value::to_text`) is `want`. Strings, integers and booleans are
/// compared without making the text (a status code is the common case).
fn text_equals(value: &Value, want: &str) -> bool {
    match value {
        Value::Str(s) => s == want,
        Value::Bool(b) => want == if *b { "true" } else { "false" },
        Value::Int(i) => {
            use std::fmt::Write as _;
            let mut text = SmallText::default();
            // An i64 takes at most 20 bytes as text, which `SmallText` holds.
            write!(text, "{i}").is_ok() && text.as_bytes() == want.as_bytes()
        }
        other => other.to_text() == want,
    }
}

/// A fixed buffer for a short text (a number), written without allocating.
#[derive(Default)]
struct SmallText {
    bytes: [u8; 24],
    len: usize,
}

impl SmallText {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl std::fmt::Write for SmallText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}
