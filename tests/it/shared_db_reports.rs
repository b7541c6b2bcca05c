//! Any instance of a deployment answers any report (`serve --shared-db`, issue 20): three
//! instances on loopback share a real PostgreSQL (`pg.rs`), the demo shop's suite is sent to
//! them through a test router that does what the OpenTelemetry Collector's load-balancing
//! exporter does (each trace whole to instance hash(trace id) mod 3, over OTLP/HTTP), and a
//! single-process tracecov receives every export too. The report, gate, impact and diff each
//! instance answers must equal the single process's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;
use serde_json::{Value, json};
use tracecov::config::SharedDbConfig;
use tracecov::demo::{self, Fault, ShopConfig};

use crate::common::{PATIENCE, TestServer};
use crate::pg::PgCluster;

const INSTANCES: usize = 3;

/// The one address a deployment's users reach its UI at (a balancer in front of the instances'
/// UIs): every instance links there, so the links in reports and in `/metrics` are the same
/// whichever instance wrote them.
const PUBLIC_URL: &str = "http://tracecov.test";

/// Where the router sends: each instance's OTLP/HTTP base, and the single process's.
struct Targets {
    instances: Vec<String>,
    reference: String,
    http: reqwest::Client,
    /// Exports an instance or the reference refused: the demo would retry, and the test must
    /// know nothing was lost.
    refused: AtomicU64,
}

/// The instance a trace goes to, as the load-balancing exporter's `routing_key: traceID`
/// does: a hash of the trace id over the ring.
fn instance_of(trace_id: &[u8]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in trace_id {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % INSTANCES as u64) as usize
}

impl Targets {
    async fn post(&self, base: &str, signal: &str, body: Vec<u8>) -> bool {
        let sent = self
            .http
            .post(format!("{base}/v1/{signal}"))
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await;
        let ok = sent.is_ok_and(|r| r.status().is_success());
        if !ok {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Sends `whole` to the reference and each instance's part to it, all at once.
    async fn fan_out(&self, signal: &str, whole: Vec<u8>, parts: Vec<Option<Vec<u8>>>) -> bool {
        let mut sends = vec![self.post(&self.reference, signal, whole)];
        for (i, part) in parts.into_iter().enumerate() {
            if let Some(body) = part {
                sends.push(self.post(&self.instances[i], signal, body));
            }
        }
        futures::future::join_all(sends)
            .await
            .into_iter()
            .all(|ok| ok)
    }
}

async fn route_traces(State(t): State<Arc<Targets>>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let Ok(req) = ExportTraceServiceRequest::decode(body.clone()) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut parts: Vec<ExportTraceServiceRequest> = vec![Default::default(); INSTANCES];
    for rs in &req.resource_spans {
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                let part = &mut parts[instance_of(&span.trace_id)];
                // One resource and scope per span: the instance regroups nothing it needs.
                part.resource_spans.push(ResourceSpans {
                    resource: rs.resource.clone(),
                    scope_spans: vec![ScopeSpans {
                        scope: ss.scope.clone(),
                        spans: vec![span.clone()],
                        schema_url: ss.schema_url.clone(),
                    }],
                    schema_url: rs.schema_url.clone(),
                });
            }
        }
    }
    let parts = parts
        .into_iter()
        .map(|p| (!p.resource_spans.is_empty()).then(|| p.encode_to_vec()))
        .collect();
    if t.fan_out("traces", body.to_vec(), parts).await {
        (
            StatusCode::OK,
            ExportTraceServiceResponse::default().encode_to_vec(),
        )
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Vec::new())
    }
}

async fn route_logs(State(t): State<Arc<Targets>>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let Ok(req) = ExportLogsServiceRequest::decode(body.clone()) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut parts: Vec<ExportLogsServiceRequest> = vec![Default::default(); INSTANCES];
    for rl in &req.resource_logs {
        for sl in &rl.scope_logs {
            for record in &sl.log_records {
                parts[instance_of(&record.trace_id)]
                    .resource_logs
                    .push(ResourceLogs {
                        resource: rl.resource.clone(),
                        scope_logs: vec![ScopeLogs {
                            scope: sl.scope.clone(),
                            log_records: vec![record.clone()],
                            schema_url: sl.schema_url.clone(),
                        }],
                        schema_url: rl.schema_url.clone(),
                    });
            }
        }
    }
    let parts = parts
        .into_iter()
        .map(|p| (!p.resource_logs.is_empty()).then(|| p.encode_to_vec()))
        .collect();
    if t.fan_out("logs", body.to_vec(), parts).await {
        (
            StatusCode::OK,
            ExportLogsServiceResponse::default().encode_to_vec(),
        )
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Vec::new())
    }
}

