//! The shop's instrumentation: one OpenTelemetry tracer provider per service, W3C trace-context
//! propagation, and span helpers that behave the way the stock instrumentation libraries do.
//!
//! Main types: `Telemetry` (a service's provider, tracer and propagator), `HttpClient` (an
//! instrumented reqwest client), the axum middleware `http_server_span`, and `grpc_client_call` /
//! `grpc_server_call` for tonic.
//!
//! Key design decisions:
//! - Every span starts from an explicit parent `Context` passed down by the caller, never from
//!   the thread-local "current" context: the shop's services share one tokio runtime, and an
//!   explicit context cannot leak from one service (or one concurrent test) into another.
//! - An HTTP client span ends when the response headers arrive, as reqwest/hyper instrumentation
//!   does. Reading and decoding the body happens afterwards, in the caller's own span; that is
//!   what lets tracecov tell "the callee failed" from "the caller could not use the answer".
//! - Status follows the semantic conventions: a client span is ERROR on a 4xx or 5xx answer, a
//!   server span only on a 5xx; a gRPC client span on any non-OK code, a gRPC server span only on
//!   the codes that mean the server failed.
//!
//! This module must not hand-make spans: everything goes through the SDK's batch processor and
//! the OTLP/HTTP exporter.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Link, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{
    BatchConfigBuilder as BatchLogConfigBuilder, BatchLogProcessor, SdkLogger, SdkLoggerProvider,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::resource::TelemetryResourceDetector;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};
use serde::de::DeserializeOwned;

/// The instrumentation scope name every shop span carries.
const SCOPE: &str = "tracecov-demo";

/// How long the batch processor waits before exporting. Shorter than the SDK's 5 s default so
/// the demo's UI fills while the suite runs; shutdown flushes the rest anyway.
const EXPORT_DELAY: Duration = Duration::from_millis(500);

/// The largest OTLP export response read back (the collector answers with a few bytes).
const MAX_EXPORT_RESPONSE: usize = 64 * 1024;

/// One service's telemetry. Cheap to clone: the providers and tracer are shared handles.
#[derive(Clone, Debug)]
pub(crate) struct Telemetry {
    pub service: &'static str,
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// The service's OTLP log pipeline, for the services that log through OpenTelemetry.
    logs: Option<(SdkLoggerProvider, SdkLogger)>,
    propagator: TraceContextPropagator,
}

impl Telemetry {
    /// A provider for `service` exporting OTLP/HTTP protobuf to `endpoint` (a base URL such as
    /// `http://127.0.0.1:4318`). Must be called inside a tokio runtime.
    pub fn new(
        service: &'static str,
        endpoint: &str,
        extra: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            // A programmatic endpoint is used verbatim (only the environment variable gets the
            // signal path appended), so the path is added here.
            .with_endpoint(signal_url(endpoint, "traces"))
            .with_http_client(TokioHttpClient::new()?)
            .build()?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(EXPORT_DELAY)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_resource(resource(service, extra))
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer(SCOPE);
        Ok(Self {
            service,
            provider,
            tracer,
            logs: None,
            propagator: TraceContextPropagator::new(),
        })
    }

    /// `new`, with an OTLP/HTTP log pipeline beside the spans (the `logs` exporter, batched like
    /// the spans), so `log_error` reaches the collector as a log record of the active span.
    pub fn with_logs(
        service: &'static str,
        endpoint: &str,
        extra: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let mut telemetry = Self::new(service, endpoint, extra)?;
        let exporter = opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(signal_url(endpoint, "logs"))
            .with_http_client(TokioHttpClient::new()?)
            .build()?;
        let processor = BatchLogProcessor::builder(exporter)
            .with_batch_config(
                BatchLogConfigBuilder::default()
                    .with_scheduled_delay(EXPORT_DELAY)
                    .build(),
            )
            .build();
        let provider = SdkLoggerProvider::builder()
            .with_resource(resource(service, extra))
            .with_log_processor(processor)
            .build();
        let logger = provider.logger(SCOPE);
        telemetry.logs = Some((provider, logger));
        Ok(telemetry)
    }

