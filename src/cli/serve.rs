//! `tracecov serve`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::config::{self, ServeConfig};
use crate::ingest::WriterConfig;
use crate::server::{Listeners, Server};
use crate::store::{Durability, Retention};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SyncMode {
    /// Committed exports survive the process being killed (WAL, synchronous=NORMAL).
    Process,
    /// Committed exports survive power loss too (every commit fsynced).
    Power,
}

/// Where the store lives and where the server listens: shared by every command that serves.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The embedded store's directory.
    #[arg(long, env = "TRACECOV_DATA", default_value = config::DEFAULT_DATA_DIR)]
    pub data: PathBuf,
    /// OTLP/gRPC listen address (port 0 picks a free port).
    #[arg(long, env = "TRACECOV_GRPC_ADDR", default_value = config::DEFAULT_GRPC_ADDR)]
    pub grpc_addr: SocketAddr,
    /// OTLP/HTTP listen address.
    #[arg(long, env = "TRACECOV_HTTP_ADDR", default_value = config::DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,
    /// Web UI, JSON API and /metrics listen address.
    #[arg(long, env = "TRACECOV_UI_ADDR", default_value = config::DEFAULT_UI_ADDR)]
    pub ui_addr: SocketAddr,
    /// Largest OTLP request accepted, after decompression (e.g. 16MiB).
    #[arg(long, env = "TRACECOV_MAX_BODY", default_value = "16MiB", value_parser = parse_size)]
    pub max_body: u64,
    /// Most spans held in memory waiting for the store; past it, exports are refused as retryable.
    #[arg(long, env = "TRACECOV_QUEUE_SPANS", default_value_t = 262_144)]
    pub queue_spans: usize,
    /// Remove traces received longer ago than this (e.g. 30d, 12h).
    #[arg(long, env = "TRACECOV_RETENTION_AGE", default_value = "30d", value_parser = parse_duration_arg)]
    pub retention_age: Duration,
    /// Remove runs (their reports, diffs, history) whose newest span arrived longer ago than
    /// this; until then a run's results outlive its aged-out spans (e.g. 365d).
    #[arg(long, env = "TRACECOV_HISTORY_AGE", default_value = "365d", value_parser = parse_duration_arg)]
    pub history_age: Duration,
    /// Remove the oldest traces while the stored spans exceed this size (e.g. 20GiB).
    #[arg(long, env = "TRACECOV_RETENTION_SIZE", default_value = "20GiB", value_parser = parse_size)]
    pub retention_size: u64,
    /// How often retention runs.
    #[arg(long, env = "TRACECOV_RETENTION_EVERY", default_value = "60s", value_parser = parse_duration_arg)]
    pub retention_every: Duration,
    /// What a committed export survives.
    #[arg(long, env = "TRACECOV_SYNC", value_enum, default_value = "process")]
    pub sync: SyncMode,
    /// A test-driver service whose root spans (or the children of its session root) are test
    /// cases; repeatable.
    #[arg(
        long = "test-service",
        value_name = "NAME",
        env = "TRACECOV_TEST_SERVICES",
        value_delimiter = ','
    )]
    pub test_services: Vec<String>,
    /// A trace is settled (analysed as final) when no span arrived for it for this long.
    #[arg(long, env = "TRACECOV_SETTLE", default_value = "10s", value_parser = parse_duration_arg)]
    pub settle: Duration,
    /// The manifest describing the expected topology (`tracecov.yaml`).
    #[arg(long, env = "TRACECOV_MANIFEST")]
    pub manifest: Option<PathBuf>,
    /// A host name the HTTP listeners answer to besides the address they are bound to,
    /// `localhost` and `--public-url`'s host (requests naming any other host get 403, a guard
    /// against DNS rebinding); repeatable.
    #[arg(
        long = "allow-host",
        value_name = "NAME",
        env = "TRACECOV_ALLOW_HOSTS",
        value_delimiter = ','
    )]
    pub allow_hosts: Vec<String>,
    /// How long an OTLP/HTTP request may take to arrive and be answered (and an API request's
    /// body to arrive) before it is answered 408 and its connection freed.
    #[arg(long, env = "TRACECOV_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration_arg)]
    pub request_timeout: Duration,
    /// Memory that OTLP exports in flight may take together (their bodies, decoded requests and
    /// queued spans), reserved before a body is read; an export that finds no room is refused
    /// at once as retryable (HTTP 503 / gRPC UNAVAILABLE).
    #[arg(long, env = "TRACECOV_MAX_REQUEST_MEMORY", default_value = "320MiB", value_parser = parse_size)]
    pub max_request_memory: u64,
    /// Connections each listener (OTLP/gRPC, OTLP/HTTP, UI) holds open at once; further ones
    /// wait to be accepted until one closes.
    #[arg(long, env = "TRACECOV_MAX_CONNECTIONS", default_value_t = config::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Require `Authorization: Bearer TOKEN` on OTLP exports (SDKs send it with
    /// OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20TOKEN).
    #[arg(long, env = "TRACECOV_INGEST_TOKEN", hide_env_values = true)]
    pub ingest_token: Option<String>,
    /// Require this bearer token on the UI, the API and /metrics (a browser signs in once by
    /// opening any page with ?token=TOKEN).
    #[arg(long, env = "TRACECOV_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Serve every listener over TLS with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "TRACECOV_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "TRACECOV_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Also trust the certificate authorities in this PEM file, besides the system's, when
    /// asking the deployment's other instances at their https:// --instance-url (the CA that
    /// signed their --tls-cert).
    #[arg(long = "tls-ca", value_name = "FILE", env = "TRACECOV_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Send every acknowledged export on to another collector, unredacted: `grpc://host:port`
    /// (OTLP/gRPC) or `http://host:port[/path]` (OTLP/HTTP protobuf, to /v1/traces unless a
    /// path is given); repeatable. A slow or dead destination never delays acknowledgements.
    #[arg(
        long = "forward",
        value_name = "URL",
        env = "TRACECOV_FORWARD",
        value_delimiter = ','
    )]
    pub forward: Vec<String>,
    /// Most bytes of exports waiting per --forward destination; past it exports are dropped for
    /// that destination and counted (tracecov_forward_dropped_spans_total).
    #[arg(long, env = "TRACECOV_FORWARD_QUEUE", default_value = "64MiB", value_parser = parse_size)]
    pub forward_queue: u64,
    /// Join a deployment of instances sharing this PostgreSQL database
    /// (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE): runs, per-trace results and history
    /// are kept there, spans stay in this instance's --data (docs/scale-out.md). Needs
    /// --instance-url. TLS as libpq's sslmode and sslrootcert in the URL ask (disable, prefer
    /// (the default), require, verify-ca, verify-full; e.g.
    /// ?sslmode=verify-full&sslrootcert=/etc/tracecov/db-ca.pem).
    #[arg(
        long,
        env = "TRACECOV_SHARED_DB",
        value_name = "URL",
        hide_env_values = true
    )]
    pub shared_db: Option<String>,
    /// With --shared-db: this instance's UI/API address as the other instances reach it
    /// (http(s)://HOST:PORT), its key in the shared database.
    #[arg(long, env = "TRACECOV_INSTANCE_URL", value_name = "URL")]
    pub instance_url: Option<String>,
    /// The deployment's OTLP endpoint (the Collector in front of the instances), reported by
    /// /api/health so that `tracecov run --server` hands it to its command.
    #[arg(long, env = "TRACECOV_ADVERTISE_OTLP", value_name = "URL")]
    pub advertise_otlp: Option<String>,
    /// How often an instance of a deployment beats its heartbeat in the shared database.
    #[arg(long, env = "TRACECOV_HEARTBEAT", default_value = "5s", value_parser = parse_duration_arg)]
    pub heartbeat: Duration,
    #[command(flatten)]
    pub output: super::output::OutputArgs,
    #[command(flatten)]
    pub cors: CorsArgs,
    /// Test-only: delay every store commit, to exercise backpressure.
    #[arg(long, env = "TRACECOV_TEST_WRITER_DELAY", value_parser = parse_duration_arg, hide = true)]
    pub test_writer_delay: Option<Duration>,
    /// Test-only: a file holding a page count past which the store cannot grow, as on a full
    /// disk (`store::simulated_full`); followed while serving.
    #[arg(long, env = "TRACECOV_TEST_FULL_FILE", hide = true)]
    pub test_full_file: Option<PathBuf>,
    /// Test-only: how often a failure that goes on is summed up in the log (30s).
    #[arg(long, env = "TRACECOV_TEST_FAILURE_SUMMARY", value_parser = parse_duration_arg, hide = true)]
    pub test_failure_summary: Option<Duration>,
}

