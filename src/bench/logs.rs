//! `tracecov bench logs`: what OTLP logs cost (issue 17). A generated run is written to two real
//! stores, one with only its spans (the baseline, in the same run) and one with an ERROR log
//! record on every hundredth span; per-trace results are computed in both (timed). The log
//! records' durable ingest rate is timed beside the spans', with a record on every span.
//!
//! A key design decision is that the comparison is made pair by pair: each run builds both
//! stores afresh and computes their results one right after the other, the order alternating
//! from run to run, and the ratio is taken within the run; the median of those ratios is the
//! figure. The machine these run on is shared and its speed drifts by more than the effect
//! measured, and a drift moves both halves of a pair alike; alternating the order keeps
//! whatever favours the first (or the second) of a pair from always favouring the same store.
//!
//! `--keep DIR` leaves the last run's two stores in `DIR/without` and `DIR/with`, and
//! `--analyse STORE` then computes every trace's results of one of them and stores nothing, so
//! it can be repeated: the two can also be timed from outside, as whole processes, in turn.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use crate::graph::AnalysisOptions;
use crate::model::{KeyValue, LogRecord, Span, TraceId, TracedLog};
use crate::results::settle;
use crate::store::{self, Durability, EncodedSpans, Reader, Store};

use super::analysis::median;

/// One ERROR record (with an exception, as a logging bridge writes it) on every `every`th span.
fn error_logs(spans: &[Span], every: usize) -> Vec<TracedLog> {
    spans
        .iter()
        .step_by(every)
        .map(|s| TracedLog {
            trace_id: s.trace_id,
            span_id: Some(s.span_id),
            record: LogRecord {
                time_ns: s.start_ns + 1,
                severity_number: LogRecord::ERROR,
                severity_text: "ERROR".to_owned(),
                body: "could not reserve stock; dropping the message".to_owned(),
                attributes: [
                    KeyValue::new("exception.type", "KeyError"),
                    KeyValue::new("exception.message", "sku-404"),
                ]
                .into_iter()
                .collect(),
            },
        })
        .collect()
}

/// What `one` timed, in seconds.
struct Timed {
    /// The spans' and the log records' durable ingest.
    spans: f64,
    logs: f64,
    /// Every trace's results computed and stored: elapsed, and CPU time of this process (all
    /// its threads). On a shared machine the elapsed time also holds the time other processes
    /// had the cores; the CPU time holds only the work done.
    results_wall: f64,
    results_cpu: f64,
}

/// Writes `spans` (and `logs`) into a new store in `dir`, and computes every trace's results
/// when `results`.
fn one(dir: &Path, spans: &[Span], logs: &[TracedLog], results: bool) -> anyhow::Result<Timed> {
    let mut store = Store::open(dir, Durability::Process)?;
    let start = Instant::now();
    for batch in spans.chunks(2_000) {
        store.write(batch, crate::ingest::now_ns())?;
    }
    let spans_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for batch in logs.chunks(2_000) {
        let encoded = EncodedSpans::encode_logs(batch);
        store.write_encoded(&[&encoded], crate::ingest::now_ns())?;
    }
    let logs_s = start.elapsed().as_secs_f64();
    let reader = store.reader();
    let (start, cpu) = (Instant::now(), cpu_seconds()?);
    if results {
        settle::complete_all(&reader, &AnalysisOptions::default(), |_, _| {})?;
    }
    let (results_wall, results_cpu) = (start.elapsed().as_secs_f64(), cpu_seconds()? - cpu);
    drop(reader);
    store.close()?;
    Ok(Timed {
        spans: spans_s,
        logs: logs_s,
        results_wall,
        results_cpu,
    })
}

