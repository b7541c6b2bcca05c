//! `RunDigest`: what history needs of one run, small enough that twenty or a hundred of them are
//! read in milliseconds.
//!
//! A run's rollup turned into its graph costs as much as the run has interfaces, tests and
//! latency buckets (tens of milliseconds for a 100,000-span run); a question over a suite's last
//! runs would pay that once a run. The digest keeps only what `flaky` and the trends read: per
//! interface and per edge its calls, errors, hops in error inside failed tests, p95 and the
//! names of the tests that crossed it (interfaces only), and the failures placed on a hop with
//! their test and class. Every name is interned once per digest.
//!
//! Built from a run's graph and blame (`RunDigest::of`), so it names nodes exactly as the run's
//! report does. Pure: no I/O; `history` stores it.

use serde::{Deserialize, Serialize};

use crate::blame::Blame;
use crate::graph::RunGraph;

/// Bumped when what a digest holds changes: stored digests of another version are recomputed.
pub const DIGEST_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunDigest {
    pub version: u32,
    /// Node ids, operations, test names and class names; the rest refer to them by index.
    names: Vec<String>,
    /// Every interface of the run's graph, sorted by (caller, callee, operation) name.
    interfaces: Vec<Item>,
    /// Every edge, sorted by (caller, callee) name; `operation` is none and `tests` empty.
    edges: Vec<Item>,
    /// The failures placed on a hop (not `silent` ones), in the report's order.
    failures: Vec<PlacedFailure>,
}

/// An interface or an edge of the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    caller: u32,
    callee: u32,
    operation: Option<u32>,
    pub calls: u64,
    pub errors: u64,
    /// Hops in error inside a failed test (`graph::Interface::failing_errors`).
    pub failing_errors: u64,
    /// The calling side's p95, or the answering side's for calls no calling span measured (a
    /// queue's deliveries), in nanoseconds; as the report's edges read latency.
    pub p95_ns: Option<u64>,
    /// Whether any test crossed it.
    pub tested: bool,
    /// Interfaces: the tests that crossed it, sorted by name.
    tests: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PlacedFailure {
    test: Option<u32>,
    class: u32,
    caller: u32,
    callee: u32,
    operation: u32,
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
    pub item: &'d Item,
    digest: &'d RunDigest,
}

impl<'d> ItemRef<'d> {
    /// The names of the tests that crossed it, sorted (interfaces only).
    pub fn tests(&self) -> impl Iterator<Item = &'d str> + 'd {
        let d = self.digest;
        self.item.tests.iter().map(move |&t| d.name(t))
    }

    /// Whether the test named `name` crossed it.
    pub fn crossed_by(&self, name: &str) -> bool {
        self.item
            .tests
            .binary_search_by(|&t| self.digest.name(t).cmp(name))
            .is_ok()
    }
}

/// Interns names while a digest is built.
#[derive(Default)]
struct Names {
    list: Vec<String>,
    index: std::collections::HashMap<String, u32>,
}

impl Names {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.list.len() as u32;
        self.list.push(name.to_owned());
        self.index.insert(name.to_owned(), i);
        i
    }
}

/// The calling side's p95, else the answering side's.
fn p95(client: &crate::graph::Latency, server: &crate::graph::Latency) -> Option<u64> {
    client.p95.or(server.p95)
}

