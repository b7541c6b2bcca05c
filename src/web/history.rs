//! History across runs over the API: `GET /api/flaky?suite=&last=` (what `tracecov flaky
//! --server` asks) and `GET /api/history?caller=&callee=[&operation=][&suite=][&last=][&run=]`
//! (an edge's or interface's trend, oldest run first).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::api::{ApiError, blocking, json_response};
use crate::history::{self, TrendItem};
use crate::query;
use crate::server::AppState;

/// `last=`: how many of the suite's runs, 1 to `history::MAX_LAST`, default 20.
fn last_of(last: Option<usize>) -> Result<usize, ApiError> {
    match last.unwrap_or(history::DEFAULT_LAST) {
        n @ 1..=history::MAX_LAST => Ok(n),
        n => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "last={n}: give a number of runs from 1 to {}",
                history::MAX_LAST
            ),
        )),
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

#[derive(Debug, Deserialize, Default)]
pub struct FlakyQuery {
    /// The suite; default the latest run's.
    pub suite: Option<String>,
    pub last: Option<usize>,
}

pub async fn flaky(
    State(state): State<AppState>,
    q: Result<Query<FlakyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let last = last_of(q.last)?;
    let suite = non_empty(q.suite);
    let reader = state.reader.clone();
    let ctx = state.report.clone();
    let hops = blocking(move || {
        let window = history::window(&reader, suite.as_deref(), None, last)?;
        Ok(history::flaky_hops(&reader, &window, &ctx)?)
    })
    .await?;
    Ok(json_response(&crate::report::flaky_json(
        &hops,
        &state.report.report.redactor,
    )))
}

#[derive(Debug, Deserialize, Default)]
pub struct HistoryQuery {
    pub caller: Option<String>,
    pub callee: Option<String>,
    /// An interface of the edge; without it, the edge.
    pub operation: Option<String>,
    /// The suite; default `run`'s, else the latest run's.
    pub suite: Option<String>,
    pub last: Option<usize>,
    /// The newest run of the window (an id, a name, `latest`); default the suite's newest.
    pub run: Option<String>,
}

pub async fn history(
    State(state): State<AppState>,
    q: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let (Some(caller), Some(callee)) = (non_empty(q.caller), non_empty(q.callee)) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "give the edge as ?caller=A&callee=B (and &operation=O for one of its interfaces)",
        ));
    };
    let item = TrendItem {
        caller,
        callee,
        operation: non_empty(q.operation),
    };
    let last = last_of(q.last)?;
    let (suite, run) = (non_empty(q.suite), non_empty(q.run));
    let reader = state.reader.clone();
    let ctx = state.report.clone();
    let points = blocking(move || {
        let until = match &run {
            Some(r) => Some(query::resolve_run(&reader, r)?),
            None => None,
        };
        let window = history::window(&reader, suite.as_deref(), until.as_ref(), last)?;
        Ok(history::trend_of(&reader, &window, &item, &ctx, None)?)
    })
    .await?;
    Ok(json_response(&crate::report::history_json(
        &points,
        &state.report.report.redactor,
    )))
}
