//! Importer tests on the real fixtures of `tests/fixtures` (never edited: a fixture that does
//! not import is an importer bug) and on small documents written here.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::*;
use crate::model::{SpanId, SpanKind, StatusCode, TraceId, Value};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn import_path(path: &Path, format: Option<Format>) -> (Vec<Span>, ImportSummary) {
    let mut spans = Vec::new();
    let summary = import_file(path, format, &mut |batch: Vec<Span>| {
        assert!(!batch.is_empty() && batch.len() <= BATCH_SPANS);
        spans.extend(batch);
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.spans, spans.len() as u64);
    (spans, summary)
}

fn zipkin(name: &str) -> Vec<Span> {
    let (spans, summary) = import_path(&fixture(&format!("zipkin-lens/{name}")), None);
    assert_eq!(summary.format, Format::Zipkin);
    assert_eq!(summary.records_skipped, 0, "{:?}", summary.first_problem);
    spans
}

/// Imports bytes; returns the delivered spans and the outcome.
fn import_bytes(
    bytes: &[u8],
    format: Option<Format>,
) -> (Vec<Span>, Result<ImportSummary, ImportError>) {
    let mut spans = Vec::new();
    let result = import_reader(bytes, "input.json", format, &mut |batch: Vec<Span>| {
        spans.extend(batch);
        Ok(())
    });
    if let Ok(summary) = &result {
        assert_eq!(summary.spans, spans.len() as u64);
    }
    (spans, result)
}

fn sid(hex: &str) -> SpanId {
    SpanId::from_hex(hex).unwrap()
}

fn str_attr<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes.get(key).and_then(Value::as_str)
}

fn assert_unique_ids(spans: &[Span]) {
    let mut seen = HashSet::new();
    for s in spans {
        assert!(
            seen.insert((s.trace_id, s.span_id)),
            "duplicate id {} {}",
            s.trace_id,
            s.span_id
        );
    }
}

/// Every server half split off a shared id is a child of the client half that kept the id.
fn assert_server_halves_under_their_clients(spans: &[Span]) -> usize {
    let by_id: HashMap<SpanId, &Span> = spans.iter().map(|s| (s.span_id, s)).collect();
    let mut halves = 0;
    for s in spans.iter().filter(|s| s.kind == SpanKind::Server) {
        let Some(original) = str_attr(s, SHARED_SPAN_ID) else {
            continue;
        };
        halves += 1;
        let original = sid(original);
        assert_ne!(s.span_id, original);
        assert_eq!(s.parent_span_id, Some(original), "{}", s.name);
        assert_eq!(by_id[&original].kind, SpanKind::Client);
    }
    halves
}

