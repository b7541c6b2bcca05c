//! The pages rendered from hostile input: markup, script-closing text and attribute breakouts in
//! every span-derived field must come out as text. The browser tests (`tests/it/ui.rs`) check the
//! same in Chromium; these say which page broke, fast.

use std::sync::Arc;

use crate::bench::ui::{generated_report, page_of};
use crate::model::{
    Attributes, Event, KeyValue, LogRecord, Resource, Span, SpanId, SpanKind, Status, StatusCode,
    TraceId, Value,
};
use crate::query::TraceDetail;

const IMG: &str = "<img src=x onerror=alert(1)>";
const SCRIPT: &str = "</script><script>alert(2)</script>";
const BREAKOUT: &str = "\"><svg onload=alert(3)>";

/// No element and no attribute a hostile string could have made.
fn assert_inert(html: &str) {
    // The hostile text appears, escaped, as text; these only exist if it became markup.
    for bad in ["<img", "<svg onload", "<script>alert"] {
        assert!(
            !html.contains(bad),
            "{bad:?} in the page:\n{}",
            &html[html.find(bad).unwrap().saturating_sub(300)..]
        );
    }
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{html}"
    );
    assert!(
        html.contains("&quot;&gt;&lt;svg onload=alert(3)&gt;"),
        "{html}"
    );
}

fn hostile_report() -> crate::report::Report {
    let mut report = generated_report(6, 10);
    let e = &mut report.edges[0];
    e.caller = format!("svc{IMG}");
    e.callee = format!("callee{BREAKOUT}");
    e.tests = vec![SCRIPT.to_owned()];
    e.status = Some("failing".to_owned());
    e.interfaces[0].operation = format!("GET /x/{SCRIPT}");
    report.nodes.push(crate::report::Node {
        id: format!("svc{IMG}"),
        kind: "service".to_owned(),
    });
    let f = &mut report.failures;
    f.push(crate::report::Failure {
        test: Some(IMG.to_owned()),
        summary: format!("{BREAKOUT} {SCRIPT}"),
        hop: Some(crate::report::FailureHop {
            caller: format!("svc{IMG}"),
            callee: BREAKOUT.to_owned(),
            operation: SCRIPT.to_owned(),
        }),
        link: "javascript:alert(4)".to_owned(),
        ..generated_report(6, 30).failures[0].clone()
    });
    report
        .run
        .diagnostics
        .propagation_breaks
        .insert(IMG.to_owned(), 1);
    report.regressions = Some(vec![crate::report::Regression {
        caller: format!("svc{IMG}"),
        callee: format!("callee{BREAKOUT}"),
        operation: format!("GET /x/{SCRIPT}"),
        base_p95_ms: 2.0,
        run_p95_ms: 80.0,
        ratio: 40.0,
        base_calls: 25,
        calls: 25,
        blamed: Some(format!("callee{BREAKOUT}")),
    }]);
    report
}

#[test]
fn run_page_renders_hostile_names_as_text() {
    let mut page = page_of(hostile_report());
    page.baseline = Some(format!("base{SCRIPT}"));
    let html = super::render_run_page(&page).into_string();
    assert_inert(&html);
    assert!(!html.contains("javascript:"), "a javascript: link was kept");
    assert!(html.contains("&lt;/script&gt;&lt;script&gt;alert(2)"));
    // The failing edge is in the heatmap and the graph.
    assert!(html.contains("data-status=\"failing\""));
    assert!(html.contains("class=\"edge failing\""));
    // So is the slower one, outlined, and listed with its blamed node.
    assert!(
        html.contains("id=\"slower\""),
        "no slower-than-baseline table"
    );
    assert!(
        html.contains("class=\"edge-slower\""),
        "the slower edge is not outlined"
    );
    assert!(
        html.contains(" slower\" data-status=\"failing\""),
        "the slower cell is not outlined"
    );
}

fn attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Value::Str(value.to_owned()),
    }
}

