//! OTLP forwarding (`--forward URL`): every export tracecov acknowledged is sent on, as OTLP
//! protobuf and unredacted (DESIGN: forwarding goes to the user's own backend), to other
//! collectors or tracing backends, so trace links can point there.
//!
//! Main types: `ForwardTarget` (a parsed `--forward` URL), `ForwardConfig`, `Forwarder` (cloned
//! into the receivers), `ForwardCounters` (read by `/metrics`).
//!
//! The scheme decides the protocol: `grpc://host:port` is OTLP/gRPC (plaintext, HTTP/2) to the
//! trace service; `http://host:port` is OTLP/HTTP with a protobuf body, posted to `/v1/traces`
//! unless the URL names a path of its own (then that path, as `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! would be used). TLS (`https://`, `grpcs://`) is refused: put a local collector in between.
//!
//! Key design decisions:
//! - A slow or dead downstream never blocks or slows an acknowledgement: a receiver hands the
//!   export to each destination's bounded queue without waiting (`try_send`) after its own store
//!   committed, and a queue that is full drops the export for that destination and counts it.
//! - One task per destination sends exports one at a time, in order, retrying what OTLP calls
//!   retryable (gRPC UNAVAILABLE and friends, HTTP 429/502/503/504, connection errors and
//!   timeouts) with doubling backoff up to `max_attempts`; an export that still fails, or that the
//!   downstream refuses outright, is dropped and counted. Memory is bounded by bytes per
//!   destination (`--forward-queue`), not by exports, because an export can be 16 MiB.
//! - At shutdown what is still queued is dropped and counted: forwarding is best effort, and
//!   shutting down must not wait for a dead downstream.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How a destination is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// A parsed `--forward` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardTarget {
    pub protocol: Protocol,
    /// What to connect to: `http://host:port` for gRPC, the full `/v1/traces` URL for HTTP.
    pub endpoint: String,
    /// The URL as given, for logs and the `destination` label.
    pub given: String,
}

/// Why a `--forward` URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardUrlError {
    #[error(
        "--forward {0:?}: TLS is not supported; forward to a local collector over grpc:// or http://"
    )]
    Tls(String),
    #[error(
        "--forward {0:?}: expected grpc://host:port (OTLP/gRPC) or http://host:port[/path] (OTLP/HTTP protobuf)"
    )]
    Scheme(String),
    #[error("--forward {0:?}: no host and port")]
    NoHost(String),
}

impl FromStr for ForwardTarget {
    type Err = ForwardUrlError;

    fn from_str(given: &str) -> Result<Self, Self::Err> {
        let given = given.trim();
        let (scheme, rest) = given
            .split_once("://")
            .ok_or_else(|| ForwardUrlError::Scheme(given.to_owned()))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(ForwardUrlError::NoHost(given.to_owned()));
        }
        let (protocol, endpoint) = match scheme.to_ascii_lowercase().as_str() {
            "grpc" => (Protocol::Grpc, format!("http://{authority}")),
            "http" => {
                let path = if path.is_empty() || path == "/" {
                    "/v1/traces"
                } else {
                    path
                };
                (Protocol::HttpProtobuf, format!("http://{authority}{path}"))
            }
            "https" | "grpcs" => return Err(ForwardUrlError::Tls(given.to_owned())),
            _ => return Err(ForwardUrlError::Scheme(given.to_owned())),
        };
        Ok(Self {
            protocol,
            endpoint,
            given: given.to_owned(),
        })
    }
}

impl fmt::Display for ForwardTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.given)
    }
}

/// One destination's settings.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    pub target: ForwardTarget,
    /// Most bytes of exports waiting for this destination (`--forward-queue`).
    pub queue_bytes: usize,
    /// Tries per export, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry; doubles up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// How long one attempt may take, connecting included.
    pub timeout: Duration,
}

pub const DEFAULT_FORWARD_QUEUE_BYTES: usize = 64 * 1024 * 1024;

