//! The store's binary encoding of spans and resources (the messages of
//! `proto/tracecov/store/v1/store.proto`), and a stable content hash.
//!
//! Trace id, span id and resource are table columns, so a stored span carries only the rest.
//! Decoding is forgiving of what this version did not write (unknown kinds become unspecified)
//! but a row that does not decode at all is a `StoreError::Corrupt`, never a panic.

use std::sync::Arc;

use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::model::{
    Attributes, Event, KeyValue, Link, LogRecord, Resource, Scope, Span, SpanId, SpanKind, Status,
    StatusCode, TraceId, Value,
};

pub(crate) mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("tracecov.store.v1");
}

// Encoding writes the wire format straight from the model: building prost's structs first
// would copy every string of every span (it was a third of the writer's time). Field numbers,
// order and the skipping of proto3 defaults follow what prost generates for `store.proto`, and a
// test holds the two byte-identical, so decoding stays plain prost.

/// The length of a length-delimited field with a body of `len` bytes, key included.
fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_delimited(tag: u32, len: usize, out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

fn put_bytes(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    put_delimited(tag, bytes.len(), out);
    out.extend_from_slice(bytes);
}

/// A proto3 string or bytes field: absent when empty.
fn opt_bytes_len(tag: u32, bytes: &[u8]) -> usize {
    if bytes.is_empty() {
        0
    } else {
        delimited_len(tag, bytes.len())
    }
}

fn put_opt_bytes(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    if !bytes.is_empty() {
        put_bytes(tag, bytes, out);
    }
}

/// A proto3 varint field (int32, int64): absent when zero. Negative numbers are sign-extended
/// to ten bytes, as protobuf specifies for both.
fn opt_varint_len(tag: u32, v: i64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(v as u64)
    }
}

fn put_opt_varint(tag: u32, v: i64, out: &mut Vec<u8>) {
    if v != 0 {
        encode_key(tag, WireType::Varint, out);
        encode_varint(v as u64, out);
    }
}

fn opt_fixed64_len(tag: u32, v: u64) -> usize {
    if v == 0 { 0 } else { key_len(tag) + 8 }
}

fn put_opt_fixed64(tag: u32, v: u64, out: &mut Vec<u8>) {
    if v != 0 {
        encode_key(tag, WireType::SixtyFourBit, out);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// The body of an `AnyValue`. The oneof's field is written even when it holds a default (an
/// empty string, zero), so `Str("")` comes back as `Str("")`, not `Empty`.
fn value_len(v: &Value) -> usize {
    match v {
        Value::Empty => 0,
        Value::Str(s) => delimited_len(1, s.len()),
        Value::Bool(_) => key_len(2) + 1,
        Value::Int(i) => key_len(3) + encoded_len_varint(*i as u64),
        Value::Double(_) => key_len(4) + 8,
        Value::Bytes(b) => delimited_len(5, b.len()),
        Value::Array(items) => delimited_len(6, array_len(items)),
        Value::Map(kvs) => delimited_len(7, attrs_len(1, kvs)),
    }
}

/// The body of an `ArrayValue`.
fn array_len(items: &[Value]) -> usize {
    items.iter().map(|v| delimited_len(1, value_len(v))).sum()
}

fn put_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Empty => {}
        Value::Str(s) => put_bytes(1, s.as_bytes(), out),
        Value::Bool(b) => {
            encode_key(2, WireType::Varint, out);
            out.push(u8::from(*b));
        }
        Value::Int(i) => {
            encode_key(3, WireType::Varint, out);
            encode_varint(*i as u64, out);
        }
        Value::Double(d) => {
            encode_key(4, WireType::SixtyFourBit, out);
            out.extend_from_slice(&d.to_le_bytes());
        }
        Value::Bytes(b) => put_bytes(5, b, out),
        Value::Array(items) => {
            put_delimited(6, array_len(items), out);
            for item in items {
                put_delimited(1, value_len(item), out);
                put_value(item, out);
            }
        }
        Value::Map(kvs) => {
            put_delimited(7, attrs_len(1, kvs), out);
            put_attrs(1, kvs, out);
        }
    }
}

/// The body of a `KeyValue`; its value is always present, as an empty `AnyValue` at least.
fn kv_len(kv: &KeyValue) -> usize {
    opt_bytes_len(1, kv.key.as_bytes()) + delimited_len(2, value_len(&kv.value))
}

