//! `tracecov bench shared`: one deployment of 1, 2, … `--instances` `tracecov serve --shared-db`
//! children on this machine, sharing one PostgreSQL (a fresh database per deployment), each
//! receiving its share of a generated run over OTLP/HTTP split by trace id as the Collector's
//! load-balancing exporter splits it (`routing_key: traceID`: a hash of the trace id, modulo the
//! instances). Timed per deployment: durable ingest (every export acknowledged, its spans on an
//! instance's disk) and ingest through analysis (every trace's results computed and published to
//! PostgreSQL, every trace assigned to the run there), as spans/s and as a ratio to one instance;
//! then the run's JSON report asked of the first instance and of the last (read from PostgreSQL:
//! the per-instance rollups merged), first and again.
//!
//! The exports are encoded before the clock starts (OTLP/protobuf, 1,000 spans each), so the
//! figures are the servers' and the database's work, not the generator's; four exports are in
//! flight per instance, as a Collector's exporter queue would send them.
//!
//! The baseline, measured first in the same invocation: one `tracecov serve` without
//! `--shared-db` (the embedded store alone) receiving the whole run, so the figures also say what
//! the shared database costs an instance.
//!
//! Every deployment must answer the same report (its edges, tests and failures), which the
//! benchmark checks against the first deployment's.

use std::hash::{BuildHasher, BuildHasherDefault};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use prost::Message as _;

use crate::model::Span;

use super::analysis::{generate_from, median};
use super::served::{self, SETTLE, TempDir, stamped};

const RUN: &str = "bench-shared";
/// Spans in one export.
pub(super) const EXPORT: usize = 1_000;
/// Exports in flight per instance.
pub(super) const IN_FLIGHT: usize = 4;

pub struct Args {
    /// A PostgreSQL URL whose user may create databases (`postgres://postgres@HOST:PORT/postgres`).
    pub admin_url: String,
    pub spans: usize,
    pub instances: usize,
    pub runs: usize,
}

pub(super) struct Instance {
    child: Child,
    pub(super) otlp: String,
    pub(super) ui: String,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Instance {
    /// An instance of the deployment on `db_url`, registered under its own UI address; with
    /// none, a single process on its embedded store alone (the baseline).
    pub(super) fn start(dir: &std::path::Path, db_url: Option<&str>) -> anyhow::Result<Self> {
        let (child, http, ui) = served::serve_child(dir, |ui| match db_url {
            Some(db) => ["--shared-db", db, "--instance-url", ui]
                .map(str::to_owned)
                .to_vec(),
            None => Vec::new(),
        })?;
        Ok(Instance {
            child,
            otlp: format!("{http}/v1/traces"),
            ui,
        })
    }
}

/// The instance a trace goes to: a fixed hash of its id, modulo the instances.
pub(super) fn route(span: &Span, instances: usize) -> usize {
    let hasher = BuildHasherDefault::<std::hash::DefaultHasher>::default();
    (hasher.hash_one(span.trace_id) % instances as u64) as usize
}

/// The run's exports for each of `instances`, encoded: OTLP/protobuf requests of `EXPORT`
/// spans, each holding only traces routed to that instance.
fn exports(spans: usize, instances: usize) -> Vec<Vec<Bytes>> {
    let mut out = vec![Vec::new(); instances];
    let mut pending: Vec<Vec<Span>> = vec![Vec::new(); instances];
    let mut next = 1;
    let mut made = 0;
    while made < spans {
        let (part, after) = generate_from(next, 50_000.min(spans - made));
        made += part.len();
        next = after;
        for span in stamped(part, Some(RUN)) {
            let i = route(&span, instances);
            pending[i].push(span);
            if pending[i].len() == EXPORT {
                let batch = std::mem::take(&mut pending[i]);
                out[i].push(encode(&batch));
            }
        }
    }
    for (i, rest) in pending.into_iter().enumerate() {
        if !rest.is_empty() {
            out[i].push(encode(&rest));
        }
    }
    out
}

pub(super) fn encode(spans: &[Span]) -> Bytes {
    Bytes::from(crate::cli::import::to_otlp::request(spans).encode_to_vec())
}

pub(super) async fn get_json(
    http: &reqwest::Client,
    url: &str,
) -> anyhow::Result<serde_json::Value> {
    let r = http.get(url).send().await?;
    let status = r.status();
    let body: serde_json::Value = r.json().await?;
    if !status.is_success() {
        bail!("{url} answered {status}: {body}");
    }
    Ok(body)
}

/// Waits until the instance has the results of every trace it holds, has published them and
/// has every trace assigned in the database.
async fn done(http: &reqwest::Client, instance: &Instance) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let run = get_json(http, &format!("{}/api/runs/{RUN}", instance.ui)).await;
        let health = get_json(http, &format!("{}/api/health", instance.ui)).await?;
        let db = &health["shared_db"];
        let published = db.is_null()
            || (db["status"] == "ok" && db["unpublished"] == 0 && db["unassigned"] == 0);
        let settled = run.is_ok_and(|r| r["pending_traces"].as_u64() == Some(0));
        if settled && published {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} not done after an hour: {health}", instance.ui);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Median seconds of `runs` GETs of `url`, and the last body.
async fn timed(
    http: &reqwest::Client,
    url: &str,
    runs: usize,
) -> anyhow::Result<(f64, serde_json::Value)> {
    let mut times = Vec::new();
    let mut body = serde_json::Value::Null;
    for _ in 0..runs {
        let start = Instant::now();
        body = get_json(http, url).await?;
        times.push(start.elapsed().as_secs_f64());
    }
    Ok((median(times), body))
}

/// What every deployment must agree on: the run's size, its edges with their calls, errors
/// and tests, the coverage and the failures.
fn essentials(report: &serde_json::Value) -> serde_json::Value {
    let mut edges: Vec<String> = report["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{} -> {}: {} calls, {} errors, {} tests",
                e["caller"], e["callee"], e["calls"], e["errors"], e["tests"]
            )
        })
        .collect();
    edges.sort();
    serde_json::json!({
        "spans": report["run"]["spans"],
        "traces": report["run"]["traces"],
        "tests": report["run"]["tests"],
        "edges": edges,
        "coverage": report["coverage"]["edges"],
        "failures": report["failures"].as_array().map_or(0, Vec::len),
    })
}