/// `--cors-origin`, on every command that runs a collector (`serve`, `run`, `demo`).
#[derive(Debug, Clone, Args, Default)]
pub struct CorsArgs {
    /// An origin (`http://localhost:3000`) whose pages may export to the OTLP/HTTP receiver:
    /// the OpenTelemetry web SDK's preflights are answered for it, with credentials; other
    /// origins are refused. Repeatable.
    #[arg(
        long = "cors-origin",
        value_name = "ORIGIN",
        env = "TRACECOV_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
}

impl CorsArgs {
    pub fn origins(&self) -> anyhow::Result<crate::web::cors::CorsOrigins> {
        Ok(crate::web::cors::CorsOrigins::new(&self.cors_origins)?)
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    config::parse_size(s)
}

pub(crate) fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    config::parse_duration(s)
}

/// A token flag's value, refused when empty (an empty token would let anyone in while looking
/// set).
pub(crate) fn secret(value: &Option<String>, flag: &str) -> anyhow::Result<Option<config::Secret>> {
    match value.as_deref().map(str::trim) {
        None => Ok(None),
        Some("") => anyhow::bail!("{flag} is empty: give a token, or leave the flag out"),
        Some(t) => Ok(Some(config::Secret(t.to_owned()))),
    }
}

/// An `http://` or `https://` URL with a host, trailing slashes dropped; `flag` names it in the
/// error.
fn http_url(value: &str, flag: &str) -> anyhow::Result<String> {
    let v = value.trim().trim_end_matches('/');
    let rest = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("https://"))
        .ok_or_else(|| {
            anyhow::anyhow!("{flag} must be an http:// or https:// URL, not {value:?}")
        })?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains('@') {
        anyhow::bail!("{flag} must name a host (http://HOST:PORT), not {value:?}");
    }
    Ok(v.to_owned())
}

