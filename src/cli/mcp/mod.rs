//! `tracecov mcp`: a Model Context Protocol server on stdio for coding agents (DESIGN, "Agents"),
//! built on the official Rust SDK (`rmcp`).
//!
//! Main types: `McpArgs` (the command's flags: `SourceArgs`, so `--data DIR` or `--server URL`
//! with `--token`), `Tracecov` (the tool handler). Each tool asks the same question a CLI
//! command asks, through the same code: `Source::report` for a run's JSON report (failures,
//! untested edges, the summary), `verdicts::bug_report`, `diff::diff_of`, `history::flaky_hops`,
//! the store's trace or `GET /api/traces/{id}`. Everything is redacted where the report and the
//! API redact it; `answer` pages and bounds the text.
//!
//! Key design decisions:
//! - Standard output carries only the protocol: logs go to standard error (`cli::init_logging`),
//!   and nothing reached from here prints to standard output.
//! - A question that cannot be answered (an unknown run, a malformed trace id, a trace with no
//!   failure) is a tool error (`isError`) carrying the same message the CLI prints, so the agent
//!   reads why and can correct the call; the server keeps serving.

mod answer;

use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use self::answer::Listing;
use super::source::{Source, SourceArgs, api_get, urlencode};
use super::verdicts::BugFormat;
use crate::model::{SpanId, TraceId};
use crate::query::{ReportContext, RunStatus};

#[derive(Debug, Clone, Args)]
pub struct McpArgs {
    #[command(flatten)]
    pub source: SourceArgs,
}

