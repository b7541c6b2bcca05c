//! The store's binary encoding of spans and resources (the messages of
//! `proto/tracecov/store/v1/store.proto`), and a stable content hash.
//!
//! Trace id, span id and resource are table columns, so a stored span carries only the rest.
//! Decoding is forgiving of what this version did not write (unknown kinds become unspecified)
//! but a row that does not decode at all is a `StoreError::Corrupt`, never a panic.

use std::sync::Arc;

use prost::Message;

use crate::model::{
    Attributes, Event, KeyValue, Link, Resource, Scope, Span, SpanId, SpanKind, Status, StatusCode,
    TraceId, Value,
};

pub(crate) mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("tracecov.store.v1");
}

fn value_to_pb(v: &Value) -> pb::AnyValue {
    use pb::any_value::Value as V;
    let value = match v {
        Value::Empty => None,
        Value::Str(s) => Some(V::StringValue(s.clone())),
        Value::Bool(b) => Some(V::BoolValue(*b)),
        Value::Int(i) => Some(V::IntValue(*i)),
        Value::Double(d) => Some(V::DoubleValue(*d)),
        Value::Bytes(b) => Some(V::BytesValue(b.clone())),
        Value::Array(items) => Some(V::ArrayValue(pb::ArrayValue {
            values: items.iter().map(value_to_pb).collect(),
        })),
        Value::Map(kvs) => Some(V::MapValue(pb::KeyValueList {
            values: attrs_to_pb(kvs),
        })),
    };
    pb::AnyValue { value }
}

fn value_from_pb(v: pb::AnyValue) -> Value {
    use pb::any_value::Value as V;
    match v.value {
        None => Value::Empty,
        Some(V::StringValue(s)) => Value::Str(s),
        Some(V::BoolValue(b)) => Value::Bool(b),
        Some(V::IntValue(i)) => Value::Int(i),
        Some(V::DoubleValue(d)) => Value::Double(d),
        Some(V::BytesValue(b)) => Value::Bytes(b),
        Some(V::ArrayValue(a)) => Value::Array(a.values.into_iter().map(value_from_pb).collect()),
        Some(V::MapValue(m)) => Value::Map(attrs_from_pb(m.values).0),
    }
}

fn attrs_to_pb(kvs: &[KeyValue]) -> Vec<pb::KeyValue> {
    kvs.iter()
        .map(|kv| pb::KeyValue {
            key: kv.key.clone(),
            value: Some(value_to_pb(&kv.value)),
        })
        .collect()
}

fn attrs_from_pb(kvs: Vec<pb::KeyValue>) -> Attributes {
    kvs.into_iter()
        .map(|kv| KeyValue {
            key: kv.key,
            value: kv.value.map(value_from_pb).unwrap_or_default(),
        })
        .collect()
}

/// Encodes everything of a span except its trace id, span id and resource.
pub(crate) fn encode_span(span: &Span, out: &mut Vec<u8>) {
    let msg = pb::StoredSpan {
        parent_span_id: span
            .parent_span_id
            .map(|p| p.as_bytes().to_vec())
            .unwrap_or_default(),
        trace_state: span.trace_state.clone(),
        flags: span.flags,
        name: span.name.clone(),
        kind: span.kind.as_i32(),
        start_ns: span.start_ns,
        end_ns: span.end_ns,
        attributes: attrs_to_pb(&span.attributes.0),
        events: span
            .events
            .iter()
            .map(|e| pb::Event {
                time_ns: e.time_ns,
                name: e.name.clone(),
                attributes: attrs_to_pb(&e.attributes.0),
            })
            .collect(),
        links: span
            .links
            .iter()
            .map(|l| pb::Link {
                trace_id: l.trace_id.as_bytes().to_vec(),
                span_id: l.span_id.as_bytes().to_vec(),
                attributes: attrs_to_pb(&l.attributes.0),
            })
            .collect(),
        status_code: span.status.code.as_i32(),
        status_message: span.status.message.clone(),
        scope: Some(pb::Scope {
            name: span.scope.name.clone(),
            version: span.scope.version.clone(),
            attributes: attrs_to_pb(&span.scope.attributes.0),
        }),
    };
    out.clear();
    out.reserve(msg.encoded_len());
    // Encoding into a Vec cannot run out of space.
    let _ = msg.encode(out);
}

/// Why a stored row could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("stored span {what}: {reason}")]
pub struct CorruptRow {
    pub what: &'static str,
    pub reason: String,
}

