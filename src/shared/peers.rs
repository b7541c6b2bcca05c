//! Asking another instance of the deployment: a trace's spans stay on the instance that
//! received them, so a view of one trace (its page, `GET /api/traces/{id}`, its bug report, its
//! OTLP export) asked of another instance is served by the holder (`web::proxy`), and a trace
//! whose spans or linked traces are on other instances is analysed with their spans, fetched from
//! them (`GET /api/internal/traces/{id}`, answered by `web::api::held`).
//!
//! Key design decisions:
//! - HTTP or HTTPS to the `--instance-url` the holder registered, with this instance's `--token`
//!   (the instances of a deployment share one API token, as they share one database). Over
//!   HTTPS the holder's certificate must be trusted: the system's roots or `--tls-ca`
//!   (`crate::tls::Trust`). Every call is bounded (`PEER_TIMEOUT`): a holder that hangs is an
//!   error naming it, never a hang.
//! - The spans travel as OTLP protobuf (the spans' request, then the log records' request, each
//!   after its length), converted with the same code as any export (`ingest::convert`) and built
//!   by its exact inverse (`cli::import::to_otlp`): what the holder stores is what the asker
//!   analyses.
//!
//! Must not: be called from an async worker through `block_on`; ask an instance for anything
//! but one trace.

use std::collections::HashMap;
use std::time::Duration;

use prost::Message;

use crate::model::{LogRecord, Span, SpanId, TraceId, TracedLog};

/// How long another instance may take to answer.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// The header that marks a request one instance forwarded to another: the receiver answers from
/// what it holds, never forwards again.
pub const FORWARDED: &str = "x-tracecov-forwarded";

/// Why another instance could not answer.
#[derive(Debug, thiserror::Error)]
#[error("trace {trace} is kept by instance {instance}, which did not answer: {problem}")]
pub struct PeerError {
    pub trace: TraceId,
    pub instance: String,
    pub problem: String,
}

/// A client for the deployment's other instances.
#[derive(Clone)]
pub struct Peers {
    http: reqwest::Client,
    /// `--token`: the API token every instance of the deployment requires.
    token: Option<String>,
}

/// An answer of another instance: its status, content type and body.
pub struct PeerAnswer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Peers {
    pub fn new(token: Option<String>, trust: &crate::tls::Trust) -> anyhow::Result<Self> {
        let http = trust
            .client_builder()
            .timeout(PEER_TIMEOUT)
            .connect_timeout(PEER_TIMEOUT)
            .build()
            .map_err(|e| {
                anyhow::anyhow!("cannot make the client that asks the other instances: {e}")
            })?;
        Ok(Self { http, token })
    }

    /// `GET instance + path_and_query`, marked as forwarded.
    pub async fn get(
        &self,
        trace: TraceId,
        instance: &str,
        path_and_query: &str,
    ) -> Result<PeerAnswer, PeerError> {
        let fail = |problem: String| PeerError {
            trace,
            instance: instance.to_owned(),
            problem,
        };
        if !(instance.starts_with("http://") || instance.starts_with("https://")) {
            return Err(fail(
                "its --instance-url is not an http:// or https:// URL".to_owned(),
            ));
        }
        let mut req = self
            .http
            .get(format!(
                "{}{path_and_query}",
                instance.trim_end_matches('/')
            ))
            .header(FORWARDED, "1");
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.map_err(|e| fail(without_url(&e)))?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp
            .bytes()
            .await
            .map_err(|e| fail(without_url(&e)))?
            .to_vec();
        Ok(PeerAnswer {
            status,
            content_type,
            body,
        })
    }

    /// The spans of `trace` that `instance` holds (none when it holds none).
    pub async fn spans(&self, trace: TraceId, instance: &str) -> Result<Vec<Span>, PeerError> {
        let answer = self
            .get(trace, instance, &format!("/api/internal/traces/{trace}"))
            .await?;
        match answer.status {
            200 => decode(&answer.body).map_err(|problem| PeerError {
                trace,
                instance: instance.to_owned(),
                problem,
            }),
            404 => Ok(Vec::new()),
            status => Err(PeerError {
                trace,
                instance: instance.to_owned(),
                problem: format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&answer.body[..answer.body.len().min(300)])
                ),
            }),
        }
    }
}

/// A reqwest error without its URL (already named by the caller), with its causes.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        format!("no answer within {PEER_TIMEOUT:?}")
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        e.to_string()
    };
    let mut untrusted = false;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        untrusted |= crate::tls::is_certificate_error(s);
        source = s.source();
    }
    if untrusted {
        text.push_str(
            " (its TLS certificate is not trusted: give this instance the CA that signed it with --tls-ca)",
        );
    }
    text
}

/// The body `GET /api/internal/traces/{id}` answers: the spans' OTLP request and the log
/// records' OTLP request, each after its length (4 bytes, big-endian).
pub fn encode(spans: &[Span]) -> Vec<u8> {
    let traces = crate::cli::import::to_otlp::request(spans).encode_to_vec();
    let records: Vec<TracedLog> = spans
        .iter()
        .flat_map(|s| {
            s.logs.iter().map(|record| TracedLog {
                trace_id: s.trace_id,
                span_id: Some(s.span_id),
                record: record.clone(),
            })
        })
        .collect();
    let logs = crate::cli::import::to_otlp::logs_request(&records).encode_to_vec();
    let mut out = Vec::with_capacity(8 + traces.len() + logs.len());
    for part in [traces, logs] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(&part);
    }
    out
}

/// The spans of an `encode`d body, their log records attached.
pub fn decode(mut body: &[u8]) -> Result<Vec<Span>, String> {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    let mut part = || -> Result<&[u8], String> {
        let Some((len, rest)) = body.split_first_chunk::<4>() else {
            return Err("the answer was cut short".to_owned());
        };
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err("the answer was cut short".to_owned());
        }
        let (this, rest) = rest.split_at(len);
        body = rest;
        Ok(this)
    };
    let traces = ExportTraceServiceRequest::decode(part()?)
        .map_err(|e| format!("the spans do not decode: {e}"))?;
    let logs = ExportLogsServiceRequest::decode(part()?)
        .map_err(|e| format!("the log records do not decode: {e}"))?;
    let mut spans = crate::ingest::convert::convert_request(traces).spans;
    let mut by_span: HashMap<SpanId, Vec<LogRecord>> = HashMap::new();
    for log in crate::ingest::convert::convert_logs(logs).logs {
        if let Some(s) = log.span_id {
            by_span.entry(s).or_default().push(log.record);
        }
    }
    for span in &mut spans {
        if let Some(mut records) = by_span.remove(&span.span_id) {
            records.sort_by_key(|l| l.time_ns);
            span.logs = records;
        }
    }
    Ok(spans)
}