    /// Logs an ERROR record about the span of `cx`, the way a logging bridge writes a caught
    /// exception: the message as its body, `exception.type` and `exception.message` attributes,
    /// and the span's trace and span id. The span itself is left as it is. Without a log
    /// pipeline (`with_logs`) the record goes nowhere, as with an unconfigured logger.
    pub fn log_error(&self, cx: &Context, body: &str, exception: &str, message: &str) {
        let Some((_, logger)) = &self.logs else {
            return;
        };
        let span = cx.span();
        let span_cx = span.span_context();
        let mut record = logger.create_log_record();
        record.set_timestamp(std::time::SystemTime::now());
        record.set_severity_number(Severity::Error);
        record.set_severity_text("ERROR");
        record.set_body(AnyValue::from(body.to_owned()));
        record.add_attribute("exception.type", exception.to_owned());
        record.add_attribute("exception.message", message.to_owned());
        record.set_trace_context(
            span_cx.trace_id(),
            span_cx.span_id(),
            Some(span_cx.trace_flags()),
        );
        logger.emit(record);
    }

    /// Starts a span under `parent` (a root span when `parent` holds none) and returns the
    /// context that carries it: the handle children start from and the span is ended through.
    pub fn start(
        &self,
        parent: &Context,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
    ) -> Context {
        self.start_with_links(parent, name, kind, attributes, Vec::new())
    }

    pub fn start_with_links(
        &self,
        parent: &Context,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
        links: Vec<Link>,
    ) -> Context {
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .with_links(links)
            .start_with_context(&self.tracer, parent);
        parent.with_span(span)
    }

    pub fn inject_headers(&self, cx: &Context, headers: &mut http::HeaderMap) {
        self.propagator
            .inject_context(cx, &mut HeaderInjector(headers));
    }

    pub fn extract_headers(&self, headers: &http::HeaderMap) -> Context {
        self.propagator.extract(&HeaderExtractor(headers))
    }

    /// Trace context as message headers, the way brokers carry it.
    pub fn inject_map(&self, cx: &Context) -> HashMap<String, String> {
        let mut map = HashMap::new();
        self.propagator.inject_context(cx, &mut map);
        map
    }

    pub fn extract_map(&self, map: &HashMap<String, String>) -> Context {
        self.propagator.extract(map)
    }

    pub fn inject_metadata(&self, cx: &Context, metadata: &mut tonic::metadata::MetadataMap) {
        self.propagator
            .inject_context(cx, &mut MetadataInjector(metadata));
    }

    pub fn extract_metadata(&self, metadata: &tonic::metadata::MetadataMap) -> Context {
        self.propagator.extract(&MetadataExtractor(metadata))
    }

    /// Exports every finished span and stops the provider. Blocking: the batch processor's
    /// thread is joined.
    pub fn shutdown(&self) -> anyhow::Result<()> {
        if let Some((logs, _)) = &self.logs {
            logs.force_flush()
                .map_err(|e| anyhow::anyhow!("flushing the logs of {}: {e}", self.service))?;
            logs.shutdown()
                .map_err(|e| anyhow::anyhow!("shutting down the logs of {}: {e}", self.service))?;
        }
        self.provider
            .force_flush()
            .map_err(|e| anyhow::anyhow!("flushing {}: {e}", self.service))?;
        self.provider
            .shutdown()
            .map_err(|e| anyhow::anyhow!("shutting down {}: {e}", self.service))
    }
}

/// `endpoint`'s URL for one OTLP signal (`traces`, `logs`).
fn signal_url(endpoint: &str, signal: &str) -> String {
    format!("{}/v1/{signal}", endpoint.trim_end_matches('/'))
}

