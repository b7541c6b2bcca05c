//! The coverage sources' loaders: the manifest (YAML), Pact files (JSON) and OpenAPI documents
//! (JSON or YAML).
//!
//! The first input byte selects the loader (taken modulo 4: 0 manifest, 1 Pact, 2 OpenAPI named
//! `.json`, 3 OpenAPI named `.yaml`); the rest is the file's text (invalid UTF-8 replaced, as
//! the loaders take `&str`). What loads is then used as the report does: the expected topology
//! from it, and the coverage against it of a small fixed run (HTTP and gRPC calls between a few
//! services, so that route matching runs), then the gate.
#![no_main]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tracecov::coverage::{self, Sources};
use tracecov::graph::{AnalysisOptions, RunGraph};
use tracecov::model::{Attributes, Resource, Span, SpanId, SpanKind, TraceId};

/// Calls a test, a web front end and two services make: (caller, callee, method, path).
const CALLS: &[(&str, &str, &str, &str)] = &[
    ("tests", "svc", "GET", "/users/42"),
    ("tests", "svc", "POST", "/base/users"),
    ("web", "svc", "GET", "/orders/7/items?x=1"),
    ("orders", "payments", "POST", "/charge"),
    ("orders", "payments", "", "tracecov.demo.v1.Payments/Refund"),
    ("web", "users", "DELETE", "/users/{id}"),
];

fn service(name: &str) -> Arc<Resource> {
    let mut a = Attributes::new();
    a.push("service.name", name);
    Arc::new(Resource::new(a))
}

/// A run holding each of `CALLS` once, as a client span and the server span it caused.
fn run() -> RunGraph {
    let mut spans = Vec::new();
    for (i, &(caller, callee, method, path)) in CALLS.iter().enumerate() {
        let trace = TraceId::from_bytes([i as u8 + 1; 16]).unwrap();
        let (client_id, server_id) = (SpanId::from_bytes([1; 8]).unwrap(), SpanId::from_bytes([2; 8]).unwrap());
        let mut client = Span::new(trace, client_id, format!("{method} {path}").trim());
        let mut server = Span::new(trace, server_id, format!("{method} {path}").trim());
        client.kind = SpanKind::Client;
        client.resource = service(caller);
        server.kind = SpanKind::Server;
        server.parent_span_id = Some(client_id);
        server.resource = service(callee);
        (client.start_ns, client.end_ns, server.start_ns, server.end_ns) = (10, 50, 20, 40);
        if method.is_empty() {
            let (svc, m) = path.split_once('/').unwrap();
            for s in [&mut client, &mut server] {
                s.attributes.push("rpc.system", "grpc");
                s.attributes.push("rpc.service", svc);
                s.attributes.push("rpc.method", m);
            }
        } else {
            client.attributes.push("http.request.method", method);
            client.attributes.push("url.full", format!("http://{callee}:8080{path}"));
            server.attributes.push("http.request.method", method);
            server.attributes.push("url.path", path);
            server.attributes.push("http.response.status_code", 200i64);
        }
        spans.extend([client, server]);
    }
    let opts = AnalysisOptions {
        test_services: vec!["tests".to_owned()],
        ..AnalysisOptions::default()
    };
    tracecov::graph::analyze(&spans, &opts)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(body);
    let mut manifest = None;
    let mut contracts = Vec::new();
    match selector % 4 {
        0 => match coverage::parse_manifest(&text, Path::new("tracecov.yaml")) {
            Ok(m) => {
                let _ = m.declares_topology();
                let _ = m.analysis_options();
                let _ = m.unknown_names(["cart", "payments", "ext:db"]);
                manifest = Some(m);
            }
            Err(e) => drop(e.to_string()),
        },
        1 => match coverage::parse_pact(&text, Path::new("pact.json")) {
            Ok(c) => contracts.push(c),
            Err(e) => drop(e.to_string()),
        },
        n => {
            let file = if n == 2 { "api.json" } else { "api.yaml" };
            match coverage::parse_openapi(&text, Path::new(file), "svc", None) {
                Ok(c) => contracts.push(c),
                Err(e) => drop(e.to_string()),
            }
            match coverage::parse_openapi(&text, Path::new(file), "svc", Some("/base/")) {
                Ok(c) => contracts.push(c),
                Err(e) => drop(e.to_string()),
            }
        }
    }
    let expected = coverage::expected(&Sources {
        manifest: manifest.as_ref(),
        contracts: &contracts,
        ..Sources::default()
    });
    let run = run();
    let cov = coverage::coverage(&run, &expected, &BTreeSet::new());
    let _ = coverage::gate(&cov, &coverage::GateConditions {
        critical: true,
        no_failures: true,
        min_edge_coverage: Some(50.0),
        min_interface_coverage: Some(50.0),
    });
});
