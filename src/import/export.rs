//! `tracecov export`: spans as OTLP/JSON lines, one `ExportTraceServiceRequest` per line, the
//! format the OpenTelemetry Collector's file exporter writes and [`super::import_file`] reads
//! back into identical spans.
//!
//! Lines follow the protobuf JSON mapping exactly: lower-case hex ids, enums as integers, 64-bit
//! integers (times, `intValue`) as decimal strings, bytes as base64, non-finite doubles as
//! `"NaN"`/`"Infinity"`. Spans are grouped by resource, then scope, in order of first appearance;
//! a line holds at most [`LINE_SPANS`] spans so no line grows without bound.
//!
//! This writes what it is given: redaction is the caller's decision (DESIGN: exports are redacted
//! unless told otherwise), made before the spans reach here.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Arc;

use base64::Engine as _;
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};

use crate::model::{Attributes, KeyValue, Resource, Scope, Span, Value};

/// The most spans written on one line.
pub const LINE_SPANS: usize = 1000;

/// Writes `spans` as OTLP/JSON lines.
pub fn write_otlp_json_lines(spans: &[Span], out: &mut dyn Write) -> io::Result<()> {
    // Resource groups in order of first appearance. Spans of one export share their resource's
    // `Arc`, so the pointer finds the group without comparing attributes in the common case.
    let mut groups: Vec<(&Arc<Resource>, Vec<&Span>)> = Vec::new();
    let mut by_ptr: HashMap<*const Resource, usize> = HashMap::new();
    for span in spans {
        let ptr = Arc::as_ptr(&span.resource);
        let index = match by_ptr.get(&ptr) {
            Some(i) => *i,
            None => {
                let i = groups
                    .iter()
                    .position(|(r, _)| **r == span.resource)
                    .unwrap_or_else(|| {
                        groups.push((&span.resource, Vec::new()));
                        groups.len() - 1
                    });
                by_ptr.insert(ptr, i);
                i
            }
        };
        groups[index].1.push(span);
    }
    for (resource, spans) in groups {
        for chunk in spans.chunks(LINE_SPANS) {
            let mut scopes: Vec<(&Arc<Scope>, Vec<&Span>)> = Vec::new();
            for span in chunk {
                match scopes
                    .iter_mut()
                    .find(|(s, _)| Arc::ptr_eq(s, &span.scope) || **s == span.scope)
                {
                    Some((_, list)) => list.push(span),
                    None => scopes.push((&span.scope, vec![span])),
                }
            }
            let request = JRequest {
                resource_spans: [JResourceSpans {
                    resource: JResource {
                        attributes: JAttrs(&resource.attributes),
                    },
                    scope_spans: scopes
                        .into_iter()
                        .map(|(scope, spans)| JScopeSpans {
                            scope: JScope {
                                name: &scope.name,
                                version: &scope.version,
                                attributes: JAttrs(&scope.attributes),
                            },
                            spans: spans.into_iter().map(JSpan::new).collect(),
                        })
                        .collect(),
                }],
            };
            serde_json::to_writer(&mut *out, &request).map_err(io::Error::other)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JRequest<'a> {
    resource_spans: [JResourceSpans<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JResourceSpans<'a> {
    resource: JResource<'a>,
    scope_spans: Vec<JScopeSpans<'a>>,
}

#[derive(Serialize)]
struct JResource<'a> {
    attributes: JAttrs<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JScopeSpans<'a> {
    scope: JScope<'a>,
    spans: Vec<JSpan<'a>>,
}

#[derive(Serialize)]
struct JScope<'a> {
    name: &'a str,
    version: &'a str,
    attributes: JAttrs<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JSpan<'a> {
    trace_id: String,
    span_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_span_id: Option<String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    trace_state: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    flags: u32,
    name: &'a str,
    kind: i32,
    start_time_unix_nano: String,
    end_time_unix_nano: String,
    attributes: JAttrs<'a>,
    events: Vec<JEvent<'a>>,
    links: Vec<JLink<'a>>,
    status: JStatus<'a>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl<'a> JSpan<'a> {
    fn new(span: &'a Span) -> Self {
        JSpan {
            trace_id: span.trace_id.to_hex(),
            span_id: span.span_id.to_hex(),
            parent_span_id: span.parent_span_id.map(|p| p.to_hex()),
            trace_state: &span.trace_state,
            flags: span.flags,
            name: &span.name,
            kind: span.kind.as_i32(),
            start_time_unix_nano: span.start_ns.to_string(),
            end_time_unix_nano: span.end_ns.to_string(),
            attributes: JAttrs(&span.attributes),
            events: span
                .events
                .iter()
                .map(|e| JEvent {
                    time_unix_nano: e.time_ns.to_string(),
                    name: &e.name,
                    attributes: JAttrs(&e.attributes),
                })
                .collect(),
            links: span
                .links
                .iter()
                .map(|l| JLink {
                    trace_id: l.trace_id.to_hex(),
                    span_id: l.span_id.to_hex(),
                    attributes: JAttrs(&l.attributes),
                })
                .collect(),
            status: JStatus {
                code: span.status.code.as_i32(),
                message: &span.status.message,
            },
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JEvent<'a> {
    time_unix_nano: String,
    name: &'a str,
    attributes: JAttrs<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JLink<'a> {
    trace_id: String,
    span_id: String,
    attributes: JAttrs<'a>,
}

#[derive(Serialize)]
struct JStatus<'a> {
    code: i32,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
}

struct JAttrs<'a>(&'a Attributes);

impl Serialize for JAttrs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        JKeyValues(&self.0.0).serialize(s)
    }
}

