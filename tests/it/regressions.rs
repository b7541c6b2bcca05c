//! Latency regressions against a baseline, end to end (#18): one collector, the demo suite run 25
//! times into a run with no fault and 25 times into a run with `inventory:lag` (every inventory
//! gRPC method answers 80 ms later, inside its callers' deadline, so no test fails). Against the
//! healthy run, the lagging run's report lists the interfaces into inventory as slower, and
//! every slower interface — the callers' too, which only waited — blames inventory; the gate
//! fails on them with `--max-latency-regression`.

use std::collections::BTreeSet;

use serde_json::Value;
use tracecov::demo::{self, Fault};

use crate::common::TestServer;
use crate::metrics::demo_runs_in;

/// Suite runs per run: enough for every interface into inventory to reach the 20 calls a p95
/// is judged on (`product_details` calls GetProduct once a suite).
const SUITES: usize = 25;

/// Runs the demo suite `SUITES` times with `faults` into a run it opens (the single open run
/// takes every trace) and closes; returns the run's id.
async fn suite_run(server: &TestServer, name: &str, faults: Vec<Fault>) -> String {
    let report = demo_runs_in(server, serde_json::json!({ "name": name }), faults, SUITES).await;
    report["run"]["id"].as_str().unwrap().to_owned()
}

/// The report of `run` against `baseline`, with extra query parameters.
async fn report_against(server: &TestServer, run: &str, baseline: &str, extra: &str) -> Value {
    let (status, report) = server
        .get_json(&format!(
            "/api/runs/{run}/report?baseline={baseline}{extra}"
        ))
        .await;
    assert_eq!(status, 200, "{report}");
    report
}

fn regressions(report: &Value) -> &Vec<Value> {
    report["regressions"]
        .as_array()
        .unwrap_or_else(|| panic!("no regressions in a report against a baseline: {report}"))
}

fn key(r: &Value) -> (String, String, String) {
    let s = |k: &str| r[k].as_str().unwrap().to_owned();
    (s("caller"), s("callee"), s("operation"))
}

