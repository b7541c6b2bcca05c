//! `tracecov bench expectations`: what judging expectations costs per-trace analysis (issue 19:
//! violations add at most 10 % with ten expectations). A generated suite is written to a real
//! store once; every trace's results are then computed without expectations (the baseline, in
//! the same run) and with the ten of `MANIFEST`, which use every rule (`calls` both ways,
//! `repeated`, `duration_ms`, `attributes` present, absent and valued) and every kind of glob.
//!
//! Two measures, each taken as a pair in every run, the order of the pair alternating from run
//! to run, and the ratio taken within the pair (the reason is `bench logs`'s: the machine's
//! speed drifts by more than the effect measured, and a drift moves both halves of a pair alike):
//! - **analysis**: every trace's spans, read beforehand and cut into the settle worker's batches,
//!   through `results::compute` on one thread. The analysis alone, so the stricter figure: no
//!   reading from the store dilutes what the expectations add. Timed elapsed and as the thread's
//!   time on a core (which leaves out the time other processes had it).
//! - **settle**: every trace's results as the settle worker computes them (read from the store,
//!   analysed on every core) and not stored: what a user waits for after the last span.
//!
//! `--keep DIR` leaves the store in `DIR/store` and the manifest in `DIR/tracecov.yaml`;
//! `--analyse STORE [--manifest FILE]` then computes every trace's results of the store, with
//! the manifest's expectations or none, and stores nothing, so the two can be timed as whole
//! processes in turn (`scripts/bench-expectations`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;

use crate::graph::AnalysisOptions;
use crate::model::Span;
use crate::results::{self, settle};
use crate::store::{Durability, Store};

use super::analysis::median;
use super::logs::{analyse_store, cpu_seconds, settle_order};

/// Ten expectations over the generated suite (`bench::analysis::generate`: services `svc0` to
/// `svc49` called as `GET /api/v0/items/{id}` to `v3`, PostgreSQL databases `db0` to `db6`, Kafka
/// topics, tests `test_0` to `test_399` run by the service `suite`), chosen so that every rule
/// is judged on most calls, and broken the way a suite worth gating breaks them: now and then
/// (a call over its time budget, an HTTP 500), not in every test.
pub const MANIFEST: &str = r#"# tracecov bench expectations: ten expectations, every rule and every kind of glob.
version: 1
expect:
  - name: every test calls a service
    tests: "test_*"
    caller: suite
    calls: {min: 1}
  - name: a bounded number of service calls
    callee: "svc*"
    calls: {max: 40}
  - name: never an external host
    callee: "ext:*"
    calls: {max: 0}
  - name: no N+1 on the databases
    callee: "db:postgresql/*"
    repeated: {max: 2}
  - name: no N+1 between services
    operation: "GET /api/v?/items/*"
    repeated: {max: 3}
  - name: lookups answer in time
    callee: "svc[0-4]?"
    operation: "GET /api/v[0-3]/items/{id}"
    duration_ms: {max: 5.9}
  - name: queries answer in time
    callee: "db:*"
    duration_ms: {max: 5.9}
  - name: lookups are GETs
    caller: "svc*"
    operation: "GET *"
    attributes: {"http.request.method": GET}
  - name: queries name their database
    callee: "db:*"
    attributes: {"db.namespace": present, "db.operation.name": SELECT}
  - name: lookups succeed
    tests: "test_[!0]*"
    callee: "svc*"
    operation: "GET *"
    attributes: {"http.response.status_code": "200", "error.type": absent}
"#;

/// The manifest's analysis options, read from `path` as `serve --manifest` reads them.
fn options_of(path: &Path) -> anyhow::Result<AnalysisOptions> {
    let manifest = crate::coverage::load_manifest(path)
        .with_context(|| format!("reading the manifest {}", path.display()))?;
    Ok(manifest.analysis_options())
}

/// `--keep DIR`, refused unless new or empty: a store already there would be added to.
fn kept_dir(keep: &Path) -> anyhow::Result<PathBuf> {
    if keep.exists()
        && std::fs::read_dir(keep)
            .with_context(|| format!("reading {}", keep.display()))?
            .next()
            .is_some()
    {
        anyhow::bail!(
            "{} is not empty; --keep needs a new or empty directory",
            keep.display()
        );
    }
    std::fs::create_dir_all(keep)?;
    Ok(keep.to_owned())
}

/// Every trace's spans, in the order the settle worker takes the traces and cut where it cuts
/// its batches.
fn batches(store: &Path) -> anyhow::Result<Vec<Vec<Span>>> {
    let reader = crate::store::Reader::new(store);
    let mut out = Vec::new();
    let mut batch: Vec<Span> = Vec::new();
    for id in settle_order(&reader)? {
        batch.extend(reader.trace(id)?);
        if batch.len() >= settle::BATCH_SPANS {
            out.push(std::mem::take(&mut batch));
        }
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    Ok(out)
}

/// Every batch through `results::compute` on this thread: the elapsed seconds, the seconds this
/// thread was on a core, and the violations found.
fn analysis(batches: &[Vec<Span>], opts: &AnalysisOptions) -> anyhow::Result<(f64, f64, usize)> {
    let (start, on_cpu) = (Instant::now(), thread_cpu_seconds()?);
    let mut violations = 0;
    for batch in batches {
        violations += results::compute(batch, opts)
            .iter()
            .map(|r| r.violations.len())
            .sum::<usize>();
    }
    Ok((
        start.elapsed().as_secs_f64(),
        thread_cpu_seconds()? - on_cpu,
        violations,
    ))
}

/// The time this thread has spent on a core, from Linux's `/proc/thread-self/schedstat` (in
/// nanoseconds): unlike the elapsed time, it leaves out the time other processes had the core,
/// which on a shared machine moves by more than the effect measured.
pub(super) fn thread_cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat")
        .context("reading /proc/thread-self/schedstat")?;
    let ns: u64 = stat
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .context("unexpected /proc/thread-self/schedstat")?;
    Ok(ns as f64 / 1e9)
}

