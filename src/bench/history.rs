//! `tracecov bench history`: questions over a suite's history, from a real store holding a suite
//! of many large runs (DESIGN: `diff` and `flaky` over a suite of 100 runs of 100,000 spans each
//! answer in 100 ms or less).
//!
//! `build_suite` writes the suite: one generated run (`analysis::generate`) stored `runs` times
//! under fresh trace ids, each time as its own run of one suite, through the store's writer and
//! run assignment; some tests fail on their first hop in every other run (flaky hops), one test in
//! every run (a steady failure). Every trace's results are then computed as the settle worker
//! computes them. `time` times a question over it; `run` times `flaky` and a trend, first with
//! the digests not yet made (cold), then as asked again, against the baseline of the same
//! invocation: turning each run's rollup into its graph, which is what any question over the
//! runs would pay without the digests. `diff` is timed the same way over the same store: as it
//! answers (from the runs' digests and failures), and from the two runs' full analyses, the
//! baseline it stands for, whose answer it must equal.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::graph::AnalysisOptions;
use crate::history::{self, TrendItem};
use crate::model::{Attributes, KeyValue, Resource, Span, SpanId, StatusCode, TraceId, Value};
use crate::query::{self, ReportContext};
use crate::results::settle;
use crate::runs::{self, RunAssigner};
use crate::store::{Durability, Reader, Store};

use super::analysis::{generate, median, peak_rss};

/// The suite every run of the benchmark belongs to.
pub const SUITE: &str = "bench-history";

/// Test names whose traces fail in every other run: their first hops are flaky.
pub(super) const ALTERNATING: std::ops::Range<u64> = 0..5;
/// The test name whose traces fail in every run: a steady failure.
pub(super) const STEADY: u64 = 5;

/// A suite of generated runs in a real store.
pub struct Suite {
    pub store: Store,
    pub reader: Reader,
    /// Oldest first.
    pub runs: Vec<runs::Run>,
    /// Spans in each run.
    pub spans_per_run: usize,
}

/// A run's spans: `base` under trace ids of run `k`, its resources naming the run and the
/// suite, and the tests chosen to fail in this run failing on their first call.
pub(super) fn run_spans(
    base: &[Span],
    k: usize,
    fail: &std::collections::HashSet<SpanId>,
) -> Vec<Span> {
    let mut resources: std::collections::HashMap<*const Resource, Arc<Resource>> =
        std::collections::HashMap::new();
    let run_id = run_name(k);
    base.iter()
        .map(|s| {
            let mut s = s.clone();
            let mut id = *s.trace_id.as_bytes();
            id[..4].copy_from_slice(&(k as u32 + 1).to_be_bytes());
            s.trace_id = TraceId::from_bytes(id).expect("a non-zero id stays non-zero");
            let r = resources
                .entry(Arc::as_ptr(&s.resource))
                .or_insert_with(|| {
                    let mut attrs: Vec<KeyValue> = s.resource.attributes.0.clone();
                    attrs.push(KeyValue::new(runs::RUN_ID_ATTR, run_id.clone()));
                    attrs.push(KeyValue::new(runs::SUITE_ATTR, SUITE));
                    Arc::new(Resource::new(Attributes(attrs)))
                });
            s.resource = r.clone();
            if fail.contains(&s.span_id) {
                s.status.code = StatusCode::Error;
                s.status.message = "injected by the benchmark".into();
                set(&mut s.attributes, "http.response.status_code", 503_i64);
                set(&mut s.attributes, "test.case.result.status", "fail");
            }
            s
        })
        .collect()
}

/// Sets an attribute that is already there (test status, response code); adds nothing else.
fn set(attrs: &mut Attributes, key: &str, value: impl Into<Value>) {
    if let Some(kv) = attrs.0.iter_mut().find(|kv| kv.key == key) {
        kv.value = value.into();
    }
}

pub(super) fn run_name(k: usize) -> String {
    format!("hist-{k:03}")
}

