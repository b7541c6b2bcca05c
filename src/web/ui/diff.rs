//! The compare page (`/diff?base=A&run=B`): what `tracecov diff` says, for people. Reached from
//! the runs page (pick two runs) and from a run page ("compare with the previous run of this
//! suite", `base=previous`).

use axum::extract::{Query, State};
use maud::{Markup, html};

use super::layout::{self, Body};
use super::{Page, UiError, blocking, href, safe_external};
use crate::history::{ChangeKind, Diff, ItemState};
use crate::query;
use crate::server::AppState;
use crate::web::diff::DiffQuery;

pub async fn page(
    State(state): State<AppState>,
    Query(q): Query<DiffQuery>,
) -> Result<Page, UiError> {
    let (base, run) = q
        .refs()
        .map_err(|e| UiError::new(axum::http::StatusCode::BAD_REQUEST, e.message))?;
    let reader = state.reader.clone();
    let ctx = state.report.clone();
    blocking(move || {
        let d = query::diff_runs(&reader, &base, &run, &ctx)?;
        Ok(render(&d))
    })
    .await
}

fn state(s: Option<&ItemState>) -> Markup {
    html! {
        @match s {
            None => span.muted { "absent" },
            Some(s) => {
                (layout::status_badge(&s.status)) " " (s.calls) " calls, " (s.errors) " errors"
                @if let Some(p) = s.p95_ms { ", p95 " (layout::ms(Some(p))) }
            }
        }
    }
}

fn render(d: &Diff) -> Markup {
    let kinds = [
        ChangeKind::NewlyFailing,
        ChangeKind::Fixed,
        ChangeKind::NewlyUntested,
        ChangeKind::NewlyCovered,
        ChangeKind::Slower,
        ChangeKind::Faster,
        ChangeKind::Appeared,
        ChangeKind::Disappeared,
    ];
    let f = &d.failures;
    layout::page(
        &format!("{} → {}", d.base.name, d.run.name),
        Body::default(),
        html! {
            p.small { a href="/" { "← runs" } }
            h1 { "Compare " a href=(href::run(&d.base.id)) { (d.base.name) } " → " a href=(href::run(&d.run.id)) { (d.run.name) } }
            p #diff-summary { (f.new.len()) " new failures, " (f.fixed.len()) " fixed, " (f.persisting.len()) " persisting." }
            table #diff-coverage {
                thead { tr { th { "coverage" } th.num { "base" } th.num { "run" } th.num { "delta" } } }
                tbody {
                    @for (name, x) in [("edges", &d.coverage.edges), ("interfaces", &d.coverage.interfaces), ("critical", &d.coverage.critical)] {
                        tr {
                            th { (name) }
                            td.num { (layout::percent(x.base)) }
                            td.num { (layout::percent(x.run)) }
                            td class={ "num" @if x.delta.is_some_and(|d| d < 0.0) { " st-failing" } } {
                                @match x.delta { Some(v) => (format!("{v:+.1}")), None => "—" }
                            }
                        }
                    }
                }
            }
            @for (title, id, list) in [("New failures", "diff-new", &f.new), ("Fixed failures", "diff-fixed", &f.fixed)] {
                @if !list.is_empty() {
                    h2 { (title) }
                    ul id=(id) {
                        @for x in list {
                            li {
                                (x.test.as_deref().unwrap_or("(no test)")) ": " code { (x.class) }
                                @if let Some(h) = &x.hop { " at " code { (h.caller) } " → " code { (h.callee) } " " code { (h.operation) } }
                                " · " a href=(href::trace(&x.trace_id, Some(&x.span_id))) { "trace" }
                                @if let Some(l) = safe_external(&x.link) { @if l != href::trace(&x.trace_id, Some(&x.span_id)) { " · " a href=(l) { "link" } } }
                            }
                        }
                    }
                }
            }
            @if d.changes.is_empty() { p #diff-no-changes { "No edge or interface changed." } }
            @for kind in kinds {
                @let rows: Vec<_> = d.of(kind).collect();
                @if !rows.is_empty() {
                    h2 { (kind.as_str().replace('_', " ")) " (" (rows.len()) ")" }
                    table.diff-changes data-change=(kind.as_str()) {
                        thead { tr { th { "caller → callee" } th { "operation" } th { "base" } th { "run" } } }
                        tbody {
                            @for c in rows {
                                tr {
                                    td { a href=(href::edge(&d.run.id, &c.caller, &c.callee)) { code { (c.caller) } " → " code { (c.callee) } } }
                                    td { @match &c.operation { Some(op) => code { (op) }, None => span.muted { "(edge)" } } }
                                    td { (state(c.base.as_ref())) }
                                    td { (state(c.run.as_ref())) }
                                }
                            }
                        }
                    }
                }
            }
            p.small { "As JSON: " a href={ "/api/diff?base=" (super::enc(&d.base.id)) "&run=" (super::enc(&d.run.id)) } { "/api/diff" }
                " · for a pull request: " code { "tracecov diff " (d.base.id) " " (d.run.id) " --format markdown" } }
        },
    )
}
