//! The trace view (`/traces/{trace_id}?span=SPAN`), the page tracecov's default trace links open:
//! a waterfall of the trace's spans in tree order, coloured by service, with hops marked, the
//! span each failure is placed on and its collateral errors highlighted, the spans that broke an
//! expectation of the manifest outlined (dashed), the `?span=` span
//! selected and opened, and every span's attributes, events, links and log records — redacted —
//! in a `<details>` that opens on click.
//!
//! A span's log records (OTLP logs stored with their trace, `Span::logs`) are ticks on its bar
//! and a table in its details; the records that are error evidence (`LogRecord::is_error_evidence`,
//! what blame reads) are also listed right under the row while it is closed (the stylesheet hides
//! the list under an open row, whose table shows them), because they are often the only sign of a
//! failure a span did not record. The spans come from `query::trace_detail`,
//! which redacts them and their records with the report's `Redactor`: nothing here reads a
//! record the redactor has not seen.

use std::collections::{HashMap, HashSet};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Body};
use super::{Page, UiError, blocking, href};
use crate::model::{LogRecord, Span, SpanId, TraceId};
use crate::query::{self, TraceDetail, TraceHop};
use crate::server::AppState;
use crate::web::api::attrs_json;

#[derive(Debug, Deserialize, Default)]
pub struct TraceQuery {
    #[serde(default)]
    span: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
    Query(q): Query<TraceQuery>,
) -> Result<Page, UiError> {
    let id = TraceId::from_hex_padded(trace_id.trim()).map_err(|e| {
        UiError::new(
            StatusCode::BAD_REQUEST,
            format!("malformed trace id {trace_id:?}: {e} (expected 32 hex digits)"),
        )
    })?;
    let selected = match q.span.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => Some(SpanId::from_hex(s).map_err(|e| {
            UiError::new(StatusCode::BAD_REQUEST, format!("malformed span id: {e}"))
        })?),
        None => None,
    };
    let reader = state.reader.clone();
    let ctx = state.report.clone();
    blocking(move || {
        let detail = query::trace_detail(&reader, id, &ctx)?.ok_or_else(|| {
            UiError::new(StatusCode::NOT_FOUND, format!("no trace {id} in the store"))
        })?;
        Ok(render(id, &detail, selected))
    })
    .await
}

/// Service colours: distinct hues, all dark enough to read a white outline against.
/// Error-evidence records listed under a row before the rest are left to its details.
const LOGS_UNDER_ROW: usize = 3;

const PALETTE: [&str; 12] = [
    "#0969da", "#1a7f37", "#8250df", "#bc4c00", "#0a7f8c", "#bf3989", "#57606a", "#9a6700",
    "#4d2d8f", "#116329", "#953800", "#1b4b91",
];

/// Spans in tree order (each after its parent, siblings by start time) with their depth. A
/// span whose parent is not in the trace is a root; spans caught in a parent cycle come last.
fn tree_order(spans: &[Span]) -> Vec<(usize, usize)> {
    let index: HashMap<SpanId, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id, i))
        .collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match s.parent_span_id.and_then(|p| index.get(&p)) {
            Some(&p) if p != i => children.entry(p).or_default().push(i),
            _ => roots.push(i),
        }
    }
    let by_start = |v: &mut Vec<usize>| v.sort_by_key(|&i| (spans[i].start_ns, i));
    by_start(&mut roots);
    for v in children.values_mut() {
        by_start(v);
    }
    let mut out = Vec::with_capacity(spans.len());
    let mut seen = HashSet::new();
    let mut stack: Vec<(usize, usize)> = roots.into_iter().rev().map(|r| (r, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        if !seen.insert(i) {
            continue;
        }
        out.push((i, depth));
        if let Some(kids) = children.get(&i) {
            stack.extend(kids.iter().rev().map(|&k| (k, depth + 1)));
        }
    }
    for i in 0..spans.len() {
        if !seen.contains(&i) {
            out.push((i, 0));
        }
    }
    out
}

