//! The bug report page (`/traces/{trace_id}/bug?span=`): the report of one failure (or broken
//! expectation) rendered, its Markdown (what `tracecov bug` prints) with a copy button, and its
//! JSON.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Body};
use super::{Page, UiError, blocking, href, safe_external};
use crate::blame::bug::{Bug, BugReport, PathStep, ServiceFacts, ViolationBug};
use crate::model::{SpanId, TraceId};
use crate::query;
use crate::server::AppState;

#[derive(Debug, Deserialize, Default)]
pub struct BugQuery {
    #[serde(default)]
    span: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
    Query(q): Query<BugQuery>,
) -> Result<Page, UiError> {
    let bad = |what: &str, e: crate::model::IdError| {
        UiError::new(StatusCode::BAD_REQUEST, format!("malformed {what}: {e}"))
    };
    let trace = TraceId::from_hex_padded(trace_id.trim()).map_err(|e| bad("trace id", e))?;
    let span = match q.span.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => Some(SpanId::from_hex(s).map_err(|e| bad("span id", e))?),
        None => None,
    };
    let reader = state.reader.clone();
    let ctx = state.report.clone();
    blocking(move || {
        let (bug, _) = query::bug(&reader, trace, span, &ctx)?;
        Ok(match &bug {
            Bug::Failure(b) => render(b, &bug),
            Bug::Violation(v) => render_violation(v, &bug),
        })
    })
    .await
}

fn render(bug: &BugReport, whole: &Bug) -> Markup {
    let f = &bug.failure;
    let subject = f.test.as_deref().unwrap_or("a request");
    let last = bug.path.len().saturating_sub(1);
    layout::page(
        &format!("Bug: {subject}"),
        Body::default(),
        html! {
            @if let Some(run) = &bug.run {
                p.small { a href=(href::run(&run.id)) { "← run " (run.name) } }
            }
            h1 { (subject) " failed: " code { (f.class) } }
            p #bug-summary { (layout::prose(&f.summary)) }
            table #bug-facts {
                @if let Some(h) = &f.hop {
                    tr { th { "failing hop" } td { code { (h.caller) } " → " code { (h.callee) } ", " code { (h.operation) } } }
                }
                tr { th { "class" } td { code { (f.class) } } }
                @if let Some(b) = &f.blamed { tr { th { "blamed" } td { code { (b) } } } }
                @if let Some(t) = &f.test { tr { th { "test" } td { (t) } } }
                tr { th { "run" } td { @match &bug.run { Some(r) => { (r.name) " " span.mono.small { (r.id) } }, None => "none" } } }
                tr { th { "trace / span" } td.mono { a href=(href::trace(&f.trace_id, Some(&f.span_id))) { (f.trace_id) " / " (f.span_id) } } }
            }
            h2 { "Path from the failing span to where it broke" }
            ol #bug-path {
                @for (i, step) in bug.path.iter().enumerate() {
                    li style={ "margin-left:" (i.min(30)) "em" } {
                        (step_line(step))
                        @if step.origin && i != last { " — origin of the errors" }
                        @if i == last { " " span.mark.placed { "failure placed here" } }
                    }
                }
            }
            h2 { "Evidence" }
            ul {
                @if let Some(m) = &f.evidence.status_message { li { "status message: " code { (m) } } }
                @if let Some(h) = f.evidence.http_status { li { "HTTP status: " (h) } }
                @if let Some(g) = &f.evidence.rpc_status { li { "gRPC status: " code { (g) } } }
                @if let Some(x) = &f.evidence.exception {
                    li { "exception: " code { (x.kind.as_deref().unwrap_or("exception")) }
                         @if let Some(m) = &x.message { ": " code { (m) } } }
                }
                @if let Some(c) = f.evidence.client_ms { li { "caller's side: " (layout::ms(Some(c))) } }
                @if let Some(s) = f.evidence.server_ms { li { "callee's side: " (layout::ms(Some(s))) } }
                @if !f.collateral.is_empty() { li { "consequences (collateral errors): " (f.collateral.len()) } }
                @if !f.evidence.no_error_recorded.is_empty() {
                    li { "calls that recorded no error, stepped through: " (f.evidence.no_error_recorded.len()) }
                }
            }
            @if !f.evidence.logs.is_empty() {
                h3 { "Log records of the span the failure is placed on" }
                ul #bug-logs {
                    @for l in &f.evidence.logs {
                        li { span.badge { (l.severity) } " " code { (l.body) } }
                    }
                }
            }
            @if let Some(st) = f.evidence.exception.as_ref().and_then(|x| x.stacktrace.as_ref()) {
                pre { (st) }
            }
            (services(&bug.services))
            p {
                @if let Some(l) = safe_external(&f.link) { a href=(l) { "the span the failure is placed on" } " · " }
                @if let Some(l) = safe_external(&bug.failing_link) { a href=(l) { "the failing span" } }
            }
            (copies(whole))
        },
    )
}

