//! `tracecov diff BASE RUN`: what changed from one run to another, in DESIGN's JSON shape, and as
//! text for a terminal or Markdown for a pull-request comment.
//!
//! The input is two reports built over the same expected set (the run's: `query::diff_runs`
//! builds the base's coverage against it), so an item's status means the same on both sides,
//! and where each run's per-interface latency is read (`Latencies`: its digest, or its graph),
//! which the report does not carry; the interfaces that got slower or faster come judged on the
//! same p95s (`latency_changes` over digests, `regressions` over graphs). An item is an edge
//! (operation `null`) or an interface; it changes at most one way, the first of `ChangeKind`'s
//! order that applies. A failure is the same failure in both runs when its test, class and hop
//! are the same.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::digest::{ItemRef, RunDigest};
use crate::graph::{RunGraph, Sketch};
use crate::regressions::{Thresholds, slower};
use crate::report::escape::{markdown as md_text, markdown_url};
use crate::report::{Failure, Report};

/// A run as a diff names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRef {
    pub id: String,
    pub name: String,
}

/// One side of a diff: the run, its report (with coverage) and where its p95s are read.
pub struct DiffSide<'a> {
    pub run: RunRef,
    pub report: &'a Report,
    pub latency: Latencies<'a>,
}

/// Where a side's p95s are read: the run's graph (its latency sketches), or its history digest
/// (the p95s it kept of the same sketches). Either gives the same numbers.
#[derive(Clone, Copy)]
pub enum Latencies<'a> {
    Graph(&'a RunGraph),
    Digest(&'a RunDigest),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    pub base: RunRef,
    pub run: RunRef,
    pub coverage: CoverageDelta,
    pub changes: Vec<Change>,
    pub failures: FailureChanges,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoverageDelta {
    pub edges: Delta,
    pub interfaces: Delta,
    pub critical: Delta,
}

/// Percentages of the expected set; `null` where nothing is expected.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    pub base: Option<f64>,
    pub run: Option<f64>,
    /// `run - base`, in percentage points, one decimal.
    pub delta: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub caller: String,
    pub callee: String,
    /// `null` for an edge.
    pub operation: Option<String>,
    pub change: ChangeKind,
    /// The item in each run; `null` where the run neither exercised nor expected it.
    pub base: Option<ItemState>,
    pub run: Option<ItemState>,
}

/// How an item changed, in the order they are decided and listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    NewlyFailing,
    Fixed,
    NewlyUntested,
    NewlyCovered,
    Appeared,
    Disappeared,
    Slower,
    Faster,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::NewlyFailing => "newly_failing",
            ChangeKind::Fixed => "fixed",
            ChangeKind::NewlyUntested => "newly_untested",
            ChangeKind::NewlyCovered => "newly_covered",
            ChangeKind::Appeared => "appeared",
            ChangeKind::Disappeared => "disappeared",
            ChangeKind::Slower => "slower",
            ChangeKind::Faster => "faster",
        }
    }

    /// A heading for people.
    fn heading(self) -> &'static str {
        match self {
            ChangeKind::NewlyFailing => "Newly failing",
            ChangeKind::Fixed => "Fixed",
            ChangeKind::NewlyUntested => "Newly untested",
            ChangeKind::NewlyCovered => "Newly covered",
            ChangeKind::Appeared => "Appeared",
            ChangeKind::Disappeared => "Disappeared",
            ChangeKind::Slower => "Slower",
            ChangeKind::Faster => "Faster",
        }
    }
}

/// An item in one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemState {
    /// Its coverage status (`covered`, `failing`, `untested`, `stubbed`, `unexpected`).
    pub status: String,
    pub calls: u64,
    pub errors: u64,
    /// Client side, else server side; `null` with no call.
    pub p95_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FailureChanges {
    /// In the run, not in the base.
    pub new: Vec<Failure>,
    /// In the base, not in the run.
    pub fixed: Vec<Failure>,
    /// In both (as the run reports it).
    pub persisting: Vec<Failure>,
}

type ItemKey = (String, String, Option<String>);

/// An item's key as its report names it.
type Key<'a> = (&'a str, &'a str, Option<&'a str>);

/// An interface whose latency changed (`crate::regressions`): `Slower` or `Faster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyChange {
    pub change: ChangeKind,
    pub caller: String,
    pub callee: String,
    pub operation: String,
}

