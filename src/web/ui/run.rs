//! The run page (`/runs/{id}`): the verdict and coverage numbers, the diagnostics, the
//! interfaces slower than a baseline (`?baseline=RUN`, as `tracecov report --baseline` takes
//! it), the coverage heatmap, the service graph, the failures and the untested items. While the run is open the
//! page polls the API and reloads itself when spans arrive or the run closes.
//!
//! `render_run_page` takes only what the report holds (plus the run's state), so `tracecov
//! bench ui` can time it on a generated report.

use axum::extract::{Path, Query, State};
use maud::{Markup, html};

use super::heatmap::{self, HeatOptions};
use super::layout::{self, Body, percent};
use super::{Page, UiError, blocking, href, safe_external};
use crate::ingest::now_ns;
use crate::query::{self, RunStatus};
use crate::report::Report;
use crate::server::AppState;

/// The run page's comparison: `?baseline=RUN` (with the report's latency thresholds, also
/// optional), as `tracecov report --baseline` takes it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct BaselineQuery {
    #[serde(default)]
    pub baseline: Option<String>,
    #[serde(default)]
    pub latency_threshold: Option<f64>,
    #[serde(default)]
    pub latency_floor_ms: Option<f64>,
}

/// Everything the run page shows.
pub struct RunPage {
    pub run: RunStatus,
    pub report: Report,
    /// Per failure of the report (same order), the trace of the span it is placed on: another
    /// trace than the failing one when the walk crossed a span link.
    pub placed_traces: Vec<String>,
    /// Names in the manifest that no trace shows.
    pub warnings: Vec<String>,
    pub heat: HeatOptions,
    /// The run the report was compared with (`?baseline=`), when it was.
    pub baseline: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(heat): Query<HeatOptions>,
    Query(base): Query<BaselineQuery>,
) -> Result<Page, UiError> {
    let reader = state.reader.clone();
    let baseline = base
        .baseline
        .as_deref()
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(str::to_owned);
    let latency =
        crate::regressions::Thresholds::new(base.latency_threshold, base.latency_floor_ms)
            .map_err(|e| UiError::new(axum::http::StatusCode::BAD_REQUEST, e))?;
    let ctx = crate::web::runs::against_baselines(
        &state.report,
        baseline.iter().cloned().collect(),
        latency,
    );
    let quiet = state.config.settle;
    blocking(move || {
        let run = query::resolve_run(&reader, &id)?;
        let a = query::analyse_run(&reader, &run, &ctx)?;
        let page = RunPage {
            run: RunStatus::new(run, now_ns(), quiet),
            placed_traces: a
                .blame
                .failures
                .iter()
                .map(|f| f.placed_trace.to_hex())
                .collect(),
            report: a.report.clone(),
            warnings: a.warnings.clone(),
            heat,
            baseline,
        };
        Ok(render_run_page(&page))
    })
    .await
}

