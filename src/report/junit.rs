//! The report as JUnit XML, the format Jenkins, GitLab and GitHub test views read: one test
//! case per expected edge or interface (class name `caller -> callee`, name the operation, or
//! the edge itself), a `<failure>` with the summary and trace link for failing ones, a
//! `<skipped>` with the reason for untested and stubbed ones.
//!
//! Failures that sit on no expected edge (an undeclared dependency, or `silent`) get a test
//! case of their own in a second suite, so a CI test view never shows green while a test
//! failed. Everything is XML-escaped after control characters were stripped. No I/O.
//!
//! Latency regressions against a baseline are not test cases here: whether one fails a build is
//! for the gate's `--max-latency-regression` to decide, and a JUnit failure would decide it for
//! every CI test view that reads the file.

use std::fmt::Write;

use super::escape::{self, xml};
use super::json::{Failure, Report};
use super::view::{self, Item};

struct Case {
    classname: String,
    name: String,
    outcome: Outcome,
}

enum Outcome {
    Passed,
    Failed {
        message: String,
        kind: String,
        body: String,
    },
    Skipped(String),
}

pub fn junit(report: &Report) -> String {
    let report = &escape::sanitized(report);
    let items = view::items(report);
    let coverage: Vec<Case> = items
        .iter()
        .filter(|i| i.expected)
        .map(|i| case(report, i))
        .collect();
    let covered = |f: &Failure| {
        f.hop.as_ref().is_some_and(|h| {
            items.iter().any(|i| {
                i.expected
                    && i.caller == h.caller
                    && i.callee == h.callee
                    && i.operation.is_none_or(|op| op == h.operation)
            })
        })
    };
    let outside: Vec<Case> = report
        .failures
        .iter()
        .filter(|f| !covered(f))
        .map(|f| Case {
            classname: match &f.hop {
                Some(h) => format!("{} -> {}", h.caller, h.callee),
                None => "silent".to_owned(),
            },
            name: f.test.clone().unwrap_or_else(|| "a request".to_owned()),
            outcome: failed(std::slice::from_ref(&f)),
        })
        .collect();

    let run = &report.run;
    let expectations = expectation_cases(report);
    let suites = [
        (
            format!("tracecov coverage: run {} ({})", run.name, run.id),
            coverage,
        ),
        (
            format!(
                "tracecov failures outside the expected topology: run {}",
                run.name
            ),
            outside,
        ),
        (
            format!("tracecov expectations: run {}", run.name),
            expectations,
        ),
    ];
    let count =
        |cases: &[Case], f: fn(&Outcome) -> bool| cases.iter().filter(|c| f(&c.outcome)).count();
    let is_failure = |o: &Outcome| matches!(o, Outcome::Failed { .. });
    let is_skip = |o: &Outcome| matches!(o, Outcome::Skipped(_));
    let all: Vec<&Case> = suites.iter().flat_map(|(_, c)| c).collect();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"tracecov\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\">",
        all.len(),
        all.iter().filter(|c| is_failure(&c.outcome)).count(),
        all.iter().filter(|c| is_skip(&c.outcome)).count(),
    );
    for (name, cases) in &suites {
        if cases.is_empty() && !name.starts_with("tracecov coverage") {
            continue;
        }
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\">",
            xml(name),
            cases.len(),
            count(cases, is_failure),
            count(cases, is_skip),
        );
        for c in cases {
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\"",
                xml(&c.classname),
                xml(&c.name)
            );
            match &c.outcome {
                Outcome::Passed => out.push_str("/>\n"),
                Outcome::Failed {
                    message,
                    kind,
                    body,
                } => {
                    let _ = writeln!(
                        out,
                        ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>",
                        xml(message),
                        xml(kind),
                        xml(body)
                    );
                }
                Outcome::Skipped(reason) => {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        xml(reason)
                    );
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// One test case per expectation: passed when it held, else failed with a line per violating
/// test and its trace link.
fn expectation_cases(report: &Report) -> Vec<Case> {
    let Some(vs) = &report.violations else {
        return Vec::new();
    };
    let mut by_name: std::collections::BTreeMap<&str, Vec<&super::violations::Violation>> =
        std::collections::BTreeMap::new();
    for v in vs {
        by_name.entry(v.expectation.as_str()).or_default().push(v);
    }
    let names: Vec<&str> = match &report.expectations {
        Some(names) => names.iter().map(String::as_str).collect(),
        None => by_name.keys().copied().collect(),
    };
    names
        .into_iter()
        .map(|name| (name, by_name.remove(name).unwrap_or_default()))
        .map(|(name, vs)| {
            if vs.is_empty() {
                return Case {
                    classname: "expectations".to_owned(),
                    name: name.to_owned(),
                    outcome: Outcome::Passed,
                };
            }
            let mut body = String::new();
            for v in &vs {
                let _ = writeln!(body, "{}\n  {}", v.line(), v.link);
            }
            Case {
                classname: "expectations".to_owned(),
                name: name.to_owned(),
                outcome: Outcome::Failed {
                    message: vs[0].summary.clone(),
                    kind: "violation".to_owned(),
                    body,
                },
            }
        })
        .collect()
}

fn case(report: &Report, item: &Item<'_>) -> Case {
    let classname = format!(
        "{} -> {}",
        view::node_label(item.caller),
        view::node_label(item.callee)
    );
    let name = item
        .operation
        .map_or_else(|| classname.clone(), str::to_owned);
    let critical = if item.critical { " (critical)" } else { "" };
    let what = if item.operation.is_some() {
        "interface"
    } else {
        "edge"
    };
    let outcome = match item.status {
        "failing" => {
            let failures = view::failures_at(report, item);
            if failures.is_empty() {
                Outcome::Failed {
                    message: format!("a failing test erred at this {what}"),
                    kind: "failing".to_owned(),
                    body: format!("a failing test erred at this {what}{critical}"),
                }
            } else {
                failed(&failures)
            }
        }
        "untested" => Outcome::Skipped(format!(
            "untested{critical}: no test exercised this {what}{}",
            view::example_of(report, item.caller, item.callee, item.operation)
                .map(|e| format!("; a request that crossed it: {}", e.link))
                .unwrap_or_default()
        )),
        "stubbed" => Outcome::Skipped(format!(
            "stubbed{critical}: only a mock answered this {what}, never the real service"
        )),
        _ => Outcome::Passed,
    };
    Case {
        classname,
        name,
        outcome,
    }
}

/// A `<failure>` from the failures placed on one case: the first summary as its message, every
/// failure's test, class, summary and trace link in its body.
fn failed(failures: &[&Failure]) -> Outcome {
    let message = failures
        .first()
        .map(|f| f.summary.clone())
        .unwrap_or_default();
    let mut body = String::new();
    for f in failures {
        let _ = writeln!(
            body,
            "{} ({}): {}\ntrace: {}",
            f.test.as_deref().unwrap_or("a request"),
            f.class,
            f.summary,
            f.link
        );
    }
    let kind = failures
        .first()
        .map_or_else(|| "failing".to_owned(), |f| f.class.clone());
    Outcome::Failed {
        message,
        kind,
        body,
    }
}