/// A repeated `KeyValue` field, all entries.
fn attrs_len(tag: u32, kvs: &[KeyValue]) -> usize {
    kvs.iter().map(|kv| delimited_len(tag, kv_len(kv))).sum()
}

fn put_attrs(tag: u32, kvs: &[KeyValue], out: &mut Vec<u8>) {
    for kv in kvs {
        put_delimited(tag, kv_len(kv), out);
        put_opt_bytes(1, kv.key.as_bytes(), out);
        put_delimited(2, value_len(&kv.value), out);
        put_value(&kv.value, out);
    }
}

fn event_len(e: &Event) -> usize {
    opt_fixed64_len(1, e.time_ns)
        + opt_bytes_len(2, e.name.as_bytes())
        + attrs_len(3, &e.attributes.0)
}

fn link_len(l: &Link) -> usize {
    delimited_len(1, l.trace_id.as_bytes().len())
        + delimited_len(2, l.span_id.as_bytes().len())
        + attrs_len(3, &l.attributes.0)
}

fn scope_len(s: &Scope) -> usize {
    opt_bytes_len(1, s.name.as_bytes())
        + opt_bytes_len(2, s.version.as_bytes())
        + attrs_len(3, &s.attributes.0)
}

/// Appends the encoding of everything of a span except its trace id, span id and resource (a
/// `StoredSpan`) to `out`.
pub(crate) fn encode_span(span: &Span, out: &mut Vec<u8>) {
    let parent: &[u8] = span
        .parent_span_id
        .as_ref()
        .map_or(&[], |p| &p.as_bytes()[..]);
    let events: usize = span
        .events
        .iter()
        .map(|e| delimited_len(9, event_len(e)))
        .sum();
    let links: usize = span
        .links
        .iter()
        .map(|l| delimited_len(10, link_len(l)))
        .sum();
    let scope = scope_len(&span.scope);
    let attrs = attrs_len(8, &span.attributes.0);
    let total = opt_bytes_len(1, parent)
        + opt_bytes_len(2, span.trace_state.as_bytes())
        + if span.flags == 0 { 0 } else { key_len(3) + 4 }
        + opt_bytes_len(4, span.name.as_bytes())
        + opt_varint_len(5, i64::from(span.kind.as_i32()))
        + opt_fixed64_len(6, span.start_ns)
        + opt_fixed64_len(7, span.end_ns)
        + attrs
        + events
        + links
        + opt_varint_len(11, i64::from(span.status.code.as_i32()))
        + opt_bytes_len(12, span.status.message.as_bytes())
        + delimited_len(13, scope);
    out.reserve(total);
    put_opt_bytes(1, parent, out);
    put_opt_bytes(2, span.trace_state.as_bytes(), out);
    if span.flags != 0 {
        encode_key(3, WireType::ThirtyTwoBit, out);
        out.extend_from_slice(&span.flags.to_le_bytes());
    }
    put_opt_bytes(4, span.name.as_bytes(), out);
    put_opt_varint(5, i64::from(span.kind.as_i32()), out);
    put_opt_fixed64(6, span.start_ns, out);
    put_opt_fixed64(7, span.end_ns, out);
    put_attrs(8, &span.attributes.0, out);
    for e in &span.events {
        put_delimited(9, event_len(e), out);
        put_opt_fixed64(1, e.time_ns, out);
        put_opt_bytes(2, e.name.as_bytes(), out);
        put_attrs(3, &e.attributes.0, out);
    }
    for l in &span.links {
        put_delimited(10, link_len(l), out);
        put_bytes(1, l.trace_id.as_bytes(), out);
        put_bytes(2, l.span_id.as_bytes(), out);
        put_attrs(3, &l.attributes.0, out);
    }
    put_opt_varint(11, i64::from(span.status.code.as_i32()), out);
    put_opt_bytes(12, span.status.message.as_bytes(), out);
    put_delimited(13, scope, out);
    put_opt_bytes(1, span.scope.name.as_bytes(), out);
    put_opt_bytes(2, span.scope.version.as_bytes(), out);
    put_attrs(3, &span.scope.attributes.0, out);
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

fn attrs_from_pb(kvs: Vec<pb::KeyValue>) -> Attributes {
    kvs.into_iter()
        .map(|kv| KeyValue {
            key: kv.key,
            value: kv.value.map(value_from_pb).unwrap_or_default(),
        })
        .collect()
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
        logs: Vec::new(),
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

/// Appends the encoding of a log record (a `StoredLog`) to `out`.
pub(crate) fn encode_log(log: &LogRecord, out: &mut Vec<u8>) {
    put_opt_fixed64(1, log.time_ns, out);
    put_opt_varint(2, i64::from(log.severity_number), out);
    put_opt_bytes(3, log.severity_text.as_bytes(), out);
    put_opt_bytes(4, log.body.as_bytes(), out);
    put_attrs(5, &log.attributes.0, out);
}

pub(crate) fn decode_log(bytes: &[u8]) -> Result<LogRecord, CorruptRow> {
    let msg = pb::StoredLog::decode(bytes).map_err(|e| CorruptRow {
        what: "log record",
        reason: e.to_string(),
    })?;
    Ok(LogRecord {
        time_ns: msg.time_ns,
        severity_number: msg.severity_number,
        severity_text: msg.severity_text,
        body: msg.body,
        attributes: attrs_from_pb(msg.attributes),
    })
}

/// Appends the encoding of a resource (a `StoredResource`) to `out`.
pub(crate) fn encode_resource(resource: &Resource, out: &mut Vec<u8>) {
    put_attrs(1, &resource.attributes.0, out);
}

pub(crate) fn decode_resource(bytes: &[u8]) -> Result<Resource, CorruptRow> {
    let msg = pb::StoredResource::decode(bytes).map_err(|e| CorruptRow {
        what: "resource",
        reason: e.to_string(),
    })?;
    Ok(Resource::new(attrs_from_pb(msg.attributes)))
}

/// A 64-bit content hash, persisted as part of a span's key, so it must stay the same across
/// Rust releases, platforms and restarts (std's `DefaultHasher` promises none of that).
///
/// It reads 16 bytes per step and folds each step through a 64×64→128-bit multiply, whose
/// high half depends on every bit of both operands; the running state is also carried around
/// the multiply, so a product that happens to be zero cannot erase what came before. A
/// byte-at-a-time FNV-1a was a tenth of the writer's time on 500-byte spans. This guards
/// against accidental collisions between two different spans with the same ids, nothing more:
/// it is not meant to resist anyone crafting collisions (who could only hide their own spans).
pub(crate) fn content_hash(bytes: &[u8]) -> u64 {
    // Odd constants from the fractional digits of the golden ratio, pi and e.
    const K0: u64 = 0x9e37_79b9_7f4a_7c15;
    const K1: u64 = 0x243f_6a88_85a3_08d3;
    const K2: u64 = 0xb7e1_5162_8aed_2a6b;

    fn fold(a: u64, b: u64) -> u64 {
        let p = u128::from(a) * u128::from(b);
        (p as u64) ^ ((p >> 64) as u64)
    }
    fn word(b: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        w[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(w)
    }

    let mut h = K0 ^ (bytes.len() as u64).wrapping_mul(K1);
    let mut chunks = bytes.chunks_exact(16);
    for c in &mut chunks {
        let (a, b) = c.split_at(8);
        h = fold(word(a) ^ K1, word(b) ^ h) ^ h.rotate_left(23);
    }
    // The tail (0 to 15 bytes), zero-padded; the length mixed in above tells paddings apart.
    let rest = chunks.remainder();
    let (a, b) = rest.split_at(rest.len().min(8));
    h = fold(word(a) ^ K2, word(b) ^ h) ^ h.rotate_left(23);
    fold(h ^ K0, K2)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The reference encoder: the spans converted to prost's generated structs, the way this
    // module encoded them before writing the wire format directly.

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

    fn attrs_to_pb(kvs: &[KeyValue]) -> Vec<pb::KeyValue> {
        kvs.iter()
            .map(|kv| pb::KeyValue {
                key: kv.key.clone(),
                value: Some(value_to_pb(&kv.value)),
            })
            .collect()
    }

    fn reference_encoding(span: &Span) -> Vec<u8> {
        pb::StoredSpan {
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
        }
        .encode_to_vec()
    }

    /// A span using every field, with values at the edges of their encodings.
    fn everything_span() -> Span {
        let t = TraceId::from_hex("0102030405060708090a0b0c0d0e0f10").unwrap();
        let s = SpanId::from_hex("0102030405060708").unwrap();
        let mut span = Span::new(t, s, "GET /cart");
        span.parent_span_id = Some(SpanId::from_hex("1111111111111111").unwrap());
        span.trace_state = "vendor=1".into();
        span.flags = 0x0301;
        span.kind = SpanKind::Consumer;
        span.start_ns = 1;
        span.end_ns = u64::MAX;
        let long = "x".repeat(300);
        span.attributes = Attributes(vec![
            KeyValue::new("empty.string", ""),
            KeyValue::new("", "empty key"),
            KeyValue::new("zero", 0),
            KeyValue::new("negative", -5),
            KeyValue::new("false", false),
            KeyValue {
                key: "nothing".into(),
                value: Value::Empty,
            },
            KeyValue {
                key: "double.zero".into(),
                value: Value::Double(0.0),
            },
            KeyValue {
                key: "bytes".into(),
                value: Value::Bytes(vec![0, 1, 2]),
            },
            KeyValue::new("long", long.as_str()),
            KeyValue {
                key: "nested".into(),
                value: Value::Array(vec![
                    Value::Empty,
                    Value::Str(String::new()),
                    Value::Array(vec![Value::Int(i64::MIN), Value::Str(long.clone())]),
                    Value::Map(vec![KeyValue::new("k", true)]),
                ]),
            },
            KeyValue {
                key: "map".into(),
                value: Value::Map(vec![]),
            },
        ]);
        span.events.push(Event {
            time_ns: 0,
            name: String::new(),
            attributes: Attributes::new(),
        });
        span.events.push(Event {
            time_ns: 15,
            name: "exception".into(),
            attributes: Attributes(vec![KeyValue::new("exception.type", "E")]),
        });
        span.links.push(Link {
            trace_id: t,
            span_id: s,
            attributes: Attributes(vec![KeyValue::new("link", 1)]),
        });
        span.status = Status {
            code: StatusCode::Error,
            message: "boom".into(),
        };
        span.scope = Arc::new(Scope {
            name: "lib".into(),
            version: "1.0".into(),
            attributes: Attributes(vec![KeyValue::new("scope.attr", 2)]),
        });
        span
    }

    #[test]
    fn direct_encoding_is_byte_identical_to_prost() {
        let full = everything_span();
        let t = full.trace_id;
        let minimal = Span::new(t, full.span_id, "");
        let mut unset = full.clone();
        unset.status = Status::default();
        unset.kind = SpanKind::Unspecified;
        unset.scope = Arc::new(Scope::default());
        for span in [&full, &minimal, &unset] {
            let mut direct = Vec::new();
            encode_span(span, &mut direct);
            assert_eq!(direct, reference_encoding(span), "span {:?}", span.name);
            let back = decode_span(
                span.trace_id,
                span.span_id,
                span.resource.clone(),
                &direct,
                &mut ScopeCache::default(),
            )
            .unwrap();
            assert_eq!(&back, span);
        }
        let mut direct = Vec::new();
        encode_resource(&Resource::new(full.attributes.clone()), &mut direct);
        let reference = pb::StoredResource {
            attributes: attrs_to_pb(&full.attributes.0),
        }
        .encode_to_vec();
        assert_eq!(direct, reference);
    }

    const PINNED_TRACECOV: u64 = 0xad7d_2979_0de8_b23f;
    const PINNED_0_TO_40: u64 = 0x2ba2_d302_f501_6c2d;

    #[test]
    fn content_hash_is_stable_and_length_aware() {
        // Persisted in span keys: these values must never change. A change here means stored
        // re-deliveries would no longer be recognised.
        assert_eq!(content_hash(b""), content_hash(b""));
        assert_eq!(
            content_hash(b"tracecov"),
            PINNED_TRACECOV,
            "{:#x}",
            content_hash(b"tracecov")
        );
        let data: Vec<u8> = (0..64u8).collect();
        // Also through the 16-byte steps.
        assert_eq!(
            content_hash(&data[..40]),
            PINNED_0_TO_40,
            "{:#x}",
            content_hash(&data[..40])
        );
        let mut seen = std::collections::HashSet::new();
        for len in 0..=data.len() {
            assert!(seen.insert(content_hash(&data[..len])), "length {len}");
        }
        // Zero padding of the tail must not make lengths collide.
        assert_ne!(content_hash(b"a"), content_hash(b"a\0"));
        assert_ne!(content_hash(&[0; 16]), content_hash(&[0; 17]));
        // Every single-bit change of a span-sized input changes the hash.
        let base = vec![0x5a; 500];
        let h = content_hash(&base);
        for i in 0..base.len() * 8 {
            let mut flipped = base.clone();
            flipped[i / 8] ^= 1 << (i % 8);
            assert_ne!(content_hash(&flipped), h, "bit {i}");
        }
    }

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