#[test]
fn smartthings_shared_halves_are_split_and_fragments_merged() {
    let spans = zipkin("smartthings-mobile-web-install.json");
    // 1,041 records, 84 of them kind-less fragments of a span that has a kind.
    assert_eq!(spans.len(), 957);
    let services: HashSet<&str> = spans.iter().map(Span::service).collect();
    assert_eq!(services.len(), 16, "{services:?}");
    assert!(services.contains("stLogin") && services.contains("alice"));
    assert_unique_ids(&spans);
    let trace = TraceId::from_hex("000000000000000014b60fd9ae504820").unwrap();
    assert!(spans.iter().all(|s| s.trace_id == trace));
    assert!(assert_server_halves_under_their_clients(&spans) > 200);
    // No kind-less span is left that repeats a kinded span's id.
    assert!(
        spans
            .iter()
            .all(|s| s.kind != SpanKind::Unspecified || str_attr(s, SHARED_SPAN_ID).is_none())
    );

    // Client strongman, server platformapi, plus a kind-less platformapi fragment: two spans.
    let shared = sid("a0dc23f22c4fee3f");
    let family: Vec<&Span> = spans
        .iter()
        .filter(|s| s.span_id == shared || str_attr(s, SHARED_SPAN_ID) == Some("a0dc23f22c4fee3f"))
        .collect();
    assert_eq!(family.len(), 2);
    assert_eq!(
        family.iter().filter(|s| s.kind == SpanKind::Client).count(),
        1
    );
    let server = family.iter().find(|s| s.kind == SpanKind::Server).unwrap();
    assert_eq!(server.service(), "platformapi");
    assert_eq!(str_attr(server, "server.address"), Some("10.104.90.167"));
    assert_eq!(server.attributes.int("server.port"), Some(8140));

    // One client half (bouncer) and five server halves (pusher, one per instance).
    let pushers: Vec<&Span> = spans
        .iter()
        .filter(|s| str_attr(s, SHARED_SPAN_ID) == Some("cbab506b53f336fc"))
        .collect();
    assert_eq!(pushers.len(), 5);
    assert!(
        pushers
            .iter()
            .all(|s| s.service() == "pusher" && s.parent_span_id == Some(sid("cbab506b53f336fc")))
    );
    let distinct: HashSet<SpanId> = pushers.iter().map(|s| s.span_id).collect();
    assert_eq!(distinct.len(), 5);
    // A pusher span that pointed at the shared id belongs under the half on its own instance.
    let child = spans
        .iter()
        .find(|s| s.span_id == sid("017bfc73a014d42c"))
        .unwrap();
    let its_half = pushers
        .iter()
        .find(|s| str_attr(s, "server.address") == Some("10.6.83.20"))
        .unwrap();
    assert_eq!(child.parent_span_id, Some(its_half.span_id));

    // The two HTTP 404s: the execution client half and the alice server half.
    let not_found: Vec<&Span> = spans
        .iter()
        .filter(|s| s.attributes.int("http.status_code") == Some(404))
        .collect();
    assert_eq!(not_found.len(), 2);
    for s in &not_found {
        assert_eq!(s.status.code, StatusCode::Error);
        assert_eq!(s.status.message, "404");
    }
    let client = not_found
        .iter()
        .find(|s| s.kind == SpanKind::Client)
        .unwrap();
    let server = not_found
        .iter()
        .find(|s| s.kind == SpanKind::Server)
        .unwrap();
    assert_eq!((client.service(), server.service()), ("execution", "alice"));
    assert_eq!(client.span_id, sid("71687cb74971c332"));
    assert_eq!(server.parent_span_id, Some(client.span_id));
    assert_eq!(client.start_ns, 1_543_549_825_693_593_000);
    assert_eq!(client.duration_ns(), 3_858_000);
    assert_eq!(str_attr(client, "http.method"), Some("GET"));
    assert_eq!(
        spans
            .iter()
            .filter(|s| s.status.code == StatusCode::Error)
            .count(),
        2
    );

    // Databases by the remote service name: SQL in bookie, Cassandra in auth.
    let sql = spans
        .iter()
        .find(|s| s.attributes.get("sql.query").is_some())
        .unwrap();
    assert_eq!(str_attr(sql, "db.system"), Some("bookie"));
    assert_eq!(str_attr(sql, "db.operation.name"), Some("SELECT"));
    assert_eq!(str_attr(sql, "service.peer.name"), None);
    let cql = spans
        .iter()
        .find(|s| s.attributes.get("cassandra.query").is_some())
        .unwrap();
    assert_eq!(str_attr(cql, "db.system"), Some("auth"));
    assert_eq!(str_attr(cql, "network.peer.address"), Some("10.104.140.58"));
    assert_eq!(str_attr(cql, "server.address"), None);
    // Annotations became events, in nanoseconds.
    let annotated = spans
        .iter()
        .find(|s| s.span_id == sid("60e1ace16723844a"))
        .unwrap();
    assert_eq!(annotated.events.len(), 3);
    assert_eq!(annotated.events[0].time_ns, 1_543_549_826_261_000_000);
    assert_eq!(annotated.events[0].name, "Body Part Received");
}

#[test]
fn zipkin_derived_ids_are_stable_across_imports() {
    let a = zipkin("smartthings-mobile-web-install.json");
    let b = zipkin("smartthings-mobile-web-install.json");
    assert_eq!(a, b);
}

#[test]
fn messaging_spans_get_the_broker_as_messaging_system() {
    let spans = zipkin("messaging.json");
    assert_eq!(spans.len(), 4);
    let trace = TraceId::from_hex("5aab74dbb904746bb33447baae403ed6").unwrap();
    assert!(spans.iter().all(|s| s.trace_id == trace));
    let producer = spans.iter().find(|s| s.kind == SpanKind::Producer).unwrap();
    let consumer = spans.iter().find(|s| s.kind == SpanKind::Consumer).unwrap();
    assert_eq!(producer.service(), "frontend");
    assert_eq!(consumer.service(), "backend");
    for s in [producer, consumer] {
        assert_eq!(str_attr(s, "messaging.system"), Some("rabbitmq"));
        assert_eq!(s.attributes.get("messaging.destination.name"), None);
        assert_eq!(str_attr(s, "service.peer.name"), None);
    }
    assert_eq!(consumer.parent_span_id, Some(producer.span_id));
}