/// The resource every pipeline of `service` reports.
///
/// `builder_empty` and not `builder`: the default detectors read OTEL_SERVICE_NAME and
/// OTEL_RESOURCE_ATTRIBUTES, which would rename all seven services alike (or give them a
/// `service.namespace`, which changes their node ids). Extra attributes come in through
/// `ShopConfig::resource_attributes` instead.
fn resource(service: &'static str, extra: &[(String, String)]) -> Resource {
    Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_service_name(service)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attributes(
            extra
                .iter()
                .filter(|(k, _)| k != "service.name" && k != "service.namespace")
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build()
}

/// Records an `exception` event (type and message) on the span of `cx`.
pub(crate) fn record_exception(cx: &Context, kind: &str, message: &str) {
    cx.span().add_event(
        "exception",
        vec![
            KeyValue::new("exception.type", kind.to_owned()),
            KeyValue::new("exception.message", message.to_owned()),
        ],
    );
}

/// Marks the span of `cx` as failed with `message`.
pub(crate) fn set_error(cx: &Context, message: impl Into<Cow<'static, str>>) {
    cx.span().set_status(Status::error(message));
}

/// The OTLP exporter's transport.
///
/// Why not the stock `reqwest::Client`: the SDK's batch processor exports from its own thread,
/// driving the export future with a plain executor, and an async reqwest client panics there
/// for want of a tokio reactor (the SDK documents this limitation). This client keeps reqwest
/// async but runs each request as a task on the runtime the shop was started in, so the batch
/// thread only waits for the task's result.
#[derive(Debug)]
struct TokioHttpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl TokioHttpClient {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            client: crate::tls::Trust::default()
                .client_builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            runtime: tokio::runtime::Handle::try_current()
                .map_err(|_| anyhow::anyhow!("the demo shop must start inside a tokio runtime"))?,
        })
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for TokioHttpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let request: reqwest::Request = request.try_into()?;
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let mut response = client.execute(request).await?;
            let status = response.status();
            let headers = std::mem::take(response.headers_mut());
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > MAX_EXPORT_RESPONSE {
                    return Err::<_, opentelemetry_http::HttpError>(
                        "OTLP export response too large".into(),
                    );
                }
                body.extend_from_slice(&chunk);
            }
            let mut out = http::Response::builder()
                .status(status)
                .body(Bytes::from(body))?;
            *out.headers_mut() = headers;
            Ok(out)
        });
        task.await?
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct MetadataExtractor<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP server

/// What the server middleware needs: the service's telemetry and the address it answers on
/// (`server.address`/`server.port`, which teach tracecov's address map).
#[derive(Clone)]
pub(crate) struct HttpServerTelemetry {
    pub telemetry: Telemetry,
    pub addr: SocketAddr,
}

/// The server span's context, handed to handlers through a request extension so their database,
/// queue and client spans become its children.
#[derive(Clone)]
pub(crate) struct SpanCx(pub Context);

/// What a handler wants recorded on the server span (the middleware owns that span): the
/// message for the span status of a 5xx, and an exception event when the failure raised one.
#[derive(Clone)]
pub(crate) struct ErrorNote {
    pub exception: Option<&'static str>,
    pub message: String,
}

/// axum middleware (for `Router::route_layer`, where the matched route is known): one SERVER
/// span per request with the current HTTP semantic conventions.
pub(crate) async fn http_server_span(
    State(server): State<HttpServerTelemetry>,
    mut request: Request,
    next: Next,
) -> Response {
    let parent = server.telemetry.extract_headers(request.headers());
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| path.clone());
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.clone()),
        KeyValue::new("http.route", route.clone()),
        KeyValue::new("url.path", path),
        KeyValue::new("url.scheme", "http"),
        KeyValue::new("server.address", server.addr.ip().to_string()),
        KeyValue::new("server.port", i64::from(server.addr.port())),
        KeyValue::new(
            "network.protocol.version",
            protocol_version(request.version()),
        ),
    ];
    if let Some(query) = request.uri().query() {
        // Never the raw query into the span name or route: only this attribute.
        attributes.push(KeyValue::new("url.query", query.to_owned()));
    }
    let cx = server.telemetry.start(
        &parent,
        format!("{method} {route}"),
        SpanKind::Server,
        attributes,
    );
    request.extensions_mut().insert(SpanCx(cx.clone()));
    let response = next.run(request).await;
    let code = response.status().as_u16();
    let span = cx.span();
    span.set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
    let note = response.extensions().get::<ErrorNote>().cloned();
    if let Some(ErrorNote {
        exception: Some(kind),
        message,
    }) = &note
    {
        record_exception(&cx, kind, message);
    }
    if code >= 500 {
        span.set_attribute(KeyValue::new("error.type", code.to_string()));
        set_error(&cx, note.map(|n| n.message).unwrap_or_default());
    }
    span.end();
    response
}

