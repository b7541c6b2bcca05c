//! The demo shop against a real tracecov collector: the suite's outcome per fault, and what the
//! shop's services export through their own OpenTelemetry SDK pipelines.

use std::collections::BTreeSet;

use tempfile::TempDir;
use tracecov::config::ServeConfig;
use tracecov::demo::{self, Fault, ShopConfig, SuiteResult};
use tracecov::model::{Span, SpanKind, StatusCode, TraceId};
use tracecov::server::{Listeners, Server};
use tracecov::store::Reader;

struct Run {
    result: SuiteResult,
    server: Server,
    _dir: TempDir,
}

/// Starts a collector on free ports, runs the shop's suite with `faults` against it, and shuts
/// the shop down (which flushes every provider, so the store holds every span afterwards).
async fn run_shop(faults: Vec<Fault>) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let config = ServeConfig::ephemeral(dir.path());
    let listeners = Listeners::bind(&config).await.unwrap();
    let server = Server::start(config, listeners).await.unwrap();
    let shop = demo::start(ShopConfig {
        otlp_endpoint: server.addrs.otlp_http_url(),
        faults,
        resource_attributes: vec![("tracecov.run.id".to_owned(), "demo-it".to_owned())],
    })
    .await
    .unwrap();
    let result = shop.run_suite().await;
    shop.shutdown().await.unwrap();
    Run {
        result,
        server,
        _dir: dir,
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

async fn trace(reader: &Reader, trace_id: &str) -> Vec<Span> {
    let reader = reader.clone();
    let id = TraceId::from_hex(trace_id).unwrap();
    blocking(move || reader.trace(id).unwrap()).await
}

async fn stored_services(reader: &Reader) -> BTreeSet<String> {
    let reader = reader.clone();
    blocking(move || {
        reader
            .with_conn(|conn| {
                let mut stmt = conn.prepare("SELECT name FROM services")?;
                let names = stmt
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<BTreeSet<_>, _>>()?;
                Ok(names)
            })
            .unwrap()
    })
    .await
}

fn find<'a>(spans: &'a [Span], what: &str, pred: impl Fn(&Span) -> bool) -> &'a Span {
    spans.iter().find(|s| pred(s)).unwrap_or_else(|| {
        let names: Vec<String> = spans
            .iter()
            .map(|s| format!("{}:{}:{:?}", s.service(), s.name, s.kind))
            .collect();
        panic!("no {what} span among {names:#?}")
    })
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes.str(key)
}

