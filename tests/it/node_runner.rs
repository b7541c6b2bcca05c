//! JavaScript test runners with the real OpenTelemetry JS SDK (npm packages pinned in
//! `integrations/package-lock.json`, installed by `npm ci --prefix integrations`, which `.ci/run`
//! does): a node:test suite whose tests are wrapped by `integrations/node/node-test.js`, run by
//! `tracecov run -- node --test` (and the same tests under Jest, through
//! `integrations/node/jest-setup.js`), against `tests/js/storefront` (Express, instrumented by the
//! Node auto-instrumentations at their defaults: current HTTP attribute names, and Express's own
//! middleware spans), which calls the Flask fixture `billing` (Python's Flask instrumentation at
//! its defaults: the legacy names). Also the helpers the Playwright tests share.
//!
//! Without `node` on PATH these tests say so and pass; with node but without the npm packages
//! they fail, saying how to install them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::common::{TestServer, repo_root};
use crate::python_sdk::python;

/// `node`, or `None` after saying that the JavaScript tests are skipped.
pub fn node() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("node"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!("skipped: node is not installed (the JavaScript integrations need Node.js 20+)");
    }
    found
}

/// `integrations/node_modules`, which the JavaScript under `tests/js` resolves its packages from
/// (through `NODE_PATH`, as the helpers under `integrations/` do by their place).
pub fn node_modules() -> PathBuf {
    let dir = repo_root().join("integrations/node_modules");
    assert!(
        dir.join("@opentelemetry/sdk-node").is_dir(),
        "{} is missing: run `npm ci --prefix integrations` (.ci/run does)",
        dir.display()
    );
    dir
}

/// The environment every JavaScript test process gets: packages from
/// `integrations/node_modules`; only the local resource detectors (the SDK's cloud detectors
/// would probe metadata addresses that nothing here should be sent to); no run id, headers or
/// service name inherited from whatever runs the tests.
pub fn js_env(cmd: &mut Command) -> &mut Command {
    cmd.env("NODE_PATH", node_modules())
        .env("OTEL_NODE_RESOURCE_DETECTORS", "env,host,os,process")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("OTEL_EXPORTER_OTLP_HEADERS")
        .env_remove("OTEL_SERVICE_NAME")
}

