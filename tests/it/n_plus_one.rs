//! N+1 on real traces (#19): a small HotROD-like system instrumented with the OpenTelemetry Rust
//! SDK, exporting through the `opentelemetry-otlp` exporter to the real server. Its `driver`
//! service looks up eleven drivers in `redis` one after another on one route, and the same eleven
//! all at once on another; `repeated {max: 5}` flags the first and not the second, and
//! `calls {max: 10}` bounds both.
//!
//! ```text
//! hotrod-tests ─HTTP─> driver GET /dispatch/sequential ─HTTP─> redis GET /drivers        (once)
//!                                                      ─HTTP─> redis GET /drivers/{id}   (11, one after another)
//!              ─HTTP─> driver GET /dispatch/parallel   ─HTTP─> redis GET /drivers        (once)
//!                                                      ─HTTP─> redis GET /drivers/{id}   (11, all at once)
//! ```
//!
//! The program is also where `tests/fixtures/otlp-json/hotrod-n-plus-one.jsonl` comes from (the
//! run's export), which the expectation engine's unit tests read. With `UPDATE_FIXTURES=1` this
//! test writes that file again; without, it checks that the file still has the shape of the
//! traces the program makes now, so the two cannot drift apart unnoticed.
//!
//! Key design decisions:
//! - Every span starts from an explicit parent `Context`, as in the demo shop: the three services
//!   share one runtime, and the thread-local current context would leak between them.
//! - The parallel route starts all eleven lookups' CLIENT spans before it awaits any of them, so
//!   every lookup starts before any ends by the program's order, whatever the machine's load:
//!   the test never depends on timing. The sequential route awaits each lookup, whose span ends
//!   before the next one starts.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use axum::extract::{MatchedPath, Path, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Json, Router};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::common::{TestServer, repo_root};

/// Drivers near the customer: each route looks up every one of them.
const DRIVERS: usize = 11;

/// The fixture this program's export is kept in (under `tests/fixtures`).
const FIXTURE: &str = "otlp-json/hotrod-n-plus-one.jsonl";

const MANIFEST: &str = r#"
version: 1
expect:
  - name: no N+1
    callee: redis
    repeated: {max: 5}
  - name: bounded fan-out
    caller: driver
    callee: redis
    operation: "GET /drivers/{id}"
    calls: {max: 10}
"#;

/// One service's instrumentation: its own provider (so its own `service.name`) and tracer.
#[derive(Clone)]
struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Telemetry {
    /// A provider exporting OTLP/HTTP protobuf to `endpoint` through the SDK's batch processor.
    fn new(service: &'static str, endpoint: &str) -> Self {
        // The SDK's HTTP exporter builds a reqwest client (`tracecov::tls`).
        tracecov::tls::install_provider();
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{endpoint}/v1/traces"))
            .build()
            .unwrap();
        let provider = SdkTracerProvider::builder()
            .with_resource(Resource::builder_empty().with_service_name(service).build())
            .with_batch_exporter(exporter)
            .build();
        let tracer = provider.tracer("hotrod");
        Self { provider, tracer }
    }

    fn start(
        &self,
        parent: &Context,
        name: String,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
    ) -> Context {
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, parent);
        parent.with_span(span)
    }
}

/// A service's outgoing HTTP calls, each in a CLIENT span that carries the trace context.
#[derive(Clone)]
struct Client {
    telemetry: Telemetry,
    http: reqwest::Client,
}

