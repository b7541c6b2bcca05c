//! Everything the store has seen, kept up to date as results are stored and traces removed, so
//! that the expected set "every edge and interface seen in any trace" costs as much as there are
//! distinct interfaces, not as much as the store holds.
//!
//! Owns the `seen` table: one row per distinct fact a stored result contributes — a service, an
//! address a service answered on, a hop's (caller, callee, operation) with the callee kept raw
//! when the address map decides it — with the number of stored results that hold it. Storing a
//! result adds its facts (after taking away those of the result it replaces); removing a trace
//! takes away its result's facts. Facts no result holds any more are deleted.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::store::{Reader, StoreError};

use super::deployment::ExampleRow as RecordedExample;
use super::{HopRecord, TargetRecord, TraceResult};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Fact {
    Service(String),
    Learned(String, Option<u16>, String),
    /// (caller id, caller kind), (callee id, callee kind) as the trace named it, the raw target
    /// when there is one, the operation.
    Hop((String, u8), (String, u8), Option<TargetRecord>, String),
}

fn hop_fact(r: &TraceResult, h: &HopRecord) -> Fact {
    let node = |i: u32| r.nodes.get(i as usize).cloned().unwrap_or_default();
    Fact::Hop(
        node(h.caller),
        node(h.callee),
        h.target.clone(),
        r.operations
            .get(h.operation as usize)
            .cloned()
            .unwrap_or_default(),
    )
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
        put(hop_fact(r, h));
    }
    out
}

/// The example per (hop fact, run) among results being stored, written once per batch: the
/// best by (a test named, trace id, span id), so that which trace is the example does not
/// depend on the order traces settled in, nor on which instance of a deployment holds it
/// (`query::attach_examples` picks among runs by the same order).
#[derive(Debug, Default)]
pub(crate) struct Examples(BTreeMap<(Vec<u8>, String), ExampleRow>);

/// (trace, span, test) of an example.
type ExampleRow = ([u8; 16], [u8; 8], Option<String>);

impl Examples {
    /// Notes `r`, stored for a trace of `run` (`""`: none), as the example of its hops.
    pub(crate) fn note(&mut self, r: &TraceResult, run: &str) {
        for h in &r.hops {
            let Some(span) = h.server_span.or(h.client_span) else {
                continue;
            };
            let Ok(key) = postcard::to_stdvec(&hop_fact(r, h)) else {
                continue;
            };
            // The test, when its span is in this trace (a linked producer's test is not named).
            let test = h
                .test
                .and_then(|t| r.hop_tests.get(t as usize))
                .filter(|(trace, _)| *trace == r.trace_id)
                .and_then(|(_, s)| r.tests.iter().find(|t| t.span_id == *s))
                .map(|t| t.name.clone());
            let candidate = (r.trace_id, span, test);
            let rank = |(trace, span, test): &ExampleRow| (test.is_some(), *trace, *span);
            match self.0.entry((key, run.to_owned())) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(candidate);
                }
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    if rank(&candidate) > rank(e.get()) {
                        e.insert(candidate);
                    }
                }
            }
        }
    }

    pub(crate) fn write(self, conn: &Connection) -> Result<(), StoreError> {
        let mut put = conn.prepare_cached(
            "INSERT INTO seen_examples (fact, run_id, trace_id, span_id, test)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (fact, run_id) DO UPDATE SET trace_id = excluded.trace_id,
               span_id = excluded.span_id, test = excluded.test
             WHERE (excluded.test IS NOT NULL, excluded.trace_id, excluded.span_id)
                 > (seen_examples.test IS NOT NULL, seen_examples.trace_id, seen_examples.span_id)",
        )?;
        for ((fact, run), (trace, span, test)) in self.0 {
            put.execute(params![fact, run, &trace[..], &span[..], test])?;
        }
        Ok(())
    }
}

/// Drops the examples a trace gave (its results are being replaced, or it is going).
pub(crate) fn forget_examples(conn: &Connection, trace_id: &[u8]) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM seen_examples WHERE trace_id = ?1")?
        .execute(params![trace_id])?;
    Ok(())
}

/// A recorded example: the hop as its trace named it, with the trace, span, run and test.
pub struct Example {
    pub result_hop: TraceResult,
    pub run_id: String,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub test: Option<String>,
}

/// Every recorded example whose run is not one of `runs`, each as a one-hop result (named like
/// any trace's hops, with the address map of everything seen).
pub fn examples_outside(conn: &Connection, runs: &[String]) -> Result<Vec<Example>, StoreError> {
    Ok(examples_of(local_examples(conn)?, runs))
}

/// `examples_outside` over the whole deployment when the store is one of many: this
/// instance's examples and the others' (`results::deployment`).
pub fn examples_outside_all(reader: &Reader, runs: &[String]) -> Result<Vec<Example>, StoreError> {
    let mut rows = reader.with_conn(local_examples)?;
    if let Some(d) = reader.deployment() {
        rows.extend(d.others_examples()?);
    }
    Ok(examples_of(rows, runs))
}

