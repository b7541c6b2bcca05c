//! DESIGN's "Exposure" rules against a real server: a cross-site form cannot open or close a
//! run, and a page that re-pointed its own name at 127.0.0.1 (DNS rebinding) cannot read the API
//! or export spans; the server's own names, and `--allow-host` ones, still work.

use crate::common::{TestServer, request};

/// What a browser on another site can send without a preflight: a text/plain POST, or none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_posts_cannot_open_or_close_runs() {
    let server = TestServer::start().await;
    let post = |path: &str| server.http.post(server.api(path));
    for forged in [
        post("/api/runs")
            .header("content-type", "text/plain")
            .body("{\"name\": \"forged\"}"),
        post("/api/runs"),
        post("/api/runs/latest/close")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("a=b"),
    ] {
        let resp = forged.send().await.unwrap();
        assert_eq!(resp.status(), 403);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("X-Tracecov: 1"),
            "{body}"
        );
    }
    let (_, runs) = server.get_json("/api/runs").await;
    assert_eq!(
        runs.as_array().map(Vec::len),
        Some(0),
        "no run was opened: {runs}"
    );

    // Our own clients: JSON, or the marker header.
    let opened = post("/api/runs")
        .json(&serde_json::json!({"name": "real"}))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 201);
    let closed = post("/api/runs/latest/close")
        .header("x-tracecov", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_host_name_is_refused_on_every_http_listener() {
    let server = TestServer::start_with(|c| c.allow_hosts = vec!["ci-box.internal".into()]).await;
    let port = server.addrs.ui.port();
    let get = |host: &str| {
        server
            .http
            .get(server.api("/api/runs"))
            .header("host", host.to_owned())
            .send()
    };
    for refused in ["attacker.example", &format!("attacker.example:{port}")] {
        let resp = get(refused).await.unwrap();
        assert_eq!(resp.status(), 403, "{refused}");
        let text = resp.text().await.unwrap();
        assert!(text.contains("--allow-host"), "{text}");
    }
    for allowed in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "ci-box.internal".to_owned(),
    ] {
        assert_eq!(get(&allowed).await.unwrap().status(), 200, "{allowed}");
    }
    // OTLP/HTTP too: a rebinding page cannot push spans either.
    let body = prost::Message::encode_to_vec(&request("svc", 1, 1));
    let export = |host: &'static str| {
        server
            .http
            .post(server.traces_url())
            .header("content-type", "application/x-protobuf")
            .header("host", host)
            .body(body.clone())
            .send()
    };
    assert_eq!(export("attacker.example").await.unwrap().status(), 403);
    assert_eq!(export("localhost").await.unwrap().status(), 200);
    server.stop().await;
}

/// `GET /api/traces/{id}` redacts like every other output, and no JSON answer or scrape carries a
/// raw control character from span text (a terminal showing it would act on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_json_is_redacted_and_no_output_carries_raw_controls() {
    let server = TestServer::start_with(|c| c.settle = std::time::Duration::from_millis(200)).await;
    let trace = "5bf7651916cd43dd8448eb211c80319c";
    let kv = |k: &str, v: &str| serde_json::json!({"key": k, "value": {"stringValue": v}});
    let evil = "cart\u{9b}31m\u{1b}[2J";
    let body = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [kv("service.name", "shop"), kv("tracecov.run.id", "exposure")]},
        "scopeSpans": [{"spans": [
            {"traceId": trace, "spanId": "5000000000000001", "name": "test_x", "kind": 1,
             "startTimeUnixNano": "1000", "endTimeUnixNano": "9000",
             "attributes": [kv("test.case.name", "test_x"), kv("db.password", "hunter2-SECRET")]},
            {"traceId": trace, "spanId": "5000000000000002", "parentSpanId": "5000000000000001",
             "name": "GET", "kind": 3, "startTimeUnixNano": "2000", "endTimeUnixNano": "8000",
             "attributes": [kv("peer.service", evil), kv("http.request.method", "GET")]}
        ]}]
    }]});
    let resp = server
        .post_otlp("application/json", body.to_string().into_bytes(), false)
        .await;
    assert_eq!(resp.status(), 200);
    let text = |path: String| {
        let http = server.http.clone();
        let url = server.api(&path);
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let raw_control = |s: &str| s.chars().any(|c| c.is_control() && c != '\n');
    let trace_json = text(format!("/api/traces/{trace}")).await;
    assert!(!trace_json.contains("hunter2"), "{trace_json}");
    assert!(trace_json.contains("[REDACTED]"), "{trace_json}");
    assert!(!raw_control(&trace_json), "{trace_json:?}");
    assert!(
        trace_json.contains("\\u009b"),
        "kept as an escape: {trace_json}"
    );

    let report = text("/api/runs/exposure/report".to_owned()).await;
    assert!(report.contains("\\u009b"), "{report}");
    assert!(!raw_control(&report), "{report:?}");
    let metrics = text("/metrics".to_owned()).await;
    assert!(
        metrics.contains("traces_service_graph_request_total"),
        "{metrics}"
    );
    assert!(!raw_control(&metrics), "{metrics:?}");
    server.stop().await;
}

