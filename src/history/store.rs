//! The store side of history: the suite's window of runs, the runs' digests kept in
//! `run_digests` and their failures in `run_failures` (read when fresh, made from a run's rollup
//! when not, made ahead of time by `serve`'s history keeper; in a deployment, kept in the shared
//! database), the questions over a window (`flaky_hops`, `trend_of`, `flaky_in_report`), and
//! what `diff` reads of a run (`diff_records`). The only part of `history/` that does I/O.
//!
//! A run's rollup → graph is tens of milliseconds for a 100,000-span run (BENCHMARKS.md,
//! "History"), twenty of them too slow for a question DESIGN wants answered in milliseconds. So
//! each run's digest is made once from its graph and kept with the stamp of the rollup it came
//! from: `rollup_stamps` holds, per run and fingerprint, the results generation of the
//! transaction that last rewrote the run's rollup (`results::settle` writes it in that
//! transaction), and a digest is fresh while its stamp is the rollup's. A run whose traces are
//! still pending gets a digest made for the question and not kept. A run's failures are made
//! with its digest, from the same graph, kept in the same transaction with the same stamp, and
//! fresh by the same rule. `serve` keeps them ready: its history keeper (`keep_digests`, a thread
//! beside the settle worker) makes the digest and failures of every run that has finished and
//! has either missing or stale, so questions read digests and the first question after a run
//! pays no more than the others.
//!
//! In a deployment (`serve --shared-db`) a run's rollup is the sum of every instance's
//! published share, and it moves when any instance publishes, which this store's stamps do not
//! see. So the deployment keeps the records instead (`results::Deployment::history`,
//! `shared/reads.rs`): each in PostgreSQL's `run_digests` with the stamps of the shares the
//! rollup summed when they were made (every write of a share takes a new number), fresh while
//! those stamps are the shares' now. A window's records are read in one query; a record missing
//! or stale is made from the deployment's rollup and kept for every instance when nothing of the
//! run is pending anywhere (here, or on an instance that has not published its results: as in
//! one process, a run still being analysed gets records for the question alone). A record is
//! not used by the instance whose own share of the run changed since it published it, so no
//! instance answers older than its own store. The background pass runs on one instance at a
//! time, the holder of the history keeper's lease; any instance may keep what a question made,
//! and a record is written only while its stamps are current and not over one kept under them,
//! so instances racing write it once.
//!
//! Everything here blocks (SQLite, merging a rollup): call it from a blocking thread.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::{OptionalExtension, params};

use crate::blame::Failure;
use crate::query::{self, QueryError, ReportContext};
use crate::results::{fingerprint, settle};
use crate::runs::{self, Run};
use crate::store::{Reader, StoreError};

use super::digest::{self, RunDigest};
use super::failures::{FAILURES_VERSION, RunFailures};
use super::flaky::{self, FlakyHop, WindowRun};
use super::trend::{self, TrendItem, TrendPoint};

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
    query::mirror_runs(
        reader,
        crate::results::RunLookup::Suite(&suite, last.min(MAX_LAST)),
    )?;
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
    if let Some(d) = reader.deployment() {
        return deployment_digests(reader, d.as_ref(), runs, ctx, known);
    }
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
        let keep = if pending == 0 {
            Keep::Local(stamp)
        } else {
            Keep::No
        };
        out.push(make(reader, &run.id, ctx, keep)?);
    }
    Ok(out)
}

/// `digests` on one of a deployment's instances: the records the deployment keeps, read in one
/// query for the whole window, where fresh; the others made from the deployment's rollups and
/// kept there when the run is complete everywhere.
fn deployment_digests(
    reader: &Reader,
    d: &dyn crate::results::Deployment,
    runs: &[WindowEntry],
    ctx: &ReportContext,
    known: Known<'_>,
) -> Result<Vec<RunDigest>, QueryError> {
    let fp = fingerprint(&ctx.analysis);
    let ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
    let kept = reader.with_conn(|c| d.history(c, &ids, fp, false))?;
    let mut out = Vec::with_capacity(runs.len());
    for (run, kept) in runs.iter().zip(kept) {
        if let Some(digest) = kept.digest.and_then(RunDigest::decode) {
            out.push(digest);
            continue;
        }
        if let Some((id, make)) = known
            && id == run.id
        {
            out.push(make());
            continue;
        }
        let keep = deployment_keep(reader, d, &run.id, ctx, kept.shares)?;
        out.push(make(reader, &run.id, ctx, keep)?);
    }
    Ok(out)
}

