//! Redaction of secrets from everything tracecov writes for people (DESIGN, "Redaction").
//!
//! Owns `Redactor` and `RedactionOptions`. What is replaced with `[REDACTED]`:
//! - the value of an attribute whose key names a secret: authorization, cookie (set-cookie),
//!   token, secret, password, api-key — any case, any separator, any prefix
//!   (`http.request.header.x-api-key`, `db.password`, `AccessToken`);
//! - in any text, for such a name: the value of a query parameter or any `name=value` pair
//!   (quoted or not, spaces around `=` as in SQL), a JSON `"name": value` or a language repr's
//!   `'name': value` (strings and numbers), and a header line `Name: value` to its end; and the
//!   credentials of a URL (`scheme://user:pass@`) and bearer tokens (`Bearer abc…`);
//! - matches of the configured extra patterns (regular expressions), and values of attributes
//!   with the configured extra key names.
//!
//! A key design decision: a key names a secret when one of its *words* (split at separators and
//! lower-to-upper case changes) ends with a secret name, not when the key merely contains it.
//! `gen_ai.usage.input_tokens` holds a count, not a token; `x-auth-token` and `clientSecret` hold
//! secrets. Erring towards redaction is still the rule: `password_reset.enabled` is redacted.
//!
//! This module does no I/O. OTLP forwarding is not redacted (DESIGN), so nothing on the ingest
//! path calls it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use regex::{Captures, Regex};

use crate::model::{Attributes, Event, KeyValue, Link, Resource, Span, Value};

/// What a redacted value becomes.
pub const REDACTED: &str = "[REDACTED]";

/// The secret names of DESIGN's contract, as the end of a key's word.
const SECRET_WORDS: &[&str] = &[
    "authorization",
    "cookie",
    "token",
    "secret",
    "password",
    "passwd",
    "apikey",
];

static URL_CREDENTIALS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b([a-z][a-z0-9+.\-]*://)([^/?#\s@"'<>]+)@"#).expect("valid regex")
});
static BEARER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(bearer)(\s+|%20|\+)[A-Za-z0-9\-._~+/]+=*").expect("valid regex")
});
/// `name=value`, `name = 'value'`, `name="value"` (query strings, logs, SQL, keyword arguments).
static KEY_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"([A-Za-z0-9_.\-\[\]]+)([ \t]*=[ \t]*)('[^'\n]*'|"(?:[^"\\\n]|\\.)*"|[^&\s,;"'#)<>]*)"#,
    )
    .expect("valid regex")
});
/// `"name": "value"` and `"name": 1234` (JSON).
static JSON_PAIR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#""([^"\s]{1,64})"(\s*:\s*)("(?:[^"\\]|\\.)*"|-?[0-9][0-9.eE+\-]*|true|false)"#)
        .expect("valid regex")
});
/// `'name': 'value'` and `'name': 1234` (Python and other language reprs).
static REPR_PAIR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"'([^'\s]{1,64})'(\s*:\s*)('(?:[^'\\]|\\.)*'|-?[0-9][0-9.eE+\-]*)"#)
        .expect("valid regex")
});
/// `Name: value` to the end of the line (HTTP headers in logs and messages).
static HEADER_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?m)(^|[\s{\[(,;])([A-Za-z][A-Za-z0-9_\-]*)([ \t]*:[ \t]*)([^\r\n]+)"#)
        .expect("valid regex")
});

/// How to redact; from the CLI flags or the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactionOptions {
    /// False only when the user explicitly turned redaction off.
    pub enabled: bool,
    /// More attribute key names to treat as secret (matched like the built-in ones).
    pub extra_keys: Vec<String>,
    /// Regular expressions whose matches in any written text are replaced.
    pub extra_patterns: Vec<String>,
}

impl Default for RedactionOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            extra_keys: Vec::new(),
            extra_patterns: Vec::new(),
        }
    }
}

/// An extra pattern that is not a valid regular expression.
#[derive(Debug, thiserror::Error)]
#[error("invalid redaction pattern {pattern:?}: {source}")]
pub struct PatternError {
    pub pattern: String,
    #[source]
    pub source: regex::Error,
}

/// Redacts spans and strings. Cheap to share by reference; build once per report.
#[derive(Debug, Clone)]
pub struct Redactor {
    enabled: bool,
    /// Extra key names, lower-cased with separators removed.
    extra_keys: Vec<String>,
    extra_patterns: Vec<Regex>,
}

impl Default for Redactor {
    /// The built-in rules, on.
    fn default() -> Self {
        Self {
            enabled: true,
            extra_keys: Vec::new(),
            extra_patterns: Vec::new(),
        }
    }
}