/// The spans made to fail in a run whose tests `names` fail: each such test's span, its first
/// call and the span answering that call.
pub(super) fn failing_spans(base: &[Span], names: &[String]) -> std::collections::HashSet<SpanId> {
    let tests: std::collections::HashSet<SpanId> = base
        .iter()
        .filter(|s| s.parent_span_id.is_none())
        .filter(|s| {
            s.attributes
                .str("test.case.name")
                .is_some_and(|n| names.iter().any(|f| f == n))
        })
        .map(|s| s.span_id)
        .collect();
    let mut out = tests.clone();
    let mut first_calls = std::collections::HashSet::new();
    let mut taken = std::collections::HashSet::new();
    for s in base {
        if let Some(p) = s.parent_span_id
            && tests.contains(&p)
            && taken.insert(p)
        {
            first_calls.insert(s.span_id);
        }
    }
    for s in base {
        if let Some(p) = s.parent_span_id
            && first_calls.contains(&p)
            && s.kind == crate::model::SpanKind::Server
        {
            out.insert(s.span_id);
        }
    }
    out.extend(first_calls);
    out
}

/// Writes `runs` runs of about `spans` spans each into a new store in `data` and computes every
/// trace's results. Prints what it took.
pub fn build_suite(data: &Path, runs: usize, spans: usize) -> anyhow::Result<Suite> {
    let base = generate(spans);
    let spans_per_run = base.len();
    let steady = vec![format!("test_{STEADY}")];
    let mut both: Vec<String> = ALTERNATING.map(|t| format!("test_{t}")).collect();
    both.extend(steady.iter().cloned());
    let fail_odd = failing_spans(&base, &both);
    let fail_even = failing_spans(&base, &steady);

    let mut store = Store::open(data, Durability::Process)?;
    let mut assigner = RunAssigner::open(data, Vec::new())?;
    let started = Instant::now();
    for k in 0..runs {
        let fail = if k % 2 == 1 { &fail_odd } else { &fail_even };
        let spans = run_spans(&base, k, fail);
        for batch in spans.chunks(2_000) {
            store.write(batch, crate::ingest::now_ns())?;
            let refs: Vec<&Span> = batch.iter().collect();
            assigner.assign(&refs, crate::ingest::now_ns())?;
        }
    }
    drop(assigner);
    let ingest_s = started.elapsed().as_secs_f64();
    let total = (spans_per_run * runs) as f64;
    println!(
        "stored {runs} runs of {spans_per_run} spans in {ingest_s:.1} s ({:.0} spans/s)",
        total / ingest_s
    );
    let reader = store.reader();
    let started = Instant::now();
    let traces = settle::complete_all(&reader, &AnalysisOptions::default(), |_, _| {})?;
    let settle_s = started.elapsed().as_secs_f64();
    println!(
        "per-trace results of {traces} traces in {settle_s:.1} s ({:.0} spans/s)",
        total / settle_s
    );
    let mut listed = reader.with_conn(|c| runs::suite_runs(c, SUITE, runs))?;
    listed.reverse();
    Ok(Suite {
        store,
        reader,
        runs: listed,
        spans_per_run,
    })
}

/// Runs `f` `repeat` times; returns each duration in seconds, in order (the first one cold
/// when nothing was asked before).
pub fn time<T>(
    repeat: usize,
    mut f: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let started = Instant::now();
        std::hint::black_box(f()?);
        out.push(started.elapsed().as_secs_f64());
    }
    Ok(out)
}

/// The context questions are asked in: defaults, no settle period (nothing is computed from
/// spans here: every trace has results).
pub fn context() -> ReportContext {
    ReportContext::default()
}

fn ms(s: f64) -> String {
    format!("{:.1} ms", s * 1000.0)
}