pub(crate) fn decode_span(
    trace_id: TraceId,
    span_id: SpanId,
    resource: Arc<Resource>,
    bytes: &[u8],
    scopes: &mut ScopeCache,
) -> Result<Span, CorruptRow> {
    let msg = pb::StoredSpan::decode(bytes).map_err(|e| CorruptRow {
        what: "body",
        reason: e.to_string(),
    })?;
    let parent_span_id = if msg.parent_span_id.is_empty() {
        None
    } else {
        Some(
            SpanId::from_slice(&msg.parent_span_id).map_err(|e| CorruptRow {
                what: "parent id",
                reason: e.to_string(),
            })?,
        )
    };
    let mut links = Vec::with_capacity(msg.links.len());
    for l in msg.links {
        // A link whose ids were valid at ingest stays valid; skip rather than fail on the odd one.
        if let (Ok(t), Ok(s)) = (
            TraceId::from_slice(&l.trace_id),
            SpanId::from_slice(&l.span_id),
        ) {
            links.push(Link {
                trace_id: t,
                span_id: s,
                attributes: attrs_from_pb(l.attributes),
            });
        }
    }
    let scope = scopes.get(msg.scope.unwrap_or_default());
    Ok(Span {
        trace_id,
        span_id,
        parent_span_id,
        trace_state: msg.trace_state,
        flags: msg.flags,
        name: msg.name,
        kind: SpanKind::from_i32(msg.kind),
        start_ns: msg.start_ns,
        end_ns: msg.end_ns,
        attributes: attrs_from_pb(msg.attributes),
        events: msg
            .events
            .into_iter()
            .map(|e| Event {
                time_ns: e.time_ns,
                name: e.name,
                attributes: attrs_from_pb(e.attributes),
            })
            .collect(),
        links,
        status: Status {
            code: StatusCode::from_i32(msg.status_code),
            message: msg.status_message,
        },
        resource,
        scope,
    })
}

/// Shares one `Arc<Scope>` between the spans of a read that name the same scope.
#[derive(Default)]
pub(crate) struct ScopeCache(Vec<Arc<Scope>>);

impl ScopeCache {
    fn get(&mut self, pb: pb::Scope) -> Arc<Scope> {
        let scope = Scope {
            name: pb.name,
            version: pb.version,
            attributes: attrs_from_pb(pb.attributes),
        };
        if let Some(found) = self.0.iter().find(|s| ***s == scope) {
            return found.clone();
        }
        let arc = Arc::new(scope);
        self.0.push(arc.clone());
        arc
    }
}

pub(crate) fn encode_resource(resource: &Resource) -> Vec<u8> {
    pb::StoredResource {
        attributes: attrs_to_pb(&resource.attributes.0),
    }
    .encode_to_vec()
}

pub(crate) fn decode_resource(bytes: &[u8]) -> Result<Resource, CorruptRow> {
    let msg = pb::StoredResource::decode(bytes).map_err(|e| CorruptRow {
        what: "resource",
        reason: e.to_string(),
    })?;
    Ok(Resource::new(attrs_from_pb(msg.attributes)))
}

/// FNV-1a, 64 bits: a content hash that must stay the same across Rust releases and restarts
/// (it is persisted), which std's `DefaultHasher` does not promise.
pub(crate) fn content_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_round_trips_through_the_store_encoding() {
        let t = TraceId::from_hex("0102030405060708090a0b0c0d0e0f10").unwrap();
        let s = SpanId::from_hex("0102030405060708").unwrap();
        let mut attrs = Attributes::new();
        attrs.push("http.response.status_code", 500);
        attrs.push(
            "list",
            Value::Array(vec![Value::Bool(true), Value::Double(1.5)]),
        );
        let resource = Arc::new(Resource::new(Attributes(vec![KeyValue::new(
            "service.name",
            "cart",
        )])));
        let mut span = Span::new(t, s, "GET /cart");
        span.parent_span_id = Some(SpanId::from_hex("1111111111111111").unwrap());
        span.kind = SpanKind::Server;
        span.start_ns = 10;
        span.end_ns = 20;
        span.attributes = attrs;
        span.status = Status {
            code: StatusCode::Error,
            message: "boom".into(),
        };
        span.events.push(Event {
            time_ns: 15,
            name: "exception".into(),
            attributes: Attributes(vec![KeyValue::new("exception.type", "E")]),
        });
        span.links.push(Link {
            trace_id: t,
            span_id: s,
            attributes: Attributes::new(),
        });
        span.resource = resource.clone();
        let mut buf = Vec::new();
        encode_span(&span, &mut buf);
        let back = decode_span(t, s, resource, &buf, &mut ScopeCache::default()).unwrap();
        assert_eq!(back, span);
    }

    #[test]
    fn garbage_row_is_an_error_not_a_panic() {
        let t = TraceId::from_hex("0102030405060708090a0b0c0d0e0f10").unwrap();
        let s = SpanId::from_hex("0102030405060708").unwrap();
        let r = decode_span(
            t,
            s,
            Arc::new(Resource::default()),
            &[0xff, 0xff, 0xff],
            &mut ScopeCache::default(),
        );
        assert!(r.is_err());
    }
}