impl Redactor {
    pub fn new(opts: &RedactionOptions) -> Result<Self, PatternError> {
        let extra_patterns = opts
            .extra_patterns
            .iter()
            .map(|p| {
                Regex::new(p).map_err(|source| PatternError {
                    pattern: p.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            enabled: opts.enabled,
            extra_keys: opts.extra_keys.iter().map(|k| squash(k)).collect(),
            extra_patterns,
        })
    }

    /// A redactor that changes nothing (the explicit opt-out).
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Whether an attribute with this key holds a secret.
    pub fn is_secret_key(&self, key: &str) -> bool {
        if !self.enabled {
            return false;
        }
        let words = words(key);
        let builtin = words.iter().enumerate().any(|(i, w)| {
            SECRET_WORDS.iter().any(|s| w.ends_with(s))
                || (w == "api" && words.get(i + 1).is_some_and(|n| n == "key"))
        });
        builtin || {
            let squashed = squash(key);
            self.extra_keys
                .iter()
                .any(|k| !k.is_empty() && squashed.contains(k.as_str()))
        }
    }

    /// A text with its secrets replaced; borrowed when nothing changed.
    pub fn redact_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self.enabled || text.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = Cow::Borrowed(text);
        replace(&mut out, &URL_CREDENTIALS, |c: &Captures| {
            format!("{}{REDACTED}@", &c[1])
        });
        replace(&mut out, &BEARER, |c: &Captures| {
            format!("{}{}{REDACTED}", &c[1], &c[2])
        });
        replace(&mut out, &KEY_VALUE, |c: &Captures| {
            if self.is_secret_key(&c[1]) && &c[3] != REDACTED {
                format!("{}{}{REDACTED}", &c[1], &c[2])
            } else {
                c[0].to_owned()
            }
        });
        replace(&mut out, &JSON_PAIR, |c: &Captures| {
            if self.is_secret_key(&c[1]) {
                format!("\"{}\"{}\"{REDACTED}\"", &c[1], &c[2])
            } else {
                c[0].to_owned()
            }
        });
        replace(&mut out, &REPR_PAIR, |c: &Captures| {
            if self.is_secret_key(&c[1]) {
                format!("'{}'{}'{REDACTED}'", &c[1], &c[2])
            } else {
                c[0].to_owned()
            }
        });
        replace(&mut out, &HEADER_LINE, |c: &Captures| {
            if self.is_secret_key(&c[2]) && !c[4].contains(REDACTED) {
                format!("{}{}{}{REDACTED}", &c[1], &c[2], &c[3])
            } else {
                c[0].to_owned()
            }
        });
        for pattern in &self.extra_patterns {
            replace(&mut out, pattern, |_: &Captures| REDACTED.to_owned());
        }
        out
    }

    /// `redact_str` into an owned string.
    pub fn text(&self, text: &str) -> String {
        self.redact_str(text).into_owned()
    }

    /// A value as it may be shown under a key that is not secret: strings redacted, arrays and
    /// maps item by item (a map's own keys are judged too).
    pub fn redact_value(&self, value: &Value) -> Value {
        match value {
            Value::Str(s) => Value::Str(self.text(s)),
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.redact_value(v)).collect())
            }
            Value::Map(kvs) => Value::Map(kvs.iter().map(|kv| self.redact_kv(kv)).collect()),
            other => other.clone(),
        }
    }

    fn redact_kv(&self, kv: &KeyValue) -> KeyValue {
        let value = if self.is_secret_key(&kv.key) {
            Value::Str(REDACTED.to_owned())
        } else {
            self.redact_value(&kv.value)
        };
        KeyValue {
            key: kv.key.clone(),
            value,
        }
    }

    pub fn redact_attributes(&self, attrs: &Attributes) -> Attributes {
        if !self.enabled {
            return attrs.clone();
        }
        attrs.iter().map(|kv| self.redact_kv(kv)).collect()
    }

    pub fn redact_resource(&self, resource: &Resource) -> Resource {
        Resource::new(self.redact_attributes(&resource.attributes))
    }

    /// A copy of `span` with its name, attributes, events, links, status message, log records
    /// and resource redacted. Ids, times and kinds are kept: they are what makes the trace readable.
    pub fn redact_span(&self, span: &Span) -> Span {
        let resource = Arc::new(self.redact_resource(&span.resource));
        self.redact_span_with(span, resource)
    }

    /// Every span redacted; spans that shared a resource still share one.
    pub fn redact_spans(&self, spans: &[Span]) -> Vec<Span> {
        let mut resources: HashMap<*const Resource, Arc<Resource>> = HashMap::new();
        spans
            .iter()
            .map(|span| {
                let resource = resources
                    .entry(Arc::as_ptr(&span.resource))
                    .or_insert_with(|| Arc::new(self.redact_resource(&span.resource)))
                    .clone();
                self.redact_span_with(span, resource)
            })
            .collect()
    }

    fn redact_span_with(&self, span: &Span, resource: Arc<Resource>) -> Span {
        if !self.enabled {
            return span.clone();
        }
        let mut out = span.clone();
        out.name = self.text(&span.name);
        out.attributes = self.redact_attributes(&span.attributes);
        out.events = span
            .events
            .iter()
            .map(|e| Event {
                time_ns: e.time_ns,
                name: self.text(&e.name),
                attributes: self.redact_attributes(&e.attributes),
            })
            .collect();
        out.links = span
            .links
            .iter()
            .map(|l| Link {
                trace_id: l.trace_id,
                span_id: l.span_id,
                attributes: self.redact_attributes(&l.attributes),
            })
            .collect();
        out.status.message = self.text(&span.status.message);
        out.trace_state = self.text(&span.trace_state);
        for log in &mut out.logs {
            log.body = self.text(&log.body);
            log.attributes = self.redact_attributes(&log.attributes);
        }
        out.resource = resource;
        out
    }
}

