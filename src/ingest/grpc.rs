//! The OTLP/gRPC receiver (default 127.0.0.1:4317): the trace service stores, the metrics and
//! logs services accept and discard, so SDKs that export every signal to one endpoint are quiet.
//!
//! Answers, all retryable ones marked so by OTLP's rules:
//! - undecodable message → INVALID_ARGUMENT, with tonic's description of what failed;
//! - message over the limit (after decompression too) → RESOURCE_EXHAUSTED;
//! - ingest queue full, or shutting down → UNAVAILABLE (retryable);
//! - some spans invalid → OK with `partial_success`.

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::convert::convert_request;
use super::forward::{Forwarder, span_count};
use super::queue::{IngestError, IngestQueue, SubmitError};
use std::sync::atomic::Ordering;

struct Traces {
    queue: IngestQueue,
    forward: Forwarder,
}

#[tonic::async_trait]
impl TraceService for Traces {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let request = request.into_inner();
        // Encoded again only when someone downstream wants it; sent on after our own commit.
        let forwarded = (!self.forward.is_empty()).then(|| {
            (
                bytes::Bytes::from(prost::Message::encode_to_vec(&request)),
                span_count(&request),
            )
        });
        let converted = convert_request(request);
        let rejected = converted.rejected;
        let message = converted.error_message();
        if rejected > 0 {
            self.queue
                .counters
                .spans_rejected_invalid
                .fetch_add(rejected, Ordering::Relaxed);
        }
        if !converted.spans.is_empty() {
            self.queue
                .write(converted.spans)
                .await
                .map_err(ingest_status)?;
        }
        if let Some((body, spans)) = forwarded {
            self.forward.forward(body, spans);
        }
        let partial_success = (rejected > 0).then_some(ExportTracePartialSuccess {
            rejected_spans: rejected as i64,
            error_message: message,
        });
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success,
        }))
    }
}

pub(crate) fn ingest_status(e: IngestError) -> Status {
    match e {
        IngestError::Submit(SubmitError::Full) => {
            Status::unavailable("ingest queue is full, retry later")
        }
        IngestError::Submit(SubmitError::Closed) => {
            Status::unavailable("collector is shutting down, retry later")
        }
        // A failed write is retryable: the client keeps the spans and tries again.
        IngestError::Store(e) => {
            Status::unavailable(format!("store write failed, retry later: {e}"))
        }
    }
}

struct Discard;

#[tonic::async_trait]
impl MetricsService for Discard {
    async fn export(
        &self,
        _request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Discard {
    async fn export(
        &self,
        _request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

/// gRPC's code for OUT_OF_RANGE, which tonic's codec uses for a message over the size limit.
const GRPC_OUT_OF_RANGE: &str = "11";
/// INTERNAL, which tonic's codec uses for a message that does not decode.
const GRPC_INTERNAL: &str = "13";
/// RESOURCE_EXHAUSTED, what the OTLP specification and our contract promise for a message over
/// the limit.
const GRPC_RESOURCE_EXHAUSTED: &str = "8";
/// INVALID_ARGUMENT, what they promise for a message that does not decode.
const GRPC_INVALID_ARGUMENT: &str = "3";

/// Tonic's codec answers before our services see a request: an over-long (uncompressed) message
/// with OUT_OF_RANGE and an undecodable one with INTERNAL. Our services never use OUT_OF_RANGE,
/// so every OUT_OF_RANGE is the size limit and becomes RESOURCE_EXHAUSTED (as tonic already says
/// for a message that inflates past the limit); an INTERNAL whose message says decoding failed
/// becomes INVALID_ARGUMENT, which tells the client not to retry the same bytes.
fn remap_codec_status<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let headers = resp.headers();
    let remapped = match headers.get("grpc-status").map(|v| v.as_bytes()) {
        Some(s) if s == GRPC_OUT_OF_RANGE.as_bytes() => Some(GRPC_RESOURCE_EXHAUSTED),
        Some(s) if s == GRPC_INTERNAL.as_bytes() => headers
            .get("grpc-message")
            .is_some_and(|m| {
                let m = m.as_bytes();
                m.starts_with(b"failed%20to%20decode") || m.starts_with(b"failed to decode")
            })
            .then_some(GRPC_INVALID_ARGUMENT),
        _ => None,
    };
    if let Some(code) = remapped {
        resp.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static(code));
    }
    resp
}

/// Serves OTLP/gRPC on `listener` until `shutdown` resolves; in-flight exports finish first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    queue: IngestQueue,
    forward: Forwarder,
    max_message_bytes: usize,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let traces = TraceServiceServer::new(Traces { queue, forward })
        .max_decoding_message_size(max_message_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    let metrics = MetricsServiceServer::new(Discard)
        .max_decoding_message_size(max_message_bytes)
        .accept_compressed(CompressionEncoding::Gzip);
    let logs = LogsServiceServer::new(Discard)
        .max_decoding_message_size(max_message_bytes)
        .accept_compressed(CompressionEncoding::Gzip);
    tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(remap_codec_status))
        .add_service(traces)
        .add_service(metrics)
        .add_service(logs)
        .serve_with_incoming_shutdown(
            // TCP_NODELAY: tonic sets it on connections it binds itself, not on a listener handed
            // to it. Without it Nagle's algorithm holds back the small reply frames of an export
            // until the client's delayed ACK, and an exporter with one request in flight (every
            // SDK's batch processor) waits tens of milliseconds per export for nothing.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}
