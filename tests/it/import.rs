//! `tracecov import` and `tracecov export` as a user runs them, on real recorded traces
//! (tests/fixtures): the runs they make, the reports of those runs, bad files, the round trip
//! through an export, import into a running server, and log records imported with their traces.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use expect_test::{Expect, expect};
use serde_json::Value;

use crate::common::{TestServer, fixture};

fn tracecov(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracecov"))
        .args(args)
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("TRACECOV_DATA")
        .env_remove("TRACECOV_SERVER")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn zipkin(name: &str) -> PathBuf {
    fixture(&format!("zipkin-lens/{name}"))
}

/// Imports `files` into the store `data`, asserting success.
fn import(data: &Path, files: &[&Path]) -> Output {
    let mut args = vec!["import", "--data", s(data)];
    args.extend(files.iter().map(|f| s(f)));
    let out = tracecov(&args);
    assert!(out.status.success(), "{}", text(&out));
    out
}

/// The JSON report of a run, through `tracecov report`.
fn report_of(data: &Path, run: &str) -> Value {
    let out = tracecov(&[
        "report",
        "--data",
        s(data),
        "--run",
        run,
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Imports one fixture into a fresh store and returns its run's report.
fn imported(file: &Path) -> (tempfile::TempDir, Value) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    import(&data, &[file]);
    let name = file.file_name().unwrap().to_str().unwrap();
    let report = report_of(&data, name);
    assert_eq!(
        report["run"]["name"], name,
        "the run is named after the file"
    );
    (dir, report)
}

/// The edges as sorted `caller -> callee` lines with their calls and errors.
fn edge_lines(report: &Value) -> String {
    let mut lines: Vec<String> = report["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} -> {} calls={} errors={}",
                e["caller"].as_str().unwrap(),
                e["callee"].as_str().unwrap(),
                e["calls"],
                e["errors"]
            )
        })
        .collect();
    lines.sort();
    lines.join("\n") + "\n"
}

fn edge<'a>(report: &'a Value, caller: &str, callee: &str) -> &'a Value {
    report["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["caller"] == caller && e["callee"] == callee)
        .unwrap_or_else(|| panic!("no edge {caller} -> {callee}: {}", edge_lines(report)))
}

fn nodes_of_kind(report: &Value, kind: &str) -> Vec<String> {
    report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == kind)
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect()
}

fn check_edges(report: &Value, expected: Expect) {
    expected.assert_eq(&edge_lines(report));
}

