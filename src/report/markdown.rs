//! The report as GitHub/GitLab-flavoured Markdown, for pull-request comments and CI job
//! summaries: a one-line verdict, the coverage table, the failing hops with their summaries and
//! trace links, the interfaces slower than the baseline, the untested critical items, and a
//! Mermaid flowchart of the run.
//!
//! Everything that came from a span is escaped (`escape::markdown`, `escape::mermaid`) after
//! control characters were stripped from the whole report. No I/O: the caller writes the text.

use std::fmt::Write;

use super::escape::{self, markdown as md};
use super::json::Report;
use super::view::{self, Graph};

pub fn markdown(report: &Report) -> String {
    let report = &escape::sanitized(report);
    let mut out = String::new();
    let run = &report.run;
    let _ = writeln!(
        out,
        "## tracecov: run {} ({})\n",
        md(&run.name),
        md(&run.id)
    );
    let icon = if view::failed(report) {
        "❌"
    } else if view::untested_critical(report).is_empty() {
        "✅"
    } else {
        "⚠️"
    };
    let _ = writeln!(out, "{icon} **{}**\n", md(&view::verdict(report)));

    let _ = writeln!(
        out,
        "{} tests ({} passed, {} failed), {} spans in {} traces.\n",
        run.tests.total, run.tests.passed, run.tests.failed, run.spans, run.traces
    );

    if let Some(c) = &report.coverage {
        out.push_str("| coverage | covered | expected | percent |\n|---|---:|---:|---:|\n");
        for (what, n) in [
            ("edges", c.edges),
            ("interfaces", c.interfaces),
            ("critical", c.critical),
        ] {
            let pct = n.percent.map_or("n/a".to_owned(), |p| format!("{p:.1}%"));
            let _ = writeln!(out, "| {what} | {} | {} | {pct} |", n.covered, n.expected);
        }
        out.push('\n');
    }

    if !report.failures.is_empty() {
        let _ = writeln!(out, "### Failing hops ({})\n", report.failures.len());
        out.push_str("| test | hop | class | summary | trace |\n|---|---|---|---|---|\n");
        for f in &report.failures {
            let hop = match &f.hop {
                Some(h) => format!("{} → {} {}", md(&h.caller), md(&h.callee), md(&h.operation)),
                None => "none found".to_owned(),
            };
            let _ = writeln!(
                out,
                "| {} | {hop} | {} | {} | [trace]({}) |",
                md(f.test.as_deref().unwrap_or("a request")),
                if f.flaky {
                    format!("{} (flaky)", md(&f.class))
                } else {
                    md(&f.class)
                },
                md(&f.summary),
                escape::markdown_url(&f.link)
            );
        }
        out.push('\n');
    }

    if let Some(vs) = report.violations.as_ref().filter(|v| !v.is_empty()) {
        let _ = writeln!(out, "### Broken expectations ({})\n", vs.len());
        out.push_str("| expectation | test | hop | expected | observed | trace |\n|---|---|---|---|---|---|\n");
        for v in vs {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | [trace]({}) |",
                md(&v.expectation),
                md(v.test.as_deref().unwrap_or("a request")),
                md(&super::violations::hop_text(v)),
                md(&v.expected),
                md(&v.observed),
                escape::markdown_url(&v.link)
            );
        }
        out.push('\n');
    }

    if let Some(regressions) = report.regressions.as_ref().filter(|r| !r.is_empty()) {
        let _ = writeln!(
            out,
            "### Slower than the baseline ({})\n",
            regressions.len()
        );
        out.push_str(
            "| interface | p95 before | p95 now | ratio | calls | blamed |\n|---|---:|---:|---:|---:|---|\n",
        );
        for r in regressions {
            let _ = writeln!(
                out,
                "| {} | {} ms | {} ms | ×{} | {} → {} | {} |",
                item(&r.caller, &r.callee, Some(&r.operation)),
                r.base_p95_ms,
                r.run_p95_ms,
                r.ratio,
                r.base_calls,
                r.calls,
                r.blamed.as_deref().map_or("none".to_owned(), md)
            );
        }
        out.push('\n');
    }

    let critical = view::untested_critical(report);
    if !critical.is_empty() {
        let _ = writeln!(out, "### Untested critical items ({})\n", critical.len());
        for i in &critical {
            let _ = writeln!(
                out,
                "- {}{}",
                item(&i.caller, &i.callee, i.operation.as_deref()),
                example(i)
            );
        }
        out.push('\n');
    }
    if let Some(c) = &report.coverage {
        let others: Vec<_> = c.untested.iter().filter(|i| !i.critical).collect();
        if !others.is_empty() {
            let _ = writeln!(
                out,
                "<details><summary>Other untested items ({})</summary>\n",
                others.len()
            );
            for i in others {
                let _ = writeln!(
                    out,
                    "- {}{}",
                    item(&i.caller, &i.callee, i.operation.as_deref()),
                    example(i)
                );
            }
            out.push_str("\n</details>\n\n");
        }
    }

    let graph = view::graph(report);
    if graph.nodes.is_empty()
        && let Some(total) = graph.pruned_from
    {
        let _ = writeln!(
            out,
            "### Graph\n\nNot drawn: {total} nodes, and no edge is failing or untested.\n"
        );
    }
    if !graph.nodes.is_empty() {
        out.push_str("### Graph\n\n");
        if let Some(total) = graph.pruned_from {
            let _ = writeln!(
                out,
                "Only the failing and untested edges and their neighbours: {} of {total} nodes.\n",
                graph.nodes.len()
            );
        }
        out.push_str("```mermaid\n");
        out.push_str(&mermaid(&graph));
        out.push_str("```\n\n");
        out.push_str(
            "Edges: solid = covered, **failing** = thick red, *untested* = dashed orange, \
             stubbed = dotted grey (only a mock answered), unexpected = purple.\n",
        );
    }
    out
}

