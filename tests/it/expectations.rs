//! Expectations end to end (#19): the demo shop against a manifest with one expectation per
//! rule, healthy and under `payments:double-charge`, which charges every order twice while every
//! test still passes: only `calls {max: 1}` sees it.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use tracecov::demo::{self, Fault};

use crate::common::TestServer;
use crate::metrics::demo_run_in;

const MANIFEST: &str = r#"
version: 1
test_services: [shop-tests]
expect:
  - name: checkout charges once
    caller: checkout
    callee: payments
    operation: "POST /charge"
    calls: {max: 1}
  - name: no N+1
    repeated: {max: 3}
  - name: payments answers in time
    callee: payments
    duration_ms: {max: 2000}
  - name: never the real email provider
    callee: "ext:sendgrid"
    calls: {max: 0}
  - name: charges are POSTs
    callee: payments
    attributes: {"http.request.method": POST}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_charge_breaks_calls_max_one_while_every_test_passes() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("tracecov.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let server = TestServer::start_with(|c| c.manifest = Some(manifest.clone())).await;

    let healthy = demo_run_in(&server, json!({"name": "healthy"}), vec![Fault::None]).await;
    assert_eq!(
        healthy["violations"],
        json!([]),
        "{:#}",
        healthy["violations"]
    );
    assert_eq!(healthy["expectations"].as_array().unwrap().len(), 5);
    assert_eq!(
        healthy["coverage"]["edges"]["expected"].as_u64().unwrap(),
        healthy["edges"].as_array().unwrap().len() as u64,
        "a manifest of expectations changes no coverage: what is seen is expected"
    );

    // demo_run_in asserts the suite's own outcome: every test passes under a double charge.
    assert!(demo::expected_failures(&[Fault::PaymentsDoubleCharge]).is_empty());
    let doubled = demo_run_in(
        &server,
        json!({"name": "doubled"}),
        vec![Fault::PaymentsDoubleCharge],
    )
    .await;
    assert_eq!(doubled["failures"], json!([]));
    let violations = doubled["violations"].as_array().unwrap();
    let tests: BTreeSet<&str> = violations
        .iter()
        .map(|v| v["test"].as_str().unwrap())
        .collect();
    assert_eq!(
        tests,
        BTreeSet::from(["checkout_paid", "order_confirmation_email", "view_order"]),
        "the tests whose order was paid (a declined card is not charged again): {violations:#?}"
    );
    for v in violations {
        assert_eq!(v["expectation"], "checkout charges once", "{v:#}");
        assert_eq!(
            v["hop"],
            json!({"caller": "checkout", "callee": "payments", "operation": "POST /charge"})
        );
        assert_eq!(v["expected"], "at most 1 call");
        assert_eq!(v["observed"], "2 calls");
        // The offending span is the second charge's client span, in the test's trace.
        let (status, trace) = server
            .get_json(&format!("/api/traces/{}", v["trace_id"].as_str().unwrap()))
            .await;
        assert_eq!(status, 200);
        let span = trace["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["span_id"] == v["span_id"])
            .unwrap_or_else(|| panic!("no span {} in {trace:#}", v["span_id"]));
        assert_eq!(span["kind"], "client", "{span:#}");
        assert_eq!(span["service"], "checkout");
        assert!(v["link"].as_str().unwrap().contains("/traces/"));
    }

    // The gate fails on them, naming each; the healthy run passes it.
    let (_, verdict) = server
        .get_json("/api/runs/doubled/gate?expectations=true")
        .await;
    assert_eq!(verdict["exit_code"], 1, "{verdict}");
    let text = verdict["text"].as_str().unwrap();
    assert!(
        text.contains("--expectations: 3 broken expectations"),
        "{text}"
    );
    assert!(text.contains("checkout charges once: view_order"), "{text}");
    let (_, verdict) = server
        .get_json("/api/runs/healthy/gate?expectations=true")
        .await;
    assert_eq!(verdict["exit_code"], 0, "{verdict}");

    // JUnit: a test case per expectation, the broken one failed.
    let report: tracecov::report::Report = serde_json::from_value(doubled.clone()).unwrap();
    let junit = tracecov::report::junit(&report);
    assert!(
        junit.contains("classname=\"expectations\" name=\"checkout charges once\">"),
        "{junit}"
    );
    assert!(
        junit.contains("classname=\"expectations\" name=\"no N+1\"/>"),
        "{junit}"
    );

    // /metrics: the latest run's violations per expectation.
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("tracecov_violations{expectation=\"checkout charges once\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tracecov_violations{expectation=\"no N+1\"} 0"),
        "{metrics}"
    );

    // The run page lists them, each with its bug report.
    let (status, page) = server.get_text("/runs/doubled").await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"violations\""), "{page}");

    bug_reports_of_a_violation(&server, &violations[0]).await;
    server.stop().await;
}

