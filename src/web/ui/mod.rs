//! The web UI: server-rendered HTML pages over the same queries as the JSON API.
//!
//! Pages: the runs (`/`), a run (`/runs/{id}`: verdict, coverage heatmap, service graph,
//! failures, diagnostics), one edge's interfaces (`/runs/{id}/edges?caller=&callee=`), a trace
//! (`/traces/{trace_id}?span=`: the waterfall the default trace links open), a bug report
//! (`/traces/{trace_id}/bug?span=`) and two runs compared (`/diff?base=&run=`). Styles and the one script are compiled into the binary and
//! served from `/assets/`.
//!
//! A key design decision: every page is written with `maud`, whose `html!` escapes every
//! interpolated value, so text from a span cannot become markup; the only unescaped text is our
//! own (SVG path data computed from numbers). On top of that every page is served with a
//! Content-Security-Policy that allows scripts and styles only from `/assets/`: markup that
//! escaped escaping still could not run. Links built from span data are always relative paths
//! with percent-encoded parts; configured links (trace-link templates) must be http(s).
//!
//! Data comes from `crate::query` on the blocking pool; nothing here reads the store itself.

mod bug;
mod diff;
mod edge;
pub mod graph;
pub mod heatmap;
mod layout;
pub mod run;
mod runs;
mod trace;
mod trend;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::Markup;

use crate::query::{BugQueryError, QueryError};
use crate::server::AppState;
use crate::store::StoreError;

pub use run::{RunPage, render_run_page};
pub use runs::UiCache;

/// Pages may load scripts, styles and data only from this server, and run no inline script.
/// Inline `style` attributes are allowed: the waterfall positions its bars with them, and their
/// values are computed numbers and palette colours, never span text.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   style-src-attr 'unsafe-inline'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const CSS: &str = include_str!("assets/ui.css");
const JS: &str = include_str!("assets/ui.js");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(runs::page))
        .route("/runs/{id}", get(run::page))
        .route("/runs/{id}/edges", get(edge::page))
        .route("/diff", get(diff::page))
        .route("/traces/{trace_id}", get(trace::page))
        .route("/traces/{trace_id}/bug", get(bug::page))
        .route("/assets/{file}", get(asset))
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "ui.css" => (CSS, "text/css; charset=utf-8"),
        "ui.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return UiError::new(StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// A rendered page, answered as HTML under the UI's security policy.
pub struct Page(pub Markup);

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        html_response(StatusCode::OK, self.0.into_string())
    }
}

pub(crate) fn html_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Why a page could not be shown: answered as an HTML page with the status.
#[derive(Debug)]
pub struct UiError {
    status: StatusCode,
    message: String,
}

impl UiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("error").to_owned();
        let body = layout::page(
            &title,
            layout::Body::default(),
            maud::html! {
                h1 { (title) }
                p.error { (layout::prose(&self.message)) }
                p { a href="/" { "All runs" } }
            },
        );
        html_response(self.status, body.into_string())
    }
}

impl From<StoreError> for UiError {
    fn from(e: StoreError) -> Self {
        // As for the API: the deployment's database (or an instance) not answering is an
        // outage to wait out, not a fault of this store.
        if let StoreError::Shared(problem) = &e {
            tracing::warn!(error = %problem, "a page needing the shared database failed");
            return UiError::new(StatusCode::SERVICE_UNAVAILABLE, problem.clone());
        }
        tracing::error!(error = %e, "store read failed");
        UiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("store: {e}"))
    }
}

impl From<QueryError> for UiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::NoSuchRun(_) | QueryError::NoSuchSuite(_) => {
                UiError::new(StatusCode::NOT_FOUND, e.to_string())
            }
            QueryError::Store(e) => e.into(),
        }
    }
}

impl From<BugQueryError> for UiError {
    fn from(e: BugQueryError) -> Self {
        match e {
            BugQueryError::Bug(b) => UiError::new(StatusCode::NOT_FOUND, b.to_string()),
            BugQueryError::Query(q) => q.into(),
        }
    }
}

/// Runs page work (store reads, analysis, rendering) off the async workers.
async fn blocking(
    f: impl FnOnce() -> Result<Markup, UiError> + Send + 'static,
) -> Result<Page, UiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            UiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("rendering failed: {e}"),
            )
        })?
        .map(Page)
}

/// Percent-encodes everything but RFC 3986's unreserved characters: safe in a path segment and
/// in a query value alike. (The CLI builds its API URLs with the same function.)
pub fn enc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The UI's own links, always relative and percent-encoded.
pub mod href {
    use super::enc;

    pub fn run(id: &str) -> String {
        format!("/runs/{}", enc(id))
    }
    pub fn edge(run: &str, caller: &str, callee: &str) -> String {
        format!(
            "/runs/{}/edges?caller={}&callee={}",
            enc(run),
            enc(caller),
            enc(callee)
        )
    }
    pub fn trace(trace: &str, span: Option<&str>) -> String {
        match span {
            Some(s) => format!("/traces/{}?span={}", enc(trace), enc(s)),
            None => format!("/traces/{}", enc(trace)),
        }
    }
    pub fn bug(trace: &str, span: &str) -> String {
        format!("/traces/{}/bug?span={}", enc(trace), enc(span))
    }
}

/// A configured link (trace-link template) as an `href`, only when it is http(s) or relative:
/// never a `javascript:` or `data:` URL.
pub fn safe_external(link: &str) -> Option<&str> {
    let l = link.trim();
    let lower = l.to_ascii_lowercase();
    (lower.starts_with("http://") || lower.starts_with("https://") || l.starts_with('/'))
        .then_some(l)
}

#[cfg(test)]
mod tests;
