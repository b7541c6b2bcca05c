//! Snapshots of the rendered formats (Markdown, JUnit, HTML, coloured text) of one small run
//! with a failure (login fails at checkout -> users), an untested critical edge (checkout ->
//! inventory) and a stubbed edge (checkout -> payments, answered by a mock), whose test name,
//! status message and one service name are hostile: Markdown, HTML, Mermaid syntax and ANSI
//! escape sequences. `UPDATE_EXPECT=1 cargo test --lib report::formats_tests` rewrites them.

use std::path::Path;

use expect_test::expect;

use super::{Report, ReportOptions, RunInfo, apply_coverage, build_with};
use crate::coverage::{HopKey, Sources, coverage, expected, failing_hops, parse_manifest};
use crate::graph::{Forest, analyze_forest, fixture};

/// Markdown, HTML, Mermaid and terminal escapes in one string. `pwned` only ever appears inside
/// an escape sequence, so it must never come out.
pub const HOSTILE: &str = "<img src=x onerror=alert(1)> **bold** [x](javascript:alert(1)) | \
                           \\\"] --> evil[\\\" `#lt;` \u{1b}[31mred\u{1b}[0m \u{1b}]0;pwned\u{7}";

fn fixture() -> String {
    format!(
        r#"
        r1:t - driver internal pay 0..100 test.case.name=pay
        r1:c t checkout client POST 1..50 http.request.method=POST
        r1:m c payments-mock server "POST /charge" 2..49 http.request.method=POST http.route=/charge
        r1:w c checkout client GET 51..60 http.request.method=GET
        r1:x w "odd<b>|\"]-->z[{esc}[2Jsvc" server "GET /x" 52..59 http.request.method=GET http.route=/x
        r2:t - driver internal login 0..100 test.case.name="{HOSTILE}" test.case.result.status=fail
        r2:c t checkout client GET 1..50 http.request.method=GET http.response.status_code=500
        r2:u c users server "GET /users/{{id}}" 2..49 http.request.method=GET http.route=/users/{{id}} http.response.status_code=500 status=error status.message="{HOSTILE}"
        "#,
        esc = '\u{1b}'
    )
}

const MANIFEST: &str = r#"
services:
  payments-mock: {mock_of: payments}
edges:
  - caller: checkout
    callee: payments
    interfaces: [POST /charge]
  - caller: checkout
    callee: users
    interfaces: ["GET /users/:id"]
  - caller: checkout
    callee: inventory
    critical: true
"#;

/// The report as `query::analyse_runs` builds it: graph, blame, then coverage with the hops
/// failures were placed on counted as failing.
pub fn report() -> Report {
    let (spans, opts) = fixture::parse(&fixture());
    let forest = Forest::build(&spans);
    let mut graph = analyze_forest(&forest, &opts);
    let blame = crate::blame::analyze(&forest, &mut graph);
    let run = RunInfo {
        id: "r-7".to_owned(),
        name: "ci".to_owned(),
    };
    let mut report = build_with(&run, &graph, &blame, &ReportOptions::default());
    let m = parse_manifest(MANIFEST, Path::new("tracecov.yaml")).unwrap();
    let exp = expected(&Sources {
        manifest: Some(&m),
        ..Sources::default()
    });
    let mut failing = failing_hops(&graph);
    for f in &blame.failures {
        if let Some(h) = &f.hop {
            failing.insert(HopKey {
                caller: h.caller.clone(),
                callee: h.callee.clone(),
                operation: Some(h.operation.clone()),
            });
        }
    }
    apply_coverage(&mut report, &coverage(&graph, &exp, &failing));
    report
}

