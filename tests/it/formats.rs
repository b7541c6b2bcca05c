//! The report formats read by the real consumers: JUnit XML by `junitparser` (PyPI), the JSON
//! report by `jsonschema` (PyPI) against the committed docs/report.schema.json, and the Markdown
//! report's Mermaid graph by the real Mermaid library (npm) in headless Chromium. The run is the
//! demo shop with a fault (a failure, an untested critical edge, a stubbed edge), plus an
//! imported trace whose test, service and route names are hostile.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::common::{HEADLESS_CHROMIUM, chromium, repo_root};
use crate::python_sdk::python;

/// Mermaid from npm, pinned (scripts/setup-js installs this version): the version the diagrams
/// are held to.
const MERMAID_VERSION: &str = "12.3.0";

const HOSTILE: &str = "<img src=x onerror=alert(1)> **b** [x](javascript:alert(1)) | \"] --> evil[\" \
                       `#lt;` ; end \u{1b}[31mred\u{1b}[0m \u{1b}]0;pwned\u{7}";

pub(crate) fn tracecov(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_tracecov"))
        .args(args)
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("GITHUB_RUN_ID")
        .env_remove("CI_PIPELINE_ID")
        .env_remove("BUILD_NUMBER")
        .env_remove("GITHUB_STEP_SUMMARY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tracecov {args:?}: {}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A store holding the demo shop's run with `payments:500`: failing tests, the critical
/// gateway -> payments edge untested, notifications -> ext:sendgrid stubbed by a fake.
fn demo_store(dir: &Path) -> String {
    let data = dir.join("data");
    let data = data.to_str().unwrap().to_owned();
    tracecov(&["demo", "--exit", "--fault", "payments:500", "--data", &data]);
    data
}

/// The demo run's report in a format, with the demo's manifest.
pub(crate) fn demo_report(data: &str, format: &str) -> String {
    let manifest = repo_root().join("src/demo/tracecov.yaml");
    let out = tracecov(&[
        "report",
        "--data",
        data,
        "--manifest",
        manifest.to_str().unwrap(),
        "--format",
        format,
    ]);
    String::from_utf8(out.stdout).unwrap()
}

/// A store holding one imported trace with hostile names: a failing test whose name, whose
/// callee's service name and whose route are Markdown, HTML, Mermaid and ANSI escapes.
fn hostile_store(dir: &Path) -> String {
    let attr = |k: &str, v: Value| match v {
        Value::Number(n) => json!({"key": k, "value": {"intValue": n.to_string()}}),
        v => json!({"key": k, "value": {"stringValue": v}}),
    };
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let t0: u64 = 1_700_000_000_000_000_000;
    let span = |id: &str, parent: Option<&str>, name: &str, kind: u8, attrs: Vec<Value>| {
        let mut s = json!({
            "traceId": trace, "spanId": id, "name": name, "kind": kind,
            "startTimeUnixNano": (t0 + 1_000_000).to_string(),
            "endTimeUnixNano": (t0 + 90_000_000).to_string(),
            "attributes": attrs,
            "status": {"code": 2, "message": HOSTILE},
        });
        if let Some(p) = parent {
            s["parentSpanId"] = json!(p);
        }
        s
    };
    let resource = |service: &str, spans: Vec<Value>| {
        json!({
            "resource": {"attributes": [attr("service.name", json!(service))]},
            "scopeSpans": [{"scope": {"name": "it"}, "spans": spans}],
        })
    };
    let doc = json!({"resourceSpans": [
        resource("suite", vec![
            span("1000000000000001", None, HOSTILE, 1, vec![
                attr("test.case.name", json!(HOSTILE)),
                attr("test.case.result.status", json!("fail")),
            ]),
            span("1000000000000002", Some("1000000000000001"), "GET", 3, vec![
                attr("http.request.method", json!("GET")),
                attr("http.response.status_code", json!(500)),
            ]),
        ]),
        resource(&format!("svc {HOSTILE}"), vec![
            span("1000000000000003", Some("1000000000000002"), "GET /x", 2, vec![
                attr("http.request.method", json!("GET")),
                attr("http.route", json!(format!("/x/{HOSTILE}"))),
                attr("http.response.status_code", json!(500)),
            ]),
        ]),
    ]});
    let file = dir.join("hostile.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let data = dir.join("hostile-data");
    let data = data.to_str().unwrap().to_owned();
    tracecov(&[
        "import",
        file.to_str().unwrap(),
        "--run",
        "hostile",
        "--data",
        &data,
    ]);
    data
}

fn hostile_report(data: &str, format: &str) -> String {
    let out = tracecov(&[
        "report", "--data", data, "--run", "hostile", "--format", format,
    ]);
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) fn run_python(code: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// junitparser reads the demo's JUnit report with one case per expected edge and interface,
/// a failure per failing one and a skip per untested or stubbed one.
#[test]
fn junit_report_is_read_by_junitparser_with_the_expected_counts() {
    let dir = tempfile::tempdir().unwrap();
    let data = demo_store(dir.path());
    let report: Value = serde_json::from_str(&demo_report(&data, "json")).unwrap();
    let (mut cases, mut failures, mut skipped) = (0, 0, 0);
    for e in report["edges"].as_array().unwrap() {
        for item in std::iter::once(e).chain(e["interfaces"].as_array().unwrap()) {
            if item["expected"] != true {
                continue;
            }
            cases += 1;
            match item["status"].as_str().unwrap() {
                "failing" => failures += 1,
                "untested" | "stubbed" => skipped += 1,
                _ => {}
            }
        }
    }
    assert!(failures >= 2 && skipped >= 4, "{report}");
    // The demo's manifest holds one expectation, a test case of its own, which holds.
    cases += 1;

    let xml = dir.path().join("junit.xml");
    let manifest = repo_root().join("src/demo/tracecov.yaml");
    tracecov(&[
        "report",
        "--data",
        &data,
        "--manifest",
        manifest.to_str().unwrap(),
        "--format",
        "junit",
        "--out",
        xml.to_str().unwrap(),
    ]);
    let counted = run_python(
        r#"
import sys
from junitparser import JUnitXml, Failure, Skipped
xml = JUnitXml.fromfile(sys.argv[1])
cases = failures = skipped = 0
names = []
for suite in xml:
    for case in suite:
        cases += 1
        kinds = [type(r) for r in case.result]
        failures += Failure in kinds
        skipped += Skipped in kinds
        outcome = "failure" if Failure in kinds else "skipped" if Skipped in kinds else "passed"
        names.append(case.classname + " :: " + case.name + " :: " + outcome)
print(cases, failures, skipped, xml.tests, xml.failures, xml.skipped)
print("\n".join(names))
"#,
        &[xml.to_str().unwrap()],
    );
    let mut lines = counted.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!("{cases} {failures} {skipped} {cases} {failures} {skipped}"),
        "{counted}"
    );
    let names: Vec<&str> = lines.collect();
    // The demo with payments:500: checkout -> payments fails; the critical gateway -> payments
    // edge is untested, and notifications -> ext:sendgrid only ever met the fake.
    for case in [
        "checkout -> payments :: POST /charge :: failure",
        "checkout -> payments :: checkout -> payments :: failure",
        "gateway -> payments :: gateway -> payments :: skipped",
        "gateway -> payments :: POST /refunds :: skipped",
        "notifications -> ext:sendgrid :: POST /v3/mail/send :: skipped",
        "users -> db:sqlite/users :: SELECT users :: passed",
        "expectations :: checkout charges once :: passed",
    ] {
        assert!(names.contains(&case), "no {case:?} in {names:#?}");
    }
}

pub(crate) const VALIDATE: &str = r#"
import json, sys
from jsonschema import Draft202012Validator
schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
bad = 0
for path in sys.argv[2:]:
    for error in validator.iter_errors(json.load(open(path))):
        bad += 1
        print(path, "/".join(map(str, error.absolute_path)), error.message)
print("errors", bad)
"#;

/// Validates JSON report files against the committed schema: the validator's output, ending
/// with `errors N`.
pub(crate) fn validate_reports(paths: &[&Path]) -> String {
    let schema = repo_root().join("docs/report.schema.json");
    let mut args = vec![schema.to_str().unwrap()];
    args.extend(paths.iter().map(|p| p.to_str().unwrap()));
    run_python(VALIDATE, &args)
}

/// The JSON reports (with coverage and failures, and of a hostile trace) validate against the
/// committed schema; a report with a renamed key does not.
#[test]
fn json_report_validates_against_the_committed_schema() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo.json");
    std::fs::write(&demo, demo_report(&demo_store(dir.path()), "json")).unwrap();
    let hostile = dir.path().join("hostile.json");
    std::fs::write(&hostile, hostile_report(&hostile_store(dir.path()), "json")).unwrap();
    let mut renamed: Value = serde_json::from_slice(&std::fs::read(&demo).unwrap()).unwrap();
    let edge = renamed["edges"][0].as_object_mut().unwrap();
    let calls = edge.remove("calls").unwrap();
    edge.insert("call_count".to_owned(), calls);
    let broken = dir.path().join("renamed.json");
    std::fs::write(&broken, renamed.to_string()).unwrap();

    let schema = repo_root().join("docs/report.schema.json");
    let paths = [&schema, &demo, &hostile];
    let args: Vec<&str> = paths.iter().map(|p| p.to_str().unwrap()).collect();
    let out = run_python(VALIDATE, &args);
    assert!(out.ends_with("errors 0\n"), "{out}");

    let out = run_python(
        VALIDATE,
        &[schema.to_str().unwrap(), broken.to_str().unwrap()],
    );
    assert!(out.contains("'calls' is a required property"), "{out}");
    assert!(out.contains("call_count"), "{out}");
}

/// The Mermaid graphs of the demo's and the hostile trace's Markdown reports parse with the
/// real Mermaid library in headless Chromium; a broken diagram is reported as an error, so the
/// harness itself is proven able to fail.
#[test]
fn mermaid_graphs_parse_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let demo = demo_report(&demo_store(dir.path()), "markdown");
    let hostile = hostile_report(&hostile_store(dir.path()), "markdown");
    assert!(!hostile.contains('\u{1b}') && !hostile.contains("pwned"));
    let diagrams = vec![
        mermaid_block(&demo),
        mermaid_block(&hostile),
        "flowchart LR\n  a[\"x\" --> \n".to_owned(),
    ];
    assert!(diagrams[1].contains("#60;img"), "{}", diagrams[1]);

    let results = parse_in_chromium(&diagrams);
    assert_eq!(results.len(), 3, "{results:?}");
    assert_eq!(results[0], "ok", "the demo's diagram:\n{}", diagrams[0]);
    assert_eq!(results[1], "ok", "the hostile diagram:\n{}", diagrams[1]);
    assert!(
        results[2].starts_with("error"),
        "a broken diagram passed: {results:?}"
    );
}

fn mermaid_block(markdown: &str) -> String {
    let start = markdown.find("```mermaid\n").expect("a mermaid block") + "```mermaid\n".len();
    let len = markdown[start..].find("```").expect("the block's end");
    markdown[start..start + len].to_owned()
}

/// Mermaid's browser bundle, as `scripts/setup-js` (run by the test command) put it beside the
/// npm packages: the tests fetch nothing themselves.
fn mermaid_js() -> PathBuf {
    let js = repo_root().join(format!(
        "integrations/node_modules/.tracecov/mermaid-{MERMAID_VERSION}.min.js"
    ));
    assert!(
        js.is_file(),
        "{} is missing: run scripts/setup-js (scripts/test does)",
        js.display()
    );
    js
}

/// Runs `mermaid.parse` on each diagram in a local page in headless Chromium; one result per
/// diagram, `ok` or `error: …`.
fn parse_in_chromium(diagrams: &[String]) -> Vec<String> {
    let browser = chromium();
    let js = mermaid_js();
    let page_dir = tempfile::tempdir().unwrap();
    // JSON in a script: `<` escaped so no text can close the script element.
    let data = serde_json::to_string(diagrams)
        .unwrap()
        .replace('<', "\\u003c");
    let page = format!(
        r#"<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>
<pre id="out">pending</pre>
<script src="file://{src}"></script>
<script>
(async () => {{
  const out = document.getElementById("out");
  const results = [];
  try {{
    mermaid.initialize({{ startOnLoad: false, securityLevel: "strict" }});
    for (const text of {data}) {{
      try {{
        await mermaid.parse(text);
        results.push("ok");
      }} catch (e) {{
        results.push("error: " + String((e && e.message) || e).split("\n")[0]);
      }}
    }}
    out.textContent = "RESULTS " + JSON.stringify(results);
  }} catch (e) {{
    out.textContent = "RESULTS " + JSON.stringify(["harness error: " + e]);
  }}
}})();
</script></body></html>"#,
        src = js.display()
    );
    let html = page_dir.path().join("check.html");
    std::fs::write(&html, page).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(&browser)
        .args(HEADLESS_CHROMIUM)
        .args([
            "--allow-file-access-from-files",
            // Lets the page's promises run before the DOM is dumped.
            "--virtual-time-budget=30000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let start = dom.find("RESULTS ").unwrap_or_else(|| {
        panic!(
            "no result from the page ({}):\n{dom}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let rest = &dom[start + "RESULTS ".len()..];
    let json = &rest[..rest.find("</pre>").unwrap()];
    // The DOM dump escapes `&`, `<` and `>` in text.
    let json = json
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

/// `tracecov run --report FORMAT=FILE` writes every format at the end of the run, and
/// `--github-summary` appends the Markdown to $GITHUB_STEP_SUMMARY.
#[test]
fn run_writes_every_report_file_and_the_github_summary() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let summary = d("summary.md");
    std::fs::write(&summary, "earlier step\n").unwrap();
    let script = repo_root().join("tests/python/suite_export.py");
    let out = Command::new(env!("CARGO_BIN_EXE_tracecov"))
        .args([
            "run",
            "--name",
            "ci",
            "--settle",
            "300ms",
            "--data",
            &d("data"),
        ])
        .args(["--format", "text", "--github-summary"])
        .args(["--report", &format!("json={}", d("r.json"))])
        .args(["--report", &format!("markdown={}", d("r.md"))])
        .args(["--report", &format!("junit={}", d("r.xml"))])
        .args(["--report", &format!("html={}", d("r.html"))])
        .args(["--report", &format!("text={}", d("r.txt"))])
        .arg("--")
        .arg(python())
        .arg(&script)
        .arg("fail")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("GITHUB_RUN_ID")
        .env_remove("CI_PIPELINE_ID")
        .env_remove("BUILD_NUMBER")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let all = format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The command's own status (3) wins: the files are written all the same.
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(!out.stdout.contains(&0x1b), "colours in a pipe: {all}");
    let read = |name: &str| std::fs::read_to_string(d(name)).unwrap();
    let json: Value = serde_json::from_str(&read("r.json")).unwrap();
    assert_eq!(json["run"]["name"], "ci");
    assert_eq!(json["run"]["tests"]["failed"], 1);
    assert!(read("r.md").starts_with("## tracecov: run ci"));
    assert!(read("r.md").contains("```mermaid\nflowchart LR\n"));
    assert!(read("r.xml").starts_with("<?xml"));
    assert!(read("r.xml").contains("<failure"), "{}", read("r.xml"));
    assert!(read("r.html").starts_with("<!DOCTYPE html>"));
    assert!(
        !read("r.html").contains("<script"),
        "the page needs no script"
    );
    assert!(read("r.txt").starts_with("run ci ("));
    let summary = read("summary.md");
    assert!(
        summary.starts_with("earlier step\n## tracecov: run ci"),
        "{summary}"
    );
    assert_eq!(summary.len(), "earlier step\n".len() + read("r.md").len());
}
