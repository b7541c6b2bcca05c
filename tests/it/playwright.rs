//! Browser end-to-end tests in Debian's Chromium, driven by Playwright from npm (no browser
//! download): Playwright Test with `integrations/playwright/fixture.js` under `tracecov run`,
//! whose page has no instrumentation (the fixture's `traceparent` ties the backend's spans to each
//! test), and the OpenTelemetry web SDK exporting from a page straight to the OTLP/HTTP receiver
//! through `--cors-origin`, refused at the preflight from any other origin.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{PATIENCE, TestServer, chromium, repo_root};
use crate::node_runner::{
    edges, js_env, node, node_ids, node_modules, report_in, start_billing, start_storefront,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_playwright_suite_under_tracecov_run_ties_the_backend_to_each_test() {
    let Some(node) = node() else { return };
    let browser = chromium();
    let server = TestServer::start().await;
    let endpoint = server.addrs.otlp_http_url();
    let ui = server.addrs.ui_url();
    let results = tempfile::tempdir().unwrap();
    let output = results.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        let billing = start_billing(&endpoint);
        let storefront = start_storefront(&node, &endpoint, &billing.url, None, 0);
        let mut run = Command::new(env!("CARGO_BIN_EXE_tracecov"));
        js_env(&mut run)
            .args(["run", "--name", "playwright", "--settle", "1s"])
            .args(["--format", "json", "--server", &ui, "--"])
            .arg(&node)
            .arg(node_modules().join("@playwright/test/cli.js"))
            .args(["test", "--config"])
            .arg(repo_root().join("tests/js/playwright/playwright.config.js"))
            .env("STOREFRONT", &storefront.url)
            .env("CHROMIUM", browser)
            .env("PLAYWRIGHT_OUTPUT", output)
            .env("OTEL_SERVICE_NAME", "storefront-e2e");
        let out = run.output().unwrap();
        drop((storefront, billing));
        out
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "Playwright's exit status passes through: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report_in(&out.stdout, &out.stderr);
    assert_eq!(report["run"]["tests"]["total"], 2, "{report}");
    assert_eq!(report["run"]["tests"]["failed"], 1, "{report}");
    assert_eq!(
        node_ids(&report),
        ["billing", "storefront", "storefront-e2e"],
        "{report}"
    );
    // Every request the page made to the storefront (the document, its script, its API calls)
    // is a hop of the test that opened it; the page itself exported nothing.
    let ops = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        edges(&report),
        [
            (
                "storefront -> billing".to_owned(),
                ops(&["GET /prices", "POST /charge"])
            ),
            (
                "storefront-e2e -> storefront".to_owned(),
                ops(&[
                    "GET /",
                    "GET /api/products",
                    "GET /page.js",
                    "POST /api/checkout"
                ])
            ),
        ],
        "{report}"
    );
    let interfaces = report["edges"][1]["interfaces"].as_array().unwrap();
    assert_eq!(
        interfaces[3]["tests"],
        serde_json::json!(["checkout > buys tea"]),
        "{report}"
    );
    assert_eq!(
        interfaces[0]["tests"],
        serde_json::json!(["checkout > buys tea", "shows the products"]),
        "{report}"
    );
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{report}");
    let failure = &failures[0];
    assert_eq!(failure["test"], "checkout > buys tea");
    assert_eq!(failure["class"], "callee_error", "{failure}");
    assert_eq!(
        failure["hop"],
        serde_json::json!({"caller": "storefront", "callee": "billing", "operation": "POST /charge"})
    );
    assert_eq!(failure["blamed"], "billing");
    assert_eq!(
        report["coverage"]["interfaces"]["percent"], 100.0,
        "{report}"
    );
    server.stop().await;
}

/// Bundles `tests/js/web/app.js` (the web SDK, from `integrations/node_modules`) for the browser
/// with esbuild (`tests/js/web/build.js`), into `dir`.
fn bundle_web_sdk(node: &Path, dir: &Path) -> PathBuf {
    let out = dir.join("app.js");
    let status = js_env(&mut Command::new(node))
        .arg(repo_root().join("tests/js/web/build.js"))
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "bundling tests/js/web/app.js failed");
    out
}

