//! Keeping the stored per-trace results up to date, and reading them back.
//!
//! A trace needs results when it has none, when a span arrived after they were computed (a late
//! span re-opens it), or when they were computed with another configuration. It gets them once it
//! is *settled*: quiet for the settle period, or its run closed. The settle worker (a thread of
//! `serve`) and `tracecov import` compute them; a reader that finds a trace without fresh results
//! computes that trace itself, and stores what it computed when the trace is settled, so a store
//! written before results existed is brought up to date by whoever reads it first.
//!
//! A trace is analysed with the traces linked to it either way (its component, at most
//! `MAX_COMPONENT` traces). `trace_links` records who links to whom, so that when a trace
//! arrives, the traces that linked to it before it existed are recomputed with it: arrival order
//! does not change the results. Within a deployment (`results::Deployment`), a trace known to
//! cross instances is analysed with the spans the other instances hold of it and of the traces
//! linked to it, and a trace split between instances gets its results from one of its holders.
//!
//! Everything here blocks (SQLite, analysis): call it from a blocking thread.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::graph::AnalysisOptions;
use crate::model::{Span, TraceId};
use crate::store::outage::{self, Outage, Say};
use crate::store::{Reader, StoreError};

use super::{Rollup, TraceResult, compute, fingerprint};

/// The most traces analysed together for one trace's results: links beyond are not followed.
const MAX_COMPONENT: usize = 64;

/// Traces computed per transaction by the worker (and per round of threads).
pub(crate) const BATCH_TRACES: usize = 8192;

/// Spans of unlinked traces analysed together.
pub(crate) const BATCH_SPANS: usize = 20_000;

/// What the worker reports (`/metrics`).
#[derive(Debug, Default)]
pub struct SettleCounters {
    /// Traces waiting for results at the last pass: settled ones not yet computed, and ones
    /// still receiving spans.
    pub backlog: AtomicU64,
    /// Traces whose results were computed and stored.
    pub computed: AtomicU64,
    /// Spans of those traces.
    pub spans: AtomicU64,
    /// Time spent computing and storing them, in nanoseconds: spans over this is the worker's
    /// throughput, to hold against the ingest rate.
    pub busy_ns: AtomicU64,
}

/// Fresh results of `traces`, by trace: those stored with the current configuration and no
/// span since. Traces missing from the answer need computing.
pub fn fresh_results(
    conn: &Connection,
    traces: &[TraceId],
    opts: &AnalysisOptions,
) -> Result<HashMap<TraceId, TraceResult>, StoreError> {
    let fp = fingerprint(opts);
    let mut stmt = conn.prepare_cached(
        "SELECT r.data FROM trace_results r JOIN traces t ON t.trace_id = r.trace_id
         WHERE r.trace_id = ?1 AND r.fingerprint = ?2 AND r.received_ns >= t.last_received_ns",
    )?;
    let mut out = HashMap::with_capacity(traces.len());
    for &id in traces {
        let data: Option<Vec<u8>> = stmt
            .query_row(params![&id.as_bytes()[..], fp], |r| r.get(0))
            .optional()?;
        if let Some(result) = data.and_then(|d| TraceResult::decode(&d).ok()) {
            out.insert(id, result);
        }
    }
    Ok(out)
}

/// The results of `traces`: stored ones where fresh, the rest computed now (and stored when
/// `store_settled_before` says the trace is settled: its last span arrived at or before it).
pub fn results_of(
    reader: &Reader,
    traces: &[TraceId],
    opts: &AnalysisOptions,
    store_settled_before: Option<u64>,
) -> Result<Vec<TraceResult>, StoreError> {
    let mut found = reader.with_conn(|c| fresh_results(c, traces, opts))?;
    let missing: Vec<TraceId> = traces
        .iter()
        .copied()
        .filter(|t| !found.contains_key(t))
        .collect();
    let (computed, _) = compute_and_store(reader, &missing, opts, store_settled_before)?;
    for (id, r) in computed {
        found.insert(id, r);
    }
    let mut out: Vec<TraceResult> = traces.iter().filter_map(|t| found.remove(t)).collect();
    out.sort_by_key(|r| r.trace_id);
    Ok(out)
}

/// Results computed by a reader, and the traces among them whose results were stored.
pub type Computed = (Vec<(TraceId, TraceResult)>, HashSet<TraceId>);

/// Computes the results of `traces` and stores those settled before `store_settled_before`.
/// Returns every computed result, and the traces whose results were stored.
pub fn compute_and_store(
    reader: &Reader,
    traces: &[TraceId],
    opts: &AnalysisOptions,
    store_settled_before: Option<u64>,
) -> Result<Computed, StoreError> {
    if traces.is_empty() {
        return Ok((Vec::new(), HashSet::new()));
    }
    let computed = compute_traces(reader, traces, opts)?;
    let mut stored = HashSet::new();
    if let Some(cutoff) = store_settled_before {
        // Storing is a favour to the next reader: a failure (the store busy past the timeout)
        // costs that reader a recomputation, never this answer.
        match reader.with_conn(|c| store_results(c, &computed, opts, Some(cutoff))) {
            Ok(_) => stored.extend(
                computed
                    .iter()
                    .filter(|(_, _, at)| *at as u64 <= cutoff)
                    .map(|(id, _, _)| *id),
            ),
            Err(e) => tracing::warn!(error = %e, "storing trace results a reader computed failed"),
        }
    }
    Ok((
        computed.into_iter().map(|(id, r, _)| (id, r)).collect(),
        stored,
    ))
}