impl Client {
    /// Starts `GET url` under `parent` now, in a span named after the callee's route
    /// `template`; the returned future sends it and ends the span when the answer's headers
    /// arrive, as HTTP client instrumentation does. The answer is `(status, JSON body)`.
    fn get(
        &self,
        parent: &Context,
        url: String,
        template: &str,
    ) -> impl Future<Output = (u16, Value)> + Send + 'static {
        let parsed = reqwest::Url::parse(&url).unwrap();
        let cx = self.telemetry.start(
            parent,
            format!("GET {template}"),
            SpanKind::Client,
            vec![
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("url.full", url.clone()),
                KeyValue::new("server.address", parsed.host_str().unwrap().to_owned()),
                KeyValue::new("server.port", i64::from(parsed.port().unwrap())),
            ],
        );
        let mut headers = http::HeaderMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut headers));
        let request = self.http.get(url).headers(headers);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let span = cx.span();
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 400 {
                span.set_status(Status::error(format!("answered {status}")));
            }
            span.end();
            (status, response.json().await.unwrap_or(Value::Null))
        }
    }
}

/// What the SERVER span middleware needs.
#[derive(Clone)]
struct Served {
    telemetry: Telemetry,
    addr: SocketAddr,
}

/// One SERVER span per request, continued from the request's trace context and named by the
/// matched route; handlers find it as an `Extension<Context>`.
async fn server_span(State(served): State<Served>, mut request: Request, next: Next) -> Response {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap();
    let cx = served.telemetry.start(
        &parent,
        format!("GET {route}"),
        SpanKind::Server,
        vec![
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.route", route),
            KeyValue::new("url.path", request.uri().path().to_owned()),
            KeyValue::new("server.address", served.addr.ip().to_string()),
            KeyValue::new("server.port", i64::from(served.addr.port())),
        ],
    );
    request.extensions_mut().insert(cx.clone());
    let response = next.run(request).await;
    let code = response.status().as_u16();
    cx.span()
        .set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
    cx.span().end();
    response
}

/// Serves `router` on a free loopback port with SERVER spans until `stop`.
async fn serve(telemetry: &Telemetry, router: Router<()>, stop: CancellationToken) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Served {
        telemetry: telemetry.clone(),
        addr,
    };
    let app = router.route_layer(axum::middleware::from_fn_with_state(served, server_span));
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .unwrap();
    });
    addr
}

/// `redis`: the drivers near a place (`GET /drivers`), and one driver (`GET /drivers/{id}`).
fn redis() -> Router<()> {
    Router::new()
        .route(
            "/drivers",
            get(|| async {
                let ids: Vec<String> = (1..=DRIVERS).map(|i| format!("T7{i:05}C")).collect();
                Json(json!({ "ids": ids }))
            }),
        )
        .route(
            "/drivers/{id}",
            get(|Path(id): Path<String>| async move {
                Json(json!({ "id": id, "location": "577,322" }))
            }),
        )
}

#[derive(Clone)]
struct Driver {
    client: Client,
    redis: String,
}

/// `driver`: finds the nearest drivers' ids in redis, then looks up each of them, one after
/// another (`/dispatch/sequential`, the N+1) or all at once (`/dispatch/parallel`).
fn driver(state: Driver) -> Router<()> {
    async fn dispatch(state: Driver, cx: Context, parallel: bool) -> Json<Value> {
        let (_, found) = state
            .client
            .get(&cx, format!("{}/drivers", state.redis), "/drivers")
            .await;
        let ids: Vec<String> = serde_json::from_value(found["ids"].clone()).unwrap();
        let lookup = |id: &String| {
            state.client.get(
                &cx,
                format!("{}/drivers/{id}", state.redis),
                "/drivers/{id}",
            )
        };
        let answers = if parallel {
            // Every lookup's span starts here, before any of them is awaited.
            let started: Vec<_> = ids.iter().map(lookup).collect();
            futures::future::join_all(started).await
        } else {
            let mut answers = Vec::new();
            for id in &ids {
                answers.push(lookup(id).await);
            }
            answers
        };
        let drivers: Vec<Value> = answers.into_iter().map(|(_, body)| body).collect();
        Json(json!({ "drivers": drivers }))
    }
    Router::new()
        .route(
            "/dispatch/sequential",
            get(
                |State(state): State<Driver>, Extension(cx): Extension<Context>| {
                    dispatch(state, cx, false)
                },
            ),
        )
        .route(
            "/dispatch/parallel",
            get(
                |State(state): State<Driver>, Extension(cx): Extension<Context>| {
                    dispatch(state, cx, true)
                },
            ),
        )
        .with_state(state)
}

