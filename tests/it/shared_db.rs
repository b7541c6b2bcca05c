//! `serve --shared-db`: instances of one deployment sharing a real PostgreSQL (a throwaway
//! cluster, `pg.rs`). Each test skips, saying so once, only where PostgreSQL is not installed.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tracecov::config::SharedDbConfig;
use tracecov::shared::{MIGRATIONS, SharedDb};

use crate::common::{PATIENCE, Running, TestServer, spawn_serve};
use crate::pg::PgCluster;

fn shared(url: &str, instance: &str) -> SharedDbConfig {
    SharedDbConfig {
        url: tracecov::config::Secret(url.to_owned()),
        instance_url: instance.to_owned(),
        // Short, so that a database that came back is noticed soon.
        heartbeat_every: Duration::from_millis(200),
    }
}

/// One span of a new trace as OTLP/JSON, its resource carrying `attrs`.
fn export(trace: &str, attrs: &[(&str, &str)]) -> String {
    let mut resource = vec![json!({"key": "service.name", "value": {"stringValue": "shop"}})];
    resource.extend(
        attrs
            .iter()
            .map(|(k, v)| json!({"key": k, "value": {"stringValue": v}})),
    );
    json!({"resourceSpans": [{
        "resource": {"attributes": resource},
        "scopeSpans": [{"spans": [{
            "traceId": trace, "spanId": "7000000000000001", "name": "work", "kind": 2,
            "startTimeUnixNano": "1000", "endTimeUnixNano": "2000"
        }]}]
    }]})
    .to_string()
}

/// Waits until `check` returns something, failing after `PATIENCE` with `what`.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_when_instances_start_together() {
    let Some(pg) = PgCluster::shared() else {
        return;
    };
    let url = pg.database();
    let configs: Vec<SharedDbConfig> = (0..4)
        .map(|i| shared(&url, &format!("http://instance-{i}.test:4320")))
        .collect();
    let dbs = futures::future::try_join_all(configs.iter().map(|c| SharedDb::connect(c, None)))
        .await
        .unwrap();
    let mut applied: Vec<i32> = dbs
        .iter()
        .flat_map(|d| d.migrations_applied().to_vec())
        .collect();
    applied.sort();
    let known: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(
        applied, known,
        "each migration applied by exactly one instance"
    );
    assert_eq!(
        pg.psql_in(
            &url,
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM tracecov_migrations"
        ),
        known
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    assert_eq!(pg.psql_in(&url, "SELECT count(*) FROM instances"), "4");
    // A later start finds everything applied.
    let again = SharedDb::connect(&configs[0], None).await.unwrap();
    assert!(again.migrations_applied().is_empty());
    assert!(again.migrate().await.unwrap().is_empty());
}

