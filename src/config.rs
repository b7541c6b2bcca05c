//! Validated settings. The CLI turns parsed flags into these in one place; nothing else in the
//! library sees clap types.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::ingest::WriterConfig;
use crate::store::Durability;

/// Everything `tracecov serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub ui_addr: SocketAddr,
    /// The largest OTLP request accepted, after decompression.
    pub max_body_bytes: usize,
    pub durability: Durability,
    pub writer: WriterConfig,
    /// Services whose root spans are test cases (`--test-service`).
    pub test_services: Vec<String>,
    /// A trace is settled when no span arrived for it for this long (or its run closed).
    pub settle: Duration,
    /// The manifest (`tracecov.yaml`) describing the expected topology.
    pub manifest: Option<PathBuf>,
    /// A manifest already parsed (the demo's, built into the binary), used when `manifest` names
    /// no file, so the UI, the API and `/metrics` judge coverage as the demo's report does.
    pub builtin_manifest: Option<crate::coverage::Manifest>,
    /// The base of trace links in reports (default: the UI address actually bound).
    pub public_url: Option<String>,
    /// Where trace links point (default: tracecov's own UI at `public_url`).
    pub trace_links: Option<crate::links::LinkTemplate>,
    /// What reports, bug reports and the API redact.
    pub redactor: crate::redact::Redactor,
    /// Collectors every acknowledged export is sent on to (`--forward`), unredacted.
    pub forward: Vec<crate::ingest::ForwardConfig>,
    /// Host names the HTTP listeners answer to besides their own address (`--allow-host`; see
    /// `web::exposure`).
    pub allow_hosts: Vec<String>,
    /// How long an OTLP/HTTP request may take to arrive and be answered, and an API request's
    /// body to arrive (`--request-timeout`): a client that stops sending is answered 408 and
    /// its connection freed.
    pub request_timeout: Duration,
    /// The memory exports in flight may take together, decided before their bodies are read
    /// (`--max-request-memory`; see `ingest::admission`).
    pub max_request_memory: usize,
    /// Connections each listener holds open at once (`--max-connections`); more wait to be
    /// accepted.
    pub max_connections: usize,
    /// The bearer token OTLP exports must carry (`--ingest-token`).
    pub ingest_token: Option<Secret>,
    /// The bearer token the UI, the API and `/metrics` require (`--token`).
    pub token: Option<Secret>,
    /// The PEM certificate chain and key every listener serves TLS with (`--tls-cert`,
    /// `--tls-key`).
    pub tls: Option<TlsFiles>,
    /// A PEM file of certificate authorities trusted besides the system's when this instance
    /// asks another of its deployment at an `https://` `--instance-url` (`--tls-ca`; see
    /// `crate::tls`).
    pub tls_ca: Option<PathBuf>,
    /// The database this instance shares with the others of its deployment (`--shared-db`,
    /// `--instance-url`); `None`: one process, the embedded store alone.
    pub shared: Option<SharedDbConfig>,
    /// The deployment's OTLP endpoint (`--advertise-otlp`: the Collector in front), reported by
    /// `/api/health` so `tracecov run --server` hands it to its command.
    pub advertise_otlp: Option<String>,
    /// The origins whose pages may export to the OTLP/HTTP receiver (`--cors-origin`; see
    /// `web::cors`).
    pub cors_origins: crate::web::cors::CorsOrigins,
}

/// How an instance joins its deployment's shared database.
#[derive(Debug, Clone)]
pub struct SharedDbConfig {
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`; may hold a password.
    pub url: Secret,
    /// The address the other instances reach this one at (`--instance-url`).
    pub instance_url: String,
    /// How often the instance beats its heartbeat (and so, at most, how long a recovered
    /// database goes unnoticed).
    pub heartbeat_every: Duration,
}

/// The default heartbeat interval of an instance in a deployment.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// A secret given on the command line: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Where the TLS certificate chain and key are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The default `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// The default `--request-timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub const DEFAULT_SETTLE: Duration = Duration::from_secs(10);

pub const DEFAULT_DATA_DIR: &str = "./tracecov-data";
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:4317";
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:4318";
pub const DEFAULT_UI_ADDR: &str = "127.0.0.1:4320";
pub const DEFAULT_MAX_BODY: usize = 16 * 1024 * 1024;

impl ServeConfig {
    /// Defaults on the given data directory with every port chosen by the OS (for tests and for
    /// the embedded collector of `tracecov run`).
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> Self {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        Self {
            data_dir: data_dir.into(),
            grpc_addr: any,
            http_addr: any,
            ui_addr: any,
            max_body_bytes: DEFAULT_MAX_BODY,
            durability: Durability::Process,
            writer: WriterConfig::default(),
            test_services: Vec::new(),
            settle: DEFAULT_SETTLE,
            manifest: None,
            builtin_manifest: None,
            public_url: None,
            trace_links: None,
            redactor: crate::redact::Redactor::default(),
            forward: Vec::new(),
            allow_hosts: Vec::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_request_memory: crate::ingest::admission::DEFAULT_BUDGET,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            ingest_token: None,
            token: None,
            tls: None,
            tls_ca: None,
            shared: None,
            advertise_otlp: None,
            cors_origins: crate::web::cors::CorsOrigins::default(),
        }
    }
}

/// Parses a duration such as `500ms`, `10s`, `15m`, `12h`, `30d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        format!("invalid duration {text:?}: expected e.g. 500ms, 10s, 15m, 12h, 30d")
    })?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        other => {
            return Err(format!(
                "invalid duration unit {other:?} in {text:?}: use ms, s, m, h or d"
            ));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {text:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a size such as `16MiB`, `20GiB`, `512KB`, `1000` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {text:?}: expected e.g. 16MiB, 20GiB, 1000"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "kib" | "k" => 1024.0,
        "mib" | "m" => 1024.0 * 1024.0,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {text:?}: use B, KiB, MiB, GiB, KB, MB or GB"
            ));
        }
    };
    let bytes = n * mult;
    if !bytes.is_finite() || bytes < 0.0 {
        return Err(format!("invalid size {text:?}"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert!(parse_duration("10 parsecs").is_err());
        assert_eq!(parse_size("16MiB").unwrap(), 16 * 1024 * 1024);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("lots").is_err());
    }
}
