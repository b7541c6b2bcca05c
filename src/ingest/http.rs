//! The OTLP/HTTP receiver (default 127.0.0.1:4318): `POST /v1/traces` stores spans, `/v1/logs`
//! keeps log records that carry a trace id with their trace; `/v1/metrics` accepts and discards.
//!
//! Encodings: `application/x-protobuf` (also `application/protobuf`) and `application/json`,
//! optionally `Content-Encoding: gzip`. Responses use the request's encoding, as OTLP/HTTP says.
//!
//! Answers:
//! - 200 with `ExportTraceServiceResponse` (and `partial_success` when some spans were invalid);
//! - 400 undecodable body, saying what failed;
//! - 413 body over the limit, before or after decompression (a gzip bomb is cut off at the limit,
//!   never inflated whole);
//! - 415 unsupported content type or content encoding;
//! - 503 with `Retry-After` when the ingest queue is full or the export finds no room in the
//!   request memory budget (retryable per OTLP; see `admission`: decided before the body is
//!   read).
//!
//! Error bodies are a `google.rpc.Status` in the request's encoding where it has one.

use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use super::admission::{Admission, Inflate, NoRoom, Reservation, Wire, inflate};
use super::convert::{convert_logs, convert_request};
use super::forward::{Forwarder, span_count};
use super::otlp_json;
use super::queue::{IngestError, IngestQueue, SubmitError};

#[derive(Clone)]
struct HttpState {
    queue: IngestQueue,
    forward: Forwarder,
    admission: Admission,
    max_body_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

/// google.rpc.Status, the error body OTLP/HTTP asks for. Only the fields we fill.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// A refused request: its HTTP status, the gRPC code its `Status` body carries, and why.
struct Refusal {
    status: StatusCode,
    grpc_code: i32,
    message: String,
    retry_after: bool,
}

impl Refusal {
    fn new(status: StatusCode, grpc_code: tonic::Code, message: impl Into<String>) -> Self {
        Self {
            status,
            grpc_code: grpc_code as i32,
            message: message.into(),
            retry_after: false,
        }
    }

    fn into_response(self, encoding: Option<Encoding>) -> Response {
        let mut resp = match encoding {
            Some(Encoding::Protobuf) => (
                self.status,
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                RpcStatus {
                    code: self.grpc_code,
                    message: self.message,
                }
                .encode_to_vec(),
            )
                .into_response(),
            Some(Encoding::Json) => (
                self.status,
                axum::Json(serde_json::json!({"code": self.grpc_code, "message": self.message})),
            )
                .into_response(),
            None => (
                self.status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                self.message,
            )
                .into_response(),
        };
        if self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

fn content_encoding(headers: &HeaderMap) -> Result<Option<Encoding>, Refusal> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            tonic::Code::InvalidArgument,
            "missing Content-Type: use application/x-protobuf or application/json",
        ));
    };
    let ct = ct.to_str().unwrap_or("");
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Some(Encoding::Protobuf)),
        "application/json" => Ok(Some(Encoding::Json)),
        _ => Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            tonic::Code::InvalidArgument,
            format!(
                "unsupported Content-Type {ct:?}: use application/x-protobuf or application/json"
            ),
        )),
    }
}

fn too_large(limit: usize) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        tonic::Code::ResourceExhausted,
        format!("request body exceeds the limit of {limit} bytes"),
    )
}

fn no_room(e: NoRoom) -> Refusal {
    let mut r = Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        tonic::Code::Unavailable,
        e.to_string(),
    );
    r.retry_after = true;
    r
}

fn gzip_encoded(headers: &HeaderMap) -> Result<bool, Refusal> {
    match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
    {
        None => Ok(false),
        Some(e) if e.is_empty() || e == "identity" => Ok(false),
        Some(e) if e == "gzip" || e == "x-gzip" => Ok(true),
        Some(e) => Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            tonic::Code::InvalidArgument,
            format!("unsupported Content-Encoding {e:?}: use gzip or none"),
        )),
    }
}

/// The declared body length, if the client sent one.
fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Admits an export by its declared size before a byte of its body is read (see `admission`).
/// A body declared over the limit is refused 413 at once; one that finds no room is read and
/// thrown away chunk by chunk (an HTTP/1.1 client that is still sending would otherwise see its
/// connection reset instead of the answer) and answered 503 with `Retry-After`.
async fn admit(
    state: &HttpState,
    headers: &HeaderMap,
    body: Body,
    encoding: Encoding,
) -> Result<(Reservation, Body), Refusal> {
    let declared = content_length(headers);
    if declared.is_some_and(|n| n > state.max_body_bytes) {
        return Err(too_large(state.max_body_bytes));
    }
    let wire = match encoding {
        Encoding::Protobuf => Wire::Protobuf,
        Encoding::Json => Wire::Json,
    };
    match state.admission.try_admit(declared.unwrap_or(0), wire) {
        Ok(reservation) => Ok((reservation, body)),
        Err(e) => {
            let mut body = body;
            let mut seen = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, Bytes::len);
                if seen > state.max_body_bytes {
                    break;
                }
            }
            Err(no_room(e))
        }
    }
}

