//! The UI and JSON API server (default 127.0.0.1:4320).
//!
//! Owns routing, the JSON shapes of the API, and the HTML pages of the UI (`ui/`, the only
//! place that writes HTML for the server). Every store call runs on the blocking pool:
//! SQLite blocks, and the async workers must not. `/metrics` is built by `crate::metrics`.

mod api;
pub mod auth;
pub mod cors;
pub mod diff;
pub mod exposure;
mod history;
mod proxy;
mod runs;
pub mod ui;
mod verdicts;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::server::AppState;

pub use api::{ApiError, TraceJson};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/health", get(api::health))
        .route("/api/stats", get(api::stats))
        .route("/api/traces/{trace_id}", get(api::trace))
        .route("/api/runs", get(runs::list).post(runs::open))
        .route("/api/runs/{id}", get(runs::get))
        .route("/api/runs/{id}/close", post(runs::close))
        .route("/api/runs/{id}/report", get(runs::report))
        .route("/api/runs/{id}/gate", get(verdicts::gate))
        .route("/api/runs/{id}/impact", get(verdicts::impact))
        .route("/api/traces/{trace_id}/bug", get(verdicts::bug))
        .route("/api/traces/{trace_id}/otlp", get(verdicts::otlp))
        .route("/api/internal/traces/{trace_id}", get(api::held))
        .route("/api/runs/{id}/export", get(runs::export))
        .route("/api/flaky", get(history::flaky))
        .route("/api/history", get(history::history))
        .route("/api/diff", get(diff::diff))
        .route("/metrics", get(metrics))
        .merge(ui::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            proxy::to_holder,
        ))
        .with_state(state)
}

/// Any other path: a JSON error under `/api/`, an HTML page elsewhere.
async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    let message = format!("nothing at {}", uri.path());
    if uri.path().starts_with("/api/") {
        ApiError::new(axum::http::StatusCode::NOT_FOUND, message).into_response()
    } else {
        ui::UiError::new(axum::http::StatusCode::NOT_FOUND, message).into_response()
    }
}

/// `GET /metrics`: Prometheus series, OpenMetrics text (with exemplars) when the scraper's
/// `Accept` asks for it, the classic text format otherwise.
async fn metrics(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let openmetrics = crate::metrics::wants_openmetrics(accept);
    let text = state.metrics.scrape(openmetrics).await;
    let content_type = if openmetrics {
        crate::metrics::CONTENT_TYPE
    } else {
        crate::metrics::CLASSIC_CONTENT_TYPE
    };
    ([(header::CONTENT_TYPE, content_type)], text)
}
