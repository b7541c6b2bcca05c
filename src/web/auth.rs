//! Bearer tokens (DESIGN's "Exposure"): `--ingest-token` on the OTLP receivers, `--token` on the
//! UI, the API and `/metrics`. The two are separate so that whatever can export (an SDK's
//! configuration, a CI log, a page under test) cannot read.
//!
//! - A client sends `Authorization: Bearer TOKEN`. Missing or wrong: HTTP 401 with
//!   `WWW-Authenticate: Bearer` (not retryable for OTLP clients), gRPC UNAUTHENTICATED.
//! - A browser signs in once through a link carrying the token (`…/any/page?token=TOKEN`): the
//!   answer sets an HttpOnly, `SameSite=Strict` cookie and redirects to the same URL without the
//!   token, so it stays out of the history and of what the page shows. The cookie holds a
//!   digest of the token, not the token.
//!
//! Tokens are compared as SHA-256 digests, so the time a comparison takes says nothing about
//! the token.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The UI's sign-in cookie.
pub const COOKIE: &str = "tracecov_session";

/// A token a listener requires.
#[derive(Clone)]
pub struct Token {
    digest: Arc<[u8; 32]>,
    /// Whether the listener serves TLS (the cookie is then `Secure`).
    tls: bool,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl Token {
    pub fn new(secret: &str, tls: bool) -> Self {
        Self {
            digest: Arc::new(sha256(&[secret.as_bytes()])),
            tls,
        }
    }

    /// Whether `candidate` is the token.
    pub fn matches(&self, candidate: &str) -> bool {
        sha256(&[candidate.as_bytes()]) == *self.digest
    }

    /// What the sign-in cookie holds: a digest of the token, never the token.
    fn cookie_value(&self) -> String {
        hex::encode(sha256(&[b"tracecov-ui-session:", &self.digest[..]]))
    }

    /// Whether the headers carry the token as `Authorization: Bearer …`.
    pub fn in_bearer(&self, headers: &HeaderMap) -> bool {
        bearer(headers).is_some_and(|t| self.matches(t))
    }

    fn in_cookie(&self, headers: &HeaderMap) -> bool {
        let want = self.cookie_value();
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .any(|(k, v)| k == COOKIE && v == want)
    }
}

/// The token of an `Authorization: Bearer …` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn unauthorized(message: &str, html: bool) -> Response {
    let mut resp = if html {
        (
            StatusCode::UNAUTHORIZED,
            axum::response::Html(format!(
                "<!doctype html><meta charset=utf-8><title>tracecov: sign in</title>\
                 <h1>Sign in</h1><p>{message}</p>"
            )),
        )
            .into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({ "error": message })),
        )
            .into_response()
    };
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// The OTLP/HTTP receiver's guard (`--ingest-token`), for `from_fn_with_state`.
pub async fn ingest_guard(State(token): State<Token>, req: Request, next: Next) -> Response {
    if token.in_bearer(req.headers()) {
        return next.run(req).await;
    }
    unauthorized(
        "this receiver requires Authorization: Bearer <the --ingest-token>; with an \
         OpenTelemetry SDK set OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<token>",
        false,
    )
}

/// The `token` query parameter of a sign-in link, and the query without it.
fn split_token(query: &str) -> (Option<String>, String) {
    let mut token = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("token", v)) => token = Some(percent_decode(v)),
            _ => kept.push(pair),
        }
    }
    (token, kept.join("&"))
}

/// `%XX` and `+` decoded (what a browser makes of a link's query value).
fn percent_decode(v: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| Some(hex(bytes[i + 1])? << 4 | hex(bytes[i + 2])?))
            .flatten();
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The UI and API's guard (`--token`): a bearer header or the sign-in cookie; a GET with
/// `?token=` signs in.
pub async fn api_guard(State(token): State<Token>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    if token.in_bearer(headers) || token.in_cookie(headers) {
        return next.run(req).await;
    }
    let path = req.uri().path().to_owned();
    let html = !(path.starts_with("/api/") || path == "/metrics");
    if let Some(query) = req.uri().query()
        && let (Some(given), rest) = split_token(query)
    {
        if !token.matches(&given) {
            return unauthorized(
                "the sign-in link's token is not this server's --token",
                html,
            );
        }
        let location = if rest.is_empty() {
            path
        } else {
            format!("{path}?{rest}")
        };
        let cookie = format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/{}",
            token.cookie_value(),
            if token.tls { "; Secure" } else { "" }
        );
        let mut resp = StatusCode::SEE_OTHER.into_response();
        let h = resp.headers_mut();
        if let (Ok(l), Ok(c)) = (
            HeaderValue::from_str(&location),
            HeaderValue::from_str(&cookie),
        ) {
            h.insert(header::LOCATION, l);
            h.insert(header::SET_COOKIE, c);
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        return resp;
    }
    unauthorized(
        "this server requires its --token: send Authorization: Bearer <token> (client commands \
         take --token or TRACECOV_TOKEN), or sign in once by opening any page with ?token=<token>",
        html,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_headers_are_read_whatever_the_scheme_case() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  s3cret "),
        );
        assert_eq!(bearer(&h), Some("s3cret"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic czNjcmV0"),
        );
        assert_eq!(bearer(&h), None);
        let t = Token::new("s3cret", false);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert!(t.in_bearer(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cre"),
        );
        assert!(!t.in_bearer(&h));
    }

    #[test]
    fn sign_in_links_lose_their_token_and_keep_the_rest() {
        assert_eq!(
            split_token("a=1&token=x%2By+z&b=2"),
            (Some("x+y z".to_owned()), "a=1&b=2".to_owned())
        );
        assert_eq!(split_token("a=1"), (None, "a=1".to_owned()));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn the_cookie_holds_no_token() {
        let t = Token::new("s3cret", false);
        let v = t.cookie_value();
        assert!(!v.contains("s3cret"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={v}")).unwrap(),
        );
        assert!(t.in_cookie(&h));
        assert!(!Token::new("other", false).in_cookie(&h));
    }
}
