//! Results kept per trace, through a real server: computed once a trace settles, computed again
//! after a late span or when a trace it links to arrives, counted in `/metrics` and
//! `GET /api/runs/{id}`, and computed by `tracecov import` before it exits.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{PATIENCE, TestServer, fixture};

const RUN: &str = "results-run";
const T0: u64 = 1_700_000_000_000_000_000;

/// An OTLP/JSON string attribute.
pub(crate) fn attr(key: &str, value: &str) -> Value {
    json!({"key": key, "value": {"stringValue": value}})
}

/// An OTLP/JSON span from 1 ms to 9 ms after `T0`; `parent` empty for a root.
pub(crate) fn span(
    trace: &str,
    id: &str,
    parent: &str,
    name: &str,
    kind: u8,
    attrs: Vec<Value>,
) -> Value {
    let mut s = json!({
        "traceId": trace, "spanId": id, "name": name, "kind": kind,
        "startTimeUnixNano": (T0 + 1_000_000).to_string(),
        "endTimeUnixNano": (T0 + 9_000_000).to_string(),
        "attributes": attrs,
    });
    if !parent.is_empty() {
        s["parentSpanId"] = json!(parent);
    }
    s
}

/// One export: (service, spans) pairs, every resource in run `RUN`.
fn export(services: Vec<(&str, Vec<Value>)>) -> Vec<u8> {
    export_in(RUN, services)
}

/// One export with every resource in `run`.
pub(crate) fn export_in(run: &str, services: Vec<(&str, Vec<Value>)>) -> Vec<u8> {
    let resource_spans: Vec<Value> = services
        .into_iter()
        .map(|(service, spans)| {
            json!({
                "resource": {"attributes": [attr("service.name", service), attr("tracecov.run.id", run)]},
                "scopeSpans": [{"spans": spans}],
            })
        })
        .collect();
    json!({ "resourceSpans": resource_spans })
        .to_string()
        .into_bytes()
}

async fn post(server: &TestServer, body: Vec<u8>) {
    let resp = server.post_otlp("application/json", body, false).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
}

/// The settle worker's counter of stored results and its backlog, from `/metrics`.
async fn computed(server: &TestServer) -> (u64, u64) {
    let text = server.metrics().await;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics")) as u64
    };
    (
        value("tracecov_trace_results_computed_total"),
        value("tracecov_settle_backlog_traces"),
    )
}

/// Waits until the settle worker has stored at least `n` results and the run has no trace
/// pending; returns the run's JSON report.
async fn settled(server: &TestServer, n: u64) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, run) = server.get_json(&format!("/api/runs/{RUN}")).await;
        let (done, backlog) = computed(server).await;
        if status == 200 && run["pending_traces"] == 0 && done >= n && backlog == 0 {
            return server.get_json(&format!("/api/runs/{RUN}/report")).await.1;
        }
        assert!(
            Instant::now() < deadline,
            "results never settled: {done} computed, {backlog} in the backlog, run {run}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn edges(report: &Value) -> Vec<String> {
    report["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} -> {} {}",
                e["caller"].as_str().unwrap(),
                e["callee"].as_str().unwrap(),
                e["tests"]
            )
        })
        .collect()
}

