//! The critical path below a call, and the own time of each node along it: what a latency
//! regression is blamed by (DESIGN, "History across runs": the node whose own time grew most
//! along the slow calls' critical path — the callee that is slow, not the caller that waited).
//!
//! Owns `own_times` (one call), `band` (the latency band a call is filed under) and `PathTimes`
//! (an interface's calls summed, by band). Pure: no I/O, and it never fails on messy trees.
//!
//! The walk is the standard backwards one: from a span's end, the child that ended last at or
//! before the current point is on the path; the walk goes on below that child, and on the parent
//! from the child's start. Time of a span that no child on its path covers is its *own time*.
//! Children are clipped to the part of their parent's window they fall in (a child that outlives
//! its parent — asynchronous work, clock skew — counts only while the parent waited), children
//! without an end time are never on the path, and empty ones are skipped. Parallel children
//! that ended before the one on the path but after its start are off the path: the parent was
//! not waiting for them.
//!
//! Whose own time it is is the caller's decision (`node_of`): `hops` gives a span's time to its
//! service, except a calling span that no span answered (a database call, a publish to a queue,
//! a call to an external host or to a service that did not answer), whose time is the callee's:
//! it is what the caller was waiting for.
//!
//! Key design decision: own time is kept per latency band (`band`: half-octaves of the call's
//! duration), so that a question about "the slow calls" — those above the baseline's p95 —
//! can sum only the bands above it. It costs a few bands per node per interface, and every sum
//! adds and subtracts exactly, as a run's rollup needs.

use std::collections::BTreeMap;

use super::tree::TraceTree;

/// The own time of each node on the critical path below `root` (each node once, in the order
/// first met), by `node_of(span index)`. Empty when `root` has no end time. Visits each span of
/// the subtree at most once; no recursion, so a deep tree cannot overflow the stack.
pub fn own_times<K: PartialEq>(
    tree: &TraceTree<'_>,
    root: usize,
    node_of: impl FnMut(usize) -> K,
) -> Vec<(K, u64)> {
    Walker::default().own_times(tree, root, node_of)
}

/// `own_times` with its working memory kept between calls: hop extraction walks below every
/// hop of every trace, and would otherwise allocate twice per hop.
#[derive(Debug, Default)]
pub struct Walker {
    /// (span, window start, window end): the part of the span its parent waited for.
    stack: Vec<(usize, u64, u64)>,
    /// (clipped end, clipped start, index) of the children of the span being walked.
    kids: Vec<(u64, u64, usize)>,
}

impl Walker {
    /// See `own_times`.
    pub fn own_times<K: PartialEq>(
        &mut self,
        tree: &TraceTree<'_>,
        root: usize,
        mut node_of: impl FnMut(usize) -> K,
    ) -> Vec<(K, u64)> {
        let mut out: Vec<(K, u64)> = Vec::new();
        let span = tree.span(root);
        let Some(end) = end_of(span.start_ns, span.end_ns) else {
            return out;
        };
        let Self { stack, kids } = self;
        stack.clear();
        stack.push((root, span.start_ns, end));
        while let Some((ix, lo, hi)) = stack.pop() {
            kids.clear();
            for c in tree.children(ix) {
                let child = tree.span(c);
                let Some(child_end) = end_of(child.start_ns, child.end_ns) else {
                    continue;
                };
                let (a, b) = (child.start_ns.max(lo), child_end.min(hi));
                if a < b {
                    kids.push((b, a, c));
                }
            }
            // Latest end first; of two ending together, the longer (it covers more of the wait).
            kids.sort_unstable_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
            let mut cur = hi;
            let mut own = 0u64;
            for &(b, a, c) in kids.iter() {
                if b > cur {
                    // Ended after the point the walk reached: it ran beside the path child.
                    continue;
                }
                own += cur - b;
                stack.push((c, a, b));
                cur = a;
            }
            own += cur - lo;
            if own > 0 {
                let node = node_of(ix);
                match out.iter_mut().find(|(k, _)| *k == node) {
                    Some((_, t)) => *t += own,
                    None => out.push((node, own)),
                }
            }
        }
        out
    }
}

/// A span's end, when it has one (an end before the start is none).
fn end_of(start: u64, end: u64) -> Option<u64> {
    (end != 0 && end >= start).then_some(end)
}

