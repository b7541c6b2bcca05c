//! All traces of a run as trees, with span links resolved across them.
//!
//! Owns `Forest` and `SpanRef`. Links are how asynchronous work joins the trace that caused it (a
//! consumer's trace links to the producer span), so a walker needs both directions: from a span
//! to what it links to (`resolve`) and from a span to the spans that link to it (`linked_from`).
//! Like the tree, it does not interpret spans.
//!
//! A key design decision: spans are grouped by trace with one sort of (trace id, input position)
//! pairs rather than a hash map of vectors: one allocation for the grouping, cache-friendly, and
//! the trees come out ordered by trace id, which makes every later step deterministic.

use crate::model::{Span, SpanId, TraceId};

use super::tree::{TraceTree, TreeDiagnostics};

/// A span in a forest: which tree, which span in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanRef {
    pub tree: usize,
    pub span: usize,
}

#[derive(Debug)]
pub struct Forest<'a> {
    /// Ordered by trace id.
    trees: Vec<TraceTree<'a>>,
    /// (linked trace, linked span, linking span), sorted: who links to a given span.
    links_to: Vec<(TraceId, SpanId, SpanRef)>,
}

impl<'a> Forest<'a> {
    /// Builds one tree per trace. `spans` may hold many traces, in any order.
    pub fn build(spans: &'a [Span]) -> Self {
        let mut order: Vec<(TraceId, u32)> = spans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.trace_id, i as u32))
            .collect();
        order.sort_unstable();

        let mut trees = Vec::new();
        let mut links_to = Vec::new();
        let mut start = 0;
        while start < order.len() {
            let trace_id = order[start].0;
            let end = start + order[start..].partition_point(|&(t, _)| t == trace_id);
            let members = order[start..end]
                .iter()
                .map(|&(_, i)| &spans[i as usize])
                .collect();
            let tree = TraceTree::build(trace_id, members);
            let tree_ix = trees.len();
            for (ix, span) in tree.spans() {
                for link in &span.links {
                    let from = SpanRef {
                        tree: tree_ix,
                        span: ix,
                    };
                    links_to.push((link.trace_id, link.span_id, from));
                }
            }
            trees.push(tree);
            start = end;
        }
        links_to.sort_unstable();
        Self { trees, links_to }
    }

    pub fn trees(&self) -> &[TraceTree<'a>] {
        &self.trees
    }

    pub fn tree(&self, ix: usize) -> &TraceTree<'a> {
        &self.trees[ix]
    }

    pub fn span(&self, r: SpanRef) -> &'a Span {
        self.trees[r.tree].span(r.span)
    }

    /// The index of the tree of this trace.
    pub fn find_tree(&self, trace_id: TraceId) -> Option<usize> {
        self.trees
            .binary_search_by_key(&trace_id, |t| t.trace_id())
            .ok()
    }

    /// The span with these ids, if the forest holds it.
    pub fn resolve(&self, trace_id: TraceId, span_id: SpanId) -> Option<SpanRef> {
        let tree = self.find_tree(trace_id)?;
        let span = self.trees[tree].find(span_id)?;
        Some(SpanRef { tree, span })
    }

    /// The spans whose links point at `target`, in (tree, span) order.
    pub fn linked_from(&self, target: SpanRef) -> impl Iterator<Item = SpanRef> + '_ {
        let tree = &self.trees[target.tree];
        let key = (tree.trace_id(), tree.span(target.span).span_id);
        let first = self.links_to.partition_point(|&(t, s, _)| (t, s) < key);
        self.links_to[first..]
            .iter()
            .take_while(move |&&(t, s, _)| (t, s) == key)
            .map(|&(_, _, from)| from)
    }

    /// The sum of the trees' diagnostics.
    pub fn diagnostics(&self) -> TreeDiagnostics {
        let mut total = TreeDiagnostics::default();
        for tree in &self.trees {
            total.add(tree.diagnostics());
        }
        total
    }
}