#[test]
fn messaging2_keeps_parents_missing_from_the_file() {
    let spans = zipkin("messaging2.json");
    assert_eq!(spans.len(), 11);
    assert_unique_ids(&spans);
    let consumer = spans.iter().find(|s| s.kind == SpanKind::Consumer).unwrap();
    assert_eq!(consumer.service(), "notification-service");
    assert_eq!(str_attr(consumer, "messaging.system"), Some("rabbitmq"));
    assert_eq!(str_attr(consumer, "rabbit.queue"), Some("notification"));
    let producer = spans.iter().find(|s| s.kind == SpanKind::Producer).unwrap();
    assert_eq!(str_attr(producer, "messaging.system"), Some("rabbitmq"));
    assert_eq!(producer.parent_span_id, Some(sid("0153a596db406111")));
    let ids: HashSet<SpanId> = spans.iter().map(|s| s.span_id).collect();
    assert!(!ids.contains(&sid("0153a596db406c83")));
    assert!(
        spans
            .iter()
            .any(|s| s.parent_span_id == Some(sid("0153a596db406c83")))
    );
}

#[test]
fn kafka_producers_consumers_and_their_errors() {
    let spans = zipkin("messaging-kafka.json");
    assert_eq!(spans.len(), 28);
    let producers = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Producer)
        .count();
    let consumers: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Consumer)
        .collect();
    assert!(producers >= 8, "{producers}");
    assert!(consumers.len() >= 6);
    assert!(
        spans
            .iter()
            .filter(|s| matches!(s.kind, SpanKind::Producer | SpanKind::Consumer))
            .all(|s| str_attr(s, "messaging.system") == Some("kafka"))
    );
    let consumer_services: HashSet<&str> = consumers.iter().map(|s| s.service()).collect();
    assert_eq!(consumer_services, HashSet::from(["servicea", "serviceb"]));
    let errors: Vec<&Span> = spans
        .iter()
        .filter(|s| s.status.code == StatusCode::Error)
        .collect();
    assert_eq!(errors.len(), 3);
    // An empty `error` tag is still an error.
    assert!(errors.iter().any(|s| s.status.message.is_empty()));
    assert!(errors.iter().any(|s| s.status.message == "some error"));
}

#[test]
fn skew_keeps_structure_and_reparents_the_server_side_child() {
    let spans = zipkin("skew.json");
    assert_eq!(spans.len(), 4);
    assert_unique_ids(&spans);
    assert_eq!(assert_server_halves_under_their_clients(&spans), 1);
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server && s.service() == "serviceb")
        .unwrap();
    let asynchronous = spans.iter().find(|s| s.name == "async").unwrap();
    assert_eq!(asynchronous.parent_span_id, Some(server.span_id));
    // Clock skew is kept as recorded: the server half starts before its client half.
    let client = spans.iter().find(|s| s.kind == SpanKind::Client).unwrap();
    assert_eq!(server.parent_span_id, Some(client.span_id));
    assert!(server.start_ns < client.start_ns);
}

#[test]
fn simple_db_client_spans_point_at_app_db() {
    let spans = zipkin("simple-db-p6.json");
    assert_eq!(spans.len(), 5);
    let db: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client)
        .collect();
    assert_eq!(db.len(), 4);
    for s in &db {
        assert_eq!(str_attr(s, "db.system"), Some("app_db"));
        assert_eq!(s.attributes.get("db.name"), None);
        assert_eq!(s.attributes.get("db.namespace"), None);
        assert_eq!(s.attributes.get("server.address"), None);
        assert_eq!(s.service(), "bootifulmeters");
    }
    let verbs: HashSet<&str> = db
        .iter()
        .filter_map(|s| str_attr(s, "db.operation.name"))
        .collect();
    assert_eq!(verbs, HashSet::from(["INSERT", "CALL"]));
    let server = spans.iter().find(|s| s.kind == SpanKind::Server).unwrap();
    assert_eq!(str_attr(server, "http.method"), Some("POST"));
}

#[test]
fn yelp_duplicate_ids_and_foreign_parents() {
    let spans = zipkin("yelp.json");
    assert_eq!(spans.len(), 16);
    assert_unique_ids(&spans);
    assert_eq!(assert_server_halves_under_their_clients(&spans), 3);
    // A server half with no client half in the file keeps its id and its (absent) parent.
    let routing = spans.iter().find(|s| s.service() == "routing").unwrap();
    assert_eq!(routing.span_id, sid("2e8cfb154b59a41f"));
    assert_eq!(routing.parent_span_id, None);
    assert_eq!(str_attr(routing, SHARED_SPAN_ID), None);
    let mysql = spans.iter().find(|s| s.name == "commit").unwrap();
    assert_eq!(str_attr(mysql, "db.system"), Some("mysql"));
    assert_eq!(str_attr(mysql, "db.operation.name"), Some("COMMIT"));
    let memcache = spans
        .iter()
        .find(|s| s.name == "get my_cache_name_v2")
        .unwrap();
    assert_eq!(str_attr(memcache, "service.peer.name"), Some("memcache"));
    assert_eq!(memcache.attributes.get("db.system"), None);
    // Spans that pointed at a split id from the server's side now point at the server half.
    let mobile_half = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server && s.service() == "mobile_api")
        .unwrap();
    let nonce = spans
        .iter()
        .find(|s| s.name == "set mobile_api_nonce")
        .unwrap();
    assert_eq!(nonce.parent_span_id, Some(mobile_half.span_id));
}