pub fn run(runs: usize, spans: usize, repeat: usize, keep: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = super::results::tempfile_dir()?;
    let data = keep.clone().unwrap_or_else(|| dir.join("data"));
    println!(
        "history benchmark: {runs} runs of about {spans} spans in suite {SUITE:?}, store in {}",
        data.display()
    );
    let suite = build_suite(&data, runs, spans)?;
    let reader = &suite.reader;
    let ctx = context();
    let last = history::DEFAULT_LAST.min(runs);

    // The baseline: each run of the default window turned from its rollup into its graph, as
    // every question over the runs would pay without digests.
    let window = history::window(reader, Some(SUITE), None, last)?;
    let graphs = time(repeat, || {
        for r in &window.runs {
            query::merged_runs(reader, std::slice::from_ref(&r.id), &ctx)?;
        }
        Ok(())
    })?;
    let baseline = median(graphs.clone());
    println!(
        "baseline: {last} runs' rollups into graphs {} (median of {repeat}; {} a run)",
        ms(baseline),
        ms(baseline / last as f64)
    );

    let mut windows = vec![last];
    if runs > last {
        windows.push(runs);
    }
    for n in windows {
        let w = history::window(reader, Some(SUITE), None, n)?;
        let mut hops = 0;
        let mut made: i64 = reader.with_conn(|c| {
            Ok(c.query_row("SELECT COUNT(*) FROM run_digests", [], |r| r.get(0))?)
        })?;
        if n > last {
            // The other runs' digests, made as `serve`'s history keeper makes them once a run
            // is complete (every run is: every trace has results).
            let stop = std::sync::atomic::AtomicBool::new(false);
            let started = Instant::now();
            let count = history::digest_pass(reader, &ctx, u64::MAX >> 1, usize::MAX, &stop)?;
            let took = started.elapsed().as_secs_f64();
            println!(
                "making {count} runs' digests as serve's history keeper does: {} ({} a run)",
                ms(took),
                ms(took / count.max(1) as f64)
            );
            made += count as i64;
        }
        let times = time(repeat + 1, || {
            hops = history::flaky_hops(reader, &w, &ctx)?.len();
            Ok(())
        })?;
        let warm = median(times[1..].to_vec());
        let read = median(time(repeat, || {
            Ok(history::digests(reader, &w.runs, &ctx, None)?)
        })?);
        println!(
            "flaky over the last {n} runs ({hops} flaky hops): asked first {} ({} digests to make), then {} (median of {repeat}; reading the digests {}); ratio to the baseline {:.3}",
            ms(times[0]),
            (n as i64 - made).max(0),
            ms(warm),
            ms(read),
            warm / baseline
        );
    }
    // A trend of one of the flaky hops' edges, over the default window and over every run.
    let sample = history::flaky_hops(reader, &window, &ctx)?;
    if let Some(h) = sample.first() {
        let item = TrendItem {
            caller: h.caller.clone(),
            callee: h.callee.clone(),
            operation: None,
        };
        let mut windows = vec![last];
        if runs > last {
            windows.push(runs);
        }
        for n in windows {
            let w = history::window(reader, Some(SUITE), None, n)?;
            let times = time(repeat, || {
                Ok(history::trend_of(reader, &w, &item, &ctx, None)?)
            })?;
            println!(
                "history of {} -> {} over the last {n} runs: {} (median of {repeat})",
                h.caller,
                h.callee,
                ms(median(times))
            );
        }
    }
    // What the report of the newest run adds to mark its failures on flaky hops.
    if let Some(newest) = suite.runs.last() {
        let (graph, blame) = query::merged_runs(reader, std::slice::from_ref(&newest.id), &ctx)?;
        let own = || history::RunDigest::of(&graph, &blame);
        let times = time(repeat, || {
            Ok(history::flaky_in_report(
                reader,
                newest,
                &blame.failures,
                &own,
                &ctx,
            )?)
        })?;
        println!(
            "marking the newest run's report's flaky failures: {} (median of {repeat})",
            ms(median(times))
        );
        let report = time(repeat, || Ok(query::analyse_run(reader, newest, &ctx)?))?;
        println!(
            "the newest run's whole report, marks included: {} (median of {repeat})",
            ms(median(report))
        );
        // `tracecov diff previous NEWEST` as it answers: from the two runs' history digests and
        // failures (kept by the history keeper's pass above), each run's coverage over the
        // run's expected set, the latency changes judged on the digests' p95s.
        // Timed elapsed and as this thread's time on a core (the question runs on it alone),
        // which leaves out the time other processes had the core on a shared machine.
        let mut on_cpu = Vec::new();
        let times = time(repeat + 1, || {
            let before = super::expectations::thread_cpu_seconds()?;
            let diff = query::diff_runs(reader, "previous", &newest.id, &ctx)?;
            on_cpu.push(super::expectations::thread_cpu_seconds()? - before);
            Ok(diff)
        })?;
        let first = times[0];
        println!(
            "diff previous -> newest from the runs' digests: asked first {} ({} on a core), then {} ({} on a core; medians of {repeat})",
            ms(first),
            ms(on_cpu[0]),
            ms(median(times[1..].to_vec())),
            ms(median(on_cpu[1..].to_vec()))
        );
        // The same question from the two runs' full analyses (each run's rollup into its graph
        // and report, the base's coverage again over the run's expected set), as `diff`
        // answered before its digests: the first time pays the two analyses; asked again, the
        // analyses are the cache's, as in `serve`.
        let cached = ReportContext {
            cache: Some(Arc::new(query::AnalysisCache::default())),
            ..ctx.clone()
        };
        let times = time(repeat + 1, || {
            Ok(query::diff_analysed(
                reader, "previous", &newest.id, &cached,
            )?)
        })?;
        println!(
            "the same from the runs' full analyses: asked first {}, then {} (analyses cached, median of {repeat}); the digests' first answer takes {:.3} of the analyses' first",
            ms(times[0]),
            ms(median(times[1..].to_vec())),
            first / times[0]
        );
        if query::diff_runs(reader, "previous", &newest.id, &ctx)?
            != query::diff_analysed(reader, "previous", &newest.id, &ctx)?
        {
            anyhow::bail!("diff from the runs' digests differs from the diff of their analyses");
        }
        println!("the two answers are the same");
        // A store no server kept since the digests' failures were added: the two runs' records
        // missing, made from their rollups on the way and kept.
        let base = query::resolve_run_beside(reader, "previous", newest)?;
        reader.with_conn(|c| {
            for table in ["run_digests", "run_failures"] {
                c.execute(
                    &format!("DELETE FROM {table} WHERE run_id IN (?1, ?2)"),
                    rusqlite::params![newest.id, base.id],
                )?;
            }
            Ok(())
        })?;
        let missing = time(1, || {
            Ok(query::diff_runs(reader, "previous", &newest.id, &ctx)?)
        })?;
        println!(
            "diff with the two runs' records missing (made from their rollups and kept): {}",
            ms(missing[0])
        );
    }
    let (digest_bytes, failure_bytes, rollup_bytes): (i64, i64, i64) = reader.with_conn(|c| {
        Ok(c.query_row(
            "SELECT (SELECT COALESCE(SUM(length(data)), 0) FROM run_digests),
                    (SELECT COALESCE(SUM(length(data)), 0) FROM run_failures),
                    (SELECT COALESCE(SUM(length(data)), 0) FROM run_rollups)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?)
    })?;
    let kib = |bytes: i64| bytes as f64 / 1024.0 / runs as f64;
    println!(
        "stored: digests {:.1} KiB a run, failures {:.1} KiB a run, rollups {:.1} KiB a run",
        kib(digest_bytes),
        kib(failure_bytes),
        kib(rollup_bytes)
    );
    println!(
        "peak resident memory: {:.0} MiB",
        peak_rss().unwrap_or(0) as f64 / 1048576.0
    );
    let Suite { store, reader, .. } = suite;
    drop(reader);
    store.close()?;
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(kept) = keep {
        println!("store kept in {}", kept.display());
    }
    Ok(())
}