/// Kills a `tracecov serve` child however the test ends.
struct Killed(Running);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_racing_to_open_the_same_ci_run_open_one() {
    let Some(pg) = PgCluster::shared() else {
        return;
    };
    let url = pg.database();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let instances: Vec<Killed> = dirs
        .iter()
        .zip(["http://a.test:4320", "http://b.test:4320"])
        .map(|(dir, me)| {
            Killed(spawn_serve(
                dir.path(),
                &["--shared-db", &url, "--instance-url", me],
            ))
        })
        .collect();
    let http = crate::common::http();
    let post = |to: &Running, body: String| {
        http.post(format!("{}/v1/traces", to.http))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // Each round is a new pipeline run whose first spans (one trace from each of two parallel
    // jobs) reach the two instances at once.
    const ROUNDS: usize = 8;
    for round in 0..ROUNDS {
        let ci = format!("pipeline-{round}");
        let attrs = [("cicd.pipeline.run.id", ci.as_str())];
        let (a, b) = tokio::join!(
            post(
                &instances[0].0,
                export(&format!("{round:02x}{}", "a".repeat(30)), &attrs)
            ),
            post(
                &instances[1].0,
                export(&format!("{round:02x}{}", "b".repeat(30)), &attrs)
            ),
        );
        assert_eq!(a.unwrap().status(), 200);
        assert_eq!(b.unwrap().status(), 200);
    }
    let assigned = || pg.psql_in(&url, "SELECT count(*) FROM trace_runs");
    eventually("every trace assigned in the shared database", async || {
        (assigned() == (2 * ROUNDS).to_string()).then_some(())
    })
    .await;
    assert_eq!(
        pg.psql_in(
            &url,
            "SELECT count(*) FROM runs WHERE ci_run_id LIKE 'pipeline-%'"
        ),
        ROUNDS.to_string(),
        "one run per pipeline run"
    );
    assert_eq!(
        pg.psql_in(
            &url,
            "SELECT count(*) FROM (SELECT run_id FROM trace_runs GROUP BY run_id
             HAVING count(*) = 2) both_jobs"
        ),
        ROUNDS.to_string(),
        "both jobs' traces in each run"
    );
    // Both instances name the same run for each pipeline run.
    for round in 0..ROUNDS {
        let mut ids = Vec::new();
        for i in &instances {
            let run: Value = http
                .get(format!("{}/api/runs/pipeline-{round}", i.0.ui))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            // The deployment's traces of the run: one through each instance.
            assert_eq!(run["traces"], 2, "{run}");
            ids.push(run["id"].clone());
        }
        assert_eq!(ids[0], ids[1], "pipeline-{round}");
    }
}

async fn health(server: &TestServer) -> Value {
    let (status, body) = server.get_json("/api/health").await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_degraded_while_postgres_is_down_and_ok_after_it_returns() {
    // A cluster of its own: this test stops it.
    let Some(pg) = PgCluster::start() else {
        return;
    };
    let url = pg.database();
    let server = TestServer::start_with(|c| {
        c.shared = Some(shared(&url, "http://a.test:4320"));
        c.advertise_otlp = Some("http://collector.test:4318".into());
    })
    .await;
    let h = health(&server).await;
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["shared_db"]["status"], "ok", "{h}");
    assert_eq!(h["advertise_otlp"], "http://collector.test:4318");
    assert!(!h.to_string().contains("postgres://"), "no URL: {h}");
    assert!(server.metrics().await.contains("tracecov_shared_db_up 1"));

    let pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    let h = eventually("health degraded", async || {
        let h = health(&server).await;
        (h["status"] == "degraded").then_some(h)
    })
    .await;
    assert_eq!(h["shared_db"]["status"], "degraded", "{h}");
    assert!(
        h["shared_db"]["problem"]
            .as_str()
            .is_some_and(|p| !p.is_empty()),
        "{h}"
    );
    assert!(server.metrics().await.contains("tracecov_shared_db_up 0"));
    // Meanwhile exports are acknowledged: their spans are durable here.
    let resp = server
        .post_otlp(
            "application/json",
            export(
                "5cf7651916cd43dd8448eb211c80319c",
                &[("cicd.pipeline.run.id", "during-outage")],
            )
            .into_bytes(),
            false,
        )
        .await;
    assert_eq!(resp.status(), 200);

    let pg = tokio::task::spawn_blocking(move || {
        pg.restart();
        pg
    })
    .await
    .unwrap();
    eventually("health ok again", async || {
        (health(&server).await["status"] == "ok").then_some(())
    })
    .await;
    // The trace that arrived meanwhile gets its run at the next commit.
    let resp = server
        .post_otlp(
            "application/json",
            export("6cf7651916cd43dd8448eb211c80319c", &[]).into_bytes(),
            false,
        )
        .await;
    assert_eq!(resp.status(), 200);
    eventually("the waiting trace assigned", async || {
        let (status, run) = server.get_json("/api/runs/during-outage").await;
        (status == 200 && run["traces"] == 1).then_some(())
    })
    .await;
    assert_eq!(
        pg.psql_in(
            &url,
            "SELECT count(*) FROM runs WHERE ci_run_id = 'during-outage'"
        ),
        "1"
    );
    server.stop().await;
}

