//! `tracecov bench ui`: the run page of a generated run (200 services in 20 namespaces, 2,000
//! edges, failures and untested critical edges among them) rendered on the server, against the
//! baseline of serializing the same report to JSON (what `/api/runs/{id}/report` does with it).
//!
//! The report is generated directly, not analysed from spans: analysis has its own benchmark,
//! and this one times only what the page adds — the heatmap, the graph's layout and the markup.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::query::RunStatus;
use crate::report::{
    CoverageCounts, CoverageItem, CoverageSummary, Diagnostics, Edge, Evidence, Failure,
    FailureHop, Interface, LatencyMs, Node, Percentiles, Report, Run, TestCounts,
};
use crate::runs::RunKind;
use crate::web::ui::{RunPage, render_run_page};

/// A deterministic generator (xorshift), so every run renders the same page.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A report of `services` services in namespaces of ten, with `edges` distinct edges of every
/// status, two interfaces each, and a failure on every failing edge.
pub fn generated_report(services: usize, edges: usize) -> Report {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let name = |i: usize| format!("ns{:02}/service-{i:03}", i / 10);
    let nodes: Vec<Node> = (0..services)
        .map(|i| Node {
            id: name(i),
            kind: "service".to_owned(),
        })
        .collect();
    let mut pairs = std::collections::BTreeSet::new();
    // Callees near the caller, as real systems call within and next to their namespace; the
    // window is wide enough to hold `edges` distinct pairs.
    let spread = (services / 4)
        .max(edges.div_ceil(services.max(1)) + 1)
        .min(services.saturating_sub(1))
        .max(1);
    while pairs.len() < edges.min(services * spread) {
        let a = rng.below(services as u64) as usize;
        let b = (a + 1 + rng.below(spread as u64) as usize) % services;
        if a != b {
            pairs.insert((a, b));
        }
    }
    let statuses = [
        "covered",
        "covered",
        "covered",
        "covered",
        "covered",
        "failing",
        "untested",
        "stubbed",
        "unexpected",
        "covered",
    ];
    let pct = Percentiles {
        p50: Some(3.2),
        p95: Some(12.5),
        p99: Some(40.0),
    };
    let mut failures = Vec::new();
    let mut untested = Vec::new();
    let report_edges: Vec<Edge> = pairs
        .into_iter()
        .enumerate()
        .map(|(k, (a, b))| {
            let status = statuses[rng.below(statuses.len() as u64) as usize];
            let critical = k % 17 == 0;
            let calls = if matches!(status, "untested" | "stubbed") {
                0
            } else {
                1 + rng.below(200)
            };
            let tests: Vec<String> = (0..rng.below(12))
                .map(|t| format!("test_{}_{t}", k % 97))
                .collect();
            let (caller, callee) = (name(a), name(b));
            if status == "failing" {
                failures.push(Failure {
                    trace_id: format!("{k:032x}"),
                    span_id: format!("{:016x}", k + 1),
                    test: tests.first().cloned(),
                    class: "callee_error".to_owned(),
                    hop: Some(FailureHop {
                        caller: caller.clone(),
                        callee: callee.clone(),
                        operation: "POST /things".to_owned(),
                    }),
                    blamed: Some(callee.clone()),
                    summary: format!("{callee} answered POST /things from {caller} with HTTP 500"),
                    evidence: Evidence {
                        status_message: Some("internal error".to_owned()),
                        http_status: Some(500),
                        rpc_status: None,
                        exception: None,
                        client_ms: Some(4.0),
                        server_ms: Some(3.0),
                        logs: Vec::new(),
                        no_error_recorded: Vec::new(),
                    },
                    collateral: vec![format!("{:016x}", k + 2)],
                    link: format!("http://127.0.0.1:4320/traces/{k:032x}?span={:016x}", k + 1),
                    flaky: false,
                });
            }
            if status == "untested" {
                untested.push(CoverageItem {
                    caller: caller.clone(),
                    callee: callee.clone(),
                    operation: None,
                    critical,
                    example: None,
                });
            }
            let errors = if status == "failing" { calls / 2 } else { 0 };
            let mut classes = BTreeMap::new();
            if errors > 0 {
                classes.insert("callee_error".to_owned(), errors);
            }
            Edge {
                interfaces: ["GET /things/{id}", "POST /things"]
                    .iter()
                    .map(|op| Interface {
                        operation: (*op).to_owned(),
                        calls: calls / 2,
                        errors: errors / 2,
                        error_classes: classes.clone(),
                        tests: tests.clone(),
                        status: Some(status.to_owned()),
                        expected: Some(status != "unexpected"),
                        critical: Some(critical),
                    })
                    .collect(),
                caller,
                callee,
                calls,
                errors,
                error_classes: classes,
                tests,
                status: Some(status.to_owned()),
                expected: Some(status != "unexpected"),
                critical: Some(critical),
                latency_ms: LatencyMs {
                    client: pct,
                    server: pct,
                },
            }
        })
        .collect();
    let counts = |expected: u64, covered: u64| CoverageCounts {
        expected,
        covered,
        percent: Some((covered as f64 * 1000.0 / expected.max(1) as f64).round() / 10.0),
    };
    let covered = report_edges
        .iter()
        .filter(|e| matches!(e.status.as_deref(), Some("covered" | "failing")))
        .count() as u64;
    let expected = report_edges
        .iter()
        .filter(|e| e.expected == Some(true))
        .count() as u64;
    Report {
        run: Run {
            id: "bench".to_owned(),
            name: "bench".to_owned(),
            spans: 1_000_000,
            traces: 20_000,
            aged_out_traces: 0,
            suite: None,
            tests: TestCounts {
                total: 2_000,
                passed: 2_000 - failures.len() as u64,
                failed: failures.len() as u64,
            },
            diagnostics: Diagnostics {
                orphans: 3,
                duplicate_span_ids: 0,
                parent_cycles: 0,
                missing_end_times: 0,
                clock_skew: 1,
                unresolved_calls: 0,
                propagation_breaks: BTreeMap::from([("ns03/service-031".to_owned(), 2)]),
                walks_cut_short: 0,
            },
        },
        nodes,
        edges: report_edges,
        failures,
        coverage: Some(CoverageSummary {
            edges: counts(expected, covered),
            interfaces: counts(expected * 2, covered * 2),
            critical: counts(expected / 17 + 1, covered / 17),
            untested,
            unexpected: Vec::new(),
        }),
        violations: None,
        expectations: None,
        regressions: None,
    }
}

