//! The OTLP/gRPC receiver (default 127.0.0.1:4317): the trace service stores spans, the logs
//! service keeps log records that carry a trace id with their trace, the metrics service accepts
//! and discards, so SDKs that export every signal to one endpoint are quiet.
//!
//! Answers, all retryable ones marked so by OTLP's rules:
//! - undecodable message → INVALID_ARGUMENT, with tonic's description of what failed;
//! - message over the limit (after decompression too) → RESOURCE_EXHAUSTED;
//! - ingest queue full, no room in the request memory budget (decided from the message's length
//!   prefix, before the message is read; see `admission`), or shutting down → UNAVAILABLE
//!   (retryable);
//! - some spans invalid → OK with `partial_success`.

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use http_body_util::BodyExt as _;
use prost::Message as _;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstEncoder;

use super::admission::{Admission, Inflate, Reservation, Wire, inflate};

use super::convert::{convert_logs, convert_request};
use super::forward::{Forwarder, span_count};
use super::queue::{IngestError, IngestQueue, SubmitError};
use std::sync::atomic::Ordering;

struct Traces {
    queue: IngestQueue,
    forward: Forwarder,
}

/// The one method of OTLP's trace service: `/opentelemetry.proto.collector.trace.v1.TraceService/Export`.
const TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// Every OTLP collector service's paths start so; the admission layer guards them all.
const OTLP_SERVICES: &str = "/opentelemetry.proto.collector.";

impl RawExport for Traces {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const EXPORT: &'static str = TRACE_EXPORT;
    type Answer = ExportTraceServiceResponse;
    fn export(
        self: Arc<Self>,
        request: Request<Bytes>,
    ) -> BoxFuture<'static, Result<Response<ExportTraceServiceResponse>, Status>> {
        Box::pin(self.export_traces(request))
    }
}

/// The reservation a request was admitted with, taken out of its extensions: held by the
/// service until the export is answered.
fn reservation<T>(request: &mut Request<T>) -> Option<Reservation> {
    request
        .extensions_mut()
        .remove::<Admitted>()
        .and_then(|a| a.0.lock().ok()?.take())
}

impl Traces {
    /// One export: its message arrives as raw bytes (`RawCodec`), is decoded and converted on a
    /// blocking thread (CPU work kept off the async workers), then queued for the store.
    async fn export_traces(
        self: Arc<Self>,
        mut request: Request<Bytes>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        // Held until the export is answered (see `admission`); absent only if the layer let the
        // request through without one (a malformed frame tonic itself refuses).
        let _reservation = reservation(&mut request);
        let body = request.into_inner();
        let forward = !self.forward.is_empty();
        let (converted, forwarded) = tokio::task::spawn_blocking(move || {
            let request = ExportTraceServiceRequest::decode(&body[..]).map_err(|e| {
                Status::invalid_argument(format!("failed to decode the OTLP protobuf message: {e}"))
            })?;
            // What is forwarded is the message as received.
            let forwarded = forward.then(|| (body.clone(), span_count(&request)));
            Ok::<_, Status>((convert_request(request), forwarded))
        })
        .await
        .map_err(|e| Status::internal(format!("decoding failed: {e}")))??;
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

/// A codec whose requests are the message's bytes, undecoded: tonic would otherwise decode on
/// the async worker that polls the connection. Answers (`R`) are encoded as usual.
struct RawCodec<R>(std::marker::PhantomData<R>);

struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

impl<R: prost::Message + Default + Send + 'static> Codec for RawCodec<R> {
    type Encode = R;
    type Decode = Bytes;
    type Encoder = ProstEncoder<R>;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

/// An OTLP service with one method, `Export`, whose request it decodes itself (off the async
/// workers) from the raw message.
trait RawExport: Send + Sync + 'static {
    /// The service's full name, and its one method's path.
    const NAME: &'static str;
    const EXPORT: &'static str;
    type Answer: prost::Message + Default + Send + 'static;
    fn export(
        self: Arc<Self>,
        request: Request<Bytes>,
    ) -> BoxFuture<'static, Result<Response<Self::Answer>, Status>>;
}

/// A `RawExport` service as tonic serves it: written out rather than generated, so that it can
/// use `RawCodec`.
struct RawServer<S> {
    service: Arc<S>,
    max_message_bytes: usize,
}

impl<S> Clone for RawServer<S> {
    fn clone(&self) -> Self {
        Self {
            service: self.service.clone(),
            max_message_bytes: self.max_message_bytes,
        }
    }
}

impl<S: RawExport> NamedService for RawServer<S> {
    const NAME: &'static str = S::NAME;
}

struct ExportMethod<S>(Arc<S>);

impl<S: RawExport> UnaryService<Bytes> for ExportMethod<S> {
    type Response = S::Answer;
    type Future = BoxFuture<'static, Result<Response<S::Answer>, Status>>;
    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        self.0.clone().export(request)
    }
}