/// Traces of a run (`""`: the traces of no run) without fresh results.
pub fn pending_in_run(
    conn: &Connection,
    run_id: &str,
    opts: &AnalysisOptions,
) -> Result<Vec<TraceId>, StoreError> {
    let sql = if run_id.is_empty() {
        "SELECT t.trace_id FROM traces t
         LEFT JOIN trace_runs tr ON tr.trace_id = t.trace_id
         LEFT JOIN trace_results r ON r.trace_id = t.trace_id
         WHERE tr.trace_id IS NULL AND ?1 = ''
           AND (r.trace_id IS NULL OR r.fingerprint != ?2 OR r.received_ns < t.last_received_ns)"
    } else {
        "SELECT tr.trace_id FROM trace_runs tr
         JOIN traces t ON t.trace_id = tr.trace_id
         LEFT JOIN trace_results r ON r.trace_id = tr.trace_id
         WHERE tr.run_id = ?1
           AND (r.trace_id IS NULL OR r.fingerprint != ?2 OR r.received_ns < t.last_received_ns)"
    };
    trace_ids(conn, sql, params![run_id, fingerprint(opts)])
}

/// The trace ids a query's first column yields.
fn trace_ids(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<TraceId>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, |r| r.get::<_, Vec<u8>>(0))?;
    let mut out = Vec::new();
    for row in rows {
        if let Ok(t) = TraceId::from_slice(&row?) {
            out.push(t);
        }
    }
    Ok(out)
}

/// The rollup of runs (by id; `""`: the traces of no run) as of now: their stored rollups, with
/// the traces still without fresh results computed first. Those settled are stored (which
/// updates the stored rollups); the others stand in for whatever they stored before.
pub fn rollup_of(
    reader: &Reader,
    run_ids: &[String],
    opts: &AnalysisOptions,
    store_settled_before: Option<u64>,
) -> Result<Rollup, StoreError> {
    let mut total = own_rollup_of(reader, run_ids, opts, store_settled_before)?;
    // One of many instances: this one's share, just brought up to date, and the others'
    // published shares (`results::deployment`).
    if let Some(d) = reader.deployment() {
        for other in d.others_rollups(run_ids, fingerprint(opts))? {
            total.add(&other);
        }
    }
    Ok(total)
}

