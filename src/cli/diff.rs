//! `tracecov diff BASE RUN`: what changed from one run to another (DESIGN, "History across
//! runs"), from the store (`--data`) or a running server (`--server`, `GET /api/diff`).

use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::source::{Source, SourceArgs, api_get, urlencode};
use crate::history::{Diff, diff};
use crate::query;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DiffFormat {
    Text,
    Markdown,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct DiffArgs {
    /// The run compared against: an id, a name, `latest`, or `previous` (the run of RUN's suite
    /// before RUN).
    #[arg(value_name = "BASE")]
    pub base: String,
    /// The run: an id, a name, or `latest`.
    #[arg(value_name = "RUN", default_value = "latest")]
    pub run: String,
    /// text for a terminal, markdown for a pull-request comment, json for scripts.
    #[arg(long, value_enum, default_value = "text")]
    pub format: DiffFormat,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub async fn run(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let source = args.source.open()?;
    let ctx = args.source.report_context()?;
    let d = diff_of(&source, &ctx, &args.base, &args.run, args.source.wait).await?;
    match args.format {
        DiffFormat::Text => print!("{}", diff::text(&d)),
        DiffFormat::Markdown => print!("{}", diff::markdown(&d)),
        DiffFormat::Json => println!(
            "{}",
            crate::report::json_escape_controls(serde_json::to_string_pretty(&d)?)
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// What changed from `base` to `run`, after waiting up to `wait` for `run`'s pending traces.
pub(super) async fn diff_of(
    source: &Source,
    ctx: &crate::query::ReportContext,
    base: &str,
    run: &str,
    wait: std::time::Duration,
) -> anyhow::Result<Diff> {
    source
        .wait_for_results(&[run.to_owned()], ctx, wait)
        .await?;
    Ok(match source {
        Source::Data(reader) => {
            let (reader, ctx) = (reader.clone(), ctx.clone());
            let (base, run) = (base.to_owned(), run.to_owned());
            tokio::task::spawn_blocking(move || -> anyhow::Result<Diff> {
                Ok(query::diff_runs(&reader, &base, &run, &ctx)?)
            })
            .await??
        }
        Source::Server { base: url, http } => {
            let url = format!(
                "{url}/api/diff?base={}&run={}",
                urlencode(base),
                urlencode(run)
            );
            serde_json::from_slice(&api_get(http, &url).await?)?
        }
    })
}
