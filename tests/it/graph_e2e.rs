//! End to end: real services (the demo shop: axum and tonic servers, each with its own
//! OpenTelemetry tracer provider, W3C context over HTTP and gRPC, a queue and a database) export to
//! a real collector while a harness runs test cases concurrently; the run's report over the API
//! holds exactly the shop's edges and, per edge, exactly the tests that crossed it.

use std::collections::BTreeMap;

use tracecov::demo::{self, Fault, ShopConfig};

use crate::common::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_suite_yields_exactly_the_shops_graph_and_tests_per_edge() {
    let server =
        TestServer::start_with(|c| c.test_services = vec![demo::TEST_SERVICE.into()]).await;
    let run = server
        .open_run(serde_json::json!({"name": "graph-e2e"}))
        .await;
    let run_id = run["id"].as_str().unwrap().to_owned();
    let shop = demo::start(ShopConfig {
        otlp_endpoint: server.addrs.otlp_http_url(),
        faults: vec![Fault::None],
        resource_attributes: Vec::new(),
    })
    .await
    .unwrap();
    let suite = shop.run_suite().await;
    assert!(suite.all_passed(), "{:?}", suite.failed());
    shop.shutdown().await.unwrap();

    // No run id on the resources: the traces join the single open run.
    let (status, report) = server.get_json(&format!("/api/runs/{run_id}/report")).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["run"]["tests"]["total"], 14);
    assert_eq!(report["run"]["tests"]["passed"], 14);

    let edges: BTreeMap<String, Vec<String>> = report["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                format!(
                    "{} -> {}",
                    e["caller"].as_str().unwrap(),
                    e["callee"].as_str().unwrap()
                ),
                e["tests"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect();
    let names: Vec<&str> = edges.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "checkout -> cart",
            "checkout -> inventory",
            "checkout -> notifications",
            "checkout -> payments",
            "checkout -> queue:memory/orders",
            "gateway -> cart",
            "gateway -> checkout",
            "gateway -> inventory",
            "gateway -> notifications",
            "gateway -> users",
            "notifications -> ext:email-provider",
            "queue:memory/orders -> inventory",
            "shop-tests -> gateway",
            "shop-tests -> queue:memory/orders",
            "users -> db:sqlite/users",
        ],
        "{report}"
    );
    let paid = ["checkout_paid", "order_confirmation_email", "view_order"];
    assert_eq!(edges["checkout -> queue:memory/orders"], paid);
    assert_eq!(
        edges["shop-tests -> queue:memory/orders"],
        ["order_event_fulfilled"]
    );
    let consumed = [
        "checkout_paid",
        "order_confirmation_email",
        "order_event_fulfilled",
        "view_order",
    ];
    assert_eq!(
        edges["queue:memory/orders -> inventory"], consumed,
        "the async consumer belongs to the tests that published"
    );
    assert_eq!(
        edges["gateway -> inventory"],
        ["browse_products", "product_details"]
    );
    assert_eq!(
        edges["users -> db:sqlite/users"],
        [
            "login",
            "login_bad_password",
            "password_reset_email",
            "signup"
        ]
    );
    let kinds: BTreeMap<&str, &str> = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds["db:sqlite/users"], "database");
    assert_eq!(kinds["queue:memory/orders"], "messaging");
    assert_eq!(kinds["ext:email-provider"], "external");
    assert_eq!(kinds["payments"], "service");
    server.stop().await;
}
