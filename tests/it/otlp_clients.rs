//! The Rust `opentelemetry-otlp` exporter, over gRPC and over HTTP/protobuf, delivers spans with
//! their attributes, events, links and status intact.

use opentelemetry::trace::{
    Link, Span as _, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _,
};
use opentelemetry::{Array, Context, KeyValue, Value};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::common::TestServer;

#[derive(Clone, Copy, Debug)]
enum Transport {
    Grpc,
    Http,
}

async fn export_sample(server: &TestServer, transport: Transport) -> (String, String) {
    // The SDK's HTTP exporter builds a reqwest client (`tracecov::tls`).
    tracecov::tls::install_provider();
    let exporter = match transport {
        Transport::Grpc => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(server.addrs.otlp_grpc_url())
            .build()
            .unwrap(),
        Transport::Http => SpanExporter::builder()
            .with_http()
            .with_endpoint(server.traces_url())
            .build()
            .unwrap(),
    };
    let provider = SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name("checkout")
                .with_attribute(KeyValue::new("service.version", "1.2.3"))
                .build(),
        )
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer("tracecov-it");

    let other = tracer.start("publish order");
    let other_cx = other.span_context().clone();
    drop(other);

    let parent = tracer
        .span_builder("POST /checkout")
        .with_kind(SpanKind::Server)
        .start(&tracer);
    let trace_id = parent.span_context().trace_id().to_string();
    let cx = Context::current_with_span(parent);
    let mut child = tracer
        .span_builder("POST")
        .with_kind(SpanKind::Client)
        .with_attributes(vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.response.status_code", 500_i64),
            KeyValue::new("retry", true),
            KeyValue::new("ratio", 0.25),
            KeyValue::new(
                "tags",
                Value::Array(Array::String(vec!["a".into(), "b".into()])),
            ),
        ])
        .with_links(vec![Link::with_context(other_cx)])
        .start_with_context(&tracer, &cx);
    child.add_event(
        "exception",
        vec![
            KeyValue::new("exception.type", "LedgerError"),
            KeyValue::new("exception.message", "ledger write failed"),
        ],
    );
    child.set_status(Status::error("payments answered 500"));
    let child_id = child.span_context().span_id().to_string();
    child.end();
    cx.span().end();

    // Flushing blocks on the exporter: keep it off the async workers.
    tokio::task::spawn_blocking(move || {
        provider.force_flush().unwrap();
        provider.shutdown().unwrap();
    })
    .await
    .unwrap();
    (trace_id, child_id)
}

async fn check_delivery(transport: Transport) {
    let server = TestServer::start().await;
    let (trace_id, child_id) = export_sample(&server, transport).await;
    server.wait_for_spans(3).await;
    let trace = server.trace(&trace_id).await;
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2, "{transport:?}: {trace}");
    let child = spans
        .iter()
        .find(|s| s["span_id"] == child_id.as_str())
        .unwrap_or_else(|| panic!("child missing: {trace}"));
    let parent = spans
        .iter()
        .find(|s| s["name"] == "POST /checkout")
        .unwrap();
    assert_eq!(child["parent_span_id"], parent["span_id"]);
    assert_eq!(child["kind"], "client");
    assert_eq!(parent["kind"], "server");
    assert_eq!(child["service"], "checkout");
    assert_eq!(child["resource"]["service.version"], "1.2.3");
    assert_eq!(child["scope"]["name"], "tracecov-it");
    let attrs = &child["attributes"];
    assert_eq!(attrs["http.request.method"], "POST");
    assert_eq!(attrs["http.response.status_code"], 500);
    assert_eq!(attrs["retry"], true);
    assert_eq!(attrs["ratio"], 0.25);
    assert_eq!(attrs["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(child["status"]["code"], "error");
    assert_eq!(child["status"]["message"], "payments answered 500");
    let event = &child["events"][0];
    assert_eq!(event["name"], "exception");
    assert_eq!(event["attributes"]["exception.type"], "LedgerError");
    let link = &child["links"][0];
    assert_eq!(link["span_id"].as_str().unwrap().len(), 16);
    assert!(child["end_unix_nano"].as_u64() >= child["start_unix_nano"].as_u64());
    let stats = server.stats().await;
    assert_eq!(stats["spans"], 3, "{stats}");
    assert_eq!(stats["traces"], 2, "{stats}");
    assert_eq!(stats["services"], 1, "{stats}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_exporter_over_grpc_delivers_attributes_events_links_and_status() {
    check_delivery(Transport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_exporter_over_http_protobuf_delivers_attributes_events_links_and_status() {
    check_delivery(Transport::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_the_addresses_actually_bound() {
    let server = TestServer::start().await;
    let (status, health) = server.get_json("/api/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["otlp_grpc"], server.addrs.grpc.to_string());
    assert_eq!(health["otlp_http"], server.addrs.otlp_http_url());
    assert_eq!(health["ui"], server.addrs.ui_url());
    assert_ne!(server.addrs.grpc.port(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_discarded_and_empty_log_exports_accepted() {
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    let server = TestServer::start().await;
    for path in ["/v1/metrics", "/v1/logs"] {
        let resp = server
            .http
            .post(format!("{}{path}", server.addrs.otlp_http_url()))
            .header("content-type", "application/x-protobuf")
            .body(Vec::new())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    let mut metrics = MetricsServiceClient::connect(server.addrs.otlp_grpc_url())
        .await
        .unwrap();
    metrics
        .export(opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest::default()).await.unwrap();
    let mut logs = LogsServiceClient::connect(server.addrs.otlp_grpc_url())
        .await
        .unwrap();
    logs.export(
        opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest::default(),
    )
    .await
    .unwrap();
    assert_eq!(server.stats().await["spans"], 0);
    server.stop().await;
}