#[test]
fn smartthings_becomes_a_run_named_after_the_file_with_its_16_services_and_the_404_hop() {
    let file = zipkin("smartthings-mobile-web-install.json");
    let (dir, report) = imported(&file);
    let run = &report["run"];
    assert_eq!(
        nodes_of_kind(&report, "service").len(),
        16,
        "{}",
        report["nodes"]
    );
    assert_eq!(
        run["diagnostics"]["duplicate_span_ids"], 0,
        "shared client/server halves split and fragments merged: {}",
        run["diagnostics"]
    );
    let alice = edge(&report, "execution", "alice");
    assert!(
        alice["errors"].as_u64().unwrap() >= 1,
        "the HTTP 404: {alice}"
    );
    // The trace's entry request succeeded (302): the 404 is an error, not a failure, and a trace
    // with no test case holds no test.
    assert_eq!(run["tests"]["total"], 0, "{run}");
    assert_eq!(run["tests"]["failed"], 0, "{run}");
    assert_eq!(
        alice["error_classes"]["rejected_request"], 1,
        "the 404 is classified on its edge: {alice}"
    );
    assert_eq!(
        report["failures"],
        serde_json::json!([]),
        "no failure: the entry request succeeded"
    );
    check_edges(
        &report,
        expect![[r#"
            account -> auth calls=15 errors=0
            auth -> db:auth calls=131 errors=0
            bookie -> account calls=15 errors=0
            bookie -> auth calls=14 errors=0
            bookie -> coreSrv calls=13 errors=0
            bookie -> db:bookie calls=120 errors=0
            bookie -> execution calls=2 errors=0
            bouncer -> auth calls=1 errors=0
            bouncer -> pusher calls=5 errors=0
            coreSrv -> auth calls=15 errors=0
            coreSrv -> strongman calls=1 errors=0
            execution -> alice calls=1 errors=1
            execution -> auth calls=3 errors=0
            execution -> bookie calls=16 errors=0
            execution -> bouncer calls=1 errors=0
            execution -> guardian calls=14 errors=0
            guardian -> platformapi calls=1 errors=0
            paperboy -> auth calls=1 errors=0
            platformapi -> bookie calls=17 errors=0
            platformapi -> execution calls=14 errors=0
            platformapi -> gizmo calls=52 errors=0
            platformapi -> paperboy calls=1 errors=0
            pusher -> dove calls=1 errors=0
            pusher -> ext:archiver.st.internal:80 calls=1 errors=0
            pusher -> oreck calls=1 errors=0
            stLogin -> auth calls=5 errors=0
            stLogin -> platformapi calls=53 errors=0
            stLogin -> strongman calls=1 errors=0
            strongman -> auth calls=2 errors=0
            strongman -> platformapi calls=30 errors=0
            strongman -> stLogin calls=1 errors=0
        "#]],
    );

    // Importing the same file again joins the same run and stores nothing twice.
    let data = dir.path().join("data");
    let again = import(&data, &[&file]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains(run["id"].as_str().unwrap()),
        "{}",
        text(&again)
    );
    let second = report_of(&data, "smartthings-mobile-web-install.json");
    assert_eq!(second["run"]["id"], run["id"]);
    assert_eq!(second["run"]["spans"], run["spans"]);
    assert_eq!(second["edges"], report["edges"]);
}

#[test]
fn messaging2_parents_missing_from_the_file_are_orphans_and_the_graph_is_still_built() {
    let (_dir, report) = imported(&zipkin("messaging2.json"));
    assert!(
        report["run"]["diagnostics"]["orphans"].as_u64().unwrap() > 0,
        "{}",
        report["run"]
    );
    check_edges(
        &report,
        expect![[r#"
            mobile-gateway -> auth-service calls=1 errors=0
            queue:rabbitmq -> notification-service calls=1 errors=0
            transfer-service -> queue:rabbitmq calls=1 errors=0
        "#]],
    );
}

#[test]
fn messaging_kafka_goes_through_the_queue_node_both_ways() {
    let file = zipkin("messaging-kafka.json");
    let (dir, report) = imported(&file);
    assert_eq!(nodes_of_kind(&report, "messaging"), ["queue:kafka"]);
    // servicea consumes its own topic; serviceb consumes servicea's.
    check_edges(
        &report,
        expect![[r#"
            queue:kafka -> servicea calls=4 errors=0
            queue:kafka -> serviceb calls=3 errors=3
            servicea -> queue:kafka calls=9 errors=0
        "#]],
    );
    let serviceb = report["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["callee"] == "serviceb")
        .unwrap();
    assert_eq!(
        serviceb["error_classes"],
        serde_json::json!({"callee_error": 3})
    );

    // The file's three errors are in serviceb's message handlers, each right below one of
    // serviceb's CONSUMER spans: a delivery fails when its processing does, so they count on the
    // hops queue:kafka -> serviceb, and none on servicea's side.
    let reader = tracecov::store::Reader::new(&dir.path().join("data"));
    let run = tracecov::query::resolve_run(&reader, "messaging-kafka.json").unwrap();
    let spans = tracecov::query::run_spans(&reader, &run).unwrap();
    let errored: Vec<_> = spans
        .iter()
        .filter(|s| s.status.code == tracecov::model::StatusCode::Error)
        .collect();
    assert_eq!(errored.len(), 3);
    for e in errored {
        assert_eq!(e.service(), "serviceb");
        let parent = spans
            .iter()
            .find(|p| Some(p.span_id) == e.parent_span_id)
            .expect("the handler's consumer span");
        assert_eq!(parent.kind, tracecov::model::SpanKind::Consumer);
        assert_eq!(parent.service(), "serviceb");
    }
}

#[test]
fn skew_db_and_yelp_give_the_right_structure() {
    let (_d1, skew) = imported(&zipkin("skew.json"));
    check_edges(
        &skew,
        expect![[r#"
            servicea -> serviceb calls=1 errors=0
        "#]],
    );
    assert!(skew["run"]["diagnostics"]["clock_skew"].as_u64().unwrap() >= 1);

    let (_d2, db) = imported(&zipkin("simple-db-p6.json"));
    assert_eq!(nodes_of_kind(&db, "database"), ["db:app_db"]);
    check_edges(
        &db,
        expect![[r#"
            bootifulmeters -> db:app_db calls=4 errors=0
        "#]],
    );

    let (_d3, yelp) = imported(&zipkin("yelp.json"));
    assert_eq!(yelp["run"]["diagnostics"]["duplicate_span_ids"], 0);
    check_edges(
        &yelp,
        expect![[r#"
            mobile_api -> ext:blt calls=1 errors=0
            mobile_api -> ext:memcache calls=2 errors=0
            mobile_api -> spectre calls=1 errors=0
            routing -> unknown calls=1 errors=0
            routing -> yelp-main calls=1 errors=0
            unknown -> yelp-main calls=2 errors=0
            unknown -> yelp_main/api_proxy calls=1 errors=0
            yelp-main -> db:mysql calls=2 errors=0
            yelp-main -> ext:memcache calls=3 errors=0
            yelp-main -> mobile_api calls=1 errors=0
        "#]],
    );
}

#[test]
fn spec_example_is_one_span_of_my_service() {
    let (_dir, report) = imported(&fixture("otlp-json/spec-example.json"));
    assert_eq!(report["run"]["spans"], 1);
    assert_eq!(report["run"]["traces"], 1);
    assert_eq!(
        report["nodes"],
        serde_json::json!([{"id": "my.service", "kind": "service"}])
    );
    // Its parent span id is not in the file.
    assert_eq!(report["run"]["diagnostics"]["orphans"], 1);
}

#[test]
fn format_override_and_a_malformed_file_exit_2_naming_the_file_and_keeping_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = s(&data);

    // A Zipkin array read as Jaeger is not valid Jaeger.
    let skew = zipkin("skew.json");
    let wrong = tracecov(&["import", "--data", data, "--format", "jaeger", s(&skew)]);
    assert_eq!(wrong.status.code(), Some(2), "{}", text(&wrong));
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        err.contains("skew.json") && err.contains("jaeger"),
        "{}",
        text(&wrong)
    );
    // The right override works, whatever the file is called.
    let renamed = dir.path().join("skew.dump");
    std::fs::copy(&skew, &renamed).unwrap();
    let ok = tracecov(&["import", "--data", data, "--format", "zipkin", s(&renamed)]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert_eq!(report_of(Path::new(data), "skew.dump")["run"]["spans"], 4);
    let unknown = tracecov(&["import", "--data", data, "--format", "xml", s(&renamed)]);
    assert_eq!(unknown.status.code(), Some(2));

    // Five valid spans, then the file breaks off inside the sixth.
    let spans: Vec<Value> =
        serde_json::from_slice(&std::fs::read(zipkin("messaging-kafka.json")).unwrap()).unwrap();
    let mut broken = String::from("[\n");
    for span in &spans[..5] {
        broken.push_str(&serde_json::to_string(span).unwrap());
        broken.push_str(",\n");
    }
    broken.push_str("{\"traceId\": \"6b8a5a13f2b6f0a1\", \"id\": oops}\n]\n");
    let bad = dir.path().join("broken.json");
    std::fs::write(&bad, broken).unwrap();
    let out = tracecov(&["import", "--data", data, s(&bad)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.json: line 7, column"),
        "the file and the position: {}",
        text(&out)
    );
    let kept = report_of(Path::new(data), "broken.json");
    assert_eq!(kept["run"]["spans"], 5, "the valid spans before the error");

    // An unreadable file among good ones: the good ones are imported, the status is 2.
    let missing = dir.path().join("missing.json");
    let spec = fixture("otlp-json/spec-example.json");
    let out = tracecov(&["import", "--data", data, s(&missing), s(&spec)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.json: cannot read"));
    assert_eq!(
        report_of(Path::new(data), "spec-example.json")["run"]["spans"],
        1
    );
}

/// The parts of a report that must survive an export and re-import.
fn comparable(report: &Value) -> Value {
    serde_json::json!({
        "nodes": report["nodes"],
        "edges": report["edges"],
        "spans": report["run"]["spans"],
        "traces": report["run"]["traces"],
        "tests": report["run"]["tests"],
        "diagnostics": report["run"]["diagnostics"],
    })
}

#[test]
fn an_exported_run_imported_into_an_empty_store_reports_the_same() {
    let file = zipkin("smartthings-mobile-web-install.json");
    let (dir, original) = imported(&file);
    let data = dir.path().join("data");
    let export = dir.path().join("smartthings.jsonl");
    let out = tracecov(&[
        "export",
        "--data",
        s(&data),
        "--run",
        "smartthings-mobile-web-install.json",
        "--out",
        s(&export),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let lines = std::fs::read_to_string(&export).unwrap();
    assert!(lines.lines().count() >= 1);
    assert!(lines.lines().all(|l| l.starts_with("{\"resourceSpans\"")));

    let elsewhere = dir.path().join("elsewhere");
    import(&elsewhere, &[&export]);
    let back = report_of(&elsewhere, "smartthings.jsonl");
    assert_ne!(back["run"]["id"], original["run"]["id"]);
    assert_eq!(comparable(&back), comparable(&original));

    // `latest` and an unknown run.
    let missing = tracecov(&[
        "export",
        "--data",
        s(&data),
        "--run",
        "nope",
        "--out",
        s(&export),
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no run \"nope\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_into_a_running_server_reports_as_import_into_a_store() {
    let file = zipkin("smartthings-mobile-web-install.json");
    let server = TestServer::start().await;
    let url = server.addrs.ui_url();
    let (dir, local) = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || imported(&file))
            .await
            .unwrap()
    };
    let out = {
        let (url, file) = (url.clone(), file.clone());
        tokio::task::spawn_blocking(move || tracecov(&["import", "--server", &url, s(&file)]))
            .await
            .unwrap()
    };
    assert!(out.status.success(), "{}", text(&out));

    let (status, remote) = server
        .get_json("/api/runs/smartthings-mobile-web-install.json/report")
        .await;
    assert_eq!(status, 200, "{remote}");
    assert_eq!(comparable(&remote), comparable(&local));
    // The run was opened for the import and closed at once, so it catches no other traffic.
    let (_, run) = server
        .get_json("/api/runs/smartthings-mobile-web-install.json")
        .await;
    assert_eq!(run["open"], false, "{run}");

    // And it exports from the server as from a store.
    let export = dir.path().join("from-server.jsonl");
    let out = {
        let (url, export) = (url.clone(), export.clone());
        tokio::task::spawn_blocking(move || {
            tracecov(&[
                "export",
                "--server",
                &url,
                "--run",
                "smartthings-mobile-web-install.json",
                "--out",
                s(&export),
            ])
        })
        .await
        .unwrap()
    };
    assert!(out.status.success(), "{}", text(&out));
    let fresh = dir.path().join("fresh");
    let back = tokio::task::spawn_blocking(move || {
        import(&fresh, &[&export]);
        report_of(&fresh, "from-server.jsonl")
    })
    .await
    .unwrap();
    assert_eq!(comparable(&back), comparable(&local));
    server.stop().await;
}

/// The hand-written incident: trace lines and log lines in one Collector file.
fn incident() -> PathBuf {
    fixture("otlp-json/order-incident.jsonl")
}

const INCIDENT_RUN: &str = "order-incident.jsonl";
const INCIDENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CONSUMER_SPAN: &str = "2000000000000001";

/// The failure of the incident's test, blamed on the consumer that only logged its error, with
/// the logged record as evidence, redacted.
fn assert_blamed_on_the_logged_error(report: &Value) {
    let failures = report["failures"].as_array().unwrap();
    let failure = failures
        .iter()
        .find(|f| f["test"] == "test_order_is_reserved")
        .unwrap_or_else(|| panic!("no failure of the test: {report:#}"));
    // Without its log record the consumer recorded nothing, and the failure would be `silent`
    // on the test's own span.
    assert_eq!(failure["class"], "callee_error", "{failure:#}");
    assert_eq!(failure["span_id"], CONSUMER_SPAN, "{failure:#}");
    let logs = failure["evidence"]["logs"].as_array().unwrap();
    assert_eq!(
        logs.len(),
        1,
        "only the ERROR record is evidence: {failure:#}"
    );
    assert_eq!(logs[0]["severity"], "ERROR");
    assert_eq!(
        logs[0]["body"],
        "reserve failed for order 42: stock db refused login password=[REDACTED]"
    );
    assert!(!report.to_string().contains("hunter2"), "{report:#}");
}

#[test]
fn a_collector_file_with_trace_and_log_lines_imports_the_logs_as_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = import(&data, &[&incident()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "order-incident.jsonl: 4 spans, 2 log records into run order-incident.jsonl ("
        ) && stdout.contains("; 1 log records without a trace id skipped"),
        "{}",
        text(&out)
    );
    assert_blamed_on_the_logged_error(&report_of(&data, INCIDENT_RUN));

    // The trace API of a server over that store shows both records on the consumer's span, in
    // time order, although the INFO record came before the spans in the file.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = TestServer::start_with(|c| c.data_dir = data.clone()).await;
        let trace = server.trace(INCIDENT_TRACE).await;
        assert_consumer_logs(&trace);
        server.stop().await;
    });

    // A re-import stores no record twice.
    import(&data, &[&incident()]);
    assert_blamed_on_the_logged_error(&report_of(&data, INCIDENT_RUN));
}

/// The consumer's span in a trace from `/api/traces` holds the two records with a trace id.
fn assert_consumer_logs(trace: &Value) {
    let span = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["span_id"] == CONSUMER_SPAN)
        .unwrap_or_else(|| panic!("no consumer span: {trace:#}"));
    let bodies: Vec<&str> = span["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        bodies,
        [
            "reserving stock for order 42",
            "reserve failed for order 42: stock db refused login password=[REDACTED]"
        ],
        "{span:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_imported_into_a_running_server_join_their_traces() {
    let server = TestServer::start_with(|c| {
        c.ingest_token = Some(tracecov::config::Secret("import-secret".into()))
    })
    .await;
    let url = server.addrs.ui_url();
    let out = tokio::task::spawn_blocking(move || {
        tracecov(&[
            "import",
            "--server",
            &url,
            "--ingest-token",
            "import-secret",
            s(&incident()),
        ])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("4 spans, 2 log records into run"),
        "{}",
        text(&out)
    );
    assert_consumer_logs(&server.trace(INCIDENT_TRACE).await);
    let (status, report) = server
        .get_json(&format!("/api/runs/{INCIDENT_RUN}/report"))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_blamed_on_the_logged_error(&report);
    server.stop().await;
}
