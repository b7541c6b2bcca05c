//! History across runs in a deployment (`serve --shared-db`): each finished run's history
//! digest and failures are kept in PostgreSQL, once for the whole deployment, and every instance
//! answers `flaky`, `diff` and an edge's trend from them exactly as one process that received
//! every span answers, also after a kept run received more spans. Three instances and the single
//! process of `shared_db_reports.rs`, the demo shop's suite sent through its router.

use std::time::Duration;

use serde_json::Value;
use tracecov::demo::Fault;

use crate::pg::PgCluster;
use crate::shared_db_reports::{Deployment, deployment_settling, differences, normalized, until};

/// The runs of the suite, named by `tracecov.run.id` (runs nobody closes: complete once settled).
const RUNS: [&str; 3] = ["hist-a", "hist-b", "hist-c"];

fn in_run(run: &str) -> Vec<(String, String)> {
    vec![("tracecov.run.id".to_owned(), run.to_owned())]
}

/// The runs whose kept records were made from their rollup as it is now (the stamps of its
/// shares unchanged since), comma-separated.
fn fresh_records(pg: &PgCluster, db: &str) -> String {
    pg.psql_in(
        db,
        "SELECT COALESCE(string_agg(run_id, ',' ORDER BY run_id), '') FROM run_digests d
         WHERE d.shares = (SELECT array_agg(s.stamp ORDER BY s.stamp) FROM instance_rollups s
                           WHERE s.run_id = d.run_id AND s.fingerprint = d.fingerprint)",
    )
}

/// The history questions compared: flaky hops, two diffs, the trend of the edge that fails.
const QUESTIONS: [&str; 4] = [
    "/api/flaky",
    "/api/diff?base=hist-a&run=hist-b",
    "/api/diff?base=hist-b&run=hist-c",
    "/api/history?caller=checkout&callee=payments",
];

/// `normalized`, and without the trend's `created_ns` (each server made its own runs).
fn comparable(v: Value) -> Value {
    let mut v = normalized(v);
    if let Some(points) = v.as_array_mut() {
        for p in points.iter_mut().filter_map(Value::as_object_mut) {
            p.remove("created_ns");
        }
    }
    v
}

async fn answers(server: &crate::common::TestServer) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for path in QUESTIONS {
        let (status, body) = server.get_json(path).await;
        out.push((format!("{path} {status}"), comparable(body)));
    }
    out
}