async fn gate(server: &TestServer, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_tracecov"))
        .arg("gate")
        .args(["--server", &server.addrs.ui_url()])
        .args(args)
        .env_remove("TRACECOV_MANIFEST")
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_lag_is_a_regression_blamed_on_inventory_and_fails_the_gate() {
    let server =
        TestServer::start_with(|c| c.test_services = vec![demo::TEST_SERVICE.into()]).await;
    let healthy = suite_run(&server, "healthy", vec![Fault::None]).await;
    let lagging = suite_run(&server, "lagging", vec![Fault::InventoryLag]).await;

    // The healthy run against itself: nothing is slower, and the field says so.
    let same = report_against(&server, &healthy, &healthy, "").await;
    assert_eq!(regressions(&same), &Vec::<Value>::new(), "{same}");

    // With the default thresholds, every interface into inventory is slower, blamed on it.
    let report = report_against(&server, &lagging, &healthy, "").await;
    let found = regressions(&report);
    let into_inventory: BTreeSet<(String, String, String)> = found
        .iter()
        .map(key)
        .filter(|(_, callee, _)| callee == "inventory")
        .collect();
    for (caller, method) in [
        ("gateway", "ListProducts"),
        ("gateway", "GetProduct"),
        ("checkout", "Reserve"),
    ] {
        let r = found
            .iter()
            .find(|r| {
                let (c, callee, op) = key(r);
                c == caller && callee == "inventory" && op.ends_with(method)
            })
            .unwrap_or_else(|| {
                panic!(
                    "{caller} -> inventory {method} is not listed: {into_inventory:?} in {found:#?}"
                )
            });
        assert_eq!(r["blamed"], "inventory", "{r}");
        assert!(r["calls"].as_u64().unwrap() >= 20, "{r}");
        assert!(r["base_calls"].as_u64().unwrap() >= 20, "{r}");
        assert!(r["ratio"].as_f64().unwrap() > 1.5, "{r}");
        assert!(
            r["run_p95_ms"].as_f64().unwrap() - r["base_p95_ms"].as_f64().unwrap() >= 5.0,
            "{r}"
        );
    }

    // The report holds DESIGN's fields, as the committed schema says.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lagging.json");
    std::fs::write(&file, report.to_string()).unwrap();
    let out = crate::formats::validate_reports(&[&file]);
    assert!(out.ends_with("errors 0\n"), "{out}");
    for r in found {
        let fields: BTreeSet<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            BTreeSet::from([
                "caller",
                "callee",
                "operation",
                "base_p95_ms",
                "run_p95_ms",
                "ratio",
                "base_calls",
                "calls",
                "blamed"
            ])
        );
    }

    // Every slower interface blames inventory, the callers' that only waited for it too. A
    // floor well under the 80 ms lag and well above what a loaded CI machine adds by chance
    // keeps unrelated jitter out of the list; the lag is what is judged.
    let judged = report_against(&server, &lagging, &healthy, "&latency_floor_ms=40").await;
    let found = regressions(&judged);
    assert!(
        found.iter().any(|r| {
            let (caller, callee, op) = key(r);
            caller == "gateway" && callee == "checkout" && op == "POST /orders"
        }),
        "the caller that waited for inventory is listed too: {found:#?}"
    );
    let wrong: Vec<&Value> = found
        .iter()
        .filter(|r| r["blamed"] != "inventory")
        .collect();
    assert!(wrong.is_empty(), "blamed on another node: {wrong:#?}");
    // Which of inventory's interfaces clear the floor varies with the machine's load (a loaded
    // healthy run's p95 grows by tens of milliseconds); at least one does.
    assert!(
        found.iter().any(|r| r["callee"] == "inventory"),
        "no interface into inventory over the floor: {found:#?}"
    );

    // The run page compares the same way, and outlines what got slower.
    let (status, html) = server
        .get_text(&format!("/runs/{lagging}?baseline={healthy}"))
        .await;
    assert_eq!(status, 200);
    assert!(
        html.contains("id=\"slower\""),
        "no slower-than-baseline table"
    );
    assert!(html.contains("class=\"edge-slower\""), "no outlined edge");

    // The gate fails on the regressions over the ratio, naming an inventory interface, and
    // passes without the condition.
    let failed = gate(
        &server,
        &[
            "--run",
            &lagging,
            "--baseline",
            &healthy,
            "--max-latency-regression",
            "1.5",
        ],
    )
    .await;
    let text = String::from_utf8_lossy(&failed.stdout).into_owned()
        + &String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{text}");
    assert!(text.contains("--max-latency-regression"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("-> inventory tracecov.demo.v1.Inventory/")
                && l.contains("blamed: inventory")),
        "{text}"
    );
    let passed = gate(
        &server,
        &["--run", &lagging, "--baseline", &healthy, "--no-failures"],
    )
    .await;
    assert_eq!(
        passed.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&passed.stdout),
        String::from_utf8_lossy(&passed.stderr)
    );

    // `diff` lists the interfaces into inventory as slower, and the other way as faster.
    let kinds = |d: &Value, kind: &str| -> BTreeSet<(String, String)> {
        d["changes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["change"] == kind && c["callee"] == "inventory")
            .map(|c| {
                let op = c["operation"].as_str().unwrap_or_default();
                (
                    c["caller"].as_str().unwrap().to_owned(),
                    op.rsplit('/').next().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let want: BTreeSet<(String, String)> = [
        ("gateway", "ListProducts"),
        ("gateway", "GetProduct"),
        ("checkout", "Reserve"),
    ]
    .iter()
    .map(|(c, m)| (c.to_string(), m.to_string()))
    .collect();
    let (_, d) = server
        .get_json(&format!("/api/diff?base={healthy}&run={lagging}"))
        .await;
    assert_eq!(kinds(&d, "slower"), want, "{d:#}");
    let (_, back) = server
        .get_json(&format!("/api/diff?base={lagging}&run={healthy}"))
        .await;
    assert_eq!(kinds(&back, "faster"), want, "{back:#}");
    server.stop().await;
}
