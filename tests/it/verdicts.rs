//! `tracecov gate`, `impact` and `bug` as a CI step or a developer runs them, on a demo run with
//! its two default faults (payments:500, email:down) and the demo's manifest.

use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::common::repo_root;
use crate::python_sdk::python;

fn tracecov(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracecov"))
        .args(args)
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("TRACECOV_MANIFEST")
        .output()
        .unwrap()
}

fn all(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One demo run shared by the tests of this module: (data dir, manifest path).
fn demo_store() -> &'static (tempfile::TempDir, String, String) {
    static STORE: OnceLock<(tempfile::TempDir, String, String)> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data").to_str().unwrap().to_owned();
        let out = tracecov(&["demo", "--exit", "--data", &data]);
        assert!(out.status.success(), "{}", all(&out));
        let manifest = repo_root().join("src/demo/tracecov.yaml");
        (dir, data, manifest.to_str().unwrap().to_owned())
    })
}

fn gate(extra: &[&str]) -> Output {
    let (_, data, manifest) = demo_store();
    let mut args = vec![
        "gate",
        "--data",
        data,
        "--manifest",
        manifest,
        "--run",
        "demo",
    ];
    args.extend_from_slice(extra);
    tracecov(&args)
}

#[test]
fn gate_passes_and_fails_each_condition_and_names_what_failed() {
    // 12 of 16 expected edges are covered (75 %).
    let ok = gate(&["--min-edge-coverage", "60"]);
    assert_eq!(ok.status.code(), Some(0), "{}", all(&ok));
    assert!(all(&ok).contains("gate passed"));

    let low = gate(&["--min-edge-coverage", "90"]);
    assert_eq!(low.status.code(), Some(1), "{}", all(&low));
    assert!(
        all(&low).contains("untested checkout -> notifications"),
        "{}",
        all(&low)
    );

    let iface = gate(&["--min-interface-coverage", "95"]);
    assert_eq!(iface.status.code(), Some(1), "{}", all(&iface));

    let critical = gate(&["--critical"]);
    assert_eq!(critical.status.code(), Some(1));
    let text = all(&critical);
    assert!(
        text.contains("untested gateway -> payments (critical)"),
        "{text}"
    );
    assert!(
        text.contains("failing checkout -> payments POST /charge (critical)"),
        "{text}"
    );

    let failures = gate(&["--no-failures"]);
    assert_eq!(failures.status.code(), Some(1));
    assert!(all(&failures).contains("failed test checkout_paid"));

    let usage = gate(&["--min-edge-coverage", "120"]);
    assert_eq!(usage.status.code(), Some(2), "{}", all(&usage));
    let none = gate(&[]);
    assert_eq!(none.status.code(), Some(2), "{}", all(&none));
}

