//! Coverage in the reports: each edge's and interface's `status`, `expected` and `critical`,
//! the expected edges and interfaces no span showed (with no calls; operations expected from any
//! caller under an edge whose caller is `*`), the `coverage` object of the JSON report, and the
//! coverage section of the text report.
//!
//! Owns `build_with` and the `coverage` object's structs. It only copies what `coverage`
//! decided; nothing is judged here.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::coverage::{self, Coverage};
use crate::graph::RunGraph;

use super::RunInfo;
use super::json::{Edge, Interface, LatencyMs, Percentiles, Report, build};

/// The JSON report's `coverage` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoverageSummary {
    pub edges: CoverageCounts,
    pub interfaces: CoverageCounts,
    /// Critical edges and interfaces together.
    pub critical: CoverageCounts,
    pub untested: Vec<CoverageItem>,
    pub unexpected: Vec<CoverageItem>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CoverageCounts {
    pub expected: u64,
    /// Covered or failing.
    pub covered: u64,
    /// One decimal; `null` when nothing is expected.
    pub percent: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoverageItem {
    pub caller: String,
    pub callee: String,
    /// `null` for an edge.
    pub operation: Option<String>,
    pub critical: bool,
    /// For an untested item, a recent trace outside the run that crossed it (another run or
    /// background traffic): a real request to copy into the missing test. `null` when the store
    /// holds none.
    #[serde(default)]
    pub example: Option<CoverageExample>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoverageExample {
    pub trace_id: String,
    /// The test whose request it was; `null` for background traffic.
    pub test: Option<String>,
    pub link: String,
}

/// The report of one run with its coverage; `None` is `build`.
pub fn build_with_coverage(run: &RunInfo, graph: &RunGraph, coverage: Option<&Coverage>) -> Report {
    let mut report = build(run, graph);
    if let Some(c) = coverage {
        apply_coverage(&mut report, c);
    }
    report
}

/// Adds coverage to a report built from the same graph: statuses on edges and interfaces, the
/// `*`-caller edges of operations nobody called, and the `coverage` object.
pub fn apply_coverage(report: &mut Report, c: &Coverage) {
    let rows: BTreeMap<(&str, &str), &coverage::EdgeCoverage> = c
        .edges
        .iter()
        .map(|e| ((e.caller.as_str(), e.callee.as_str()), e))
        .collect();
    for edge in &mut report.edges {
        let Some(row) = rows.get(&(edge.caller.as_str(), edge.callee.as_str())) else {
            continue;
        };
        edge.status = Some(row.status.as_str().to_owned());
        edge.expected = Some(row.expected);
        edge.critical = Some(row.critical);
        for iface in &mut edge.interfaces {
            if let Some(i) = row
                .interfaces
                .iter()
                .find(|i| i.operation == iface.operation)
            {
                iface.status = Some(i.status.as_str().to_owned());
                iface.expected = Some(i.expected);
                iface.critical = Some(i.critical);
            }
        }
        let unseen = row.interfaces.iter().filter(|i| !i.observed).map(interface);
        edge.interfaces.extend(unseen);
        edge.interfaces
            .sort_by(|a, b| a.operation.cmp(&b.operation));
    }
    for row in c.edges.iter().filter(|e| !e.observed) {
        report.edges.push(Edge {
            caller: row.caller.clone(),
            callee: row.callee.clone(),
            calls: 0,
            errors: 0,
            error_classes: BTreeMap::new(),
            tests: Vec::new(),
            status: Some(row.status.as_str().to_owned()),
            expected: Some(row.expected),
            critical: Some(row.critical),
            latency_ms: LatencyMs {
                client: NO_SAMPLES,
                server: NO_SAMPLES,
            },
            interfaces: row.interfaces.iter().map(interface).collect(),
        });
    }
    report
        .edges
        .sort_by(|a, b| (&a.caller, &a.callee).cmp(&(&b.caller, &b.callee)));
    let counts = |n: coverage::Counts| CoverageCounts {
        expected: n.expected,
        covered: n.covered,
        percent: n.percent(),
    };
    let items = |list: &[coverage::Item]| {
        list.iter()
            .map(|i| CoverageItem {
                caller: i.caller.clone(),
                callee: i.callee.clone(),
                operation: i.operation.clone(),
                critical: i.critical,
                example: None,
            })
            .collect()
    };
    report.coverage = Some(CoverageSummary {
        edges: counts(c.summary.edges),
        interfaces: counts(c.summary.interfaces),
        critical: counts(c.summary.critical),
        untested: items(&c.untested),
        unexpected: items(&c.unexpected),
    });
}

const NO_SAMPLES: Percentiles = Percentiles {
    p50: None,
    p95: None,
    p99: None,
};

/// An expected interface no span showed: no calls.
fn interface(i: &coverage::InterfaceCoverage) -> Interface {
    Interface {
        operation: i.operation.clone(),
        calls: 0,
        errors: 0,
        error_classes: BTreeMap::new(),
        tests: Vec::new(),
        status: Some(i.status.as_str().to_owned()),
        expected: Some(i.expected),
        critical: Some(i.critical),
    }
}

/// The text report's coverage section: the numbers, then what is untested, stubbed, failing
/// and unexpected. Empty when the report has no coverage.
pub(super) fn text(report: &Report, paint: super::text::Paint) -> String {
    let mut out = String::new();
    let Some(c) = &report.coverage else {
        return out;
    };
    let pct = |n: &CoverageCounts| match n.percent {
        Some(p) => format!("{} of {} covered ({p:.1}%)", n.covered, n.expected),
        None => "nothing expected".to_owned(),
    };
    let _ = writeln!(out, "\ncoverage:");
    let _ = writeln!(out, "  edges: {}", pct(&c.edges));
    let _ = writeln!(out, "  interfaces: {}", pct(&c.interfaces));
    let _ = writeln!(out, "  critical: {}", pct(&c.critical));
    let line = |caller: &str, callee: &str, op: Option<&str>, critical: bool| {
        format!(
            "    {caller} -> {callee}{}{}\n",
            op.map(|o| format!(" {o}")).unwrap_or_default(),
            if critical { " (critical)" } else { "" }
        )
    };
    let with_example = |i: &CoverageItem| {
        let mut l = line(&i.caller, &i.callee, i.operation.as_deref(), i.critical);
        if let Some(e) = &i.example {
            l.pop();
            let _ = writeln!(
                l,
                "  e.g. {}{}",
                e.link,
                e.test
                    .as_deref()
                    .map(|t| format!(" (from {t})"))
                    .unwrap_or_default()
            );
        }
        l
    };
    let mut section = |title: &str, lines: Vec<String>| {
        if !lines.is_empty() {
            let _ = writeln!(out, "  {} ({}):", paint.status(title), lines.len());
            lines.iter().for_each(|l| out.push_str(l));
        }
    };
    section("untested", c.untested.iter().map(with_example).collect());
    for status in ["stubbed", "failing"] {
        let mut lines = Vec::new();
        for e in report.edges.iter().filter(|e| e.expected == Some(true)) {
            if e.status.as_deref() == Some(status) {
                lines.push(line(&e.caller, &e.callee, None, e.critical == Some(true)));
            }
            for i in &e.interfaces {
                if i.status.as_deref() == Some(status) {
                    lines.push(line(
                        &e.caller,
                        &e.callee,
                        Some(&i.operation),
                        i.critical == Some(true),
                    ));
                }
            }
        }
        section(status, lines);
    }
    section(
        "unexpected",
        c.unexpected
            .iter()
            .map(|i| line(&i.caller, &i.callee, i.operation.as_deref(), false))
            .collect(),
    );
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use expect_test::expect;

    use super::*;
    use crate::coverage::{Sources, coverage, expected, failing_hops, parse_manifest};
    use crate::graph::{analyze, fixture};
    use crate::report::{text, to_json};

    /// checkout's test reaches a mock of payments; a failed test fails at users; inventory
    /// (critical) and a refund expected of payments from any caller are never called.
    fn report() -> Report {
        let (spans, opts) = fixture::parse(
            r#"
            r1:t - driver internal pay 0..100 test.case.name=pay
            r1:c t checkout client POST 1..50 http.request.method=POST
            r1:m c payments-mock server "POST /charge" 2..49 http.request.method=POST http.route=/charge
            r2:t - driver internal login 0..100 test.case.name=login test.case.result.status=fail
            r2:c t checkout client GET 1..50 http.request.method=GET http.response.status_code=500
            r2:u c users server "GET /users/{id}" 2..49 http.request.method=GET http.route=/users/{id} http.response.status_code=500
            "#,
        );
        let graph = analyze(&spans, &opts);
        let m = parse_manifest(
            r#"
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
  - caller: "*"
    callee: payments
    interfaces: [POST /refunds]
"#,
            Path::new("tracecov.yaml"),
        )
        .unwrap();
        let exp = expected(&Sources {
            manifest: Some(&m),
            ..Sources::default()
        });
        let c = coverage(&graph, &exp, &failing_hops(&graph));
        let run = RunInfo {
            id: "r-2".to_owned(),
            name: "ci".to_owned(),
        };
        build_with_coverage(&run, &graph, Some(&c))
    }

    #[test]
    fn json_report_with_coverage() {
        let json: serde_json::Value = serde_json::from_str(&to_json(&report())).unwrap();
        let edges: Vec<String> = json["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let ifaces: Vec<String> = e["interfaces"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| {
                        format!(
                            "{} {} expected={} critical={} calls={}",
                            i["operation"], i["status"], i["expected"], i["critical"], i["calls"]
                        )
                    })
                    .collect();
                format!(
                    "{} -> {} {} expected={} critical={} calls={} [{}]",
                    e["caller"],
                    e["callee"],
                    e["status"],
                    e["expected"],
                    e["critical"],
                    e["calls"],
                    ifaces.join("; ")
                )
            })
            .collect();
        expect![[r#"
            "*" -> "payments" "untested" expected=true critical=false calls=0 ["POST /refunds" "untested" expected=true critical=false calls=0]
            "checkout" -> "inventory" "untested" expected=true critical=true calls=0 []
            "checkout" -> "payments" "stubbed" expected=true critical=false calls=0 ["POST /charge" "stubbed" expected=true critical=false calls=0]
            "checkout" -> "payments-mock" "stubbed" expected=true critical=false calls=1 ["POST /charge" "stubbed" expected=true critical=false calls=1]
            "checkout" -> "users" "failing" expected=true critical=false calls=1 ["GET /users/{id}" "failing" expected=true critical=false calls=1]
            "driver" -> "checkout" "unexpected" expected=false critical=false calls=2 ["GET" "unexpected" expected=false critical=false calls=1; "POST" "unexpected" expected=false critical=false calls=1]
        "#]]
        .assert_eq(&(edges.join("\n") + "\n"));
        expect![[r#"
            {
              "critical": {
                "covered": 0,
                "expected": 1,
                "percent": 0.0
              },
              "edges": {
                "covered": 1,
                "expected": 3,
                "percent": 33.3
              },
              "interfaces": {
                "covered": 1,
                "expected": 3,
                "percent": 33.3
              },
              "unexpected": [
                {
                  "callee": "checkout",
                  "caller": "driver",
                  "critical": false,
                  "example": null,
                  "operation": null
                },
                {
                  "callee": "checkout",
                  "caller": "driver",
                  "critical": false,
                  "example": null,
                  "operation": "GET"
                },
                {
                  "callee": "checkout",
                  "caller": "driver",
                  "critical": false,
                  "example": null,
                  "operation": "POST"
                }
              ],
              "untested": [
                {
                  "callee": "payments",
                  "caller": "*",
                  "critical": false,
                  "example": null,
                  "operation": "POST /refunds"
                },
                {
                  "callee": "inventory",
                  "caller": "checkout",
                  "critical": true,
                  "example": null,
                  "operation": null
                }
              ]
            }"#]]
        .assert_eq(&serde_json::to_string_pretty(&json["coverage"]).unwrap());
        // The report reads back, coverage and all.
        let back: Report = serde_json::from_str(&to_json(&report())).unwrap();
        assert_eq!(back, report());
    }

    #[test]
    fn text_report_with_coverage() {
        let t = text(&report());
        let section = &t[t.find("\ncoverage:").unwrap()..t.find("\ndiagnostics").unwrap()];
        expect![[r#"

            coverage:
              edges: 1 of 3 covered (33.3%)
              interfaces: 1 of 3 covered (33.3%)
              critical: 0 of 1 covered (0.0%)
              untested (2):
                * -> payments POST /refunds
                checkout -> inventory (critical)
              stubbed (4):
                checkout -> payments
                checkout -> payments POST /charge
                checkout -> payments-mock
                checkout -> payments-mock POST /charge
              failing (2):
                checkout -> users
                checkout -> users GET /users/{id}
              unexpected (3):
                driver -> checkout
                driver -> checkout GET
                driver -> checkout POST
        "#]]
        .assert_eq(section);
        assert!(
            t.contains("  checkout -> inventory [untested, critical]: 0 calls"),
            "{t}"
        );
        assert!(
            t.contains("      GET /users/{id} [failing]: 1 call, 1 error"),
            "{t}"
        );
    }
}