impl RunDigest {
    /// The digest of a run's graph and blame (as `Rollup::graph` gives them).
    pub fn of(graph: &RunGraph, blame: &Blame) -> RunDigest {
        let mut names = Names::default();
        let mut interfaces = Vec::new();
        let mut edges = Vec::with_capacity(graph.edges().len());
        // The graph's edges come sorted by (caller, callee) and their interfaces by operation,
        // so the lists are sorted by name as they are built.
        for e in graph.edges() {
            let caller = names.id(&e.caller.id);
            let callee = names.id(&e.callee.id);
            for i in &e.edge.interfaces {
                // Test names are sorted and deduplicated in the graph.
                let tests = i.tests.iter().map(|t| names.id(t)).collect();
                interfaces.push(Item {
                    caller,
                    callee,
                    operation: Some(names.id(&i.operation)),
                    calls: i.calls,
                    errors: i.errors,
                    failing_errors: i.failing_errors,
                    p95_ns: p95(&i.client.latency(), &i.server.latency()),
                    tested: !i.tests.is_empty(),
                    tests,
                });
            }
            edges.push(Item {
                caller,
                callee,
                operation: None,
                calls: e.edge.calls,
                errors: e.edge.errors,
                failing_errors: e.edge.interfaces.iter().map(|i| i.failing_errors).sum(),
                p95_ns: p95(&e.edge.client_latency, &e.edge.server_latency),
                tested: !e.edge.tests.is_empty(),
                tests: Vec::new(),
            });
        }
        let failures = blame
            .failures
            .iter()
            .filter_map(|f| {
                let hop = f.hop.as_ref()?;
                Some(PlacedFailure {
                    test: f.test.as_deref().map(|t| names.id(t)),
                    class: names.id(f.class.as_str()),
                    caller: names.id(&hop.caller),
                    callee: names.id(&hop.callee),
                    operation: names.id(&hop.operation),
                })
            })
            .collect();
        RunDigest {
            version: DIGEST_VERSION,
            names: names.list,
            interfaces,
            edges,
            failures,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain owned data into a Vec cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// A stored digest, when it decodes and is of this version.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes::<RunDigest>(bytes)
            .ok()
            .filter(|d| d.version == DIGEST_VERSION)
    }

    fn name(&self, i: u32) -> &str {
        self.names.get(i as usize).map_or("", String::as_str)
    }

    fn item_ref<'d>(&'d self, item: &'d Item) -> ItemRef<'d> {
        ItemRef {
            caller: self.name(item.caller),
            callee: self.name(item.callee),
            operation: item.operation.map(|o| self.name(o)),
            item,
            digest: self,
        }
    }

    /// The interface (caller, callee, operation), when the run crossed it.
    pub fn interface(&self, caller: &str, callee: &str, operation: &str) -> Option<ItemRef<'_>> {
        let i = self
            .interfaces
            .binary_search_by(|i| {
                (
                    self.name(i.caller),
                    self.name(i.callee),
                    i.operation.map_or("", |o| self.name(o)),
                )
                    .cmp(&(caller, callee, operation))
            })
            .ok()?;
        Some(self.item_ref(&self.interfaces[i]))
    }

    /// The edge (caller, callee), when the run crossed it.
    pub fn edge(&self, caller: &str, callee: &str) -> Option<ItemRef<'_>> {
        let i = self
            .edges
            .binary_search_by(|e| (self.name(e.caller), self.name(e.callee)).cmp(&(caller, callee)))
            .ok()?;
        Some(self.item_ref(&self.edges[i]))
    }

    /// The interfaces whose caller is `caller`, in order.
    pub fn interfaces_from<'d>(&'d self, caller: &'d str) -> impl Iterator<Item = ItemRef<'d>> {
        let start = self
            .interfaces
            .partition_point(|i| self.name(i.caller) < caller);
        self.interfaces[start..]
            .iter()
            .take_while(move |i| self.name(i.caller) == caller)
            .map(move |i| self.item_ref(i))
    }

    /// The failures placed on a hop.
    pub fn failures(&self) -> impl Iterator<Item = FailureRef<'_>> {
        self.failures.iter().map(move |f| FailureRef {
            test: f.test.map(|t| self.name(t)),
            class: self.name(f.class),
            caller: self.name(f.caller),
            callee: self.name(f.callee),
            operation: self.name(f.operation),
        })
    }

    /// Whether any failure of the run was placed on a hop.
    pub fn has_failures(&self) -> bool {
        !self.failures.is_empty()
    }
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
        let mut names = Names::default();
        let mut sorted: Vec<_> = interfaces.to_vec();
        sorted.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        let mut items = Vec::new();
        for (caller, callee, op, tests) in sorted {
            let mut tests: Vec<&str> = tests.to_vec();
            tests.sort_unstable();
            let failing = failures
                .iter()
                .filter(|f| (f.2, f.3, f.4) == (caller, callee, op))
                .count() as u64;
            items.push(Item {
                caller: names.id(caller),
                callee: names.id(callee),
                operation: Some(names.id(op)),
                calls: tests.len().max(1) as u64,
                errors: failing,
                failing_errors: failing,
                p95_ns: Some(1_000_000),
                tested: !tests.is_empty(),
                tests: tests.iter().map(|t| names.id(t)).collect(),
            });
        }
        let failures = failures
            .iter()
            .map(|(test, class, caller, callee, op)| PlacedFailure {
                test: test.map(|t| names.id(t)),
                class: names.id(class),
                caller: names.id(caller),
                callee: names.id(callee),
                operation: names.id(op),
            })
            .collect();
        RunDigest {
            version: DIGEST_VERSION,
            names: names.list,
            interfaces: items,
            edges: Vec::new(),
            failures,
        }
    }
}
