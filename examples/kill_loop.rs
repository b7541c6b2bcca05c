//! The kill -9 loop (issue #16): `tracecov serve` under load over OTLP/gRPC and OTLP/HTTP is
//! killed with SIGKILL at a random moment and restarted on the same data, cycle after cycle; then
//! every span whose export was acknowledged must be stored. Prints what was acknowledged and
//! stored, and exits 1 when anything acknowledged was lost.
//!
//! Run through `scripts/kill-loop`, which builds this and the server in release mode. Not a test
//! of the suite: ten cycles under load take a minute, and it is meant to be run on demand.
//!
//! Each exporter sends exports one after another, each a new trace of 1 to 40 spans whose ids
//! name the cycle, the exporter and the export, so what was acknowledged is known exactly. A
//! refusal (queue full: HTTP 503, gRPC UNAVAILABLE) is retried after a pause as an SDK would; an
//! export cut off by the kill has no answer and counts for nothing. After the last cycle the
//! server is started once more, every acknowledged trace is read back through the API and its
//! spans compared, and the server is stopped with SIGTERM, which must end it cleanly.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

#[derive(Parser)]
#[command(about = "kill -9 tracecov serve under load, restart it, and count what was lost")]
struct Args {
    /// The tracecov binary to serve with.
    #[arg(long)]
    bin: PathBuf,
    /// Kill and restart cycles.
    #[arg(long, default_value_t = 10)]
    cycles: u32,
    /// Concurrent exporters per protocol (OTLP/gRPC and OTLP/HTTP protobuf).
    #[arg(long, default_value_t = 3)]
    exporters: u32,
    /// The earliest and latest moment of a kill, in milliseconds of load.
    #[arg(long, default_value_t = 300)]
    min_ms: u64,
    #[arg(long, default_value_t = 3000)]
    max_ms: u64,
    /// The data directory (default: a new temporary one, removed afterwards).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Seeds the kill moments and export sizes (default: the clock).
    #[arg(long)]
    seed: Option<u64>,
}

/// One acknowledged export: its trace and its span ids.
struct Acked {
    trace: [u8; 16],
    spans: Vec<[u8; 8]>,
}

#[derive(Default)]
struct Tally {
    acked: Vec<Acked>,
    grpc_exports: u64,
    http_exports: u64,
    /// Refusals (queue full) that were retried.
    retried: u64,
}

struct Serve {
    child: Child,
    grpc: String,
    http: String,
    ui: String,
}

/// Starts `serve` on free ports over `data`; its log goes to `log`.
fn serve(bin: &Path, data: &Path, log: &Path) -> anyhow::Result<Serve> {
    let mut child = Command::new(bin)
        .args(["serve", "--grpc-addr", "127.0.0.1:0", "--http-addr"])
        .args(["127.0.0.1:0", "--ui-addr", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let (mut grpc, mut http, mut ui) = (None, None, None);
    while grpc.is_none() || http.is_none() || ui.is_none() {
        let Some(line) = lines.next() else {
            bail!(
                "serve exited before printing its addresses (see {})",
                log.display()
            );
        };
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["OTLP/gRPC", addr] => grpc = Some(format!("http://{addr}")),
            ["OTLP/HTTP", addr] => http = Some(addr.to_string()),
            ["UI", "&", "API", addr] => ui = Some(addr.to_string()),
            _ => {}
        }
    }
    // Keep reading, so the server never writes into a closed pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(Serve {
        child,
        grpc: grpc.unwrap_or_default(),
        http: http.unwrap_or_default(),
        ui: ui.unwrap_or_default(),
    })
}

/// SplitMix64: the kill moments and export sizes, reproducible from `--seed`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high.saturating_sub(low) + 1)
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        key_strindex: 0,
    }
}

