//! `tracecov diff` and the gate's history conditions on the demo shop run twice into one
//! collector, once healthy and once with `payments:500`, both runs of one suite.

use serde_json::{Value, json};
use tracecov::demo::{self, Fault};

use crate::common::TestServer;
use crate::metrics::demo_run_in;

fn run_id(report: &Value) -> String {
    report["run"]["id"].as_str().unwrap().to_owned()
}

fn change<'a>(d: &'a Value, caller: &str, callee: &str, operation: Option<&str>) -> &'a Value {
    d["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["caller"] == caller && c["callee"] == callee && c["operation"].as_str() == operation
        })
        .unwrap_or_else(|| panic!("no change on {caller} -> {callee} {operation:?}: {d:#}"))
}

fn tests_of(failures: &Value) -> std::collections::BTreeSet<String> {
    failures
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["test"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_names_what_broke_and_what_got_fixed_and_the_gate_fails_on_it() {
    let server =
        TestServer::start_with(|c| c.test_services = vec![demo::TEST_SERVICE.into()]).await;
    let healthy = demo_run_in(
        &server,
        json!({"name": "healthy", "suite": "shop"}),
        vec![Fault::None],
    )
    .await;
    let broken = demo_run_in(
        &server,
        json!({"name": "broken", "suite": "shop"}),
        vec![Fault::Payments500],
    )
    .await;
    assert_eq!(healthy["run"]["suite"], "shop");
    let (healthy_id, broken_id) = (run_id(&healthy), run_id(&broken));

    // Forward: the charge is newly failing, with the four tests that pay.
    let (status, d) = server.get_json("/api/diff?base=healthy&run=broken").await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["base"]["id"], healthy_id.as_str());
    assert_eq!(d["run"]["id"], broken_id.as_str());
    let charge = change(&d, "checkout", "payments", Some("POST /charge"));
    assert_eq!(charge["change"], "newly_failing", "{charge:#}");
    assert_eq!(charge["base"]["status"], "covered");
    assert_eq!(charge["run"]["status"], "failing");
    assert_eq!(charge["run"]["errors"], 4);
    let failing: Vec<String> = demo::expected_failures(&[Fault::Payments500])
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        tests_of(&d["failures"]["new"]),
        failing.iter().cloned().collect()
    );
    for f in d["failures"]["new"].as_array().unwrap() {
        assert_eq!(f["hop"]["callee"], "payments", "{f:#}");
        assert!(f["link"].as_str().unwrap().contains("/traces/"), "{f:#}");
    }
    assert!(d["failures"]["fixed"].as_array().unwrap().is_empty());
    // No order gets through: checkout's publish to the queue is newly untested, and coverage
    // fell by that edge.
    assert_eq!(
        change(&d, "checkout", "queue:memory/orders", None)["change"],
        "newly_untested"
    );
    assert!(
        d["coverage"]["edges"]["delta"].as_f64().unwrap() < 0.0,
        "{d:#}"
    );

    // `previous` is the suite's run before this one.
    let (_, prev) = server.get_json("/api/diff?base=previous&run=broken").await;
    assert_eq!(prev["base"]["id"], healthy_id.as_str());

    // Backward: fixed.
    let (_, back) = server.get_json("/api/diff?base=broken&run=healthy").await;
    let charge = change(&back, "checkout", "payments", Some("POST /charge"));
    assert_eq!(charge["change"], "fixed", "{charge:#}");
    assert_eq!(
        tests_of(&back["failures"]["fixed"]),
        failing.iter().cloned().collect()
    );
    assert!(back["failures"]["new"].as_array().unwrap().is_empty());

    // The CLI against the server, as a pull-request comment.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracecov"))
        .args([
            "diff", "previous", "broken", "--format", "markdown", "--server",
        ])
        .arg(format!("http://{}", server.addrs.ui))
        .output()
        .unwrap();
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{md}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(md.contains("#### New failures"), "{md}");
    assert!(md.contains("#### Newly failing"), "{md}");
    assert!(
        md.contains("checkout \\-\\> payments POST \\/charge"),
        "{md}"
    );
    assert!(md.contains("[trace](<http"), "{md}");

    // The gate on the broken run against the previous one.
    let (_, verdict) = server
        .get_json("/api/runs/broken/gate?no_new_failures=true&baseline=previous")
        .await;
    assert_eq!(verdict["exit_code"], 1, "{verdict}");
    let text = verdict["text"].as_str().unwrap();
    assert!(text.contains("--no-new-failures: 4 failures"), "{text}");
    assert!(
        text.contains(
            "new failure checkout_paid: callee_error at checkout -> payments POST /charge"
        ),
        "{text}"
    );
    let (_, verdict) = server
        .get_json("/api/runs/broken/gate?max_coverage_drop=0&baseline=healthy")
        .await;
    assert_eq!(verdict["exit_code"], 1, "{verdict}");
    let text = verdict["text"].as_str().unwrap();
    assert!(text.contains("--max-coverage-drop"), "{text}");
    assert!(
        text.contains("newly untested checkout -> queue:memory/orders"),
        "{text}"
    );
    // The healthy run has nothing new against the broken one; without a baseline the condition
    // cannot be judged.
    let (_, verdict) = server
        .get_json(
            "/api/runs/healthy/gate?no_new_failures=true&max_coverage_drop=100&baseline=broken",
        )
        .await;
    assert_eq!(verdict["exit_code"], 0, "{verdict}");
    let (_, verdict) = server
        .get_json("/api/runs/healthy/gate?no_new_failures=true")
        .await;
    assert_eq!(verdict["exit_code"], 2, "{verdict}");

    // The answer made from the runs' history digests (what `/api/diff` reads) is the one their
    // full analyses give, both ways, with the digests kept (the server's history keeper makes
    // them) and made again from the rollups.
    let reader = tracecov::store::Reader::new(&server.dir.path().join("data"));
    let ctx = tracecov::query::ReportContext {
        analysis: tracecov::graph::AnalysisOptions {
            test_services: vec![demo::TEST_SERVICE.into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let same_as_analysed = |state: &str| {
        for (base, run) in [("healthy", "broken"), ("broken", "healthy")] {
            assert_eq!(
                tracecov::query::diff_runs(&reader, base, run, &ctx).unwrap(),
                tracecov::query::diff_analysed(&reader, base, run, &ctx).unwrap(),
                "diff {base} -> {run}, {state}: digests (left), full analyses (right)"
            );
        }
    };
    same_as_analysed("digests as the server kept them");
    reader
        .with_conn(|c| Ok(c.execute_batch("DELETE FROM run_digests; DELETE FROM run_failures;")?))
        .unwrap();
    same_as_analysed("digests made again");

    // The compare page.
    let (status, html) = server.get_text("/diff?base=previous&run=broken").await;
    assert_eq!(status, 200);
    assert!(html.contains("id=\"diff-new\""), "{html}");
    assert!(html.contains("data-change=\"newly_failing\""), "{html}");
    server.stop().await;
}
