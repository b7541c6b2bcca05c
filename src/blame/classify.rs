//! Reading one span's error evidence: HTTP and gRPC codes (current and legacy names, integers or
//! strings), cancellations, and the class of DESIGN's table for a span in error.
//!
//! Owns `ErrorClass` and the precedence of the classes. It looks at one span and its immediate
//! neighbours in the tree (the answering child of a client span, the calls a span made before a
//! decode exception); walking to the origin is `walk`'s job.

use crate::graph::{Forest, SpanRef, semconv};
use crate::model::{Attributes, Span, SpanKind, Value};

/// The classes of DESIGN's table, in precedence order (the first that matches wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    Timeout,
    Unreachable,
    Auth,
    RejectedRequest,
    ResponseRejected,
    CalleeError,
    Silent,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 7] = [
        ErrorClass::Timeout,
        ErrorClass::Unreachable,
        ErrorClass::Auth,
        ErrorClass::RejectedRequest,
        ErrorClass::ResponseRejected,
        ErrorClass::CalleeError,
        ErrorClass::Silent,
    ];

    /// The class name exactly as DESIGN writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Timeout => "timeout",
            ErrorClass::Unreachable => "unreachable",
            ErrorClass::Auth => "auth",
            ErrorClass::RejectedRequest => "rejected_request",
            ErrorClass::ResponseRejected => "response_rejected",
            ErrorClass::CalleeError => "callee_error",
            ErrorClass::Silent => "silent",
        }
    }

    /// Whether the boundary (caller and callee together) is blamed rather than one node.
    pub fn blames_boundary(self) -> bool {
        matches!(
            self,
            ErrorClass::Unreachable
                | ErrorClass::Auth
                | ErrorClass::RejectedRequest
                | ErrorClass::ResponseRejected
        )
    }
}

pub const ERROR_TYPE: &str = "error.type";

const GRPC_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

const OK: u8 = 0;
const CANCELLED: u8 = 1;
const DEADLINE_EXCEEDED: u8 = 4;
const UNAVAILABLE: u8 = 14;

/// The canonical name of a gRPC code.
pub fn grpc_name(code: u8) -> &'static str {
    GRPC_NAMES.get(code as usize).copied().unwrap_or("UNKNOWN")
}

/// The gRPC status code of a span, from `rpc.response.status_code` (a name such as
/// `DEADLINE_EXCEEDED`, or a number) or the legacy `rpc.grpc.status_code`.
pub fn grpc_code(attrs: &Attributes) -> Option<u8> {
    semconv::RPC_STATUS
        .iter()
        .find_map(|k| attrs.get(k).and_then(grpc_value))
}

fn grpc_value(value: &Value) -> Option<u8> {
    if let Some(n) = value.as_i64() {
        return u8::try_from(n)
            .ok()
            .filter(|n| (*n as usize) < GRPC_NAMES.len());
    }
    // Names in any spelling: `DEADLINE_EXCEEDED`, `deadline_exceeded`, `DeadlineExceeded`.
    let wanted: String = value
        .as_str()?
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let wanted = wanted.strip_prefix("STATUSCODE").unwrap_or(&wanted);
    GRPC_NAMES
        .iter()
        .position(|name| {
            name.replace('_', "") == wanted || (*name == "CANCELLED" && wanted == "CANCELED")
        })
        .map(|p| p as u8)
}

pub fn http_status(span: &Span) -> Option<i64> {
    semconv::http_status(&span.attributes)
}

/// The span answered with success: an HTTP 2xx with no gRPC status, or gRPC OK.
pub fn answered_ok(span: &Span) -> bool {
    match grpc_code(&span.attributes) {
        Some(code) => code == OK,
        None => http_status(span).is_some_and(|c| (200..300).contains(&c)),
    }
}

/// Everything a span says about its error in words, lower-cased: `error.type`, the status
/// message, and its exception events' types and messages.
pub fn error_text(span: &Span) -> String {
    let mut text = String::new();
    if let Some(v) = span.attributes.get(ERROR_TYPE) {
        text.push_str(&v.to_text());
        text.push('\n');
    }
    text.push_str(&span.status.message);
    for (kind, message, _) in exceptions(span) {
        text.push('\n');
        text.push_str(kind);
        text.push('\n');
        text.push_str(message);
    }
    text.to_lowercase()
}

/// The span's `exception` events as (type, message, stacktrace), in time order.
pub fn exceptions(span: &Span) -> impl Iterator<Item = (&str, &str, &str)> + '_ {
    span.events
        .iter()
        .filter(|e| e.name == "exception")
        .map(|e| {
            let a = &e.attributes;
            (
                a.str("exception.type").unwrap_or(""),
                a.str("exception.message").unwrap_or(""),
                a.str("exception.stacktrace").unwrap_or(""),
            )
        })
}

