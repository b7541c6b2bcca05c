//! History across runs through the real server: the demo shop's suite run several times into
//! one collector, through the real SDK pipelines, with and without the `payments:500` fault.
//!
//! Alternating outcomes make `checkout -> payments POST /charge` flaky: `GET /api/flaky` and
//! `tracecov flaky` (over the API and from the store) list it with the window's counts, the
//! reports of the failing runs mark its failures `"flaky": true` (and validate against the
//! committed schema), and the edge page draws its trend. A fault in every run of another suite
//! is a steady failure: nothing is flaky there and no failure is marked. `GET /api/history`
//! gives each run's calls and errors on the edge, oldest first, as each run's report states them.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;
use tracecov::demo::{self, Fault};

use crate::common::{TestServer, repo_root};
use crate::metrics::demo_run_in;

const CALLER: &str = "checkout";
const CALLEE: &str = "payments";
const OPERATION: &str = "POST /charge";

/// Opens a run of `suite` through the API, runs the demo suite against the server with
/// `faults`, closes the run and returns its id and JSON report.
async fn suite_run(
    server: &TestServer,
    name: &str,
    suite: &str,
    faults: &[Fault],
) -> (String, Value) {
    let report = demo_run_in(
        server,
        serde_json::json!({ "name": name, "suite": suite }),
        faults.to_vec(),
    )
    .await;
    assert_eq!(report["run"]["suite"], suite, "{}", report["run"]);
    (report["run"]["id"].as_str().unwrap().to_owned(), report)
}

async fn report(server: &TestServer, id: &str) -> Value {
    let (status, report) = server.get_json(&format!("/api/runs/{id}/report")).await;
    assert_eq!(status, 200, "{report}");
    report
}

fn on_charge(f: &Value) -> bool {
    f["hop"]["caller"] == CALLER
        && f["hop"]["callee"] == CALLEE
        && f["hop"]["operation"] == OPERATION
}

/// The tests whose failures a report places on the charge hop.
fn charge_tests(report: &Value) -> BTreeSet<String> {
    report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| on_charge(f))
        .map(|f| f["test"].as_str().unwrap().to_owned())
        .collect()
}