impl ServeArgs {
    /// `--shared-db`, `--instance-url` and `--advertise-otlp`, checked together.
    fn shared(&self) -> anyhow::Result<(Option<config::SharedDbConfig>, Option<String>)> {
        let advertise_otlp = self
            .advertise_otlp
            .as_deref()
            .map(|u| http_url(u, "--advertise-otlp"))
            .transpose()?;
        let shared = match (&self.shared_db, &self.instance_url) {
            (None, None) => None,
            (None, Some(_)) => anyhow::bail!(
                "--instance-url is the address of an instance of a deployment: give --shared-db too"
            ),
            (Some(_), None) => anyhow::bail!(
                "--shared-db needs --instance-url: the address (http://HOST:PORT of the UI and \
                 API) the other instances reach this one at"
            ),
            (Some(url), Some(instance)) => {
                crate::shared::parse_url(url).map_err(anyhow::Error::msg)?;
                if self.heartbeat.is_zero() {
                    anyhow::bail!("--heartbeat must be longer than 0");
                }
                Some(config::SharedDbConfig {
                    url: config::Secret(url.trim().to_owned()),
                    instance_url: http_url(instance, "--instance-url")?,
                    heartbeat_every: self.heartbeat,
                })
            }
        };
        Ok((shared, advertise_otlp))
    }