#[test]
fn markdown_report() {
    expect![[r###"
        ## tracecov: run ci (r\-7)

        ❌ **failed\: 1 of 2 tests failed\; 1 failing hop\; coverage\: edges 33\.3\%\, interfaces 50\.0\%\, critical 0\.0\%\; 1 critical untested**

        2 tests (1 passed, 1 failed), 8 spans in 2 traces.

        | coverage | covered | expected | percent |
        |---|---:|---:|---:|
        | edges | 1 | 3 | 33.3% |
        | interfaces | 1 | 2 | 50.0% |
        | critical | 0 | 1 | 0.0% |

        ### Failing hops (1)

        | test | hop | class | summary | trace |
        |---|---|---|---|---|
        | \<img src\=x onerror\=alert\(1\)\> \*\*bold\*\* \[x\]\(javascript\:alert\(1\)\) \| \"\] \-\-\> evil\[\" \`\#lt\;\` red  | checkout → users GET \/users\/\{id\} | callee\_error | users answered GET \/users\/\{id\} from checkout with HTTP 500 \(\`\<img src\=x onerror\=alert\(1\)\> \*\*bold\*\* \[x\]\(javascript\:alert\(1\)\) \| \"\] \-\-\> evil\[\" \'\#lt\;\' red \`\)\; 1 test failed here | [trace](<http://127.0.0.1:4320/traces/72320000000000000000000000000000?span=7500000000000000>) |

        ### Untested critical items (1)

        - checkout → inventory

        ### Graph

        ```mermaid
        flowchart LR
          n0["checkout"]
          n1["driver"]
          n2["inventory"]
          n3["odd#60;b#62;#124;#34;#93;--#62;z#91;svc"]
          n4["payments"]
          n5["payments-mock"]
          n6["users"]
          n0 -.->|"untested, critical"| n2
          n0 -->|"unexpected"| n3
          n0 -.->|"stubbed"| n4
          n0 -.->|"stubbed"| n5
          n0 ==>|"failing"| n6
          n1 -->|"unexpected"| n0
          linkStyle 0 stroke:#e36209,stroke-width:2px,stroke-dasharray:6 4
          linkStyle 1,5 stroke:#6f42c1,stroke-width:1px
          linkStyle 2,3 stroke:#6a737d,stroke-width:1px,stroke-dasharray:2 3
          linkStyle 4 stroke:#cb2431,stroke-width:3px
        ```

        Edges: solid = covered, **failing** = thick red, *untested* = dashed orange, stubbed = dotted grey (only a mock answered), unexpected = purple.
    "###]].assert_eq(&super::markdown(&report()));
}

#[test]
fn junit_report() {
    expect![[r#"
        <?xml version="1.0" encoding="UTF-8"?>
        <testsuites name="tracecov" tests="7" failures="2" errors="0" skipped="5">
          <testsuite name="tracecov coverage: run ci (r-7)" tests="7" failures="2" errors="0" skipped="5">
            <testcase classname="checkout -&gt; inventory" name="checkout -&gt; inventory">
              <skipped message="untested (critical): no test exercised this edge"/>
            </testcase>
            <testcase classname="checkout -&gt; payments" name="checkout -&gt; payments">
              <skipped message="stubbed: only a mock answered this edge, never the real service"/>
            </testcase>
            <testcase classname="checkout -&gt; payments" name="POST /charge">
              <skipped message="stubbed: only a mock answered this interface, never the real service"/>
            </testcase>
            <testcase classname="checkout -&gt; payments-mock" name="checkout -&gt; payments-mock">
              <skipped message="stubbed: only a mock answered this edge, never the real service"/>
            </testcase>
            <testcase classname="checkout -&gt; payments-mock" name="POST /charge">
              <skipped message="stubbed: only a mock answered this interface, never the real service"/>
            </testcase>
            <testcase classname="checkout -&gt; users" name="checkout -&gt; users">
              <failure message="users answered GET /users/{id} from checkout with HTTP 500 (`&lt;img src=x onerror=alert(1)&gt; **bold** [x](javascript:alert(1)) | &quot;] --&gt; evil[&quot; &apos;#lt;&apos; red `); 1 test failed here" type="callee_error">&lt;img src=x onerror=alert(1)&gt; **bold** [x](javascript:alert(1)) | &quot;] --&gt; evil[&quot; `#lt;` red  (callee_error): users answered GET /users/{id} from checkout with HTTP 500 (`&lt;img src=x onerror=alert(1)&gt; **bold** [x](javascript:alert(1)) | &quot;] --&gt; evil[&quot; &apos;#lt;&apos; red `); 1 test failed here&#10;trace: http://127.0.0.1:4320/traces/72320000000000000000000000000000?span=7500000000000000&#10;</failure>
            </testcase>
            <testcase classname="checkout -&gt; users" name="GET /users/{id}">
              <failure message="users answered GET /users/{id} from checkout with HTTP 500 (`&lt;img src=x onerror=alert(1)&gt; **bold** [x](javascript:alert(1)) | &quot;] --&gt; evil[&quot; &apos;#lt;&apos; red `); 1 test failed here" type="callee_error">&lt;img src=x onerror=alert(1)&gt; **bold** [x](javascript:alert(1)) | &quot;] --&gt; evil[&quot; `#lt;` red  (callee_error): users answered GET /users/{id} from checkout with HTTP 500 (`&lt;img src=x onerror=alert(1)&gt; **bold** [x](javascript:alert(1)) | &quot;] --&gt; evil[&quot; &apos;#lt;&apos; red `); 1 test failed here&#10;trace: http://127.0.0.1:4320/traces/72320000000000000000000000000000?span=7500000000000000&#10;</failure>
            </testcase>
          </testsuite>
        </testsuites>
    "#]].assert_eq(&super::junit(&report()));
}

#[test]
fn html_report() {
    expect![[r##"
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>tracecov: run ci</title>
        <style>
        body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#24292e}
        h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em}
        table{border-collapse:collapse}td,th{border:1px solid #d1d5da;padding:4px 8px;text-align:left;vertical-align:top}
        th{background:#f6f8fa}.num{text-align:right}
        .verdict{font-size:1.1em;font-weight:600;padding:.5em 1em;border-radius:4px;display:inline-block}
        .verdict.failed{background:#ffeef0;color:#86181d}.verdict.passed{background:#dcffe4;color:#144620}
        .verdict.warn{background:#fff5b1;color:#735c0f}
        td.covered{background:#dcffe4}td.failing{background:#ffdce0;font-weight:600}
        td.untested{background:#fff1c2}td.stubbed{background:#e1e4e8}td.unexpected{background:#e6dcfd}
        td.none{background:#fff;color:#959da5}
        .heat td{text-align:center;min-width:6em}.heat th.row{text-align:right}
        .small{font-size:.85em;color:#586069}
        svg text{font:12px system-ui,sans-serif}
        .flaky{font-size:.85em;font-weight:600;color:#7d4e00;border:1px solid currentColor;border-radius:3px;padding:0 .35em}
        </style>
        </head>
        <body>
        <h1>tracecov: run ci <span class="small">(r-7)</span></h1>
        <p class="verdict failed">failed: 1 of 2 tests failed; 1 failing hop; coverage: edges 33.3%, interfaces 50.0%, critical 0.0%; 1 critical untested</p>
        <p>2 tests (1 passed, 1 failed), 8 spans in 2 traces.</p>
        <h2>Coverage</h2>
        <table>
        <tr><th></th><th>covered</th><th>expected</th><th>percent</th></tr>
        <tr><th>edges</th><td class="num">1</td><td class="num">3</td><td class="num">33.3%</td></tr>
        <tr><th>interfaces</th><td class="num">1</td><td class="num">2</td><td class="num">50.0%</td></tr>
        <tr><th>critical</th><td class="num">0</td><td class="num">1</td><td class="num">0.0%</td></tr>
        </table>
        <h2>Heatmap</h2>
        <table class="heat">
        <tr><th>caller \ callee</th><th>checkout</th><th>inventory</th><th>odd&lt;b&gt;|&quot;]--&gt;z[svc</th><th>payments</th><th>payments-mock</th><th>users</th></tr>
        <tr><th class="row">checkout</th><td class="none">–</td><td class="untested" title="">untested, critical<br><span class="small">0 calls</span></td><td class="unexpected" title="GET /x: unexpected">unexpected<br><span class="small">1 call, 0/1 interfaces tested</span></td><td class="stubbed" title="POST /charge: stubbed">stubbed<br><span class="small">0 calls, 0/1 interfaces tested</span></td><td class="stubbed" title="POST /charge: stubbed">stubbed<br><span class="small">1 call, 0/1 interfaces tested</span></td><td class="failing" title="GET /users/{id}: failing">failing<br><span class="small">1 call, 1/1 interfaces tested</span></td></tr>
        <tr><th class="row">driver</th><td class="unexpected" title="GET: unexpected
        POST: unexpected">unexpected<br><span class="small">2 calls, 0/2 interfaces tested</span></td><td class="none">–</td><td class="none">–</td><td class="none">–</td><td class="none">–</td><td class="none">–</td></tr>
        </table>
        <h2>Failures (1)</h2>
        <table>
        <tr><th>test</th><th>class</th><th>hop</th><th>blamed</th><th>summary</th><th>evidence</th><th>trace</th></tr>
        <tr><td>&lt;img src=x onerror=alert(1)&gt; **bold** [x](javascript:alert(1)) | &quot;] --&gt; evil[&quot; `#lt;` red </td><td>callee_error</td><td>checkout → users<br>GET /users/{id}</td><td>users</td><td>users answered GET /users/{id} from checkout with HTTP 500 (`&lt;img src=x onerror=alert(1)&gt; **bold** [x](javascript:alert(1)) | &quot;] --&gt; evil[&quot; &#39;#lt;&#39; red `); 1 test failed here</td><td>HTTP 500<br>&lt;img src=x onerror=alert(1)&gt; **bold** [x](javascript:alert(1)) | &quot;] --&gt; evil[&quot; `#lt;` red </td><td><a href="http://127.0.0.1:4320/traces/72320000000000000000000000000000?span=7500000000000000">trace</a></td></tr>
        </table>
        <h2>Untested (1)</h2>
        <table>
        <tr><th>caller</th><th>callee</th><th>operation</th><th>critical</th><th>example</th></tr>
        <tr><td>checkout</td><td>inventory</td><td>(the edge)</td><td>critical</td><td></td></tr>
        </table>
        <h2>Graph</h2>
        <svg xmlns="http://www.w3.org/2000/svg" width="700" height="290" viewBox="0 0 700 290" role="img" aria-label="call graph of the run">
        <defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="#586069"/></marker></defs>
        <line x1="440" y1="35" x2="500" y2="35" stroke="#e36209" stroke-width="2" stroke-dasharray="6 4" marker-end="url(#arrow)"><title>checkout → inventory: untested, critical</title></line>
        <line x1="440" y1="35" x2="500" y2="85" stroke="#6f42c1" stroke-width="1.5" marker-end="url(#arrow)"><title>checkout → odd&lt;b&gt;|&quot;]--&gt;z[svc: unexpected</title></line>
        <line x1="440" y1="35" x2="500" y2="135" stroke="#6a737d" stroke-width="1.5" stroke-dasharray="2 3" marker-end="url(#arrow)"><title>checkout → payments: stubbed</title></line>
        <line x1="440" y1="35" x2="500" y2="185" stroke="#6a737d" stroke-width="1.5" stroke-dasharray="2 3" marker-end="url(#arrow)"><title>checkout → payments-mock: stubbed</title></line>
        <line x1="440" y1="35" x2="500" y2="235" stroke="#cb2431" stroke-width="3" marker-end="url(#arrow)"><title>checkout → users: failing</title></line>
        <line x1="200" y1="35" x2="260" y2="35" stroke="#6f42c1" stroke-width="1.5" marker-end="url(#arrow)"><title>driver → checkout: unexpected</title></line>
        <g><title>checkout</title><rect x="260" y="20" width="180" height="30" rx="4" fill="#f6f8fa" stroke="#444d56"/><text x="350" y="39" text-anchor="middle">checkout</text></g>
        <g><title>driver</title><rect x="20" y="20" width="180" height="30" rx="4" fill="#f6f8fa" stroke="#444d56"/><text x="110" y="39" text-anchor="middle">driver</text></g>
        <g><title>inventory</title><rect x="500" y="20" width="180" height="30" rx="4" fill="#f6f8fa" stroke="#444d56"/><text x="590" y="39" text-anchor="middle">inventory</text></g>
        <g><title>odd&lt;b&gt;|&quot;]--&gt;z[svc</title><rect x="500" y="70" width="180" height="30" rx="4" fill="#f6f8fa" stroke="#444d56"/><text x="590" y="89" text-anchor="middle">odd&lt;b&gt;|&quot;]--&gt;z[svc</text></g>
        <g><title>payments</title><rect x="500" y="120" width="180" height="30" rx="4" fill="#f6f8fa" stroke="#444d56"/><text x="590" y="139" text-anchor="middle">payments</text></g>
        <g><title>payments-mock</title><rect x="500" y="170" width="180" height="30" rx="4" fill="#f6f8fa" stroke="#444d56"/><text x="590" y="189" text-anchor="middle">payments-mock</text></g>
        <g><title>users</title><rect x="500" y="220" width="180" height="30" rx="4" fill="#f6f8fa" stroke="#444d56"/><text x="590" y="239" text-anchor="middle">users</text></g>
        </svg>
        <p class="small">Edges: green = covered, thick red = failing, dashed orange = untested, dotted grey = stubbed (only a mock answered), purple = unexpected. Hover an edge or node for its name and status.</p>
        </body>
        </html>
    "##]].assert_eq(&super::html(&report()));
}

#[test]
fn coloured_text_report() {
    let colour = super::text_styled(&report(), true);
    let start = colour.find("failures").unwrap() - 8;
    let end = colour.find("\nedges").unwrap();
    expect![[r#"

        <ESC>[1;31mfailures (1):<ESC>[0m
          <img src=x onerror=alert(1)> **bold** [x](javascript:alert(1)) | "] --> evil[" `#lt;` red : <ESC>[31mcallee_error<ESC>[0m at checkout -> users GET /users/{id}
            users answered GET /users/{id} from checkout with HTTP 500 (`<img src=x onerror=alert(1)> **bold** [x](javascript:alert(1)) | "] --> evil[" '#lt;' red `); 1 test failed here
            http://127.0.0.1:4320/traces/72320000000000000000000000000000?span=7500000000000000
    "#]].assert_eq(&colour[start..end].replace('\u{1b}', "<ESC>"));
    // Without colour, no escape sequence at all: the hostile ones were stripped.
    assert!(!super::text(&report()).contains('\u{1b}'));
}

/// What an attacker controls comes out inert in every format: no ANSI escape, no raw tag, no
/// unescaped Markdown link, no way out of a Mermaid label.
#[test]
fn span_content_is_inert_in_every_format() {
    let report = report();
    let formats = [
        ("text", super::text(&report)),
        ("markdown", super::markdown(&report)),
        ("junit", super::junit(&report)),
        ("html", super::html(&report)),
        ("json", super::to_json(&report)),
    ];
    for (name, out) in &formats {
        assert!(
            !out.contains('\u{1b}'),
            "{name}: an escape sequence came out"
        );
        assert!(!out.contains('\u{7}'), "{name}: a BEL came out");
        if *name == "json" {
            // JSON escapes control characters (\u001b) and keeps the text for machines.
            continue;
        }
        assert!(!out.contains("pwned"), "{name}: an OSC payload came out");
        // The hostile text is there, in some form: inert, not dropped.
        assert!(out.contains("onerror"), "{name}: the test name was dropped");
    }
    let markup = |out: &str| out.contains("<img") || out.contains("<b>");
    // In Markdown a backslash-escaped `<` is text.
    assert!(
        !markup(&formats[1].1.replace("\\<", "")),
        "markdown: raw HTML"
    );
    assert!(!markup(&formats[2].1), "junit: raw markup");
    assert!(!markup(&formats[3].1), "html: raw markup");
    assert!(
        !formats[1].1.contains("](javascript"),
        "markdown: a live link"
    );
    // Each Mermaid line is one statement: a node with one quoted label, or one link.
    let md = &formats[1].1;
    let diagram = &md[md.find("```mermaid").unwrap()..];
    let diagram = &diagram[..diagram[3..].find("```").unwrap()];
    for line in diagram.lines().skip(2) {
        let line = line.trim();
        assert_eq!(
            line.matches('"').count() % 2,
            0,
            "unbalanced quotes: {line}"
        );
        assert!(!line.contains("-->z"), "injected edge: {line}");
    }
}

/// A report against a baseline lists the slower interfaces with their blamed node in text,
/// Markdown and HTML, span text inert; one with none says so; JUnit makes no test case of them.
#[test]
fn regressions_are_listed_in_every_format_for_people() {
    let mut report = report();
    let plain_junit = super::junit(&report);
    report.regressions = Some(vec![super::Regression {
        caller: "checkout".to_owned(),
        callee: format!("users{HOSTILE}"),
        operation: "GET /users/{id}".to_owned(),
        base_p95_ms: 2.5,
        run_p95_ms: 82.75,
        ratio: 33.1,
        base_calls: 25,
        calls: 30,
        blamed: Some(format!("users{HOSTILE}")),
    }]);
    let text = super::text(&report);
    assert!(text.contains("slower than the baseline (1):"), "{text}");
    assert!(
        text.contains(
            "GET /users/{id}: p95 2.50 -> 82.8 ms (x33.1, 25 -> 30 calls); blamed: users"
        ),
        "{text}"
    );
    let md = super::markdown(&report);
    assert!(md.contains("### Slower than the baseline (1)"), "{md}");
    assert!(
        md.contains("| 2.5 ms | 82.75 ms | ×33.1 | 25 → 30 |"),
        "{md}"
    );
    let html = super::html(&report);
    assert!(
        html.contains("<h2>Slower than the baseline (1)</h2>"),
        "{html}"
    );
    for (name, out) in [("text", &text), ("markdown", &md), ("html", &html)] {
        assert!(!out.contains('\u{1b}') && !out.contains("pwned"), "{name}");
    }
    assert!(!html.contains("<img"), "html: raw markup");
    assert!(
        !md.replace("\\<", "").contains("<img"),
        "markdown: raw HTML"
    );
    assert_eq!(super::junit(&report), plain_junit);

    report.regressions = Some(Vec::new());
    assert!(super::text(&report).contains("no interface is slower than the baseline"));
    assert!(super::html(&report).contains("No interface got slower."));
}

/// A failure on a flaky hop says so in every format for people; one that is not, nowhere.
#[test]
fn flaky_failures_are_marked_in_every_format_for_people() {
    let mut report = report();
    assert!(!report.failures.is_empty(), "the fixture has a failure");
    let plain = (
        super::text(&report),
        super::markdown(&report),
        super::html(&report),
    );
    assert!(!plain.0.contains("flaky") && !plain.1.contains("flaky"));
    assert!(!plain.2.contains("class=\"flaky\""));
    report.failures[0].flaky = true;
    let text = super::text(&report);
    assert!(
        text.contains(" (flaky: it also passed in recent runs)"),
        "{text}"
    );
    let md = super::markdown(&report);
    assert!(md.contains(" (flaky) |"), "{md}");
    let html = super::html(&report);
    assert!(
        html.contains("<span class=\"flaky\" title=\"flaky: "),
        "{html}"
    );
    let json = super::to_json(&report);
    assert!(json.contains("\"flaky\": true"), "{json}");
}

/// Above `MAX_GRAPH_NODES` only the failing and untested edges and their neighbours are drawn.
#[test]
fn large_graphs_keep_only_the_failing_and_untested_part() {
    let mut report = report();
    let template = report.edges[0].clone();
    for i in 0..70 {
        let mut e = template.clone();
        e.caller = format!("filler-{i:02}");
        e.callee = format!("filler-{:02}", i + 1);
        e.status = Some("covered".to_owned());
        report.edges.push(e);
    }
    let graph = super::view::graph(&report);
    assert!(graph.pruned_from.is_some_and(|n| n > 70));
    assert!(!graph.nodes.iter().any(|n| n.starts_with("filler")));
    assert!(graph.nodes.contains(&"users") && graph.nodes.contains(&"inventory"));
    // checkout's covered neighbours stay: they are context for the failing hop.
    assert!(graph.nodes.contains(&"payments-mock"));
    assert!(super::markdown(&report).contains("Only the failing and untested edges"));

    // Nothing failing or untested in a large graph: nothing drawn, and the report says why.
    for e in &mut report.edges {
        e.status = Some("covered".to_owned());
    }
    let graph = super::view::graph(&report);
    assert!(graph.nodes.is_empty());
    assert!(super::markdown(&report).contains("Not drawn: 78 nodes"));
}