/// Whether records made of `run` now may be kept in the deployment: only when nothing of the
/// run is pending anywhere (here, or on an instance that has not published its results), as
/// in one process a run with traces pending gets records for the question alone.
fn deployment_keep(
    reader: &Reader,
    d: &dyn crate::results::Deployment,
    run: &str,
    ctx: &ReportContext,
    shares: Vec<i64>,
) -> Result<Keep, QueryError> {
    if reader.with_conn(|c| settle::count_pending(c, run, &ctx.analysis))? > 0 {
        return Ok(Keep::No);
    }
    if d.pending_elsewhere(run, fingerprint(&ctx.analysis))? > 0 {
        return Ok(Keep::No);
    }
    Ok(Keep::Deployment(shares))
}

/// Where records made from a run's rollup are kept, with the stamp of that rollup.
enum Keep {
    /// Not kept: made for the question (something of the run is pending).
    No,
    /// In the embedded store, with the rollup's stamp (`rollup_stamps`).
    Local(i64),
    /// In the deployment's database, with the stamps of the rollup's shares as read before
    /// the rollup was.
    Deployment(Vec<i64>),
}

/// Makes a run's digest from its rollup, and keeps it as `keep` says (the rollup read is the
/// one the stamp stands for, or newer).
fn make(
    reader: &Reader,
    run: &str,
    ctx: &ReportContext,
    keep: Keep,
) -> Result<RunDigest, QueryError> {
    Ok(make_records(reader, run, ctx, keep)?.0)
}

/// Makes a run's digest and its failures from its rollup, and keeps both as `keep` says.
fn make_records(
    reader: &Reader,
    run: &str,
    ctx: &ReportContext,
    keep: Keep,
) -> Result<(RunDigest, RunFailures), QueryError> {
    let (graph, blame) = query::merged_runs(reader, &[run.to_owned()], ctx)?;
    let d = RunDigest::of(&graph, &blame);
    let f = RunFailures::of(&blame);
    // Keeping them is a favour to the next question: a failure (the store busy past its
    // timeout, the shared database gone) costs that question a recomputation, never this
    // answer.
    let fp = fingerprint(&ctx.analysis);
    let kept = match keep {
        Keep::No => Ok(()),
        Keep::Local(stamp) => reader.with_conn(|c| keep_local(c, run, fp, stamp, &d, &f)),
        Keep::Deployment(shares) => match reader.deployment() {
            Some(dep) => dep.keep_history(run, fp, &shares, d.as_bytes(), f.as_bytes()),
            None => Ok(()),
        },
    };
    if let Err(e) = kept {
        tracing::warn!(run = %run, error = %e, "keeping a run's history digest failed");
    }
    Ok((d, f))
}

/// What `diff` reads of a run: its digest and its failures, stored ones when both are fresh
/// and nothing of the run is pending, else made from its rollup (the traces pending computed
/// first, as for its report) and kept when nothing was pending. In a deployment they are those
/// the deployment keeps (`digests`), nothing of the run pending here.
pub fn diff_records(
    reader: &Reader,
    run: &str,
    ctx: &ReportContext,
) -> Result<(RunDigest, RunFailures), QueryError> {
    let fp = fingerprint(&ctx.analysis);
    if let Some(d) = reader.deployment() {
        let kept = reader.with_conn(|c| d.history(c, &[run.to_owned()], fp, true))?;
        let kept = kept.into_iter().next().unwrap_or_default();
        let pending = reader.with_conn(|c| settle::run_has_pending(c, run, &ctx.analysis))?;
        let records = kept
            .digest
            .and_then(RunDigest::decode)
            .zip(kept.failures.and_then(RunFailures::decode));
        return match records {
            Some(records) if !pending => Ok(records),
            _ if pending => make_records(reader, run, ctx, Keep::No),
            _ => {
                let keep = deployment_keep(reader, d.as_ref(), run, ctx, kept.shares)?;
                make_records(reader, run, ctx, keep)
            }
        };
    }
    let (stamp, stored) = reader.with_conn(|c| load_records(c, run, fp))?;
    let pending = reader.with_conn(|c| settle::run_has_pending(c, run, &ctx.analysis))?;
    match stored {
        Some(records) if !pending => Ok(records),
        _ if pending => make_records(reader, run, ctx, Keep::No),
        _ => make_records(reader, run, ctx, Keep::Local(stamp)),
    }
}

