//! Data-driven tests of the analysis: each fixture (format in `fixture`) with its expected graph
//! held as a snapshot. `UPDATE_EXPECT=1 cargo test --lib graph` rewrites the snapshots; review the
//! diff before committing.

use expect_test::{Expect, expect};

use super::fixture::analyze_fixture;

fn check(fixture: &str, expected: Expect) {
    expected.assert_eq(&analyze_fixture(fixture));
}

/// Spans arrive in any order: the same fixture with its lines reversed must analyse the same. So
/// must the fixture with trace `tp` renamed `ta`: traces are walked in trace-id order, so this
/// puts a linked trace before and after the trace it links to.
fn check_both_orders(fixture: &str, expected: Expect) {
    let reversed: Vec<&str> = fixture.lines().rev().collect();
    let reversed = reversed.join("\n");
    let actual = analyze_fixture(fixture);
    assert_eq!(
        actual,
        analyze_fixture(&reversed),
        "arrival order changed the result"
    );
    let renamed = analyze_fixture(&fixture.replace("tp:", "ta:"));
    assert_eq!(
        actual.replace("tp:", "ta:"),
        renamed,
        "trace order changed the result"
    );
    expected.assert_eq(&actual);
}

#[test]
fn http_current_names() {
    // A 404 is the client's error only; a 503 is the server's too.
    check(
        r#"
        t1:a - frontend client GET 0..40 http.request.method=GET url.full="http://cart:8080/cart/42?session=s3cr3t" http.response.status_code=200
        t1:b a cart server "GET /cart/{id}" 2..38 http.request.method=GET http.route=/cart/{id} url.path=/cart/42 server.address=cart server.port=8080 http.response.status_code=200
        t2:a - frontend client GET 0..10 http.request.method=GET http.response.status_code=404
        t2:b a cart server "GET /cart/{id}" 1..9 http.request.method=GET http.route=/cart/{id} http.response.status_code=404
        t3:a - frontend client POST 0..20 http.request.method=POST http.response.status_code=503
        t3:b a cart server "POST /cart" 1..19 http.request.method=POST http.route=/cart http.response.status_code="503"
        "#,
        expect![[r#"
            spans 6, traces 3
            node cart (service)
            node frontend (service)
            edge frontend -> cart: calls 3, errors 2, client ms 20/40/40, server ms 18/36/36, tests []
              "GET /cart/{id}": calls 2, errors 1, tests []
              "POST /cart": calls 1, errors 1, tests []
            hop t1:a>b frontend -> cart "GET /cart/{id}"
            hop t2:a>b frontend -> cart "GET /cart/{id}" error
            hop t3:a>b frontend -> cart "POST /cart" error
        "#]],
    );
}

#[test]
fn http_legacy_names() {
    // Only the legacy names: http.method, http.status_code (also as a string), http.url,
    // net.peer.name / net.host.name. The second call has no server span: the address the cart
    // answered on in t1 names it.
    check(
        r#"
        t1:a - frontend client "HTTP GET" 0..40 http.method=GET http.url="http://cart:8080/cart/42?debug=1" net.peer.name=cart net.peer.port=8080 http.status_code=200
        t1:b a cart server "GET /cart/{id}" 2..38 http.method=GET http.route=/cart/{id} http.target="/cart/42?debug=1" net.host.name=cart net.host.port=8080 http.status_code="200"
        t2:a - frontend client "HTTP POST" 0..5 http.method=POST http.url="http://cart:8080/cart" http.status_code="502"
        "#,
        expect![[r#"
            spans 3, traces 2
            node cart (service)
            node frontend (service)
            edge frontend -> cart: calls 2, errors 1, client ms 5/40/40, server ms 36/36/36, tests []
              "GET /cart/{id}": calls 1, errors 0, tests []
              "HTTP POST": calls 1, errors 1, tests []
            hop t1:a>b frontend -> cart "GET /cart/{id}"
            hop t2:a>- frontend -> cart "HTTP POST" error
        "#]],
    );
}

#[test]
fn grpc_legacy_and_fully_qualified_methods() {
    check(
        r#"
        t1:a - checkout client shop.Cart/GetCart 0..10 rpc.system=grpc rpc.service=shop.Cart rpc.method=GetCart
        t1:b a cart server shop.Cart/GetCart 1..9 rpc.system=grpc rpc.service=shop.Cart rpc.method=GetCart
        t2:a - checkout client shop.Payments/Charge 0..30 rpc.system=grpc rpc.method=shop.Payments/Charge server.address=payments server.port=50051 status=error
        "#,
        expect![[r#"
            spans 3, traces 2
            node cart (service)
            node checkout (service)
            node ext:payments:50051 (external)
            edge checkout -> cart: calls 1, errors 0, client ms 10/10/10, server ms 8/8/8, tests []
              "shop.Cart/GetCart": calls 1, errors 0, tests []
            edge checkout -> ext:payments:50051: calls 1, errors 1, client ms 30/30/30, server ms -/-/-, tests []
              "shop.Payments/Charge": calls 1, errors 1, tests []
            hop t1:a>b checkout -> cart "shop.Cart/GetCart"
            hop t2:a>- checkout -> ext:payments:50051 "shop.Payments/Charge" error
        "#]],
    );
}

#[test]
fn databases_without_server_spans() {
    check(
        r#"
        t1:a - cart server "GET /cart" 0..50 http.request.method=GET http.route=/cart
        t1:b a cart client "SELECT shop.items" 1..5 db.system.name=postgresql db.namespace=shop db.operation.name=SELECT db.collection.name=items db.query.text="SELECT * FROM items WHERE id = 42"
        t1:c a cart client GET 6..7 db.system=redis net.peer.name=cache db.operation=GET
        t1:d a cart client find 8..9 db.system=mongodb db.name=catalog db.operation=find db.sql.table=products
        t1:e a cart client "insert" 10..11 db.system.name=sqlite db.query.summary="INSERT audit"
        "#,
        expect![[r#"
            spans 5, traces 1
            node cart (service)
            node db:mongodb/catalog (database)
            node db:postgresql/shop (database)
            node db:redis@cache (database)
            node db:sqlite (database)
            edge cart -> db:mongodb/catalog: calls 1, errors 0, client ms 1/1/1, server ms -/-/-, tests []
              "find products": calls 1, errors 0, tests []
            edge cart -> db:postgresql/shop: calls 1, errors 0, client ms 4/4/4, server ms -/-/-, tests []
              "SELECT items": calls 1, errors 0, tests []
            edge cart -> db:redis@cache: calls 1, errors 0, client ms 1/1/1, server ms -/-/-, tests []
              "GET": calls 1, errors 0, tests []
            edge cart -> db:sqlite: calls 1, errors 0, client ms 1/1/1, server ms -/-/-, tests []
              "INSERT audit": calls 1, errors 0, tests []
            hop t1:d>- cart -> db:mongodb/catalog "find products"
            hop t1:b>- cart -> db:postgresql/shop "SELECT items"
            hop t1:c>- cart -> db:redis@cache "GET"
            hop t1:e>- cart -> db:sqlite "INSERT audit"
            propagation breaks: cart 1
        "#]],
    );
}

#[test]
fn a_service_that_is_down_is_found_by_the_address_map() {
    // t1 teaches that the cart answers at cart:8080. In t2 the cart is down: the connection is
    // refused and no server span exists. payments.internal is known only through an alias.
    check(
        r#"
        @alias https://payments.internal payments
        t1:a - frontend client GET 0..10 http.request.method=GET url.full=http://cart:8080/cart
        t1:b a cart server "GET /cart" 1..9 http.request.method=GET http.route=/cart server.address=cart server.port=8080
        t2:a - frontend client GET 0..1 http.request.method=GET url.full=http://cart:8080/cart status=error status.message="connection refused"
        t2:b - frontend client POST 2..3 http.request.method=POST url.full=https://payments.internal/charge status=error
        t2:c - frontend client GET 4..5 http.request.method=GET url.full=https://api.github.com/repos?page=2
        t2:d - frontend client charge 6..7 peer.service=cart
        t2:e - frontend client charge 8..9 peer.service=stripe
        "#,
        expect![[r#"
            spans 7, traces 2
            node cart (service)
            node ext:api.github.com:443 (external)
            node ext:stripe (external)
            node frontend (service)
            node payments (service)
            edge frontend -> cart: calls 3, errors 1, client ms 1/10/10, server ms 8/8/8, tests []
              "GET": calls 1, errors 1, tests []
              "GET /cart": calls 1, errors 0, tests []
              "charge": calls 1, errors 0, tests []
            edge frontend -> ext:api.github.com:443: calls 1, errors 0, client ms 1/1/1, server ms -/-/-, tests []
              "GET": calls 1, errors 0, tests []
            edge frontend -> ext:stripe: calls 1, errors 0, client ms 1/1/1, server ms -/-/-, tests []
              "charge": calls 1, errors 0, tests []
            edge frontend -> payments: calls 1, errors 1, client ms 1/1/1, server ms -/-/-, tests []
              "POST": calls 1, errors 1, tests []
            hop t2:a>- frontend -> cart "GET" error
            hop t1:a>b frontend -> cart "GET /cart"
            hop t2:d>- frontend -> cart "charge"
            hop t2:c>- frontend -> ext:api.github.com:443 "GET"
            hop t2:e>- frontend -> ext:stripe "charge"
            hop t2:b>- frontend -> payments "POST" error
        "#]],
    );
}

#[test]
fn messaging_linked_by_span_link_in_either_arrival_order() {
    // The test calls orders, which publishes; the consumer runs in its own trace, linked to the
    // producer: its hops belong to the test too.
    check_both_orders(
        r#"
        tp:t - driver internal place_order 0..100 test.case.name=test_place_order test.case.result.status=pass
        tp:u t driver client POST 1..20 http.request.method=POST url.full=http://orders/orders
        tp:o u orders server "POST /orders" 2..19 http.request.method=POST http.route=/orders
        tp:p o orders producer "publish order-events" 3..4 messaging.system=kafka messaging.destination.name=order-events
        tc:c - billing consumer "process order-events" 50..60 messaging.system=kafka messaging.destination.name=order-events link=tp:p
        tc:d c billing client "INSERT invoices" 51..52 db.system.name=postgresql db.namespace=billing db.operation.name=INSERT db.collection.name=invoices
        "#,
        expect![[r#"
            spans 6, traces 2
            test passed test_place_order (tp:t)
            node billing (service)
            node db:postgresql/billing (database)
            node driver (service)
            node orders (service)
            node queue:kafka/order-events (messaging)
            edge billing -> db:postgresql/billing: calls 1, errors 0, client ms 1/1/1, server ms -/-/-, tests [test_place_order]
              "INSERT invoices": calls 1, errors 0, tests [test_place_order]
            edge driver -> orders: calls 1, errors 0, client ms 19/19/19, server ms 17/17/17, tests [test_place_order]
              "POST /orders": calls 1, errors 0, tests [test_place_order]
            edge orders -> queue:kafka/order-events: calls 1, errors 0, client ms 1/1/1, server ms -/-/-, tests [test_place_order]
              "order-events": calls 1, errors 0, tests [test_place_order]
            edge queue:kafka/order-events -> billing: calls 1, errors 0, client ms -/-/-, server ms 10/10/10, tests [test_place_order]
              "order-events": calls 1, errors 0, tests [test_place_order]
            hop tc:d>- billing -> db:postgresql/billing "INSERT invoices" test=test_place_order
            hop tp:u>o driver -> orders "POST /orders" test=test_place_order
            hop tp:p>- orders -> queue:kafka/order-events "order-events" test=test_place_order
            hop tc:->c queue:kafka/order-events -> billing "order-events" test=test_place_order
        "#]],
    );
}

#[test]
fn messaging_paired_by_parent_id() {
    // The consumer names no destination: its producer parent does. Its own process span below
    // the receive span is the same delivery.
    check_both_orders(
        r#"
        t1:p - orders producer "send" 0..1 messaging.system=rabbitmq messaging.destination=emails
        t1:c p mailer consumer "receive" 5..9
        t1:d c mailer consumer "process" 6..8
        "#,
        expect![[r#"
            spans 3, traces 1
            node mailer (service)
            node orders (service)
            node queue:rabbitmq/emails (messaging)
            edge orders -> queue:rabbitmq/emails: calls 1, errors 0, client ms 1/1/1, server ms -/-/-, tests []
              "emails": calls 1, errors 0, tests []
            edge queue:rabbitmq/emails -> mailer: calls 1, errors 0, client ms -/-/-, server ms 4/4/4, tests []
              "emails": calls 1, errors 0, tests []
            hop t1:p>- orders -> queue:rabbitmq/emails "emails"
            hop t1:->c queue:rabbitmq/emails -> mailer "emails"
        "#]],
    );
}

#[test]
fn kindless_and_wrong_kind_pairs_cross_boundaries() {
    // Real data: no kinds at all; a client span recorded as INTERNAL; server spans below server
    // spans (the client span was never recorded); client spans where servers should be.
    check(
        r#"
        t1:a - gateway - "proxy" 0..50
        t1:b a users - "lookup" 1..49
        t2:a - gateway server "GET /orders" 0..50 http.request.method=GET http.route=/orders
        t2:b a orders server "GET /orders" 1..49 http.request.method=GET http.route=/orders
        t3:a - gateway internal "call inventory" 0..30
        t3:b a inventory client "GET /stock" 1..29
        "#,
        expect![[r#"
            spans 6, traces 3
            node gateway (service)
            node inventory (service)
            node orders (service)
            node users (service)
            edge gateway -> inventory: calls 1, errors 0, client ms 30/30/30, server ms 28/28/28, tests []
              "GET /stock": calls 1, errors 0, tests []
            edge gateway -> orders: calls 1, errors 0, client ms 50/50/50, server ms 48/48/48, tests []
              "GET /orders": calls 1, errors 0, tests []
            edge gateway -> users: calls 1, errors 0, client ms 50/50/50, server ms 48/48/48, tests []
              "lookup": calls 1, errors 0, tests []
            hop t3:a>b gateway -> inventory "GET /stock"
            hop t2:a>b gateway -> orders "GET /orders"
            hop t1:a>b gateway -> users "lookup"
            diagnostics: unresolved_calls 1
            propagation breaks: gateway 1
        "#]],
    );
}

#[test]
fn orphans_become_roots_and_are_counted() {
    // b's parent never arrived; c is a server span with no parent at all (propagation broke).
    check(
        r#"
        t1:b zz cart client "SELECT" 1..2 db.system.name=postgresql db.namespace=shop db.operation.name=SELECT
        t2:c - cart server "GET /cart" 0..5 http.request.method=GET http.route=/cart
        t2:d c cart client "SELECT" 1..2 db.system.name=postgresql db.namespace=shop db.operation.name=SELECT
        "#,
        expect![[r#"
            spans 3, traces 2
            node cart (service)
            node db:postgresql/shop (database)
            edge cart -> db:postgresql/shop: calls 2, errors 0, client ms 1/1/1, server ms -/-/-, tests []
              "SELECT": calls 2, errors 0, tests []
            hop t1:b>- cart -> db:postgresql/shop "SELECT"
            hop t2:d>- cart -> db:postgresql/shop "SELECT"
            diagnostics: orphans 1
            propagation breaks: cart 1
        "#]],
    );
}

#[test]
fn duplicate_span_ids_keep_one_span() {
    // b was exported twice (the first copy never ended) and c reuses b's id.
    check(
        r#"
        t1:a - frontend client GET 0..10 http.request.method=GET
        t1:b a cart server "GET /cart" 1.. http.request.method=GET http.route=/cart
        t1:b a cart server "GET /cart" 1..9 http.request.method=GET http.route=/cart
        t1:b a cart server "GET /cart" 2..8 http.request.method=GET http.route=/cart
        "#,
        expect![[r#"
            spans 4, traces 1
            node cart (service)
            node frontend (service)
            edge frontend -> cart: calls 1, errors 0, client ms 10/10/10, server ms 8/8/8, tests []
              "GET /cart": calls 1, errors 0, tests []
            hop t1:a>b frontend -> cart "GET /cart"
            diagnostics: duplicate_span_ids 2
        "#]],
    );
}

#[test]
fn parent_cycles_terminate_and_are_counted() {
    // a -> b -> a, and c is its own parent. Cut at the earliest member, analysis carries on.
    check(
        r#"
        t1:a b frontend client GET 0..10 http.request.method=GET
        t1:b a cart server "GET /cart" 1..9 http.request.method=GET http.route=/cart
        t1:c c cart internal "loop" 2..3
        "#,
        expect![[r#"
            spans 3, traces 1
            node cart (service)
            node frontend (service)
            edge frontend -> cart: calls 1, errors 0, client ms 10/10/10, server ms 8/8/8, tests []
              "GET /cart": calls 1, errors 0, tests []
            hop t1:a>b frontend -> cart "GET /cart"
            diagnostics: parent_cycles 2
        "#]],
    );
}

#[test]
fn pytest_session_and_test_case_name_traces() {
    // One pytest-opentelemetry session trace holds three tests: one failed by status, one whose
    // status is unset but whose entry request failed, one passed. t2 is a plain fixture setting
    // test.case.name and its result. Parallel tests overlap in time: attribution is by tree.
    check(
        r#"
        s1:s - pytest internal "test session" 0..1000
        s1:t1 s pytest internal tests/test_cart.py::test_add 10..500 status=error
        s1:c1 t1 pytest client POST 20..400 http.request.method=POST url.full=http://frontend:8000/cart http.response.status_code=200
        s1:f1 c1 frontend server "POST /cart" 21..399 http.request.method=POST http.route=/cart http.response.status_code=200
        s1:t2 s pytest internal tests/test_cart.py::test_view 15..600
        s1:c2 t2 pytest client GET 30..500 http.request.method=GET url.full=http://frontend:8000/cart
        s1:f2 c2 frontend server "GET /cart" 31..499 http.request.method=GET http.route=/cart http.response.status_code=500
        s1:t3 s pytest internal tests/test_health.py::test_ok 16..30
        s1:c3 t3 pytest client GET 17..29 http.request.method=GET url.full=http://frontend:8000/health
        s1:f3 c3 frontend server "GET /health" 18..28 http.request.method=GET http.route=/health
        t2:x - jest internal "checkout works" 0..100 test.case.name="checkout > works" test.case.result.status=fail
        t2:y x jest client POST 1..90 http.request.method=POST url.full=http://frontend:8000/checkout
        t2:z y frontend server "POST /checkout" 2..89 http.request.method=POST http.route=/checkout
        "#,
        expect![[r#"
            spans 13, traces 2
            test failed checkout > works (t2:x)
            test failed tests/test_cart.py::test_add (s1:t1)
            test failed tests/test_cart.py::test_view (s1:t2)
            test passed tests/test_health.py::test_ok (s1:t3)
            node frontend (service)
            node jest (service)
            node pytest (service)
            edge jest -> frontend: calls 1, errors 0, client ms 89/89/89, server ms 87/87/87, tests [checkout > works]
              "POST /checkout": calls 1, errors 0, tests [checkout > works]
            edge pytest -> frontend: calls 3, errors 1, client ms 380/470/470, server ms 378/468/468, tests [tests/test_cart.py::test_add, tests/test_cart.py::test_view, tests/test_health.py::test_ok]
              "GET /cart": calls 1, errors 1, tests [tests/test_cart.py::test_view]
              "GET /health": calls 1, errors 0, tests [tests/test_health.py::test_ok]
              "POST /cart": calls 1, errors 0, tests [tests/test_cart.py::test_add]
            hop t2:y>z jest -> frontend "POST /checkout" test=checkout > works
            hop s1:c2>f2 pytest -> frontend "GET /cart" error test=tests/test_cart.py::test_view
            hop s1:c3>f3 pytest -> frontend "GET /health" test=tests/test_health.py::test_ok
            hop s1:c1>f1 pytest -> frontend "POST /cart" test=tests/test_cart.py::test_add
        "#]],
    );
}

#[test]
fn test_service_roots_and_session_children_are_tests() {
    // e2e is a configured test driver. In t1 each root is a test; in t2 a session root holds the
    // tests as children. A test's own steps (the "assert" span) are not tests.
    check(
        r#"
        @test-service e2e
        t1:r - e2e internal login_works 0..100
        t1:c r e2e client POST 1..50 http.request.method=POST url.full=http://auth:9000/login
        t1:s c auth server "POST /login" 2..49 http.request.method=POST http.route=/login
        t1:v r e2e internal assert 60..61
        t2:s - e2e internal "E2E Suite" 0..1000
        t2:t s e2e internal logout_works 1..100 status=ok
        t2:c t e2e client POST 2..50 http.request.method=POST url.full=http://auth:9000/logout
        t2:d c auth server "POST /logout" 3..49 http.request.method=POST http.route=/logout
        "#,
        expect![[r#"
            spans 8, traces 2
            test passed login_works (t1:r)
            test passed logout_works (t2:t)
            node auth (service)
            node e2e (service)
            edge e2e -> auth: calls 2, errors 0, client ms 48/49/49, server ms 46/47/47, tests [login_works, logout_works]
              "POST /login": calls 1, errors 0, tests [login_works]
              "POST /logout": calls 1, errors 0, tests [logout_works]
            hop t1:c>s e2e -> auth "POST /login" test=login_works
            hop t2:c>d e2e -> auth "POST /logout" test=logout_works
        "#]],
    );
}

#[test]
fn raw_paths_and_query_strings_never_name_interfaces() {
    // No route anywhere: the server span's name is the method alone; a client span named by its
    // raw URL loses the query string; url.path, http.target and url.full are never read.
    check(
        r#"
        t1:a - frontend client GET 0..10 http.request.method=GET url.full="http://users:80/users/42?token=abc"
        t1:b a users server GET 1..9 http.request.method=GET url.path=/users/42 http.target="/users/42?token=abc"
        t2:a - frontend client "GET /search?q=secret&api_key=k" 0..10 url.full="https://search.example.com/search?q=secret&api_key=k"
        "#,
        expect![[r#"
            spans 3, traces 2
            node ext:search.example.com:443 (external)
            node frontend (service)
            node users (service)
            edge frontend -> ext:search.example.com:443: calls 1, errors 0, client ms 10/10/10, server ms -/-/-, tests []
              "GET /search": calls 1, errors 0, tests []
            edge frontend -> users: calls 1, errors 0, client ms 10/10/10, server ms 8/8/8, tests []
              "GET": calls 1, errors 0, tests []
            hop t2:a>- frontend -> ext:search.example.com:443 "GET /search"
            hop t1:a>b frontend -> users "GET"
        "#]],
    );
}

#[test]
fn missing_end_times_and_clock_skew() {
    // b starts 5 ms before its parent on another host; d (a synchronous server) ends after its
    // client; f never ended. Within one service (e under d) no skew is counted.
    check(
        r#"
        t1:a - frontend client GET 10..20 http.request.method=GET
        t1:b a cart server "GET /a" 5..15 http.request.method=GET http.route=/a
        t1:c - frontend client GET 30..40 http.request.method=GET
        t1:d c cart server "GET /b" 31..45 http.request.method=GET http.route=/b
        t1:e d cart internal "work" 20..50
        t1:f - frontend client GET 60.. http.request.method=GET url.full=http://cart/c
        "#,
        expect![[r#"
            spans 6, traces 1
            node cart (service)
            node ext:cart:80 (external)
            node frontend (service)
            edge frontend -> cart: calls 2, errors 0, client ms 10/10/10, server ms 10/14/14, tests []
              "GET /a": calls 1, errors 0, tests []
              "GET /b": calls 1, errors 0, tests []
            edge frontend -> ext:cart:80: calls 1, errors 0, client ms -/-/-, server ms -/-/-, tests []
              "GET": calls 1, errors 0, tests []
            hop t1:a>b frontend -> cart "GET /a"
            hop t1:c>d frontend -> cart "GET /b"
            hop t1:f>- frontend -> ext:cart:80 "GET"
            diagnostics: missing_end_times 1, clock_skew 2
        "#]],
    );
}

#[test]
fn nested_client_spans_make_one_call() {
    // requests wraps urllib3: two CLIENT spans for one call, only the inner one reaches the server.
    check(
        r#"
        t1:a - frontend client "GET" 0..10 http.request.method=GET url.full=http://cart:8080/cart
        t1:b a frontend client "GET" 1..9 http.request.method=GET url.full=http://cart:8080/cart
        t1:c b cart server "GET /cart" 2..8 http.request.method=GET http.route=/cart
        t2:a - frontend client "GET" 0..10 http.request.method=GET url.full=http://cart:8080/cart status=error
        t2:b a frontend client "GET" 1..9 http.request.method=GET url.full=http://cart:8080/cart status=error
        "#,
        expect![[r#"
            spans 5, traces 2
            node cart (service)
            node ext:cart:8080 (external)
            node frontend (service)
            edge frontend -> cart: calls 1, errors 0, client ms 8/8/8, server ms 6/6/6, tests []
              "GET /cart": calls 1, errors 0, tests []
            edge frontend -> ext:cart:8080: calls 1, errors 1, client ms 8/8/8, server ms -/-/-, tests []
              "GET": calls 1, errors 1, tests []
            hop t1:b>c frontend -> cart "GET /cart"
            hop t2:b>- frontend -> ext:cart:8080 "GET" error
        "#]],
    );
}

#[test]
fn trees_expose_what_a_walker_needs() {
    // Blame walks down through children in start order and across links into linked traces.
    let (spans, _) = super::fixture::parse(
        r#"
        t1:r - a server root 0..100
        t1:late r a client late 50..60
        t1:early r a producer early 10..20
        t1:x early a internal inner 11..12
        t2:c - b consumer consume 70..80 link=t1:early
        "#,
    );
    let forest = super::Forest::build(&spans);
    let label = |r: super::SpanRef| forest.span(r).name.clone();
    let t1 = forest.find_tree(super::fixture::trace_id("t1")).unwrap();
    let tree = forest.tree(t1);
    let root = tree.find(super::fixture::span_id("r")).unwrap();
    let names = |ixs: Vec<usize>| -> Vec<&str> {
        ixs.into_iter()
            .map(|i| tree.span(i).name.as_str())
            .collect()
    };
    assert_eq!(names(tree.children(root).collect()), ["early", "late"]);
    assert_eq!(
        names(tree.subtree(root).collect()),
        ["root", "early", "inner", "late"]
    );
    let inner = tree.find(super::fixture::span_id("x")).unwrap();
    assert_eq!(names(tree.ancestors(inner).collect()), ["early", "root"]);
    let early = super::SpanRef {
        tree: t1,
        span: tree.find(super::fixture::span_id("early")).unwrap(),
    };
    let linked: Vec<String> = forest.linked_from(early).map(label).collect();
    assert_eq!(linked, ["consume"]);
    let consumer = forest
        .resolve(super::fixture::trace_id("t2"), super::fixture::span_id("c"))
        .unwrap();
    assert_eq!(forest.linked_from(consumer).count(), 0);
}
