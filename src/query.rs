//! Read-side operations shared by the JSON API and the CLI's `--data` mode, so both answer the
//! same question the same way: resolve a run, load its spans, analyse them, build the report.
//!
//! Everything here blocks (SQLite reads, CPU-bound analysis): async callers run it on the
//! blocking pool.

use std::sync::Arc;
use std::time::Duration;

use crate::coverage::{self, Contract, Coverage, HopKey, Manifest, Sources};
use crate::graph::{AnalysisOptions, RunGraph};
use crate::model::Span;
use crate::report::{self, Report, ReportOptions, RunInfo};
use crate::results::{self, settle};
use crate::runs::{self, Run};
use crate::store::{Reader, StoreError};

/// Why a query could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{}", no_such_run(.0))]
    NoSuchRun(String),
    /// No run belongs to the suite named.
    #[error(
        "no run of suite {0:?} in the store (a run's suite is its --suite, else its spans' `tracecov.suite`, else the CI job's name, else `default`)"
    )]
    NoSuchSuite(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn no_such_run(what: &str) -> String {
    if what.is_empty() || what == "latest" {
        "no run in the store yet: send spans with a `tracecov.run.id` resource attribute, or \
         wrap a suite in `tracecov run`"
            .to_owned()
    } else {
        format!("no run {what:?} in the store (give a run id, a run name, or `latest`)")
    }
}

/// A run with the state a reader wants to know.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunStatus {
    #[serde(flatten)]
    pub run: Run,
    pub open: bool,
    pub settled: bool,
    /// Traces of the run whose results are not computed yet (`GET /api/runs/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_traces: Option<u64>,
}

impl RunStatus {
    pub fn new(run: Run, now_ns: u64, quiet: Duration) -> Self {
        Self {
            open: !run.is_closed(now_ns),
            settled: run.is_settled(now_ns, quiet),
            run,
            pending_traces: None,
        }
    }

    /// With `pending_traces` counted against the stored results.
    pub fn with_pending(
        mut self,
        reader: &Reader,
        opts: &AnalysisOptions,
    ) -> Result<Self, QueryError> {
        let id = &self.run.id;
        let mut pending = reader.with_conn(|c| settle::count_pending(c, id, opts))?;
        // In a deployment, the run's traces and those still waiting for results on any
        // instance, not only this one's.
        if let Some(d) = reader.deployment() {
            pending += d.pending_elsewhere(id, results::fingerprint(opts))?;
            deployment_traces(reader, std::slice::from_mut(&mut self.run))?;
        }
        self.pending_traces = Some(pending);
        Ok(self)
    }
}

/// In a deployment, sets each run's `traces` to the deployment's count (a trace split between
/// instances once); runs of no instance's traces keep this store's count.
pub fn deployment_traces(reader: &Reader, runs: &mut [Run]) -> Result<(), QueryError> {
    let Some(d) = reader.deployment() else {
        return Ok(());
    };
    let ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
    let counts: std::collections::HashMap<String, u64> = d.run_traces(&ids)?.into_iter().collect();
    for run in runs {
        if let Some(n) = counts.get(&run.id) {
            run.traces = *n;
        }
    }
    Ok(())
}

/// Traces of an open run without fresh results that are not settled yet (a span arrived within
/// the settle period): what a report of the run would have to take as it is. A reader computes
/// the settled ones itself.
pub fn unsettled_traces(
    reader: &Reader,
    run: &Run,
    ctx: &ReportContext,
) -> Result<u64, QueryError> {
    let now = crate::ingest::now_ns();
    if run.is_closed(now) {
        return Ok(0);
    }
    let quiet = ctx.settle.unwrap_or(crate::config::DEFAULT_SETTLE);
    let cutoff = now.saturating_sub(quiet.as_nanos() as u64);
    Ok(reader.with_conn(|c| settle::count_unsettled(c, &run.id, &ctx.analysis, cutoff))?)
}

pub fn resolve_run(reader: &Reader, what: &str) -> Result<Run, QueryError> {
    mirror_runs(reader, results::RunLookup::Named(what))?;
    reader
        .with_conn(|c| runs::find_run(c, what))?
        .ok_or_else(|| QueryError::NoSuchRun(what.to_owned()))
}

/// When the store is one of a deployment's, copies the deployment's runs `lookup` may answer
/// with into it first: runs are decided in the shared database, and an instance holds only the
/// runs it took part in until it is asked about others.
pub fn mirror_runs(reader: &Reader, lookup: results::RunLookup<'_>) -> Result<(), QueryError> {
    if let Some(d) = reader.deployment() {
        reader.with_conn(|c| d.mirror_runs(c, lookup))?;
    }
    Ok(())
}

/// Resolves a run reference said next to `current` (a baseline, a diff's base): `previous` is
/// the run of `current`'s suite before it; anything else as `resolve_run`.
pub fn resolve_run_beside(reader: &Reader, what: &str, current: &Run) -> Result<Run, QueryError> {
    if what != "previous" {
        return resolve_run(reader, what);
    }
    mirror_runs(reader, results::RunLookup::Before(current))?;
    reader
        .with_conn(|c| runs::previous_run(c, current))?
        .ok_or_else(|| {
            QueryError::NoSuchRun(format!(
                "previous (no run of suite {:?} before {})",
                current.suite, current.id
            ))
        })
}

