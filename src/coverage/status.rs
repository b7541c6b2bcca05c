//! Holding a run's graph against the expected topology: a status for every edge and interface,
//! the counts and percentages, and the lists of untested, stubbed, failing and unexpected items.
//!
//! The unit of counting is an interface in DESIGN's sense, (caller, callee, operation): an
//! expected operation that a caller exercised counts under that caller, as the operation its
//! span named; one that nobody called counts once, under its declared caller or under `*`
//! (expected from any caller, such as an OpenAPI operation). An edge that carries an interface
//! expected from any caller is itself expected. The `*` rows of the report are placeholders
//! for operations with no caller yet and are not counted among edges.
//!
//! Statuses: an observed interface is failing when a failing key names it (by default a hop in
//! error inside a failed test), covered when a test exercised it, stubbed when only a mock of
//! its callee answered it in a test, untested otherwise; not expected, it is unexpected. An
//! expected item takes the highest status of the observed interfaces that match it
//! (failing > covered > stubbed > untested). A failure at a mock leaves the real interface
//! stubbed: the real integration was never exercised; the mock's own row shows it failing, so
//! the hop where the test broke is not painted as a quiet stub.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use crate::graph::RunGraph;

use super::ANY_CALLER;
use super::expected::{Expected, ExpectedEdge};
use super::route::Op;

/// Coverage status of an edge or interface. Ordered by precedence, `Unexpected` aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Untested,
    Stubbed,
    Covered,
    Failing,
    Unexpected,
}

impl Status {
    /// The name in reports: `covered`, `failing`, `untested`, `stubbed`, `unexpected`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Untested => "untested",
            Status::Stubbed => "stubbed",
            Status::Covered => "covered",
            Status::Failing => "failing",
            Status::Unexpected => "unexpected",
        }
    }

    /// Exercised by a test against the real callee (failing counts).
    pub fn is_covered(self) -> bool {
        matches!(self, Status::Covered | Status::Failing)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a test failed: an interface, or a whole edge when the operation is unknown. The blame
/// engine can pass its own set; `failing_hops` is the default.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HopKey {
    pub caller: String,
    pub callee: String,
    pub operation: Option<String>,
}

/// The default failing keys: every interface with a hop in error inside a failed test.
pub fn failing_hops(graph: &RunGraph) -> BTreeSet<HopKey> {
    let mut out = BTreeSet::new();
    for e in graph.edges() {
        for i in e.edge.interfaces.iter().filter(|i| i.failing_errors > 0) {
            out.insert(HopKey {
                caller: e.caller.id.clone(),
                callee: e.callee.id.clone(),
                operation: Some(i.operation.clone()),
            });
        }
    }
    out
}

/// Expected and covered counts of one kind of item.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub expected: u64,
    /// Covered or failing.
    pub covered: u64,
}

impl Counts {
    /// covered ÷ expected × 100 to one decimal (half away from zero); `None` when nothing is
    /// expected.
    pub fn percent(&self) -> Option<f64> {
        (self.expected > 0)
            .then(|| (self.covered as f64 * 1000.0 / self.expected as f64).round() / 10.0)
    }

    fn count(&mut self, status: Status) {
        self.expected += 1;
        self.covered += u64::from(status.is_covered());
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub edges: Counts,
    pub interfaces: Counts,
    /// Critical edges and interfaces together.
    pub critical: Counts,
}

/// An edge (operation `None`) or interface in the coverage lists.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Item {
    pub caller: String,
    pub callee: String,
    pub operation: Option<String>,
    pub critical: bool,
    pub status: Status,
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.caller, self.callee)?;
        if let Some(op) = &self.operation {
            write!(f, " {op}")?;
        }
        if self.critical {
            f.write_str(" (critical)")?;
        }
        Ok(())
    }
}

/// An item while coverage is worked out, its names borrowed: most items are covered and never
/// listed, so they are copied only into the lists. Ordered as `Item` is (same fields, same
/// order).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Named<'a> {
    caller: &'a str,
    callee: &'a str,
    operation: Option<&'a str>,
    critical: bool,
    status: Status,
}

