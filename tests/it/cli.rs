//! The commands as a user runs them: `tracecov run`, `tracecov report`, `tracecov demo`.

use std::process::{Command, Output};

use crate::common::repo_root;
use crate::python_sdk::python;

fn tracecov(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracecov"))
        .args(args)
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("GITHUB_RUN_ID")
        .env_remove("CI_PIPELINE_ID")
        .env_remove("BUILD_NUMBER")
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

#[test]
fn run_wraps_a_test_command_reports_its_run_and_keeps_its_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let py = python();
    let script = repo_root().join("tests/python/suite_export.py");
    let (py, script) = (py.to_str().unwrap(), script.to_str().unwrap());

    let ok = tracecov(&[
        "run", "--name", "green", "--settle", "300ms", "--data", data, "--format", "json", "--",
        py, script,
    ]);
    assert!(ok.status.success(), "{}", text(&ok));
    let report: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(report["run"]["name"], "green");
    assert_eq!(report["run"]["tests"]["total"], 2, "{report}");
    assert_eq!(report["run"]["tests"]["failed"], 0);
    let edge = &report["edges"][0];
    assert_eq!(edge["caller"], "py-suite");
    assert_eq!(edge["callee"], "ext:inventory.example:8080");
    assert_eq!(
        edge["tests"],
        serde_json::json!(["test_buy_item", "test_list_items"])
    );
    let op = edge["interfaces"][0]["operation"].as_str().unwrap();
    assert!(
        !op.contains("page=2"),
        "a query string became an interface: {op}"
    );

    let failed = tracecov(&[
        "run", "--name", "red", "--settle", "300ms", "--data", data, "--", py, script, "fail",
    ]);
    assert_eq!(failed.status.code(), Some(3), "{}", text(&failed));
    let out = String::from_utf8_lossy(&failed.stdout);
    assert!(
        out.contains("2 total, 1 passed, 1 failed"),
        "{}",
        text(&failed)
    );

    // The stored runs are reported again from the store, by name and as `latest`.
    let again = tracecov(&[
        "report", "--data", data, "--run", "green", "--format", "json",
    ]);
    assert!(again.status.success(), "{}", text(&again));
    let stored: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(stored, report, "the store reports what `run` printed");
    let latest = tracecov(&["report", "--data", data, "--run", "latest"]);
    assert!(String::from_utf8_lossy(&latest.stdout).contains("run red"));

    let missing = tracecov(&["report", "--data", data, "--run", "nope"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no run \"nope\""));
}

