//! Cross-origin exports from browsers (DESIGN, "Exposure"): `--cors-origin ORIGIN` lets the
//! OpenTelemetry web SDK in a page on ORIGIN export to the OTLP/HTTP receiver, and nothing else.
//!
//! A browser asks first (a preflight: `OPTIONS` with `Origin` and `Access-Control-Request-
//! Method`) because an OTLP export is a POST with `Content-Type: application/json` or
//! `application/x-protobuf`, which no "simple" request may carry. For an allowed origin the
//! preflight is answered with that exact origin (never `*`: the SDK's transports may send
//! credentials, and a browser refuses `*` with them), `Access-Control-Allow-Credentials: true`,
//! the method and the headers it asked for (the SDK's configured headers, an `Authorization`
//! for `--ingest-token` among them), and the answer to the export itself carries the origin
//! again so the SDK can read its status. A preflight from any other origin is refused with 403
//! and no CORS header, and so is an export that names another origin: a page elsewhere can
//! neither read from nor write to the receiver. Requests without `Origin` (every SDK outside a
//! browser) pass untouched.
//!
//! Layered outermost on the OTLP/HTTP router, before the ingest token's guard: a preflight
//! carries no credentials by the Fetch standard, so it must be answered before they are asked.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The origins allowed to export, each as a browser serializes it (`scheme://host[:port]`,
/// lower case, the scheme's default port left out).
#[derive(Debug, Clone, Default)]
pub struct CorsOrigins(Arc<Vec<String>>);

/// Why an `--cors-origin` value is not an origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--cors-origin {value:?}: {why}")]
pub struct OriginError {
    value: String,
    why: &'static str,
}

/// A browser's serialization of `value` as an origin, or why it is none.
pub fn parse_origin(value: &str) -> Result<String, OriginError> {
    let err = |why| OriginError {
        value: value.to_owned(),
        why,
    };
    let v = value.trim();
    if v == "*" {
        return Err(err(
            "name each origin (a browser refuses `*` when the SDK sends credentials)",
        ));
    }
    let url = reqwest::Url::parse(v)
        .map_err(|_| err("expected an origin such as http://localhost:3000"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(err(
            "expected an http or https origin such as http://localhost:3000",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err("an origin holds no user or password"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(err(
            "an origin is a scheme, a host and a port, with no path (http://localhost:3000)",
        ));
    }
    Ok(url.origin().ascii_serialization())
}

impl CorsOrigins {
    pub fn new(origins: &[String]) -> Result<Self, OriginError> {
        let mut list = origins
            .iter()
            .map(|o| parse_origin(o))
            .collect::<Result<Vec<_>, _>>()?;
        list.sort();
        list.dedup();
        Ok(Self(Arc::new(list)))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `origin` (the request's `Origin` header) is one of the allowed ones.
    fn allows(&self, origin: &str) -> bool {
        parse_origin(origin).is_ok_and(|o| self.0.contains(&o))
    }
}

/// The `Origin` header's value, when the request has one as text. `null` (an opaque origin:
/// a sandboxed frame, a `file:` page) is an origin like any other, and never an allowed one.
fn origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

/// Whether the request comes from a page served by this very listener (its `Origin` names the
/// `Host` it was sent to): not cross-origin at all.
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    reqwest::Url::parse(origin).is_ok_and(|u| {
        let authority = match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => return false,
        };
        host.is_some_and(|h| h.eq_ignore_ascii_case(&authority))
    })
}

fn refuse(origin: &str, what: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::VARY, HeaderValue::from_static("Origin"))],
        axum::Json(serde_json::json!({
            "error": format!(
                "{what} from the origin {origin:?} refused: this receiver accepts browser \
                 exports only from the origins given with --cors-origin"
            )
        })),
    )
        .into_response()
}

/// Adds the headers that let the page at `origin` read the answer.
fn allow(headers: &mut HeaderMap, origin: &str) {
    if let Ok(o) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
    }
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// The guard, for `axum::middleware::from_fn_with_state` on the OTLP/HTTP router.
pub async fn guard(State(origins): State<CorsOrigins>, req: Request, next: Next) -> Response {
    let Some(origin) = origin(req.headers()).map(str::to_owned) else {
        return next.run(req).await;
    };
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        if !origins.allows(&origin) {
            return refuse(&origin, "a preflight");
        }
        let asked = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !asked.eq_ignore_ascii_case("POST") {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"))],
                axum::Json(serde_json::json!({
                    "error": format!("the OTLP/HTTP receiver takes POST exports, not {asked}")
                })),
            )
                .into_response();
        }
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        allow(h, &origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, OPTIONS"),
        );
        // The headers the SDK was configured to send (the origin is trusted with them).
        if let Some(asked) = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
        {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
        }
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        h.append(
            header::VARY,
            HeaderValue::from_static(
                "Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        return resp;
    }
    if origins.allows(&origin) {
        let mut resp = next.run(req).await;
        allow(resp.headers_mut(), &origin);
        return resp;
    }
    if same_origin(&origin, req.headers()) {
        return next.run(req).await;
    }
    refuse(&origin, "an export")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_compared_as_browsers_serialize_them() {
        assert_eq!(
            parse_origin("HTTP://LocalHost:3000").unwrap(),
            "http://localhost:3000"
        );
        assert_eq!(
            parse_origin("https://app.example:443/").unwrap(),
            "https://app.example"
        );
        for bad in [
            "*",
            "localhost:3000",
            "ftp://files.example",
            "http://localhost:3000/app",
            "http://u:p@localhost:3000",
            "http://localhost:3000?x=1",
        ] {
            let e = parse_origin(bad).unwrap_err().to_string();
            assert!(e.contains("--cors-origin"), "{bad}: {e}");
        }
        let allowed = CorsOrigins::new(&["http://localhost:3000".to_owned()]).unwrap();
        assert!(allowed.allows("http://localhost:3000"));
        assert!(allowed.allows("http://LOCALHOST:3000"));
        assert!(!allowed.allows("http://localhost:3001"));
        assert!(!allowed.allows("https://localhost:3000"));
        assert!(!allowed.allows("null"));
    }

    #[test]
    fn a_page_served_by_the_listener_itself_is_not_cross_origin() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:4318"));
        assert!(same_origin("http://127.0.0.1:4318", &h));
        assert!(!same_origin("http://127.0.0.1:3000", &h));
        assert!(!same_origin("null", &h));
    }
}
