//! Latency regressions against a baseline run (DESIGN, "History across runs"): the interfaces
//! whose p95 grew past a threshold, each with the node to blame — the callee that is slow, not
//! the caller that waited for it.
//!
//! Owns `regressions` (two run graphs in, the regressions out), `Thresholds` (what counts at
//! all: `--latency-threshold`, `--latency-floor`, and the minimum of calls) and `violation` (the
//! gate's `--max-latency-regression`). Pure: no I/O, no clock. `tracecov diff` lists the
//! regressions as `slower` and the `improvements` (the same judgement, runs swapped) as
//! `faster`.
//!
//! An interface's p95 is read from the latency sketches the graph keeps, on the calling side,
//! or on the answering side for an interface no calling span measured (a queue's deliveries), as
//! the report's edges read them. Sketches merge within their stated error (at most 1 % above the
//! exact nearest-rank value), so two runs' p95s compare within it.
//!
//! `blamed` is the node whose own time per call (its spans' durations less the children on the
//! critical path, `graph::critical`) grew most from the baseline's calls to the run's slow
//! calls. The slow calls are those whose latency band (half-octaves) lies wholly above the
//! baseline's p95: the calls that made the p95 grow, not the run's typical ones. When no call
//! lies wholly above it (a threshold under the band's width), the band holding the baseline's
//! p95 joins; then every call. The baseline's side is the mean over all its calls.

use std::collections::BTreeSet;

use crate::coverage::{Condition, Violation};
use crate::graph::critical::band;
use crate::graph::{Interface, PathTimes, RunGraph};

/// What is reported as a regression at all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// The p95 must grow by more than this factor (`--latency-threshold`, default 1.5).
    pub ratio: f64,
    /// And by at least this much, in nanoseconds (`--latency-floor`, default 5 ms): a 1 ms call
    /// taking 2 ms is noise, not a regression.
    pub floor_ns: u64,
    /// Calls the interface must have in each run: fewer make a p95 meaningless (DESIGN: 20).
    pub min_calls: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            ratio: DEFAULT_RATIO,
            floor_ns: DEFAULT_FLOOR_NS,
            min_calls: MIN_CALLS,
        }
    }
}

/// `--latency-threshold`'s default.
pub const DEFAULT_RATIO: f64 = 1.5;
/// `--latency-floor`'s default: 5 ms.
pub const DEFAULT_FLOOR_NS: u64 = 5_000_000;
/// DESIGN's minimum of calls in both runs.
pub const MIN_CALLS: u64 = 20;

impl Thresholds {
    /// From `--latency-threshold` and `--latency-floor` (or the API's `latency_threshold` and
    /// `latency_floor_ms`), each defaulted; a ratio below 1 or a negative floor is refused.
    pub fn new(ratio: Option<f64>, floor_ms: Option<f64>) -> Result<Self, String> {
        let ratio = ratio.unwrap_or(DEFAULT_RATIO);
        if !ratio.is_finite() || ratio < 1.0 {
            return Err(format!(
                "the latency threshold is a factor of at least 1 (the p95 grew by more than it), not {ratio}"
            ));
        }
        let floor_ns = match floor_ms {
            None => DEFAULT_FLOOR_NS,
            Some(ms) if ms.is_finite() && ms >= 0.0 => (ms * 1e6).round() as u64,
            Some(ms) => {
                return Err(format!(
                    "the latency floor is a duration of 0 ms or more, not {ms}"
                ));
            }
        };
        Ok(Self {
            ratio,
            floor_ns,
            min_calls: MIN_CALLS,
        })
    }
}

/// One interface slower than in the baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Regression {
    pub caller: String,
    pub callee: String,
    pub operation: String,
    pub base_p95_ns: u64,
    pub run_p95_ns: u64,
    /// `run_p95_ns / base_p95_ns`, rounded to three decimals: the number the thresholds and the
    /// gate judge is the number the report shows.
    pub ratio: f64,
    pub base_calls: u64,
    pub calls: u64,
    /// The node whose own time per call grew most along the slow calls' critical paths; none
    /// when no node's grew (the calls' paths were not recorded).
    pub blamed: Option<String>,
}