/// Reads the whole body within the export's reservation, growing it as a body of undeclared
/// length arrives, refusing it once it passes `limit` bytes, and inflates gzip into at most
/// `limit` bytes (growing the reservation as it inflates, off the async workers).
async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
    mut reservation: Reservation,
) -> Result<(Bytes, Reservation), Refusal> {
    let gzip = gzip_encoded(headers)?;
    let mut raw = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                tonic::Code::InvalidArgument,
                format!("could not read the request body: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if raw.len() + data.len() > limit {
            return Err(too_large(limit));
        }
        reservation
            .try_grow_to(raw.len() + data.len())
            .map_err(no_room)?;
        raw.extend_from_slice(&data);
    }
    let raw = raw.freeze();
    if !gzip {
        return Ok((raw, reservation));
    }
    off_workers("decompression", move || {
        let out = inflate(&raw, limit, &mut reservation).map_err(|e| match e {
            Inflate::TooLarge => too_large(limit),
            Inflate::NoRoom(e) => no_room(e),
            Inflate::Invalid(e) => Refusal::new(
                StatusCode::BAD_REQUEST,
                tonic::Code::InvalidArgument,
                format!("invalid gzip body: {e}"),
            ),
        })?;
        Ok((out, reservation))
    })
    .await
}

/// Runs CPU work (inflating, decoding, converting) on the blocking pool, off the async workers.
async fn off_workers<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Internal,
            format!("{what} failed: {e}"),
        )
    })?
}

/// A write the queue or the store refused: retryable.
fn queue_refusal(e: IngestError) -> Refusal {
    let mut r = Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        tonic::Code::Unavailable,
        match &e {
            IngestError::Submit(SubmitError::Full) => {
                "ingest queue is full, retry later".to_owned()
            }
            other => format!("{other}, retry later"),
        },
    );
    r.retry_after = true;
    r
}

fn decode(encoding: Encoding, body: &[u8]) -> Result<ExportTraceServiceRequest, Refusal> {
    match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(body).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                tonic::Code::InvalidArgument,
                format!("invalid OTLP protobuf body: {e}"),
            )
        }),
        Encoding::Json => otlp_json::decode_request(body).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                tonic::Code::InvalidArgument,
                format!("invalid OTLP/JSON body: {e}"),
            )
        }),
    }
}

fn encode_response(encoding: Encoding, resp: &ExportTraceServiceResponse) -> Response {
    match encoding {
        Encoding::Protobuf => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            resp.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => {
            let body = match &resp.partial_success {
                // int64 is a string in protobuf's JSON mapping.
                Some(p) => serde_json::json!({"partialSuccess": {
                    "rejectedSpans": p.rejected_spans.to_string(),
                    "errorMessage": p.error_message,
                }}),
                None => serde_json::json!({}),
            };
            (StatusCode::OK, axum::Json(body)).into_response()
        }
    }
}

/// What an OTLP/HTTP export carries.
#[derive(Debug, Clone, Copy)]
enum Signal {
    Traces,
    Logs,
}

async fn export_traces(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    export(state, headers, body, Signal::Traces).await
}

async fn export_logs(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    export(state, headers, body, Signal::Logs).await
}