struct JKeyValues<'a>(&'a [KeyValue]);

impl Serialize for JKeyValues<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for kv in self.0 {
            seq.serialize_element(&JKeyValue(kv))?;
        }
        seq.end()
    }
}

struct JKeyValue<'a>(&'a KeyValue);

impl Serialize for JKeyValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("key", &self.0.key)?;
        map.serialize_entry("value", &JAny(&self.0.value))?;
        map.end()
    }
}

/// An OTLP `AnyValue`, typed as the attribute was.
struct JAny<'a>(&'a Value);

impl Serialize for JAny<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let len = usize::from(!matches!(self.0, Value::Empty));
        let mut map = s.serialize_map(Some(len))?;
        match self.0 {
            Value::Empty => {}
            Value::Str(v) => map.serialize_entry("stringValue", v)?,
            Value::Bool(v) => map.serialize_entry("boolValue", v)?,
            Value::Int(v) => map.serialize_entry("intValue", &v.to_string())?,
            Value::Double(v) if v.is_finite() => map.serialize_entry("doubleValue", v)?,
            Value::Double(v) => {
                let text = if v.is_nan() {
                    "NaN"
                } else if *v > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                };
                map.serialize_entry("doubleValue", text)?;
            }
            Value::Bytes(v) => map.serialize_entry(
                "bytesValue",
                &base64::engine::general_purpose::STANDARD.encode(v),
            )?,
            Value::Array(items) => map.serialize_entry("arrayValue", &JArray(items))?,
            Value::Map(kvs) => map.serialize_entry("kvlistValue", &JKvList(kvs))?,
        }
        map.end()
    }
}

struct JArray<'a>(&'a [Value]);

impl Serialize for JArray<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("values", &JValues(self.0))?;
        map.end()
    }
}

struct JValues<'a>(&'a [Value]);

impl Serialize for JValues<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in self.0 {
            seq.serialize_element(&JAny(v))?;
        }
        seq.end()
    }
}

struct JKvList<'a>(&'a [KeyValue]);

impl Serialize for JKvList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("values", &JKeyValues(self.0))?;
        map.end()
    }
}
