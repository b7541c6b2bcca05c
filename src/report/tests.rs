//! Snapshots of the JSON and text reports of a small run: a pytest session with a failing test,
//! a database and a queue, so every kind of node and both latency sides appear.

use expect_test::expect;

use super::{RunInfo, build, text, to_json};
use crate::graph::{analyze, fixture};

const RUN: &str = r#"
    s1:s - pytest internal "test session" 0..1000
    s1:t1 s pytest internal tests/test_cart.py::test_add 10..500 status=error
    s1:c1 t1 pytest client POST 20..400 http.request.method=POST url.full=http://frontend:8000/cart?user=1
    s1:f1 c1 frontend server "POST /cart" 21..399 http.request.method=POST http.route=/cart http.response.status_code=500
    s1:d1 f1 frontend client INSERT 22..23.5 db.system.name=postgresql db.namespace=shop db.operation.name=INSERT db.collection.name=carts
    s1:t2 s pytest internal tests/test_cart.py::test_view 15..600
    s1:c2 t2 pytest client GET 30..40 http.request.method=GET url.full=http://frontend:8000/cart
    s1:f2 c2 frontend server "GET /cart" 31..39 http.request.method=GET http.route=/cart
    s1:p2 f2 frontend producer "publish views" 32..33 messaging.system=kafka messaging.destination.name=views
    b1:x - frontend server "GET /health" 0..1 http.request.method=GET http.route=/health
"#;

fn report() -> super::Report {
    let (spans, opts) = fixture::parse(RUN);
    let run = RunInfo {
        id: "r-1".to_owned(),
        name: "nightly".to_owned(),
    };
    build(&run, &analyze(&spans, &opts))
}

#[test]
fn json_report() {
    expect![[r#"
        {
          "run": {
            "id": "r-1",
            "name": "nightly",
            "spans": 10,
            "traces": 2,
            "tests": {
              "total": 2,
              "passed": 1,
              "failed": 1
            },
            "diagnostics": {
              "orphans": 0,
              "duplicate_span_ids": 0,
              "parent_cycles": 0,
              "missing_end_times": 0,
              "clock_skew": 0,
              "unresolved_calls": 0,
              "propagation_breaks": {
                "frontend": 1
              },
              "walks_cut_short": 0
            }
          },
          "nodes": [
            {
              "id": "db:postgresql/shop",
              "kind": "database"
            },
            {
              "id": "frontend",
              "kind": "service"
            },
            {
              "id": "pytest",
              "kind": "service"
            },
            {
              "id": "queue:kafka/views",
              "kind": "messaging"
            }
          ],
          "edges": [
            {
              "caller": "frontend",
              "callee": "db:postgresql/shop",
              "calls": 1,
              "errors": 0,
              "error_classes": {},
              "tests": [
                "tests/test_cart.py::test_add"
              ],
              "latency_ms": {
                "client": {
                  "p50": 1.5,
                  "p95": 1.5,
                  "p99": 1.5
                },
                "server": {
                  "p50": null,
                  "p95": null,
                  "p99": null
                }
              },
              "interfaces": [
                {
                  "operation": "INSERT carts",
                  "calls": 1,
                  "errors": 0,
                  "error_classes": {},
                  "tests": [
                    "tests/test_cart.py::test_add"
                  ]
                }
              ]
            },
            {
              "caller": "frontend",
              "callee": "queue:kafka/views",
              "calls": 1,
              "errors": 0,
              "error_classes": {},
              "tests": [
                "tests/test_cart.py::test_view"
              ],
              "latency_ms": {
                "client": {
                  "p50": 1.0,
                  "p95": 1.0,
                  "p99": 1.0
                },
                "server": {
                  "p50": null,
                  "p95": null,
                  "p99": null
                }
              },
              "interfaces": [
                {
                  "operation": "views",
                  "calls": 1,
                  "errors": 0,
                  "error_classes": {},
                  "tests": [
                    "tests/test_cart.py::test_view"
                  ]
                }
              ]
            },
            {
              "caller": "pytest",
              "callee": "frontend",
              "calls": 2,
              "errors": 1,
              "error_classes": {},
              "tests": [
                "tests/test_cart.py::test_add",
                "tests/test_cart.py::test_view"
              ],
              "latency_ms": {
                "client": {
                  "p50": 10.0,
                  "p95": 380.0,
                  "p99": 380.0
                },
                "server": {
                  "p50": 8.0,
                  "p95": 378.0,
                  "p99": 378.0
                }
              },
              "interfaces": [
                {
                  "operation": "GET /cart",
                  "calls": 1,
                  "errors": 0,
                  "error_classes": {},
                  "tests": [
                    "tests/test_cart.py::test_view"
                  ]
                },
                {
                  "operation": "POST /cart",
                  "calls": 1,
                  "errors": 1,
                  "error_classes": {},
                  "tests": [
                    "tests/test_cart.py::test_add"
                  ]
                }
              ]
            }
          ],
          "failures": []
        }
    "#]]
    .assert_eq(&to_json(&report()));
}

#[test]
fn json_report_reads_back() {
    let report = report();
    let back: super::Report = serde_json::from_str(&to_json(&report)).unwrap();
    assert_eq!(back, report);
}

#[test]
fn text_report() {
    expect![[r#"
        run nightly (r-1): 10 spans in 2 traces
        tests: 2 total, 1 passed, 1 failed

        edges (3):
          frontend -> db:postgresql/shop: 1 call, 0 errors; client p50 1.50 p95 1.50 p99 1.50 ms; server n/a
              INSERT carts: 1 call, 0 errors
            tests: tests/test_cart.py::test_add
          frontend -> queue:kafka/views: 1 call, 0 errors; client p50 1.00 p95 1.00 p99 1.00 ms; server n/a
              views: 1 call, 0 errors
            tests: tests/test_cart.py::test_view
          pytest -> frontend: 2 calls, 1 error; client p50 10.0 p95 380 p99 380 ms; server p50 8.00 p95 378 p99 378 ms
              GET /cart: 1 call, 0 errors
              POST /cart: 1 call, 1 error
            tests: tests/test_cart.py::test_add, tests/test_cart.py::test_view

        diagnostics: 0 orphans, 0 duplicate span ids, 0 parent cycles, 0 missing end times, 0 clock skew, 0 unresolved calls
        server spans with no parent (context propagation): frontend 1
    "#]]
    .assert_eq(&text(&report()));
}