/// The exceptions the span's log records carry (`exception.type` / `exception.message`
/// attributes) as (type, message, stacktrace), in time order.
pub fn logged_exceptions(span: &Span) -> impl Iterator<Item = (&str, &str, &str)> + '_ {
    span.logs
        .iter()
        .filter(|l| {
            l.attributes.str("exception.type").is_some()
                || l.attributes.str("exception.message").is_some()
        })
        .map(|l| {
            let a = &l.attributes;
            (
                a.str("exception.type").unwrap_or(""),
                a.str("exception.message").unwrap_or(""),
                a.str("exception.stacktrace").unwrap_or(""),
            )
        })
}

/// A cancellation: gRPC CANCELLED, HTTP 499, or "context canceled". It is a consequence of
/// something else giving up, never a cause.
pub fn is_cancellation(span: &Span) -> bool {
    if grpc_code(&span.attributes) == Some(CANCELLED) || http_status(span) == Some(499) {
        return true;
    }
    let text = error_text(span);
    text.contains("context canceled") || text.contains("context cancelled")
}

fn mentions(text: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| text.contains(n))
}

const CIRCUIT_OPEN: &[&str] = &[
    "circuit breaker",
    "circuitbreaker",
    "circuit_breaker",
    "circuit is open",
    "circuit open",
    "circuit_open",
    "open circuit",
    "brokencircuit",
    "callnotpermitted",
];

/// The request never left or never arrived: DNS, connect, TLS.
const NEVER_ARRIVED: &[&str] = &[
    "connection refused",
    "connection_refused",
    "connectionrefused",
    "econnrefused",
    "connection reset",
    "connection_reset",
    "connectionreset",
    "econnreset",
    "connect timeout",
    "connect_timeout",
    "connecttimeout",
    "connection timed out",
    "connection timeout",
    "no route to host",
    "network is unreachable",
    "host unreachable",
    "name resolution",
    "no such host",
    "enotfound",
    "getaddrinfo",
    "name or service not known",
    "nodename nor servname",
    "failed to lookup address",
    "unknownhost",
    "dns error",
    "dns lookup",
    "dns resolution",
    "tls handshake",
    "ssl handshake",
    "handshake failure",
    "handshake failed",
    "certificate verify failed",
];

const TIMED_OUT: &[&str] = &[
    "timeout",
    "timed out",
    "deadline exceeded",
    "deadline_exceeded",
    "deadlineexceeded",
];

const DECODE: &[&str] = &[
    "decode",
    "deserializ",
    "parse",
    "missing field",
    "missing required",
    "unmarshal",
    "serde",
    "json",
    "invalid type",
    "unexpected token",
    "unexpected end",
];

/// What classifying a span found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub class: ErrorClass,
    /// An open circuit breaker refused the call (class `unreachable`).
    pub circuit_open: bool,
    /// For a decode failure right after a successful call: that call's span, where the failure
    /// belongs.
    pub rejected_call: Option<SpanRef>,
}

impl Verdict {
    fn of(class: ErrorClass) -> Self {
        Self {
            class,
            circuit_open: false,
            rejected_call: None,
        }
    }
}

fn is_caller(span: &Span) -> bool {
    matches!(span.kind, SpanKind::Client | SpanKind::Producer)
}

fn same_service(a: &Span, b: &Span) -> bool {
    std::sync::Arc::ptr_eq(&a.resource, &b.resource) || a.service() == b.service()
}

/// The span that answered a calling span: its first child in another service, else its first
/// SERVER child.
pub fn answering_child(forest: &Forest<'_>, r: SpanRef) -> Option<SpanRef> {
    let tree = forest.tree(r.tree);
    let span = tree.span(r.span);
    let at = |c| SpanRef {
        tree: r.tree,
        span: c,
    };
    tree.children(r.span)
        .find(|&c| !same_service(tree.span(c), span))
        .or_else(|| {
            tree.children(r.span)
                .find(|&c| tree.span(c).kind == SpanKind::Server)
        })
        .map(at)
}

