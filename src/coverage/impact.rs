//! Test impact: which tests to run when some services change.
//!
//! Owns `impact`. A test is impacted when it exercised an edge with a changed service at
//! either end: a change to payments reruns the tests whose traces reached payments, through
//! whatever path. Names are node ids; a bare service name also finds that service under a
//! namespace (`cart` finds `shop/cart`), since people type the name they deploy.

use std::collections::BTreeSet;

use crate::graph::{NodeKind, RunGraph};

/// The tests that exercised any edge touching the `changed` services, sorted, deduplicated.
pub fn impact(graph: &RunGraph, changed: &[String]) -> Vec<String> {
    let touches = |id: &str, kind: NodeKind| {
        changed.iter().any(|c| {
            id == c
                || (kind == NodeKind::Service
                    && !c.contains('/')
                    && id.rsplit_once('/').is_some_and(|(_, name)| name == c))
        })
    };
    let mut tests: BTreeSet<&str> = BTreeSet::new();
    for e in graph.edges() {
        if touches(&e.caller.id, e.caller.kind) || touches(&e.callee.id, e.callee.kind) {
            tests.extend(e.edge.tests.iter().map(String::as_str));
        }
    }
    tests.into_iter().map(str::to_owned).collect()
}
