//! `tracecov bench ingest`: durable ingest over loopback gRPC, against the speed of merely
//! decoding the same payload with prost, measured in the same run.
//!
//! The payload is realistic for a test run: batches of 512 spans with about ten attributes each,
//! one resource per 1,000 spans. The load generator sends pre-encoded requests (a pass-through
//! codec), so the client's cost on the shared cores is framing, not protobuf encoding. A span
//! counts as ingested when its export was acknowledged, which happens only after its commit.
//!
//! Two more single-thread baselines split the receiver's own CPU work from the rest: decode +
//! conversion to the project's `Span`, and that plus the store encoding and hashing done before
//! an export is queued. The ratio stays durable ingest over decode-only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::config::ServeConfig;
use crate::server::{Listeners, Server};

pub struct IngestBenchArgs {
    pub spans: usize,
    pub runs: usize,
    pub concurrency: usize,
}

const BATCH: usize = 512;
const SPANS_PER_RESOURCE: usize = 1_000;

fn s(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        key_strindex: 0,
    }
}

fn i(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        key_strindex: 0,
    }
}

fn resource(n: usize) -> Resource {
    Resource {
        attributes: vec![
            s("service.name", format!("service-{}", n % 50)),
            s("service.version", "1.4.2"),
            s("deployment.environment.name", "ci"),
            s("telemetry.sdk.language", "rust"),
            s("host.name", format!("runner-{}", n % 7)),
        ],
        ..Default::default()
    }
}

