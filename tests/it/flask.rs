//! Across languages: services instrumented by the stock Python Flask and requests instrumentation
//! (legacy attribute names, as those libraries emit by default), with an injected 500 and an
//! injected 401. Each failure is placed on the right hop with the right class.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::common::{TestServer, repo_root};
use crate::python_sdk::python;

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(endpoint: &str, args: &[String]) -> Service {
    let mut child = Command::new(python())
        .arg(repo_root().join("tests/python/flask_shop/service.py"))
        .args(args)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "{args:?} did not start");
    Service(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flask_services_with_legacy_attributes_get_the_right_hop_and_class() {
    let server = TestServer::start().await;
    let run = server.open_run(serde_json::json!({"name": "flask"})).await;
    let run_id = run["id"].as_str().unwrap().to_owned();
    let endpoint = server.addrs.otlp_http_url();
    let (bp, op) = (free_port(), free_port());
    let billing_url = format!("http://127.0.0.1:{bp}");
    let ep = endpoint.clone();
    let services = tokio::task::spawn_blocking(move || {
        let billing = start(&ep, &["billing".into(), bp.to_string()]);
        let orders = start(&ep, &["orders".into(), op.to_string(), billing_url]);
        let out = Command::new(python())
            .arg(repo_root().join("tests/python/flask_shop/driver.py"))
            .arg(format!("http://127.0.0.1:{op}"))
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &ep)
            .env_remove("OTEL_RESOURCE_ATTRIBUTES")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (billing, orders)
    })
    .await
    .unwrap();
    // The services export synchronously; the driver flushed before exiting.
    drop(services);
    let (status, report) = server.get_json(&format!("/api/runs/{run_id}/report")).await;
    assert_eq!(status, 200);
    assert_eq!(report["run"]["tests"]["failed"], 2, "{report}");
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2, "{report}");
    let by_test = |t: &str| {
        failures
            .iter()
            .find(|f| f["test"] == t)
            .unwrap_or_else(|| panic!("no failure for {t}: {report}"))
    };
    let order = by_test("test_place_order");
    assert_eq!(order["class"], "callee_error", "{order}");
    assert_eq!(order["hop"]["caller"], "orders");
    assert_eq!(order["hop"]["callee"], "billing");
    assert_eq!(order["hop"]["operation"], "POST /charge");
    assert_eq!(order["blamed"], "billing");
    assert_eq!(order["evidence"]["http_status"], 500);
    let account = by_test("test_view_account");
    assert_eq!(account["class"], "auth", "{account}");
    assert_eq!(account["hop"]["operation"], "GET /secure");
    assert_eq!(account["blamed"], "orders -> billing");
    assert_eq!(account["evidence"]["http_status"], 401);
    server.stop().await;
}