#[test]
fn shared_db_flags_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let serve = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tracecov"))
            .args(["serve", "--data", data])
            .args(extra)
            .output()
            .unwrap()
    };
    for (flags, says) in [
        (
            &["--shared-db", "postgres://u@127.0.0.1:1/d"][..],
            "--shared-db needs --instance-url",
        ),
        (
            &["--instance-url", "http://a:4320"][..],
            "give --shared-db too",
        ),
        (
            &[
                "--shared-db",
                "mysql://u@h/d",
                "--instance-url",
                "http://a:4320",
            ][..],
            "must be a PostgreSQL URL",
        ),
        (
            &[
                "--shared-db",
                "postgres://u@h/d",
                "--instance-url",
                "a:4320",
            ][..],
            "--instance-url must be an http:// or https:// URL",
        ),
        (
            &["--advertise-otlp", "collector:4318"][..],
            "--advertise-otlp must be an http:// or https:// URL",
        ),
        // Nothing listens on port 1: the instance does not start without its deployment.
        (
            &[
                "--shared-db",
                "postgres://u@127.0.0.1:1/d",
                "--instance-url",
                "http://a:4320",
                "--grpc-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
                "--ui-addr",
                "127.0.0.1:0",
            ][..],
            "cannot join the shared database",
        ),
    ] {
        let out = serve(flags);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?}");
        assert!(err.contains(says), "{flags:?}: {err}");
    }
}

/// `tracecov run --server` against an instance that advertises the deployment's OTLP endpoint
/// hands that endpoint to its command, not the instance's own receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_against_a_server_hands_its_command_the_advertised_otlp_endpoint() {
    // The command only reads its environment: nothing needs to listen there.
    let advertised = "http://collector.test:4318";
    let server = TestServer::start_with(|c| {
        c.advertise_otlp = Some(advertised.into());
        c.settle = Duration::from_millis(300);
    })
    .await;
    let out_file = server.dir.path().join("endpoint.txt");
    let (ui, file) = (server.addrs.ui_url(), out_file.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tracecov"))
            .args(["run", "--name", "advertised", "--server", &ui, "--"])
            .args([
                "sh",
                "-c",
                "printf %s \"$OTEL_EXPORTER_OTLP_ENDPOINT\" > \"$1\"",
                "sh",
            ])
            .arg(&file)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let endpoint = std::fs::read_to_string(&out_file).unwrap_or_else(|e| {
        panic!(
            "the command did not run ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(endpoint, advertised);
    server.stop().await;
}

/// The single open run and automatic runs are the deployment's: a run opened through one
/// instance takes the traces another receives, and test traces reaching two instances at once,
/// with no run open, open one automatic run between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_run_and_automatic_runs_span_instances() {
    let Some(pg) = PgCluster::shared() else {
        return;
    };
    let url = pg.database();
    let a = TestServer::start_with(|c| c.shared = Some(shared(&url, "http://a.test:4320"))).await;
    let b = TestServer::start_with(|c| c.shared = Some(shared(&url, "http://b.test:4320"))).await;
    let opened = a.open_run(json!({"name": "nightly"})).await;
    let resp = b
        .post_otlp(
            "application/json",
            export("11f7651916cd43dd8448eb211c80319c", &[]).into_bytes(),
            false,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let (status, on_b) = b.get_json("/api/runs/nightly").await;
    assert_eq!(status, 200, "{on_b}");
    assert_eq!(on_b["id"], opened["id"], "b filed its trace under a's run");
    assert_eq!(on_b["traces"], 1);

    let close = a
        .http
        .post(a.api(&format!(
            "/api/runs/{}/close",
            opened["id"].as_str().unwrap()
        )))
        .header("x-tracecov", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(close.status(), 200);
    let test_trace = |trace: &str| {
        json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "tests"}}]},
            "scopeSpans": [{"spans": [{
                "traceId": trace, "spanId": "7000000000000001", "name": "test_checkout",
                "kind": 1, "startTimeUnixNano": "1000", "endTimeUnixNano": "2000",
                "attributes": [{"key": "test.case.name", "value": {"stringValue": "test_checkout"}}]
            }]}]
        }]})
        .to_string()
        .into_bytes()
    };
    let (ra, rb) = tokio::join!(
        a.post_otlp(
            "application/json",
            test_trace("21f7651916cd43dd8448eb211c80319c"),
            false
        ),
        b.post_otlp(
            "application/json",
            test_trace("31f7651916cd43dd8448eb211c80319c"),
            false
        ),
    );
    assert_eq!((ra.status().as_u16(), rb.status().as_u16()), (200, 200));
    eventually("both test traces assigned", async || {
        (pg.psql_in(&url, "SELECT count(*) FROM trace_runs") == "3").then_some(())
    })
    .await;
    assert_eq!(
        pg.psql_in(
            &url,
            "SELECT count(*) || ' ' || count(DISTINCT t.run_id) FROM trace_runs t
             JOIN runs r ON r.id = t.run_id WHERE r.kind = 'auto'"
        ),
        "2 1",
        "one automatic run holds both"
    );
    a.stop().await;
    b.stop().await;
}