/// `rollup_of` this store's traces alone: in a deployment, this instance's share (what its
/// `/metrics` counts of the service graph), otherwise the whole.
pub fn own_rollup_of(
    reader: &Reader,
    run_ids: &[String],
    opts: &AnalysisOptions,
    store_settled_before: Option<u64>,
) -> Result<Rollup, StoreError> {
    let mut pending = Vec::new();
    for run in run_ids {
        pending.extend(reader.with_conn(|c| pending_in_run(c, run, opts))?);
    }
    let (computed, stored) = compute_and_store(reader, &pending, opts, store_settled_before)?;
    let fp = fingerprint(opts);
    let rollup = reader.with_conn(|c| {
        // One read transaction: the rollups and the results they hold are seen as of one moment.
        c.execute_batch("BEGIN")?;
        let read = || -> Result<Option<Rollup>, StoreError> {
            let mut total = Rollup::default();
            for run in run_ids {
                if let Some(r) = load_rollup(c, run, fp)? {
                    if total.traces == 0 {
                        total = r;
                    } else {
                        total.add(&r);
                    }
                }
            }
            for (id, result) in computed.iter().filter(|(id, _)| !stored.contains(id)) {
                let key = &id.as_bytes()[..];
                let member: Option<(String, i64)> = c
                    .prepare_cached(
                        "SELECT run_id, fingerprint FROM trace_rollups WHERE trace_id = ?1",
                    )?
                    .query_row(params![key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                if let Some((run, f)) = member
                    && f == fp
                    && run_ids.contains(&run)
                {
                    // What the rollup holds for the trace must come out before its new results
                    // go in; when it cannot be read back, neither can the rollup be trusted.
                    match super::seen::stored(c, key)? {
                        Some(old) => total.subtract(&old),
                        None => return Ok(None),
                    }
                }
                total.add(&Rollup::of(result));
            }
            Ok(Some(total))
        };
        let out = read();
        let _ = c.execute_batch("COMMIT");
        out
    })?;
    Ok(match rollup {
        Some(r) => r,
        None => {
            tracing::warn!(runs = ?run_ids, "a stored rollup is out of step with its results; merging the results instead");
            let mut traces = Vec::new();
            for run in run_ids {
                traces.extend(reader.with_conn(|c| traces_in_run(c, run))?);
            }
            Rollup::of_all(&results_of(reader, &traces, opts, store_settled_before)?)
        }
    })
}

/// The traces of a run (`""`: of no run).
fn traces_in_run(conn: &Connection, run_id: &str) -> Result<Vec<TraceId>, StoreError> {
    let sql = if run_id.is_empty() {
        "SELECT t.trace_id FROM traces t LEFT JOIN trace_runs tr ON tr.trace_id = t.trace_id
         WHERE tr.trace_id IS NULL AND ?1 = ''"
    } else {
        "SELECT trace_id FROM trace_runs WHERE run_id = ?1"
    };
    trace_ids(conn, sql, params![run_id])
}

/// Computes the results of `traces` from their spans, each with its component. Returns each
/// trace's result with the `last_received_ns` its spans were read at.
///
/// Traces that link to no other trace and that no trace links to — nearly all of them — are
/// analysed together, `BATCH_SPANS` at a time: nothing in one reaches another, so each gets the
/// result it would get alone (`results::tests` holds this), and the analysis's fixed costs are
/// paid once a batch rather than once a trace.
pub fn compute_traces(
    reader: &Reader,
    traces: &[TraceId],
    opts: &AnalysisOptions,
) -> Result<Vec<(TraceId, TraceResult, i64)>, StoreError> {
    let mut out = Vec::with_capacity(traces.len());
    let wanted: HashSet<TraceId> = traces.iter().copied().collect();
    let mut done: HashSet<TraceId> = HashSet::new();
    let mut batch: Vec<Span> = Vec::new();
    let mut batch_at: HashMap<TraceId, i64> = HashMap::new();
    let flush = |batch: &mut Vec<Span>,
                 batch_at: &mut HashMap<TraceId, i64>,
                 out: &mut Vec<(TraceId, TraceResult, i64)>| {
        for r in compute(batch, opts) {
            if let Some(t) = r.trace()
                && let Some(&at) = batch_at.get(&t)
            {
                out.push((t, r, at));
            }
        }
        batch.clear();
        batch_at.clear();
    };
    for &id in traces {
        if done.contains(&id) {
            continue;
        }
        // Read before the spans: a span arriving meanwhile leaves the result stale, not wrong.
        let Some(at) = reader.with_conn(|c| last_received(c, id))? else {
            continue;
        };
        let spans = reader.trace(id)?;
        let links_out = spans
            .iter()
            .any(|s| s.links.iter().any(|l| l.trace_id != id));
        let crosses = match reader.deployment() {
            Some(d) => reader.with_conn(|c| d.crosses(c, id))?,
            None => false,
        };
        if !crosses && !links_out && reader.with_conn(|c| linking_to(c, id))?.is_empty() {
            done.insert(id);
            batch_at.insert(id, at);
            batch.extend(spans);
            if batch.len() >= BATCH_SPANS {
                flush(&mut batch, &mut batch_at, &mut out);
            }
            continue;
        }
        let mut received: HashMap<TraceId, i64> = HashMap::new();
        let (component, spans) = match component_of(reader, id, &mut received) {
            Ok(found) => found,
            // Another instance holding some of it did not answer: the trace stays without
            // results (pending) and is tried again at the next pass.
            Err(StoreError::Shared(problem)) => {
                tracing::debug!(trace_id = %id, %problem, "a trace crossing instances waits for its spans");
                continue;
            }
            Err(e) => return Err(e),
        };
        // A trace whose spans other instances hold too is computed by one of its holders; the
        // others contribute nothing for it, so it is counted once.
        let mine = match reader.deployment() {
            Some(d) if crosses => {
                let others = d.elsewhere(id)?;
                others.is_empty() || d.computes(&others)
            }
            _ => true,
        };
        // Links are symmetric here, so every trace of a component that was not cut short has
        // this same component: one analysis serves all of them. Within a deployment, only this
        // instance's traces get results from it.
        let whole = component.len() < MAX_COMPONENT;
        for r in compute(&spans, opts) {
            let Some(t) = r.trace() else { continue };
            if (t == id || (whole && wanted.contains(&t))) && done.insert(t) {
                let at = received.get(&t).copied().unwrap_or(at);
                let r = if t == id && !mine {
                    TraceResult::empty(t)
                } else {
                    r
                };
                out.push((t, r, at));
            }
        }
    }
    flush(&mut batch, &mut batch_at, &mut out);
    Ok(out)
}

/// Shares per core that `compute_parallel` cuts its traces into, unless that makes shares
/// smaller than `MIN_SHARE` traces (each share is analysed in batches of its own).
const SHARES_PER_CORE: usize = 16;
const MIN_SHARE: usize = 64;

/// `compute_traces` on the machine's cores: `traces` cut into a few shares per core, each handed
/// to whichever thread is free next (the analysis of one trace never needs another's), results in
/// input order.
///
/// Not one share per core: traces differ in size, and the large ones cluster. Traces are taken
/// in the order they last received something, so those whose log records came after their spans
/// sort last, and they are the larger ones (a record is likelier on a trace of many spans). With
/// one share per core, one core sat idle while the other finished the heavy share: a sixth more
/// elapsed time for a run with an ERROR record per 100 spans (`tracecov bench logs`), none of it
/// more work. Shares stay contiguous, so traces linked to each other (usually near each other in
/// the list) are mostly analysed in the same share, and results keep the input order.
pub fn compute_parallel(
    reader: &Reader,
    traces: &[TraceId],
    opts: &AnalysisOptions,
) -> Result<Vec<(TraceId, TraceResult, i64)>, StoreError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    compute_on(reader, traces, opts, cores)
}

/// `compute_parallel` on `cores` threads.
pub(crate) fn compute_on(
    reader: &Reader,
    traces: &[TraceId],
    opts: &AnalysisOptions,
    cores: usize,
) -> Result<Vec<(TraceId, TraceResult, i64)>, StoreError> {
    if cores < 2 || traces.len() < 2 * cores {
        return compute_traces(reader, traces, opts);
    }
    let share = traces
        .len()
        .div_ceil(cores * SHARES_PER_CORE)
        .max(MIN_SHARE.min(traces.len().div_ceil(cores)));
    let shares: Vec<&[TraceId]> = traces.chunks(share).collect();
    let next = AtomicUsize::new(0);
    let mut parts: Vec<Option<Result<Vec<_>, StoreError>>> = shares.iter().map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..cores)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(share) = shares.get(i) else {
                            return mine;
                        };
                        mine.push((i, compute_traces(reader, share, opts)));
                    }
                })
            })
            .collect();
        // A thread that panicked leaves its shares without a part: an error below.
        for done in handles.into_iter().filter_map(|h| h.join().ok()) {
            for (i, part) in done {
                parts[i] = Some(part);
            }
        }
    });
    let mut out = Vec::with_capacity(traces.len());
    for part in parts {
        out.extend(part.unwrap_or(Err(StoreError::Closed))?);
    }
    Ok(out)
}