impl Figures {
    fn label(&self) -> String {
        match (self.shared, self.instances) {
            (false, _) => "one process, no --shared-db".to_owned(),
            (true, 1) => "1 instance".to_owned(),
            (true, n) => format!("{n} instances"),
        }
    }
}

struct Figures {
    instances: usize,
    /// With `--shared-db` (else the single process on its own, the baseline).
    shared: bool,
    ingest_rate: f64,
    analysed_rate: f64,
    report_first: f64,
    report_again: f64,
    report_other: Option<f64>,
    peak_mib: f64,
}

async fn deployment(
    http: &reqwest::Client,
    admin: &tokio_postgres::Client,
    args: &Args,
    n: usize,
    shared: bool,
    reference: &mut Option<serde_json::Value>,
) -> anyhow::Result<Figures> {
    let db = format!("tracecov_bench_{}_{n}", std::process::id());
    let db_url = if shared {
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .context("creating the benchmark's database")?;
        Some(database_url(&args.admin_url, &db)?)
    } else {
        None
    };
    let work = TempDir(std::env::temp_dir().join(format!(
        "tracecov-bench-shared-{}-{n}-{shared}",
        std::process::id()
    )));
    let instances = (0..n)
        .map(|i| Instance::start(&work.0.join(format!("instance{i}")), db_url.as_deref()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for instance in &instances {
        served::wait_ready(http, &instance.ui).await?;
    }
    let bodies = exports(args.spans, n);

    let start = Instant::now();
    futures::future::try_join_all(instances.iter().zip(&bodies).map(|(instance, bodies)| {
        served::send_bodies(
            http,
            &instance.otlp,
            "application/x-protobuf",
            bodies,
            IN_FLIGHT,
        )
    }))
    .await?;
    let ingest_s = start.elapsed().as_secs_f64();
    futures::future::try_join_all(instances.iter().map(|i| done(http, i))).await?;
    let analysed_s = start.elapsed().as_secs_f64();

    let first = &instances[0];
    let url = format!("{}/api/runs/{RUN}/report", first.ui);
    let (report_first, report) = timed(http, &url, 1).await?;
    let (report_again, _) = timed(http, &url, args.runs).await?;
    // Another instance's first answer (one instance: none to ask).
    let (report_other, other) = match instances.last() {
        Some(last) if n > 1 => {
            let url = format!("{}/api/runs/{RUN}/report", last.ui);
            let (t, r) = timed(http, &url, 1).await?;
            (Some(t), r)
        }
        _ => (None, report.clone()),
    };
    let mine = essentials(&report);
    if essentials(&other) != mine {
        bail!("instances of one deployment answer different reports");
    }
    match reference {
        None => *reference = Some(mine),
        Some(r) if *r != mine => bail!(
            "{n} instances answer a different report than the first deployment:\n{mine}\nnot\n{r}"
        ),
        Some(_) => {}
    }
    let peak_mib = instances
        .iter()
        .map(|i| served::peak_mib(i.child.id()))
        .fold(0.0, f64::max);
    drop(instances);
    if shared {
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .await
            .context("dropping the benchmark's database")?;
    }
    Ok(Figures {
        instances: n,
        shared,
        ingest_rate: args.spans as f64 / ingest_s,
        analysed_rate: args.spans as f64 / analysed_s,
        report_first,
        report_again,
        report_other,
        peak_mib,
    })
}

/// `url` with its database replaced by `db`.
pub(super) fn database_url(url: &str, db: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let Some(rest) = base
        .strip_prefix("postgres://")
        .or(base.strip_prefix("postgresql://"))
    else {
        bail!("--shared-db: a postgres:// URL, got {url}");
    };
    let host = rest.split_once('/').map_or(rest, |(h, _)| h);
    Ok(match query {
        Some(q) => format!("postgres://{host}/{db}?{q}"),
        None => format!("postgres://{host}/{db}"),
    })
}

/// A connection to the benchmark's PostgreSQL as the user that may create databases, and the
/// HTTP client that talks to the instances.
pub(super) async fn connect(
    admin_url: &str,
) -> anyhow::Result<(tokio_postgres::Client, reqwest::Client)> {
    let (config, tls) = crate::shared::parse_url(admin_url).map_err(anyhow::Error::msg)?;
    let (admin, connection) = config
        .connect(tls.connector().map_err(anyhow::Error::msg)?)
        .await
        .with_context(|| format!("connecting to {admin_url}"))?;
    tokio::spawn(connection);
    let http = crate::tls::Trust::default().client_builder().build()?;
    Ok((admin, http))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (admin, http) = connect(&args.admin_url).await?;
    println!(
        "shared benchmark: a generated run of {} spans over OTLP/HTTP split by trace id over 1 to {} tracecov serve --shared-db instances (settle {SETTLE}), one PostgreSQL",
        args.spans, args.instances
    );
    let mut reference = None;
    let mut figures = Vec::new();
    // The baseline first: one process without --shared-db, then the deployments.
    let plans = std::iter::once((1, false)).chain((1..=args.instances).map(|n| (n, true)));
    for (n, shared) in plans {
        let f = deployment(&http, &admin, &args, n, shared, &mut reference).await?;
        println!(
            "{}: durable ingest {:.0} spans/s; ingest through results{} {:.0} spans/s; report {:.3} s first, {:.3} s again{}; peak memory of an instance {:.0} MiB",
            f.label(),
            f.ingest_rate,
            if shared { " in PostgreSQL" } else { "" },
            f.analysed_rate,
            f.report_first,
            f.report_again,
            f.report_other
                .map(|t| format!(", {t:.3} s first from instance {n}"))
                .unwrap_or_default(),
            f.peak_mib
        );
        figures.push(f);
    }
    // Ratios to one instance of a deployment; the single process's beside them.
    let one = figures.iter().find(|f| f.shared).unwrap_or(&figures[0]);
    println!();
    println!(
        "| | durable ingest | ratio to one instance | ingest → results stored (and in PostgreSQL) | ratio to one instance | report first / again / first from another instance | peak memory of an instance |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for f in &figures {
        println!(
            "| {} | {:.0} spans/s | {:.2} | {:.0} spans/s | {:.2} | {:.3} s / {:.3} s / {} | {:.0} MiB |",
            f.label(),
            f.ingest_rate,
            f.ingest_rate / one.ingest_rate,
            f.analysed_rate,
            f.analysed_rate / one.analysed_rate,
            f.report_first,
            f.report_again,
            f.report_other
                .map_or("–".to_owned(), |t| format!("{t:.3} s")),
            f.peak_mib
        );
    }
    Ok(())
}