/// A database host that hangs (connections open, nothing answers) is found out and reported
/// like one that is down, within the bound on a call, and exports go on being acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_database_turns_health_degraded_and_back() {
    let Some(pg) = PgCluster::start() else {
        return;
    };
    let url = pg.database();
    let server =
        TestServer::start_with(|c| c.shared = Some(shared(&url, "http://a.test:4320"))).await;
    assert_eq!(health(&server).await["status"], "ok");
    pg.freeze();
    let h = eventually("health degraded while the database hangs", async || {
        let h = health(&server).await;
        (h["status"] == "degraded").then_some(h)
    })
    .await;
    assert!(
        h["shared_db"]["problem"]
            .as_str()
            .is_some_and(|p| p.contains("did not answer") || p.contains("unreachable")),
        "{h}"
    );
    let resp = server
        .post_otlp(
            "application/json",
            export(
                "4df7651916cd43dd8448eb211c80319c",
                &[("cicd.pipeline.run.id", "while-hung")],
            )
            .into_bytes(),
            false,
        )
        .await;
    assert_eq!(
        resp.status(),
        200,
        "acknowledged: the spans are durable here"
    );
    pg.thaw();
    eventually("health ok again", async || {
        (health(&server).await["status"] == "ok").then_some(())
    })
    .await;
    server.stop().await;
}