fn last_received(conn: &Connection, id: TraceId) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT last_received_ns FROM traces WHERE trace_id = ?1")?
        .query_row(params![&id.as_bytes()[..]], |r| r.get(0))
        .optional()?)
}

/// The trace and the traces linked to it either way, transitively, up to `MAX_COMPONENT`, with
/// all their spans; each stored trace's `last_received_ns` lands in `received`.
fn component_of(
    reader: &Reader,
    id: TraceId,
    received: &mut HashMap<TraceId, i64>,
) -> Result<(BTreeSet<TraceId>, Vec<Span>), StoreError> {
    let mut component = BTreeSet::new();
    let mut spans = Vec::new();
    let mut queue = VecDeque::from([id]);
    let deployment = reader.deployment();
    while let Some(t) = queue.pop_front() {
        if component.len() >= MAX_COMPONENT || component.contains(&t) {
            continue;
        }
        let at = reader.with_conn(|c| last_received(c, t))?;
        let mut trace = match at {
            Some(_) => reader.trace(t)?,
            None => Vec::new(),
        };
        // Within a deployment, a linked trace held elsewhere, and the spans and linking traces
        // other instances hold of a trace known to cross instances, are part of it too.
        if let Some(d) = deployment
            && (at.is_none() || reader.with_conn(|c| d.crosses(c, t))?)
        {
            let others = d.elsewhere(t)?;
            if !others.is_empty() {
                crate::store::merge_spans(&mut trace, d.spans_elsewhere(t, &others)?);
            }
            if !trace.is_empty() {
                queue.extend(
                    d.linking_elsewhere(t)?
                        .into_iter()
                        .filter(|f| !component.contains(f)),
                );
            }
        }
        // A linked trace that is stored nowhere contributes nothing.
        if trace.is_empty() {
            continue;
        }
        component.insert(t);
        if let Some(at) = at {
            received.insert(t, at);
        }
        for span in &trace {
            for l in &span.links {
                if !component.contains(&l.trace_id) {
                    queue.push_back(l.trace_id);
                }
            }
        }
        spans.extend(trace);
        let from: Vec<TraceId> = reader.with_conn(|c| linking_to(c, t))?;
        queue.extend(from.into_iter().filter(|f| !component.contains(f)));
    }
    Ok((component, spans))
}

fn linking_to(conn: &Connection, id: TraceId) -> Result<Vec<TraceId>, StoreError> {
    trace_ids(
        conn,
        "SELECT from_trace FROM trace_links WHERE to_trace = ?1",
        params![&id.as_bytes()[..]],
    )
}