impl Named<'_> {
    fn owned(&self) -> Item {
        Item {
            caller: self.caller.to_owned(),
            callee: self.callee.to_owned(),
            operation: self.operation.map(str::to_owned),
            critical: self.critical,
            status: self.status,
        }
    }
}

/// One interface row of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceCoverage {
    pub operation: String,
    pub status: Status,
    pub expected: bool,
    pub critical: bool,
    /// The run's graph has it; false for an expected interface no span named.
    pub observed: bool,
}

/// One edge row of the report: every edge of the run's graph, every expected edge it lacks, and
/// a `*` row per service with operations expected from any caller that nobody called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeCoverage {
    pub caller: String,
    pub callee: String,
    pub status: Status,
    pub expected: bool,
    pub critical: bool,
    pub observed: bool,
    /// Sorted by operation.
    pub interfaces: Vec<InterfaceCoverage>,
}

/// The coverage of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Coverage {
    /// Sorted by (caller, callee); `*` rows sort first.
    pub edges: Vec<EdgeCoverage>,
    pub summary: Summary,
    /// Expected edges and interfaces by status, each list sorted (an edge before its
    /// interfaces).
    pub untested: Vec<Item>,
    pub stubbed: Vec<Item>,
    pub failing: Vec<Item>,
    /// Observed, not expected: edges and interfaces.
    pub unexpected: Vec<Item>,
    /// Names of the run's failed tests, sorted, deduplicated.
    pub failed_tests: Vec<String>,
}

impl Coverage {
    pub fn edge(&self, caller: &str, callee: &str) -> Option<&EdgeCoverage> {
        self.edges
            .iter()
            .find(|e| e.caller == caller && e.callee == callee)
    }
}

/// A counted interface while it is being worked out.
#[derive(Debug, Clone)]
struct Unit {
    critical: bool,
    status: Status,
    /// The real edge has a row with this operation.
    has_real_row: bool,
}

/// Which expected interfaces an observed one matched.
#[derive(Debug, Default)]
struct Consumed<'a> {
    edge: HashMap<(&'a str, &'a str), BTreeSet<usize>>,
    any: HashMap<&'a str, BTreeSet<usize>>,
}