/// `caller → callee operation`, escaped.
/// ` — [a request that crossed it](link)`, when the store holds one.
fn example(i: &super::CoverageItem) -> String {
    i.example
        .as_ref()
        .map(|e| {
            format!(
                " — [a request that crossed it]({})",
                escape::markdown_url(&e.link)
            )
        })
        .unwrap_or_default()
}

fn item(caller: &str, callee: &str, operation: Option<&str>) -> String {
    let mut s = format!(
        "{} → {}",
        md(view::node_label(caller)),
        md(view::node_label(callee))
    );
    if let Some(op) = operation {
        s.push(' ');
        s.push_str(&md(op));
    }
    s
}

/// The Mermaid flowchart of a graph, one statement a line. Every edge carries its status as
/// text as well as a style, so the diagram does not rely on colour alone.
pub fn mermaid(graph: &Graph<'_>) -> String {
    let mut out = String::from("flowchart LR\n");
    for (i, id) in graph.nodes.iter().enumerate() {
        let _ = writeln!(out, "  n{i}[\"{}\"]", escape::mermaid(view::node_label(id)));
    }
    let mut styles: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, e) in graph.edges.iter().enumerate() {
        let label = if e.critical {
            format!("{}, critical", e.status)
        } else {
            e.status.to_owned()
        };
        let arrow = match e.status {
            "untested" | "stubbed" => "-.->",
            "failing" => "==>",
            _ => "-->",
        };
        let _ = writeln!(
            out,
            "  n{} {arrow}|\"{}\"| n{}",
            e.from,
            escape::mermaid(&label),
            e.to
        );
        match styles.iter_mut().find(|(s, _)| *s == e.status) {
            Some((_, list)) => list.push(i),
            None => styles.push((e.status, vec![i])),
        }
    }
    for (status, indices) in styles {
        let style = match status {
            "failing" => "stroke:#cb2431,stroke-width:3px",
            "untested" => "stroke:#e36209,stroke-width:2px,stroke-dasharray:6 4",
            "stubbed" => "stroke:#6a737d,stroke-width:1px,stroke-dasharray:2 3",
            "unexpected" => "stroke:#6f42c1,stroke-width:1px",
            _ => "stroke:#28a745,stroke-width:2px",
        };
        let list: Vec<String> = indices.iter().map(usize::to_string).collect();
        let _ = writeln!(out, "  linkStyle {} {style}", list.join(","));
    }
    out
}