/// An instance killed with SIGKILL while exports stream in, then started again on the same data
/// directory: every export it acknowledged is still there, and every acknowledged trace's
/// results and place reach PostgreSQL (from the outbox its store kept), with nothing left
/// waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_during_ingest_loses_nothing_acknowledged_and_publishes_it_after_restart()
 {
    use crate::common::{request, trace_hex};
    use prost::Message;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let Some(pg) = PgCluster::shared() else {
        return;
    };
    let url = pg.database();
    let dir = tempfile::tempdir().unwrap();
    const ME: &str = "http://killed.test:4320";
    const PER_EXPORT: usize = 20;
    let flags = [
        "--shared-db",
        &url,
        "--instance-url",
        ME,
        "--settle",
        "300ms",
        "--heartbeat",
        "200ms",
    ];
    let first = spawn_serve(dir.path(), &flags);

    // A sender exporting one new trace at a time until told to stop, keeping the seeds whose
    // export was acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (stop, endpoint) = (stop.clone(), format!("{}/v1/traces", first.http));
        tokio::spawn(async move {
            let http = crate::common::http();
            let mut acknowledged = Vec::new();
            let mut seed = 0;
            while !stop.load(Ordering::Relaxed) {
                let sent = http
                    .post(&endpoint)
                    .header("content-type", "application/x-protobuf")
                    .body(request("killed", seed, PER_EXPORT).encode_to_vec())
                    .send()
                    .await;
                if sent.is_ok_and(|r| r.status().is_success()) {
                    acknowledged.push(seed);
                }
                seed += 1;
            }
            acknowledged
        })
    };
    // Killed mid-stream, once a few exports went through and some results were published.
    eventually("some results published before the kill", async || {
        let n: u64 = pg
            .psql_in(&url, "SELECT count(*) FROM trace_results")
            .parse()
            .ok()?;
        (n >= 3).then_some(())
    })
    .await;
    let mut first = Killed(first);
    first.0.child.kill().unwrap();
    first.0.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    let acknowledged = sender.await.unwrap();
    assert!(acknowledged.len() >= 3, "{acknowledged:?}");

    let second = Killed(spawn_serve(dir.path(), &flags));
    let http = crate::common::http();
    for seed in &acknowledged {
        let resp = http
            .get(format!("{}/api/traces/{}", second.0.ui, trace_hex(*seed)))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "acknowledged trace {seed} was lost");
        let trace: Value = resp.json().await.unwrap();
        assert_eq!(trace["spans"].as_array().unwrap().len(), PER_EXPORT);
    }
    let want: std::collections::BTreeSet<String> =
        acknowledged.iter().map(|s| trace_hex(*s)).collect();
    let published = |table: &str| {
        let rows = pg.psql_in(
            &url,
            &format!("SELECT encode(trace_id, 'hex') FROM {table} WHERE instance = '{ME}'"),
        );
        rows.lines()
            .map(str::to_owned)
            .collect::<std::collections::BTreeSet<String>>()
    };
    eventually(
        "every acknowledged trace's results in PostgreSQL",
        async || {
            let (results, places) = (published("trace_results"), published("trace_instances"));
            (want.is_subset(&results) && want.is_subset(&places)).then_some(())
        },
    )
    .await;
    let h = eventually("nothing left to publish", async || {
        let h: Value = http
            .get(format!("{}/api/health", second.0.ui))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (h["shared_db"]["unpublished"] == 0 && h["shared_db"]["unassigned"] == 0).then_some(h)
    })
    .await;
    assert_eq!(h["shared_db"]["status"], "ok", "{h}");
}

