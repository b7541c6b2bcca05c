//! The report's `violations` (DESIGN, "Expectations"): every broken expectation of the run,
//! present (possibly empty) whenever the manifest has `expect:`, and its renderings' pieces.
//! A violation is not a failure: the test may have passed.

use serde::{Deserialize, Serialize};

use super::ReportOptions;
use super::json::FailureHop;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub expectation: String,
    pub test: Option<String>,
    pub trace_id: String,
    /// The offending span; for `repeated` the enclosing span; for a missing call the test's.
    pub span_id: String,
    /// Null for a missing call.
    pub hop: Option<FailureHop>,
    pub expected: String,
    pub observed: String,
    pub summary: String,
    pub link: String,
}

/// One violation as the report writes it, redacted and linked; none when its ids are not valid
/// ones (all zeros).
pub fn violation(v: &crate::expect::Violation, opts: &ReportOptions) -> Option<Violation> {
    let r = &opts.redactor;
    let trace = crate::model::TraceId::from_bytes(v.trace_id).ok()?;
    let span = crate::model::SpanId::from_bytes(v.span_id).ok()?;
    Some(Violation {
        expectation: r.text(&v.expectation),
        test: v.test.as_deref().map(|t| r.text(t)),
        trace_id: trace.to_hex(),
        span_id: span.to_hex(),
        hop: v
            .hop
            .as_ref()
            .map(|(caller, callee, operation)| FailureHop {
                caller: r.text(caller),
                callee: r.text(callee),
                operation: r.text(operation),
            }),
        expected: r.text(&v.expected),
        observed: r.text(&v.observed),
        summary: r.text(&v.summary()),
        link: opts.links.render(trace, span),
    })
}

/// The report's violations from the run's, redacted and linked, in a stable order (expectation,
/// test, trace, span).
pub fn violations(list: &[crate::expect::Violation], opts: &ReportOptions) -> Vec<Violation> {
    let mut out: Vec<Violation> = list.iter().filter_map(|v| violation(v, opts)).collect();
    out.sort_by(|a, b| {
        (&a.expectation, &a.test, &a.trace_id, &a.span_id).cmp(&(
            &b.expectation,
            &b.test,
            &b.trace_id,
            &b.span_id,
        ))
    });
    out
}

impl Violation {
    /// One line: `expectation: test at hop: expected …, observed …`.
    pub fn line(&self) -> String {
        format!(
            "{}: {} at {}: expected {}, observed {}",
            self.expectation,
            self.test.as_deref().unwrap_or("a request"),
            hop_text(self),
            self.expected,
            self.observed
        )
    }
}

/// `caller -> callee operation`, or "(missing call)".
pub fn hop_text(v: &Violation) -> String {
    match &v.hop {
        Some(h) => format!("{} -> {} {}", h.caller, h.callee, h.operation),
        None => "(missing call)".to_owned(),
    }
}