/// The suite: one test case span per route (`test.case.name`), run concurrently, each passing
/// when the driver answers with every driver. Returns each test's name and whether it passed.
async fn run_suite(tests: &Client, driver: SocketAddr) -> Vec<(&'static str, bool)> {
    let one = |name: &'static str, route: &'static str| {
        let tests = tests.clone();
        async move {
            let cx = tests.telemetry.start(
                &Context::new(),
                name.to_owned(),
                SpanKind::Internal,
                vec![KeyValue::new("test.case.name", name)],
            );
            let (status, body) = tests
                .get(&cx, format!("http://{driver}{route}"), route)
                .await;
            let passed = status == 200 && body["drivers"].as_array().map(Vec::len) == Some(DRIVERS);
            let span = cx.span();
            span.set_attribute(KeyValue::new(
                "test.case.result.status",
                if passed { "pass" } else { "fail" },
            ));
            span.end();
            (name, passed)
        }
    };
    let (a, b) = tokio::join!(
        one("test_dispatch_sequential", "/dispatch/sequential"),
        one("test_dispatch_parallel", "/dispatch/parallel"),
    );
    vec![a, b]
}

/// Runs the program against `server` in a new run named `name`: its services, the suite, every
/// span flushed, the run closed. Returns the run's id.
async fn hotrod_run(server: &TestServer, name: &str) -> String {
    let run = server.open_run(json!({ "name": name })).await;
    let run_id = run["id"].as_str().unwrap().to_owned();
    let endpoint = server.addrs.otlp_http_url();
    let telemetry = [
        Telemetry::new("hotrod-tests", &endpoint),
        Telemetry::new("driver", &endpoint),
        Telemetry::new("redis", &endpoint),
    ];
    let client = |t: &Telemetry| Client {
        telemetry: t.clone(),
        http: crate::common::http(),
    };
    let stop = CancellationToken::new();
    let redis_addr = serve(&telemetry[2], redis(), stop.clone()).await;
    let driver_addr = serve(
        &telemetry[1],
        driver(Driver {
            client: client(&telemetry[1]),
            redis: format!("http://{redis_addr}"),
        }),
        stop.clone(),
    )
    .await;
    let results = run_suite(&client(&telemetry[0]), driver_addr).await;
    assert_eq!(
        results,
        [
            ("test_dispatch_sequential", true),
            ("test_dispatch_parallel", true)
        ]
    );
    stop.cancel();
    // Every span is exported (and acknowledged, so stored) before the run closes. Flushing
    // blocks on the exporter: off the async workers.
    tokio::task::spawn_blocking(move || {
        for t in telemetry {
            t.provider.force_flush().unwrap();
            t.provider.shutdown().unwrap();
        }
    })
    .await
    .unwrap();
    let resp = server
        .http
        .post(server.api(&format!("/api/runs/{run_id}/close")))
        .header("x-tracecov", "1")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    run_id
}

