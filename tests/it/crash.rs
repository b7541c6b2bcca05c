//! Crash safety with the real binary: every acknowledged span survives SIGKILL, and re-delivery
//! after the restart stores nothing twice.

use std::process::Command;

use prost::Message;

use crate::common::{request, spawn_serve, trace_hex, wait_for_spans};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_spans_survive_sigkill_and_redelivery_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let http = crate::common::http();
    const EXPORTS: u64 = 40;
    const PER_EXPORT: usize = 25;

    let mut first = spawn_serve(&data, &[]);
    for seed in 0..EXPORTS {
        let resp = http
            .post(format!("{}/v1/traces", first.http))
            .header("content-type", "application/x-protobuf")
            .body(request("crashy", seed, PER_EXPORT).encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // The last acknowledgement has arrived: kill at once, no chance to flush or checkpoint.
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    // A fresh client: the killed server's ports may be handed to the new one, and a pooled
    // connection to the old process would be reset.
    let http = crate::common::http();
    let mut second = spawn_serve(&data, &[]);
    let total = EXPORTS * PER_EXPORT as u64;
    let stats = wait_for_spans(&http, &second.ui, total).await;
    assert_eq!(stats["spans"], total, "{stats}");
    assert_eq!(stats["traces"], EXPORTS, "{stats}");

    // Clients retry: the same exports again change nothing.
    for seed in 0..3 {
        let resp = http
            .post(format!("{}/v1/traces", second.http))
            .header("content-type", "application/x-protobuf")
            .body(request("crashy", seed, PER_EXPORT).encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let stats: serde_json::Value = http
        .get(format!("{}/api/stats", second.ui))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["spans"], total,
        "re-delivery stored spans twice: {stats}"
    );
    let trace: serde_json::Value = http
        .get(format!(
            "{}/api/traces/{}",
            second.ui,
            trace_hex(EXPORTS - 1)
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(trace["spans"].as_array().unwrap().len(), PER_EXPORT);
    second.child.kill().unwrap();
    second.child.wait().unwrap();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_closes_the_store_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let http = crate::common::http();
    let mut run = spawn_serve(&data, &[]);
    let resp = http
        .post(format!("{}/v1/traces", run.http))
        .header("content-type", "application/x-protobuf")
        .body(request("graceful", 1, 5).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let pid = run.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let exit = run.child.wait().unwrap();
    assert!(exit.success(), "serve exited with {exit:?} on SIGTERM");
    // A clean close checkpoints the write-ahead log into the database file.
    let wal = data.join("tracecov.sqlite-wal");
    assert!(
        !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
        "WAL left behind after a clean shutdown"
    );
    let http = crate::common::http();
    let mut again = spawn_serve(&data, &[]);
    let stats = wait_for_spans(&http, &again.ui, 5).await;
    assert_eq!(stats["spans"], 5);
    again.child.kill().unwrap();
    again.child.wait().unwrap();
}
