//! `tracecov flaky`: the flaky hops of a suite's last runs, from the store (`--data`) or a
//! running server (`--server`, through `GET /api/flaky`).

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use super::source::{Source, SourceArgs, api_get, urlencode};
use crate::history;
use crate::query;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum FlakyFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "The hops on which a failure was placed in some of a suite's last runs while \
the same tests passed through them in others.

A hop is an interface: caller -> callee and operation, as the reports name it. `runs` counts the \
window's runs that crossed the hop; `failed_runs` those with a failure placed on it. A test passed \
through a hop in a run when it crossed it there and none of its failures in that run was placed \
on it. A hop is flaky when a test whose failure was placed on it in one run passed through it in \
another: a hop failing in every run that crossed it is steady, not flaky. `classes` counts, per \
error class, the failed runs with a failure of that class on the hop; `tests` are the tests whose \
failures were placed on it; `flips` is how often the hop's outcome changed from one run that \
crossed it to the next. Most unstable first: by flips, then by how evenly its runs split.

Reports mark a failure whose hop is flaky over the suite's last 20 runs up to the reported run \
(`\"flaky\": true` in JSON)."
)]
pub struct FlakyCmd {
    /// The suite (default: the suite of the latest run).
    #[arg(long)]
    pub suite: Option<String>,
    /// How many of the suite's runs, newest first, to look at.
    #[arg(long, default_value_t = history::DEFAULT_LAST,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=history::MAX_LAST as u64))]
    pub last: usize,
    #[arg(long, value_enum, default_value = "text")]
    pub format: FlakyFormat,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub async fn flaky(args: FlakyCmd) -> anyhow::Result<ExitCode> {
    let source = args.source.open()?;
    let ctx = args.source.report_context()?;
    let (suite, hops) = flaky_hops(
        &source,
        &ctx,
        args.suite.as_deref(),
        args.last,
        args.source.wait,
    )
    .await?;
    let text = match args.format {
        FlakyFormat::Json => {
            let mut json =
                crate::report::json_escape_controls(serde_json::to_string_pretty(&hops)?);
            json.push('\n');
            json
        }
        FlakyFormat::Text => crate::report::flaky_text(&suite, args.last, &hops),
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// The flaky hops of `suite` (default: the latest run's) over its last `last` runs, redacted, and
/// the suite they are of; waits up to `wait` for the window's newest run as `report` does.
pub(super) async fn flaky_hops(
    source: &Source,
    ctx: &crate::query::ReportContext,
    suite: Option<&str>,
    last: usize,
    wait: std::time::Duration,
) -> anyhow::Result<(String, Vec<crate::report::Flaky>)> {
    let suite = match suite {
        Some(s) => s.to_owned(),
        None => latest_suite(source).await?,
    };
    // The window's newest run may still be receiving spans: wait for it as `report` does.
    let newest = newest_run(source, &suite).await?;
    source
        .wait_for_results(std::slice::from_ref(&newest), ctx, wait)
        .await?;
    let hops: Vec<crate::report::Flaky> = match source {
        Source::Data(reader) => {
            let (reader, suite, ctx) = (reader.clone(), suite.clone(), ctx.clone());
            tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let window = history::window(&reader, Some(&suite), None, last)?;
                let hops = history::flaky_hops(&reader, &window, &ctx)?;
                Ok(crate::report::flaky_json(&hops, &ctx.report.redactor))
            })
            .await??
        }
        Source::Server { base, http } => {
            let url = format!("{base}/api/flaky?suite={}&last={last}", urlencode(&suite));
            serde_json::from_slice(&api_get(http, &url).await?)
                .context("the server's flaky hops are not valid JSON")?
        }
    };
    Ok((suite, hops))
}

/// The suite of the latest run.
async fn latest_suite(source: &Source) -> anyhow::Result<String> {
    match source {
        Source::Data(reader) => {
            let reader = reader.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
                Ok(query::resolve_run(&reader, "latest")?.suite)
            })
            .await?
        }
        Source::Server { base, http } => {
            let run: serde_json::Value =
                serde_json::from_slice(&api_get(http, &format!("{base}/api/runs/latest")).await?)
                    .context("the server's run is not valid JSON")?;
            Ok(run["suite"]
                .as_str()
                .unwrap_or(crate::runs::DEFAULT_SUITE)
                .to_owned())
        }
    }
}

/// The id of the suite's newest run (an error naming the suite when it has none).
async fn newest_run(source: &Source, suite: &str) -> anyhow::Result<String> {
    match source {
        Source::Data(reader) => {
            let (reader, suite) = (reader.clone(), suite.to_owned());
            tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
                let w = history::window(&reader, Some(&suite), None, 1)?;
                Ok(w.runs.last().map(|r| r.id.clone()).unwrap_or_default())
            })
            .await?
        }
        Source::Server { base, http } => {
            // Newest first, each with its suite.
            let runs: Vec<serde_json::Value> =
                serde_json::from_slice(&api_get(http, &format!("{base}/api/runs")).await?)
                    .context("the server's runs are not valid JSON")?;
            runs.iter()
                .find(|r| r["suite"].as_str() == Some(suite))
                .and_then(|r| r["id"].as_str())
                .map(str::to_owned)
                .ok_or_else(|| query::QueryError::NoSuchSuite(suite.to_owned()).into())
        }
    }
}
