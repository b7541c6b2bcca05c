//! `RunDigest`: what history needs of one run, read in well under a millisecond however large
//! the run was.
//!
//! A run's rollup turned into its graph costs as much as the run has interfaces, tests and
//! latency buckets (tens of milliseconds for a 100,000-span run); a question over a suite's last
//! runs would pay that once a run. The digest keeps only what `flaky`, the trends and `diff`
//! read: per interface and per edge its calls, errors, hops in error inside failed tests, p95
//! and the tests that crossed it (interfaces only), and the failures placed on a hop with their
//! test and class. Its interfaces make a graph (`graph`) that coverage and the expected set
//! read as they read the run's own; `diff` reads the failures in full from `RunFailures`.
//!
//! Key design decision: the digest is its encoded bytes, read where they lie. Decoding a
//! serde-encoded digest (a vector and a list of tests per interface, ten thousand of them in a
//! 100,000-span run) cost about as much as reading it, a millisecond or two a run, so a question
//! over a hundred runs would spend most of its time decoding interfaces it never looks at.
//! Here every name is stored once, sorted, so a name's index orders like the name; interfaces
//! and edges are fixed-width records of name indices, sorted, found by binary search over
//! integers; each record points at its figures and tests, varints decoded only when that item
//! is asked for. Opening a digest checks the layout and the names once.
//!
//! Layout (little-endian `u32`s unless said): version; the names (count, each one's end offset,
//! then their UTF-8 bytes); the interfaces (count, then `caller, callee, operation, body`); the
//! edges (the same, operation `NONE`); the failures (count, then `test` (`NONE` for none),
//! `class, caller, callee, operation`); then the bodies: varints `calls, errors,
//! failing_errors, p95_ns + 1 (0 for none), tested, test count`, then the tests' name indices as
//! ascending deltas.
//!
//! Built from a run's graph and blame (`RunDigest::of`), so it names nodes exactly as the run's
//! report does. Pure: no I/O; `history` stores it.

use std::collections::{BTreeSet, HashMap};

use crate::blame::Blame;
use crate::graph::run::{InterfaceParts, Interner, Totals, assemble_interfaces};
use crate::graph::{Diagnostics, NodeKind, RunGraph};

/// Bumped when what a digest holds changes: stored digests of another version are made again.
pub const DIGEST_VERSION: u32 = 2;

/// No name (an edge's operation, a failure outside any test).
const NONE: u32 = u32::MAX;
/// Bytes of an interface or edge record.
const RECORD: usize = 16;
/// Bytes of a failure record.
const FAILURE: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDigest {
    bytes: Vec<u8>,
    n_names: usize,
    /// Where the names' end offsets start; their bytes follow them.
    names_at: usize,
    names_data: usize,
    n_interfaces: usize,
    interfaces_at: usize,
    n_edges: usize,
    edges_at: usize,
    n_failures: usize,
    failures_at: usize,
    bodies_at: usize,
}

/// The figures of an interface or an edge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Item {
    pub calls: u64,
    pub errors: u64,
    /// Hops in error inside a failed test (`graph::Interface::failing_errors`).
    pub failing_errors: u64,
    /// The calling side's p95, or the answering side's for calls no calling span measured (a
    /// queue's deliveries), in nanoseconds; as the report's edges read latency.
    pub p95_ns: Option<u64>,
    /// Whether any test crossed it.
    pub tested: bool,
}

/// A failure placed on a hop, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureRef<'d> {
    pub test: Option<&'d str>,
    pub class: &'d str,
    pub caller: &'d str,
    pub callee: &'d str,
    pub operation: &'d str,
}

/// An item of the digest with its names.
#[derive(Debug, Clone, Copy)]
pub struct ItemRef<'d> {
    pub caller: &'d str,
    pub callee: &'d str,
    pub operation: Option<&'d str>,
    pub item: Item,
    /// Where its tests' indices start in the digest's bytes, and how many.
    tests_at: usize,
    n_tests: usize,
    digest: &'d RunDigest,
}