#[test]
fn trace_view_renders_hostile_spans_as_text_and_highlights_the_placed_span() {
    let trace = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
    let root = SpanId::from_hex("b7ad6b7169203331").unwrap();
    let child = SpanId::from_hex("00f067aa0ba902b7").unwrap();
    let resource = Arc::new(Resource::new(Attributes(vec![attr(
        "service.name",
        &format!("svc{IMG}"),
    )])));
    let mut a = Span::new(trace, root, IMG);
    a.kind = SpanKind::Server;
    a.start_ns = 1_000;
    a.end_ns = 9_000;
    a.resource = resource.clone();
    a.attributes = Attributes(vec![attr("note", SCRIPT), attr("html", BREAKOUT)]);
    let mut b = Span::new(trace, child, BREAKOUT);
    b.parent_span_id = Some(root);
    b.kind = SpanKind::Client;
    b.start_ns = 2_000;
    b.end_ns = 5_000;
    b.resource = resource;
    b.status = Status {
        code: StatusCode::Error,
        message: SCRIPT.to_owned(),
    };
    b.events = vec![Event {
        time_ns: 3_000,
        name: IMG.to_owned(),
        attributes: Attributes(vec![attr("exception.message", BREAKOUT)]),
    }];
    let mut failure = generated_report(6, 30).failures[0].clone();
    failure.span_id = child.to_hex();
    failure.summary = IMG.to_owned();
    // The root broke an expectation: outlined, its violation listed with a bug-report link.
    let violation = crate::report::violations::Violation {
        expectation: IMG.to_owned(),
        test: Some(BREAKOUT.to_owned()),
        trace_id: trace.to_hex(),
        span_id: root.to_hex(),
        hop: None,
        expected: "at least 1 call".to_owned(),
        observed: "0 calls".to_owned(),
        summary: format!("{IMG} expected at least 1 call, observed 0 calls"),
        link: String::new(),
    };
    let detail = TraceDetail {
        spans: vec![a, b],
        run: None,
        failures: vec![failure],
        violations: vec![violation],
        hops: Vec::new(),
    };
    let html = super::trace::render(trace, &detail, Some(child)).into_string();
    assert_inert(&html);
    let placed = html
        .find("class=\"wf-row placed selected\"")
        .expect("the placed span is highlighted and selected");
    assert!(html[placed..].contains("data-span=\"00f067aa0ba902b7\""));
    let violated = html
        .find("class=\"wf-row violated\"")
        .expect("the span that broke the expectation is outlined");
    assert!(html[violated..].contains("data-span=\"b7ad6b7169203331\""));
    assert!(
        html.contains("/traces/0af7651916cd43dd8448eb211c80319c/bug?span=b7ad6b7169203331"),
        "the violation links its bug report"
    );
}

#[test]
fn trace_view_lists_a_spans_log_records_and_marks_the_error_evidence() {
    let trace = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
    let sid = SpanId::from_hex("b7ad6b7169203331").unwrap();
    let mut span = Span::new(trace, sid, "process orders");
    span.start_ns = 1_000_000;
    span.end_ns = 9_000_000;
    let log = |time_ns: u64, severity_number: i32, body: &str| LogRecord {
        time_ns,
        severity_number,
        severity_text: String::new(),
        body: body.to_owned(),
        attributes: Attributes::new(),
    };
    span.logs = vec![
        log(2_000_000, 9, &format!("reserving {BREAKOUT}")),
        log(3_500_000, 17, &format!("reserve failed {IMG}\nat line 2")),
    ];
    let detail = TraceDetail {
        spans: vec![span],
        run: None,
        failures: Vec::new(),
        violations: Vec::new(),
        hops: Vec::new(),
    };
    let html = super::trace::render(trace, &detail, None).into_string();
    assert_inert(&html);
    // The ERROR record is listed under the row, closed as it is, with its offset from the
    // trace's start and only its first line; the INFO record only in the details.
    let under = &html[html
        .find("<ul class=\"wf-evidence\"")
        .expect("evidence under the row")..];
    let under = &under[..under.find("</ul>").unwrap()];
    assert!(under.contains("+2.5 ms"), "{under}");
    assert!(under.contains("✗ ERROR"), "{under}");
    assert!(under.contains("reserve failed &lt;img"), "{under}");
    assert!(
        !under.contains("at line 2") && !under.contains("reserving"),
        "{under}"
    );
    assert!(html.contains("2 logs"), "the row counts its records");
    let table = &html[html.find("<table class=\"logs\"").expect("a log table")..];
    assert!(table.contains("<tr class=\"log-error\">"), "{table}");
    assert!(
        table.contains("+1.0 ms") && table.contains("INFO"),
        "{table}"
    );
}

#[test]
fn large_graphs_are_aggregated_by_namespace() {
    let report = generated_report(200, 2_000);
    let model = super::graph::model(&report);
    assert_eq!(model.nodes.len(), 20, "one node per namespace");
    assert!(model.note.as_deref().unwrap().contains("namespaces"));
    assert!(model.edges.iter().any(|e| e.status == "failing"));
    // Small graphs are drawn whole.
    let small = super::graph::model(&generated_report(12, 30));
    assert_eq!(small.nodes.len(), 12);
    assert!(small.note.is_none());
}

