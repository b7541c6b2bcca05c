//! OTLP/JSON → OTLP protobuf types, so both encodings share one conversion into `Span`.
//!
//! A key design decision: we decode with our own tolerant DTOs rather than the `with-serde`
//! derives of `opentelemetry-proto`, because real producers send what those derives refuse: enum
//! names (`"SPAN_KIND_SERVER"`) as well as integers, 64-bit integers as numbers or as strings, and
//! upper-case hex ids (the specification's own example does). Unknown fields are ignored, as the
//! OTLP/JSON specification requires; snake_case field names are accepted as protobuf's JSON
//! mapping allows.
//!
//! The importer of OTLP/JSON files uses the same entry points.

use base64::Engine as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1 as common;
use opentelemetry_proto::tonic::resource::v1 as resource;
use opentelemetry_proto::tonic::trace::v1 as trace;
use serde::Deserialize;
use serde::de::{self, Deserializer};

/// Parses one OTLP/JSON `ExportTraceServiceRequest`.
pub fn decode_request(bytes: &[u8]) -> Result<ExportTraceServiceRequest, serde_json::Error> {
    let req: JRequest = serde_json::from_slice(bytes)?;
    Ok(req.into_proto())
}

/// Parses one request from an already-parsed JSON value (for JSON-lines and streamed files).
pub fn decode_value(
    value: serde_json::Value,
) -> Result<ExportTraceServiceRequest, serde_json::Error> {
    let req: JRequest = serde_json::from_value(value)?;
    Ok(req.into_proto())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JRequest {
    #[serde(alias = "resource_spans")]
    resource_spans: Vec<JResourceSpans>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JResourceSpans {
    resource: Option<JResource>,
    #[serde(alias = "scope_spans", alias = "instrumentationLibrarySpans")]
    scope_spans: Vec<JScopeSpans>,
    #[serde(alias = "schema_url")]
    schema_url: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JResource {
    attributes: Vec<JKeyValue>,
    #[serde(alias = "dropped_attributes_count")]
    dropped_attributes_count: JU64,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JScopeSpans {
    #[serde(alias = "instrumentationLibrary")]
    scope: Option<JScope>,
    spans: Vec<JSpan>,
    #[serde(alias = "schema_url")]
    schema_url: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JScope {
    name: String,
    version: String,
    attributes: Vec<JKeyValue>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JSpan {
    #[serde(alias = "trace_id")]
    trace_id: JHex,
    #[serde(alias = "span_id")]
    span_id: JHex,
    #[serde(alias = "trace_state")]
    trace_state: String,
    #[serde(alias = "parent_span_id")]
    parent_span_id: JHex,
    flags: JU64,
    name: String,
    kind: JSpanKind,
    #[serde(alias = "start_time_unix_nano")]
    start_time_unix_nano: JU64,
    #[serde(alias = "end_time_unix_nano")]
    end_time_unix_nano: JU64,
    attributes: Vec<JKeyValue>,
    events: Vec<JEvent>,
    links: Vec<JLink>,
    status: Option<JStatus>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JEvent {
    #[serde(alias = "time_unix_nano")]
    time_unix_nano: JU64,
    name: String,
    attributes: Vec<JKeyValue>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JLink {
    #[serde(alias = "trace_id")]
    trace_id: JHex,
    #[serde(alias = "span_id")]
    span_id: JHex,
    #[serde(alias = "trace_state")]
    trace_state: String,
    attributes: Vec<JKeyValue>,
    flags: JU64,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JStatus {
    message: String,
    code: JStatusCode,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JKeyValue {
    key: String,
    value: Option<JAnyValue>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JAnyValue {
    #[serde(alias = "string_value")]
    string_value: Option<String>,
    #[serde(alias = "bool_value")]
    bool_value: Option<bool>,
    #[serde(alias = "int_value")]
    int_value: Option<JI64>,
    #[serde(alias = "double_value")]
    double_value: Option<JF64>,
    #[serde(alias = "array_value")]
    array_value: Option<JArray>,
    #[serde(alias = "kvlist_value")]
    kvlist_value: Option<JKvList>,
    #[serde(alias = "bytes_value")]
    bytes_value: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JArray {
    values: Vec<JAnyValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JKvList {
    values: Vec<JKeyValue>,
}

/// A hex id. Text that is not hex becomes an empty id, which conversion then rejects as invalid
/// (a partial success naming the span), rather than failing the whole request.
#[derive(Default)]
struct JHex(Vec<u8>);

impl<'de> Deserialize<'de> for JHex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        Ok(JHex(hex::decode(s.trim()).unwrap_or_default()))
    }
}

/// An unsigned 64-bit integer given as a JSON number or a decimal string.
#[derive(Default, Clone, Copy)]
struct JU64(u64);

impl<'de> Deserialize<'de> for JU64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrString::deserialize(d)? {
            NumOrString::U(u) => Ok(JU64(u)),
            NumOrString::I(i) => u64::try_from(i)
                .map(JU64)
                .map_err(|_| de::Error::custom(format!("expected an unsigned integer, got {i}"))),
            NumOrString::F(f) if f >= 0.0 && f.fract() == 0.0 && f < 1.9e19 => Ok(JU64(f as u64)),
            NumOrString::F(f) => Err(de::Error::custom(format!(
                "expected an unsigned integer, got {f}"
            ))),
            NumOrString::S(s) => {
                s.trim().parse().map(JU64).map_err(|_| {
                    de::Error::custom(format!("expected an unsigned integer, got {s:?}"))
                })
            }
            NumOrString::Null => Ok(JU64(0)),
        }
    }
}

/// A signed 64-bit integer given as a JSON number or a decimal string.
struct JI64(i64);

impl<'de> Deserialize<'de> for JI64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrString::deserialize(d)? {
            NumOrString::U(u) => i64::try_from(u)
                .map(JI64)
                .map_err(|_| de::Error::custom(format!("integer out of range: {u}"))),
            NumOrString::I(i) => Ok(JI64(i)),
            NumOrString::F(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(JI64(f as i64)),
            NumOrString::F(f) => Err(de::Error::custom(format!("expected an integer, got {f}"))),
            NumOrString::S(s) => s
                .trim()
                .parse()
                .map(JI64)
                .map_err(|_| de::Error::custom(format!("expected an integer, got {s:?}"))),
            NumOrString::Null => Ok(JI64(0)),
        }
    }
}

/// A double given as a JSON number or as a string (`"NaN"`, `"Infinity"` in protobuf's mapping).
struct JF64(f64);

impl<'de> Deserialize<'de> for JF64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrString::deserialize(d)? {
            NumOrString::U(u) => Ok(JF64(u as f64)),
            NumOrString::I(i) => Ok(JF64(i as f64)),
            NumOrString::F(f) => Ok(JF64(f)),
            NumOrString::S(s) => s
                .trim()
                .parse()
                .map(JF64)
                .map_err(|_| de::Error::custom(format!("expected a number, got {s:?}"))),
            NumOrString::Null => Ok(JF64(0.0)),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrString {
    U(u64),
    I(i64),
    F(f64),
    S(String),
    Null,
}

/// An enum given as its number or its name, with or without the `SPAN_KIND_` prefix, any case.
fn enum_value<'de, D: Deserializer<'de>>(
    d: D,
    prefix: &str,
    names: &[&str],
) -> Result<i32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrName {
        N(i64),
        S(String),
        Null,
    }
    match NumOrName::deserialize(d)? {
        NumOrName::N(n) => {
            i32::try_from(n).map_err(|_| de::Error::custom(format!("enum value out of range: {n}")))
        }
        NumOrName::Null => Ok(0),
        NumOrName::S(s) => {
            let upper = s.trim().to_ascii_uppercase();
            if let Ok(n) = upper.parse::<i32>() {
                return Ok(n);
            }
            let bare = upper.strip_prefix(prefix).unwrap_or(&upper);
            names
                .iter()
                .position(|n| *n == bare)
                .map(|i| i as i32)
                .ok_or_else(|| de::Error::custom(format!("unknown enum name {s:?}")))
        }
    }
}

#[derive(Default)]
struct JSpanKind(i32);

impl<'de> Deserialize<'de> for JSpanKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        enum_value(
            d,
            "SPAN_KIND_",
            &[
                "UNSPECIFIED",
                "INTERNAL",
                "SERVER",
                "CLIENT",
                "PRODUCER",
                "CONSUMER",
            ],
        )
        .map(JSpanKind)
    }
}

#[derive(Default)]
struct JStatusCode(i32);

impl<'de> Deserialize<'de> for JStatusCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        enum_value(d, "STATUS_CODE_", &["UNSET", "OK", "ERROR"]).map(JStatusCode)
    }
}

fn kvs(list: Vec<JKeyValue>) -> Vec<common::KeyValue> {
    list.into_iter()
        .map(|kv| common::KeyValue {
            key: kv.key,
            value: kv.value.map(any),
            key_strindex: 0,
        })
        .collect()
}

fn any(v: JAnyValue) -> common::AnyValue {
    use common::any_value::Value as V;
    let value = if let Some(s) = v.string_value {
        Some(V::StringValue(s))
    } else if let Some(b) = v.bool_value {
        Some(V::BoolValue(b))
    } else if let Some(i) = v.int_value {
        Some(V::IntValue(i.0))
    } else if let Some(d) = v.double_value {
        Some(V::DoubleValue(d.0))
    } else if let Some(a) = v.array_value {
        Some(V::ArrayValue(common::ArrayValue {
            values: a.values.into_iter().map(any).collect(),
        }))
    } else if let Some(kv) = v.kvlist_value {
        Some(V::KvlistValue(common::KeyValueList {
            values: kvs(kv.values),
        }))
    } else {
        // Undecodable base64 keeps the text's bytes rather than losing the attribute.
        v.bytes_value.map(|b| {
            V::BytesValue(
                base64::engine::general_purpose::STANDARD
                    .decode(b.as_bytes())
                    .unwrap_or_else(|_| b.into_bytes()),
            )
        })
    };
    common::AnyValue { value }
}

impl JResource {
    fn into_proto(self) -> resource::Resource {
        resource::Resource {
            attributes: kvs(self.attributes),
            dropped_attributes_count: self.dropped_attributes_count.0 as u32,
            entity_refs: Vec::new(),
        }
    }
}

impl JRequest {
    fn into_proto(self) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: self
                .resource_spans
                .into_iter()
                .map(|rs| trace::ResourceSpans {
                    resource: rs.resource.map(JResource::into_proto),
                    scope_spans: rs
                        .scope_spans
                        .into_iter()
                        .map(|ss| trace::ScopeSpans {
                            scope: ss.scope.map(|s| common::InstrumentationScope {
                                name: s.name,
                                version: s.version,
                                attributes: kvs(s.attributes),
                                dropped_attributes_count: 0,
                            }),
                            spans: ss.spans.into_iter().map(span).collect(),
                            schema_url: ss.schema_url,
                        })
                        .collect(),
                    schema_url: rs.schema_url,
                })
                .collect(),
        }
    }
}

fn span(s: JSpan) -> trace::Span {
    trace::Span {
        trace_id: s.trace_id.0,
        span_id: s.span_id.0,
        trace_state: s.trace_state,
        parent_span_id: s.parent_span_id.0,
        flags: s.flags.0 as u32,
        name: s.name,
        kind: s.kind.0,
        start_time_unix_nano: s.start_time_unix_nano.0,
        end_time_unix_nano: s.end_time_unix_nano.0,
        attributes: kvs(s.attributes),
        dropped_attributes_count: 0,
        events: s
            .events
            .into_iter()
            .map(|e| trace::span::Event {
                time_unix_nano: e.time_unix_nano.0,
                name: e.name,
                attributes: kvs(e.attributes),
                dropped_attributes_count: 0,
            })
            .collect(),
        dropped_events_count: 0,
        links: s
            .links
            .into_iter()
            .map(|l| trace::span::Link {
                trace_id: l.trace_id.0,
                span_id: l.span_id.0,
                trace_state: l.trace_state,
                attributes: kvs(l.attributes),
                dropped_attributes_count: 0,
                flags: l.flags.0 as u32,
            })
            .collect(),
        dropped_links_count: 0,
        status: s.status.map(|st| trace::Status {
            message: st.message,
            code: st.code.0,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_names_and_string_integers_are_accepted() {
        let json = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{
            "traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"eee19b7ec3c1b174",
            "name":"x","kind":"SPAN_KIND_CLIENT","startTimeUnixNano":"1544712660000000000",
            "status":{"code":"STATUS_CODE_ERROR","message":"m"},
            "attributes":[{"key":"n","value":{"intValue":"42"}}],
            "unknownField": {"ignored": true}
        }]}]}]}"#;
        let req = decode_request(json).unwrap();
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.kind, 3);
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.status.as_ref().unwrap().code, 2);
        assert_eq!(span.trace_id.len(), 16);
        assert_eq!(
            span.attributes[0].value.as_ref().unwrap().value,
            Some(common::any_value::Value::IntValue(42))
        );
    }

    #[test]
    fn unknown_enum_name_is_an_error() {
        let json =
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SPAN_KIND_SIDEWAYS"}]}]}]}"#;
        let err = decode_request(json).err().unwrap().to_string();
        assert!(err.contains("SIDEWAYS"), "{err}");
    }
}