fn protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// An error answer from a shop handler: a status, a JSON body `{"error": code, "message": …}`,
/// and optionally an exception for the server span.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: http::StatusCode,
    pub code: &'static str,
    pub message: String,
    pub exception: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: http::StatusCode::from_u16(status)
                .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            exception: None,
        }
    }

    /// Also records an `exception` event of type `kind` on the server span.
    pub fn with_exception(mut self, kind: &'static str) -> Self {
        self.exception = Some(kind);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.code, "message": self.message});
        let mut response = (self.status, axum::Json(body)).into_response();
        response.extensions_mut().insert(ErrorNote {
            exception: self.exception,
            message: self.message,
        });
        response
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP client

/// An instrumented HTTP client for one service.
#[derive(Clone)]
pub(crate) struct HttpClient {
    telemetry: Telemetry,
    client: reqwest::Client,
}

/// One outgoing request.
pub(crate) struct Outbound<'a> {
    pub method: http::Method,
    pub url: String,
    /// The route template on the callee (`/carts/{cart_id}/items`), for the span name.
    pub template: &'a str,
    pub json: Option<serde_json::Value>,
    pub headers: Vec<(&'static str, String)>,
    /// `service.peer.name` for a callee that reports no spans of its own.
    pub peer_service: Option<&'static str>,
}

impl<'a> Outbound<'a> {
    pub fn new(method: http::Method, url: String, template: &'a str) -> Self {
        Self {
            method,
            url,
            template,
            json: None,
            headers: Vec::new(),
            peer_service: None,
        }
    }

    pub fn json(mut self, body: serde_json::Value) -> Self {
        self.json = Some(body);
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn peer_service(mut self, name: &'static str) -> Self {
        self.peer_service = Some(name);
        self
    }
}

/// A request that got no answer.
#[derive(Debug, Clone)]
pub(crate) struct TransportError {
    /// `error.type`: `timeout`, `connection_refused`, …
    pub kind: &'static str,
    pub message: String,
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl HttpClient {
    pub fn new(telemetry: Telemetry, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            telemetry,
            client: crate::tls::Trust::default()
                .client_builder()
                .timeout(timeout)
                .connect_timeout(Duration::from_millis(500))
                // The shop talks to loopback only; a proxy from the environment would break it.
                .no_proxy()
                .build()?,
        })
    }

