//! Everything the store has seen, kept up to date as results are stored and traces removed, so
//! that the expected set "every edge and interface seen in any trace" costs as much as there are
//! distinct interfaces, not as much as the store holds.
//!
//! Owns the `seen` table: one row per distinct fact a stored result contributes — a service, an
//! address a service answered on, a hop's (caller, callee, operation) with the callee kept raw
//! when the address map decides it — with the number of stored results that hold it. Storing a
//! result adds its facts (after taking away those of the result it replaces); removing a trace
//! takes away its result's facts. Facts no result holds any more are deleted.

use std::collections::BTreeSet;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

use super::{Counts, HopRecord, TargetRecord, TraceResult};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Fact {
    Service(String),
    Learned(String, Option<u16>, String),
    /// (caller id, caller kind), (callee id, callee kind) as the trace named it, the raw target
    /// when there is one, the operation.
    Hop((String, u8), (String, u8), Option<TargetRecord>, String),
}

fn facts(r: &TraceResult) -> BTreeSet<Vec<u8>> {
    let mut out = BTreeSet::new();
    let mut put = |f: Fact| {
        if let Ok(key) = postcard::to_stdvec(&f) {
            out.insert(key);
        }
    };
    for s in &r.services {
        put(Fact::Service(s.clone()));
    }
    for (host, port, service) in &r.learned {
        put(Fact::Learned(host.clone(), *port, service.clone()));
    }
    for h in &r.hops {
        let node = |i: u32| r.nodes.get(i as usize).cloned().unwrap_or_default();
        put(Fact::Hop(
            node(h.caller),
            node(h.callee),
            h.target.clone(),
            r.operations
                .get(h.operation as usize)
                .cloned()
                .unwrap_or_default(),
        ));
    }
    out
}

fn apply(conn: &Connection, r: &TraceResult, delta: i64) -> Result<(), StoreError> {
    let mut add = conn.prepare_cached(
        "INSERT INTO seen (fact, n) VALUES (?1, ?2) ON CONFLICT (fact) DO UPDATE SET n = n + ?2",
    )?;
    let mut drop_zero = conn.prepare_cached("DELETE FROM seen WHERE fact = ?1 AND n <= 0")?;
    for key in facts(r) {
        add.execute(params![key, delta])?;
        if delta < 0 {
            drop_zero.execute(params![key])?;
        }
    }
    Ok(())
}

/// Adds the facts of `result`, replacing those of the result stored for its trace before (call
/// inside the transaction that replaces the row, before replacing it).
pub(crate) fn replace(conn: &Connection, result: &TraceResult) -> Result<(), StoreError> {
    forget(conn, &result.trace_id)?;
    apply(conn, result, 1)
}

/// Takes away the facts of the result stored for `trace_id`, if any (call before the row goes).
pub fn forget(conn: &Connection, trace_id: &[u8]) -> Result<(), StoreError> {
    let old: Option<Vec<u8>> = conn
        .prepare_cached("SELECT data FROM trace_results WHERE trace_id = ?1")?
        .query_row(params![trace_id], |r| r.get(0))
        .optional()?;
    // A row that does not decode was written by another format, whose facts cannot be named
    // again; they stay counted (a superset of what is seen), never double-removed.
    if let Some(old) = old.and_then(|d| TraceResult::decode(&d).ok()) {
        apply(conn, &old, -1)?;
    }
    Ok(())
}

/// Every fact seen, as one result to merge: its services, learned addresses and one hop per
/// distinct (caller, callee, operation).
pub fn as_result(conn: &Connection) -> Result<TraceResult, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT fact FROM seen")?;
    let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
    let mut r = TraceResult {
        // Any valid id: the merged graph's hops are only read for their edges and interfaces.
        trace_id: [0xff; 16],
        spans: 0,
        services: Vec::new(),
        learned: Vec::new(),
        propagation_breaks: Vec::new(),
        diagnostics: Counts::default(),
        nodes: Vec::new(),
        operations: Vec::new(),
        hops: Vec::new(),
        tests: Vec::new(),
        hop_tests: Vec::new(),
        failures: Vec::new(),
        links: Vec::new(),
    };
    for row in rows {
        let Ok(fact) = postcard::from_bytes::<Fact>(&row?) else {
            continue;
        };
        match fact {
            Fact::Service(s) => r.services.push(s),
            Fact::Learned(h, p, s) => r.learned.push((h, p, s)),
            Fact::Hop(caller, callee, target, op) => {
                r.nodes.push(caller);
                r.nodes.push(callee);
                r.operations.push(op);
                let n = r.nodes.len() as u32;
                r.hops.push(HopRecord {
                    caller: n - 2,
                    callee: n - 1,
                    target,
                    operation: (r.operations.len() - 1) as u32,
                    client_span: None,
                    server_span: None,
                    client_ns: None,
                    server_ns: None,
                    error: false,
                    class: None,
                    test: None,
                });
            }
        }
    }
    Ok(r)
}
