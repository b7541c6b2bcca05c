//! Bounded intake (issue 16, items 2, 3 and 5): exports are admitted by the memory they will
//! take before their bodies are read, a flood of large exports keeps the server within its
//! budget and loses nothing it acknowledged, and each listener holds a bounded number of
//! connections.

use std::io::Write as _;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;

use crate::common::{PATIENCE, TestServer, request, spawn_serve, wait_for_spans};

/// An OTLP/JSON export of `spans` ordinary HTTP client spans in traces of 50, ids drawn from
/// `seed`: what an SDK's exporter sends, only larger.
fn json_export(seed: u64, spans: usize) -> (Vec<u8>, usize) {
    let mut out = String::with_capacity(spans * 800);
    out.push_str(
        r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}}]},"scopeSpans":[{"scope":{"name":"requests"},"spans":["#,
    );
    for i in 0..spans {
        if i > 0 {
            out.push(',');
        }
        let trace = format!("{:016x}{:016x}", seed + 1, i / 50 + 1);
        let start = 1_700_000_000_000_000_000u64 + i as u64 * 1000;
        out.push_str(&format!(
            r#"{{"traceId":"{trace}","spanId":"{:016x}","name":"GET /api/items/{n}","kind":3,"startTimeUnixNano":"{start}","endTimeUnixNano":"{end}","attributes":[{{"key":"http.request.method","value":{{"stringValue":"GET"}}}},{{"key":"url.full","value":{{"stringValue":"http://inventory:8080/api/items/{n}?q=abc"}}}},{{"key":"server.address","value":{{"stringValue":"inventory"}}}},{{"key":"server.port","value":{{"intValue":"8080"}}}},{{"key":"http.response.status_code","value":{{"intValue":"200"}}}},{{"key":"user_agent.original","value":{{"stringValue":"python-requests/2.31"}}}}],"events":[{{"name":"log","timeUnixNano":"{start}","attributes":[{{"key":"message","value":{{"stringValue":"fetched item {n} from the cache-miss path"}}}}]}}],"status":{{}}}}"#,
            i + 1,
            n = i % 97,
            end = start + 5_000_000,
        ));
    }
    out.push_str("]}]}]}");
    (out.into_bytes(), spans)
}

/// The issue's flood: 32 concurrent 12 MiB OTLP/JSON exports. Before admission the server
/// decoded every one before refusing most, and went past 1 GB; now it stays within its budget
/// (under 768 MiB resident with the defaults), refuses what finds no room at once as retryable,
/// and stores every span it acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_json_exports_stays_within_the_memory_budget_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_serve(&dir.path().join("data"), &[]);
    const EXPORTS: u64 = 32;
    const SPANS: usize = 17_500;
    let bodies: Vec<(Vec<u8>, usize)> = (0..EXPORTS).map(|s| json_export(s, SPANS)).collect();
    assert!(
        bodies[0].0.len() >= 12 * 1024 * 1024,
        "{}",
        bodies[0].0.len()
    );
    let http = crate::common::http();
    let url = format!("{}/v1/traces", server.http);
    let answers = futures::future::join_all(bodies.into_iter().map(|(body, spans)| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let resp = http
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let retry_after = resp.headers().get("retry-after").is_some();
            let text = resp.text().await.unwrap();
            (status, retry_after, text, spans)
        }
    }))
    .await;
    let mut acknowledged = 0;
    let mut refused = 0;
    for (status, retry_after, text, spans) in &answers {
        match status {
            200 => acknowledged += spans,
            503 => {
                assert!(retry_after, "a refusal must say when to retry: {text}");
                assert!(text.contains("retry later"), "{text}");
                refused += 1;
            }
            other => panic!("unexpected answer {other}: {text}"),
        }
    }
    assert!(acknowledged > 0, "some exports must get in");
    assert!(refused > 0, "the flood must meet the budget");
    let peak = server.peak_rss();
    assert!(peak < 768 * 1024 * 1024, "peak resident {} MiB", peak >> 20);
    let stats = wait_for_spans(&http, &server.ui, acknowledged as u64).await;
    assert_eq!(stats["spans"], acknowledged as u64, "{stats}");
    let metrics = http
        .get(format!("{}/metrics", server.ui))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("tracecov_exports_refused_memory_total"))
        .unwrap_or_else(|| panic!("no refusal counter in {metrics}"));
    assert!(line.ends_with(&format!(" {refused}")), "{line}");
    let mut child = server.child;
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A half-sent body of a declared length holds the memory its length asks for (here all of
/// the budget), although not a byte more of it has been read: the next exports over gRPC and HTTP find no room and are
/// refused at once, retryable; once it is gone they get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_are_admitted_by_declared_size_before_their_bodies_are_read() {
    let server = TestServer::start_with(|c| c.max_request_memory = 8 << 20).await;
    let mut held = std::net::TcpStream::connect(server.addrs.http).unwrap();
    write!(
        held,
        "POST /v1/traces HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{{\"resourceSpans\":[",
        server.addrs.http,
        8 << 20
    )
    .unwrap();
    held.flush().unwrap();
    // The held export is admitted as soon as its headers are in: wait until the budget says so.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = server.metrics().await;
        if text
            .lines()
            .any(|l| l.starts_with("tracecov_request_memory_bytes ") && !l.ends_with(" 0"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the held export was never admitted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let export = request("admitted", 1, 400);
    let mut grpc = TraceServiceClient::connect(server.addrs.otlp_grpc_url())
        .await
        .unwrap();
    let refused = grpc.export(export.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("retry later"), "{refused:?}");
    let resp = server
        .post_otlp("application/x-protobuf", export.encode_to_vec(), false)
        .await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");

    // The held export goes away: its memory is free again.
    drop(held);
    let deadline = Instant::now() + PATIENCE;
    loop {
        match grpc.export(export.clone()).await {
            Ok(_) => break,
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => panic!("{s:?}"),
        }
    }
    let resp = server
        .post_otlp(
            "application/x-protobuf",
            request("admitted", 2, 400).encode_to_vec(),
            false,
        )
        .await;
    assert_eq!(resp.status(), 200);
    server.wait_for_spans(800).await;
    server.stop().await;
}

/// A gzip message over gRPC is inflated by the admission layer (off the async workers, its
/// reservation growing as it inflates) and stored like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_grpc_exports_are_stored() {
    let server = TestServer::start().await;
    let mut grpc = TraceServiceClient::connect(server.addrs.otlp_grpc_url())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    for seed in 0..3 {
        grpc.export(request("zipped", seed, 2_000)).await.unwrap();
    }
    server.wait_for_spans(6_000).await;
    server.stop().await;
}

/// Each listener holds at most `--max-connections` connections: idle ones beyond it wait to be
/// accepted, and an export on a further connection is answered once a place frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listener_holds_a_bounded_number_of_connections() {
    let server = TestServer::start_with(|c| c.max_connections = 4).await;
    let open_http = || async {
        let text = server.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix("tracecov_open_connections{listener=\"otlp_http\"} "))
            .map(|v| v.parse::<f64>().unwrap() as u64)
            .unwrap()
    };
    // Six idle clients: four are accepted, two wait in the backlog.
    let idle: Vec<_> = (0..6)
        .map(|_| std::net::TcpStream::connect(server.addrs.http).unwrap())
        .collect();
    let deadline = Instant::now() + PATIENCE;
    while open_http().await < 4 {
        assert!(
            Instant::now() < deadline,
            "the idle connections were never accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let export = {
        let (http, url) = (crate::common::http(), server.traces_url());
        tokio::spawn(async move {
            http.post(url)
                .header("content-type", "application/x-protobuf")
                .body(request("waiting", 1, 3).encode_to_vec())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    // Not proof by itself (a slow machine is slow anyway), but without the bound the export
    // would be answered at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!export.is_finished(), "an export got a fifth place");
    assert_eq!(open_http().await, 4);
    drop(idle);
    assert_eq!(export.await.unwrap(), 200);
    server.wait_for_spans(3).await;
    server.stop().await;
}

/// Retention ages the store out on its own clock, not only after a write: a server that
/// receives nothing more still removes traces past `--retention` (it used to keep them until
/// the next export arrived).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_still_ages_its_traces_out() {
    let server = TestServer::start_with(|c| {
        c.writer.retention.max_age = Duration::from_millis(500);
        c.writer.retention_every = Duration::from_millis(100);
    })
    .await;
    let (body, spans) = json_export(7, 50);
    let resp = server.post_otlp("application/json", body, false).await;
    assert_eq!(resp.status(), 200);
    server.wait_for_spans(spans as u64).await;
    // Nothing is sent from here on.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, stats) = server.get_json("/api/stats").await;
        assert_eq!(status, 200, "{stats}");
        if stats["spans"].as_u64() == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "an idle server kept its expired traces: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
