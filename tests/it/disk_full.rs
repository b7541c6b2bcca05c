//! A full disk, with the real binary and real OTLP clients over gRPC and HTTP. The store's room
//! is set through `serve`'s hidden `--test-full-file` (SQLite's `max_page_count`, which fails
//! writes with SQLITE_FULL exactly as a full disk does) and given back while the server runs.
//!
//! Regression: every failed commit logged an ERROR line (67,387 lines in 12 s), the settle worker
//! four lines a second, and nothing but the log said anything was wrong.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use serde_json::Value;
use tonic::transport::Channel;

use crate::common::{PATIENCE, request, trace_hex, wait_for_spans};

const PER_EXPORT: usize = 5;

struct Serve {
    child: Child,
    grpc: String,
    http: String,
    ui: String,
}

/// Starts `tracecov serve` on free ports, its log (no colours) going to `log`.
fn serve(data: &Path, log: &Path, args: &[&str]) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracecov"))
        .args(["serve", "--grpc-addr", "127.0.0.1:0", "--http-addr"])
        .args(["127.0.0.1:0", "--ui-addr", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(args)
        .env("TRACECOV_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut grpc, mut http, mut ui) = (None, None, None);
    while grpc.is_none() || http.is_none() || ui.is_none() {
        let line = lines
            .next()
            .expect("serve exited before printing its addresses")
            .unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["OTLP/gRPC", addr] => grpc = Some(format!("http://{addr}")),
            ["OTLP/HTTP", addr] => http = Some(addr.to_string()),
            ["UI", "&", "API", addr] => ui = Some(addr.to_string()),
            _ => {}
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Serve {
        child,
        grpc: grpc.unwrap(),
        http: http.unwrap(),
        ui: ui.unwrap(),
    }
}

/// How an export was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Stored,
    /// Refused as retryable: HTTP 503 with `Retry-After`, gRPC UNAVAILABLE.
    Retry,
    Other(String),
}

#[derive(Clone)]
struct Clients {
    grpc: TraceServiceClient<Channel>,
    http: reqwest::Client,
    traces_url: String,
}

impl Clients {
    async fn connect(s: &Serve) -> Self {
        Self {
            grpc: TraceServiceClient::connect(s.grpc.clone()).await.unwrap(),
            http: crate::common::http(),
            traces_url: format!("{}/v1/traces", s.http),
        }
    }

    /// Exports the spans of `seed`, over gRPC for even seeds and OTLP/HTTP protobuf for odd.
    async fn export(&self, seed: u64) -> Answer {
        let req = request("disk", seed, PER_EXPORT);
        if seed.is_multiple_of(2) {
            match self.grpc.clone().export(req).await {
                Ok(_) => Answer::Stored,
                Err(s) if s.code() == tonic::Code::Unavailable => Answer::Retry,
                Err(s) => Answer::Other(format!("{s:?}")),
            }
        } else {
            let resp = self
                .http
                .post(&self.traces_url)
                .header("content-type", "application/x-protobuf")
                .body(req.encode_to_vec())
                .send()
                .await;
            match resp {
                Ok(r) if r.status() == 200 => Answer::Stored,
                Ok(r) if r.status() == 503 && r.headers().contains_key("retry-after") => {
                    Answer::Retry
                }
                Ok(r) => Answer::Other(format!("{} {:?}", r.status(), r.text().await)),
                Err(e) => Answer::Other(e.to_string()),
            }
        }
    }
}

/// What the senders saw.
#[derive(Default)]
struct Ledger {
    stored: BTreeSet<u64>,
    refused: BTreeSet<u64>,
    other: Vec<(u64, String)>,
}

impl Ledger {
    fn record(&mut self, seed: u64, answer: Answer) {
        match answer {
            Answer::Stored => {
                self.stored.insert(seed);
            }
            Answer::Retry => {
                self.refused.insert(seed);
            }
            Answer::Other(what) => self.other.push((seed, what)),
        }
    }
}

/// Concurrent exporters, each sending new exports one after another until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(clients: &Clients, ledger: &Arc<Mutex<Ledger>>, seeds: &Arc<AtomicU64>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..4)
            .map(|_| {
                let (c, l, s, stop) =
                    (clients.clone(), ledger.clone(), seeds.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let seed = s.fetch_add(1, Ordering::Relaxed);
                        let answer = c.export(seed).await;
                        l.lock().unwrap().record(seed, answer);
                    }
                })
            })
            .collect();
        Self { stop, tasks }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
    }
}

