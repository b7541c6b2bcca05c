//! Operation names as keys that match across route syntaxes.
//!
//! Owns `Op`, the parsed form of an interface's operation name, and the matching of an expected
//! operation against an observed one. An HTTP operation (`METHOD /path`) is split into segments,
//! each a literal or a parameter, whatever syntax wrote the parameter: `{id}` (OpenAPI, axum,
//! Spring), `:id` (Express, Gin, Rails), `<int:id>` or `<id>` (Flask, Django), a catch-all
//! (`{*rest}`, `*rest`, `*`, `<path:p>`). A concrete path from a Pact file or a legacy span
//! (`/users/42`) is all literals, and a literal matches a parameter. Every other operation (gRPC
//! `package.Service/Method`, a queue destination, `INSERT users`) matches by its exact text, a
//! leading `/` aside (gRPC paths are sometimes written `/package.Service/Method`).
//!
//! Matching scores specificity so that `GET /users/me` prefers a route `/users/me` over
//! `/users/{id}` when both are expected. A segment written with a parameter *and* literal text
//! (`/files/{name}.json`) counts as a parameter: close enough for coverage, and no regex needed.

use std::fmt;

/// HTTP methods an operation name may start with.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Literal(String),
    Param,
    /// Matches the rest of the path, zero or more segments.
    Rest,
}

/// A parsed operation name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Http {
        method: String,
        segments: Vec<Segment>,
    },
    Other(String),
}

/// Why an operation name cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpError(pub String);

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Op {
    /// Parses an operation name. Only an HTTP route can be malformed (an unclosed `{` or `<`);
    /// anything else is a name to match exactly.
    pub fn parse(text: &str) -> Result<Op, OpError> {
        let text = text.trim();
        if let Some((method, path)) = text.split_once(' ') {
            let path = path.trim();
            if is_method(method) && path.starts_with('/') {
                return Ok(Op::Http {
                    method: method.to_ascii_uppercase(),
                    segments: segments(path)
                        .map_err(|e| OpError(format!("route {path:?}: {e}")))?,
                });
            }
        }
        Ok(Op::Other(text.trim_start_matches('/').to_owned()))
    }

    /// As `parse`, for names that come from spans or graphs: a malformed route is matched as
    /// plain text rather than refused (analysis of messy traces never fails).
    pub fn lenient(text: &str) -> Op {
        Op::parse(text).unwrap_or_else(|_| Op::Other(text.trim().to_owned()))
    }

    /// True when every segment is a literal: an example request, not a route.
    pub fn is_concrete(&self) -> bool {
        match self {
            Op::Http { segments, .. } => segments.iter().all(|s| matches!(s, Segment::Literal(_))),
            Op::Other(_) => true,
        }
    }

    /// How well `self` matches `other`, higher is more specific; `None` when they do not match.
    /// Symmetric: either side may be the template.
    pub fn score(&self, other: &Op) -> Option<u32> {
        match (self, other) {
            (Op::Other(a), Op::Other(b)) => (a == b).then_some(u32::MAX),
            (
                Op::Http {
                    method: ma,
                    segments: a,
                },
                Op::Http {
                    method: mb,
                    segments: b,
                },
            ) => {
                if ma != mb {
                    return None;
                }
                score_segments(a, b)
            }
            _ => None,
        }
    }

    /// The same route, as opposed to a route and an example of it: equal up to parameter names.
    pub fn same_route(&self, other: &Op) -> bool {
        self == other
    }
}

/// The canonical spelling: parameters as `{name}` whatever syntax they came in, the method in
/// upper case. Used as the displayed name of an expected operation no span has named yet.
pub(crate) fn canonical(text: &str) -> String {
    let text = text.trim();
    let Some((method, path)) = text.split_once(' ') else {
        return text.to_owned();
    };
    let path = path.trim();
    if !is_method(method) || !path.starts_with('/') {
        return text.to_owned();
    }
    let path = strip_query(path);
    let mut out = method.to_ascii_uppercase();
    out.push(' ');
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        out.push('/');
    }
    for part in parts {
        out.push('/');
        match param_name(part) {
            Some((name, rest)) if rest => {
                out.push_str("{*");
                out.push_str(if name.is_empty() { "rest" } else { name });
                out.push('}');
            }
            Some((name, _)) if !name.is_empty() && !part.contains('{') => {
                out.push('{');
                out.push_str(name);
                out.push('}');
            }
            _ => out.push_str(part),
        }
    }
    out
}

fn is_method(m: &str) -> bool {
    METHODS.iter().any(|x| x.eq_ignore_ascii_case(m))
}

fn strip_query(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

fn segments(path: &str) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    for part in strip_query(path).split('/').filter(|p| !p.is_empty()) {
        if part.matches('{').count() != part.matches('}').count() {
            return Err(format!("unbalanced braces in segment {part:?}"));
        }
        if part.matches('<').count() != part.matches('>').count() {
            return Err(format!("unbalanced angle brackets in segment {part:?}"));
        }
        out.push(match param_name(part) {
            Some((_, true)) => Segment::Rest,
            Some((_, false)) => Segment::Param,
            None => Segment::Literal(part.to_owned()),
        });
    }
    Ok(out)
}

