//! History across runs (DESIGN, "History across runs"): flaky hops and trends over a suite's
//! last runs.
//!
//! Owns `RunDigest` (`digest`: what history needs of one run), the `run_digests` table that
//! keeps one per run and fingerprint, the suite's window of runs, and the two questions asked of
//! it: `flaky` (pure, in `flaky`) and `trend` (pure, in `trend`). `query` and the report read
//! `flaky_in_report` to mark failures on flaky hops.
//!
//! Key design decision: history never re-analyses spans, and it does not turn each run's rollup
//! into a graph either. A run's rollup → graph is tens of milliseconds for a 100,000-span run
//! (BENCHMARKS.md, "History"), twenty of them too slow for a question DESIGN wants answered in
//! milliseconds. So each run's digest is computed once from its graph and kept with the stamp
//! of the rollup it came from: `rollup_stamps` holds, per run and fingerprint, the results
//! generation of the transaction that last rewrote the run's rollup (`results::settle` writes it
//! in that transaction), and a digest is fresh while its stamp is the rollup's. A run whose
//! traces are still pending gets a digest computed for the question and not kept.
//!
//! Everything here but `flaky` and `trend` blocks (SQLite, merging a rollup): call it from a
//! blocking thread.

pub mod digest;
pub mod flaky;
pub mod trend;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use rusqlite::{OptionalExtension, params};

use crate::blame::Blame;
use crate::graph::RunGraph;
use crate::query::{self, QueryError, ReportContext};
use crate::results::{fingerprint, settle};
use crate::runs::{self, Run};
use crate::store::{Reader, StoreError};

pub use digest::RunDigest;
pub use flaky::{FlakyHop, WindowRun};
pub use trend::{TrendItem, TrendPoint};

/// Runs of a suite `flaky` and the trends look at when not told (`--last`, `last=`).
pub const DEFAULT_LAST: usize = 20;

/// The most runs a window holds, whatever is asked.
pub const MAX_LAST: usize = 1_000;

/// One run of a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowEntry {
    pub id: String,
    pub name: String,
    pub created_ns: u64,
}

/// A suite's last runs, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub suite: String,
    pub runs: Vec<WindowEntry>,
}

/// The window of `last` runs of a suite: `suite`, else `until`'s, else the latest run's; ending
/// at `until` when given, else at the suite's newest run.
pub fn window(
    reader: &Reader,
    suite: Option<&str>,
    until: Option<&Run>,
    last: usize,
) -> Result<Window, QueryError> {
    let suite = match (suite, until) {
        (Some(s), _) => s.to_owned(),
        (None, Some(run)) => run.suite.clone(),
        (None, None) => query::resolve_run(reader, "latest")?.suite,
    };
    let until = until
        .filter(|r| r.suite == suite)
        .map(|r| (r.created_ns, r.id.as_str()));
    let mut heads = reader.with_conn(|c| runs::suite_run_heads(c, &suite, until, last))?;
    if heads.is_empty() {
        return Err(QueryError::NoSuchSuite(suite));
    }
    heads.reverse();
    Ok(Window {
        suite,
        runs: heads
            .into_iter()
            .map(|(id, name, created_ns)| WindowEntry {
                id,
                name,
                created_ns,
            })
            .collect(),
    })
}

/// A run whose graph and blame the caller already holds (the run a report or a page is
/// about): its digest is made from them when none is stored, rather than from its rollup again.
pub type Known<'a> = Option<(&'a str, &'a dyn Fn() -> RunDigest)>;

/// The digests of `runs`, in order: stored ones where fresh, the others computed from the runs'
/// rollups (and kept when nothing of the run is pending), or from what the caller knows.
pub fn digests(
    reader: &Reader,
    runs: &[WindowEntry],
    ctx: &ReportContext,
    known: Known<'_>,
) -> Result<Vec<RunDigest>, QueryError> {
    let fp = fingerprint(&ctx.analysis);
    let mut out = Vec::with_capacity(runs.len());
    for run in runs {
        let (stamp, stored) = reader.with_conn(|c| load(c, &run.id, fp))?;
        if let Some(d) = stored {
            out.push(d);
            continue;
        }
        if let Some((id, make)) = known
            && id == run.id
        {
            out.push(make());
            continue;
        }
        let pending = reader.with_conn(|c| settle::count_pending(c, &run.id, &ctx.analysis))?;
        let (graph, blame) = query::merged_runs(reader, std::slice::from_ref(&run.id), ctx)?;
        let d = RunDigest::of(&graph, &blame);
        if pending == 0 {
            // Keeping it is a favour to the next question: a failure (the store busy past its
            // timeout) costs that question a recomputation, never this answer.
            if let Err(e) = reader.with_conn(|c| keep(c, &run.id, fp, stamp, &d)) {
                tracing::warn!(run = %run.id, error = %e, "keeping a run's history digest failed");
            }
        }
        out.push(d);
    }
    Ok(out)
}

