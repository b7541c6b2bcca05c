//! `GET /metrics` after a known run: the demo shop with `payments:500` exported through the real
//! SDK pipelines into a real collector, then scraped over HTTP. The service-graph series hold what
//! Grafana's service graph reads, with the values the run's JSON report states; the coverage,
//! failure and health series say what a dashboard would show.

use std::collections::BTreeMap;

use serde_json::Value;
use tracecov::demo::{self, Fault, ShopConfig};

use crate::common::TestServer;

/// One sample: metric name and its labels, sorted.
type Key = (String, BTreeMap<String, String>);

/// Parses the text exposition into samples (comments and `# EOF` skipped).
pub fn parse_exposition(text: &str) -> BTreeMap<Key, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => panic!("malformed sample line {line:?}"),
        };
        let mut labels = BTreeMap::new();
        let mut rest = rest;
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices();
            let mut key = String::new();
            let end;
            loop {
                let (i, c) = chars.next().expect("unterminated label set");
                match c {
                    '}' => {
                        end = i + 1;
                        break;
                    }
                    ',' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|x| x.1), Some('"'), "{line}");
                        let mut value = String::new();
                        loop {
                            let (_, c) = chars.next().expect("unterminated label value");
                            match c {
                                '"' => break,
                                '\\' => match chars.next().map(|x| x.1) {
                                    Some('n') => value.push('\n'),
                                    Some(c) => value.push(c),
                                    None => panic!("bad escape in {line:?}"),
                                },
                                c => value.push(c),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), value);
                    }
                    c => key.push(c),
                }
            }
            rest = &body[end..];
        }
        let value = rest.split_whitespace().next().expect("a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let previous = out.insert((name.to_owned(), labels), value);
        assert!(previous.is_none(), "sample repeated: {line:?}");
    }
    out
}

/// The failed counter's line of checkout -> payments.
fn failed_charge(text: &str) -> Option<&str> {
    text.lines().find(|l| {
        l.starts_with("traces_service_graph_request_failed_total{")
            && l.contains("client=\"checkout\",server=\"payments\"")
    })
}

/// The `trace_id` and `span_id` of a sample line's OpenMetrics exemplar, if it has one.
pub fn exemplar_ids(line: &str) -> Option<(String, String)> {
    let ex = &line[line.find(" # {")? + 4..];
    let field = |name: &str| {
        let at = ex.find(&format!("{name}=\""))? + name.len() + 2;
        Some(ex[at..at + ex[at..].find('"')?].to_owned())
    };
    Some((field("trace_id")?, field("span_id")?))
}