    /// Sends `out` in a CLIENT span under `parent`. The span ends when the response headers
    /// arrive; the body is left for the caller to read (see `read_json`).
    pub async fn send(
        &self,
        parent: &Context,
        out: Outbound<'_>,
    ) -> Result<reqwest::Response, TransportError> {
        let url = reqwest::Url::parse(&out.url).map_err(|e| TransportError {
            kind: "invalid_url",
            message: format!("invalid url {}: {e}", out.url),
        })?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let mut attributes = vec![
            KeyValue::new("http.request.method", out.method.as_str().to_owned()),
            KeyValue::new("url.full", out.url.clone()),
            KeyValue::new("url.template", out.template.to_owned()),
            KeyValue::new("server.address", host),
            KeyValue::new("server.port", i64::from(port)),
        ];
        if let Some(peer) = out.peer_service {
            attributes.push(KeyValue::new("service.peer.name", peer));
            // The legacy key too: many backends still read only `peer.service`.
            attributes.push(KeyValue::new("peer.service", peer));
        }
        let cx = self.telemetry.start(
            parent,
            format!("{} {}", out.method, out.template),
            SpanKind::Client,
            attributes,
        );
        let mut headers = http::HeaderMap::new();
        self.telemetry.inject_headers(&cx, &mut headers);
        for (name, value) in out.headers {
            if let Ok(value) = http::HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        let mut builder = self.client.request(out.method, url).headers(headers);
        if let Some(body) = out.json {
            builder = builder.json(&body);
        }
        let span = cx.span();
        match builder.send().await {
            Ok(response) => {
                let code = response.status().as_u16();
                span.set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
                if code >= 400 {
                    span.set_attribute(KeyValue::new("error.type", code.to_string()));
                    set_error(&cx, "");
                }
                span.end();
                Ok(response)
            }
            Err(e) => {
                let error = transport_error(&e);
                span.set_attribute(KeyValue::new("error.type", error.kind));
                record_exception(&cx, "reqwest::Error", &error.message);
                set_error(&cx, error.message.clone());
                span.end();
                Err(error)
            }
        }
    }
}

/// Classifies a reqwest failure by its source chain, and spells out the whole chain: the top
/// error alone ("error sending request") hides the cause tracecov needs ("Connection refused").
fn transport_error(e: &reqwest::Error) -> TransportError {
    let mut message = e.to_string();
    let mut kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect_error"
    } else {
        "request_error"
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            kind = match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection_refused",
                std::io::ErrorKind::ConnectionReset => "connection_reset",
                std::io::ErrorKind::TimedOut => "timeout",
                _ => kind,
            };
        }
        source = s.source();
    }
    TransportError { kind, message }
}

/// A response body that the caller could not use.
#[derive(Debug)]
pub(crate) struct DecodeError {
    pub message: String,
}

/// Reads and decodes a JSON body (at most 1 MiB) after the client span has ended. A failure is
/// recorded as an exception on `cx`, the caller's own span, as a JSON library's error would be.
pub(crate) async fn read_json<T: DeserializeOwned>(
    cx: &Context,
    response: reqwest::Response,
) -> Result<T, DecodeError> {
    const MAX: usize = 1024 * 1024;
    let mut response = response;
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= MAX => body.extend_from_slice(&chunk),
            Ok(Some(_)) => {
                let message = "response body larger than 1 MiB".to_owned();
                record_exception(cx, "BodyTooLarge", &message);
                return Err(DecodeError { message });
            }
            Ok(None) => break,
            Err(e) => {
                let message = transport_error(&e).message;
                record_exception(cx, "reqwest::Error", &message);
                return Err(DecodeError { message });
            }
        }
    }
    serde_json::from_slice(&body).map_err(|e| {
        let message = format!("cannot decode response: {e}");
        record_exception(cx, "serde_json::Error", &message);
        DecodeError { message }
    })
}

/// Reads an error answer's JSON body (`{"error": …, "message": …}`) for its message, or
/// `Null`. Records nothing: an error answer the caller only reports is not a decode failure.
pub(crate) async fn read_json_quietly(mut response: reqwest::Response) -> serde_json::Value {
    const MAX: usize = 64 * 1024;
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        if body.len() + chunk.len() > MAX {
            break;
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null)
}

// ---------------------------------------------------------------------------------------------
// gRPC

/// The gRPC service name every inventory span carries.
pub(crate) const INVENTORY_SERVICE: &str = "tracecov.demo.v1.Inventory";

/// The canonical name of a gRPC code (`DEADLINE_EXCEEDED`), as `rpc.response.status_code`
/// carries it.
pub(crate) fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The gRPC codes that make a SERVER span an error (the semantic conventions): the ones that
/// mean the server failed, not that it refused the request.
fn grpc_server_error(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss
    )
}

fn grpc_attributes(method: &'static str, addr: SocketAddr) -> Vec<KeyValue> {
    vec![
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.system.name", "grpc"),
        KeyValue::new("rpc.service", INVENTORY_SERVICE),
        KeyValue::new("rpc.method", method),
        KeyValue::new("server.address", addr.ip().to_string()),
        KeyValue::new("server.port", i64::from(addr.port())),
    ]
}

