//! How reports are written for people: where trace links point and what is redacted. Shared by
//! `serve` and every command that builds reports from the store.

use clap::Args;

use crate::links::LinkTemplate;
use crate::redact::{RedactionOptions, Redactor};
use crate::report::ReportOptions;

#[derive(Debug, Clone, Args, Default)]
pub struct OutputArgs {
    /// Where trace links point: `tracecov` (default; its base is --public-url), `jaeger[=URL]`,
    /// `tempo[=URL]`, `zipkin[=URL]`, or a template holding {trace_id} and {span_id}.
    #[arg(long, env = "TRACECOV_TRACE_LINKS", value_name = "PRESET|TEMPLATE")]
    pub trace_links: Option<LinkTemplate>,
    /// The base URL of tracecov's own trace links, as others will reach its UI.
    #[arg(long, env = "TRACECOV_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Also redact attributes with this key name (any case, separator or prefix); repeatable.
    #[arg(long = "redact-key", value_name = "NAME")]
    pub redact_keys: Vec<String>,
    /// Also redact text matching this regular expression; repeatable.
    #[arg(long = "redact-pattern", value_name = "REGEX")]
    pub redact_patterns: Vec<String>,
    /// Write secrets as they are: turns redaction off in reports, bug reports and the API.
    #[arg(long)]
    pub no_redact: bool,
}

impl OutputArgs {
    /// The report options these flags describe; tracecov's own links default to `default_base`.
    pub fn report_options(&self, default_base: &str) -> anyhow::Result<ReportOptions> {
        let links = match &self.trace_links {
            Some(t) => t.clone(),
            None => LinkTemplate::tracecov(self.public_url.as_deref().unwrap_or(default_base)),
        };
        let redactor = if self.no_redact {
            Redactor::disabled()
        } else {
            Redactor::new(&RedactionOptions {
                enabled: true,
                extra_keys: self.redact_keys.clone(),
                extra_patterns: self.redact_patterns.clone(),
            })?
        };
        Ok(ReportOptions { links, redactor })
    }
}
