//! Test support: a compact text format for trace fixtures, and a compact rendering of a
//! `RunGraph` to hold as a snapshot. Compiled for tests only.
//!
//! One span per line, fields separated by spaces, `"…"` quoting a field with spaces:
//!
//! ```text
//! # a comment
//! @test-service driver           analysis option, repeatable
//! @alias cart:8080 cart          analysis option, repeatable
//! t1:a - driver client GET 0..40 http.request.method=GET url.full="http://cart:8080/x?id=1"
//! t1:b a cart server "GET /x" 2..38 http.route=/x status=error link=t0:p
//! ```
//!
//! Fields: `trace:span` labels; the parent's span label in the same trace, or `-`; the service
//! (`ns/name` sets `service.namespace`); the kind (`server`, `client`, `producer`, `consumer`,
//! `internal`, or `-`); the span name; `start..end` in milliseconds (`5..` leaves the end
//! missing); then attributes `key=value`. A bare integer value is an integer attribute, a quoted
//! one a string. `status=error|ok`, `status.message=…` and `link=trace:span` (repeatable) set the
//! span's status and links. Labels become ids byte for byte (`a` is span id `6100000000000000`),
//! so renderings print labels back.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use crate::model::{
    Attributes, Link, Resource, Span, SpanId, SpanKind, Status, StatusCode, TraceId, Value,
};

use super::{AnalysisOptions, RunGraph};

pub fn trace_id(label: &str) -> TraceId {
    let mut bytes = [0u8; 16];
    assert!(
        !label.is_empty() && label.len() <= 16,
        "trace label {label:?}"
    );
    bytes[..label.len()].copy_from_slice(label.as_bytes());
    TraceId::from_bytes(bytes).unwrap()
}

pub fn span_id(label: &str) -> SpanId {
    let mut bytes = [0u8; 8];
    assert!(
        !label.is_empty() && label.len() <= 8,
        "span label {label:?}"
    );
    bytes[..label.len()].copy_from_slice(label.as_bytes());
    SpanId::from_bytes(bytes).unwrap()
}

/// The label an id was made from.
pub fn label(bytes: &[u8]) -> String {
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Parses a fixture into spans and analysis options. Panics on a malformed line, naming it: a
/// fixture is test code.
pub fn parse(text: &str) -> (Vec<Span>, AnalysisOptions) {
    let mut spans = Vec::new();
    let mut opts = AnalysisOptions::default();
    let mut resources: HashMap<String, Arc<Resource>> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields = split(line);
        let at = || format!("fixture line {}: {line}", n + 1);
        match fields[0].as_str() {
            "@test-service" => {
                opts.test_services.push(fields[1].clone());
                continue;
            }
            "@alias" => {
                opts.aliases.push((fields[1].clone(), fields[2].clone()));
                continue;
            }
            _ => {}
        }
        assert!(fields.len() >= 6, "too few fields: {}", at());
        let (trace, span) = fields[0].split_once(':').expect("trace:span");
        let mut s = Span::new(trace_id(trace), span_id(span), fields[4].clone());
        if fields[1] != "-" {
            s.parent_span_id = Some(span_id(&fields[1]));
        }
        s.resource = resources
            .entry(fields[2].clone())
            .or_insert_with(|| {
                let mut attrs = Attributes::new();
                match fields[2].split_once('/') {
                    Some((ns, name)) => {
                        attrs.push("service.namespace", ns);
                        attrs.push("service.name", name);
                    }
                    None => attrs.push("service.name", fields[2].as_str()),
                }
                Arc::new(Resource::new(attrs))
            })
            .clone();
        s.kind = match fields[3].as_str() {
            "server" => SpanKind::Server,
            "client" => SpanKind::Client,
            "producer" => SpanKind::Producer,
            "consumer" => SpanKind::Consumer,
            "internal" => SpanKind::Internal,
            "-" => SpanKind::Unspecified,
            other => panic!("kind {other:?}: {}", at()),
        };
        let (start, end) = fields[5].split_once("..").expect("start..end");
        s.start_ns = ms(start);
        s.end_ns = if end.is_empty() { 0 } else { ms(end) };
        for field in &fields[6..] {
            let (key, value) = field.split_once('=').unwrap_or_else(|| panic!("{}", at()));
            match key {
                "status" => {
                    s.status = Status {
                        code: match value {
                            "error" => StatusCode::Error,
                            "ok" => StatusCode::Ok,
                            _ => StatusCode::Unset,
                        },
                        message: s.status.message.clone(),
                    }
                }
                "status.message" => s.status.message = unquote(value),
                "link" => {
                    let (t, sp) = value.split_once(':').expect("link=trace:span");
                    s.links.push(Link {
                        trace_id: trace_id(t),
                        span_id: span_id(sp),
                        attributes: Attributes::new(),
                    });
                }
                _ => {
                    let v = if value.starts_with('"') {
                        Value::Str(unquote(value))
                    } else if let Ok(i) = value.parse::<i64>() {
                        Value::Int(i)
                    } else {
                        Value::Str(value.to_owned())
                    };
                    s.attributes.push(key, v);
                }
            }
        }
        spans.push(s);
    }
    (spans, opts)
}

