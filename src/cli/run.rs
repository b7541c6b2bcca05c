//! `tracecov run [--name NAME] [--server URL] -- CMD…`: open a run, run the test command with its
//! OpenTelemetry SDK pointed at tracecov, wait for the run's traces to settle, close the run and
//! print the report (and write the `--report FORMAT=FILE` files and the GitHub job summary).
//! Exit status: CMD's when it failed, else the gate's.
//!
//! It always talks to a server through the JSON API — the one given by `--server`, or an embedded
//! one it starts on free ports — so there is one code path for both.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::Value;

use super::report::{Format, ReportFile, SummaryArgs, render, stdout_colors};
use super::source::{api_error, urlencode};
use crate::config::{self, ServeConfig};
use crate::report::Report;
use crate::server::{Listeners, Server};

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The run's name (default: the CI run id when one is set, else a timestamp).
    #[arg(long)]
    pub name: Option<String>,
    /// The suite the run belongs to, which history, `previous` and `flaky` go by (default: the
    /// spans' `tracecov.suite`, else the CI job's name, else `default`).
    #[arg(long, env = "TRACECOV_SUITE")]
    pub suite: Option<String>,
    /// A running `tracecov serve` (its UI/API address); without it, an embedded collector is
    /// started on free ports.
    #[arg(long, env = "TRACECOV_SERVER")]
    pub server: Option<String>,
    /// The bearer token the server's API requires (its --token); the embedded collector
    /// requires it too when given.
    #[arg(long, env = "TRACECOV_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The bearer token OTLP exports must carry (the server's --ingest-token): passed on to the
    /// command in OTEL_EXPORTER_OTLP_HEADERS; the embedded collector requires it too when given.
    #[arg(long, env = "TRACECOV_INGEST_TOKEN", hide_env_values = true)]
    pub ingest_token: Option<String>,
    /// Also trust the certificate authorities in this PEM file, besides the system's, when
    /// --server is an https:// URL (the CA that signed the server's --tls-cert); passed on to
    /// the command in OTEL_EXPORTER_OTLP_CERTIFICATE when its endpoint is https:// and that is
    /// not set.
    #[arg(long = "tls-ca", value_name = "FILE", env = "TRACECOV_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// The embedded collector's store.
    #[arg(long, env = "TRACECOV_DATA", default_value = config::DEFAULT_DATA_DIR)]
    pub data: PathBuf,
    /// How long no span may arrive before the run's traces count as settled.
    #[arg(long, env = "TRACECOV_SETTLE", default_value = "10s", value_parser = super::serve::parse_duration_arg)]
    pub settle: Duration,
    /// A test-driver service whose root spans are test cases; repeatable.
    #[arg(long = "test-service", value_name = "NAME", value_delimiter = ',')]
    pub test_services: Vec<String>,
    /// Report format printed at the end.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Also write the report in FORMAT (text, json, markdown, junit, html) to FILE at the end of
    /// the run; repeatable, so one CI step produces every file.
    #[arg(long = "report", value_name = "FORMAT=FILE")]
    pub reports: Vec<ReportFile>,
    #[command(flatten)]
    pub summary: SummaryArgs,
    /// The manifest of the expected topology, for the embedded collector (default:
    /// ./tracecov.yaml when present).
    #[arg(long, env = "TRACECOV_MANIFEST")]
    pub manifest: Option<PathBuf>,
    #[command(flatten)]
    pub gate: super::verdicts::GateArgs,
    #[command(flatten)]
    pub cors: super::serve::CorsArgs,
    /// The test command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// A run name from the CI system's variables, when the command runs in CI.