pub fn render_run_page(p: &RunPage) -> Markup {
    let report = &p.report;
    let run = &p.run.run;
    let t = &report.run.tests;
    let verdict_class = if report.run.tests.failed > 0 || !report.failures.is_empty() {
        "failed"
    } else if report
        .coverage
        .as_ref()
        .is_some_and(|c| c.untested.iter().any(|i| i.critical))
    {
        "warn"
    } else {
        "passed"
    };
    let body = if p.run.open {
        Body {
            poll_run: Some(run.id.clone()),
            last_ns: Some(run.last_ns),
        }
    } else {
        Body::default()
    };
    layout::page(
        &format!("Run {}", run.name),
        body,
        html! {
            h1 { "Run " (run.name) " " span.small.mono { (run.id) } }
            p.small {
                "started " (layout::time(run.created_ns))
                @if let Some(c) = run.closed_ns { ", closed " (layout::time(c)) }
                " · suite " code { (run.suite) }
                " · " (report.run.spans) " spans in " (report.run.traces) " traces · "
                a href={ "/api/runs/" (super::enc(&run.id)) "/report" } { "JSON report" } " · "
                a #compare-previous href={ "/diff?base=previous&run=" (super::enc(&run.id)) } { "compare with the previous run of this suite" }
            }
            @if p.run.open {
                p.warnbox #open-run { "This run is open: the page refreshes itself as spans arrive." }
            }
            p class={ "verdict " (verdict_class) } { (verdict(report)) }
            div.cards {
                div.card { "tests" b { (t.total) } span.small { (t.passed) " passed, " (t.failed) " failed" } }
                div.card #failures-card { "failures" b { (report.failures.len()) } span.small { "at " (failing_hops(report)) " hops" } }
                @if let Some(c) = &report.coverage {
                    @for (what, n) in [("edge coverage", c.edges), ("interface coverage", c.interfaces)] {
                        div.card { (what) b { (percent(n.percent)) } span.small { (n.covered) " of " (n.expected) " expected" } }
                    }
                    @let critical_failing = critical_failing(report);
                    div.card #critical-card { "critical exercised" b { (percent(c.critical.percent)) }
                        span.small { (c.critical.covered) " of " (c.critical.expected)
                            @if critical_failing > 0 { ", " span.st-failing { (critical_failing) " failing" } } }
                    }
                    div.card { "critical untested" b { (c.untested.iter().filter(|i| i.critical).count()) } }
                }
            }
            (diagnostics(p))
            (slower(p))
            h2 #heatmap-title { "Coverage heatmap" }
            (heatmap::render(report, &run.id, &p.heat))
            h2 #graph-title { "Service graph" }
            (super::graph::render(report))
            h2 #failures-title { "Failures (" (report.failures.len()) ")" }
            (failures(p))
            (violations(report))
            (untested(report, &run.id))
        },
    )
}