fn key(name: &str, labels: &[(&str, &str)]) -> Key {
    (
        name.to_owned(),
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

fn graph(client: &str, server: &str, connection_type: &str) -> Vec<(&'static str, String)> {
    vec![
        ("client", client.to_owned()),
        ("server", server.to_owned()),
        ("connection_type", connection_type.to_owned()),
    ]
}

fn get(samples: &BTreeMap<Key, f64>, name: &str, labels: &[(&str, String)]) -> f64 {
    let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let k = key(name, &labels);
    *samples
        .get(&k)
        .unwrap_or_else(|| panic!("no sample {k:?} in /metrics"))
}

/// Runs the demo suite with `faults` into `server`, in a run it opens and closes.
pub async fn demo_run(server: &TestServer, name: &str, faults: Vec<Fault>) -> Value {
    demo_run_in(server, serde_json::json!({ "name": name }), faults).await
}

/// `demo_run` in the run `POST /api/runs` opens with `open` (its name, its suite).
pub async fn demo_run_in(server: &TestServer, open: Value, faults: Vec<Fault>) -> Value {
    demo_runs_in(server, open, faults, 1).await
}

/// `demo_run_in`, the suite run `times` times into the run.
pub async fn demo_runs_in(
    server: &TestServer,
    open: Value,
    faults: Vec<Fault>,
    times: usize,
) -> Value {
    let run = server.open_run(open).await;
    let run_id = run["id"].as_str().unwrap().to_owned();
    let shop = demo::start(ShopConfig {
        otlp_endpoint: server.addrs.otlp_http_url(),
        faults: faults.clone(),
        resource_attributes: Vec::new(),
    })
    .await
    .unwrap();
    for _ in 0..times {
        let suite = shop.run_suite().await;
        assert_eq!(suite.failed(), demo::expected_failures(&faults));
    }
    // Flushes every span before the run closes.
    shop.shutdown().await.unwrap();
    let resp = server
        .http
        .post(server.api(&format!("/api/runs/{run_id}/close")))
        .header("x-tracecov", "1")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let (status, report) = server.get_json(&format!("/api/runs/{run_id}/report")).await;
    assert_eq!(status, 200, "{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_payments_500_run_hold_the_service_graph_coverage_and_health() {
    let server =
        TestServer::start_with(|c| c.test_services = vec![demo::TEST_SERVICE.into()]).await;
    let report = demo_run(&server, "metrics-it", vec![Fault::Payments500]).await;

    // Prometheus's own Accept header: OpenMetrics first. Exemplars come from the stored
    // results of the run's recent traces, which the settle worker writes after the run closed:
    // scrape until the failing hop has one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let text = loop {
        let resp = server
            .http
            .get(server.api("/metrics"))
            .header(
                "accept",
                "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text"),
            "Prometheus must be told the format"
        );
        let text = resp.text().await.unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        if failed_charge(&text).is_some_and(|l| exemplar_ids(l).is_some()) {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exemplar on the failing hop after 60 s:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let m = parse_exposition(&text);

    // Exemplars: the failed counter of the failing hop points at a span in error, in a trace the
    // API serves; the latency buckets point at hops of traces it serves.
    let failed_line = failed_charge(&text).unwrap();
    let (trace, span) = exemplar_ids(failed_line).unwrap_or_else(|| panic!("{failed_line}"));
    let (status, body) = server.get_json(&format!("/api/traces/{trace}")).await;
    assert_eq!(status, 200, "{failed_line}");
    assert!(
        body["spans"]
            .as_array()
            .unwrap()
            .iter()
            .any(
                |s| s["span_id"] == span.as_str() && s["status"]["code"] == "error"
                    || s["span_id"] == span.as_str()
                        && s["attributes"]["http.response.status_code"].as_i64() >= Some(400)
            ),
        "{failed_line}: the span is not in error"
    );
    assert_eq!(span.len(), 16, "{failed_line}");
    assert!(failed_line.ends_with("} 1"), "{failed_line}");
    for side in ["client", "server"] {
        let prefix = format!("traces_service_graph_request_{side}_seconds_bucket{{");
        let with: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&prefix) && l.contains("server=\"payments\""))
            .filter(|l| exemplar_ids(l).is_some())
            .collect();
        assert!(
            !with.is_empty(),
            "no {side} exemplar on checkout -> payments"
        );
        for l in with {
            let (trace, _) = exemplar_ids(l).unwrap();
            let (status, _) = server.get_json(&format!("/api/traces/{trace}")).await;
            assert_eq!(status, 200, "{l}");
        }
    }

    // Without asking for OpenMetrics (curl, a browser): the classic text format, the same
    // samples, no exemplars.
    let resp = server
        .http
        .get(server.api("/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let classic = resp.text().await.unwrap();
    assert!(!classic.contains("# EOF"));
    assert!(!classic.contains(" # {"), "{classic}");
    assert!(classic.contains("# TYPE traces_service_graph_request_total counter\n"));
    let c = parse_exposition(&classic);
    let graph_samples = |m: &BTreeMap<Key, f64>| -> Vec<(Key, f64)> {
        m.iter()
            .filter(|((name, _), _)| {
                name.starts_with("traces_service_graph") || name.starts_with("tracecov_edge")
            })
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    assert_eq!(graph_samples(&c), graph_samples(&m));

    // The failing hop, as Grafana's service graph reads it: checkout called payments once per
    // test that pays (checkout_paid, checkout_card_declined, order_confirmation_email,
    // view_order's order), and every call failed with the 500.
    let charge = graph("checkout", "payments", "");
    assert_eq!(get(&m, "traces_service_graph_request_total", &charge), 4.0);
    assert_eq!(
        get(&m, "traces_service_graph_request_failed_total", &charge),
        4.0
    );
    // Both sides of every charge were recorded: four samples in each histogram, all in +Inf.
    for side in ["server", "client"] {
        let name = format!("traces_service_graph_request_{side}_seconds");
        assert_eq!(get(&m, &format!("{name}_count"), &charge), 4.0);
        let mut inf = charge.clone();
        inf.push(("le", "+Inf".to_owned()));
        assert_eq!(get(&m, &format!("{name}_bucket"), &inf), 4.0);
        assert!(get(&m, &format!("{name}_sum"), &charge) > 0.0);
    }
    // Tempo's connection types, on every series: queue hops (none here: no order got past the
    // payment), database and external hops, and plain service calls.
    for (name, l) in m.keys() {
        if name != "traces_service_graph_request_total" {
            continue;
        }
        let want = if l["client"].starts_with("queue:") || l["server"].starts_with("queue:") {
            "messaging_system"
        } else if l["server"].starts_with("db:") {
            "database"
        } else if l["server"].starts_with("ext:") {
            "virtual_node"
        } else {
            ""
        };
        assert_eq!(l["connection_type"], want, "{l:?}");
    }
    let db = graph("users", "db:sqlite/users", "database");
    assert!(get(&m, "traces_service_graph_request_total", &db) >= 1.0);
    let email = graph("notifications", "ext:email-provider", "virtual_node");
    assert!(get(&m, "traces_service_graph_request_total", &email) >= 1.0);
    // A virtual node answers with no span of its own: no server samples.
    assert_eq!(
        get(
            &m,
            "traces_service_graph_request_server_seconds_count",
            &email
        ),
        0.0
    );

    // Every edge of the report, and nothing else, with the report's calls, errors and status.
    let edges = report["edges"].as_array().unwrap();
    let observed: Vec<&Value> = edges.iter().filter(|e| e["calls"] != 0).collect();
    let series = m
        .keys()
        .filter(|(name, _)| name == "traces_service_graph_request_total")
        .count();
    assert_eq!(series, observed.len());
    for e in &observed {
        let (caller, callee) = (e["caller"].as_str().unwrap(), e["callee"].as_str().unwrap());
        let (labels, calls) = m
            .iter()
            .find(|((name, l), _)| {
                name == "traces_service_graph_request_total"
                    && l["client"] == caller
                    && l["server"] == callee
            })
            .map(|((_, l), v)| (l.clone(), *v))
            .unwrap_or_else(|| panic!("no series for {caller} -> {callee}"));
        assert_eq!(calls, e["calls"].as_f64().unwrap(), "{caller} -> {callee}");
        assert_eq!(
            m[&(
                "traces_service_graph_request_failed_total".to_owned(),
                labels
            )],
            e["errors"].as_f64().unwrap(),
            "{caller} -> {callee}"
        );
        let status = e["status"].as_str().unwrap();
        let critical = e["critical"].as_bool().unwrap().to_string();
        assert_eq!(
            get(
                &m,
                "tracecov_edge_status",
                &[
                    ("caller", caller.to_owned()),
                    ("callee", callee.to_owned()),
                    ("status", status.to_owned()),
                    ("critical", critical),
                ]
            ),
            1.0
        );
    }
    assert_eq!(
        get(
            &m,
            "tracecov_edge_status",
            &[
                ("caller", "checkout".to_owned()),
                ("callee", "payments".to_owned()),
                ("status", "failing".to_owned()),
                ("critical", "false".to_owned()),
            ]
        ),
        1.0
    );

    // The presence series of every edge, expected or observed, in the service graph's labels.
    for e in edges.iter().filter(|e| e["caller"] != "*") {
        let (caller, callee) = (e["caller"].as_str().unwrap(), e["callee"].as_str().unwrap());
        let found = m.iter().any(|((name, l), v)| {
            name == "tracecov_edge_info"
                && l["client"] == caller
                && l["server"] == callee
                && l["status"] == e["status"].as_str().unwrap()
                && l["critical"] == e["critical"].as_bool().unwrap().to_string()
                && l.contains_key("connection_type")
                && *v == 1.0
        });
        assert!(found, "no tracecov_edge_info for {caller} -> {callee}");
    }
    assert!(m.iter().any(|((name, l), _)| name == "tracecov_edge_info"
        && l["server"] == "db:sqlite/users"
        && l["connection_type"] == "database"));

    // Failures by class and boundary: the four tests, all placed on checkout -> payments.
    assert_eq!(
        get(
            &m,
            "tracecov_failures",
            &[
                ("class", "callee_error".to_owned()),
                ("caller", "checkout".to_owned()),
                ("callee", "payments".to_owned()),
            ]
        ),
        4.0
    );
    let infos: Vec<&BTreeMap<String, String>> = m
        .keys()
        .filter(|(name, _)| name == "tracecov_failure_info")
        .map(|(_, l)| l)
        .collect();
    assert_eq!(infos.len(), report["failures"].as_array().unwrap().len());
    for f in report["failures"].as_array().unwrap() {
        assert!(
            infos
                .iter()
                .any(|l| l["trace_id"] == f["trace_id"].as_str().unwrap()
                    && l["link"] == f["link"].as_str().unwrap()
                    && l["link"].contains("/traces/")),
            "no failure_info for {f}"
        );
    }
    // The 402 of the declined card is an error, not a failure, counted on its edge by class.
    assert!(m.iter().any(|((name, l), v)| name == "tracecov_hop_errors"
        && l["caller"] == "checkout"
        && l["callee"] == "payments"
        && *v >= 1.0));

    // Coverage ratios: no source configured, so everything seen is expected, and this run saw it.
    let cov = &report["coverage"];
    for scope in ["edges", "interfaces"] {
        let c = &cov[scope];
        let ratio = c["covered"].as_f64().unwrap() / c["expected"].as_f64().unwrap();
        assert_eq!(
            get(
                &m,
                "tracecov_coverage_ratio",
                &[("scope", scope.to_owned())]
            ),
            ratio,
            "{scope}"
        );
    }
    assert_eq!(
        get(&m, "tracecov_run_tests", &[("result", "failed".to_owned())]),
        4.0
    );
    assert_eq!(
        get(&m, "tracecov_run_tests", &[("result", "passed".to_owned())]),
        10.0
    );
    assert_eq!(
        get(
            &m,
            "tracecov_run_info",
            &[
                ("run_id", report["run"]["id"].as_str().unwrap().to_owned()),
                ("run_name", "metrics-it".to_owned()),
            ]
        ),
        1.0
    );

    // Health: what was received was stored, nothing refused, the queue drained.
    let stats = server.stats().await;
    let spans = stats["spans"].as_f64().unwrap();
    assert_eq!(get(&m, "tracecov_store_spans", &[]), spans);
    assert_eq!(get(&m, "tracecov_spans_stored_total", &[]), spans);
    assert!(get(&m, "tracecov_spans_received_total", &[]) >= spans);
    assert!(get(&m, "tracecov_store_size_bytes", &[]) > 0.0);
    assert_eq!(get(&m, "tracecov_ingest_queue_spans", &[]), 0.0);
    for reason in ["queue_full", "bad_request", "too_large"] {
        assert_eq!(
            get(
                &m,
                "tracecov_exports_refused_total",
                &[("reason", reason.to_owned())]
            ),
            0.0
        );
    }
    // The run is closed: settled, whatever the lag.
    assert_eq!(get(&m, "tracecov_runs_unsettled", &[]), 0.0);
    assert!(get(&m, "tracecov_settle_lag_seconds", &[]) >= 0.0);

    server.stop().await;
}
