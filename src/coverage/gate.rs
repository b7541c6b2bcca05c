//! The CI gate: conditions on a run's coverage, which items break which condition, and when a
//! coverage gate must be refused because it could not fail.
//!
//! Owns `gate` and `check_gate_usable`. Both are pure: the CLI gathers the facts (the coverage,
//! whether a source was configured, how many traces the store holds outside the gated run),
//! prints `GateResult::text`, and maps the outcome to DESIGN's exit codes (0 pass, 1 a condition
//! failed, 2 refused).

use std::fmt::{self, Write};

use super::status::{Coverage, Item};

/// The gate's conditions, as `tracecov gate` and `tracecov run` take them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GateConditions {
    /// `--min-edge-coverage PCT`.
    pub min_edge_coverage: Option<f64>,
    /// `--min-interface-coverage PCT`.
    pub min_interface_coverage: Option<f64>,
    /// `--critical`: every critical item covered and not failing.
    pub critical: bool,
    /// `--no-failures`: no failed test and no failing item.
    pub no_failures: bool,
    /// `--no-new-failures`: no failure the baseline did not have (judged by `crate::history`).
    pub no_new_failures: bool,
    /// `--max-coverage-drop PCT`: edge and interface coverage fall by at most PCT points from
    /// the baseline's, both over the run's expected set (judged by `crate::history`).
    pub max_coverage_drop: Option<f64>,
    /// `--expectations`: no broken expectation (judged by the caller from the report's
    /// violations).
    pub expectations: bool,
    /// `--max-latency-regression RATIO`: no interface slower than the baseline by more than
    /// RATIO (judged by `crate::regressions::violation`).
    pub max_latency_regression: Option<f64>,
}

impl GateConditions {
    /// A condition that compares the run with a baseline run.
    pub fn has_history_condition(&self) -> bool {
        self.no_new_failures || self.max_coverage_drop.is_some()
    }

    /// A condition that judges coverage (everything but `no_failures`).
    pub fn has_coverage_condition(&self) -> bool {
        self.min_edge_coverage.is_some() || self.min_interface_coverage.is_some() || self.critical
    }
}

/// One gate condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Condition {
    MinEdgeCoverage,
    MinInterfaceCoverage,
    Critical,
    NoFailures,
    NoNewFailures,
    MaxCoverageDrop,
    Expectations,
    MaxLatencyRegression,
}

impl Condition {
    /// The flag that sets it.
    pub fn flag(self) -> &'static str {
        match self {
            Condition::MinEdgeCoverage => "--min-edge-coverage",
            Condition::MinInterfaceCoverage => "--min-interface-coverage",
            Condition::Critical => "--critical",
            Condition::NoFailures => "--no-failures",
            Condition::NoNewFailures => "--no-new-failures",
            Condition::MaxCoverageDrop => "--max-coverage-drop",
            Condition::Expectations => "--expectations",
            Condition::MaxLatencyRegression => "--max-latency-regression",
        }
    }
}

/// A condition that does not hold, and exactly what breaks it.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub condition: Condition,
    /// One sentence: what was required and what was found.
    pub message: String,
    /// The edges and interfaces that break it.
    pub items: Vec<Item>,
    /// For `no_failures`: the failed tests.
    pub tests: Vec<String>,
    /// Anything else that breaks it, a line each (a new failure, a coverage figure, an
    /// interface slower than the baseline).
    pub details: Vec<String>,
}

/// The gate's verdict.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GateResult {
    pub violations: Vec<Violation>,
}

impl GateResult {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// DESIGN's exit status for a gate that ran: 0 passed, 1 a condition failed.
    pub fn exit_code(&self) -> i32 {
        if self.passed() { 0 } else { 1 }
    }