/// Stores computed results in one transaction (only those whose spans were read at or before
/// `settled_before`, when given), records their links, and marks stale the traces that linked to
/// a trace whose results are new, and those it links to (their component has grown).
pub fn store_results(
    conn: &Connection,
    computed: &[(TraceId, TraceResult, i64)],
    opts: &AnalysisOptions,
    settled_before: Option<u64>,
) -> Result<u64, StoreError> {
    let fp = fingerprint(opts);
    // IMMEDIATE: take the write lock first (waiting under the busy timeout for the span writer
    // or another settler). A deferred transaction that read first could not upgrade once another
    // writer committed, and would fail at once instead of waiting.
    conn.execute_batch("BEGIN IMMEDIATE")?;
    match store_in_transaction(conn, computed, fp, settled_before) {
        Ok(stored) => {
            conn.execute_batch("COMMIT")?;
            Ok(stored)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn store_in_transaction(
    tx: &Connection,
    computed: &[(TraceId, TraceResult, i64)],
    fp: i64,
    settled_before: Option<u64>,
) -> Result<u64, StoreError> {
    let mut stored = 0;
    let mut seen = super::seen::Deltas::default();
    let mut rollups = RollupEdits::default();
    let mut other_fingerprint = false;
    let mut examples = super::seen::Examples::default();
    {
        let mut had = tx.prepare_cached("SELECT 1 FROM trace_results WHERE trace_id = ?1")?;
        let mut put = tx.prepare_cached(
            "INSERT OR REPLACE INTO trace_results (trace_id, received_ns, fingerprint, data)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut unlink = tx.prepare_cached("DELETE FROM trace_links WHERE from_trace = ?1")?;
        let mut link = tx.prepare_cached(
            "INSERT OR IGNORE INTO trace_links (from_trace, to_trace) VALUES (?1, ?2)",
        )?;
        let mut stale = tx.prepare_cached(
            "UPDATE trace_results SET received_ns = -1
             WHERE trace_id IN (SELECT from_trace FROM trace_links WHERE to_trace = ?1)
               AND trace_id != ?1",
        )?;
        let mut stale_linked = tx.prepare_cached(
            "UPDATE trace_results SET received_ns = -1 WHERE trace_id = ?1 AND received_ns >= 0",
        )?;
        for (id, result, received) in computed {
            if settled_before.is_some_and(|cutoff| *received as u64 > cutoff) {
                continue;
            }
            let key = &id.as_bytes()[..];
            let first_time = had
                .query_row(params![key], |_| Ok(()))
                .optional()?
                .is_none();
            let old = super::seen::stored(tx, key)?;
            if !first_time {
                other_fingerprint |= tx
                    .prepare_cached(
                        "SELECT 1 FROM trace_results WHERE trace_id = ?1 AND fingerprint != ?2",
                    )?
                    .query_row(params![key, fp], |_| Ok(()))
                    .optional()?
                    .is_some();
            }
            seen.replace(old.as_ref(), result);
            rollups.take_away(tx, key, old.as_ref())?;
            let run = run_of(tx, key)?;
            rollups.put(tx, key, &run, result, fp)?;
            if !first_time {
                super::seen::forget_examples(tx, key)?;
            }
            examples.note(result, &run);
            put.execute(params![key, received, fp, result.encode()])?;
            unlink.execute(params![key])?;
            for to in &result.links {
                link.execute(params![key, &to[..]])?;
            }
            if first_time {
                stale.execute(params![key])?;
                // The traces it links to too: a producer's failure walk continues into the
                // consumer that links to it, whichever arrived first.
                for to in &result.links {
                    if to[..] != *key {
                        stale_linked.execute(params![&to[..]])?;
                    }
                }
            }
            stored += 1;
        }
    }
    seen.write(tx)?;
    rollups.write(tx)?;
    examples.write(tx)?;
    if other_fingerprint {
        // Traces that had fresh results under another configuration now do not: its mark no
        // longer holds.
        tx.prepare_cached("DELETE FROM settle_marks WHERE fingerprint != ?1")?
            .execute(params![fp])?;
    }
    Ok(stored)
}

/// The rollups one transaction changes, each read once and written back once at its end.
#[derive(Default)]
pub struct RollupEdits {
    loaded: HashMap<(String, i64), Rollup>,
    /// A trace's results were removed or replaced (what was derived from the store changed).
    touched: bool,
}

impl RollupEdits {
    fn rollup(&mut self, conn: &Connection, run: &str, fp: i64) -> Result<&mut Rollup, StoreError> {
        let key = (run.to_owned(), fp);
        if !self.loaded.contains_key(&key) {
            // Without its test cases: they are stored (and changed) a row at a time.
            let r = load_rollup_body(conn, run, fp)?.unwrap_or_default();
            self.loaded.insert(key.clone(), r);
        }
        Ok(self.loaded.entry(key).or_default())
    }

    /// Takes `old`, the result stored for `trace` that is being replaced or removed, out of the
    /// rollup it was added to.
    fn take_away(
        &mut self,
        conn: &Connection,
        trace: &[u8],
        old: Option<&TraceResult>,
    ) -> Result<(), StoreError> {
        self.touched = true;
        let member: Option<(String, i64)> = conn
            .prepare_cached("SELECT run_id, fingerprint FROM trace_rollups WHERE trace_id = ?1")?
            .query_row(params![trace], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((run, fp)) = member {
            conn.prepare_cached("DELETE FROM trace_rollups WHERE trace_id = ?1")?
                .execute(params![trace])?;
            conn.prepare_cached("DELETE FROM run_tests WHERE trace_id = ?1")?
                .execute(params![trace])?;
            match old {
                Some(old) => self.rollup(conn, &run, fp)?.subtract(old),
                // What was added cannot be taken away (the stored result is damaged or gone):
                // the rollup is dropped and its traces' results made stale, so that they are
                // computed and added again.
                None => {
                    conn.prepare_cached(
                        "UPDATE trace_results SET received_ns = -1 WHERE trace_id IN
                           (SELECT trace_id FROM trace_rollups WHERE run_id = ?1 AND fingerprint = ?2)",
                    )?
                    .execute(params![run, fp])?;
                    conn.prepare_cached(
                        "DELETE FROM trace_rollups WHERE run_id = ?1 AND fingerprint = ?2",
                    )?
                    .execute(params![run, fp])?;
                    conn.prepare_cached(
                        "DELETE FROM run_tests WHERE run_id = ?1 AND fingerprint = ?2",
                    )?
                    .execute(params![run, fp])?;
                    self.loaded.insert((run, fp), Rollup::default());
                }
            }
        }
        Ok(())
    }

    /// Adds `result`, about to be stored for `trace`, to the rollup of the trace's run.
    fn put(
        &mut self,
        conn: &Connection,
        trace: &[u8],
        run: &str,
        result: &TraceResult,
        fp: i64,
    ) -> Result<(), StoreError> {
        self.rollup(conn, run, fp)?.add(&Rollup::of(result));
        let mut test = conn.prepare_cached(
            "INSERT OR REPLACE INTO run_tests (run_id, fingerprint, trace_id, span_id, name, failed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for t in &result.tests {
            test.execute(params![run, fp, trace, &t.span_id[..], t.name, t.failed])?;
        }
        conn.prepare_cached(
            "INSERT OR REPLACE INTO trace_rollups (trace_id, run_id, fingerprint) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![trace, run, fp])?;
        Ok(())
    }

    pub fn write(self, conn: &Connection) -> Result<(), StoreError> {
        if self.touched || !self.loaded.is_empty() {
            conn.prepare_cached(
                "INSERT INTO results_generation (id, n) VALUES (0, 1)
                 ON CONFLICT (id) DO UPDATE SET n = n + 1",
            )?
            .execute([])?;
        }
        for ((run, fp), r) in self.loaded {
            // The rollup's stamp moves with it: history's digests of the run are stale now.
            conn.prepare_cached(
                "INSERT INTO rollup_stamps (run_id, fingerprint, stamp)
                 VALUES (?1, ?2, (SELECT COALESCE(MAX(n), 0) FROM results_generation))
                 ON CONFLICT (run_id, fingerprint) DO UPDATE SET stamp = excluded.stamp",
            )?
            .execute(params![run, fp])?;
            if r.traces == 0 {
                conn.prepare_cached(
                    "DELETE FROM run_rollups WHERE run_id = ?1 AND fingerprint = ?2",
                )?
                .execute(params![run, fp])?;
            } else {
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO run_rollups (run_id, fingerprint, data) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![run, fp, r.encode()])?;
            }
        }
        Ok(())
    }
}

/// The run of a trace, `""` for none.
fn run_of(conn: &Connection, trace: &[u8]) -> Result<String, StoreError> {
    Ok(conn
        .prepare_cached("SELECT run_id FROM trace_runs WHERE trace_id = ?1")?
        .query_row(params![trace], |r| r.get(0))
        .optional()?
        .unwrap_or_default())
}

/// The rollup stored for a run (`""`: the traces of no run) and fingerprint, with its test
/// cases.
pub fn load_rollup(conn: &Connection, run: &str, fp: i64) -> Result<Option<Rollup>, StoreError> {
    let Some(mut rollup) = load_rollup_body(conn, run, fp)? else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT trace_id, span_id, name, failed FROM run_tests
         WHERE run_id = ?1 AND fingerprint = ?2",
    )?;
    let rows = stmt.query_map(params![run, fp], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, bool>(3)?,
        ))
    })?;
    for row in rows {
        let (trace, span, name, failed) = row?;
        if let (Ok(trace), Ok(span)) = (<[u8; 16]>::try_from(trace), <[u8; 8]>::try_from(span)) {
            rollup.put_test_case((trace, span), name, failed);
        }
    }
    Ok(Some(rollup))
}

/// The rollup's own row, without its test cases.
fn load_rollup_body(conn: &Connection, run: &str, fp: i64) -> Result<Option<Rollup>, StoreError> {
    let data: Option<Vec<u8>> = conn
        .prepare_cached("SELECT data FROM run_rollups WHERE run_id = ?1 AND fingerprint = ?2")?
        .query_row(params![run, fp], |r| r.get(0))
        .optional()?;
    Ok(data.and_then(|d| Rollup::decode(&d).ok()))
}

/// Takes a trace's stored result out of everything kept beside it (the facts seen, its run's
/// rollup) before retention removes the trace.
pub fn forget(
    conn: &Connection,
    trace: &[u8],
    rollups: &mut RollupEdits,
) -> Result<(), StoreError> {
    let old = super::seen::stored(conn, trace)?;
    if let Some(old) = &old {
        super::seen::forget(conn, old)?;
    }
    super::seen::forget_examples(conn, trace)?;
    rollups.take_away(conn, trace, old.as_ref())
}

/// Forgets the stored results of a trace that retention removes, keeping what its run learned:
/// a run's rollup (and its test cases) outlives the run's spans (DESIGN, "History across runs"),
/// so the trace's contribution stays in it and only its membership goes (nothing can take it
/// away later). Traces of no run are background, not history: they leave their rollup as when
/// their results are replaced. What is seen store-wide forgets the trace either way. Returns
/// whether a run's rollup kept the trace's results.
pub fn age_out(
    conn: &Connection,
    trace: &[u8],
    rollups: &mut RollupEdits,
) -> Result<bool, StoreError> {
    let member: Option<String> = conn
        .prepare_cached("SELECT run_id FROM trace_rollups WHERE trace_id = ?1")?
        .query_row(params![trace], |r| r.get(0))
        .optional()?;
    match member {
        Some(run) if !run.is_empty() => {
            if let Some(old) = super::seen::stored(conn, trace)? {
                super::seen::forget(conn, &old)?;
            }
            super::seen::forget_examples(conn, trace)?;
            rollups.touched = true;
            conn.prepare_cached("DELETE FROM trace_rollups WHERE trace_id = ?1")?
                .execute(params![trace])?;
            Ok(true)
        }
        _ => {
            forget(conn, trace, rollups)?;
            Ok(false)
        }
    }
}

/// Removes runs whose newest span arrived before `cutoff_ns` (`--history-age`) with everything
/// kept of them: rollups, test cases, assignments, and the traces of theirs still stored (a run
/// taken out of history takes its traces with it, so none is left pointing at it). Returns the
/// store sequence numbers of those traces for the caller to delete, and the number of runs.
pub fn expired_runs(
    conn: &Connection,
    cutoff_ns: u64,
) -> Result<(Vec<String>, Vec<i64>), StoreError> {
    let runs: Vec<String> = {
        let mut stmt = conn.prepare_cached("SELECT id FROM runs WHERE last_ns < ?1")?;
        stmt.query_map(params![cutoff_ns as i64], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    };
    let mut seqs = Vec::new();
    for run in &runs {
        let mut stmt = conn.prepare_cached(
            "SELECT t.seq FROM trace_runs tr JOIN traces t ON t.trace_id = tr.trace_id
             WHERE tr.run_id = ?1",
        )?;
        for seq in stmt.query_map(params![run], |r| r.get::<_, i64>(0))? {
            seqs.push(seq?);
        }
    }
    Ok((runs, seqs))
}

/// Deletes what is kept of `run` once its traces are gone (see `expired_runs`).
pub fn drop_run(conn: &Connection, run: &str, rollups: &mut RollupEdits) -> Result<(), StoreError> {
    rollups.touched = true;
    rollups.loaded.retain(|(r, _), _| r != run);
    for sql in [
        "DELETE FROM run_rollups WHERE run_id = ?1",
        "DELETE FROM run_tests WHERE run_id = ?1",
        "DELETE FROM trace_rollups WHERE run_id = ?1",
        "DELETE FROM seen_examples WHERE run_id = ?1",
        // History's digests of the run (`history::store`), and the stamp they are held to.
        "DELETE FROM run_digests WHERE run_id = ?1",
        "DELETE FROM run_failures WHERE run_id = ?1",
        "DELETE FROM rollup_stamps WHERE run_id = ?1",
    ] {
        conn.prepare_cached(sql)?.execute(params![run])?;
    }
    crate::runs::drop_run(conn, run)
}

/// Traces that need results, with whether each is settled: quiet since `cutoff_ns`, or in a
/// closed run. Only traces that received a span at or after `low_ns` are looked at (the caller
/// knows that older ones had fresh results at its last pass).
pub fn pending(
    conn: &Connection,
    opts: &AnalysisOptions,
    cutoff_ns: u64,
    low_ns: i64,
) -> Result<Vec<(TraceId, i64, bool)>, StoreError> {
    let fp = fingerprint(opts);
    let mut stmt = conn.prepare_cached(
        "SELECT t.trace_id, t.last_received_ns,
                (t.last_received_ns <= ?2 OR ru.closed_ns IS NOT NULL)
         FROM traces t
         LEFT JOIN trace_results r ON r.trace_id = t.trace_id
         LEFT JOIN trace_runs tr ON tr.trace_id = t.trace_id
         LEFT JOIN runs ru ON ru.id = tr.run_id
         WHERE t.last_received_ns >= ?3
           AND (r.trace_id IS NULL OR r.fingerprint != ?1 OR r.received_ns < t.last_received_ns)
         ORDER BY t.last_received_ns",
    )?;
    let rows = stmt.query_map(params![fp, cutoff_ns as i64, low_ns], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, bool>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for row in rows {
        let (id, received, settled) = row?;
        if let Ok(id) = TraceId::from_slice(&id)
            && seen.insert(id)
        {
            out.push((id, received, settled));
        }
    }
    // Traces whose results a newly arrived linked trace made stale, however old they are.
    let mut stale = conn.prepare_cached(
        "SELECT t.trace_id, t.last_received_ns FROM trace_results r
         JOIN traces t ON t.trace_id = r.trace_id WHERE r.received_ns < 0",
    )?;
    let rows = stale.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (id, received) = row?;
        if let Ok(id) = TraceId::from_slice(&id)
            && seen.insert(id)
        {
            out.push((id, received, received as u64 <= cutoff_ns));
        }
    }
    Ok(out)
}

/// Traces of a run without fresh results, counted in SQL (no result is read).
pub fn count_pending(
    conn: &Connection,
    run_id: &str,
    opts: &AnalysisOptions,
) -> Result<u64, StoreError> {
    count_received_after(conn, run_id, opts, i64::MIN)
}

/// Whether any trace of a run lacks fresh results (`count_pending` is not zero), found through
/// the settle mark: only traces received since it, and those a linked trace made stale, can
/// lack them (as `everything` reads the store's), so a run that settled long ago costs two
/// index probes rather than a pass over its traces.
pub fn run_has_pending(
    conn: &Connection,
    run_id: &str,
    opts: &AnalysisOptions,
) -> Result<bool, StoreError> {
    let low = mark(conn, opts)?;
    if low == i64::MIN {
        // No mark: any trace may lack results, and the run's own are fewer than the store's.
        return Ok(count_pending(conn, run_id, opts)? > 0);
    }
    // `+tr.run_id`: the run's index would lead the plan through every trace of the run; the
    // traces received since the mark and the stale results are the few rows to start from.
    let pending: bool = conn
        .prepare_cached(
            "SELECT EXISTS (
                 SELECT 1 FROM traces t
                 JOIN trace_runs tr ON tr.trace_id = t.trace_id
                 LEFT JOIN trace_results r ON r.trace_id = t.trace_id
                 WHERE t.last_received_ns >= ?3 AND +tr.run_id = ?1
                   AND (r.trace_id IS NULL OR r.fingerprint != ?2
                        OR r.received_ns < t.last_received_ns))
             OR EXISTS (
                 SELECT 1 FROM trace_results r
                 JOIN trace_runs tr ON tr.trace_id = r.trace_id
                 WHERE r.received_ns < 0 AND +tr.run_id = ?1)",
        )?
        .query_row(params![run_id, fingerprint(opts), low], |r| r.get(0))?;
    Ok(pending)
}

/// Traces of a run without fresh results whose last span arrived after `cutoff_ns` (not settled).
pub fn count_unsettled(
    conn: &Connection,
    run_id: &str,
    opts: &AnalysisOptions,
    cutoff_ns: u64,
) -> Result<u64, StoreError> {
    count_received_after(conn, run_id, opts, cutoff_ns as i64)
}

/// Traces of a run without fresh results whose last span arrived after `after_ns`.
fn count_received_after(
    conn: &Connection,
    run_id: &str,
    opts: &AnalysisOptions,
    after_ns: i64,
) -> Result<u64, StoreError> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM trace_runs tr
             JOIN traces t ON t.trace_id = tr.trace_id
             LEFT JOIN trace_results r ON r.trace_id = tr.trace_id
             WHERE tr.run_id = ?1 AND t.last_received_ns > ?3
               AND (r.trace_id IS NULL OR r.fingerprint != ?2
                    OR r.received_ns < t.last_received_ns)",
        )?
        .query_row(params![run_id, fingerprint(opts), after_ns], |r| r.get(0))?;
    Ok(n as u64)
}

