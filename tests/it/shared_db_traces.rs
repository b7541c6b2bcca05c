//! Traces that cross the instances of a deployment (`serve --shared-db`, issue 20): three
//! instances on loopback share a real PostgreSQL (`pg.rs`), each registered at its real address,
//! and each trace is sent whole to the instance the test chooses, as a load-balancing exporter
//! would, except where the test splits one (the balancer's ring changed mid-trace). A
//! single-process tracecov receives everything too.
//!
//! - Linked traces on different instances: a consumer's trace that arrived before or after its
//!   producer's joins the producer's test, and the failure walk from the test crosses the link
//!   into the consumer's failure, on every instance as in the single process.
//! - A trace split between two instances is counted once, with all its spans.
//! - A trace's views (`/api/traces/{id}`, its page, its bug report, its OTLP export, `tracecov
//!   bug --server`) asked of any instance are served from the one holding it; when that one is
//!   down, the answer is a 502 naming it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tracecov::config::SharedDbConfig;

use crate::common::{PATIENCE, TestServer};
use crate::pg::PgCluster;
use crate::results::{attr, export_in, span};
use crate::shared_db_reports::{differences, normalized, scrubbed, until};

const RUN: &str = "crossing";

/// Consumer first (it arrives before its producer): C1 on instance 1, then P1 on instance 0.
const P1: &str = "0af7651916cd43dd8448eb211c80319c";
const C1: &str = "1bf7651916cd43dd8448eb211c80319c";
/// Producer first: P2 on instance 2, then C2 on instance 0.
const P2: &str = "2af7651916cd43dd8448eb211c80319c";
const C2: &str = "3bf7651916cd43dd8448eb211c80319c";
/// Split: its test and client spans on instance 0, the server's on instance 2.
const S: &str = "4cf7651916cd43dd8448eb211c80319c";

fn failed(mut span: Value, message: &str) -> Value {
    span["status"] = json!({"code": 2, "message": message});
    span
}

/// One export: (service, spans) pairs, every resource in run `RUN`.
fn export(services: Vec<(&str, Vec<Value>)>) -> Vec<u8> {
    export_in(RUN, services)
}

/// A test whose order is published to a queue; the test failed (its order never shipped).
fn producer(trace: &str, test: &str) -> Vec<u8> {
    let test_span = failed(
        span(
            trace,
            "1000000000000001",
            "",
            test,
            1,
            vec![attr("test.case.name", test)],
        ),
        "order never shipped",
    );
    let publish = span(
        trace,
        "1000000000000002",
        "1000000000000001",
        "orders publish",
        4,
        vec![
            attr("messaging.system", "kafka"),
            attr("messaging.destination.name", "orders"),
        ],
    );
    export(vec![("checkout", vec![test_span, publish])])
}

/// The consumer of `producer`'s message, in its own trace linked to the publish span; it failed.
fn consumer(trace: &str, producer: &str) -> Vec<u8> {
    let mut process = failed(
        span(
            trace,
            "2000000000000001",
            "",
            "orders process",
            5,
            vec![
                attr("messaging.system", "kafka"),
                attr("messaging.destination.name", "orders"),
            ],
        ),
        "cannot commit the reservation",
    );
    process["links"] = json!([{"traceId": producer, "spanId": "1000000000000002"}]);
    export(vec![("shipping", vec![process])])
}

/// The split trace: (the driver's part, the cart's part).
fn split() -> (Vec<u8>, Vec<u8>) {
    let test_span = span(
        S,
        "5000000000000001",
        "",
        "test_cart",
        1,
        vec![attr("test.case.name", "test_cart")],
    );
    let call = span(
        S,
        "5000000000000002",
        "5000000000000001",
        "GET",
        3,
        vec![
            attr("http.request.method", "GET"),
            attr("server.address", "cart"),
            attr("url.full", "http://cart/cart"),
        ],
    );
    let answer = span(
        S,
        "5000000000000003",
        "5000000000000002",
        "GET /cart",
        2,
        vec![
            attr("http.request.method", "GET"),
            attr("http.route", "/cart"),
        ],
    );
    (
        export(vec![("driver", vec![test_span, call])]),
        export(vec![("cart", vec![answer])]),
    )
}

