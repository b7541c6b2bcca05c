//! `tracecov mcp` driven by a real MCP client: the official MCP Python SDK (PyPI `mcp`, pinned in
//! tests/python/requirements.txt) starts `tracecov mcp --data DIR` on the demo shop's store over
//! stdio, lists the tools and calls them (tests/python/mcp_client.py); every answer is checked
//! against `tracecov report --format json` of the same store. The same again with
//! `tracecov mcp --server` against a running `tracecov serve` that requires a token.

use std::process::Command;

use serde_json::{Value, json};

use crate::common::{repo_root, spawn_serve};
use crate::formats::{demo_report, tracecov};
use crate::python_sdk::python;

const SECRET: &str = "s3cr3t-mcp-token";
const SECRET_TRACE: &str = "5ec0000000000000000000000000c0de";

/// A store holding an imported trace whose span carries a bearer token, then the demo shop's run
/// with `payments:500` (the latest run: failing tests, untested critical edges).
fn store(dir: &std::path::Path) -> String {
    let data = dir.join("data");
    let data = data.to_str().unwrap().to_owned();
    let attr = |k: &str, v: &str| json!({"key": k, "value": {"stringValue": v}});
    let doc = json!({"resourceSpans": [{
        "resource": {"attributes": [attr("service.name", "suite")]},
        "scopeSpans": [{"scope": {"name": "it"}, "spans": [{
            "traceId": SECRET_TRACE, "spanId": "5ec0000000000001", "name": "GET", "kind": 3,
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000100000000",
            "attributes": [
                attr("http.request.method", "GET"),
                attr("http.request.header.authorization", &format!("Bearer {SECRET}")),
            ],
        }]}],
    }]});
    let file = dir.join("secret.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    tracecov(&["import", file.to_str().unwrap(), "--data", &data]);
    tracecov(&["demo", "--exit", "--fault", "payments:500", "--data", &data]);
    data
}

/// Runs tests/python/mcp_client.py against `tracecov ARGS…`: what it printed, parsed, and the
/// raw text.
fn client(args: &[&str]) -> (Value, String) {
    parse(run_client(args))
}

fn run_client(args: &[&str]) -> std::process::Output {
    Command::new(python())
        .arg(repo_root().join("tests/python/mcp_client.py"))
        .arg(env!("CARGO_BIN_EXE_tracecov"))
        .args(args)
        .env("MCP_SECRET_TRACE", SECRET_TRACE)
        .env_remove("TRACECOV_TOKEN")
        .output()
        .unwrap()
}

fn parse(out: std::process::Output) -> (Value, String) {
    assert!(
        out.status.success(),
        "the MCP client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let got = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the client printed no JSON ({e}): {text}"));
    (got, text)
}

#[test]
fn an_mcp_client_gets_the_reports_failures_bug_reports_and_untested_edges() {
    let dir = tempfile::tempdir().unwrap();
    let data = store(dir.path());
    let report: Value = serde_json::from_str(&demo_report(&data, "json")).unwrap();
    let manifest = repo_root().join("src/demo/tracecov.yaml");
    let manifest = manifest.to_str().unwrap();
    let (got, text) = client(&["mcp", "--data", &data, "--manifest", manifest]);
    check(&got, &text, &report);
}

/// `tracecov mcp --server` asks a running `tracecov serve` (with a token) through its API, and
/// answers the same.
#[test]
fn an_mcp_client_gets_the_same_answers_through_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = store(dir.path());
    let report: Value = serde_json::from_str(&demo_report(&data, "json")).unwrap();
    let manifest = repo_root().join("src/demo/tracecov.yaml");
    let manifest = manifest.to_str().unwrap();
    let mut serve = spawn_serve(
        std::path::Path::new(&data),
        // Links as the report on disk writes them (the default public URL).
        &[
            "--manifest",
            manifest,
            "--token",
            "mcp-t0ken",
            "--public-url",
            "http://127.0.0.1:4320",
        ],
    );
    let out = run_client(&["mcp", "--server", &serve.ui, "--token", "mcp-t0ken"]);
    // The server goes before any assertion can leave it running.
    serve.child.kill().unwrap();
    serve.child.wait().unwrap();
    let (got, text) = parse(out);
    check(&got, &text, &report);
}