fn record_grpc_status(cx: &Context, code: tonic::Code, message: &str, server: bool) {
    let span = cx.span();
    span.set_attribute(KeyValue::new("rpc.grpc.status_code", code as i64));
    span.set_attribute(KeyValue::new(
        "rpc.response.status_code",
        grpc_code_name(code),
    ));
    let is_error = if server {
        grpc_server_error(code)
    } else {
        code != tonic::Code::Ok
    };
    if is_error {
        span.set_attribute(KeyValue::new("error.type", grpc_code_name(code)));
        set_error(cx, message.to_owned());
    }
}

/// Calls an inventory method in a CLIENT span with a client-side deadline: when it fires, the
/// call is abandoned with DEADLINE_EXCEEDED, as a gRPC client does.
///
/// The deadline is deliberately not sent as `grpc-timeout`: tonic's server answers an expired
/// `grpc-timeout` with CANCELLED ("Timeout expired"), which races the client's own deadline and
/// would make the caller see CANCELLED about half the time. Kept client-side, the caller always
/// sees DEADLINE_EXCEEDED and the server span shows the whole time the callee took.
pub(crate) async fn grpc_client_call<T, R, F, Fut>(
    telemetry: &Telemetry,
    parent: &Context,
    addr: SocketAddr,
    method: &'static str,
    deadline: Duration,
    message: T,
    call: F,
) -> Result<R, tonic::Status>
where
    F: FnOnce(tonic::Request<T>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
{
    let cx = telemetry.start(
        parent,
        format!("{INVENTORY_SERVICE}/{method}"),
        SpanKind::Client,
        grpc_attributes(method, addr),
    );
    let mut request = tonic::Request::new(message);
    telemetry.inject_metadata(&cx, request.metadata_mut());
    let result = match tokio::time::timeout(deadline, call(request)).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "deadline exceeded after {} ms",
            deadline.as_millis()
        ))),
    };
    match &result {
        Ok(_) => record_grpc_status(&cx, tonic::Code::Ok, "", false),
        Err(status) => record_grpc_status(&cx, status.code(), status.message(), false),
    }
    cx.span().end();
    result
}

/// Runs an inventory handler in a SERVER span continued from the request's metadata.
pub(crate) async fn grpc_server_call<T, R, F, Fut>(
    telemetry: &Telemetry,
    addr: SocketAddr,
    method: &'static str,
    request: tonic::Request<T>,
    handler: F,
) -> Result<tonic::Response<R>, tonic::Status>
where
    F: FnOnce(Context, T) -> Fut,
    Fut: Future<Output = Result<R, tonic::Status>>,
{
    let parent = telemetry.extract_metadata(request.metadata());
    let cx = telemetry.start(
        &parent,
        format!("{INVENTORY_SERVICE}/{method}"),
        SpanKind::Server,
        grpc_attributes(method, addr),
    );
    let mut guard = CancelledOnDrop {
        cx: cx.clone(),
        finished: false,
    };
    let result = handler(cx.clone(), request.into_inner()).await;
    guard.finished = true;
    match &result {
        Ok(_) => record_grpc_status(&cx, tonic::Code::Ok, "", true),
        Err(status) => record_grpc_status(&cx, status.code(), status.message(), true),
    }
    cx.span().end();
    result.map(tonic::Response::new)
}

/// Ends a server span whose handler was dropped before it finished: the server drops the
/// handler when the client resets the stream (its deadline fired, or it went away). CANCELLED
/// is not a server error by the conventions, so the status stays unset; the span still shows
/// how long the callee held the call.
struct CancelledOnDrop {
    cx: Context,
    finished: bool,
}

impl Drop for CancelledOnDrop {
    fn drop(&mut self) {
        if !self.finished {
            record_grpc_status(
                &self.cx,
                tonic::Code::Cancelled,
                "the client cancelled the call",
                true,
            );
            self.cx.span().end();
        }
    }
}
