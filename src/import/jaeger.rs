//! Jaeger JSON: the query service's `/api/traces` answer (`{"data": [trace, …]}`) and the UI's
//! download (the same shape, or one bare trace object `{traceID, spans, processes}`).
//!
//! Traces are streamed one element of `data` at a time; a trace is held whole because its spans
//! name their process by id and `processes` may come after `spans`.
//!
//! Mapping: `processes` become resources (`serviceName` → `service.name`, tags → attributes);
//! typed tags `{key, type, value}` become typed attributes; the `span.kind` tag becomes the kind;
//! `otel.status_code`/`otel.status_description` become the status, else `error=true` makes it
//! ERROR (`error` stays as evidence, the `otel.status_*` and `span.kind` tags are consumed);
//! `otel.scope.name`/`otel.scope.version` (legacy `otel.library.*`) become the scope;
//! `w3c.tracestate` the trace state; logs become events (the `event` field is the name, the
//! other fields attributes); the first CHILD_OF reference in the same trace is the parent, every
//! other reference a link with `opentracing.ref_type`; ids are hex (64-bit trace ids padded);
//! `startTime`/`duration` microseconds become nanoseconds.

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::Arc;

use base64::Engine as _;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;

use super::{Ctx, Stop};
use crate::model::{
    Attributes, Event, KeyValue, Link, Resource, Scope, Span, SpanId, SpanKind, Status, StatusCode,
    TraceId, Value,
};

pub(super) fn import(input: impl BufRead, ctx: &mut Ctx<'_, '_>) -> Result<(), Stop> {
    let mut de = serde_json::Deserializer::from_reader(input);
    let mut bare = serde_json::Map::new();
    let result = TopSeed {
        ctx: &mut *ctx,
        bare: &mut bare,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    // A bare trace (the UI's download) is complete once its object has ended. When the input
    // breaks off later, its spans are still worth delivering if their processes were read.
    let complete = result.is_ok() || bare.contains_key("processes");
    if !bare.is_empty() && complete {
        let spans = convert_trace(Json::Object(bare), ctx);
        ctx.emit(spans).map_err(Stop::Sink)?;
    }
    result.map_err(|e| ctx.stop_from_json(e))
}

struct TopSeed<'c, 'a, 's> {
    ctx: &'c mut Ctx<'a, 's>,
    bare: &'c mut serde_json::Map<String, Json>,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a Jaeger JSON object ({\"data\": [...]} or a trace)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "data" => map.next_value_seed(TracesSeed {
                    ctx: &mut *self.ctx,
                })?,
                "traceID" | "spans" | "processes" => {
                    let value = map.next_value::<Json>()?;
                    self.bare.insert(key, value);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// The `data` array: one trace at a time.
struct TracesSeed<'c, 'a, 's> {
    ctx: &'c mut Ctx<'a, 's>,
}

impl<'de> DeserializeSeed<'de> for TracesSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TracesSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of Jaeger traces")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(trace) = seq.next_element::<Json>()? {
            let spans = convert_trace(trace, self.ctx);
            self.ctx.emit_in_visitor(spans)?;
        }
        Ok(())
    }
}

/// Converts one trace, skipping (and counting) the spans that cannot be read.
fn convert_trace(trace: Json, ctx: &mut Ctx<'_, '_>) -> Vec<Span> {
    let Json::Object(mut trace) = trace else {
        let record = ctx.next_record();
        let position = ctx.record_position(record);
        ctx.skip(1, position, "expected a trace object in \"data\"");
        return Vec::new();
    };
    let trace_id = trace
        .get("traceID")
        .and_then(Json::as_str)
        .map(str::to_owned);
    let processes = match trace.remove("processes") {
        Some(Json::Object(p)) => p,
        _ => serde_json::Map::new(),
    };
    let spans = match trace.remove("spans") {
        Some(Json::Array(s)) => s,
        _ => Vec::new(),
    };
    let mut conv = Converter {
        processes,
        resources: HashMap::new(),
        scopes: HashMap::new(),
    };
    let mut out = Vec::with_capacity(spans.len());
    for span in spans {
        let record = ctx.next_record();
        match conv.span(span, trace_id.as_deref()) {
            Ok(s) => out.push(s),
            Err(reason) => {
                let position = ctx.record_position(record);
                ctx.skip(1, position, reason);
            }
        }
    }
    out
}