/// Parses one OTLP/JSON `ExportLogsServiceRequest`, as leniently as traces (enum names or
/// numbers, integers as numbers or strings, either hex case).
pub fn decode_logs_request(
    bytes: &[u8],
) -> Result<
    opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest,
    serde_json::Error,
> {
    let req: JLogsRequest = serde_json::from_slice(bytes)?;
    Ok(req.into_proto())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JLogsRequest {
    #[serde(alias = "resource_logs")]
    resource_logs: Vec<JResourceLogs>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JResourceLogs {
    resource: Option<JResource>,
    #[serde(alias = "scope_logs")]
    scope_logs: Vec<JScopeLogs>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JScopeLogs {
    #[serde(alias = "log_records")]
    log_records: Vec<JLogRecord>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JLogRecord {
    #[serde(alias = "time_unix_nano")]
    time_unix_nano: JU64,
    #[serde(alias = "observed_time_unix_nano")]
    observed_time_unix_nano: JU64,
    #[serde(alias = "severity_number")]
    severity_number: JSeverity,
    #[serde(alias = "severity_text")]
    severity_text: String,
    body: Option<JAnyValue>,
    attributes: Vec<JKeyValue>,
    #[serde(alias = "trace_id")]
    trace_id: JHex,
    #[serde(alias = "span_id")]
    span_id: JHex,
}

#[derive(Default)]
struct JSeverity(i32);

impl<'de> Deserialize<'de> for JSeverity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        enum_value(
            d,
            "SEVERITY_NUMBER_",
            &[
                "UNSPECIFIED",
                "TRACE",
                "TRACE2",
                "TRACE3",
                "TRACE4",
                "DEBUG",
                "DEBUG2",
                "DEBUG3",
                "DEBUG4",
                "INFO",
                "INFO2",
                "INFO3",
                "INFO4",
                "WARN",
                "WARN2",
                "WARN3",
                "WARN4",
                "ERROR",
                "ERROR2",
                "ERROR3",
                "ERROR4",
                "FATAL",
                "FATAL2",
                "FATAL3",
                "FATAL4",
            ],
        )
        .map(JSeverity)
    }
}

impl JLogsRequest {
    fn into_proto(
        self,
    ) -> opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
        use opentelemetry_proto::tonic::logs::v1 as logs;
        opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
            resource_logs: self
                .resource_logs
                .into_iter()
                .map(|rl| logs::ResourceLogs {
                    resource: rl.resource.map(JResource::into_proto),
                    scope_logs: rl
                        .scope_logs
                        .into_iter()
                        .map(|sl| logs::ScopeLogs {
                            log_records: sl
                                .log_records
                                .into_iter()
                                .map(|r| logs::LogRecord {
                                    time_unix_nano: r.time_unix_nano.0,
                                    observed_time_unix_nano: r.observed_time_unix_nano.0,
                                    severity_number: r.severity_number.0,
                                    severity_text: r.severity_text,
                                    body: r.body.map(any),
                                    attributes: kvs(r.attributes),
                                    trace_id: r.trace_id.0,
                                    span_id: r.span_id.0,
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
        }
    }
}