#[test]
fn every_zipkin_fixture_imports_cleanly() {
    for name in ["ascend.json", "envoy.json"] {
        let spans = zipkin(name);
        assert_unique_ids(&spans);
        assert_server_halves_under_their_clients(&spans);
    }
    let envoy = zipkin("envoy.json");
    assert_eq!(envoy[0].kind, SpanKind::Server);
    assert_eq!(envoy[0].service(), crate::model::UNKNOWN_SERVICE);
    assert_eq!(
        str_attr(&envoy[0], "http.url"),
        Some("http://www.google.com/")
    );
}

#[test]
fn spec_example_imports_as_the_specification_says() {
    let (spans, summary) = import_path(&fixture("otlp-json/spec-example.json"), None);
    assert_eq!(summary.format, Format::OtlpJson);
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    assert_eq!(s.trace_id.to_string(), "5b8efff798038103d269b633813fc60c");
    assert_eq!(s.span_id.to_string(), "eee19b7ec3c1b174");
    assert_eq!(s.parent_span_id, Some(sid("eee19b7ec3c1b173")));
    assert_eq!(s.kind, SpanKind::Server);
    assert_eq!(s.name, "I'm a server span");
    assert_eq!(s.start_ns, 1_544_712_660_000_000_000);
    assert_eq!(s.end_ns, 1_544_712_661_000_000_000);
    assert_eq!(s.service(), "my.service");
    assert_eq!(s.scope.name, "my.library");
    assert_eq!(s.scope.version, "1.0.0");
    assert_eq!(
        s.scope.attributes.str("my.scope.attribute"),
        Some("some scope attribute")
    );
    assert_eq!(str_attr(s, "my.span.attr"), Some("some value"));
}

const OTLP_LINE_A: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"cart"}}]},"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"GET /cart","kind":"SPAN_KIND_SERVER","startTimeUnixNano":"1000","endTimeUnixNano":"2000"}]}]}]}"#;
const OTLP_LINE_B: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"pay"}}]},"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0202030405060708","parentSpanId":"0102030405060708","name":"charge","kind":3,"startTimeUnixNano":1500,"endTimeUnixNano":1800,"status":{"code":2,"message":"declined"}}]}]}]}"#;

#[test]
fn json_lines_and_gzip_files_import() {
    let dir = tempfile::tempdir().unwrap();
    let lines = format!("{OTLP_LINE_A}\n\n{OTLP_LINE_B}\n");
    let plain = dir.path().join("traces.jsonl");
    std::fs::write(&plain, &lines).unwrap();
    let (spans, summary) = import_path(&plain, None);
    assert_eq!(summary.format, Format::OtlpJson);
    assert!(!summary.gzip);
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[1].service(), "pay");
    assert_eq!(spans[1].status.code, StatusCode::Error);
    assert_eq!(spans[1].parent_span_id, Some(spans[0].span_id));

    let gz = dir.path().join("traces.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(lines.as_bytes()).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let (gz_spans, gz_summary) = import_path(&gz, None);
    assert!(gz_summary.gzip);
    assert_eq!(gz_spans, spans);

    // A gzip-compressed Zipkin file is detected through the compression too.
    let zipkin_gz = dir.path().join("skew.json.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&std::fs::read(fixture("zipkin-lens/skew.json")).unwrap())
        .unwrap();
    std::fs::write(&zipkin_gz, enc.finish().unwrap()).unwrap();
    let (zspans, zsummary) = import_path(&zipkin_gz, None);
    assert_eq!((zsummary.format, zsummary.gzip), (Format::Zipkin, true));
    assert_eq!(zspans, zipkin("skew.json"));
}

#[test]
fn concatenated_pretty_otlp_documents_stream() {
    let pretty = |line: &str| {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        serde_json::to_string_pretty(&v).unwrap()
    };
    let text = format!("{}\n{}", pretty(OTLP_LINE_A), pretty(OTLP_LINE_B));
    let (spans, result) = import_bytes(text.as_bytes(), None);
    let summary = result.unwrap();
    assert_eq!(summary.format, Format::OtlpJson);
    assert_eq!(spans.len(), 2);
}

const JAEGER_DOC: &str = r#"{
  "data": [{
    "traceID": "d269b633813fc60c",
    "spans": [
      {
        "traceID": "d269b633813fc60c", "spanID": "00000000000000a1", "flags": 1,
        "operationName": "GET /orders", "references": [],
        "startTime": 1700000000000000, "duration": 2500,
        "tags": [
          {"key": "span.kind", "type": "string", "value": "server"},
          {"key": "http.status_code", "type": "int64", "value": 500},
          {"key": "retry", "type": "bool", "value": false},
          {"key": "ratio", "type": "float64", "value": 0.25},
          {"key": "blob", "type": "binary", "value": "AQID"},
          {"key": "error", "type": "bool", "value": true}
        ],
        "logs": [{"timestamp": 1700000000001000, "fields": [
          {"key": "event", "type": "string", "value": "exception"},
          {"key": "exception.message", "type": "string", "value": "boom"}
        ]}],
        "processID": "p1", "warnings": null
      },
      {
        "traceID": "d269b633813fc60c", "spanID": "a2", "operationName": "SELECT orders",
        "references": [
          {"refType": "FOLLOWS_FROM", "traceID": "0000000000000000000000000000beef", "spanID": "00000000000000b1"},
          {"refType": "CHILD_OF", "traceID": "d269b633813fc60c", "spanID": "00000000000000a1"}
        ],
        "startTime": 1700000000000500, "duration": 1000,
        "tags": [
          {"key": "span.kind", "type": "string", "value": "client"},
          {"key": "db.system", "type": "string", "value": "postgresql"},
          {"key": "otel.status_code", "type": "string", "value": "ERROR"},
          {"key": "otel.status_description", "type": "string", "value": "deadlock"},
          {"key": "otel.scope.name", "type": "string", "value": "pgx"}
        ],
        "logs": [], "processID": "p2"
      }
    ],
    "processes": {
      "p1": {"serviceName": "orders", "tags": [{"key": "hostname", "type": "string", "value": "h1"}]},
      "p2": {"serviceName": "orders-db-client", "tags": [{"key": "pid", "type": "int64", "value": "42"}]}
    },
    "warnings": null
  }],
  "total": 0, "limit": 0, "offset": 0, "errors": null
}"#;