impl<S: RawExport, B> tower::Service<http::Request<B>> for RawServer<S>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if req.uri().path() != S::EXPORT {
                return Ok(Status::unimplemented("no such method").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(RawCodec::<S::Answer>(Default::default()))
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(this.max_message_bytes);
            Ok(grpc.unary(ExportMethod(this.service), req).await)
        })
    }
}

/// The reservation an export was admitted with, handed from the admission layer to the service
/// through the request's extensions (which must be `Clone`).
#[derive(Clone)]
struct Admitted(Arc<Mutex<Option<Reservation>>>);

/// Admits OTLP exports: their bearer token when `--ingest-token` is set (UNAUTHENTICATED
/// otherwise), then by their message's length before reading it (see `admission`). The
/// length is in the first five bytes of a gRPC message, so only those are read here: no room
/// answers UNAVAILABLE at once. A gzip message is read whole (its compressed size is admitted)
/// and inflated here, on a blocking thread, growing the reservation as it inflates; tonic then
/// sees it uncompressed.
#[derive(Clone)]
struct AdmitLayer {
    admission: Admission,
    /// `--ingest-token`, checked before anything is reserved.
    token: Option<crate::web::auth::Token>,
    max_message_bytes: usize,
}

impl<S> tower::Layer<S> for AdmitLayer {
    type Service = Admit<S>;
    fn layer(&self, inner: S) -> Admit<S> {
        Admit {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
struct Admit<S> {
    inner: S,
    layer: AdmitLayer,
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for Admit<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
    S::Error: Send,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        // The clone is the one made ready; the original stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            if !req.uri().path().starts_with(OTLP_SERVICES) {
                return inner.call(req).await;
            }
            match layer.admit(req).await {
                Ok(req) => inner.call(req).await,
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

impl AdmitLayer {
    async fn admit(
        &self,
        req: http::Request<tonic::body::Body>,
    ) -> Result<http::Request<tonic::body::Body>, Status> {
        if let Some(token) = &self.token
            && !token.in_bearer(req.headers())
        {
            return Err(Status::unauthenticated(
                "this receiver requires the metadata authorization: Bearer <the --ingest-token>; \
                 with an OpenTelemetry SDK set OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<token>",
            ));
        }
        let (mut parts, mut body) = req.into_parts();
        let mut head = BytesMut::new();
        read_at_least(&mut body, &mut head, 5).await?;
        let len = (head.len() >= 5)
            .then(|| u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize);
        let Some(len) = len.filter(|&n| n <= self.max_message_bytes) else {
            // Too short, or over the limit: tonic answers it from the first bytes alone.
            return Ok(http::Request::from_parts(
                parts,
                prefixed(head.freeze(), body),
            ));
        };
        let mut reservation = self
            .admission
            .try_admit(len, Wire::Protobuf)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let gzip = head[0] == 1
            && parts
                .headers
                .get("grpc-encoding")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let body = if gzip {
            read_at_least(&mut body, &mut head, 5 + len).await?;
            if head.len() < 5 + len {
                return Err(Status::invalid_argument(
                    "the request ended inside its message",
                ));
            }
            let mut head = head.freeze();
            let compressed = head.slice(5..5 + len);
            let rest = head.split_off(5 + len);
            let max = self.max_message_bytes;
            let (message, kept) = tokio::task::spawn_blocking(move || {
                let out = inflate(&compressed, max, &mut reservation);
                (out, reservation)
            })
            .await
            .map_err(|e| Status::internal(format!("decompression failed: {e}")))?;
            reservation = kept;
            let message = message.map_err(|e| match e {
                Inflate::TooLarge => Status::resource_exhausted(format!(
                    "the message inflates past the limit of {max} bytes"
                )),
                Inflate::NoRoom(e) => Status::unavailable(e.to_string()),
                Inflate::Invalid(e) => {
                    Status::invalid_argument(format!("invalid gzip message: {e}"))
                }
            })?;
            parts.headers.remove("grpc-encoding");
            let mut framed = BytesMut::with_capacity(5 + message.len() + rest.len());
            framed.put_u8(0);
            framed.put_u32(message.len() as u32);
            framed.extend_from_slice(&message);
            framed.extend_from_slice(&rest);
            drop(message);
            prefixed(framed.freeze(), body)
        } else {
            prefixed(head.freeze(), body)
        };
        parts
            .extensions
            .insert(Admitted(Arc::new(Mutex::new(Some(reservation)))));
        Ok(http::Request::from_parts(parts, body))
    }
}

/// Reads `body` into `head` until it holds `n` bytes or the body ends.
async fn read_at_least(
    body: &mut tonic::body::Body,
    head: &mut BytesMut,
    n: usize,
) -> Result<(), Status> {
    while head.len() < n {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    head.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => {
                return Err(Status::cancelled(format!(
                    "reading the request failed: {e}"
                )));
            }
            None => break,
        }
    }
    Ok(())
}

/// `head`, then the rest of `body`.
fn prefixed(head: Bytes, body: tonic::body::Body) -> tonic::body::Body {
    let rest = body.into_data_stream();
    let all = futures::stream::once(async move { Ok::<_, Status>(head) })
        .chain(rest)
        .map(|chunk| chunk.map(http_body::Frame::data));
    tonic::body::Body::new(http_body_util::StreamBody::new(all))
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

/// The logs service: records with a trace id are kept with their trace, like spans; records
/// without one are accepted and dropped (counted).
struct Logs {
    queue: IngestQueue,
}

impl RawExport for Logs {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const EXPORT: &'static str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    type Answer = ExportLogsServiceResponse;
    fn export(
        self: Arc<Self>,
        request: Request<Bytes>,
    ) -> BoxFuture<'static, Result<Response<ExportLogsServiceResponse>, Status>> {
        Box::pin(self.export_logs(request))
    }
}

impl Logs {
    /// Like traces: decoded and converted on a blocking thread, then queued.
    async fn export_logs(
        self: Arc<Self>,
        mut request: Request<Bytes>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let _reservation = reservation(&mut request);
        let body = request.into_inner();
        let converted = tokio::task::spawn_blocking(move || {
            ExportLogsServiceRequest::decode(&body[..])
                .map(convert_logs)
                .map_err(|e| {
                    Status::invalid_argument(format!(
                        "failed to decode the OTLP protobuf message: {e}"
                    ))
                })
        })
        .await
        .map_err(|e| Status::internal(format!("decoding failed: {e}")))??;
        self.queue
            .counters
            .logs_without_trace
            .fetch_add(converted.without_trace, Ordering::Relaxed);
        let (rejected, message) = (converted.rejected, converted.error_message());
        if !converted.logs.is_empty() {
            self.queue
                .write_logs(converted.logs)
                .await
                .map_err(ingest_status)?;
        }
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: (rejected > 0).then_some(ExportLogsPartialSuccess {
                rejected_log_records: rejected as i64,
                error_message: message,
            }),
        }))
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
    listener: crate::net::Incoming,
    queue: IngestQueue,
    forward: Forwarder,
    admission: Admission,
    token: Option<crate::web::auth::Token>,
    max_message_bytes: usize,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let traces = RawServer {
        service: Arc::new(Traces {
            queue: queue.clone(),
            forward,
        }),
        max_message_bytes,
    };
    let metrics = MetricsServiceServer::new(Discard)
        .max_decoding_message_size(max_message_bytes)
        .accept_compressed(CompressionEncoding::Gzip);
    let logs = RawServer {
        service: Arc::new(Logs { queue }),
        max_message_bytes,
    };
    tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(remap_codec_status))
        .layer(AdmitLayer {
            admission,
            token,
            max_message_bytes,
        })
        .add_service(traces)
        .add_service(metrics)
        .add_service(logs)
        .serve_with_incoming_shutdown(
            // The listener sets TCP_NODELAY (`with_nodelay`): tonic sets it only on connections
            // it binds itself. Without it Nagle's algorithm holds back the small reply frames of
            // an export until the client's delayed ACK, and an exporter with one request in
            // flight (every SDK's batch processor) waits tens of milliseconds per export.
            listener.into_stream(),
            shutdown,
        )
        .await
}
