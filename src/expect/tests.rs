//! Each rule held and broken on small fixtures, the violations held as snapshots.

use expect_test::{Expect, expect};

use super::*;
use crate::graph::fixture::{label, parse};
use crate::graph::{Forest, analyze_forest};

/// A test that places an order: checkout charges payments `charges` times, one after another.
fn checkout(charges: usize, key: bool) -> String {
    let mut s = String::from(
        r#"
        t1:t - driver internal test_checkout_paid 0..1000 test.case.name=test_checkout_paid
        t1:a t driver client "POST /orders" 1..999 http.request.method=POST url.full=http://checkout/orders
        t1:b a checkout server "POST /orders" 2..998 http.request.method=POST http.route=/orders
        "#,
    );
    for i in 0..charges {
        let (start, end) = (10 + i * 100, 60 + i * 100);
        let header = if key {
            " http.request.header.idempotency-key=k1"
        } else {
            ""
        };
        s.push_str(&format!(
            "t1:c{i} b checkout client \"POST\" {start}..{end} http.request.method=POST url.full=http://payments/charge{header}\n\
             t1:p{i} c{i} payments server \"POST /charge\" {}..{} http.request.method=POST http.route=/charge\n",
            start + 1,
            end - 1
        ));
    }
    s
}

fn check(fixture: &str, expectations: &[Expectation], want: Expect) {
    let (spans, opts) = parse(fixture);
    let forest = Forest::build(&spans);
    let graph = analyze_forest(&forest, &opts);
    let got: Vec<String> = evaluate(expectations, &forest, &graph)
        .iter()
        .map(|v| {
            format!(
                "{} | test {} | {}:{} | hop {} | expected {} | observed {}",
                v.expectation,
                v.test.as_deref().unwrap_or("-"),
                label(&v.trace_id),
                label(&v.span_id),
                v.hop
                    .as_ref()
                    .map_or("-".to_owned(), |(a, b, c)| format!("{a} -> {b} {c}")),
                v.expected,
                v.observed
            )
        })
        .collect();
    let mut text = got.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    want.assert_eq(&text);
}

fn named(name: &str) -> Expectation {
    Expectation {
        name: name.to_owned(),
        tests: None,
        caller: None,
        callee: None,
        operation: None,
        calls: None,
        repeated: None,
        duration_ms: None,
        attributes: Vec::new(),
    }
}

fn glob(p: &str) -> Option<Glob> {
    Some(Glob::new(p).unwrap())
}

fn charges_once() -> Expectation {
    Expectation {
        tests: glob("test_checkout*"),
        caller: glob("checkout"),
        callee: glob("payments"),
        operation: glob("POST /charge"),
        calls: Some(Bounds {
            min: Some(1),
            max: Some(1),
        }),
        ..named("checkout charges once")
    }
}