/// The interfaces that got slower or faster from `base` to `run`, judged on the p95s and calls
/// their digests kept, as `regressions::regressions` and `improvements` judge them on the runs'
/// graphs (`regressions::slower`). Sorted by (caller, callee, operation), slower before faster.
pub fn latency_changes(base: &RunDigest, run: &RunDigest, t: &Thresholds) -> Vec<LatencyChange> {
    let mut out = Vec::new();
    // Both digests list their interfaces sorted by name: a merge finds the ones in both.
    let mut before = base.interfaces().peekable();
    for r in run.interfaces() {
        let key = (r.caller, r.callee, r.operation);
        while before
            .peek()
            .is_some_and(|b| (b.caller, b.callee, b.operation) < key)
        {
            before.next();
        }
        let Some(b) = before
            .peek()
            .filter(|b| (b.caller, b.callee, b.operation) == key)
        else {
            continue;
        };
        let (Some(base_p95), Some(run_p95), Some(operation)) =
            (b.item.p95_ns, r.item.p95_ns, r.operation)
        else {
            continue;
        };
        let (b, r) = ((b.item.calls, base_p95), (r.item.calls, run_p95));
        let change = if slower(b, r, t).is_some() {
            ChangeKind::Slower
        } else if slower(r, b, t).is_some() {
            ChangeKind::Faster
        } else {
            continue;
        };
        out.push(LatencyChange {
            change,
            caller: key.0.to_owned(),
            callee: key.1.to_owned(),
            operation: operation.to_owned(),
        });
    }
    out.sort_by_key(|c| c.change);
    out
}