/// Makes and keeps the digests of up to `limit` complete runs (closed, or quiet since
/// `settled_before`, and nothing pending) whose digest is missing or stale, newest first.
/// Returns how many it made. `serve` runs it in the background (`keep_digests`), so that a
/// question over a suite finds every finished run's digest ready.
pub fn digest_pass(
    reader: &Reader,
    ctx: &ReportContext,
    settled_before: u64,
    limit: usize,
    stop: &AtomicBool,
) -> Result<usize, QueryError> {
    if let Some(d) = reader.deployment() {
        return deployment_pass(reader, d.as_ref(), ctx, settled_before, limit, stop);
    }
    let fp = fingerprint(&ctx.analysis);
    let stale: Vec<(String, i64)> = reader.with_conn(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT r.id, s.stamp FROM runs r
             JOIN rollup_stamps s ON s.run_id = r.id AND s.fingerprint = ?1
             LEFT JOIN run_digests d ON d.run_id = r.id AND d.fingerprint = ?1
             LEFT JOIN run_failures f ON f.run_id = r.id AND f.fingerprint = ?1
             WHERE (d.stamp IS NULL OR d.stamp != s.stamp OR substr(d.data, 1, 4) != ?2
                    OR f.stamp IS NULL OR f.stamp != s.stamp OR substr(f.data, 1, 4) != ?4)
               AND (r.closed_ns IS NOT NULL OR r.last_ns <= ?3)
             ORDER BY r.created_ns DESC",
        )?;
        let rows = stmt
            .query_map(
                params![
                    fp,
                    &digest::DIGEST_VERSION.to_le_bytes()[..],
                    settled_before as i64,
                    &FAILURES_VERSION.to_le_bytes()[..],
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    })?;
    let mut made = 0;
    for (run, stamp) in stale {
        if made >= limit || stop.load(Ordering::Relaxed) {
            break;
        }
        // A run still receiving or analysing traces gets its digest when it is done.
        if reader.with_conn(|c| settle::count_pending(c, &run, &ctx.analysis))? > 0 {
            continue;
        }
        make(reader, &run, ctx, Keep::Local(stamp))?;
        made += 1;
    }
    Ok(made)
}

/// Candidates `deployment_pass` reads at a time: more than it makes, so that runs it must
/// skip (something pending somewhere) do not hide the others.
const CANDIDATES: usize = 64;

/// `digest_pass` on one of a deployment's instances: only the deployment's history keeper (one
/// instance at a time, `Deployment::history_to_make`) makes records, of runs finished in the
/// whole deployment, and keeps them in the shared database for every instance. Another
/// instance making the same run's records at once (a question) writes the same thing; the
/// database keeps one.
fn deployment_pass(
    reader: &Reader,
    d: &dyn crate::results::Deployment,
    ctx: &ReportContext,
    settled_before: u64,
    limit: usize,
    stop: &AtomicBool,
) -> Result<usize, QueryError> {
    let fp = fingerprint(&ctx.analysis);
    let todo = d.history_to_make(
        fp,
        settled_before,
        (digest::DIGEST_VERSION, FAILURES_VERSION),
        CANDIDATES.max(limit.min(crate::history::MAX_LAST)),
    )?;
    let mut made = 0;
    for (run, shares) in todo {
        if made >= limit || stop.load(Ordering::Relaxed) {
            break;
        }
        match deployment_keep(reader, d, &run, ctx, shares)? {
            Keep::No => continue,
            keep => {
                make(reader, &run, ctx, keep)?;
                made += 1;
            }
        }
    }
    Ok(made)
}

/// How often `keep_digests` looks for runs to digest, and the most it makes at a time.
const KEEP_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
const KEEP_AT_ONCE: usize = 4;