#[test]
fn calls_held_then_too_many_then_missing() {
    check(&checkout(1, true), &[charges_once()], expect![""]);
    check(
        &checkout(2, true),
        &[charges_once()],
        expect![[r#"
        checkout charges once | test test_checkout_paid | t1:c1 | hop checkout -> payments POST /charge | expected at most 1 call | observed 2 calls
    "#]],
    );
    check(
        &checkout(0, true),
        &[charges_once()],
        expect![[r#"
        checkout charges once | test test_checkout_paid | t1:t | hop - | expected at least 1 call | observed 0 calls
    "#]],
    );
    // A test the glob does not select is not judged.
    let other = Expectation {
        tests: glob("test_refund*"),
        ..charges_once()
    };
    check(&checkout(0, true), &[other], expect![""]);
}

#[test]
fn forbidden_calls_are_calls_max_zero() {
    let never = Expectation {
        callee: glob("pay*"),
        calls: Some(Bounds {
            min: None,
            max: Some(0),
        }),
        ..named("never the real provider")
    };
    check(
        &checkout(1, true),
        std::slice::from_ref(&never),
        expect![[r#"
        never the real provider | test test_checkout_paid | t1:c0 | hop checkout -> payments POST /charge | expected at most 0 calls | observed 1 call
    "#]],
    );
    check(&checkout(0, true), &[never], expect![""]);
}

#[test]
fn duration_is_judged_on_the_answering_side() {
    let budget = |max: f64| Expectation {
        callee: glob("payments"),
        duration_ms: Some(max),
        ..named("payments answers in time")
    };
    // Each charge's server span lasts 48 ms (its client span 50).
    check(&checkout(2, true), &[budget(48.0)], expect![""]);
    check(
        &checkout(2, true),
        &[budget(40.0)],
        expect![[r#"
        payments answers in time | test test_checkout_paid | t1:p0 | hop checkout -> payments POST /charge | expected at most 40 ms | observed 48 ms
        payments answers in time | test test_checkout_paid | t1:p1 | hop checkout -> payments POST /charge | expected at most 40 ms | observed 48 ms
    "#]],
    );
}

#[test]
fn attributes_present_absent_and_valued() {
    let rule = |r: AttrRule| Expectation {
        callee: glob("payments"),
        attributes: vec![("http.request.header.idempotency-key".to_owned(), r)],
        ..named("idempotent charges")
    };
    check(&checkout(1, true), &[rule(AttrRule::Present)], expect![""]);
    check(
        &checkout(1, false),
        &[rule(AttrRule::Present)],
        expect![[r#"
        idempotent charges | test test_checkout_paid | t1:c0 | hop checkout -> payments POST /charge | expected http.request.header.idempotency-key present | observed no http.request.header.idempotency-key
    "#]],
    );
    check(
        &checkout(1, true),
        &[rule(AttrRule::Absent)],
        expect![[r#"
        idempotent charges | test test_checkout_paid | t1:c0 | hop checkout -> payments POST /charge | expected http.request.header.idempotency-key absent | observed http.request.header.idempotency-key = k1
    "#]],
    );
    check(
        &checkout(1, true),
        &[rule(AttrRule::Equals("k1".into()))],
        expect![""],
    );
    check(
        &checkout(1, true),
        &[rule(AttrRule::Equals("k2".into()))],
        expect![[r#"
        idempotent charges | test test_checkout_paid | t1:c0 | hop checkout -> payments POST /charge | expected http.request.header.idempotency-key = k2 | observed http.request.header.idempotency-key = k1
    "#]],
    );
}

/// A handler that calls inventory `n` times, one after another or all at once.
fn lookups(n: usize, parallel: bool) -> String {
    let mut s = String::from(
        r#"
        t2:t - driver internal test_browse 0..5000 test.case.name=test_browse
        t2:a t driver client "GET /products" 1..4999 http.request.method=GET url.full=http://gateway/products
        t2:b a gateway server "GET /products" 2..4998 http.request.method=GET http.route=/products
        "#,
    );
    for i in 0..n {
        let (start, end) = if parallel {
            (10, 60)
        } else {
            (10 + i * 100, 60 + i * 100)
        };
        s.push_str(&format!(
            "t2:c{i} b gateway client GET {start}..{end} http.request.method=GET url.full=http://inventory/items/{i}\n\
             t2:s{i} c{i} inventory server \"GET /items/{{id}}\" {}..{} http.request.method=GET http.route=/items/{{id}}\n",
            start + 1,
            end - 1
        ));
    }
    s
}

#[test]
fn repeated_flags_sequential_calls_not_a_parallel_fan_out() {
    let n_plus_one = Expectation {
        repeated: Some(5),
        ..named("no N+1")
    };
    check(
        &lookups(11, false),
        std::slice::from_ref(&n_plus_one),
        expect![[r#"
        no N+1 | test test_browse | t2:b | hop gateway -> inventory GET /items/{id} | expected at most 5 calls one after another | observed 11 calls one after another
    "#]],
    );
    check(
        &lookups(11, true),
        std::slice::from_ref(&n_plus_one),
        expect![""],
    );
    check(&lookups(5, false), &[n_plus_one], expect![""]);
    // `calls {max}` bounds the fan-out.
    let fan_out = Expectation {
        callee: glob("inventory"),
        calls: Some(Bounds {
            min: None,
            max: Some(10),
        }),
        ..named("bounded fan-out")
    };
    check(
        &lookups(11, true),
        &[fan_out],
        expect![[r#"
        bounded fan-out | test test_browse | t2:c9 | hop gateway -> inventory GET /items/{id} | expected at most 10 calls | observed 11 calls
    "#]],
    );
}

#[test]
fn a_trace_with_no_test_is_judged_as_itself() {
    let fixture = r#"
        t3:a - web client "POST" 0..50 http.request.method=POST url.full=http://payments/charge
        t3:b a payments server "POST /charge" 1..49 http.request.method=POST http.route=/charge
    "#;
    let never = Expectation {
        callee: glob("payments"),
        calls: Some(Bounds {
            min: None,
            max: Some(0),
        }),
        ..named("never payments")
    };
    check(
        fixture,
        std::slice::from_ref(&never),
        expect![[r#"
        never payments | test - | t3:a | hop web -> payments POST /charge | expected at most 0 calls | observed 1 call
    "#]],
    );
    // A test selector never selects a trace that holds no test.
    let for_tests = Expectation {
        tests: glob("*"),
        ..never
    };
    check(fixture, &[for_tests], expect![""]);
}

/// The traces of a real program (`tests/it/n_plus_one.rs`: a HotROD-like `driver` looking up
/// eleven drivers in `redis` one after another on one route, all at once on another), as the
/// OpenTelemetry Rust SDK exported them. The offending spans are named by service, kind and
/// name: the fixture gets new ids whenever it is written again.
#[test]
fn n_plus_one_in_recorded_traces_is_the_sequential_lookups_only() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/otlp-json/hotrod-n-plus-one.jsonl");
    let mut spans = Vec::new();
    crate::import::import_file(&path, None, &mut |batch: Vec<Span>| {
        spans.extend(batch);
        Ok(())
    })
    .unwrap();
    let forest = Forest::build(&spans);
    let graph = analyze_forest(&forest, &crate::graph::AnalysisOptions::default());
    let lookups = |e: Expectation| Expectation {
        callee: glob("redis"),
        operation: glob("GET /drivers/{id}"),
        ..e
    };
    let expectations = [
        // Only the first selects redis's other operation too: it is grouped apart.
        Expectation {
            callee: glob("redis"),
            repeated: Some(5),
            ..named("no N+1")
        },
        lookups(Expectation {
            calls: Some(Bounds {
                min: None,
                max: Some(10),
            }),
            ..named("bounded fan-out")
        }),
        // All at once: not even two lookups in a row.
        lookups(Expectation {
            tests: glob("*parallel"),
            repeated: Some(1),
            ..named("parallel lookups")
        }),
    ];
    let by_id: std::collections::HashMap<SpanId, &Span> =
        spans.iter().map(|s| (s.span_id, s)).collect();
    let got: Vec<String> = evaluate(&expectations, &forest, &graph)
        .iter()
        .map(|v| {
            let span = by_id[&SpanId::from_bytes(v.span_id).unwrap()];
            format!(
                "{} | test {} | {} {:?} {:?} | hop {} | expected {} | observed {}",
                v.expectation,
                v.test.as_deref().unwrap_or("-"),
                span.service(),
                span.kind,
                span.name,
                v.hop
                    .as_ref()
                    .map_or("-".to_owned(), |(a, b, c)| format!("{a} -> {b} {c}")),
                v.expected,
                v.observed
            )
        })
        .collect();
    expect![[r#"
        bounded fan-out | test test_dispatch_parallel | driver Client "GET /drivers/{id}" | hop driver -> redis GET /drivers/{id} | expected at most 10 calls | observed 11 calls
        bounded fan-out | test test_dispatch_sequential | driver Client "GET /drivers/{id}" | hop driver -> redis GET /drivers/{id} | expected at most 10 calls | observed 11 calls
        no N+1 | test test_dispatch_sequential | driver Server "GET /dispatch/sequential" | hop driver -> redis GET /drivers/{id} | expected at most 5 calls one after another | observed 11 calls one after another
    "#]].assert_eq(&(got.join("\n") + "\n"));
}
