//! Coverage arithmetic on graph fixtures (format in `graph::fixture`), with the coverage held as
//! a compact snapshot: every row with its status, then the numbers and the lists.
//! `UPDATE_EXPECT=1 cargo test --lib coverage` rewrites the snapshots; review the diff.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use expect_test::{Expect, expect};

use super::*;
use crate::graph::{RunGraph, analyze, fixture};

fn graph(text: &str) -> RunGraph {
    let (spans, opts) = fixture::parse(text);
    analyze(&spans, &opts)
}

fn manifest(text: &str) -> Manifest {
    parse_manifest(text, Path::new("tracecov.yaml")).unwrap()
}

fn pct(p: Option<f64>) -> String {
    p.map_or("null".to_owned(), |p| format!("{p}%"))
}

fn render(c: &Coverage) -> String {
    let mut out = String::new();
    for e in &c.edges {
        let flags = |expected: bool, critical: bool, observed: bool| {
            let mut f = Vec::new();
            if !expected {
                f.push("not expected");
            }
            if critical {
                f.push("critical");
            }
            if !observed {
                f.push("not observed");
            }
            if f.is_empty() {
                String::new()
            } else {
                format!(" ({})", f.join(", "))
            }
        };
        let _ = writeln!(
            out,
            "{} -> {}: {}{}",
            e.caller,
            e.callee,
            e.status,
            flags(e.expected, e.critical, e.observed)
        );
        for i in &e.interfaces {
            let _ = writeln!(
                out,
                "  {}: {}{}",
                i.operation,
                i.status,
                flags(i.expected, i.critical, i.observed)
            );
        }
    }
    let s = &c.summary;
    for (what, n) in [
        ("edges", s.edges),
        ("interfaces", s.interfaces),
        ("critical", s.critical),
    ] {
        let _ = writeln!(
            out,
            "{what}: {} of {} covered, {}",
            n.covered,
            n.expected,
            pct(n.percent())
        );
    }
    for (what, list) in [
        ("untested", &c.untested),
        ("stubbed", &c.stubbed),
        ("failing", &c.failing),
        ("unexpected", &c.unexpected),
    ] {
        for item in list {
            let _ = writeln!(out, "{what}: {item}");
        }
    }
    if !c.failed_tests.is_empty() {
        let _ = writeln!(out, "failed tests: {}", c.failed_tests.join(", "));
    }
    out
}

/// A run of three tests and a trace with no test:
/// - t_ok: driver → gateway → users, and gateway → audit (an undeclared dependency);
/// - t_fail: payments answers 500, the test fails;
/// - t_mock: gateway → payments-mock (the mock of payments) for a refund;
/// - a trace with no test case: gateway → cart.
const RUN: &str = r#"
    r1:t - driver internal t_ok 0..100 test.case.name=t_ok test.case.result.status=pass
    r1:c t driver client GET 1..99 http.request.method=GET
    r1:s c gateway server "GET /api/users/{id}" 2..98 http.request.method=GET http.route=/api/users/{id}
    r1:g s gateway client GET 3..50 http.request.method=GET
    r1:u g users server "GET /users/{id}" 4..49 http.request.method=GET http.route=/users/{id}
    r1:a s gateway client POST 60..70 http.request.method=POST
    r1:b a audit server "POST /events" 61..69 http.request.method=POST http.route=/events
    r2:t - driver internal t_fail 0..100 test.case.name=t_fail test.case.result.status=fail
    r2:c t driver client POST 1..99 http.request.method=POST http.response.status_code=502
    r2:s c gateway server "POST /api/pay" 2..98 http.request.method=POST http.route=/api/pay http.response.status_code=502
    r2:g s gateway client POST 3..50 http.request.method=POST http.response.status_code=500
    r2:p g payments server "POST /charge" 4..49 http.request.method=POST http.route=/charge http.response.status_code=500
    r3:t - driver internal t_mock 0..100 test.case.name=t_mock
    r3:c t driver client POST 1..99 http.request.method=POST
    r3:s c gateway server "POST /api/refund" 2..98 http.request.method=POST http.route=/api/refund
    r3:g s gateway client POST 3..50 http.request.method=POST
    r3:m g payments-mock server "POST /refunds/{id}" 4..49 http.request.method=POST http.route=/refunds/{id}
    b1:s - gateway server "GET /api/cart" 0..10 http.request.method=GET http.route=/api/cart
    b1:g s gateway client GET 1..9 http.request.method=GET
    b1:k g cart server "GET /cart" 2..8 http.request.method=GET http.route=/cart
"#;

const MANIFEST: &str = r#"
test_services: [driver]
services:
  payments-mock:
    mock_of: payments
  users:
    aliases: ["users.internal:8080"]
edges:
  - driver -> gateway
  - caller: gateway
    callee: users
    interfaces: ["GET /users/:id"]
  - caller: gateway
    callee: payments
    critical: true
    interfaces:
      - operation: POST /charge
        critical: true
      - POST /refunds/<int:id>
  - caller: gateway
    callee: cart
    interfaces: [GET /cart]
  - caller: gateway
    callee: inventory
    critical: true