pub(super) fn render(id: TraceId, d: &TraceDetail, selected: Option<SpanId>) -> Markup {
    let spans = &d.spans;
    let order = tree_order(spans);
    let mut services: Vec<&str> = spans.iter().map(Span::service).collect();
    services.sort_unstable();
    services.dedup();
    let colour = |svc: &str| -> &'static str {
        PALETTE[services.binary_search(&svc).unwrap_or(0) % PALETTE.len()]
    };
    let start = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let end = spans
        .iter()
        .map(|s| s.end_ns.max(s.start_ns))
        .max()
        .unwrap_or(start);
    let total = (end - start).max(1) as f64;
    let placed: HashSet<String> = d.failures.iter().map(|f| f.span_id.clone()).collect();
    let collateral: HashSet<&str> = d
        .failures
        .iter()
        .flat_map(|f| f.collateral.iter().map(String::as_str))
        .collect();
    let violated: HashSet<&str> = d.violations.iter().map(|v| v.span_id.as_str()).collect();
    // A hop is marked on the span that answered it, or on the calling span when none answered.
    let mut hops: HashMap<SpanId, &TraceHop> = HashMap::new();
    for h in &d.hops {
        if let Some(s) = h.server_span.or(h.client_span) {
            hops.entry(s).or_insert(h);
        }
    }
    let hex = id.to_hex();
    layout::page(
        &format!("Trace {}", &hex[..12.min(hex.len())]),
        Body::default(),
        html! {
            @if let Some(run) = &d.run {
                p.small { a href=(href::run(&run.id)) { "← run " (run.name) } }
            }
            h1 { "Trace " span.mono { (hex) } }
            p.small { (spans.len()) " spans, " (services.len()) " services, "
                (layout::ms(Some(total / 1e6))) " · "
                a href={ "/api/traces/" (hex) } { "JSON" } " · "
                a href={ "/api/traces/" (hex) "/otlp" } { "OTLP/JSON (redacted)" } }
            @if let Some(sel) = selected.filter(|sel| !spans.iter().any(|s| s.span_id == *sel)) {
                p.warnbox #no-such-span { "This trace has no span " code { (sel.to_hex()) } " (the link's " code { "?span=" } "): the whole trace is shown." }
            }
            @if d.failures.is_empty() {
                p { "No failure in this trace." }
            } @else {
                div #trace-failures {
                    @for f in &d.failures {
                        p.warnbox {
                            span.badge.st-failing { (f.class) } " "
                            (layout::prose(&f.summary)) " "
                            a href=(href::trace(&hex, Some(&f.span_id))) { "show the span" } " · "
                            a href=(href::bug(&f.trace_id, &f.span_id)) { "bug report" }
                        }
                    }
                }
            }
            @if !d.violations.is_empty() {
                div #trace-violations {
                    @for v in &d.violations {
                        p.warnbox {
                            span.badge.mark.violated { "broken expectation" } " "
                            (layout::prose(&v.summary)) " "
                            a href=(href::trace(&hex, Some(&v.span_id))) { "show the span" } " · "
                            a href=(href::bug(&v.trace_id, &v.span_id)) { "bug report" }
                        }
                    }
                }
            }
            div.legend {
                @for s in &services { span { span.svc-dot style={ "--svc:" (colour(s)) } {} (s) } }
            }
            div.legend.small {
                span { span.mark.placed { "failure placed here" } }
                span { span.mark.collateral { "collateral" } " an error on the way down, not a failure of its own" }
                span { span.mark.error { "error" } " in error" }
                @if !d.violations.is_empty() {
                    span { span.mark.violated { "expectation broken" } " a span that broke an expectation (dashed outline)" }
                }
                span { span.hop { "hop a → b" } " a call across a boundary" }
                span { span.mark.log-error { "✗ log" } " a log record that is error evidence (ERROR or above, or an exception)" }
            }
            div.waterfall #waterfall {
                div.wf-axis aria-hidden="true" {
                    span { "span" }
                    span.wf-dur { "duration" }
                    span.wf-track {
                        @for q in 0..=4u32 {
                            span.wf-tick style={ "left:" (q * 25) "%" } {
                                @if q == 0 { "0" } @else { (layout::ms(Some(total / 1e6 * f64::from(q) / 4.0))) }
                            }
                        }
                    }
                }
                @for (i, depth) in &order {
                    (row(&spans[*i], *depth, start, total, colour(spans[*i].service()),
                        placed.contains(&spans[*i].span_id.to_hex()),
                        collateral.contains(spans[*i].span_id.to_hex().as_str()),
                        violated.contains(spans[*i].span_id.to_hex().as_str()),
                        selected == Some(spans[*i].span_id),
                        hops.get(&spans[*i].span_id).copied()))
                }
            }
        },
    )
}

