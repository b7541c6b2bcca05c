//! The runs page (`/`): every run, newest first, with its tests, coverage and gate verdict.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use maud::{Markup, html};

use super::layout::{self, Body, percent};
use super::{Page, UiError, blocking, href};
use crate::coverage::GateConditions;
use crate::ingest::now_ns;
use crate::query::{self, RunStatus};
use crate::runs;
use crate::server::AppState;

/// Runs analysed for the list; older ones are listed with a link only. Analysing a run reads
/// all its spans, and a store may hold hundreds of runs.
const ANALYSED_RUNS: usize = 20;

/// What the list shows of an analysed run.
#[derive(Debug)]
pub struct Summary {
    tests_total: u64,
    passed: u64,
    failed: u64,
    failures: usize,
    /// Distinct hops the failures are placed on.
    failing_hops: usize,
    edges: Option<f64>,
    interfaces: Option<f64>,
    critical: Option<f64>,
    untested_critical: usize,
    /// The gate with `--critical --no-failures`: what a CI job usually enforces.
    gate_passed: bool,
    gate_text: String,
}

/// The runs page's summaries, kept per run while the run's spans are unchanged: without it
/// every visit to `/` would analyse the newest `ANALYSED_RUNS` runs again.
#[derive(Debug, Default)]
pub struct UiCache {
    summaries: Mutex<HashMap<String, (SummaryKey, Arc<Summary>)>>,
}

/// What a summary depends on: a span arriving moves `last_ns`, a trace moving to another run
/// or aged out changes `traces`.
type SummaryKey = (u64, u64);

impl UiCache {
    fn summary(
        &self,
        run: &runs::Run,
        compute: impl FnOnce() -> Result<Summary, UiError>,
    ) -> Result<Arc<Summary>, UiError> {
        let key = (run.last_ns, run.traces);
        if let Some((k, s)) = self.summaries.lock().unwrap().get(&run.id)
            && *k == key
        {
            return Ok(s.clone());
        }
        let s = Arc::new(compute()?);
        self.summaries
            .lock()
            .unwrap()
            .insert(run.id.clone(), (key, s.clone()));
        Ok(s)
    }

    /// Forgets runs no longer listed, so the cache holds at most what the page shows.
    fn keep_only<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let keep: std::collections::HashSet<&str> = ids.into_iter().collect();
        self.summaries
            .lock()
            .unwrap()
            .retain(|id, _| keep.contains(id.as_str()));
    }
}

pub async fn page(State(state): State<AppState>) -> Result<Page, UiError> {
    let reader = state.reader.clone();
    let ctx = state.report.clone();
    let quiet = state.config.settle;
    let addrs = state.addrs;
    let cache = state.ui.clone();
    blocking(move || {
        let now = now_ns();
        crate::query::mirror_runs(&reader, crate::results::RunLookup::All)?;
        let all = reader.with_conn(runs::list_runs)?;
        cache.keep_only(all.iter().take(ANALYSED_RUNS).map(|r| r.id.as_str()));
        let mut rows = Vec::with_capacity(all.len());
        for (i, run) in all.into_iter().enumerate() {
            let summary = if i < ANALYSED_RUNS {
                Some(cache.summary(&run, || {
                    Ok(summarise(&*query::analyse_run(&reader, &run, &ctx)?))
                })?)
            } else {
                None
            };
            rows.push((RunStatus::new(run, now, quiet), summary));
        }
        Ok(render(&rows, &addrs))
    })
    .await
}

fn summarise(a: &query::Analysed) -> Summary {
    let r = &a.report;
    let gate = crate::coverage::gate(
        &a.coverage,
        &GateConditions {
            critical: true,
            no_failures: true,
            ..GateConditions::default()
        },
    );
    let c = r.coverage.as_ref();
    Summary {
        tests_total: r.run.tests.total,
        passed: r.run.tests.passed,
        failed: r.run.tests.failed,
        failures: r.failures.len(),
        failing_hops: r
            .failures
            .iter()
            .filter_map(|f| f.hop.as_ref())
            .map(|h| (&h.caller, &h.callee, &h.operation))
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        edges: c.and_then(|c| c.edges.percent),
        interfaces: c.and_then(|c| c.interfaces.percent),
        critical: c.and_then(|c| c.critical.percent),
        untested_critical: c.map_or(0, |c| c.untested.iter().filter(|i| i.critical).count()),
        gate_passed: gate.passed(),
        gate_text: gate.text(),
    }
}