/// The coverage of `run` against `expected`; `failing` says where tests failed (see
/// `failing_hops`).
///
/// Edges and interfaces are looked up by name through indexes built once (borrowing the names
/// from `run` and `expected`), never by scanning every row: a run with thousands of edges and
/// interfaces is covered in a few milliseconds.
pub fn coverage(run: &RunGraph, expected: &Expected, failing: &BTreeSet<HopKey>) -> Coverage {
    // The expected edges by name. An edge an interface expected from any caller makes expected
    // is added on the side (`added`): every such edge lists interfaces and has none of its own.
    let listed: HashMap<(&str, &str), &ExpectedEdge> = expected
        .edges
        .iter()
        .map(|((c, s), e)| ((c.as_str(), s.as_str()), e))
        .collect();
    let added_edge = ExpectedEdge {
        critical: false,
        lists_interfaces: true,
        interfaces: Vec::new(),
    };
    let mut added: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut consumed = Consumed::default();
    // (caller, real callee, operation as observed) → unit, found through `unit_of`. They arrive
    // nearly sorted (the graph's edges and interfaces are), and are sorted once pass 1 is done.
    let mut units: Vec<((&str, &str, &str), Unit)> = Vec::new();
    let mut unit_of: HashMap<(&str, &str, &str), usize> = HashMap::new();
    let mut rows: Vec<EdgeCoverage> = Vec::with_capacity(run.edges().len());

    let failing_edges: HashSet<(&str, &str)> = failing
        .iter()
        .map(|k| (k.caller.as_str(), k.callee.as_str()))
        .collect();
    let failing_interfaces: HashSet<(&str, &str, &str)> = failing
        .iter()
        .filter_map(|k| {
            Some((
                k.caller.as_str(),
                k.callee.as_str(),
                k.operation.as_deref()?,
            ))
        })
        .collect();
    let edge_failing = |c: &str, s: &str| failing_edges.contains(&(c, s));
    let iface_failing = |c: &str, s: &str, op: &str| failing_interfaces.contains(&(c, s, op));
    // The run's edges that a test crossed.
    let tested_edges: HashSet<(&str, &str)> = run
        .edges()
        .filter(|e| !e.edge.tests.is_empty())
        .map(|e| (e.caller.id.as_str(), e.callee.id.as_str()))
        .collect();
    let tested = |c: &str, s: &str| tested_edges.contains(&(c, s));

    // Pass 1: every observed interface, matched to expectations.
    // (row index, interface index, unit key) to fill in critical flags once units are final.
    let mut pending: Vec<(usize, usize, usize)> = Vec::new();
    for e in run.edges() {
        let caller = e.caller.id.as_str();
        let observed_callee = e.callee.id.as_str();
        let real = expected.mocks.get(observed_callee).map(String::as_str);
        let mocked = real.is_some();
        let callee = real.unwrap_or(observed_callee);
        let key = (caller, callee);
        let mut row = EdgeCoverage {
            caller: caller.to_owned(),
            callee: observed_callee.to_owned(),
            status: Status::Unexpected,
            expected: false,
            critical: false,
            observed: true,
            interfaces: Vec::with_capacity(e.edge.interfaces.len()),
        };
        for iface in &e.edge.interfaces {
            let op = Op::lenient(&iface.operation);
            let failing_here = iface_failing(caller, observed_callee, &iface.operation);
            let own = if !mocked && failing_here {
                Status::Failing
            } else if iface.tests.is_empty() {
                Status::Untested
            } else if mocked {
                Status::Stubbed
            } else {
                Status::Covered
            };
            let exp = listed
                .get(&key)
                .copied()
                .or_else(|| added.contains(&key).then_some(&added_edge));
            let matched = match_interface(
                &op,
                exp.map(|x| x.interfaces.as_slice()),
                expected.any_caller.get(callee).map(Vec::as_slice),
            );
            let mut critical = false;
            let is_expected = if !matched.edge.is_empty() || !matched.any.is_empty() {
                for &i in &matched.edge {
                    critical |= exp.is_some_and(|x| x.interfaces[i].critical);
                }
                for &i in &matched.any {
                    critical |= expected.any_caller[callee][i].critical;
                }
                consumed.edge.entry(key).or_default().extend(&matched.edge);
                consumed.any.entry(callee).or_default().extend(&matched.any);
                if !matched.any.is_empty() && exp.is_none() {
                    // Expected from any caller: this caller's edge is expected too.
                    added.insert(key);
                }
                true
            } else {
                exp.is_some_and(|x| !x.lists_interfaces)
            };
            if is_expected {
                let ukey = (caller, callee, iface.operation.as_str());
                let u = *unit_of.entry(ukey).or_insert_with(|| {
                    units.push((
                        ukey,
                        Unit {
                            critical: false,
                            status: Status::Untested,
                            has_real_row: false,
                        },
                    ));
                    units.len() - 1
                });
                let unit = &mut units[u].1;
                unit.critical |= critical;
                unit.status = unit.status.max(own);
                unit.has_real_row |= !mocked;
                pending.push((rows.len(), row.interfaces.len(), u));
            }
            // The mock's own row shows a failure placed on it (failing > stubbed); the real
            // interface it stands in for stays stubbed, as `own` says.
            let shown = if mocked && failing_here {
                Status::Failing
            } else {
                own
            };
            row.interfaces.push(InterfaceCoverage {
                operation: iface.operation.clone(),
                status: if is_expected {
                    shown
                } else {
                    Status::Unexpected
                },
                expected: is_expected,
                critical: false,
                observed: true,
            });
        }
        rows.push(row);
    }
    for (r, i, u) in pending {
        rows[r].interfaces[i].critical = units[u].1.critical;
    }
    units.sort_by(|a, b| a.0.cmp(&b.0));
    // Every expected edge, in order: those listed and those added above (never both).
    let mut expected_edges: Vec<((&str, &str), &ExpectedEdge)> = listed
        .iter()
        .map(|(k, e)| (*k, *e))
        .chain(added.iter().map(|k| (*k, &added_edge)))
        .collect();
    expected_edges.sort_unstable_by_key(|(k, _)| *k);
    let expected_edge = |c: &str, s: &str| {
        listed
            .get(&(c, s))
            .copied()
            .or_else(|| added.contains(&(c, s)).then_some(&added_edge))
    };

    // Edge statuses, for every expected edge.
    let edge_status = |c: &str, s: &str| -> Status {
        if edge_failing(c, s) {
            return Status::Failing;
        }
        if tested(c, s) {
            Status::Covered
        } else if expected
            .mocks
            .iter()
            .any(|(mock, real)| real == s && tested(c, mock))
        {
            Status::Stubbed
        } else {
            Status::Untested
        }
    };
    for (row, e) in rows.iter_mut().zip(run.edges()) {
        let (caller, callee) = (e.caller.id.as_str(), e.callee.id.as_str());
        match expected.mocks.get(callee) {
            Some(real) => {
                if let Some(exp) = expected_edge(caller, real) {
                    row.expected = true;
                    row.critical = exp.critical;
                    row.status = if edge_failing(caller, callee) {
                        Status::Failing
                    } else if tested(caller, callee) {
                        Status::Stubbed
                    } else {
                        Status::Untested
                    };
                }
            }
            None => {
                if let Some(exp) = expected_edge(caller, callee) {
                    row.expected = true;
                    row.critical = exp.critical;
                    row.status = edge_status(caller, callee);
                }
            }
        }
    }
    // The row of each observed edge (rows are in the graph's edge order; a graph has one edge
    // per caller and callee).
    let observed_rows: HashMap<(&str, &str), usize> = run
        .edges()
        .enumerate()
        .map(|(i, e)| ((e.caller.id.as_str(), e.callee.id.as_str()), i))
        .collect();

    // Expected edges and interfaces that no real row shows.
    let mut summary = Summary::default();
    let mut items: Vec<Named<'_>> = Vec::new();
    // Every unit's edge is expected (a unit is made only for an interface of an expected edge).
    let mut units_counted = 0;
    for ((c, s), exp) in expected_edges {
        let status = edge_status(c, s);
        summary.edges.count(status);
        if exp.critical {
            summary.critical.count(status);
        }
        items.push(Named {
            caller: c,
            callee: s,
            operation: None,
            critical: exp.critical,
            status,
        });
        let mut extra: Vec<InterfaceCoverage> = Vec::new();
        // The edge's interfaces, sorted here so that `items` ends up (nearly) sorted.
        let mut edge_items: Vec<Named<'_>> = Vec::new();
        let first = units.partition_point(|((uc, us, _), _)| (*uc, *us) < (c, s));
        for ((_, _, op), unit) in units[first..]
            .iter()
            .take_while(|((uc, us, _), _)| (*uc, *us) == (c, s))
        {
            units_counted += 1;
            summary.interfaces.count(unit.status);
            if unit.critical {
                summary.critical.count(unit.status);
            }
            edge_items.push(Named {
                caller: c,
                callee: s,
                operation: Some(op),
                critical: unit.critical,
                status: unit.status,
            });
            if !unit.has_real_row {
                extra.push(InterfaceCoverage {
                    operation: (*op).to_owned(),
                    status: unit.status,
                    expected: true,
                    critical: unit.critical,
                    observed: false,
                });
            }
        }
        let used = consumed.edge.get(&(c, s));
        for (i, iface) in exp.interfaces.iter().enumerate() {
            if used.is_some_and(|u| u.contains(&i)) {
                continue;
            }
            summary.interfaces.count(Status::Untested);
            if iface.critical {
                summary.critical.count(Status::Untested);
            }
            edge_items.push(Named {
                caller: c,
                callee: s,
                operation: Some(&iface.name),
                critical: iface.critical,
                status: Status::Untested,
            });
            extra.push(InterfaceCoverage {
                operation: iface.name.clone(),
                status: Status::Untested,
                expected: true,
                critical: iface.critical,
                observed: false,
            });
        }
        edge_items.sort();
        items.extend(edge_items);
        match observed_rows.get(&(c, s)).and_then(|&i| rows.get_mut(i)) {
            Some(row) => row.interfaces.extend(extra),
            None => rows.push(EdgeCoverage {
                caller: c.to_owned(),
                callee: s.to_owned(),
                status,
                expected: true,
                critical: exp.critical,
                observed: false,
                interfaces: extra,
            }),
        }
    }
    debug_assert_eq!(units_counted, units.len(), "a unit of an edge not expected");
    for (s, list) in &expected.any_caller {
        let used = consumed.any.get(s.as_str());
        let open: Vec<&super::expected::ExpectedInterface> = list
            .iter()
            .enumerate()
            .filter(|(i, _)| !used.is_some_and(|u| u.contains(i)))
            .map(|(_, iface)| iface)
            .collect();
        if open.is_empty() {
            continue;
        }
        for iface in &open {
            summary.interfaces.count(Status::Untested);
            if iface.critical {
                summary.critical.count(Status::Untested);
            }
            items.push(Named {
                caller: ANY_CALLER,
                callee: s,
                operation: Some(&iface.name),
                critical: iface.critical,
                status: Status::Untested,
            });
        }
        rows.push(EdgeCoverage {
            caller: ANY_CALLER.to_owned(),
            callee: s.clone(),
            status: Status::Untested,
            expected: true,
            critical: open.iter().any(|i| i.critical),
            observed: false,
            interfaces: open
                .iter()
                .map(|iface| InterfaceCoverage {
                    operation: iface.name.clone(),
                    status: Status::Untested,
                    expected: true,
                    critical: iface.critical,
                    observed: false,
                })
                .collect(),
        });
    }

    for row in &mut rows {
        row.interfaces.sort_by(|a, b| a.operation.cmp(&b.operation));
    }
    rows.sort_by(|a, b| (&a.caller, &a.callee).cmp(&(&b.caller, &b.callee)));
    items.sort();

    let mut unexpected = Vec::new();
    for row in &rows {
        if row.status == Status::Unexpected {
            unexpected.push(Item {
                caller: row.caller.clone(),
                callee: row.callee.clone(),
                operation: None,
                critical: false,
                status: Status::Unexpected,
            });
        }
        for i in row
            .interfaces
            .iter()
            .filter(|i| i.status == Status::Unexpected)
        {
            unexpected.push(Item {
                caller: row.caller.clone(),
                callee: row.callee.clone(),
                operation: Some(i.operation.clone()),
                critical: false,
                status: Status::Unexpected,
            });
        }
    }
    let by = |st: Status| -> Vec<Item> {
        items
            .iter()
            .filter(|i| i.status == st)
            .map(Named::owned)
            .collect()
    };
    let mut failed_tests: Vec<String> = run
        .tests()
        .iter()
        .filter(|t| t.failed())
        .map(|t| t.name.clone())
        .collect();
    failed_tests.dedup();
    Coverage {
        untested: by(Status::Untested),
        stubbed: by(Status::Stubbed),
        failing: by(Status::Failing),
        unexpected,
        edges: rows,
        summary,
        failed_tests,
    }
}

#[derive(Debug, Default)]
struct Matched {
    edge: Vec<usize>,
    any: Vec<usize>,
}

/// The expected interfaces an observed operation satisfies: among routes, the most specific
/// ones (so `/users/me` does not also satisfy `/users/{id}` when both are expected); every
/// example request it matches (all stand for this one interface).
fn match_interface(
    op: &Op,
    edge: Option<&[super::expected::ExpectedInterface]>,
    any: Option<&[super::expected::ExpectedInterface]>,
) -> Matched {
    let mut scored: Vec<(bool, usize, u32, bool)> = Vec::new();
    for (is_any, list) in [(false, edge), (true, any)] {
        for (i, exp) in list.into_iter().flatten().enumerate() {
            if let Some(score) = exp.op.score(op) {
                scored.push((is_any, i, score, exp.op.is_concrete()));
            }
        }
    }
    let best_route = scored
        .iter()
        .filter(|s| !s.3)
        .map(|s| s.2)
        .max()
        .unwrap_or(0);
    let mut out = Matched::default();
    for (is_any, i, score, concrete) in scored {
        if concrete || score == best_route {
            if is_any {
                out.any.push(i);
            } else {
                out.edge.push(i);
            }
        }
    }
    out
}