#[test]
fn jaeger_document_maps_tags_logs_references_and_status() {
    let (spans, result) = import_bytes(JAEGER_DOC.as_bytes(), None);
    let summary = result.unwrap();
    assert_eq!(summary.format, Format::Jaeger);
    assert_eq!(summary.records_skipped, 0);
    assert_eq!(spans.len(), 2);
    let (server, client) = (&spans[0], &spans[1]);
    let trace = TraceId::from_hex("0000000000000000d269b633813fc60c").unwrap();
    assert_eq!(server.trace_id, trace);
    assert_eq!(client.span_id, sid("00000000000000a2"));

    assert_eq!(server.kind, SpanKind::Server);
    assert_eq!(server.service(), "orders");
    assert_eq!(server.resource.attributes.str("hostname"), Some("h1"));
    assert_eq!(server.start_ns, 1_700_000_000_000_000_000);
    assert_eq!(server.duration_ns(), 2_500_000);
    assert_eq!(server.flags, 1);
    assert_eq!(server.status.code, StatusCode::Error);
    assert_eq!(server.attributes.get("span.kind"), None);
    assert_eq!(
        server.attributes.get("http.status_code"),
        Some(&Value::Int(500))
    );
    assert_eq!(server.attributes.get("retry"), Some(&Value::Bool(false)));
    assert_eq!(server.attributes.get("ratio"), Some(&Value::Double(0.25)));
    assert_eq!(
        server.attributes.get("blob"),
        Some(&Value::Bytes(vec![1, 2, 3]))
    );
    assert_eq!(server.events.len(), 1);
    assert_eq!(server.events[0].name, "exception");
    assert_eq!(server.events[0].time_ns, 1_700_000_000_001_000_000);
    assert_eq!(
        server.events[0].attributes.str("exception.message"),
        Some("boom")
    );

    assert_eq!(client.kind, SpanKind::Client);
    assert_eq!(client.parent_span_id, Some(server.span_id));
    assert_eq!(client.links.len(), 1);
    assert_eq!(client.links[0].span_id, sid("00000000000000b1"));
    assert_eq!(
        client.links[0].attributes.str("opentracing.ref_type"),
        Some("follows_from")
    );
    assert_eq!(client.status.code, StatusCode::Error);
    assert_eq!(client.status.message, "deadlock");
    assert_eq!(client.attributes.get("otel.status_code"), None);
    assert_eq!(client.scope.name, "pgx");
    assert_eq!(client.resource.attributes.int("pid"), Some(42));
    assert_eq!(client.service(), "orders-db-client");
}

#[test]
fn jaeger_bare_trace_download_imports() {
    let doc: serde_json::Value = serde_json::from_str(JAEGER_DOC).unwrap();
    let bare = serde_json::to_string(&doc["data"][0]).unwrap();
    let (spans, result) = import_bytes(bare.as_bytes(), None);
    assert_eq!(result.unwrap().format, Format::Jaeger);
    let (wrapped, _) = import_bytes(JAEGER_DOC.as_bytes(), None);
    assert_eq!(spans, wrapped);
}