struct Converter {
    processes: serde_json::Map<String, Json>,
    resources: HashMap<String, Arc<Resource>>,
    scopes: HashMap<(String, String), Arc<Scope>>,
}

impl Converter {
    fn resource(&mut self, process_id: Option<&str>, inline: Option<&Json>) -> Arc<Resource> {
        if let Some(id) = process_id
            && let Some(r) = self.resources.get(id)
        {
            return r.clone();
        }
        let process = process_id.and_then(|id| self.processes.get(id)).or(inline);
        let mut attrs = Attributes::new();
        if let Some(p) = process {
            if let Some(name) = p.get("serviceName").and_then(Json::as_str) {
                attrs.push("service.name", name);
            }
            for tag in p.get("tags").and_then(Json::as_array).into_iter().flatten() {
                if let Some(kv) = typed_tag(tag) {
                    attrs.0.push(kv);
                }
            }
        }
        let resource = Arc::new(Resource::new(attrs));
        if let Some(id) = process_id
            && inline.is_none()
        {
            self.resources.insert(id.to_owned(), resource.clone());
        }
        resource
    }

    fn scope(&mut self, name: String, version: String) -> Arc<Scope> {
        self.scopes
            .entry((name.clone(), version.clone()))
            .or_insert_with(|| {
                Arc::new(Scope {
                    name,
                    version,
                    attributes: Attributes::new(),
                })
            })
            .clone()
    }

    fn span(&mut self, span: Json, trace_id: Option<&str>) -> Result<Span, String> {
        let Json::Object(o) = span else {
            return Err("expected a span object".to_owned());
        };
        let text = |key: &str| o.get(key).and_then(Json::as_str).map(str::trim);
        let trace_hex = text("traceID").or(trace_id).ok_or("span without traceID")?;
        let trace_id = TraceId::from_hex_padded(trace_hex)
            .map_err(|e| format!("invalid traceID {trace_hex:?}: {e}"))?;
        let id_hex = text("spanID").ok_or("span without spanID")?;
        let span_id = SpanId::from_hex_padded(id_hex)
            .map_err(|e| format!("invalid spanID {id_hex:?}: {e}"))?;

        let mut parent = None;
        let mut links = Vec::new();
        for r in o
            .get("references")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let ref_type = r
                .get("refType")
                .and_then(Json::as_str)
                .unwrap_or("CHILD_OF")
                .to_ascii_uppercase();
            let (Some(t), Some(s)) = (
                r.get("traceID").and_then(Json::as_str),
                r.get("spanID").and_then(Json::as_str),
            ) else {
                continue;
            };
            // A reference to an invalid context carries nothing to follow.
            let (Ok(t), Ok(s)) = (
                TraceId::from_hex_padded(t.trim()),
                SpanId::from_hex_padded(s.trim()),
            ) else {
                continue;
            };
            if parent.is_none() && ref_type == "CHILD_OF" && t == trace_id {
                parent = Some(s);
                continue;
            }
            let mut attributes = Attributes::new();
            attributes.push("opentracing.ref_type", ref_type.to_ascii_lowercase());
            links.push(Link {
                trace_id: t,
                span_id: s,
                attributes,
            });
        }
        if parent.is_none() {
            parent = text("parentSpanID")
                .filter(|p| !p.bytes().all(|b| b == b'0'))
                .and_then(|p| SpanId::from_hex_padded(p).ok());
        }