fn ms(text: &str) -> u64 {
    // Times start at a realistic epoch so that "0 ms" is not the missing-end marker.
    const EPOCH_NS: u64 = 1_700_000_000_000_000_000;
    EPOCH_NS + (text.parse::<f64>().expect("milliseconds") * 1e6).round() as u64
}

/// Splits on spaces outside double quotes; quotes are kept on values (`key="a b"`) so that the
/// attribute parser can tell a quoted string from a bare integer, and dropped on whole fields.
fn split(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                current.push(c);
                current.extend(chars.next());
            }
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ' ' | '\t' if !quoted => {
                if !current.is_empty() {
                    fields.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        fields.push(current);
    }
    fields
        .into_iter()
        .map(|f| if f.starts_with('"') { unquote(&f) } else { f })
        .collect()
}

fn unquote(text: &str) -> String {
    let inner = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    inner.replace("\\\"", "\"")
}

fn latency(l: &super::Latency) -> String {
    let one = |v: Option<u64>| v.map_or("-".to_owned(), |ns| format!("{}", ns as f64 / 1e6));
    format!("{}/{}/{}", one(l.p50), one(l.p95), one(l.p99))
}

/// The graph as compact text: tests, nodes, edges with interfaces, hops, diagnostics.
pub fn render(graph: &RunGraph) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "spans {}, traces {}",
        graph.span_count(),
        graph.trace_count()
    );
    for t in graph.tests() {
        let _ = writeln!(
            out,
            "test {} {} ({}:{})",
            t.outcome.as_str(),
            t.name,
            label(t.trace_id.as_bytes()),
            label(t.span_id.as_bytes())
        );
    }
    for n in graph.nodes() {
        let _ = writeln!(out, "node {} ({})", n.id, n.kind.as_str());
    }
    for e in graph.edges() {
        let _ = writeln!(
            out,
            "edge {} -> {}: calls {}, errors {}, client ms {}, server ms {}, tests [{}]",
            e.caller.id,
            e.callee.id,
            e.edge.calls,
            e.edge.errors,
            latency(&e.edge.client_latency),
            latency(&e.edge.server_latency),
            e.edge.tests.join(", ")
        );
        for i in &e.edge.interfaces {
            let _ = writeln!(
                out,
                "  {:?}: calls {}, errors {}, tests [{}]",
                i.operation,
                i.calls,
                i.errors,
                i.tests.join(", ")
            );
        }
    }
    for h in graph.hops() {
        let side = |s: Option<SpanId>| s.map_or("-".to_owned(), |s| label(s.as_bytes()));
        let _ = writeln!(
            out,
            "hop {}:{}>{} {} -> {} {:?}{}{}",
            label(h.trace_id.as_bytes()),
            side(h.client_span),
            side(h.server_span),
            graph.node(h.caller).id,
            graph.node(h.callee).id,
            graph.operation(h.operation),
            if h.error { " error" } else { "" },
            h.test
                .map(|t| format!(" test={}", graph.test(t).name))
                .unwrap_or_default(),
        );
    }
    let d = graph.diagnostics();
    let counts = [
        ("orphans", d.orphans),
        ("duplicate_span_ids", d.duplicate_span_ids),
        ("parent_cycles", d.parent_cycles),
        ("missing_end_times", d.missing_end_times),
        ("clock_skew", d.clock_skew),
        ("unresolved_calls", d.unresolved_calls),
    ];
    let odd: Vec<String> = counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    if !odd.is_empty() {
        let _ = writeln!(out, "diagnostics: {}", odd.join(", "));
    }
    if !d.propagation_breaks.is_empty() {
        let breaks: Vec<String> = d
            .propagation_breaks
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        let _ = writeln!(out, "propagation breaks: {}", breaks.join(", "));
    }
    out
}

/// Parses, analyses and renders a fixture.
pub fn analyze_fixture(text: &str) -> String {
    let (spans, opts) = parse(text);
    // Every analysis fixture also holds per-trace results to the whole-run analysis.
    crate::results::tests::assert_merge_identity(&spans, &opts);
    render(&super::analyze(&spans, &opts))
}