impl<'d> ItemRef<'d> {
    /// The tests' name indices, ascending.
    fn test_ids(&self) -> impl Iterator<Item = u32> + 'd {
        let bytes = &self.digest.bytes;
        let mut at = self.tests_at;
        let mut id = 0u64;
        (0..self.n_tests).map_while(move |_| {
            id += varint(bytes, &mut at)?;
            u32::try_from(id).ok()
        })
    }

    /// The names of the tests that crossed it, sorted (interfaces only).
    pub fn tests(&self) -> impl Iterator<Item = &'d str> + 'd {
        let d = self.digest;
        self.test_ids().map(move |t| d.name(t))
    }

    /// Whether the test named `name` crossed it.
    pub fn crossed_by(&self, name: &str) -> bool {
        let Some(id) = self.digest.name_id(name) else {
            return false;
        };
        self.test_ids().take_while(|&t| t <= id).any(|t| t == id)
    }
}

/// One interface or edge while a digest is built.
struct Part<'a> {
    caller: &'a str,
    callee: &'a str,
    operation: Option<&'a str>,
    item: Item,
    tests: Vec<&'a str>,
}

/// A failure while a digest is built: (test, class, caller, callee, operation).
type FailurePart<'a> = (Option<&'a str>, &'a str, &'a str, &'a str, &'a str);

/// The calling side's p95, else the answering side's.
fn p95(client: &crate::graph::Latency, server: &crate::graph::Latency) -> Option<u64> {
    client.p95.or(server.p95)
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The varint at `at`, moving past it; `None` past the end or over 64 bits.
fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Encodes the parts (in any order) into a digest.
fn build(
    mut interfaces: Vec<Part<'_>>,
    mut edges: Vec<Part<'_>>,
    failures: &[FailurePart<'_>],
) -> RunDigest {
    let mut set: BTreeSet<&str> = BTreeSet::new();
    for p in interfaces.iter().chain(&edges) {
        set.extend([p.caller, p.callee]);
        set.extend(p.operation);
        set.extend(p.tests.iter().copied());
    }
    for (test, class, caller, callee, operation) in failures {
        set.extend(*test);
        set.extend([*class, *caller, *callee, *operation]);
    }
    let names: Vec<&str> = set.into_iter().collect();
    let id: HashMap<&str, u32> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, i as u32))
        .collect();
    let key = |p: &Part<'_>| {
        (
            id[p.caller],
            id[p.callee],
            p.operation.map_or(NONE, |o| id[o]),
        )
    };
    interfaces.sort_by_key(key);
    edges.sort_by_key(key);

    let mut out = Vec::new();
    put_u32(&mut out, DIGEST_VERSION);
    put_u32(&mut out, names.len() as u32);
    let mut end = 0u32;
    for n in &names {
        end += n.len() as u32;
        put_u32(&mut out, end);
    }
    for n in &names {
        out.extend_from_slice(n.as_bytes());
    }
    let mut bodies = Vec::new();
    for list in [&interfaces, &edges] {
        put_u32(&mut out, list.len() as u32);
        for p in list.iter() {
            let (a, b, o) = key(p);
            for v in [a, b, o, bodies.len() as u32] {
                put_u32(&mut out, v);
            }
            let i = &p.item;
            for v in [
                i.calls,
                i.errors,
                i.failing_errors,
                i.p95_ns.map_or(0, |p| p.saturating_add(1)),
                u64::from(i.tested),
            ] {
                put_varint(&mut bodies, v);
            }
            let mut tests: Vec<u32> = p.tests.iter().map(|t| id[t]).collect();
            tests.sort_unstable();
            tests.dedup();
            put_varint(&mut bodies, tests.len() as u64);
            let mut last = 0;
            for t in tests {
                put_varint(&mut bodies, u64::from(t - last));
                last = t;
            }
        }
    }
    put_u32(&mut out, failures.len() as u32);
    for (test, class, caller, callee, operation) in failures {
        for v in [
            test.map_or(NONE, |t| id[t]),
            id[class],
            id[caller],
            id[callee],
            id[operation],
        ] {
            put_u32(&mut out, v);
        }
    }
    out.extend_from_slice(&bodies);
    RunDigest::decode(out).expect("a digest just built reads back")
}

