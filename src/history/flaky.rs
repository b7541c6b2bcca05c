//! Flaky hops (DESIGN, "History across runs"): over a suite's last runs, the hops on which a
//! failure was placed in some runs while the same tests passed through them in others.
//!
//! The definitions DESIGN leaves open, decided here (and in `tracecov flaky --help`, README):
//! - a hop is an interface, (caller, callee, operation), named as the runs' reports name it;
//! - `runs`: the window's runs that crossed the hop or had a failure placed on it;
//! - `failed_runs`: those with at least one failure placed on it;
//! - a test *passed through* the hop in a run when it crossed the hop there and none of its
//!   failures in that run was placed on it (it may have failed elsewhere: this hop held);
//! - flaky: some test whose failure was placed on the hop in one run passed through it in
//!   another. A hop failing in every run that crossed it is steady, not flaky; so is a hop where
//!   one test always fails and another always passes. Failures outside any test (a failing
//!   request in a trace with no test case) count in `failed_runs` and `classes` but name no test
//!   to compare, so they alone never make a hop flaky;
//! - `classes`: per error class, the failed runs with a failure of that class on the hop;
//! - `tests`: the tests whose failures were placed on it, sorted;
//! - `flips`: how often the hop's outcome (a failure placed on it or not) changed from one run
//!   that crossed it to the next, oldest to newest;
//! - order, most unstable first: by `flips`, then by how evenly the runs split (the smaller of
//!   failed and passed runs), then by `failed_runs`, then by name.
//!
//! Pure: digests in, hops out.

use std::collections::{BTreeMap, BTreeSet};

use super::digest::RunDigest;

/// One run of the window, oldest first.
#[derive(Debug, Clone, Copy)]
pub struct WindowRun<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub digest: &'a RunDigest,
}

/// A flaky hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlakyHop {
    pub caller: String,
    pub callee: String,
    pub operation: String,
    pub runs: u64,
    pub failed_runs: u64,
    pub flips: u64,
    pub classes: BTreeMap<String, u64>,
    pub tests: Vec<String>,
    /// The newest run with a failure placed on the hop: (id, name).
    pub last_failed_run: (String, String),
}

/// What failed on one hop in one run.
#[derive(Default)]
struct RunFailures<'a> {
    tests: BTreeSet<&'a str>,
    classes: BTreeSet<&'a str>,
}

type Key<'a> = (&'a str, &'a str, &'a str);

/// The flaky hops of `window` (oldest run first), most unstable first.
pub fn flaky(window: &[WindowRun<'_>]) -> Vec<FlakyHop> {
    // Per hop with a failure, per run index, what failed there.
    let mut failed: BTreeMap<Key<'_>, BTreeMap<usize, RunFailures<'_>>> = BTreeMap::new();
    for (i, run) in window.iter().enumerate() {
        for f in run.digest.failures() {
            let here = failed
                .entry((f.caller, f.callee, f.operation))
                .or_default()
                .entry(i)
                .or_default();
            if let Some(t) = f.test {
                here.tests.insert(t);
            }
            here.classes.insert(f.class);
        }
    }
    let mut out = Vec::new();
    for ((caller, callee, operation), per_run) in &failed {
        let tests: BTreeSet<&str> = per_run
            .values()
            .flat_map(|r| r.tests.iter().copied())
            .collect();
        let (mut runs, mut failed_runs, mut flips) = (0u64, 0u64, 0u64);
        let mut classes: BTreeMap<String, u64> = BTreeMap::new();
        let mut previous: Option<bool> = None;
        let mut passed_through = false;
        let mut last = 0;
        for (i, run) in window.iter().enumerate() {
            let crossed = run.digest.interface(caller, callee, operation);
            let fails = per_run.get(&i);
            if crossed.is_none() && fails.is_none() {
                continue;
            }
            runs += 1;
            let failed_here = fails.is_some();
            if let Some(f) = fails {
                failed_runs += 1;
                last = i;
                for c in &f.classes {
                    *classes.entry((*c).to_owned()).or_insert(0) += 1;
                }
            }
            if previous.is_some_and(|p| p != failed_here) {
                flips += 1;
            }
            previous = Some(failed_here);
            if let Some(crossed) = crossed {
                passed_through |= tests
                    .iter()
                    .any(|t| crossed.crossed_by(t) && !fails.is_some_and(|f| f.tests.contains(t)));
            }
        }
        if !passed_through {
            continue;
        }
        out.push(FlakyHop {
            caller: (*caller).to_owned(),
            callee: (*callee).to_owned(),
            operation: (*operation).to_owned(),
            runs,
            failed_runs,
            flips,
            classes,
            tests: tests.iter().map(|t| (*t).to_owned()).collect(),
            last_failed_run: (window[last].id.to_owned(), window[last].name.to_owned()),
        });
    }
    out.sort_by(|a, b| {
        let even = |h: &FlakyHop| h.failed_runs.min(h.runs - h.failed_runs);
        b.flips
            .cmp(&a.flips)
            .then(even(b).cmp(&even(a)))
            .then(b.failed_runs.cmp(&a.failed_runs))
            .then_with(|| {
                (&a.caller, &a.callee, &a.operation).cmp(&(&b.caller, &b.callee, &b.operation))
            })
    });
    out
}