/// Starts the router; returns its OTLP/HTTP base URL.
async fn start_router(targets: Arc<Targets>) -> String {
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(route_traces))
        .route("/v1/logs", axum::routing::post(route_logs))
        .route(
            "/v1/metrics",
            axum::routing::post(|| async { StatusCode::OK }),
        )
        .with_state(targets);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// Three instances of one deployment, the single process, and the router in front.
pub(crate) struct Deployment {
    pub(crate) instances: Vec<TestServer>,
    pub(crate) reference: TestServer,
    targets: Arc<Targets>,
    router: String,
}

async fn deployment(url: &str) -> Deployment {
    deployment_settling(url, None).await
}

/// `deployment`, every server settling traces after `settle` when given (else the default).
pub(crate) async fn deployment_settling(url: &str, settle: Option<Duration>) -> Deployment {
    let mut instances = Vec::new();
    for i in 0..INSTANCES {
        let shared = SharedDbConfig {
            url: tracecov::config::Secret(url.to_owned()),
            instance_url: format!("http://instance-{i}.test:4320"),
            heartbeat_every: Duration::from_millis(200),
        };
        instances.push(
            TestServer::start_with(|c| {
                c.test_services = vec![demo::TEST_SERVICE.into()];
                c.shared = Some(shared);
                c.public_url = Some(PUBLIC_URL.into());
                if let Some(settle) = settle {
                    c.settle = settle;
                }
            })
            .await,
        );
    }
    let reference = TestServer::start_with(|c| {
        c.test_services = vec![demo::TEST_SERVICE.into()];
        c.public_url = Some(PUBLIC_URL.into());
        if let Some(settle) = settle {
            c.settle = settle;
        }
    })
    .await;
    let targets = Arc::new(Targets {
        instances: instances.iter().map(|s| s.addrs.otlp_http_url()).collect(),
        reference: reference.addrs.otlp_http_url(),
        http: crate::common::http(),
        refused: AtomicU64::new(0),
    });
    let router = start_router(targets.clone()).await;
    Deployment {
        instances,
        reference,
        targets,
        router,
    }
}