/// Every interface of `run` that is slower than in `base` by `t`, the worst (highest ratio)
/// first, ties by (caller, callee, operation). The interfaces that got faster are
/// `improvements`.
pub fn regressions(base: &RunGraph, run: &RunGraph, t: &Thresholds) -> Vec<Regression> {
    let mut out = Vec::new();
    for e in run.edges() {
        let Some(b) = base.edge(&e.caller.id, &e.callee.id) else {
            continue;
        };
        for iface in &e.edge.interfaces {
            let Ok(i) = b
                .edge
                .interfaces
                .binary_search_by(|x| x.operation.as_str().cmp(&iface.operation))
            else {
                continue;
            };
            let before = &b.edge.interfaces[i];
            let (Some(base_p95), Some(run_p95)) = (p95(before), p95(iface)) else {
                continue;
            };
            let Some(ratio) = slower((before.calls, base_p95), (iface.calls, run_p95), t) else {
                continue;
            };
            out.push(Regression {
                caller: e.caller.id.clone(),
                callee: e.callee.id.clone(),
                operation: iface.operation.clone(),
                base_p95_ns: base_p95,
                run_p95_ns: run_p95,
                ratio,
                base_calls: before.calls,
                calls: iface.calls,
                blamed: blamed(&before.path, &iface.path, base_p95),
            });
        }
    }
    out.sort_by(|a, b| {
        b.ratio.total_cmp(&a.ratio).then_with(|| {
            (&a.caller, &a.callee, &a.operation).cmp(&(&b.caller, &b.callee, &b.operation))
        })
    });
    out
}

/// The interfaces of `run` that are faster than in `base` by `t` (the p95 shrank by more than
/// the ratio and by at least the floor), in the same shape as `regressions`: `base_*` are the
/// base's, `run_p95_ns` and `calls` the run's, `ratio` is how many times faster (base p95 over
/// run p95), and `blamed` names the node whose own time per call shrank most — what `diff`
/// lists as `faster`.
pub fn improvements(base: &RunGraph, run: &RunGraph, t: &Thresholds) -> Vec<Regression> {
    regressions(run, base, t)
        .into_iter()
        .map(|r| Regression {
            base_p95_ns: r.run_p95_ns,
            run_p95_ns: r.base_p95_ns,
            base_calls: r.calls,
            calls: r.base_calls,
            ..r
        })
        .collect()
}

/// The ratio by which an interface got slower from `base` to `run`, each (calls, p95 in
/// nanoseconds), when that is a regression by `t`: enough calls on both sides, and the p95 grown
/// by more than the ratio and by at least the floor. With the sides swapped, whether it got
/// faster. `regressions` judges by it, and so does `diff` over the runs' history digests.
pub fn slower(base: (u64, u64), run: (u64, u64), t: &Thresholds) -> Option<f64> {
    let ((base_calls, base_p95), (calls, run_p95)) = (base, run);
    if calls < t.min_calls || base_calls < t.min_calls {
        return None;
    }
    let ratio = round3(run_p95 as f64 / base_p95.max(1) as f64);
    (ratio > t.ratio && run_p95.saturating_sub(base_p95) >= t.floor_ns).then_some(ratio)
}