#[test]
fn round_trip_through_otlp_json_lines_is_lossless() {
    let (jaeger, _) = import_bytes(JAEGER_DOC.as_bytes(), None);
    let (spec, _) = import_path(&fixture("otlp-json/spec-example.json"), None);
    let mut original = zipkin("smartthings-mobile-web-install.json");
    original.extend(jaeger);
    original.extend(spec);
    // Every attribute type, including the ones no fixture has.
    let mut odd = original[0].clone();
    odd.attributes.push("empty", Value::Empty);
    odd.attributes.push("big", Value::Int(i64::MIN));
    odd.attributes.push("inf", Value::Double(f64::INFINITY));
    odd.attributes.push(
        "list",
        Value::Array(vec![
            Value::Int(1),
            Value::from("two"),
            Value::Array(vec![]),
        ]),
    );
    odd.attributes.push(
        "map",
        Value::Map(vec![crate::model::KeyValue::new("k", Value::Bool(true))]),
    );
    odd.trace_state = "vendor=1".into();
    odd.span_id = sid("ffffffffffffffff");
    original.push(odd);

    let mut out = Vec::new();
    write_otlp_json_lines(&original, &mut out).unwrap();
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.lines().count() >= 18, "one line per resource at least");
    assert!(!text.contains("SPAN_KIND"), "enums are integers");
    assert!(text.contains("\"traceId\":\"000000000000000014b60fd9ae504820\""));

    let (back, result) = import_bytes(&out, None);
    let summary = result.unwrap();
    assert_eq!(summary.format, Format::OtlpJson);
    assert_eq!(summary.records_skipped, 0);
    assert_eq!(back.len(), original.len());
    // Export groups by resource, so compare by identity rather than by order.
    let by_id: HashMap<(TraceId, SpanId), &Span> =
        back.iter().map(|s| ((s.trace_id, s.span_id), s)).collect();
    for s in &original {
        assert_eq!(by_id[&(s.trace_id, s.span_id)], s);
    }
}

#[test]
fn malformed_zipkin_stops_with_a_position_and_keeps_earlier_spans() {
    let text = std::fs::read_to_string(fixture("zipkin-lens/yelp.json")).unwrap();
    let cut = &text[..text.len() * 2 / 3];
    let (spans, result) = import_bytes(cut.as_bytes(), None);
    let err = result.unwrap_err();
    assert!(matches!(
        err.reason,
        ErrorReason::Invalid {
            format: Format::Zipkin,
            ..
        }
    ));
    assert!(err.position.line.is_some() && err.position.column.is_some());
    assert!(!spans.is_empty());
    assert_eq!(err.summary.spans, spans.len() as u64);
    let message = err.to_string();
    assert!(message.starts_with("input.json: line "), "{message}");

    // Valid JSON that is not a span is skipped and counted, the rest imported.
    let doc = r#"[
        {"traceId":"1","id":"a","name":"ok","localEndpoint":{"serviceName":"s"}},
        42,
        {"traceId":"xyz","id":"b"},
        {"traceId":"1","id":"c","parentId":"a","timestamp":"5"}
    ]"#;
    let (spans, result) = import_bytes(doc.as_bytes(), None);
    let summary = result.unwrap();
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[1].start_ns, 5000);
    assert_eq!(summary.records_skipped, 2);
    let problem = summary.first_problem.unwrap();
    assert_eq!(problem.position.record, Some(2));
    assert!(problem.reason.contains("a number"), "{problem}");
}

#[test]
fn malformed_otlp_lines_are_skipped_with_their_line() {
    let text = format!("{OTLP_LINE_A}\n{{\"resourceSpans\": [}}\n{OTLP_LINE_B}\n{{\"resou");
    let (spans, result) = import_bytes(text.as_bytes(), None);
    let summary = result.unwrap();
    assert_eq!(spans.len(), 2);
    assert_eq!(summary.records_skipped, 2);
    let problem = summary.first_problem.unwrap();
    assert_eq!(problem.position.line, Some(2));
    assert!(problem.position.column.is_some());
    assert!(
        problem
            .to_string()
            .starts_with("input.json: line 2, column ")
    );

    // A span with an invalid id is skipped, its neighbours kept.
    let bad_id = OTLP_LINE_A.replace("0102030405060708\"", "00\"");
    let (spans, result) = import_bytes(format!("{bad_id}\n{OTLP_LINE_B}\n").as_bytes(), None);
    assert_eq!(spans.len(), 1);
    let summary = result.unwrap();
    assert_eq!(summary.records_skipped, 1);
    assert!(summary.first_problem.unwrap().reason.contains("span id"));
}

