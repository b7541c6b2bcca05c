//! Trace links: the URL a report prints for a span, from a template with `{trace_id}` and
//! `{span_id}`.
//!
//! Owns `LinkTemplate` and its presets (DESIGN, "Trace links"):
//! - `tracecov` (the default): `{base}/traces/{trace_id}?span={span_id}`, `{base}` being the
//!   public URL of tracecov's UI (`--public-url`, default `http://127.0.0.1:4320`), so links work
//!   away from the tester's machine when the UI is published;
//! - `jaeger`: `{base}/trace/{trace_id}?uiFind={span_id}`;
//! - `tempo`: Grafana's Explore view querying a Tempo data source whose uid is `tempo` for the
//!   trace id (TraceQL query type), over the last 24 hours: `{base}/explore?orgId=1&left=…` with
//!   the pane state URL-encoded. Grafana has no span focus in that URL, so the span id is not used;
//!   a data source with another uid needs a template of its own;
//! - `zipkin`: `{base}/zipkin/traces/{trace_id}`.
//!
//! Parsing (`FromStr`): a text holding `{trace_id}` is a template as is; otherwise it is a preset
//! name, optionally with its base as `name=URL` (`jaeger=http://jaeger:16686`).
//!
//! This module does no I/O and does not know where reports go.

use std::fmt;
use std::str::FromStr;

use crate::model::{SpanId, TraceId};

/// The base of tracecov's own UI when no `--public-url` is given.
pub const DEFAULT_PUBLIC_URL: &str = "http://127.0.0.1:4320";

const TRACE_ID: &str = "{trace_id}";
const SPAN_ID: &str = "{span_id}";

/// Grafana Explore's left pane, URL-encoded, with `{trace_id}` left to fill:
/// `{"datasource":"tempo","queries":[{"refId":"A","queryType":"traceql","query":"{trace_id}"}],
/// "range":{"from":"now-24h","to":"now"}}`.
const TEMPO_PANE: &str = "%7B%22datasource%22%3A%22tempo%22%2C%22queries%22%3A%5B%7B%22refId%22%3A%22A%22%2C%22queryType%22%3A%22traceql%22%2C%22query%22%3A%22{trace_id}%22%7D%5D%2C%22range%22%3A%7B%22from%22%3A%22now-24h%22%2C%22to%22%3A%22now%22%7D%7D";

/// Why a link template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("link template {0:?} has no {{trace_id}}")]
    NoTraceId(String),
    #[error("unknown link preset {0:?}: expected tracecov, jaeger, tempo or zipkin")]
    UnknownPreset(String),
}

/// A URL template for trace links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTemplate {
    template: String,
}

impl LinkTemplate {
    /// A template used as given; it must hold `{trace_id}` (`{span_id}` is optional).
    pub fn new(template: impl Into<String>) -> Result<Self, LinkError> {
        let template = template.into();
        if !template.contains(TRACE_ID) {
            return Err(LinkError::NoTraceId(template));
        }
        Ok(Self { template })
    }

    /// A preset by name (`tracecov`, `jaeger`, `tempo`, `zipkin`) for the UI at `base`.
    pub fn preset(name: &str, base: &str) -> Result<Self, LinkError> {
        let base = base.trim_end_matches('/');
        let template = match name.trim().to_ascii_lowercase().as_str() {
            "tracecov" => format!("{base}/traces/{TRACE_ID}?span={SPAN_ID}"),
            "jaeger" => format!("{base}/trace/{TRACE_ID}?uiFind={SPAN_ID}"),
            "tempo" | "grafana" => format!("{base}/explore?orgId=1&left={TEMPO_PANE}"),
            "zipkin" => format!("{base}/zipkin/traces/{TRACE_ID}"),
            _ => return Err(LinkError::UnknownPreset(name.to_owned())),
        };
        Ok(Self { template })
    }

    /// tracecov's own UI at `public_url`.
    pub fn tracecov(public_url: &str) -> Self {
        Self {
            template: format!(
                "{}/traces/{TRACE_ID}?span={SPAN_ID}",
                public_url.trim_end_matches('/')
            ),
        }
    }

    /// The template text.
    pub fn as_str(&self) -> &str {
        &self.template
    }

    /// The link to one span.
    pub fn render(&self, trace_id: TraceId, span_id: SpanId) -> String {
        self.template
            .replace(TRACE_ID, &trace_id.to_hex())
            .replace(SPAN_ID, &span_id.to_hex())
    }
}

impl Default for LinkTemplate {
    fn default() -> Self {
        Self::tracecov(DEFAULT_PUBLIC_URL)
    }
}

impl fmt::Display for LinkTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.template)
    }
}

impl FromStr for LinkTemplate {
    type Err = LinkError;

    /// A template (holding `{trace_id}`), or `preset` / `preset=BASE`. A preset without a base
    /// gets its tool's usual local address.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(TRACE_ID) {
            return Self::new(s);
        }
        let (name, base) = match s.split_once('=') {
            Some((name, base)) => (name, base.to_owned()),
            None => {
                let base = match s.trim().to_ascii_lowercase().as_str() {
                    "jaeger" => "http://127.0.0.1:16686",
                    "tempo" | "grafana" => "http://127.0.0.1:3000",
                    "zipkin" => "http://127.0.0.1:9411",
                    _ => DEFAULT_PUBLIC_URL,
                };
                (s, base.to_owned())
            }
        };
        Self::preset(name, &base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (TraceId, SpanId) {
        (
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("b7ad6b7169203331").unwrap(),
        )
    }

    #[test]
    fn presets_render_their_documented_forms() {
        let (t, s) = ids();
        let tracecov = LinkTemplate::default();
        assert_eq!(
            tracecov.render(t, s),
            "http://127.0.0.1:4320/traces/0af7651916cd43dd8448eb211c80319c?span=b7ad6b7169203331"
        );
        let public = LinkTemplate::tracecov("https://ci.example.com/tracecov/");
        assert!(
            public
                .render(t, s)
                .starts_with("https://ci.example.com/tracecov/traces/0af7")
        );
        let jaeger: LinkTemplate = "jaeger=http://jaeger:16686".parse().unwrap();
        assert_eq!(
            jaeger.render(t, s),
            "http://jaeger:16686/trace/0af7651916cd43dd8448eb211c80319c?uiFind=b7ad6b7169203331"
        );
        let zipkin: LinkTemplate = "zipkin".parse().unwrap();
        assert_eq!(
            zipkin.render(t, s),
            "http://127.0.0.1:9411/zipkin/traces/0af7651916cd43dd8448eb211c80319c"
        );
        let tempo: LinkTemplate = "tempo=http://grafana:3000".parse().unwrap();
        let url = tempo.render(t, s);
        assert!(
            url.starts_with("http://grafana:3000/explore?orgId=1&left="),
            "{url}"
        );
        assert!(
            url.contains("%22query%22%3A%220af7651916cd43dd8448eb211c80319c%22"),
            "{url}"
        );
    }

    #[test]
    fn custom_templates_need_a_trace_id() {
        let (t, s) = ids();
        let custom: LinkTemplate = "https://apm/{trace_id}/{span_id}".parse().unwrap();
        assert_eq!(
            custom.render(t, s),
            "https://apm/0af7651916cd43dd8448eb211c80319c/b7ad6b7169203331"
        );
        assert!(matches!(
            LinkTemplate::new("https://apm/x"),
            Err(LinkError::NoTraceId(_))
        ));
        assert!(matches!(
            "honeycomb".parse::<LinkTemplate>(),
            Err(LinkError::UnknownPreset(_))
        ));
    }
}
