//! Latency samples that merge and un-merge: what an interface's latency percentiles come from,
//! whether the interface was analysed from spans or rolled up from stored per-trace results.
//!
//! Owns `Sketch`. A key design decision: a sketch keeps its samples exactly while it holds at
//! most `EXACT_SAMPLES` of them (a test run's interfaces mostly carry a handful of calls, and
//! their percentiles stay the exact nearest-rank values), and past that moves them into an HDR
//! histogram (the `hdrhistogram` crate) with `SIGNIFICANT_DIGITS` significant digits. A
//! percentile read from the histogram is the highest value of the bucket holding the exact
//! nearest-rank sample, so it is at most `RELATIVE_ERROR` above the exact value and never below
//! it. Adding and subtracting are exact on the counts, so a run's rollup can take a re-opened
//! trace's contribution away; the count and the sum are exact always.
//!
//! Values are nanoseconds. This module does no I/O; its stored form is `SketchRecord`.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::Latency;

/// Samples kept exactly before a sketch becomes a histogram.
pub const EXACT_SAMPLES: usize = 64;

/// Significant decimal digits the histogram keeps: buckets are at most 1/128 of their value
/// wide.
const SIGNIFICANT_DIGITS: u8 = 2;

/// How far above the exact nearest-rank value a percentile from the histogram can be (0.78 %,
/// said as 1 % in the README and the report schema).
pub const RELATIVE_ERROR: f64 = 1.0 / 128.0;

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
    Histogram(Box<Histogram<u64>>),
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

/// Records `n` samples of `ns`, growing the histogram to hold it (`saturating_record` would
/// clamp to the histogram's current top instead).
fn put(h: &mut Histogram<u64>, ns: u64, n: u64) {
    if h.record_n(ns, n).is_err() {
        h.saturating_record_n(ns, n);
    }
}

fn histogram() -> Histogram<u64> {
    // Only fails for more than 5 significant digits.
    Histogram::new(SIGNIFICANT_DIGITS).expect("2 significant digits is a valid histogram")
}

impl Sketch {
    pub fn record(&mut self, ns: u64) {
        self.count += 1;
        self.sum = self.sum.saturating_add(ns);
        match &mut self.repr {
            Repr::Exact(v) => {
                v.push(ns);
                if v.len() > EXACT_SAMPLES {
                    self.promote();
                }
            }
            Repr::Histogram(h) => put(h, ns, 1),
        }
    }

    fn promote(&mut self) {
        if let Repr::Exact(v) = &self.repr {
            let mut h = histogram();
            for &ns in v {
                put(&mut h, ns, 1);
            }
            self.repr = Repr::Histogram(Box::new(h));
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
        match &other.repr {
            Repr::Exact(v) => {
                for &ns in v {
                    self.record(ns);
                }
            }
            Repr::Histogram(o) => {
                self.count += other.count;
                self.sum = self.sum.saturating_add(other.sum);
                self.promote();
                if let Repr::Histogram(h) = &mut self.repr {
                    // Auto-resizing histograms of one precision always add.
                    let _ = h.add(o.as_ref());
                }
            }
        }
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
            (Repr::Histogram(h), theirs) => {
                for (ns, n) in other_buckets(theirs) {
                    // The bucket of `ns`, never below zero.
                    let held = h.count_at(ns);
                    let take = held.min(n);
                    if take > 0 {
                        let mut one = histogram();
                        put(&mut one, ns, take);
                        let _ = h.subtract(&one);
                    }
                }
            }
            // An exact sketch never held a histogram's worth of samples: nothing of `other` can
            // be in it beyond what the counts say.
            (Repr::Exact(mine), Repr::Histogram(_)) => mine.clear(),
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
            Repr::Histogram(h) if h.is_empty() => Latency::default(),
            Repr::Histogram(h) => Latency {
                p50: Some(h.value_at_quantile(0.50)),
                p95: Some(h.value_at_quantile(0.95)),
                p99: Some(h.value_at_quantile(0.99)),
            },
        }
    }

    /// (value, count) pairs in ascending value: the exact samples, or each non-empty bucket by its
    /// highest value.
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        other_buckets(&self.repr)
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
        let mut s = Sketch::default();
        if r.exact {
            let mut v = Vec::with_capacity(r.values.len());
            for &(ns, n) in &r.values {
                v.extend(std::iter::repeat_n(ns, n as usize));
            }
            s.repr = Repr::Exact(v);
        } else {
            let mut h = histogram();
            for &(ns, n) in &r.values {
                put(&mut h, ns, n);
            }
            s.repr = Repr::Histogram(Box::new(h));
        }
        s.count = r.count;
        s.sum = r.sum;
        s
    }
}

fn other_buckets(repr: &Repr) -> Vec<(u64, u64)> {
    match repr {
        Repr::Exact(v) => {
            let mut sorted = v.clone();
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
        Repr::Histogram(h) => h
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect(),
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