/// A dense graph of few nodes (50 services, 600 edges) once took seven seconds to lay out, and
/// far longer with more edges: only the worst `MAX_DRAWN_EDGES` are drawn.
#[test]
fn dense_graphs_draw_their_worst_edges_only() {
    let report = generated_report(50, 600);
    let failing = report
        .edges
        .iter()
        .filter(|e| e.status.as_deref() == Some("failing"))
        .count();
    assert!(failing > 0);
    let model = super::graph::model(&report);
    assert_eq!(model.edges.len(), super::graph::MAX_DRAWN_EDGES);
    assert_eq!(
        model.edges.iter().filter(|e| e.status == "failing").count(),
        failing.min(super::graph::MAX_DRAWN_EDGES),
        "every failing edge is among those drawn"
    );
    assert!(model.note.as_deref().unwrap().contains("600 edges"));
}

#[test]
fn large_graphs_without_namespaces_keep_only_their_problems() {
    let mut report = generated_report(200, 2_000);
    let strip = |id: &mut String| *id = id.replace('/', "-");
    for n in &mut report.nodes {
        strip(&mut n.id);
    }
    for e in &mut report.edges {
        strip(&mut e.caller);
        strip(&mut e.callee);
    }
    let model = super::graph::model(&report);
    assert!(model.nodes.len() <= super::graph::MAX_NODES);
    assert!(
        model
            .edges
            .iter()
            .all(|e| matches!(e.status.as_str(), "failing" | "untested"))
    );
    assert!(model.note.as_deref().unwrap().contains("Only failing"));
}

#[test]
fn links_percent_encode_what_they_carry() {
    assert_eq!(
        super::href::edge("r 1", "a/b", "db:x?y&z"),
        "/runs/r%201/edges?caller=a%2Fb&callee=db%3Ax%3Fy%26z"
    );
    assert_eq!(super::safe_external("javascript:alert(1)"), None);
    assert_eq!(
        super::safe_external("https://jaeger/trace/1"),
        Some("https://jaeger/trace/1")
    );
}