#[test]
fn malformed_otlp_document_stops_with_a_position() {
    let text = std::fs::read_to_string(fixture("otlp-json/spec-example.json")).unwrap();
    let doubled = text.replace(
        "\"resourceSpans\": [",
        &format!(
            "\"resourceSpans\": [{}, ",
            &OTLP_LINE_A[18..OTLP_LINE_A.len() - 2]
        ),
    );
    let cut = &doubled[..doubled.len() - 40];
    let (spans, result) = import_bytes(cut.as_bytes(), None);
    let err = result.unwrap_err();
    assert_eq!(spans.len(), 1, "the complete resourceSpans element is kept");
    assert_eq!(err.summary.spans, 1);
    assert!(err.position.line.is_some());
    assert_eq!(err.position.record, Some(2));
    assert!(err.to_string().contains("ends inside a record"), "{err}");
}

#[test]
fn malformed_jaeger_stops_with_a_position_and_keeps_earlier_traces() {
    let doc: serde_json::Value = serde_json::from_str(JAEGER_DOC).unwrap();
    let trace = serde_json::to_string(&doc["data"][0]).unwrap();
    let text = format!(
        "{{\"data\": [{trace},\n{trace},\n{}",
        &trace[..trace.len() / 2]
    );
    let (spans, result) = import_bytes(text.as_bytes(), None);
    let err = result.unwrap_err();
    assert_eq!(spans.len(), 4);
    assert_eq!(err.position.line, Some(3));
    assert!(matches!(
        err.reason,
        ErrorReason::Invalid {
            format: Format::Jaeger,
            ..
        }
    ));

    let bad_span = JAEGER_DOC.replace("\"spanID\": \"a2\"", "\"spanID\": \"not hex\"");
    let (spans, result) = import_bytes(bad_span.as_bytes(), None);
    assert_eq!(spans.len(), 1);
    let summary = result.unwrap();
    assert_eq!(summary.records_skipped, 1);
    assert_eq!(summary.first_problem.unwrap().position.record, Some(2));
}

#[test]
fn corrupt_gzip_and_unknown_content_are_refused() {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(OTLP_LINE_A.as_bytes()).unwrap();
    let mut gz = enc.finish().unwrap();
    let n = gz.len();
    gz[n / 2] ^= 0xff;
    gz[n / 2 + 1] ^= 0xff;
    let (_, result) = import_bytes(&gz, None);
    let err = result.unwrap_err();
    assert!(err.position.byte.is_some(), "{err}");

    for garbage in [&b"hello"[..], b"", b"   ", b"\x00\x01\x02"] {
        let (_, result) = import_bytes(garbage, None);
        let err = result.unwrap_err();
        assert!(matches!(err.reason, ErrorReason::UnknownFormat(_)), "{err}");
    }
}

#[test]
fn a_refusing_sink_stops_the_import() {
    let path = fixture("zipkin-lens/smartthings-mobile-web-install.json");
    let mut calls = 0;
    let err = import_file(&path, None, &mut |_batch: Vec<Span>| {
        calls += 1;
        anyhow::bail!("disk full")
    })
    .unwrap_err();
    assert_eq!(calls, 1);
    assert!(matches!(err.reason, ErrorReason::Sink(_)));
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(err.summary.spans, 0);
}

#[test]
fn missing_file_names_the_file() {
    let err = import_file(Path::new("/nonexistent/trace.json"), None, &mut |_: Vec<
        Span,
    >| {
        Ok(())
    })
    .unwrap_err();
    assert!(matches!(err.reason, ErrorReason::Io(_)));
    assert!(err.to_string().starts_with("/nonexistent/trace.json: "));
}

#[test]
fn format_detection_and_override() {
    assert_eq!(detect_format(b"  [ {\"traceId\""), Some(Format::Zipkin));
    assert_eq!(
        detect_format(b"{\"resourceSpans\":[]}"),
        Some(Format::OtlpJson)
    );
    assert_eq!(detect_format(b"{}"), Some(Format::OtlpJson));
    assert_eq!(
        detect_format(b"{\"total\":0,\"data\":[]}"),
        Some(Format::Jaeger)
    );
    assert_eq!(
        detect_format(b"{\"traceID\":\"1\",\"spans\":[]}"),
        Some(Format::Jaeger)
    );
    assert_eq!(
        detect_format(b"\xef\xbb\xbf{\"data\":[{\"traceID\":\"1\"}]}"),
        Some(Format::Jaeger)
    );
    assert_eq!(detect_format(b"<html>"), None);
    assert_eq!("ZIPKIN".parse::<Format>(), Ok(Format::Zipkin));
    assert_eq!("otlp-json".parse::<Format>(), Ok(Format::OtlpJson));
    assert!("csv".parse::<Format>().is_err());

    // Forcing a format that does not match skips what it cannot read, or stops with a
    // position; it never panics.
    let (spans, result) = import_bytes(JAEGER_DOC.as_bytes(), Some(Format::Zipkin));
    assert!(spans.is_empty());
    assert_eq!(result.unwrap().records_skipped, 1);
    let (_, result) = import_bytes(b"[1, 2]", Some(Format::Jaeger));
    let err = result.unwrap_err();
    assert_eq!(err.position.line, Some(1));
}

