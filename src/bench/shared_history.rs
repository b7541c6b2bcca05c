//! `tracecov bench shared --history N`: history across runs asked of a deployment (DESIGN,
//! "History across runs" and "Many instances, one deployment"). A suite of N generated runs
//! (`bench::history`'s: some tests fail in every other run, one in every run) is sent over
//! OTLP/HTTP to one `tracecov serve` without `--shared-db` (the baseline) and to a deployment
//! of `--instances` `serve --shared-db` children on one PostgreSQL, each trace to the instance a
//! hash of its id names. Once every run is settled everywhere, the history questions are timed
//! as users ask them, over the JSON API: `flaky` over the suite's last N runs, an edge's trend
//! (the history page's data) over them, and `diff` of the last run against the one before;
//! asked of the single process, of the deployment's first instance and of its last, first and
//! again (the median of `--runs`). Ratios are to the single process's answer, measured in the
//! same invocation. Every instance must answer what the single process answers.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;

use super::analysis::{generate, median};
use super::history::{SUITE, failing_spans, run_name, run_spans};
use super::shared::{EXPORT, IN_FLIGHT, Instance, database_url, encode, get_json, route};

pub struct Args {
    pub admin_url: String,
    /// Runs in the suite.
    pub runs: usize,
    /// Spans in each run.
    pub spans: usize,
    pub instances: usize,
    /// Times each question is asked again; the median is reported.
    pub repeat: usize,
}

/// One run's exports: for the single process all of them, and for each instance its share.
struct RunExports {
    whole: Vec<Bytes>,
    parts: Vec<Vec<Bytes>>,
}

/// The suite's exports, run by run.
fn exports(runs: usize, spans: usize, instances: usize) -> Vec<RunExports> {
    let base = generate(spans);
    let steady = vec![format!("test_{}", super::history::STEADY)];
    let mut both: Vec<String> = super::history::ALTERNATING
        .map(|t| format!("test_{t}"))
        .collect();
    both.extend(steady.iter().cloned());
    let (fail_odd, fail_even) = (failing_spans(&base, &both), failing_spans(&base, &steady));
    (0..runs)
        .map(|k| {
            let fail = if k % 2 == 1 { &fail_odd } else { &fail_even };
            let spans = run_spans(&base, k, fail);
            let whole = spans.chunks(EXPORT).map(encode).collect();
            let mut split = vec![Vec::new(); instances];
            for s in spans {
                split[route(&s, instances)].push(s);
            }
            let parts = split
                .iter()
                .map(|share| share.chunks(EXPORT).map(encode).collect())
                .collect();
            RunExports { whole, parts }
        })
        .collect()
}

/// Waits until every run of the suite has no trace pending on `ui` and, in a deployment, the
/// instance has published everything and assigned every trace.
async fn settled(http: &reqwest::Client, ui: &str, runs: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let health = get_json(http, &format!("{ui}/api/health")).await?;
        let db = &health["shared_db"];
        let mut done = db.is_null()
            || (db["status"] == "ok" && db["unpublished"] == 0 && db["unassigned"] == 0);
        for k in 0..runs {
            if !done {
                break;
            }
            let run = get_json(http, &format!("{ui}/api/runs/{}", run_name(k))).await;
            done = run.is_ok_and(|r| r["pending_traces"].as_u64() == Some(0));
        }
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{ui} not settled after an hour: {health}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The first answer's time, the median of `repeat` more, and the answer.
async fn timed(
    http: &reqwest::Client,
    url: &str,
    repeat: usize,
) -> anyhow::Result<(f64, f64, serde_json::Value)> {
    let start = Instant::now();
    let body = get_json(http, url).await?;
    let first = start.elapsed().as_secs_f64();
    let mut again = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let start = Instant::now();
        get_json(http, url).await?;
        again.push(start.elapsed().as_secs_f64());
    }
    Ok((first, median(again), body))
}

/// An answer without what differs legitimately between servers: run ids and times (each server
/// made its own runs) and the host in links.
fn comparable(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => map
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "id" | "run" | "link" | "last_failed_run" | "created_ns"
                )
            })
            .map(|(k, v)| (k.clone(), comparable(v)))
            .collect(),
        serde_json::Value::Array(items) => items.iter().map(comparable).collect(),
        other => other.clone(),
    }
}