/// What changed from `base` to `run`. Both reports must carry coverage over the same expected set.
/// `latency` lists the interfaces that got slower or faster; each is listed unless it changed in
/// a way that matters more.
pub fn diff(base: DiffSide<'_>, run: DiffSide<'_>, latency: &[LatencyChange]) -> Diff {
    let before = items(&base);
    let after = items(&run);
    let owned = |key: Key<'_>| (key.0.to_owned(), key.1.to_owned(), key.2.map(str::to_owned));
    let mut changes: Vec<Change> = Vec::new();
    // Both lists are sorted by key: one pass over them meets every key once.
    let (mut b, mut r) = (before.iter().peekable(), after.iter().peekable());
    loop {
        let (key, bs, rs) = match (b.peek(), r.peek()) {
            (None, None) => break,
            (Some(x), Some(y)) if x.0 == y.0 => {
                let (x, y) = (b.next(), r.next());
                (x.map(|x| x.0), x.map(|x| &x.1), y.map(|y| &y.1))
            }
            (Some(x), y) if y.is_none_or(|y| x.0 < y.0) => {
                let x = b.next();
                (x.map(|x| x.0), x.map(|x| &x.1), None)
            }
            _ => {
                let y = r.next();
                (y.map(|y| y.0), None, y.map(|y| &y.1))
            }
        };
        let Some(key) = key else { break };
        if let Some(change) = classify(bs, rs) {
            let (caller, callee, operation) = owned(key);
            changes.push(Change {
                caller,
                callee,
                operation,
                change,
                base: bs.cloned(),
                run: rs.cloned(),
            });
        }
    }
    let mut taken: HashSet<ItemKey> = changes
        .iter()
        .map(|c| (c.caller.clone(), c.callee.clone(), c.operation.clone()))
        .collect();
    let state = |list: &[(Key<'_>, ItemState)], key: Key<'_>| {
        list.binary_search_by(|(k, _)| k.cmp(&key))
            .ok()
            .map(|i| list[i].1.clone())
    };
    for l in latency {
        let key = (
            l.caller.as_str(),
            l.callee.as_str(),
            Some(l.operation.as_str()),
        );
        if taken.insert(owned(key)) {
            changes.push(Change {
                caller: l.caller.clone(),
                callee: l.callee.clone(),
                operation: Some(l.operation.clone()),
                change: l.change,
                base: state(&before, key),
                run: state(&after, key),
            });
        }
    }
    sort_changes(&mut changes);
    Diff {
        base: base.run.clone(),
        run: run.run.clone(),
        coverage: coverage_delta(base.report, run.report),
        changes,
        failures: failure_changes(&base.report.failures, &run.report.failures),
    }
}

impl Diff {
    /// The changes of one kind.
    pub fn of(&self, kind: ChangeKind) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(move |c| c.change == kind)
    }
}

fn sort_changes(changes: &mut [Change]) {
    changes.sort_by(|a, b| {
        (a.change, &a.caller, &a.callee, &a.operation).cmp(&(
            b.change,
            &b.caller,
            &b.callee,
            &b.operation,
        ))
    });
}

/// Every edge and interface of a report (observed or expected), with its state, sorted by key
/// (an item listed twice: the last).
fn items<'a>(side: &DiffSide<'a>) -> Vec<(Key<'a>, ItemState)> {
    let mut out: Vec<(Key<'a>, ItemState)> = Vec::new();
    let ms = |ns: u64| (ns as f64 / 1e3).round() / 1e3;
    let report: &'a Report = side.report;
    match side.latency {
        Latencies::Graph(graph) => {
            // The calling side's p95, else the answering side's.
            let p95 = |client: Option<&Sketch>, server: Option<&Sketch>| {
                let p95 = |s: &Sketch| (!s.is_empty()).then(|| s.latency().p95).flatten();
                client.and_then(p95).or_else(|| server.and_then(p95))
            };
            for e in &report.edges {
                let graph_edge = graph.edge(&e.caller, &e.callee);
                let edge_p95 = p95(
                    graph_edge.map(|g| &g.edge.client),
                    graph_edge.map(|g| &g.edge.server),
                );
                put_edge(&mut out, e, edge_p95.map(ms), |op| {
                    let gi = graph_edge
                        .and_then(|g| g.edge.interfaces.iter().find(|x| x.operation == op));
                    p95(gi.map(|g| &g.client), gi.map(|g| &g.server)).map(ms)
                });
            }
        }
        Latencies::Digest(_) => {
            for e in &report.edges {
                put_edge(&mut out, e, None, |_| None);
            }
        }
    }
    // A report lists its edges sorted and each edge's interfaces sorted, so this finds them in
    // order; a stable sort keeps the order of an item listed twice.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.reverse();
    out.dedup_by(|later, kept| later.0 == kept.0);
    out.reverse();
    if let Latencies::Digest(digest) = side.latency {
        // The digest lists its edges and its interfaces sorted by name too: one pass over each
        // finds every item's p95, rather than a search by name per item.
        let (mut edges, mut interfaces) =
            (digest.edges().peekable(), digest.interfaces().peekable());
        for (key, state) in &mut out {
            let p95 = if key.2.is_none() {
                kept_p95(&mut edges, *key)
            } else {
                kept_p95(&mut interfaces, *key)
            };
            state.p95_ms = p95.map(ms);
        }
    }
    out
}

/// The p95 a digest kept of `key`, from its records sorted by name, passed over up to `key`
/// (asked in order).
fn kept_p95<'d>(
    records: &mut std::iter::Peekable<impl Iterator<Item = ItemRef<'d>>>,
    key: Key<'_>,
) -> Option<u64> {
    while records
        .next_if(|i| (i.caller, i.callee, i.operation) < key)
        .is_some()
    {}
    records
        .peek()
        .filter(|i| (i.caller, i.callee, i.operation) == key)
        .and_then(|i| i.item.p95_ns)
}

/// Puts a report's edge and its interfaces into `out`, with the edge's p95 and the
/// interfaces' by operation (milliseconds).
fn put_edge<'a>(
    out: &mut Vec<(Key<'a>, ItemState)>,
    e: &'a crate::report::Edge,
    p95_ms: Option<f64>,
    interface_p95_ms: impl Fn(&str) -> Option<f64>,
) {
    let state = |status: &Option<String>, calls, errors, p95_ms| ItemState {
        status: status.clone().unwrap_or_else(|| "unexpected".into()),
        calls,
        errors,
        p95_ms,
    };
    out.push((
        (&e.caller, &e.callee, None),
        state(&e.status, e.calls, e.errors, p95_ms),
    ));
    for i in &e.interfaces {
        out.push((
            (&e.caller, &e.callee, Some(&i.operation)),
            state(&i.status, i.calls, i.errors, interface_p95_ms(&i.operation)),
        ));
    }
}

