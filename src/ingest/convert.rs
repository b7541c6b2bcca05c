//! OTLP wire types → the project's `Span`. This is the one place OTLP protobuf types are read.
//!
//! Invalid spans (a trace or span id of the wrong length or all zeros) are counted and skipped,
//! never fatal: the OTLP partial-success answer tells the client how many were rejected and why,
//! and the rest of the export is kept.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1 as common;
use opentelemetry_proto::tonic::trace::v1 as trace;

use crate::model::{
    Attributes, Event, KeyValue, Link, Resource, Scope, Span, SpanId, SpanKind, Status, StatusCode,
    TraceId, Value,
};

/// The result of converting one export request.
#[derive(Debug, Default)]
pub struct Converted {
    pub spans: Vec<Span>,
    pub rejected: u64,
    /// The first problem found, for the partial-success message (one example is enough to fix
    /// the client; listing thousands helps nobody).
    pub first_error: Option<String>,
}

impl Converted {
    /// The partial-success message: what was wrong, and how often.
    pub fn error_message(&self) -> String {
        match &self.first_error {
            Some(e) if self.rejected > 1 => {
                format!("{} spans rejected; the first: {e}", self.rejected)
            }
            Some(e) => format!("1 span rejected: {e}"),
            None => String::new(),
        }
    }
}

pub fn any_value(v: common::AnyValue) -> Value {
    use common::any_value::Value as V;
    match v.value {
        None => Value::Empty,
        Some(V::StringValue(s)) => Value::Str(s),
        Some(V::BoolValue(b)) => Value::Bool(b),
        Some(V::IntValue(i)) => Value::Int(i),
        Some(V::DoubleValue(d)) => Value::Double(d),
        Some(V::BytesValue(b)) => Value::Bytes(b),
        Some(V::ArrayValue(a)) => Value::Array(a.values.into_iter().map(any_value).collect()),
        Some(V::KvlistValue(kv)) => Value::Map(attributes(kv.values).0),
        // An index into a string table that only the profiles signal defines; a trace export has
        // no table to resolve it against.
        Some(V::StringValueStrindex(_)) => Value::Empty,
    }
}

pub fn attributes(kvs: Vec<common::KeyValue>) -> Attributes {
    kvs.into_iter()
        .map(|kv| KeyValue {
            key: kv.key,
            value: kv.value.map(any_value).unwrap_or_default(),
        })
        .collect()
}

/// Converts a whole export request, keeping every valid span.
pub fn convert_request(req: ExportTraceServiceRequest) -> Converted {
    let mut out = Converted {
        spans: Vec::with_capacity(
            req.resource_spans
                .iter()
                .flat_map(|rs| rs.scope_spans.iter().map(|ss| ss.spans.len()))
                .sum(),
        ),
        ..Converted::default()
    };
    for rs in req.resource_spans {
        let resource = Arc::new(Resource::new(attributes(
            rs.resource.map(|r| r.attributes).unwrap_or_default(),
        )));
        for ss in rs.scope_spans {
            let scope = Arc::new(match ss.scope {
                Some(s) => Scope {
                    name: s.name,
                    version: s.version,
                    attributes: attributes(s.attributes),
                },
                None => Scope::default(),
            });
            for span in ss.spans {
                match convert_span(span, &resource, &scope) {
                    Ok(s) => out.spans.push(s),
                    Err(e) => {
                        out.rejected += 1;
                        if out.first_error.is_none() {
                            out.first_error = Some(e);
                        }
                    }
                }
            }
        }
    }
    out
}