/// Every instance answers the history questions as the single process does.
async fn same_answers(d: &Deployment) -> Result<(), String> {
    let want = answers(&d.reference).await;
    for (i, server) in d.instances.iter().enumerate() {
        for ((what, want), (_, got)) in want.iter().zip(answers(server).await) {
            if *want != got {
                return Err(format!(
                    "instance {i} answers {what} unlike the single process:\n{}",
                    differences(want, &got, "")
                ));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_db_history_records_are_kept_once_and_follow_new_spans() {
    let Some(pg) = PgCluster::shared() else {
        return;
    };
    let db = pg.database();
    let d = deployment_settling(&db, Some(Duration::from_secs(1))).await;
    d.suite_with(vec![Fault::None], in_run("hist-a")).await;
    d.suite_with(vec![Fault::Payments500], in_run("hist-b"))
        .await;
    d.suite_with(vec![Fault::None], in_run("hist-c")).await;
    d.settled(&RUNS).await;

    // The history keeper (one instance) keeps every finished run's records.
    until("every run's records kept", async || {
        match fresh_records(&pg, &db) {
            kept if kept == RUNS.join(",") => Ok(()),
            kept => Err(kept),
        }
    })
    .await;
    let (_, flaky) = d.reference.get_json("/api/flaky").await;
    assert!(
        flaky
            .as_array()
            .is_some_and(|h| h.iter().any(|h| h["callee"] == "payments")),
        "the payments hop is flaky over the suite: {flaky}"
    );
    let (_, trend) = d.reference.get_json(QUESTIONS[3]).await;
    assert_eq!(trend.as_array().map(Vec::len), Some(RUNS.len()), "{trend}");
    same_answers(&d).await.unwrap();

    // Every instance reads the records kept: with hist-b's replaced by hist-a's (under hist-b's
    // stamps), each one's diff from hist-a to hist-b finds nothing new, though the single
    // process finds the payments failures.
    pg.psql_in(
        &db,
        "UPDATE run_digests b SET digest = a.digest, failures = a.failures
         FROM run_digests a WHERE a.run_id = 'hist-a' AND b.run_id = 'hist-b'
           AND a.fingerprint = b.fingerprint",
    );
    let path = "/api/diff?base=hist-a&run=hist-b";
    let (_, want) = d.reference.get_json(path).await;
    assert!(
        !want["failures"]["new"].as_array().unwrap().is_empty(),
        "{want}"
    );
    for (i, server) in d.instances.iter().enumerate() {
        let (status, got) = server.get_json(path).await;
        assert_eq!(status, 200, "{got}");
        assert!(
            got["failures"]["new"].as_array().unwrap().is_empty(),
            "instance {i} made hist-b's records again rather than read the kept ones: {got}"
        );
    }

    // More spans reach hist-b after its records were kept (the users service now refuses the
    // gateway): its shares move, the kept records (here the wrong ones) are stale, and every
    // instance answers what the single process answers, with the new failures. The history
    // keeper's lease is taken from the instances meanwhile, so that nothing in the background
    // replaces the stale records: only the questions' own freshness check can make the
    // answers right.
    let keeper = pg.psql_in(&db, "SELECT instance FROM history_keeper");
    assert!(keeper.starts_with("http://instance-"), "{keeper}");
    pg.psql_in(
        &db,
        "UPDATE history_keeper SET instance = 'http://elsewhere.test',
           until = now() + interval '1 hour'",
    );
    d.suite_with(vec![Fault::Users401], in_run("hist-b")).await;
    d.settled(&RUNS).await;
    until("every instance answers as the single process", async || {
        same_answers(&d).await
    })
    .await;
    let (_, diff) = d.instances[1].get_json(path).await;
    assert!(
        diff["failures"]["new"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["class"] == "auth"),
        "hist-b's new failures are in the diff: {diff}"
    );
    // Given its lease back, the keeper keeps hist-b's records again, made from its new rollup
    // (unless a question did first), and the answers read from them stay the single process's.
    pg.psql_in(&db, "DELETE FROM history_keeper");
    until(
        "hist-b's records kept again",
        async || match fresh_records(&pg, &db) {
            kept if kept == RUNS.join(",") => Ok(()),
            kept => Err(kept),
        },
    )
    .await;
    same_answers(&d).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_db_history_is_refused_clearly_while_postgresql_is_down_then_answered() {
    // A private cluster: stopping it must not disturb the other tests.
    let Some(pg) = PgCluster::start() else {
        return;
    };
    let db = pg.database();
    let d = deployment_settling(&db, Some(Duration::from_secs(1))).await;
    d.suite_with(vec![Fault::None], in_run("hist-a")).await;
    d.suite_with(vec![Fault::Payments500], in_run("hist-b"))
        .await;
    d.settled(&RUNS[..2]).await;
    until("both runs' records kept", async || {
        match fresh_records(&pg, &db) {
            kept if kept == "hist-a,hist-b" => Ok(()),
            kept => Err(kept),
        }
    })
    .await;
    let path = "/api/diff?base=hist-a&run=hist-b";
    let (_, want) = d.reference.get_json(path).await;
    let pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    // Without the database an instance cannot know whether another changed a run since: it
    // refuses clearly, as it refuses a report, rather than answer from its own share.
    for (i, server) in d.instances.iter().enumerate() {
        let (status, body) = server.get_json(path).await;
        assert!(status >= 500, "instance {i}: {status} {body}");
        assert!(
            body.to_string().contains("shared database"),
            "instance {i}: {body}"
        );
    }
    let _pg = tokio::task::spawn_blocking(move || {
        pg.restart();
        pg
    })
    .await
    .unwrap();
    for (i, server) in d.instances.iter().enumerate() {
        until(&format!("instance {i} answers again"), async || {
            let (status, got) = server.get_json(path).await;
            if status == 200 && normalized(got.clone()) == normalized(want.clone()) {
                Ok(())
            } else {
                Err(format!("{status} {got}"))
            }
        })
        .await;
    }
}