/// Per side ([without, with]), each run's seconds.
#[derive(Default)]
struct Sides {
    seconds: [Vec<f64>; 2],
    ratios: Vec<f64>,
}

impl Sides {
    fn push(&mut self, without: f64, with: f64) -> f64 {
        self.seconds[0].push(without);
        self.seconds[1].push(with);
        let ratio = with / without;
        self.ratios.push(ratio);
        ratio
    }

    fn summary(&self, what: &str, unit: &str) -> String {
        let lo = self.ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = self.ratios.iter().copied().fold(0.0, f64::max);
        format!(
            "median {what}: without expectations {:.3} {unit}, with ten {:.3} {unit}; ratio \
             with/without (median of the runs' ratios) {:.3}, the runs' from {lo:.3} to {hi:.3}",
            median(self.seconds[0].clone()),
            median(self.seconds[1].clone()),
            median(self.ratios.clone()),
        )
    }
}

pub fn run(n: usize, runs: usize, keep: Option<&Path>) -> anyhow::Result<()> {
    let dir = match keep {
        Some(keep) => kept_dir(keep)?,
        None => super::results::tempfile_dir()?,
    };
    let (store_dir, manifest) = (dir.join("store"), dir.join("tracecov.yaml"));
    std::fs::write(&manifest, MANIFEST)?;
    let with = options_of(&manifest)?;
    let without = AnalysisOptions::default();

    let spans = super::analysis::generate(n);
    let mut store = Store::open(&store_dir, Durability::Process)?;
    for batch in spans.chunks(2_000) {
        store.write(batch, crate::ingest::now_ns())?;
    }
    store.close()?;
    let batches = batches(&store_dir)?;
    let traces = settle_order(&crate::store::Reader::new(&store_dir))?.len();
    println!(
        "expectations benchmark: {} spans in {traces} traces ({} batches), {} expectations \
         ({}), {runs} runs, each timing without and with in turn (the order alternating)",
        spans.len(),
        batches.len(),
        with.expectations.len(),
        manifest.display(),
    );
    drop(spans);

    let opts = [&without, &with];
    let (mut analysed, mut analysed_cpu, mut settled_wall, mut settled_cpu) = (
        Sides::default(),
        Sides::default(),
        Sides::default(),
        Sides::default(),
    );
    let mut violations = 0;
    for i in 0..runs {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        let (mut mem, mut mem_cpu) = ([0.0; 2], [0.0; 2]);
        for side in order {
            let (seconds, on_cpu, found) = analysis(&batches, opts[side])?;
            mem[side] = seconds;
            mem_cpu[side] = on_cpu;
            if side == 1 {
                violations = found;
            }
        }
        let (mut wall, mut cpu) = ([0.0; 2], [0.0; 2]);
        for side in order {
            let before = cpu_seconds()?;
            let a = analyse_store(&store_dir, opts[side])?;
            wall[side] = a.seconds;
            cpu[side] = cpu_seconds()? - before;
        }
        let m = analysed.push(mem[0], mem[1]);
        let mc = analysed_cpu.push(mem_cpu[0], mem_cpu[1]);
        let w = settled_wall.push(wall[0], wall[1]);
        let c = settled_cpu.push(cpu[0], cpu[1]);
        println!(
            "run {}{}: analysis without {:.3} s ({:.3} s on CPU), with {:.3} s ({:.3} s on CPU) \
             (ratio {m:.3} elapsed, {mc:.3} on CPU); settle without {:.3} s ({:.2} s CPU), with \
             {:.3} s ({:.2} s CPU) (ratio {w:.3} elapsed, {c:.3} CPU)",
            i + 1,
            if order[0] == 1 { " (with first)" } else { "" },
            mem[0],
            mem_cpu[0],
            mem[1],
            mem_cpu[1],
            wall[0],
            cpu[0],
            wall[1],
            cpu[1],
        );
    }
    println!("violations found with the ten expectations: {violations}");
    println!(
        "{}",
        analysed.summary("analysis on one thread, elapsed", "s")
    );
    println!(
        "{}",
        analysed_cpu.summary("analysis on one thread, on CPU", "s")
    );
    println!("{}", settled_wall.summary("settle elapsed", "s"));
    println!("{}", settled_cpu.summary("settle CPU", "s"));
    match keep {
        Some(_) => println!(
            "store kept in {} and the manifest in {}",
            store_dir.display(),
            manifest.display()
        ),
        None => std::fs::remove_dir_all(&dir)?,
    }
    Ok(())
}

/// Computes every trace's results of the store in `store` as the settle worker does, with the
/// expectations of `manifest` (none without), stores nothing, and prints the time that took.
pub fn analyse(store: &Path, manifest: Option<&Path>) -> anyhow::Result<()> {
    let opts = match manifest {
        Some(path) => options_of(path)?,
        None => AnalysisOptions::default(),
    };
    let a = analyse_store(store, &opts)?;
    println!(
        "per-trace results of {} traces in {} with {} expectations: {:.3} s, {} violations \
         (nothing stored)",
        a.traces,
        store.display(),
        opts.expectations.len(),
        a.seconds,
        a.violations
    );
    Ok(())
}