#[test]
fn report_without_a_store_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = tracecov(&["report", "--data", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no tracecov store"));
}

#[test]
fn demo_exits_zero_with_the_whole_graph_even_when_standard_ports_are_taken() {
    // Hold whichever standard ports are free; the demo must carry on with free ones.
    let _held: Vec<std::net::TcpListener> = ["127.0.0.1:4317", "127.0.0.1:4318", "127.0.0.1:4320"]
        .iter()
        .filter_map(|a| std::net::TcpListener::bind(a).ok())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let out = tracecov(&[
        "demo",
        "--exit",
        "--fault",
        "none",
        "--data",
        dir.path().to_str().unwrap(),
    ]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("Suite: 14 passed, 0 failed"), "{all}");
    for edge in [
        "shop-tests -> gateway",
        "users -> db:sqlite/users",
        "checkout -> payments",
        "checkout -> queue:",
        "-> inventory",
        "notifications -> ext:email-provider",
    ] {
        assert!(all.contains(edge), "missing {edge}: {all}");
    }
}

#[test]
fn report_of_several_runs_is_their_union() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let (py, script) = (python(), repo_root().join("tests/python/suite_export.py"));
    let (py, script) = (py.to_str().unwrap(), script.to_str().unwrap());
    for (name, arg) in [("first", "pass"), ("second", "fail")] {
        tracecov(&[
            "run", "--name", name, "--settle", "300ms", "--data", data, "--", py, script, arg,
        ]);
    }
    let out = tracecov(&[
        "report", "--data", data, "--run", "first", "--run", "second", "--format", "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["run"]["name"], "first + second");
    assert_eq!(report["run"]["tests"]["total"], 4, "{report}");
    assert_eq!(report["run"]["tests"]["failed"], 1, "{report}");
    assert_eq!(report["edges"][0]["calls"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_ci_jobs_of_one_pipeline_merge_into_one_run() {
    let server = crate::common::TestServer::start().await;
    let endpoint = server.addrs.otlp_http_url();
    let script = repo_root().join("tests/python/suite_export.py");
    let jobs: Vec<_> = ["pass", "fail"]
        .iter()
        .map(|arg| {
            Command::new(python())
                .arg(&script)
                .arg(arg)
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
                .env(
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "cicd.pipeline.run.id=pipeline-4711",
                )
                .spawn()
                .unwrap()
        })
        .collect();
    for mut job in jobs {
        tokio::task::spawn_blocking(move || job.wait().unwrap())
            .await
            .unwrap();
    }
    let (status, runs) = server.get_json("/api/runs").await;
    assert_eq!(status, 200);
    assert_eq!(
        runs.as_array().unwrap().len(),
        1,
        "one run for the pipeline: {runs}"
    );
    assert_eq!(runs[0]["name"], "pipeline-4711");
    let (_, report) = server.get_json("/api/runs/pipeline-4711/report").await;
    assert_eq!(report["run"]["tests"]["total"], 4, "{report}");
    assert_eq!(report["run"]["traces"], 4, "{report}");
    server.stop().await;
}

/// `tracecov demo` without `--exit` keeps serving: the run page it prints answers with the
/// heatmap and the graph of the suite it just ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_the_run_page_it_prints() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tracecov"))
        .args(["demo", "--data", dir.path().to_str().unwrap()])
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("GITHUB_RUN_ID")
        .env_remove("CI_PIPELINE_ID")
        .env_remove("BUILD_NUMBER")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (run_page, ui) = tokio::task::spawn_blocking(move || {
        let mut run_page = None;
        let mut seen = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            seen.push_str(&line);
            seen.push('\n');
            if let Some(url) = line.strip_prefix("Run page (heatmap, service graph, failures): ") {
                run_page = Some(url.to_owned());
            }
            if let Some(rest) = line.strip_prefix("Web UI at ") {
                let ui = rest.split_whitespace().next().unwrap().to_owned();
                return (run_page.expect("the run page is printed first"), ui);
            }
        }
        panic!("the demo never said where its UI is:\n{seen}");
    })
    .await
    .unwrap();
    assert!(run_page.starts_with(&format!("{ui}/runs/")), "{run_page}");
    let http = crate::common::http();
    let page = http.get(&run_page).send().await.unwrap();
    let status = page.status();
    let csp = page.headers().get("content-security-policy").cloned();
    let body = page.text().await.unwrap();
    let runs = http.get(&ui).send().await.unwrap();
    let runs_status = runs.status();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "{body}");
    assert!(csp.is_some());
    for needle in [
        "Coverage heatmap",
        "data-caller=\"checkout\" data-callee=\"payments\"",
        "id=\"graph\"",
        "callee_error",
    ] {
        assert!(body.contains(needle), "the run page lacks {needle}");
    }
    assert_eq!(runs_status, 200);
}

/// `run --ingest-token --token`: the embedded collector requires both, and the command's SDK
/// gets the ingest token through OTEL_EXPORTER_OTLP_HEADERS (without it, its exports would be
/// refused and the run would have no tests).
#[test]
fn run_passes_its_ingest_token_to_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let py = python();
    let script = repo_root().join("tests/python/suite_export.py");
    let out = Command::new(env!("CARGO_BIN_EXE_tracecov"))
        .args([
            "run", "--name", "guarded", "--settle", "300ms", "--format", "json",
        ])
        .args(["--ingest-token", "ing-run", "--token", "api-run", "--data"])
        .arg(&data)
        .arg("--")
        .args([&py, &script])
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("OTEL_EXPORTER_OTLP_HEADERS")
        .env_remove("GITHUB_RUN_ID")
        .env_remove("CI_PIPELINE_ID")
        .env_remove("BUILD_NUMBER")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["run"]["tests"]["total"], 2, "{report}");
}