/// An interface's p95 in nanoseconds: the calling side's, else the answering side's.
pub fn p95(i: &Interface) -> Option<u64> {
    if i.client.is_empty() {
        i.server.latency().p95
    } else {
        i.client.latency().p95
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The node whose own time per call grew most from the baseline's calls to the run's calls
/// above the baseline's p95 (see the module docs).
fn blamed(base: &PathTimes, run: &PathTimes, base_p95: u64) -> Option<String> {
    let cut = band(base_p95);
    let slow = [
        run.sum(|b| b > cut),
        run.sum(|b| b >= cut),
        run.sum(|_| true),
    ]
    .into_iter()
    .find(|s| s.calls > 0)?;
    let before = base.sum(|_| true);
    let nodes: BTreeSet<&str> = slow
        .own
        .keys()
        .chain(before.own.keys())
        .map(String::as_str)
        .collect();
    let mut best: Option<(&str, f64)> = None;
    for node in nodes {
        let growth = slow.mean(node) - before.mean(node);
        // Strictly greater: of equal growths the first node in id order stays.
        if growth > 0.0 && best.is_none_or(|(_, g)| growth > g) {
            best = Some((node, growth));
        }
    }
    best.map(|(n, _)| n.to_owned())
}

/// The gate's `--max-latency-regression RATIO`: a violation naming every regression whose ratio
/// exceeds `max`, or none.
pub fn violation(regressions: &[Regression], max: f64) -> Option<Violation> {
    let over: Vec<&Regression> = regressions.iter().filter(|r| r.ratio > max).collect();
    if over.is_empty() {
        return None;
    }
    Some(Violation {
        condition: Condition::MaxLatencyRegression,
        message: format!(
            "{} interfaces got slower than the baseline by more than {max}x (p95)",
            over.len()
        ),
        items: Vec::new(),
        tests: Vec::new(),
        details: over.iter().map(|r| describe(r)).collect(),
    })
}

/// One line for people: `gateway -> inventory ListProducts: p95 2.10 ms -> 83.4 ms (x39.7),
/// blamed: inventory`.
pub fn describe(r: &Regression) -> String {
    format!(
        "{} -> {} {}: p95 {} ms -> {} ms (x{}, {} -> {} calls), blamed: {}",
        r.caller,
        r.callee,
        r.operation,
        ms(r.base_p95_ns),
        ms(r.run_p95_ns),
        r.ratio,
        r.base_calls,
        r.calls,
        r.blamed.as_deref().unwrap_or("none")
    )
}

fn ms(ns: u64) -> String {
    let ms = ns as f64 / 1e6;
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;
    use crate::graph::{self, fixture};

    /// A run of `n` calls web -> api `GET /x`, each a client span of `total` ms around api's
    /// server span, which calls a database for `db` ms (a client span no span answers). The
    /// traces are named after `run` so two runs can be told apart.
    fn run(run: &str, n: usize, total: u64, db: u64) -> RunGraph {
        let mut text = String::new();
        for i in 0..n {
            let t = format!("{run}{i}");
            let _ = writeln!(
                text,
                "{t}:a - web client GET 0..{total} http.request.method=GET
                 {t}:b a api server \"GET /x\" 1..{end} http.request.method=GET http.route=/x
                 {t}:c b api client SELECT 2..{db_end} db.system.name=postgresql db.namespace=shop",
                end = total - 1,
                db_end = 2 + db,
            );
        }
        let (spans, opts) = fixture::parse(&text);
        graph::analyze(&spans, &opts)
    }

    fn keys(r: &[Regression]) -> Vec<String> {
        r.iter()
            .map(|r| format!("{} -> {} {}", r.caller, r.callee, r.operation))
            .collect()
    }

    /// The database call got slower: both the database's interface and the caller's (which
    /// waited for it) are reported, and both blame the database, not the caller.
    #[test]
    fn a_slower_database_is_blamed_on_every_interface_that_waited_for_it() {
        let base = run("b", 20, 20, 10);
        let slow = run("r", 20, 60, 50);
        let found = regressions(&base, &slow, &Thresholds::default());
        assert_eq!(
            keys(&found),
            ["api -> db:postgresql/shop SELECT", "web -> api GET /x"]
        );
        for r in &found {
            assert_eq!(r.blamed.as_deref(), Some("db:postgresql/shop"), "{r:?}");
            assert_eq!((r.base_calls, r.calls), (20, 20));
        }
        let web = &found[1];
        assert_eq!((web.base_p95_ns, web.run_p95_ns), (20_000_000, 60_000_000));
        assert_eq!(web.ratio, 3.0);
        // The same run against itself, and the faster direction, report nothing slower.
        assert!(regressions(&base, &base, &Thresholds::default()).is_empty());
        let faster = regressions(&slow, &base, &Thresholds::default());
        assert!(faster.is_empty(), "{faster:?}");
        // The other way round, the same interfaces got faster: seen from the slow run.
        let improved = improvements(&slow, &base, &Thresholds::default());
        assert_eq!(keys(&improved), keys(&found));
        let web = &improved[1];
        assert_eq!(
            (web.base_p95_ns, web.run_p95_ns, web.ratio),
            (60_000_000, 20_000_000, 3.0)
        );
        assert_eq!(web.blamed.as_deref(), Some("db:postgresql/shop"));
        assert!(improvements(&base, &slow, &Thresholds::default()).is_empty());
    }

    /// The caller's own work got slower, not the database: the caller is blamed.
    #[test]
    fn a_caller_slower_in_its_own_code_is_blamed_itself() {
        let base = run("b", 20, 20, 10);
        let slow = run("r", 20, 60, 10);
        let found = regressions(&base, &slow, &Thresholds::default());
        assert_eq!(keys(&found), ["web -> api GET /x"]);
        assert_eq!(found[0].blamed.as_deref(), Some("api"));
    }

    #[test]
    fn fewer_than_20_calls_in_either_run_are_not_judged() {
        let t = Thresholds::default();
        assert!(regressions(&run("b", 19, 20, 10), &run("r", 20, 60, 50), &t).is_empty());
        assert!(regressions(&run("b", 20, 20, 10), &run("r", 19, 60, 50), &t).is_empty());
        assert_eq!(
            regressions(&run("b", 20, 20, 10), &run("r", 20, 60, 50), &t).len(),
            2
        );
    }

    /// 1 ms to 4 ms is four times slower, but by less than the 5 ms floor.
    #[test]
    fn growth_below_the_floor_is_not_a_regression() {
        let base = run("b", 20, 4, 1);
        let slow = run("r", 20, 8, 1);
        // web -> api: 4 ms to 8 ms, x2 but only 4 ms more.
        assert!(regressions(&base, &slow, &Thresholds::default()).is_empty());
        let floor = Thresholds {
            floor_ns: 4_000_000,
            ..Thresholds::default()
        };
        assert_eq!(
            keys(&regressions(&base, &slow, &floor)),
            ["web -> api GET /x"]
        );
    }

    /// 20 ms to 30 ms is x1.5: not more than the default 1.5, more than 1.4.
    #[test]
    fn growth_at_or_below_the_ratio_is_not_a_regression() {
        let base = run("b", 20, 20, 10);
        let slow = run("r", 20, 30, 10);
        assert!(regressions(&base, &slow, &Thresholds::default()).is_empty());
        let lower = Thresholds {
            ratio: 1.4,
            ..Thresholds::default()
        };
        let found = regressions(&base, &slow, &lower);
        assert_eq!(keys(&found), ["web -> api GET /x"]);
        assert_eq!(found[0].ratio, 1.5);
    }

    #[test]
    fn the_gate_names_each_regression_over_its_ratio() {
        let found = regressions(
            &run("b", 20, 20, 10),
            &run("r", 20, 60, 50),
            &Thresholds::default(),
        );
        // web -> api x3, api -> db x5.
        let v = violation(&found, 4.0).expect("the database call is over x4");
        assert_eq!(v.details.len(), 1, "{:?}", v.details);
        assert!(
            v.details[0]
                .starts_with("api -> db:postgresql/shop SELECT: p95 10.0 ms -> 50.0 ms (x5"),
            "{}",
            v.details[0]
        );
        assert_eq!(violation(&found, 1.5).map(|v| v.details.len()), Some(2));
        assert!(violation(&found, 5.0).is_none());
    }
}
