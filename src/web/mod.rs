//! The UI and JSON API server (default 127.0.0.1:4320).
//!
//! Owns routing and the JSON shapes of the API. Every store call runs on the blocking pool:
//! SQLite blocks, and the async workers must not.

mod api;

use axum::Router;
use axum::routing::get;

use crate::server::AppState;

pub use api::{ApiError, TraceJson};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/health", get(api::health))
        .route("/api/stats", get(api::stats))
        .route("/api/traces/{trace_id}", get(api::trace))
        .with_state(state)
}