        let mut attributes = Attributes::new();
        let mut kind = SpanKind::Unspecified;
        let mut status_code = None;
        let mut status_message = String::new();
        let mut error_flag = false;
        let mut trace_state = String::new();
        let (mut scope_name, mut scope_version) = (String::new(), String::new());
        for tag in o.get("tags").and_then(Json::as_array).into_iter().flatten() {
            let Some(kv) = typed_tag(tag) else { continue };
            match kv.key.as_str() {
                "span.kind" => {
                    kind = match kv.value.to_text().to_ascii_lowercase().as_str() {
                        "server" => SpanKind::Server,
                        "client" => SpanKind::Client,
                        "producer" => SpanKind::Producer,
                        "consumer" => SpanKind::Consumer,
                        "internal" => SpanKind::Internal,
                        _ => SpanKind::Unspecified,
                    };
                }
                "otel.status_code" => {
                    status_code = match kv.value.to_text().to_ascii_uppercase().as_str() {
                        "ERROR" | "STATUS_CODE_ERROR" | "2" => Some(StatusCode::Error),
                        "OK" | "STATUS_CODE_OK" | "1" => Some(StatusCode::Ok),
                        _ => Some(StatusCode::Unset),
                    };
                }
                "otel.status_description" => status_message = kv.value.to_text(),
                "w3c.tracestate" => trace_state = kv.value.to_text(),
                "otel.scope.name" | "otel.library.name" => scope_name = kv.value.to_text(),
                "otel.scope.version" | "otel.library.version" => {
                    scope_version = kv.value.to_text();
                }
                _ => {
                    if kv.key == "error" && kv.value.as_bool() == Some(true) {
                        error_flag = true;
                    }
                    attributes.0.push(kv);
                }
            }
        }
        let code = match status_code {
            Some(c) => c,
            None if error_flag => StatusCode::Error,
            None => StatusCode::Unset,
        };

        let events = o
            .get("logs")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .map(log_event)
            .collect();

        let start_ns = o
            .get("startTime")
            .and_then(super::lenient_u64)
            .unwrap_or(0)
            .saturating_mul(1000);
        let end_ns = match o.get("duration").and_then(super::lenient_u64) {
            Some(d) if start_ns > 0 => start_ns.saturating_add(d.saturating_mul(1000)),
            _ => 0,
        };
        let resource = self.resource(text("processID"), o.get("process"));
        let scope = self.scope(scope_name, scope_version);
        Ok(Span {
            trace_id,
            span_id,
            parent_span_id: parent,
            trace_state,
            flags: o
                .get("flags")
                .and_then(super::lenient_u64)
                .map_or(0, |f| (f & 0xff) as u32),
            name: text("operationName").unwrap_or_default().to_owned(),
            kind,
            start_ns,
            end_ns,
            attributes,
            events,
            links,
            status: Status {
                code,
                message: status_message,
            },
            resource,
            scope,
            logs: Vec::new(),
        })
    }
}

fn log_event(log: &Json) -> Event {
    let time_ns = log
        .get("timestamp")
        .and_then(super::lenient_u64)
        .unwrap_or(0)
        .saturating_mul(1000);
    let mut name = None;
    let mut attributes = Attributes::new();
    for field in log
        .get("fields")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let Some(kv) = typed_tag(field) else { continue };
        if kv.key == "event" && name.is_none() {
            name = Some(kv.value.to_text());
        } else {
            attributes.0.push(kv);
        }
    }
    Event {
        time_ns,
        name: name.unwrap_or_else(|| "log".to_owned()),
        attributes,
    }
}

/// A Jaeger tag `{key, type, value}` as a typed attribute. The declared type wins when the value
/// can be read as it; otherwise the JSON value's own type is kept, so nothing is lost.
fn typed_tag(tag: &Json) -> Option<KeyValue> {
    let key = tag.get("key")?.as_str()?.to_owned();
    let ty = tag
        .get("type")
        .and_then(Json::as_str)
        .unwrap_or("string")
        .to_ascii_lowercase();
    let raw = tag.get("value").unwrap_or(&Json::Null);
    let value = match (ty.as_str(), raw) {
        ("bool", Json::String(s)) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
        ("bool", Json::String(s)) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
        ("int64", Json::String(s)) if s.trim().parse::<i64>().is_ok() => {
            Value::Int(s.trim().parse().unwrap_or_default())
        }
        ("float64", Json::String(s)) if s.trim().parse::<f64>().is_ok() => {
            Value::Double(s.trim().parse().unwrap_or_default())
        }
        ("float64", Json::Number(n)) => Value::Double(n.as_f64().unwrap_or_default()),
        ("binary", Json::String(s)) => Value::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .or_else(|_| hex::decode(s.trim()))
                .unwrap_or_else(|_| s.clone().into_bytes()),
        ),
        (_, other) => json_value(other),
    };
    Some(KeyValue { key, value })
}

fn json_value(v: &Json) -> Value {
    match v {
        Json::Null => Value::Empty,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Double(n.as_f64().unwrap_or_default()),
        },
        Json::String(s) => Value::Str(s.clone()),
        other => Value::Str(other.to_string()),
    }
}
