//! Reading OpenTelemetry semantic conventions off one span: node ids of the things a span calls,
//! interface operation names, HTTP codes and "in error" (the one place it is decided, its log
//! records included), addresses.
//!
//! Owns every attribute key the graph reads, current names first and legacy names after, because
//! many instrumentation libraries still emit only the legacy names by default. It looks at one
//! span at a time and knows nothing of trees, services or the address map.
//!
//! Functions that build a name write into a caller-supplied `String` buffer instead of returning a
//! fresh `String`: analysis names a node or an operation for most spans of a run, and a million
//! small allocations would cost more than the rest of the analysis.

use std::fmt::Write;

use crate::model::{Attributes, LogRecord, Span, SpanKind, StatusCode};

pub const HTTP_METHOD: &[&str] = &["http.request.method", "http.method"];
pub const HTTP_STATUS: &[&str] = &["http.response.status_code", "http.status_code"];
pub const RPC_STATUS: &[&str] = &["rpc.response.status_code", "rpc.grpc.status_code"];
/// Route-like attributes: templates, never raw paths. `url.template` is the client-side one.
pub const HTTP_ROUTE: &[&str] = &["http.route", "url.template"];
pub const URL_FULL: &[&str] = &["url.full", "http.url"];
pub const URL_SCHEME: &[&str] = &["url.scheme", "http.scheme"];
pub const PEER_SERVICE: &[&str] = &["service.peer.name", "peer.service"];
pub const PEER_ADDRESS: &[&str] = &["server.address", "net.peer.name"];
pub const PEER_PORT: &[&str] = &["server.port", "net.peer.port"];
pub const HOST_ADDRESS: &[&str] = &["server.address", "net.host.name"];
pub const HOST_PORT: &[&str] = &["server.port", "net.host.port"];
pub const HTTP_HOST: &str = "http.host";
pub const DB_SYSTEM: &[&str] = &["db.system.name", "db.system"];
pub const DB_NAMESPACE: &[&str] = &["db.namespace", "db.name"];
pub const DB_OPERATION: &[&str] = &["db.operation.name", "db.operation"];
pub const DB_COLLECTION: &[&str] = &["db.collection.name", "db.sql.table"];
pub const DB_QUERY_SUMMARY: &str = "db.query.summary";
pub const MESSAGING_SYSTEM: &str = "messaging.system";
pub const MESSAGING_DESTINATION: &[&str] = &["messaging.destination.name", "messaging.destination"];
/// For operation names a destination template (`orders-{region}`) beats the concrete name.
pub const MESSAGING_DESTINATION_OP: &[&str] = &[
    "messaging.destination.template",
    "messaging.destination.name",
    "messaging.destination",
];
pub const RPC_SERVICE: &str = "rpc.service";
pub const RPC_METHOD: &str = "rpc.method";
pub const TEST_CASE_NAME: &str = "test.case.name";
pub const TEST_CASE_RESULT: &str = "test.case.result.status";

/// The HTTP status code, whether it arrived as an integer or as a string.
pub fn http_status(attrs: &Attributes) -> Option<i64> {
    attrs.first_int(HTTP_STATUS)
}

/// In error as the calling side of a call: status ERROR, an HTTP 4xx/5xx answer, or an error
/// logged by a span that recorded no outcome.
pub fn client_in_error(span: &Span) -> bool {
    span.status.code == StatusCode::Error
        || http_status(&span.attributes).is_some_and(|c| c >= 400)
        || in_error_by_logs(span)
}

/// In error as the answering side: status ERROR, an HTTP 5xx (a 4xx is the client's fault), or
/// an error logged by a span that recorded no outcome.
pub fn server_in_error(span: &Span) -> bool {
    span.status.code == StatusCode::Error
        || http_status(&span.attributes).is_some_and(|c| c >= 500)
        || in_error_by_logs(span)
}

/// The span recorded an outcome of its own: a status, an HTTP or an RPC status code. Such a span
/// is judged by what it recorded, whatever it logged; one that recorded none is a call the origin
/// walk may step through (`blame::walk`).
pub fn recorded_outcome(span: &Span) -> bool {
    span.status.code != StatusCode::Unset
        || http_status(&span.attributes).is_some()
        || RPC_STATUS.iter().any(|k| span.attributes.get(k).is_some())
}

/// In error by its log records alone (DESIGN, "Evidence from logs"): a span that recorded no
/// outcome and has an error log record (many services log an exception and fail without setting
/// their span's status). Recorded codes and status decide first: a 200 or a handled 404 that
/// logged ERROR stays as it is.
pub fn in_error_by_logs(span: &Span) -> bool {
    span.logs.iter().any(LogRecord::is_error_evidence) && !recorded_outcome(span)
}

