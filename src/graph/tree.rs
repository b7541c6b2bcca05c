//! One trace as a tree of spans: the structure every walk over a trace starts from (hop
//! extraction here, failing-hop blame later).
//!
//! Owns `TraceTree` and its per-trace `TreeDiagnostics`. It must not interpret what spans mean
//! (services, hops, tests): it only answers "who is whose parent and child".
//!
//! Real traces are messy, and the tree never fails on them:
//! - **Duplicate span ids**: one span per id is kept: the one with an end time, else the first in
//!   input order. The others are counted and left out of the tree.
//! - **Orphans**: a span whose parent id names no span of the trace becomes a root and is flagged.
//! - **Parent cycles** (including a span that is its own parent): each cycle is cut at its member
//!   that started first, which becomes a root; walks therefore always terminate.
//! - **Missing end times** (`end_ns` 0, or an end before the start) are counted; durations of such
//!   spans are unknown, never negative.
//! - **Clock skew** is counted per span, against its parent, when the parent runs in another
//!   process (another service): a child that starts more than `SKEW_TOLERANCE_NS` before its
//!   parent, or — for a synchronous call, a CLIENT parent and a SERVER child — ends more than the
//!   tolerance after its parent. Within one service the clock is shared, so differences there are
//!   real (fire-and-forget work), not skew. Asynchronous children (a consumer after a producer) may
//!   legitimately outlive their parent.
//!
//! Spans are kept in start order (ties by span id), so children lists come out sorted by start
//! with no further work, and everything is deterministic whatever order spans arrived in.

use crate::model::{Span, SpanId, SpanKind, TraceId};

/// How far apart two clocks may be before a parent/child pair counts as skewed. NTP keeps hosts
/// within a few milliseconds; less than this is noise, more than this misleads latency numbers.
pub const SKEW_TOLERANCE_NS: u64 = 1_000_000;

const NONE: u32 = u32::MAX;

const FLAG_ORPHAN: u8 = 1;
const FLAG_CYCLE_CUT: u8 = 2;

/// What was odd about one trace. Counts of spans, except `parent_cycles` (cycles).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeDiagnostics {
    /// Spans left out because another span of the trace had the same id.
    pub duplicate_span_ids: u64,
    /// Spans whose parent id names a span absent from the trace.
    pub orphans: u64,
    /// Parent cycles that had to be cut.
    pub parent_cycles: u64,
    /// Spans with no end time, or an end before their start.
    pub missing_end_times: u64,
    /// Spans whose times disagree with their parent's beyond `SKEW_TOLERANCE_NS`.
    pub clock_skew: u64,
}

impl TreeDiagnostics {
    pub fn add(&mut self, other: &TreeDiagnostics) {
        self.duplicate_span_ids += other.duplicate_span_ids;
        self.orphans += other.orphans;
        self.parent_cycles += other.parent_cycles;
        self.missing_end_times += other.missing_end_times;
        self.clock_skew += other.clock_skew;
    }
}

/// The spans of one trace, indexed. A span is addressed by its index in the tree (`usize`), which
/// is its position in start order.
#[derive(Debug)]
pub struct TraceTree<'a> {
    trace_id: TraceId,
    /// Kept spans in (start, span id) order.
    spans: Vec<&'a Span>,
    /// Parent index per span, `NONE` for roots. Indices are `u32` to halve the memory of a run's
    /// worth of trees.
    parent: Vec<u32>,
    /// Children of span `i` are `children[child_start[i]..child_start[i + 1]]` (compressed
    /// adjacency: one allocation per tree instead of one per span).
    child_start: Vec<u32>,
    children: Vec<u32>,
    roots: Vec<u32>,
    /// (span id, index), sorted by id, for lookups by id.
    by_id: Vec<(SpanId, u32)>,
    flags: Vec<u8>,
    diagnostics: TreeDiagnostics,
}