impl RunDigest {
    /// The digest of a run's graph and blame (as `Rollup::graph` gives them).
    pub fn of(graph: &RunGraph, blame: &Blame) -> RunDigest {
        let mut interfaces = Vec::new();
        let mut edges = Vec::with_capacity(graph.edges().len());
        for e in graph.edges() {
            for i in &e.edge.interfaces {
                interfaces.push(Part {
                    caller: &e.caller.id,
                    callee: &e.callee.id,
                    operation: Some(&i.operation),
                    item: Item {
                        calls: i.calls,
                        errors: i.errors,
                        failing_errors: i.failing_errors,
                        p95_ns: p95(&i.client.latency(), &i.server.latency()),
                        tested: !i.tests.is_empty(),
                    },
                    tests: i.tests.iter().map(String::as_str).collect(),
                });
            }
            edges.push(Part {
                caller: &e.caller.id,
                callee: &e.callee.id,
                operation: None,
                item: Item {
                    calls: e.edge.calls,
                    errors: e.edge.errors,
                    failing_errors: e.edge.interfaces.iter().map(|i| i.failing_errors).sum(),
                    p95_ns: p95(&e.edge.client_latency, &e.edge.server_latency),
                    tested: !e.edge.tests.is_empty(),
                },
                tests: Vec::new(),
            });
        }
        let failures: Vec<FailurePart<'_>> = blame
            .failures
            .iter()
            .filter_map(|f| {
                let hop = f.hop.as_ref()?;
                Some((
                    f.test.as_deref(),
                    f.class.as_str(),
                    hop.caller.as_str(),
                    hop.callee.as_str(),
                    hop.operation.as_str(),
                ))
            })
            .collect();
        build(interfaces, edges, &failures)
    }

    /// The encoded digest, as it is stored.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// A stored digest, when it is of this version and its layout holds together.
    pub fn decode(bytes: Vec<u8>) -> Option<Self> {
        if u32_at(&bytes, 0)? != DIGEST_VERSION {
            return None;
        }
        let n_names = u32_at(&bytes, 4)? as usize;
        let names_at: usize = 8;
        let names_data = names_at.checked_add(n_names.checked_mul(4)?)?;
        let names_len = if n_names == 0 {
            0
        } else {
            u32_at(&bytes, names_data - 4)? as usize
        };
        let mut at = names_data.checked_add(names_len)?;
        // Every name is in bounds, in order, and UTF-8.
        let mut start = 0usize;
        for i in 0..n_names {
            let end = u32_at(&bytes, names_at + 4 * i)? as usize;
            let name = bytes.get(names_data + start..names_data + end)?;
            std::str::from_utf8(name).ok()?;
            start = end;
        }
        let mut section = |width: usize| -> Option<(usize, usize)> {
            let n = u32_at(&bytes, at)? as usize;
            let from = at + 4;
            at = from.checked_add(n.checked_mul(width)?)?;
            (at <= bytes.len()).then_some((n, from))
        };
        let (n_interfaces, interfaces_at) = section(RECORD)?;
        let (n_edges, edges_at) = section(RECORD)?;
        let (n_failures, failures_at) = section(FAILURE)?;
        let d = RunDigest {
            n_names,
            names_at,
            names_data,
            n_interfaces,
            interfaces_at,
            n_edges,
            edges_at,
            n_failures,
            failures_at,
            bodies_at: at,
            bytes,
        };
        // Every name index a record or a failure holds names a name.
        let named = |i: u32| (i as usize) < d.n_names;
        let records_ok = (0..d.n_interfaces)
            .map(|i| d.interfaces_at + i * RECORD)
            .chain((0..d.n_edges).map(|i| d.edges_at + i * RECORD))
            .all(|r| {
                let ids = (0..3).map(|k| u32_at(&d.bytes, r + 4 * k).unwrap_or(NONE));
                ids.enumerate()
                    .all(|(k, v)| named(v) || (k == 2 && v == NONE))
            });
        let failures_ok = (0..d.n_failures).all(|i| {
            (0..5).all(|k| {
                let v = u32_at(&d.bytes, d.failures_at + i * FAILURE + 4 * k).unwrap_or(NONE);
                named(v) || (k == 0 && v == NONE)
            })
        });
        (records_ok && failures_ok).then_some(d)
    }

