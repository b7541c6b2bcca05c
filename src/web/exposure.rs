//! DESIGN's "Exposure" rules for the HTTP listeners (the UI and API, and OTLP/HTTP): a guard
//! layered over each router.
//!
//! - Against DNS rebinding: on a listener bound to a loopback address, a request whose `Host`
//!   names anything but that address, `localhost`, `--public-url`'s host or an `--allow-host`
//!   name is refused with 403. (A page on `attacker.example` whose name was re-pointed at
//!   127.0.0.1 sends `Host: attacker.example`.) On another bind only the `--allow-host` names
//!   are checked, when any are given.
//! - Against forged cross-site requests (the UI and API only): a state-changing request (any
//!   method but GET, HEAD and OPTIONS) must carry `Content-Type: application/json` or
//!   `X-Tracecov: 1`, which a cross-site form or a "simple" cross-origin fetch cannot send.
//!
//! This module decides and answers; it reads no store and does no I/O.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// What a listener lets in.
#[derive(Debug, Clone)]
pub struct Exposure {
    /// Host names (lower case, no port) accepted; empty with `check_hosts` off.
    hosts: Arc<Vec<String>>,
    check_hosts: bool,
    /// Whether state-changing requests must prove they are not a cross-site form.
    guard_writes: bool,
}

/// The host part of a `Host` value (`[::1]:4320` → `::1`, `Example.com:80` → `example.com`).
fn host_name(value: &str) -> String {
    let v = value.trim();
    let name = if let Some(rest) = v.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        v.rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(v, |(h, _)| h)
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Exposure {
    /// The rules for a listener bound to `bound`: `public_url` and `allow_hosts` add accepted
    /// names; `guard_writes` for the UI and API.
    pub fn new(
        bound: SocketAddr,
        public_url: Option<&str>,
        allow_hosts: &[String],
        guard_writes: bool,
    ) -> Self {
        let mut hosts: Vec<String> = allow_hosts.iter().map(|h| host_name(h)).collect();
        let check_hosts = bound.ip().is_loopback() || !hosts.is_empty();
        if bound.ip().is_loopback() {
            hosts.push(bound.ip().to_string());
            hosts.extend(["localhost", "127.0.0.1", "::1"].map(str::to_owned));
            if let Some(url) = public_url.and_then(|u| reqwest::Url::parse(u).ok())
                && let Some(h) = url.host_str()
            {
                hosts.push(host_name(h));
            }
        }
        hosts.sort();
        hosts.dedup();
        Self {
            hosts: Arc::new(hosts),
            check_hosts,
            guard_writes,
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        !self.check_hosts || self.hosts.iter().any(|h| *h == host_name(host))
    }
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// The guard, for `axum::middleware::from_fn_with_state`.
pub async fn guard(State(rules): State<Exposure>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    if let Some(host) = host
        && !rules.host_allowed(&host)
    {
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "this server does not answer to the host {:?} (a guard against DNS rebinding): \
                 use the address it is bound to, or allow the name with --allow-host",
                host_name(&host)
            ),
        );
    }
    if rules.guard_writes && !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
    {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        let marked = req
            .headers()
            .get("x-tracecov")
            .is_some_and(|v| v.as_bytes() == b"1");
        if !json && !marked {
            return refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "{} {} changes state: send it with Content-Type: application/json or the \
                     header X-Tracecov: 1 (a guard against cross-site requests)",
                    req.method(),
                    req.uri().path()
                ),
            );
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_port_case_and_brackets() {
        assert_eq!(host_name("LocalHost:4320"), "localhost");
        assert_eq!(host_name("[::1]:4318"), "::1");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_name("ci.example.com."), "ci.example.com");
    }

    #[test]
    fn loopback_binds_accept_their_own_names_only() {
        let bound: SocketAddr = "127.0.0.1:4320".parse().unwrap();
        let e = Exposure::new(
            bound,
            Some("https://tracecov.ci.example:8443/"),
            &["dev-box".to_owned()],
            true,
        );
        for ok in [
            "127.0.0.1:4320",
            "localhost:4320",
            "tracecov.ci.example",
            "DEV-BOX:80",
        ] {
            assert!(e.host_allowed(ok), "{ok}");
        }
        for refused in [
            "attacker.example",
            "127.0.0.2",
            "localhost.attacker.example",
        ] {
            assert!(!e.host_allowed(refused), "{refused}");
        }
        // Beyond loopback, only the names given are checked, when there are any.
        let any: SocketAddr = "0.0.0.0:4320".parse().unwrap();
        assert!(Exposure::new(any, None, &[], true).host_allowed("anything.example"));
        let named = Exposure::new(any, None, &["ci.example".to_owned()], true);
        assert!(named.host_allowed("ci.example:4320"));
        assert!(!named.host_allowed("attacker.example"));
    }
}
