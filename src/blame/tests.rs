//! Data-driven tests of blame: one fixture per class and per rule of DESIGN's "Failing-hop
//! blame", each with its failures and error classes held as a snapshot. `UPDATE_EXPECT=1 cargo
//! test --lib blame` rewrites the snapshots; review the diff before committing.
//!
//! Fixtures use the graph's format (`graph::fixture`) with three additions for what blame reads:
//! `exception="Type|message|at"` adds an `exception` event `at` milliseconds after the span's
//! start; `log="SEVERITY|body|at"` a log record of the span (severity number 17 is ERROR), and
//! `log="SEVERITY|message|at|Type"` one that carries an exception; `resource.KEY=VALUE` sets a
//! resource attribute of that span's service.

use std::fmt::Write as _;
use std::sync::Arc;

use expect_test::{Expect, expect};

use super::{Blame, analyze, bug};
use crate::graph::fixture::{self, label};
use crate::graph::{AnalysisOptions, Forest, RunGraph, analyze_forest};
use crate::links::LinkTemplate;
use crate::model::{Attributes, Event, LogRecord, Resource, Span};
use crate::redact::Redactor;
use crate::report::{self, ReportOptions, RunInfo};

pub(crate) fn parse(text: &str) -> (Vec<Span>, AnalysisOptions) {
    let (mut spans, opts) = fixture::parse(text);
    for span in &mut spans {
        let mut kept = Attributes::new();
        let mut resource = span.resource.attributes.clone();
        for kv in std::mem::take(&mut span.attributes.0) {
            if kv.key == "exception" {
                let text = kv.value.to_text();
                let mut parts = text.splitn(3, '|');
                let (kind, message) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let at: f64 = parts
                    .next()
                    .unwrap_or("0")
                    .parse()
                    .expect("exception offset");
                let mut attrs = Attributes::new();
                attrs.push("exception.type", kind);
                attrs.push("exception.message", message);
                attrs.push(
                    "exception.stacktrace",
                    format!("at {kind}::raise (src/lib.rs:42)"),
                );
                span.events.push(Event {
                    time_ns: span.start_ns + (at * 1e6) as u64,
                    name: "exception".to_owned(),
                    attributes: attrs,
                });
            } else if kv.key == "log" {
                let text = kv.value.to_text();
                let parts: Vec<&str> = text.splitn(4, '|').collect();
                let at: f64 = parts.get(2).unwrap_or(&"0").parse().expect("log offset");
                let mut attributes = Attributes::new();
                if let Some(kind) = parts.get(3) {
                    attributes.push("exception.type", *kind);
                    attributes.push("exception.message", parts[1]);
                    attributes.push(
                        "exception.stacktrace",
                        format!("at {kind}::raise (src/lib.rs:7)"),
                    );
                }
                span.logs.push(LogRecord {
                    time_ns: span.start_ns + (at * 1e6) as u64,
                    severity_number: parts[0].parse().expect("log severity"),
                    severity_text: String::new(),
                    body: parts.get(1).unwrap_or(&"").to_string(),
                    attributes,
                });
                span.logs.sort_by_key(|l| l.time_ns);
            } else if let Some(key) = kv.key.strip_prefix("resource.") {
                resource.push(key, kv.value);
            } else {
                kept.0.push(kv);
            }
        }
        span.attributes = kept;
        if resource.len() != span.resource.attributes.len() {
            span.resource = Arc::new(Resource::new(resource));
        }
    }
    (spans, opts)
}

fn analyse<'a>(spans: &'a [Span], opts: &AnalysisOptions) -> (Forest<'a>, RunGraph, Blame) {
    let forest = Forest::build(spans);
    let mut graph = analyze_forest(&forest, opts);
    let blame = analyze(&forest, &mut graph);
    (forest, graph, blame)
}

fn ids(ids: &[crate::model::SpanId]) -> String {
    let labels: Vec<String> = ids.iter().map(|s| label(s.as_bytes())).collect();
    labels.join(" ")
}

/// Failures and classified errors as compact text.
fn render(text: &str) -> String {
    let (spans, opts) = parse(text);
    let (_, graph, blame) = analyse(&spans, &opts);
    let mut out = String::new();
    for f in &blame.failures {
        let hop = f.hop.as_ref().map_or("-".to_owned(), |h| {
            format!("{} -> {} {:?}", h.caller, h.callee, h.operation)
        });
        let _ = writeln!(
            out,
            "failure {} {} on {}:{} hop {hop} blamed {}",
            f.test.as_deref().unwrap_or("-"),
            f.class.as_str(),
            label(f.placed_trace.as_bytes()),
            label(f.placed_span.as_bytes()),
            f.blamed.as_deref().unwrap_or("-"),
        );
        let path: Vec<String> = f.path.iter().map(|(_, s)| label(s.as_bytes())).collect();
        let _ = writeln!(out, "  path {}", path.join(" > "));
        let _ = writeln!(out, "  collateral [{}]", ids(&f.collateral));
        let e = &f.evidence;
        let _ = writeln!(
            out,
            "  evidence http {:?} rpc {:?} message {:?} exception {:?} client {:?} server {:?}",
            e.http_status,
            e.rpc_status,
            e.status_message,
            e.exception
                .as_ref()
                .map(|x| format!("{}: {}", x.kind, x.message)),
            e.client_ns.map(|n| n as f64 / 1e6),
            e.server_ns.map(|n| n as f64 / 1e6),
        );
        for l in &e.logs {
            let _ = writeln!(
                out,
                "  log {} at {} {:?}",
                l.severity,
                l.time_ns as f64 / 1e6,
                l.body
            );
        }
        if !e.no_error_recorded.is_empty() {
            let _ = writeln!(out, "  no error recorded [{}]", ids(&e.no_error_recorded));
        }
        let _ = writeln!(out, "  summary: {}", f.summary(&Redactor::default()));
    }
    for e in graph.edges() {
        let classes = &e.edge.classes;
        if classes.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "errors {} -> {}: {} {:?}",
            e.caller.id, e.callee.id, e.edge.errors, classes
        );
        for i in &e.edge.interfaces {
            let classes = &i.classes;
            if !classes.is_empty() {
                let _ = writeln!(out, "  {:?}: {} {:?}", i.operation, i.errors, classes);
            }
        }
    }
    out
}

fn check(fixture: &str, expected: Expect) {
    let actual = render(fixture);
    let (spans, opts) = parse(fixture);
    crate::results::tests::assert_merge_identity(&spans, &opts);
    // Arrival order must not matter.
    let reversed: Vec<&str> = fixture.lines().rev().collect();
    assert_eq!(
        actual,
        render(&reversed.join("\n")),
        "arrival order changed blame"
    );
    expected.assert_eq(&actual);
}

/// A test span of the driver, failed by its result attribute.
const FAILED: &str = "test.case.result.status=fail status=error";

