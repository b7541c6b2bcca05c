//! The coverage heatmap of the run page: callers as rows, callees as columns, one cell per edge.
//!
//! Each cell says its status three ways: colour, a symbol (`✓ 3` covered by three tests, `✗`
//! failing, `?` untested, `S` stubbed, `!` unexpected) and a CSS pattern (stripes, dots, a dashed
//! border), so it reads in greyscale and to colour-blind eyes; `★` and an outline mark critical
//! edges. The `title` holds the counts; the cell links to the edge's interface-level view.
//!
//! For 100+ services the rows and columns are grouped by namespace (`shop/cart` → `shop`,
//! `db:…` → `db`), and the server sorts and filters them from query parameters (`sort`,
//! `caller`, `callee`, `status`, `ns`, `critical`), so the page needs no script to do it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use maud::{Markup, html};
use serde::Deserialize;

use super::href;
use super::layout::WORST_FIRST;
use crate::report::{Edge, Report, is_problem};

/// The heatmap's query parameters.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HeatOptions {
    /// `name` (default: by namespace, then id), `problems` (most failing and untested cells
    /// first) or `calls` (busiest first).
    #[serde(default)]
    pub sort: Option<String>,
    /// Keep callers whose id contains this.
    #[serde(default)]
    pub caller: Option<String>,
    /// Keep callees whose id contains this.
    #[serde(default)]
    pub callee: Option<String>,
    /// Keep the rows and columns holding at least one cell of this status.
    #[serde(default)]
    pub status: Option<String>,
    /// Keep the rows and columns of this namespace.
    #[serde(default)]
    pub ns: Option<String>,
    /// Only critical edges.
    #[serde(default)]
    pub critical: Option<String>,
    /// Keep callers of exactly this namespace (`(none)` for services without one).
    #[serde(default)]
    pub caller_ns: Option<String>,
    /// Keep callees of exactly this namespace.
    #[serde(default)]
    pub callee_ns: Option<String>,
    /// `namespaces` (one cell per namespace pair) or `cells` (one per edge). By default a run
    /// with more than `OVERVIEW_ABOVE` callers or callees opens on namespaces, unless filtered.
    #[serde(default)]
    pub view: Option<String>,
    /// The run the page compares latency with (the run page's `?baseline=`): not a filter, but
    /// kept by the filter form so filtering does not drop the comparison.
    #[serde(default)]
    pub baseline: Option<String>,
}

/// Above this many callers or callees an unfiltered heatmap opens on its namespaces.
pub const OVERVIEW_ABOVE: usize = 60;

/// How the namespace of services without one is named in a query.
const NO_NAMESPACE: &str = "(none)";

impl HeatOptions {
    fn only_critical(&self) -> bool {
        matches!(
            self.critical.as_deref().map(str::trim),
            Some("1" | "on" | "true" | "yes")
        )
    }
    fn nonempty(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }
    /// A namespace filter as the namespace it keeps (`""` for none).
    fn ns_filter(v: &Option<String>) -> Option<&str> {
        Self::nonempty(v).map(|q| if q == NO_NAMESPACE { "" } else { q })
    }
    fn filtered(&self) -> bool {
        [
            &self.caller,
            &self.callee,
            &self.status,
            &self.ns,
            &self.caller_ns,
            &self.callee_ns,
        ]
        .into_iter()
        .any(|v| Self::nonempty(v).is_some())
            || self.only_critical()
    }
}

/// A namespace as a query value.
fn ns_param(ns: &str) -> &str {
    if ns.is_empty() { NO_NAMESPACE } else { ns }
}

/// The namespace a node id is grouped under: a virtual node's kind (`db`, `queue`, `ext`), a
/// service's `service.namespace`, or none.
pub fn namespace(id: &str) -> &str {
    if let Some((kind, _)) = id.split_once(':')
        && matches!(kind, "db" | "queue" | "ext")
    {
        return kind;
    }
    match id.split_once('/') {
        Some((ns, _)) => ns,
        None => "",
    }
}

fn ns_label(ns: &str) -> &str {
    if ns.is_empty() { "(no namespace)" } else { ns }
}

