//! `tracecov report`, and the report-writing shared with `tracecov run`: the formats, colour on
//! terminals only, `--report FORMAT=FILE` outputs and the GitHub job summary.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use super::source::SourceArgs;
use crate::report;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// A summary for a terminal (colours only on a terminal, never with NO_COLOR).
    Text,
    /// The JSON report (its schema: docs/report.schema.json).
    Json,
    /// GitHub/GitLab Markdown with a Mermaid graph.
    Markdown,
    /// JUnit XML for CI test views: one test case per expected edge or interface.
    Junit,
    /// One self-contained HTML page: heatmap, graph, failures.
    Html,
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
    /// A run whose edges and interfaces join the expected set, and against which the
    /// interfaces that got slower are reported (`regressions`); repeatable.
    #[arg(long, value_name = "RUN")]
    pub baseline: Vec<String>,
    #[command(flatten)]
    pub latency: super::verdicts::LatencyArgs,
    #[command(flatten)]
    pub summary: SummaryArgs,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Debug, Clone, Default, Args)]
pub struct SummaryArgs {
    /// Also append the Markdown report to the file named by $GITHUB_STEP_SUMMARY, when it is
    /// set (the GitHub Actions job summary).
    #[arg(long)]
    pub github_summary: bool,
}

impl SummaryArgs {
    /// Appends the Markdown report to `$GITHUB_STEP_SUMMARY` when asked and set.
    pub fn write(&self, report: &report::Report) -> anyhow::Result<()> {
        if !self.github_summary {
            return Ok(());
        }
        let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) else {
            eprintln!("tracecov: GITHUB_STEP_SUMMARY is not set; no job summary written");
            return Ok(());
        };
        let path = PathBuf::from(path);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        file.write_all(report::markdown(report).as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

/// One `--report FORMAT=FILE`: a report file `tracecov run` writes at the end of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFile {
    pub format: Format,
    pub path: PathBuf,
}

impl FromStr for ReportFile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (format, path) = s
            .split_once('=')
            .ok_or_else(|| format!("expected FORMAT=FILE, got {s:?}"))?;
        let format = Format::from_str(format.trim(), true).map_err(|_| {
            format!("unknown report format {format:?} (text, json, markdown, junit, html)")
        })?;
        if path.is_empty() {
            return Err(format!("no file after {format:?}= in {s:?}"));
        }
        Ok(Self {
            format,
            path: PathBuf::from(path),
        })
    }
}

impl ReportFile {
    pub fn write(&self, report: &report::Report) -> anyhow::Result<()> {
        std::fs::write(&self.path, render(report, self.format, false))
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// Whether standard output gets colours: a terminal, and no `NO_COLOR` (any non-empty value,
/// as no-color.org defines it).
pub fn stdout_colors() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The report in a format; `color` only affects text.
pub fn render(report: &report::Report, format: Format, color: bool) -> String {
    match format {
        Format::Text => report::text_styled(report, color),
        Format::Json => report::to_json(report),
        Format::Markdown => report::markdown(report),
        Format::Junit => report::junit(report),
        Format::Html => report::html(report),
    }
}

pub async fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let source = args.source.open()?;
    let mut ctx = args.source.report_context()?;
    ctx.baselines = args.baseline.clone();
    ctx.latency = args.latency.thresholds()?;
    source
        .wait_for_results(&args.run, &ctx, args.source.wait)
        .await?;
    let report = source.report(&args.run, ctx).await?;
    match &args.out {
        Some(path) => std::fs::write(path, render(&report, args.format, false))
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            let text = render(&report, args.format, stdout_colors());
            std::io::stdout().lock().write_all(text.as_bytes())?;
        }
    }
    args.summary.write(&report)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_files_parse_as_format_equals_file() {
        assert_eq!(
            "junit=out/junit.xml".parse::<ReportFile>(),
            Ok(ReportFile {
                format: Format::Junit,
                path: PathBuf::from("out/junit.xml"),
            })
        );
        assert_eq!(
            "HTML=r=1.html".parse::<ReportFile>().map(|f| f.path),
            Ok(PathBuf::from("r=1.html"))
        );
        assert!("pdf=x".parse::<ReportFile>().is_err());
        assert!("markdown".parse::<ReportFile>().is_err());
        assert!("json=".parse::<ReportFile>().is_err());
    }
}