const A: &str = "0af7651916cd43dd8448eb211c80319c";
const B: &str = "1bf7651916cd43dd8448eb211c80319c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_computed_when_a_trace_settles_and_again_after_a_late_span() {
    let server = TestServer::start_with(|c| c.settle = Duration::from_millis(300)).await;
    post(
        &server,
        export(vec![
            (
                "driver",
                vec![
                    span(
                        A,
                        "1000000000000001",
                        "",
                        "test_cart",
                        1,
                        vec![attr("test.case.name", "test_cart")],
                    ),
                    span(
                        A,
                        "1000000000000002",
                        "1000000000000001",
                        "GET",
                        3,
                        vec![attr("http.request.method", "GET")],
                    ),
                ],
            ),
            (
                "cart",
                vec![span(
                    A,
                    "1000000000000003",
                    "1000000000000002",
                    "GET /cart",
                    2,
                    vec![attr("http.route", "/cart")],
                )],
            ),
        ]),
    )
    .await;
    let report = settled(&server, 1).await;
    assert_eq!(edges(&report), [r#"driver -> cart ["test_cart"]"#]);
    assert_eq!(report["run"]["spans"], 3);

    // A late span re-opens the trace: its results are computed again, with the new hop.
    post(
        &server,
        export(vec![(
            "cart",
            vec![span(
                A,
                "1000000000000004",
                "1000000000000003",
                "SELECT",
                3,
                vec![
                    attr("db.system.name", "postgresql"),
                    attr("db.namespace", "shop"),
                ],
            )],
        )]),
    )
    .await;
    let report = settled(&server, 2).await;
    assert_eq!(
        edges(&report),
        [
            r#"cart -> db:postgresql/shop ["test_cart"]"#,
            r#"driver -> cart ["test_cart"]"#
        ]
    );
    assert_eq!(report["run"]["spans"], 4);
    server.stop().await;
}

/// A consumer's trace that settled before the producer's trace arrived was computed without its
/// test; when the producer's trace arrives, the consumer's results are computed again and its
/// hops join the producer's test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_trace_that_settled_before_its_producer_arrived_joins_the_producers_test() {
    let server = TestServer::start_with(|c| c.settle = Duration::from_millis(300)).await;
    let mut consumer = span(
        B,
        "2000000000000001",
        "",
        "orders process",
        5,
        vec![
            attr("messaging.system", "kafka"),
            attr("messaging.destination.name", "orders"),
        ],
    );
    consumer["links"] = json!([{"traceId": A, "spanId": "1000000000000002"}]);
    post(&server, export(vec![("shipping", vec![consumer])])).await;
    let report = settled(&server, 1).await;
    assert_eq!(edges(&report), [r#"queue:kafka/orders -> shipping []"#]);

    post(
        &server,
        export(vec![(
            "checkout",
            vec![
                span(
                    A,
                    "1000000000000001",
                    "",
                    "test_order",
                    1,
                    vec![attr("test.case.name", "test_order")],
                ),
                span(
                    A,
                    "1000000000000002",
                    "1000000000000001",
                    "orders publish",
                    4,
                    vec![
                        attr("messaging.system", "kafka"),
                        attr("messaging.destination.name", "orders"),
                    ],
                ),
            ],
        )]),
    )
    .await;
    // The producer's trace, then the consumer's again.
    let report = settled(&server, 3).await;
    assert_eq!(
        edges(&report),
        [
            r#"checkout -> queue:kafka/orders ["test_order"]"#,
            r#"queue:kafka/orders -> shipping ["test_order"]"#
        ]
    );
    server.stop().await;
}

#[test]
fn import_computes_every_traces_results_before_it_exits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_tracecov"))
        .args(["import", "--data"])
        .arg(&data)
        .arg(fixture("zipkin-lens/messaging-kafka.json"))
        .arg(fixture("zipkin-lens/smartthings-mobile-web-install.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conn = rusqlite::Connection::open(data.join("tracecov.sqlite")).unwrap();
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    let traces = count("SELECT COUNT(*) FROM traces");
    assert!(traces >= 2);
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM trace_results r JOIN traces t ON t.trace_id = r.trace_id
             WHERE r.received_ns >= t.last_received_ns"
        ),
        traces,
        "every imported trace has fresh results"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("computed the results of {traces} traces")),
        "{stderr}"
    );
}

/// A data directory written before results were kept (no `trace_results`, `trace_links`, `seen`
/// or rollups) opens, and its reports are what they were.
#[test]
fn a_store_from_before_results_existed_reports_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = fixture("zipkin-lens/smartthings-mobile-web-install.json");
    let tracecov = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tracecov"))
            .args(args)
            .arg("--data")
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    tracecov(&["import", file.to_str().unwrap()]);
    let report = |tracecov: &dyn Fn(&[&str]) -> String| {
        tracecov(&["report", "--run", "latest", "--format", "json"])
    };
    let before = report(&tracecov);
    let drop = |sql: &str| {
        let conn = rusqlite::Connection::open(data.join("tracecov.sqlite")).unwrap();
        conn.execute_batch(sql).unwrap();
    };
    drop(
        "DROP TABLE trace_results; DROP TABLE trace_links; DROP TABLE seen;
         DROP TABLE run_rollups; DROP TABLE trace_rollups; DROP TABLE settle_marks;",
    );
    assert_eq!(report(&tracecov), before);
    // Rollups whose results are gone (a damaged store) are not trusted: the report is the same.
    drop("DELETE FROM trace_results; DELETE FROM settle_marks;");
    assert_eq!(report(&tracecov), before);
    // Importing into it again brings every trace's results back.
    tracecov(&["import", fixture("zipkin-lens/yelp.json").to_str().unwrap()]);
    let conn = rusqlite::Connection::open(data.join("tracecov.sqlite")).unwrap();
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(
        count("SELECT COUNT(*) FROM trace_results"),
        count("SELECT COUNT(*) FROM traces")
    );
}

