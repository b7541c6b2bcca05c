//! The origin walk of DESIGN's "Finding the origin": from a failing span down to the span where
//! the failure started, and the critical path of a timeout down to the span that held the time.
//! The walk follows the children in error (looking through the service's own layers that
//! recorded nothing, such as a web framework's middleware spans), and, where none is, steps
//! through calls into other services that recorded no outcome to a callee's span in error below them (DESIGN's "errors
//! the instrumentation did not record"); those calls are listed, never counted as errors.
//!
//! Reads the forest only; classification is `classify`'s.

use std::collections::HashSet;

use crate::graph::{Forest, SpanRef, semconv};
use crate::model::{Span, SpanKind};

use super::classify::is_cancellation;

/// How deep a walk goes before it takes where it is as the origin: real traces are far
/// shallower; the cap only bounds the recursion on absurd input.
const MAX_DEPTH: usize = 512;

/// Where the walk ended.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// The failing span, then each span followed, ending at the origin. Only the failing span
    /// when there is no origin (`silent`).
    pub path: Vec<SpanRef>,
    pub origin: Option<SpanRef>,
    /// Errors that are consequences: spans in error on the way down, later siblings in error
    /// and everything in error below them, and cancellations.
    pub collateral: Vec<SpanRef>,
    /// The calls that recorded no outcome the walk stepped through, in path order.
    pub no_error_recorded: Vec<SpanRef>,
    /// The walk stopped at `MAX_DEPTH` with spans in error still below: the origin may be
    /// deeper than the one named.
    pub cut_short: bool,
}

pub(crate) struct Walker<'f, 'a> {
    forest: &'f Forest<'a>,
    /// The test driver's service when the failure is a test's: its own spans are walked through
    /// but never taken as the origin, except its calls into the system.
    driver: Option<&'f str>,
    /// Whether a span is a calling span that makes a hop (the driver's calls into the system).
    makes_hop: &'f dyn Fn(SpanRef) -> bool,
    visited: HashSet<SpanRef>,
    cut_short: bool,
}

impl<'f, 'a> Walker<'f, 'a> {
    pub fn new(
        forest: &'f Forest<'a>,
        driver: Option<&'f str>,
        makes_hop: &'f dyn Fn(SpanRef) -> bool,
    ) -> Self {
        Self {
            forest,
            driver,
            makes_hop,
            visited: HashSet::new(),
            cut_short: false,
        }
    }

    pub fn walk(mut self, start: SpanRef) -> Walk {
        self.visited.insert(start);
        let mut collateral = Vec::new();
        let below = self.descend(start, 0, &mut collateral);
        let mut path = vec![start];
        let origin = match below {
            Some(rest) if !rest.is_empty() => {
                path.extend(&rest);
                rest.last().copied()
            }
            Some(_) => Some(start),
            None => None,
        };
        // The spans in error between the failing span and the origin are collateral too; the
        // others on the path are the calls that recorded no outcome, stepped through.
        let (between, no_error_recorded): (Vec<SpanRef>, Vec<SpanRef>) = path
            [1..path.len().saturating_sub(1).max(1)]
            .iter()
            .partition(|&&r| semconv::in_error(self.forest.span(r)));
        collateral.splice(0..0, between);
        let mut seen = HashSet::new();
        collateral.retain(|r| Some(*r) != origin && *r != start && seen.insert(*r));
        Walk {
            path,
            origin,
            collateral,
            no_error_recorded,
            cut_short: self.cut_short,
        }
    }

    /// Spans below `r` in the walk's sense: its children, and spans in any trace that link to
    /// it (an asynchronous consumer), earliest start first.
    fn below(&self, r: SpanRef) -> Vec<SpanRef> {
        let tree = self.forest.tree(r.tree);
        let mut out: Vec<SpanRef> = tree
            .children(r.span)
            .map(|c| SpanRef {
                tree: r.tree,
                span: c,
            })
            .chain(self.forest.linked_from(r))
            .collect();
        out.sort_by_key(|&c| {
            let s = self.forest.span(c);
            (s.start_ns, s.span_id)
        });
        out.dedup();
        out
    }