struct Three {
    instances: Vec<TestServer>,
    reference: TestServer,
}

async fn three(url: &str) -> Three {
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(
            TestServer::start_bound(|c, addrs| {
                c.settle = Duration::from_millis(300);
                c.shared = Some(SharedDbConfig {
                    url: tracecov::config::Secret(url.to_owned()),
                    instance_url: addrs.ui_url(),
                    heartbeat_every: Duration::from_millis(200),
                });
            })
            .await,
        );
    }
    let reference = TestServer::start_with(|c| c.settle = Duration::from_millis(300)).await;
    Three {
        instances,
        reference,
    }
}

async fn post(server: &TestServer, body: Vec<u8>) {
    let resp = server.post_otlp("application/json", body, false).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
}

impl Three {
    /// Sends `body` to instance `i` and to the single process.
    async fn send(&self, i: usize, body: Vec<u8>) {
        post(&self.instances[i], body.clone()).await;
        post(&self.reference, body).await;
    }

    /// Waits until `server`'s run has every trace's results, its results published.
    async fn settled(&self, server: &TestServer) {
        until("the run settled", async || {
            let (status, r) = server.get_json(&format!("/api/runs/{RUN}")).await;
            let (_, h) = server.get_json("/api/health").await;
            let published = h.get("shared_db").is_none_or(|db| {
                db["status"] == "ok" && db["unpublished"] == 0 && db["unassigned"] == 0
            });
            if status == 200 && r["pending_traces"] == 0 && published {
                Ok(())
            } else {
                Err(format!("{status} {r} {h}"))
            }
        })
        .await;
    }

