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
    let d: Diff = match source {
        Source::Data(reader) => {
            let waiting = Source::Data(reader.clone());
            let runs = [args.run.clone()];
            waiting
                .wait_for_results(&runs, &ctx, args.source.wait)
                .await?;
            let (base, run) = (args.base.clone(), args.run.clone());
            tokio::task::spawn_blocking(move || -> anyhow::Result<Diff> {
                Ok(query::diff_runs(&reader, &base, &run, &ctx)?)
            })
            .await??
        }
        Source::Server { base, http } => {
            Source::Server {
                base: base.clone(),
                http: http.clone(),
            }
            .wait_for_results(std::slice::from_ref(&args.run), &ctx, args.source.wait)
            .await?;
            let url = format!(
                "{base}/api/diff?base={}&run={}",
                urlencode(&args.base),
                urlencode(&args.run)
            );
            serde_json::from_slice(&api_get(&http, &url).await?)?
        }
    };
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
