//! `tracecov bench logs`: what OTLP logs cost (issue 17). A generated run is written to two real
//! stores, one with only its spans (the baseline, in the same run) and one with an ERROR log
//! record on every hundredth span; per-trace results are computed in both (timed). The log
//! records' durable ingest rate is timed beside the spans', with a record on every span.

use std::time::Instant;

use crate::graph::AnalysisOptions;
use crate::model::{KeyValue, LogRecord, Span, TracedLog};
use crate::results::settle;
use crate::store::{Durability, EncodedSpans, Store};

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

/// Writes `spans` (and `logs`) into a new store in `dir`; returns the seconds the spans and the
/// logs took to become durable, and the seconds per-trace results took (0 unless `results`).
fn one(
    dir: &std::path::Path,
    spans: &[Span],
    logs: &[TracedLog],
    results: bool,
) -> anyhow::Result<(f64, f64, f64)> {
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
    let start = Instant::now();
    if results {
        settle::complete_all(&reader, &AnalysisOptions::default(), |_, _| {})?;
    }
    let results_s = start.elapsed().as_secs_f64();
    drop(reader);
    store.close()?;
    Ok((spans_s, logs_s, results_s))
}

pub fn run(n: usize, runs: usize) -> anyhow::Result<()> {
    let spans = super::analysis::generate(n);
    let logs = error_logs(&spans, 100);
    // For the ingest rate: a record on every span, so there are as many records as spans.
    let many = error_logs(&spans, 1);
    println!(
        "logs benchmark: {} spans, {} ERROR log records (one per 100 spans), {runs} runs",
        spans.len(),
        logs.len()
    );
    let (mut without, mut with, mut span_rate, mut log_rate) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let dir = super::results::tempfile_dir()?;
        let (spans_s, _, results_s) = one(&dir.join("spans"), &spans, &[], true)?;
        without.push(results_s);
        span_rate.push(spans.len() as f64 / spans_s);
        let (_, _, results_s) = one(&dir.join("logs"), &spans, &logs, true)?;
        with.push(results_s);
        let (_, logs_s, _) = one(&dir.join("many"), &spans, &many, false)?;
        log_rate.push(many.len() as f64 / logs_s);
        std::fs::remove_dir_all(&dir)?;
    }
    let (w, o) = (median(with), median(without));
    println!(
        "median: per-trace results with logs {w:.2} s, without {o:.2} s, ratio {:.3}",
        w / o
    );
    println!(
        "median durable ingest (2,000 a commit; the log records one per span): spans {:.0}/s, log records {:.0}/s",
        median(span_rate),
        median(log_rate)
    );
    Ok(())
}