/// Every span of a run's traces.
pub fn run_spans(reader: &Reader, run: &Run) -> Result<Vec<Span>, QueryError> {
    let ids = reader.with_conn(|c| runs::run_traces(c, &run.id))?;
    let mut spans = Vec::new();
    for id in ids {
        spans.extend(reader.trace(id)?);
    }
    Ok(spans)
}

/// What a report is built against: how to analyse, what is expected, how to write it.
#[derive(Debug, Clone, Default)]
pub struct ReportContext {
    pub analysis: AnalysisOptions,
    /// The manifest (`tracecov.yaml`), when one is configured.
    pub manifest: Option<Manifest>,
    /// Pact files and OpenAPI documents (the manifest's, loaded, and any given by flag).
    pub contracts: Vec<Contract>,
    /// Background traffic joins the expected set even though another source is configured.
    pub include_background: bool,
    /// Runs whose edges and interfaces join the expected set (`--baseline`), and against which
    /// latency regressions are reported.
    pub baselines: Vec<String>,
    /// What counts as a latency regression against the baselines (`--latency-threshold`,
    /// `--latency-floor`).
    pub latency: crate::regressions::Thresholds,
    pub report: ReportOptions,
    /// The settle period: results a reader computes for a trace quiet this long are stored for
    /// the next reader. `None` stores nothing.
    pub settle: Option<Duration>,
    /// Analyses kept while nothing they depend on changed (`serve` sets one: the run page of an
    /// open run reloads itself, and the API, the UI and `/metrics` ask about the same runs).
    pub cache: Option<Arc<AnalysisCache>>,
}

/// Recent analyses, each with the stamp of the store it was made from: the results' generation
/// (bumped by every transaction that stores or removes results), the newest span received, and
/// the runs as resolved. A hit is exactly what analysing again would give.
#[derive(Debug, Default)]
pub struct AnalysisCache {
    entries: std::sync::Mutex<Vec<(String, Arc<Analysed>)>>,
}

/// Analyses kept at once: a large run's analysis is tens of megabytes.
const CACHED_ANALYSES: usize = 2;

impl AnalysisCache {
    fn get(&self, key: &str) -> Option<Arc<Analysed>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, a)| a.clone())
    }

    fn put(&self, key: String, analysed: Arc<Analysed>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|(k, _)| *k != key);
        if entries.len() >= CACHED_ANALYSES {
            entries.remove(0);
        }
        entries.push((key, analysed));
    }
}