    /// The path below `r` down to the origin (`r` excluded; empty when `r` is the origin), or
    /// `None` when nothing at or below `r` may be the origin. The children in error come first;
    /// when none leads to an origin, the calls that recorded no outcome (`gaps`).
    fn descend(
        &mut self,
        r: SpanRef,
        depth: usize,
        collateral: &mut Vec<SpanRef>,
    ) -> Option<Vec<SpanRef>> {
        let mut errors = Vec::new();
        let service = self.forest.span(r).service();
        self.errors_below(r, service, 0, collateral, &mut errors);
        errors.sort_by_key(|&(_, c)| {
            let s = self.forest.span(c);
            (s.start_ns, s.span_id)
        });
        if let Some(path) = self.follow(errors, depth, collateral) {
            return Some(path);
        }
        let gaps = self.gaps(r);
        if let Some(path) = self.follow(gaps, depth, collateral) {
            return Some(path);
        }
        self.may_be_origin(r).then(Vec::new)
    }

    /// The spans in error below `r`, with `r`'s service's own layers looked through: a span of
    /// that service which is neither a call nor an answer and recorded no outcome (the
    /// `middleware` and `request handler` spans Express's instrumentation puts between a server
    /// span and the calls its handler makes) hides nothing, so the spans in error of the same
    /// service under it count as `r`'s own. Through a layer, only that service's spans are
    /// taken: a layer whose child is another service's span is an uninstrumented call, which
    /// DESIGN does not cross (`gaps` says which calls are crossed).
    fn errors_below(
        &mut self,
        r: SpanRef,
        service: &str,
        layers: usize,
        collateral: &mut Vec<SpanRef>,
        out: &mut Vec<(Vec<SpanRef>, SpanRef)>,
    ) {
        for c in self.below(r) {
            let s = self.forest.span(c);
            if layers > 0 && s.service() != service {
                continue;
            }
            if !self.visited.insert(c) {
                continue;
            }
            if semconv::in_error(s) {
                if is_cancellation(s) {
                    self.errors_in(c, collateral);
                } else {
                    out.push((Vec::new(), c));
                }
            } else if is_layer(s, service) {
                if layers >= MAX_DEPTH {
                    self.cut_short = true;
                } else {
                    self.errors_below(c, service, layers + 1, collateral, out);
                }
            }
        }
    }

    /// Follows the first of `steps` (spans in error, each with the calls stepped through to
    /// reach it) that leads to an origin, earliest first; the others are collateral.
    fn follow(
        &mut self,
        steps: Vec<(Vec<SpanRef>, SpanRef)>,
        depth: usize,
        collateral: &mut Vec<SpanRef>,
    ) -> Option<Vec<SpanRef>> {
        let mut chosen: Option<(usize, Vec<SpanRef>)> = None;
        if depth >= MAX_DEPTH && !steps.is_empty() {
            self.cut_short = true;
        }
        if depth < MAX_DEPTH {
            for (i, (through, c)) in steps.iter().enumerate() {
                let mut below = Vec::new();
                if let Some(rest) = self.descend(*c, depth + 1, &mut below) {
                    let mut path = through.clone();
                    path.push(*c);
                    path.extend(rest);
                    collateral.extend(below);
                    chosen = Some((i, path));
                    break;
                }
            }
        }
        for (i, (_, c)) in steps.iter().enumerate() {
            if chosen.as_ref().is_none_or(|(ci, _)| *ci != i) {
                self.errors_in(*c, collateral);
            }
        }
        chosen.map(|(_, path)| path)
    }

