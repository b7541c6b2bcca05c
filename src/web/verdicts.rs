//! The gate, impact and bug-report endpoints: the same answers `tracecov gate`, `impact` and
//! `bug` give from the store, for the CLI's `--server` mode and for scripts.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::api::{ApiError, blocking};
use crate::coverage::GateConditions;
use crate::model::{SpanId, TraceId};
use crate::query::{self, BugQueryError};
use crate::server::AppState;

#[derive(Debug, Deserialize, Default)]
pub struct GateQuery {
    pub min_edge_coverage: Option<f64>,
    pub min_interface_coverage: Option<f64>,
    #[serde(default)]
    pub critical: bool,
    #[serde(default)]
    pub no_failures: bool,
    #[serde(default)]
    pub no_new_failures: bool,
    pub max_coverage_drop: Option<f64>,
    #[serde(default)]
    pub expectations: bool,
    /// Comma-separated runs whose edges and interfaces join the expected set, and against
    /// which latency regressions are judged.
    pub baseline: Option<String>,
    pub max_latency_regression: Option<f64>,
    pub latency_threshold: Option<f64>,
    pub latency_floor_ms: Option<f64>,
}

pub async fn gate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<GateQuery>,
) -> Result<Json<query::GateVerdict>, ApiError> {
    let reader = state.reader.clone();
    let mut ctx = (*state.report).clone();
    ctx.baselines = super::runs::run_list(q.baseline.as_deref());
    ctx.latency = super::runs::latency_thresholds(q.latency_threshold, q.latency_floor_ms)?;
    let conditions = GateConditions {
        min_edge_coverage: q.min_edge_coverage,
        min_interface_coverage: q.min_interface_coverage,
        critical: q.critical,
        no_failures: q.no_failures,
        no_new_failures: q.no_new_failures,
        max_coverage_drop: q.max_coverage_drop,
        max_latency_regression: q.max_latency_regression,
        expectations: q.expectations,
    };
    let verdict = blocking(move || {
        let run = query::resolve_run(&reader, &id)?;
        Ok(query::gate_run(&reader, &run, &ctx, &conditions)?)
    })
    .await?;
    Ok(Json(verdict))
}

#[derive(Debug, Deserialize, Default)]
pub struct ImpactQuery {
    /// Comma-separated service names.
    #[serde(default)]
    pub changed: String,
}

pub async fn impact(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ImpactQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let changed: Vec<String> = q
        .changed
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if changed.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "give the changed services as ?changed=a,b",
        ));
    }
    let reader = state.reader.clone();
    let ctx = state.report.clone();
    let tests = blocking(move || {
        let run = query::resolve_run(&reader, &id)?;
        Ok(query::impact_run(&reader, &run, &ctx, &changed)?)
    })
    .await?;
    Ok(Json(serde_json::json!({ "tests": tests })))
}

#[derive(Debug, Deserialize, Default)]
pub struct BugQuery {
    pub span: Option<String>,
    pub format: Option<String>,
}

impl From<BugQueryError> for ApiError {
    fn from(e: BugQueryError) -> Self {
        match e {
            BugQueryError::Bug(b) => ApiError::new(StatusCode::NOT_FOUND, b.to_string()),
            BugQueryError::Query(q) => q.into(),
        }
    }
}

pub async fn bug(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
    Query(q): Query<BugQuery>,
) -> Result<Response, ApiError> {
    let bad = |what: &str, e: crate::model::IdError| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("malformed {what}: {e}"))
    };
    let trace = TraceId::from_hex_padded(trace_id.trim()).map_err(|e| bad("trace id", e))?;
    let span = match q.span.as_deref() {
        Some(s) => Some(SpanId::from_hex(s.trim()).map_err(|e| bad("span id", e))?),
        None => None,
    };
    let format = q.format.unwrap_or_else(|| "markdown".into());
    if format != "markdown" && format != "json" {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("unknown format {format:?}: use markdown or json"),
        ));
    }
    let reader = state.reader.clone();
    let ctx = state.report.clone();
    let (bug, _) = blocking(move || Ok(query::bug(&reader, trace, span, &ctx)?)).await?;
    Ok(match format.as_str() {
        "json" => ([(header::CONTENT_TYPE, "application/json")], bug.json()).into_response(),
        _ => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            bug.markdown(),
        )
            .into_response(),
    })
}

/// The trace as redacted OTLP/JSON lines (what `tracecov bug --attach` writes).
pub async fn otlp(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
) -> Result<Response, ApiError> {
    let trace = TraceId::from_hex_padded(trace_id.trim())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("malformed trace id: {e}")))?;
    let reader = state.reader.clone();
    let redactor = state.report.report.redactor.clone();
    let body = blocking(move || {
        let spans = reader.trace_anywhere(trace)?;
        if spans.is_empty() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no trace {trace} in the store"),
            ));
        }
        let mut out = Vec::new();
        crate::blame::bug::attach(&spans, &redactor, &mut out)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        Ok(out)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}