fn ci_run_name() -> Option<String> {
    ["GITHUB_RUN_ID", "CI_PIPELINE_ID", "BUILD_NUMBER"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
}

/// `OTEL_RESOURCE_ATTRIBUTES` with the run id added to what the user set.
pub fn resource_attributes(existing: Option<&str>, run_id: &str) -> String {
    let ours = format!("{}={run_id}", crate::runs::RUN_ID_ATTR);
    match existing.map(str::trim).filter(|s| !s.is_empty()) {
        // Drop a stale run id the user's environment may carry: this run's id must win.
        Some(e) => {
            let kept: Vec<&str> = e
                .split(',')
                .filter(|kv| kv.split('=').next().map(str::trim) != Some(crate::runs::RUN_ID_ATTR))
                .collect();
            if kept.is_empty() {
                ours
            } else {
                format!("{},{ours}", kept.join(","))
            }
        }
        None => ours,
    }
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the tracecov server at {}", self.base))?;
        let status = resp.status();
        let body = resp.text().await?;
        if !status.is_success() {
            bail!(
                "server answered {status}: {}",
                api_error(&body).unwrap_or(body)
            );
        }
        Ok(serde_json::from_str(&body)?)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    args.gate.validate()?;
    let token = super::serve::secret(&args.token, "--token")?;
    let ingest_token = super::serve::secret(&args.ingest_token, "--ingest-token")?;
    let mut embedded = None;
    let base = match &args.server {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let mut config = ServeConfig::ephemeral(&args.data);
            config.settle = args.settle;
            config.test_services = args.test_services.clone();
            config.token = token.clone();
            config.ingest_token = ingest_token.clone();
            config.cors_origins = args.cors.origins()?;
            config.manifest = args.manifest.clone().or_else(|| {
                let here = PathBuf::from("tracecov.yaml");
                here.exists().then_some(here)
            });
            let listeners = Listeners::bind(&config).await?;
            let server = Server::start(config, listeners).await?;
            let ui = server.addrs.ui_url();
            embedded = Some(server);
            ui
        }
    };
    let api = Api {
        base,
        http: super::client::api_client(
            token.as_ref().map(|t| t.0.as_str()),
            args.tls_ca.as_deref(),
        )?,
    };
    let health = api.get("/api/health").await?;
    // A deployment's instances advertise the Collector in front of them (`--advertise-otlp`):
    // the command's spans go where every other exporter's go.
    let endpoint = health["advertise_otlp"]
        .as_str()
        .or_else(|| health["otlp_http"].as_str())
        .context("the server's /api/health names no otlp_http receiver")?
        .to_owned();
    let name = args.name.clone().or_else(ci_run_name);
    let opened = api
        .post(
            "/api/runs",
            serde_json::json!({
                "name": name,
                "suite": args.suite,
                "ci_job": crate::runs::SuiteNames::ci_job_from_env(),
            }),
        )
        .await?;
    let run_id = opened["id"].as_str().context("no run id")?.to_owned();
    eprintln!(
        "tracecov: run {} ({}, suite {}) open; exporting to {endpoint}",
        opened["name"].as_str().unwrap_or(&run_id),
        run_id,
        opened["suite"]
            .as_str()
            .unwrap_or(crate::runs::DEFAULT_SUITE),
    );

    let attrs = resource_attributes(
        std::env::var("OTEL_RESOURCE_ATTRIBUTES").ok().as_deref(),
        &run_id,
    );
    let (program, rest) = args
        .command
        .split_first()
        .context("no command given after --")?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(rest)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_RESOURCE_ATTRIBUTES", attrs);
    // The SDKs read the CA for an https:// endpoint from this variable; the user's own wins.
    if let Some(ca) = &args.tls_ca
        && endpoint.starts_with("https://")
        && std::env::var_os("OTEL_EXPORTER_OTLP_CERTIFICATE").is_none()
    {
        command.env(
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            std::path::absolute(ca).unwrap_or_else(|_| ca.clone()),
        );
    }
    if let Some(t) = &ingest_token {
        let existing = std::env::var("OTEL_EXPORTER_OTLP_HEADERS").ok();
        command.env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            super::client::otlp_headers(existing.as_deref(), &t.0),
        );
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {program:?}"))?;
    let status = child.wait().await?;

    // Wait for the run's traces to settle: no span for the quiet period. A server's own settle
    // setting decides; we only bound the wait so a chatty background cannot hold us forever.
    let path = format!("/api/runs/{}", urlencode(&run_id));
    let deadline = Instant::now() + args.settle * 3 + Duration::from_secs(30);
    loop {
        let run = api.get(&path).await?;
        if run["settled"].as_bool() == Some(true) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api.post(&format!("{path}/close"), Value::Null).await?;
    // Against the baseline, when one is given: the report lists the interfaces that got slower.
    let report_path = if args.gate.baseline.is_empty() {
        format!("{path}/report")
    } else {
        format!(
            "{path}/report?baseline={}&{}",
            urlencode(&args.gate.baseline.join(",")),
            args.gate.latency.query()
        )
    };
    let report: Report = serde_json::from_value(api.get(&report_path).await?)
        .context("the server's report is not valid JSON")?;
    print!("{}", render(&report, args.format, stdout_colors()));
    for file in &args.reports {
        file.write(&report)?;
    }
    args.summary.write(&report)?;
    let verdict = if args.gate.any() {
        let v = super::verdicts::gate_over_api(&api.http, &api.base, &run_id, &args.gate).await?;
        eprint!("{}", crate::report::strip_controls(&v.text));
        Some(v.exit_code)
    } else {
        None
    };

    if let Some(server) = embedded {
        server.shutdown().await?;
    }
    // CMD's status when it failed, else the gate's.
    Ok(match status.code() {
        Some(0) => ExitCode::from(verdict.unwrap_or(0)),
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        // Killed by a signal: a failure all the same.
        None => ExitCode::from(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_id_is_added_to_the_users_resource_attributes() {
        assert_eq!(resource_attributes(None, "r1"), "tracecov.run.id=r1");
        assert_eq!(
            resource_attributes(Some("team=payments"), "r1"),
            "team=payments,tracecov.run.id=r1"
        );
        assert_eq!(
            resource_attributes(Some("tracecov.run.id=old,a=b"), "r2"),
            "a=b,tracecov.run.id=r2"
        );
    }
}
