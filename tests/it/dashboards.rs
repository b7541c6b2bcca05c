//! The Grafana dashboards in `dashboards/` against a real Prometheus: the demo run with every
//! fault goes into tracecov (with a manifest, so critical and untested items exist, and a
//! forwarding destination that is down, so forwarding drops exist), Debian's `prometheus` scrapes
//! its `/metrics` every second, and every PromQL expression of every dashboard, its variables
//! substituted, must parse and return data. A dashboard cannot rot unnoticed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracecov::demo;
use tracecov::ingest::{ForwardConfig, ForwardTarget};

use crate::common::{PATIENCE, TestServer, repo_root};
use crate::metrics::demo_run;

/// The `prometheus` binary, or a failure saying how to get it: this test must not skip.
pub(crate) fn prometheus_binary() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("prometheus"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`prometheus` is not installed (not on PATH): the dashboards are tested against a real \
             Prometheus. .ci/run installs it (apt-get install -y prometheus); on Debian or Ubuntu \
             run that yourself"
        )
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every dashboard JSON in `dashboards/`.
pub(crate) fn dashboards() -> Vec<(PathBuf, Value)> {
    let dir = repo_root().join("dashboards");
    let mut out: Vec<(PathBuf, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let v = serde_json::from_slice(&std::fs::read(&p).unwrap())
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()));
            (p, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 4,
        "expected the four dashboards in {}",
        dir.display()
    );
    out
}

/// Every panel, rows' nested panels included.
pub(crate) fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(p) = stack.pop() {
        if let Some(nested) = p["panels"].as_array() {
            stack.extend(nested);
        }
        out.push(p);
    }
    out
}

