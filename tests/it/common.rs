//! Shared test harness: a real in-process server on free ports with a temporary store, and
//! helpers to build OTLP requests and read the JSON API.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde_json::Value;
use tracecov::config::ServeConfig;
use tracecov::server::{Addrs, Listeners, Server};

pub struct TestServer {
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
    pub addrs: Addrs,
    pub http: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServeConfig::ephemeral(dir.path().join("data"));
        tweak(&mut config);
        let listeners = Listeners::bind(&config).await.unwrap();
        let server = Server::start(config, listeners).await.unwrap();
        let addrs = server.addrs;
        Self {
            server: Some(server),
            dir,
            addrs,
            http: http(),
        }
    }

    /// Starts a server whose configuration may name its own bound addresses (an instance's
    /// `--instance-url`).
    pub async fn start_bound(tweak: impl FnOnce(&mut ServeConfig, &Addrs)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServeConfig::ephemeral(dir.path().join("data"));
        let listeners = Listeners::bind(&config).await.unwrap();
        tweak(&mut config, &listeners.addrs().unwrap());
        let server = Server::start(config, listeners).await.unwrap();
        let addrs = server.addrs;
        Self {
            server: Some(server),
            dir,
            addrs,
            http: http(),
        }
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}{}", self.addrs.ui_url(), path)
    }

    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.addrs.otlp_http_url())
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let resp = self.http.get(self.api(path)).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// `GET path` of the UI/API listener: the status and the body as text.
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let resp = self.http.get(self.api(path)).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    /// `GET /metrics`, as text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.api("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `POST /api/runs` with `open` (its name, its suite): the run opened, as the API answers.
    pub async fn open_run(&self, open: Value) -> Value {
        let resp = self
            .http
            .post(self.api("/api/runs"))
            .json(&open)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let run: Value = resp.json().await.unwrap();
        assert_eq!(status, 201, "opening {open}: {run}");
        run
    }

    pub async fn stats(&self) -> Value {
        self.get_json("/api/stats").await.1
    }

    /// Polls `/api/stats` until at least `spans` spans are stored.
    pub async fn wait_for_spans(&self, spans: u64) -> Value {
        wait_for_spans(&self.http, &self.addrs.ui_url(), spans).await
    }

    pub async fn trace(&self, trace_id: &str) -> Value {
        let (status, body) = self.get_json(&format!("/api/traces/{trace_id}")).await;
        assert_eq!(status, 200, "trace {trace_id}: {body}");
        body
    }

    pub async fn post_otlp(
        &self,
        content_type: &str,
        body: Vec<u8>,
        gzip: bool,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(self.traces_url())
            .header("content-type", content_type);
        if gzip {
            req = req.header("content-encoding", "gzip");
        }
        req.body(body).send().await.unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.unwrap();
        }
    }
}

/// An HTTP client for a test. Every reqwest client of a process needs the crypto provider
/// installed first (`tracecov::tls` says why): test code makes its clients here, never with
/// `reqwest::Client::new()`.
pub fn http() -> reqwest::Client {
    http_builder().build().unwrap()
}

/// A reqwest client builder, the crypto provider installed.
pub fn http_builder() -> reqwest::ClientBuilder {
    tracecov::tls::install_provider();
    reqwest::Client::builder()
}

/// How long a test waits for a condition before it fails. Generous on purpose: CI shares a
/// 2-core machine with other work, and a wait ends as soon as its condition holds, so a long
/// deadline costs nothing when things are well.
pub const PATIENCE: Duration = Duration::from_secs(90);

pub async fn wait_for_spans(http: &reqwest::Client, ui: &str, spans: u64) -> Value {
    let deadline = Instant::now() + PATIENCE;
    let mut last = Value::Null;
    loop {
        // A server that is still starting may refuse or reset connections: keep asking.
        if let Ok(resp) = http.get(format!("{ui}/api/stats")).send().await
            && let Ok(stats) = resp.json::<Value>().await
        {
            if stats["spans"].as_u64().unwrap_or(0) >= spans {
                return stats;
            }
            last = stats;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {spans} spans; have {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        key_strindex: 0,
    }
}

/// A request holding `n` spans of one trace from `service`. Ids are derived from `seed` so
/// different calls give different spans and the same call gives the same ones.
pub fn request(service: &str, seed: u64, n: usize) -> ExportTraceServiceRequest {
    let trace_id = trace_id_for(seed);
    let spans = (0..n)
        .map(|i| Span {
            trace_id: trace_id.clone(),
            span_id: ((seed << 20) + i as u64 + 1).to_be_bytes().to_vec(),
            name: format!("op-{i}"),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            end_time_unix_nano: 1_700_000_000_000_100_000 + i as u64,
            attributes: vec![kv("http.route", "/things/{id}"), kv("seq", &i.to_string())],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

pub fn trace_id_for(seed: u64) -> Vec<u8> {
    let mut id = vec![0xab; 8];
    id.extend_from_slice(&(seed + 1).to_be_bytes());
    id
}

pub fn trace_hex(seed: u64) -> String {
    hex::encode(trace_id_for(seed))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/fixtures/...` (see its README for where each file comes from).
pub fn fixture(rel: &str) -> PathBuf {
    let p = repo_root().join("tests/fixtures").join(rel);
    assert!(p.exists(), "fixture missing: {}", p.display());
    p
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Debian's Chromium (or another Chromium on PATH), or a failure saying how to get it: the
/// tests that need a browser must not skip.
pub fn chromium() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .flat_map(|dir| ["chromium", "chromium-browser", "google-chrome"].map(|n| dir.join(n)))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "headless Chromium is needed by the browser tests and none was found on PATH: \
             install Debian's `chromium` (.ci/run does: apt-get install -y chromium)"
        )
    })
}

/// The flags every test browser starts with: headless, no sandbox (CI runs as root), nothing
/// fetched from the network, and (added by the caller) a fresh `--user-data-dir`.
pub const HEADLESS_CHROMIUM: [&str; 7] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
];

/// A `tracecov serve` process (the real binary), for what only a process shows: SIGKILL, its
/// memory.
pub struct Running {
    pub child: Child,
    /// `http://…` of OTLP/HTTP, and of the UI.
    pub http: String,
    pub ui: String,
    /// `host:port` of OTLP/gRPC.
    pub grpc: String,
}

impl Running {
    /// The process's peak resident memory so far (Linux's VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kb * 1024
    }
}

/// Starts `tracecov serve` on free ports with `extra` flags and reads the bound addresses from
/// its output.
pub fn spawn_serve(data: &Path, extra: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracecov"))
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .args(["--ui-addr", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let (mut http, mut ui, mut grpc) = (None, None, None);
    while http.is_none() || ui.is_none() || grpc.is_none() {
        let line = lines
            .next()
            .expect("serve exited before printing its addresses")
            .unwrap();
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("OTLP/HTTP"), Some(addr)) => http = Some(addr.to_owned()),
            (Some("OTLP/gRPC"), Some(addr)) => grpc = Some(addr.to_owned()),
            (Some("UI"), Some("&")) => ui = words.nth(1).map(str::to_owned),
            _ => {}
        }
    }
    // Keep reading so the server never writes into a closed pipe.
    std::thread::spawn(move || for _ in lines {});
    Running {
        child,
        http: http.unwrap(),
        ui: ui.unwrap(),
        grpc: grpc.unwrap(),
    }
}