/// The stamp of a run's rollup, and its stored digest when that is fresh (made from the rollup
/// with that stamp, of this digest version).
fn load(
    conn: &rusqlite::Connection,
    run: &str,
    fp: i64,
) -> Result<(i64, Option<RunDigest>), StoreError> {
    // One statement: the stamp and the digest as of one moment.
    let row: Option<(i64, Option<i64>, Option<Vec<u8>>)> = conn
        .prepare_cached(
            "SELECT COALESCE(s.stamp, 0), d.stamp, d.data
             FROM (SELECT ?1 AS run_id, ?2 AS fingerprint) k
             LEFT JOIN rollup_stamps s ON s.run_id = k.run_id AND s.fingerprint = k.fingerprint
             LEFT JOIN run_digests d ON d.run_id = k.run_id AND d.fingerprint = k.fingerprint",
        )?
        .query_row(params![run, fp], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((stamp, digest_stamp, data)) = row else {
        return Ok((0, None));
    };
    let fresh = (digest_stamp == Some(stamp))
        .then_some(data)
        .flatten()
        .and_then(|d| RunDigest::decode(&d));
    Ok((stamp, fresh))
}

/// Keeps a run's digest, made from its rollup as of `stamp`.
fn keep(
    conn: &rusqlite::Connection,
    run: &str,
    fp: i64,
    stamp: i64,
    d: &RunDigest,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO run_digests (run_id, fingerprint, stamp, data) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (run_id, fingerprint) DO UPDATE SET stamp = excluded.stamp, data = excluded.data",
    )?
    .execute(params![run, fp, stamp, d.encode()])?;
    Ok(())
}

fn window_runs<'a>(window: &'a Window, digests: &'a [RunDigest]) -> Vec<WindowRun<'a>> {
    window
        .runs
        .iter()
        .zip(digests)
        .map(|(r, d)| WindowRun {
            id: &r.id,
            name: &r.name,
            digest: d,
        })
        .collect()
}

/// The flaky hops of a window, most unstable first.
pub fn flaky_hops(
    reader: &Reader,
    window: &Window,
    ctx: &ReportContext,
) -> Result<Vec<FlakyHop>, QueryError> {
    let digests = digests(reader, &window.runs, ctx, None)?;
    Ok(flaky::flaky(&window_runs(window, &digests)))
}

/// An edge's or interface's trend over a window, oldest first.
pub fn trend_of(
    reader: &Reader,
    window: &Window,
    item: &TrendItem,
    ctx: &ReportContext,
    known: Known<'_>,
) -> Result<Vec<TrendPoint>, QueryError> {
    let digests = digests(reader, &window.runs, ctx, known)?;
    let runs: Vec<(WindowRun<'_>, u64)> = window_runs(window, &digests)
        .into_iter()
        .zip(&window.runs)
        .map(|(w, r)| (w, r.created_ns))
        .collect();
    let expected = crate::coverage::expected(&crate::coverage::Sources {
        manifest: ctx.manifest.as_ref(),
        contracts: &ctx.contracts,
        ..Default::default()
    });
    let judge = trend::Judge {
        expected: &expected,
        configured: ctx
            .manifest
            .as_ref()
            .is_some_and(crate::coverage::Manifest::declares_topology)
            || !ctx.contracts.is_empty(),
    };
    Ok(trend::trend(&runs, item, &judge))
}

/// A hop as (caller, callee, operation).
pub type HopNames = (String, String, String);

/// The hops flaky in the suite of `run` over its `DEFAULT_LAST` runs up to `run`, for marking
/// the failures of `run`'s report, whose graph and blame are given. Empty when none of its
/// failures has a hop and a test (nothing could be marked) or the suite has one run.
pub fn flaky_in_report(
    reader: &Reader,
    run: &Run,
    graph: &RunGraph,
    blame: &Blame,
    ctx: &ReportContext,
) -> Result<BTreeSet<HopNames>, QueryError> {
    if !blame
        .failures
        .iter()
        .any(|f| f.hop.is_some() && f.test.is_some())
    {
        return Ok(BTreeSet::new());
    }
    let window = match window(reader, None, Some(run), DEFAULT_LAST) {
        Ok(w) => w,
        // A run the store does not list (deleted meanwhile): no history to hold it against.
        Err(QueryError::NoSuchSuite(_) | QueryError::NoSuchRun(_)) => return Ok(BTreeSet::new()),
        Err(e) => return Err(e),
    };
    if window.runs.len() < 2 {
        return Ok(BTreeSet::new());
    }
    let own = || RunDigest::of(graph, blame);
    let digests = digests(reader, &window.runs, ctx, Some((&run.id, &own)))?;
    Ok(flaky::flaky(&window_runs(&window, &digests))
        .into_iter()
        .map(|h| (h.caller, h.callee, h.operation))
        .collect())
}
