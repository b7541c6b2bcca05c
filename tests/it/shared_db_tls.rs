//! A deployment over TLS (`serve --shared-db` with libpq's `sslmode`/`sslrootcert`, instances
//! serving `--tls-cert` at `https://` instance URLs, `--tls-ca`): a real PostgreSQL serving TLS
//! with a certificate the test's CA signed, whose pg_hba.conf refuses plain TCP, and instances
//! that ask each other for a trace over https. Client commands against a TLS server are in
//! `tokens.rs`. Each test skips, saying so once, only where PostgreSQL is not installed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use tracecov::config::{Secret, SharedDbConfig, TlsFiles};
use tracecov::server::{Listeners, Server};

use crate::common::{TestServer, http_builder};
use crate::pg::PgCluster;
use crate::shared_db_reports::until;
use crate::tokens::{certificates, certificates_for};

fn shared(url: &str, instance: &str) -> SharedDbConfig {
    SharedDbConfig {
        url: Secret(url.to_owned()),
        instance_url: instance.to_owned(),
        heartbeat_every: Duration::from_millis(200),
    }
}

/// `url` (of `PgCluster::database`) with a password and the query `tls`.
fn with_tls(url: &str, tls: &str) -> String {
    format!(
        "{}?{tls}",
        url.replacen("postgres://postgres@", "postgres://postgres:pg-s3cret@", 1)
    )
}

/// Starts an in-process instance on `url`; the error, as `serve` prints it, when it cannot.
async fn start(url: &str) -> Result<TestServer, String> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tracecov::config::ServeConfig::ephemeral(dir.path().join("data"));
    config.shared = Some(shared(url, "http://a.test:4320"));
    let listeners = Listeners::bind(&config).await.unwrap();
    let server = Server::start(config, listeners)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let addrs = server.addrs;
    Ok(TestServer {
        server: Some(server),
        dir,
        addrs,
        http: crate::common::http(),
    })
}

/// A throwaway cluster serving TLS with `files`' certificate (`None`: PostgreSQL is not
/// installed, said once).
async fn tls_cluster(files: TlsFiles) -> Option<PgCluster> {
    tokio::task::spawn_blocking(move || PgCluster::start_tls(&files.cert, &files.key))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_db_tls_verify_full_to_postgres_is_used_and_a_wrong_ca_is_refused_clearly() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, files) = certificates(certs.path());
    let other = tempfile::tempdir().unwrap();
    let (wrong_ca, _) = certificates(other.path());
    let Some(pg) = tls_cluster(files).await else {
        return;
    };
    let plain = pg.database();
    let verified = with_tls(
        &plain,
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );

    let server = start(&verified).await.unwrap();
    let (status, health) = server.get_json("/api/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["shared_db"]["status"], "ok", "{health}");
    // PostgreSQL's own view: every connection of the instance is TLS.
    let sessions = pg.psql_in(
        &plain,
        "SELECT string_agg(DISTINCT s.ssl::text, ',') FROM pg_stat_ssl s \
         JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'tracecov'",
    );
    assert_eq!(sessions, "true", "the instance's sessions, TLS or not");
    server.stop().await;

    // `require` without a root encrypts without checking who answers (libpq's behaviour).
    let server = start(&with_tls(&plain, "sslmode=require")).await.unwrap();
    server.stop().await;

    // Plain TCP is refused by this server's pg_hba.conf: what connected above spoke TLS.
    let e = start(&with_tls(&plain, "sslmode=disable"))
        .await
        .err()
        .unwrap();
    assert!(e.contains("no encryption"), "{e}");
    assert!(!e.contains("pg-s3cret"), "the password in: {e}");

    // The wrong CA: `serve` stops at start, saying why, naming the database, not the password.
    let url = with_tls(
        &plain,
        &format!("sslmode=verify-full&sslrootcert={}", wrong_ca.display()),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tracecov"))
            .args(["serve", "--data"])
            .arg(dir.path())
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args([
                "--ui-addr",
                "127.0.0.1:0",
                "--instance-url",
                "http://a.test:4320",
            ])
            .env("TRACECOV_SHARED_DB", &url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("pg-s3cret"), "the password in: {stderr}");
    assert!(
        stderr.contains("cannot join the shared database")
            && stderr.contains(&format!("127.0.0.1:{}", pg.port))
            && stderr.contains("certificate")
            && stderr.contains("sslrootcert"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_db_tls_verify_ca_checks_the_chain_and_verify_full_the_host_name_too() {
    // A certificate for another name than the address the instances connect to.
    let certs = tempfile::tempdir().unwrap();
    let (ca, files) = certificates_for(certs.path(), &["db.internal"]);
    let Some(pg) = tls_cluster(files).await else {
        return;
    };
    let plain = pg.database();
    let root = format!("sslrootcert={}", ca.display());
    // The chain leads to the CA: enough for verify-ca, and for require given a root.
    for mode in ["verify-ca", "require"] {
        let server = start(&with_tls(&plain, &format!("sslmode={mode}&{root}")))
            .await
            .unwrap_or_else(|e| panic!("sslmode={mode}: {e}"));
        server.stop().await;
    }
    // verify-full also wants 127.0.0.1 among the certificate's names.
    let e = start(&with_tls(&plain, &format!("sslmode=verify-full&{root}")))
        .await
        .err()
        .unwrap();
    assert!(
        e.contains("presented a TLS certificate that was refused")
            && e.contains("sslmode=verify-full")
            && e.contains("not valid for name"),
        "{e}"
    );
    assert!(!e.contains("pg-s3cret"), "the password in: {e}");
}

/// One span of a new trace as OTLP/JSON.
pub fn export(trace: &str) -> Vec<u8> {
    json!({"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "shop"}},
            {"key": "tracecov.run.id", "value": {"stringValue": "over-https"}}
        ]},
        "scopeSpans": [{"spans": [{
            "traceId": trace, "spanId": "7000000000000001", "name": "checkout", "kind": 2,
            "startTimeUnixNano": "1000", "endTimeUnixNano": "2000"
        }]}]
    }]})
    .to_string()
    .into_bytes()
}

