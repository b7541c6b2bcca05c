//! The report as one self-contained HTML page, to keep as a CI artifact: the verdict, coverage
//! numbers, a heatmap (callers as rows, callees as columns; the status in colour and in words),
//! the run's graph as inline SVG, the failures, the interfaces slower than the baseline and the
//! untested items. Inline CSS, no script,
//! no external asset.
//!
//! Escaping is by hand and total: every string written goes through `escape::html` (or
//! `escape::safe_href` for links) after control characters were stripped; `tests` holds a
//! report whose every span-derived field is hostile markup. The graph layout is deliberately
//! simple — nodes in columns by their longest call path from a root — because the failing and
//! untested edges, not the picture, are the point. No I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::escape::{self, html as h};
use super::json::Report;
use super::view::{self, Graph};

const STYLE: &str = "
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
";

pub fn html(report: &Report) -> String {
    let report = &escape::sanitized(report);
    let run = &report.run;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>tracecov: run {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        h(&run.name)
    );
    let _ = writeln!(
        out,
        "<h1>tracecov: run {} <span class=\"small\">({})</span></h1>",
        h(&run.name),
        h(&run.id)
    );
    let class = if view::failed(report) {
        "failed"
    } else if view::untested_critical(report).is_empty() {
        "passed"
    } else {
        "warn"
    };
    let _ = writeln!(
        out,
        "<p class=\"verdict {class}\">{}</p>",
        h(&view::verdict(report))
    );
    let _ = writeln!(
        out,
        "<p>{} tests ({} passed, {} failed), {} spans in {} traces.</p>",
        run.tests.total, run.tests.passed, run.tests.failed, run.spans, run.traces
    );

    if let Some(c) = &report.coverage {
        out.push_str("<h2>Coverage</h2>\n<table>\n<tr><th></th><th>covered</th><th>expected</th><th>percent</th></tr>\n");
        for (what, n) in [
            ("edges", c.edges),
            ("interfaces", c.interfaces),
            ("critical", c.critical),
        ] {
            let pct = n.percent.map_or("n/a".to_owned(), |p| format!("{p:.1}%"));
            let _ = writeln!(
                out,
                "<tr><th>{what}</th><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{pct}</td></tr>",
                n.covered, n.expected
            );
        }
        out.push_str("</table>\n");
    }

    heatmap(report, &mut out);
    failures(report, &mut out);
    violations(report, &mut out);
    regressions(report, &mut out);
    untested(report, &mut out);

    let graph = view::graph(report);
    if !graph.nodes.is_empty() {
        out.push_str("<h2>Graph</h2>\n");
        if let Some(total) = graph.pruned_from {
            let _ = writeln!(
                out,
                "<p>Only the failing and untested edges and their neighbours: {} of {total} nodes.</p>",
                graph.nodes.len()
            );
        }
        out.push_str(&svg(&graph));
        out.push_str(
            "<p class=\"small\">Edges: green = covered, thick red = failing, dashed orange = \
             untested, dotted grey = stubbed (only a mock answered), purple = unexpected. Hover \
             an edge or node for its name and status.</p>\n",
        );
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// Callers as rows, callees as columns; each cell the edge's status in words and colour, its
/// calls, and how many of its interfaces are covered.
fn heatmap(report: &Report, out: &mut String) {
    if report.edges.is_empty() {
        return;
    }
    let callers: BTreeSet<&str> = report.edges.iter().map(|e| e.caller.as_str()).collect();
    let callees: BTreeSet<&str> = report.edges.iter().map(|e| e.callee.as_str()).collect();
    let cells: BTreeMap<(&str, &str), &super::Edge> = report
        .edges
        .iter()
        .map(|e| ((e.caller.as_str(), e.callee.as_str()), e))
        .collect();
    out.push_str("<h2>Heatmap</h2>\n<table class=\"heat\">\n<tr><th>caller \\ callee</th>");
    for callee in &callees {
        let _ = write!(out, "<th>{}</th>", h(view::node_label(callee)));
    }
    out.push_str("</tr>\n");
    for caller in &callers {
        let _ = write!(
            out,
            "<tr><th class=\"row\">{}</th>",
            h(view::node_label(caller))
        );
        for callee in &callees {
            match cells.get(&(*caller, *callee)) {
                None => out.push_str("<td class=\"none\">–</td>"),
                Some(e) => {
                    let status = e.status.as_deref().unwrap_or("covered");
                    let css = match status {
                        "covered" | "failing" | "untested" | "stubbed" | "unexpected" => status,
                        _ => "none",
                    };
                    let critical = if e.critical == Some(true) {
                        ", critical"
                    } else {
                        ""
                    };
                    let ifaces = e.interfaces.len();
                    let tested = e
                        .interfaces
                        .iter()
                        .filter(|i| {
                            matches!(i.status.as_deref(), None | Some("covered" | "failing"))
                        })
                        .count();
                    let title: Vec<String> = e
                        .interfaces
                        .iter()
                        .map(|i| {
                            format!(
                                "{}: {}",
                                i.operation,
                                i.status.as_deref().unwrap_or("covered")
                            )
                        })
                        .collect();
                    let calls = if e.calls == 1 {
                        "1 call".to_owned()
                    } else {
                        format!("{} calls", e.calls)
                    };
                    let ifaces = if ifaces == 0 {
                        String::new()
                    } else {
                        format!(", {tested}/{ifaces} interfaces tested")
                    };
                    let _ = write!(
                        out,
                        "<td class=\"{css}\" title=\"{}\">{}{critical}<br><span class=\"small\">{calls}{ifaces}</span></td>",
                        h(&title.join("\n")),
                        h(status),
                    );
                }
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

/// What the flaky mark means, for its tooltip.
const FLAKY_TITLE: &str = "flaky: in the suite's last runs, failures were placed on this hop in some runs while the same tests passed through it in others";

fn violations(report: &Report, out: &mut String) {
    let Some(vs) = report.violations.as_ref().filter(|v| !v.is_empty()) else {
        return;
    };
    let _ = writeln!(out, "<h2>Broken expectations ({})</h2>", vs.len());
    out.push_str("<table>\n<tr><th>expectation</th><th>test</th><th>hop</th><th>expected</th><th>observed</th><th>trace</th></tr>\n");
    for v in vs {
        let link = match escape::safe_href(&v.link) {
            Some(href) => format!("<a href=\"{href}\">trace</a>"),
            None => h(&v.link),
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{link}</td></tr>",
            h(&v.expectation),
            h(v.test.as_deref().unwrap_or("a request")),
            h(&super::violations::hop_text(v)),
            h(&v.expected),
            h(&v.observed),
        );
    }
    out.push_str("</table>\n");
}

fn failures(report: &Report, out: &mut String) {
    if report.failures.is_empty() {
        return;
    }
    let _ = writeln!(out, "<h2>Failures ({})</h2>", report.failures.len());
    out.push_str("<table>\n<tr><th>test</th><th>class</th><th>hop</th><th>blamed</th><th>summary</th><th>evidence</th><th>trace</th></tr>\n");
    for f in &report.failures {
        let hop = match &f.hop {
            Some(hop) => format!(
                "{} → {}<br>{}",
                h(&hop.caller),
                h(&hop.callee),
                h(&hop.operation)
            ),
            None => "none found".to_owned(),
        };
        let e = &f.evidence;
        let mut evidence = Vec::new();
        if let Some(s) = e.http_status {
            evidence.push(format!("HTTP {s}"));
        }
        if let Some(s) = &e.rpc_status {
            evidence.push(format!("gRPC {}", h(s)));
        }
        if let Some(m) = &e.status_message {
            evidence.push(h(m));
        }
        if let Some(x) = &e.exception {
            let kind = x.kind.as_deref().unwrap_or("exception");
            evidence.push(match &x.message {
                Some(m) => format!("{}: {}", h(kind), h(m)),
                None => h(kind),
            });
        }
        let link = match escape::safe_href(&f.link) {
            Some(href) => format!("<a href=\"{href}\">trace</a>"),
            None => h(&f.link),
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{hop}</td><td>{}</td><td>{}</td><td>{}</td><td>{link}</td></tr>",
            h(f.test.as_deref().unwrap_or("a request")),
            if f.flaky {
                format!(
                    "{} <span class=\"flaky\" title=\"{FLAKY_TITLE}\">flaky</span>",
                    h(&f.class)
                )
            } else {
                h(&f.class)
            },
            h(f.blamed.as_deref().unwrap_or("none")),
            h(&f.summary),
            evidence.join("<br>"),
        );
    }
    out.push_str("</table>\n");
}

/// The interfaces slower than the baseline, when the report was built against one.
fn regressions(report: &Report, out: &mut String) {
    let Some(regressions) = &report.regressions else {
        return;
    };
    let _ = writeln!(
        out,
        "<h2>Slower than the baseline ({})</h2>",
        regressions.len()
    );
    if regressions.is_empty() {
        out.push_str("<p>No interface got slower.</p>\n");
        return;
    }
    out.push_str(
        "<table>\n<tr><th>caller</th><th>callee</th><th>operation</th><th>p95 before (ms)</th>\
         <th>p95 now (ms)</th><th>ratio</th><th>calls before</th><th>calls now</th><th>blamed</th></tr>\n",
    );
    for r in regressions {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">×{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            h(&r.caller),
            h(&r.callee),
            h(&r.operation),
            r.base_p95_ms,
            r.run_p95_ms,
            r.ratio,
            r.base_calls,
            r.calls,
            h(r.blamed.as_deref().unwrap_or("none")),
        );
    }
    out.push_str("</table>\n");
}

fn untested(report: &Report, out: &mut String) {
    let Some(c) = &report.coverage else {
        return;
    };
    if c.untested.is_empty() {
        return;
    }
    let _ = writeln!(out, "<h2>Untested ({})</h2>", c.untested.len());
    out.push_str(
        "<table>\n<tr><th>caller</th><th>callee</th><th>operation</th><th>critical</th><th>example</th></tr>\n",
    );
    let mut items: Vec<_> = c.untested.iter().collect();
    // Critical items first: they are what a gate refuses.
    items.sort_by_key(|i| !i.critical);
    for i in items {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            h(view::node_label(&i.caller)),
            h(&i.callee),
            h(i.operation.as_deref().unwrap_or("(the edge)")),
            if i.critical { "critical" } else { "" },
            i.example
                .as_ref()
                .map(|e| format!(
                    "<a href=\"{}\">a request that crossed it</a>{}",
                    h(&e.link),
                    e.test
                        .as_deref()
                        .map(|t| format!(" ({})", h(t)))
                        .unwrap_or_default()
                ))
                .unwrap_or_default()
        );
    }
    out.push_str("</table>\n");
}

const NODE_W: usize = 180;
const NODE_H: usize = 30;
const COL_W: usize = 240;
const ROW_H: usize = 50;
const MARGIN: usize = 20;
/// Characters of a node label drawn; the whole id is in its tooltip.
const LABEL_CHARS: usize = 24;

/// Columns by longest call path from a node nobody calls (cycles are cut by bounding the
/// relaxation), rows by id within a column.
fn layers(graph: &Graph<'_>) -> Vec<usize> {
    let n = graph.nodes.len();
    let mut layer = vec![0usize; n];
    for _ in 0..n {
        let mut changed = false;
        for e in &graph.edges {
            if e.from != e.to && layer[e.to] < layer[e.from] + 1 && layer[e.from] + 1 < n {
                layer[e.to] = layer[e.from] + 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    layer
}

/// The graph as inline SVG: boxes in columns, straight arrows styled by status, each with a
/// tooltip naming it.
fn svg(graph: &Graph<'_>) -> String {
    let layer = layers(graph);
    let mut rows_used: BTreeMap<usize, usize> = BTreeMap::new();
    let pos: Vec<(usize, usize)> = layer
        .iter()
        .map(|&l| {
            let row = rows_used.entry(l).or_default();
            let p = (MARGIN + l * COL_W, MARGIN + *row * ROW_H);
            *row += 1;
            p
        })
        .collect();
    let width = MARGIN * 2 + (layer.iter().max().copied().unwrap_or(0)) * COL_W + NODE_W;
    let height = MARGIN * 2 + rows_used.values().max().copied().unwrap_or(1) * ROW_H;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"call graph of the run\">"
    );
    out.push_str(
        "<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" \
         markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\">\
         <path d=\"M0,0L10,5L0,10z\" fill=\"#586069\"/></marker></defs>\n",
    );
    for e in &graph.edges {
        let (x1, y1) = (pos[e.from].0 + NODE_W, pos[e.from].1 + NODE_H / 2);
        let (x2, y2) = (pos[e.to].0, pos[e.to].1 + NODE_H / 2);
        let style = match e.status {
            "failing" => "stroke=\"#cb2431\" stroke-width=\"3\"",
            "untested" => "stroke=\"#e36209\" stroke-width=\"2\" stroke-dasharray=\"6 4\"",
            "stubbed" => "stroke=\"#6a737d\" stroke-width=\"1.5\" stroke-dasharray=\"2 3\"",
            "unexpected" => "stroke=\"#6f42c1\" stroke-width=\"1.5\"",
            _ => "stroke=\"#28a745\" stroke-width=\"2\"",
        };
        let critical = if e.critical { ", critical" } else { "" };
        let _ = writeln!(
            out,
            "<line x1=\"{x1}\" y1=\"{y1}\" x2=\"{x2}\" y2=\"{y2}\" {style} marker-end=\"url(#arrow)\">\
             <title>{} → {}: {}{critical}</title></line>",
            h(view::node_label(graph.nodes[e.from])),
            h(view::node_label(graph.nodes[e.to])),
            h(e.status)
        );
    }
    for (i, id) in graph.nodes.iter().enumerate() {
        let (x, y) = pos[i];
        let label = view::node_label(id);
        let shown: String = if label.chars().count() > LABEL_CHARS {
            label.chars().take(LABEL_CHARS - 1).chain(['…']).collect()
        } else {
            label.to_owned()
        };
        let _ = writeln!(
            out,
            "<g><title>{}</title><rect x=\"{x}\" y=\"{y}\" width=\"{NODE_W}\" height=\"{NODE_H}\" \
             rx=\"4\" fill=\"#f6f8fa\" stroke=\"#444d56\"/><text x=\"{}\" y=\"{}\" \
             text-anchor=\"middle\">{}</text></g>",
            h(label),
            x + NODE_W / 2,
            y + NODE_H / 2 + 4,
            h(&shown)
        );
    }
    out.push_str("</svg>\n");
    out
}