fn status_of(e: &Edge) -> &str {
    e.status.as_deref().unwrap_or("covered")
}

/// The cell's symbol: the status in one or two characters.
fn symbol(e: &Edge) -> String {
    let mark = mark(status_of(e));
    let star = if e.critical == Some(true) { "★" } else { "" };
    match status_of(e) {
        "covered" | "failing" | "unexpected" if !e.tests.is_empty() => {
            format!("{star}{mark}{}", e.tests.len())
        }
        _ => format!("{star}{mark}"),
    }
}

/// How many tests shade a covered cell: 1, 2–3, 4–9, 10 and more.
fn shade(tests: usize) -> u8 {
    match tests {
        0 | 1 => 1,
        2..=3 => 2,
        4..=9 => 3,
        _ => 4,
    }
}

fn title(e: &Edge) -> String {
    let mut t = format!(
        "{} → {}\nstatus: {}{}\ncalls: {}, errors: {}\ntests: {}",
        e.caller,
        e.callee,
        status_of(e),
        if e.critical == Some(true) {
            " (critical)"
        } else {
            ""
        },
        e.calls,
        e.errors,
        e.tests.len()
    );
    for (class, n) in &e.error_classes {
        t.push_str(&format!("\n{class}: {n}"));
    }
    let tested = e
        .interfaces
        .iter()
        .filter(|i| matches!(i.status.as_deref(), None | Some("covered" | "failing")))
        .count();
    if !e.interfaces.is_empty() {
        t.push_str(&format!(
            "\ninterfaces tested: {tested}/{}",
            e.interfaces.len()
        ));
    }
    t
}

