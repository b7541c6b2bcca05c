//! Every bad request gets a precise answer and the server keeps serving: after each one, a normal
//! export succeeds.

use std::io::Write as _;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;

use crate::common::{PATIENCE, TestServer, kv, request, trace_hex};

/// A normal export over both protocols must still work.
async fn still_serves(server: &TestServer, seed: u64) {
    let resp = server
        .post_otlp(
            "application/x-protobuf",
            request("after", seed, 2).encode_to_vec(),
            false,
        )
        .await;
    assert_eq!(resp.status(), 200, "HTTP export after bad input");
    let mut client = TraceServiceClient::connect(server.addrs.otlp_grpc_url())
        .await
        .unwrap();
    client
        .export(request("after", seed + 1000, 2))
        .await
        .expect("gRPC export after bad input");
    server.trace(&trace_hex(seed)).await;
    server.trace(&trace_hex(seed + 1000)).await;
}

/// Decodes a `google.rpc.Status` body.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_bodies_get_400_with_the_reason() {
    let server = TestServer::start().await;
    let resp = server
        .post_otlp(
            "application/x-protobuf",
            vec![0xff, 0xff, 0xff, 0x0f],
            false,
        )
        .await;
    assert_eq!(resp.status(), 400);
    let status = RpcStatus::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(status.code, tonic::Code::InvalidArgument as i32);
    assert!(
        status.message.contains("invalid OTLP protobuf"),
        "{}",
        status.message
    );

    let resp = server
        .post_otlp("application/json", b"{\"resourceSpans\": [".to_vec(), false)
        .await;
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("invalid OTLP/JSON") && msg.contains("line 1"),
        "{msg}"
    );

    let resp = server
        .post_otlp("application/json", b"\x1f\x8b not gzip".to_vec(), true)
        .await;
    assert_eq!(resp.status(), 400);
    still_serves(&server, 1).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_type_or_encoding_gets_415() {
    let server = TestServer::start().await;
    let resp = server
        .post_otlp("text/plain", b"hello".to_vec(), false)
        .await;
    assert_eq!(resp.status(), 415);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("application/x-protobuf")
    );
    let resp = server
        .http
        .post(server.traces_url())
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "br")
        .body(vec![1, 2, 3])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    still_serves(&server, 2).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413_and_a_gzip_bomb_is_cut_off() {
    let limit = 256 * 1024;
    let server = TestServer::start_with(|c| c.max_body_bytes = limit).await;
    let resp = server
        .post_otlp("application/x-protobuf", vec![0u8; limit + 1], false)
        .await;
    assert_eq!(resp.status(), 413);
    let status = RpcStatus::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(status.code, tonic::Code::ResourceExhausted as i32);
    assert!(
        status.message.contains("exceeds the limit"),
        "{}",
        status.message
    );

    // 64 MiB of zeros compress to about 64 KiB: under the limit on the wire, far over it inflated.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1024 * 1024];
    for _ in 0..64 {
        gz.write_all(&zeros).unwrap();
    }
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < limit);
    let resp = server.post_otlp("application/x-protobuf", bomb, true).await;
    assert_eq!(resp.status(), 413);
    still_serves(&server, 3).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_message_over_the_limit_gets_resource_exhausted() {
    let limit = 256 * 1024;
    let server = TestServer::start_with(|c| c.max_body_bytes = limit).await;
    let mut big = request("big", 40, 1);
    big.resource_spans[0].scope_spans[0].spans[0]
        .attributes
        .push(kv("blob", &"x".repeat(limit)));
    let mut client = TraceServiceClient::connect(server.addrs.otlp_grpc_url())
        .await
        .unwrap();
    let err = client.export(big.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    // The same through gzip: small on the wire, over the limit once inflated.
    let mut gz_client = TraceServiceClient::connect(server.addrs.otlp_grpc_url())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let err = gz_client.export(big).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    still_serves(&server, 4).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_grpc_message_gets_invalid_argument() {
    let server = TestServer::start().await;
    // A raw gRPC frame (uncompressed flag, length, bytes) that is not a protobuf message.
    let garbage = [0xffu8, 0xff, 0xff, 0xff, 0x0f];
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(garbage.len() as u32).to_be_bytes());
    frame.extend_from_slice(&garbage);
    let h2 = crate::common::http_builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .post(format!(
            "{}/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            server.addrs.otlp_grpc_url()
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(frame)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap()),
        Some("3"),
        "INVALID_ARGUMENT: {:?}",
        resp.headers()
    );
    still_serves(&server, 5).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ids_are_rejected_as_partial_success_and_the_rest_kept() {
    let server = TestServer::start().await;
    let mut req = request("partial", 6, 3);
    let spans = &mut req.resource_spans[0].scope_spans[0].spans;
    spans[0].trace_id = vec![0; 16];
    spans[1].span_id = vec![1, 2, 3];

    // HTTP/protobuf: the protobuf answer carries partial_success.
    let resp = server
        .post_otlp("application/x-protobuf", req.encode_to_vec(), false)
        .await;
    assert_eq!(resp.status(), 200);
    let answer = ExportTraceServiceResponse::decode(resp.bytes().await.unwrap()).unwrap();
    let partial = answer.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial
            .error_message
            .contains("invalid trace id: id is all zeros"),
        "{}",
        partial.error_message
    );
    let trace = server.trace(&trace_hex(6)).await;
    assert_eq!(trace["spans"].as_array().unwrap().len(), 1);

    // gRPC: the same answer.
    let mut client = TraceServiceClient::connect(server.addrs.otlp_grpc_url())
        .await
        .unwrap();
    let answer = client.export(req.clone()).await.unwrap().into_inner();
    assert_eq!(answer.partial_success.unwrap().rejected_spans, 2);

    // OTLP/JSON: int64 as a string, as protobuf's JSON mapping writes it.
    let json = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "00000000000000000000000000000000", "spanId": "0102030405060708", "name": "bad"},
        {"traceId": "not hex", "spanId": "0102030405060708", "name": "bad too"},
        {"traceId": trace_hex(7), "spanId": "0102030405060708", "name": "good"}
    ]}]}]});
    let resp = server
        .post_otlp("application/json", json.to_string().into_bytes(), false)
        .await;
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], "2", "{answer}");
    server.trace(&trace_hex(7)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_retry_later_and_never_grows() {
    let server = TestServer::start_with(|c| {
        c.writer.queue_spans = 10;
        c.writer.test_delay = Duration::from_secs(4);
    })
    .await;
    // Fill the queue: these 10 spans hold every permit until the slow writer commits them.
    let filler = {
        let http = server.http.clone();
        let url = server.traces_url();
        let body = request("filler", 8, 10).encode_to_vec();
        tokio::spawn(async move {
            http.post(url)
                .header("content-type", "application/x-protobuf")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    // Wait until the filler holds the whole queue (a fixed sleep flaked on a busy machine).
    // (Borrowed, not cloned: a live queue handle would keep the writer from ever stopping.)
    let deadline = std::time::Instant::now() + PATIENCE;
    while server.server.as_ref().unwrap().queue.depth_spans() < 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "the filler never filled the queue"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resp = server
        .post_otlp(
            "application/x-protobuf",
            request("refused", 9, 1).encode_to_vec(),
            false,
        )
        .await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let status = RpcStatus::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(status.code, tonic::Code::Unavailable as i32);
    assert!(
        status.message.contains("queue is full"),
        "{}",
        status.message
    );

    let mut client = TraceServiceClient::connect(server.addrs.otlp_grpc_url())
        .await
        .unwrap();
    let err = client.export(request("refused", 10, 1)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

    assert_eq!(
        filler.await.unwrap(),
        200,
        "the queued export is acknowledged"
    );
    // An acknowledged export's spans no longer hold room in the queue: the next export is taken.
    // (The writer used to answer before it freed the permits, and a busy machine refused this.)
    assert_eq!(server.server.as_ref().unwrap().queue.depth_spans(), 0);
    still_serves(&server, 11).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unknown_trace_ids_in_the_api() {
    let server = TestServer::start().await;
    let (status, body) = server.get_json("/api/traces/xyz").await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("malformed trace id")
    );
    let (status, body) = server
        .get_json("/api/traces/0123456789abcdef0123456789abcdef")
        .await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("no trace"));
    server.stop().await;
}
