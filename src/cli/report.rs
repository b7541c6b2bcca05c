//! `tracecov report`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use super::source::SourceArgs;
use crate::report;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The run: an id, a name, or `latest`. Repeat it to report the union of several runs.
    #[arg(long, default_value = "latest")]
    pub run: Vec<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Write to this file instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub fn render(report: &report::Report, format: Format) -> String {
    match format {
        Format::Text => report::text(report),
        Format::Json => report::to_json(report),
    }
}

pub async fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let source = args.source.open()?;
    let report = source
        .report(&args.run, args.source.report_context()?)
        .await?;
    let text = render(&report, args.format);
    match &args.out {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}
