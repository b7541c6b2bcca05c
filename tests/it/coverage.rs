//! Integration coverage end to end: the demo shop's suite against a real collector, its run read
//! back from the store, and the built-in demo manifest held against it. The report must show
//! the critical edge the suite never exercises and the edge only a mock answers.

use serde_json::Value;
use tracecov::config::ServeConfig;
use tracecov::coverage::{
    GateConditions, Sources, Status, coverage, demo_manifest, expected, failing_hops, gate, impact,
};
use tracecov::demo::{self, ShopConfig};
use tracecov::report::{RunInfo, build_with_coverage, text, to_json};
use tracecov::server::{Listeners, Server};

const RUN_ID: &str = "coverage-it";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_report_shows_the_untested_critical_edge_the_stubbed_edge_and_the_failing_mock() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServeConfig::ephemeral(dir.path());
    let listeners = Listeners::bind(&config).await.unwrap();
    let server = Server::start(config, listeners).await.unwrap();
    // The default scenario: payments fails every charge, the email provider is down.
    let shop = demo::start(ShopConfig {
        otlp_endpoint: server.addrs.otlp_http_url(),
        faults: demo::default_faults(),
        resource_attributes: vec![("tracecov.run.id".to_owned(), RUN_ID.to_owned())],
    })
    .await
    .unwrap();
    let result = shop.run_suite().await;
    shop.shutdown().await.unwrap();
    assert!(!result.all_passed());

    let reader = server.reader.clone();
    let (report, gate_text, impacted, warnings) = tokio::task::spawn_blocking(move || {
        let traces = reader
            .with_conn(|c| tracecov::runs::run_traces(c, RUN_ID))
            .unwrap();
        let mut spans = Vec::new();
        for id in traces {
            spans.extend(reader.trace(id).unwrap());
        }
        let manifest = demo_manifest();
        let graph = tracecov::graph::analyze(&spans, &manifest.analysis_options());
        let seen: Vec<&str> = graph.nodes().map(|n| n.id.as_str()).collect();
        let warnings = manifest.unknown_names(seen);
        let exp = expected(&Sources {
            manifest: Some(&manifest),
            ..Sources::default()
        });
        let cov = coverage(&graph, &exp, &failing_hops(&graph));
        assert_eq!(
            cov.edge("gateway", "payments").unwrap().status,
            Status::Untested
        );
        let verdict = gate(
            &cov,
            &GateConditions {
                critical: true,
                ..GateConditions::default()
            },
        );
        let run = RunInfo {
            id: RUN_ID.to_owned(),
            name: "demo".to_owned(),
        };
        let report = build_with_coverage(&run, &graph, Some(&cov));
        (
            report,
            verdict.text(),
            impact(&graph, &["payments".to_owned()]),
            warnings,
        )
    })
    .await
    .unwrap();
    // Under payments:500 checkout places no order, but the suite publishes one event to the queue
    // itself: every name of the manifest shows in the run.
    let unseen: Vec<&str> = warnings.iter().map(|w| w.name.as_str()).collect();
    assert!(unseen.is_empty(), "{warnings:?}");

    let json: Value = serde_json::from_str(&to_json(&report)).unwrap();
    let edge = |caller: &str, callee: &str| -> Value {
        json["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["caller"] == caller && e["callee"] == callee)
            .unwrap_or_else(|| panic!("no edge {caller} -> {callee} in {json:#}"))
            .clone()
    };

    // The critical edge the suite never exercises.
    let refunds = edge("gateway", "payments");
    assert_eq!(refunds["status"], "untested");
    assert_eq!(refunds["expected"], true);
    assert_eq!(refunds["critical"], true);
    assert_eq!(refunds["calls"], 0);
    assert_eq!(refunds["interfaces"][0]["operation"], "POST /refunds");
    assert_eq!(refunds["interfaces"][0]["status"], "untested");
    let untested = json["coverage"]["untested"].as_array().unwrap();
    assert!(
        untested.iter().any(|i| i["caller"] == "gateway"
            && i["callee"] == "payments"
            && i["operation"].is_null()
            && i["critical"] == true),
        "{untested:#?}"
    );

    // Only the mock answered: the real email API's edge is stubbed. The mock itself was down
    // (email:down), and the failure placed on its row makes that row failing, not a quiet stub.
    let email = edge("notifications", "ext:sendgrid");
    assert_eq!(email["status"], "stubbed", "{email:#}");
    assert_eq!(email["calls"], 0);
    assert_eq!(email["interfaces"][0]["operation"], "POST /v3/mail/send");
    assert_eq!(email["interfaces"][0]["status"], "stubbed");
    let mock = edge("notifications", "ext:email-provider");
    assert_eq!(mock["status"], "failing", "{mock:#}");
    assert_eq!(mock["expected"], true);
    assert_eq!(mock["interfaces"][0]["status"], "failing");

    // payments:500 fails the charges: the critical checkout -> payments edge is failing.
    let charge = edge("checkout", "payments");
    assert_eq!(charge["status"], "failing");
    assert_eq!(charge["critical"], true);
    // Declared in the Express syntax, named by axum's route in the spans: one covered interface.
    let cart = edge("gateway", "cart");
    assert_eq!(cart["status"], "covered");
    let items = cart["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["operation"] == "POST /carts/{cart_id}/items")
        .unwrap();
    assert_eq!(items["status"], "covered");
    assert_eq!(items["expected"], true);
    assert_eq!(
        edge("checkout", "queue:memory/orders")["status"],
        "untested"
    );
    // Everything the shop does is declared.
    assert_eq!(
        json["coverage"]["unexpected"].as_array().unwrap().len(),
        0,
        "{:#}",
        json["coverage"]
    );
    let edges = &json["coverage"]["edges"];
    assert_eq!(edges["expected"], 16, "{edges}");
    assert!(edges["percent"].as_f64().unwrap() < 100.0);
    let critical = &json["coverage"]["critical"];
    assert_eq!(critical["expected"], 5, "{critical}");

    let t = text(&report);
    assert!(t.contains("gateway -> payments (critical)"), "{t}");
    assert!(
        t.contains("notifications -> ext:sendgrid POST /v3/mail/send"),
        "{t}"
    );

    assert!(
        gate_text.contains("--critical") && gate_text.contains("gateway -> payments"),
        "{gate_text}"
    );
    let mut paid: Vec<&str> = vec![
        "checkout_card_declined",
        "checkout_paid",
        "order_confirmation_email",
        "view_order",
    ];
    paid.sort();
    assert_eq!(impacted, paid);

    server.shutdown().await.unwrap();
}
