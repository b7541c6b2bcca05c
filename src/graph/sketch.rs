//! Latency samples that merge and un-merge: what an interface's latency percentiles come from,
//! whether the interface was analysed from spans or rolled up from stored per-trace results.
//!
//! Owns `Sketch`. A key design decision: a sketch keeps its samples exactly while it holds at
//! most `EXACT_SAMPLES` of them (a test run's interfaces mostly carry a handful of calls, and
//! their percentiles stay the exact nearest-rank values), and past that counts them in the
//! buckets of an HDR histogram with `SIGNIFICANT_DIGITS` significant digits (the `hdrhistogram`
//! crate decides the buckets). Only the buckets that hold samples are kept, sorted, so a
//! sketch costs what it holds and merging two is a merge of sorted lists. A percentile read from
//! the buckets is the highest value of the bucket holding the exact nearest-rank sample (what
//! `Histogram::value_at_quantile` answers), so it is at most `RELATIVE_ERROR` above the exact
//! value and never below it. Adding and subtracting are exact on the counts, so a run's rollup
//! can take a re-opened trace's contribution away; the count and the sum are exact always.
//!
//! Values are nanoseconds. This module does no I/O; its stored form is `SketchRecord`.

use std::sync::OnceLock;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::Latency;

/// Samples kept exactly before a sketch counts them in buckets.
pub const EXACT_SAMPLES: usize = 64;

/// Significant decimal digits the buckets keep: a bucket is at most 1/128 of its value wide.
const SIGNIFICANT_DIGITS: u8 = 2;

/// How far above the exact nearest-rank value a percentile from the buckets can be (0.78 %,
/// said as 1 % in the README and the report schema).
pub const RELATIVE_ERROR: f64 = 1.0 / 128.0;

/// Samples beyond this (about 53 days in nanoseconds) count as this: bucket arithmetic stays far
/// from overflow.
const MAX_VALUE: u64 = 1 << 62;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "SketchRecord", into = "SketchRecord")]
pub struct Sketch {
    count: u64,
    sum: u64,
    repr: Repr,
}

#[derive(Debug, Clone)]
enum Repr {
    Exact(Vec<u64>),
    /// (highest value of the bucket, samples in it), ascending, no empty bucket.
    Buckets(Vec<(u64, u64)>),
}

impl Default for Repr {
    fn default() -> Self {
        Repr::Exact(Vec::new())
    }
}

impl PartialEq for Sketch {
    /// Equal when they hold the same samples as far as each can tell: the same exact samples, or
    /// the same bucket counts.
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.sum == other.sum && self.buckets() == other.buckets()
    }
}

/// The bucket of a value: the highest value equivalent to it in an HDR histogram of
/// `SIGNIFICANT_DIGITS` digits (which depends on the precision only, not on what it holds).
fn bucket(ns: u64) -> u64 {
    static TEMPLATE: OnceLock<Histogram<u64>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            Histogram::new(SIGNIFICANT_DIGITS).expect("2 significant digits is a valid histogram")
        })
        .highest_equivalent(ns.min(MAX_VALUE))
}

/// Adds (or takes away) `n` samples of bucket `b` in a sorted bucket list.
fn put(buckets: &mut Vec<(u64, u64)>, b: u64, n: u64, add: bool) {
    match buckets.binary_search_by_key(&b, |&(k, _)| k) {
        Ok(i) if add => buckets[i].1 += n,
        Ok(i) => {
            buckets[i].1 = buckets[i].1.saturating_sub(n);
            if buckets[i].1 == 0 {
                buckets.remove(i);
            }
        }
        Err(i) if add => buckets.insert(i, (b, n)),
        Err(_) => {}
    }
}

/// Two sorted bucket lists as one.
fn merged(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push((a[i].0, a[i].1 + b[j].1));
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// Exact samples as (value, count), ascending.
fn counted(values: &[u64]) -> Vec<(u64, u64)> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for ns in sorted {
        match out.last_mut() {
            Some((last, n)) if *last == ns => *n += 1,
            _ => out.push((ns, 1)),
        }
    }
    out
}

/// Exact samples counted into buckets.
fn bucketed(values: &[u64]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &ns in values {
        put(&mut out, bucket(ns), 1, true);
    }
    out
}