/// `--history-age` on an instance of a deployment removes an expired run from the deployment
/// too (its row, its trace assignments and every instance's published share), so no instance
/// copies it back from PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_the_history_age_leaves_the_shared_database() {
    let Some(pg) = PgCluster::shared() else {
        return;
    };
    let url = pg.database();
    let a = TestServer::start_with(|c| {
        c.shared = Some(shared(&url, "http://a.test:4320"));
        c.settle = Duration::from_millis(200);
        c.writer.retention.max_history_age = Duration::from_secs(3);
        c.writer.retention_every = Duration::from_millis(200);
    })
    .await;
    let b = TestServer::start_with(|c| c.shared = Some(shared(&url, "http://b.test:4320"))).await;
    let send = async |trace: &str, run: &str| {
        let resp = a
            .http
            .post(a.traces_url())
            .header("content-type", "application/json")
            .body(export(trace, &[("tracecov.run.id", run)]))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    };
    // The short-lived run's trace links to another trace: that link leaves PostgreSQL with it.
    let linked: Value = serde_json::from_str(&export(
        "0bf7651916cd43dd8448eb211c80319c",
        &[("tracecov.run.id", "short-lived")],
    ))
    .unwrap();
    let mut linked = linked;
    linked["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["links"] =
        json!([{"traceId": "0cf7651916cd43dd8448eb211c80319c", "spanId": "7000000000000009"}]);
    let resp = a
        .http
        .post(a.traces_url())
        .header("content-type", "application/json")
        .body(linked.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let count = |sql: &str| pg.psql_in(&url, sql);
    let links_from_short_lived =
        "SELECT count(*) FROM trace_links WHERE from_trace = '\\x0bf7651916cd43dd8448eb211c80319c'";
    let run = eventually("the run and its share in PostgreSQL", async || {
        let id = count("SELECT id FROM runs WHERE name = 'short-lived'");
        (!id.is_empty()
            && count(&format!(
                "SELECT count(*) FROM trace_runs WHERE run_id = '{id}'"
            )) == "1"
            && count(&format!(
                "SELECT count(*) FROM instance_rollups WHERE run_id = '{id}'"
            )) == "1"
            && count(links_from_short_lived) == "1")
            .then_some(id)
    })
    .await;
    // Retention runs on the writer, between exports: the deployment keeps receiving others.
    let mut seq = 0u32;
    eventually("the expired run gone from PostgreSQL", async || {
        seq += 1;
        send(&format!("{seq:032x}"), "later").await;
        (count("SELECT count(*) FROM runs WHERE name = 'short-lived'") == "0"
            && count(&format!(
                "SELECT count(*) FROM trace_runs WHERE run_id = '{run}'"
            )) == "0"
            && count(&format!(
                "SELECT count(*) FROM instance_rollups WHERE run_id = '{run}'"
            )) == "0"
            && count(links_from_short_lived) == "0")
            .then_some(())
    })
    .await;
    for server in [&a, &b] {
        let (status, body) = server.get_json("/api/runs/short-lived").await;
        assert_eq!(status, 404, "{body}");
        let (_, runs) = server.get_json("/api/runs").await;
        assert!(!runs.to_string().contains("short-lived"), "{runs}");
    }
}

/// A trace's explicit run outranks an implicit one whichever instance decides: spans naming
/// `tracecov.run.id` move a trace out of the open run, and spans without it, arriving later at
/// another instance, leave it where it is. Several traces go in one export, so the batch's
/// rows are written together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_run_outranks_an_implicit_one_across_instances() {
    let Some(pg) = PgCluster::shared() else {
        return;
    };
    let url = pg.database();
    let a = TestServer::start_with(|c| c.shared = Some(shared(&url, "http://a.test:4320"))).await;
    let b = TestServer::start_with(|c| c.shared = Some(shared(&url, "http://b.test:4320"))).await;
    let opened = a.open_run(json!({"name": "open"})).await;
    let open = opened["id"].as_str().unwrap().to_owned();
    // Both exports carry three traces; the middle one names its run explicitly on `b`.
    let traces = [
        "41f7651916cd43dd8448eb211c80319c",
        "42f7651916cd43dd8448eb211c80319c",
        "43f7651916cd43dd8448eb211c80319c",
    ];
    let batch = |explicit: Option<&str>| {
        let mut all: Vec<Value> = Vec::new();
        for (i, t) in traces.iter().enumerate() {
            let attrs: Vec<(&str, &str)> = match explicit {
                Some(run) if i == 1 => vec![("tracecov.run.id", run)],
                _ => vec![],
            };
            let one: Value = serde_json::from_str(&export(t, &attrs)).unwrap();
            all.extend(one["resourceSpans"].as_array().unwrap().iter().cloned());
        }
        json!({ "resourceSpans": all }).to_string().into_bytes()
    };
    let assignments = || {
        pg.psql_in(
            &url,
            "SELECT string_agg(run_id || CASE WHEN explicit THEN ':explicit' ELSE '' END, ' '
               ORDER BY trace_id) FROM trace_runs",
        )
    };
    let resp = a.post_otlp("application/json", batch(None), false).await;
    assert_eq!(resp.status(), 200);
    eventually("a's traces filed under the open run", async || {
        (assignments() == format!("{open} {open} {open}")).then_some(())
    })
    .await;

    let resp = b
        .post_otlp("application/json", batch(Some("pinned")), false)
        .await;
    assert_eq!(resp.status(), 200);
    eventually("the explicit run took its trace", async || {
        (assignments() == format!("{open} pinned:explicit {open}")).then_some(())
    })
    .await;

    // The implicit spans again, at `a`: the explicit assignment stands.
    let resp = a.post_otlp("application/json", batch(None), false).await;
    assert_eq!(resp.status(), 200);
    let (status, pinned) = a.get_json("/api/runs/pinned").await;
    assert_eq!(status, 200, "{pinned}");
    assert_eq!(
        assignments(),
        format!("{open} pinned:explicit {open}"),
        "an implicit decision replaced an explicit one"
    );
    a.stop().await;
    b.stop().await;
}
