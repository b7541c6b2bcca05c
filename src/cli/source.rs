//! Where a command reads from: the embedded store (`--data DIR`) or a running `tracecov serve`
//! (`--server URL`, through its JSON API). Both answer the same questions the same way: the data
//! side calls `crate::query` directly, the server side calls the API that wraps it.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;

use crate::config;
use crate::graph::AnalysisOptions;
use crate::query::{self, ReportContext};
use crate::report::Report;
use crate::store::Reader;

#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// The embedded store's directory.
    #[arg(long, env = "TRACECOV_DATA", default_value = config::DEFAULT_DATA_DIR, conflicts_with = "server")]
    pub data: PathBuf,
    /// A running `tracecov serve` (its UI/API address), instead of the store on disk.
    #[arg(long, env = "TRACECOV_SERVER")]
    pub server: Option<String>,
    /// The bearer token the server's API requires (its --token).
    #[arg(long, env = "TRACECOV_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Also trust the certificate authorities in this PEM file, besides the system's, when
    /// --server is an https:// URL (the CA that signed the server's --tls-cert).
    #[arg(long = "tls-ca", value_name = "FILE", env = "TRACECOV_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// A test-driver service whose root spans are test cases; repeatable.
    #[arg(long = "test-service", value_name = "NAME", value_delimiter = ',')]
    pub test_services: Vec<String>,
    /// The manifest describing the expected topology (default: ./tracecov.yaml when present).
    #[arg(long, env = "TRACECOV_MANIFEST")]
    pub manifest: Option<PathBuf>,
    /// How long to wait for the run's traces still receiving spans (or still being analysed by
    /// the server) before answering with what is ready (e.g. 60s, 0s).
    #[arg(long, env = "TRACECOV_WAIT", default_value = "60s", value_parser = super::serve::parse_duration_arg)]
    pub wait: std::time::Duration,
    #[command(flatten)]
    pub output: super::output::OutputArgs,
}

pub enum Source {
    Data(Reader),
    Server { base: String, http: reqwest::Client },
}

impl SourceArgs {
    pub fn open(&self) -> anyhow::Result<Source> {
        if let Some(url) = &self.server {
            return Ok(Source::Server {
                base: url.trim_end_matches('/').to_owned(),
                http: super::client::api_client(self.token.as_deref(), self.tls_ca.as_deref())?,
            });
        }
        let db = crate::store::db_path(&self.data);
        if !db.exists() {
            bail!(
                "no tracecov store in {} (give --data DIR, or --server URL for a running `tracecov serve`)",
                self.data.display()
            );
        }
        crate::store::prepare_for_reading(&self.data)
            .with_context(|| format!("cannot open the store in {}", self.data.display()))?;
        Ok(Source::Data(Reader::new(&self.data)))
    }

    /// The manifest to use: `--manifest`, else `./tracecov.yaml` when it exists.
    pub fn manifest_path(&self) -> Option<PathBuf> {
        self.manifest.clone().or_else(|| {
            let here = PathBuf::from("tracecov.yaml");
            here.exists().then_some(here)
        })
    }

    /// How reports are built from the store directly.
    pub fn report_context(&self) -> anyhow::Result<ReportContext> {
        let mut ctx = ReportContext {
            analysis: AnalysisOptions {
                test_services: self.test_services.clone(),
                ..AnalysisOptions::default()
            },
            settle: Some(crate::config::DEFAULT_SETTLE),
            ..ReportContext::default()
        };
        ctx.report = self
            .output
            .report_options(crate::links::DEFAULT_PUBLIC_URL)?;
        if let Some(path) = self.manifest_path() {
            ctx = ctx.with_manifest(crate::coverage::load_manifest(&path)?)?;
        }
        Ok(ctx)
    }
}

impl Source {
    /// Waits up to `wait` until no trace of the runs in `what` is pending: still receiving spans
    /// (for the store on disk), or without results yet (for a server, whose settle worker is
    /// computing them). Returns how many still are, and says so on standard error.
    pub async fn wait_for_results(
        &self,
        what: &[String],
        ctx: &ReportContext,
        wait: std::time::Duration,
    ) -> anyhow::Result<u64> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let pending = self.pending(what, ctx).await?;
            if pending == 0 {
                return Ok(0);
            }
            if std::time::Instant::now() >= deadline {
                eprintln!(
                    "tracecov: {pending} trace(s) of {} still pending after waiting {} (--wait): \
                     the answer covers them as far as their spans arrived",
                    what.join(" + "),
                    humantime(wait)
                );
                return Ok(pending);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    async fn pending(&self, what: &[String], ctx: &ReportContext) -> anyhow::Result<u64> {
        match self {
            Source::Data(reader) => {
                let reader = reader.clone();
                let what = what.to_vec();
                let ctx = ctx.clone();
                tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
                    let mut n = 0;
                    for w in &what {
                        let run = query::resolve_run(&reader, w)?;
                        n += query::unsettled_traces(&reader, &run, &ctx)?;
                    }
                    Ok(n)
                })
                .await?
            }
            Source::Server { base, http } => {
                let mut n = 0;
                for w in what {
                    let url = format!("{base}/api/runs/{}", urlencode(w));
                    let body: serde_json::Value =
                        serde_json::from_slice(&api_get(http, &url).await?)
                            .context("the server's run is not valid JSON")?;
                    n += body["pending_traces"].as_u64().unwrap_or(0);
                }
                Ok(n)
            }
        }
    }

    /// The JSON report of a run (`what` is an id, a name or `latest`).
    pub async fn report(&self, what: &[String], ctx: ReportContext) -> anyhow::Result<Report> {
        match self {
            Source::Data(reader) => {
                let reader = reader.clone();
                let what = what.to_vec();
                tokio::task::spawn_blocking(move || -> anyhow::Result<Report> {
                    let analysed = query::analyse_named(&reader, &what, &ctx)?;
                    for w in &analysed.warnings {
                        eprintln!("tracecov: warning: {w}");
                    }
                    Ok(analysed.report.clone())
                })
                .await?
            }
            Source::Server { base, http } => {
                let (first, rest) = what.split_first().context("no run given")?;
                let mut url = format!("{base}/api/runs/{}/report", urlencode(first));
                let mut q = Vec::new();
                if !rest.is_empty() {
                    q.push(format!("also={}", urlencode(&rest.join(","))));
                }
                if !ctx.baselines.is_empty() {
                    q.push(format!("baseline={}", urlencode(&ctx.baselines.join(","))));
                    q.push(format!(
                        "latency_threshold={}&latency_floor_ms={}",
                        ctx.latency.ratio,
                        ctx.latency.floor_ns as f64 / 1e6
                    ));
                }
                if !q.is_empty() {
                    url.push('?');
                    url.push_str(&q.join("&"));
                }
                let body = api_get(http, &url).await?;
                serde_json::from_slice(&body).context("the server's report is not valid JSON")
            }
        }
    }
}

fn humantime(d: std::time::Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// GETs an API URL: the body of a success, else an error carrying the API's message.
pub async fn api_get(http: &reqwest::Client, url: &str) -> anyhow::Result<Vec<u8>> {
    let resp = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("cannot reach the tracecov server at {url}"))?;
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body).into_owned();
        bail!("{}", api_error(&text).unwrap_or(text));
    }
    Ok(body.to_vec())
}

/// The message of an API error body (`{"error": "..."}`).
pub fn api_error(body: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()?
        .get("error")?
        .as_str()
        .map(str::to_owned)
}

/// Percent-encodes a path segment or query value (run names may hold anything).
pub use crate::web::ui::enc as urlencode;