fn assert_failures(run: &Run, faults: &[Fault]) {
    let expected = demo::expected_failures(faults);
    assert_eq!(
        run.result.failed(),
        expected,
        "faults {faults:?}: unexpected outcome {:#?}",
        run.result.tests
    );
    for test in &run.result.tests {
        assert_eq!(test.trace_id.len(), 32, "{test:?}");
        assert_eq!(test.passed, test.message.is_empty(), "{test:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_shop_passes_every_test_and_exports_every_hop() {
    let run = run_shop(vec![Fault::None]).await;
    assert!(run.result.all_passed(), "{:#?}", run.result.tests);
    assert_eq!(run.result.tests.len(), demo::test_names().len());
    assert!(run.result.tests.len() >= 12);

    let reader = &run.server.reader;
    let services = stored_services(reader).await;
    let wanted: BTreeSet<String> = demo::SERVICES.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        services, wanted,
        "the uninstrumented email provider reports nothing"
    );

    // A paid checkout: the test case, gRPC both ways, the queue both ways, the external email.
    let checkout = run.result.get("checkout_paid").unwrap();
    let spans = trace(reader, &checkout.trace_id).await;
    let test = find(&spans, "test case", |s| {
        attr(s, "test.case.name") == Some("checkout_paid")
    });
    assert_eq!(test.service(), demo::TEST_SERVICE);
    assert_eq!(attr(test, "test.case.result.status"), Some("pass"));
    assert_eq!(test.parent_span_id, None);
    let driver_call = find(&spans, "driver client", |s| {
        s.service() == demo::TEST_SERVICE
            && s.kind == SpanKind::Client
            && attr(s, "url.template") == Some("/api/checkout")
    });
    assert_eq!(driver_call.parent_span_id, Some(test.span_id));
    let gateway_server = find(&spans, "gateway server", |s| {
        s.service() == "gateway"
            && s.kind == SpanKind::Server
            && attr(s, "http.route") == Some("/api/checkout")
    });
    assert_eq!(gateway_server.parent_span_id, Some(driver_call.span_id));
    assert!(gateway_server.attributes.int("server.port").is_some());

    let reserve_client = find(&spans, "gRPC client", |s| {
        s.service() == "checkout"
            && s.kind == SpanKind::Client
            && attr(s, "rpc.method") == Some("Reserve")
    });
    assert_eq!(attr(reserve_client, "rpc.system"), Some("grpc"));
    assert_eq!(
        attr(reserve_client, "rpc.service"),
        Some("tracecov.demo.v1.Inventory")
    );
    assert_eq!(
        reserve_client.attributes.int("rpc.grpc.status_code"),
        Some(0)
    );
    let reserve_server = find(&spans, "gRPC server", |s| {
        s.service() == "inventory" && s.kind == SpanKind::Server
    });
    assert_eq!(reserve_server.parent_span_id, Some(reserve_client.span_id));

    let charge_server = find(&spans, "payments server", |s| {
        s.service() == "payments" && attr(s, "http.route") == Some("/charge")
    });
    assert_eq!(
        charge_server.attributes.int("http.response.status_code"),
        Some(200)
    );

    let producer = find(&spans, "producer", |s| s.kind == SpanKind::Producer);
    assert_eq!(producer.service(), "checkout");
    assert_eq!(attr(producer, "messaging.destination.name"), Some("orders"));
    assert_eq!(attr(producer, "messaging.operation.type"), Some("send"));
    let consumer = find(&spans, "consumer", |s| s.kind == SpanKind::Consumer);
    assert_eq!(consumer.service(), "inventory");
    assert_eq!(consumer.parent_span_id, Some(producer.span_id));
    assert!(
        consumer
            .links
            .iter()
            .any(|l| l.span_id == producer.span_id && l.trace_id == producer.trace_id),
        "the consumer links to the producer"
    );

    let email = find(&spans, "email provider client", |s| {
        attr(s, "service.peer.name") == Some("email-provider")
    });
    assert_eq!(email.service(), "notifications");
    assert_eq!(email.kind, SpanKind::Client);
    assert_eq!(email.attributes.int("http.response.status_code"), Some(202));
    assert!(email.attributes.int("server.port").is_some());
    assert!(
        !spans
            .iter()
            .any(|s| s.parent_span_id == Some(email.span_id)),
        "the email provider reports no spans"
    );

    for span in &spans {
        let resource = &span.resource.attributes;
        assert_eq!(
            resource.str("tracecov.run.id"),
            Some("demo-it"),
            "{}",
            span.name
        );
        assert!(resource.str("service.version").is_some());
        assert_eq!(resource.str("service.namespace"), None);
    }

    // The database hop: users' queries as database client spans.
    let signup = run.result.get("signup").unwrap();
    let spans = trace(reader, &signup.trace_id).await;
    let insert = find(&spans, "database", |s| {
        attr(s, "db.system.name") == Some("sqlite")
    });
    assert_eq!(insert.service(), "users");
    assert_eq!(insert.kind, SpanKind::Client);
    assert_eq!(attr(insert, "db.namespace"), Some("users"));
    assert_eq!(attr(insert, "db.operation.name"), Some("INSERT"));
    assert_eq!(attr(insert, "db.collection.name"), Some("users"));
    assert!(
        attr(insert, "db.query.text")
            .unwrap()
            .starts_with("INSERT INTO users")
    );

    // A negative test passes although an error was recorded below it.
    let declined = run.result.get("checkout_card_declined").unwrap();
    let spans = trace(reader, &declined.trace_id).await;
    let charge = find(&spans, "declined charge", |s| {
        s.service() == "checkout"
            && s.kind == SpanKind::Client
            && attr(s, "url.template") == Some("/charge")
    });
    assert_eq!(
        charge.attributes.int("http.response.status_code"),
        Some(402)
    );
    assert_eq!(charge.status.code, StatusCode::Error);

    run.server.shutdown().await.unwrap();
}

// On purpose a current-thread runtime: the exporters' requests run on the runtime the shop
// started in, and shutdown must not starve them when that runtime has a single thread.
#[tokio::test]
async fn default_scenario_fails_at_payments_and_email() {
    let faults = demo::default_faults();
    let run = run_shop(faults.clone()).await;
    assert_failures(&run, &faults);
    let reader = run.server.reader.clone();
    let stats = blocking(move || reader.stats().unwrap()).await;
    assert_eq!(stats.services, demo::SERVICES.len() as u64);
    assert_eq!(
        stats.traces,
        demo::test_names().len() as u64,
        "one trace per test"
    );
    run.server.shutdown().await.unwrap();
}

/// Runs the suite with `fault` alone and checks the exact set of failing tests.
async fn fault_alone(fault: Fault) -> Run {
    let run = run_shop(vec![fault]).await;
    assert_failures(&run, &[fault]);
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_500_fails_the_paid_checkouts() {
    let run = fault_alone(Fault::Payments500).await;
    let test = run.result.get("checkout_paid").unwrap();
    let spans = trace(&run.server.reader, &test.trace_id).await;
    let charge = find(&spans, "failed charge", |s| {
        s.service() == "payments" && s.kind == SpanKind::Server
    });
    assert_eq!(
        charge.attributes.int("http.response.status_code"),
        Some(500)
    );
    assert_eq!(charge.status.code, StatusCode::Error);
    let exception = charge
        .events
        .iter()
        .find(|e| e.name == "exception")
        .unwrap();
    assert!(
        exception
            .attributes
            .str("exception.message")
            .unwrap()
            .contains("ledger write failed")
    );
    run.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_down_refuses_the_connection() {
    let run = fault_alone(Fault::EmailDown).await;
    let test = run.result.get("password_reset_email").unwrap();
    let spans = trace(&run.server.reader, &test.trace_id).await;
    let email = find(&spans, "email provider client", |s| {
        attr(s, "service.peer.name") == Some("email-provider")
    });
    assert_eq!(email.status.code, StatusCode::Error);
    assert_eq!(attr(email, "error.type"), Some("connection_refused"));
    assert_eq!(email.attributes.int("http.response.status_code"), None);
    run.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cart_422_rejects_the_gateways_items() {
    let run = fault_alone(Fault::Cart422).await;
    let test = run.result.get("add_to_cart").unwrap();
    let spans = trace(&run.server.reader, &test.trace_id).await;
    let call = find(&spans, "gateway to cart", |s| {
        s.service() == "gateway" && attr(s, "url.template") == Some("/carts/{cart_id}/items")
    });
    assert_eq!(call.attributes.int("http.response.status_code"), Some(422));
    assert_eq!(call.status.code, StatusCode::Error);
    let cart = find(&spans, "cart server", |s| s.service() == "cart");
    assert_ne!(
        cart.status.code,
        StatusCode::Error,
        "a 4xx is no server error"
    );
    run.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_401_rejects_the_gateways_credentials() {
    let run = fault_alone(Fault::Users401).await;
    let test = run.result.get("signup").unwrap();
    let spans = trace(&run.server.reader, &test.trace_id).await;
    let call = find(&spans, "gateway to users", |s| {
        s.service() == "gateway" && s.kind == SpanKind::Client
    });
    assert_eq!(call.attributes.int("http.response.status_code"), Some(401));
    assert!(
        !spans.iter().any(|s| attr(s, "db.system.name").is_some()),
        "a refused caller reaches no query"
    );
    run.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_slow_exceeds_the_grpc_deadline() {
    let run = fault_alone(Fault::InventorySlow).await;
    let test = run.result.get("browse_products").unwrap();
    let spans = trace(&run.server.reader, &test.trace_id).await;
    let call = find(&spans, "gRPC client", |s| {
        s.service() == "gateway" && attr(s, "rpc.method") == Some("ListProducts")
    });
    assert_eq!(
        attr(call, "rpc.response.status_code"),
        Some("DEADLINE_EXCEEDED")
    );
    assert_eq!(call.attributes.int("rpc.grpc.status_code"), Some(4));
    assert_eq!(call.status.code, StatusCode::Error);
    let server = find(&spans, "inventory server", |s| {
        s.service() == "inventory" && s.kind == SpanKind::Server
    });
    assert_eq!(server.parent_span_id, Some(call.span_id));
    // The callee held the call until the caller gave up (it ended no earlier than the caller's
    // span, give or take the caller's own bookkeeping; under load the server span may start
    // late, so its duration is no measure); it saw the cancellation.
    assert!(
        server.end_ns + 20_000_000 >= call.end_ns,
        "the inventory ended {} ms before the gateway gave up",
        (call.end_ns - server.end_ns) / 1_000_000
    );
    assert_eq!(attr(server, "rpc.response.status_code"), Some("CANCELLED"));
    assert_ne!(server.status.code, StatusCode::Error);
    run.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_bad_response_fails_the_gateways_decode() {
    let run = fault_alone(Fault::CheckoutBadResponse).await;
    let test = run.result.get("checkout_paid").unwrap();
    let spans = trace(&run.server.reader, &test.trace_id).await;
    let call = find(&spans, "gateway to checkout", |s| {
        s.service() == "gateway"
            && s.kind == SpanKind::Client
            && attr(s, "url.template") == Some("/orders")
    });
    assert_eq!(call.attributes.int("http.response.status_code"), Some(201));
    assert_ne!(call.status.code, StatusCode::Error);
    let server = find(&spans, "gateway server", |s| {
        s.service() == "gateway"
            && s.kind == SpanKind::Server
            && attr(s, "http.route") == Some("/api/checkout")
    });
    assert!(server.parent_span_id.is_some());
    assert_eq!(call.parent_span_id, Some(server.span_id));
    assert_eq!(server.status.code, StatusCode::Error);
    assert_eq!(
        server.attributes.int("http.response.status_code"),
        Some(502)
    );
    let decode = server
        .events
        .iter()
        .find(|e| e.name == "exception")
        .expect("a decode exception on the gateway's span");
    assert_eq!(
        decode.attributes.str("exception.type"),
        Some("serde_json::Error")
    );
    assert!(
        decode.time_ns >= call.end_ns,
        "the decode fails after the call returned"
    );
    run.server.shutdown().await.unwrap();
}
