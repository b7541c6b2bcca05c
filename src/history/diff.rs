//! `tracecov diff BASE RUN`: what changed from one run to another, in DESIGN's JSON shape, and as
//! text for a terminal or Markdown for a pull-request comment.
//!
//! The input is two reports built over the same expected set (the run's: `query::diff_runs`
//! rebuilds the base's coverage against it), so an item's status means the same on both sides,
//! and their graphs for the per-interface latency the report does not carry. An item is an edge
//! (operation `null`) or an interface; it changes at most one way, the first of `ChangeKind`'s
//! order that applies. A failure is the same failure in both runs when its test, class and hop
//! are the same.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::graph::RunGraph;
use crate::report::escape::{markdown as md_text, markdown_url};
use crate::report::{Failure, Report};

/// A run as a diff names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRef {
    pub id: String,
    pub name: String,
}

/// One side of a diff: the run, its report (with coverage) and its graph.
pub struct DiffSide<'a> {
    pub run: RunRef,
    pub report: &'a Report,
    pub graph: &'a RunGraph,
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

/// An interface whose latency changed (`crate::regressions`): `Slower` or `Faster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyChange {
    pub change: ChangeKind,
    pub caller: String,
    pub callee: String,
    pub operation: String,
}

/// What changed from `base` to `run`. Both reports must carry coverage over the same expected set.
/// `latency` lists the interfaces that got slower or faster; each is listed unless it changed in
/// a way that matters more.
pub fn diff(base: DiffSide<'_>, run: DiffSide<'_>, latency: &[LatencyChange]) -> Diff {
    let before = items(&base);
    let after = items(&run);
    let keys: BTreeSet<&ItemKey> = before.keys().chain(after.keys()).collect();
    let mut changes: Vec<Change> = keys
        .into_iter()
        .filter_map(|key| {
            let (b, r) = (before.get(key), after.get(key));
            classify(b, r).map(|change| Change {
                caller: key.0.clone(),
                callee: key.1.clone(),
                operation: key.2.clone(),
                change,
                base: b.cloned(),
                run: r.cloned(),
            })
        })
        .collect();
    for l in latency {
        let key = (
            l.caller.clone(),
            l.callee.clone(),
            Some(l.operation.clone()),
        );
        let taken = changes
            .iter()
            .any(|c| (&c.caller, &c.callee, &c.operation) == (&key.0, &key.1, &key.2));
        if !taken {
            changes.push(Change {
                caller: key.0.clone(),
                callee: key.1.clone(),
                operation: key.2.clone(),
                change: l.change,
                base: before.get(&key).cloned(),
                run: after.get(&key).cloned(),
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

/// Every edge and interface of a report (observed or expected), with its state.
fn items(side: &DiffSide<'_>) -> BTreeMap<ItemKey, ItemState> {
    let mut out = BTreeMap::new();
    for e in &side.report.edges {
        let graph_edge = side.graph.edge(&e.caller, &e.callee);
        let p95 = |client: Option<&crate::graph::Sketch>, server: Option<&crate::graph::Sketch>| {
            let ms = |s: &crate::graph::Sketch| {
                (!s.is_empty())
                    .then(|| s.latency().p95)
                    .flatten()
                    .map(|ns| (ns as f64 / 1e3).round() / 1e3)
            };
            client.and_then(ms).or_else(|| server.and_then(ms))
        };
        out.insert(
            (e.caller.clone(), e.callee.clone(), None),
            ItemState {
                status: e.status.clone().unwrap_or_else(|| "unexpected".into()),
                calls: e.calls,
                errors: e.errors,
                p95_ms: p95(
                    graph_edge.map(|g| &g.edge.client),
                    graph_edge.map(|g| &g.edge.server),
                ),
            },
        );
        for i in &e.interfaces {
            let gi = graph_edge.and_then(|g| {
                g.edge
                    .interfaces
                    .iter()
                    .find(|x| x.operation == i.operation)
            });
            out.insert(
                (
                    e.caller.clone(),
                    e.callee.clone(),
                    Some(i.operation.clone()),
                ),
                ItemState {
                    status: i.status.clone().unwrap_or_else(|| "unexpected".into()),
                    calls: i.calls,
                    errors: i.errors,
                    p95_ms: p95(gi.map(|g| &g.client), gi.map(|g| &g.server)),
                },
            );
        }
    }
    out
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