    /// For a terminal or a CI log: one paragraph per failed condition, each item on a line.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if self.passed() {
            out.push_str("gate passed\n");
            return out;
        }
        let _ = writeln!(
            out,
            "gate failed: {} of its conditions did not hold",
            self.violations.len()
        );
        for v in &self.violations {
            let _ = writeln!(out, "{}: {}", v.condition.flag(), v.message);
            for item in &v.items {
                let _ = writeln!(out, "  {} {item}", item.status);
            }
            for test in &v.tests {
                let _ = writeln!(out, "  failed test {test}");
            }
            for detail in &v.details {
                let _ = writeln!(out, "  {detail}");
            }
        }
        out
    }
}

/// Judges `coverage` against `conditions`. Percentages compare as reported (one decimal), so a
/// gate at 66.7 passes the 66.7% the report shows for 2 of 3.
pub fn gate(coverage: &Coverage, conditions: &GateConditions) -> GateResult {
    let mut violations = Vec::new();
    let not_covered = |edges: bool| -> Vec<Item> {
        coverage
            .untested
            .iter()
            .chain(&coverage.stubbed)
            .filter(|i| i.operation.is_none() == edges)
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let s = &coverage.summary;
    for (condition, min, counts, what) in [
        (
            Condition::MinEdgeCoverage,
            conditions.min_edge_coverage,
            s.edges,
            "edge",
        ),
        (
            Condition::MinInterfaceCoverage,
            conditions.min_interface_coverage,
            s.interfaces,
            "interface",
        ),
    ] {
        let Some(min) = min else { continue };
        let message = match counts.percent() {
            None => {
                format!("no {what}s are expected, so {what} coverage is undefined (need {min}%)")
            }
            Some(p) if p < min => format!(
                "{what} coverage is {p}% ({} of {} covered), below the required {min}%",
                counts.covered, counts.expected
            ),
            Some(_) => continue,
        };
        violations.push(Violation {
            condition,
            message,
            items: not_covered(condition == Condition::MinEdgeCoverage),
            tests: Vec::new(),
            details: Vec::new(),
        });
    }
    if conditions.critical {
        let mut items: Vec<Item> = coverage
            .untested
            .iter()
            .chain(&coverage.stubbed)
            .chain(&coverage.failing)
            .filter(|i| i.critical)
            .cloned()
            .collect();
        items.sort();
        if !items.is_empty() {
            violations.push(Violation {
                condition: Condition::Critical,
                message: format!(
                    "{} of {} critical items are not covered or are failing",
                    items.len(),
                    s.critical.expected
                ),
                items,
                tests: Vec::new(),
                details: Vec::new(),
            });
        }
    }
    if conditions.no_failures && (!coverage.failed_tests.is_empty() || !coverage.failing.is_empty())
    {
        violations.push(Violation {
            condition: Condition::NoFailures,
            message: format!(
                "{} tests failed, {} expected edges and interfaces are failing",
                coverage.failed_tests.len(),
                coverage.failing.len()
            ),
            items: coverage.failing.clone(),
            tests: coverage.failed_tests.clone(),
            details: Vec::new(),
        });
    }
    GateResult { violations }
}

/// A coverage gate that could not fail, refused (exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct GateRefused {
    pub run: String,
}

impl fmt::Display for GateRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refusing to gate the coverage of run {}: no expected topology is configured and the \
             store holds no trace outside this run, so the expected set would be the run itself \
             and the gate could not fail; give a manifest (tracecov.yaml in the working \
             directory, or --manifest FILE) declaring edges, interfaces, Pact files or OpenAPI \
             documents, or a baseline run (--baseline RUN), or record traffic outside the run",
            self.run
        )
    }
}

/// DESIGN's refusal rule: a coverage condition, with no source configured (see
/// `Sources::configured`) and no trace in the store outside the gated run, is a usage error.
pub fn check_gate_usable(
    conditions: &GateConditions,
    sources_configured: bool,
    traces_outside_run: u64,
    run: &str,
) -> Result<(), GateRefused> {
    if conditions.has_coverage_condition() && !sources_configured && traces_outside_run == 0 {
        return Err(GateRefused {
            run: run.to_owned(),
        });
    }
    Ok(())
}