fn classify(base: Option<&ItemState>, run: Option<&ItemState>) -> Option<ChangeKind> {
    let failing = |s: &ItemState| s.status == "failing";
    let exercised = |s: &ItemState| s.calls > 0;
    let untested = |s: &ItemState| s.status == "untested";
    match (base, run) {
        (b, Some(r)) if failing(r) && !b.is_some_and(failing) => Some(ChangeKind::NewlyFailing),
        (Some(b), Some(r)) if failing(b) && !failing(r) && exercised(r) => Some(ChangeKind::Fixed),
        (Some(b), Some(r)) if exercised(b) && untested(r) => Some(ChangeKind::NewlyUntested),
        (Some(b), Some(r)) if untested(b) && exercised(r) => Some(ChangeKind::NewlyCovered),
        (None, Some(r)) if exercised(r) => Some(ChangeKind::Appeared),
        (Some(b), None) if exercised(b) => Some(ChangeKind::Disappeared),
        _ => None,
    }
}

fn coverage_delta(base: &Report, run: &Report) -> CoverageDelta {
    let pick = |r: &Report, f: fn(&crate::report::CoverageSummary) -> Option<f64>| {
        r.coverage.as_ref().and_then(f)
    };
    let delta = |f: fn(&crate::report::CoverageSummary) -> Option<f64>| {
        let (b, r) = (pick(base, f), pick(run, f));
        Delta {
            base: b,
            run: r,
            delta: b.zip(r).map(|(b, r)| ((r - b) * 10.0).round() / 10.0),
        }
    };
    CoverageDelta {
        edges: delta(|c| c.edges.percent),
        interfaces: delta(|c| c.interfaces.percent),
        critical: delta(|c| c.critical.percent),
    }
}

/// A hop as (caller, callee, operation).
type HopName<'a> = (&'a str, &'a str, &'a str);

/// What makes two failures the same failure: test, class and hop.
fn failure_key(f: &Failure) -> (Option<&str>, &str, Option<HopName<'_>>) {
    (
        f.test.as_deref(),
        f.class.as_str(),
        f.hop
            .as_ref()
            .map(|h| (h.caller.as_str(), h.callee.as_str(), h.operation.as_str())),
    )
}

fn failure_changes(base: &[Failure], run: &[Failure]) -> FailureChanges {
    let before: BTreeSet<_> = base.iter().map(failure_key).collect();
    let after: BTreeSet<_> = run.iter().map(failure_key).collect();
    let mut out = FailureChanges::default();
    for f in run {
        if before.contains(&failure_key(f)) {
            out.persisting.push(f.clone());
        } else {
            out.new.push(f.clone());
        }
    }
    out.fixed = base
        .iter()
        .filter(|f| !after.contains(&failure_key(f)))
        .cloned()
        .collect();
    out
}

/// `caller -> callee` or `caller -> callee operation`.
fn item_name(c: &Change) -> String {
    match &c.operation {
        Some(op) => format!("{} -> {} {op}", c.caller, c.callee),
        None => format!("{} -> {}", c.caller, c.callee),
    }
}

fn state_text(s: Option<&ItemState>) -> String {
    match s {
        None => "absent".to_owned(),
        Some(s) => {
            let mut t = format!(
                "{}, {} call{}, {} error{}",
                s.status,
                s.calls,
                if s.calls == 1 { "" } else { "s" },
                s.errors,
                if s.errors == 1 { "" } else { "s" }
            );
            if let Some(p) = s.p95_ms {
                let _ = write!(t, ", p95 {p} ms");
            }
            t
        }
    }
}

fn percent(p: Option<f64>) -> String {
    p.map_or_else(|| "n/a".to_owned(), |p| format!("{p:.1}%"))
}

fn signed(d: Option<f64>) -> String {
    d.map_or_else(String::new, |d| format!(" ({d:+.1})"))
}

fn failure_line(f: &Failure) -> String {
    let hop = f.hop.as_ref().map_or_else(
        || "no hop".to_owned(),
        |h| format!("{} -> {} {}", h.caller, h.callee, h.operation),
    );
    format!(
        "{}: {} at {hop}",
        f.test.as_deref().unwrap_or("(no test)"),
        f.class
    )
}