/// Export `n` of exporter `exporter` in cycle `cycle`: a new trace of `spans` spans.
fn export(cycle: u32, exporter: u32, n: u64, spans: usize) -> (ExportTraceServiceRequest, Acked) {
    let mut trace = [0u8; 16];
    trace[..4].copy_from_slice(&0x6b69_6c6cu32.to_be_bytes());
    trace[4..8].copy_from_slice(&cycle.to_be_bytes());
    trace[8..12].copy_from_slice(&exporter.to_be_bytes());
    trace[12..].copy_from_slice(&(n as u32).to_be_bytes());
    let ids: Vec<[u8; 8]> = (0..spans as u64)
        .map(|i| ((n << 16) | (i + 1)).to_be_bytes())
        .collect();
    let otlp = ids
        .iter()
        .enumerate()
        .map(|(i, id)| Span {
            trace_id: trace.to_vec(),
            span_id: id.to_vec(),
            parent_span_id: if i == 0 { Vec::new() } else { ids[0].to_vec() },
            name: format!("GET /items/{{id}} {i}"),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            end_time_unix_nano: 1_700_000_000_001_000_000 + i as u64,
            attributes: vec![
                kv("http.route", "/items/{id}"),
                kv("url.path", &format!("/items/{n}")),
            ],
            ..Default::default()
        })
        .collect();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", &format!("exporter-{exporter}"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: otlp,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    (request, Acked { trace, spans: ids })
}

/// How the server answered an export.
enum Answer {
    Acked,
    /// Refused as retryable (queue full): sent again after a pause.
    Refused,
    /// No answer (the server was killed) or an unexpected one.
    Failed(String),
}

/// One exporter: sends new exports until the server is killed.
async fn exporter(
    s: Arc<(String, String)>,
    grpc: bool,
    cycle: u32,
    id: u32,
    seed: u64,
    killed: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    let mut rng = Rng(seed);
    let mut client = if grpc {
        match TraceServiceClient::connect(s.0.clone()).await {
            Ok(c) => Some(c),
            Err(_) => return,
        }
    } else {
        None
    };
    let http = reqwest::Client::new();
    let url = format!("{}/v1/traces", s.1);
    let mut n = 0u64;
    while !killed.load(Ordering::Relaxed) {
        n += 1;
        let (request, acked) = export(cycle, id, n, rng.between(1, 40) as usize);
        loop {
            let answer = match &mut client {
                Some(c) => match c.export(request.clone()).await {
                    Ok(_) => Answer::Acked,
                    Err(s)
                        if s.code() == tonic::Code::Unavailable
                            && !killed.load(Ordering::Relaxed) =>
                    {
                        Answer::Refused
                    }
                    Err(s) => Answer::Failed(s.to_string()),
                },
                None => match http
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(request.encode_to_vec())
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => Answer::Acked,
                    Ok(r) if r.status() == 503 => Answer::Refused,
                    Ok(r) => Answer::Failed(r.status().to_string()),
                    Err(e) => Answer::Failed(e.to_string()),
                },
            };
            match answer {
                Answer::Acked => {
                    let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                    t.acked.push(acked);
                    if grpc {
                        t.grpc_exports += 1;
                    } else {
                        t.http_exports += 1;
                    }
                    break;
                }
                Answer::Refused => {
                    tally.lock().unwrap_or_else(|p| p.into_inner()).retried += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Answer::Failed(e) => {
                    if !killed.load(Ordering::Relaxed) {
                        eprintln!("exporter {id}: export failed before the kill: {e}");
                    }
                    return;
                }
            }
        }
    }
}