#[test]
fn proxy_504_as_a_string_is_placed_on_the_child_that_held_the_time() {
    check(
        &format!(
            r#"
        t1:t - driver internal test_proxy 0..1100 test.case.name=test_proxy {FAILED}
        t1:c t driver client "GET /api" 10..1050 http.request.method=GET url.template=/api http.response.status_code=504 status=error
        t1:p c proxy server "GET /api" 12..1040 http.request.method=GET http.route=/api http.response.status_code="504" status=error
        t1:b p backend server "GET /slow" 14..1039 http.request.method=GET http.route=/slow status=ok
        t1:q b backend client "SELECT items" 15..20 db.system.name=postgresql db.namespace=shop db.operation.name=SELECT db.collection.name=items
        "#
        ),
        expect![[r#"
            failure test_proxy timeout on t1:b hop proxy -> backend "GET /slow" blamed backend
              path t > c > p > b
              collateral [p c]
              evidence http Some(504) rpc None message None exception None client Some(1028.0) server Some(1025.0)
              summary: backend did not answer GET /slow from proxy in time: HTTP 504 after 1028 ms; 1 test failed here
            errors driver -> proxy: 1 {"timeout": 1}
              "GET /api": 1 {"timeout": 1}
        "#]],
    );
}

#[test]
fn failing_siblings_the_earliest_is_the_origin() {
    check(
        &format!(
            r#"
        t1:t - driver internal test_order 0..500 test.case.name=test_order {FAILED}
        t1:c t driver client "POST /orders" 10..400 http.request.method=POST url.template=/orders http.response.status_code=502 status=error
        t1:o c orders server "POST /orders" 12..390 http.request.method=POST http.route=/orders http.response.status_code=502 status=error
        t1:s2 o orders client "POST /reserve" 30..60 http.request.method=POST url.template=/reserve http.response.status_code=500 status=error
        t1:i s2 stock server "POST /reserve" 31..59 http.request.method=POST http.route=/reserve http.response.status_code=500 status=error status.message="pricing unavailable"
        t1:s1 o orders client "GET /price" 20..50 http.request.method=GET url.template=/price http.response.status_code=503 status=error
        t1:p s1 pricing server "GET /price" 21..49 http.request.method=GET http.route=/price http.response.status_code=503 status=error status.message="price table locked" exception="LockTimeout|price table locked|20"
        "#
        ),
        expect![[r#"
            failure test_order callee_error on t1:p hop orders -> pricing "GET /price" blamed pricing
              path t > c > o > s1 > p
              collateral [c o s1 s2 i]
              evidence http Some(503) rpc None message Some("price table locked") exception Some("LockTimeout: price table locked") client Some(30.0) server Some(28.0)
              summary: pricing answered GET /price from orders with HTTP 503 (`price table locked`); 1 test failed here
            errors driver -> orders: 1 {"callee_error": 1}
              "POST /orders": 1 {"callee_error": 1}
            errors orders -> pricing: 1 {"callee_error": 1}
              "GET /price": 1 {"callee_error": 1}
            errors orders -> stock: 1 {"callee_error": 1}
              "POST /reserve": 1 {"callee_error": 1}
        "#]],
    );
}

#[test]
fn a_chain_of_collateral_errors_is_one_failure() {
    // No test case: the entry request into the gateway fails, and the errors between it and the
    // origin are its collateral, not failures of their own.
    check(
        r#"
        t2:g - gateway server "GET /a" 0..100 http.request.method=GET http.route=/a http.response.status_code=502 status=error
        t2:gc g gateway client "GET /b" 5..95 http.request.method=GET url.template=/b http.response.status_code=502 status=error
        t2:b gc svc-b server "GET /b" 6..94 http.request.method=GET http.route=/b http.response.status_code=502 status=error
        t2:bc b svc-b client "GET /c" 7..93 http.request.method=GET url.template=/c http.response.status_code=500 status=error
        t2:c bc svc-c server "GET /c" 8..92 http.request.method=GET http.route=/c http.response.status_code=500 status=error exception="ValueError|bad input row 7|3"
        "#,
        expect![[r#"
            failure - callee_error on t2:c hop svc-b -> svc-c "GET /c" blamed svc-c
              path g > gc > b > bc > c
              collateral [gc b bc]
              evidence http Some(500) rpc None message None exception Some("ValueError: bad input row 7") client Some(86.0) server Some(84.0)
              summary: svc-c answered GET /c from svc-b with HTTP 500 (`bad input row 7`); 1 request failed here
            errors gateway -> svc-b: 1 {"callee_error": 1}
              "GET /b": 1 {"callee_error": 1}
            errors svc-b -> svc-c: 1 {"callee_error": 1}
              "GET /c": 1 {"callee_error": 1}
        "#]],
    );
}

#[test]
fn an_assertion_span_is_not_a_cause_the_failure_is_silent() {
    check(
        &format!(
            r#"
        t1:t - driver internal test_total 0..100 test.case.name=test_total {FAILED} status.message="assert 41 == 42"
        t1:c t driver client "GET /total" 10..50 http.request.method=GET url.template=/total http.response.status_code=200
        t1:s c shop server "GET /total" 11..49 http.request.method=GET http.route=/total http.response.status_code=200
        t1:a t driver internal "assert total" 60..61 status=error status.message="assert 41 == 42"
        "#
        ),
        expect![[r#"
            failure test_total silent on t1:t hop - blamed -
              path t
              collateral [a]
              evidence http None rpc None message Some("assert 41 == 42") exception None client None server None
              summary: test test_total failed but no span below it reported an error (`assert 41 == 42`)
        "#]],
    );
}

#[test]
fn cancellations_under_a_timeout_are_collateral() {
    // The gateway's two calls: the ads call started first but was cancelled when the search
    // timed out; the search's server saw the cancellation too. The time was held by the index's
    // query, where the failure is placed.
    check(
        &format!(
            r#"
        t1:t - driver internal test_search 0..320 test.case.name=test_search {FAILED}
        t1:c t driver client "GET /search" 0..300 http.request.method=GET url.template=/search http.response.status_code=504 status=error
        t1:g c gateway server "GET /search" 1..299 http.request.method=GET http.route=/search http.response.status_code=504 status=error
        t1:z g gateway client ads.Ads/Get 1.5..252 rpc.system=grpc rpc.service=ads.Ads rpc.method=Get rpc.response.status_code=CANCELLED status=error status.message="context canceled"
        t1:a g gateway client search.Index/Query 2..252 rpc.system=grpc rpc.service=search.Index rpc.method=Query rpc.response.status_code=DEADLINE_EXCEEDED status=error status.message="deadline exceeded after 250 ms"
        t1:x a index server search.Index/Query 3..253 rpc.system=grpc rpc.service=search.Index rpc.method=Query rpc.response.status_code=CANCELLED status=error
        t1:y x index client "SELECT docs" 4..253 db.system=postgresql db.name=docs db.operation=SELECT db.sql.table=docs status=error status.message="context canceled"
        "#
        ),
        expect![[r#"
            failure test_search timeout on t1:y hop index -> db:postgresql/docs "SELECT docs" blamed db:postgresql/docs
              path t > c > g > a > x > y
              collateral [a c g z x]
              evidence http None rpc Some("DEADLINE_EXCEEDED") message Some("deadline exceeded after 250 ms") exception None client Some(249.0) server None
              summary: db:postgresql/docs did not answer SELECT docs from index in time: gRPC DEADLINE_EXCEEDED after 249 ms (`deadline exceeded after 250 ms`); 1 test failed here
            errors driver -> gateway: 1 {"timeout": 1}
              "GET /search": 1 {"timeout": 1}
            errors gateway -> index: 1 {"timeout": 1}
              "search.Index/Query": 1 {"timeout": 1}
            errors index -> db:postgresql/docs: 1 {"callee_error": 1}
              "SELECT docs": 1 {"callee_error": 1}
        "#]],
    );
}

#[test]
fn response_rejected_after_a_success() {
    // t1: the users service answered 200 but the gateway's client span failed anyway.
    // t2: the gateway decoded checkout's 201 and hit a missing field right after the call.
    check(
        &format!(
            r#"
        t1:t - driver internal test_signup 0..100 test.case.name=test_signup {FAILED}
        t1:c t driver client "POST /signup" 1..90 http.request.method=POST url.template=/signup http.response.status_code=502 status=error
        t1:g c gateway server "POST /signup" 2..89 http.request.method=POST http.route=/signup http.response.status_code=502 status=error
        t1:u g gateway client "POST /users" 10..20 http.request.method=POST url.template=/users status=error
        t1:s u users server "POST /users" 11..19 http.request.method=POST http.route=/users http.response.status_code=200
        t2:t - driver internal test_checkout 0..100 test.case.name=test_checkout {FAILED}
        t2:c t driver client "POST /checkout" 1..90 http.request.method=POST url.template=/checkout http.response.status_code=502 status=error
        t2:g c gateway server "POST /checkout" 2..89 http.request.method=POST http.route=/checkout http.response.status_code=502 status=error exception="serde_json::Error|missing field `order_id` at line 1 column 80|59"
        t2:oc g gateway client "POST /orders" 10..60 http.request.method=POST url.template=/orders http.response.status_code=201
        t2:o oc checkout server "POST /orders" 11..59 http.request.method=POST http.route=/orders http.response.status_code=201
        "#
        ),
        expect![[r#"
            failure test_checkout response_rejected on t2:oc hop gateway -> checkout "POST /orders" blamed gateway -> checkout
              path t > c > g > oc
              collateral [g c]
              evidence http Some(201) rpc None message None exception Some("serde_json::Error: missing field `order_id` at line 1 column 80") client Some(50.0) server Some(48.0)
              summary: checkout answered POST /orders from gateway with HTTP 201, but gateway could not use the answer (`missing field 'order_id' at line 1 column 80`); 1 test failed here
            failure test_signup response_rejected on t1:u hop gateway -> users "POST /users" blamed gateway -> users
              path t > c > g > u
              collateral [c g]
              evidence http Some(200) rpc None message None exception None client Some(10.0) server Some(8.0)
              summary: users answered POST /users from gateway with HTTP 200, but gateway could not use the answer; 1 test failed here
            errors driver -> gateway: 2 {"callee_error": 2}
              "POST /checkout": 1 {"callee_error": 1}
              "POST /signup": 1 {"callee_error": 1}
            errors gateway -> users: 1 {"response_rejected": 1}
              "POST /users": 1 {"response_rejected": 1}
        "#]],
    );
}

#[test]
fn a_client_error_with_no_server_span_is_unreachable() {
    check(
        &format!(
            r#"
        t1:t - driver internal test_reset 0..100 test.case.name=test_reset {FAILED}
        t1:c t driver client "POST /reset" 1..90 http.request.method=POST url.template=/reset http.response.status_code=502 status=error
        t1:n c notifications server "POST /reset" 2..89 http.request.method=POST http.route=/reset http.response.status_code=502 status=error
        t1:e n notifications client "POST /v3/mail/send" 3..4 http.request.method=POST url.template=/v3/mail/send service.peer.name=email-provider error.type=connection_refused status=error exception="reqwest::Error|error sending request: Connection refused (os error 111)|1"
        "#
        ),
        expect![[r#"
            failure test_reset unreachable on t1:e hop notifications -> ext:email-provider "POST /v3/mail/send" blamed notifications -> ext:email-provider
              path t > c > n > e
              collateral [c n]
              evidence http None rpc None message None exception Some("reqwest::Error: error sending request: Connection refused (os error 111)") client Some(1.0) server None
              summary: notifications could not reach ext:email-provider for POST /v3/mail/send (`error sending request: Connection refused (os error 111)`); 1 test failed here
            errors driver -> notifications: 1 {"callee_error": 1}
              "POST /reset": 1 {"callee_error": 1}
            errors notifications -> ext:email-provider: 1 {"unreachable": 1}
              "POST /v3/mail/send": 1 {"unreachable": 1}
        "#]],
    );
}

#[test]
fn an_open_circuit_breaker_is_unreachable() {
    check(
        &format!(
            r#"
        t1:t - driver internal test_pay 0..100 test.case.name=test_pay {FAILED}
        t1:c t driver client "POST /pay" 1..90 http.request.method=POST url.template=/pay http.response.status_code=503 status=error
        t1:o c orders server "POST /pay" 2..89 http.request.method=POST http.route=/pay http.response.status_code=503 status=error
        t1:p o orders client "POST /charge" 3..3.1 http.request.method=POST url.template=/charge server.address=payments server.port=8080 status=error exception="Polly.CircuitBreaker.BrokenCircuitException|The circuit is now open and is not allowing calls.|0"
        "#
        ),
        expect![[r#"
            failure test_pay unreachable on t1:p hop orders -> ext:payments:8080 "POST /charge" blamed orders -> ext:payments:8080
              path t > c > o > p
              collateral [c o]
              evidence http None rpc None message None exception Some("Polly.CircuitBreaker.BrokenCircuitException: The circuit is now open and is not allowing calls.") client Some(0.1) server None
              summary: orders did not call ext:payments:8080 for POST /charge: its circuit breaker is open (`The circuit is now open and is not allowing calls.`); 1 test failed here
            errors driver -> orders: 1 {"callee_error": 1}
              "POST /pay": 1 {"callee_error": 1}
            errors orders -> ext:payments:8080: 1 {"unreachable": 1}
              "POST /charge": 1 {"unreachable": 1}
        "#]],
    );
}

#[test]
fn auth_401_and_403() {
    check(
        &format!(
            r#"
        t1:t - driver internal test_login 0..100 test.case.name=test_login {FAILED}
        t1:c t driver client "POST /login" 1..90 http.request.method=POST url.template=/login http.response.status_code=502 status=error
        t1:g c gateway server "POST /login" 2..89 http.request.method=POST http.route=/login http.response.status_code=502 status=error
        t1:u g gateway client "POST /sessions" 3..10 http.request.method=POST url.template=/sessions http.response.status_code=401 status=error
        t1:s u users server "POST /sessions" 4..9 http.request.method=POST http.route=/sessions http.response.status_code=401
        t2:t - driver internal test_admin 0..100 test.case.name=test_admin {FAILED}
        t2:c t driver client "GET /admin" 1..90 http.request.method=GET url.template=/admin http.response.status_code=403 status=error
        t2:g c gateway server "GET /admin" 2..89 http.request.method=GET http.route=/admin http.response.status_code=403
        "#
        ),
        expect![[r#"
            failure test_admin auth on t2:c hop driver -> gateway "GET /admin" blamed driver -> gateway
              path t > c
              collateral []
              evidence http Some(403) rpc None message None exception None client Some(89.0) server Some(87.0)
              summary: gateway refused GET /admin from driver with HTTP 403: the caller's credentials were not accepted; 1 test failed here
            failure test_login auth on t1:u hop gateway -> users "POST /sessions" blamed gateway -> users
              path t > c > g > u
              collateral [c g]
              evidence http Some(401) rpc None message None exception None client Some(7.0) server Some(5.0)
              summary: users refused POST /sessions from gateway with HTTP 401: the caller's credentials were not accepted; 1 test failed here
            errors driver -> gateway: 2 {"auth": 1, "callee_error": 1}
              "GET /admin": 1 {"auth": 1}
              "POST /login": 1 {"callee_error": 1}
            errors gateway -> users: 1 {"auth": 1}
              "POST /sessions": 1 {"auth": 1}
        "#]],
    );
}

#[test]
fn rejected_request_404_and_422() {
    check(
        &format!(
            r#"
        t1:t - driver internal test_item 0..100 test.case.name=test_item {FAILED}
        t1:c t driver client "POST /items" 1..90 http.request.method=POST url.template=/items http.response.status_code=502 status=error
        t1:g c gateway server "POST /items" 2..89 http.request.method=POST http.route=/items http.response.status_code=502 status=error
        t1:u g gateway client "POST /carts/{{id}}/items" 3..10 http.request.method=POST url.template=/carts/{{id}}/items http.status_code="422" status=error
        t1:s u cart server "POST /carts/{{id}}/items" 4..9 http.method=POST http.route=/carts/{{id}}/items http.status_code=422 status.message="quantity: expected integer"
        t2:t - driver internal test_product 0..100 test.case.name=test_product {FAILED}
        t2:c t driver client "GET /products/{{sku}}" 1..90 http.request.method=GET url.template=/products/{{sku}} http.response.status_code=404 status=error
        t2:g c catalog server "GET /products/{{sku}}" 2..89 http.request.method=GET http.route=/products/{{sku}} http.response.status_code=404
        "#
        ),
        expect![[r#"
            failure test_item rejected_request on t1:u hop gateway -> cart "POST /carts/{id}/items" blamed gateway -> cart
              path t > c > g > u
              collateral [c g]
              evidence http Some(422) rpc None message Some("quantity: expected integer") exception None client Some(7.0) server Some(5.0)
              summary: cart rejected the POST /carts/{id}/items request from gateway with HTTP 422 (`quantity: expected integer`); 1 test failed here
            failure test_product rejected_request on t2:c hop driver -> catalog "GET /products/{sku}" blamed driver -> catalog
              path t > c
              collateral []
              evidence http Some(404) rpc None message None exception None client Some(89.0) server Some(87.0)
              summary: catalog rejected the GET /products/{sku} request from driver with HTTP 404; 1 test failed here
            errors driver -> catalog: 1 {"rejected_request": 1}
              "GET /products/{sku}": 1 {"rejected_request": 1}
            errors driver -> gateway: 1 {"callee_error": 1}
              "POST /items": 1 {"callee_error": 1}
            errors gateway -> cart: 1 {"rejected_request": 1}
              "POST /carts/{id}/items": 1 {"rejected_request": 1}
        "#]],
    );
}

#[test]
fn handled_404_and_retried_503_in_a_passing_test_are_errors_not_failures() {
    check(
        r#"
        t1:t - driver internal test_profile 0..200 test.case.name=test_profile test.case.result.status=pass status=ok
        t1:c t driver client "GET /profile" 1..190 http.request.method=GET url.template=/profile http.response.status_code=200
        t1:g c gateway server "GET /profile" 2..189 http.request.method=GET http.route=/profile http.response.status_code=200
        t1:a g gateway client "GET /avatars/{id}" 3..10 http.request.method=GET url.template=/avatars/{id} http.response.status_code=404 status=error
        t1:as a media server "GET /avatars/{id}" 4..9 http.request.method=GET http.route=/avatars/{id} http.response.status_code=404
        t1:p1 g gateway client "GET /prefs" 11..20 http.request.method=GET url.template=/prefs http.response.status_code=503 status=error
        t1:ps1 p1 prefs server "GET /prefs" 12..19 http.request.method=GET http.route=/prefs http.response.status_code=503 status=error
        t1:p2 g gateway client "GET /prefs" 30..40 http.request.method=GET url.template=/prefs http.response.status_code=200
        t1:ps2 p2 prefs server "GET /prefs" 31..39 http.request.method=GET http.route=/prefs http.response.status_code=200
        "#,
        expect![[r#"
            errors gateway -> media: 1 {"rejected_request": 1}
              "GET /avatars/{id}": 1 {"rejected_request": 1}
            errors gateway -> prefs: 1 {"callee_error": 1}
              "GET /prefs": 1 {"callee_error": 1}
        "#]],
    );
}

#[test]
fn grpc_deadline_exceeded_and_invalid_argument() {
    // Legacy numeric codes on t1 (no server span: the callee is not instrumented), current names
    // on t2.
    check(
        &format!(
            r#"
        t1:t - driver internal test_quote 0..400 test.case.name=test_quote {FAILED}
        t1:c t driver client "GET /quote" 1..390 http.request.method=GET url.template=/quote http.response.status_code=504 status=error
        t1:g c gateway server "GET /quote" 2..389 http.request.method=GET http.route=/quote http.response.status_code=504 status=error
        t1:q g gateway client rates.Rates/Quote 3..353 rpc.system=grpc rpc.service=rates.Rates rpc.method=Quote rpc.grpc.status_code=4 server.address=rates.internal server.port=50051 status=error
        t2:t - driver internal test_reserve 0..100 test.case.name=test_reserve {FAILED}
        t2:c t driver client "POST /reserve" 1..90 http.request.method=POST url.template=/reserve http.response.status_code=502 status=error
        t2:g c gateway server "POST /reserve" 2..89 http.request.method=POST http.route=/reserve http.response.status_code=502 status=error
        t2:r g gateway client inventory.Stock/Reserve 3..10 rpc.system=grpc rpc.service=inventory.Stock rpc.method=Reserve rpc.response.status_code=INVALID_ARGUMENT status=error status.message="quantity must be positive"
        t2:s r inventory server inventory.Stock/Reserve 4..9 rpc.system=grpc rpc.service=inventory.Stock rpc.method=Reserve rpc.response.status_code="3"
        "#
        ),
        expect![[r#"
            failure test_quote timeout on t1:q hop gateway -> ext:rates.internal:50051 "rates.Rates/Quote" blamed ext:rates.internal:50051
              path t > c > g > q
              collateral [c g]
              evidence http None rpc Some("DEADLINE_EXCEEDED") message None exception None client Some(350.0) server None
              summary: ext:rates.internal:50051 did not answer rates.Rates/Quote from gateway in time: gRPC DEADLINE_EXCEEDED after 350 ms; 1 test failed here
            failure test_reserve rejected_request on t2:r hop gateway -> inventory "inventory.Stock/Reserve" blamed gateway -> inventory
              path t > c > g > r
              collateral [c g]
              evidence http None rpc Some("INVALID_ARGUMENT") message Some("quantity must be positive") exception None client Some(7.0) server Some(5.0)
              summary: inventory rejected the inventory.Stock/Reserve request from gateway with gRPC INVALID_ARGUMENT (`quantity must be positive`); 1 test failed here
            errors driver -> gateway: 2 {"callee_error": 1, "timeout": 1}
              "GET /quote": 1 {"timeout": 1}
              "POST /reserve": 1 {"callee_error": 1}
            errors gateway -> ext:rates.internal:50051: 1 {"timeout": 1}
              "rates.Rates/Quote": 1 {"timeout": 1}
            errors gateway -> inventory: 1 {"rejected_request": 1}
              "inventory.Stock/Reserve": 1 {"rejected_request": 1}
        "#]],
    );
}

#[test]
fn the_walk_follows_span_links_into_the_consumers_trace() {
    // Request/reply over a queue: the driver's producer gave up waiting for the reply; the
    // worker that consumed the job (its own trace, linked to the producer) failed.
    check(
        &format!(
            r#"
        t1:t - driver internal test_report 0..6000 test.case.name=test_report {FAILED}
        t1:p t driver producer "publish jobs" 1..5001 messaging.system=rabbitmq messaging.destination.name=jobs status=error status.message="no reply within 5 s"
        t2:w - worker consumer "process jobs" 100..200 messaging.system=rabbitmq messaging.destination.name=jobs link=t1:p status=error exception="KeyError|'customer_id'|50"
        "#
        ),
        expect![[r#"
            failure test_report callee_error on t2:w hop queue:rabbitmq/jobs -> worker "jobs" blamed worker
              path t > p > w
              collateral [p]
              evidence http None rpc None message None exception Some("KeyError: 'customer_id'") client None server Some(100.0)
              summary: worker failed jobs from queue:rabbitmq/jobs (`'customer_id'`); 1 test failed here
            errors driver -> queue:rabbitmq/jobs: 1 {"unreachable": 1}
              "jobs": 1 {"unreachable": 1}
            errors queue:rabbitmq/jobs -> worker: 1 {"callee_error": 1}
              "jobs": 1 {"callee_error": 1}
        "#]],
    );
}

/// The inventory fault of the demo, in small: the consumer logs the exception and drops the
/// message with its span status left unset; nothing on the way recorded an outcome.
fn consumer_logged(log: &str) -> String {
    format!(
        r#"
        t1:t - driver internal test_stock 0..500 test.case.name=test_stock {FAILED}
        t1:o t orders server "POST /orders" 10..60 http.request.method=POST http.route=/orders
        t1:p o orders producer "publish orders" 20..25 messaging.system=memory messaging.destination.name=orders
        t1:i p inventory consumer "process orders" 30..80 messaging.system=memory messaging.destination.name=orders {log}
        "#
    )
}

#[test]
fn a_consumer_that_only_logged_an_exception_is_blamed_through_the_producer() {
    check(
        &consumer_logged(r#"log="17|reserve failed: no stock for sku 42|5|OutOfStock""#),
        expect![[r#"
            failure test_stock callee_error on t1:i hop queue:memory/orders -> inventory "orders" blamed inventory
              path t > o > p > i
              collateral []
              evidence http None rpc None message None exception Some("OutOfStock: reserve failed: no stock for sku 42") client None server Some(50.0)
              log ERROR at 1700000000035 "reserve failed: no stock for sku 42"
              no error recorded [o p]
              summary: inventory failed orders from queue:memory/orders (`reserve failed: no stock for sku 42`); 1 test failed here
            errors driver -> orders: 1 {"callee_error": 1}
              "POST /orders": 1 {"callee_error": 1}
            errors queue:memory/orders -> inventory: 1 {"callee_error": 1}
              "orders": 1 {"callee_error": 1}
        "#]],
    );
    // Without the log record nothing below the test reported an error.
    check(
        &consumer_logged(r#"log="9|reserving sku 42|1""#),
        expect![[r#"
            failure test_stock silent on t1:t hop - blamed -
              path t
              collateral []
              evidence http None rpc None message None exception None client None server None
              summary: test test_stock failed but no span below it reported an error
            errors driver -> orders: 1 {"callee_error": 1}
              "POST /orders": 1 {"callee_error": 1}
        "#]],
    );
}

/// A gateway whose call to payments recorded nothing (`CALL`), payments failing below it.
fn gap(call: &str, below: &str) -> String {
    format!(
        r#"
        t1:t - driver internal test_pay 0..500 test.case.name=test_pay {FAILED}
        t1:c t driver client "POST /checkout" 10..400 http.request.method=POST url.template=/checkout http.response.status_code=502 status=error
        t1:g c gateway server "POST /checkout" 12..390 http.request.method=POST http.route=/checkout http.response.status_code=502 status=error
        t1:k g gateway {call}
        t1:p k {below}
        "#
    )
}

const CHARGE_500: &str = r#"payments server "POST /charge" 21..299 http.request.method=POST http.route=/charge http.response.status_code=500 status=error status.message="ledger down""#;

#[test]
fn a_call_that_recorded_no_outcome_is_crossed_to_the_error_below() {
    check(
        &gap(
            r#"client "POST /charge" 20..300 http.request.method=POST url.template=/charge"#,
            CHARGE_500,
        ),
        expect![[r#"
            failure test_pay callee_error on t1:p hop gateway -> payments "POST /charge" blamed payments
              path t > c > g > k > p
              collateral [c g]
              evidence http Some(500) rpc None message Some("ledger down") exception None client Some(280.0) server Some(278.0)
              no error recorded [k]
              summary: payments answered POST /charge from gateway with HTTP 500 (`ledger down`); 1 test failed here
            errors driver -> gateway: 1 {"callee_error": 1}
              "POST /checkout": 1 {"callee_error": 1}
            errors gateway -> payments: 1 {"callee_error": 1}
              "POST /charge": 1 {"callee_error": 1}
        "#]],
    );
}

#[test]
fn the_test_drivers_own_call_that_recorded_nothing_is_crossed() {
    // The driver's client span kept no status (its exception was swallowed by the test); the
    // failure is placed in the system, never on the driver's own span.
    check(
        &format!(
            r#"
        t1:t - driver internal test_pay 0..500 test.case.name=test_pay {FAILED}
        t1:c t driver client "POST /checkout" 10..400 http.request.method=POST url.template=/checkout
        t1:g c gateway server "POST /checkout" 12..390 http.request.method=POST http.route=/checkout http.response.status_code=500 status=error
        "#
        ),
        expect![[r#"
            failure test_pay callee_error on t1:g hop driver -> gateway "POST /checkout" blamed gateway
              path t > c > g
              collateral []
              evidence http Some(500) rpc None message None exception None client Some(390.0) server Some(378.0)
              no error recorded [c]
              summary: gateway answered POST /checkout from driver with HTTP 500; 1 test failed here
            errors driver -> gateway: 1 {"callee_error": 1}
              "POST /checkout": 1 {"callee_error": 1}
        "#]],
    );
}

#[test]
fn an_explicit_success_internal_and_database_spans_are_not_gaps() {
    // The call answered 200: the 500 below it was handled.
    check(
        &gap(
            r#"client "POST /charge" 20..300 http.request.method=POST url.template=/charge http.response.status_code=200"#,
            CHARGE_500,
        ),
        expect![[r#"
            failure test_pay callee_error on t1:g hop driver -> gateway "POST /checkout" blamed gateway
              path t > c > g
              collateral [c]
              evidence http Some(502) rpc None message None exception None client Some(390.0) server Some(378.0)
              summary: gateway answered POST /checkout from driver with HTTP 502; 1 test failed here
            errors driver -> gateway: 1 {"callee_error": 1}
              "POST /checkout": 1 {"callee_error": 1}
            errors gateway -> payments: 1 {"callee_error": 1}
              "POST /charge": 1 {"callee_error": 1}
        "#]],
    );
    // An internal span of the gateway with status unset.
    check(
        &gap(r#"internal "build charge" 20..300"#, CHARGE_500),
        expect![[r#"
            failure test_pay callee_error on t1:g hop driver -> gateway "POST /checkout" blamed gateway
              path t > c > g
              collateral [c]
              evidence http Some(502) rpc None message None exception None client Some(390.0) server Some(378.0)
              summary: gateway answered POST /checkout from driver with HTTP 502; 1 test failed here
            errors driver -> gateway: 1 {"callee_error": 1}
              "POST /checkout": 1 {"callee_error": 1}
            errors gateway -> payments: 1 {"callee_error": 1}
              "POST /charge": 1 {"callee_error": 1}
        "#]],
    );
    // A database call with status unset (the span below it: a proxy that recorded an error).
    check(
        &gap(
            r#"client "SELECT ledger" 20..300 db.system.name=postgresql db.namespace=ledger db.operation.name=SELECT"#,
            r#"pgproxy server "SELECT ledger" 21..299 status=error status.message="pool exhausted""#,
        ),
        expect![[r#"
            failure test_pay callee_error on t1:g hop driver -> gateway "POST /checkout" blamed gateway
              path t > c > g
              collateral [c]
              evidence http Some(502) rpc None message None exception None client Some(390.0) server Some(378.0)
              summary: gateway answered POST /checkout from driver with HTTP 502; 1 test failed here
            errors driver -> gateway: 1 {"callee_error": 1}
              "POST /checkout": 1 {"callee_error": 1}
            errors gateway -> pgproxy: 1 {"callee_error": 1}
              "SELECT": 1 {"callee_error": 1}
        "#]],
    );
}

/// Regression: Express under the Node auto-instrumentations (default settings) puts
/// `middleware` and `request handler` INTERNAL spans, status unset, between its server span and
/// the calls its handler makes. The walk stopped at the server span and blamed the Express
/// service for its callee's 500 (tests/it/node_runner.rs found it with the real SDK).
#[test]
fn a_call_in_error_under_a_frameworks_own_layers_is_followed() {
    check(
        &format!(
            r#"
        t1:t - driver internal test_pay 0..500 test.case.name=test_pay {FAILED}
        t1:c t driver client "POST /checkout" 10..400 http.request.method=POST url.template=/checkout http.response.status_code=502 status=error
        t1:g c storefront server "POST /checkout" 12..390 http.method=POST http.route=/checkout http.status_code=502 status=error
        t1:m g storefront internal "middleware - query" 13..14 http.route=/checkout
        t1:h m storefront internal "request handler - /checkout" 15..380 http.route=/checkout
        t1:k h storefront client POST 20..300 http.method=POST http.url=http://payments:8080/charge http.status_code=500
        t1:p k {CHARGE_500}
        "#
        ),
        expect![[r#"
            failure test_pay callee_error on t1:p hop storefront -> payments "POST /charge" blamed payments
              path t > c > g > k > p
              collateral [c g k]
              evidence http Some(500) rpc None message Some("ledger down") exception None client Some(280.0) server Some(278.0)
              summary: payments answered POST /charge from storefront with HTTP 500 (`ledger down`); 1 test failed here
            errors driver -> storefront: 1 {"callee_error": 1}
              "POST /checkout": 1 {"callee_error": 1}
            errors storefront -> payments: 1 {"callee_error": 1}
              "POST /charge": 1 {"callee_error": 1}
        "#]],
    );
}

#[test]
fn recorded_codes_decide_before_logged_errors() {
    // A 404 the test expected and a 200, both of which logged ERROR: the 404 stays a
    // rejected_request on its edge, the 200 no error at all.
    check(
        r#"
        t1:t - driver internal test_lookup 0..100 test.case.name=test_lookup test.case.result.status=pass status=ok
        t1:c t driver client "GET /item" 10..50 http.request.method=GET url.template=/item http.response.status_code=404 log="17|item 7 not found|5"
        t1:s c shop server "GET /item" 11..49 http.request.method=GET http.route=/item http.response.status_code=404 log="17|item 7 not found|4"
        t1:c2 t driver client "GET /list" 60..90 http.request.method=GET url.template=/list http.response.status_code=200
        t1:s2 c2 shop server "GET /list" 61..89 http.request.method=GET http.route=/list http.response.status_code=200 log="17|cache refresh failed|3|CacheError"
        "#,
        expect![[r#"
            errors driver -> shop: 1 {"rejected_request": 1}
              "GET /item": 1 {"rejected_request": 1}
        "#]],
    );
}

#[test]
fn logged_evidence_is_redacted_in_the_report_and_quoted_by_the_bug_report() {
    let text = consumer_logged(
        r#"log="17|login to stock db failed: password=hunter2|5|AuthError" log="21|giving up on order 9|8""#,
    );
    let (spans, analysis) = parse(&text);
    let opts = ReportOptions::default();
    let report = report::from_spans(&RunInfo::default(), &spans, &analysis, &opts);
    let evidence = serde_json::to_string_pretty(&report.failures[0].evidence).unwrap();
    expect![[r#"
        {
          "status_message": null,
          "http_status": null,
          "rpc_status": null,
          "exception": {
            "type": "AuthError",
            "message": "login to stock db failed: password=[REDACTED]",
            "stacktrace": "at AuthError::raise (src/lib.rs:7)"
          },
          "client_ms": null,
          "server_ms": 50.0,
          "logs": [
            {
              "time_unix_nano": "1700000000035000000",
              "severity": "ERROR",
              "body": "login to stock db failed: password=[REDACTED]"
            },
            {
              "time_unix_nano": "1700000000038000000",
              "severity": "FATAL",
              "body": "giving up on order 9"
            }
          ],
          "no_error_recorded": [
            "6f00000000000000",
            "7000000000000000"
          ]
        }"#]]
    .assert_eq(&evidence);

    let bug = bug::bug_report(
        &spans,
        fixture::trace_id("t1"),
        None,
        &analysis,
        None,
        &opts,
    )
    .unwrap();
    let markdown = bug::bug_markdown(&bug);
    assert!(!markdown.contains("hunter2"), "{markdown}");
    let path_and_evidence =
        &markdown[markdown.find("## Path").unwrap()..markdown.find("## Timings").unwrap()];
    expect![[r###"
        ## Path

        - `driver` internal `test_stock` (500 ms, error)
          - `orders` server `POST /orders` (50.0 ms) — recorded no error, stepped through
            - `orders` producer `publish orders` (5.0 ms) — recorded no error, stepped through
              - `inventory` consumer `process orders` (50.0 ms, error) — **failure placed here**

        ```mermaid
        flowchart TD
          s0["driver: test_stock"]
          s1["orders: POST /orders"]
          s0 --> s1
          s2["orders: publish orders"]
          s1 --> s2
          s3["inventory: process orders"]
          s2 --> s3
          classDef failed fill:#fdd,stroke:#c00
          class s3 failed
        ```

        ## Evidence

        - Exception: `AuthError`: `login to stock db failed: password=[REDACTED]`

        ```
        at AuthError::raise (src/lib.rs:7)
        ```
        - Logged by `inventory` on the span the failure is placed on:
          - `ERROR` at 2023-11-14 22:13:20.035 UTC: `login to stock db failed: password=[REDACTED]`
          - `FATAL` at 2023-11-14 22:13:20.038 UTC: `giving up on order 9`
        - The call from `driver` to `orders` (`POST /orders`) recorded no error, but the failure started below it: the walk stepped through it.
        - The call from `orders` to `inventory` (`publish orders`) recorded no error, but the failure started below it: the walk stepped through it.

    "###]]
    .assert_eq(path_and_evidence);
}

/// The payments fault of the demo, in small: a callee error three services down, with the
/// resource facts a bug report shows.
const CHARGE_FAILS: &str = r#"
    t1:t - shop-tests internal checkout_paid 0..120 test.case.name=checkout_paid test.case.result.status=fail status=error status.message="POST /api/checkout: expected 201, got 502"
    t1:c t shop-tests client "POST /api/checkout" 1..110 http.request.method=POST url.template=/api/checkout http.response.status_code=502 status=error
    t1:g c gateway server "POST /api/checkout" 2..109 http.request.method=POST http.route=/api/checkout http.response.status_code=502 status=error resource.service.version=2.3.1 resource.deployment.environment.name=ci
    t1:go g gateway client "POST /orders" 3..100 http.request.method=POST url.template=/orders http.response.status_code=502 status=error
    t1:o go checkout server "POST /orders" 4..99 http.request.method=POST http.route=/orders http.response.status_code=502 status=error resource.service.version=1.9.0
    t1:oc o checkout client "POST /charge" 10..40 http.request.method=POST url.template=/charge http.response.status_code=500 status=error
    t1:p oc payments server "POST /charge" 11..39 http.request.method=POST http.route=/charge http.response.status_code=500 status=error status.message="ledger write failed: currency mismatch" exception="LedgerError|ledger write failed: currency mismatch|20" resource.service.version=0.4.2 resource.deployment.environment.name=ci
"#;

fn bug_for(text: &str, opts: &ReportOptions) -> bug::BugReport {
    let (spans, analysis) = parse(text);
    let run = RunInfo {
        id: "r-7".to_owned(),
        name: "nightly".to_owned(),
    };
    bug::bug_report(
        &spans,
        fixture::trace_id("t1"),
        None,
        &analysis,
        Some(&run),
        opts,
    )
    .unwrap()
}

#[test]
fn bug_report_markdown() {
    let opts = ReportOptions {
        links: "jaeger=https://jaeger.example.com"
            .parse::<LinkTemplate>()
            .unwrap(),
        redactor: Redactor::default(),
    };
    let bug = bug_for(CHARGE_FAILS, &opts);
    expect![[r##"
        # checkout_paid failed: callee_error at checkout -> payments (POST /charge)

        payments answered POST /charge from checkout with HTTP 500 (`ledger write failed: currency mismatch`); 1 test failed here

        | | |
        |---|---|
        | Failing hop | `checkout` → `payments`, `POST /charge` |
        | Class | `callee_error` |
        | Blamed | `payments` |
        | Test | `checkout_paid` |
        | Run | nightly (`r-7`) |
        | Trace | `74310000000000000000000000000000` |
        | Span | `7000000000000000` |

        ## Path

        - `shop-tests` internal `checkout_paid` (120 ms, error)
          - `shop-tests` client `POST /api/checkout` (HTTP 502, 109 ms, error)
            - `gateway` server `POST /api/checkout` (HTTP 502, 107 ms, error)
              - `gateway` client `POST /orders` (HTTP 502, 97.0 ms, error)
                - `checkout` server `POST /orders` (HTTP 502, 95.0 ms, error)
                  - `checkout` client `POST /charge` (HTTP 500, 30.0 ms, error)
                    - `payments` server `POST /charge` (HTTP 500, 28.0 ms, error) — **failure placed here**

        ```mermaid
        flowchart TD
          s0["shop-tests: checkout_paid"]
          s1["shop-tests: POST /api/checkout<br/>HTTP 502"]
          s0 --> s1
          s2["gateway: POST /api/checkout<br/>HTTP 502"]
          s1 --> s2
          s3["gateway: POST /orders<br/>HTTP 502"]
          s2 --> s3
          s4["checkout: POST /orders<br/>HTTP 502"]
          s3 --> s4
          s5["checkout: POST /charge<br/>HTTP 500"]
          s4 --> s5
          s6["payments: POST /charge<br/>HTTP 500"]
          s5 --> s6
          classDef failed fill:#fdd,stroke:#c00
          class s6 failed
        ```

        ## Evidence

        - Status message: `ledger write failed: currency mismatch`
        - HTTP status: 500
        - Exception: `LedgerError`: `ledger write failed: currency mismatch`

        ```
        at LedgerError::raise (src/lib.rs:42)
        ```
        - Consequences (errors caused by this one): `6300000000000000`, `6700000000000000`, `676f000000000000`, `6f00000000000000`, `6f63000000000000`

        ## Timings

        - Failing hop, caller's side: 30.0 ms
        - Failing hop, callee's side: 28.0 ms
        - Test: 120 ms

        ## Services

        - `shop-tests`: version unknown, environment unknown
        - `gateway`: version `2.3.1`, environment `ci`
        - `checkout`: version `1.9.0`, environment unknown
        - `payments`: version `0.4.2`, environment `ci`

        ## Links

        - [The span the failure is placed on](https://jaeger.example.com/trace/74310000000000000000000000000000?uiFind=7000000000000000)
        - [The failing span](https://jaeger.example.com/trace/74310000000000000000000000000000?uiFind=7400000000000000)
    "##]]
    .assert_eq(&bug::bug_markdown(&bug));
}

#[test]
fn bug_report_json_is_the_report_failure_plus_run_and_path() {
    let (spans, analysis) = parse(CHARGE_FAILS);
    let opts = ReportOptions::default();
    let bug = bug_for(CHARGE_FAILS, &opts);
    let json: serde_json::Value = serde_json::from_str(&bug::bug_json(&bug)).unwrap();
    let run = RunInfo {
        id: "r-7".to_owned(),
        name: "nightly".to_owned(),
    };
    let report = report::from_spans(&run, &spans, &analysis, &opts);
    let mut in_report = serde_json::to_value(&report.failures[0]).unwrap();
    let in_report = in_report.as_object_mut().unwrap();
    let mut bug_obj = json.as_object().unwrap().clone();
    assert_eq!(
        bug_obj.remove("run").unwrap(),
        serde_json::json!({"id": "r-7", "name": "nightly"})
    );
    let path: Vec<String> = ["t", "c", "g", "go", "o", "oc", "p"]
        .iter()
        .map(|l| fixture::span_id(l).to_hex())
        .collect();
    assert_eq!(bug_obj.remove("path").unwrap(), serde_json::json!(path));
    assert_eq!(&bug_obj, in_report);

    let other = bug::bug_report(
        &spans,
        fixture::trace_id("t1"),
        Some(fixture::span_id("g")),
        &analysis,
        None,
        &opts,
    );
    assert!(matches!(other, Err(bug::BugError::NoFailureAtSpan { .. })));
    let none = bug::bug_report(
        &spans,
        fixture::trace_id("zz"),
        None,
        &analysis,
        None,
        &opts,
    );
    assert!(matches!(none, Err(bug::BugError::NoSpans(_))));
}

/// Secrets planted where real spans carry them; none may reach any output.
const SECRETS: [&str; 6] = [
    "HEADERSECRET",
    "DBPASSWORDSECRET",
    "QUERYSECRET",
    "URLPASSSECRET",
    "BEARERSECRET",
    "COOKIESECRET",
];

const LEAKY: &str = r#"
    t1:t - shop-tests internal checkout_paid 0..120 test.case.name=checkout_paid test.case.result.status=fail status=error status.message="POST http://gw/api/checkout?token=QUERYSECRET: expected 201"
    t1:c t shop-tests client "POST /api/checkout" 1..110 http.request.method=POST url.template=/api/checkout url.full="http://gw/api/checkout?token=QUERYSECRET" http.request.header.authorization="Bearer HEADERSECRET" http.response.status_code=502 status=error
    t1:g c gateway server "POST /api/checkout" 2..109 http.request.method=POST http.route=/api/checkout http.request.header.cookie="session=COOKIESECRET" http.response.status_code=502 status=error
    t1:oc g gateway client "POST https://admin:URLPASSSECRET@pay:8443/charge?api_key=QUERYSECRET" 10..40 http.request.method=POST url.full="https://admin:URLPASSSECRET@pay:8443/charge?api_key=QUERYSECRET" http.response.status_code=500 status=error
    t1:p oc payments server "POST /charge" 11..39 http.request.method=POST http.route=/charge http.response.status_code=500 status=error db.password=DBPASSWORDSECRET status.message="ledger at postgres://ledger:URLPASSSECRET@db/ledger refused Bearer BEARERSECRET" exception="LedgerError|token rejected: Authorization: Bearer BEARERSECRET from https://admin:URLPASSSECRET@pay/x?api_key=QUERYSECRET|20" resource.db.password=DBPASSWORDSECRET
"#;

fn every_output(opts: &ReportOptions) -> String {
    let (spans, analysis) = parse(LEAKY);
    let run = RunInfo {
        id: "r-1".to_owned(),
        name: "nightly".to_owned(),
    };
    let report = report::from_spans(&run, &spans, &analysis, opts);
    assert_eq!(report.failures.len(), 1);
    let bug = bug::bug_report(
        &spans,
        fixture::trace_id("t1"),
        None,
        &analysis,
        Some(&run),
        opts,
    )
    .unwrap();
    let mut attachment = Vec::new();
    bug::attach(&spans, &opts.redactor, &mut attachment).unwrap();
    [
        report::to_json(&report),
        report::text(&report),
        bug::bug_markdown(&bug),
        bug::bug_json(&bug),
        String::from_utf8(attachment).unwrap(),
    ]
    .join("\n----\n")
}

#[test]
fn no_secret_reaches_any_output() {
    let out = every_output(&ReportOptions::default());
    for secret in SECRETS {
        assert!(!out.contains(secret), "{secret} leaked:\n{out}");
    }
    assert!(out.contains("[REDACTED]"));
    // The evidence is still there, minus the secrets.
    assert!(out.contains("LedgerError"), "{out}");

    // The explicit opt-out writes everything as it came: the planted secrets were reachable.
    let raw = every_output(&ReportOptions {
        redactor: Redactor::disabled(),
        ..ReportOptions::default()
    });
    for secret in SECRETS {
        assert!(
            raw.contains(secret),
            "{secret} was not planted where outputs read"
        );
    }
}

#[test]
fn report_with_blame_lists_failures_and_classes_errors() {
    let (spans, analysis) = parse(CHARGE_FAILS);
    let run = RunInfo {
        id: "r-7".to_owned(),
        name: "nightly".to_owned(),
    };
    let report = report::from_spans(&run, &spans, &analysis, &ReportOptions::default());
    let json: serde_json::Value = serde_json::from_str(&report::to_json(&report)).unwrap();
    let failure = &json["failures"][0];
    assert_eq!(failure["class"], "callee_error");
    assert_eq!(failure["blamed"], "payments");
    assert_eq!(
        failure["hop"],
        serde_json::json!({"caller": "checkout", "callee": "payments", "operation": "POST /charge"})
    );
    assert_eq!(failure["evidence"]["exception"]["type"], "LedgerError");
    assert_eq!(
        failure["link"],
        format!(
            "http://127.0.0.1:4320/traces/{}?span={}",
            fixture::trace_id("t1").to_hex(),
            fixture::span_id("p").to_hex()
        )
    );
    let edge = json["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["caller"] == "checkout" && e["callee"] == "payments")
        .unwrap();
    assert_eq!(
        edge["error_classes"],
        serde_json::json!({"callee_error": 1})
    );
    assert_eq!(
        edge["interfaces"][0]["error_classes"],
        serde_json::json!({"callee_error": 1})
    );
    // Reports keep reading back (the API client renders a fetched report as text).
    let back: report::Report = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
    expect![[r#"
        run nightly (r-7): 7 spans in 1 traces
        tests: 1 total, 0 passed, 1 failed

        failures (1):
          checkout_paid: callee_error at checkout -> payments POST /charge
            payments answered POST /charge from checkout with HTTP 500 (`ledger write failed: currency mismatch`); 1 test failed here
            http://127.0.0.1:4320/traces/74310000000000000000000000000000?span=7000000000000000

        edges (3):
          checkout -> payments: 1 call, 1 error (callee_error 1); client p50 30.0 p95 30.0 p99 30.0 ms; server p50 28.0 p95 28.0 p99 28.0 ms
              POST /charge: 1 call, 1 error (callee_error 1)
            tests: checkout_paid
          gateway -> checkout: 1 call, 1 error (callee_error 1); client p50 97.0 p95 97.0 p99 97.0 ms; server p50 95.0 p95 95.0 p99 95.0 ms
              POST /orders: 1 call, 1 error (callee_error 1)
            tests: checkout_paid
          shop-tests -> gateway: 1 call, 1 error (callee_error 1); client p50 109 p95 109 p99 109 ms; server p50 107 p95 107 p99 107 ms
              POST /api/checkout: 1 call, 1 error (callee_error 1)
            tests: checkout_paid

        diagnostics: 0 orphans, 0 duplicate span ids, 0 parent cycles, 0 missing end times, 0 clock skew, 0 unresolved calls
    "#]].assert_eq(&report::text(&report));
}

/// A chain of spans in error deeper than the walk's limit: the failure names where the walk
/// stopped, and the report says the walk was cut short (it used to say nothing).
#[test]
fn an_origin_walk_cut_short_is_a_diagnostic() {
    use crate::model::{SpanId, SpanKind, Status, StatusCode, TraceId};
    let trace = TraceId::from_bytes([7; 16]).unwrap();
    let mut spans = Vec::new();
    let depth = 1_000u64;
    for i in 0..depth {
        let mut s = Span::new(
            trace,
            SpanId::from_bytes((i + 1).to_be_bytes()).unwrap(),
            "hop",
        );
        s.parent_span_id = (i > 0).then(|| SpanId::from_bytes(i.to_be_bytes()).unwrap());
        s.kind = if i == 0 {
            SpanKind::Server
        } else {
            SpanKind::Internal
        };
        s.start_ns = i;
        s.end_ns = 2 * depth - i;
        s.status = Status {
            code: StatusCode::Error,
            message: String::new(),
        };
        spans.push(s);
    }
    let forest = Forest::build(&spans);
    let mut graph = analyze_forest(&forest, &AnalysisOptions::default());
    let blame = analyze(&forest, &mut graph);
    assert_eq!(blame.failures.len(), 1);
    assert!(blame.failures[0].cut_short);
    let info = crate::report::RunInfo::default();
    let report = crate::report::build_with(&info, &graph, &blame, &Default::default());
    assert_eq!(report.run.diagnostics.walks_cut_short, 1);
    assert!(crate::report::text(&report).contains("origin walks cut short at depth 512: 1"));
}