impl<'a> TraceTree<'a> {
    /// Builds the tree of one trace from its spans, in any order. Spans of other traces must not
    /// be passed (they would be treated as part of this one).
    pub fn build(trace_id: TraceId, input: Vec<&'a Span>) -> Self {
        let mut diagnostics = TreeDiagnostics::default();

        // Duplicates: sort by id, the preferred copy first, and keep one per id.
        let mut candidates: Vec<(usize, &'a Span)> = input.into_iter().enumerate().collect();
        candidates.sort_by_key(|&(pos, s)| (s.span_id, !has_end(s), pos));
        let before = candidates.len();
        candidates.dedup_by_key(|(_, s)| s.span_id);
        diagnostics.duplicate_span_ids = (before - candidates.len()) as u64;

        let mut spans: Vec<&'a Span> = candidates.into_iter().map(|(_, s)| s).collect();
        spans.sort_by_key(|s| (s.start_ns, s.span_id));
        let n = spans.len();

        let mut by_id: Vec<(SpanId, u32)> = spans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.span_id, i as u32))
            .collect();
        by_id.sort_unstable_by_key(|&(id, _)| id);

        let mut flags = vec![0u8; n];
        let mut parent = vec![NONE; n];
        for (i, s) in spans.iter().enumerate() {
            let Some(pid) = s.parent_span_id else {
                continue;
            };
            match by_id.binary_search_by_key(&pid, |&(id, _)| id) {
                Ok(pos) => parent[i] = by_id[pos].1,
                Err(_) => {
                    flags[i] |= FLAG_ORPHAN;
                    diagnostics.orphans += 1;
                }
            }
        }

        diagnostics.parent_cycles = cut_cycles(&spans, &mut parent, &mut flags);

        // Children in start order: spans are already in start order, so filling buckets in index
        // order sorts each bucket.
        let mut child_start = vec![0u32; n + 1];
        for &p in &parent {
            if p != NONE {
                child_start[p as usize + 1] += 1;
            }
        }
        for i in 0..n {
            child_start[i + 1] += child_start[i];
        }
        let mut fill = child_start.clone();
        let mut children = vec![0u32; child_start[n] as usize];
        let mut roots = Vec::new();
        for (i, &p) in parent.iter().enumerate() {
            if p == NONE {
                roots.push(i as u32);
            } else {
                let slot = &mut fill[p as usize];
                children[*slot as usize] = i as u32;
                *slot += 1;
            }
        }

        for (i, s) in spans.iter().enumerate() {
            if !has_end(s) {
                diagnostics.missing_end_times += 1;
            }
            if parent[i] != NONE && is_skewed(spans[parent[i] as usize], s) {
                diagnostics.clock_skew += 1;
            }
        }