fn convert_span(
    span: trace::Span,
    resource: &Arc<Resource>,
    scope: &Arc<Scope>,
) -> Result<Span, String> {
    let trace_id = TraceId::from_slice(&span.trace_id)
        .map_err(|e| format!("span {:?}: invalid trace id: {e}", span.name))?;
    let span_id = SpanId::from_slice(&span.span_id)
        .map_err(|e| format!("span {:?}: invalid span id: {e}", span.name))?;
    // An empty parent id means a root span; an all-zero one is treated the same (some SDKs send
    // it); any other malformed parent id makes the span invalid.
    let parent_span_id =
        if span.parent_span_id.is_empty() || span.parent_span_id.iter().all(|b| *b == 0) {
            None
        } else {
            Some(
                SpanId::from_slice(&span.parent_span_id)
                    .map_err(|e| format!("span {:?}: invalid parent span id: {e}", span.name))?,
            )
        };
    let links = span
        .links
        .into_iter()
        // A link to an invalid context carries nothing to follow; drop the link, keep the span.
        .filter_map(|l| {
            Some(Link {
                trace_id: TraceId::from_slice(&l.trace_id).ok()?,
                span_id: SpanId::from_slice(&l.span_id).ok()?,
                attributes: attributes(l.attributes),
            })
        })
        .collect();
    let status = span.status.map_or_else(Status::default, |s| Status {
        code: StatusCode::from_i32(s.code),
        message: s.message,
    });
    Ok(Span {
        trace_id,
        span_id,
        parent_span_id,
        trace_state: span.trace_state,
        flags: span.flags,
        name: span.name,
        kind: SpanKind::from_i32(span.kind),
        start_ns: span.start_time_unix_nano,
        end_ns: span.end_time_unix_nano,
        attributes: attributes(span.attributes),
        events: span
            .events
            .into_iter()
            .map(|e| Event {
                time_ns: e.time_unix_nano,
                name: e.name,
                attributes: attributes(e.attributes),
            })
            .collect(),
        links,
        status,
        resource: resource.clone(),
        scope: scope.clone(),
        logs: Vec::new(),
    })
}

/// The result of converting one logs export: the records that carry a trace id, the number
/// that carry none (accepted and dropped: evidence on nothing), and the invalid ones.
#[derive(Debug, Default)]
pub struct ConvertedLogs {
    pub logs: Vec<crate::model::TracedLog>,
    pub without_trace: u64,
    pub rejected: u64,
    pub first_error: Option<String>,
}

impl ConvertedLogs {
    /// The partial-success message: what was wrong, and how often.
    pub fn error_message(&self) -> String {
        match &self.first_error {
            Some(e) if self.rejected > 1 => {
                format!("{} log records rejected; the first: {e}", self.rejected)
            }
            Some(e) => format!("1 log record rejected: {e}"),
            None => String::new(),
        }
    }
}

/// Converts a whole logs export. A record with an empty or all-zero trace id carries no trace;
/// one whose trace or span id has the wrong length is rejected (partial success), as for spans.
pub fn convert_logs(
    req: opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest,
) -> ConvertedLogs {
    let mut out = ConvertedLogs::default();
    for record in req
        .resource_logs
        .into_iter()
        .flat_map(|rl| rl.scope_logs)
        .flat_map(|sl| sl.log_records)
    {
        if record.trace_id.iter().all(|b| *b == 0) {
            out.without_trace += 1;
            continue;
        }
        match convert_log(record) {
            Ok(log) => out.logs.push(log),
            Err(e) => {
                out.rejected += 1;
                if out.first_error.is_none() {
                    out.first_error = Some(e);
                }
            }
        }
    }
    out
}

fn convert_log(
    r: opentelemetry_proto::tonic::logs::v1::LogRecord,
) -> Result<crate::model::TracedLog, String> {
    let trace_id = TraceId::from_slice(&r.trace_id)
        .map_err(|e| format!("log record: invalid trace id: {e}"))?;
    let span_id = if r.span_id.iter().all(|b| *b == 0) {
        None
    } else {
        Some(
            SpanId::from_slice(&r.span_id)
                .map_err(|e| format!("log record: invalid span id: {e}"))?,
        )
    };
    let body = match r.body.map(any_value) {
        None | Some(Value::Empty) => String::new(),
        Some(Value::Str(s)) => s,
        Some(other) => other.to_text(),
    };
    Ok(crate::model::TracedLog {
        trace_id,
        span_id,
        record: crate::model::LogRecord {
            time_ns: if r.time_unix_nano != 0 {
                r.time_unix_nano
            } else {
                r.observed_time_unix_nano
            },
            severity_number: r.severity_number,
            severity_text: r.severity_text,
            body,
            attributes: attributes(r.attributes),
        },
    })
}
