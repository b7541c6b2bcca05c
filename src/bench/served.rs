//! `tracecov bench analysis`: what users wait for, from a real server. A `tracecov serve` child
//! process (its own memory, measured alone) receives a generated run of `--spans` spans over
//! OTLP/HTTP (OTLP/JSON, four exports in flight, retried when the queue answers 503), and the
//! benchmark waits until every trace of it is settled and has its results. Then it times, over
//! HTTP as a user's tools would ask: the run's JSON report, its run page, `/metrics`; and, after
//! the store has grown to `--store-spans` with other traffic, the JSON report of a 16-span run.
//!
//! Baselines measured in the same invocation: the durable ingest rate (spans acknowledged per
//! second) for the settle worker's throughput (spans over its busy time, from its own metrics),
//! and, for the JSON report, the way every report was built before results were kept: the run's
//! spans analysed all at once, in this process. The server's peak resident memory (`VmHWM`) is
//! read from `/proc` at each stage.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt as _;

use crate::model::{Attributes, KeyValue, Resource, Span};
use crate::runs;

use super::analysis::{generate_from, median, report_from_spans};

const RUN: &str = "bench-analysis";
const SMALL_RUN: &str = "bench-analysis-small";
/// Spans generated, converted and sent per part: the benchmark never holds a large run at once.
const PART: usize = 50_000;
/// The server's settle period: short, so the benchmark does not wait ten seconds per stage.
pub(super) const SETTLE: &str = "2s";

pub struct Args {
    pub spans: usize,
    pub store_spans: usize,
    pub runs: usize,
}