fn render(rows: &[(RunStatus, Option<Arc<Summary>>)], addrs: &crate::server::Addrs) -> Markup {
    layout::page(
        "Runs",
        Body::default(),
        html! {
            h1 { "Runs" }
            @if rows.is_empty() {
                div #no-runs {
                    p { "No run yet. Point the services under test and the test harness at this collector:" }
                    table.kv {
                        tr { th { "OTLP/HTTP" } td { code { (addrs.otlp_http_url()) } } }
                        tr { th { "OTLP/gRPC" } td { code { (addrs.otlp_grpc_url()) } } }
                    }
                    p { "for example " code { "OTEL_EXPORTER_OTLP_ENDPOINT=" (addrs.otlp_http_url()) " OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf" } "." }
                    p { "A trace joins a run by its " code { "tracecov.run.id" } " resource attribute, else "
                        code { "cicd.pipeline.run.id" } ", else the one open run; traces holding test cases "
                        "without any of these open an automatic run. Or wrap a suite: "
                        code { "tracecov run --server http://" (addrs.ui) " -- pytest tests/" }
                        ". To see a run with failures first, try " code { "tracecov demo" } "." }
                }
            } @else {
                p.small { "Newest first. The gate column is " code { "tracecov gate --critical --no-failures" }
                    "; coverage is of the expected edges and interfaces." }
                (compare_form(rows))
                table #runs {
                    thead { tr {
                        th { "run" } th { "started" } th { "suite" } th { "state" } th.num { "traces" }
                        th.num { "tests" } th.num { "passed" } th.num { "failed" } th.num title="failures (the hops they are placed on)" { "failures (hops)" }
                        th.num { "edge coverage" } th.num { "interface coverage" } th.num { "critical" }
                        th.num { "critical untested" } th { "gate" } th { "links" }
                    } }
                    tbody {
                        @for (status, summary) in rows {
                            (row(status, summary.as_deref()))
                        }
                    }
                }
            }
        },
    )
}

/// Two runs to compare (`/diff`): a plain GET form, the base preset to the second newest run.
fn compare_form(rows: &[(RunStatus, Option<Arc<Summary>>)]) -> Markup {
    let option = |status: &RunStatus, selected: bool| {
        let run = &status.run;
        html! {
            option value=(run.id) selected[selected] {
                (run.name) " — " (run.suite) " — " (run.id)
            }
        }
    };
    html! {
        @if rows.len() >= 2 {
            form #compare action="/diff" method="get" {
                label { "Compare " select name="base" {
                    @for (i, (status, _)) in rows.iter().enumerate() { (option(status, i == 1)) }
                } }
                label { " with " select name="run" {
                    @for (i, (status, _)) in rows.iter().enumerate() { (option(status, i == 0)) }
                } }
                " " button type="submit" { "diff" }
            }
        }
    }
}

fn row(status: &RunStatus, s: Option<&Summary>) -> Markup {
    let run = &status.run;
    let state = if status.open {
        "open"
    } else if status.settled {
        "closed"
    } else {
        "closed, settling"
    };
    html! {
        tr data-run=(run.id) {
            td { a href=(href::run(&run.id)) { (run.name) } br; span.small.mono { (run.id) } }
            td { (layout::time(run.created_ns)) br; span.small { (run.kind.as_str()) } }
            td.suite { (run.suite) }
            td { (state) }
            td.num { (run.traces) }
            @match s {
                Some(s) => {
                    td.num { (s.tests_total) }
                    td.num { (s.passed) }
                    td class={ "num" @if s.failed > 0 { " st-failing" } } { (s.failed) }
                    td.num { (s.failures) " (" (s.failing_hops) ")" }
                    td.num { (percent(s.edges)) }
                    td.num { (percent(s.interfaces)) }
                    td.num { (percent(s.critical)) }
                    td class={ "num" @if s.untested_critical > 0 { " st-untested" } } { (s.untested_critical) }
                    td.gate {
                        details {
                            summary {
                                @if s.gate_passed { span.badge.st-covered { "✓ pass" } }
                                @else { span.badge.st-failing { "✗ fail" } }
                            }
                            pre.small { (s.gate_text) }
                        }
                    }
                }
                None => {
                    td.muted colspan="9" { "not analysed here (older than the newest " (ANALYSED_RUNS) "): open the run" }
                }
            }
            td {
                a href=(href::run(&run.id)) { "page" } " · "
                a href={ "/api/runs/" (super::enc(&run.id)) "/report" } { "JSON" } " · "
                a href={ "/api/runs/" (super::enc(&run.id)) "/report?format=text" } { "text" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, last_ns: u64, traces: u64) -> runs::Run {
        runs::Run {
            id: id.to_owned(),
            name: id.to_owned(),
            kind: runs::RunKind::Explicit,
            created_ns: 1,
            closed_ns: None,
            last_ns,
            traces,
            aged_out: 0,
            suite: runs::DEFAULT_SUITE.to_owned(),
        }
    }

    fn summary(failed: u64) -> Summary {
        Summary {
            tests_total: failed,
            passed: 0,
            failed,
            failures: 0,
            failing_hops: 0,
            edges: None,
            interfaces: None,
            critical: None,
            untested_critical: 0,
            gate_passed: true,
            gate_text: String::new(),
        }
    }

    #[test]
    fn a_summary_is_reused_until_its_run_changes_and_dropped_when_unlisted() {
        let cache = UiCache::default();
        let mut computed = 0;
        let mut get = |r: &runs::Run| {
            cache
                .summary(r, || {
                    computed += 1;
                    Ok(summary(computed))
                })
                .unwrap()
                .failed
        };
        assert_eq!(get(&run("a", 10, 1)), 1);
        assert_eq!(get(&run("a", 10, 1)), 1, "unchanged: reused");
        assert_eq!(get(&run("a", 11, 1)), 2, "a span arrived: analysed again");
        assert_eq!(get(&run("a", 11, 0)), 3, "a trace left: analysed again");
        assert_eq!(get(&run("b", 11, 0)), 4, "per run");
        cache.keep_only(["b"]);
        assert_eq!(cache.summaries.lock().unwrap().len(), 1);
    }
}
