//! The expected topology: the union of what the sources declare, with mocks resolved and
//! operations merged across route syntaxes.
//!
//! Owns `Expected` (built with `add`, `add_graph`, or `expected` from `Sources`) and the rules
//! of DESIGN's "Expected topology": with no source configured the expected set is everything
//! the store has seen; otherwise it is the union of the manifest, the contracts and a baseline,
//! and background traffic only when asked for.
//!
//! Operations are merged as they arrive: the same route in two syntaxes (`/users/:id`,
//! `/users/{id}`) is one interface, and an example request (a Pact path, `/users/42`) is folded
//! into a route it matches, so a Pact file with ten interactions on one endpoint does not count
//! as ten interfaces. An expected callee that a mock stands in for is always the real node.

use std::collections::BTreeMap;

use crate::graph::RunGraph;

use super::manifest::Manifest;
use super::route::{Op, canonical};
use super::{ANY_CALLER, Contract, Declared};

/// One expected operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExpectedInterface {
    pub op: Op,
    /// As shown in reports until a span names it: canonical (`{name}` parameters).
    pub name: String,
    pub critical: bool,
}

/// One expected edge and its interfaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ExpectedEdge {
    pub critical: bool,
    /// Some source listed this edge's interfaces: an interface of it that none lists is
    /// unexpected. An edge declared alone expects whatever interfaces it carries.
    pub lists_interfaces: bool,
    pub interfaces: Vec<ExpectedInterface>,
}

/// The expected topology.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub(crate) edges: BTreeMap<(String, String), ExpectedEdge>,
    /// Interfaces expected of a service from any caller (OpenAPI, a manifest edge from `*`).
    pub(crate) any_caller: BTreeMap<String, Vec<ExpectedInterface>>,
    /// Mock node id → the node it stands in for.
    pub(crate) mocks: BTreeMap<String, String>,
}

/// Where the expected topology comes from. The CLI fills in what it was given and what the
/// store holds.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sources<'a> {
    pub manifest: Option<&'a Manifest>,
    /// Pact files and OpenAPI documents, from the manifest and from flags.
    pub contracts: &'a [Contract],
    /// A baseline run's graph (`--baseline RUN`).
    pub baseline: Option<&'a RunGraph>,
    /// Background traffic: the traces that hold no test case, in a run or not.
    pub background: Option<&'a RunGraph>,
    /// Use `background` even though another source is configured (a flag; the manifest's
    /// `background: true` does the same).
    pub include_background: bool,
    /// Every trace the store holds: the expected set when no source is configured.
    pub everything: Option<&'a RunGraph>,
}

impl Sources<'_> {
    /// A source of expectations is configured: a manifest that declares something, a contract,
    /// or a baseline. Background traffic alone is not a source (it is opt-in beside one).
    pub fn configured(&self) -> bool {
        self.manifest.is_some_and(Manifest::declares_topology)
            || !self.contracts.is_empty()
            || self.baseline.is_some()
    }
}

/// The expected topology from `sources`, by DESIGN's rules.
pub fn expected(sources: &Sources<'_>) -> Expected {
    let mut out = Expected::default();
    if let Some(m) = sources.manifest {
        out.mocks = m.mocks.clone();
    }
    if !sources.configured() {
        if let Some(all) = sources.everything {
            out.add_graph(all);
        }
        return out;
    }
    let resolve = |name: &str| -> String {
        match sources.manifest {
            Some(m) => m.node_for(name).to_owned(),
            None => name.to_owned(),
        }
    };
    if let Some(m) = sources.manifest {
        for d in &m.declared {
            out.add(d);
        }
    }
    for c in sources.contracts {
        for d in &c.declared {
            out.add(&Declared {
                caller: d.caller.as_deref().map(resolve),
                callee: resolve(&d.callee),
                operation: d.operation.clone(),
                critical: d.critical,
            });
        }
    }
    if let Some(b) = sources.baseline {
        out.add_graph(b);
    }
    let background = sources.include_background || sources.manifest.is_some_and(|m| m.background);
    if background && let Some(bg) = sources.background {
        out.add_graph(bg);
    }
    out
}