/// Serves the tools on stdin/stdout until the client closes them.
pub async fn run(args: McpArgs) -> anyhow::Result<std::process::ExitCode> {
    let source = args.source.open()?;
    let ctx = args.source.report_context()?;
    let server = Tracecov::new(source, ctx, args.source.wait);
    tracing::info!("mcp: serving tools on stdio");
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .context("the MCP client did not complete the handshake")?;
    running.waiting().await.context("the MCP session failed")?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// The tools, over one source.
#[derive(Clone)]
pub struct Tracecov {
    inner: Arc<Inner>,
    // Built once: `tool_handler` would otherwise build the router (and the tools' schemas) again
    // for every request.
    tool_router: ToolRouter<Self>,
}

struct Inner {
    source: Source,
    ctx: ReportContext,
    /// How long a question waits for a run's traces still being received or analysed.
    wait: std::time::Duration,
}

fn default_run() -> String {
    "latest".to_owned()
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct PageArgs {
    /// How many items to skip (default 0): the `offset` the previous answer's `more` names.
    #[serde(default)]
    pub offset: usize,
    /// How many items at most (default 20, at most 200). An answer also stops at 40 KB.
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RunArgs {
    /// The run: an id or a name from `list_runs`, `latest` (the default) or `previous`.
    #[serde(default = "default_run")]
    pub run: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RunPageArgs {
    /// The run: an id or a name from `list_runs`, `latest` (the default) or `previous`.
    #[serde(default = "default_run")]
    pub run: String,
    /// How many items to skip (default 0): the `offset` the previous answer's `more` names.
    #[serde(default)]
    pub offset: usize,
    /// How many items at most (default 20, at most 200). An answer also stops at 40 KB.
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct BugArgs {
    /// The trace holding the failure: its `trace_id` from `failures` (32 hex digits).
    pub trace_id: String,
    /// The failure placed on this span (its `span_id` from `failures`), when the trace holds
    /// several; default the trace's first failure.
    pub span_id: Option<String>,
    /// `markdown` (the default: the report a person would paste into an issue, with the path
    /// of spans from the failing test down to the origin) or `json` (the failure's object as
    /// `failures` gives it, with `run` and `path`).
    pub format: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct DiffArgs {
    /// The run compared against: an id, a name, `latest` or `previous` (the run of the same
    /// suite before `run`).
    pub base: String,
    /// The run: an id, a name or `latest` (the default).
    #[serde(default = "default_run")]
    pub run: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct FlakyArgs {
    /// The suite (a run's `suite` in `list_runs`); default the latest run's.
    pub suite: Option<String>,
    /// How many items to skip (default 0): the `offset` the previous answer's `more` names.
    #[serde(default)]
    pub offset: usize,
    /// How many items at most (default 20, at most 200). An answer also stops at 40 KB.
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct TraceArgs {
    /// The trace (32 hex digits), e.g. a failure's `trace_id` or an untested edge's example.
    pub trace_id: String,
    /// How many spans to skip (default 0): the `offset` the previous answer's `more` names.
    #[serde(default)]
    pub offset: usize,
    /// How many spans at most (default 20, at most 200). An answer also stops at 40 KB.
    pub limit: Option<usize>,
}

/// A tool's answer: the text, or the reason it could not be given as a tool error.
fn reply(answer: anyhow::Result<String>) -> Result<CallToolResult, ErrorData> {
    Ok(match answer {
        Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
        Err(e) => {
            tracing::debug!(error = %format!("{e:#}"), "mcp: tool error");
            CallToolResult::error(vec![ContentBlock::text(format!("{e:#}"))])
        }
    })
}

/// A JSON value as the report writes it.
fn to_value(v: &impl serde::Serialize) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(v)?)
}

fn parse_trace(s: &str) -> anyhow::Result<TraceId> {
    TraceId::from_hex_padded(s.trim())
        .map_err(|e| anyhow::anyhow!("malformed trace id {s:?}: {e} (expected 32 hex digits)"))
}

#[tool_router]
impl Tracecov {
    pub fn new(source: Source, ctx: ReportContext, wait: std::time::Duration) -> Self {
        Self {
            inner: Arc::new(Inner { source, ctx, wait }),
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "List the test runs tracecov holds, newest first. A run is one execution of a \
test suite whose OpenTelemetry traces tracecov collected; each has an `id`, a `name`, a `suite`, \
its span and trace counts and whether it is still `open` (receiving spans). Call this first when \
you do not know which run to ask about; every other tool also accepts `latest`."
    )]
    async fn list_runs(
        &self,
        Parameters(p): Parameters<PageArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.list_runs_text(p).await)
    }

    #[tool(
        description = "Summarize one test run: its tests passed and failed, how many failures (by \
error class), the coverage of the integrations between services (edges caller -> callee, and \
interfaces: an edge's operations) with the counts of untested and unexpected ones, and broken \
expectations. Call it to see whether a run is healthy, then `failures` or `untested` for details."
    )]
    async fn run_summary(
        &self,
        Parameters(p): Parameters<RunArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.run_summary_text(&p.run).await)
    }

    #[tool(
        description = "List the failures of a test run: each failing test with the hop (caller -> \
callee, operation) where the failure started, its class (timeout, unreachable, auth, \
rejected_request, response_rejected, callee_error, silent), the node blamed, a one-sentence \
summary and the evidence (status codes, exception, error logs). Each has a `trace_id` and \
`span_id`: pass them to `bug_report` for the full story, or `trace` for the spans."
    )]
    async fn failures(
        &self,
        Parameters(p): Parameters<RunPageArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.failures_text(p).await)
    }

    #[tool(
        description = "The bug report of one failure: where it started, why (class and evidence), \
the path of spans from the failing test down to the origin, and the spans' details, redacted. \
Give the `trace_id` (and the `span_id` when the trace holds several failures) from `failures`. \
Call it before fixing a failing integration test."
    )]
    async fn bug_report(
        &self,
        Parameters(p): Parameters<BugArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.bug_report_text(p).await)
    }

    #[tool(
        description = "List the integrations no test of a run exercised: expected edges (caller -> \
callee, `operation` null) and interfaces (with an `operation`) from the manifest, contracts, \
OpenAPI documents or earlier traffic, each marked `critical` or not, with an `example` trace \
outside the run that crossed it when one is known. Call it to find which tests to write."
    )]
    async fn untested(
        &self,
        Parameters(p): Parameters<RunPageArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.untested_text(p).await)
    }

    #[tool(
        description = "What changed from one run (`base`) to another (`run`): the coverage delta, \
the edges and interfaces newly failing, fixed, newly untested, newly covered, appeared, \
disappeared, slower or faster, and the failures new in `run`, fixed, and persisting. Call it \
to check what a change broke or fixed, e.g. `base` \"previous\"."
    )]
    async fn diff(&self, Parameters(p): Parameters<DiffArgs>) -> Result<CallToolResult, ErrorData> {
        reply(self.diff_text(p).await)
    }

    #[tool(
        description = "List the flaky hops of a suite over its last 20 runs: the calls (caller -> \
callee, operation) on which a failure was placed in some runs while the same tests passed through \
them in others, most unstable first, with the runs, the failing runs, the classes and the tests. \
Call it before treating a failure as a real regression."
    )]
    async fn flaky(
        &self,
        Parameters(p): Parameters<FlakyArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.flaky_text(p).await)
    }

    #[tool(
        description = "The spans of one trace, redacted, in the order stored: ids, parent, name, \
kind, service, times, status, attributes, events, links and the error logs of each span \
(resource attributes left out). Call it with a `trace_id` from `failures` or `untested` to see \
exactly what the services did."
    )]
    async fn trace(
        &self,
        Parameters(p): Parameters<TraceArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.trace_text(p).await)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Tracecov {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("tracecov", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "tracecov collects the OpenTelemetry traces of test runs and tells which calls \
between services the tests exercised, where each failing test's failure started, and which \
integrations no test touched. Start with `list_runs` or `run_summary`; `failures` then \
`bug_report` explain a failing test; `untested` lists missing tests; `diff` compares two runs. \
Answers are JSON (a bug report is Markdown), at most 40 KB; a list says how to get the rest.",
            )
    }
}