/// An instance of the deployment on `url` serving TLS with `files`, registered at its
/// `https://` address, trusting `ca` (when given) for the others.
async fn tls_instance(url: &str, files: &TlsFiles, ca: Option<&Path>) -> TestServer {
    let mut server = TestServer::start_bound(|c, addrs| {
        let mut addrs = *addrs;
        addrs.tls = true;
        c.settle = Duration::from_millis(300);
        c.tls = Some(files.clone());
        c.tls_ca = ca.map(Path::to_owned);
        c.shared = Some(shared(url, &addrs.ui_url()));
    })
    .await;
    // The test's own client trusts the test CA.
    let pem = std::fs::read(files.cert.parent().unwrap().join("ca.pem")).unwrap();
    server.http = http_builder()
        .tls_certs_merge([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap();
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_db_tls_instances_forward_a_trace_view_to_its_holder_over_https() {
    let Some(pg) = PgCluster::shared() else {
        return;
    };
    let url = pg.database();
    let certs = tempfile::tempdir().unwrap();
    let (ca, files) = certificates(certs.path());
    let holder = tls_instance(&url, &files, Some(&ca)).await;
    let asker = tls_instance(&url, &files, Some(&ca)).await;
    // An instance that was not given the CA cannot trust the holder.
    let untrusting = tls_instance(&url, &files, None).await;
    assert!(holder.addrs.ui_url().starts_with("https://"));

    let trace = "7af7651916cd43dd8448eb211c80319c";
    let resp = holder
        .post_otlp("application/json", export(trace), false)
        .await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);

    // Once the holder published where the trace is, the other instance serves its view,
    // fetched from the holder over https.
    let path = format!("/api/traces/{trace}");
    until(
        "the trace served by the instance not holding it",
        async || {
            let (status, body) = asker.get_json(&path).await;
            let spans = body["spans"].as_array().map_or(0, Vec::len);
            if status == 200 && spans == 1 {
                Ok(())
            } else {
                Err(format!("{status} {body}"))
            }
        },
    )
    .await;
    let (_, view) = asker.get_json(&path).await;
    assert_eq!(view["spans"][0]["name"], "checkout", "{view}");
    // The page too.
    let (status, page) = asker.get_text(&format!("/traces/{trace}")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("checkout"), "{page}");

    // Without the CA: a 502 that names the holder and says what to give.
    let (status, body) = untrusting.get_json(&path).await;
    assert_eq!(status, 502, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(&holder.addrs.ui_url()) && message.contains("--tls-ca"),
        "{message}"
    );
    for server in [holder, asker, untrusting] {
        server.stop().await;
    }
}