/// Opens `page` in Chromium through `tests/js/web-export.js` and returns what it printed.
fn open_web_page(node: &Path, page: &str) -> Value {
    let out = js_env(&mut Command::new(node))
        .arg(repo_root().join("tests/js/web-export.js"))
        .arg(page)
        .env("CHROMIUM", chromium())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "web-export.js failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The services of `trace_id`'s spans, once `ready` holds for them.
async fn services_in(
    server: &TestServer,
    trace_id: &str,
    ready: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, trace) = server.get_json(&format!("/api/traces/{trace_id}")).await;
        let services: Vec<String> = if status == 200 {
            trace["spans"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["service"].as_str().unwrap().to_owned())
                .collect()
        } else {
            Vec::new()
        };
        if ready(&services) {
            return services;
        }
        assert!(
            Instant::now() < deadline,
            "trace {trace_id} has only {services:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_sdk_exports_from_chromium_through_cors_from_the_allowed_origin_only() {
    let Some(node) = node() else { return };
    // The storefront answers on 127.0.0.1 and on localhost: two origins, one page. Only the
    // first is let in.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let allowed = format!("http://127.0.0.1:{port}");
    let other = format!("http://localhost:{port}");
    let origins = [allowed.clone()];
    let server = TestServer::start_with(|c| {
        c.cors_origins = tracecov::web::cors::CorsOrigins::new(&origins).unwrap();
    })
    .await;
    let endpoint = server.addrs.otlp_http_url();
    let traces = server.traces_url();
    let dir = tempfile::tempdir().unwrap();
    let bundle_dir = dir.path().to_owned();
    let export_url = traces.clone();
    let (allowed_page, refused_page) = tokio::task::spawn_blocking(move || {
        let bundle = bundle_web_sdk(&node, &bundle_dir);
        let billing = start_billing(&endpoint);
        let storefront = start_storefront(&node, &endpoint, &billing.url, Some(&bundle), port);
        let allowed_page = open_web_page(&node, &format!("{allowed}/web.html?otlp={export_url}"));
        let refused_page = open_web_page(&node, &format!("{other}/web.html?otlp={export_url}"));
        drop((storefront, billing));
        (allowed_page, refused_page)
    })
    .await
    .unwrap();

    // From the allowed origin: the export succeeded, and the page's spans are the parents of the
    // storefront's and billing's in one trace.
    // Two spans, each exported as it ended: the page's fetch and "load products".
    assert_eq!(
        allowed_page["exports"],
        serde_json::json!(["ok", "ok"]),
        "{allowed_page}"
    );
    assert_eq!(
        allowed_page["corsErrors"],
        serde_json::json!([]),
        "{allowed_page}"
    );
    assert_eq!(allowed_page["products"], serde_json::json!(["cake", "tea"]));
    let trace_id = allowed_page["traceId"].as_str().unwrap();
    services_in(&server, trace_id, |s| {
        ["storefront-web", "storefront", "billing"]
            .iter()
            .all(|want| s.iter().any(|have| have == want))
    })
    .await;
    let trace = server.trace(trace_id).await;
    let spans = trace["spans"].as_array().unwrap();
    let web_fetch = spans
        .iter()
        .find(|s| s["service"] == "storefront-web" && s["kind"] == "client")
        .unwrap_or_else(|| panic!("no fetch span from the page: {trace}"));
    let served = spans
        .iter()
        .find(|s| s["service"] == "storefront" && s["kind"] == "server")
        .unwrap_or_else(|| panic!("no storefront server span: {trace}"));
    assert_eq!(served["parent_span_id"], web_fetch["span_id"], "{trace}");

    // From the other origin: Chromium's preflight was refused, so the export never left the
    // browser; the storefront's own spans of that page load arrive, the page's never do.
    assert_eq!(refused_page["products"], serde_json::json!(["cake", "tea"]));
    let exports = refused_page["exports"].as_array().unwrap();
    assert!(exports.iter().all(|e| e != "ok"), "{refused_page}");
    let cors = refused_page["corsErrors"].as_array().unwrap();
    assert!(!cors.is_empty(), "{refused_page}");
    for error in cors {
        assert_eq!(error["url"], traces, "{refused_page}");
        assert!(
            error["error"].as_str().unwrap().starts_with("Preflight"),
            "refused at the preflight: {refused_page}"
        );
    }
    let refused_trace = refused_page["traceId"].as_str().unwrap();
    let services = services_in(&server, refused_trace, |s| {
        s.iter().any(|have| have == "billing")
    })
    .await;
    assert!(
        !services.iter().any(|s| s == "storefront-web"),
        "{services:?}"
    );
    server.stop().await;
}