/// The heatmap section: filter form, legend and table. The cells of edges with an interface
/// slower than the baseline (the report's `regressions`) are outlined.
pub fn render(report: &Report, run_id: &str, opts: &HeatOptions) -> Markup {
    let baseline = HeatOptions::nonempty(&opts.baseline);
    let mut slow: HashMap<(&str, &str), Vec<&crate::report::Regression>> = HashMap::new();
    for r in report.regressions.iter().flatten() {
        slow.entry((r.caller.as_str(), r.callee.as_str()))
            .or_default()
            .push(r);
    }
    let caller_q = HeatOptions::nonempty(&opts.caller);
    let callee_q = HeatOptions::nonempty(&opts.callee);
    let status_q = HeatOptions::nonempty(&opts.status);
    let ns_q = opts.ns.as_deref().map(str::trim);
    let caller_ns_q = HeatOptions::ns_filter(&opts.caller_ns);
    let callee_ns_q = HeatOptions::ns_filter(&opts.callee_ns);
    let only_critical = opts.only_critical();
    // Values the page does not know are said, not silently dropped.
    let mut ignored: Vec<String> = Vec::new();
    let status_q = match status_q {
        Some(s) if !WORST_FIRST.contains(&s) => {
            ignored.push(format!(
                "status={s} (give failing, untested, unexpected, stubbed or covered)"
            ));
            None
        }
        other => other,
    };
    if let Some(s) = HeatOptions::nonempty(&opts.sort)
        && !["name", "problems", "calls"].contains(&s)
    {
        ignored.push(format!("sort={s} (give name, problems or calls)"));
    }
    if let Some(v) = HeatOptions::nonempty(&opts.view)
        && !["cells", "namespaces"].contains(&v)
    {
        ignored.push(format!("view={v} (give cells or namespaces)"));
    }

    let kept: Vec<&Edge> = report
        .edges
        .iter()
        .filter(|e| caller_q.is_none_or(|q| e.caller.contains(q)))
        .filter(|e| callee_q.is_none_or(|q| e.callee.contains(q)))
        .filter(|e| !only_critical || e.critical == Some(true))
        .filter(|e| ns_q.is_none_or(|q| namespace(&e.caller) == q || namespace(&e.callee) == q))
        .filter(|e| caller_ns_q.is_none_or(|q| namespace(&e.caller) == q))
        .filter(|e| callee_ns_q.is_none_or(|q| namespace(&e.callee) == q))
        .collect();
    // A status filter keeps whole rows and columns that hold such a cell, so the cell is seen
    // among its neighbours.
    let (rows_with, cols_with): (BTreeSet<&str>, BTreeSet<&str>) = match status_q {
        Some(s) => (
            kept.iter()
                .filter(|e| status_of(e) == s)
                .map(|e| e.caller.as_str())
                .collect(),
            kept.iter()
                .filter(|e| status_of(e) == s)
                .map(|e| e.callee.as_str())
                .collect(),
        ),
        None => Default::default(),
    };
    let kept: Vec<&Edge> = kept
        .into_iter()
        .filter(|e| {
            status_q.is_none()
                || rows_with.contains(e.caller.as_str()) && cols_with.contains(e.callee.as_str())
        })
        .collect();

    let cells: HashMap<(&str, &str), &Edge> = kept
        .iter()
        .map(|e| ((e.caller.as_str(), e.callee.as_str()), *e))
        .collect();
    // Per row and column: problems and calls, for sorting.
    let mut row_stats: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut col_stats: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for e in &kept {
        let p = u64::from(is_problem(status_of(e)));
        let r = row_stats.entry(&e.caller).or_default();
        r.0 += p;
        r.1 += e.calls;
        let c = col_stats.entry(&e.callee).or_default();
        c.0 += p;
        c.1 += e.calls;
    }
    let sort = opts.sort.as_deref().unwrap_or("name");
    let order = |stats: &BTreeMap<&str, (u64, u64)>| -> Vec<String> {
        let mut ids: Vec<&str> = stats.keys().copied().collect();
        match sort {
            "problems" => ids.sort_by(|a, b| {
                stats[b]
                    .0
                    .cmp(&stats[a].0)
                    .then(stats[b].1.cmp(&stats[a].1))
                    .then(a.cmp(b))
            }),
            "calls" => ids.sort_by(|a, b| stats[b].1.cmp(&stats[a].1).then(a.cmp(b))),
            _ => ids.sort_by(|a, b| namespace(a).cmp(namespace(b)).then(a.cmp(b))),
        }
        ids.into_iter().map(str::to_owned).collect()
    };
    let rows = order(&row_stats);
    let cols = order(&col_stats);
    let grouped = sort == "name";
    // Column groups: runs of equal namespace in column order (all of them when sorted by name).
    let mut col_groups: Vec<(&str, usize)> = Vec::new();
    for c in &cols {
        let ns = namespace(c);
        match col_groups.last_mut() {
            Some((g, n)) if *g == ns => *n += 1,
            _ => col_groups.push((ns, 1)),
        }
    }
    let namespaces: BTreeSet<&str> = report
        .edges
        .iter()
        .flat_map(|e| [namespace(&e.caller), namespace(&e.callee)])
        .collect();
    let total_cols = cols.len() + 1;
    let overview = match opts.view.as_deref() {
        Some("namespaces") => true,
        Some("cells") => false,
        _ => !opts.filtered() && (rows.len() > OVERVIEW_ABOVE || cols.len() > OVERVIEW_ABOVE),
    };

    html! {
        form.filters method="get" action=(href::run(run_id)) {
            label { "sort rows and columns"
                select name="sort" {
                    @for (v, label) in [("name", "by namespace and name"), ("problems", "failing and untested first"), ("calls", "most calls first")] {
                        option value=(v) selected[sort == v] { (label) }
                    }
                }
            }
            label { "status"
                select name="status" {
                    option value="" { "any" }
                    @for s in ["failing", "untested", "stubbed", "unexpected", "covered"] {
                        option value=(s) selected[status_q == Some(s)] { (s) }
                    }
                }
            }
            label { "namespace"
                select name="ns" {
                    option value="" selected[ns_q.is_none_or(str::is_empty)] { "all" }
                    @for ns in &namespaces {
                        @if !ns.is_empty() {
                            option value=(ns) selected[ns_q == Some(*ns)] { (ns) }
                        }
                    }
                }
            }
            label { "caller contains" input type="search" name="caller" value=[caller_q]; }
            label { "callee contains" input type="search" name="callee" value=[callee_q]; }
            label { "critical only" input type="checkbox" name="critical" value="1" checked[only_critical]; }
            @if let Some(q) = caller_ns_q { input type="hidden" name="caller_ns" value=(ns_param(q)); }
            @if let Some(q) = callee_ns_q { input type="hidden" name="callee_ns" value=(ns_param(q)); }
            @if let Some(b) = baseline { input type="hidden" name="baseline" value=(b); }
            button type="submit" { "Apply" }
            a href=(href::run(run_id)) { "reset" }
        }
        div.legend {
            span { span.swatch.cell.covered { "✓3" } "covered (number = tests; darker = more)" }
            span { span.swatch.cell.failing { "✗" } "failing" }
            span { span.swatch.cell.untested { "?" } "untested" }
            span { span.swatch.cell.stubbed { "S" } "stubbed (only a mock answered)" }
            span { span.swatch.cell.unexpected { "!" } "unexpected (not declared)" }
            span { span.critical-mark { "★" } " critical (outlined)" }
            @if report.regressions.is_some() {
                span { span.swatch.cell.slower { "⏱" } "slower than the baseline (orange frame)" }
            }
        }
        @if overview {
            p.small #heat-overview {
                (rows.len()) " callers × " (cols.len()) " callees in " (namespaces.len()) " namespaces: "
                "one cell per pair of namespaces, counting its edges by status. Click a cell for its services, or "
                a href={ (href::run(run_id)) "?view=cells" } { "show every edge" } "."
            }
            (namespace_matrix(&kept, run_id))
        } @else {
        @if !ignored.is_empty() {
            p.warnbox #heat-ignored { "Ignored: " @for (i, n) in ignored.iter().enumerate() { @if i > 0 { "; " } code { (n) } } }
        }
        p.small #heat-shown {
            (rows.len()) " callers × " (cols.len()) " callees. "
            @if let Some(st) = status_q {
                (kept.iter().filter(|e| status_of(e) == st).count()) " " (st) " edges, shown among the other "
                (kept.len() - kept.iter().filter(|e| status_of(e) == st).count()) " edges of their rows and columns (dimmed). "
            } @else {
                (kept.len()) " of " (report.edges.len()) " edges shown. "
            }
            "Hover a cell for its counts; click it for its interfaces."
        }
        @if caller_ns_q.is_some() || callee_ns_q.is_some() {
            p.small {
                "Namespaces: " code { (ns_label(caller_ns_q.unwrap_or("any"))) } " → " code { (ns_label(callee_ns_q.unwrap_or("any"))) } ". "
                a href={ (href::run(run_id)) "?view=namespaces" } { "back to all namespaces" }
            }
        }
        @if kept.is_empty() {
            p { "No edge matches." }
        } @else {
            div.heatwrap {
                table.heat #heatmap {
                    thead {
                        @if grouped {
                            tr {
                                th.grp { "callee namespace →" }
                                @for (ns, n) in &col_groups {
                                    th.grp colspan=(n) { (ns_label(ns)) }
                                }
                            }
                        }
                        tr {
                            th.row { "caller ↓ \\ callee →" }
                            @for c in &cols { th.col scope="col" title=(c) { (crate::web::ui::graph::label(c)) } }
                        }
                    }
                    tbody {
                        @for (i, r) in rows.iter().enumerate() {
                            @if grouped && (i == 0 || namespace(&rows[i - 1]) != namespace(r)) {
                                tr.grp { th colspan=(total_cols) { "caller namespace: " (ns_label(namespace(r))) } }
                            }
                            tr data-caller=(r) {
                                th.row scope="row" title=(r) { (crate::web::ui::graph::label(r)) }
                                @for c in &cols {
                                    @match cells.get(&(r.as_str(), c.as_str())) {
                                        Some(e) => (cell(e, run_id, status_q.is_some_and(|st| status_of(e) != st), slow.get(&(e.caller.as_str(), e.callee.as_str())).map(Vec::as_slice).unwrap_or_default())),
                                        None => td.empty {},
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        }
    }
}

fn mark(status: &str) -> &'static str {
    match status {
        "covered" => "✓",
        "failing" => "✗",
        "untested" => "?",
        "stubbed" => "S",
        "unexpected" => "!",
        _ => "·",
    }
}

/// One cell per (caller namespace, callee namespace): its edges counted by status, coloured by
/// the worst, starred when any is critical, linking to the cells of those two namespaces.
fn namespace_matrix(kept: &[&Edge], run_id: &str) -> Markup {
    #[derive(Default)]
    struct Agg {
        by_status: BTreeMap<&'static str, usize>,
        critical: usize,
        calls: u64,
    }
    let mut cells: BTreeMap<(&str, &str), Agg> = BTreeMap::new();
    for e in kept {
        let a = cells
            .entry((namespace(&e.caller), namespace(&e.callee)))
            .or_default();
        let status = WORST_FIRST
            .iter()
            .find(|s| **s == status_of(e))
            .copied()
            .unwrap_or("covered");
        *a.by_status.entry(status).or_default() += 1;
        a.critical += usize::from(e.critical == Some(true));
        a.calls += e.calls;
    }
    let rows: BTreeSet<&str> = cells.keys().map(|k| k.0).collect();
    let cols: BTreeSet<&str> = cells.keys().map(|k| k.1).collect();
    html! {
        div.heatwrap {
            table.heat.ns-heat #heatmap {
                thead { tr {
                    th.row { "caller namespace ↓ \\ callee namespace →" }
                    @for c in &cols { th.col scope="col" { (ns_label(c)) } }
                } }
                tbody {
                    @for r in &rows {
                        tr data-caller-ns=(r) {
                            th.row scope="row" { (ns_label(r)) }
                            @for c in &cols {
                                @match cells.get(&(*r, *c)) {
                                    None => td.empty {},
                                    Some(a) => {
                                        @let worst = WORST_FIRST.iter().find(|s| a.by_status.contains_key(*s)).copied().unwrap_or("covered");
                                        @let edges: usize = a.by_status.values().sum();
                                        td class={ "cell ns-cell " (worst) @if a.critical > 0 { " critical" } }
                                            data-status=(worst) data-caller-ns=(r) data-callee-ns=(c)
                                            title={
                                                (ns_label(r)) " → " (ns_label(c)) ": " (edges) " edges, " (a.calls) " calls"
                                                @for s in WORST_FIRST { @if let Some(n) = a.by_status.get(s) { "\n" (s) ": " (n) } }
                                                @if a.critical > 0 { "\ncritical: " (a.critical) }
                                            } {
                                            a href={ (href::run(run_id)) "?caller_ns=" (super::enc(ns_param(r))) "&callee_ns=" (super::enc(ns_param(c))) }
                                              aria-label={ (ns_label(r)) " to " (ns_label(c)) ": " (worst) } {
                                                @if a.critical > 0 { "★" }
                                                @for s in WORST_FIRST {
                                                    @if let Some(n) = a.by_status.get(s) { span.ns-count { (mark(s)) (n) } }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn cell(e: &Edge, run_id: &str, dim: bool, slower: &[&crate::report::Regression]) -> Markup {
    let status = status_of(e);
    let mut title = title(e);
    for r in slower {
        title.push_str(&format!(
            "\nslower than the baseline: {} p95 {} → {} ms (×{}), blamed: {}",
            r.operation,
            r.base_p95_ms,
            r.run_p95_ms,
            r.ratio,
            r.blamed.as_deref().unwrap_or("none")
        ));
    }
    let class = format!(
        "cell {}{}{}{}{}",
        super::layout::status_class(status),
        if status == "covered" {
            format!(" shade-{}", shade(e.tests.len()))
        } else {
            String::new()
        },
        if e.critical == Some(true) {
            " critical"
        } else {
            ""
        },
        if dim { " dim" } else { "" },
        if slower.is_empty() { "" } else { " slower" }
    );
    html! {
        td class=(class) data-status=(status) data-caller=(e.caller) data-callee=(e.callee)
            data-critical=[(e.critical == Some(true)).then_some("true")] title=(title) {
            a href=(href::edge(run_id, &e.caller, &e.callee)) aria-label={ (e.caller) " to " (e.callee) ": " (status) @if e.critical == Some(true) { ", critical" } ", " (e.tests.len()) " tests" } {
                (symbol(e))
            }
        }
    }
}