impl ForwardConfig {
    pub fn new(target: ForwardTarget) -> Self {
        Self {
            target,
            queue_bytes: DEFAULT_FORWARD_QUEUE_BYTES,
            max_attempts: 5,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why an export was not delivered to a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The destination's queue was full when the export arrived.
    QueueFull,
    /// Retries ran out, or the destination refused the export as not retryable.
    Failed,
    /// Still queued when tracecov shut down.
    Shutdown,
}

impl DropReason {
    pub const ALL: [DropReason; 3] = [Self::QueueFull, Self::Failed, Self::Shutdown];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::Failed => "failed",
            Self::Shutdown => "shutdown",
        }
    }
}

/// What one destination did, for `/metrics`.
#[derive(Debug)]
pub struct ForwardCounters {
    /// The `--forward` URL as given.
    pub destination: String,
    pub exports_sent: AtomicU64,
    pub spans_sent: AtomicU64,
    /// Attempts after the first.
    pub retries: AtomicU64,
    /// Indexed like `DropReason::ALL`.
    exports_dropped: [AtomicU64; 3],
    spans_dropped: [AtomicU64; 3],
    /// Exports and bytes waiting now (the one being sent included).
    pub queued_exports: AtomicU64,
    pub queued_bytes: AtomicU64,
}

impl ForwardCounters {
    fn new(destination: String) -> Self {
        Self {
            destination,
            exports_sent: AtomicU64::new(0),
            spans_sent: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            exports_dropped: Default::default(),
            spans_dropped: Default::default(),
            queued_exports: AtomicU64::new(0),
            queued_bytes: AtomicU64::new(0),
        }
    }

    pub fn exports_dropped(&self, reason: DropReason) -> u64 {
        self.exports_dropped[reason as usize].load(Ordering::Relaxed)
    }

    pub fn spans_dropped(&self, reason: DropReason) -> u64 {
        self.spans_dropped[reason as usize].load(Ordering::Relaxed)
    }

    fn dropped(&self, reason: DropReason, spans: u64) {
        self.exports_dropped[reason as usize].fetch_add(1, Ordering::Relaxed);
        self.spans_dropped[reason as usize].fetch_add(spans, Ordering::Relaxed);
    }
}

/// An export waiting for one destination. Holding the permit holds its bytes of the queue.
struct Payload {
    body: Bytes,
    spans: u64,
    _permit: OwnedSemaphorePermit,
}

struct Destination {
    tx: mpsc::Sender<Payload>,
    permits: Arc<Semaphore>,
    capacity: usize,
    counters: Arc<ForwardCounters>,
}

/// The receivers' handle: cheap to clone; with no destination every call is free.
#[derive(Clone, Default)]
pub struct Forwarder {
    destinations: Arc<Vec<Destination>>,
}

/// The spans in an export, counted before conversion (drops are counted in spans).
pub fn span_count(request: &ExportTraceServiceRequest) -> u64 {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len() as u64)
        .sum()
}

impl Forwarder {
    /// Starts one task per destination; they stop when `shutdown` is cancelled.
    pub fn start(
        configs: &[ForwardConfig],
        shutdown: &CancellationToken,
    ) -> (Forwarder, Vec<JoinHandle<()>>) {
        let mut destinations = Vec::new();
        let mut tasks = Vec::new();
        for config in configs {
            let capacity = config.queue_bytes.clamp(1, Semaphore::MAX_PERMITS);
            // The byte semaphore is the real bound; the channel's is a backstop against a flood
            // of empty exports.
            let (tx, rx) = mpsc::channel(65_536);
            let counters = Arc::new(ForwardCounters::new(config.target.given.clone()));
            tasks.push(tokio::spawn(run_destination(
                rx,
                config.clone(),
                counters.clone(),
                shutdown.clone(),
            )));
            destinations.push(Destination {
                tx,
                permits: Arc::new(Semaphore::new(capacity)),
                capacity,
                counters,
            });
        }
        (
            Forwarder {
                destinations: Arc::new(destinations),
            },
            tasks,
        )
    }

    pub fn is_empty(&self) -> bool {
        self.destinations.is_empty()
    }

    pub fn counters(&self) -> Vec<Arc<ForwardCounters>> {
        self.destinations
            .iter()
            .map(|d| d.counters.clone())
            .collect()
    }