/// A client that sends half a body and stops is answered 408 once `--request-timeout` passes,
/// and its connection is closed (2,000 such connections once stayed open indefinitely).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_export_is_timed_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server =
        TestServer::start_with(|c| c.request_timeout = std::time::Duration::from_millis(500)).await;
    let mut conn = tokio::net::TcpStream::connect(server.addrs.http)
        .await
        .unwrap();
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\n",
        server.addrs.http.port()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&[0u8; 10]).await.unwrap();
    // The answer comes without sending anything more; then the server closes the connection.
    let mut answer = Vec::new();
    tokio::time::timeout(crate::common::PATIENCE, conn.read_to_end(&mut answer))
        .await
        .expect("the server answered and closed within the patience")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    server.stop().await;
}

/// `--cors-origin`: a browser page on an allowed origin gets its preflight answered (the exact
/// origin, credentials, the headers it asked for) and can read its export's answer; any other
/// origin is refused at the preflight and at the export; a preflight needs no ingest token
/// while the export still does; clients without `Origin` are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_exports_are_let_in_from_the_allowed_origins_only() {
    const PAGE: &str = "http://localhost:5173";
    let server = TestServer::start_with(|c| {
        c.cors_origins = tracecov::web::cors::CorsOrigins::new(&[PAGE.to_owned()]).unwrap();
        c.ingest_token = Some(tracecov::config::Secret("s3cret".into()));
    })
    .await;
    let url = server.traces_url();
    let preflight = |origin: &str| {
        server
            .http
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin.to_owned())
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
    };
    let header = |resp: &reqwest::Response, name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };

    let resp = preflight(PAGE).send().await.unwrap();
    assert_eq!(resp.status(), 204, "{:?}", resp.text().await);
    assert_eq!(
        header(&resp, "access-control-allow-origin").as_deref(),
        Some(PAGE)
    );
    assert_eq!(
        header(&resp, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert!(
        header(&resp, "access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert_eq!(
        header(&resp, "access-control-allow-headers").as_deref(),
        Some("authorization,content-type")
    );

    let resp = preflight("http://attacker.example").send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(header(&resp, "access-control-allow-origin"), None);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("--cors-origin"),
        "{body}"
    );

    let body = |span: &str| {
        serde_json::json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]},
            "scopeSpans": [{"spans": [{
                "traceId": "5af7651916cd43dd8448eb211c80319c", "spanId": span,
                "name": "documentLoad", "kind": 1,
                "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000005000000"
            }]}]
        }]})
        .to_string()
    };
    let export = |origin: Option<&str>, token: bool| {
        let span = if origin.is_some() {
            "5000000000000001"
        } else {
            "5000000000000002"
        };
        let mut req = server
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body(span));
        if let Some(o) = origin {
            req = req.header("origin", o.to_owned());
        }
        if token {
            req = req.header("authorization", "Bearer s3cret");
        }
        req
    };
    // From the page, with its token: accepted, and readable by it.
    let resp = export(Some(PAGE), true).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    assert_eq!(
        header(&resp, "access-control-allow-origin").as_deref(),
        Some(PAGE)
    );
    // The token is still required of an allowed origin.
    let resp = export(Some(PAGE), false).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    // Another origin cannot export even with the token (a leaked one in a page elsewhere).
    let resp = export(Some("http://attacker.example"), true)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // An SDK outside a browser sends no Origin: as before.
    let resp = export(None, true).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let stats = server.wait_for_spans(2).await;
    assert_eq!(stats["spans"], 2, "{stats}");
    server.stop().await;
}

/// A value that is not an origin is refused before anything starts, saying what one looks like.
#[test]
fn a_bad_cors_origin_is_refused_with_what_an_origin_is() {
    for (bad, says) in [
        ("*", "name each origin"),
        ("http://localhost:3000/app", "no path"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracecov"))
            .args(["demo", "--exit", "--cors-origin", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--cors-origin") && err.contains(says), "{err}");
    }
}
