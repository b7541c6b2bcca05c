//! A run assignment that fails does not fail the export, and is not lost: the record that the
//! trace still needs its run is written with its spans and retried with every commit and after a
//! restart, until it succeeds.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{PATIENCE, TestServer};

fn export(trace: &str, run: Option<&str>) -> Vec<u8> {
    let kv = |k: &str, v: &str| json!({"key": k, "value": {"stringValue": v}});
    let mut attrs = vec![kv("service.name", "shop")];
    if let Some(run) = run {
        attrs.push(kv("tracecov.run.id", run));
    }
    json!({"resourceSpans": [{
        "resource": {"attributes": attrs},
        "scopeSpans": [{"spans": [{
            "traceId": trace, "spanId": "7000000000000001", "name": "work", "kind": 2,
            "startTimeUnixNano": "1000", "endTimeUnixNano": "2000"
        }]}]
    }]})
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_assignment_is_retried_until_it_succeeds() {
    let server = TestServer::start().await;
    let db = server.dir.path().join("data").join("tracecov.sqlite");
    let sql = |statement: &str| {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute_batch(statement).unwrap();
    };
    // Assignment fails while its table is away (as when a shared database is briefly down).
    sql("ALTER TABLE trace_runs RENAME TO trace_runs_away");
    let resp = server
        .post_otlp(
            "application/json",
            export("6bf7651916cd43dd8448eb211c80319c", Some("late-run")),
            false,
        )
        .await;
    assert_eq!(
        resp.status(),
        200,
        "the export is acknowledged: its spans are durable"
    );
    sql("ALTER TABLE trace_runs_away RENAME TO trace_runs");
    let (status, _) = server.get_json("/api/runs/late-run").await;
    assert_eq!(status, 404, "not assigned yet");

    // The next commit retries it.
    let resp = server
        .post_otlp(
            "application/json",
            export("7bf7651916cd43dd8448eb211c80319c", None),
            false,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, run) = server.get_json("/api/runs/late-run").await;
        if status == 200 && run["traces"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "never assigned: {status} {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}