    /// Hands an acknowledged export (OTLP protobuf) to every destination, never waiting: a full
    /// queue drops it for that destination and counts the drop.
    pub fn forward(&self, body: Bytes, spans: u64) {
        for d in self.destinations.iter() {
            // An export larger than the whole queue still goes when the queue is empty.
            let want = body.len().clamp(1, d.capacity).min(u32::MAX as usize) as u32;
            let Ok(permit) = d.permits.clone().try_acquire_many_owned(want) else {
                d.counters.dropped(DropReason::QueueFull, spans);
                continue;
            };
            let len = body.len() as u64;
            let payload = Payload {
                body: body.clone(),
                spans,
                _permit: permit,
            };
            match d.tx.try_send(payload) {
                Ok(()) => {
                    d.counters.queued_exports.fetch_add(1, Ordering::Relaxed);
                    d.counters.queued_bytes.fetch_add(len, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    d.counters.dropped(DropReason::QueueFull, spans)
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    d.counters.dropped(DropReason::Shutdown, spans)
                }
            }
        }
    }
}

/// Why one attempt failed.
struct AttemptError {
    retryable: bool,
    message: String,
}

impl AttemptError {
    fn retryable(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            message: message.into(),
        }
    }
}

/// A connection to one destination.
enum Client {
    Grpc(tonic::client::Grpc<tonic::transport::Channel>),
    Http {
        client: reqwest::Client,
        url: String,
    },
}

const TRACE_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

impl Client {
    fn new(config: &ForwardConfig) -> Result<Self, String> {
        match config.target.protocol {
            Protocol::Grpc => {
                let endpoint =
                    tonic::transport::Endpoint::from_shared(config.target.endpoint.clone())
                        .map_err(|e| e.to_string())?
                        .connect_timeout(config.timeout)
                        .tcp_nodelay(true);
                // Lazy: a destination that is down at start is retried like one that goes down.
                Ok(Client::Grpc(tonic::client::Grpc::new(
                    endpoint.connect_lazy(),
                )))
            }
            Protocol::HttpProtobuf => {
                let client = crate::tls::Trust::default()
                    .client_builder()
                    .connect_timeout(config.timeout)
                    .build()
                    .map_err(|e| e.to_string())?;
                Ok(Client::Http {
                    client,
                    url: config.target.endpoint.clone(),
                })
            }
        }
    }

    async fn send(&mut self, body: Bytes) -> Result<(), AttemptError> {
        match self {
            Client::Grpc(grpc) => {
                grpc.ready()
                    .await
                    .map_err(|e| AttemptError::retryable(format!("not ready: {e}")))?;
                let path = http::uri::PathAndQuery::from_static(TRACE_EXPORT_PATH);
                match grpc
                    .unary::<Bytes, ExportTraceServiceResponse, _>(
                        tonic::Request::new(body),
                        path,
                        RawCodec,
                    )
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(status) => {
                        use tonic::Code::*;
                        // OTLP's retryable codes; RESOURCE_EXHAUSTED too, as backpressure.
                        let retryable = matches!(
                            status.code(),
                            Cancelled
                                | DeadlineExceeded
                                | Aborted
                                | OutOfRange
                                | Unavailable
                                | DataLoss
                                | ResourceExhausted
                        );
                        Err(AttemptError {
                            retryable,
                            message: format!("{:?}: {}", status.code(), status.message()),
                        })
                    }
                }
            }
            Client::Http { client, url } => {
                let resp = client
                    .post(url.as_str())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| AttemptError::retryable(e.to_string()))?;
                let status = resp.status();
                if status.is_success() {
                    return Ok(());
                }
                Err(AttemptError {
                    retryable: matches!(status.as_u16(), 429 | 502 | 503 | 504),
                    message: format!("HTTP {status}"),
                })
            }
        }
    }
}

/// Sends already-encoded OTLP protobuf as the request and decodes the response: the export was
/// encoded once on the receiver and is not decoded again here.
struct RawCodec;

struct RawEncoder;

struct ResponseDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ResponseDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Self::Item>, Self::Error> {
        let resp = ExportTraceServiceResponse::decode(src.copy_to_bytes(src.remaining()))
            .map_err(|e| tonic::Status::internal(format!("undecodable response: {e}")))?;
        Ok(Some(resp))
    }
}