async fn metrics(http: &reqwest::Client, ui: &str) -> String {
    http.get(format!("{ui}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of an unlabelled series (or of the one with `labels`).
fn metric(text: &str, name: &str, labels: &str) -> f64 {
    let key = format!("{name}{labels} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("no {name}{labels} in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

async fn health(http: &reqwest::Client, ui: &str) -> Value {
    http.get(format!("{ui}/api/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn log_lines(log: &Path, containing: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|l| l.contains(containing))
        .map(str::to_owned)
        .collect()
}

/// Polls `check` every 50 ms until it holds, failing after `PATIENCE`.
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends exports one after another until one gets `want`.
async fn export_until(clients: &Clients, ledger: &Mutex<Ledger>, seeds: &AtomicU64, want: Answer) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let seed = seeds.fetch_add(1, Ordering::Relaxed);
        let answer = clients.export(seed).await;
        let done = answer == want;
        ledger.lock().unwrap().record(seed, answer);
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "no export was answered {want:?}");
    }
}

fn set_room(file: &PathBuf, pages: u64) {
    std::fs::write(file, pages.to_string()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_said_once_refused_retryably_and_recovered_from_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let room = dir.path().join("room");
    let log = dir.path().join("serve.log");
    set_room(&room, 0);
    let mut server = serve(
        &data,
        &log,
        &[
            "--test-full-file",
            room.to_str().unwrap(),
            "--test-failure-summary",
            "1s",
            // Traces settle at once, so the settle worker writes (and fails) while the disk is full.
            "--settle",
            "200ms",
        ],
    );
    let http = crate::common::http();
    let clients = Clients::connect(&server).await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let seeds = Arc::new(AtomicU64::new(0));
    for _ in 0..10 {
        let seed = seeds.fetch_add(1, Ordering::Relaxed);
        assert_eq!(clients.export(seed).await, Answer::Stored, "export {seed}");
        ledger.lock().unwrap().stored.insert(seed);
    }

    // The disk fills: the store may not grow past its current size.
    set_room(&room, 1);
    export_until(&clients, &ledger, &seeds, Answer::Retry).await;
    let flood = Instant::now();
    let load = Load::start(&clients, &ledger, &seeds);
    // Under load, hundreds of commits fail, and the failure lasts long enough to be summed up.
    wait_until(
        "hundreds of commits failed and were summed up twice",
        || async {
            let m = metrics(&http, &server.ui).await;
            metric(&m, "tracecov_store_write_failures_total", "") >= 300.0
                && log_lines(&log, "store writes still failing").len() >= 2
        },
    )
    .await;
    let m = metrics(&http, &server.ui).await;
    let h = health(&http, &server.ui).await;
    load.stop().await;
    let flooded = flood.elapsed();
    assert_eq!(metric(&m, "tracecov_store_writable", ""), 0.0);
    let refused = metric(
        &m,
        "tracecov_exports_refused_total",
        "{reason=\"store_unwritable\"}",
    );
    assert!(refused >= 300.0, "{refused} exports counted as refused");
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["store"]["writable"], false, "{h}");
    let problem = h["store"]["problem"].as_str().unwrap();
    assert!(
        problem.starts_with("the disk holding") && problem.ends_with("is full"),
        "{h}"
    );
    {
        let l = ledger.lock().unwrap();
        assert!(l.other.is_empty(), "not retryable: {:?}", l.other);
        assert!(l.refused.len() >= 300, "{} refused", l.refused.len());
    }
    // One line says what is wrong; summaries come at most once a second.
    let said = log_lines(
        &log,
        "is full: exports are refused with 503/UNAVAILABLE (retryable)",
    );
    assert_eq!(said.len(), 1, "{said:#?}");
    assert!(said[0].contains("ERROR"), "{}", said[0]);
    let summaries = log_lines(&log, "store writes still failing").len() as u64;
    assert!(
        summaries <= flooded.as_secs() + 1,
        "{summaries} summaries in {flooded:?}"
    );

    // Space returns: the next commit succeeds, with no restart, and says so once.
    set_room(&room, 0);
    export_until(&clients, &ledger, &seeds, Answer::Stored).await;
    let recovered = Instant::now();
    let again = log_lines(&log, "store writable again after");
    assert_eq!(again.len(), 1, "{again:#?}");
    assert!(again[0].contains("INFO"), "{}", again[0]);
    // Clients retry what was refused, and it is stored now.
    let retried: Vec<u64> = ledger
        .lock()
        .unwrap()
        .refused
        .iter()
        .take(20)
        .copied()
        .collect();
    for seed in retried {
        assert_eq!(
            clients.export(seed).await,
            Answer::Stored,
            "retry of {seed}"
        );
        let mut l = ledger.lock().unwrap();
        l.refused.remove(&seed);
        l.stored.insert(seed);
    }
    let m = metrics(&http, &server.ui).await;
    assert_eq!(metric(&m, "tracecov_store_writable", ""), 1.0);
    let h = health(&http, &server.ui).await;
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["store"]["writable"], true, "{h}");

    // Writes go on succeeding past the summary interval, so the next failure is a new outage
    // (one within the interval would resume this one, as a disk on the edge of full does).
    while recovered.elapsed() < Duration::from_millis(1_500) {
        let seed = seeds.fetch_add(1, Ordering::Relaxed);
        assert_eq!(clients.export(seed).await, Answer::Stored, "export {seed}");
        ledger.lock().unwrap().stored.insert(seed);
    }

    // Full again, and stopped while full, with exports in flight: a clean stop, and one line
    // about what was refused.
    set_room(&room, 1);
    export_until(&clients, &ledger, &seeds, Answer::Retry).await;
    let load = Load::start(&clients, &ledger, &seeds);
    let failures = metric(
        &metrics(&http, &server.ui).await,
        "tracecov_store_write_failures_total",
        "",
    );
    wait_until("more commits failed under load", || async {
        metric(
            &metrics(&http, &server.ui).await,
            "tracecov_store_write_failures_total",
            "",
        ) >= failures + 20.0
    })
    .await;
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + PATIENCE;
    let exit = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    load.stop().await;
    assert!(
        exit.success(),
        "serve exited with {exit:?} on SIGTERM while the disk was full"
    );
    let stopping = log_lines(&log, "stopping while the disk holding");
    assert_eq!(stopping.len(), 1, "{stopping:#?}");

    // The whole log: one error line per time the disk filled, no line per failed commit, the
    // settle worker's failures said at most once each time.
    let errors = log_lines(&log, "ERROR");
    assert_eq!(errors.len(), 2, "{errors:#?}");
    let settle = log_lines(&log, "computing trace results").len();
    assert!(settle <= 4, "{settle} lines from the settle worker");
    let all = std::fs::read_to_string(&log).unwrap();
    assert!(
        all.lines().count() < 60,
        "the log has {} lines:\n{all}",
        all.lines().count()
    );

    // Everything acknowledged is stored, and nothing refused (only exports cut off by the stop
    // have no answer to go by).
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    let again = serve(&data, &dir.path().join("again.log"), &[]);
    let http = crate::common::http();
    let want = ledger.stored.len() as u64 * PER_EXPORT as u64;
    let unknown = ledger.other.len() as u64 * PER_EXPORT as u64;
    let stats = wait_for_spans(&http, &again.ui, want).await;
    let spans = stats["spans"].as_u64().unwrap();
    assert!(
        spans <= want + unknown,
        "{spans} stored, {want} acknowledged: {stats}"
    );
    for seed in &ledger.stored {
        let trace: Value = http
            .get(format!("{}/api/traces/{}", again.ui, trace_hex(*seed)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            trace["spans"].as_array().map(Vec::len),
            Some(PER_EXPORT),
            "acknowledged export {seed}: {trace}"
        );
    }
    let mut again = again;
    again.child.kill().unwrap();
    again.child.wait().unwrap();
}