/// A service process, killed when dropped.
pub struct Service {
    child: Child,
    pub url: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the child's first line and gives it back with the service; the rest of its output is
/// drained so it never blocks on a full pipe.
fn first_line(mut child: Child, what: &str) -> (Child, String) {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = match lines.next() {
        Some(Ok(line)) => line,
        other => {
            let _ = child.kill();
            panic!("{what} did not start: {other:?}");
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, line)
}

/// The Flask fixture's `billing` (tests/python/flask_shop), exporting to `endpoint` with the
/// Python SDK's defaults.
pub fn start_billing(endpoint: &str) -> Service {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(python())
        .arg(repo_root().join("tests/python/flask_shop/service.py"))
        .args(["billing", &port.to_string()])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("OTEL_SEMCONV_STABILITY_OPT_IN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (child, line) = first_line(child, "billing");
    assert_eq!(line.trim(), "ready", "billing did not start");
    Service {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// `tests/js/storefront` on a free port, started the zero-code way
/// (`--require @opentelemetry/auto-instrumentations-node/register`), exporting to `endpoint`.
/// `web_bundle` is the built web-SDK script it serves as `/app.js`; `port` 0 picks a free one.
pub fn start_storefront(
    node: &Path,
    endpoint: &str,
    billing: &str,
    web_bundle: Option<&Path>,
    port: u16,
) -> Service {
    let mut cmd = Command::new(node);
    js_env(&mut cmd)
        .args([
            "--require",
            "@opentelemetry/auto-instrumentations-node/register",
        ])
        .arg(repo_root().join("tests/js/storefront/server.js"))
        .env("OTEL_SERVICE_NAME", "storefront")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        // Export each batch at once rather than after the default 5 s, so the service's spans are
        // in before the suite's run settles; the attributes stay at their defaults.
        .env("OTEL_BSP_SCHEDULE_DELAY", "0")
        .env("STOREFRONT_PORT", port.to_string())
        .env("BILLING_URL", billing)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(bundle) = web_bundle {
        cmd.env("STOREFRONT_WEB_BUNDLE", bundle);
    }
    let (child, line) = first_line(cmd.spawn().unwrap(), "the storefront");
    let port = line
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("the storefront said {line:?}"));
    Service {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// The JSON report `tracecov run --format json` printed after the command's own output.
pub fn report_in(stdout: &[u8], stderr: &[u8]) -> Value {
    let stdout = String::from_utf8_lossy(stdout);
    let stderr = String::from_utf8_lossy(stderr);
    // The command's own output, if it wrote any to stdout, comes first.
    let start = if stdout.starts_with("{\n") {
        0
    } else {
        stdout
            .find("\n{\n")
            .unwrap_or_else(|| panic!("no JSON report in: {stdout}\n{stderr}"))
    };
    serde_json::from_str(&stdout[start..]).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

/// Each edge as `caller -> callee` with its interfaces' operations.
pub fn edges(report: &Value) -> Vec<(String, Vec<String>)> {
    report["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let ops = e["interfaces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["operation"].as_str().unwrap().to_owned())
                .collect();
            let (caller, callee) = (e["caller"].as_str().unwrap(), e["callee"].as_str().unwrap());
            (format!("{caller} -> {callee}"), ops)
        })
        .collect()
}

pub fn node_ids(report: &Value) -> Vec<&str> {
    report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect()
}

/// Runs a JavaScript suite against the storefront under `tracecov run` (`runner`: Node's
/// arguments, run in `cwd`; `suite`: the test driver's service name) and checks its report: two
/// tests, one failing on billing's 500 (`failing`), each test's hops, one graph, coverage.
async fn storefront_suite_under_tracecov_run(
    runner: Vec<PathOrArg>,
    cwd: &'static str,
    suite: &'static str,
    failing: &'static str,
) {
    let Some(node) = node() else { return };
    let server = TestServer::start().await;
    let endpoint = server.addrs.otlp_http_url();
    let ui = server.addrs.ui_url();
    let out = tokio::task::spawn_blocking(move || {
        let billing = start_billing(&endpoint);
        let storefront = start_storefront(&node, &endpoint, &billing.url, None, 0);
        // The helper's SDK reads what `tracecov run` hands its command: the endpoint, the
        // protocol and the run id in OTEL_RESOURCE_ATTRIBUTES.
        let mut run = Command::new(env!("CARGO_BIN_EXE_tracecov"));
        js_env(&mut run)
            .args(["run", "--name", suite, "--settle", "1s"])
            .args(["--format", "json", "--server", &ui, "--"])
            .arg(&node)
            .args(runner.iter().map(PathOrArg::os))
            .current_dir(repo_root().join(cwd))
            .env("STOREFRONT", &storefront.url)
            .env("OTEL_SERVICE_NAME", suite);
        let out = run.output().unwrap();
        drop((storefront, billing));
        out
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the runner's exit status passes through: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report_in(&out.stdout, &out.stderr);

    assert_eq!(report["run"]["tests"]["total"], 2, "{report}");
    assert_eq!(report["run"]["tests"]["failed"], 1, "{report}");
    // Node's current names and Flask's legacy ones meet in one graph: billing is one node, never
    // also an `ext:127.0.0.1:PORT` for the storefront's calls to it.
    let mut want = vec!["billing", "storefront", suite];
    want.sort();
    assert_eq!(node_ids(&report), want, "{report}");
    let ops = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut want = vec![
        (
            "storefront -> billing".to_owned(),
            ops(&["GET /prices", "POST /charge"]),
        ),
        (
            format!("{suite} -> storefront"),
            ops(&["GET /api/products", "POST /api/checkout"]),
        ),
    ];
    want.sort();
    assert_eq!(edges(&report), want, "{report}");
    let suite_edge = report["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["caller"] == suite)
        .unwrap();
    assert_eq!(
        suite_edge["tests"],
        serde_json::json!([failing, "lists products"])
    );

    // The failing test got a 502 from the storefront, which got a 500 from billing: the failure
    // starts at billing's charge, below Express's middleware spans.
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{report}");
    let failure = &failures[0];
    assert_eq!(failure["test"], failing);
    assert_eq!(failure["class"], "callee_error", "{failure}");
    assert_eq!(
        failure["hop"],
        serde_json::json!({"caller": "storefront", "callee": "billing", "operation": "POST /charge"})
    );
    assert_eq!(failure["blamed"], "billing");
    assert_eq!(failure["evidence"]["http_status"], 500);

    // Every edge and interface the run saw is exercised (no other source is configured).
    let coverage = &report["coverage"];
    assert_eq!(coverage["edges"]["percent"], 100.0, "{coverage}");
    assert_eq!(coverage["interfaces"]["expected"], 4, "{coverage}");
    assert_eq!(coverage["interfaces"]["covered"], 4, "{coverage}");
    server.stop().await;
}

/// A runner's argument: a path in the repository or a plain word.
pub enum PathOrArg {
    Path(&'static str),
    Arg(&'static str),
}

impl PathOrArg {
    fn os(&self) -> std::ffi::OsString {
        match self {
            PathOrArg::Path(p) => repo_root().join(p).into_os_string(),
            PathOrArg::Arg(a) => a.into(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_test_suite_under_tracecov_run_gets_its_tests_hops_and_failure_right() {
    use PathOrArg::*;
    storefront_suite_under_tracecov_run(
        vec![
            Arg("--test"),
            Path("tests/js/node-suite/storefront.test.js"),
        ],
        "tests/js/node-suite",
        "storefront-suite",
        "checkout > places an order",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jest_suite_under_tracecov_run_gets_its_tests_hops_and_failure_right() {
    use PathOrArg::*;
    storefront_suite_under_tracecov_run(
        // Jest finds its configuration from its working directory. Its module sandbox needs
        // --experimental-vm-modules for the OTLP exporter's dynamic `import("http")`.
        vec![
            Arg("--experimental-vm-modules"),
            Path("integrations/node_modules/jest/bin/jest.js"),
        ],
        "tests/js/jest-suite",
        "storefront-jest",
        "checkout places an order",
    )
    .await;
}