/// The run page of a generated report, as the UI would serve it.
pub fn page_of(report: Report) -> RunPage {
    let placed_traces = report.failures.iter().map(|f| f.trace_id.clone()).collect();
    RunPage {
        run: RunStatus {
            run: crate::runs::Run {
                id: report.run.id.clone(),
                name: report.run.name.clone(),
                kind: RunKind::Explicit,
                created_ns: 1_700_000_000_000_000_000,
                closed_ns: Some(1_700_000_060_000_000_000),
                last_ns: 1_700_000_060_000_000_000,
                traces: report.run.traces,
                aged_out: 0,
                suite: crate::runs::DEFAULT_SUITE.to_owned(),
            },
            open: false,
            settled: true,
            pending_traces: None,
        },
        report,
        placed_traces,
        warnings: Vec::new(),
        heat: Default::default(),
        baseline: None,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(services: usize, edges: usize, runs: usize) -> anyhow::Result<()> {
    let page = page_of(generated_report(services, edges));
    let r = &page.report;
    println!(
        "ui benchmark: the run page of {} services, {} edges, {} failures; {runs} runs",
        r.nodes.len(),
        r.edges.len(),
        r.failures.len()
    );
    let drawn = crate::web::ui::graph::model(r);
    println!(
        "service graph: {} nodes and {} edges drawn{}",
        drawn.nodes.len(),
        drawn.edges.len(),
        if drawn.nodes.len() < r.nodes.len() {
            " (aggregated)"
        } else {
            ""
        }
    );
    // The page as it opens (namespaces when the run is large) and with every edge's cell.
    let mut cells = page_of(generated_report(services, edges));
    cells.heat.view = Some("cells".to_owned());
    let (mut base, mut opened, mut all) = (Vec::new(), Vec::new(), Vec::new());
    let mut bytes = (0, 0, 0);
    for _ in 0..runs {
        let t = Instant::now();
        let json = serde_json::to_string(&page.report)?;
        base.push(t.elapsed().as_secs_f64() * 1e3);
        bytes.0 = json.len();

        let t = Instant::now();
        let html = render_run_page(&page).into_string();
        opened.push(t.elapsed().as_secs_f64() * 1e3);
        bytes.1 = html.len();

        let t = Instant::now();
        let html = render_run_page(&cells).into_string();
        all.push(t.elapsed().as_secs_f64() * 1e3);
        bytes.2 = html.len();
    }
    let b = median(&mut base);
    println!(
        "baseline (the report to JSON): median {b:.2} ms, {} KiB",
        bytes.0 / 1024
    );
    for (what, times, size) in [
        ("run page as it opens", &mut opened, bytes.1),
        (
            "run page, every edge's cell (?view=cells)",
            &mut all,
            bytes.2,
        ),
    ] {
        let m = median(times);
        println!(
            "{what}: median {m:.2} ms, {} KiB, {:.1}x the baseline",
            size / 1024,
            m / b.max(1e-9)
        );
    }
    Ok(())
}
