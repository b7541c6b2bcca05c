//! The project's own span: what every module after ingest works with.
//!
//! A key design decision: wire formats (OTLP protobuf, OTLP/JSON, Zipkin, Jaeger) are converted
//! into these types at the edge and never travel further, so analysis has one shape to reason
//! about. The resource and instrumentation scope are shared behind `Arc`s because one export
//! usually carries one resource for hundreds of spans.

use std::sync::Arc;

use super::ids::{SpanId, TraceId};

/// The role a span plays in a call, as OTLP defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum SpanKind {
    #[default]
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    /// The OTLP enum number.
    pub fn as_i32(self) -> i32 {
        match self {
            SpanKind::Unspecified => 0,
            SpanKind::Internal => 1,
            SpanKind::Server => 2,
            SpanKind::Client => 3,
            SpanKind::Producer => 4,
            SpanKind::Consumer => 5,
        }
    }

    /// From the OTLP enum number; unknown numbers become `Unspecified` (real data has them).
    pub fn from_i32(v: i32) -> Self {
        match v {
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Unspecified => "unspecified",
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }
}

/// Span status code, as OTLP defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StatusCode {
    #[default]
    Unset,
    Ok,
    Error,
}

impl StatusCode {
    pub fn as_i32(self) -> i32 {
        match self {
            StatusCode::Unset => 0,
            StatusCode::Ok => 1,
            StatusCode::Error => 2,
        }
    }