fn local_examples(conn: &Connection) -> Result<Vec<RecordedExample>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT fact, run_id, trace_id, span_id, test FROM seen_examples")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, Vec<u8>>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn examples_of(rows: Vec<RecordedExample>, runs: &[String]) -> Vec<Example> {
    let mut out = Vec::new();
    for row in rows {
        let (fact, run_id, trace, span, test) = row;
        if runs.contains(&run_id) {
            continue;
        }
        let (Ok(Fact::Hop(caller, callee, target, op)), Ok(trace_id), Ok(span_id)) = (
            postcard::from_bytes::<Fact>(&fact),
            <[u8; 16]>::try_from(trace.as_slice()),
            <[u8; 8]>::try_from(span.as_slice()),
        ) else {
            continue;
        };
        let mut r = TraceResult::nothing(trace_id);
        r.nodes = vec![caller, callee];
        r.operations = vec![op];
        r.hops.push(HopRecord {
            caller: 0,
            callee: 1,
            target,
            operation: 0,
            client_span: None,
            server_span: Some(span_id),
            client_ns: None,
            server_ns: None,
            error: false,
            class: None,
            test: None,
            path: Vec::new(),
        });
        out.push(Example {
            result_hop: r,
            run_id,
            trace_id,
            span_id,
            test,
        });
    }
    out
}

/// Changes to the counts, summed over many results before they are written: traces share most
/// of their facts, so a batch writes each distinct fact once.
#[derive(Debug, Default)]
pub(crate) struct Deltas(BTreeMap<Vec<u8>, i64>);

impl Deltas {
    fn add(&mut self, r: &TraceResult, delta: i64) {
        for key in facts(r) {
            *self.0.entry(key).or_insert(0) += delta;
        }
    }

    /// Adds the facts of `result` and takes away those of `old`, the result stored for its trace
    /// before.
    pub(crate) fn replace(&mut self, old: Option<&TraceResult>, result: &TraceResult) {
        if let Some(old) = old {
            self.add(old, -1);
        }
        self.add(result, 1);
    }

    /// Writes the summed changes; facts no result holds any more are deleted.
    pub(crate) fn write(self, conn: &Connection) -> Result<(), StoreError> {
        let mut add = conn.prepare_cached(
            "INSERT INTO seen (fact, n) VALUES (?1, ?2) ON CONFLICT (fact) DO UPDATE SET n = n + ?2",
        )?;
        let mut drop_zero = conn.prepare_cached("DELETE FROM seen WHERE fact = ?1 AND n <= 0")?;
        for (key, delta) in self.0 {
            if delta == 0 {
                continue;
            }
            add.execute(params![key, delta])?;
            if delta < 0 {
                drop_zero.execute(params![key])?;
            }
        }
        Ok(())
    }
}

/// The result stored for a trace, when there is one that decodes. A row that does not decode
/// was written by another format, whose facts cannot be named again; they stay counted (a
/// superset of what is seen), never double-removed.
pub(crate) fn stored(
    conn: &Connection,
    trace_id: &[u8],
) -> Result<Option<TraceResult>, StoreError> {
    let old: Option<Vec<u8>> = conn
        .prepare_cached("SELECT data FROM trace_results WHERE trace_id = ?1")?
        .query_row(params![trace_id], |r| r.get(0))
        .optional()?;
    Ok(old.and_then(|d| TraceResult::decode(&d).ok()))
}

/// Takes away the facts of `old`, a trace's stored result that is going.
pub(crate) fn forget(conn: &Connection, old: &TraceResult) -> Result<(), StoreError> {
    let mut deltas = Deltas::default();
    deltas.add(old, -1);
    deltas.write(conn)
}

/// Every fact seen, as one result to merge: its services, learned addresses and one hop per
/// distinct (caller, callee, operation).
pub fn as_result(conn: &Connection) -> Result<TraceResult, StoreError> {
    Ok(result_of_facts(local_facts(conn)?))
}

/// `as_result` over the whole deployment when the store is one of many: the facts this
/// instance's results hold and those the others' hold, each once.
pub fn everything_seen(reader: &Reader) -> Result<TraceResult, StoreError> {
    let mut facts: BTreeSet<Vec<u8>> = reader.with_conn(local_facts)?.into_iter().collect();
    if let Some(d) = reader.deployment() {
        facts.extend(d.others_facts()?);
    }
    Ok(result_of_facts(facts))
}

/// The facts of `seen`, in key order.
fn local_facts(conn: &Connection) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT fact FROM seen ORDER BY fact")?;
    let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn result_of_facts(facts: impl IntoIterator<Item = Vec<u8>>) -> TraceResult {
    // Any valid id: the merged graph's hops are only read for their edges and interfaces.
    let mut r = TraceResult::nothing([0xff; 16]);
    for row in facts {
        let Ok(fact) = postcard::from_bytes::<Fact>(&row) else {
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
                    path: Vec::new(),
                });
            }
        }
    }
    r
}