/// Applies `re` to `text` in place, allocating only when something matched.
fn replace(text: &mut Cow<'_, str>, re: &Regex, f: impl FnMut(&Captures) -> String) {
    if let Cow::Owned(new) = re.replace_all(text, f) {
        *text = Cow::Owned(new);
    }
}

/// A key's words, lower-cased: split at every non-alphanumeric character and where a lower-case
/// letter or digit is followed by an upper-case one (`xApiKey` → x, api, key).
fn words(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Lower-cased, alphanumerics only: `X-API_Key` → `xapikey`.
fn squash(key: &str) -> String {
    key.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SpanId, StatusCode, TraceId};

    #[test]
    fn secret_keys_by_word_any_case_separator_and_prefix() {
        let r = Redactor::default();
        for key in [
            "Authorization",
            "http.request.header.authorization",
            "http.request.header.proxy-authorization",
            "http.response.header.set-cookie",
            "Cookie",
            "db.password",
            "DB_PASSWORD",
            "x-api-key",
            "X_API_KEY",
            "apiKey",
            "api.key",
            "client_secret",
            "clientSecret",
            "access_token",
            "X-Auth-Token",
            "refreshToken",
        ] {
            assert!(r.is_secret_key(key), "{key}");
        }
        for key in [
            "http.route",
            "gen_ai.usage.input_tokens",
            "url.full",
            "keyboard",
            "service.name",
        ] {
            assert!(!r.is_secret_key(key), "{key}");
        }
        assert!(!Redactor::disabled().is_secret_key("password"));
    }

    #[test]
    fn secrets_inside_text() {
        let r = Redactor::default();
        let cases = [
            (
                "http://admin:hunter2@db.internal:5432/shop",
                "http://[REDACTED]@db.internal:5432/shop",
            ),
            (
                "GET https://pay.example.com/charge?amount=3&api_key=sk_live_123&token=abc#frag",
                "GET https://pay.example.com/charge?amount=3&api_key=[REDACTED]&token=[REDACTED]#frag",
            ),
            (
                "upstream said 401 for Authorization: Bearer eyJhbGciOi.J9.x-y_z=",
                "upstream said 401 for Authorization: Bearer [REDACTED]",
            ),
            (
                r#"body {"user":"ann","password":"p@ss \"w\"","n":1}"#,
                r#"body {"user":"ann","password":"[REDACTED]","n":1}"#,
            ),
            (
                "POST /api/password-reset: expected 202, got 502",
                "POST /api/password-reset: expected 202, got 502",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(r.redact_str(input), want, "{input}");
        }
        assert!(matches!(r.redact_str("nothing here"), Cow::Borrowed(_)));
        assert_eq!(
            Redactor::disabled().redact_str("Bearer abc"),
            "Bearer abc",
            "the opt-out changes nothing"
        );
    }

    /// Realistic leaks, one per row: none of the secrets may survive, and the text around them
    /// stays readable.
    #[test]
    fn realistic_leaks_are_all_redacted() {
        let r = Redactor::default();
        let rows: &[(&str, &str, &str)] = &[
            // (where it shows up, the text, a secret in it)
            (
                "quoted query value",
                "login?password='SECRET3'&next=/",
                "SECRET3",
            ),
            (
                "double-quoted kwarg",
                r#"login(user="ann", password="pw-9")"#,
                "pw-9",
            ),
            (
                "python dict repr",
                "{'user': 'ann', 'password': 'x-secret-1'}",
                "x-secret-1",
            ),
            ("python repr, number", "{'pin_password': 4321}", "4321"),
            (
                "json number",
                r#"{"user": "ann", "password": 1234567}"#,
                "1234567",
            ),
            (
                "json nested",
                r#"{"auth": {"client_secret": "cs-1"}}"#,
                "cs-1",
            ),
            ("header line", "sent X-Auth-Token: tok-abc123", "tok-abc123"),
            (
                "basic auth header",
                "Authorization: Basic dXNlcjpwYXNz",
                "dXNlcjpwYXNz",
            ),
            (
                "cookie header",
                "Cookie: session=s3cr3t; theme=dark",
                "s3cr3t",
            ),
            (
                "sql literal",
                "UPDATE users SET password = 'hunter2' WHERE id = 1",
                "hunter2",
            ),
            (
                "sql double-quoted",
                r#"INSERT INTO t (api_key) VALUES (1) -- api_key="k-77""#,
                "k-77",
            ),
            (
                "url credentials",
                "GET https://ann:pa55@shop.example/cart",
                "pa55",
            ),
            ("url query", "https://x.example/cb?api_key=K1&x=1", "K1"),
            (
                "log line",
                "connecting with token=abc123def to db",
                "abc123def",
            ),
            ("bearer", "failed: Bearer eyJhbGciOi.J9.x", "eyJhbGciOi"),
        ];
        for (what, text, secret) in rows {
            let out = r.text(text);
            assert!(!out.contains(secret), "{what}: {text:?} became {out:?}");
            assert!(out.contains(REDACTED), "{what}: {out:?}");
        }
        // What is not secret stays.
        assert_eq!(
            r.text("UPDATE users SET password = 'hunter2' WHERE id = 1"),
            "UPDATE users SET password = [REDACTED] WHERE id = 1"
        );
        assert_eq!(r.text("{'user': 'ann', 'n': 2}"), "{'user': 'ann', 'n': 2}");
        assert_eq!(
            r.text("Content-Type: application/json"),
            "Content-Type: application/json"
        );
        assert_eq!(r.text("used input_tokens: 5"), "used input_tokens: 5");
    }

    #[test]
    fn extra_keys_and_patterns() {
        let r = Redactor::new(&RedactionOptions {
            enabled: true,
            extra_keys: vec!["ssn".to_owned()],
            extra_patterns: vec![r"\b4[0-9]{15}\b".to_owned()],
        })
        .unwrap();
        assert!(r.is_secret_key("customer.SSN"));
        assert_eq!(
            r.redact_str("card 4242424242424242 declined"),
            "card [REDACTED] declined"
        );
        let bad = Redactor::new(&RedactionOptions {
            extra_patterns: vec!["(".to_owned()],
            ..RedactionOptions::default()
        });
        assert!(bad.is_err());
    }

    #[test]
    fn a_span_keeps_its_shape_and_loses_its_secrets() {
        let mut attrs = Attributes::new();
        attrs.push("service.name", "users");
        attrs.push("deployment.environment.name", "ci");
        attrs.push("db.password", "hunter2");
        let resource = Arc::new(Resource::new(attrs));
        let mut span = Span::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("b7ad6b7169203331").unwrap(),
            "GET /login?password=x",
        );
        span.resource = resource;
        span.attributes.push(
            "http.request.header.authorization",
            Value::Array(vec![Value::from("Basic YWRtaW46aHVudGVyMg==")]),
        );
        span.attributes
            .push("url.full", "https://u:p@h/x?session_token=t1");
        span.attributes.push("http.response.status_code", 500);
        span.status.code = StatusCode::Error;
        span.status.message = "denied for bearer abc.def".to_owned();
        let mut ev = Attributes::new();
        ev.push(
            "exception.message",
            "cannot connect to postgres://app:pw@db/x",
        );
        span.events.push(Event {
            time_ns: 1,
            name: "exception".to_owned(),
            attributes: ev,
        });
        let out = Redactor::default().redact_spans(std::slice::from_ref(&span));
        let out = &out[0];
        assert_eq!(out.name, "GET /login?password=[REDACTED]");
        assert_eq!(out.service(), "users");
        assert_eq!(
            out.attributes.str("http.request.header.authorization"),
            Some(REDACTED)
        );
        assert_eq!(
            out.attributes.str("url.full"),
            Some("https://[REDACTED]@h/x?session_token=[REDACTED]")
        );
        assert_eq!(out.attributes.int("http.response.status_code"), Some(500));
        assert_eq!(out.status.message, "denied for bearer [REDACTED]");
        assert_eq!(
            out.events[0].attributes.str("exception.message"),
            Some("cannot connect to postgres://[REDACTED]@db/x")
        );
        assert_eq!(out.resource.attributes.str("db.password"), Some(REDACTED));
        assert_eq!(
            out.resource.attributes.str("deployment.environment.name"),
            Some("ci")
        );
        assert_eq!(
            (out.span_id, out.start_ns, out.kind),
            (span.span_id, span.start_ns, span.kind)
        );
    }
}