/// Every acknowledged span stored? Reads each acknowledged trace through the API; returns the
/// number of acknowledged spans found.
async fn stored(ui: &str, acked: &[Acked]) -> anyhow::Result<u64> {
    let http = reqwest::Client::new();
    let found = futures::stream::iter(acked)
        .map(|a| {
            let http = http.clone();
            async move {
                let url = format!("{ui}/api/traces/{}", hex::encode(a.trace));
                let resp = http.get(&url).send().await?;
                if resp.status() == 404 {
                    return Ok::<u64, anyhow::Error>(0);
                }
                let body: serde_json::Value = resp.error_for_status()?.json().await?;
                let have: HashSet<String> = body["spans"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["span_id"].as_str().map(str::to_owned))
                    .collect();
                Ok(a.spans
                    .iter()
                    .filter(|id| have.contains(&hex::encode(id)))
                    .count() as u64)
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    found.into_iter().sum()
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let temp = tempfile::tempdir()?;
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| temp.path().join("data"));
    let logs = temp.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut rng = Rng(seed);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    println!(
        "kill -9 loop: {} cycles, {} OTLP/gRPC and {} OTLP/HTTP exporters, killed after {}–{} ms of load, seed {seed}, data {}",
        args.cycles,
        args.exporters,
        args.exporters,
        args.min_ms,
        args.max_ms,
        data.display()
    );
    for cycle in 1..=args.cycles {
        let log = logs.join(format!("serve-{cycle}.log"));
        let mut server = serve(&args.bin, &data, &log)?;
        let addrs = Arc::new((server.grpc.clone(), server.http.clone()));
        let killed = Arc::new(AtomicBool::new(false));
        let before = tally.lock().unwrap_or_else(|p| p.into_inner()).acked.len();
        let tasks: Vec<_> = (0..args.exporters * 2)
            .map(|id| {
                tokio::spawn(exporter(
                    addrs.clone(),
                    id % 2 == 0,
                    cycle,
                    id,
                    rng.next(),
                    killed.clone(),
                    tally.clone(),
                ))
            })
            .collect();
        let after = Duration::from_millis(rng.between(args.min_ms, args.max_ms));
        tokio::time::sleep(after).await;
        // SIGKILL: no chance to finish a commit, answer, flush or checkpoint. The exporters
        // learn first, so the failures it causes are not taken for refusals.
        killed.store(true, Ordering::Relaxed);
        server.child.kill()?;
        server.child.wait()?;
        for t in tasks {
            t.await?;
        }
        let t = tally.lock().unwrap_or_else(|p| p.into_inner());
        let exports = t.acked.len() - before;
        let spans: usize = t.acked[before..].iter().map(|a| a.spans.len()).sum();
        println!(
            "  cycle {cycle:>2}: killed after {:>5} ms, {} exports ({} spans) acknowledged",
            after.as_millis(),
            thousands(exports as u64),
            thousands(spans as u64)
        );
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    let mut server = serve(&args.bin, &data, &logs.join("check.log"))?;
    let acked_spans: u64 = tally.acked.iter().map(|a| a.spans.len() as u64).sum();
    let found = stored(&server.ui, &tally.acked).await?;
    let stats: serde_json::Value = reqwest::get(format!("{}/api/stats", server.ui))
        .await?
        .json()
        .await?;
    // A clean stop after all that: SIGTERM drains and closes the store.
    let term = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()?;
    let exit = server.child.wait()?;
    let lost = acked_spans - found;
    println!(
        "cycles               {}\n\
         exports acknowledged {} ({} over gRPC, {} over HTTP; {} refusals retried)\n\
         spans acknowledged   {}\n\
         spans stored         {} of them ({} in the store, with those cut off before their answer)\n\
         lost                 {lost}\n\
         clean stop           {}\n\
         took                 {:.0} s",
        args.cycles,
        thousands(tally.acked.len() as u64),
        thousands(tally.grpc_exports),
        thousands(tally.http_exports),
        thousands(tally.retried),
        thousands(acked_spans),
        thousands(found),
        thousands(stats["spans"].as_u64().unwrap_or(0)),
        if term.success() && exit.success() {
            "yes".to_owned()
        } else {
            format!("no ({exit})")
        },
        started.elapsed().as_secs_f64()
    );
    if lost > 0 || !exit.success() {
        if args.data.is_none() {
            // Keep the evidence.
            let kept = temp.keep();
            println!("kept the data and logs in {}", kept.display());
        }
        return Ok(false);
    }
    Ok(true)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kill-loop: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("kill-loop: {e:#}");
            ExitCode::from(2)
        }
    }
}