/// For a terminal or a CI log.
pub fn text(d: &Diff) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "diff {} ({}) -> {} ({})",
        d.base.name, d.base.id, d.run.name, d.run.id
    );
    let c = &d.coverage;
    let _ = writeln!(
        out,
        "coverage: edges {} -> {}{}, interfaces {} -> {}{}, critical {} -> {}{}",
        percent(c.edges.base),
        percent(c.edges.run),
        signed(c.edges.delta),
        percent(c.interfaces.base),
        percent(c.interfaces.run),
        signed(c.interfaces.delta),
        percent(c.critical.base),
        percent(c.critical.run),
        signed(c.critical.delta),
    );
    let f = &d.failures;
    let _ = writeln!(
        out,
        "failures: {} new, {} fixed, {} persisting",
        f.new.len(),
        f.fixed.len(),
        f.persisting.len()
    );
    for (what, list) in [("new", &f.new), ("fixed", &f.fixed)] {
        for x in list {
            let _ = writeln!(out, "  {what}: {}", failure_line(x));
            let _ = writeln!(out, "    {}", x.link);
        }
    }
    if d.changes.is_empty() {
        out.push_str("no edge or interface changed\n");
    }
    let mut kind = None;
    for ch in &d.changes {
        if kind != Some(ch.change) {
            kind = Some(ch.change);
            let n = d.of(ch.change).count();
            let _ = writeln!(out, "{} ({n}):", ch.change.heading().to_lowercase());
        }
        let _ = writeln!(
            out,
            "  {}: {} -> {}",
            item_name(ch),
            state_text(ch.base.as_ref()),
            state_text(ch.run.as_ref())
        );
    }
    crate::report::strip_controls(&out)
}

/// For a pull-request comment: what broke, what got fixed, what is newly untested, the coverage
/// delta and the slower interfaces, each failure with its trace link.
pub fn markdown(d: &Diff) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### tracecov: {} → {}\n",
        md_text(&d.base.name),
        md_text(&d.run.name)
    );
    let f = &d.failures;
    let _ = writeln!(
        out,
        "**{}** new failure{}, **{}** fixed, {} persisting.\n",
        f.new.len(),
        if f.new.len() == 1 { "" } else { "s" },
        f.fixed.len(),
        f.persisting.len()
    );
    out.push_str("| coverage | base | run | delta |\n|---|---:|---:|---:|\n");
    for (name, x) in [
        ("edges", &d.coverage.edges),
        ("interfaces", &d.coverage.interfaces),
        ("critical", &d.coverage.critical),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} |",
            percent(x.base),
            percent(x.run),
            x.delta
                .map_or_else(|| "—".to_owned(), |d| format!("{d:+.1}"))
        );
    }
    for (title, list) in [("New failures", &f.new), ("Fixed failures", &f.fixed)] {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n#### {title}\n");
        for x in list {
            let _ = writeln!(
                out,
                "- {} — [trace]({})",
                md_text(&failure_line(x)),
                markdown_url(&x.link)
            );
        }
    }
    let mut kind = None;
    for ch in &d.changes {
        if kind != Some(ch.change) {
            kind = Some(ch.change);
            let _ = writeln!(out, "\n#### {}\n", ch.change.heading());
        }
        let _ = writeln!(
            out,
            "- {}: {} → {}",
            md_text(&item_name(ch)),
            md_text(&state_text(ch.base.as_ref())),
            md_text(&state_text(ch.run.as_ref()))
        );
    }
    crate::report::strip_controls(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: &str, calls: u64) -> ItemState {
        ItemState {
            status: status.into(),
            calls,
            errors: 0,
            p95_ms: None,
        }
    }

    #[test]
    fn each_item_changes_the_first_way_that_applies() {
        let c = |b: Option<ItemState>, r: Option<ItemState>| classify(b.as_ref(), r.as_ref());
        use ChangeKind::*;
        let covered = || Some(state("covered", 3));
        let failing = || Some(state("failing", 3));
        let untested = || Some(state("untested", 0));
        assert_eq!(c(covered(), failing()), Some(NewlyFailing));
        assert_eq!(c(None, failing()), Some(NewlyFailing), "new and failing");
        assert_eq!(c(failing(), failing()), None, "still failing");
        assert_eq!(c(failing(), covered()), Some(Fixed));
        assert_eq!(c(covered(), untested()), Some(NewlyUntested));
        assert_eq!(c(failing(), untested()), Some(NewlyUntested));
        assert_eq!(c(untested(), covered()), Some(NewlyCovered));
        assert_eq!(c(None, Some(state("unexpected", 1))), Some(Appeared));
        assert_eq!(c(covered(), None), Some(Disappeared));
        assert_eq!(c(covered(), covered()), None);
        assert_eq!(c(untested(), untested()), None);
    }
}