    /// DESIGN's walk across a gap: from `r`, through calls into other services that recorded no
    /// outcome, to the callee's spans in error below them (with the calls stepped through),
    /// earliest first. A call is a CLIENT or PRODUCER child, or a child in another service; the
    /// callee's span is the one that answers it (a SERVER or CONSUMER, or a span in another
    /// service). Several calls in a row may have recorded nothing (a request into a service whose
    /// server span recorded no outcome, then its producer's message). Internal and database spans
    /// are not gaps, and any recorded outcome (a 2xx, gRPC OK, status OK) closes the way.
    fn gaps(&mut self, r: SpanRef) -> Vec<(Vec<SpanRef>, SpanRef)> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        self.cross(r, &mut Vec::new(), &mut seen, &mut out);
        out
    }

    fn cross(
        &mut self,
        r: SpanRef,
        through: &mut Vec<SpanRef>,
        seen: &mut HashSet<SpanRef>,
        out: &mut Vec<(Vec<SpanRef>, SpanRef)>,
    ) {
        if through.len() >= MAX_DEPTH {
            self.cut_short = true;
            return;
        }
        let from = self.forest.span(r);
        for c in self.below(r) {
            let call = self.forest.span(c);
            if !is_gap(from, call) || !seen.insert(c) {
                continue;
            }
            through.push(c);
            for d in self.below(c) {
                let s = self.forest.span(d);
                let answers = matches!(s.kind, SpanKind::Server | SpanKind::Consumer)
                    || s.service() != call.service();
                if answers && semconv::in_error(s) && !is_cancellation(s) && self.visited.insert(d)
                {
                    out.push((through.clone(), d));
                }
            }
            self.cross(c, through, seen, out);
            through.pop();
        }
    }

    /// Never inside the test driver's own spans (an assertion is not a cause), except the
    /// driver's calls into the system.
    fn may_be_origin(&self, r: SpanRef) -> bool {
        let span = self.forest.span(r);
        match self.driver {
            Some(driver) if span.service() == driver => {
                matches!(span.kind, SpanKind::Client | SpanKind::Producer) && (self.makes_hop)(r)
            }
            _ => true,
        }
    }

    /// `r` and every span in error in its subtree.
    fn errors_in(&self, r: SpanRef, out: &mut Vec<SpanRef>) {
        let tree = self.forest.tree(r.tree);
        out.extend(
            tree.subtree(r.span)
                .filter(|&d| semconv::in_error(tree.span(d)))
                .map(|d| SpanRef {
                    tree: r.tree,
                    span: d,
                }),
        );
    }
}

/// Whether `call`, below `from`, is a call into another service that recorded no outcome: a
/// CLIENT or PRODUCER span, or a span in another service, with status unset and no status code,
/// neither internal nor a database call.
fn is_gap(from: &Span, call: &Span) -> bool {
    let calls_out = matches!(call.kind, SpanKind::Client | SpanKind::Producer)
        || call.service() != from.service();
    calls_out
        && call.kind != SpanKind::Internal
        && call.attributes.first_str(semconv::DB_SYSTEM).is_none()
        && !semconv::recorded_outcome(call)
        && !semconv::in_error(call)
}

/// Whether `span` is a layer of `service`: its own span that neither calls nor answers
/// (internal or of no kind) and recorded no outcome.
fn is_layer(span: &Span, service: &str) -> bool {
    matches!(span.kind, SpanKind::Internal | SpanKind::Unspecified)
        && span.service() == service
        && span.attributes.first_str(semconv::DB_SYSTEM).is_none()
        && !semconv::recorded_outcome(span)
}

/// A timeout's critical path: from `from` down through the child that used up its parent's
/// time (at least three quarters of it), whatever that child's status, to the deepest span that
/// held the time. Returns the spans below `from` on that path, and whether it stopped at
/// `MAX_DEPTH` with a deeper span still holding the time.
pub(crate) fn held_time(forest: &Forest<'_>, from: SpanRef) -> (Vec<SpanRef>, bool) {
    let mut path = Vec::new();
    let mut at = from;
    loop {
        let tree = forest.tree(at.tree);
        let held = tree.span(at.span).duration_ns();
        if held == 0 {
            break;
        }
        let Some(longest) = tree
            .children(at.span)
            .max_by_key(|&c| (tree.span(c).duration_ns(), std::cmp::Reverse(c)))
        else {
            break;
        };
        if (tree.span(longest).duration_ns() as u128) * 4 < (held as u128) * 3 {
            break;
        }
        if path.len() >= MAX_DEPTH {
            return (path, true);
        }
        at = SpanRef {
            tree: at.tree,
            span: longest,
        };
        path.push(at);
    }
    (path, false)
}