/// SplitMix64's output function: spreads consecutive numbers over the whole range, the way SDKs'
/// random trace and span ids are spread. Sequential ids would flatter the store, whose indexes
/// then only ever grow at their right edge.
fn spread(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn span(n: usize) -> Span {
    let t = (n / 20) as u64;
    let trace = (u128::from(spread(2 * t)) << 64) | u128::from(spread(2 * t + 1));
    let id = |k: usize| spread(u64::MAX - k as u64).to_be_bytes().to_vec();
    let routes = [
        "/users/{id}",
        "/cart/{id}/items",
        "/checkout",
        "/payments/charge",
    ];
    Span {
        trace_id: trace.to_be_bytes().to_vec(),
        span_id: id(n),
        parent_span_id: if n.is_multiple_of(20) {
            Vec::new()
        } else {
            id(n - 1)
        },
        name: format!("GET {}", routes[n % routes.len()]),
        kind: 2 + (n % 2) as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000 + n as u64 * 1_000,
        end_time_unix_nano: 1_700_000_000_000_000_000 + n as u64 * 1_000 + 750_000,
        attributes: vec![
            s("http.request.method", "GET"),
            s("http.route", routes[n % routes.len()]),
            i(
                "http.response.status_code",
                if n.is_multiple_of(50) { 500 } else { 200 },
            ),
            s("url.path", format!("/users/{}", n % 997)),
            s("url.scheme", "http"),
            s("server.address", "127.0.0.1"),
            i("server.port", 8080 + (n % 10) as i64),
            s("network.protocol.version", "1.1"),
            s("user_agent.original", "integration-suite/2.0"),
            s(
                "test.case.name",
                format!("tests/test_flow.py::test_{}", n % 40),
            ),
        ],
        status: Some(Status {
            code: if n.is_multiple_of(50) { 2 } else { 0 },
            message: String::new(),
        }),
        ..Default::default()
    }
}

/// Builds the encoded requests: `spans` spans in batches of 512, a new resource every 1,000.
pub fn payload(spans: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut n = 0;
    while n < spans {
        let end = (n + BATCH).min(spans);
        let mut resource_spans: Vec<ResourceSpans> = Vec::new();
        for k in n..end {
            let r = k / SPANS_PER_RESOURCE;
            if resource_spans.is_empty() || (k % SPANS_PER_RESOURCE == 0) {
                resource_spans.push(ResourceSpans {
                    resource: Some(resource(r)),
                    scope_spans: vec![ScopeSpans::default()],
                    ..Default::default()
                });
            }
            if let Some(last) = resource_spans.last_mut() {
                last.scope_spans[0].spans.push(span(k));
            }
        }
        out.push(Bytes::from(
            ExportTraceServiceRequest { resource_spans }.encode_to_vec(),
        ));
        n = end;
    }
    out
}

/// Decode-only speed, spans/s: what prost alone does with the same bytes on one thread.
fn decode_only(payload: &[Bytes], spans: usize) -> f64 {
    let start = Instant::now();
    let mut seen = 0usize;
    for body in payload {
        let req = ExportTraceServiceRequest::decode(body.clone()).expect("benchmark payload");
        seen += req
            .resource_spans
            .iter()
            .flat_map(|r| r.scope_spans.iter().map(|s| s.spans.len()))
            .sum::<usize>();
    }
    assert_eq!(seen, spans);
    spans as f64 / start.elapsed().as_secs_f64()
}

/// The receiver's CPU work alone, spans/s on one thread: decode, convert to the project's
/// `Span` (a second baseline) and, with `encode`, also the store encoding and hashing that
/// ingest does before queueing. The difference to durable ingest is transport and SQLite.
fn decode_convert(payload: &[Bytes], spans: usize, encode: bool) -> f64 {
    let start = Instant::now();
    let mut seen = 0usize;
    for body in payload {
        let req = ExportTraceServiceRequest::decode(body.clone()).expect("benchmark payload");
        let converted = crate::ingest::convert::convert_request(req);
        if encode {
            seen += crate::store::EncodedSpans::encode(&converted.spans).len();
        } else {
            seen += converted.spans.len();
        }
    }
    assert_eq!(seen, spans);
    spans as f64 / start.elapsed().as_secs_f64()
}

/// Sends already-encoded request bytes; decodes the response normally.
#[derive(Clone, Default)]
struct PassThrough;

struct RawEncoder;
struct ResponseDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        ExportTraceServiceResponse::decode(bytes)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl Codec for PassThrough {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

/// One end-to-end run into a fresh store; durable spans/s.
async fn end_to_end(
    payload: Arc<Vec<Bytes>>,
    spans: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let dir = tempfile_dir()?;
    let mut config = ServeConfig::ephemeral(dir.join("data"));
    config.writer.queue_spans = 1 << 20;
    let listeners = Listeners::bind(&config).await?;
    let server = Server::start(config, listeners).await?;
    let endpoint = server.addrs.otlp_grpc_url();
    let channel = tonic::transport::Endpoint::from_shared(endpoint)?
        .connect()
        .await?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let channel = channel.clone();
        let payload = payload.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(64 << 20);
            let path = http::uri::PathAndQuery::from_static(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            );
            loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = payload.get(k) else { break };
                loop {
                    grpc.ready().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                    match grpc
                        .unary(tonic::Request::new(body.clone()), path.clone(), PassThrough)
                        .await
                    {
                        Ok(_) => break,
                        // Backpressure is the receiver working as designed: retry, as SDKs do.
                        Err(s) if s.code() == tonic::Code::Unavailable => {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(s) => anyhow::bail!("export failed: {s}"),
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = start.elapsed();
    let stored = server.reader.stats()?.spans;
    anyhow::ensure!(
        stored as usize == spans,
        "stored {stored} spans, sent {spans}"
    );
    server.shutdown().await?;
    std::fs::remove_dir_all(&dir).ok();
    Ok(spans as f64 / elapsed.as_secs_f64())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "tracecov-bench-{}-{}",
        std::process::id(),
        crate::ingest::now_ns()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub async fn run(args: IngestBenchArgs) -> anyhow::Result<()> {
    let payload = Arc::new(payload(args.spans));
    let bytes: usize = payload.iter().map(Bytes::len).sum();
    println!(
        "ingest benchmark: {} spans in {} requests of {} spans ({:.1} MiB), {} runs, {} concurrent exporters",
        args.spans,
        payload.len(),
        BATCH,
        bytes as f64 / (1024.0 * 1024.0),
        args.runs,
        args.concurrency
    );
    let mut decode = Vec::new();
    let mut convert = Vec::new();
    let mut encode = Vec::new();
    let mut e2e = Vec::new();
    let mut ratios = Vec::new();
    for run in 1..=args.runs {
        let p = payload.clone();
        let spans = args.spans;
        let (d, c, x) = tokio::task::spawn_blocking(move || {
            (
                decode_only(&p, spans),
                decode_convert(&p, spans, false),
                decode_convert(&p, spans, true),
            )
        })
        .await?;
        let e = end_to_end(payload.clone(), args.spans, args.concurrency).await?;
        println!(
            "  run {run}: decode-only {d:>8.0}  +convert {c:>8.0}  +store encoding {x:>8.0}  \
             durable ingest {e:>8.0} spans/s  ratio {:.2}",
            e / d
        );
        decode.push(d);
        convert.push(c);
        encode.push(x);
        e2e.push(e);
        ratios.push(e / d);
    }
    let (d, c, x, e) = (median(decode), median(convert), median(encode), median(e2e));
    println!(
        "median: decode-only {d:.0} spans/s, decode+convert {c:.0} spans/s, \
         decode+convert+store encoding {x:.0} spans/s, durable ingest {e:.0} spans/s, \
         ratio {:.2} (median of the runs' ratios {:.2})",
        e / d,
        median(ratios)
    );
    Ok(())
}