#[allow(clippy::too_many_arguments)]
fn row(
    s: &Span,
    depth: usize,
    start: u64,
    total: f64,
    colour: &str,
    placed: bool,
    collateral: bool,
    violated: bool,
    selected: bool,
    hop: Option<&TraceHop>,
) -> Markup {
    let left = (s.start_ns.saturating_sub(start)) as f64 / total * 100.0;
    let width = (s.duration_ns() as f64 / total * 100.0).max(0.2);
    let error = crate::graph::semconv::in_error(s);
    let mut class = String::from("wf-row");
    if placed {
        class.push_str(" placed");
    }
    if collateral {
        class.push_str(" collateral");
    }
    if violated {
        class.push_str(" violated");
    }
    if selected {
        class.push_str(" selected");
    }
    let sid = s.span_id.to_hex();
    let evidence: Vec<&LogRecord> = s.logs.iter().filter(|l| l.is_error_evidence()).collect();
    html! {
        details class=(class) id={ "span-" (sid) } data-span=(sid) data-logs=(s.logs.len()) open[selected || placed] {
            summary {
                span.wf-name style={ "padding-left:" (depth.min(40) as f64 * 1.1) "em" }
                    title={ (s.service()) " " (s.name) @if let Some(h) = hop { " — hop " (h.caller) " → " (h.callee) " " (h.operation) } } {
                    span.svc-dot style={ "--svc:" (colour) } {}
                    // The marks come first: a long name is cut off at the end, never them.
                    @if placed { span.mark.placed { "failure placed here" } " " }
                    @if collateral { span.mark.collateral { "collateral" } " " }
                    @if violated { span.mark.violated { "expectation broken" } " " }
                    @if error && !placed && !collateral { span.mark.error { "error" } " " }
                    span.svc { (s.service()) } " "
                    span.span-name { (s.name) }
                    @if let Some(h) = hop {
                        span.hop title=(h.operation) { "hop " (h.caller) " → " (h.callee) }
                    }
                    @if !s.logs.is_empty() {
                        " " span.logcount { (s.logs.len()) @if s.logs.len() == 1 { " log" } @else { " logs" } }
                    }
                }
                span.wf-dur { (layout::ms(Some(s.duration_ns() as f64 / 1e6))) }
                span.wf-track {
                    span class=@if error { "wf-bar err" } @else { "wf-bar" }
                        style={ "--svc:" (colour) ";left:" (format!("{left:.3}")) "%;width:" (format!("{width:.3}")) "%" }
                        title={ (layout::ms(Some(s.duration_ns() as f64 / 1e6))) } {}
                    // Where the span's records fall; the details list them as text.
                    @for l in &s.logs {
                        span class=@if l.is_error_evidence() { "wf-log err" } @else { "wf-log" }
                            aria-hidden="true"
                            style={ "left:" (format!("{:.3}", l.time_ns.saturating_sub(start) as f64 / total * 100.0)) "%" } {}
                    }
                }
            }
            div.wf-detail { (details(s, hop, start)) }
        }
        @if !evidence.is_empty() {
            ul.wf-evidence data-span=(sid) aria-label={ "error evidence logged by " (s.service()) " " (s.name) } {
                @for l in evidence.iter().take(LOGS_UNDER_ROW) {
                    li style={ "padding-left:" (format!("{:.1}", depth.min(40) as f64 * 1.1 + 1.2)) "em" } {
                        (log_line(l, start))
                    }
                }
                @if evidence.len() > LOGS_UNDER_ROW {
                    li.small style={ "padding-left:" (format!("{:.1}", depth.min(40) as f64 * 1.1 + 1.2)) "em" } {
                        "and " (evidence.len() - LOGS_UNDER_ROW) " more in the span's details"
                    }
                }
            }
        }
    }
}

