//! `tracecov export --run ID --out FILE`: a run's spans as OTLP/JSON lines, one
//! `ExportTraceServiceRequest` per line (the OpenTelemetry Collector file exporter's format), so a
//! run can be shared and imported elsewhere with `tracecov import`.
//!
//! Exports pass through `query::prepare_for_export` (redaction, per DESIGN, with the
//! `--redact-key`/`--redact-pattern` additions) unless `--no-redact`;
//! with `--server` the server does the same through `GET /api/runs/{id}/export`. The spans keep
//! their resource's `tracecov.run.id`; `tracecov import` replaces it with the id of the run it
//! imports into.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use super::source::{Source, SourceArgs, urlencode};
use crate::query;

#[derive(Debug, Clone, Args)]
#[command(after_long_help = "\
Examples:
  tracecov export --run nightly --out nightly.jsonl
  tracecov import --data elsewhere nightly.jsonl    # the same report, in another store")]
pub struct ExportArgs {
    /// The run: an id, a name, or `latest`.
    #[arg(long, default_value = "latest")]
    pub run: String,
    /// The file to write (`-` for standard output).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub async fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let redact = !args.source.output.no_redact;
    let redactor = args.source.report_context()?.report.redactor;
    let (body, described) = match args.source.open()? {
        Source::Data(reader) => {
            let what = args.run.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<(Vec<u8>, String)> {
                let run = query::resolve_run(&reader, &what)?;
                let spans = query::run_export(&reader, &run, redact.then_some(&redactor))?;
                let mut out = Vec::new();
                crate::import::write_otlp_json_lines(&spans, &mut out)?;
                let described = format!("{} spans of run {} ({})", spans.len(), run.name, run.id);
                Ok((out, described))
            })
            .await??
        }
        Source::Server { base, http } => {
            let url = format!(
                "{base}/api/runs/{}/export?redact={redact}",
                urlencode(&args.run)
            );
            let body = super::source::api_get(&http, &url).await?;
            (body, format!("run {}", args.run))
        }
    };
    if args.out.as_os_str() == "-" {
        std::io::stdout().lock().write_all(&body)?;
    } else {
        let file = File::create(&args.out)
            .with_context(|| format!("cannot create {}", args.out.display()))?;
        let mut out = BufWriter::new(file);
        out.write_all(&body)
            .and_then(|()| out.flush())
            .with_context(|| format!("cannot write {}", args.out.display()))?;
        eprintln!("tracecov: {described} exported to {}", args.out.display());
    }
    Ok(ExitCode::SUCCESS)
}