#[test]
fn a_gate_that_could_not_fail_is_refused() {
    // No manifest and nothing outside the run: the expected set would be the run itself.
    let (_, data, _) = demo_store();
    let out = tracecov(&[
        "gate",
        "--data",
        data,
        "--run",
        "demo",
        "--min-edge-coverage",
        "10",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    assert!(all(&out).contains("manifest"), "{}", all(&out));
}

#[test]
fn impact_lists_the_tests_that_crossed_a_changed_service() {
    let (_, data, _) = demo_store();
    let out = tracecov(&[
        "impact",
        "--data",
        data,
        "--run",
        "demo",
        "--changed",
        "payments",
    ]);
    assert!(out.status.success(), "{}", all(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "checkout_card_declined\ncheckout_paid\norder_confirmation_email\nview_order\n"
    );
    let json = tracecov(&[
        "impact",
        "--data",
        data,
        "--run",
        "demo",
        "--changed",
        "db:sqlite/users",
        "--format",
        "json",
    ]);
    let tests: Vec<String> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        tests,
        [
            "login",
            "login_bad_password",
            "password_reset_email",
            "signup"
        ]
    );
}

#[test]
fn bug_writes_the_report_of_a_failure_and_refuses_clearly() {
    let (dir, data, manifest) = demo_store();
    let report = tracecov(&[
        "report",
        "--data",
        data,
        "--run",
        "demo",
        "--format",
        "json",
        "--manifest",
        manifest,
        "--test-service",
        "shop-tests",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let failure = report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["class"] == "unreachable")
        .expect("the email:down failure")
        .clone();
    let trace = failure["trace_id"].as_str().unwrap();

    let md = tracecov(&["bug", trace, "--data", data, "--test-service", "shop-tests"]);
    assert!(md.status.success(), "{}", all(&md));
    let md = String::from_utf8_lossy(&md.stdout);
    assert!(
        md.contains("unreachable") && md.contains("ext:email-provider"),
        "{md}"
    );
    assert!(md.contains("```mermaid"), "{md}");

    let attach = dir.path().join("trace.jsonl");
    let json = tracecov(&[
        "bug",
        trace,
        "--data",
        data,
        "--test-service",
        "shop-tests",
        "--format",
        "json",
        "--attach",
        attach.to_str().unwrap(),
    ]);
    assert!(json.status.success(), "{}", all(&json));
    let mut bug: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(bug["run"]["name"], "demo");
    assert!(bug["path"].as_array().unwrap().len() >= 2);
    // The failure's object exactly as in the report, plus `run` and `path`.
    let obj = bug.as_object_mut().unwrap();
    obj.remove("run");
    obj.remove("path");
    assert_eq!(bug, failure);
    assert!(
        std::fs::read_to_string(&attach)
            .unwrap()
            .contains("resourceSpans")
    );

    for (args, expect) in [
        (vec!["bug", "xyz"], "malformed trace id"),
        (
            vec!["bug", "0123456789abcdef0123456789abcdef"],
            "holds no spans",
        ),
    ] {
        let mut args = args.clone();
        args.extend_from_slice(&["--data", data]);
        let out = tracecov(&args);
        assert_eq!(out.status.code(), Some(2), "{}", all(&out));
        assert!(all(&out).contains(expect), "{}", all(&out));
    }
}

#[test]
fn run_with_gate_flags_fails_when_coverage_falls_short() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("tracecov.yaml");
    std::fs::write(
        &manifest,
        "version: 1\nedges:\n  - py-suite -> ext:inventory.example:8080\n  - py-suite -> payments\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let script = repo_root().join("tests/python/suite_export.py");
    let py = python();
    let base = [
        "run",
        "--settle",
        "300ms",
        "--data",
        data.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
    ];
    let mut short = base.to_vec();
    short.extend_from_slice(&[
        "--min-edge-coverage",
        "80",
        "--",
        py.to_str().unwrap(),
        script.to_str().unwrap(),
    ]);
    let out = tracecov(&short);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(
        all(&out).contains("untested py-suite -> payments"),
        "{}",
        all(&out)
    );

    let mut enough = base.to_vec();
    enough.extend_from_slice(&[
        "--min-edge-coverage",
        "50",
        "--",
        py.to_str().unwrap(),
        script.to_str().unwrap(),
    ]);
    let out = tracecov(&enough);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
}

#[test]
fn trace_links_follow_the_chosen_preset_or_template() {
    let (_, data, _) = demo_store();
    let links = |flag: &[&str]| -> Vec<String> {
        let mut args = vec![
            "report", "--data", data, "--run", "demo", "--format", "json",
        ];
        args.extend_from_slice(flag);
        let out = tracecov(&args);
        assert!(out.status.success(), "{}", all(&out));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        r["failures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["link"].as_str().unwrap().to_owned())
            .collect()
    };
    let default = links(&[]);
    assert!(!default.is_empty());
    assert!(
        default
            .iter()
            .all(|l| l.starts_with("http://127.0.0.1:4320/traces/")),
        "{default:?}"
    );
    let public = links(&["--public-url", "https://ci.example.com/tracecov/"]);
    assert!(
        public[0].starts_with("https://ci.example.com/tracecov/traces/"),
        "{public:?}"
    );
    let jaeger = links(&["--trace-links", "jaeger=http://jaeger:16686"]);
    assert!(
        jaeger[0].starts_with("http://jaeger:16686/trace/") && jaeger[0].contains("?uiFind="),
        "{jaeger:?}"
    );
    let custom = links(&["--trace-links", "https://x.example/t/{trace_id}#{span_id}"]);
    assert!(
        custom[0].starts_with("https://x.example/t/") && custom[0].contains('#'),
        "{custom:?}"
    );
    let bad = tracecov(&[
        "report",
        "--data",
        data,
        "--trace-links",
        "https://x.example/none",
    ]);
    assert_eq!(bad.status.code(), Some(2), "{}", all(&bad));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bug_over_a_server_matches_the_store_and_attaches_the_trace() {
    let (dir, data, _) = demo_store();
    let server = crate::common::TestServer::start_with(|c| {
        c.data_dir = data.into();
        c.test_services = vec!["shop-tests".into()];
    })
    .await;
    let (_, report) = server.get_json("/api/runs/demo/report").await;
    let trace = report["failures"][0]["trace_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ui = server.addrs.ui_url();
    let attach = dir.path().join("over-server.jsonl");
    let (d, a, t) = (data.clone(), attach.clone(), trace.clone());
    let (local, remote) = tokio::task::spawn_blocking(move || {
        let local = tracecov(&[
            "bug",
            &t,
            "--data",
            &d,
            "--test-service",
            "shop-tests",
            "--format",
            "json",
        ]);
        let remote = tracecov(&[
            "bug",
            &t,
            "--server",
            &ui,
            "--format",
            "json",
            "--attach",
            a.to_str().unwrap(),
        ]);
        (local, remote)
    })
    .await
    .unwrap();
    assert!(remote.status.success(), "{}", all(&remote));
    let local: serde_json::Value = serde_json::from_slice(&local.stdout).unwrap();
    let mut remote: serde_json::Value = serde_json::from_slice(&remote.stdout).unwrap();
    // Links differ by base URL only (the server's own UI address).
    remote["link"] = local["link"].clone();
    assert_eq!(local, remote);
    let attached = std::fs::read_to_string(&attach).unwrap();
    assert!(
        attached.contains(&trace.to_uppercase()) || attached.contains(&trace),
        "{attached}"
    );
    server.stop().await;
}

#[test]
fn a_manifest_name_no_trace_shows_is_a_warning_naming_the_closest() {
    let (dir, data, _) = demo_store();
    let manifest = dir.path().join("typo.yaml");
    std::fs::write(&manifest, "version: 1\nedges:\n  - checkout -> paymnets\n").unwrap();
    let out = tracecov(&[
        "report",
        "--data",
        data,
        "--run",
        "demo",
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", all(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning") && stderr.contains("paymnets"),
        "{stderr}"
    );
    assert!(
        stderr.contains("payments"),
        "the closest name seen: {stderr}"
    );
    assert!(
        !stderr.contains("\"checkout\""),
        "checkout is seen: {stderr}"
    );

    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "version: 1\nedges:\n  - caller: a\n    calee: b\n").unwrap();
    let out = tracecov(&[
        "report",
        "--data",
        data,
        "--manifest",
        broken.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("broken.yaml:4") && stderr.contains("calee"),
        "{stderr}"
    );
}