/// One pass: computes and stores the results of every settled trace that needs them. Returns the
/// traces still pending (not settled yet) and the new low-water mark for the next pass.
pub fn settle_pass(
    reader: &Reader,
    opts: &AnalysisOptions,
    now_ns: u64,
    quiet: Duration,
    low_ns: i64,
    counters: &SettleCounters,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<i64, StoreError> {
    let cutoff = now_ns.saturating_sub(quiet.as_nanos() as u64);
    let pending = reader.with_conn(|c| pending(c, opts, cutoff, low_ns))?;
    counters
        .backlog
        .store(pending.len() as u64, Ordering::Relaxed);
    // Nothing older than the oldest trace still pending (or than this pass's cutoff) can need
    // results at the next pass unless a span arrives for it, which moves it past the mark.
    let next_low = pending
        .iter()
        .filter(|(_, _, settled)| !settled)
        .map(|(_, received, _)| *received)
        .min()
        .unwrap_or(cutoff as i64)
        .min(cutoff as i64);
    let settled: Vec<TraceId> = pending
        .iter()
        .filter(|(_, _, settled)| *settled)
        .map(|(id, _, _)| *id)
        .collect();
    let mut left = pending.len() as u64;
    for chunk in settled.chunks(BATCH_TRACES) {
        // A large backlog (a store from before results existed) must not hold up shutdown.
        if stop.load(Ordering::Relaxed) {
            return Ok(low_ns);
        }
        let started = std::time::Instant::now();
        let computed = compute_parallel(reader, chunk, opts)?;
        let stored = reader.with_conn(|c| store_results(c, &computed, opts, None))?;
        counters.computed.fetch_add(stored, Ordering::Relaxed);
        counters.spans.fetch_add(
            computed.iter().map(|(_, r, _)| r.spans).sum(),
            Ordering::Relaxed,
        );
        counters
            .busy_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        left = left.saturating_sub(chunk.len() as u64);
        counters.backlog.store(left, Ordering::Relaxed);
    }
    if next_low > low_ns {
        reader.with_conn(|c| set_mark(c, opts, next_low))?;
    }
    Ok(next_low)
}

/// The settle worker: a pass every `every` until `stop` is set.
pub fn run_worker(
    reader: Reader,
    opts: AnalysisOptions,
    quiet: Duration,
    every: Duration,
    counters: Arc<SettleCounters>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut low = i64::MIN;
    // A pass that fails fails again 4 times a second while its cause lasts (a full disk): said
    // once, then summed up.
    let mut failing = Outage::new(outage::SUMMARY_EVERY);
    while !stop.load(Ordering::Relaxed) {
        let result = settle_pass(
            &reader,
            &opts,
            crate::ingest::now_ns(),
            quiet,
            low,
            &counters,
            &stop,
        );
        let now = std::time::Instant::now();
        match result {
            Ok(next) => {
                low = next;
                if let Some(Say::Ended(t)) = failing.succeeded(now) {
                    tracing::info!(
                        "computing trace results works again after {} ({} passes failed)",
                        outage::for_people(t.lasted),
                        t.failures
                    );
                }
            }
            Err(e) => match failing.failed(now, 0) {
                Some(Say::Began) => tracing::warn!(
                    error = %e,
                    "computing trace results failed; reports compute what is missing from spans meanwhile, and settling retries every pass"
                ),
                Some(Say::Still(t)) => tracing::warn!(
                    error = %e,
                    "computing trace results still failing: {} passes failed in {}",
                    t.failures,
                    outage::for_people(t.lasted)
                ),
                _ => tracing::debug!(error = %e, "computing trace results failed"),
            },
        }
        std::thread::sleep(every);
    }
}

/// Computes and stores the results of every trace in the store that lacks fresh ones, settled or
/// not (an import is complete when it ends; a store from before results existed is brought up to
/// date). `progress` hears (done, total) after each batch. Returns how many were computed.
pub fn complete_all(
    reader: &Reader,
    opts: &AnalysisOptions,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, StoreError> {
    // Spans that arrive from here on are received at or after this time.
    let started = crate::ingest::now_ns() as i64;
    let pending = reader.with_conn(|c| pending(c, opts, u64::MAX >> 1, i64::MIN))?;
    let ids: Vec<TraceId> = pending.iter().map(|(id, _, _)| *id).collect();
    let total = ids.len() as u64;
    let mut done = 0;
    for chunk in ids.chunks(BATCH_TRACES) {
        let computed = compute_parallel(reader, chunk, opts)?;
        done += reader.with_conn(|c| store_results(c, &computed, opts, None))?;
        progress(done, total);
    }
    reader.with_conn(|c| set_mark(c, opts, started))?;
    Ok(done)
}

/// Records that every trace received before `low_ns` has fresh results under `opts` (or is marked
/// stale).
fn set_mark(conn: &Connection, opts: &AnalysisOptions, low_ns: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO settle_marks (fingerprint, low_ns) VALUES (?1, ?2)
         ON CONFLICT (fingerprint) DO UPDATE SET low_ns = excluded.low_ns",
    )?
    .execute(params![fingerprint(opts), low_ns])?;
    Ok(())
}

/// The time before which every trace has fresh results under `opts`, when one was recorded.
fn mark(conn: &Connection, opts: &AnalysisOptions) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT low_ns FROM settle_marks WHERE fingerprint = ?1")?
        .query_row(params![fingerprint(opts)], |r| r.get(0))
        .optional()?
        .unwrap_or(i64::MIN))
}

/// The results that stand for everything the store has seen: every stored result's facts as one
/// result, plus the traces without fresh results, computed now (and stored when settled, as
/// `results_of` does).
pub fn everything(
    reader: &Reader,
    opts: &AnalysisOptions,
    store_settled_before: Option<u64>,
) -> Result<Vec<TraceResult>, StoreError> {
    let pending: Vec<TraceId> = reader
        .with_conn(|c| {
            let low = mark(c, opts)?;
            pending(c, opts, 0, low)
        })?
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    let mut out = results_of(reader, &pending, opts, store_settled_before)?;
    out.push(super::seen::everything_seen(reader)?);
    Ok(out)
}