"#;

fn check(run: &RunGraph, sources: &Sources<'_>, expected_text: Expect) {
    let exp = expected(sources);
    expected_text.assert_eq(&render(&coverage(run, &exp, &failing_hops(run))));
}

#[test]
fn every_status_from_a_manifest() {
    // driver -> gateway is declared without interfaces: whatever it carries is expected. The
    // failed test makes its edge and POST /api/pay failing (failing beats covered). The refund
    // was answered only by the mock: stubbed, on the real edge and on the mock's row. cart was
    // called outside any test: untested. inventory was never called. audit was not declared.
    let run = graph(RUN);
    let m = manifest(MANIFEST);
    check(
        &run,
        &Sources {
            manifest: Some(&m),
            ..Sources::default()
        },
        expect![[r#"
            driver -> gateway: failing
              GET /api/users/{id}: covered
              POST /api/pay: failing
              POST /api/refund: covered
            gateway -> audit: unexpected (not expected)
              POST /events: unexpected (not expected)
            gateway -> cart: untested
              GET /cart: untested
            gateway -> inventory: untested (critical, not observed)
            gateway -> payments: failing (critical)
              POST /charge: failing (critical)
              POST /refunds/{id}: stubbed (not observed)
            gateway -> payments-mock: stubbed (critical)
              POST /refunds/{id}: stubbed
            gateway -> users: covered
              GET /users/{id}: covered
            edges: 3 of 5 covered, 60%
            interfaces: 5 of 7 covered, 71.4%
            critical: 2 of 3 covered, 66.7%
            untested: gateway -> cart
            untested: gateway -> cart GET /cart
            untested: gateway -> inventory (critical)
            stubbed: gateway -> payments POST /refunds/{id}
            failing: driver -> gateway
            failing: driver -> gateway POST /api/pay
            failing: gateway -> payments (critical)
            failing: gateway -> payments POST /charge (critical)
            unexpected: gateway -> audit
            unexpected: gateway -> audit POST /events
            failed tests: t_fail
        "#]],
    );
}

#[test]
fn covered_beats_stubbed_and_a_failure_at_a_mock_leaves_the_real_interface_stubbed() {
    // One test reaches the real payments, another only the mock: covered. A test that fails at
    // the mock never exercised the real refund endpoint: stubbed, not failing; the mock's own
    // row, where the test broke, is failing.
    let run = graph(
        r#"
        r1:t - driver internal real 0..100 test.case.name=real
        r1:g t gateway client POST 3..50 http.request.method=POST
        r1:p g payments server "POST /charge" 4..49 http.request.method=POST http.route=/charge
        r2:t - driver internal mocked 0..100 test.case.name=mocked
        r2:g t gateway client POST 3..50 http.request.method=POST
        r2:p g payments-mock server "POST /charge" 4..49 http.request.method=POST http.route=/charge
        r3:t - driver internal refund 0..100 test.case.name=refund test.case.result.status=fail
        r3:g t gateway client POST 3..50 http.request.method=POST http.response.status_code=500
        r3:p g payments-mock server "POST /refunds" 4..49 http.request.method=POST http.route=/refunds http.response.status_code=500
        "#,
    );
    let m = manifest(
        "services: {payments-mock: {mock_of: payments}}\n\
         edges: [{caller: gateway, callee: payments, interfaces: [POST /charge, POST /refunds]}]\n",
    );
    check(
        &run,
        &Sources {
            manifest: Some(&m),
            ..Sources::default()
        },
        expect![[r#"
            driver -> gateway: unexpected (not expected)
              POST: unexpected (not expected)
            gateway -> payments: covered
              POST /charge: covered
              POST /refunds: stubbed (not observed)
            gateway -> payments-mock: failing
              POST /charge: stubbed
              POST /refunds: failing
            edges: 1 of 1 covered, 100%
            interfaces: 1 of 2 covered, 50%
            critical: 0 of 0 covered, null
            stubbed: gateway -> payments POST /refunds
            unexpected: driver -> gateway
            unexpected: driver -> gateway POST
            failed tests: refund
        "#]],
    );
}

#[test]
fn with_no_source_everything_seen_is_expected() {
    // The store's graph holds the run and an older trace of gateway -> search: the run's own
    // edges are covered or untested, search is untested, nothing is unexpected.
    let run = graph(RUN);
    let mut all = RUN.to_owned();
    all.push_str(
        r#"
        o1:g - gateway client GET 1..9 http.request.method=GET
        o1:k g search server "GET /search" 2..8 http.request.method=GET http.route=/search
        "#,
    );
    let everything = graph(&all);
    let exp = expected(&Sources {
        everything: Some(&everything),
        ..Sources::default()
    });
    let c = coverage(&run, &exp, &failing_hops(&run));
    assert!(c.unexpected.is_empty(), "{}", render(&c));
    let s = c.summary;
    // driver->gateway, gateway->{audit, cart, payments, payments-mock, search, users}.
    assert_eq!(
        (s.edges.expected, s.edges.covered),
        (7, 5),
        "{}",
        render(&c)
    );
    assert_eq!(
        c.edge("gateway", "search").unwrap().status,
        Status::Untested
    );
    assert_eq!(c.edge("gateway", "cart").unwrap().status, Status::Untested);
    assert_eq!(c.edge("gateway", "audit").unwrap().status, Status::Covered);
    assert_eq!(s.critical.percent(), None);
    // A manifest with only aliases configures no expectation: still the default set.
    let aliases_only = manifest("services: {users: {aliases: [\"10.0.0.7:8080\"]}}\n");
    let sources = Sources {
        manifest: Some(&aliases_only),
        everything: Some(&everything),
        ..Sources::default()
    };
    assert!(!sources.configured());
    assert_eq!(expected(&sources), exp);
}

#[test]
fn a_baseline_joins_the_expected_set() {
    // The baseline saw gateway -> search; this run did not call it. With the baseline as the
    // only source, the run's other edges are unexpected unless the baseline had them too.
    let run = graph(RUN);
    let baseline = graph(
        r#"
        o1:g - gateway client GET 1..9 http.request.method=GET
        o1:k g search server "GET /search/:q" 2..8 http.request.method=GET http.route=/search/:q
        o2:g - gateway client GET 1..9 http.request.method=GET
        o2:u g users server "GET /users/{id}" 2..8 http.request.method=GET http.route=/users/{id}
        "#,
    );
    let sources = Sources {
        baseline: Some(&baseline),
        ..Sources::default()
    };
    assert!(sources.configured());
    let c = coverage(&run, &expected(&sources), &failing_hops(&run));
    assert_eq!(c.edge("gateway", "users").unwrap().status, Status::Covered);
    let search = c.edge("gateway", "search").unwrap();
    assert_eq!(search.status, Status::Untested);
    assert_eq!(search.interfaces[0].operation, "GET /search/{q}");
    assert_eq!(
        c.edge("gateway", "cart").unwrap().status,
        Status::Unexpected
    );
    assert_eq!(c.summary.edges.percent(), Some(50.0));
}

#[test]
fn background_traffic_is_opt_in_beside_another_source() {
    let run = graph(RUN);
    let background = graph(
        r#"
        b1:s - gateway server "GET /api/cart" 0..10 http.request.method=GET http.route=/api/cart
        b1:g s gateway client GET 1..9 http.request.method=GET
        b1:a g audit server "POST /events" 2..8 http.request.method=POST http.route=/events
        "#,
    );
    let m = manifest(MANIFEST);
    let off = Sources {
        manifest: Some(&m),
        background: Some(&background),
        ..Sources::default()
    };
    let c = coverage(&run, &expected(&off), &failing_hops(&run));
    assert_eq!(
        c.edge("gateway", "audit").unwrap().status,
        Status::Unexpected
    );
    let on = Sources {
        include_background: true,
        ..off
    };
    let c = coverage(&run, &expected(&on), &failing_hops(&run));
    assert_eq!(c.edge("gateway", "audit").unwrap().status, Status::Covered);
    assert!(c.unexpected.is_empty());
    // The manifest's `background: true` opts in too.
    let m = manifest(&format!("background: true\n{MANIFEST}"));
    let c = coverage(
        &run,
        &expected(&Sources {
            manifest: Some(&m),
            background: Some(&background),
            ..Sources::default()
        }),
        &failing_hops(&run),
    );
    assert_eq!(c.edge("gateway", "audit").unwrap().status, Status::Covered);
}

#[test]
fn percent_rounds_to_one_decimal_and_is_null_when_nothing_is_expected() {
    let p = |covered, expected| Counts { expected, covered }.percent();
    assert_eq!(p(2, 3), Some(66.7));
    assert_eq!(p(1, 3), Some(33.3));
    assert_eq!(p(1, 6), Some(16.7));
    assert_eq!(p(1, 8), Some(12.5));
    assert_eq!(p(5, 7), Some(71.4));
    assert_eq!(p(3, 3), Some(100.0));
    assert_eq!(p(0, 4), Some(0.0));
    assert_eq!(p(0, 0), None);

    // Nothing expected at all: every observed item is unexpected, the numbers are null.
    let run = graph(RUN);
    let c = coverage(&run, &Expected::new(), &failing_hops(&run));
    assert_eq!(c.summary.edges.percent(), None);
    assert_eq!(c.summary.interfaces.percent(), None);
    assert!(c.edges.iter().all(|e| e.status == Status::Unexpected));
    assert_eq!(
        c.unexpected
            .iter()
            .filter(|i| i.operation.is_none())
            .count(),
        6
    );
}

#[test]
fn a_custom_failing_set_replaces_the_default() {
    // The blame engine may place a failure elsewhere than on every hop in error.
    let run = graph(RUN);
    let m = manifest(MANIFEST);
    let exp = expected(&Sources {
        manifest: Some(&m),
        ..Sources::default()
    });
    let mut failing = BTreeSet::new();
    failing.insert(HopKey {
        caller: "gateway".into(),
        callee: "users".into(),
        operation: Some("GET /users/{id}".into()),
    });
    let c = coverage(&run, &exp, &failing);
    assert_eq!(c.edge("gateway", "users").unwrap().status, Status::Failing);
    assert_eq!(
        c.edge("gateway", "payments").unwrap().status,
        Status::Covered
    );
    assert_eq!(c.edge("driver", "gateway").unwrap().status, Status::Covered);
}

// ---- contracts against recorded traffic ----

fn contract_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/contracts")
        .join(name)
}

/// Recorded traffic in three route syntaxes: Express (`:id`) for users, Flask (`<int:id>`)
/// for orders, and a legacy server span named by its raw path for one users call.
const TRAFFIC: &str = r#"
    t1:t - web internal view_profile 0..100 test.case.name=view_profile
    t1:c t web client GET 1..50 http.request.method=GET
    t1:s c users server "GET /v1/users/:id" 2..49 http.request.method=GET http.route=/v1/users/:id
    t1:d t web client POST 51..60 http.request.method=POST
    t1:e d users server "POST /v1/users" 52..59 http.request.method=POST http.route=/v1/users
    t2:t - web internal legacy_orders 0..100 test.case.name=legacy_orders
    t2:c t web client GET 1..50 http.method=GET
    t2:s c users server "GET /v1/users/42/orders" 2..49 http.method=GET
    t3:t - web internal order_details 0..100 test.case.name=order_details
    t3:c t web client GET 1..50 http.request.method=GET
    t3:s c orders server "GET /orders/<int:order_id>" 2..49 http.request.method=GET http.route=/orders/<int:order_id>
    t3:d s orders client POST 10..20 http.request.method=POST
    t3:p d payments server "POST /charge" 11..19 http.request.method=POST http.route=/charge
"#;

#[test]
fn pact_v3_interactions_become_the_consumers_interfaces() {
    let pact = load_pact(&contract_fixture("web-users.pact-v3.json")).unwrap();
    assert_eq!(
        pact.kind,
        ContractKind::Pact {
            version: "3.0.0".into()
        }
    );
    let run = graph(TRAFFIC);
    let exp = expected(&Sources {
        contracts: std::slice::from_ref(&pact),
        ..Sources::default()
    });
    // Two interactions on /v1/users/{id} with different ids are one interface once matched.
    expect![[r#"
        orders -> payments: unexpected (not expected)
          POST /charge: unexpected (not expected)
        web -> orders: unexpected (not expected)
          GET /orders/<int:order_id>: unexpected (not expected)
        web -> users: covered
          DELETE /v1/sessions/s-81b2: untested (not observed)
          GET /v1/users/42/orders: covered
          GET /v1/users/:id: covered
          POST /v1/users: covered
        edges: 1 of 1 covered, 100%
        interfaces: 3 of 4 covered, 75%
        critical: 0 of 0 covered, null
        untested: web -> users DELETE /v1/sessions/s-81b2
        unexpected: orders -> payments
        unexpected: orders -> payments POST /charge
        unexpected: web -> orders
        unexpected: web -> orders GET /orders/<int:order_id>
    "#]]
    .assert_eq(&render(&coverage(&run, &exp, &failing_hops(&run))));
}

#[test]
fn pact_v4_skips_message_interactions() {
    let pact = load_pact(&contract_fixture("orders-payments.pact-v4.json")).unwrap();
    assert_eq!(
        pact.kind,
        ContractKind::Pact {
            version: "4.0".into()
        }
    );
    let ops: Vec<&str> = pact
        .declared
        .iter()
        .filter_map(|d| d.operation.as_deref())
        .collect();
    assert_eq!(
        ops,
        [
            "POST /charge",
            "POST /refunds/rf-1001",
            "GET /charges/ch-77"
        ]
    );
    let run = graph(TRAFFIC);
    let exp = expected(&Sources {
        contracts: std::slice::from_ref(&pact),
        ..Sources::default()
    });
    let c = coverage(&run, &exp, &failing_hops(&run));
    let e = c.edge("orders", "payments").unwrap();
    assert_eq!(e.status, Status::Covered);
    let statuses: Vec<(&str, Status)> = e
        .interfaces
        .iter()
        .map(|i| (i.operation.as_str(), i.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("GET /charges/ch-77", Status::Untested),
            ("POST /charge", Status::Covered),
            ("POST /refunds/rf-1001", Status::Untested),
        ]
    );
}

#[test]
fn openapi_operations_are_expected_from_any_caller() {
    // users' 3.0 document (YAML) has its server path /v1 in front of every operation; orders'
    // 3.1 document (JSON) has a path item by $ref. Operations no caller exercised sit under `*`.
    let users = load_openapi(&contract_fixture("users.openapi-3.0.yaml"), "users", None).unwrap();
    let orders =
        load_openapi(&contract_fixture("orders.openapi-3.1.json"), "orders", None).unwrap();
    assert_eq!(
        orders.kind,
        ContractKind::OpenApi {
            version: "3.1.0".into()
        }
    );
    let contracts = [users, orders];
    let run = graph(TRAFFIC);
    let exp = expected(&Sources {
        contracts: &contracts,
        ..Sources::default()
    });
    expect![[r#"
        * -> orders: untested (not observed)
          DELETE /orders/{orderId}: untested (not observed)
          GET /orders: untested (not observed)
          GET /orders/{orderId}/items/{itemId}: untested (not observed)
        * -> users: untested (not observed)
          DELETE /v1/users/{userId}: untested (not observed)
          GET /v1/health: untested (not observed)
        orders -> payments: unexpected (not expected)
          POST /charge: unexpected (not expected)
        web -> orders: covered
          GET /orders/<int:order_id>: covered
        web -> users: covered
          GET /v1/users/42/orders: covered
          GET /v1/users/:id: covered
          POST /v1/users: covered
        edges: 2 of 2 covered, 100%
        interfaces: 4 of 9 covered, 44.4%
        critical: 0 of 0 covered, null
        untested: * -> orders DELETE /orders/{orderId}
        untested: * -> orders GET /orders
        untested: * -> orders GET /orders/{orderId}/items/{itemId}
        untested: * -> users DELETE /v1/users/{userId}
        untested: * -> users GET /v1/health
        unexpected: orders -> payments
        unexpected: orders -> payments POST /charge
    "#]]
    .assert_eq(&render(&coverage(&run, &exp, &failing_hops(&run))));
}

#[test]
fn manifest_base_path_overrides_the_servers_prefix() {
    let c = load_openapi(
        &contract_fixture("users.openapi-3.0.yaml"),
        "users",
        Some(""),
    )
    .unwrap();
    assert!(
        c.declared
            .iter()
            .any(|d| d.operation.as_deref() == Some("GET /users/{userId}")),
        "{:?}",
        c.declared
    );
}

// ---- the manifest ----

#[test]
fn manifest_parts_and_relative_paths() {
    let m = parse_manifest(
        r#"
version: 1
test_services: [pytest]
services:
  users:
    aliases: ["users.internal:8080", users-7d9f]
    openapi: specs/users.yaml
  orders:
    openapi:
      - file: specs/orders.json
        base_path: /api
  payments-mock:
    mock_of: payments
pacts: [pacts/]
edges:
  - caller: "*"
    callee: users
    critical: true
    interfaces: ["GET /users/{id}"]
"#,
        Path::new("/repo/ci/tracecov.yaml"),
    )
    .unwrap();
    assert!(m.declares_topology());
    assert_eq!(
        m.aliases,
        [
            ("users.internal:8080".to_owned(), "users".to_owned()),
            ("users-7d9f".to_owned(), "users".to_owned()),
        ]
    );
    assert_eq!(m.node_for("users-7d9f"), "users");
    assert_eq!(m.node_for("cart"), "cart");
    let opts = m.analysis_options();
    assert_eq!(opts.test_services, ["pytest"]);
    assert_eq!(m.mocks["payments-mock"], "payments");
    assert_eq!(m.pacts, [PathBuf::from("/repo/ci/pacts/")]);
    assert_eq!(
        m.openapi[0].file,
        PathBuf::from("/repo/ci/specs/orders.json")
    );
    assert_eq!(m.openapi[0].base_path.as_deref(), Some("/api"));
    assert_eq!(
        m.openapi[1].file,
        PathBuf::from("/repo/ci/specs/users.yaml")
    );
    assert_eq!(
        m.declared,
        [Declared {
            caller: None,
            callee: "users".into(),
            operation: Some("GET /users/{id}".into()),
            critical: true,
        }]
    );
}

#[test]
fn manifest_loads_its_contracts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("pacts")).unwrap();
    for name in ["web-users.pact-v3.json", "orders-payments.pact-v4.json"] {
        std::fs::copy(contract_fixture(name), dir.path().join("pacts").join(name)).unwrap();
    }
    std::fs::copy(
        contract_fixture("users.openapi-3.0.yaml"),
        dir.path().join("users.yaml"),
    )
    .unwrap();
    let path = dir.path().join("tracecov.yaml");
    std::fs::write(
        &path,
        "pacts: pacts\nservices:\n  users:\n    openapi: users.yaml\n",
    )
    .unwrap();
    let m = load_manifest(&path).unwrap();
    let contracts = m.load_contracts().unwrap();
    let kinds: Vec<String> = contracts.iter().map(|c| format!("{:?}", c.kind)).collect();
    assert_eq!(
        kinds,
        [
            r#"Pact { version: "4.0" }"#,
            r#"Pact { version: "3.0.0" }"#,
            r#"OpenApi { version: "3.0.3" }"#,
        ]
    );
}

#[test]
fn unknown_names_are_warned_about_with_the_closest_seen() {
    let m = manifest(
        "edges:\n  - gatway -> users\n  - caller: users\n    callee: ext:sendgrid\n\
         services:\n  ext:mail-mock:\n    mock_of: ext:sendgrid\n",
    );
    let seen = ["gateway", "users", "cart", "ext:mail-mock"];
    let warnings = m.unknown_names(seen);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = &warnings[0];
    assert_eq!(w.name, "gatway");
    assert_eq!(w.closest[0], "gateway");
    assert_eq!(w.line, Some(2));
    assert_eq!(
        w.to_string(),
        "tracecov.yaml:2: service \"gatway\" never appears in any trace; similar names seen: \
         gateway"
    );
}

// ---- malformed input ----

fn manifest_err(text: &str) -> SourceError {
    parse_manifest(text, Path::new("ci/tracecov.yaml")).unwrap_err()
}

#[test]
fn malformed_manifests_name_file_line_and_reason() {
    let e = manifest_err("edges:\n  - caller: gateway\n    calee: users\n");
    assert_eq!(e.file, PathBuf::from("ci/tracecov.yaml"));
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.reason.contains("unknown field `calee`"), "{e}");
    assert!(e.to_string().starts_with("ci/tracecov.yaml:3:"), "{e}");

    let e = manifest_err("edges:\n  - gateway => users\n");
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.reason.contains("`caller -> callee`"), "{e}");

    let e = manifest_err("services:\n  users:\n    aliases: [a\n  cart: {}\n");
    assert_eq!(e.line, Some(4), "{e}");
    assert!(
        e.reason.starts_with("did not find expected ',' or ']'"),
        "{e}"
    );

    let e = manifest_err(
        "edges:\n  - caller: gateway\n    callee: users\n    interfaces: [\"GET /users/{id\"]\n",
    );
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.reason.contains("unbalanced braces"), "{e}");

    let e = manifest_err("test_services: pytest\n");
    assert_eq!(e.line, Some(1), "{e}");
    assert!(e.reason.contains("test_services"), "{e}");

    let e = manifest_err("edges:\n  - caller: \"*\"\n    callee: users\n");
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.reason.contains("must list the interfaces"), "{e}");

    let e = manifest_err("version: 2\n");
    assert!(e.reason.contains("unknown manifest version 2"), "{e}");
    assert_eq!(e.line, Some(1));

    let e = load_manifest(Path::new("/nonexistent/tracecov.yaml")).unwrap_err();
    assert!(e.reason.starts_with("cannot read the file"), "{e}");
}

#[test]
fn malformed_pacts_name_file_line_and_reason() {
    let file = Path::new("pacts/web-users.json");
    let e = parse_pact("{\n  \"consumer\": {\"name\": \"web\"},\n  \"provider\": {\"name\": \"users\"},\n  \"interactions\": [,]\n}\n", file).unwrap_err();
    assert_eq!(e.file, file);
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.reason.contains("expected value"), "{e}");

    let e = parse_pact(
        "{\n  \"consumer\": {\"name\": \"web\"},\n  \"interactions\": []\n}\n",
        file,
    )
    .unwrap_err();
    assert!(e.reason.contains("missing field `provider`"), "{e}");
    assert_eq!(e.line, Some(4), "{e}");

    let e = parse_pact(
        r#"{
  "consumer": {"name": "web"},
  "provider": {"name": "users"},
  "interactions": [
    {
      "description": "a user",
      "request": {"method": "FETCH", "path": "/users/1"}
    }
  ],
  "metadata": {"pactSpecification": {"version": "3.0.0"}}
}
"#,
        file,
    )
    .unwrap_err();
    assert_eq!(e.line, Some(7), "{e}");
    assert!(e.reason.contains("interactions[0] (\"a user\")"), "{e}");
    assert!(e.reason.contains("not an HTTP method"), "{e}");

    let e = parse_pact(
        "{\"consumer\": {\"name\": \"web\"}, \"provider\": {\"name\": \"users\"},\n\"metadata\": {\"pactSpecification\": {\"version\": \"5.0.0\"}}}\n",
        file,
    )
    .unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
    assert!(
        e.reason.contains("unsupported Pact specification version"),
        "{e}"
    );
}

