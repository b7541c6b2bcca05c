//! `GET /api/diff?base=A&run=B`: what `tracecov diff` answers, for its `--server` mode and for
//! scripts (DESIGN's JSON); the UI's compare page reads the same.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::api::{ApiError, blocking};
use crate::history::Diff;
use crate::query;
use crate::server::AppState;

#[derive(Debug, Deserialize, Default)]
pub struct DiffQuery {
    pub base: Option<String>,
    pub run: Option<String>,
}

impl DiffQuery {
    /// The two run references, `run` defaulting to `latest`; `base` is required.
    pub fn refs(&self) -> Result<(String, String), ApiError> {
        let clean = |s: &Option<String>| {
            s.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let base = clean(&self.base).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "give the run to compare against as ?base= (an id, a name, latest or previous)",
            )
        })?;
        Ok((base, clean(&self.run).unwrap_or_else(|| "latest".into())))
    }
}

pub async fn diff(
    State(state): State<AppState>,
    Query(q): Query<DiffQuery>,
) -> Result<Json<Diff>, ApiError> {
    let (base, run) = q.refs()?;
    let reader = state.reader.clone();
    let ctx = state.report.clone();
    let d = blocking(move || Ok(query::diff_runs(&reader, &base, &run, &ctx)?)).await?;
    Ok(Json(d))
}