async fn post_json(server: &TestServer, path: &str, body: Value) -> Value {
    let resp = server
        .http
        .post(server.api(path))
        .header("x-tracecov", "1")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

/// Waits until `check` holds, failing after `PATIENCE` with `what` and the last state seen.
pub(crate) async fn until(what: &str, mut check: impl AsyncFnMut() -> Result<(), String>) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match check().await {
            Ok(()) => return,
            Err(last) => assert!(Instant::now() < deadline, "never happened: {what}: {last}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Deployment {
    pub(crate) fn all(&self) -> impl Iterator<Item = &TestServer> {
        self.instances
            .iter()
            .chain(std::iter::once(&self.reference))
    }

    /// Opens a run named `name` through instance `via` and in the single process.
    async fn open(&self, name: &str, via: usize) {
        let body = json!({"name": name, "suite": "shop"});
        post_json(&self.instances[via], "/api/runs", body.clone()).await;
        post_json(&self.reference, "/api/runs", body).await;
    }

    /// Closes the run named `name` through instance `via` and in the single process.
    async fn close(&self, name: &str, via: usize) {
        let path = format!("/api/runs/{name}/close");
        post_json(&self.instances[via], &path, json!({})).await;
        post_json(&self.reference, &path, json!({})).await;
    }

    /// The demo shop's suite once, exported through the router.
    async fn suite(&self, faults: Vec<Fault>) {
        self.suite_with(faults, Vec::new()).await;
    }

    /// The demo shop's suite once, its resources carrying `resource_attributes` too.
    pub(crate) async fn suite_with(
        &self,
        faults: Vec<Fault>,
        resource_attributes: Vec<(String, String)>,
    ) {
        let shop = demo::start(ShopConfig {
            otlp_endpoint: self.router.clone(),
            faults: faults.clone(),
            resource_attributes,
        })
        .await
        .unwrap();
        let suite = shop.run_suite().await;
        assert_eq!(suite.failed(), demo::expected_failures(&faults));
        // Flushes every span: each export acknowledged by every instance it reached.
        shop.shutdown().await.unwrap();
        assert_eq!(
            self.targets.refused.load(Ordering::Relaxed),
            0,
            "an instance refused an export"
        );
    }

    /// Waits until every trace of `runs` has results on every instance and in the single
    /// process, and each instance has published them and assigned every trace.
    pub(crate) async fn settled(&self, runs: &[&str]) {
        for server in self.all() {
            for run in runs {
                until(&format!("run {run} settled"), async || {
                    let (status, r) = server.get_json(&format!("/api/runs/{run}")).await;
                    match (status, r["pending_traces"].as_u64()) {
                        (200, Some(0)) => Ok(()),
                        _ => Err(format!("{status} {r}")),
                    }
                })
                .await;
            }
        }
        for server in &self.instances {
            until("every result published", async || {
                let (_, h) = server.get_json("/api/health").await;
                let db = &h["shared_db"];
                if db["status"] == "ok" && db["unpublished"] == 0 && db["unassigned"] == 0 {
                    Ok(())
                } else {
                    Err(h.to_string())
                }
            })
            .await;
        }
    }

    /// The answers to compare, from `server`.
    async fn answers(&self, server: &TestServer) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for path in [
            "/api/runs/broken/report",
            "/api/runs/healthy/report",
            "/api/runs/broken/report?baseline=healthy",
            "/api/runs/broken/gate?no_failures=true&min_edge_coverage=90",
            "/api/runs/broken/gate?baseline=healthy&no_new_failures=true&max_coverage_drop=1",
            "/api/runs/broken/impact?changed=payments",
            "/api/runs/latest/impact?changed=inventory,checkout",
            "/api/diff?base=healthy&run=broken",
            "/api/diff?base=previous&run=broken",
        ] {
            let (status, body) = server.get_json(path).await;
            out.push((format!("{path} {status}"), normalized(body)));
        }
        out
    }

    /// Every instance answers what the single process answers.
    async fn assert_same_answers(&self) {
        let want = self.answers(&self.reference).await;
        let report = &want[0].1;
        assert!(
            !report["failures"].as_array().unwrap().is_empty(),
            "the broken run has failures: {report:#}"
        );
        for (i, server) in self.instances.iter().enumerate() {
            let got = self.answers(server).await;
            for ((what, want), (_, got)) in want.iter().zip(&got) {
                assert!(
                    want == got,
                    "instance {i} answers {what} unlike the single process:\n{}",
                    differences(want, got, "")
                );
            }
        }
    }
}

/// An answer without what legitimately differs between a deployment and the single process:
/// run ids (generated by whoever made the run, the database or the single process, so the same
/// run has another id in each: the `id` of `run` and `base`, and where text names a run) and
/// the host and port in links (each server links to its own UI; the path, which names the trace
/// and span, is kept).
pub(crate) fn normalized(mut v: Value) -> Value {
    fn walk(v: &mut Value, key: &str) {
        match v {
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    match (key, k.as_str()) {
                        ("run" | "base", "id") => *child = Value::Null,
                        _ => walk(child, k),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|c| walk(c, key)),
            Value::String(s) => *s = scrubbed(s),
            _ => {}
        }
    }
    walk(&mut v, "");
    v
}

/// `text` with `http://127.0.0.1:PORT` as `http://HOST` and run ids (`r` and 16 hex digits) as
/// `RUN`.
pub(crate) fn scrubbed(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("http://127.0.0.1:") {
            let digits = after.chars().take_while(char::is_ascii_digit).count();
            out.push_str("http://HOST");
            rest = &after[digits..];
            continue;
        }
        let word_start = !out.ends_with(|p: char| p.is_ascii_alphanumeric());
        let hex = rest[c.len_utf8()..]
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .count();
        if c == 'r' && word_start && hex == 16 {
            out.push_str("RUN");
            rest = &rest[17..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Where two JSON values differ, one line per difference (the first 20).
pub(crate) fn differences(want: &Value, got: &Value, at: &str) -> String {
    let mut out = Vec::new();
    fn walk(want: &Value, got: &Value, at: &str, out: &mut Vec<String>) {
        match (want, got) {
            (Value::Object(a), Value::Object(b)) => {
                for k in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
                    walk(
                        a.get(k).unwrap_or(&Value::Null),
                        b.get(k).unwrap_or(&Value::Null),
                        &format!("{at}.{k}"),
                        out,
                    );
                }
            }
            (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    walk(x, y, &format!("{at}[{i}]"), out);
                }
            }
            _ if want != got => out.push(format!("{at}: single process {want}, instance {got}")),
            _ => {}
        }
    }
    walk(want, got, at, &mut out);
    out.truncate(20);
    out.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_db_any_of_three_instances_answers_like_one_process() {
    let Some(pg) = PgCluster::shared() else {
        return;
    };
    let d = deployment(&pg.database()).await;
    // Each run opened through one instance and closed through another.
    d.open("healthy", 0).await;
    d.suite(vec![Fault::None]).await;
    d.close("healthy", 1).await;
    d.open("broken", 2).await;
    d.suite(vec![Fault::Payments500]).await;
    d.close("broken", 0).await;
    d.settled(&["healthy", "broken"]).await;
    // The traces really were spread.
    for (i, server) in d.instances.iter().enumerate() {
        let stats = server.stats().await;
        assert!(stats["spans"].as_u64() > Some(0), "instance {i}: {stats}");
    }
    d.assert_same_answers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_db_results_catch_up_after_postgresql_comes_back() {
    // A private cluster: stopping it must not disturb the other tests.
    let Some(pg) = PgCluster::start() else {
        return;
    };
    let d = deployment(&pg.database()).await;
    d.open("healthy", 0).await;
    d.suite(vec![Fault::None]).await;
    d.close("healthy", 1).await;
    d.open("broken", 2).await;

    pg.stop();
    // The whole suite is exported while the database is down: every export is acknowledged
    // (`suite` checks that no instance refused one), the spans being durable on each instance.
    d.suite(vec![Fault::Payments500]).await;
    for (i, server) in d.instances.iter().enumerate() {
        until(
            &format!("instance {i} says the database is degraded"),
            async || {
                let (status, h) = server.get_json("/api/health").await;
                if status == 200
                    && h["status"] == "degraded"
                    && h["shared_db"]["status"] == "degraded"
                {
                    Ok(())
                } else {
                    Err(h.to_string())
                }
            },
        )
        .await;
    }
    // A question that needs the database says so rather than answering with a part.
    let (status, body) = d.instances[0].get_json("/api/runs/healthy/report").await;
    assert!(status >= 500, "{status} {body}");
    assert!(
        body.to_string().contains("shared database"),
        "{status} {body}"
    );

    pg.restart();
    // The traces that waited get their run once the heartbeat finds the database again, with
    // no new export to prompt it; then the run is closed as usual.
    for (i, server) in d.instances.iter().enumerate() {
        until(
            &format!("instance {i} assigned the waiting traces"),
            async || {
                let (_, h) = server.get_json("/api/health").await;
                let db = &h["shared_db"];
                if db["status"] == "ok" && db["unassigned"] == 0 {
                    Ok(())
                } else {
                    Err(h.to_string())
                }
            },
        )
        .await;
    }
    d.close("broken", 1).await;
    d.settled(&["healthy", "broken"]).await;
    d.assert_same_answers().await;
}

/// A Prometheus scraping `targets` every second, killed when dropped; its base URL.
async fn prometheus(
    dir: &std::path::Path,
    targets: &[std::net::SocketAddr],
) -> (String, tokio::process::Child) {
    std::fs::create_dir_all(dir).unwrap();
    let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: tracecov\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        ),
    )
    .unwrap();
    let port = crate::pg::free_port();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = tokio::process::Command::new(crate::dashboards::prometheus_binary())
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    (format!("http://127.0.0.1:{port}"), child)
}

/// `expr`'s instant vector from Prometheus at `base`: each sample's labels (without the target's
/// `instance` and `job`, run ids and hosts scrubbed) and value, sorted; an error while it starts.
async fn samples(base: &str, expr: &str) -> Result<Vec<(String, String)>, String> {
    let mut url = reqwest::Url::parse(&format!("{base}/api/v1/query")).unwrap();
    url.query_pairs_mut().append_pair("query", expr);
    let body: Value = crate::common::http()
        .get(url)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(format!("{expr}: {body}"));
    }
    let mut out: Vec<(String, String)> = body["data"]["result"]
        .as_array()
        .ok_or_else(|| body.to_string())?
        .iter()
        .map(|s| {
            let mut labels = s["metric"].as_object().cloned().unwrap_or_default();
            labels.remove("instance");
            labels.remove("job");
            labels.remove("run_id");
            let value = s["value"][1].as_str().unwrap_or("").to_owned();
            (scrubbed(&Value::Object(labels).to_string()), value)
        })
        .collect();
    out.sort();
    Ok(out)
}

/// `/metrics` of a deployment scraped by a real Prometheus: each instance serves its share of the
/// service-graph counters, whose sum over the instances is what the single process counts, and the
/// deployment's coverage gauges, the same on every instance; so every query of the service-graph,
/// coverage and failures dashboards (which sum the counters and take the `max` of the gauges)
/// answers over the three instances what it answers over the single process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_db_prometheus_over_three_instances_answers_the_dashboards_like_one_process() {
    let Some(pg) = PgCluster::shared() else {
        return;
    };
    let d = deployment(&pg.database()).await;
    d.open("broken", 0).await;
    d.suite(vec![Fault::Payments500]).await;
    d.close("broken", 1).await;
    d.settled(&["broken"]).await;

    let work = tempfile::tempdir().unwrap();
    let addrs: Vec<std::net::SocketAddr> = d.instances.iter().map(|s| s.addrs.ui).collect();
    let (over_three, _three) = prometheus(&work.path().join("three"), &addrs).await;
    let (over_one, _one) = prometheus(&work.path().join("one"), &[d.reference.addrs.ui]).await;

    let mut exprs = vec![
        "sum by (client, server, connection_type) (traces_service_graph_request_total)".to_owned(),
        "sum by (client, server, connection_type) (traces_service_graph_request_failed_total)"
            .to_owned(),
    ];
    for (path, dashboard) in crate::dashboards::dashboards() {
        if path.ends_with("tracecov-health.json") {
            // Each instance's own intake and store.
            continue;
        }
        for panel in crate::dashboards::panels(&dashboard) {
            for t in panel["targets"].as_array().into_iter().flatten() {
                let expr = crate::dashboards::substitute(&dashboard, t["expr"].as_str().unwrap());
                // Rates depend on when each scrape happened, not on what was counted.
                if !expr.contains("rate(") && !expr.contains("increase(") {
                    exprs.push(expr);
                }
            }
        }
    }
    until("the dashboards over three instances answer as over one", async || {
        // Every instance scraped, the calls spread over more than one of them (which instance
        // holds which trace follows its random id: one may hold no call at all), and the same
        // gauges everywhere.
        let up = samples(&over_three, "count(up == 1)").await?;
        if up.first().map(|(_, v)| v.as_str()) != Some("3") {
            return Err(format!("instances scraped: {up:?}"));
        }
        let shares = samples(&over_three, "count by (instance) (traces_service_graph_request_total)").await?;
        if shares.len() < 2 {
            return Err(format!("service-graph series from {} instances", shares.len()));
        }
        let spread = samples(
            &over_three,
            "count by (scope) (tracecov_coverage_ratio) * 0 + (max by (scope) (tracecov_coverage_ratio) - min by (scope) (tracecov_coverage_ratio))",
        )
        .await?;
        if spread.is_empty() || spread.iter().any(|(_, v)| v != "0") {
            return Err(format!("coverage gauges differ between instances: {spread:?}"));
        }
        let counted = samples(&over_three, "count by (scope) (tracecov_coverage_ratio)").await?;
        if counted.iter().any(|(_, v)| v != "3") {
            return Err(format!("coverage gauges not on every instance: {counted:?}"));
        }
        for (i, expr) in exprs.iter().enumerate() {
            let (three, one) = (samples(&over_three, expr).await?, samples(&over_one, expr).await?);
            // Without a manifest nothing is untested: a query may rightly be empty, but not
            // the calls.
            if i < 2 && one.is_empty() {
                return Err(format!("no data yet for {expr}"));
            }
            if three != one {
                return Err(format!("{expr}:\nthree instances {three:?}\none process {one:?}"));
            }
        }
        Ok(())
    })
    .await;
}
