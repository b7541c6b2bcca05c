//! History across runs (DESIGN, "History across runs"): what changed from one run to another
//! (`diff`), and the gate conditions that judge a run against its baseline.
//!
//! Everything here is pure: it compares reports and graphs that `crate::query` built from the
//! runs' stored rollups, so its cost follows edges, interfaces and failures, never spans.
//! Rendering for people (text, Markdown) lives beside the data in `diff`.

pub mod diff;

pub use diff::{Change, ChangeKind, Diff, DiffSide, ItemState, LatencyChange, diff};

use crate::coverage::{Condition, GateConditions, Violation};

/// The gate's conditions on a run against its baseline (`--no-new-failures`,
/// `--max-coverage-drop`), from their diff; each violation names exactly what broke it.
pub fn judge(d: &Diff, conditions: &GateConditions) -> Vec<Violation> {
    let mut out = Vec::new();
    if conditions.no_new_failures && !d.failures.new.is_empty() {
        out.push(Violation {
            condition: Condition::NoNewFailures,
            message: format!(
                "{} failure{} that {} ({}) did not have",
                d.failures.new.len(),
                if d.failures.new.len() == 1 { "" } else { "s" },
                d.base.name,
                d.base.id
            ),
            items: Vec::new(),
            tests: Vec::new(),
            details: d
                .failures
                .new
                .iter()
                .map(|f| {
                    let hop = f.hop.as_ref().map_or_else(
                        || "no hop".to_owned(),
                        |h| format!("{} -> {} {}", h.caller, h.callee, h.operation),
                    );
                    format!(
                        "new failure {}: {} at {hop} {}",
                        f.test.as_deref().unwrap_or("(no test)"),
                        f.class,
                        f.link
                    )
                })
                .collect(),
        });
    }
    if let Some(max) = conditions.max_coverage_drop {
        let mut details = Vec::new();
        for (what, delta) in [
            ("edge", &d.coverage.edges),
            ("interface", &d.coverage.interfaces),
        ] {
            if let Some(change) = delta.delta
                && -change > max
            {
                details.push(format!(
                    "{what} coverage {:.1}% -> {:.1}% ({change:+.1} points)",
                    delta.base.unwrap_or_default(),
                    delta.run.unwrap_or_default()
                ));
            }
        }
        if !details.is_empty() {
            details.extend(
                d.of(diff::ChangeKind::NewlyUntested)
                    .map(|c| match &c.operation {
                        Some(op) => format!("newly untested {} -> {} {op}", c.caller, c.callee),
                        None => format!("newly untested {} -> {}", c.caller, c.callee),
                    }),
            );
            out.push(Violation {
                condition: Condition::MaxCoverageDrop,
                message: format!(
                    "coverage fell by more than {max} points from {} ({})",
                    d.base.name, d.base.id
                ),
                items: Vec::new(),
                tests: Vec::new(),
                details,
            });
        }
    }
    out
}
