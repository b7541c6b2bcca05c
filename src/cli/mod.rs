//! The command line: clap types, their conversion into validated configs, and exit codes.
//!
//! Errors are `anyhow` with context, printed once with `{:#}`; exit status 2 means a usage or
//! input error, 1 a failed condition (a gate), 0 success.

mod client;
mod demo;
mod diff;
mod export;
mod history;
pub(crate) mod import;
mod mcp;
mod output;
mod report;
mod run;
mod serve;
mod source;
mod verdicts;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tracecov",
    version,
    about = "An OTLP collector for test runs: the cross-service call graph your tests exercised, \
             the hop where each failure started, and the integrations no test touched"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The sample shop, its integration suite and the report, in one command.
    Demo(demo::DemoArgs),
    /// Run the collector, store, UI and JSON API.
    Serve(Box<serve::ServeArgs>),
    /// Run a test command as a tracecov run and print its report.
    Run(run::RunArgs),
    /// Print the report of a run.
    Report(report::ReportArgs),
    /// Check a run against coverage and failure conditions (exit 0 pass, 1 fail, 2 usage).
    Gate(verdicts::GateCmd),
    /// The tests that exercised any edge touching the changed services.
    Impact(verdicts::ImpactCmd),
    /// The bug report of a failure in a trace.
    Bug(verdicts::BugCmd),
    /// The flaky hops of a suite's last runs: failing in some runs, passed through in others.
    Flaky(history::FlakyCmd),
    /// What changed from one run to another: new and fixed failures, newly untested and newly
    /// covered edges and interfaces, the coverage delta.
    Diff(diff::DiffArgs),
    /// Import recorded traces (OTLP/JSON, Jaeger JSON, Zipkin v2 JSON) into a run.
    ///
    /// The format is detected from each file's content (gzip too) unless `--format` is given.
    /// Without `--run`, each file joins the run named after the file, created when needed, so
    /// importing a file twice gives one run and stores no span twice. Every analysis then works
    /// on the recorded data: `tracecov report --run FILE_NAME`.
    ///
    /// Records that cannot be used (a bad id, a line that does not parse) are skipped and
    /// counted in the summary, with the position of the first. A file that cannot be read or
    /// is not valid in its format is an error naming the file and the position; the spans read
    /// before it stay imported, the other files are still imported, and the exit status is 2.
    Import(import::ImportArgs),
    /// Write a run's spans as OTLP/JSON lines, for `tracecov import` elsewhere.
    ///
    /// One OTLP `ExportTraceServiceRequest` per line, the OpenTelemetry Collector file exporter's
    /// format, so the file also feeds any OTLP tool.
    Export(export::ExportArgs),
    /// A Model Context Protocol server on stdio, for coding agents: the runs, their failures
    /// and bug reports, untested integrations, diffs, flaky hops and traces as tools.
    ///
    /// Standard output carries only the protocol (logs go to standard error). Configure it in
    /// an MCP client as the command `tracecov` with the arguments `mcp --data DIR` (or
    /// `mcp --server URL`, with `--token` or TRACECOV_TOKEN when the server requires one).
    Mcp(mcp::McpArgs),
    /// Run a benchmark (figures in BENCHMARKS.md come from these).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// What users wait for, from a real `tracecov serve`: a generated run ingested over OTLP and
    /// settled (per-trace results against the ingest rate), then its JSON report, run page and
    /// `/metrics`, and a small run's report in a large store; the server's peak memory.
    Analysis {
        /// Spans in the generated run.
        #[arg(long, default_value_t = 1_000_000)]
        spans: usize,
        /// Spans in the store (the run, then other traffic) before the small run's report is
        /// timed; no larger than `--spans` skips that stage.
        #[arg(long, default_value_t = 10_000_000)]
        store_spans: usize,
        /// Requests per figure; the median is reported.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// A generated run's spans to its JSON report in memory, against one grouping pass; peak
    /// memory (the whole-run analysis, which per-trace results replaced).
    Pipeline {
        /// Spans to generate.
        #[arg(long, default_value_t = 1_000_000)]
        spans: usize,
        /// Runs; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// A generated run written to a real store: per-trace results computed (against the durable
    /// ingest rate), then its report from stored results against analysing its spans.
    Results {
        /// Spans to generate.
        #[arg(long, default_value_t = 1_000_000)]
        spans: usize,
        /// Report runs; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Keep the store in this directory (new or empty) for `--data` afterwards, instead of
        /// a temporary one that is removed.
        #[arg(long)]
        keep: Option<std::path::PathBuf>,
    },
    /// Questions over a suite's history from a real store: a suite of generated runs (some
    /// hops failing in every other run), then `flaky` and a trend, first and asked again, against
    /// turning each run's rollup into its graph.
    History {
        /// Runs in the suite.
        #[arg(long, default_value_t = 100)]
        runs: usize,
        /// Spans in each run.
        #[arg(long, default_value_t = 100_000)]
        spans: usize,
        /// Times each question is asked; the median is reported.
        #[arg(long, default_value_t = 5)]
        repeat: usize,
        /// Keep the store in this directory (new or empty) for `--data` afterwards, instead of
        /// a temporary one that is removed.
        #[arg(long)]
        keep: Option<std::path::PathBuf>,
    },
    /// Durable OTLP/gRPC ingest over loopback against prost decode-only speed.
    Ingest {
        /// Spans to send per run.
        #[arg(long, default_value_t = 200_000)]
        spans: usize,
        /// Runs; the median is reported.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Concurrent exporters.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Many instances, one deployment: a generated run split by trace id over 1, 2, 3
    /// `serve --shared-db` instances sharing one PostgreSQL; durable ingest and ingest through
    /// results in PostgreSQL as spans/s and as a ratio to one instance, beside one process
    /// without --shared-db; the run's report from PostgreSQL. `scripts/bench-shared` starts a
    /// throwaway PostgreSQL for it.
    Shared {
        /// A PostgreSQL URL whose user may create databases: each deployment gets a new one,
        /// dropped afterwards.
        #[arg(long)]
        admin_db: String,
        /// Spans in the generated run.
        #[arg(long, default_value_t = 1_000_000)]
        spans: usize,
        /// Deployments of 1 up to this many instances.
        #[arg(long, default_value_t = 3)]
        instances: usize,
        /// Report requests timed again; the median is reported.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// History across runs instead: a suite of this many runs of `--spans` spans each,
        /// sent to one process and to a deployment of `--instances` (at least 2); `flaky`, an
        /// edge's trend and `diff` asked of each, with ratios to the single process.
        #[arg(long, value_name = "RUNS", default_value_t = 0)]
        history: usize,
    },
    /// What OTLP logs cost: per-trace results of a generated run with an ERROR log record on
    /// every hundredth span, against the same run without; log records' durable ingest rate
    /// beside the spans'.
    Logs {
        /// Spans to generate.
        #[arg(long, default_value_t = 200_000)]
        spans: usize,
        /// Runs, each timing both stores in turn; the medians and the median of the runs'
        /// ratios are reported.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Keep the last run's two stores in DIR/without and DIR/with (new or empty), for
        /// `--analyse`.
        #[arg(long, value_name = "DIR")]
        keep: Option<std::path::PathBuf>,
        /// Only compute every trace's results of the store in STORE, storing nothing (so it can
        /// be repeated), and print the time: for timing the two stores `--keep` leaves as
        /// whole processes, in turn.
        #[arg(long, value_name = "STORE", conflicts_with_all = ["spans", "runs", "keep"])]
        analyse: Option<std::path::PathBuf>,
    },
    /// What expectations cost: per-trace results of a generated suite with ten expectations
    /// (every rule, globs) against the same without, in turn, in memory and as the settle
    /// worker computes them.
    Expectations {
        /// Spans to generate.
        #[arg(long, default_value_t = 200_000)]
        spans: usize,
        /// Runs, each timing without and with in turn; the medians and the median of the runs'
        /// ratios are reported.
        #[arg(long, default_value_t = 9)]
        runs: usize,
        /// Keep the store in DIR/store and the ten expectations in DIR/tracecov.yaml (DIR new or
        /// empty), for `--analyse`.
        #[arg(long, value_name = "DIR")]
        keep: Option<std::path::PathBuf>,
        /// Only compute every trace's results of the store in STORE, storing nothing (so it can
        /// be repeated), and print the time: for timing with and without expectations as whole
        /// processes, in turn.
        #[arg(long, value_name = "STORE", conflicts_with_all = ["spans", "runs", "keep"])]
        analyse: Option<std::path::PathBuf>,
        /// With `--analyse`: judge the expectations of this manifest (none without).
        #[arg(long, value_name = "FILE", requires = "analyse")]
        manifest: Option<std::path::PathBuf>,
    },
    /// The run page of a generated run rendered on the server, against its JSON report.
    Ui {
        /// Services in the generated run.
        #[arg(long, default_value_t = 200)]
        services: usize,
        /// Distinct caller -> callee edges.
        #[arg(long, default_value_t = 2_000)]
        edges: usize,
        /// Runs; the median is reported.
        #[arg(long, default_value_t = 15)]
        runs: usize,
    },
}

/// Parses the process arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    // Before any HTTP client is built (crate::tls says why).
    crate::tls::install_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tracecov: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Run(args) => run::run(args).await,
            Command::Report(args) => report::run(args).await,
            Command::Gate(args) => verdicts::gate(args).await,
            Command::Impact(args) => verdicts::impact(args).await,
            Command::Bug(args) => verdicts::bug(args).await,
            Command::Flaky(args) => history::flaky(args).await,
            Command::Diff(args) => diff::run(args).await,
            Command::Import(args) => import::run(args).await,
            Command::Export(args) => export::run(args).await,
            Command::Mcp(args) => mcp::run(args).await,
            Command::Bench(BenchCommand::Analysis {
                spans,
                store_spans,
                runs,
            }) => {
                crate::bench::served::run(crate::bench::served::Args {
                    spans,
                    store_spans,
                    runs: runs.max(1),
                })
                .await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Bench(BenchCommand::Pipeline { spans, runs }) => {
                tokio::task::spawn_blocking(move || {
                    crate::bench::analysis::run(spans, runs.max(1))
                })
                .await??;
                Ok(ExitCode::SUCCESS)
            }
            Command::Bench(BenchCommand::Results { spans, runs, keep }) => {
                tokio::task::spawn_blocking(move || {
                    crate::bench::results::run(spans, runs.max(1), keep)
                })
                .await??;
                Ok(ExitCode::SUCCESS)
            }
            Command::Bench(BenchCommand::History {
                runs,
                spans,
                repeat,
                keep,
            }) => {
                tokio::task::spawn_blocking(move || {
                    crate::bench::history::run(runs.max(2), spans, repeat.max(1), keep)
                })
                .await??;
                Ok(ExitCode::SUCCESS)
            }
            Command::Bench(BenchCommand::Logs {
                spans,
                runs,
                keep,
                analyse,
            }) => {
                tokio::task::spawn_blocking(move || match analyse {
                    Some(store) => crate::bench::logs::analyse(&store),
                    None => crate::bench::logs::run(spans, runs.max(1), keep.as_deref()),
                })
                .await??;
                Ok(ExitCode::SUCCESS)
            }
            Command::Bench(BenchCommand::Expectations {
                spans,
                runs,
                keep,
                analyse,
                manifest,
            }) => {
                tokio::task::spawn_blocking(move || match analyse {
                    Some(store) => crate::bench::expectations::analyse(&store, manifest.as_deref()),
                    None => crate::bench::expectations::run(spans, runs.max(1), keep.as_deref()),
                })
                .await??;
                Ok(ExitCode::SUCCESS)
            }
            Command::Bench(BenchCommand::Ui {
                services,
                edges,
                runs,
            }) => {
                tokio::task::spawn_blocking(move || {
                    crate::bench::ui::run(services.max(2), edges, runs.max(1))
                })
                .await??;
                Ok(ExitCode::SUCCESS)
            }
            Command::Bench(BenchCommand::Shared {
                admin_db,
                spans,
                instances,
                runs,
                history,
            }) => {
                if history > 0 {
                    crate::bench::shared_history::run(crate::bench::shared_history::Args {
                        admin_url: admin_db,
                        runs: history.max(2),
                        spans,
                        instances,
                        repeat: runs.max(1),
                    })
                    .await?;
                    return Ok(ExitCode::SUCCESS);
                }
                crate::bench::shared::run(crate::bench::shared::Args {
                    admin_url: admin_db,
                    spans,
                    instances: instances.max(1),
                    runs: runs.max(1),
                })
                .await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Bench(BenchCommand::Ingest {
                spans,
                runs,
                concurrency,
            }) => {
                crate::bench::ingest::run(crate::bench::ingest::IngestBenchArgs {
                    spans,
                    runs: runs.max(1),
                    concurrency: concurrency.max(1),
                })
                .await?;
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tracecov: {e:#}");
            if let Some(hint) = crate::tls::untrusted_hint(&e) {
                eprintln!("tracecov: {hint}");
            }
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TRACECOV_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,h2=warn,hyper=warn,tower=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Clap checks a command's definition only when that command is parsed; this checks every
    /// subcommand at once. Regression: `export` once had two `--no-redact` flags and panicked.
    #[test]
    fn every_command_line_definition_is_valid() {
        super::Cli::command().debug_assert();
    }
}
