//! `tracecov bench results`: what per-trace results buy, from a real store. A generated run is
//! written through the store's writer (the durable ingest path, timed), its per-trace results
//! are computed (timed, as analysis throughput against that ingest rate), and then the run's
//! JSON report is built from the stored results and, as the baseline in the same run, the way
//! every report was built before results were kept: read every span of the run and analyse them
//! all at once.

use std::sync::Arc;
use std::time::Instant;

use crate::graph::AnalysisOptions;
use crate::model::{Attributes, KeyValue, Resource, Span};
use crate::query::{self, ReportContext};
use crate::report;
use crate::results::settle;
use crate::runs::{self, RunAssigner};
use crate::store::{Durability, Reader, Store};

use super::analysis::{generate, median, peak_rss, report_from_spans};

const RUN: &str = "bench-results";
const SMALL_RUN: &str = "bench-results-small";

/// The generated spans, every resource carrying the run id (as `tracecov run` hands out).
fn spans_of_run(n: usize) -> Vec<Span> {
    let mut spans = generate(n);
    let mut stamped: std::collections::HashMap<*const Resource, Arc<Resource>> =
        std::collections::HashMap::new();
    for s in &mut spans {
        let key = Arc::as_ptr(&s.resource);
        let r = stamped.entry(key).or_insert_with(|| {
            let mut attrs: Vec<KeyValue> = s.resource.attributes.0.clone();
            attrs.push(KeyValue::new(runs::RUN_ID_ATTR, RUN));
            Arc::new(Resource::new(Attributes(attrs)))
        });
        s.resource = r.clone();
    }
    spans
}

pub fn run(n: usize, runs: usize, keep: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let data = keep.clone().unwrap_or_else(|| dir.join("data"));
    let spans = spans_of_run(n);
    println!(
        "results benchmark: {} spans generated, store in {}",
        spans.len(),
        data.display()
    );

    // Durable ingest: the writer's path (encode, group commit, run assignment).
    let mut store = Store::open(&data, Durability::Process)?;
    let mut assigner = RunAssigner::open(&data, Vec::new())?;
    let start = Instant::now();
    for batch in spans.chunks(2_000) {
        store.write(batch, crate::ingest::now_ns())?;
        let refs: Vec<&Span> = batch.iter().collect();
        assigner.assign(&refs, crate::ingest::now_ns())?;
    }
    let ingest_s = start.elapsed().as_secs_f64();
    drop(assigner);
    let reader = store.reader();
    drop(spans);
    println!(
        "durable ingest: {:.2} s ({:.0} spans/s)",
        ingest_s,
        n as f64 / ingest_s
    );

    // Per-trace analysis, as the settle worker does it.
    let opts = AnalysisOptions::default();
    let start = Instant::now();
    let computed = settle::complete_all(&reader, &opts, |_, _| {})?;
    let settle_s = start.elapsed().as_secs_f64();
    println!(
        "per-trace results: {computed} traces in {settle_s:.2} s ({:.0} spans/s; {:.2}x the durable ingest rate)",
        n as f64 / settle_s,
        ingest_s / settle_s
    );

    let ctx = ReportContext {
        settle: None,
        ..ReportContext::default()
    };
    let run = query::resolve_run(&reader, RUN)?;
    let (m, w) = compare(&reader, &run, &ctx, runs)?;
    println!(
        "median: report of the {n}-span run from stored results {m:.3} s, from its spans {w:.3} s, ratio {:.2}",
        m / w
    );

    // A small run in the same store: with no coverage source configured, its expected set is
    // everything the store has seen, which before results were kept meant analysing the store.
    let small = small_run();
    let mut assigner = RunAssigner::open(&data, Vec::new())?;
    store.write(&small, crate::ingest::now_ns())?;
    assigner.assign(&small.iter().collect::<Vec<_>>(), crate::ingest::now_ns())?;
    drop(assigner);
    settle::complete_all(&reader, &opts, |_, _| {})?;
    let run = query::resolve_run(&reader, SMALL_RUN)?;
    let (m, w) = compare(&reader, &run, &ctx, runs)?;
    println!(
        "median: report of the {}-span run in the {n}-span store from stored results {m:.4} s, before results {w:.3} s, ratio {:.4}",
        small.len(),
        m / w
    );
    println!(
        "peak resident memory: {:.0} MiB",
        peak_rss().unwrap_or(0) as f64 / 1048576.0
    );
    drop(reader);
    store.close()?;
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(kept) = keep {
        println!("store kept in {}", kept.display());
    }
    Ok(())
}

/// Times `runs` reports of `run` from stored results against the way they were built before
/// results were kept; prints each and returns the medians (stored, before).
fn compare(
    reader: &Reader,
    run: &runs::Run,
    ctx: &ReportContext,
    runs: usize,
) -> anyhow::Result<(f64, f64)> {
    let mut merged = Vec::new();
    let mut whole = Vec::new();
    for i in 1..=runs {
        let start = Instant::now();
        let json = report::to_json(&query::analyse_run(reader, run, ctx)?.report);
        let m = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let baseline = report_before(reader, run)?;
        let w = start.elapsed().as_secs_f64();
        println!(
            "  run {i} ({}): report from stored results {m:.4} s, before results {w:.3} s, ratio {:.4} ({} / {} bytes)",
            run.name,
            m / w,
            json.len(),
            baseline
        );
        merged.push(m);
        whole.push(w);
    }
    Ok((median(merged), median(whole)))
}

/// A run's report as it was built before results were kept: its spans analysed at once, and,
/// when the store holds other traces, every span of the store analysed for the expected set.
/// Returns the JSON's length.
fn report_before(reader: &Reader, run: &runs::Run) -> anyhow::Result<usize> {
    let spans = query::run_spans(reader, run)?;
    let all_ids = reader.with_conn(runs::all_traces)?;
    let everything = if all_ids.len() as u64 > run.traces {
        let mut all = Vec::new();
        for id in all_ids {
            all.extend(reader.trace(id)?);
        }
        Some(crate::graph::analyze(&all, &AnalysisOptions::default()))
    } else {
        None
    };
    let rep = report_from_spans(&spans, &run.id, everything.as_ref());
    Ok(report::to_json(&rep).len())
}

/// One generated trace (about 20 spans) under ids the large run does not use, in `SMALL_RUN`.
fn small_run() -> Vec<Span> {
    let mut spans = generate(16);
    let mut stamped: std::collections::HashMap<*const Resource, Arc<Resource>> =
        std::collections::HashMap::new();
    for s in &mut spans {
        let mut id = *s.trace_id.as_bytes();
        id[0] ^= 0x80;
        s.trace_id = crate::model::TraceId::from_bytes(id).expect("a non-zero id stays non-zero");
        for l in &mut s.links {
            let mut id = *l.trace_id.as_bytes();
            id[0] ^= 0x80;
            l.trace_id = crate::model::TraceId::from_bytes(id).expect("non-zero");
        }
        let key = Arc::as_ptr(&s.resource);
        let r = stamped.entry(key).or_insert_with(|| {
            let mut attrs: Vec<KeyValue> = s.resource.attributes.0.clone();
            attrs.push(KeyValue::new(runs::RUN_ID_ATTR, SMALL_RUN));
            Arc::new(Resource::new(Attributes(attrs)))
        });
        s.resource = r.clone();
    }
    spans
}

pub(crate) fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "tracecov-bench-results-{}-{}",
        std::process::id(),
        crate::ingest::now_ns()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