#[test]
fn malformed_openapi_documents_name_file_line_and_reason() {
    let yaml = Path::new("specs/users.yaml");
    let e = parse_openapi(
        "openapi: 3.0.3\npaths:\n  /users:\n    get: {\n  /other: x\n",
        yaml,
        "users",
        None,
    )
    .unwrap_err();
    assert_eq!(e.file, yaml);
    assert!(e.line.is_some(), "{e}");

    let e = parse_openapi("swagger: \"2.0\"\npaths: {}\n", yaml, "users", None).unwrap_err();
    assert_eq!(e.line, Some(1), "{e}");
    assert!(e.reason.contains("Swagger 2.0 is not supported"), "{e}");

    let e = parse_openapi(
        "openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths:\n  users/{id}:\n    get: {}\n",
        yaml,
        "users",
        None,
    )
    .unwrap_err();
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.reason.contains("does not start with `/`"), "{e}");

    let json = Path::new("specs/orders.json");
    let e = parse_openapi(
        "{\n  \"openapi\": \"3.1.0\",\n  \"paths\": [\"/orders\"]\n}\n",
        json,
        "orders",
        None,
    )
    .unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.reason.contains("invalid type: sequence"), "{e}");

    let e = parse_openapi("{\"info\": {}}", json, "orders", None).unwrap_err();
    assert!(e.reason.contains("no `openapi` version"), "{e}");
}

