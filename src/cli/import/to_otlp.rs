//! The project's `Span` back into an OTLP protobuf `ExportTraceServiceRequest`, and its
//! `TracedLog` into an `ExportLogsServiceRequest`, for `tracecov import --server`, which sends
//! imported spans and log records to a running server the way any SDK would.
//!
//! This is the inverse of `ingest::convert` and must stay exact: the server converts the request
//! back with that code, and `--server` must store what `--data` stores. Spans are grouped by
//! resource, then scope, in order of first appearance; spans of one import share their
//! resource's `Arc`, so the pointer finds the group without comparing attributes. A `TracedLog`
//! keeps no resource or scope (the store keeps neither for a record), so log records go out under
//! one empty resource and scope.

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1 as common;
use opentelemetry_proto::tonic::logs::v1 as logs;
use opentelemetry_proto::tonic::resource::v1 as resource;
use opentelemetry_proto::tonic::trace::v1 as trace;

use crate::model::{Attributes, KeyValue, Resource, Scope, Span, TracedLog, Value};

/// The spans of one scope, converted.
type ScopeGroup<'a> = (&'a Arc<Scope>, Vec<trace::Span>);

pub fn request(spans: &[Span]) -> ExportTraceServiceRequest {
    let mut groups: Vec<(&Arc<Resource>, Vec<ScopeGroup<'_>>)> = Vec::new();
    let mut by_resource: HashMap<*const Resource, usize> = HashMap::new();
    for span in spans {
        let index = *by_resource
            .entry(Arc::as_ptr(&span.resource))
            .or_insert_with(|| {
                groups
                    .iter()
                    .position(|(r, _)| **r == span.resource)
                    .unwrap_or_else(|| {
                        groups.push((&span.resource, Vec::new()));
                        groups.len() - 1
                    })
            });
        let scopes = &mut groups[index].1;
        let converted = span_pb(span);
        match scopes
            .iter_mut()
            .find(|(s, _)| Arc::ptr_eq(s, &span.scope) || **s == span.scope)
        {
            Some((_, list)) => list.push(converted),
            None => scopes.push((&span.scope, vec![converted])),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .map(|(res, scopes)| trace::ResourceSpans {
                resource: Some(resource::Resource {
                    attributes: attrs_pb(&res.attributes),
                    ..Default::default()
                }),
                scope_spans: scopes
                    .into_iter()
                    .map(|(scope, spans)| trace::ScopeSpans {
                        scope: Some(common::InstrumentationScope {
                            name: scope.name.clone(),
                            version: scope.version.clone(),
                            attributes: attrs_pb(&scope.attributes),
                            ..Default::default()
                        }),
                        spans,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
    }
}

pub fn logs_request(records: &[TracedLog]) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![logs::ResourceLogs {
            scope_logs: vec![logs::ScopeLogs {
                log_records: records.iter().map(log_pb).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn log_pb(log: &TracedLog) -> logs::LogRecord {
    let r = &log.record;
    logs::LogRecord {
        // `ingest::convert` takes the event time, else the observed time: either gives it back.
        time_unix_nano: r.time_ns,
        observed_time_unix_nano: r.time_ns,
        severity_number: r.severity_number,
        severity_text: r.severity_text.clone(),
        // The body was kept as text; an empty one reads back empty without a value.
        body: (!r.body.is_empty()).then(|| common::AnyValue {
            value: Some(common::any_value::Value::StringValue(r.body.clone())),
        }),
        attributes: attrs_pb(&r.attributes),
        trace_id: log.trace_id.as_bytes().to_vec(),
        span_id: log
            .span_id
            .map(|s| s.as_bytes().to_vec())
            .unwrap_or_default(),
        ..Default::default()
    }
}

fn span_pb(span: &Span) -> trace::Span {
    trace::Span {
        trace_id: span.trace_id.as_bytes().to_vec(),
        span_id: span.span_id.as_bytes().to_vec(),
        trace_state: span.trace_state.clone(),
        parent_span_id: span
            .parent_span_id
            .map(|p| p.as_bytes().to_vec())
            .unwrap_or_default(),
        flags: span.flags,
        name: span.name.clone(),
        kind: span.kind.as_i32(),
        start_time_unix_nano: span.start_ns,
        end_time_unix_nano: span.end_ns,
        attributes: attrs_pb(&span.attributes),
        events: span
            .events
            .iter()
            .map(|e| trace::span::Event {
                time_unix_nano: e.time_ns,
                name: e.name.clone(),
                attributes: attrs_pb(&e.attributes),
                ..Default::default()
            })
            .collect(),
        links: span
            .links
            .iter()
            .map(|l| trace::span::Link {
                trace_id: l.trace_id.as_bytes().to_vec(),
                span_id: l.span_id.as_bytes().to_vec(),
                attributes: attrs_pb(&l.attributes),
                ..Default::default()
            })
            .collect(),
        status: Some(trace::Status {
            code: span.status.code.as_i32(),
            message: span.status.message.clone(),
        }),
        ..Default::default()
    }
}

fn attrs_pb(attrs: &Attributes) -> Vec<common::KeyValue> {
    attrs.iter().map(kv_pb).collect()
}

fn kv_pb(kv: &KeyValue) -> common::KeyValue {
    common::KeyValue {
        key: kv.key.clone(),
        value: Some(value_pb(&kv.value)),
        ..Default::default()
    }
}

fn value_pb(v: &Value) -> common::AnyValue {
    use common::any_value::Value as V;
    let value = match v {
        Value::Empty => None,
        Value::Str(s) => Some(V::StringValue(s.clone())),
        Value::Bool(b) => Some(V::BoolValue(*b)),
        Value::Int(i) => Some(V::IntValue(*i)),
        Value::Double(d) => Some(V::DoubleValue(*d)),
        Value::Bytes(b) => Some(V::BytesValue(b.clone())),
        Value::Array(items) => Some(V::ArrayValue(common::ArrayValue {
            values: items.iter().map(value_pb).collect(),
        })),
        Value::Map(kvs) => Some(V::KvlistValue(common::KeyValueList {
            values: kvs.iter().map(kv_pb).collect(),
        })),
    };
    common::AnyValue { value }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, Link, SpanId, SpanKind, Status, StatusCode, TraceId};

    fn rich_span(resource: &Arc<Resource>, scope: &Arc<Scope>, id: u8) -> Span {
        let mut s = Span::new(
            TraceId::from_bytes([7; 16]).unwrap(),
            SpanId::from_bytes([id; 8]).unwrap(),
            format!("op-{id}"),
        );
        s.parent_span_id = Some(SpanId::from_bytes([9; 8]).unwrap());
        s.trace_state = "k=v".into();
        s.flags = 1;
        s.kind = SpanKind::Client;
        s.start_ns = 1_600_000_000_000_000_000;
        s.end_ns = s.start_ns + 5;
        s.attributes = Attributes(vec![
            KeyValue::new("s", "x"),
            KeyValue::new("i", 42i64),
            KeyValue::new("b", true),
            KeyValue {
                key: "d".into(),
                value: Value::Double(1.5),
            },
            KeyValue {
                key: "bytes".into(),
                value: Value::Bytes(vec![0, 1, 2]),
            },
            KeyValue {
                key: "arr".into(),
                value: Value::Array(vec![Value::Int(1), Value::Str("two".into())]),
            },
            KeyValue {
                key: "map".into(),
                value: Value::Map(vec![KeyValue::new("inner", "v")]),
            },
            KeyValue {
                key: "empty".into(),
                value: Value::Empty,
            },
        ]);
        s.events = vec![Event {
            time_ns: s.start_ns + 1,
            name: "exception".into(),
            attributes: Attributes(vec![KeyValue::new("exception.type", "E")]),
        }];
        s.links = vec![Link {
            trace_id: TraceId::from_bytes([8; 16]).unwrap(),
            span_id: SpanId::from_bytes([3; 8]).unwrap(),
            attributes: Attributes::new(),
        }];
        s.status = Status {
            code: StatusCode::Error,
            message: "boom".into(),
        };
        s.resource = resource.clone();
        s.scope = scope.clone();
        s
    }

    #[test]
    fn spans_survive_the_trip_through_otlp_protobuf_and_back() {
        let a = Arc::new(Resource::new(Attributes(vec![KeyValue::new(
            "service.name",
            "a",
        )])));
        let b = Arc::new(Resource::new(Attributes(vec![KeyValue::new(
            "service.name",
            "b",
        )])));
        let scope = Arc::new(Scope {
            name: "lib".into(),
            version: "1.0".into(),
            attributes: Attributes::new(),
        });
        let mut root = rich_span(&a, &scope, 4);
        root.parent_span_id = None;
        let spans = vec![
            rich_span(&a, &scope, 1),
            rich_span(&b, &scope, 2),
            rich_span(&a, &Arc::new(Scope::default()), 3),
            root,
        ];
        let req = request(&spans);
        assert_eq!(req.resource_spans.len(), 2, "one group per resource");
        let back = crate::ingest::convert::convert_request(req);
        assert_eq!(back.rejected, 0);
        let mut want: Vec<&Span> = spans.iter().collect();
        let mut got: Vec<&Span> = back.spans.iter().collect();
        want.sort_by_key(|s| s.span_id);
        got.sort_by_key(|s| s.span_id);
        assert_eq!(got, want);
    }

    #[test]
    fn log_records_survive_the_trip_through_otlp_protobuf_and_back() {
        let record = |span: Option<u8>, body: &str, severity: i32| TracedLog {
            trace_id: TraceId::from_bytes([7; 16]).unwrap(),
            span_id: span.map(|s| SpanId::from_bytes([s; 8]).unwrap()),
            record: crate::model::LogRecord {
                time_ns: 1_600_000_000_000_000_123,
                severity_number: severity,
                severity_text: if severity >= 17 {
                    "ERROR".into()
                } else {
                    String::new()
                },
                body: body.into(),
                attributes: Attributes(vec![KeyValue::new("exception.type", "KeyError")]),
            },
        };
        let sent = vec![
            record(Some(1), "could not reserve stock", 17),
            record(None, "", 9),
        ];
        let back = crate::ingest::convert::convert_logs(logs_request(&sent));
        assert_eq!((back.rejected, back.without_trace), (0, 0));
        assert_eq!(back.logs, sent);
    }
}