/// In error by the rule for its own kind. Spans of other kinds than CLIENT and PRODUCER are
/// judged as servers, the stricter reading.
pub fn in_error(span: &Span) -> bool {
    match span.kind {
        SpanKind::Client | SpanKind::Producer => client_in_error(span),
        _ => server_in_error(span),
    }
}

/// Writes `db:<system>/<namespace>`, `db:<system>@<address>` or `db:<system>`. False (buffer
/// untouched) when the span names no database system.
pub fn db_node(attrs: &Attributes, buf: &mut String) -> bool {
    let Some(system) = attrs.first_str(DB_SYSTEM) else {
        return false;
    };
    buf.clear();
    buf.push_str("db:");
    buf.push_str(system);
    if let Some(ns) = attrs.first_str(DB_NAMESPACE) {
        buf.push('/');
        buf.push_str(ns);
    } else if let Some(addr) = attrs.first_str(PEER_ADDRESS) {
        buf.push('@');
        buf.push_str(addr);
    }
    true
}

/// Writes `queue:<system>/<destination>`, or `queue:<system>` / `queue:<destination>` when only one
/// is known. False when neither is.
pub fn queue_node(attrs: &Attributes, buf: &mut String) -> bool {
    let system = attrs.str(MESSAGING_SYSTEM);
    let dest = attrs.first_str(MESSAGING_DESTINATION);
    if system.is_none() && dest.is_none() {
        return false;
    }
    buf.clear();
    buf.push_str("queue:");
    match (system, dest) {
        (Some(s), Some(d)) => {
            buf.push_str(s);
            buf.push('/');
            buf.push_str(d);
        }
        (Some(one), None) | (None, Some(one)) => buf.push_str(one),
        (None, None) => {}
    }
    true
}

/// The peer a client span names as a logical service (`service.peer.name`, legacy `peer.service`).
pub fn peer_service(attrs: &Attributes) -> Option<&str> {
    attrs.first_str(PEER_SERVICE)
}

/// The host and port a client span called: `server.address`/`server.port`, legacy
/// `net.peer.name`/`net.peer.port`, else the authority of `url.full`/`http.url`. The port falls
/// back to the URL's, then to the scheme's default; `None` when nothing says.
pub fn peer_address(attrs: &Attributes) -> Option<(&str, Option<u16>)> {
    let url = attrs.first_str(URL_FULL).and_then(parse_url);
    let host = match attrs.first_str(PEER_ADDRESS) {
        Some(h) => h,
        None => url.as_ref()?.host,
    };
    let port = attrs
        .first_int(PEER_PORT)
        .and_then(|p| u16::try_from(p).ok())
        .or_else(|| {
            url.as_ref()
                .filter(|u| u.host.eq_ignore_ascii_case(host))
                .and_then(|u| u.port)
        })
        .or_else(|| attrs.first_str(URL_SCHEME).and_then(default_port));
    Some((host, port))
}

/// The address a server span answered on: `server.address`/`server.port`, legacy
/// `net.host.name`/`net.host.port`, else `http.host` (`host` or `host:port`). The address
/// attribute may carry the port itself: Python's WSGI instrumentation under Werkzeug (Flask's
/// development server) sets `net.host.name` to `127.0.0.1:5000`, and taking that whole as the
/// host left every call to the service unresolved, a second `ext:` node beside it.
pub fn served_address(attrs: &Attributes) -> Option<(&str, Option<u16>)> {
    if let Some(address) = attrs.first_str(HOST_ADDRESS) {
        let (host, embedded) = split_host_port(address);
        let port = attrs
            .first_int(HOST_PORT)
            .and_then(|p| u16::try_from(p).ok())
            .or(embedded);
        return Some((host, port));
    }
    attrs.str(HTTP_HOST).map(split_host_port)
}

/// Writes `ext:<host>:<port>` (or `ext:<host>` when no port is known, rather than guessing one).
pub fn ext_address_node(host: &str, port: Option<u16>, buf: &mut String) {
    buf.clear();
    buf.push_str("ext:");
    push_lower(buf, host);
    if let Some(port) = port {
        let _ = write!(buf, ":{port}");
    }
}

/// Appends `text` lower-cased: host names are case-insensitive, and one host must be one node.
pub fn push_lower(buf: &mut String, text: &str) {
    buf.extend(text.chars().map(|c| c.to_ascii_lowercase()));
}

/// A URL's host and port (explicit, else the scheme's default). Only what node ids need: user
/// info is skipped, and the path and query are never looked at.
pub struct UrlAuthority<'a> {
    pub host: &'a str,
    pub port: Option<u16>,
}