/// When a record was written, from the start of the trace.
fn offset(time_ns: u64, start: u64) -> String {
    format!(
        "+{}",
        layout::ms(Some(time_ns.saturating_sub(start) as f64 / 1e6))
    )
}

/// The severity as a badge: error evidence carries a symbol as well as its colour.
fn severity(l: &LogRecord) -> Markup {
    html! {
        @if l.is_error_evidence() {
            span.mark.log-error title="error evidence" { "✗ " (l.severity()) }
        } @else {
            span.sev { (l.severity()) }
        }
    }
}

/// One error-evidence record on a line under its row.
fn log_line(l: &LogRecord, start: u64) -> Markup {
    html! {
        span.wf-log-at { (offset(l.time_ns, start)) } " "
        (severity(l)) " "
        span.log-body { (first_line(&l.body)) }
    }
}

/// The first line of a body, for the line under a row (the details hold all of it).
fn first_line(body: &str) -> &str {
    body.lines().next().unwrap_or("")
}

fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn attr_table(attrs: &crate::model::Attributes) -> Markup {
    let map = attrs_json(attrs);
    html! {
        @if map.is_empty() { span.muted { "none" } }
        @else {
            table.attrs { @for (k, v) in &map { tr { th.mono { (k) } td.mono { (value_text(v)) } } } }
        }
    }
}

fn details(s: &Span, hop: Option<&TraceHop>, start: u64) -> Markup {
    html! {
        table {
            tr { th { "span id" } td.mono { (s.span_id.to_hex()) } }
            tr { th { "parent" } td.mono { @match s.parent_span_id { Some(p) => (p.to_hex()), None => "none (root)" } } }
            tr { th { "kind" } td { (s.kind.as_str()) } }
            tr { th { "service" } td { (s.service()) } }
            tr { th { "duration" } td { (layout::ms(Some(s.duration_ns() as f64 / 1e6))) } }
            tr { th { "status" } td { (s.status.code.as_str()) @if !s.status.message.is_empty() { ": " (s.status.message) } } }
            @if let Some(h) = hop {
                tr { th { "hop" } td { (h.caller) " → " (h.callee) " " code { (h.operation) } @if h.error { " (in error)" } } }
            }
        }
        h4 { "Attributes" }
        (attr_table(&s.attributes))
        @if !s.events.is_empty() {
            h4 { "Events" }
            @for e in &s.events {
                p { b { (e.name) } " " span.small { "+" (layout::ms(Some(e.time_ns.saturating_sub(s.start_ns) as f64 / 1e6))) } }
                (attr_table(&e.attributes))
            }
        }
        @if !s.logs.is_empty() {
            h4 { "Log records" }
            table.logs {
                thead { tr { th { "at" } th { "severity" } th { "body" } } }
                tbody {
                    @for l in &s.logs {
                        tr class=[l.is_error_evidence().then_some("log-error")] {
                            td.num.mono { (offset(l.time_ns, start)) }
                            td { (severity(l)) }
                            td {
                                pre.log-body { (l.body) }
                                @if !l.attributes.is_empty() {
                                    details.log-attrs {
                                        summary.small { (l.attributes.len()) @if l.attributes.len() == 1 { " attribute" } @else { " attributes" } }
                                        (attr_table(&l.attributes))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !s.links.is_empty() {
            h4 { "Links" }
            ul { @for l in &s.links {
                li { a href=(href::trace(&l.trace_id.to_hex(), Some(&l.span_id.to_hex()))) { span.mono { (l.trace_id.to_hex()) " / " (l.span_id.to_hex()) } }
                     (attr_table(&l.attributes)) }
            } }
        }
        h4 { "Resource" }
        (attr_table(&s.resource.attributes))
    }
}
