//! OTLP/JSON over HTTP: the specification's own example, and its variants real producers send.

use crate::common::{TestServer, fixture, read};

const SPEC_TRACE: &str = "5b8efff798038103d269b633813fc60c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_example_is_stored_as_the_specification_says() {
    let server = TestServer::start().await;
    let body = read(&fixture("otlp-json/spec-example.json"));
    let resp = server.post_otlp("application/json", body, false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/json",
        "the answer uses the request's encoding"
    );
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        answer,
        serde_json::json!({}),
        "no partial success: all spans kept"
    );

    let trace = server.trace(SPEC_TRACE).await;
    let span = &trace["spans"][0];
    assert_eq!(trace["spans"].as_array().unwrap().len(), 1);
    assert_eq!(span["span_id"], "eee19b7ec3c1b174");
    assert_eq!(span["parent_span_id"], "eee19b7ec3c1b173");
    assert_eq!(span["name"], "I'm a server span");
    assert_eq!(span["kind"], "server");
    assert_eq!(span["service"], "my.service");
    assert_eq!(span["start_unix_nano"], 1_544_712_660_000_000_000_u64);
    assert_eq!(span["end_unix_nano"], 1_544_712_661_000_000_000_u64);
    assert_eq!(span["attributes"]["my.span.attr"], "some value");
    assert_eq!(span["scope"]["name"], "my.library");
    assert_eq!(span["scope"]["version"], "1.0.0");
    // Upper-case hex in, the same id found by lower or upper case.
    let (status, _) = server
        .get_json(&format!("/api/traces/{}", SPEC_TRACE.to_uppercase()))
        .await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enum_names_and_string_integers_are_accepted_like_their_numbers() {
    let server = TestServer::start().await;
    let text = String::from_utf8(read(&fixture("otlp-json/spec-example.json"))).unwrap();
    let named = text
        .replace("\"kind\": 2", "\"kind\": \"SPAN_KIND_SERVER\"")
        .replace(
            "\"startTimeUnixNano\": 1544712660000000000",
            "\"startTimeUnixNano\": \"1544712660000000000\"",
        );
    assert_ne!(
        named, text,
        "the fixture changed shape; update the replacements"
    );
    for body in [text, named] {
        let resp = server
            .post_otlp("application/json", body.into_bytes(), false)
            .await;
        assert_eq!(resp.status(), 200);
    }
    let trace = server.trace(SPEC_TRACE).await;
    assert_eq!(
        trace["spans"].as_array().unwrap().len(),
        1,
        "the two spellings are the same span, stored once: {trace}"
    );
    assert_eq!(trace["spans"][0]["kind"], "server");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_json_is_accepted() {
    use std::io::Write as _;
    let server = TestServer::start().await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&read(&fixture("otlp-json/spec-example.json")))
        .unwrap();
    let resp = server
        .post_otlp(
            "application/json; charset=utf-8",
            gz.finish().unwrap(),
            true,
        )
        .await;
    assert_eq!(resp.status(), 200);
    server.trace(SPEC_TRACE).await;
    server.stop().await;
}