/// What an analysis of `runs` depends on in the store, as a cache key.
fn stamp(reader: &Reader, runs: &[Run]) -> Result<String, QueryError> {
    let (generation, newest): (i64, i64) = reader.with_conn(|c| {
        Ok(c.query_row(
            "SELECT (SELECT COALESCE(MAX(n), 0) FROM results_generation),
                    (SELECT COALESCE(MAX(last_received_ns), 0) FROM traces)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    })?;
    Ok(format!("{generation} {newest} {runs:?}"))
}

impl ReportContext {
    /// A context for a manifest: its test services and aliases feed the analysis, its contracts
    /// are loaded.
    pub fn with_manifest(
        mut self,
        manifest: Manifest,
    ) -> Result<Self, crate::coverage::SourceError> {
        let opts = manifest.analysis_options();
        for t in opts.test_services {
            if !self.analysis.test_services.contains(&t) {
                self.analysis.test_services.push(t);
            }
        }
        self.analysis.aliases.extend(opts.aliases);
        self.analysis.expectations = opts.expectations;
        self.contracts.extend(manifest.load_contracts()?);
        self.manifest = Some(manifest);
        Ok(self)
    }

    fn sources_configured(&self) -> bool {
        self.manifest
            .as_ref()
            .is_some_and(|m| m.declares_topology())
            || !self.contracts.is_empty()
            || !self.baselines.is_empty()
    }
}

/// A run analysed: its graph, blame and coverage, and the report built from them.
#[derive(Debug)]
pub struct Analysed {
    pub report: Report,
    pub graph: RunGraph,
    /// Failures and each hop's error class (the UI's per-interface error traces read it).
    pub blame: crate::blame::Blame,
    pub coverage: Coverage,
    /// Whether any source of the expected topology was configured (the gate's refusal rule).
    pub sources_configured: bool,
    /// Traces in the store outside the analysed run (the gate's refusal rule).
    pub traces_outside_run: u64,
    /// Names in the manifest that no trace shows, each with the closest names seen.
    pub warnings: Vec<String>,
    /// Interfaces slower than in the baselines (empty without one); the report holds them too.
    pub regressions: Vec<crate::regressions::Regression>,
    /// The expected set the coverage was computed over (a diff computes its base's over it).
    pub expected: coverage::Expected,
}

/// The graph and blame of runs (by id; `""`: the traces of no run), from their rollups.
pub fn merged_runs(
    reader: &Reader,
    run_ids: &[String],
    ctx: &ReportContext,
) -> Result<(RunGraph, crate::blame::Blame), QueryError> {
    // However many requests arrive at once, at most a core's worth of merges run together: the
    // rest wait here rather than each holding a run's results in memory.
    let (graph, blame, _) = merged_runs_judged(reader, run_ids, ctx)?;
    Ok((graph, blame))
}

/// `merged_runs`, with the runs' broken expectations.
pub fn merged_runs_judged(
    reader: &Reader,
    run_ids: &[String],
    ctx: &ReportContext,
) -> Result<(RunGraph, crate::blame::Blame, Vec<crate::expect::Violation>), QueryError> {
    let _permit = MERGES.acquire();
    let rollup = settle::rollup_of(reader, run_ids, &ctx.analysis, store_before(ctx))?;
    let violations = rollup.violations().cloned().collect();
    let (graph, blame) = rollup.graph(&ctx.analysis);
    Ok((graph, blame, violations))
}

/// Results computed by a reader are stored for traces quiet since this time (the settle period
/// ago), when the context says a settle period.
pub(crate) fn store_before(ctx: &ReportContext) -> Option<u64> {
    ctx.settle
        .map(|quiet| crate::ingest::now_ns().saturating_sub(quiet.as_nanos() as u64))
}

/// Merges (and the analyses of traces without results they may run) in flight at once.
static MERGES: Limiter = Limiter::new();

/// A counting semaphore for blocking threads, sized by the machine's cores on first use.
struct Limiter {
    state: std::sync::Mutex<Option<usize>>,
    freed: std::sync::Condvar,
}

struct Permit(&'static Limiter);

impl Limiter {
    const fn new() -> Self {
        Self {
            state: std::sync::Mutex::new(None),
            freed: std::sync::Condvar::new(),
        }
    }

    fn acquire(&'static self) -> Permit {
        let mut free = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let n = free
                .get_or_insert_with(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
            if *n > 0 {
                *n -= 1;
                return Permit(self);
            }
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut free = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = free.as_mut() {
            *n += 1;
        }
        self.0.freed.notify_one();
    }
}

/// Analyses a run completely: graph, failing-hop blame, coverage against the expected topology.
pub fn analyse_run(
    reader: &Reader,
    run: &Run,
    ctx: &ReportContext,
) -> Result<Arc<Analysed>, QueryError> {
    analyse_runs(reader, std::slice::from_ref(run), ctx)
}

/// Analyses the union of several runs as one (`tracecov report --run A --run B`): their spans
/// together, reported under their ids joined with `+` and names with ` + `. From the context's
/// cache when nothing changed since.
pub fn analyse_runs(
    reader: &Reader,
    runs: &[Run],
    ctx: &ReportContext,
) -> Result<Arc<Analysed>, QueryError> {
    let Some(cache) = &ctx.cache else {
        return Ok(Arc::new(analyse_now(reader, runs, ctx)?));
    };
    // The baselines and thresholds decide the expected set and the regressions: an analysis
    // against other ones is another analysis.
    let key = format!(
        "{} baselines {:?} latency {:?}",
        stamp(reader, runs)?,
        ctx.baselines,
        ctx.latency
    );
    if let Some(hit) = cache.get(&key) {
        return Ok(hit);
    }
    let analysed = Arc::new(analyse_now(reader, runs, ctx)?);
    // Stamped before analysing: anything that arrived meanwhile makes the next stamp differ.
    cache.put(key, analysed.clone());
    Ok(analysed)
}

fn analyse_now(reader: &Reader, runs: &[Run], ctx: &ReportContext) -> Result<Analysed, QueryError> {
    let first = runs
        .first()
        .cloned()
        .ok_or_else(|| QueryError::NoSuchRun(String::new()))?;
    let run_ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
    let run = &Run {
        id: runs
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>()
            .join("+"),
        name: runs
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(" + "),
        ..first.clone()
    };
    let (graph, blame, violations) = merged_runs_judged(reader, &run_ids, ctx)?;
    let info = RunInfo {
        id: run.id.clone(),
        name: run.name.clone(),
    };
    let mut report = report::build_with(&info, &graph, &blame, &ctx.report);
    report.run.aged_out_traces = runs.iter().map(|r| r.aged_out).sum();
    if runs.iter().all(|r| r.suite == first.suite) {
        report.run.suite = Some(first.suite.clone());
    }
    if let [only] = runs {
        let own = || crate::history::RunDigest::of(&graph, &blame);
        mark_flaky(reader, only, &mut report, &blame.failures, &own, ctx)?;
    }
    if !ctx.analysis.expectations.is_empty() {
        report.violations = Some(report::violations(&violations, &ctx.report));
        report.expectations = Some(
            ctx.analysis
                .expectations
                .iter()
                .map(|e| ctx.report.redactor.text(&e.name))
                .collect(),
        );
    }

    let traces_outside_run = reader.with_conn(|c| {
        let all: i64 = c.query_row("SELECT COUNT(*) FROM traces", [], |r| r.get(0))?;
        let mut inside = 0i64;
        for r in runs {
            inside += c.query_row(
                "SELECT COUNT(*) FROM trace_runs tr JOIN traces t ON t.trace_id = tr.trace_id
                 WHERE tr.run_id = ?1",
                [&r.id],
                |row| row.get::<_, i64>(0),
            )?;
        }
        Ok((all - inside).max(0) as u64)
    })?;
    let ExpectedSet {
        expected,
        configured,
        everything,
        baseline,
    } = expected_set(reader, &first, &graph, ctx)?;
    let regressions = match &baseline {
        Some(base) => {
            let found = crate::regressions::regressions(base, &graph, &ctx.latency);
            report.regressions = Some(found.iter().map(report::regression).collect());
            found
        }
        None => Vec::new(),
    };
    let cov = coverage::coverage(&graph, &expected, &failing_keys(&graph, &blame));
    report::apply_coverage(&mut report, &cov);
    attach_examples(reader, &run_ids, ctx, &mut report)?;
    let warnings = match &ctx.manifest {
        Some(m) => {
            let services = reader.with_conn(|c| {
                let mut stmt = c.prepare("SELECT name FROM services")?;
                let names = stmt
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(names)
            })?;
            let mut seen: Vec<&str> = services.iter().map(String::as_str).collect();
            seen.extend(graph.nodes().map(|n| n.id.as_str()));
            if let Some(all) = &everything {
                seen.extend(all.nodes().map(|n| n.id.as_str()));
            }
            m.unknown_names(seen)
                .iter()
                .map(|w| w.to_string())
                .collect()
        }
        None => Vec::new(),
    };
    Ok(Analysed {
        report,
        graph,
        blame,
        coverage: cov,
        sources_configured: configured,
        traces_outside_run,
        warnings,
        regressions,
        expected,
    })
}

/// The expected set a run is held against, with the graphs it was made from that a report
/// reads again.
struct ExpectedSet {
    expected: coverage::Expected,
    /// Whether any source of the expected topology was configured.
    configured: bool,
    /// Everything the store has seen, when no source is configured.
    everything: Option<RunGraph>,
    /// The baselines' graph, when the context names baselines.
    baseline: Option<RunGraph>,
}

/// The expected set of the run `first` whose graph is `graph`, by DESIGN's rules: the
/// configured sources and baselines, background traffic when asked for; with no source,
/// everything the store has seen and what the run itself did. A report and a diff both hold a
/// run against it. `graph` is read only for its edges and interfaces (a digest's graph will
/// do).
fn expected_set(
    reader: &Reader,
    first: &Run,
    graph: &RunGraph,
    ctx: &ReportContext,
) -> Result<ExpectedSet, QueryError> {
    let configured = ctx.sources_configured();
    let background_wanted =
        ctx.include_background || ctx.manifest.as_ref().is_some_and(|m| m.background);
    let everything = if configured {
        None
    } else {
        // Everything seen: the store-wide facts of the stored results and the traces still
        // pending, never every result of the store.
        let _permit = MERGES.acquire();
        let results = settle::everything(reader, &ctx.analysis, store_before(ctx))?;
        Some(results::merge(&results, &ctx.analysis).0)
    };
    let background = if background_wanted {
        Some(merged_runs(reader, &[String::new()], ctx)?.0)
    } else {
        None
    };
    let mut baseline: Option<RunGraph> = None;
    if !ctx.baselines.is_empty() {
        let mut ids = Vec::new();
        for b in &ctx.baselines {
            ids.push(resolve_run_beside(reader, b, first)?.id);
        }
        baseline = Some(merged_runs(reader, &ids, ctx)?.0);
    }
    let mut expected = coverage::expected(&Sources {
        manifest: ctx.manifest.as_ref(),
        contracts: &ctx.contracts,
        baseline: baseline.as_ref(),
        background: background.as_ref(),
        include_background: background_wanted,
        everything: everything.as_ref(),
    });
    if !configured {
        // What the run itself did was seen, even once its spans aged out of the store (its
        // results outlive them): its report does not change with retention.
        expected.add_graph(graph);
    }
    Ok(ExpectedSet {
        expected,
        configured,
        everything,
        baseline,
    })
}

/// Marks the failures of `report` (built from `failures`, in their order) whose hop is flaky
/// in the suite of `run`. DESIGN: a failure whose hop is flaky in its suite says so. Held
/// against the suite's runs up to this one, so an old run's report does not change as new runs
/// arrive. `own` makes the run's digest when none is stored.
fn mark_flaky(
    reader: &Reader,
    run: &Run,
    report: &mut Report,
    failures: &[crate::blame::Failure],
    own: &dyn Fn() -> crate::history::RunDigest,
    ctx: &ReportContext,
) -> Result<(), QueryError> {
    let flaky = crate::history::flaky_in_report(reader, run, failures, own, ctx)?;
    if !flaky.is_empty() {
        for (shown, f) in report.failures.iter_mut().zip(failures) {
            shown.flaky = f.hop.as_ref().is_some_and(|h| {
                flaky.contains(&(h.caller.clone(), h.callee.clone(), h.operation.clone()))
            });
        }
    }
    Ok(())
}

/// The failing keys of a run: the hops its failures were placed on, plus the graph's default.
fn failing_keys(
    graph: &RunGraph,
    blame: &crate::blame::Blame,
) -> std::collections::BTreeSet<HopKey> {
    let mut failing = coverage::failing_hops(graph);
    for f in &blame.failures {
        if let Some(h) = &f.hop {
            failing.insert(HopKey {
                caller: h.caller.clone(),
                callee: h.callee.clone(),
                operation: Some(h.operation.clone()),
            });
        }
    }
    failing
}

/// What changed from `base` to `run` (`tracecov diff`), from the two runs' history digests and
/// failures (`history::diff_records`: kept ones when fresh, else made from the rollups and
/// kept): each run's coverage computed over the run's expected set from its digest's graph, its
/// failures written as its report writes them, and the latency changes judged on the digests'
/// p95s. `base` may be `previous`: the run of `run`'s suite before it. The answer is the one
/// `diff_analysed` gives from the runs' full analyses; the tests hold the two equal.
pub fn diff_runs(
    reader: &Reader,
    base: &str,
    run: &str,
    ctx: &ReportContext,
) -> Result<crate::history::Diff, QueryError> {
    let run = resolve_run(reader, run)?;
    let base = resolve_run_beside(reader, base, &run)?;
    let (after, after_failures) = crate::history::diff_records(reader, &run.id, ctx)?;
    let (before, before_failures) = crate::history::diff_records(reader, &base.id, ctx)?;
    let after_graph = after.graph();
    let before_graph = before.graph();
    // The base's coverage is computed over the run's expected set, so that a status means the
    // same on both sides; the baselines of the context are the run's.
    let set = expected_set(reader, &run, &after_graph, ctx)?;
    let mut after_report = report_over(
        &after_graph,
        &after_failures.blame(),
        &set.expected,
        &run,
        ctx,
    );
    let own = || after.clone();
    mark_flaky(
        reader,
        &run,
        &mut after_report,
        after_failures.failures(),
        &own,
        ctx,
    )?;
    let before_report = report_over(
        &before_graph,
        &before_failures.blame(),
        &set.expected,
        &base,
        ctx,
    );
    let changed = crate::history::diff::latency_changes(&before, &after, &ctx.latency);
    Ok(crate::history::diff(
        crate::history::DiffSide {
            run: run_ref(&base),
            report: &before_report,
            latency: crate::history::Latencies::Digest(&before),
        },
        crate::history::DiffSide {
            run: run_ref(&run),
            report: &after_report,
            latency: crate::history::Latencies::Digest(&after),
        },
        &changed,
    ))
}

fn run_ref(run: &Run) -> crate::history::diff::RunRef {
    crate::history::diff::RunRef {
        id: run.id.clone(),
        name: run.name.clone(),
    }
}

/// `diff_runs` from the two runs' full analyses (each run's report, as `analyse_run` makes it,
/// and its graph), the base's coverage computed again over the run's expected set: what the
/// digests stand for. Slower by two analyses; the tests and `tracecov bench history` hold
/// `diff_runs` to it.
pub fn diff_analysed(
    reader: &Reader,
    base: &str,
    run: &str,
    ctx: &ReportContext,
) -> Result<crate::history::Diff, QueryError> {
    let run = resolve_run(reader, run)?;
    let base = resolve_run_beside(reader, base, &run)?;
    let after = analyse_run(reader, &run, ctx)?;
    // The base's coverage is computed again over the run's expected set (`report_over`), so it
    // is analysed against no baseline of its own: the run's (`previous`, say) names another
    // run when said of the base, or none at all.
    let unbased;
    let base_ctx = if ctx.baselines.is_empty() {
        ctx
    } else {
        unbased = ReportContext {
            baselines: Vec::new(),
            ..ctx.clone()
        };
        &unbased
    };
    let before = analyse_run(reader, &base, base_ctx)?;
    let base_report = report_over(&before.graph, &before.blame, &after.expected, &base, ctx);
    let latency = |kind, list: Vec<crate::regressions::Regression>| {
        list.into_iter()
            .map(move |r| crate::history::LatencyChange {
                change: kind,
                caller: r.caller,
                callee: r.callee,
                operation: r.operation,
            })
    };
    let changed: Vec<_> = latency(
        crate::history::ChangeKind::Slower,
        crate::regressions::regressions(&before.graph, &after.graph, &ctx.latency),
    )
    .chain(latency(
        crate::history::ChangeKind::Faster,
        crate::regressions::improvements(&before.graph, &after.graph, &ctx.latency),
    ))
    .collect();
    Ok(crate::history::diff(
        crate::history::DiffSide {
            run: run_ref(&base),
            report: &base_report,
            latency: crate::history::Latencies::Graph(&before.graph),
        },
        crate::history::DiffSide {
            run: run_ref(&run),
            report: &after.report,
            latency: crate::history::Latencies::Graph(&after.graph),
        },
        &changed,
    ))
}

/// A run's report (failures from `blame`) with its coverage computed over `expected` rather
/// than its own expected set: what a diff reads of each run.
fn report_over(
    graph: &RunGraph,
    blame: &crate::blame::Blame,
    expected: &coverage::Expected,
    run: &Run,
    ctx: &ReportContext,
) -> Report {
    let info = RunInfo {
        id: run.id.clone(),
        name: run.name.clone(),
    };
    let mut report = report::build_with(&info, graph, blame, &ctx.report);
    let cov = coverage::coverage(graph, expected, &failing_keys(graph, blame));
    report::apply_coverage(&mut report, &cov);
    report
}

/// Gives each untested item of `report` its `example`: the recorded trace outside `runs` that
/// crossed it, its hop named as everything seen names it; a test's request is preferred over
/// background traffic.
fn attach_examples(
    reader: &Reader,
    runs: &[String],
    ctx: &ReportContext,
    report: &mut Report,
) -> Result<(), QueryError> {
    let Some(cov) = report.coverage.as_mut() else {
        return Ok(());
    };
    if cov.untested.is_empty() {
        return Ok(());
    }
    let examples = results::seen::examples_outside_all(reader, runs)?;
    let seen = results::seen::everything_seen(reader)?;
    let naming = results::Rollup::of(&seen);
    type Key = (String, String, Option<String>);
    let mut best: std::collections::HashMap<Key, &results::seen::Example> =
        std::collections::HashMap::new();
    for ex in &examples {
        for h in results::trace_hops(&ex.result_hop, &naming, &ctx.analysis) {
            for key in [
                (
                    h.caller.clone(),
                    h.callee.clone(),
                    Some(h.operation.clone()),
                ),
                (h.caller.clone(), h.callee.clone(), None),
            ] {
                let better = |old: &&results::seen::Example| {
                    (ex.test.is_some(), ex.trace_id) > (old.test.is_some(), old.trace_id)
                };
                if best.get(&key).is_none_or(better) {
                    best.insert(key, ex);
                }
            }
        }
    }
    let r = &ctx.report.redactor;
    for item in &mut cov.untested {
        let key = (
            item.caller.clone(),
            item.callee.clone(),
            item.operation.clone(),
        );
        let Some(ex) = best.get(&key) else { continue };
        let (Ok(trace), Ok(span)) = (
            crate::model::TraceId::from_bytes(ex.trace_id),
            crate::model::SpanId::from_bytes(ex.span_id),
        ) else {
            continue;
        };
        item.example = Some(report::CoverageExample {
            trace_id: trace.to_hex(),
            test: ex.test.as_deref().map(|t| r.text(t)),
            link: ctx.report.links.render(trace, span),
        });
    }
    Ok(())
}

/// The JSON report of a run.
pub fn run_report(reader: &Reader, run: &Run, ctx: &ReportContext) -> Result<Report, QueryError> {
    Ok(analyse_run(reader, run, ctx)?.report.clone())
}

/// The JSON report of the union of runs given by id, name or `latest`.
pub fn runs_report(
    reader: &Reader,
    what: &[String],
    ctx: &ReportContext,
) -> Result<Report, QueryError> {
    Ok(analyse_named(reader, what, ctx)?.report.clone())
}

/// `analyse_runs` of runs given by id, name or `latest`.
pub fn analyse_named(
    reader: &Reader,
    what: &[String],
    ctx: &ReportContext,
) -> Result<Arc<Analysed>, QueryError> {
    let runs = what
        .iter()
        .map(|w| resolve_run(reader, w))
        .collect::<Result<Vec<_>, _>>()?;
    analyse_runs(reader, &runs, ctx)
}

/// What every export passes through before it leaves tracecov: `tracecov export` and
/// `GET /api/runs/{id}/export` both call it, so they agree.
///
/// DESIGN: exports are redacted unless told otherwise (`run_export` skips this when redaction is
/// turned off).
pub fn prepare_for_export(spans: Vec<Span>, redactor: &crate::redact::Redactor) -> Vec<Span> {
    redactor.redact_spans(&spans)
}

/// The spans of a run as they are exported: redacted unless `redact` is false.
pub fn run_export(
    reader: &Reader,
    run: &Run,
    redactor: Option<&crate::redact::Redactor>,
) -> Result<Vec<Span>, QueryError> {
    let spans = run_spans(reader, run)?;
    Ok(match redactor {
        Some(r) => prepare_for_export(spans, r),
        None => spans,
    })
}

/// The gate's verdict on a run: exit code (0 pass, 1 a condition failed, 2 refused) and the text
/// naming what failed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct GateVerdict {
    pub exit_code: u8,
    pub text: String,
}

pub fn gate_run(
    reader: &Reader,
    run: &Run,
    ctx: &ReportContext,
    conditions: &coverage::GateConditions,
) -> Result<GateVerdict, QueryError> {
    let analysed = analyse_run(reader, run, ctx)?;
    if let Err(refused) = coverage::check_gate_usable(
        conditions,
        analysed.sources_configured,
        analysed.traces_outside_run,
        &run.name,
    ) {
        return Ok(GateVerdict {
            exit_code: 2,
            text: format!("{refused}\n"),
        });
    }
    if conditions.max_latency_regression.is_some() && ctx.baselines.is_empty() {
        return Ok(GateVerdict {
            exit_code: 2,
            text:
                "--max-latency-regression needs a baseline to compare with: give --baseline RUN (an id, a name, or previous)\n"
                    .to_owned(),
        });
    }
    let mut result = coverage::gate(&analysed.coverage, conditions);
    if conditions.expectations {
        let Some(violations) = &analysed.report.violations else {
            return Ok(GateVerdict {
                exit_code: 2,
                text: "--expectations judges the manifest's expect: list, and this manifest has none\n".to_owned(),
            });
        };
        if !violations.is_empty() {
            result.violations.push(coverage::Violation {
                condition: coverage::Condition::Expectations,
                message: format!(
                    "{} broken expectation{}",
                    violations.len(),
                    if violations.len() == 1 { "" } else { "s" }
                ),
                items: Vec::new(),
                tests: Vec::new(),
                details: violations
                    .iter()
                    .map(|v| format!("{} {}", v.summary, v.link))
                    .collect(),
            });
        }
    }
    if let Some(max) = conditions.max_latency_regression
        && let Some(v) = crate::regressions::violation(&analysed.regressions, max)
    {
        result.violations.push(v);
    }
    if conditions.has_history_condition() {
        let Some(base) = ctx.baselines.first() else {
            return Ok(GateVerdict {
                exit_code: 2,
                text: "--no-new-failures and --max-coverage-drop compare the run with a baseline: give --baseline RUN (an id, a name, or previous)\n".to_owned(),
            });
        };
        let d = diff_runs(reader, base, &run.id, ctx)?;
        result
            .violations
            .extend(crate::history::judge(&d, conditions));
    }
    Ok(GateVerdict {
        exit_code: result.exit_code() as u8,
        text: result.text(),
    })
}

/// The tests of a run that exercised any edge touching `changed`.
pub fn impact_run(
    reader: &Reader,
    run: &Run,
    ctx: &ReportContext,
    changed: &[String],
) -> Result<Vec<String>, QueryError> {
    let (graph, _) = merged_runs(reader, std::slice::from_ref(&run.id), ctx)?;
    Ok(coverage::impact(&graph, changed))
}

/// Why a bug report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BugQueryError {
    #[error(transparent)]
    Bug(#[from] crate::blame::bug::BugError),
    #[error(transparent)]
    Query(#[from] QueryError),
}

impl From<StoreError> for BugQueryError {
    fn from(e: StoreError) -> Self {
        BugQueryError::Query(QueryError::Store(e))
    }
}

/// The bug report of a failure in `trace_id` (or, when it holds none there, of a broken
/// expectation), and the trace's spans. The failure is the one its run's report holds (from the
/// run's rollup); only the traces on its path are read for the report's body.
pub fn bug(
    reader: &Reader,
    trace_id: crate::model::TraceId,
    span: Option<crate::model::SpanId>,
    ctx: &ReportContext,
) -> Result<(crate::blame::bug::Bug, Vec<Span>), BugQueryError> {
    let trace_spans = reader.trace_anywhere(trace_id)?;
    if trace_spans.is_empty() {
        return Err(crate::blame::bug::BugError::NoSpans(trace_id).into());
    }
    let run = match reader.with_conn(|c| runs::trace_run(c, trace_id))? {
        Some(id) => reader.with_conn(|c| runs::get_run(c, &id))?,
        None => None,
    };
    let run_id = run.as_ref().map(|r| r.id.clone()).unwrap_or_default();
    let info = run.as_ref().map(|r| RunInfo {
        id: r.id.clone(),
        name: r.name.clone(),
    });
    let (graph, blame, violations) =
        merged_runs_judged(reader, std::slice::from_ref(&run_id), ctx)?;
    // A failure first; a broken expectation when the trace (or the span) holds no failure.
    let failure = match crate::blame::bug::pick(&blame.failures, trace_id, span) {
        Ok(f) => f,
        Err(e) => {
            let Some(v) = crate::blame::bug::pick_violation(&violations, trace_id, span) else {
                return Err(e.into());
            };
            let bug = violation_bug(reader, &graph, v, &trace_spans, info.as_ref(), ctx)?;
            return Ok((
                crate::blame::bug::Bug::Violation(Box::new(bug)),
                trace_spans,
            ));
        }
    };
    let mut spans = Vec::new();
    let mut read = std::collections::BTreeSet::from([trace_id]);
    for &(t, _) in &failure.path {
        if read.insert(t) {
            // A linked trace may be held by another instance of the deployment.
            spans.extend(reader.trace_anywhere(t)?);
        }
    }
    spans.extend(trace_spans.iter().cloned());
    let bug = crate::blame::bug::bug_report_for(failure, &spans, info.as_ref(), &ctx.report);
    Ok((crate::blame::bug::Bug::Failure(Box::new(bug)), trace_spans))
}

/// The bug report of a broken expectation on a span of `trace_spans`: the path runs from its
/// test's span (read from the test's own trace when a link joined the two) down to that span.
fn violation_bug(
    reader: &Reader,
    graph: &RunGraph,
    v: &crate::expect::Violation,
    trace_spans: &[Span],
    run: Option<&RunInfo>,
    ctx: &ReportContext,
) -> Result<crate::blame::bug::ViolationBug, BugQueryError> {
    use crate::model::{SpanId, TraceId};
    let bad = || crate::blame::bug::BugError::NoFailure(trace_spans[0].trace_id);
    let at = (
        TraceId::from_bytes(v.trace_id).map_err(|_| bad())?,
        SpanId::from_bytes(v.span_id).map_err(|_| bad())?,
    );
    let tests: std::collections::HashSet<(TraceId, SpanId)> = graph
        .tests()
        .iter()
        .map(|t| (t.trace_id, t.span_id))
        .collect();
    // The violation's test: the one of that name in the same trace, else the first of that name.
    let named = |t: &&crate::graph::TestCase| Some(t.name.as_str()) == v.test.as_deref();
    let test = graph
        .tests()
        .iter()
        .filter(named)
        .find(|t| t.trace_id == at.0)
        .or_else(|| graph.tests().iter().find(named))
        .map(|t| (t.trace_id, t.span_id));
    let mut spans = trace_spans.to_vec();
    if let Some((t, _)) = test.filter(|(t, _)| *t != at.0) {
        spans.extend(reader.trace_anywhere(t)?);
    }
    let forest = crate::graph::Forest::build(&spans);
    let path = crate::blame::bug::path_to(&forest, at, &tests, test);
    let report = crate::report::violations::violation(v, &ctx.report).ok_or_else(bad)?;
    Ok(crate::blame::bug::violation_bug(
        report,
        &path,
        &spans,
        run,
        &ctx.report,
    ))
}

/// The hops of the `traces` most recent traces of `run` whose results are stored and fresh,
/// named as the run's graph names them, each with its trace, the most recent trace first: what
/// `/metrics` picks its exemplars from. Reads no span and computes nothing: a trace without
/// fresh results is skipped, so the cost is bounded by `traces` stored results.
pub fn recent_hops(
    reader: &Reader,
    run: &Run,
    ctx: &ReportContext,
    traces: usize,
) -> Result<Vec<(crate::model::TraceId, results::NamedHop)>, QueryError> {
    let ids = reader.with_conn(|c| runs::recent_run_traces(c, &run.id, traces))?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut stored = reader.with_conn(|c| settle::fresh_results(c, &ids, &ctx.analysis))?;
    let rollup = {
        let _permit = MERGES.acquire();
        settle::rollup_of(
            reader,
            std::slice::from_ref(&run.id),
            &ctx.analysis,
            store_before(ctx),
        )?
    };
    let mut out = Vec::new();
    for id in ids {
        if let Some(result) = stored.remove(&id) {
            out.extend(
                results::trace_hops(&result, &rollup, &ctx.analysis)
                    .into_iter()
                    .map(|h| (id, h)),
            );
        }
    }
    Ok(out)
}

/// One trace as the trace view shows it: its spans redacted, the failures placed in it, and the
/// hops that cross a boundary inside it.
pub struct TraceDetail {
    /// The trace's spans, redacted.
    pub spans: Vec<Span>,
    /// The run the trace belongs to, if any.
    pub run: Option<Run>,
    /// Failures placed on a span of this trace (or failing in it), as the report writes them.
    pub failures: Vec<report::Failure>,
    /// Expectations broken on a span of this trace, as the report writes them.
    pub violations: Vec<report::violations::Violation>,
    pub hops: Vec<TraceHop>,
}

/// A hop of the trace: the spans on either side and the node ids it joins.
#[derive(Debug, Clone)]
pub struct TraceHop {
    pub client_span: Option<crate::model::SpanId>,
    pub server_span: Option<crate::model::SpanId>,
    pub caller: String,
    pub callee: String,
    pub operation: String,
    pub error: bool,
}

/// The trace view's data: the trace's spans, its hops named as its run names them, the
/// failures placed in it and the expectations broken in it (from its stored results and its
/// run's rollup). `None` when the store
/// holds no span of it.
pub fn trace_detail(
    reader: &Reader,
    trace_id: crate::model::TraceId,
    ctx: &ReportContext,
) -> Result<Option<TraceDetail>, QueryError> {
    let trace = reader.trace_anywhere(trace_id)?;
    if trace.is_empty() {
        return Ok(None);
    }
    let run = match reader.with_conn(|c| runs::trace_run(c, trace_id))? {
        Some(id) => reader.with_conn(|c| runs::get_run(c, &id))?,
        None => None,
    };
    // The trace's hops and failures as its run's report names them (callees resolved by what
    // the whole run taught): from the trace's stored results and its run's rollup, not spans.
    let run_id = run.as_ref().map(|r| r.id.clone()).unwrap_or_default();
    let rollup = {
        let _permit = MERGES.acquire();
        settle::rollup_of(
            reader,
            std::slice::from_ref(&run_id),
            &ctx.analysis,
            store_before(ctx),
        )?
    };
    let (_, blame) = rollup.graph(&ctx.analysis);
    let failures = blame
        .failures
        .iter()
        .filter(|f| f.placed_trace == trace_id || f.trace_id == trace_id)
        .map(|f| report::failure(f, &ctx.report))
        .collect();
    let mine: Vec<crate::expect::Violation> = rollup
        .violations()
        .filter(|v| v.trace_id == *trace_id.as_bytes())
        .cloned()
        .collect();
    let violations = report::violations::violations(&mine, &ctx.report);
    let r = &ctx.report.redactor;
    let result = settle::results_of(reader, &[trace_id], &ctx.analysis, store_before(ctx))?;
    let hops = result
        .iter()
        .flat_map(|t| results::trace_hops(t, &rollup, &ctx.analysis))
        .map(|h| TraceHop {
            client_span: h.client_span,
            server_span: h.server_span,
            caller: r.text(&h.caller),
            callee: r.text(&h.callee),
            operation: r.text(&h.operation),
            error: h.error,
        })
        .collect();
    Ok(Some(TraceDetail {
        spans: r.redact_spans(&trace),
        run,
        failures,
        violations,
        hops,
    }))
}

#[cfg(test)]
mod limiter_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::Limiter;

    /// Sixteen concurrent merges on a machine with N cores: never more than N at once, and all
    /// of them finish.
    #[test]
    fn merges_beyond_the_core_count_wait_their_turn() {
        static LIMIT: Limiter = Limiter::new();
        static NOW: AtomicUsize = AtomicUsize::new(0);
        static PEAK: AtomicUsize = AtomicUsize::new(0);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads: Vec<_> = (0..16)
            .map(|_| {
                std::thread::spawn(|| {
                    let _p = LIMIT.acquire();
                    let now = NOW.fetch_add(1, Ordering::SeqCst) + 1;
                    PEAK.fetch_max(now, Ordering::SeqCst);
                    std::thread::yield_now();
                    NOW.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let peak = PEAK.load(Ordering::SeqCst);
        assert!(peak >= 1 && peak <= cores, "peak {peak} with {cores} cores");
    }
}