    pub fn from_i32(v: i32) -> Self {
        match v {
            1 => StatusCode::Ok,
            2 => StatusCode::Error,
            _ => StatusCode::Unset,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StatusCode::Unset => "unset",
            StatusCode::Ok => "ok",
            StatusCode::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Status {
    pub code: StatusCode,
    pub message: String,
}

/// An attribute value. `Empty` is OTLP's AnyValue with nothing set, which the specification allows.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    #[default]
    Empty,
    Str(String),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<KeyValue>),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// An integer, also when it arrived as a decimal string (`"504"`): producers disagree on the
    /// type of status codes and ports, and both must be read.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Double(d) if d.fract() == 0.0 && d.is_finite() => Some(*d as i64),
            Value::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            Value::Str(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Value::Str(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }

    /// The value as display text (arrays and maps in a compact JSON-like form).
    pub fn to_text(&self) -> String {
        match self {
            Value::Empty => String::new(),
            Value::Str(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Double(d) => d.to_string(),
            Value::Bytes(b) => hex::encode(b),
            Value::Array(items) => {
                let inner: Vec<String> = items.iter().map(Value::to_text).collect();
                format!("[{}]", inner.join(", "))
            }
            Value::Map(kvs) => {
                let inner: Vec<String> = kvs
                    .iter()
                    .map(|kv| format!("{}: {}", kv.key, kv.value.to_text()))
                    .collect();
                format!("{{{}}}", inner.join(", "))
            }
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyValue {
    pub key: String,
    pub value: Value,
}

impl KeyValue {
    pub fn new(key: impl Into<String>, value: impl Into<Value>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// An ordered attribute list. Spans carry a handful of attributes, so a linear scan beats a map
/// in both speed and memory; the first occurrence of a key wins, as in OTLP.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Attributes(pub Vec<KeyValue>);

impl Attributes {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
    }

    /// A non-empty string value.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The first of `keys` that holds a non-empty string: current semantic-convention names
    /// first, legacy names after.
    pub fn first_str(&self, keys: &[&str]) -> Option<&str> {
        keys.iter().find_map(|k| self.str(k))
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        self.get(key).and_then(Value::as_i64)
    }

    pub fn first_int(&self, keys: &[&str]) -> Option<i64> {
        keys.iter().find_map(|k| self.int(k))
    }

    pub fn push(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        self.0.push(KeyValue::new(key, value));
    }

    pub fn iter(&self) -> impl Iterator<Item = &KeyValue> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<KeyValue> for Attributes {
    fn from_iter<T: IntoIterator<Item = KeyValue>>(iter: T) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// The entity that produced spans: a service instance.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resource {
    pub attributes: Attributes,
    /// The service node id of DESIGN's grammar (`name`, or `namespace/name`), derived once here
    /// because every hop asks for it.
    service: String,
}

/// The name OTLP SDKs give a resource that set no `service.name`.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

impl Resource {
    pub fn new(attributes: Attributes) -> Self {
        let name = attributes.str("service.name").unwrap_or(UNKNOWN_SERVICE);
        let service = match attributes.str("service.namespace") {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_owned(),
        };
        Self {
            attributes,
            service,
        }
    }

    /// The service node id: `service.name`, as `namespace/name` when `service.namespace` is set.
    pub fn service(&self) -> &str {
        &self.service
    }
}

/// The instrumentation library that recorded a span.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scope {
    pub name: String,
    pub version: String,
    pub attributes: Attributes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time_ns: u64,
    pub name: String,
    pub attributes: Attributes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub attributes: Attributes,
}

/// A log record that carries a span's trace and span id (OTLP logs): evidence on that span
/// (DESIGN's "Evidence from logs"). Stored apart from the span and attached when its trace is
/// read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogRecord {
    /// When the event happened (`time_unix_nano`, else `observed_time_unix_nano`).
    pub time_ns: u64,
    /// OTLP's severity number (1–24; 17 and above are ERROR and FATAL; 0 unspecified).
    pub severity_number: i32,
    pub severity_text: String,
    /// The body: a string as is, any other value in its text form.
    pub body: String,
    pub attributes: Attributes,
}

impl LogRecord {
    /// OTLP's `SEVERITY_NUMBER_ERROR`: this and above are errors.
    pub const ERROR: i32 = 17;

    /// Whether the record is evidence of an error: severity ERROR or above, or an exception
    /// (`exception.type` / `exception.message`).
    pub fn is_error_evidence(&self) -> bool {
        self.severity_number >= Self::ERROR
            || self.attributes.get("exception.type").is_some()
            || self.attributes.get("exception.message").is_some()
    }

    /// The severity as people read it: the producer's text, else the name of its number's range.
    pub fn severity(&self) -> String {
        if !self.severity_text.trim().is_empty() {
            return self.severity_text.trim().to_owned();
        }
        match self.severity_number {
            1..=4 => "TRACE",
            5..=8 => "DEBUG",
            9..=12 => "INFO",
            13..=16 => "WARN",
            17..=20 => "ERROR",
            21..=24 => "FATAL",
            _ => "UNSPECIFIED",
        }
        .to_owned()
    }
}

/// A log record as received: with the trace it belongs to and, when it names one, its span.
#[derive(Debug, Clone, PartialEq)]
pub struct TracedLog {
    pub trace_id: TraceId,
    pub span_id: Option<SpanId>,
    pub record: LogRecord,
}

/// One span, normalized. Times are Unix nanoseconds; `end_ns` is 0 when the producer never ended
/// the span (analysis treats that as a missing end, not as a negative duration).
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub trace_state: String,
    pub flags: u32,
    pub name: String,
    pub kind: SpanKind,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: Attributes,
    pub events: Vec<Event>,
    pub links: Vec<Link>,
    pub status: Status,
    pub resource: Arc<Resource>,
    pub scope: Arc<Scope>,
    /// The log records that carry this span's ids, by time: not part of the span's stored
    /// encoding, attached when its trace is read (`store::Reader::trace`).
    pub logs: Vec<LogRecord>,
}

impl Span {
    /// The service node id of the resource that produced this span.
    pub fn service(&self) -> &str {
        self.resource.service()
    }

    /// Duration in nanoseconds; 0 when the end is missing or before the start.
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    /// A minimal span, for tests and importers that fill in the rest field by field.
    pub fn new(trace_id: TraceId, span_id: SpanId, name: impl Into<String>) -> Self {
        Self {
            trace_id,
            span_id,
            parent_span_id: None,
            trace_state: String::new(),
            flags: 0,
            name: name.into(),
            kind: SpanKind::Unspecified,
            start_ns: 0,
            end_ns: 0,
            attributes: Attributes::new(),
            events: Vec::new(),
            links: Vec::new(),
            status: Status::default(),
            resource: Arc::new(Resource::default()),
            scope: Arc::new(Scope::default()),
            logs: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_id_uses_namespace_when_set() {
        let mut attrs = Attributes::new();
        attrs.push("service.name", "cart");
        assert_eq!(Resource::new(attrs.clone()).service(), "cart");
        attrs.push("service.namespace", "shop");
        assert_eq!(Resource::new(attrs).service(), "shop/cart");
        assert_eq!(Resource::new(Attributes::new()).service(), UNKNOWN_SERVICE);
    }

    #[test]
    fn integers_read_from_strings_too() {
        assert_eq!(Value::from("504").as_i64(), Some(504));
        assert_eq!(Value::Int(200).as_i64(), Some(200));
        assert_eq!(Value::from("OK").as_i64(), None);
    }
}