struct Server {
    child: Child,
    http: String,
    ui: String,
    _dir: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed on drop.
pub(super) struct TempDir(pub(super) std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A `tracecov serve` child on free loopback ports, its store in `data`, settling after
/// `SETTLE`, with the arguments `extra` makes of its UI base URL; its OTLP/HTTP and UI base URLs.
pub(super) fn serve_child(
    data: &std::path::Path,
    extra: impl FnOnce(&str) -> Vec<String>,
) -> anyhow::Result<(Child, String, String)> {
    let (grpc, http, ui) = (free_port()?, free_port()?, free_port()?);
    let ui = format!("http://127.0.0.1:{ui}");
    let child = Command::new(std::env::current_exe()?)
        .arg("serve")
        .arg("--data")
        .arg(data)
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .args(["--ui-addr", ui.trim_start_matches("http://")])
        .args(["--settle", SETTLE])
        .args(extra(&ui))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting tracecov serve")?;
    Ok((child, format!("http://127.0.0.1:{http}"), ui))
}

/// A process's peak resident memory so far (`VmHWM`), in MiB; 0 when unknown.
pub(super) fn peak_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

impl Server {
    fn start() -> anyhow::Result<Self> {
        let dir = TempDir(std::env::temp_dir().join(format!(
            "tracecov-bench-analysis-{}-{}",
            std::process::id(),
            crate::ingest::now_ns()
        )));
        std::fs::create_dir_all(&dir.0)?;
        let (child, http, ui) = serve_child(&dir.0.join("data"), |_| Vec::new())?;
        Ok(Server {
            child,
            http,
            ui,
            _dir: dir,
        })
    }

    /// The server's peak resident memory so far, in MiB.
    fn peak_mib(&self) -> f64 {
        peak_mib(self.child.id())
    }
}

/// Spans with `tracecov.run.id` on their resources (or as they are, for `None`).
pub(super) fn stamped(mut spans: Vec<Span>, run: Option<&str>) -> Vec<Span> {
    let Some(run) = run else { return spans };
    let mut done: std::collections::HashMap<*const Resource, Arc<Resource>> =
        std::collections::HashMap::new();
    for s in &mut spans {
        let r = done.entry(Arc::as_ptr(&s.resource)).or_insert_with(|| {
            let mut attrs: Vec<KeyValue> = s.resource.attributes.0.clone();
            attrs.push(KeyValue::new(runs::RUN_ID_ATTR, run));
            Arc::new(Resource::new(Attributes(attrs)))
        });
        s.resource = r.clone();
    }
    spans
}

/// Sends spans as OTLP/JSON exports, four in flight; a 503 (queue full) is retried. Returns when
/// every export was acknowledged (its spans durable).
async fn send(http: &reqwest::Client, url: &str, spans: &[Span]) -> anyhow::Result<()> {
    let mut body = Vec::new();
    crate::import::write_otlp_json_lines(spans, &mut body)?;
    let lines: Vec<bytes::Bytes> = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    send_bodies(http, url, "application/json", &lines, 4).await
}

/// Posts each of `bodies` to `url` as `content_type`, `in_flight` at a time; an answer of 429 or
/// 503 (queue full) is retried after a pause, as an SDK would. Returns once every one was
/// acknowledged.
pub(super) async fn send_bodies(
    http: &reqwest::Client,
    url: &str,
    content_type: &str,
    bodies: &[bytes::Bytes],
    in_flight: usize,
) -> anyhow::Result<()> {
    let mut pending = futures::stream::iter(bodies.iter().map(|body| async move {
        loop {
            let r = http
                .post(url)
                .header("content-type", content_type)
                .body(body.clone())
                .send()
                .await?;
            match r.status().as_u16() {
                200 => return anyhow::Ok(()),
                429 | 503 => tokio::time::sleep(Duration::from_millis(20)).await,
                s => bail!(
                    "export answered {s}: {}",
                    r.text().await.unwrap_or_default()
                ),
            }
        }
    }))
    .buffer_unordered(in_flight);
    while let Some(r) = pending.next().await {
        r?;
    }
    Ok(())
}

async fn metric(http: &reqwest::Client, ui: &str, name: &str) -> anyhow::Result<f64> {
    let text = http
        .get(format!("{ui}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0))
}

/// Waits until `run` has no trace without results (and the worker's backlog is empty).
async fn settled(http: &reqwest::Client, ui: &str, run: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let status: serde_json::Value = http
            .get(format!("{ui}/api/runs/{run}"))
            .send()
            .await?
            .json()
            .await?;
        let pending = status["pending_traces"].as_u64();
        if pending == Some(0) && metric(http, ui, "tracecov_settle_backlog_traces").await? == 0.0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("run {run} not settled after an hour: {status}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A GET timed: the first request, the median of `runs` more (the page reloading, nothing
/// changed in between: the server may answer from its cache), and the body length.
struct Timed {
    first: f64,
    again: f64,
    len: usize,
}

impl std::fmt::Display for Timed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.3} s first, {:.4} s again ({} bytes)",
            self.first, self.again, self.len
        )
    }
}

async fn time_get(http: &reqwest::Client, url: &str, runs: usize) -> anyhow::Result<Timed> {
    let (first, _) = time_gets(http, url, 1).await?;
    let (again, len) = time_gets(http, url, runs).await?;
    Ok(Timed { first, again, len })
}

/// Median seconds of `runs` GETs of `url` (each must answer 200); the body length of the last.
async fn time_gets(http: &reqwest::Client, url: &str, runs: usize) -> anyhow::Result<(f64, usize)> {
    let mut times = Vec::new();
    let mut len = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let r = http.get(url).send().await?;
        let status = r.status();
        let body = r.bytes().await?;
        times.push(start.elapsed().as_secs_f64());
        if !status.is_success() {
            bail!("{url} answered {status}");
        }
        len = body.len();
    }
    Ok((median(times), len))
}

/// Generates and sends about `n` spans in parts, traces numbered from `first`; returns the
/// next trace number.
async fn send_generated(
    http: &reqwest::Client,
    url: &str,
    first: u64,
    n: usize,
    run: Option<&str>,
) -> anyhow::Result<u64> {
    let mut next = first;
    let mut sent = 0;
    while sent < n {
        let (spans, after) = generate_from(next, PART.min(n - sent));
        sent += spans.len();
        next = after;
        send(http, url, &stamped(spans, run)).await?;
    }
    Ok(next)
}

/// Waits until the server at `ui` answers its health, for a minute at most.
pub(super) async fn wait_ready(http: &reqwest::Client, ui: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while http.get(format!("{ui}/api/health")).send().await.is_err() {
        if Instant::now() > deadline {
            bail!("tracecov serve at {ui} did not answer within a minute");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let server = Server::start()?;
    let http = crate::tls::Trust::default().client_builder().build()?;
    wait_ready(&http, &server.ui).await?;
    let traces_url = format!("{}/v1/traces", server.http);
    println!(
        "analysis benchmark: tracecov serve (settle {SETTLE}), a generated run of {} spans over OTLP/HTTP, then a store of {} spans",
        args.spans, args.store_spans
    );

    let start = Instant::now();
    let next = send_generated(&http, &traces_url, 1, args.spans, Some(RUN)).await?;
    let ingest_s = start.elapsed().as_secs_f64();
    settled(&http, &server.ui, RUN).await?;
    let settled_s = start.elapsed().as_secs_f64();
    let spans = metric(&http, &server.ui, "tracecov_trace_results_spans_total").await?;
    let busy = metric(&http, &server.ui, "tracecov_settle_busy_seconds").await?;
    let ingest_rate = args.spans as f64 / ingest_s;
    let settle_rate = spans / busy.max(1e-9);
    println!(
        "durable ingest: {ingest_s:.1} s ({ingest_rate:.0} spans/s); every trace settled with results {:.1} s after the last acknowledgement (settle period {SETTLE})",
        settled_s - ingest_s
    );
    println!(
        "per-trace results: {spans:.0} spans in {busy:.1} s of the settle worker ({settle_rate:.0} spans/s; {:.2}x the durable ingest rate)",
        settle_rate / ingest_rate
    );
    println!(
        "server peak resident memory while ingesting and settling: {:.0} MiB",
        server.peak_mib()
    );

    let report = time_get(
        &http,
        &format!("{}/api/runs/{RUN}/report", server.ui),
        args.runs,
    )
    .await?;
    let page = time_get(&http, &format!("{}/runs/{RUN}", server.ui), args.runs).await?;
    let metrics = time_get(&http, &format!("{}/metrics", server.ui), args.runs).await?;
    // The baseline: the run's spans analysed at once, in this process, as before results.
    let mut before = Vec::new();
    for _ in 0..args.runs {
        let (spans, _) = generate_from(1, args.spans);
        let spans = stamped(spans, Some(RUN));
        let start = Instant::now();
        let rep = report_from_spans(&spans, RUN, None);
        let _ = crate::report::to_json(&rep);
        before.push(start.elapsed().as_secs_f64());
    }
    let before = median(before);
    println!(
        "JSON report: {report}; analysing the run's spans at once (median of {}, in this process, spans already in memory): {before:.3} s; first report / that = {:.3}",
        args.runs,
        report.first / before
    );
    println!("run page: {page}");
    println!("/metrics: {metrics}");
    println!(
        "(\"again\": median of {} more requests, nothing changed in between)",
        args.runs
    );

    // The run is over; the rest of the store is other traffic.
    http.post(format!("{}/api/runs/{RUN}/close", server.ui))
        .send()
        .await?;
    let more = args.store_spans.saturating_sub(args.spans);
    if more > 0 {
        let start = Instant::now();
        let next = send_generated(&http, &traces_url, next, more, None).await?;
        let small = stamped(
            generate_from(next, 16).0.into_iter().collect::<Vec<Span>>(),
            Some(SMALL_RUN),
        );
        let small_spans = small.len();
        send(&http, &traces_url, &small).await?;
        settled(&http, &server.ui, SMALL_RUN).await?;
        let deadline = Instant::now() + Duration::from_secs(3600);
        while metric(&http, &server.ui, "tracecov_settle_backlog_traces").await? > 0.0 {
            if Instant::now() > deadline {
                bail!("the store did not settle within an hour");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!(
            "store grown to {} spans and settled in {:.1} s",
            args.store_spans,
            start.elapsed().as_secs_f64()
        );
        let small = time_get(
            &http,
            &format!("{}/api/runs/{SMALL_RUN}/report", server.ui),
            args.runs,
        )
        .await?;
        println!(
            "JSON report of the {small_spans}-span run in the {}-span store: {small}",
            args.store_spans
        );
    }
    println!(
        "server peak resident memory over the whole benchmark: {:.0} MiB",
        server.peak_mib()
    );
    Ok(())
}
