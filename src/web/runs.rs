//! The runs API: open, list, inspect, close, report, export.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::api::{ApiError, blocking};
use crate::ingest::now_ns;
use crate::query::{self, QueryError, RunStatus};
use crate::runs::{self, RunKind};
use crate::server::AppState;

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::NoSuchRun(_) | QueryError::NoSuchSuite(_) => {
                ApiError::new(StatusCode::NOT_FOUND, e.to_string())
            }
            QueryError::Store(e) => e.into(),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct OpenRun {
    #[serde(default)]
    pub name: Option<String>,
    /// The run's suite (DESIGN, "History across runs"); spans may name it when this does not.
    #[serde(default)]
    pub suite: Option<String>,
    /// The CI job's name, the suite when neither this nor a span names one (`tracecov run`
    /// sends it from the CI system's variables).
    #[serde(default)]
    pub ci_job: Option<String>,
}

pub async fn open(
    State(state): State<AppState>,
    body: Option<Json<OpenRun>>,
) -> Result<Response, ApiError> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let clean = |s: Option<String>| s.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    let name = clean(body.name);
    let suite = runs::SuiteNames {
        suite: clean(body.suite),
        ci_job: clean(body.ci_job),
    };
    let reader = state.reader.clone();
    let registry = state.runs.clone();
    let quiet = state.config.settle;
    let run = blocking(move || {
        let now = now_ns();
        let name = name.unwrap_or_else(|| format!("run-{}", now / 1_000_000_000));
        let run =
            reader.with_conn(|c| registry.open_run(c, &name, RunKind::Explicit, &suite, now))?;
        Ok(RunStatus::new(run, now, quiet))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(run)).into_response())
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<RunStatus>>, ApiError> {
    let reader = state.reader.clone();
    let quiet = state.config.settle;
    let runs = blocking(move || {
        let now = now_ns();
        query::mirror_runs(&reader, crate::results::RunLookup::All)?;
        let mut runs = reader.with_conn(runs::list_runs)?;
        query::deployment_traces(&reader, &mut runs)?;
        Ok(runs
            .into_iter()
            .map(|r| RunStatus::new(r, now, quiet))
            .collect())
    })
    .await?;
    Ok(Json(runs))
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunStatus>, ApiError> {
    let reader = state.reader.clone();
    let quiet = state.config.settle;
    let report = state.report.clone();
    let run = blocking(move || {
        let run = query::resolve_run(&reader, &id)?;
        Ok(RunStatus::new(run, now_ns(), quiet).with_pending(&reader, &report.analysis)?)
    })
    .await?;
    Ok(Json(run))
}

pub async fn close(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunStatus>, ApiError> {
    let reader = state.reader.clone();
    let registry = state.runs.clone();
    let quiet = state.config.settle;
    let run = blocking(move || {
        let run = query::resolve_run(&reader, &id)?;
        let now = now_ns();
        let closed = reader
            .with_conn(|c| registry.close_run(c, &run.id, now))?
            .ok_or_else(|| QueryError::NoSuchRun(id.clone()))?;
        Ok(RunStatus::new(closed, now, quiet))
    })
    .await?;
    Ok(Json(run))
}

#[derive(Debug, Deserialize, Default)]
pub struct ReportQuery {
    #[serde(default)]
    pub format: Option<String>,
    /// More runs to report together with this one (comma-separated).
    #[serde(default)]
    pub also: Option<String>,
    /// Runs to report against (comma-separated): they join the expected set, and the
    /// interfaces slower than in them are listed under `regressions`.
    #[serde(default)]
    pub baseline: Option<String>,
    /// What counts as a regression: `--latency-threshold` and `--latency-floor` (in ms).
    #[serde(default)]
    pub latency_threshold: Option<f64>,
    #[serde(default)]
    pub latency_floor_ms: Option<f64>,
}

/// Comma-separated run references as a list.
pub(crate) fn run_list(text: Option<&str>) -> Vec<String> {
    text.iter()
        .flat_map(|b| b.split(','))
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The latency thresholds a request gives (defaults for those it leaves out); 400 when bad.
pub(crate) fn latency_thresholds(
    ratio: Option<f64>,
    floor_ms: Option<f64>,
) -> Result<crate::regressions::Thresholds, ApiError> {
    crate::regressions::Thresholds::new(ratio, floor_ms)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))
}

/// The server's report context, compared with `baselines` under `latency` when a request gives
/// any (a copy then; the shared one otherwise, since copying holds the manifest's contracts).
pub(crate) fn against_baselines(
    ctx: &std::sync::Arc<query::ReportContext>,
    baselines: Vec<String>,
    latency: crate::regressions::Thresholds,
) -> std::sync::Arc<query::ReportContext> {
    if baselines.is_empty() && latency == ctx.latency {
        return ctx.clone();
    }
    let mut copy = (**ctx).clone();
    copy.baselines = baselines;
    copy.latency = latency;
    std::sync::Arc::new(copy)
}

pub async fn report(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    let format = q.format.unwrap_or_else(|| "json".into());
    if format != "json" && format != "text" {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("unknown report format {format:?}: use json or text"),
        ));
    }
    let reader = state.reader.clone();
    let ctx = against_baselines(
        &state.report,
        run_list(q.baseline.as_deref()),
        latency_thresholds(q.latency_threshold, q.latency_floor_ms)?,
    );
    let mut runs = vec![id];
    runs.extend(run_list(q.also.as_deref()));
    let report = blocking(move || Ok(query::runs_report(&reader, &runs, &ctx)?)).await?;
    Ok(match format.as_str() {
        "text" => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            crate::report::text(&report),
        )
            .into_response(),
        _ => super::api::json_response(&report),
    })
}

#[derive(Debug, Deserialize, Default)]
pub struct ExportQuery {
    /// `false` turns redaction off (`tracecov export --no-redact`); anything else keeps it.
    #[serde(default)]
    pub redact: Option<bool>,
}

/// The run's spans as OTLP/JSON lines, what `tracecov export --server` saves to a file.
pub async fn export(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let redact = q.redact.unwrap_or(true);
    let reader = state.reader.clone();
    let redactor = state.report.report.redactor.clone();
    let body = blocking(move || {
        let run = query::resolve_run(&reader, &id)?;
        let spans = query::run_export(&reader, &run, redact.then_some(&redactor))?;
        let mut out = Vec::new();
        crate::import::write_otlp_json_lines(&spans, &mut out).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot write the export: {e}"),
            )
        })?;
        Ok(out)
    })
    .await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        body,
    )
        .into_response())
}