/// Truncations and corruptions of every format: any outcome but a panic is acceptable, and what
/// was delivered is always counted.
#[test]
fn nothing_panics_on_truncated_or_garbled_input() {
    let zipkin = std::fs::read(fixture("zipkin-lens/yelp.json")).unwrap();
    let otlp = std::fs::read(fixture("otlp-json/spec-example.json")).unwrap();
    let lines = format!("{OTLP_LINE_A}\n{OTLP_LINE_B}\n").into_bytes();
    let jaeger = JAEGER_DOC.as_bytes().to_vec();
    for input in [zipkin, otlp, lines, jaeger] {
        let step = (input.len() / 60).max(1);
        for cut in (0..input.len()).step_by(step) {
            let (spans, result) = import_bytes(&input[..cut], None);
            let delivered = match &result {
                Ok(s) => s.spans,
                Err(e) => e.summary.spans,
            };
            assert_eq!(delivered, spans.len() as u64);
            let mut garbled = input.clone();
            garbled[cut] = b"{}[]\",:0x\n"[cut % 10];
            let _ = import_bytes(&garbled, None);
            for format in [Format::OtlpJson, Format::Jaeger, Format::Zipkin] {
                let _ = import_bytes(&input[..cut], Some(format));
            }
        }
    }
}

/// Spans and log records of a file, with its summary.
fn import_with_logs(path: &Path) -> (Vec<Span>, Vec<TracedLog>, ImportSummary) {
    let (mut spans, mut logs) = (Vec::new(), Vec::new());
    let summary = super::import_file_with_logs(
        path,
        None,
        &mut |batch: Vec<Span>| {
            spans.extend(batch);
            Ok(())
        },
        &mut |batch: Vec<TracedLog>| {
            assert!(!batch.is_empty() && batch.len() <= BATCH_SPANS);
            logs.extend(batch);
            Ok(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.spans, spans.len() as u64);
    assert_eq!(summary.log_records, logs.len() as u64);
    (spans, logs, summary)
}

#[test]
fn a_collector_file_with_trace_and_log_lines_gives_both() {
    let path = fixture("otlp-json/order-incident.jsonl");
    let (spans, logs, summary) = import_with_logs(&path);
    assert_eq!(summary.format, Format::OtlpJson);
    assert_eq!((spans.len(), logs.len()), (4, 2));
    assert_eq!(summary.logs_without_trace, 1);
    assert_eq!(summary.records_skipped, 0, "{:?}", summary.first_problem);
    assert_eq!(summary.counts(), "4 spans, 2 log records");
    let consumer = sid("2000000000000001");
    assert!(
        logs.iter()
            .all(|l| l.span_id == Some(consumer) && l.trace_id == spans[0].trace_id)
    );
    assert_eq!(logs[1].record.severity(), "ERROR");
    assert!(logs[1].record.is_error_evidence());
    // Without a log sink the same spans come out and the records are dropped.
    let (only_spans, only_summary) = import_path(&path, None);
    assert_eq!(only_spans, spans);
    assert_eq!(only_summary.log_records, 0);
}

#[test]
fn logs_files_are_detected_and_pretty_logs_documents_stream() {
    let dir = tempfile::tempdir().unwrap();
    let pretty = dir.path().join("logs.json");
    std::fs::write(
        &pretty,
        r#"{
  "resourceLogs": [
    {"scopeLogs": [{"logRecords": [
      {"timeUnixNano": "5", "severityNumber": "SEVERITY_NUMBER_ERROR",
       "body": {"stringValue": "boom"},
       "traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060708"},
      {"traceId": "0102", "body": {"stringValue": "a bad id"}}
    ]}]},
    {"scopeLogs": [{"logRecords": [{"body": {"stringValue": "no trace"}}]}]}
  ]
}
"#,
    )
    .unwrap();
    assert_eq!(
        super::detect_format(&std::fs::read(&pretty).unwrap()),
        Some(Format::OtlpJson)
    );
    let (spans, logs, summary) = import_with_logs(&pretty);
    assert!(spans.is_empty());
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].record.body, "boom");
    assert_eq!(summary.logs_without_trace, 1);
    assert_eq!(summary.records_skipped, 1);
    let problem = summary.first_problem.unwrap().to_string();
    assert!(
        problem.contains("record 1") && problem.contains("invalid trace id"),
        "{problem}"
    );
}