        Self {
            trace_id,
            spans,
            parent,
            child_start,
            children,
            roots,
            by_id,
            flags,
            diagnostics,
        }
    }

    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// Number of spans in the tree (duplicates left out).
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn span(&self, ix: usize) -> &'a Span {
        self.spans[ix]
    }

    /// All spans with their indices, in start order.
    pub fn spans(&self) -> impl ExactSizeIterator<Item = (usize, &'a Span)> + '_ {
        self.spans.iter().copied().enumerate()
    }

    /// The index of the span with this id, if the trace holds it.
    pub fn find(&self, id: SpanId) -> Option<usize> {
        self.by_id
            .binary_search_by_key(&id, |&(sid, _)| sid)
            .ok()
            .map(|pos| self.by_id[pos].1 as usize)
    }

    /// The parent inside this tree; `None` for roots, orphans and spans whose cycle was cut here.
    pub fn parent(&self, ix: usize) -> Option<usize> {
        let p = self.parent[ix];
        (p != NONE).then_some(p as usize)
    }

    /// Children in start order.
    pub fn children(
        &self,
        ix: usize,
    ) -> impl DoubleEndedIterator<Item = usize> + ExactSizeIterator + '_ {
        let range = self.child_start[ix] as usize..self.child_start[ix + 1] as usize;
        self.children[range].iter().map(|&c| c as usize)
    }

    /// Spans with no parent in the tree (true roots, orphans, cut cycle members), in start order.
    pub fn roots(&self) -> impl ExactSizeIterator<Item = usize> + '_ {
        self.roots.iter().map(|&r| r as usize)
    }

    /// The span named a parent that the trace does not hold.
    pub fn is_orphan(&self, ix: usize) -> bool {
        self.flags[ix] & FLAG_ORPHAN != 0
    }

    /// The span's parent link was cut to break a cycle.
    pub fn is_cycle_cut(&self, ix: usize) -> bool {
        self.flags[ix] & FLAG_CYCLE_CUT != 0
    }

    /// Parent, grandparent, … up to the root (the span itself excluded).
    pub fn ancestors(&self, ix: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(self.parent(ix), move |&p| self.parent(p))
    }

    /// The span and everything below it, depth first, children in start order.
    pub fn subtree(&self, ix: usize) -> impl Iterator<Item = usize> + '_ {
        let mut stack = vec![ix];
        std::iter::from_fn(move || {
            let next = stack.pop()?;
            // Pushed in reverse so that the earliest child is visited first.
            stack.extend(self.children(next).rev());
            Some(next)
        })
    }

    /// Every span, parents before their children (roots in start order, each subtree depth
    /// first). Every span appears exactly once because cycles were cut.
    pub fn preorder(&self) -> impl Iterator<Item = usize> + '_ {
        self.roots().flat_map(move |r| self.subtree(r))
    }

    pub fn diagnostics(&self) -> &TreeDiagnostics {
        &self.diagnostics
    }
}

fn has_end(span: &Span) -> bool {
    span.end_ns != 0 && span.end_ns >= span.start_ns
}

/// Whether `child` disagrees with `parent` by more than clock noise; see the module docs.
fn is_skewed(parent: &Span, child: &Span) -> bool {
    if std::sync::Arc::ptr_eq(&parent.resource, &child.resource)
        || parent.service() == child.service()
    {
        return false;
    }
    if child.start_ns.saturating_add(SKEW_TOLERANCE_NS) < parent.start_ns {
        return true;
    }
    let sync = parent.kind == SpanKind::Client && child.kind == SpanKind::Server;
    sync && has_end(parent)
        && has_end(child)
        && child.end_ns > parent.end_ns.saturating_add(SKEW_TOLERANCE_NS)
}

/// Finds parent cycles and cuts each at the member that started first (lowest index, since spans
/// are in start order). Returns the number of cycles cut. Linear: each span is walked once.
fn cut_cycles(spans: &[&Span], parent: &mut [u32], flags: &mut [u8]) -> u64 {
    const UNSEEN: u8 = 0;
    const ON_PATH: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![UNSEEN; spans.len()];
    let mut path: Vec<u32> = Vec::new();
    let mut cycles = 0;
    for start in 0..spans.len() {
        if state[start] != UNSEEN {
            continue;
        }
        path.clear();
        let mut at = start as u32;
        loop {
            match state[at as usize] {
                DONE => break,
                ON_PATH => {
                    // `at` is on the current path: the cycle is the path from `at` onwards.
                    let from = path.iter().position(|&p| p == at).unwrap_or(0);
                    let cut = path[from..].iter().copied().min().unwrap_or(at);
                    parent[cut as usize] = NONE;
                    flags[cut as usize] |= FLAG_CYCLE_CUT;
                    cycles += 1;
                    break;
                }
                _ => {
                    state[at as usize] = ON_PATH;
                    path.push(at);
                    let p = parent[at as usize];
                    if p == NONE {
                        break;
                    }
                    at = p;
                }
            }
        }
        for &p in &path {
            state[p as usize] = DONE;
        }
    }
    cycles
}
