//! OTLP logs (issue 17, item 1): records that carry a trace id are kept with their trace, over
//! gRPC and HTTP, protobuf and JSON, from the OpenTelemetry Python SDK's logging handler as from
//! a hand-made request; records without one are accepted and counted; bad input is answered
//! as for spans.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyInner;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;

use crate::common::{TestServer, kv, request, trace_id_for};
use crate::python_sdk::run_script;

async fn python_logs(server: &TestServer, protocol: &str) -> (String, String) {
    let endpoint = match protocol {
        "grpc" => server.addrs.otlp_grpc_url(),
        _ => server.addrs.otlp_http_url(),
    };
    let stdout = run_script("log_spans.py", protocol, endpoint, Vec::new()).await;
    let mut ids = stdout.split_whitespace().map(str::to_owned);
    (ids.next().unwrap(), ids.next().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_logging_records_join_their_spans_over_grpc_and_http() {
    let server = TestServer::start().await;
    for protocol in ["grpc", "http"] {
        let (trace_id, span_id) = python_logs(&server, protocol).await;
        let trace = server.trace(&trace_id).await;
        let span = trace["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["span_id"] == span_id.as_str())
            .unwrap_or_else(|| panic!("{protocol}: no span {span_id} in {trace}"));
        let logs = span["logs"].as_array().unwrap();
        assert_eq!(logs.len(), 2, "{protocol}: {span}");
        assert_eq!(logs[0]["severity"], "INFO");
        assert_eq!(logs[1]["severity"], "ERROR", "{protocol}: {span}");
        assert_eq!(logs[1]["severity_number"], 17);
        assert!(
            logs[1]["body"]
                .as_str()
                .unwrap()
                .contains("could not reserve stock"),
            "{span}"
        );
        assert_eq!(logs[1]["attributes"]["exception.type"], "KeyError");
    }
    // The record outside any span carried no trace: accepted, counted, not kept.
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("tracecov_logs_dropped_total{reason=\"no_trace\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tracecov_logs_stored_total 4"),
        "{metrics}"
    );
    server.stop().await;
}

fn log_request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: vec![kv("service.name", "inventory")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn record(trace_id: Vec<u8>, span_id: Vec<u8>, body: &str) -> LogRecord {
    LogRecord {
        time_unix_nano: 1_700_000_000_000_000_000,
        severity_number: 17,
        severity_text: "ERROR".into(),
        body: Some(AnyValue {
            value: Some(AnyInner::StringValue(body.into())),
        }),
        trace_id,
        span_id,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_records_are_kept_once_invalid_ones_are_partial_success_and_bad_bodies_400() {
    let server = TestServer::start().await;
    // Spans first, then their logs; a re-delivery of the logs stores nothing twice.
    let spans = request("inventory", 7, 2);
    let span_id = spans.resource_spans[0].scope_spans[0].spans[1]
        .span_id
        .clone();
    server
        .post_otlp("application/x-protobuf", spans.encode_to_vec(), false)
        .await;
    let logs = log_request(vec![
        record(trace_id_for(7), span_id.clone(), "stock reservation failed"),
        record(vec![1, 2, 3], span_id.clone(), "a bad trace id"),
        record(Vec::new(), Vec::new(), "no trace at all"),
    ]);
    let mut grpc = LogsServiceClient::connect(server.addrs.otlp_grpc_url())
        .await
        .unwrap();
    for _ in 0..2 {
        let answer = grpc.export(logs.clone()).await.unwrap().into_inner();
        let partial = answer.partial_success.unwrap();
        assert_eq!(partial.rejected_log_records, 1);
        assert!(
            partial.error_message.contains("invalid trace id"),
            "{partial:?}"
        );
    }
    let trace = server.trace(&hex::encode(trace_id_for(7))).await;
    let with_logs: Vec<_> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["logs"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(with_logs.len(), 1, "{trace}");
    assert_eq!(with_logs[0]["span_id"], hex::encode(&span_id));
    assert_eq!(with_logs[0]["logs"].as_array().unwrap().len(), 1);

    // OTLP/JSON, with an enum name for the severity: the same rules.
    let json = serde_json::json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [{
        "timeUnixNano": "1700000000000000001",
        "severityNumber": "SEVERITY_NUMBER_FATAL",
        "body": {"stringValue": "out of memory"},
        "traceId": hex::encode(trace_id_for(7)).to_uppercase(),
        "spanId": hex::encode(&span_id),
    }]}]}]});
    let resp = server
        .http
        .post(format!("{}/v1/logs", server.addrs.otlp_http_url()))
        .header("content-type", "application/json")
        .body(json.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "{}");
    let trace = server.trace(&hex::encode(trace_id_for(7))).await;
    let logs: Vec<_> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["logs"].as_array().unwrap().clone())
        .collect();
    assert_eq!(logs.len(), 2, "{trace}");
    assert_eq!(logs[1]["severity"], "FATAL");

    for (ct, body) in [
        ("application/x-protobuf", b"\xff\xff not protobuf".to_vec()),
        ("application/json", b"{\"resourceLogs\": 7}".to_vec()),
    ] {
        let resp = server
            .http
            .post(format!("{}/v1/logs", server.addrs.otlp_http_url()))
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{ct}");
    }
    server.stop().await;
}