/// For a parameter segment, its name and whether it is a catch-all; `None` for a literal.
fn param_name(part: &str) -> Option<(&str, bool)> {
    if part == "*" || part == "**" {
        return Some(("", true));
    }
    if let Some(name) = part.strip_prefix('*') {
        return Some((name, true));
    }
    if let Some(name) = part.strip_prefix(':') {
        return Some((name, false));
    }
    if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
        if let Some(name) = inner.strip_prefix('*') {
            return Some((name, true));
        }
        // `{id:[0-9]+}` (gorilla/mux) and `{id:int}` (ASP.NET) carry a constraint after a colon.
        let name = inner.split(':').next().unwrap_or(inner);
        return Some((name, false));
    }
    if let Some(inner) = part.strip_prefix('<').and_then(|p| p.strip_suffix('>')) {
        // Flask and Django: `<id>`, `<int:id>`, `<path:rest>` (the only catch-all converter).
        return Some(match inner.split_once(':') {
            Some(("path", name)) => (name, true),
            Some((_, name)) => (name, false),
            None => (inner, false),
        });
    }
    if part.contains('{') || part.contains('<') {
        return Some(("", false));
    }
    None
}

/// Two points a literal match, one a parameter against anything; a catch-all matches the rest
/// for nothing, so an exact route always beats a catch-all.
fn score_segments(a: &[Segment], b: &[Segment]) -> Option<u32> {
    match (a.first(), b.first()) {
        (None, None) => Some(0),
        (Some(Segment::Rest), _) | (_, Some(Segment::Rest)) => Some(0),
        (None, Some(_)) | (Some(_), None) => None,
        (Some(x), Some(y)) => {
            let here = match (x, y) {
                (Segment::Literal(p), Segment::Literal(q)) => (p == q).then_some(2)?,
                (Segment::Param, Segment::Param) => 2,
                _ => 1,
            };
            Some(here + score_segments(&a[1..], &b[1..])?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(s: &str) -> Op {
        Op::parse(s).unwrap()
    }

    #[test]
    fn every_route_syntax_matches_the_same_template() {
        let template = op("GET /users/{id}");
        for same in [
            "GET /users/:id",
            "get /users/<int:id>",
            "GET /users/<id>",
            "GET /users/{user_id:[0-9]+}",
            "GET /users/42",
            "GET /users/42/",
            "GET /users/42?expand=orders",
        ] {
            assert!(template.score(&op(same)).is_some(), "{same}");
            assert!(op(same).score(&template).is_some(), "{same} (reversed)");
        }
        for other in [
            "POST /users/{id}",
            "GET /users",
            "GET /users/42/orders",
            "GET /accounts/42",
        ] {
            assert_eq!(template.score(&op(other)), None, "{other}");
        }
        assert!(op("GET /users/:id").same_route(&op("GET /users/<int:uid>")));
        assert!(!op("GET /users/{id}").same_route(&op("GET /users/42")));
    }

    #[test]
    fn the_more_specific_route_scores_higher() {
        let me = op("GET /users/me");
        let by_id = op("GET /users/{id}");
        let rest = op("GET /users/{*path}");
        let seen = op("GET /users/me");
        let (a, b, c) = (
            me.score(&seen).unwrap(),
            by_id.score(&seen).unwrap(),
            rest.score(&seen).unwrap(),
        );
        assert!(a > b && b > c, "{a} {b} {c}");
        assert!(
            op("GET /files/<path:p>")
                .score(&op("GET /files/a/b/c"))
                .is_some()
        );
        assert!(op("GET /files/*").score(&op("GET /files/a/b")).is_some());
    }

    #[test]
    fn other_operations_match_exactly() {
        let grpc = op("tracecov.demo.v1.Inventory/Reserve");
        assert!(
            grpc.score(&op("/tracecov.demo.v1.Inventory/Reserve"))
                .is_some()
        );
        assert_eq!(
            grpc.score(&op("tracecov.demo.v1.Inventory/GetProduct")),
            None
        );
        assert_eq!(op("INSERT users").score(&op("INSERT orders")), None);
        // A span-name fallback such as "HTTP POST" is not a route.
        assert_eq!(op("HTTP POST"), Op::Other("HTTP POST".into()));
    }

    /// `Expected::add_graph` skips an operation whose text is already an expected interface's
    /// name: that holds only if a canonical name parses to the very route it was made from.
    #[test]
    fn a_canonical_name_parses_to_the_operation_it_names() {
        for text in [
            "GET /users/{id}",
            "get /users/:id/orders/<int:n>",
            "GET /files/<path:p>",
            "GET /files/*",
            "GET /files/**",
            "GET /files/{*rest}",
            "GET /users/42?expand=orders#top",
            "GET //users//42/",
            "GET /",
            "GET /files/{name}.json",
            "GET /users/{id",
            "GET /users/<int:id",
            "  POST   /charge  ",
            "/tracecov.demo.v1.Inventory/Reserve",
            "tracecov.demo.v1.Inventory/Reserve",
            "GET users",
            "HTTP POST",
            "SELECT shop.items",
            "orders",
            "",
        ] {
            assert_eq!(
                Op::lenient(&canonical(text)),
                Op::lenient(text),
                "{text:?} named {:?}",
                canonical(text)
            );
        }
    }

    #[test]
    fn malformed_routes_are_refused_and_canonical_names_use_braces() {
        let err = Op::parse("GET /users/{id").unwrap_err();
        assert!(err.0.contains("unbalanced braces"), "{err}");
        assert!(Op::parse("GET /users/<int:id").is_err());
        assert_eq!(
            canonical("get /users/:id/orders/<int:n>"),
            "GET /users/{id}/orders/{n}"
        );
        assert_eq!(canonical("GET /files/<path:p>"), "GET /files/{*p}");
        assert_eq!(canonical("GET /"), "GET /");
        assert_eq!(canonical("orders"), "orders");
        assert!(op("GET /users/42").is_concrete());
        assert!(!op("GET /users/:id").is_concrete());
    }
}
