//! History across runs (DESIGN, "History across runs"): what changed from one run to another
//! (`diff`), the gate conditions that judge a run against its baseline, the flaky hops of a
//! suite's last runs (`flaky`) and an edge's or interface's trend over them (`trend`).
//!
//! History reads each run's `RunDigest` (`digest`): what history needs of a run, made once from
//! its graph and kept beside its rollup, so that a question over a hundred runs reads a hundred
//! small digests rather than turning a hundred rollups into graphs. `flaky` and `trend` read
//! digests alone; `diff` (and `judge`, the gate's conditions on a diff) compares two reports
//! that `crate::query` builds from the two runs' digests and their failures in full
//! (`RunFailures`, kept beside each digest), so its cost follows edges, interfaces and failures,
//! never spans or rollups. Everything here is pure but `store`, which keeps the digests and
//! failures and asks the questions of a suite's window. Rendering for people (text, Markdown)
//! lives beside the data in `diff`, and in `report::history` for flaky hops and trends.

pub mod diff;
pub mod digest;
pub mod failures;
pub mod flaky;
mod store;
pub mod trend;

#[cfg(test)]
mod diff_tests;
#[cfg(test)]
mod tests;

pub use diff::{Change, ChangeKind, Diff, DiffSide, ItemState, Latencies, LatencyChange, diff};
pub use digest::RunDigest;
pub use failures::RunFailures;
pub use flaky::{FlakyHop, WindowRun};
pub use store::{
    DEFAULT_LAST, HopNames, Known, MAX_LAST, Window, WindowEntry, diff_records, digest_pass,
    digests, flaky_hops, flaky_in_report, keep_digests, trend_of, window,
};
pub use trend::{TrendItem, TrendPoint};

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