/// The class of a span in error, by DESIGN's table and precedence. Codes decide before span
/// status and words: a span's own HTTP or gRPC code settles the code-decided classes first; only
/// a span without codes is judged by its `error.type`, status message and exceptions.
pub fn classify(forest: &Forest<'_>, r: SpanRef) -> Verdict {
    use ErrorClass::*;
    let span = forest.span(r);
    // In error only by what it logged: codes and words of its own say nothing, and DESIGN's
    // table names what is left "an exception inside the callee".
    if semconv::in_error_by_logs(span) {
        return Verdict::of(CalleeError);
    }
    let http = http_status(span);
    let rpc = grpc_code(&span.attributes);
    let caller = is_caller(span);
    let answer = if caller {
        answering_child(forest, r)
    } else {
        None
    };

    if matches!(http, Some(504 | 408)) || rpc == Some(DEADLINE_EXCEEDED) {
        return Verdict::of(Timeout);
    }
    if rpc == Some(UNAVAILABLE) && caller && answer.is_none() {
        return Verdict::of(Unreachable);
    }
    if matches!(http, Some(401 | 403)) || matches!(rpc, Some(16 | 7)) {
        return Verdict::of(Auth);
    }
    let rejected_http =
        http.is_some_and(|c| (400..500).contains(&c) && !matches!(c, 401 | 403 | 408 | 429));
    // ALREADY_EXISTS (6) is gRPC's 409: the callee refused what it was sent.
    if rejected_http || matches!(rpc, Some(3 | 5 | 6 | 9 | 11 | 12)) {
        return Verdict::of(RejectedRequest);
    }

    let own_codes = http.is_some() || rpc.is_some();
    let text = error_text(span);
    if !own_codes {
        if mentions(&text, CIRCUIT_OPEN) {
            return Verdict {
                circuit_open: true,
                ..Verdict::of(Unreachable)
            };
        }
        if mentions(&text, NEVER_ARRIVED) {
            return Verdict::of(Unreachable);
        }
        if mentions(&text, TIMED_OUT) {
            return Verdict::of(Timeout);
        }
    }

    if caller
        && semconv::client_in_error(span)
        && (answered_ok(span) || answer.is_some_and(|a| answered_ok(forest.span(a))))
    {
        return Verdict::of(ResponseRejected);
    }
    if let Some(call) = call_before_decode_failure(forest, r) {
        return Verdict {
            rejected_call: Some(call),
            ..Verdict::of(ResponseRejected)
        };
    }

    if http.is_some_and(|c| c >= 500 || c == 429) || matches!(rpc, Some(2 | 8 | 10 | 13 | 14 | 15))
    {
        return Verdict::of(CalleeError);
    }
    // A call that got no answer at all, from a callee that records spans of its own or from an
    // external: it never arrived. A database does not record spans, and an error it reports
    // (a constraint, a deadlock) is its own.
    let database = span.attributes.first_str(semconv::DB_SYSTEM).is_some();
    if caller && answer.is_none() && !own_codes && !database {
        return Verdict::of(Unreachable);
    }
    Verdict::of(CalleeError)
}

/// When `r` raised a decode / parse / missing-field exception, the successful call it made that
/// returned last before the exception: the answer it could not use. Calls are `r`'s children,
/// else (for a span that is itself a step of its parent) its earlier siblings.
fn call_before_decode_failure(forest: &Forest<'_>, r: SpanRef) -> Option<SpanRef> {
    let span = forest.span(r);
    let at = span
        .events
        .iter()
        .filter(|e| e.name == "exception")
        .find(|e| {
            let kind = e
                .attributes
                .str("exception.type")
                .unwrap_or("")
                .to_lowercase();
            let message = e
                .attributes
                .str("exception.message")
                .unwrap_or("")
                .to_lowercase();
            mentions(&kind, DECODE) || mentions(&message, DECODE)
        })?
        .time_ns;
    let tree = forest.tree(r.tree);
    let pick = |candidates: &mut dyn Iterator<Item = usize>| {
        candidates
            .filter(|&c| {
                let s = tree.span(c);
                (is_caller(s) || !same_service(s, span))
                    && s.end_ns != 0
                    && s.end_ns <= at.saturating_add(crate::graph::SKEW_TOLERANCE_NS)
            })
            .max_by_key(|&c| (tree.span(c).end_ns, c))
    };
    let last = pick(&mut tree.children(r.span)).or_else(|| {
        let parent = tree.parent(r.span)?;
        pick(&mut tree.children(parent).filter(|&c| c != r.span))
    })?;
    let call = SpanRef {
        tree: r.tree,
        span: last,
    };
    let s = tree.span(last);
    let succeeded = !semconv::in_error(s)
        && (answered_ok(s)
            || answering_child(forest, call).is_some_and(|a| answered_ok(forest.span(a))));
    succeeded.then_some(call)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_by_name_or_number_current_or_legacy() {
        let mut a = Attributes::new();
        a.push("rpc.response.status_code", "DEADLINE_EXCEEDED");
        assert_eq!(grpc_code(&a), Some(4));
        let mut a = Attributes::new();
        a.push("rpc.response.status_code", "deadlineExceeded");
        assert_eq!(grpc_code(&a), Some(4));
        let mut a = Attributes::new();
        a.push("rpc.grpc.status_code", 3);
        assert_eq!(grpc_code(&a), Some(3));
        let mut a = Attributes::new();
        a.push("rpc.grpc.status_code", "14");
        assert_eq!(grpc_code(&a), Some(14));
        let mut a = Attributes::new();
        a.push("rpc.response.status_code", "NOPE");
        assert_eq!(grpc_code(&a), None);
        assert_eq!(grpc_name(16), "UNAUTHENTICATED");
    }
}
