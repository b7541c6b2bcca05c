//! The interface-level view of one edge (`/runs/{id}/edges?caller=&callee=`), what a heatmap
//! cell opens: the edge's status and latency, each interface with its status, calls, errors by
//! class and tests, its trend over the suite's last runs (`trend`), the failures placed on the
//! edge, and traces of its errors.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Body, status_badge};
use super::{UiError, blocking, href};
use crate::server::AppState;
use crate::{history, query};

#[derive(Debug, Deserialize)]
pub struct EdgeQuery {
    caller: String,
    callee: String,
}

/// An error of the edge, for its trace link.
struct ErrorTrace {
    trace_id: String,
    span_id: String,
    class: String,
    test: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<EdgeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<super::Page, UiError> {
    let Query(q) = q.map_err(|_| {
        UiError::new(
            StatusCode::BAD_REQUEST,
            "an edge page needs `?caller=A&callee=B`: open one from a heatmap cell",
        )
    })?;
    let reader = state.reader.clone();
    let ctx = state.report.clone();
    blocking(move || {
        let run = query::resolve_run(&reader, &id)?;
        let a = query::analyse_run(&reader, &run, &ctx)?;
        let Some(edge) = a
            .report
            .edges
            .iter()
            .find(|e| e.caller == q.caller && e.callee == q.callee)
        else {
            return Err(UiError::new(
                StatusCode::NOT_FOUND,
                format!("run {} has no edge {} → {}", run.name, q.caller, q.callee),
            ));
        };
        // Errors per operation, with the examples each interface keeps (`graph::SAMPLES`).
        let mut errors: BTreeMap<String, (u64, Vec<ErrorTrace>)> = BTreeMap::new();
        if let Some(g) = a.graph.edge(&q.caller, &q.callee) {
            for iface in g.edge.interfaces.iter().filter(|i| i.errors > 0) {
                let traces = iface
                    .samples
                    .iter()
                    .map(|s| ErrorTrace {
                        trace_id: s.trace_id.to_hex(),
                        span_id: s.span_id.to_hex(),
                        class: s.class.unwrap_or("error").to_owned(),
                        test: s.test.as_deref().map(|t| ctx.report.redactor.text(t)),
                    })
                    .collect();
                errors.insert(iface.operation.clone(), (iface.errors, traces));
            }
        }
        let failures: Vec<(usize, &crate::report::Failure)> = a
            .report
            .failures
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                f.hop
                    .as_ref()
                    .is_some_and(|h| h.caller == q.caller && h.callee == q.callee)
            })
            .collect();
        let placed: Vec<String> = a
            .blame
            .failures
            .iter()
            .map(|f| f.placed_trace.to_hex())
            .collect();
        // The edge over its suite's last runs up to this one, from each run's history digest.
        let window = history::window(&reader, None, Some(&run), history::DEFAULT_LAST)?;
        let item = history::TrendItem {
            caller: q.caller.clone(),
            callee: q.callee.clone(),
            operation: None,
        };
        let own = || history::RunDigest::of(&a.graph, &a.blame);
        let points = history::trend_of(&reader, &window, &item, &ctx, Some((&run.id, &own)))?;
        let trend = (
            window.suite,
            crate::report::history_json(&points, &ctx.report.redactor),
        );
        Ok(render(&run, edge, &failures, &placed, &errors, &trend))
    })
    .await
}

