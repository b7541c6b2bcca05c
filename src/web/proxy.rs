//! Views of one trace served by the instance holding it (`serve --shared-db`; DESIGN, "Many
//! instances, one deployment"): a trace's spans stay on the instance that received them, so its
//! page (`/traces/{id}`, `/traces/{id}/bug`), `GET /api/traces/{id}`, its bug report and its OTLP
//! export asked of any other instance are forwarded to the holder (found in the shared
//! database's `trace_instances`, reached at the `--instance-url` it registered), and its answer
//! is passed back as it is. A holder that does not answer is a 502 naming it; a database that
//! does not answer, a 503.
//!
//! A trace split between instances (the balancer's ring changed mid-trace) is served by the one
//! holder that computes its results (`results::Deployment::computes`), which reads the others'
//! spans (`store::Reader::trace_anywhere`).
//!
//! Must not: forward a request that was itself forwarded (`shared::peers::FORWARDED`), or
//! anything but these views.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api::ApiError;
use super::ui::UiError;
use crate::model::TraceId;
use crate::server::AppState;
use crate::shared::peers::FORWARDED;
use crate::store::{Reader, StoreError};

/// The trace a path views, for the paths served by the trace's holder.
fn viewed_trace(path: &str) -> Option<TraceId> {
    let rest = path
        .strip_prefix("/api/traces/")
        .or_else(|| path.strip_prefix("/traces/"))?;
    let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if !matches!(tail, "" | "bug" | "otlp") || (tail == "otlp" && !path.starts_with("/api/")) {
        return None;
    }
    // A malformed id is the handler's to refuse.
    TraceId::from_hex_padded(id.trim()).ok()
}

/// The instance that serves views of `trace`, when it is not this one.
fn holder(reader: &Reader, trace: TraceId) -> Result<Option<String>, StoreError> {
    let Some(d) = reader.deployment() else {
        return Ok(None);
    };
    let here = reader.with_conn(|c| {
        Ok(
            c.prepare_cached("SELECT EXISTS (SELECT 1 FROM traces WHERE trace_id = ?1)")?
                .query_row([&trace.as_bytes()[..]], |r| r.get::<_, bool>(0))?,
        )
    })?;
    if here && !reader.with_conn(|c| d.crosses(c, trace))? {
        return Ok(None);
    }
    let others = d.elsewhere(trace)?;
    if others.is_empty() || (here && d.computes(&others)) {
        return Ok(None);
    }
    // Sorted: the first is the one that computes it (this one, holding some, is not).
    Ok(others.into_iter().next())
}

/// Middleware on the UI and API router: forwards a view of a trace held elsewhere.
pub async fn to_holder(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let api = path.starts_with("/api/");
    let (Some(trace), Some(peers)) = (viewed_trace(path), state.peers.clone()) else {
        return next.run(req).await;
    };
    if req.headers().contains_key(FORWARDED) {
        return next.run(req).await;
    }
    let reader = state.reader.clone();
    let found = tokio::task::spawn_blocking(move || holder(&reader, trace)).await;
    let instance = match found {
        Ok(Ok(None)) => return next.run(req).await,
        Ok(Ok(Some(instance))) => instance,
        Ok(Err(e)) => {
            let message = format!("cannot find which instance holds trace {trace}: {e}");
            return refusal(api, StatusCode::SERVICE_UNAVAILABLE, message);
        }
        Err(e) => {
            let message = format!("finding trace {trace}'s instance failed: {e}");
            return refusal(api, StatusCode::INTERNAL_SERVER_ERROR, message);
        }
    };
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or(path.to_owned(), |p| p.as_str().to_owned());
    match peers.get(trace, &instance, &path_and_query).await {
        Ok(answer) => {
            let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let kind = answer.content_type.unwrap_or_default();
            if kind.starts_with("text/html") {
                // Served under this server's own page policy.
                return super::ui::html_response(
                    status,
                    String::from_utf8_lossy(&answer.body).into_owned(),
                );
            }
            let mut resp = (status, answer.body).into_response();
            if let Ok(v) = HeaderValue::from_str(&kind) {
                resp.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            resp
        }
        Err(e) => {
            tracing::warn!(trace_id = %trace, instance = %e.instance, problem = %e.problem, "the instance holding a trace did not answer");
            refusal(api, StatusCode::BAD_GATEWAY, e.to_string())
        }
    }
}

fn refusal(api: bool, status: StatusCode, message: String) -> Response {
    if api {
        ApiError::new(status, message).into_response()
    } else {
        UiError::new(status, message).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::viewed_trace;

    #[test]
    fn only_views_of_one_trace_are_forwarded() {
        let id = "0af7651916cd43dd8448eb211c80319c";
        for path in [
            format!("/api/traces/{id}"),
            format!("/api/traces/{id}/bug"),
            format!("/api/traces/{id}/otlp"),
            format!("/traces/{id}"),
            format!("/traces/{id}/bug"),
        ] {
            assert!(viewed_trace(&path).is_some(), "{path}");
        }
        for path in [
            format!("/traces/{id}/otlp"),
            format!("/api/traces/{id}/other"),
            "/api/traces/not-hex".to_owned(),
            "/api/runs/x".to_owned(),
            format!("/api/internal/traces/{id}"),
        ] {
            assert!(viewed_trace(&path).is_none(), "{path}");
        }
    }
}
