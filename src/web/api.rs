//! JSON API handlers and their response shapes. These structs are the API's contract; they are
//! built from model types here and nowhere else.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::model::{Attributes, Span, TraceId, Value};
use crate::server::AppState;
use crate::store::StoreError;

/// An API error: an HTTP status and a message, answered as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        // The deployment's database not answering is an outage the client may wait out, not a
        // fault of this store.
        if let StoreError::Shared(problem) = &e {
            tracing::warn!(error = %problem, "a question needing the shared database failed");
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, problem.clone());
        }
        tracing::error!(error = %e, "store read failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("store: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// Runs blocking store work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("request failed: {e}"),
        )
    })?
}

/// 200 while serving: a store that refuses writes (a full disk) is `"status": "degraded"`, since
/// the server still answers, and exports get retryable refusals until it recovers by itself. So
/// is a shared database (`--shared-db`) that does not answer: exports are still acknowledged
/// (their spans are durable here) and their runs assigned once it is back. `advertise_otlp` is
/// the deployment's OTLP endpoint, when `--advertise-otlp` names one. Under `shared_db`,
/// `unpublished` counts this instance's result changes not yet in the shared database and
/// `unassigned` its traces whose run waits for it.
pub async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    let counters = &state.queue_counters;
    let failures = counters
        .write_failures
        .load(std::sync::atomic::Ordering::Relaxed);
    let (status, store) = match counters.store_failing() {
        None => (
            "ok",
            serde_json::json!({ "writable": true, "write_failures": failures }),
        ),
        Some(f) => (
            "degraded",
            serde_json::json!({
                "writable": false,
                "problem": f.problem,
                "failing_since_unix_nano": f.since_ns,
                "write_failures": failures,
            }),
        ),
    };
    let mut body = serde_json::json!({
        "status": status,
        "otlp_grpc": state.addrs.grpc.to_string(),
        "otlp_http": state.addrs.otlp_http_url(),
        "ui": state.addrs.ui_url(),
        "store": store,
    });
    if let Some(otlp) = &state.config.advertise_otlp {
        body["advertise_otlp"] = otlp.clone().into();
    }
    if let Some(db) = &state.shared {
        let failures = db.health().failures();
        // Counted now rather than as of the publisher's last pass, so that "nothing waits" is
        // true when said: a change stays counted until PostgreSQL has committed it.
        let reader = state.reader.clone();
        let (unpublished, unassigned) =
            tokio::task::spawn_blocking(move || crate::shared::publish::backlog(&reader))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or((db.health().unpublished(), db.health().unassigned()));
        body["shared_db"] = match db.health().degraded() {
            None => serde_json::json!({
                "status": "ok",
                "database": db.target(),
                "instance_url": db.instance_url(),
                "failures": failures,
                "unpublished": unpublished,
                "unassigned": unassigned,
            }),
            Some(d) => {
                body["status"] = "degraded".into();
                serde_json::json!({
                    "status": "degraded",
                    "database": db.target(),
                    "instance_url": db.instance_url(),
                    "problem": d.problem,
                    "failing_since_unix_nano": d.since_ns,
                    "failures": failures,
                    "unpublished": unpublished,
                    "unassigned": unassigned,
                })
            }
        };
    }
    Json(body)
}

pub async fn stats(State(state): State<AppState>) -> Result<Json<crate::store::Stats>, ApiError> {
    let reader = state.reader.clone();
    Ok(Json(blocking(move || Ok(reader.stats()?)).await?))
}

pub async fn trace(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    let id = TraceId::from_hex_padded(trace_id.trim()).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("malformed trace id {trace_id:?}: {e} (expected 32 hex digits)"),
        )
    })?;
    let reader = state.reader.clone();
    let spans = blocking(move || Ok(reader.trace_anywhere(id)?)).await?;
    if spans.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no trace {id} in the store"),
        ));
    }
    // Redacted like every other output; `?redact=false` exists only on the exports.
    let spans = state.report.report.redactor.redact_spans(&spans);
    Ok(json_response(&TraceJson::new(id, &spans)))
}

/// `GET /api/internal/traces/{id}`: the spans of a trace this instance holds, for another
/// instance of its deployment (`shared::peers`), unredacted (it redacts what it writes), as
/// OTLP protobuf. Only in a deployment; 404 when this instance holds none of the trace.
pub async fn held(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    if state.shared.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "nothing here: this server is not an instance of a deployment (--shared-db)",
        ));
    }
    let id = TraceId::from_hex_padded(trace_id.trim()).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("malformed trace id {trace_id:?}: {e} (expected 32 hex digits)"),
        )
    })?;
    let reader = state.reader.clone();
    let body = blocking(move || {
        let spans = reader.trace(id)?;
        if spans.is_empty() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no span of trace {id} on this instance"),
            ));
        }
        Ok(crate::shared::peers::encode(&spans))
    })
    .await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
        body,
    )
        .into_response())
}