    /// Waits until every instance answers `path` as the single process does (results crossing
    /// instances are computed again as the instances learn of each other).
    async fn same_everywhere(&self, path: &str) -> Value {
        self.settled(&self.reference).await;
        let (status, want) = self.reference.get_json(path).await;
        assert_eq!(status, 200, "{path}: {want}");
        let want = normalized(want);
        for (i, server) in self.instances.iter().enumerate() {
            let deadline = Instant::now() + PATIENCE;
            loop {
                self.settled(server).await;
                let (status, got) = server.get_json(path).await;
                let got = normalized(got);
                if status == 200 && got == want {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "instance {i} never answered {path} like the single process ({status}):\n{}",
                    differences(&want, &got, "")
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        want
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_db_traces_crossing_instances_are_analysed_and_served_as_one() {
    let Some(pg) = PgCluster::shared() else {
        return;
    };
    // A database of its own: the instances' registry and links are this test's.
    let d = three(&pg.database()).await;

    // The consumer settles on instance 1 before its producer reaches instance 0.
    d.send(1, consumer(C1, P1)).await;
    d.settled(&d.instances[1]).await;
    d.send(0, producer(P1, "test_order")).await;
    // The producer settles on instance 2 before its consumer reaches instance 0.
    d.send(2, producer(P2, "test_refund")).await;
    d.settled(&d.instances[2]).await;
    d.send(0, consumer(C2, P2)).await;
    // The split trace: part on instance 0, part on instance 2.
    let (driver, cart) = split();
    d.send(0, driver).await;
    d.send(2, cart).await;

    let report = d.same_everywhere(&format!("/api/runs/{RUN}/report")).await;
    // What the single process found, which each instance found too: the consumers' queue hops
    // belong to their producers' tests, the walk from each failed test crossed its link into the
    // consumer, and the split trace's call is counted once.
    let edges: Vec<String> = report["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} -> {} {} {}",
                e["caller"], e["callee"], e["calls"], e["tests"]
            )
        })
        .collect();
    assert!(
        edges.iter().any(|e| e.contains("shipping")
            && e.contains("test_order")
            && e.contains("test_refund")),
        "{edges:#?}"
    );
    assert!(
        edges
            .iter()
            .any(|e| e.contains("\"driver\"") && e.contains("\"cart\" 1 ")),
        "{edges:#?}"
    );
    assert_eq!(report["run"]["spans"], 9, "{}", report["run"]);
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2, "{failures:#?}");
    for f in failures {
        assert_eq!(f["blamed"], "shipping", "{f:#}");
    }
    d.same_everywhere(&format!("/api/runs/{RUN}/gate?no_failures=true"))
        .await;
    // The run's traces are the deployment's (the split one once) on every instance, in the run
    // and in the runs list.
    for (i, server) in d.instances.iter().enumerate() {
        let (_, run) = server.get_json(&format!("/api/runs/{RUN}")).await;
        assert_eq!(
            (&run["traces"], &run["pending_traces"]),
            (&json!(5), &json!(0)),
            "instance {i}: {run}"
        );
        let (_, list) = server.get_json("/api/runs").await;
        let listed = list
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == RUN)
            .unwrap();
        assert_eq!(listed["traces"], 5, "instance {i}: {listed}");
    }

    // Views of one trace, asked of every instance, from whichever holds it.
    for trace in [P1, C1, P2, C2, S] {
        d.same_everywhere(&format!("/api/traces/{trace}")).await;
    }
    let (_, split_view) = d.instances[2].get_json(&format!("/api/traces/{S}")).await;
    assert_eq!(split_view["spans"].as_array().unwrap().len(), 3);
    let text = |server: &TestServer, path: String| {
        let http = server.http.clone();
        let url = server.api(&path);
        async move {
            let resp = http.get(url).send().await.unwrap();
            let status = resp.status().as_u16();
            let kind = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let csp = resp.headers().contains_key("content-security-policy");
            (status, kind, csp, scrubbed(&resp.text().await.unwrap()))
        }
    };
    let bug = text(&d.reference, format!("/api/traces/{P1}/bug")).await;
    assert_eq!(bug.0, 200, "{bug:?}");
    assert!(bug.3.contains("shipping"), "{}", bug.3);
    let otlp = text(&d.reference, format!("/api/traces/{P1}/otlp")).await;
    for (i, server) in d.instances.iter().enumerate() {
        assert_eq!(
            text(server, format!("/api/traces/{P1}/bug")).await,
            bug,
            "instance {i}"
        );
        assert_eq!(
            text(server, format!("/api/traces/{P1}/otlp")).await,
            otlp,
            "instance {i}"
        );
        let (status, kind, csp, page) = text(server, format!("/traces/{P1}")).await;
        assert_eq!((status, csp), (200, true), "instance {i}: {page}");
        assert!(kind.starts_with("text/html"), "{kind}");
        assert!(page.contains("orders publish"), "instance {i}: {page}");
    }
    // The CLI against an instance that does not hold the trace.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracecov"))
        .args(["bug", P1, "--server", &d.instances[2].addrs.ui_url()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        scrubbed(&String::from_utf8_lossy(&out.stdout)).trim(),
        bug.3.trim()
    );

    // The holder goes down: the others say which instance they could not reach.
    let mut instances = d.instances;
    let holder_url = instances[0].addrs.ui_url();
    instances.remove(0).stop().await;
    for server in &instances {
        let (status, body) = server.get_json(&format!("/api/traces/{P1}")).await;
        assert_eq!(status, 502, "{body}");
        let message = body["error"].as_str().unwrap();
        assert!(message.contains(&holder_url), "{message}");
        let (status, _, _, page) = text(server, format!("/traces/{P1}")).await;
        assert_eq!(status, 502, "{page}");
        // A trace held by a live instance is still served.
        let (status, body) = server.get_json(&format!("/api/traces/{C1}")).await;
        assert_eq!(status, 200, "{body}");
    }
}