pub fn parse_url(url: &str) -> Option<UrlAuthority<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = split_host_port(authority);
    if host.is_empty() {
        return None;
    }
    Some(UrlAuthority {
        host,
        port: port.or_else(|| default_port(scheme)),
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
pub fn split_host_port(text: &str) -> (&str, Option<u16>) {
    if let Some(rest) = text.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return (host, port);
        }
        return (text, None);
    }
    match text.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address, no port.
        Some((host, _)) if host.contains(':') => (text, None),
        Some((host, port)) => match port.parse() {
            Ok(p) => (host, Some(p)),
            Err(_) => (text, None),
        },
        None => (text, None),
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Writes the operation an attribute set names, per DESIGN: HTTP method + route, RPC method,
/// messaging destination, database operation + collection. False when it names none. Raw paths
/// (`url.path`, `http.target`, `url.full`) are never read: they multiply interfaces and leak
/// secrets.
pub fn operation_from_attributes(attrs: &Attributes, buf: &mut String) -> bool {
    buf.clear();
    if let (Some(method), Some(route)) = (attrs.first_str(HTTP_METHOD), attrs.first_str(HTTP_ROUTE))
    {
        buf.push_str(method);
        buf.push(' ');
        buf.push_str(route);
        return true;
    }
    if let Some(method) = attrs.str(RPC_METHOD) {
        // Current conventions may already qualify the method (`pkg.Service/Method`).
        match attrs.str(RPC_SERVICE) {
            Some(service) if !method.contains('/') => {
                buf.push_str(service);
                buf.push('/');
                buf.push_str(method);
            }
            _ => buf.push_str(method),
        }
        return true;
    }
    if let Some(dest) = attrs.first_str(MESSAGING_DESTINATION_OP) {
        buf.push_str(dest);
        return true;
    }
    let db_op = attrs.first_str(DB_OPERATION);
    let collection = attrs.first_str(DB_COLLECTION);
    match (db_op, collection) {
        (Some(op), Some(coll)) => {
            buf.push_str(op);
            buf.push(' ');
            buf.push_str(coll);
            return true;
        }
        (Some(one), None) | (None, Some(one)) => {
            buf.push_str(one);
            return true;
        }
        (None, None) => {}
    }
    if let Some(summary) = attrs.str(DB_QUERY_SUMMARY) {
        buf.push_str(summary);
        return true;
    }
    false
}

/// Writes a span name as an operation: anything from `?` or `#` on is dropped, since a name built
/// from a raw URL would carry its query string.
pub fn operation_from_name(name: &str, buf: &mut String) {
    buf.clear();
    let end = name.find(['?', '#']).unwrap_or(name.len());
    buf.push_str(name[..end].trim());
}

/// The interface operation of a call: the server span's attributes, the client span's, the
/// server span's name, the client span's name, in that order.
pub fn operation(server: Option<&Span>, client: Option<&Span>, buf: &mut String) {
    for span in [server, client].into_iter().flatten() {
        if operation_from_attributes(&span.attributes, buf) {
            return;
        }
    }
    for span in [server, client].into_iter().flatten() {
        operation_from_name(&span.name, buf);
        if !buf.is_empty() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_served_address_that_carries_its_port_is_split() {
        // Flask under Werkzeug, by Python's WSGI instrumentation (legacy names).
        let mut attrs = Attributes::new();
        attrs.push("net.host.name", "127.0.0.1:45111");
        attrs.push("net.host.port", 45111_i64);
        assert_eq!(served_address(&attrs), Some(("127.0.0.1", Some(45111))));
        let mut attrs = Attributes::new();
        attrs.push("server.address", "shop.internal:8080");
        assert_eq!(served_address(&attrs), Some(("shop.internal", Some(8080))));
        let mut attrs = Attributes::new();
        attrs.push("server.address", "fe80::1");
        attrs.push("server.port", 9000_i64);
        assert_eq!(served_address(&attrs), Some(("fe80::1", Some(9000))));
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("cart:8080"), ("cart", Some(8080)));
        assert_eq!(split_host_port("cart"), ("cart", None));
        assert_eq!(split_host_port("[::1]:9000"), ("::1", Some(9000)));
        assert_eq!(split_host_port("fe80::1"), ("fe80::1", None));
    }

    #[test]
    fn url_authority_skips_credentials_and_defaults_the_port() {
        let u = parse_url("https://user:pw@Pay.Example.com/charge?token=x").unwrap();
        assert_eq!((u.host, u.port), ("Pay.Example.com", Some(443)));
        let u = parse_url("http://cart:8081?x=1").unwrap();
        assert_eq!((u.host, u.port), ("cart", Some(8081)));
        assert!(parse_url("/relative/path").is_none());
    }

    #[test]
    fn span_name_loses_its_query_string() {
        let mut buf = String::new();
        operation_from_name("GET /search?q=secret#frag", &mut buf);
        assert_eq!(buf, "GET /search");
    }
}
