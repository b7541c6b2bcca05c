//! The OpenTelemetry Python SDK (from PyPI, pinned in tests/python/requirements.txt and installed
//! into .venv by scripts/setup-python) exports to tracecov over gRPC and over HTTP/protobuf.

use std::path::PathBuf;
use std::process::Command;

use crate::common::{TestServer, repo_root};

/// The virtualenv's Python. The test command installs it; a missing one is a failure, not a skip.
pub fn python() -> PathBuf {
    let p = std::env::var_os("TRACECOV_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup-python (the README's test command does)",
        p.display()
    );
    p
}

/// Runs `tests/python/SCRIPT PROTOCOL ENDPOINT` with the venv's Python and `env`, and returns
/// what it printed; a failed script fails the test. OTEL_EXPORTER_OTLP_HEADERS is cleared first,
/// and so are the CA variables some machines set, which `requests` would let override an
/// exporter's own OTEL_EXPORTER_OTLP_CERTIFICATE.
pub async fn run_script(
    script: &str,
    protocol: &str,
    endpoint: String,
    env: Vec<(&'static str, String)>,
) -> String {
    let script = repo_root().join("tests/python").join(script);
    let protocol = protocol.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script)
            .arg(protocol)
            .arg(endpoint)
            .env_remove("OTEL_EXPORTER_OTLP_HEADERS")
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("CURL_CA_BUNDLE")
            .envs(env)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "python exporter failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn python_export(protocol: &str) {
    let server = TestServer::start().await;
    let endpoint = match protocol {
        "grpc" => server.addrs.otlp_grpc_url(),
        _ => server.addrs.otlp_http_url(),
    };
    let trace_id = run_script("export_spans.py", protocol, endpoint, Vec::new())
        .await
        .trim()
        .to_owned();
    server.wait_for_spans(3).await;
    let trace = server.trace(&trace_id).await;
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2, "{protocol}: {trace}");
    let root = spans.iter().find(|s| s["kind"] == "server").unwrap();
    let child = spans.iter().find(|s| s["kind"] == "client").unwrap();
    assert_eq!(root["service"], "py-orders");
    assert_eq!(root["resource"]["service.version"], "0.9");
    assert_eq!(root["resource"]["telemetry.sdk.language"], "python");
    assert_eq!(root["attributes"]["http.route"], "/orders/{id}");
    assert_eq!(child["parent_span_id"], root["span_id"]);
    assert_eq!(child["attributes"]["db.system.name"], "postgresql");
    assert_eq!(child["attributes"]["db.response.rows"], 3);
    assert_eq!(child["status"]["code"], "error");
    assert_eq!(child["status"]["message"], "query timed out");
    assert_eq!(
        child["events"][0]["attributes"]["exception.type"],
        "TimeoutError"
    );
    assert_eq!(child["links"].as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_exports_over_grpc() {
    python_export("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_exports_over_http_protobuf() {
    python_export("http").await;
}