impl Sketch {
    pub fn record(&mut self, ns: u64) {
        self.count += 1;
        self.sum = self.sum.saturating_add(ns);
        match &mut self.repr {
            Repr::Exact(v) => {
                v.push(ns);
                if v.len() > EXACT_SAMPLES {
                    self.repr = Repr::Buckets(bucketed(v));
                }
            }
            Repr::Buckets(b) => put(b, bucket(ns), 1, true),
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sum of the samples in nanoseconds (exact).
    pub fn sum(&self) -> u64 {
        self.sum
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds `other`'s samples.
    pub fn add(&mut self, other: &Sketch) {
        if other.count == 0 {
            return;
        }
        if let (Repr::Exact(mine), Repr::Exact(theirs)) = (&mut self.repr, &other.repr)
            && mine.len() + theirs.len() <= EXACT_SAMPLES
        {
            mine.extend_from_slice(theirs);
            self.count += other.count;
            self.sum = self.sum.saturating_add(other.sum);
            return;
        }
        if let Repr::Exact(v) = &self.repr {
            self.repr = Repr::Buckets(bucketed(v));
        }
        if let Repr::Buckets(mine) = &mut self.repr {
            match &other.repr {
                // A trace's few samples into a run's buckets, the common case: in place.
                Repr::Exact(theirs) => {
                    for &ns in theirs {
                        put(mine, bucket(ns), 1, true);
                    }
                }
                Repr::Buckets(theirs) => *mine = merged(mine, theirs),
            }
        }
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
    }

    /// Takes away samples that an earlier `add` or `record` put in (a trace's contribution to a
    /// rollup). Samples it does not hold are ignored.
    pub fn subtract(&mut self, other: &Sketch) {
        if other.count == 0 {
            return;
        }
        self.count = self.count.saturating_sub(other.count);
        self.sum = self.sum.saturating_sub(other.sum);
        match (&mut self.repr, &other.repr) {
            (Repr::Exact(mine), Repr::Exact(theirs)) => {
                for ns in theirs {
                    if let Some(at) = mine.iter().position(|m| m == ns) {
                        mine.swap_remove(at);
                    }
                }
            }
            (Repr::Buckets(mine), Repr::Exact(theirs)) => {
                for &ns in theirs {
                    put(mine, bucket(ns), 1, false);
                }
            }
            (Repr::Buckets(mine), Repr::Buckets(theirs)) => {
                for &(b, n) in theirs {
                    put(mine, b, n, false);
                }
            }
            // An exact sketch never held a bucketed sketch's worth of samples: nothing of
            // `other` can be in it beyond what the counts say.
            (Repr::Exact(mine), Repr::Buckets(_)) => mine.clear(),
        }
        if self.count == 0 {
            self.repr = Repr::default();
        }
    }

    /// Nearest-rank p50, p95 and p99: exact while the samples are kept exactly, else within
    /// `RELATIVE_ERROR` above.
    pub fn latency(&self) -> Latency {
        match &self.repr {
            Repr::Exact(v) => Latency::from_samples(&mut v.clone()),
            Repr::Buckets(b) => {
                let total: u64 = b.iter().map(|(_, n)| n).sum();
                let at = |pct: u64| -> Option<u64> {
                    // The smallest bucket with at least pct% of the samples at or below it.
                    let rank = (pct * total).div_ceil(100).max(1);
                    let mut seen = 0;
                    b.iter().find_map(|&(v, n)| {
                        seen += n;
                        (seen >= rank).then_some(v)
                    })
                };
                Latency {
                    p50: at(50),
                    p95: at(95),
                    p99: at(99),
                }
            }
        }
    }

    /// (value, count) pairs in ascending value: the exact samples, or each non-empty bucket by its
    /// highest value.
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        match &self.repr {
            Repr::Exact(v) => counted(v),
            Repr::Buckets(b) => b.clone(),
        }
    }

    /// The stored form.
    pub fn record_form(&self) -> SketchRecord {
        SketchRecord {
            count: self.count,
            sum: self.sum,
            exact: matches!(self.repr, Repr::Exact(_)),
            values: self.buckets(),
        }
    }

    pub fn from_record(r: &SketchRecord) -> Self {
        let repr = if r.exact {
            let mut v = Vec::with_capacity(r.values.len());
            for &(ns, n) in &r.values {
                v.extend(std::iter::repeat_n(ns, n as usize));
            }
            Repr::Exact(v)
        } else {
            let mut b = r.values.clone();
            b.sort_unstable();
            b.dedup_by(|next, kept| {
                let same = next.0 == kept.0;
                if same {
                    kept.1 += next.1;
                }
                same
            });
            b.retain(|&(_, n)| n > 0);
            Repr::Buckets(b)
        };
        Sketch {
            count: r.count,
            sum: r.sum,
            repr,
        }
    }
}

impl From<SketchRecord> for Sketch {
    fn from(r: SketchRecord) -> Self {
        Sketch::from_record(&r)
    }
}

impl From<Sketch> for SketchRecord {
    fn from(s: Sketch) -> Self {
        s.record_form()
    }
}

/// A sketch as stored (in a run's rollup).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SketchRecord {
    pub count: u64,
    pub sum: u64,
    pub exact: bool,
    pub values: Vec<(u64, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(values: impl IntoIterator<Item = u64>) -> Sketch {
        let mut s = Sketch::default();
        for v in values {
            s.record(v);
        }
        s
    }

    #[test]
    fn few_samples_give_the_exact_nearest_rank() {
        let mut samples: Vec<u64> = (1..=50).map(|i| i * 1_000_003).collect();
        let s = of(samples.iter().copied());
        assert_eq!(s.latency(), Latency::from_samples(&mut samples));
        assert_eq!(s.count(), 50);
        assert_eq!(s.sum(), samples.iter().sum::<u64>());
    }

    #[test]
    fn many_samples_stay_within_the_stated_error_above_the_exact_value() {
        // Spread over six decades, as a run's calls are.
        let mut samples: Vec<u64> = (0..20_000u64)
            .map(|i| 1_000 + (i * i * 7_919) % 5_000_000_000)
            .collect();
        let s = of(samples.iter().copied());
        let exact = Latency::from_samples(&mut samples);
        let approx = s.latency();
        for (e, a) in [
            (exact.p50, approx.p50),
            (exact.p95, approx.p95),
            (exact.p99, approx.p99),
        ] {
            let (e, a) = (e.unwrap() as f64, a.unwrap() as f64);
            assert!(
                a >= e && a <= e * (1.0 + RELATIVE_ERROR),
                "{a} vs exact {e}"
            );
        }
    }

    /// The buckets answer what an HDR histogram of the same precision answers.
    #[test]
    fn percentiles_are_what_the_hdr_histogram_answers() {
        let samples: Vec<u64> = (0..5_000u64)
            .map(|i| 700 + (i * 104_729) % 90_000_000)
            .collect();
        let s = of(samples.iter().copied());
        let mut h = Histogram::<u64>::new(SIGNIFICANT_DIGITS).unwrap();
        for &v in &samples {
            h.record(v).unwrap();
        }
        let l = s.latency();
        assert_eq!(l.p50, Some(h.value_at_quantile(0.50)));
        assert_eq!(l.p95, Some(h.value_at_quantile(0.95)));
        assert_eq!(l.p99, Some(h.value_at_quantile(0.99)));
    }

    #[test]
    fn merged_halves_equal_the_whole_and_subtracting_one_leaves_the_other() {
        let a: Vec<u64> = (0..500).map(|i| 10_000 + i * 37_123).collect();
        let b: Vec<u64> = (0..40).map(|i| 3_000_000 + i * 11).collect();
        let whole = of(a.iter().chain(&b).copied());
        let mut merged = of(a.iter().copied());
        merged.add(&of(b.iter().copied()));
        assert_eq!(merged, whole);
        assert_eq!(merged.latency(), whole.latency());

        merged.subtract(&of(b.iter().copied()));
        let only_a = of(a.iter().copied());
        assert_eq!(merged.count(), only_a.count());
        assert_eq!(merged.latency(), only_a.latency());

        // Exact sketches subtract exactly.
        let mut small = of([5, 7, 7, 9]);
        small.subtract(&of([7, 9]));
        assert_eq!(small, of([5, 7]));
        small.subtract(&of([5, 7]));
        assert!(small.is_empty());
        assert_eq!(small.latency(), Latency::default());
    }

    #[test]
    fn the_stored_form_reads_back_the_same() {
        for s in [of([]), of([3, 1, 2]), of((0..1_000).map(|i| i * 999_983))] {
            let back = Sketch::from_record(&s.record_form());
            assert_eq!(back, s);
            assert_eq!(back.latency(), s.latency());
        }
    }
}
