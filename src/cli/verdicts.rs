//! `tracecov gate`, `tracecov impact` and `tracecov bug`: answers a CI step or a developer acts on.
//! Each reads the store (`--data`) or a running server (`--server`, through the same API the
//! server side answers from `crate::query`).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};

use super::source::{Source, SourceArgs, api_get, urlencode};
use crate::coverage::GateConditions;
use crate::model::{SpanId, TraceId};
use crate::query::{self, GateVerdict};

/// The gate's conditions, shared by `tracecov gate` and `tracecov run`.
#[derive(Debug, Clone, Args, Default)]
pub struct GateArgs {
    /// Fail when fewer than PCT % of the expected edges are covered.
    #[arg(long, value_name = "PCT")]
    pub min_edge_coverage: Option<f64>,
    /// Fail when fewer than PCT % of the expected interfaces are covered.
    #[arg(long, value_name = "PCT")]
    pub min_interface_coverage: Option<f64>,
    /// Fail unless every critical edge and interface is covered and not failing.
    #[arg(long)]
    pub critical: bool,
    /// Fail when any test failed or any item is failing.
    #[arg(long)]
    pub no_failures: bool,
    /// Fail when the run has a failure the baseline (the first --baseline) did not have: the
    /// same test, class and hop.
    #[arg(long)]
    pub no_new_failures: bool,
    /// Fail when edge or interface coverage fell by more than PCT points from the baseline's
    /// (the first --baseline), both computed over the run's expected set.
    #[arg(long, value_name = "PCT")]
    pub max_coverage_drop: Option<f64>,
    /// Fail on any broken expectation (the manifest's `expect:`), naming each.
    #[arg(long)]
    pub expectations: bool,
    /// A run whose edges and interfaces join the expected set, that --no-new-failures and
    /// --max-coverage-drop compare against, and against which latency regressions are
    /// reported: an id, a name, `latest`, or `previous` (the run of the same suite before this
    /// one); repeatable.
    #[arg(long, value_name = "RUN")]
    pub baseline: Vec<String>,
    /// Fail when an interface's p95 grew by more than RATIO against --baseline (of those the
    /// latency thresholds report).
    #[arg(long, value_name = "RATIO")]
    pub max_latency_regression: Option<f64>,
    #[command(flatten)]
    pub latency: LatencyArgs,
}

/// What counts as a latency regression against `--baseline` (`report`, `gate`, `run`).
#[derive(Debug, Clone, Args)]
pub struct LatencyArgs {
    /// Report an interface as slower than the baseline when its p95 grew by more than this
    /// factor (and by at least --latency-floor), with at least 20 calls in both runs.
    #[arg(long, value_name = "RATIO", default_value_t = crate::regressions::DEFAULT_RATIO)]
    pub latency_threshold: f64,
    /// The least growth of a p95 that is reported: milliseconds, or a duration (5ms, 0.2s).
    #[arg(long, value_name = "MS", default_value = "5", value_parser = parse_floor_ms)]
    pub latency_floor: f64,
}

impl Default for LatencyArgs {
    fn default() -> Self {
        Self {
            latency_threshold: crate::regressions::DEFAULT_RATIO,
            latency_floor: crate::regressions::DEFAULT_FLOOR_NS as f64 / 1e6,
        }
    }
}

/// `--latency-floor`: a plain number is milliseconds; anything else a duration.
fn parse_floor_ms(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(ms) => Ok(ms),
        Err(_) => Ok(crate::config::parse_duration(s)?.as_secs_f64() * 1e3),
    }
}

impl LatencyArgs {
    pub fn thresholds(&self) -> anyhow::Result<crate::regressions::Thresholds> {
        crate::regressions::Thresholds::new(Some(self.latency_threshold), Some(self.latency_floor))
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The API's query parameters for them.
    pub fn query(&self) -> String {
        format!(
            "latency_threshold={}&latency_floor_ms={}",
            self.latency_threshold, self.latency_floor
        )
    }
}

impl GateArgs {
    pub fn conditions(&self) -> GateConditions {
        GateConditions {
            min_edge_coverage: self.min_edge_coverage,
            min_interface_coverage: self.min_interface_coverage,
            critical: self.critical,
            no_failures: self.no_failures,
            no_new_failures: self.no_new_failures,
            max_coverage_drop: self.max_coverage_drop,
            max_latency_regression: self.max_latency_regression,
            expectations: self.expectations,
        }
    }