// ---- gate ----

fn run_coverage() -> Coverage {
    let run = graph(RUN);
    let m = manifest(MANIFEST);
    let exp = expected(&Sources {
        manifest: Some(&m),
        ..Sources::default()
    });
    coverage(&run, &exp, &failing_hops(&run))
}

#[test]
fn gate_names_what_breaks_each_condition() {
    let c = run_coverage();
    let passing = gate(
        &c,
        &GateConditions {
            min_edge_coverage: Some(60.0),
            min_interface_coverage: Some(71.4),
            ..GateConditions::default()
        },
    );
    assert!(passing.passed(), "{}", passing.text());
    assert_eq!(passing.exit_code(), 0);

    let r = gate(
        &c,
        &GateConditions {
            min_edge_coverage: Some(90.0),
            min_interface_coverage: Some(80.0),
            critical: true,
            no_failures: true,
            ..GateConditions::default()
        },
    );
    assert_eq!(r.exit_code(), 1);
    expect![[r#"
        gate failed: 4 of its conditions did not hold
        --min-edge-coverage: edge coverage is 60% (3 of 5 covered), below the required 90%
          untested gateway -> cart
          untested gateway -> inventory (critical)
        --min-interface-coverage: interface coverage is 71.4% (5 of 7 covered), below the required 80%
          untested gateway -> cart GET /cart
          stubbed gateway -> payments POST /refunds/{id}
        --critical: 3 of 3 critical items are not covered or are failing
          untested gateway -> inventory (critical)
          failing gateway -> payments (critical)
          failing gateway -> payments POST /charge (critical)
        --no-failures: 1 tests failed, 4 expected edges and interfaces are failing
          failing driver -> gateway
          failing driver -> gateway POST /api/pay
          failing gateway -> payments (critical)
          failing gateway -> payments POST /charge (critical)
          failed test t_fail
    "#]]
    .assert_eq(&r.text());
    let conditions: Vec<Condition> = r.violations.iter().map(|v| v.condition).collect();
    assert_eq!(
        conditions,
        [
            Condition::MinEdgeCoverage,
            Condition::MinInterfaceCoverage,
            Condition::Critical,
            Condition::NoFailures
        ]
    );
}

#[test]
fn gate_fails_a_coverage_condition_when_nothing_is_expected() {
    let run = graph(RUN);
    let c = coverage(&run, &Expected::new(), &BTreeSet::new());
    let r = gate(
        &c,
        &GateConditions {
            min_interface_coverage: Some(50.0),
            ..GateConditions::default()
        },
    );
    assert!(!r.passed());
    assert!(r.violations[0].message.contains("coverage is undefined"));
}

#[test]
fn a_coverage_gate_that_could_not_fail_is_refused() {
    let cov = GateConditions {
        min_edge_coverage: Some(80.0),
        ..GateConditions::default()
    };
    let e = check_gate_usable(&cov, false, 0, "nightly").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("run nightly"), "{msg}");
    assert!(
        msg.contains("--manifest") && msg.contains("--baseline RUN"),
        "{msg}"
    );
    assert!(check_gate_usable(&cov, true, 0, "nightly").is_ok());
    assert!(check_gate_usable(&cov, false, 12, "nightly").is_ok());
    let critical = GateConditions {
        critical: true,
        ..GateConditions::default()
    };
    assert!(check_gate_usable(&critical, false, 0, "nightly").is_err());
    let failures_only = GateConditions {
        no_failures: true,
        ..GateConditions::default()
    };
    assert!(check_gate_usable(&failures_only, false, 0, "nightly").is_ok());
}

// ---- impact ----

#[test]
fn impact_lists_the_tests_that_touched_the_changed_services() {
    let run = graph(RUN);
    let names = |changed: &[&str]| {
        let changed: Vec<String> = changed.iter().map(|s| s.to_string()).collect();
        impact(&run, &changed)
    };
    assert_eq!(names(&["payments"]), ["t_fail"]);
    assert_eq!(names(&["users", "payments-mock"]), ["t_mock", "t_ok"]);
    assert_eq!(names(&["gateway"]), ["t_fail", "t_mock", "t_ok"]);
    // cart was only called outside any test.
    assert!(names(&["cart"]).is_empty());
    assert!(names(&["nothing"]).is_empty());
    let ns = graph(
        r#"
        n1:t - driver internal add 0..100 test.case.name=add
        n1:c t driver client POST 1..50 http.request.method=POST
        n1:s c shop/cart server "POST /items" 2..49 http.request.method=POST http.route=/items
        "#,
    );
    assert_eq!(impact(&ns, &["cart".to_owned()]), ["add"]);
    assert_eq!(impact(&ns, &["shop/cart".to_owned()]), ["add"]);
}

// ---- the demo manifest ----

#[test]
fn the_demo_manifest_parses_and_declares_a_mock_and_critical_items() {
    let m = demo_manifest();
    assert_eq!(m.mocks["ext:email-provider"], "ext:sendgrid");
    assert_eq!(m.test_services, [crate::demo::TEST_SERVICE]);
    assert!(
        m.declared
            .iter()
            .any(|d| d.critical && d.operation.is_none() && d.callee == "payments")
    );
    let seen: Vec<&str> = crate::demo::SERVICES
        .iter()
        .copied()
        .chain([
            "ext:email-provider",
            "db:sqlite/users",
            "queue:memory/orders",
        ])
        .collect();
    assert_eq!(m.unknown_names(seen), []);
}

#[test]
fn the_documented_example_manifest_parses() {
    // docs/manifest.md's complete example is what the README copies: it must stay valid.
    let doc = include_str!("../../docs/manifest.md");
    let start = doc.find("```yaml\n").unwrap() + "```yaml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let m = parse_manifest(&doc[start..end], Path::new("docs/tracecov.yaml")).unwrap();
    assert_eq!(m.mocks["payments-mock"], "payments");
    assert_eq!(m.openapi.len(), 2);
    assert_eq!(m.aliases.len(), 2);
    assert!(
        m.declared
            .iter()
            .any(|d| d.caller.is_none() && d.callee == "payments")
    );
    assert!(
        m.declared
            .iter()
            .any(|d| d.critical && d.operation.as_deref() == Some("POST /sessions"))
    );
}

// ---- expectations ----

#[test]
fn expectations_parse_and_change_no_coverage() {
    let m = manifest(
        r#"
expect:
  - name: checkout charges once
    tests: "test_checkout*"
    caller: checkout
    callee: payments
    operation: "POST /charge"
    calls: {min: 1, max: 1}
  - name: no N+1
    repeated: {max: 5}
  - name: payments answers in time
    callee: payments
    duration_ms: {max: 300}
  - name: never the real provider
    callee: "ext:api.stripe.com:443"
    calls: {max: 0}
  - name: idempotent charges
    callee: payments
    attributes: {"http.request.header.idempotency-key": present, "http.request.method": POST}
"#,
    );
    assert_eq!(m.expectations.len(), 5);
    assert!(
        !m.declares_topology(),
        "expectations are no source of the expected set"
    );
    let once = &m.expectations[0];
    assert_eq!(
        once.calls,
        Some(crate::expect::Bounds {
            min: Some(1),
            max: Some(1)
        })
    );
    assert!(once.tests.as_ref().unwrap().matches("test_checkout_paid"));
    assert_eq!(m.expectations[1].repeated, Some(5));
    assert_eq!(m.expectations[2].duration_ms, Some(300.0));
    assert_eq!(
        m.expectations[4].attributes,
        [
            (
                "http.request.header.idempotency-key".to_owned(),
                crate::expect::AttrRule::Present
            ),
            (
                "http.request.method".to_owned(),
                crate::expect::AttrRule::Equals("POST".into())
            ),
        ]
    );
}

#[test]
fn bad_expectations_are_refused_with_the_line_and_what_is_wrong() {
    for (text, line, why) in [
        (
            "expect:\n  - name: a\n    callee: payments\n    count: {max: 1}\n",
            4,
            "unknown field `count`",
        ),
        (
            "expect:\n  - name: a\n    callee: \"pay[\"\n    calls: {max: 1}\n",
            3,
            "callee: a `[` set is not closed",
        ),
        (
            "expect:\n  - name: a\n    calls: {min: 3, max: 1}\n",
            3,
            "cannot be at least 3 and at most 1",
        ),
        (
            "expect:\n  - name: a\n    calls: {}\n",
            3,
            "needs `min`, `max` or both",
        ),
        (
            "expect:\n  - name: a\n    repeated: {max: 0}\n",
            3,
            "say `calls {max: 0}`",
        ),
        (
            "expect:\n  - name: a\n    duration_ms: {max: -5}\n",
            3,
            "positive number",
        ),
        (
            "expect:\n  - name: a\n    callee: b\n",
            2,
            "says nothing to check",
        ),
        (
            "expect:\n  - name: a\n    calls: {max: 1}\n  - name: a\n    calls: {max: 2}\n",
            2,
            "another expectation has this name",
        ),
    ] {
        let e = manifest_err(text);
        assert_eq!(e.line, Some(line), "{text}: {e}");
        assert!(e.reason.contains(why), "{text}: {e}");
    }
}

#[test]
fn the_documented_expectations_parse() {
    let doc = include_str!("../../docs/manifest.md");
    let start = doc.find("```yaml\nexpect:").unwrap() + "```yaml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let m = parse_manifest(&doc[start..end], Path::new("docs/tracecov.yaml")).unwrap();
    assert_eq!(m.expectations.len(), 5);
    assert!(!m.declares_topology());
}