/// `expr` with Grafana's built-in interval variables and the dashboard's own text variables
/// replaced, as Grafana would before sending it.
pub(crate) fn substitute(dashboard: &Value, expr: &str) -> String {
    let mut e = expr.to_owned();
    for (var, value) in [
        ("$__rate_interval", "1m"),
        ("${__rate_interval}", "1m"),
        ("$__interval", "1s"),
        ("${__interval}", "1s"),
        ("$__range", "1m"),
        ("${__range}", "1m"),
    ] {
        e = e.replace(var, value);
    }
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        if v["type"] == "datasource" {
            continue;
        }
        let value = v["current"]["value"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or_else(|| panic!("variable {name} has no value to substitute"));
        e = e
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    e
}

async fn query(http: &reqwest::Client, base: &str, expr: &str) -> Value {
    let mut url = reqwest::Url::parse(&format!("{base}/api/v1/query")).unwrap();
    url.query_pairs_mut().append_pair("query", expr);
    let resp = http.get(url).send().await.unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert!(
        status.is_success() && body["status"] == "success",
        "Prometheus refused {expr:?}: {body}"
    );
    body
}

const MANIFEST: &str = r#"version: 1
test_services: [shop-tests]
edges:
  - shop-tests -> gateway
  - gateway -> cart
  - caller: gateway
    callee: users
    critical: true
  - caller: checkout
    callee: payments
    critical: true
    interfaces:
      - POST /charge
      - operation: POST /refunds
        critical: true
  - caller: checkout
    callee: ext:fraud-check
    critical: true
"#;

fn write_prometheus_config(dir: &Path, target: std::net::SocketAddr) -> PathBuf {
    let path = dir.join("prometheus.yml");
    std::fs::write(
        &path,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: tracecov\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_parses_and_returns_data_from_a_real_prometheus() {
    let prometheus = prometheus_binary();
    assert_eq!(demo::TEST_SERVICE, "shop-tests", "the manifest names it");

    let work = tempfile::tempdir().unwrap();
    let manifest = work.path().join("tracecov.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let server = {
        let (manifest, dead) = (manifest.clone(), dead.clone());
        TestServer::start_with(move |c| {
            c.test_services = vec![demo::TEST_SERVICE.into()];
            c.manifest = Some(manifest);
            let target: ForwardTarget = dead.parse().unwrap();
            c.forward = vec![ForwardConfig {
                max_attempts: 1,
                ..ForwardConfig::new(target)
            }];
        })
        .await
    };
    demo_run(&server, "dashboards", demo::all_faults()).await;

    let port = free_port();
    let config = write_prometheus_config(work.path(), server.addrs.ui);
    let log = std::fs::File::create(work.path().join("prometheus.log")).unwrap();
    let mut child = tokio::process::Command::new(&prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            work.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        // As dashboards/README.md tells users: Grafana's exemplars need Prometheus to keep them.
        .arg("--enable-feature=exemplar-storage")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", prometheus.display()));
    let base = format!("http://127.0.0.1:{port}");
    let http = crate::common::http();

    // Samples: a few scrapes of the run series, so rate() and increase() have two points.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let ready = match http
            .get(format!(
                "{base}/api/v1/query?query=count_over_time(tracecov_run_info[1m])"
            ))
            .send()
            .await
        {
            Ok(resp) => resp
                .json::<Value>()
                .await
                .ok()
                .and_then(|b| {
                    b["data"]["result"][0]["value"][1]
                        .as_str()
                        .map(str::to_owned)
                })
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|n| n >= 4.0),
            Err(_) => false,
        };
        if ready {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(work.path().join("prometheus.log")).unwrap();
            panic!("prometheus exited ({status}):\n{log}");
        }
        if Instant::now() > deadline {
            let targets = http
                .get(format!("{base}/api/v1/targets"))
                .send()
                .await
                .map(|r| format!("{r:?}"))
                .unwrap_or_default();
            let log = std::fs::read_to_string(work.path().join("prometheus.log")).unwrap();
            panic!("no samples from tracecov after {PATIENCE:?}; targets: {targets}\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Exemplars: Prometheus kept the trace ids the service graph's series carry, and tracecov
    // serves every one of them (the hop a Grafana user jumps to from a latency spike). They come
    // from the run's stored results, so wait until the failed counter has one too.
    let deadline = Instant::now() + PATIENCE;
    let exemplars = loop {
        let mut found = Vec::new();
        for metric in [
            "traces_service_graph_request_client_seconds_bucket",
            "traces_service_graph_request_server_seconds_bucket",
            "traces_service_graph_request_failed_total",
        ] {
            let body: Value = http
                .get(format!(
                    "{base}/api/v1/query_exemplars?query={metric}&start=0&end={}",
                    u32::MAX
                ))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(body["status"], "success", "{metric}: {body}");
            let ids: Vec<(String, String)> = body["data"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| s["exemplars"].as_array().unwrap().iter())
                .map(|e| {
                    let l = &e["labels"];
                    (
                        l["trace_id"].as_str().unwrap_or_default().to_owned(),
                        l["span_id"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            found.push((metric, ids));
        }
        if found.iter().all(|(_, ids)| !ids.is_empty()) {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus kept no exemplars of some series after {PATIENCE:?}: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let traces: std::collections::BTreeSet<&str> = exemplars
        .iter()
        .flat_map(|(_, ids)| ids.iter())
        .map(|(trace, span)| {
            assert_eq!((trace.len(), span.len()), (32, 16), "{trace} {span}");
            trace.as_str()
        })
        .collect();
    for trace in traces {
        let (status, body) = server.get_json(&format!("/api/traces/{trace}")).await;
        assert_eq!(status, 200, "exemplar trace {trace}: {body}");
    }

    let mut checked = 0;
    let mut empty = Vec::new();
    for (path, dashboard) in dashboards() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // A Prometheus data-source variable, never a fixed data source.
        let vars = dashboard["templating"]["list"].as_array().unwrap();
        assert!(
            vars.iter().any(|v| v["type"] == "datasource"
                && v["query"] == "prometheus"
                && v["name"] == "datasource"),
            "{name}: no Prometheus data-source variable named datasource"
        );
        for panel in panels(&dashboard) {
            let title = panel["title"].as_str().unwrap_or("?");
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{name}: panel {title:?} uses a fixed data source"
            );
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}: panel {title:?} has no query");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{name}: {title:?}");
                let expr = substitute(&dashboard, t["expr"].as_str().unwrap());
                // `$1` in label_replace is PromQL's; `$name` or `${name}` is Grafana's.
                let unsubstituted = expr.as_bytes().windows(2).any(|w| {
                    w[0] == b'$' && (w[1].is_ascii_alphabetic() || w[1] == b'_' || w[1] == b'{')
                });
                assert!(
                    !unsubstituted,
                    "{name}: {title:?}: unsubstituted variable in {expr}"
                );
                let body = query(&http, &base, &expr).await;
                if body["data"]["result"]
                    .as_array()
                    .is_none_or(|r| r.is_empty())
                {
                    empty.push(format!("{name}: {title:?}: {expr}"));
                }
                checked += 1;
            }
        }
    }
    assert!(
        empty.is_empty(),
        "queries that returned no data:\n{}",
        empty.join("\n")
    );
    assert!(checked >= 30, "only {checked} queries found");

    child.kill().await.unwrap();
    server.stop().await;
}