/// The latency band of a call of `ns` nanoseconds: half-octaves, so band `b` holds the
/// durations from `band_floor(b)` up to the next band's floor (each about 1.41 times the last).
/// 0 for 0 and 1 ns; at most 127.
pub fn band(ns: u64) -> u8 {
    if ns < 2 {
        return 0;
    }
    let octave = 63 - ns.leading_zeros();
    // The upper half of the octave starts at 2^octave · √2, i.e. where ns² ≥ 2^(2·octave+1).
    let upper = u128::from(ns) * u128::from(ns) >= 1u128 << (2 * octave + 1);
    (2 * octave + u32::from(upper)) as u8
}

/// The shortest duration in band `b`.
pub fn band_floor(b: u8) -> u64 {
    let octave = u32::from(b / 2);
    let low = 1u64 << octave;
    if b.is_multiple_of(2) {
        return low;
    }
    // ⌈2^octave · √2⌉: the smallest ns with ns² ≥ 2^(2·octave+1).
    let target = 1u128 << (2 * octave + 1);
    let mut x = (low as f64 * std::f64::consts::SQRT_2) as u64;
    while u128::from(x) * u128::from(x) < target {
        x += 1;
    }
    while x > low && u128::from(x - 1) * u128::from(x - 1) >= target {
        x -= 1;
    }
    x
}

/// The critical paths of an interface's calls, summed: the calls by latency band, and each
/// node's own time on their paths by band. Calls without a duration are not counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathTimes {
    /// Calls by band.
    pub calls: BTreeMap<u8, u64>,
    /// Own time in nanoseconds by node id, then by band of the call it was part of.
    pub own: BTreeMap<String, BTreeMap<u8, u64>>,
}

/// Calls and each node's own time over some bands of a `PathTimes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathSum {
    pub calls: u64,
    /// Own time in nanoseconds by node id.
    pub own: BTreeMap<String, u64>,
}

impl PathSum {
    /// Mean own time per call of each node, in nanoseconds.
    pub fn mean(&self, node: &str) -> f64 {
        if self.calls == 0 {
            return 0.0;
        }
        self.own.get(node).copied().unwrap_or(0) as f64 / self.calls as f64
    }
}