    fn name(&self, i: u32) -> &str {
        let i = i as usize;
        if i >= self.n_names {
            return "";
        }
        let end = u32_at(&self.bytes, self.names_at + 4 * i).unwrap_or(0) as usize;
        let start = match i {
            0 => 0,
            _ => u32_at(&self.bytes, self.names_at + 4 * (i - 1)).unwrap_or(0) as usize,
        };
        self.bytes
            .get(self.names_data + start..self.names_data + end)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    /// The index of a name, when the digest holds it.
    fn name_id(&self, name: &str) -> Option<u32> {
        let (mut lo, mut hi) = (0usize, self.n_names);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.name(mid as u32).cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid as u32),
            }
        }
        None
    }

    fn key(&self, section_at: usize, i: usize) -> (u32, u32, u32) {
        let r = section_at + i * RECORD;
        let get = |k: usize| u32_at(&self.bytes, r + 4 * k).unwrap_or(NONE);
        (get(0), get(1), get(2))
    }

    fn item_ref(&self, section_at: usize, i: usize) -> ItemRef<'_> {
        let (a, b, o) = self.key(section_at, i);
        let body = u32_at(&self.bytes, section_at + i * RECORD + 12).unwrap_or(0) as usize;
        let mut at = self.bodies_at.saturating_add(body);
        let mut next = || varint(&self.bytes, &mut at).unwrap_or(0);
        let item = Item {
            calls: next(),
            errors: next(),
            failing_errors: next(),
            p95_ns: next().checked_sub(1),
            tested: next() != 0,
        };
        let n_tests = next() as usize;
        ItemRef {
            caller: self.name(a),
            callee: self.name(b),
            operation: (o != NONE).then(|| self.name(o)),
            item,
            tests_at: at,
            n_tests,
            digest: self,
        }
    }

    /// The record of `key` in a section of `n` records, by binary search.
    fn find(&self, section_at: usize, n: usize, key: (u32, u32, u32)) -> Option<ItemRef<'_>> {
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.key(section_at, mid).cmp(&key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(self.item_ref(section_at, mid)),
            }
        }
        None
    }

    /// The interface (caller, callee, operation), when the run crossed it.
    pub fn interface(&self, caller: &str, callee: &str, operation: &str) -> Option<ItemRef<'_>> {
        let key = (
            self.name_id(caller)?,
            self.name_id(callee)?,
            self.name_id(operation)?,
        );
        self.find(self.interfaces_at, self.n_interfaces, key)
    }

    /// The edge (caller, callee), when the run crossed it.
    pub fn edge(&self, caller: &str, callee: &str) -> Option<ItemRef<'_>> {
        let key = (self.name_id(caller)?, self.name_id(callee)?, NONE);
        self.find(self.edges_at, self.n_edges, key)
    }

    /// The interfaces whose caller is `caller`, in order of callee and operation.
    pub fn interfaces_from<'d>(&'d self, caller: &str) -> impl Iterator<Item = ItemRef<'d>> + 'd {
        let range = match self.name_id(caller) {
            Some(c) => {
                let first = |at_least: u32| {
                    let (mut lo, mut hi) = (0usize, self.n_interfaces);
                    while lo < hi {
                        let mid = (lo + hi) / 2;
                        if self.key(self.interfaces_at, mid).0 < at_least {
                            lo = mid + 1;
                        } else {
                            hi = mid;
                        }
                    }
                    lo
                };
                first(c)..c.checked_add(1).map_or(self.n_interfaces, first)
            }
            None => 0..0,
        };
        range.map(move |i| self.item_ref(self.interfaces_at, i))
    }

    /// Every edge, in order of caller and callee.
    pub fn edges(&self) -> impl Iterator<Item = ItemRef<'_>> {
        (0..self.n_edges).map(move |i| self.item_ref(self.edges_at, i))
    }

    /// Every interface, in order of caller, callee and operation.
    pub fn interfaces(&self) -> impl Iterator<Item = ItemRef<'_>> {
        (0..self.n_interfaces).map(move |i| self.item_ref(self.interfaces_at, i))
    }

    /// The run's interfaces as a graph: what coverage, the expected set and a report's edges
    /// read of a run (see `graph_of`).
    pub fn graph(&self) -> RunGraph {
        graph_of(self.interfaces())
    }

    /// The failures placed on a hop, in the report's order.
    pub fn failures(&self) -> impl Iterator<Item = FailureRef<'_>> {
        (0..self.n_failures).map(move |i| {
            let get =
                |k: usize| u32_at(&self.bytes, self.failures_at + i * FAILURE + 4 * k).unwrap_or(0);
            FailureRef {
                test: (get(0) != NONE).then(|| self.name(get(0))),
                class: self.name(get(1)),
                caller: self.name(get(2)),
                callee: self.name(get(3)),
                operation: self.name(get(4)),
            }
        })
    }

    /// Whether any failure of the run was placed on a hop.
    pub fn has_failures(&self) -> bool {
        self.n_failures > 0
    }
}

