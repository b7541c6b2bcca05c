//! A real test plugin: a pytest suite run with pytest-opentelemetry (from PyPI) under
//! `tracecov run`, calling the demo shop through instrumented `requests`. Each pytest test is a
//! test case with its hops and its result.

use std::process::Command;

use tracecov::demo::{self, Fault, ShopConfig};

use crate::common::{TestServer, repo_root};
use crate::python_sdk::python;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pytest_opentelemetry_tests_become_test_cases_with_their_hops_and_results() {
    let server = TestServer::start_with(|c| c.settle = std::time::Duration::from_millis(500)).await;
    let shop = demo::start(ShopConfig {
        otlp_endpoint: server.addrs.otlp_http_url(),
        faults: vec![Fault::None],
        resource_attributes: Vec::new(),
    })
    .await
    .unwrap();
    let pytest = python().with_file_name("pytest");
    let suite = repo_root().join("tests/python/shop_suite");
    let ui = server.addrs.ui_url();
    let gateway = shop.gateway_url().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tracecov"))
            .args([
                "run", "--name", "pytest", "--settle", "500ms", "--format", "json",
            ])
            .args(["--server", &ui, "--"])
            .arg(pytest)
            .args(["--export-traces", "-q", "-p", "no:cacheprovider"])
            .current_dir(suite)
            .env("SHOP_GATEWAY", gateway)
            // pytest-opentelemetry's distro defaults to the gRPC exporter, which ignores
            // OTEL_EXPORTER_OTLP_PROTOCOL; `tracecov run` points at the HTTP receiver.
            .env("OTEL_TRACES_EXPORTER", "otlp_proto_http")
            .env_remove("OTEL_RESOURCE_ATTRIBUTES")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    shop.shutdown().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "pytest's exit status passes through: {stderr}"
    );
    // pytest's own output comes first on the shared stdout; the report follows it.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json_start = stdout
        .find("\n{\n")
        .unwrap_or_else(|| panic!("no JSON report in: {stdout}\n{stderr}"));
    let report: serde_json::Value = serde_json::from_str(&stdout[json_start..])
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    assert_eq!(report["run"]["tests"]["total"], 2, "{report}");
    assert_eq!(report["run"]["tests"]["failed"], 1, "{report}");
    let edge = report["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["caller"] == "shop-suite" && e["callee"] == "gateway")
        .unwrap_or_else(|| panic!("no shop-suite -> gateway edge: {report}"));
    assert_eq!(
        edge["tests"],
        serde_json::json!([
            "test_shop.py::test_browse_products",
            "test_shop.py::test_login_with_a_bad_password_is_refused"
        ])
    );
    let ops: Vec<&str> = edge["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["GET /api/products", "POST /api/login"]);
    // The gateway's own hops belong to the pytest tests too.
    let users = report["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["caller"] == "gateway" && e["callee"] == "users")
        .expect("gateway -> users");
    assert_eq!(
        users["tests"],
        serde_json::json!(["test_shop.py::test_login_with_a_bad_password_is_refused"])
    );
    server.stop().await;
}

/// The README's `conftest.py` hook, as users take it: `integrations/pytest/conftest.py` copied
/// beside a test file (the same suite), pytest-opentelemetry turned off, under `tracecov run`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conftest_hook_makes_each_test_a_test_case_with_its_hops() {
    let server = TestServer::start_with(|c| c.settle = std::time::Duration::from_millis(500)).await;
    let shop = demo::start(ShopConfig {
        otlp_endpoint: server.addrs.otlp_http_url(),
        faults: vec![Fault::None],
        resource_attributes: Vec::new(),
    })
    .await
    .unwrap();
    let suite = tempfile::tempdir().unwrap();
    for (from, to) in [
        ("integrations/pytest/conftest.py", "conftest.py"),
        ("tests/python/shop_suite/test_shop.py", "test_shop.py"),
    ] {
        std::fs::copy(repo_root().join(from), suite.path().join(to)).unwrap();
    }
    let pytest = python().with_file_name("pytest");
    let dir = suite.path().to_owned();
    let ui = server.addrs.ui_url();
    let gateway = shop.gateway_url().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tracecov"))
            .args(["run", "--name", "conftest", "--settle", "500ms"])
            .args(["--format", "json", "--server", &ui, "--"])
            .arg(pytest)
            .args([
                "-q",
                "-p",
                "no:cacheprovider",
                "-p",
                "no:pytest_opentelemetry",
            ])
            .current_dir(dir)
            .env("SHOP_GATEWAY", gateway)
            .env("OTEL_SERVICE_NAME", "shop-suite")
            .env_remove("OTEL_RESOURCE_ATTRIBUTES")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    shop.shutdown().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let json_start = stdout
        .find("\n{\n")
        .unwrap_or_else(|| panic!("no JSON report in: {stdout}\n{stderr}"));
    let report: serde_json::Value = serde_json::from_str(&stdout[json_start..]).unwrap();
    assert_eq!(report["run"]["tests"]["total"], 2, "{report}");
    assert_eq!(report["run"]["tests"]["failed"], 1, "{report}");
    let edge = report["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["caller"] == "shop-suite" && e["callee"] == "gateway")
        .unwrap_or_else(|| panic!("no shop-suite -> gateway edge: {report}"));
    assert_eq!(
        edge["tests"],
        serde_json::json!([
            "test_shop.py::test_browse_products",
            "test_shop.py::test_login_with_a_bad_password_is_refused"
        ])
    );
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{report}");
    assert_eq!(
        failures[0]["test"],
        "test_shop.py::test_login_with_a_bad_password_is_refused"
    );
    assert_eq!(failures[0]["class"], "auth", "{report}");
    server.stop().await;
}