impl Expected {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares `mock` a stand-in for `real`. Call before adding expectations: later additions
    /// with `mock` as callee are filed under `real`.
    pub fn add_mock(&mut self, mock: &str, real: &str) {
        self.mocks.insert(mock.to_owned(), real.to_owned());
    }

    fn real<'a>(&'a self, node: &'a str) -> &'a str {
        self.mocks.get(node).map_or(node, String::as_str)
    }

    /// Adds one declared edge or interface.
    pub fn add(&mut self, d: &Declared) {
        let callee = self.real(&d.callee).to_owned();
        match (&d.caller, &d.operation) {
            (None, Some(op)) => {
                let list = self.any_caller.entry(callee).or_default();
                merge(list, op, d.critical);
            }
            (None, None) => {}
            (Some(caller), op) if caller == ANY_CALLER => {
                if let Some(op) = op {
                    let list = self.any_caller.entry(callee).or_default();
                    merge(list, op, d.critical);
                }
            }
            (Some(caller), None) => {
                let e = self.edges.entry((caller.clone(), callee)).or_default();
                e.critical |= d.critical;
            }
            (Some(caller), Some(op)) => {
                let e = self.edges.entry((caller.clone(), callee)).or_default();
                e.lists_interfaces = true;
                merge(&mut e.interfaces, op, d.critical);
            }
        }
    }

    /// Adds every edge and interface of a graph (a baseline, background traffic, the store).
    pub fn add_graph(&mut self, graph: &RunGraph) {
        for e in graph.edges() {
            let key = (e.caller.id.clone(), self.real(&e.callee.id).to_owned());
            let entry = self.edges.entry(key).or_default();
            entry.lists_interfaces = true;
            for i in &e.edge.interfaces {
                // An operation already listed under the name it is shown by is merged already:
                // a name is the canonical form of what was merged, which parses to the same
                // route, so merging it again would change nothing. (A run's report adds its own
                // graph to everything seen, which holds nearly all of it.)
                if entry.interfaces.iter().any(|x| x.name == i.operation) {
                    continue;
                }
                merge(&mut entry.interfaces, &i.operation, false);
            }
        }
    }

    /// Nothing is expected.
    pub fn is_empty(&self) -> bool {
        self.edges.is_empty() && self.any_caller.is_empty()
    }

    /// The expected edges (caller, callee), sorted.
    pub fn edges(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.edges.keys().map(|(a, b)| (a.as_str(), b.as_str()))
    }

    /// The expected interfaces as (caller, callee, operation), `*` for any caller.
    pub fn interfaces(&self) -> impl Iterator<Item = (&str, &str, &str)> + '_ {
        let concrete = self.edges.iter().flat_map(|((c, s), e)| {
            e.interfaces
                .iter()
                .map(move |i| (c.as_str(), s.as_str(), i.name.as_str()))
        });
        let any = self.any_caller.iter().flat_map(|(s, list)| {
            list.iter()
                .map(move |i| (ANY_CALLER, s.as_str(), i.name.as_str()))
        });
        concrete.chain(any)
    }
}

/// Adds `text` to `list`, merging it with the same route, or folding an example into the route
/// it matches best (and examples already there into a new route that matches them).
fn merge(list: &mut Vec<ExpectedInterface>, text: &str, critical: bool) {
    let op = Op::lenient(text);
    if let Some(same) = list.iter_mut().find(|i| i.op.same_route(&op)) {
        same.critical |= critical;
        return;
    }
    if op.is_concrete() {
        let best = list
            .iter_mut()
            .filter(|i| !i.op.is_concrete())
            .filter_map(|i| i.op.score(&op).map(|s| (s, i)))
            .max_by_key(|(s, _)| *s);
        if let Some((_, route)) = best {
            route.critical |= critical;
            return;
        }
        list.push(ExpectedInterface {
            op,
            name: canonical(text),
            critical,
        });
        return;
    }
    let mut absorbed = critical;
    list.retain(|i| {
        let fold = i.op.is_concrete() && i.op.score(&op).is_some();
        absorbed |= fold && i.critical;
        !fold
    });
    list.push(ExpectedInterface {
        op,
        name: canonical(text),
        critical: absorbed,
    });
}
