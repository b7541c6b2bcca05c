//! The bug report page (`/traces/{trace_id}/bug?span=`): the report of one failure rendered,
//! its Markdown (what `tracecov bug` prints) with a copy button, and its JSON.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Body};
use super::{Page, UiError, blocking, href, safe_external};
use crate::blame::bug::{BugReport, bug_json, bug_markdown};
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
        Ok(render(&bug))
    })
    .await
}

fn render(bug: &BugReport) -> Markup {
    let f = &bug.failure;
    let markdown = bug_markdown(bug);
    let json = bug_json(bug);
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
                        a href=(href::trace(&step.trace_id.to_hex(), Some(&step.span_id.to_hex()))) { code { (step.service) } }
                        " " (step.kind.as_str()) " " code { (step.name) }
                        @if let Some(c) = &step.code { " · " (c) }
                        @if let Some(d) = step.duration_ms { " · " (layout::ms(Some(d))) }
                        @if step.error { " · " span.st-failing { "error" } }
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
            h2 { "Services" }
            ul { @for s in &bug.services {
                li { code { (s.service) } ": version " (s.version.as_deref().unwrap_or("unknown"))
                     ", environment " (s.environment.as_deref().unwrap_or("unknown")) }
            } }
            p {
                @if let Some(l) = safe_external(&f.link) { a href=(l) { "the span the failure is placed on" } " · " }
                @if let Some(l) = safe_external(&bug.failing_link) { a href=(l) { "the failing span" } }
            }
            h2 { "Markdown " button.copy type="button" data-copy="bug-markdown" { "Copy" } }
            p.small { "Paste into an issue tracker: secrets are redacted, and the Mermaid diagram renders on GitHub and GitLab." }
            pre #bug-markdown { (markdown) }
            h2 { "JSON " button.copy type="button" data-copy="bug-json" { "Copy" } }
            pre #bug-json { (json) }
        },
    )
}