/// The broken expectations (the manifest's `expect:`), each linking to its offending span.
fn violations(report: &Report) -> Markup {
    let Some(vs) = &report.violations else {
        return html! {};
    };
    html! {
        h2 #violations-title { "Broken expectations (" (vs.len()) ")" }
        @if vs.is_empty() {
            p.small { "Every expectation of the manifest held." }
        } @else {
            p.small { "What the tests' traces did against what the manifest's " code { "expect:" } " says; a violation is not a failure (its test may have passed)." }
            table #violations {
                thead { tr { th { "expectation" } th { "test" } th { "hop" } th { "expected" } th { "observed" } th { "span" } } }
                tbody {
                    @for v in vs {
                        tr {
                            td { (v.expectation) }
                            td { (v.test.as_deref().unwrap_or("a request")) }
                            td { @match &v.hop {
                                Some(h) => { code { (h.caller) } " → " code { (h.callee) } " " code { (h.operation) } },
                                None => span.muted { "(missing call)" },
                            } }
                            td { (v.expected) }
                            td.st-failing { (v.observed) }
                            td {
                                a href=(href::trace(&v.trace_id, Some(&v.span_id))) { "waterfall" } " · "
                                a.bug-link href=(href::bug(&v.trace_id, &v.span_id)) { "bug report" }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The comparison with a baseline: a form to choose one, and the interfaces that got slower
/// than in it, each with the node blamed for it.
fn slower(p: &RunPage) -> Markup {
    let run_id = &p.run.run.id;
    html! {
        h2 #slower-title { "Slower than the baseline" }
        form.compare method="get" action=(href::run(run_id)) {
            label { "compare latency with run "
                input type="text" name="baseline" value=[p.baseline.as_deref()] placeholder="run id or name";
            }
            " "
            button type="submit" { "Compare" }
            @if p.baseline.is_some() { " " a href=(href::run(run_id)) { "stop comparing" } }
        }
        @match (&p.baseline, &p.report.regressions) {
            (Some(base), Some(regressions)) if regressions.is_empty() => {
                p #slower.small { "No interface with 20 calls or more in both runs got slower than in " code { (base) } "." }
            }
            (Some(base), Some(regressions)) => {
                p.small { "Against run " code { (base) } ": the p95 grew past the threshold. "
                    b { "blamed" } " is the node whose own time grew most along the slow calls' critical path: the callee that is slow, not the caller that waited." }
                table #slower {
                    thead { tr { th { "interface" } th { "p95 before" } th { "p95 now" } th { "ratio" } th { "calls" } th { "blamed" } } }
                    tbody {
                        @for r in regressions {
                            tr data-caller=(r.caller) data-callee=(r.callee) {
                                td { a href=(href::edge(run_id, &r.caller, &r.callee)) { (r.caller) " → " (r.callee) } br; code { (r.operation) } }
                                td.num { (r.base_p95_ms) " ms" }
                                td.num { (r.run_p95_ms) " ms" }
                                td.num { "×" (r.ratio) }
                                td.num { (r.base_calls) " → " (r.calls) }
                                td.blamed { @match &r.blamed { Some(b) => code { (b) }, None => span.muted { "none" } } }
                            }
                        }
                    }
                }
            }
            _ => {
                p.small { "Give a run to compare with: the interfaces whose p95 grew past the threshold are listed here, and outlined in the heatmap and the graph." }
            }
        }
    }
}

/// Distinct hops (caller, callee, operation) the failures are placed on.
fn failing_hops(report: &Report) -> usize {
    report
        .failures
        .iter()
        .filter_map(|f| f.hop.as_ref())
        .map(|h| (&h.caller, &h.callee, &h.operation))
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

/// Critical expected edges and interfaces that are failing: exercised, so counted as covered,
/// but broken.
fn critical_failing(report: &Report) -> usize {
    let failing = |critical: Option<bool>, expected: Option<bool>, status: Option<&str>| {
        critical == Some(true) && expected == Some(true) && status == Some("failing")
    };
    report
        .edges
        .iter()
        .map(|e| {
            usize::from(failing(e.critical, e.expected, e.status.as_deref()))
                + e.interfaces
                    .iter()
                    .filter(|i| failing(i.critical, i.expected, i.status.as_deref()))
                    .count()
        })
        .sum()
}

fn verdict(report: &Report) -> String {
    let t = &report.run.tests;
    let mut parts = vec![format!("{} of {} tests failed", t.failed, t.total)];
    if !report.failures.is_empty() {
        parts.push(format!(
            "{} failures at {} hops",
            report.failures.len(),
            failing_hops(report)
        ));
    }
    if let Some(c) = &report.coverage {
        let n = c.untested.iter().filter(|i| i.critical).count();
        if n > 0 {
            parts.push(format!("{n} critical items untested"));
        }
    }
    let head = if t.failed > 0 || !report.failures.is_empty() {
        "Failed"
    } else {
        "Passed"
    };
    format!("{head}: {}", parts.join("; "))
}

fn diagnostics(p: &RunPage) -> Markup {
    let d = &p.report.run.diagnostics;
    let counts = [
        ("orphan spans (parent never arrived)", d.orphans),
        ("duplicate span ids", d.duplicate_span_ids),
        ("parent cycles", d.parent_cycles),
        ("spans without an end time", d.missing_end_times),
        ("clock skew (child outside its parent)", d.clock_skew),
        ("calls whose callee could not be named", d.unresolved_calls),
    ];
    let any = counts.iter().any(|c| c.1 > 0) || !d.propagation_breaks.is_empty();
    html! {
        h2 #diagnostics-title { "Diagnostics" }
        @if any {
            div.warnbox #diagnostics {
                p { "These are the usual causes of a false “untested” or “unreachable”:" }
                ul {
                    @for (what, n) in counts {
                        @if n > 0 { li { b { (n) } " " (what) } }
                    }
                    @for (service, n) in &d.propagation_breaks {
                        li { b { (n) } " propagation breaks in " code { (service) }
                            ": its server spans had no parent during the run (context not propagated to it)" }
                    }
                }
            }
        } @else {
            p #diagnostics.small { "No orphans, duplicate ids, cycles, clock skew or propagation breaks." }
        }
        @if !p.warnings.is_empty() {
            div.warnbox #manifest-warnings {
                p { "The manifest names what no trace shows:" }
                ul { @for w in &p.warnings { li { (w) } } }
            }
        }
    }
}

fn failures(p: &RunPage) -> Markup {
    let report = &p.report;
    if report.failures.is_empty() {
        return html! { p { "No failure." } };
    }
    html! {
        table #failures {
            thead { tr { th { "class" } th { "hop" } th { "summary" } th { "test" } th { "evidence" } th { "links" } } }
            tbody {
                @for (i, f) in report.failures.iter().enumerate() {
                    @let placed = p.placed_traces.get(i).map_or(f.trace_id.as_str(), String::as_str);
                    tr data-class=(f.class) {
                        td {
                            span.badge.st-failing { (f.class) }
                            @if f.flaky { " " (super::layout::flaky_badge()) }
                        }
                        td {
                            @match &f.hop {
                                Some(h) => {
                                    a href=(href::edge(&p.run.run.id, &h.caller, &h.callee)) { (h.caller) " → " (h.callee) }
                                    br; code { (h.operation) }
                                }
                                None => { span.muted { "none (silent)" } }
                            }
                        }
                        td { (layout::prose(&f.summary)) }
                        td { (f.test.as_deref().unwrap_or("a request outside any test")) }
                        td.small {
                            @if let Some(s) = f.evidence.http_status { "HTTP " (s) br; }
                            @if let Some(s) = &f.evidence.rpc_status { "gRPC " (s) br; }
                            @if let Some(m) = &f.evidence.status_message { (m) br; }
                            @if let Some(x) = &f.evidence.exception {
                                (x.kind.as_deref().unwrap_or("exception"))
                                @if let Some(m) = &x.message { ": " (m) }
                            }
                        }
                        td {
                            a.trace-link href=(href::trace(placed, Some(&f.span_id))) { "trace" } " · "
                            a.bug-link href=(href::bug(&f.trace_id, &f.span_id)) { "bug report" }
                            @if let Some(ext) = safe_external(&f.link) {
                                @if !ext.contains("/traces/") { " · " a href=(ext) { "in your tracing backend" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn untested(report: &Report, run_id: &str) -> Markup {
    let Some(c) = &report.coverage else {
        return html! {};
    };
    let mut items: Vec<_> = c.untested.iter().collect();
    // Critical first: they are what a gate refuses.
    items.sort_by_key(|i| !i.critical);
    html! {
        h2 #untested-title { "Untested (" (items.len()) ")" }
        @if items.is_empty() { p { "Every expected edge and interface was exercised." } }
        @else {
            table #untested {
                thead { tr { th { "caller" } th { "callee" } th { "operation" } th { "critical" } th { "how to test it" } } }
                tbody {
                    @for i in items {
                        tr {
                            td { a href=(href::edge(run_id, &i.caller, &i.callee)) { (super::graph::label(&i.caller)) } }
                            td { (i.callee) }
                            td { @match &i.operation { Some(op) => code { (op) }, None => span.muted { "(the edge)" } } }
                            td { @if i.critical { span.critical-mark { "★ critical" } } }
                            td { @if let Some(e) = &i.example {
                                a.example href=(href::trace(&e.trace_id, None)) { "a request that crossed it" }
                                @if let Some(t) = &e.test { " (from " (t) ")" }
                            } }
                        }
                    }
                }
            }
        }
        @let stubbed: Vec<(&str, &str, Option<&str>)> = report.edges.iter()
            .filter(|e| e.expected == Some(true))
            .flat_map(|e| {
                let edge = (e.status.as_deref() == Some("stubbed")).then_some((e.caller.as_str(), e.callee.as_str(), None));
                edge.into_iter().chain(e.interfaces.iter()
                    .filter(|i| i.status.as_deref() == Some("stubbed"))
                    .map(|i| (e.caller.as_str(), e.callee.as_str(), Some(i.operation.as_str()))))
            })
            .collect();
        @if !stubbed.is_empty() {
            h2 #stubbed-title { "Stubbed (" (stubbed.len()) ")" }
            p.small { "Only a mock answered these in the run: the real integration was not exercised." }
            ul #stubbed { @for (caller, callee, op) in &stubbed {
                li { a href=(href::edge(run_id, caller, callee)) { (caller) " → " (callee) }
                     @if let Some(op) = op { " " code { (op) } } }
            } }
        }
        @if !c.unexpected.is_empty() {
            h2 { "Unexpected (" (c.unexpected.len()) ")" }
            p.small { "Observed, but declared by no source: an undeclared dependency." }
            ul { @for i in &c.unexpected {
                li { (i.caller) " → " (i.callee) @if let Some(op) = &i.operation { " " code { (op) } } }
            } }
        }
    }
}