/// The shape of OTLP/JSON lines: per span its service, kind and name and its parent's service
/// and name, sorted. What a change to the program changes; ids and times are left out.
fn shape(lines: &str) -> Vec<String> {
    let mut spans = Vec::new();
    for line in lines.lines().filter(|l| !l.trim().is_empty()) {
        let request: Value = serde_json::from_str(line).unwrap();
        for rs in request["resourceSpans"].as_array().unwrap() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|kv| kv["key"] == "service.name")
                .map(|kv| kv["value"]["stringValue"].as_str().unwrap().to_owned())
                .unwrap();
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for s in ss["spans"].as_array().unwrap() {
                    spans.push((service.clone(), s.clone()));
                }
            }
        }
    }
    let by_id: std::collections::HashMap<&str, (&str, &str)> = spans
        .iter()
        .map(|(service, s)| {
            (
                s["spanId"].as_str().unwrap(),
                (service.as_str(), s["name"].as_str().unwrap()),
            )
        })
        .collect();
    let mut out: Vec<String> = spans
        .iter()
        .map(|(service, s)| {
            let parent = s["parentSpanId"]
                .as_str()
                .and_then(|p| by_id.get(p))
                .map_or("-".to_owned(), |(svc, name)| format!("{svc} {name}"));
            format!("{service} {} {} <- {parent}", s["kind"], s["name"])
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_plus_one_flags_sequential_lookups_and_not_the_same_lookups_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("tracecov.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let server = TestServer::start_with(|c| c.manifest = Some(manifest.clone())).await;
    let run = hotrod_run(&server, "hotrod").await;
    let (status, report) = server.get_json(&format!("/api/runs/{run}/report")).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["run"]["tests"]["passed"], 2, "{report}");
    let violations = report["violations"].as_array().unwrap();
    let of = |name: &str| -> Vec<&Value> {
        violations
            .iter()
            .filter(|v| v["expectation"] == name)
            .collect()
    };
    let lookup = json!({"caller": "driver", "callee": "redis", "operation": "GET /drivers/{id}"});

    // The N+1: only the sequential test, on the driver's server span that made the lookups.
    let n_plus_one = of("no N+1");
    assert_eq!(n_plus_one.len(), 1, "{violations:#?}");
    let v = n_plus_one[0];
    assert_eq!(v["test"], "test_dispatch_sequential", "{v:#}");
    assert_eq!(v["hop"], lookup);
    assert_eq!(v["expected"], "at most 5 calls one after another");
    assert_eq!(v["observed"], "11 calls one after another");
    let trace = server.trace(v["trace_id"].as_str().unwrap()).await;
    let spans = trace["spans"].as_array().unwrap();
    let enclosing = spans
        .iter()
        .find(|s| s["span_id"] == v["span_id"])
        .unwrap_or_else(|| panic!("no span {} in {trace:#}", v["span_id"]));
    assert_eq!(enclosing["service"], "driver", "{enclosing:#}");
    assert_eq!(enclosing["kind"], "server");
    assert_eq!(enclosing["name"], "GET /dispatch/sequential");
    let lookups_under_it = spans
        .iter()
        .filter(|s| s["parent_span_id"] == v["span_id"] && s["name"] == "GET /drivers/{id}")
        .count();
    assert_eq!(lookups_under_it, DRIVERS);

    // The fan-out is bounded by `calls`, which counts both tests' eleven lookups.
    let fan_out = of("bounded fan-out");
    let mut tests: Vec<&str> = fan_out
        .iter()
        .map(|v| v["test"].as_str().unwrap())
        .collect();
    tests.sort();
    assert_eq!(
        tests,
        ["test_dispatch_parallel", "test_dispatch_sequential"],
        "{violations:#?}"
    );
    for v in &fan_out {
        assert_eq!(v["hop"], lookup);
        assert_eq!(v["expected"], "at most 10 calls");
        assert_eq!(v["observed"], "11 calls");
    }
    assert_eq!(violations.len(), 3, "{violations:#?}");

    // The fixture is this program's export: written again on request, else held to its shape.
    let (status, export) = server
        .get_text(&format!("/api/runs/{run}/export?redact=false"))
        .await;
    assert_eq!(status, 200, "{export}");
    let path: PathBuf = repo_root().join("tests/fixtures").join(FIXTURE);
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, &export).unwrap();
    }
    let kept = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        shape(&kept),
        shape(&export),
        "tests/fixtures/{FIXTURE} no longer has the shape of the program's traces; write it \
         again with `UPDATE_FIXTURES=1 cargo nextest run -E 'test(/n_plus_one/)'`"
    );
    server.stop().await;
}