/// CPU time (user and system) this process has used so far, every thread's including those that
/// ended, from Linux's `/proc/self/stat`, in its clock ticks of 1/100 s (`USER_HZ`, 100 on every
/// Linux architecture this runs on): 10 ms steps, against phases of a second or more.
pub(super) fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // The command name (field 2) may hold spaces; the fields after it are numbers.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15; `fields` starts at field 3.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .context("unexpected /proc/self/stat")? as f64)
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// The directories `--keep` fills, refused unless new or empty: a store already there would be
/// added to, and the comparison would not be of the generated run.
fn kept_dirs(keep: &Path) -> anyhow::Result<[PathBuf; 2]> {
    let dirs = [keep.join("without"), keep.join("with")];
    for dir in &dirs {
        if dir.exists()
            && std::fs::read_dir(dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .next()
                .is_some()
        {
            anyhow::bail!(
                "{} is not empty; --keep needs new or empty directories",
                dir.display()
            );
        }
    }
    Ok(dirs)
}

pub fn run(n: usize, runs: usize, keep: Option<&Path>) -> anyhow::Result<()> {
    let kept = keep.map(kept_dirs).transpose()?;
    let spans = super::analysis::generate(n);
    let logs = error_logs(&spans, 100);
    // For the ingest rate: a record on every span, so there are as many records as spans.
    let many = error_logs(&spans, 1);
    println!(
        "logs benchmark: {} spans, {} ERROR log records (one per 100 spans), {runs} runs, \
         the two stores' results in turn (the order alternating)",
        spans.len(),
        logs.len()
    );
    // Per store, [without, with]: every run's elapsed and CPU seconds.
    let (mut wall, mut cpu) = ([vec![], vec![]], [vec![], vec![]]);
    let (mut wall_ratios, mut cpu_ratios) = (vec![], vec![]);
    let (mut span_rate, mut log_rate) = (vec![], vec![]);
    for i in 0..runs {
        let dir = super::results::tempfile_dir()?;
        let stores = match &kept {
            Some(kept) if i + 1 == runs => kept.clone(),
            _ => [dir.join("without"), dir.join("with")],
        };
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let side_logs: &[TracedLog] = if side == 1 { &logs } else { &[] };
            let t = one(&stores[side], &spans, side_logs, true)?;
            span_rate.push(spans.len() as f64 / t.spans);
            wall[side].push(t.results_wall);
            cpu[side].push(t.results_cpu);
        }
        let t = one(&dir.join("many"), &spans, &many, false)?;
        log_rate.push(many.len() as f64 / t.logs);
        std::fs::remove_dir_all(&dir)?;
        let pair = |v: &[Vec<f64>; 2]| (v[0][i], v[1][i], v[1][i] / v[0][i]);
        let (w0, w1, wr) = pair(&wall);
        let (c0, c1, cr) = pair(&cpu);
        println!(
            "run {}{}: per-trace results without logs {w0:.3} s ({c0:.2} s CPU), with {w1:.3} s \
             ({c1:.2} s CPU); ratio with/without {wr:.3} elapsed, {cr:.3} CPU",
            i + 1,
            if order[0] == 1 { " (with first)" } else { "" },
        );
        wall_ratios.push(wr);
        cpu_ratios.push(cr);
    }
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!("{lo:.3} to {hi:.3}")
    };
    let [wall_without, wall_with] = wall;
    let [cpu_without, cpu_with] = cpu;
    println!(
        "median elapsed: per-trace results with logs {:.3} s, without {:.3} s; ratio with/without \
         (median of the runs' ratios) {:.3}, the runs' from {}",
        median(wall_with),
        median(wall_without),
        median(wall_ratios.clone()),
        range(&wall_ratios)
    );
    println!(
        "median CPU: per-trace results with logs {:.2} s, without {:.2} s; ratio with/without \
         (median of the runs' ratios) {:.3}, the runs' from {}",
        median(cpu_with),
        median(cpu_without),
        median(cpu_ratios.clone()),
        range(&cpu_ratios)
    );
    println!(
        "median durable ingest (2,000 a commit; the log records one per span): spans {:.0}/s, \
         log records {:.0}/s",
        median(span_rate),
        median(log_rate)
    );
    if let Some([without, with]) = kept {
        println!(
            "the last run's stores kept in {} and {}",
            without.display(),
            with.display()
        );
    }
    Ok(())
}

/// Computes every trace's results of the store in `dir` as the settle worker does (the same
/// batches, on every core) and stores nothing, so that it can be run again and again; prints
/// the time that took.
pub fn analyse(dir: &Path) -> anyhow::Result<()> {
    let analysed = analyse_store(dir, &AnalysisOptions::default())?;
    println!(
        "per-trace results of {} traces in {}: {:.3} s (nothing stored)",
        analysed.traces,
        dir.display(),
        analysed.seconds
    );
    Ok(())
}

/// What `analyse_store` did.
pub(super) struct Analysed {
    pub traces: usize,
    /// Violations in the results (none without expectations).
    pub violations: usize,
    /// The computing alone: opening the store and listing its traces left out.
    pub seconds: f64,
}

/// Computes every trace's results of the store in `dir` with `opts` as the settle worker does
/// (traces in the order it takes them, in its batches, on every core), and stores nothing.
pub(super) fn analyse_store(dir: &Path, opts: &AnalysisOptions) -> anyhow::Result<Analysed> {
    if !store::db_path(dir).is_file() {
        anyhow::bail!("no store in {}", dir.display());
    }
    store::prepare_for_reading(dir)?;
    let reader = Reader::new(dir);
    let ids = settle_order(&reader)?;
    let start = Instant::now();
    let (mut traces, mut violations) = (0, 0);
    for chunk in ids.chunks(settle::BATCH_TRACES) {
        let results = settle::compute_parallel(&reader, chunk, opts)?;
        traces += results.len();
        violations += results
            .iter()
            .map(|(_, r, _)| r.violations.len())
            .sum::<usize>();
    }
    Ok(Analysed {
        traces,
        violations,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Every trace of the store, in the order the settle worker takes them (the order they last
/// received something).
pub(super) fn settle_order(reader: &Reader) -> anyhow::Result<Vec<TraceId>> {
    Ok(reader.with_conn(|c| {
        let mut stmt = c.prepare("SELECT trace_id FROM traces ORDER BY last_received_ns, seq")?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        let mut ids = Vec::new();
        for row in rows {
            if let Ok(id) = TraceId::from_slice(&row?) {
                ids.push(id);
            }
        }
        Ok(ids)
    })?)
}