impl Tracecov {
    async fn report(&self, run: &str) -> anyhow::Result<crate::report::Report> {
        let what = [run.to_owned()];
        let i = &self.inner;
        i.source.wait_for_results(&what, &i.ctx, i.wait).await?;
        i.source.report(&what, i.ctx.clone()).await
    }

    async fn list_runs_text(&self, p: PageArgs) -> anyhow::Result<String> {
        let runs: Vec<Value> = match &self.inner.source {
            Source::Data(reader) => {
                let reader = reader.clone();
                let quiet = self
                    .inner
                    .ctx
                    .settle
                    .unwrap_or(crate::config::DEFAULT_SETTLE);
                tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Value>> {
                    let now = crate::ingest::now_ns();
                    reader
                        .with_conn(crate::runs::list_runs)?
                        .into_iter()
                        .map(|r| to_value(&RunStatus::new(r, now, quiet)))
                        .collect()
                })
                .await??
            }
            Source::Server { base, http } => {
                serde_json::from_slice(&api_get(http, &format!("{base}/api/runs")).await?)
                    .context("the server's runs are not valid JSON")?
            }
        };
        let listing = Listing {
            tool: "list_runs",
            items: "runs",
            args: vec![],
        };
        Ok(answer::page(&listing, Map::new(), runs, p.offset, p.limit))
    }

    async fn run_summary_text(&self, run: &str) -> anyhow::Result<String> {
        let report = self.report(run).await?;
        let mut classes = std::collections::BTreeMap::<&str, u64>::new();
        for f in &report.failures {
            *classes.entry(f.class.as_str()).or_default() += 1;
        }
        let coverage = report.coverage.as_ref();
        let summary = json!({
            "run": to_value(&report.run)?,
            "failures": {"total": report.failures.len(), "by_class": classes},
            "coverage": coverage.map(|c| json!({
                "edges": to_value(&c.edges).unwrap_or_default(),
                "interfaces": to_value(&c.interfaces).unwrap_or_default(),
                "critical": to_value(&c.critical).unwrap_or_default(),
                "untested": c.untested.len(),
                "unexpected": c.unexpected.len(),
            })),
            "edges": report.edges.len(),
            "violations": report.violations.as_ref().map(Vec::len),
            "next": "call `failures` for the failures, `untested` for the integrations no test exercised",
        });
        Ok(answer::bounded(
            summary,
            "call `failures` or `untested` for the lists",
        ))
    }

    async fn failures_text(&self, p: RunPageArgs) -> anyhow::Result<String> {
        let report = self.report(&p.run).await?;
        let items = report
            .failures
            .iter()
            .map(to_value)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut head = Map::new();
        head.insert("run".into(), to_value(&report.run.id)?);
        head.insert("run_name".into(), to_value(&report.run.name)?);
        let listing = Listing {
            tool: "failures",
            items: "failures",
            args: vec![("run", p.run.clone())],
        };
        Ok(answer::page(&listing, head, items, p.offset, p.limit))
    }

    async fn untested_text(&self, p: RunPageArgs) -> anyhow::Result<String> {
        let report = self.report(&p.run).await?;
        let items = match &report.coverage {
            Some(c) => c
                .untested
                .iter()
                .map(to_value)
                .collect::<anyhow::Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        let mut head = Map::new();
        head.insert("run".into(), to_value(&report.run.id)?);
        head.insert("run_name".into(), to_value(&report.run.name)?);
        if let Some(c) = &report.coverage {
            head.insert("edges".into(), to_value(&c.edges)?);
            head.insert("interfaces".into(), to_value(&c.interfaces)?);
        }
        let listing = Listing {
            tool: "untested",
            items: "untested",
            args: vec![("run", p.run.clone())],
        };
        Ok(answer::page(&listing, head, items, p.offset, p.limit))
    }

    async fn bug_report_text(&self, p: BugArgs) -> anyhow::Result<String> {
        let trace = parse_trace(&p.trace_id)?;
        let span = match p.span_id.as_deref() {
            Some(s) => Some(SpanId::from_hex(s.trim()).map_err(|e| {
                anyhow::anyhow!("malformed span id {s:?}: {e} (expected 16 hex digits)")
            })?),
            None => None,
        };
        let format = match p.format.as_deref().unwrap_or("markdown") {
            "markdown" => BugFormat::Markdown,
            "json" => BugFormat::Json,
            other => anyhow::bail!("unknown format {other:?} (give `markdown` or `json`)"),
        };
        let i = &self.inner;
        let text =
            super::verdicts::bug_report(&i.source, &i.ctx, trace, span, format, None).await?;
        let more = format!(
            "call `trace` with `trace_id` {:?} for its spans",
            p.trace_id
        );
        Ok(match format {
            BugFormat::Markdown => {
                answer::bounded_text(crate::report::strip_controls(&text), &more)
            }
            BugFormat::Json => {
                let v: Value =
                    serde_json::from_str(&text).context("the bug report is not valid JSON")?;
                answer::bounded(v, &more)
            }
        })
    }

    async fn diff_text(&self, p: DiffArgs) -> anyhow::Result<String> {
        let i = &self.inner;
        let d = super::diff::diff_of(&i.source, &i.ctx, &p.base, &p.run, i.wait).await?;
        Ok(answer::bounded(
            to_value(&d)?,
            "call `failures` or `untested` of either run for their full lists",
        ))
    }

    async fn flaky_text(&self, p: FlakyArgs) -> anyhow::Result<String> {
        let i = &self.inner;
        let (suite, hops) = super::history::flaky_hops(
            &i.source,
            &i.ctx,
            p.suite.as_deref(),
            crate::history::DEFAULT_LAST,
            i.wait,
        )
        .await?;
        let items = hops
            .iter()
            .map(to_value)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut head = Map::new();
        head.insert("suite".into(), suite.clone().into());
        head.insert("last_runs".into(), crate::history::DEFAULT_LAST.into());
        let listing = Listing {
            tool: "flaky",
            items: "flaky",
            args: vec![("suite", suite)],
        };
        Ok(answer::page(&listing, head, items, p.offset, p.limit))
    }

    async fn trace_text(&self, p: TraceArgs) -> anyhow::Result<String> {
        let id = parse_trace(&p.trace_id)?;
        let trace: Value = match &self.inner.source {
            Source::Data(reader) => {
                let reader = reader.clone();
                let redactor = self.inner.ctx.report.redactor.clone();
                tokio::task::spawn_blocking(move || -> anyhow::Result<Value> {
                    let spans = reader.trace(id)?;
                    if spans.is_empty() {
                        anyhow::bail!("no trace {id} in the store");
                    }
                    to_value(&crate::web::TraceJson::new(
                        id,
                        &redactor.redact_spans(&spans),
                    ))
                })
                .await??
            }
            Source::Server { base, http } => serde_json::from_slice(
                &api_get(
                    http,
                    &format!("{base}/api/traces/{}", urlencode(&id.to_string())),
                )
                .await?,
            )
            .context("the server's trace is not valid JSON")?,
        };
        let spans = match trace.get("spans") {
            Some(Value::Array(spans)) => spans
                .iter()
                .cloned()
                .map(|mut s| {
                    if let Value::Object(o) = &mut s {
                        o.remove("resource");
                    }
                    s
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut head = Map::new();
        head.insert("trace_id".into(), id.to_string().into());
        let listing = Listing {
            tool: "trace",
            items: "spans",
            args: vec![("trace_id", id.to_string())],
        };
        Ok(answer::page(&listing, head, spans, p.offset, p.limit))
    }
}