/// `serve`'s history keeper: `digest_pass` every half second until `stop` is set. Runs are
/// complete once they are closed or quiet for `quiet` (the settle period).
pub fn keep_digests(
    reader: Reader,
    ctx: std::sync::Arc<ReportContext>,
    quiet: std::time::Duration,
    stop: std::sync::Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let settled_before = crate::ingest::now_ns().saturating_sub(quiet.as_nanos() as u64);
        if let Err(e) = digest_pass(&reader, &ctx, settled_before, KEEP_AT_ONCE, &stop) {
            // Nothing is lost: the next question makes the digest it needs.
            tracing::debug!(error = %e, "making runs' history digests failed");
        }
        std::thread::sleep(KEEP_EVERY);
    }
}

/// The stamp of a run's rollup, and its stored digest when that is fresh (made from the rollup
/// with that stamp, of this digest version).
pub(super) fn load(
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
        .and_then(RunDigest::decode);
    Ok((stamp, fresh))
}

/// The stamp of a run's rollup, and its stored digest and failures when both are fresh (made
/// from the rollup with that stamp, of this version).
fn load_records(
    conn: &rusqlite::Connection,
    run: &str,
    fp: i64,
) -> Result<(i64, Option<(RunDigest, RunFailures)>), StoreError> {
    // One statement: the stamp and both records as of one moment.
    type Row = (
        i64,
        Option<i64>,
        Option<Vec<u8>>,
        Option<i64>,
        Option<Vec<u8>>,
    );
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT COALESCE(s.stamp, 0), d.stamp, d.data, f.stamp, f.data
             FROM (SELECT ?1 AS run_id, ?2 AS fingerprint) k
             LEFT JOIN rollup_stamps s ON s.run_id = k.run_id AND s.fingerprint = k.fingerprint
             LEFT JOIN run_digests d ON d.run_id = k.run_id AND d.fingerprint = k.fingerprint
             LEFT JOIN run_failures f ON f.run_id = k.run_id AND f.fingerprint = k.fingerprint",
        )?
        .query_row(params![run, fp], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((stamp, digest_stamp, digest, failures_stamp, failures)) = row else {
        return Ok((0, None));
    };
    let fresh = |at: Option<i64>, data: Option<Vec<u8>>| (at == Some(stamp)).then_some(data)?;
    let records = fresh(digest_stamp, digest)
        .and_then(RunDigest::decode)
        .zip(fresh(failures_stamp, failures).and_then(RunFailures::decode));
    Ok((stamp, records))
}

/// Keeps a run's digest and failures, made from its rollup as of `stamp`, in one transaction.
fn keep_local(
    conn: &rusqlite::Connection,
    run: &str,
    fp: i64,
    stamp: i64,
    d: &RunDigest,
    f: &RunFailures,
) -> Result<(), StoreError> {
    // IMMEDIATE: the write lock first, as every writer takes it (a deferred transaction that
    // read first could not upgrade once another writer committed).
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let write = || -> Result<(), StoreError> {
        for (sql, data) in [
            (
                "INSERT INTO run_digests (run_id, fingerprint, stamp, data) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (run_id, fingerprint)
                 DO UPDATE SET stamp = excluded.stamp, data = excluded.data",
                d.as_bytes(),
            ),
            (
                "INSERT INTO run_failures (run_id, fingerprint, stamp, data) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (run_id, fingerprint)
                 DO UPDATE SET stamp = excluded.stamp, data = excluded.data",
                f.as_bytes(),
            ),
        ] {
            conn.prepare_cached(sql)?
                .execute(params![run, fp, stamp, data])?;
        }
        Ok(())
    };
    match write() {
        Ok(()) => Ok(conn.execute_batch("COMMIT")?),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
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
/// `failures`, those of `run`'s report; `own` makes the run's digest when none is stored (from
/// the graph and blame the caller holds, or its digest). Empty when none of the failures has a
/// hop and a test (nothing could be marked) or the suite has one run.
pub fn flaky_in_report(
    reader: &Reader,
    run: &Run,
    failures: &[Failure],
    own: &dyn Fn() -> RunDigest,
    ctx: &ReportContext,
) -> Result<BTreeSet<HopNames>, QueryError> {
    if !failures.iter().any(|f| f.hop.is_some() && f.test.is_some()) {
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
    let digests = digests(reader, &window.runs, ctx, Some((&run.id, own)))?;
    Ok(flaky::flaky(&window_runs(&window, &digests))
        .into_iter()
        .map(|h| (h.caller, h.callee, h.operation))
        .collect())
}