/// A graph of a digest's interfaces: their calls, errors, whether a test crossed each and its
/// hops in error inside failed tests — all that `coverage::coverage`, `Expected::add_graph` and
/// `report::build`'s edges and interfaces read of a run. It has no latency, no tests by name
/// (one nameless test stands for all that crossed an interface), no hops, and every node is a
/// service: a reader that needs more reads the digest.
pub(crate) fn graph_of<'d>(items: impl Iterator<Item = ItemRef<'d>>) -> RunGraph {
    let mut nodes: Interner<NodeKind> = Interner::default();
    let mut operations: Interner<()> = Interner::default();
    let mut parts = Vec::with_capacity(items.size_hint().0);
    for i in items {
        let a = nodes.intern(i.caller, NodeKind::Service);
        let b = nodes.intern(i.callee, NodeKind::Service);
        let op = operations.intern(i.operation.unwrap_or(""), ());
        // Hops in error inside a failed test are hops of a test: they imply one crossed it.
        let named_tests = if i.item.tested {
            vec![(String::new(), i.item.failing_errors)]
        } else {
            Vec::new()
        };
        parts.push((
            (a, b, op),
            InterfaceParts {
                calls: i.item.calls,
                errors: i.item.errors,
                named_tests,
                ..InterfaceParts::default()
            },
        ));
    }
    assemble_interfaces(
        Totals {
            nodes,
            operations,
            tests: Vec::new(),
            spans: 0,
            traces: 0,
            diagnostics: Diagnostics::default(),
        },
        parts,
        Vec::new(),
    )
}

#[cfg(test)]
impl RunDigest {
    /// A digest from its parts, for tests: interfaces as (caller, callee, operation, the tests
    /// that crossed it) with one call each per test, failures as (test, class, caller, callee,
    /// operation).
    pub(crate) fn from_parts(
        interfaces: &[(&str, &str, &str, &[&str])],
        failures: &[(Option<&str>, &str, &str, &str, &str)],
    ) -> RunDigest {
        let parts = interfaces
            .iter()
            .map(|&(caller, callee, op, tests)| {
                let failing = failures
                    .iter()
                    .filter(|f| (f.2, f.3, f.4) == (caller, callee, op))
                    .count() as u64;
                Part {
                    caller,
                    callee,
                    operation: Some(op),
                    item: Item {
                        calls: tests.len().max(1) as u64,
                        errors: failing,
                        failing_errors: failing,
                        p95_ns: Some(1_000_000),
                        tested: !tests.is_empty(),
                    },
                    tests: tests.to_vec(),
                }
            })
            .collect();
        build(parts, Vec::new(), failures)
    }
}