/// A JSON answer whose text carries no raw control character (`report::json_escape_controls`).
pub fn json_response(value: &impl Serialize) -> axum::response::Response {
    let body =
        crate::report::json_escape_controls(serde_json::to_string(value).unwrap_or_default());
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// A trace as the API returns it.
#[derive(Debug, Serialize)]
pub struct TraceJson {
    pub trace_id: String,
    pub spans: Vec<SpanJson>,
}

impl TraceJson {
    pub fn new(id: TraceId, spans: &[Span]) -> Self {
        Self {
            trace_id: id.to_string(),
            spans: spans.iter().map(SpanJson::from).collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SpanJson {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: &'static str,
    pub service: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub duration_ms: f64,
    pub status: StatusJson,
    pub attributes: BTreeMap<String, serde_json::Value>,
    pub events: Vec<EventJson>,
    pub links: Vec<LinkJson>,
    pub resource: BTreeMap<String, serde_json::Value>,
    pub scope: ScopeJson,
    /// The log records that carry this span's ids (OTLP logs), by time.
    pub logs: Vec<LogJson>,
}

#[derive(Debug, Serialize)]
pub struct LogJson {
    pub time_unix_nano: u64,
    pub severity: String,
    pub severity_number: i32,
    pub body: String,
    pub attributes: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct StatusJson {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Serialize)]
pub struct EventJson {
    pub time_unix_nano: u64,
    pub name: String,
    pub attributes: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct LinkJson {
    pub trace_id: String,
    pub span_id: String,
    pub attributes: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct ScopeJson {
    pub name: String,
    pub version: String,
}

fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Empty => serde_json::Value::Null,
        Value::Str(s) => s.clone().into(),
        Value::Bool(b) => (*b).into(),
        Value::Int(i) => (*i).into(),
        Value::Double(d) => serde_json::Number::from_f64(*d)
            .map(serde_json::Value::Number)
            .unwrap_or_else(|| d.to_string().into()),
        Value::Bytes(b) => hex::encode(b).into(),
        Value::Array(items) => items.iter().map(value_json).collect(),
        Value::Map(kvs) => kvs
            .iter()
            .map(|kv| (kv.key.clone(), value_json(&kv.value)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

pub(crate) fn attrs_json(attrs: &Attributes) -> BTreeMap<String, serde_json::Value> {
    attrs
        .iter()
        .map(|kv| (kv.key.clone(), value_json(&kv.value)))
        .collect()
}

impl From<&Span> for SpanJson {
    fn from(s: &Span) -> Self {
        Self {
            trace_id: s.trace_id.to_string(),
            span_id: s.span_id.to_string(),
            parent_span_id: s.parent_span_id.map(|p| p.to_string()),
            name: s.name.clone(),
            kind: s.kind.as_str(),
            service: s.service().to_owned(),
            start_unix_nano: s.start_ns,
            end_unix_nano: s.end_ns,
            duration_ms: s.duration_ns() as f64 / 1e6,
            status: StatusJson {
                code: s.status.code.as_str(),
                message: s.status.message.clone(),
            },
            attributes: attrs_json(&s.attributes),
            events: s
                .events
                .iter()
                .map(|e| EventJson {
                    time_unix_nano: e.time_ns,
                    name: e.name.clone(),
                    attributes: attrs_json(&e.attributes),
                })
                .collect(),
            links: s
                .links
                .iter()
                .map(|l| LinkJson {
                    trace_id: l.trace_id.to_string(),
                    span_id: l.span_id.to_string(),
                    attributes: attrs_json(&l.attributes),
                })
                .collect(),
            resource: attrs_json(&s.resource.attributes),
            scope: ScopeJson {
                name: s.scope.name.clone(),
                version: s.scope.version.clone(),
            },
            logs: s
                .logs
                .iter()
                .map(|l| LogJson {
                    time_unix_nano: l.time_ns,
                    severity: l.severity(),
                    severity_number: l.severity_number,
                    body: l.body.clone(),
                    attributes: attrs_json(&l.attributes),
                })
                .collect(),
        }
    }
}