/// The values of `attr="…"` in `html`, in order.
fn attr_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let needle = format!(" {attr}=\"");
    html.match_indices(&needle)
        .map(|(i, _)| {
            let rest = &html[i + needle.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect()
}

#[test]
fn a_large_run_opens_on_namespaces_and_a_namespace_cell_opens_its_edges() {
    use super::heatmap::{HeatOptions, render};
    let report = generated_report(200, 2_000);

    // Unfiltered: one cell per pair of namespaces, none per edge, and their counts add up.
    let html = render(&report, "r", &HeatOptions::default()).into_string();
    assert!(html.contains("id=\"heat-overview\""), "{html}");
    assert!(attr_values(&html, "data-caller").is_empty());
    let pairs = attr_values(&html, "data-callee-ns").len();
    assert!((20..=400).contains(&pairs), "{pairs} namespace cells");
    let counted: usize = html
        .match_indices("<span class=\"ns-count\">")
        .map(|(i, m)| {
            let rest = &html[i + m.len()..];
            let text = &rest[..rest.find('<').unwrap()];
            text.chars()
                .skip(1)
                .collect::<String>()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(counted, report.edges.len());
    assert!(html.contains("href=\"/runs/r?caller_ns=ns03&amp;callee_ns=ns04\""));

    // A namespace cell's link: exactly the edges from ns03 to ns04, one cell each.
    let opts = HeatOptions {
        caller_ns: Some("ns03".into()),
        callee_ns: Some("ns04".into()),
        ..HeatOptions::default()
    };
    let html = render(&report, "r", &opts).into_string();
    let want = report
        .edges
        .iter()
        .filter(|e| e.caller.starts_with("ns03/") && e.callee.starts_with("ns04/"))
        .count();
    assert!(want > 0);
    let callers = attr_values(&html, "data-caller");
    let callees = attr_values(&html, "data-callee");
    assert!(callers.iter().all(|c| c.starts_with("ns03/")));
    assert!(callees.iter().all(|c| c.starts_with("ns04/")));
    assert_eq!(callees.len(), want);

    // Every edge on request.
    let opts = HeatOptions {
        view: Some("cells".into()),
        ..HeatOptions::default()
    };
    let html = render(&report, "r", &opts).into_string();
    assert_eq!(attr_values(&html, "data-callee").len(), report.edges.len());

    // The demo-sized run opens on its edges.
    let small = generated_report(20, 40);
    let html = render(&small, "r", &HeatOptions::default()).into_string();
    assert!(!html.contains("heat-overview"));
    assert_eq!(attr_values(&html, "data-callee").len(), small.edges.len());
}

#[test]
fn backticked_values_in_summaries_become_code_and_stay_escaped() {
    let html = super::layout::prose("HTTP 500 (`ledger <b>failed</b>`); see `x").into_string();
    assert_eq!(
        html,
        "HTTP 500 (<code>ledger &lt;b&gt;failed&lt;/b&gt;</code>); see `x"
    );
    assert_eq!(super::layout::prose("no quotes").into_string(), "no quotes");
}

#[test]
fn a_status_filter_counts_its_own_edges_dims_the_rest_and_unknown_values_are_said() {
    use super::heatmap::{HeatOptions, render};
    let report = generated_report(20, 60);
    let failing = report
        .edges
        .iter()
        .filter(|e| e.status.as_deref() == Some("failing"))
        .count();
    assert!(failing > 0);
    let opts = HeatOptions {
        status: Some("failing".into()),
        ..HeatOptions::default()
    };
    let html = render(&report, "r", &opts).into_string();
    assert!(
        html.contains(&format!("{failing} failing edges, shown among")),
        "{html}"
    );
    let statuses = attr_values(&html, "data-status");
    let classes: Vec<&str> = attr_values(&html, "class")
        .into_iter()
        .filter(|c| c.starts_with("cell "))
        .collect();
    assert_eq!(statuses.len(), classes.len());
    for (st, class) in statuses.iter().zip(&classes) {
        assert_eq!(*st != "failing", class.contains(" dim"), "{st}: {class}");
    }

    let opts = HeatOptions {
        status: Some("bogus".into()),
        sort: Some("sideways".into()),
        critical: Some("yes".into()),
        ..HeatOptions::default()
    };
    let html = render(&report, "r", &opts).into_string();
    assert!(html.contains("id=\"heat-ignored\""), "{html}");
    assert!(html.contains("status=bogus") && html.contains("sort=sideways"));
    assert!(
        attr_values(&html, "data-critical")
            .iter()
            .all(|c| *c == "true"),
        "critical=yes keeps only critical cells"
    );
}

#[test]
fn the_heatmap_sorts_problems_first_and_filters_by_namespace_caller_and_callee() {
    use super::heatmap::{HeatOptions, namespace, render};
    let report = generated_report(40, 120);
    let rows = |html: &str| -> Vec<String> {
        // Row headers carry the caller in `data-caller` on their <tr>.
        html.match_indices("<tr data-caller=\"")
            .map(|(i, m)| {
                let rest = &html[i + m.len()..];
                rest[..rest.find('"').unwrap()].to_owned()
            })
            .collect()
    };
    let problems_of = |caller: &str| {
        report
            .edges
            .iter()
            .filter(|e| {
                e.caller == caller
                    && crate::report::is_problem(e.status.as_deref().unwrap_or("covered"))
            })
            .count()
    };

    let sorted = rows(
        &render(
            &report,
            "r",
            &HeatOptions {
                sort: Some("problems".into()),
                ..HeatOptions::default()
            },
        )
        .into_string(),
    );
    let counts: Vec<usize> = sorted.iter().map(|c| problems_of(c)).collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");
    assert!(counts[0] > *counts.last().unwrap());

    let by_ns = render(
        &report,
        "r",
        &HeatOptions {
            ns: Some("ns01".into()),
            ..HeatOptions::default()
        },
    )
    .into_string();
    // A cell names its caller and callee side by side; a row names only its caller.
    let cells: Vec<(&str, &str)> = by_ns
        .match_indices(" data-caller=\"")
        .filter_map(|(i, m)| {
            let rest = &by_ns[i + m.len()..];
            let (caller, rest) = rest.split_once('"')?;
            let callee = rest.strip_prefix(" data-callee=\"")?.split('"').next()?;
            Some((caller, callee))
        })
        .collect();
    let want = report
        .edges
        .iter()
        .filter(|e| namespace(&e.caller) == "ns01" || namespace(&e.callee) == "ns01")
        .count();
    assert!(want > 0);
    assert_eq!(cells.len(), want);
    for (c, s) in &cells {
        assert!(
            namespace(c) == "ns01" || namespace(s) == "ns01",
            "{c} -> {s}"
        );
    }

    let by_name = render(
        &report,
        "r",
        &HeatOptions {
            caller: Some("service-01".into()),
            callee: Some("service-02".into()),
            ..HeatOptions::default()
        },
    )
    .into_string();
    let want = report
        .edges
        .iter()
        .filter(|e| e.caller.contains("service-01") && e.callee.contains("service-02"))
        .count();
    assert!(want > 0);
    let callees = attr_values(&by_name, "data-callee");
    assert_eq!(callees.len(), want);
    assert!(callees.iter().all(|c| c.contains("service-02")));
    assert!(rows(&by_name).iter().all(|c| c.contains("service-01")));
}