impl PathTimes {
    /// One call of band `band` and the own times along its path.
    pub fn record<'a>(&mut self, band: u8, steps: impl IntoIterator<Item = (&'a str, u64)>) {
        *self.calls.entry(band).or_insert(0) += 1;
        for (node, ns) in steps {
            if ns == 0 {
                continue;
            }
            match self.own.get_mut(node) {
                Some(bands) => *bands.entry(band).or_insert(0) += ns,
                None => {
                    self.own
                        .insert(node.to_owned(), BTreeMap::from([(band, ns)]));
                }
            }
        }
    }

    pub fn add(&mut self, other: &PathTimes) {
        for (&b, &n) in &other.calls {
            *self.calls.entry(b).or_insert(0) += n;
        }
        for (node, bands) in &other.own {
            let mine = self.own.entry(node.clone()).or_default();
            for (&b, &ns) in bands {
                *mine.entry(b).or_insert(0) += ns;
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The calls of the bands `keep` selects, with their nodes' own time.
    pub fn sum(&self, keep: impl Fn(u8) -> bool) -> PathSum {
        let calls = self
            .calls
            .iter()
            .filter(|(b, _)| keep(**b))
            .map(|(_, n)| n)
            .sum();
        let own = self
            .own
            .iter()
            .map(|(node, bands)| {
                let ns = bands
                    .iter()
                    .filter(|(b, _)| keep(**b))
                    .map(|(_, ns)| ns)
                    .sum();
                (node.clone(), ns)
            })
            .filter(|(_, ns)| *ns > 0)
            .collect();
        PathSum { calls, own }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::fixture;
    use crate::graph::forest::Forest;

    /// Own times below the span named `root` of a fixture, by service, sorted.
    fn own(text: &str, root: &str) -> Vec<(String, u64)> {
        let (spans, _) = fixture::parse(text);
        let forest = Forest::build(&spans);
        let tree = forest.tree(0);
        let ix = tree
            .spans()
            .find(|(_, s)| s.name == root)
            .map(|(i, _)| i)
            .expect("root span");
        let mut out: Vec<(String, u64)> =
            own_times(tree, ix, |i| tree.span(i).service().to_owned());
        out.sort();
        out
    }

    /// Expected own times, in the fixtures' milliseconds.
    fn pairs(v: &[(&str, u64)]) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = v
            .iter()
            .map(|(s, ms)| ((*s).to_owned(), ms * 1_000_000))
            .collect();
        out.sort();
        out
    }

    /// Sequential children are all on the path; the parent owns the gaps between them.
    #[test]
    fn sequential_children_are_each_on_the_path() {
        let got = own(
            "t1:a - web server \"GET /\" 0..100
             t1:b a web client call-users 10..40
             t1:c b users server \"GET /u\" 12..38
             t1:d a web client call-cart 50..90
             t1:e d cart server \"GET /c\" 55..85",
            "GET /",
        );
        // web: 0..10 + 40..50 + 90..100 (its server span) + 10..12, 38..40, 50..55, 85..90
        // (its client spans' own time around the answers).
        assert_eq!(
            got,
            pairs(&[("web", 30 + 4 + 10), ("users", 26), ("cart", 30)])
        );
    }

    /// Of two calls in parallel, the one that ended last is on the path; the other, which ended
    /// while it was still running, is not.
    #[test]
    fn of_parallel_children_only_the_last_to_end_is_on_the_path() {
        let got = own(
            "t1:a - web server \"GET /\" 0..100
             t1:b a web client call-fast 10..50
             t1:c b fast server \"GET /f\" 10..50
             t1:d a web client call-slow 10..90
             t1:e d slow server \"GET /s\" 10..90",
            "GET /",
        );
        assert_eq!(got, pairs(&[("web", 20), ("slow", 80)]));
    }

    /// A call that no span answered (a database): the walk ends at the client span, whose own
    /// time the caller gives to the callee. Here by the span's name, as `hops` does by its
    /// callee.
    #[test]
    fn a_client_span_with_no_server_span_owns_its_whole_time() {
        let (spans, _) = fixture::parse(
            "t1:a - users server \"GET /u\" 0..50
             t1:b a users client SELECT 5..45 db.system.name=postgresql db.namespace=users",
        );
        let forest = Forest::build(&spans);
        let tree = forest.tree(0);
        let mut got = own_times(tree, 0, |i| {
            let s = tree.span(i);
            if s.kind == crate::model::SpanKind::Client {
                "db:postgresql/users".to_owned()
            } else {
                s.service().to_owned()
            }
        });
        got.sort();
        assert_eq!(
            got,
            pairs(&[("db:postgresql/users", 40), ("users", 10)]),
            "the database holds the time inside the call"
        );
    }

    /// A child that outlives its parent (fire-and-forget work) counts only while the parent
    /// waited; one with no end time is never on the path.
    #[test]
    fn children_are_clipped_to_their_parent() {
        let got = own(
            "t1:a - web server \"GET /\" 0..100
             t1:b a web client call-async 60..400
             t1:c b worker server \"POST /w\" 61..399
             t1:d a web internal unfinished 10..",
            "GET /",
        );
        assert_eq!(got, pairs(&[("web", 61), ("worker", 39)]));
    }

    #[test]
    fn bands_are_half_octaves() {
        assert_eq!(band(0), 0);
        assert_eq!(band(1), 0);
        assert_eq!(band(2), 2);
        assert_eq!(band(3), 3);
        assert_eq!(band(4), 4);
        assert_eq!(band(5), 4);
        assert_eq!(band(6), 5);
        assert_eq!(band(u64::MAX), 127);
        // 0 and 1 ns share band 0; from 2 ns on, every band exists.
        assert_eq!(band_floor(2), 2);
        for b in 3..=127u8 {
            let floor = band_floor(b);
            assert_eq!(band(floor), b, "band {b} floor {floor}");
            assert_eq!(band(floor - 1), b - 1, "below band {b}'s floor");
        }
        // 5 ms and 7.5 ms are a band apart, 5 ms and 10 ms two.
        assert_eq!(band(10_000_000) - band(5_000_000), 2);
    }
}
