//! OTLP forwarding (`--forward`): exports into one tracecov reach a second (and third) in-process
//! tracecov over gRPC and OTLP/HTTP; a dead or black-holed downstream never delays an
//! acknowledgement, and what it did not get is counted in `/metrics`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use tracecov::ingest::{ForwardConfig, ForwardTarget};

use crate::common::{PATIENCE, TestServer, request, trace_hex};
use crate::metrics::parse_exposition;

fn forward_to(url: &str) -> ForwardConfig {
    let target: ForwardTarget = url.parse().unwrap();
    ForwardConfig {
        // Quick retries: the dead-downstream test waits for them to run out.
        backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_attempts: 3,
        ..ForwardConfig::new(target)
    }
}

/// Sends `exports` exports of `spans` spans each into `server`, alternating OTLP/HTTP protobuf
/// and OTLP/gRPC, each of which must be acknowledged within `within`.
async fn export(server: &TestServer, seeds: std::ops::Range<u64>, spans: usize, within: Duration) {
    let mut grpc = TraceServiceClient::connect(server.addrs.otlp_grpc_url())
        .await
        .unwrap();
    for seed in seeds {
        let req = request("upstream-svc", seed, spans);
        let started = Instant::now();
        if seed % 2 == 0 {
            let resp = tokio::time::timeout(
                within,
                server.post_otlp("application/x-protobuf", req.encode_to_vec(), false),
            )
            .await
            .unwrap_or_else(|_| {
                panic!("export {seed} over HTTP not acknowledged within {within:?}")
            });
            assert_eq!(resp.status(), 200, "export {seed}");
        } else {
            tokio::time::timeout(within, grpc.export(req))
                .await
                .unwrap_or_else(|_| {
                    panic!("export {seed} over gRPC not acknowledged within {within:?}")
                })
                .unwrap();
        }
        assert!(started.elapsed() < within);
    }
}

/// Scrapes `/metrics` until `done` holds (the analysed part is cached for a few seconds; the
/// counters are fresh every scrape).
async fn metrics_until(
    server: &TestServer,
    what: &str,
    done: impl Fn(&BTreeMap<(String, BTreeMap<String, String>), f64>) -> bool,
) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = server.metrics().await;
        let m = parse_exposition(&text);
        if done(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn forward_sample(
    m: &BTreeMap<(String, BTreeMap<String, String>), f64>,
    name: &str,
    destination: &str,
    reason: Option<&str>,
) -> f64 {
    m.iter()
        .find(|((n, l), _)| {
            n == name
                && l.get("destination").map(String::as_str) == Some(destination)
                && l.get("reason").map(String::as_str) == reason
        })
        .map(|(_, v)| *v)
        .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_delivers_every_span_over_grpc_and_http() {
    let over_grpc = TestServer::start().await;
    let over_http = TestServer::start().await;
    let grpc_url = format!("grpc://{}", over_grpc.addrs.grpc);
    let http_url = format!("http://{}", over_http.addrs.http);
    let upstream = {
        let (g, h) = (grpc_url.clone(), http_url.clone());
        TestServer::start_with(move |c| c.forward = vec![forward_to(&g), forward_to(&h)]).await
    };

    // 10 exports of 7 spans, half over each receiver.
    export(&upstream, 0..10, 7, Duration::from_secs(10)).await;
    upstream.wait_for_spans(70).await;
    over_grpc.wait_for_spans(70).await;
    over_http.wait_for_spans(70).await;
    // The same spans, not just as many.
    for seed in [0, 5, 9] {
        let mine = upstream.trace(&trace_hex(seed)).await;
        for downstream in [&over_grpc, &over_http] {
            let theirs = downstream.trace(&trace_hex(seed)).await;
            assert_eq!(theirs["spans"], mine["spans"], "trace {seed}");
        }
    }
    let m = metrics_until(&upstream, "70 spans sent to each destination", |m| {
        [&grpc_url, &http_url]
            .iter()
            .all(|d| forward_sample(m, "tracecov_forward_spans_sent_total", d, None) == 70.0)
    })
    .await;
    for d in [&grpc_url, &http_url] {
        assert_eq!(
            forward_sample(&m, "tracecov_forward_exports_sent_total", d, None),
            10.0
        );
        for reason in ["queue_full", "failed", "shutdown"] {
            assert_eq!(
                forward_sample(&m, "tracecov_forward_dropped_spans_total", d, Some(reason)),
                0.0,
                "{d} {reason}"
            );
        }
    }

    upstream.stop().await;
    over_grpc.stop().await;
    over_http.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_silent_downstream_never_delays_acknowledgements_and_its_drops_are_counted() {
    // A downstream that was stopped: its port refuses connections.
    let dead = TestServer::start().await;
    let dead_url = format!("http://{}", dead.addrs.http);
    let dead_grpc_url = format!("grpc://{}", dead.addrs.grpc);
    dead.stop().await;
    // A downstream that accepts connections and never answers.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_url = format!("http://{}", hole.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = hole.accept().await {
            held.push(conn);
        }
    });

    let upstream = {
        let (d, g, h) = (dead_url.clone(), dead_grpc_url.clone(), hole_url.clone());
        TestServer::start_with(move |c| {
            c.forward = vec![
                forward_to(&d),
                forward_to(&g),
                ForwardConfig {
                    // One export at a time, each waiting far longer than the test would.
                    queue_bytes: 1,
                    timeout: Duration::from_secs(60),
                    ..forward_to(&h)
                },
            ]
        })
        .await
    };

    // Had forwarding sat on the acknowledgement path, the silent destination alone would hold
    // each export for a minute.
    export(&upstream, 100..120, 5, Duration::from_secs(5)).await;
    let stats = upstream.wait_for_spans(100).await;
    assert_eq!(stats["spans"], 100);

    let m = metrics_until(&upstream, "every span dropped by the dead ones", |m| {
        [&dead_url, &dead_grpc_url].iter().all(|d| {
            forward_sample(m, "tracecov_forward_dropped_spans_total", d, Some("failed")) == 100.0
        })
    })
    .await;
    for d in [&dead_url, &dead_grpc_url] {
        assert_eq!(
            forward_sample(&m, "tracecov_forward_spans_sent_total", d, None),
            0.0
        );
        assert_eq!(
            forward_sample(
                &m,
                "tracecov_forward_dropped_exports_total",
                d,
                Some("failed")
            ),
            20.0
        );
        // Every export was tried three times.
        assert_eq!(
            forward_sample(&m, "tracecov_forward_retries_total", d, None),
            40.0
        );
    }
    // The silent one holds the first export; the queue (one export's worth) refused the rest.
    assert_eq!(
        forward_sample(
            &m,
            "tracecov_forward_dropped_spans_total",
            &hole_url,
            Some("queue_full")
        ),
        95.0
    );
    assert_eq!(
        forward_sample(&m, "tracecov_forward_queue_exports", &hole_url, None),
        1.0
    );

    // Shutting down does not wait for the silent destination either.
    let started = Instant::now();
    upstream.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown waited {:?} for a silent downstream",
        started.elapsed()
    );
    holder.abort();
}