    pub fn any(&self) -> bool {
        self.min_edge_coverage.is_some()
            || self.min_interface_coverage.is_some()
            || self.critical
            || self.no_failures
            || self.no_new_failures
            || self.max_coverage_drop.is_some()
            || self.expectations
            || self.max_latency_regression.is_some()
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        for (flag, v) in [
            ("--min-edge-coverage", self.min_edge_coverage),
            ("--min-interface-coverage", self.min_interface_coverage),
            ("--max-coverage-drop", self.max_coverage_drop),
        ] {
            if let Some(v) = v
                && !(0.0..=100.0).contains(&v)
            {
                bail!("{flag} takes a percentage from 0 to 100, not {v}");
            }
        }
        if let Some(r) = self.max_latency_regression {
            if !r.is_finite() || r < 1.0 {
                bail!("--max-latency-regression takes a factor of at least 1, not {r}");
            }
            if self.baseline.is_empty() {
                bail!(
                    "--max-latency-regression needs a baseline to compare with: give --baseline RUN"
                );
            }
        }
        self.latency.thresholds()?;
        Ok(())
    }

    /// The query string of `/api/runs/{id}/gate`.
    pub fn query(&self) -> String {
        let mut q = Vec::new();
        if let Some(v) = self.min_edge_coverage {
            q.push(format!("min_edge_coverage={v}"));
        }
        if let Some(v) = self.min_interface_coverage {
            q.push(format!("min_interface_coverage={v}"));
        }
        if self.critical {
            q.push("critical=true".into());
        }
        if self.no_failures {
            q.push("no_failures=true".into());
        }
        if self.no_new_failures {
            q.push("no_new_failures=true".into());
        }
        if let Some(v) = self.max_coverage_drop {
            q.push(format!("max_coverage_drop={v}"));
        }
        if self.expectations {
            q.push("expectations=true".into());
        }
        if !self.baseline.is_empty() {
            q.push(format!("baseline={}", urlencode(&self.baseline.join(","))));
        }
        if let Some(r) = self.max_latency_regression {
            q.push(format!("max_latency_regression={r}"));
        }
        q.push(self.latency.query());
        q.join("&")
    }
}

/// Asks the server for a gate verdict on a run.
pub async fn gate_over_api(
    http: &reqwest::Client,
    base: &str,
    run: &str,
    gate: &GateArgs,
) -> anyhow::Result<GateVerdict> {
    let url = format!("{base}/api/runs/{}/gate?{}", urlencode(run), gate.query());
    Ok(serde_json::from_slice(&api_get(http, &url).await?)?)
}

#[derive(Debug, Clone, Args)]
pub struct GateCmd {
    /// The run: an id, a name, or `latest`.
    #[arg(long, default_value = "latest")]
    pub run: String,
    #[command(flatten)]
    pub gate: GateArgs,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub async fn gate(args: GateCmd) -> anyhow::Result<ExitCode> {
    args.gate.validate()?;
    if !args.gate.any() {
        bail!(
            "give at least one condition: --min-edge-coverage, --min-interface-coverage, --critical, --no-failures, --no-new-failures, --max-coverage-drop, --max-latency-regression or --expectations"
        );
    }
    let source = args.source.open()?;
    source
        .wait_for_results(
            std::slice::from_ref(&args.run),
            &args.source.report_context()?,
            args.source.wait,
        )
        .await?;
    let verdict = match source {
        Source::Data(reader) => {
            let mut ctx = args.source.report_context()?;
            ctx.baselines = args.gate.baseline.clone();
            ctx.latency = args.gate.latency.thresholds()?;
            let conditions = args.gate.conditions();
            let run = args.run.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<GateVerdict> {
                let run = query::resolve_run(&reader, &run)?;
                Ok(query::gate_run(&reader, &run, &ctx, &conditions)?)
            })
            .await??
        }
        Source::Server { base, http } => gate_over_api(&http, &base, &args.run, &args.gate).await?,
    };
    // Node and operation names come from spans: no terminal control sequence gets through.
    let text = crate::report::strip_controls(&verdict.text);
    if verdict.exit_code == 2 {
        eprint!("tracecov: {text}");
    } else {
        print!("{text}");
    }
    Ok(ExitCode::from(verdict.exit_code))
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ListFormat {
    Lines,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ImpactCmd {
    /// Services that changed; repeatable (or comma-separated).
    #[arg(long, required = true, num_args = 1.., value_delimiter = ',')]
    pub changed: Vec<String>,
    /// The run: an id, a name, or `latest`.
    #[arg(long, default_value = "latest")]
    pub run: String,
    /// One test per line (for a test runner's filter), or JSON.
    #[arg(long, value_enum, default_value = "lines")]
    pub format: ListFormat,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub async fn impact(args: ImpactCmd) -> anyhow::Result<ExitCode> {
    let tests: Vec<String> = match args.source.open()? {
        Source::Data(reader) => {
            let ctx = args.source.report_context()?;
            let (run, changed) = (args.run.clone(), args.changed.clone());
            tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
                let run = query::resolve_run(&reader, &run)?;
                Ok(query::impact_run(&reader, &run, &ctx, &changed)?)
            })
            .await??
        }
        Source::Server { base, http } => {
            let url = format!(
                "{base}/api/runs/{}/impact?changed={}",
                urlencode(&args.run),
                urlencode(&args.changed.join(","))
            );
            let v: serde_json::Value = serde_json::from_slice(&api_get(&http, &url).await?)?;
            serde_json::from_value(v["tests"].clone())?
        }
    };
    let mut out = std::io::stdout().lock();
    match args.format {
        ListFormat::Lines => {
            for t in &tests {
                // Test names come from spans: one line each, no control sequence.
                let line = crate::report::strip_controls(t).replace('\n', " ");
                writeln!(out, "{line}")?;
            }
        }
        ListFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&tests)?)?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn get_text(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    Ok(String::from_utf8_lossy(&api_get(http, url).await?).into_owned())
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum BugFormat {
    Markdown,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct BugCmd {
    /// The trace holding the failure (32 hex digits; 16 are left-padded).
    pub trace_id: String,
    /// The failure placed on (or failing at) this span, when the trace holds several.
    #[arg(long)]
    pub span: Option<String>,
    #[arg(long, value_enum, default_value = "markdown")]
    pub format: BugFormat,
    /// Also write the trace, redacted, as OTLP/JSON to this file.
    #[arg(long)]
    pub attach: Option<PathBuf>,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub async fn bug(args: BugCmd) -> anyhow::Result<ExitCode> {
    let trace = TraceId::from_hex_padded(args.trace_id.trim())
        .map_err(|e| anyhow::anyhow!("malformed trace id {:?}: {e}", args.trace_id))?;
    let span = match &args.span {
        Some(s) => Some(
            SpanId::from_hex(s.trim())
                .map_err(|e| anyhow::anyhow!("malformed span id {s:?}: {e}"))?,
        ),
        None => None,
    };
    let source = args.source.open()?;
    let ctx = args.source.report_context()?;
    let text = bug_report(
        &source,
        &ctx,
        trace,
        span,
        args.format,
        args.attach.as_deref(),
    )
    .await?;
    // JSON has escaped its control characters already; Markdown goes to terminals too.
    let text = crate::report::strip_controls(&text);
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// The bug report of a failure (or a broken expectation) in `trace`, in `format`, redacted; with
/// `attach`, the trace is also written there, redacted, as OTLP/JSON.
pub(super) async fn bug_report(
    source: &Source,
    ctx: &crate::query::ReportContext,
    trace: TraceId,
    span: Option<SpanId>,
    format: BugFormat,
    attach: Option<&std::path::Path>,
) -> anyhow::Result<String> {
    let attach = attach.map(std::path::Path::to_path_buf);
    Ok(match source {
        Source::Data(reader) => {
            let (reader, ctx) = (reader.clone(), ctx.clone());
            tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
                let (bug, spans) = query::bug(&reader, trace, span, &ctx)?;
                if let Some(path) = attach {
                    let mut file = std::fs::File::create(&path)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    crate::blame::bug::attach(&spans, &ctx.report.redactor, &mut file)?;
                }
                Ok(match format {
                    BugFormat::Markdown => bug.markdown(),
                    BugFormat::Json => bug.json(),
                })
            })
            .await??
        }
        Source::Server { base, http } => {
            let format = match format {
                BugFormat::Markdown => "markdown",
                BugFormat::Json => "json",
            };
            let mut url = format!("{base}/api/traces/{trace}/bug?format={format}");
            if let Some(s) = span {
                url.push_str(&format!("&span={s}"));
            }
            let body = get_text(http, &url).await?;
            if let Some(path) = &attach {
                let otlp = get_text(http, &format!("{base}/api/traces/{trace}/otlp")).await?;
                std::fs::write(path, otlp)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            body
        }
    })
}