/// The task of one destination: send each queued export, retrying, until shutdown.
async fn run_destination(
    mut rx: mpsc::Receiver<Payload>,
    config: ForwardConfig,
    counters: Arc<ForwardCounters>,
    shutdown: CancellationToken,
) {
    let mut client = match Client::new(&config) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(destination = %config.target, error = %e, "cannot forward there");
            None
        }
    };
    // Logged on a change only: a dead downstream must not log once per export.
    let mut healthy = true;
    loop {
        let payload = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = rx.recv() => match p {
                Some(p) => p,
                None => break,
            },
        };
        let outcome = match client.as_mut() {
            Some(client) => deliver(client, &payload, &config, &counters, &shutdown).await,
            None => Err(DropReason::Failed),
        };
        counters.queued_exports.fetch_sub(1, Ordering::Relaxed);
        counters
            .queued_bytes
            .fetch_sub(payload.body.len() as u64, Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                counters.exports_sent.fetch_add(1, Ordering::Relaxed);
                counters
                    .spans_sent
                    .fetch_add(payload.spans, Ordering::Relaxed);
                if !healthy {
                    tracing::info!(destination = %config.target, "forwarding works again");
                    healthy = true;
                }
            }
            Err(reason) => {
                counters.dropped(reason, payload.spans);
                if healthy && reason == DropReason::Failed {
                    tracing::warn!(
                        destination = %config.target,
                        "forwarding failed: dropping exports (counted in tracecov_forward_dropped_spans_total)"
                    );
                    healthy = false;
                }
            }
        }
    }
    rx.close();
    while let Ok(payload) = rx.try_recv() {
        counters.queued_exports.fetch_sub(1, Ordering::Relaxed);
        counters
            .queued_bytes
            .fetch_sub(payload.body.len() as u64, Ordering::Relaxed);
        counters.dropped(DropReason::Shutdown, payload.spans);
    }
}

/// Tries one export until it is delivered, retries run out, or shutdown.
async fn deliver(
    client: &mut Client,
    payload: &Payload,
    config: &ForwardConfig,
    counters: &ForwardCounters,
    shutdown: &CancellationToken,
) -> Result<(), DropReason> {
    let mut backoff = config.backoff;
    for attempt in 1..=config.max_attempts.max(1) {
        if attempt > 1 {
            counters.retries.fetch_add(1, Ordering::Relaxed);
        }
        let result = tokio::select! {
            _ = shutdown.cancelled() => return Err(DropReason::Shutdown),
            r = tokio::time::timeout(config.timeout, client.send(payload.body.clone())) => r,
        };
        let err = match result {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => AttemptError::retryable(format!("no answer within {:?}", config.timeout)),
        };
        tracing::debug!(destination = %config.target, attempt, error = %err.message, "forwarding attempt failed");
        if !err.retryable {
            return Err(DropReason::Failed);
        }
        if attempt < config.max_attempts {
            tokio::select! {
                _ = shutdown.cancelled() => return Err(DropReason::Shutdown),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(config.max_backoff);
        }
    }
    Err(DropReason::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_decides_the_protocol() {
        let t: ForwardTarget = "grpc://collector:4317".parse().unwrap();
        assert_eq!(t.protocol, Protocol::Grpc);
        assert_eq!(t.endpoint, "http://collector:4317");
        let t: ForwardTarget = "http://tempo:4318".parse().unwrap();
        assert_eq!(t.protocol, Protocol::HttpProtobuf);
        assert_eq!(t.endpoint, "http://tempo:4318/v1/traces");
        let t: ForwardTarget = "http://tempo:4318/".parse().unwrap();
        assert_eq!(t.endpoint, "http://tempo:4318/v1/traces");
        let t: ForwardTarget = "http://gw:8080/otlp/v1/traces".parse().unwrap();
        assert_eq!(t.endpoint, "http://gw:8080/otlp/v1/traces");
        assert!(matches!(
            "https://x:1".parse::<ForwardTarget>(),
            Err(ForwardUrlError::Tls(_))
        ));
        assert!(matches!(
            "collector:4317".parse::<ForwardTarget>(),
            Err(ForwardUrlError::Scheme(_))
        ));
        assert!(matches!(
            "http:///v1/traces".parse::<ForwardTarget>(),
            Err(ForwardUrlError::NoHost(_))
        ));
    }
}