fn edge(report: &Value) -> &Value {
    report["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["caller"] == CALLER && e["callee"] == CALLEE)
        .unwrap_or_else(|| panic!("no {CALLER} -> {CALLEE} in {report}"))
}

fn tracecov(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tracecov"))
        .args(args)
        .env_remove("TRACECOV_DATA")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tracecov {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_outcomes_make_a_flaky_hop_and_a_steady_failure_does_not() {
    let server =
        TestServer::start_with(|c| c.test_services = vec![demo::TEST_SERVICE.into()]).await;
    // shop: fault, none, fault, none.
    let mut runs = Vec::new();
    for i in 0..4 {
        let faults: &[Fault] = if i % 2 == 0 {
            &[Fault::Payments500]
        } else {
            &[]
        };
        runs.push(suite_run(&server, &format!("shop-{i}"), "shop", faults).await);
    }
    // steady: the fault in both runs.
    let mut steady = Vec::new();
    for i in 0..2 {
        steady.push(
            suite_run(
                &server,
                &format!("steady-{i}"),
                "steady",
                &[Fault::Payments500],
            )
            .await,
        );
    }
    let failing = charge_tests(&runs[0].1);
    assert!(
        !failing.is_empty(),
        "payments:500 fails tests on the charge hop"
    );
    assert_eq!(charge_tests(&runs[2].1), failing);

    // The flaky hop with the window's counts.
    let (status, flaky) = server.get_json("/api/flaky?suite=shop").await;
    assert_eq!(status, 200, "{flaky}");
    let hop = flaky
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["caller"] == CALLER && h["callee"] == CALLEE && h["operation"] == OPERATION)
        .unwrap_or_else(|| panic!("the charge hop is not flaky: {flaky:#}"));
    assert_eq!(hop["runs"], 4, "{hop}");
    assert_eq!(hop["failed_runs"], 2, "{hop}");
    assert_eq!(hop["flips"], 3, "{hop}");
    assert_eq!(
        hop["classes"],
        serde_json::json!({ "callee_error": 2 }),
        "{hop}"
    );
    let tests: BTreeSet<String> = hop["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tests, failing);
    assert_eq!(hop["last_failed_run"]["id"], runs[2].0.as_str(), "{hop}");
    assert_eq!(hop["last_failed_run"]["name"], "shop-2", "{hop}");
    // Over the last run alone (it passed), nothing was flaky.
    let (_, last_one) = server.get_json("/api/flaky?suite=shop&last=1").await;
    assert_eq!(last_one, serde_json::json!([]));

    // A steady failure is not flaky.
    let (status, none) = server.get_json("/api/flaky?suite=steady").await;
    assert_eq!(status, 200);
    assert_eq!(none, serde_json::json!([]), "steady failures are not flaky");
    // Without a suite: the latest run's, which is steady's.
    assert_eq!(server.get_json("/api/flaky").await.1, serde_json::json!([]));
    let (status, unknown) = server.get_json("/api/flaky?suite=nope").await;
    assert_eq!(status, 404, "{unknown}");
    assert!(
        unknown["error"].as_str().unwrap().contains("nope"),
        "{unknown}"
    );
    assert_eq!(server.get_json("/api/flaky?last=0").await.0, 400);

    // Reports: the third shop run's failures on the hop are marked (its window: runs 1-3); the
    // first run's are not (nothing before it), nor the steady suite's.
    let third = report(&server, &runs[2].0).await;
    let marked: Vec<&Value> = third["failures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| on_charge(f))
        .collect();
    assert!(!marked.is_empty());
    for f in &marked {
        assert_eq!(f["flaky"], true, "{f}");
    }
    for r in [&runs[0].1, &steady[1].1] {
        for f in r["failures"].as_array().unwrap() {
            assert!(f.get("flaky").is_none(), "{f}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("third.json");
    std::fs::write(&path, third.to_string()).unwrap();
    let out = crate::formats::run_python(
        crate::formats::VALIDATE,
        &[
            repo_root()
                .join("docs/report.schema.json")
                .to_str()
                .unwrap(),
            path.to_str().unwrap(),
        ],
    );
    assert!(out.ends_with("errors 0\n"), "{out}");
    // Text reports say it too.
    let (status, text) = server
        .get_text(&format!("/api/runs/{}/report?format=text", runs[2].0))
        .await;
    assert_eq!(status, 200);
    assert!(text.contains("(flaky"), "{text}");

    // The trend of the edge, oldest first, as each run's report states its calls and errors.
    let (status, history) = server
        .get_json(&format!(
            "/api/history?caller={CALLER}&callee={CALLEE}&suite=shop"
        ))
        .await;
    assert_eq!(status, 200, "{history}");
    let points = history.as_array().unwrap();
    assert_eq!(points.len(), 4, "{history:#}");
    for ((id, rep), p) in runs.iter().zip(points) {
        let e = edge(rep);
        assert_eq!(p["run"], id.as_str(), "{p}");
        assert_eq!(p["name"], rep["run"]["name"], "{p}");
        assert_eq!(p["calls"], e["calls"], "{p}");
        assert_eq!(p["errors"], e["errors"], "{p}");
        assert_eq!(p["status"], e["status"], "{p}");
        assert_eq!(p["p95_ms"], e["latency_ms"]["client"]["p95"], "{p}");
    }
    let created: Vec<u64> = points
        .iter()
        .map(|p| p["created_ns"].as_u64().unwrap())
        .collect();
    assert!(
        created.windows(2).all(|w| w[0] <= w[1]),
        "oldest first: {created:?}"
    );
    let statuses: Vec<&str> = points
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failing", "covered", "failing", "covered"]);
    // One interface, and a window ending at a given run.
    let (_, iface) = server
        .get_json(&format!(
            "/api/history?caller={CALLER}&callee={CALLEE}&operation=POST%20%2Fcharge&run={}&last=2",
            runs[2].0
        ))
        .await;
    let ids: Vec<&str> = iface
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["run"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [runs[1].0.as_str(), runs[2].0.as_str()], "{iface:#}");
    let charge = |rep: &Value| {
        edge(rep)["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["operation"] == OPERATION)
            .unwrap()
            .clone()
    };
    for (p, rep) in iface
        .as_array()
        .unwrap()
        .iter()
        .zip([&runs[1].1, &runs[2].1])
    {
        let i = charge(rep);
        assert_eq!(
            (&p["calls"], &p["errors"], &p["status"]),
            (&i["calls"], &i["errors"], &i["status"]),
            "{p}"
        );
    }
    assert_eq!(server.get_json("/api/history?caller=checkout").await.0, 400);

    // The edge page of the third run: its trend (runs 1-3, this one outlined) as inline SVG,
    // and the flaky badge on its failures.
    let resp = server
        .http
        .get(server.api(&format!(
            "/runs/{}/edges?caller={CALLER}&callee={CALLEE}",
            runs[2].0
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("content-security-policy"));
    let html = resp.text().await.unwrap();
    let chart = html.find("id=\"trend\"").expect("the trend chart");
    let svg_start = html[..chart]
        .rfind("<svg")
        .expect("the chart is an svg element");
    let svg = &html[svg_start..svg_start + html[svg_start..].find("</svg>").unwrap()];
    for (id, _) in &runs[..3] {
        assert!(
            svg.contains(&format!("data-run=\"{id}\"")),
            "no column for {id}"
        );
    }
    assert!(
        !svg.contains(&format!("data-run=\"{}\"", runs[3].0)),
        "a later run in the window"
    );
    assert!(svg.contains("class=\"current\""));
    assert!(
        svg.contains("bar st-failing") && svg.contains("bar st-covered"),
        "{svg}"
    );
    assert!(html.contains("id=\"trend-table\""));
    assert!(
        html.contains("class=\"badge flaky\""),
        "no flaky badge on the edge's failures"
    );
    let (status, run_page) = server.get_text(&format!("/runs/{}", runs[2].0)).await;
    assert_eq!(status, 200);
    assert!(
        run_page.contains("class=\"badge flaky\""),
        "no flaky badge on the run page"
    );

    // The command, over the API and from the store.
    let ui = server.addrs.ui_url();
    let json: Value = serde_json::from_str(&tracecov(&[
        "flaky", "--server", &ui, "--suite", "shop", "--format", "json",
    ]))
    .unwrap();
    assert_eq!(json, flaky);
    let text = tracecov(&["flaky", "--server", &ui, "--suite", "shop"]);
    assert!(text.contains("checkout -> payments POST /charge"), "{text}");
    assert!(text.contains("failed in 2 of 4 runs"), "{text}");
    let steady_text = tracecov(&["flaky", "--server", &ui]);
    assert!(
        steady_text.starts_with("no flaky hop in suite \"steady\""),
        "{steady_text}"
    );
    // The store the server writes, read beside it.
    let data = server.dir.path().join("data");
    let from_store: Value = serde_json::from_str(&tracecov(&[
        "flaky",
        "--data",
        data.to_str().unwrap(),
        "--suite",
        "shop",
        "--test-service",
        demo::TEST_SERVICE,
        "--format",
        "json",
        "--wait",
        "0s",
    ]))
    .unwrap();
    assert_eq!(from_store, flaky);
    server.stop().await;
}