/// What the client got, held to the JSON report of the same store.
fn check(got: &Value, text: &str, report: &Value) {
    assert_eq!(got["server"], "tracecov");
    let tools = got["tools"].as_object().unwrap();
    for name in [
        "list_runs",
        "run_summary",
        "failures",
        "bug_report",
        "untested",
        "diff",
        "flaky",
        "trace",
    ] {
        let description = tools[name].as_str().unwrap_or_default();
        assert!(description.len() > 80, "{name}: {description:?}");
    }

    // The failures, paged: the first page says how to get the rest, and the pages together are
    // the report's failures.
    let failures = report["failures"].as_array().unwrap();
    assert!(failures.len() > 1, "the demo's fault fails several tests");
    let first = &got["failures_first_page"];
    assert_eq!(first["run"], report["run"]["id"]);
    assert_eq!(first["total"], failures.len());
    assert_eq!(first["returned"], 1);
    assert_eq!(
        first["more"],
        format!(
            "{} more failures: call `failures` with `offset` 1 and `run` \"latest\"",
            failures.len() - 1
        )
    );
    assert_eq!(&got["failures"], &report["failures"]);

    // The bug report of the first failure: its object as the report writes it, plus run and path.
    let bug = got["bug_json"].as_object().unwrap();
    for (k, v) in failures[0].as_object().unwrap() {
        assert_eq!(&bug[k], v, "bug report field {k}");
    }
    assert_eq!(bug["run"]["id"], report["run"]["id"]);
    assert!(!bug["path"].as_array().unwrap().is_empty());
    let markdown = &got["bug_markdown"];
    assert_eq!(markdown["is_error"], false);
    let trace_id = failures[0]["trace_id"].as_str().unwrap();
    assert!(markdown["text"].as_str().unwrap().contains(trace_id));

    // The untested edges and interfaces, as the report's coverage lists them.
    assert_eq!(
        got["untested"]["untested"], report["coverage"]["untested"],
        "{}",
        got["untested"]
    );
    assert!(got["untested"].get("more").is_none());
    let summary = &got["summary"];
    assert_eq!(summary["failures"]["total"], failures.len());
    assert_eq!(
        summary["coverage"]["untested"],
        report["coverage"]["untested"].as_array().unwrap().len()
    );
    assert_eq!(summary["coverage"]["edges"], report["coverage"]["edges"]);

    // The failing trace's spans, the failing one among them.
    let trace = &got["trace"];
    assert_eq!(trace["trace_id"], trace_id);
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(trace["total"], spans.len());
    assert!(spans.iter().any(|s| s["span_id"] == failures[0]["span_id"]));

    // Redacted: the bearer token never reaches the agent.
    let secret = serde_json::to_string(&got["secret_trace"]).unwrap();
    assert!(secret.contains("[REDACTED]"), "{secret}");
    assert!(!text.contains(SECRET));

    // Bad arguments are tool errors that say what is wrong, and the server keeps answering.
    assert_eq!(got["unknown_run"]["is_error"], true);
    let text = got["unknown_run"]["text"].as_str().unwrap();
    assert!(text.contains("no run \"no-such-run\""), "{text}");
    assert_eq!(got["bad_trace"]["is_error"], true);
    let text = got["bad_trace"]["text"].as_str().unwrap();
    assert!(text.contains("malformed trace id"), "{text}");
    assert_eq!(got["runs"]["total"], 2);
    assert_eq!(got["runs"]["runs"][0]["id"], report["run"]["id"]);

    // The diff from the imported run to the demo's: every failure is new.
    assert_eq!(got["diff"]["run"]["id"], report["run"]["id"]);
    assert_eq!(got["diff"]["base"]["id"], got["runs"]["runs"][1]["id"]);
    assert_eq!(
        got["diff"]["failures"]["new"].as_array().unwrap().len(),
        failures.len(),
        "{}",
        got["diff"]
    );
    // One run of the demo's suite: nothing can have flipped.
    assert_eq!(got["flaky"]["suite"], report["run"]["suite"]);
    assert_eq!(got["flaky"]["total"], 0);
}