/// A broken expectation's page: what was expected and observed, and the path from the test.
fn render_violation(bug: &ViolationBug, whole: &Bug) -> Markup {
    let v = &bug.violation;
    let subject = v.test.as_deref().unwrap_or("a request");
    let last = bug.path.len().saturating_sub(1);
    layout::page(
        &format!("Broken expectation: {subject}"),
        Body::default(),
        html! {
            @if let Some(run) = &bug.run {
                p.small { a href=(href::run(&run.id)) { "← run " (run.name) } }
            }
            h1 { (subject) " broke the expectation " q { (v.expectation) } }
            p #bug-summary { (layout::prose(&v.summary)) }
            p.small { "A broken expectation is not a failure: the test may have passed." }
            table #bug-facts {
                tr { th { "expectation" } td { (v.expectation) } }
                tr { th { "expected" } td { (v.expected) } }
                tr { th { "observed" } td.st-failing { (v.observed) } }
                tr { th { "hop" } td { @match &v.hop {
                    Some(h) => { code { (h.caller) } " → " code { (h.callee) } ", " code { (h.operation) } },
                    None => "none: the call was never made",
                } } }
                @if let Some(t) = &v.test { tr { th { "test" } td { (t) } } }
                tr { th { "run" } td { @match &bug.run { Some(r) => { (r.name) " " span.mono.small { (r.id) } }, None => "none" } } }
                tr { th { "trace / span" } td.mono { a href=(href::trace(&v.trace_id, Some(&v.span_id))) { (v.trace_id) " / " (v.span_id) } } }
            }
            h2 { "Path from the test to the span" }
            ol #bug-path {
                @for (i, step) in bug.path.iter().enumerate() {
                    li style={ "margin-left:" (i.min(30)) "em" } {
                        (step_line(step))
                        @if i == last { " " span.mark.violated { "expectation broken here" } }
                    }
                }
            }
            (services(&bug.services))
            @if let Some(l) = safe_external(&v.link) { p { a href=(l) { "the span that broke the expectation" } } }
            (copies(whole))
        },
    )
}

/// One step of a path: its service (linked to the span), kind, name, code, duration, error.
fn step_line(step: &PathStep) -> Markup {
    html! {
        a href=(href::trace(&step.trace_id.to_hex(), Some(&step.span_id.to_hex()))) { code { (step.service) } }
        " " (step.kind.as_str()) " " code { (step.name) }
        @if let Some(c) = &step.code { " · " (c) }
        @if let Some(d) = step.duration_ms { " · " (layout::ms(Some(d))) }
        @if step.error { " · " span.st-failing { "error" } }
    }
}

fn services(list: &[ServiceFacts]) -> Markup {
    html! {
        h2 { "Services" }
        ul { @for s in list {
            li { code { (s.service) } ": version " (s.version.as_deref().unwrap_or("unknown"))
                 ", environment " (s.environment.as_deref().unwrap_or("unknown")) }
        } }
    }
}

/// The Markdown `tracecov bug` prints and the JSON, each with a copy button.
fn copies(bug: &Bug) -> Markup {
    html! {
        h2 { "Markdown " button.copy type="button" data-copy="bug-markdown" { "Copy" } }
        p.small { "Paste into an issue tracker: secrets are redacted, and the Mermaid diagram renders on GitHub and GitLab." }
        pre #bug-markdown { (bug.markdown()) }
        h2 { "JSON " button.copy type="button" data-copy="bug-json" { "Copy" } }
        pre #bug-json { (bug.json()) }
    }
}
