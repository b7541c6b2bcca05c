//! Crash safety with the real binary: every acknowledged span survives SIGKILL, and re-delivery
//! after the restart stores nothing twice.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use prost::Message;

use crate::common::{request, trace_hex, wait_for_spans};

struct Running {
    child: Child,
    http: String,
    ui: String,
}

/// Starts `tracecov serve` on free ports and reads the bound addresses from its output.
fn spawn_serve(data: &Path) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracecov"))
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .args(["--ui-addr", "127.0.0.1:0", "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let (mut http, mut ui) = (None, None);
    while http.is_none() || ui.is_none() {
        let line = lines
            .next()
            .expect("serve exited before printing its addresses")
            .unwrap();
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("OTLP/HTTP"), Some(addr)) => http = Some(addr.to_owned()),
            (Some("UI"), Some("&")) => ui = words.nth(1).map(str::to_owned),
            _ => {}
        }
    }
    // Keep reading so the server never writes into a closed pipe.
    std::thread::spawn(move || for _ in lines {});
    Running {
        child,
        http: http.unwrap(),
        ui: ui.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_spans_survive_sigkill_and_redelivery_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let http = reqwest::Client::new();
    const EXPORTS: u64 = 40;
    const PER_EXPORT: usize = 25;

    let mut first = spawn_serve(&data);
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
    let http = reqwest::Client::new();
    let mut second = spawn_serve(&data);
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
    let http = reqwest::Client::new();
    let mut run = spawn_serve(&data);
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
    let http = reqwest::Client::new();
    let mut again = spawn_serve(&data);
    let stats = wait_for_spans(&http, &again.ui, 5).await;
    assert_eq!(stats["spans"], 5);
    again.child.kill().unwrap();
    again.child.wait().unwrap();
}