    pub fn to_config(&self) -> anyhow::Result<ServeConfig> {
        let (shared, advertise_otlp) = self.shared()?;
        let max_body_bytes = usize::try_from(self.max_body)
            .ok()
            .filter(|b| *b > 0)
            .ok_or_else(|| {
                anyhow::anyhow!("--max-body must be between 1 byte and the address space")
            })?;
        if self.max_connections == 0 {
            anyhow::bail!("--max-connections must be at least 1");
        }
        let max_request_memory = usize::try_from(self.max_request_memory)
            .ok()
            .filter(|b| *b >= crate::ingest::admission::MIN_RESERVATION)
            .ok_or_else(|| anyhow::anyhow!("--max-request-memory must be at least 64KiB"))?;
        if self.queue_spans == 0 {
            anyhow::bail!("--queue-spans must be at least 1");
        }
        let forward_queue = usize::try_from(self.forward_queue)
            .ok()
            .filter(|b| *b > 0)
            .ok_or_else(|| {
                anyhow::anyhow!("--forward-queue must be between 1 byte and the address space")
            })?;
        let forward = self
            .forward
            .iter()
            .map(|url| {
                let target: crate::ingest::ForwardTarget = url.parse()?;
                Ok(crate::ingest::ForwardConfig {
                    queue_bytes: forward_queue,
                    ..crate::ingest::ForwardConfig::new(target)
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(ServeConfig {
            data_dir: self.data.clone(),
            grpc_addr: self.grpc_addr,
            http_addr: self.http_addr,
            ui_addr: self.ui_addr,
            max_body_bytes,
            durability: match self.sync {
                SyncMode::Process => Durability::Process,
                SyncMode::Power => Durability::Power,
            },
            writer: WriterConfig {
                queue_spans: self.queue_spans,
                retention: Retention {
                    max_age: self.retention_age,
                    max_bytes: self.retention_size,
                    max_history_age: self.history_age,
                },
                retention_every: self.retention_every,
                test_delay: self.test_writer_delay.unwrap_or_default(),
                failure_summary_every: self
                    .test_failure_summary
                    .unwrap_or(crate::store::outage::SUMMARY_EVERY),
            },
            test_services: self.test_services.clone(),
            settle: self.settle,
            manifest: self.manifest.clone().or_else(|| {
                let here = PathBuf::from("tracecov.yaml");
                here.exists().then_some(here)
            }),
            builtin_manifest: None,
            public_url: self.output.public_url.clone(),
            trace_links: self.output.trace_links.clone(),
            redactor: self
                .output
                .report_options(config::DEFAULT_UI_ADDR)?
                .redactor,
            forward,
            allow_hosts: self.allow_hosts.clone(),
            request_timeout: self.request_timeout,
            max_request_memory,
            max_connections: self.max_connections,
            ingest_token: secret(&self.ingest_token, "--ingest-token")?,
            token: secret(&self.token, "--token")?,
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(config::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            tls_ca: match &self.tls_ca {
                // Read now, so that a bad file stops `serve` before it binds anything.
                Some(file) => {
                    crate::tls::Trust::new(Some(file))?;
                    Some(file.clone())
                }
                None => None,
            },
            shared,
            advertise_otlp,
            cors_origins: self.cors.origins()?,
        })
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.to_config()?;
    if let Some(file) = args.test_full_file {
        crate::store::simulated_full::watch(file);
    }
    let listeners = Listeners::bind(&config).await?;
    let server = Server::start(config.clone(), listeners).await?;
    let a = server.addrs;
    // A closed stdout (a parent that stopped reading) must not stop the server: the banner is
    // informational, so a failed write is only logged.
    let mut banner = format!(
        "tracecov is serving\n  OTLP/gRPC  {}\n  OTLP/HTTP  {}\n  UI & API   {}\n  data       {}\n",
        a.grpc,
        a.otlp_http_url(),
        a.ui_url(),
        config.data_dir.display()
    );
    for f in &config.forward {
        banner.push_str(&format!("  forward    {}\n", f.target));
    }
    if let Some(shared) = &server.shared {
        banner.push_str(&format!(
            "  shared db  {} ({}) as {}\n",
            shared.target(),
            shared.tls_settings(),
            shared.instance_url()
        ));
    }
    if let Some(otlp) = &config.advertise_otlp {
        banner.push_str(&format!("  advertised OTLP {otlp}\n"));
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(banner.as_bytes()).and_then(|()| out.flush()) {
        tracing::warn!(error = %e, "could not print the listen addresses");
    }
    drop(out);
    let token = server.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight exports");
        token.cancel();
    });
    server.wait().await?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
