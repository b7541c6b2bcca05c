//! DESIGN's "Exposure", the parts that need secrets (issue 16, item 11): `--ingest-token` on the
//! OTLP receivers, `--token` on the UI, the API and `/metrics` (a browser signs in through a
//! link), the client side of both, TLS on every listener, and client commands against a TLS
//! server (`--server https://…` with `--tls-ca`). The OpenTelemetry Python SDK sends the token and
//! speaks TLS as any user's exporter would.

use std::path::Path;
use std::process::Command;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use tracecov::config::{Secret, TlsFiles};

use crate::common::{TestServer, request};
use crate::python_sdk::{python, run_script};

/// Runs tests/python/export_spans.py with `env`; returns the trace id it printed.
async fn python_export(
    protocol: &str,
    endpoint: String,
    env: Vec<(&'static str, String)>,
) -> String {
    run_script("export_spans.py", protocol, endpoint, env)
        .await
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingest_token_is_required_on_both_receivers_and_sent_by_the_python_sdk() {
    let server = TestServer::start_with(|c| c.ingest_token = Some(Secret("ing-3st".into()))).await;
    let body = request("guarded", 1, 2).encode_to_vec();
    for auth in [None, Some("Bearer wrong"), Some("ing-3st")] {
        let mut req = server
            .http
            .post(server.traces_url())
            .header("content-type", "application/x-protobuf")
            .body(body.clone());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let text = resp.text().await.unwrap();
        assert!(text.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{text}");
    }
    let mut grpc = TraceServiceClient::connect(server.addrs.otlp_grpc_url())
        .await
        .unwrap();
    let refused = grpc.export(request("guarded", 2, 2)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let mut signed = tonic::Request::new(request("guarded", 3, 2));
    signed
        .metadata_mut()
        .insert("authorization", "Bearer ing-3st".parse().unwrap());
    grpc.export(signed).await.unwrap();
    // Nothing refused was stored; the API needs no token (no --token).
    assert_eq!(server.stats().await["spans"], 2);

    let headers = (
        "OTEL_EXPORTER_OTLP_HEADERS",
        "Authorization=Bearer%20ing-3st".to_owned(),
    );
    let over_grpc =
        python_export("grpc", server.addrs.otlp_grpc_url(), vec![headers.clone()]).await;
    let over_http = python_export("http", server.addrs.otlp_http_url(), vec![headers]).await;
    server.wait_for_spans(8).await;
    for trace in [over_grpc, over_http] {
        assert_eq!(
            server.trace(&trace).await["spans"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_token_guards_the_api_ui_and_metrics_and_a_browser_signs_in_by_link() {
    let server = TestServer::start_with(|c| {
        c.token = Some(Secret("r3ad".into()));
        c.ingest_token = Some(Secret("wr1te".into()));
    })
    .await;
    let get = |path: &str, auth: Option<&str>| {
        let mut req = server.http.get(server.api(path));
        if let Some(a) = auth {
            req = req.header("authorization", format!("Bearer {a}"));
        }
        req.send()
    };
    // Without the token, or with the ingest token (what can export cannot read): 401.
    for auth in [None, Some("wr1te")] {
        let api = get("/api/stats", auth).await.unwrap();
        assert_eq!(api.status(), 401);
        assert!(api.text().await.unwrap().contains("--token"));
        assert_eq!(get("/metrics", auth).await.unwrap().status(), 401);
        let page = get("/runs", auth).await.unwrap();
        assert_eq!(page.status(), 401);
        assert!(
            page.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }
    assert_eq!(get("/api/stats", Some("r3ad")).await.unwrap().status(), 200);
    assert_eq!(get("/metrics", Some("r3ad")).await.unwrap().status(), 200);

    // The sign-in link: a cookie, and the same page without the token.
    let no_redirects = crate::common::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let wrong = no_redirects
        .get(server.api("/?token=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    let signed = no_redirects
        .get(server.api("/?view=all&token=r3ad"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 303);
    assert_eq!(signed.headers()["location"], "/?view=all");
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("r3ad"),
        "the cookie must not hold the token: {cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let page = no_redirects
        .get(server.api("/"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);

    // The client side: `report --server` with and without --token.
    let report = |token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tracecov"));
        cmd.args([
            "report",
            "--server",
            &server.addrs.ui_url(),
            "--wait",
            "0s",
            "--format",
            "json",
        ])
        .env_remove("TRACECOV_TOKEN");
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        cmd.output().unwrap()
    };
    let refused = tokio::task::block_in_place(|| report(None));
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--token"), "{stderr}");
    let answered = tokio::task::block_in_place(|| report(Some("r3ad")));
    let stderr = String::from_utf8_lossy(&answered.stderr);
    assert!(
        !stderr.contains("401") && !stderr.contains("--token"),
        "with the token the report is not refused: {stderr}"
    );
    server.stop().await;
}

/// A CA and a certificate for localhost and 127.0.0.1 signed by it, as PEM files in `dir`:
/// (ca.pem, cert.pem, key.pem).
pub fn certificates(dir: &Path) -> (std::path::PathBuf, TlsFiles) {
    certificates_for(dir, &["localhost", "127.0.0.1"])
}

/// As `certificates`, the server's certificate naming only `names` (host names or IP
/// addresses).
pub fn certificates_for(dir: &Path, names: &[&str]) -> (std::path::PathBuf, TlsFiles) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tracecov test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names.clone()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].as_str());
    let cert = params.signed_by(&key, &ca).unwrap();
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    (dir.join("ca.pem"), files)
}

/// GETs `url` with Python's TLS client, trusting only `ca`.
async fn https_get(url: String, ca: &Path) -> Vec<u8> {
    let ca = ca.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .args([
                "-c",
                "import ssl, sys, urllib.request\n\
                 ctx = ssl.create_default_context(cafile=sys.argv[2])\n\
                 sys.stdout.write(urllib.request.urlopen(sys.argv[1], context=ctx).read().decode())",
                &url,
                &ca,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_serves_tls_to_the_python_sdk_and_a_browser_client() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, files) = certificates(certs.path());
    let server = TestServer::start_with(|c| {
        c.tls = Some(files);
        c.ingest_token = Some(Secret("tls-ing".into()));
    })
    .await;
    assert!(server.addrs.otlp_grpc_url().starts_with("https://"));
    let env = vec![
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.display().to_string()),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "Authorization=Bearer%20tls-ing".to_owned(),
        ),
    ];
    let over_grpc = python_export("grpc", server.addrs.otlp_grpc_url(), env.clone()).await;
    let over_http = python_export("http", server.addrs.otlp_http_url(), env).await;

    // The UI and API over TLS, with Python's own TLS client trusting only the test CA.
    let health: serde_json::Value =
        serde_json::from_slice(&https_get(server.api("/api/health"), &ca).await).unwrap();
    assert!(
        health["otlp_http"]
            .as_str()
            .unwrap()
            .starts_with("https://"),
        "{health}"
    );
    for trace in [over_grpc, over_http] {
        let body = https_get(server.api(&format!("/api/traces/{trace}")), &ca).await;
        let trace: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(trace["spans"].as_array().unwrap().len(), 2, "{trace}");
    }
    // Plain HTTP to a TLS listener gets no answer but a closed connection.
    let plain = crate::common::http()
        .get(format!("http://{}/api/health", server.addrs.ui))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_commands_reach_an_https_server_given_its_ca_and_refuse_it_without() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, files) = certificates(certs.path());
    let mut server = TestServer::start_with(|c| {
        c.tls = Some(files);
        c.settle = std::time::Duration::from_millis(300);
    })
    .await;
    server.addrs.tls = true;
    let pem = std::fs::read(&ca).unwrap();
    server.http = crate::common::http_builder()
        .tls_certs_merge([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap();
    let resp = server
        .post_otlp(
            "application/json",
            crate::shared_db_tls::export("8af7651916cd43dd8448eb211c80319c"),
            false,
        )
        .await;
    assert_eq!(resp.status(), 200);
    server.wait_for_spans(1).await;

    let ui = server.addrs.ui_url();
    assert!(ui.starts_with("https://"), "{ui}");
    let report = |ca: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tracecov"));
        cmd.args([
            "report", "--server", &ui, "--wait", "0s", "--format", "json",
        ])
        .env_remove("TRACECOV_TLS_CA")
        .env_remove("TRACECOV_TOKEN");
        if let Some(ca) = ca {
            cmd.arg("--tls-ca").arg(ca);
        }
        cmd.output().unwrap()
    };
    let answered = tokio::task::block_in_place(|| report(Some(&ca)));
    assert!(
        answered.status.success(),
        "{}",
        String::from_utf8_lossy(&answered.stderr)
    );
    let report_json: serde_json::Value = serde_json::from_slice(&answered.stdout).unwrap();
    assert_eq!(report_json["run"]["spans"], 1, "{report_json}");

    let refused = tokio::task::block_in_place(|| report(None));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("certificate") && stderr.contains("--tls-ca"),
        "{stderr}"
    );

    // `run --server`: its command is handed the CA for the https:// endpoint.
    let out_dir = tempfile::tempdir().unwrap();
    let seen = out_dir.path().join("certificate");
    let run = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_tracecov"))
            .args(["run", "--server", &ui, "--name", "over-tls", "--tls-ca"])
            .arg(&ca)
            .env_remove("TRACECOV_TOKEN")
            .env_remove("OTEL_EXPORTER_OTLP_CERTIFICATE")
            .args([
                "--",
                "sh",
                "-c",
                "printf %s \"$OTEL_EXPORTER_OTLP_CERTIFICATE\" > \"$0\"",
            ])
            .arg(&seen)
            .output()
            .unwrap()
    });
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        std::path::absolute(&ca).unwrap().display().to_string()
    );
    server.stop().await;
}