async fn bug(server: &TestServer, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_tracecov"))
        .arg("bug")
        .args(args)
        .args(["--server", &server.addrs.ui_url()])
        .output()
        .await
        .unwrap()
}

/// `tracecov bug TRACE --span SPAN` on a violation's span: the violation's report object with
/// `run` and `path` (from the test's span down to the offending one), Markdown saying what was
/// expected and what happened, and the span outlined in the trace's waterfall.
async fn bug_reports_of_a_violation(server: &TestServer, v: &Value) {
    let (trace, span) = (
        v["trace_id"].as_str().unwrap(),
        v["span_id"].as_str().unwrap(),
    );
    let out = bug(server, &[trace, "--span", span, "--format", "json"]).await;
    assert!(out.status.success(), "{out:?}");
    let mut json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["run"]["name"], "doubled");
    let path: Vec<String> = json["path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(path.last().map(String::as_str), Some(span), "{json:#}");
    // The path starts at the test's span and goes down, parent to child, through checkout.
    let spans = server.trace(trace).await["spans"]
        .as_array()
        .unwrap()
        .clone();
    let by_id = |id: &str| {
        spans
            .iter()
            .find(|s| s["span_id"] == id)
            .unwrap_or_else(|| panic!("no span {id}"))
            .clone()
    };
    let top = by_id(&path[0]);
    assert_eq!(
        top["attributes"]["test.case.name"], v["test"],
        "the path starts at the test's span: {top:#}"
    );
    for pair in path.windows(2) {
        assert_eq!(by_id(&pair[1])["parent_span_id"], pair[0].as_str());
    }
    assert!(
        path.len() >= 3,
        "test -> checkout server -> charge: {path:?}"
    );
    let obj = json.as_object_mut().unwrap();
    obj.remove("run");
    obj.remove("path");
    assert_eq!(&json, v, "the violation's object exactly as in the report");

    // Without --span, a trace that holds no failure answers with its violation.
    let out = bug(server, &[trace, "--format", "json"]).await;
    assert!(out.status.success(), "{out:?}");
    let first: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(first["expectation"], v["expectation"]);

    let out = bug(server, &[trace, "--span", span]).await;
    assert!(out.status.success(), "{out:?}");
    let md = String::from_utf8(out.stdout).unwrap();
    for want in [
        "broke the expectation \"checkout charges once\" at checkout -> payments (POST /charge)",
        "| Expected | at most 1 call |",
        "| Observed | 2 calls |",
        "— **expectation broken here**",
        "```mermaid",
    ] {
        assert!(md.contains(want), "{want:?} in\n{md}");
    }

    // The waterfall outlines the offending span and links the bug report; the bug page renders.
    let (status, page) = server
        .get_text(&format!("/traces/{trace}?span={span}"))
        .await;
    assert_eq!(status, 200);
    let row = page
        .find(&format!("data-span=\"{span}\""))
        .expect("the offending span's row");
    let opening = &page[page[..row].rfind("<details").unwrap()..row];
    assert!(opening.contains("violated"), "{opening}");
    assert!(page.contains(&format!("/traces/{trace}/bug?span={span}")));
    let (status, page) = server
        .get_text(&format!("/traces/{trace}/bug?span={span}"))
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("expectation broken here"), "{page}");

    // The test's own span holds neither a failure nor a violation: exit 2, said plainly.
    let out = bug(server, &[trace, "--span", &path[0]]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nor a broken expectation on it"), "{err}");
}