async fn export(state: HttpState, headers: HeaderMap, body: Body, signal: Signal) -> Response {
    let encoding = match content_encoding(&headers) {
        Ok(e) => e,
        Err(r) => {
            state
                .queue
                .counters
                .exports_refused_bad
                .fetch_add(1, Ordering::Relaxed);
            return r.into_response(None);
        }
    };
    let handled = match signal {
        Signal::Traces => handle_traces(&state, &headers, body, encoding).await,
        Signal::Logs => handle_logs(&state, &headers, body, encoding).await,
    };
    match handled {
        Ok(resp) => resp,
        Err(r) => {
            let counter = match r.status {
                StatusCode::PAYLOAD_TOO_LARGE => &state.queue.counters.exports_refused_too_large,
                StatusCode::SERVICE_UNAVAILABLE => &state.queue.counters.exports_refused_full,
                _ => &state.queue.counters.exports_refused_bad,
            };
            // The queue counts its own refusals; count the others here.
            if r.status != StatusCode::SERVICE_UNAVAILABLE {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            r.into_response(encoding)
        }
    }
}

async fn handle_traces(
    state: &HttpState,
    headers: &HeaderMap,
    body: Body,
    encoding: Option<Encoding>,
) -> Result<Response, Refusal> {
    let encoding = encoding.unwrap_or(Encoding::Protobuf);
    let (reservation, body) = admit(state, headers, body, encoding).await?;
    // Held until the export is answered: its spans' wait in the queue is inside the budget.
    let (body, _reservation) = read_body(headers, body, state.max_body_bytes, reservation).await?;
    // Decoding a large body is CPU work: keep it off the async workers. What is forwarded is
    // OTLP protobuf: a protobuf body as received, a JSON one encoded once here.
    let forward = !state.forward.is_empty();
    let (converted, forwarded) = off_workers("decoding", move || {
        let request = decode(encoding, &body)?;
        let forwarded = forward.then(|| {
            let bytes = match encoding {
                Encoding::Protobuf => body.clone(),
                Encoding::Json => Bytes::from(request.encode_to_vec()),
            };
            (bytes, span_count(&request))
        });
        Ok::<_, Refusal>((convert_request(request), forwarded))
    })
    .await?;
    let rejected = converted.rejected;
    let message = converted.error_message();
    if rejected > 0 {
        state
            .queue
            .counters
            .spans_rejected_invalid
            .fetch_add(rejected, Ordering::Relaxed);
    }
    if !converted.spans.is_empty() {
        state
            .queue
            .write(converted.spans)
            .await
            .map_err(queue_refusal)?;
    }
    if let Some((body, spans)) = forwarded {
        state.forward.forward(body, spans);
    }
    let partial_success = (rejected > 0).then_some(
        opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess {
            rejected_spans: rejected as i64,
            error_message: message,
        },
    );
    Ok(encode_response(
        encoding,
        &ExportTraceServiceResponse { partial_success },
    ))
}

/// `/v1/logs`: records with a trace id are kept with their trace (the same queue, the same
/// commit before the answer); records without one are accepted and dropped (counted); invalid
/// ones are rejected as partial success.
async fn handle_logs(
    state: &HttpState,
    headers: &HeaderMap,
    body: Body,
    encoding: Option<Encoding>,
) -> Result<Response, Refusal> {
    use opentelemetry_proto::tonic::collector::logs::v1::{
        ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
    };
    let encoding = encoding.unwrap_or(Encoding::Protobuf);
    let (reservation, body) = admit(state, headers, body, encoding).await?;
    let (body, _reservation) = read_body(headers, body, state.max_body_bytes, reservation).await?;
    let converted = off_workers("decoding", move || {
        let request = match encoding {
            Encoding::Protobuf => ExportLogsServiceRequest::decode(&body[..])
                .map_err(|e| format!("invalid OTLP protobuf body: {e}")),
            Encoding::Json => otlp_json::decode_logs_request(&body)
                .map_err(|e| format!("invalid OTLP/JSON body: {e}")),
        }
        .map_err(|m| Refusal::new(StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument, m))?;
        Ok::<_, Refusal>(convert_logs(request))
    })
    .await?;
    let counters = &state.queue.counters;
    counters
        .logs_without_trace
        .fetch_add(converted.without_trace, Ordering::Relaxed);
    let (rejected, message) = (converted.rejected, converted.error_message());
    if !converted.logs.is_empty() {
        state
            .queue
            .write_logs(converted.logs)
            .await
            .map_err(queue_refusal)?;
    }
    let partial_success = (rejected > 0).then_some(ExportLogsPartialSuccess {
        rejected_log_records: rejected as i64,
        error_message: message.clone(),
    });
    Ok(match encoding {
        Encoding::Protobuf => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            ExportLogsServiceResponse { partial_success }.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => {
            let body = if rejected > 0 {
                serde_json::json!({"partialSuccess": {
                    "rejectedLogRecords": rejected.to_string(),
                    "errorMessage": message,
                }})
            } else {
                serde_json::json!({})
            };
            (StatusCode::OK, axum::Json(body)).into_response()
        }
    })
}

/// `/v1/metrics`: checked like traces (type, size) and then discarded. An empty
/// `ExportMetricsServiceResponse` encodes to zero bytes in protobuf and `{}` in JSON.
async fn export_discard(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let encoding = match content_encoding(&headers) {
        Ok(e) => e,
        Err(r) => return r.into_response(None),
    };
    let read = match admit(
        &state,
        &headers,
        body,
        encoding.unwrap_or(Encoding::Protobuf),
    )
    .await
    {
        Ok((reservation, body)) => {
            read_body(&headers, body, state.max_body_bytes, reservation).await
        }
        Err(r) => Err(r),
    };
    if let Err(r) = read {
        return r.into_response(encoding);
    }
    match encoding {
        Some(Encoding::Json) => (StatusCode::OK, axum::Json(serde_json::json!({}))).into_response(),
        _ => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            Vec::<u8>::new(),
        )
            .into_response(),
    }
}

/// The OTLP/HTTP routes.
pub fn router(
    queue: IngestQueue,
    forward: Forwarder,
    admission: Admission,
    max_body_bytes: usize,
) -> Router {
    Router::new()
        .route("/v1/traces", post(export_traces))
        .route("/v1/metrics", post(export_discard))
        .route("/v1/logs", post(export_logs))
        // Our own limit applies (and answers 413 with a reason); axum's 2 MiB default must not.
        .layer(DefaultBodyLimit::disable())
        .with_state(HttpState {
            queue,
            forward,
            admission,
            max_body_bytes,
        })
}