struct Timings {
    label: String,
    /// (question, first, again) in seconds.
    answers: Vec<(&'static str, f64, f64)>,
}

async fn ask(
    http: &reqwest::Client,
    label: String,
    ui: &str,
    questions: &[(&'static str, String)],
    repeat: usize,
    want: &mut Vec<serde_json::Value>,
) -> anyhow::Result<Timings> {
    let mut answers = Vec::new();
    for (i, (what, path)) in questions.iter().enumerate() {
        let (first, again, body) = timed(http, &format!("{ui}{path}"), repeat).await?;
        let body = comparable(&body);
        match want.get(i) {
            None => want.push(body),
            Some(w) if *w != body => {
                bail!("{label} answers {what} unlike the single process:\n{body}\nnot\n{w}")
            }
            Some(_) => {}
        }
        println!(
            "{label}: {what} {:.1} ms first, {:.1} ms again",
            first * 1000.0,
            again * 1000.0
        );
        answers.push((*what, first, again));
    }
    Ok(Timings { label, answers })
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (admin, http) = super::shared::connect(&args.admin_url).await?;
    let n = args.instances.max(2);
    let suite = exports(args.runs, args.spans, n);
    println!(
        "shared history benchmark: a suite of {} runs of about {} spans ({} exports), to one tracecov serve without --shared-db and to {n} instances of a deployment on one PostgreSQL, split by trace id",
        args.runs,
        args.spans,
        suite.iter().map(|r| r.whole.len()).sum::<usize>()
    );
    let db = format!("tracecov_bench_history_{}", std::process::id());
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .context("creating the benchmark's database")?;
    let db_url = database_url(&args.admin_url, &db)?;
    let work = super::served::TempDir(std::env::temp_dir().join(format!(
        "tracecov-bench-shared-history-{}",
        std::process::id()
    )));
    let single = Instance::start(&work.0.join("single"), None)?;
    let instances = (0..n)
        .map(|i| Instance::start(&work.0.join(format!("instance{i}")), Some(&db_url)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for i in std::iter::once(&single).chain(&instances) {
        super::served::wait_ready(&http, &i.ui).await?;
    }
    let started = Instant::now();
    // Run by run, everywhere, as a CI suite's runs follow each other: a run's first spans
    // reach every server before the next run's, so each server makes the runs in the same
    // order and the window's order (`flaky`'s flips) is the same everywhere.
    for run in &suite {
        let mut sends = vec![super::served::send_bodies(
            &http,
            &single.otlp,
            "application/x-protobuf",
            &run.whole,
            IN_FLIGHT,
        )];
        for (i, bodies) in instances.iter().zip(&run.parts) {
            sends.push(super::served::send_bodies(
                &http,
                &i.otlp,
                "application/x-protobuf",
                bodies,
                IN_FLIGHT,
            ));
        }
        futures::future::try_join_all(sends).await?;
    }
    for i in std::iter::once(&single).chain(&instances) {
        settled(&http, &i.ui, args.runs).await?;
    }
    println!(
        "sent and settled everywhere in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let last = args.runs;
    let (base, newest) = (run_name(last.saturating_sub(2)), run_name(last - 1));
    let flaky_path = format!("/api/flaky?suite={SUITE}&last={last}");
    let hops = get_json(&http, &format!("{}{flaky_path}", single.ui)).await?;
    let Some(hop) = hops.as_array().and_then(|h| h.first()).cloned() else {
        bail!("the suite has no flaky hop: {hops}");
    };
    let (caller, callee) = (
        hop["caller"].as_str().unwrap_or_default(),
        hop["callee"].as_str().unwrap_or_default(),
    );
    let questions = [
        ("flaky", flaky_path.clone()),
        (
            "history page (an edge's trend)",
            format!("/api/history?caller={caller}&callee={callee}&suite={SUITE}&last={last}"),
        ),
        ("diff", format!("/api/diff?base={base}&run={newest}")),
    ];
    let mut want = Vec::new();
    let mut all = vec![
        ask(
            &http,
            "one process".to_owned(),
            &single.ui,
            &questions,
            args.repeat,
            &mut want,
        )
        .await?,
    ];
    for (i, instance) in [(0, &instances[0]), (n - 1, &instances[n - 1])] {
        all.push(
            ask(
                &http,
                format!("instance {}", i + 1),
                &instance.ui,
                &questions,
                args.repeat,
                &mut want,
            )
            .await?,
        );
    }
    let kept: i64 = {
        let (config, tls) = crate::shared::parse_url(&db_url).map_err(anyhow::Error::msg)?;
        let (client, connection) = config
            .connect(tls.connector().map_err(anyhow::Error::msg)?)
            .await?;
        tokio::spawn(connection);
        client
            .query_one("SELECT count(*) FROM run_digests", &[])
            .await?
            .get(0)
    };
    println!("history records kept in PostgreSQL: {kept}");
    println!();
    println!(
        "| question over {last} runs | server | first | again (median of {}) | again ÷ one process |",
        args.repeat
    );
    println!("|---|---|---:|---:|---:|");
    for (q, (what, _)) in questions.iter().enumerate() {
        let base_again = all[0].answers[q].2;
        for t in &all {
            let (_, first, again) = t.answers[q];
            println!(
                "| {what} | {} | {:.1} ms | {:.1} ms | {:.2} |",
                t.label,
                first * 1000.0,
                again * 1000.0,
                again / base_again
            );
        }
    }
    drop(instances);
    drop(single);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .context("dropping the benchmark's database")?;
    Ok(())
}