fn render(
    run: &crate::runs::Run,
    e: &crate::report::Edge,
    failures: &[(usize, &crate::report::Failure)],
    placed: &[String],
    errors: &BTreeMap<String, (u64, Vec<ErrorTrace>)>,
    trend: &(String, Vec<crate::report::HistoryPoint>),
) -> Markup {
    let status = e.status.as_deref().unwrap_or("covered");
    let critical = e.critical == Some(true);
    layout::page(
        &format!("{} → {}", e.caller, e.callee),
        Body::default(),
        html! {
            p.small { a href=(href::run(&run.id)) { "← run " (run.name) } }
            h1 { (super::graph::label(&e.caller)) " → " (e.callee) }
            p #edge-status {
                (status_badge(status))
                @if critical { " " span.critical-mark { "★ critical" } }
                @if e.expected == Some(false) { " " span.small { "(not declared by any source)" } }
            }
            div.cards {
                div.card { "calls" b { (e.calls) } }
                div.card { "errors" b { (e.errors) } }
                div.card { "tests" b { (e.tests.len()) } }
                div.card { "client p50 / p95" b { (layout::ms(e.latency_ms.client.p50)) } span.small { "p95 " (layout::ms(e.latency_ms.client.p95)) } }
                div.card { "server p50 / p95" b { (layout::ms(e.latency_ms.server.p50)) } span.small { "p95 " (layout::ms(e.latency_ms.server.p95)) } }
            }
            @if !e.error_classes.is_empty() {
                p { "Errors by class: "
                    @for (i, (class, n)) in e.error_classes.iter().enumerate() {
                        @if i > 0 { ", " } code { (class) } " " (n)
                    }
                }
            }
            h2 #trend-title { "Over the last runs" }
            (super::trend::chart(&trend.0, &trend.1, &e.caller, &e.callee, &run.id))
            h2 { "Interfaces (" (e.interfaces.len()) ")" }
            @if e.interfaces.is_empty() { p { "No interface was observed or declared." } }
            @else {
                table #interfaces {
                    thead { tr { th { "operation" } th { "status" } th.num { "calls" } th.num { "errors" } th { "errors by class" } th { "tests" } } }
                    tbody {
                        @for i in &e.interfaces {
                            @let st = i.status.as_deref().unwrap_or("covered");
                            tr data-operation=(i.operation) data-status=(st) {
                                td { code { (i.operation) } @if i.critical == Some(true) { " " span.critical-mark { "★ critical" } } }
                                td { (status_badge(st)) }
                                td.num { (i.calls) }
                                td.num { (i.errors) }
                                td { @for (class, n) in &i.error_classes { code { (class) } " " (n) br; } }
                                td.tests { @if i.tests.is_empty() { span.muted { "none" } } @else { ul { @for t in &i.tests { li { (t) } } } } }
                            }
                        }
                    }
                }
            }
            h2 { "Tests that crossed this edge (" (e.tests.len()) ")" }
            @if e.tests.is_empty() { p #edge-tests.muted { "No test exercised this edge." } }
            @else { ul #edge-tests { @for t in &e.tests { li { (t) } } } }
            h2 { "Failures placed on this edge (" (failures.len()) ")" }
            @if failures.is_empty() { p { "None." } }
            @else {
                table #edge-failures {
                    thead { tr { th { "class" } th { "operation" } th { "summary" } th { "test" } th { "links" } } }
                    tbody { @for (i, f) in failures {
                        @let trace = placed.get(*i).map_or(f.trace_id.as_str(), String::as_str);
                        tr {
                            td {
                                span.badge.st-failing { (f.class) }
                                @if f.flaky { " " (layout::flaky_badge()) }
                            }
                            td { @if let Some(h) = &f.hop { code { (h.operation) } } }
                            td { (layout::prose(&f.summary)) }
                            td { (f.test.as_deref().unwrap_or("a request")) }
                            td { a href=(href::trace(trace, Some(&f.span_id))) { "trace" } " · " a href=(href::bug(&f.trace_id, &f.span_id)) { "bug report" } }
                        }
                    } }
                }
            }
            h2 { "Errors on this edge" }
            @if errors.is_empty() { p { "No call on this edge reported an error." } }
            @else {
                @for (op, (count, traces)) in errors {
                    h3 { code { (op) } " — " (count) " in error" }
                    ul { @for t in traces {
                        li {
                            code { (t.class) } " "
                            a href=(href::trace(&t.trace_id, Some(&t.span_id))) { "trace " span.mono { (t.trace_id.get(..12).unwrap_or(&t.trace_id)) } }
                            @if let Some(test) = &t.test { " in " (test) }
                        }
                    } }
                    @if *count > traces.len() as u64 { p.small { (count - traces.len() as u64) " more not listed." } }
                }
            }
        },
    )
}