/// `tracecov report --server` waits for the run's traces that have no results yet (`--wait`):
/// past the wait it answers with what is ready and says how many are missing; once the run is
/// closed the settle worker computes them and the report waits for nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_waits_for_pending_traces_and_says_what_is_missing() {
    // A settle period no test outlasts: the trace stays pending until its run closes.
    let server = TestServer::start_with(|c| c.settle = Duration::from_secs(3600)).await;
    post(
        &server,
        export(vec![(
            "driver",
            vec![span(
                A,
                "1000000000000001",
                "",
                "test_cart",
                1,
                vec![attr("test.case.name", "test_cart")],
            )],
        )]),
    )
    .await;
    let base = server.api("");
    let report = |wait: &'static str| {
        let base = base.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_tracecov"))
                .args(["report", "--run", RUN, "--format", "json", "--server"])
                .arg(base.trim_end_matches('/'))
                .args(["--wait", wait])
                .output()
                .unwrap()
        })
    };
    let started = Instant::now();
    let out = report("1s").await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() >= Duration::from_secs(1), "it waited");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 trace(s) of results-run still pending after waiting 1s"),
        "{stderr}"
    );
    let ready: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        ready["run"]["tests"]["total"], 1,
        "what is ready is reported"
    );

    let (status, _) = server.get_json(&format!("/api/runs/{RUN}")).await;
    assert_eq!(status, 200);
    let closed = server
        .http
        .post(server.api(&format!("/api/runs/{RUN}/close")))
        .header("x-tracecov", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 200);
    let out = report("90s").await.unwrap();
    assert!(out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("pending"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An integration another run exercised, untested in this one, carries that run's request as its
/// `example` (the trace, the test that made it, a link), in the JSON report and in the text one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untested_items_carry_a_request_from_another_run_as_their_example() {
    let server = TestServer::start_with(|c| c.settle = Duration::from_millis(300)).await;
    let test = |trace: &str, name: &str, calls_cart: bool| {
        let mut driver = vec![span(
            trace,
            "3000000000000001",
            "",
            name,
            1,
            vec![attr("test.case.name", name)],
        )];
        let mut services = Vec::new();
        if calls_cart {
            driver.push(span(
                trace,
                "3000000000000002",
                "3000000000000001",
                "GET",
                3,
                vec![attr("http.request.method", "GET")],
            ));
            services.push((
                "cart",
                vec![span(
                    trace,
                    "3000000000000003",
                    "3000000000000002",
                    "GET /cart",
                    2,
                    vec![attr("http.route", "/cart")],
                )],
            ));
        }
        services.insert(0, ("driver", driver));
        services
    };
    // The earlier run called the cart; this run (`RUN`) did not.
    post(
        &server,
        export_in("earlier-run", test(A, "test_cart", true)),
    )
    .await;
    post(&server, export(test(B, "test_home", false))).await;
    let report = settled(&server, 2).await;
    let untested = report["coverage"]["untested"].as_array().unwrap();
    let item = untested
        .iter()
        .find(|i| i["caller"] == "driver" && i["callee"] == "cart" && i["operation"] == "GET /cart")
        .unwrap_or_else(|| panic!("driver -> cart GET /cart is untested: {untested:?}"));
    assert_eq!(item["example"]["trace_id"], A);
    assert_eq!(item["example"]["test"], "test_cart");
    let link = item["example"]["link"].as_str().unwrap();
    assert!(link.contains(A), "{link}");
    // The edge itself carries one too.
    let edge = untested
        .iter()
        .find(|i| i["caller"] == "driver" && i["callee"] == "cart" && i["operation"].is_null())
        .unwrap();
    assert_eq!(edge["example"]["trace_id"], A);

    let resp = server
        .http
        .get(server.api(&format!("/api/runs/{RUN}/report?format=text")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains(&format!("e.g. {link} (from test_cart)")),
        "{text}"
    );
    server.stop().await;
}
