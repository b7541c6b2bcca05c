//! The run's service graph as inline SVG, laid out on the server with `layout-rs`.
//!
//! Failing edges are red and thick, untested expected edges dashed, stubbed dotted, unexpected
//! purple; an edge slower than the baseline has an orange halo and the node blamed for it a
//! dashed orange outline; node shapes say the kind (service: rounded box, database: cylinder, queue: hexagon,
//! external: dashed ellipse, a namespace group: stacked boxes). Above `MAX_NODES` nodes the graph
//! is aggregated by namespace; when even that is too many, only the failing and untested edges
//! and their ends are drawn — a hairball of hundreds of boxes helps nobody.
//!
//! A key design decision: layout-rs only computes geometry. A private `RenderBackend` collects
//! the boxes and edge paths it draws (tagged through the elements' `properties`), and the SVG
//! is written here with `maud`, so no label ever reaches markup unescaped. The layout runs
//! inside `catch_unwind`: a layout bug becomes a plain list of edges, never a failed page.

use std::collections::{BTreeMap, BTreeSet};

use layout::core::base::Orientation;
use layout::core::format::{ClipHandle, RenderBackend};
use layout::core::geometry::Point;
use layout::core::style::StyleAttr;
use layout::std_shapes::shapes::{Arrow, Element, ShapeKind};
use layout::topo::layout::VisualGraph;
use maud::{Markup, html};

use super::heatmap::namespace;
use super::layout::severity;
use crate::report::{Report, is_problem};

/// Above this many nodes the graph is aggregated or pruned.
pub const MAX_NODES: usize = 60;

/// The most edges drawn: layout time grows faster than the edges (about 70 ms for 250 edges on
/// 50 nodes, 7 s for 600 on this machine, `tracecov bench ui`), so a denser graph is drawn with
/// its worst edges only.
pub const MAX_DRAWN_EDGES: usize = 200;

/// Above this many drawn edges the layout skips crossing minimisation (see `layout_geometry`).
const MAX_OPTIMIZED_EDGES: usize = 80;
/// Characters of a label drawn; the whole id is in the tooltip.
const LABEL_CHARS: usize = 28;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Service,
    Database,
    Messaging,
    External,
    /// A namespace standing for several nodes.
    Group,
}

impl Kind {
    fn of(kind: &str) -> Kind {
        match kind {
            "database" => Kind::Database,
            "messaging" => Kind::Messaging,
            "external" => Kind::External,
            _ => Kind::Service,
        }
    }
    /// The kind a node id says by its prefix (`db:`, `queue:`, `ext:`), else a service.
    fn of_id(id: &str) -> Kind {
        match id.split_once(':').map(|(prefix, _)| prefix) {
            Some("db") => Kind::Database,
            Some("queue") => Kind::Messaging,
            Some("ext") => Kind::External,
            _ => Kind::Service,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Database => "database",
            Kind::Messaging => "messaging",
            Kind::External => "external",
            Kind::Group => "namespace",
        }
    }
}

#[derive(Debug, Clone)]
pub struct GNode {
    pub id: String,
    pub kind: Kind,
    /// Nodes a group stands for (1 for a plain node).
    pub members: usize,
}

#[derive(Debug, Clone)]
pub struct GEdge {
    pub from: usize,
    pub to: usize,
    pub status: String,
    pub critical: bool,
    /// Edges an aggregated edge stands for.
    pub count: usize,
    /// Slower than the baseline the page compares with (it holds an interface of the report's
    /// `regressions`): outlined.
    pub slower: bool,
}

/// What to draw, and how it was reduced.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub nodes: Vec<GNode>,
    pub edges: Vec<GEdge>,
    /// Why the drawing is not the whole graph, when it is not.
    pub note: Option<String>,
}

/// The label drawn for an id (`*`, the caller of operations expected from anyone).
pub fn label(id: &str) -> &str {
    if id == "*" { "any caller" } else { id }
}

/// The graph to draw for a report: whole, aggregated by namespace, or pruned to its problems;
/// and never more than `MAX_DRAWN_EDGES` edges, the worst first.
pub fn model(report: &Report) -> Model {
    let mut m = model_of_nodes(report);
    if m.edges.len() > MAX_DRAWN_EDGES {
        let total = m.edges.len();
        // Stable: among equals, the order by (caller, callee) stays.
        m.edges
            .sort_by_key(|e| std::cmp::Reverse((severity(&e.status), e.critical)));
        m.edges.truncate(MAX_DRAWN_EDGES);
        m.edges.sort_by_key(|e| (e.from, e.to));
        let said = m.note.take().map(|n| format!("{n} ")).unwrap_or_default();
        m.note = Some(format!(
            "{said}{total} edges: too many to lay out. The {MAX_DRAWN_EDGES} worst are drawn \
             (failing first, then untested); the heatmap shows every edge."
        ));
    }
    m
}

fn model_of_nodes(report: &Report) -> Model {
    let mut kinds: BTreeMap<&str, Kind> = report
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), Kind::of(&n.kind)))
        .collect();
    let edges = crate::report::edge_lines(report);
    let slow: BTreeSet<(&str, &str)> = report
        .regressions
        .iter()
        .flatten()
        .map(|r| (r.caller.as_str(), r.callee.as_str()))
        .collect();
    // Ends only the manifest names (no span showed them) take their kind from the id's prefix.
    for e in &edges {
        kinds.entry(e.0).or_insert_with(|| Kind::of_id(e.0));
        kinds.entry(e.1).or_insert_with(|| Kind::of_id(e.1));
    }
    let total = kinds.len();
    if total <= MAX_NODES {
        return build(&kinds, &edges, &slow, |id| id.to_owned(), None);
    }
    // Aggregate by namespace: a node without one stays itself.
    let group_of = |id: &str| -> String {
        let ns = namespace(id);
        if ns.is_empty() {
            id.to_owned()
        } else {
            format!("{ns}/*")
        }
    };
    let groups: BTreeSet<String> = kinds.keys().map(|id| group_of(id)).collect();
    if groups.len() <= MAX_NODES {
        return build(
            &kinds,
            &edges,
            &slow,
            group_of,
            Some(format!(
                "{total} nodes, drawn as {} namespaces: each box stands for a namespace's \
                 services, and an edge takes its worst status. The heatmap shows every edge.",
                groups.len()
            )),
        );
    }
    // Only the problems: failing and untested edges and their ends.
    let problems: Vec<(&str, &str, &str, bool)> =
        edges.iter().copied().filter(|e| is_problem(e.2)).collect();
    let mut nodes: BTreeSet<&str> = BTreeSet::new();
    let mut kept = Vec::new();
    for e in problems {
        let new = [e.0, e.1].iter().filter(|n| !nodes.contains(*n)).count();
        if nodes.len() + new > MAX_NODES {
            break;
        }
        nodes.insert(e.0);
        nodes.insert(e.1);
        kept.push(e);
    }
    let kinds: BTreeMap<&str, Kind> = kinds
        .into_iter()
        .filter(|(id, _)| nodes.contains(id))
        .collect();
    let note = format!(
        "{total} nodes in {} namespaces: too many to draw. Only failing and untested edges and \
         their ends are drawn ({} nodes); the heatmap shows every edge.",
        groups.len(),
        kinds.len()
    );
    build(&kinds, &kept, &slow, |id| id.to_owned(), Some(note))
}

fn build(
    kinds: &BTreeMap<&str, Kind>,
    edges: &[(&str, &str, &str, bool)],
    slow: &BTreeSet<(&str, &str)>,
    group_of: impl Fn(&str) -> String,
    note: Option<String>,
) -> Model {
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut nodes: Vec<GNode> = Vec::new();
    for (id, kind) in kinds {
        let g = group_of(id);
        match index.get(&g) {
            Some(&i) => {
                nodes[i].members += 1;
                nodes[i].kind = Kind::Group;
            }
            None => {
                index.insert(g.clone(), nodes.len());
                nodes.push(GNode {
                    id: g,
                    kind: *kind,
                    members: 1,
                });
            }
        }
    }
    let mut merged: BTreeMap<(usize, usize), GEdge> = BTreeMap::new();
    for (a, b, status, critical) in edges {
        let (Some(&from), Some(&to)) = (index.get(&group_of(a)), index.get(&group_of(b))) else {
            continue;
        };
        let e = merged.entry((from, to)).or_insert_with(|| GEdge {
            from,
            to,
            status: (*status).to_owned(),
            critical: false,
            count: 0,
            slower: false,
        });
        e.count += 1;
        e.critical |= critical;
        e.slower |= slow.contains(&(*a, *b));
        if severity(status) > severity(&e.status) {
            e.status = (*status).to_owned();
        }
    }
    Model {
        nodes,
        edges: merged.into_values().collect(),
        note,
    }
}

fn short(label: &str) -> String {
    if label.chars().count() > LABEL_CHARS {
        label.chars().take(LABEL_CHARS - 1).chain(['…']).collect()
    } else {
        label.to_owned()
    }
}

fn node_text(n: &GNode) -> String {
    if n.members > 1 {
        format!("{} ({})", short(label(&n.id)), n.members)
    } else {
        short(label(&n.id))
    }
}

/// Boxes and paths as layout-rs draws them, by the tag in each element's `properties`.
#[derive(Default)]
struct Geometry {
    boxes: BTreeMap<usize, (Point, Point)>,
    paths: BTreeMap<usize, Vec<(Point, Point)>>,
}

fn tag(properties: &Option<String>, prefix: char) -> Option<usize> {
    properties
        .as_deref()
        .and_then(|p| p.strip_prefix(prefix))
        .and_then(|n| n.parse().ok())
}

impl RenderBackend for Geometry {
    fn draw_rect(
        &mut self,
        xy: Point,
        size: Point,
        _look: &StyleAttr,
        properties: Option<String>,
        _clip: Option<ClipHandle>,
    ) {
        if let Some(i) = tag(&properties, 'n') {
            self.boxes.insert(i, (xy, size));
        }
    }
    fn draw_line(&mut self, _: Point, _: Point, _: &StyleAttr, _: Option<String>) {}
    fn draw_circle(&mut self, _: Point, _: Point, _: &StyleAttr, _: Option<String>) {}
    fn draw_text(&mut self, _: Point, _: &str, _: &StyleAttr) {}
    fn draw_arrow(
        &mut self,
        path: &[(Point, Point)],
        _dashed: bool,
        _head: (bool, bool),
        _look: &StyleAttr,
        properties: Option<String>,
        _text: &str,
    ) {
        if let Some(i) = tag(&properties, 'e') {
            self.paths.insert(i, path.to_vec());
        }
    }
    fn create_clip(&mut self, _: Point, _: Point, _: usize) -> ClipHandle {
        0
    }
}

fn layout_geometry(model: &Model) -> Option<Geometry> {
    let run = || {
        let mut vg = VisualGraph::new(Orientation::LeftToRight);
        // layout-rs re-checks the whole graph for cycles after every edge it adds (quadratic);
        // it only ever adds edges that keep the graph acyclic, so the checks are skipped.
        vg.dag.set_validate(false);
        let handles: Vec<_> = model
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let text = node_text(n);
                let w = 7.0 * text.chars().count() as f64 + 30.0;
                let shape = ShapeKind::new_box(&text);
                let el = Element::create_with_properties(
                    shape,
                    StyleAttr::simple(),
                    Orientation::LeftToRight,
                    Point::new(w, 36.0),
                    format!("n{i}"),
                );
                vg.add_node(el)
            })
            .collect();
        for (j, e) in model.edges.iter().enumerate() {
            if e.from == e.to {
                // A namespace calling itself: said in the node's tooltip, not drawn as a loop.
                continue;
            }
            let arrow = Arrow {
                properties: Some(format!("e{j}")),
                ..Arrow::default()
            };
            vg.add_edge(arrow, handles[e.from], handles[e.to]);
        }
        let mut geo = Geometry::default();
        // Crossing minimisation (50 rounds of swaps over every rank) grows with the square of
        // the ranks' widths: a dense graph is laid out without it, in a bounded time.
        let optimize = model.edges.len() <= MAX_OPTIMIZED_EDGES;
        vg.do_it(false, !optimize, false, &mut geo);
        geo
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).ok()
}

fn stroke(status: &str) -> (&'static str, &'static str, &'static str) {
    // (colour, width, dash)
    match status {
        "failing" => ("#cf222e", "3.5", ""),
        "untested" => ("#bf8700", "2", "7 5"),
        "stubbed" => ("#6e7781", "1.5", "2 4"),
        "unexpected" => ("#8250df", "2", "12 3 2 3"),
        _ => ("#2da44e", "2", ""),
    }
}

fn f(v: f64) -> String {
    format!("{v:.1}")
}

/// The graph section: the SVG, its legend, and the note on how it was reduced.
pub fn render(report: &Report) -> Markup {
    let model = model(report);
    // Nodes blamed for a latency regression against the baseline: outlined.
    let blamed: BTreeSet<&str> = report
        .regressions
        .iter()
        .flatten()
        .filter_map(|r| r.blamed.as_deref())
        .collect();
    if model.nodes.is_empty() {
        return html! { p { "No node to draw." } };
    }
    let Some(geo) = layout_geometry(&model) else {
        tracing::warn!("graph layout failed; listing the edges instead");
        return html! {
            p { "The graph could not be laid out; its edges:" }
            ul { @for e in &model.edges {
                li { (label(&model.nodes[e.from].id)) " → " (label(&model.nodes[e.to].id)) ": " (e.status) }
            } }
        };
    };
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    let mut grow = |p: Point| {
        x0 = x0.min(p.x);
        y0 = y0.min(p.y);
        x1 = x1.max(p.x);
        y1 = y1.max(p.y);
    };
    for (xy, size) in geo.boxes.values() {
        grow(*xy);
        grow(xy.add(*size));
    }
    for path in geo.paths.values() {
        for (a, b) in path {
            grow(*a);
            grow(*b);
        }
    }
    if x0 > x1 {
        return html! { p { "No node to draw." } };
    }
    let pad = 12.0;
    let (vx, vy, vw, vh) = (x0 - pad, y0 - pad, x1 - x0 + 2.0 * pad, y1 - y0 + 2.0 * pad);
    html! {
        @if let Some(note) = &model.note { p.warnbox { (note) } }
        div.graphwrap {
            svg.graph #graph xmlns="http://www.w3.org/2000/svg" width=(f(vw)) height=(f(vh))
                viewBox={ (f(vx)) " " (f(vy)) " " (f(vw)) " " (f(vh)) } role="img" aria-label="service graph of the run" {
                defs {
                    @for s in ["covered", "failing", "untested", "stubbed", "unexpected"] {
                        marker id={ "arrow-" (s) } viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse" {
                            path d="M0,0L10,5L0,10z" fill=(stroke(s).0) {}
                        }
                    }
                }
                @for (j, e) in model.edges.iter().enumerate() {
                    @if let Some(path) = geo.paths.get(&j) {
                        (edge(&model, e, path))
                    }
                }
                @for (i, n) in model.nodes.iter().enumerate() {
                    @if let Some((xy, size)) = geo.boxes.get(&i) {
                        (node(&model, i, n, *xy, *size, blamed.contains(n.id.as_str())))
                    }
                }
            }
        }
        p.small { "Edges: green = covered; thick red = failing; dashed amber = untested; dotted grey = stubbed; dash-dot purple = unexpected; ★ = critical; a wide orange halo = slower than the baseline (its blamed node outlined in dashed orange). Shapes: rounded box = service, cylinder = database, hexagon = queue, dashed ellipse = external, stacked boxes = a namespace; a red outline = an end of a failing edge, amber = of an untested one. Hover an edge or a node for its name and status." }
    }
}

fn edge(model: &Model, e: &GEdge, path: &[(Point, Point)]) -> Markup {
    if path.len() < 2 {
        return html! {};
    }
    // layout-rs' path: an exit vector from the first point, then entry vectors (a cubic Bézier,
    // continued smoothly).
    let mut d = format!(
        "M{} {} C{} {}, {} {}, {} {}",
        f(path[0].0.x),
        f(path[0].0.y),
        f(path[0].1.x),
        f(path[0].1.y),
        f(path[1].0.x),
        f(path[1].0.y),
        f(path[1].1.x),
        f(path[1].1.y)
    );
    for p in &path[2..] {
        d.push_str(&format!(
            " S{} {}, {} {}",
            f(p.0.x),
            f(p.0.y),
            f(p.1.x),
            f(p.1.y)
        ));
    }
    let status = super::layout::status_class(&e.status);
    let (colour, width, dash) = stroke(status);
    let from = &model.nodes[e.from].id;
    let to = &model.nodes[e.to].id;
    html! {
        @if e.slower {
            // A wide halo under the edge: slower than the baseline, whatever its status.
            path class="edge-slower" d=(d) fill="none" stroke="#fb8500" stroke-width="11"
                stroke-opacity="0.4" stroke-linecap="round" data-caller=(from) data-callee=(to) {
                title { (label(from)) " → " (label(to)) ": slower than the baseline" }
            }
        }
        path class={ "edge " (status) } d=(d) stroke=(colour) stroke-width=(width)
            stroke-dasharray=[(!dash.is_empty()).then_some(dash)] marker-end={ "url(#arrow-" (status) ")" }
            data-caller=(from) data-callee=(to) {
            title {
                (label(from)) " → " (label(to)) ": " (e.status)
                @if e.critical { " ★ critical" }
                @if e.slower { ", slower than the baseline" }
                @if e.count > 1 { " (" (e.count) " edges)" }
            }
        }
        @if e.critical {
            @let mid = midpoint(path);
            text.critical-mark x=(f(mid.x)) y=(f(mid.y + 5.0)) text-anchor="middle"
                data-caller=(from) data-callee=(to) { "★" }
        }
    }
}

/// A point on the drawn edge about halfway along: the Bézier of a one-segment path at t = ½,
/// else the on-curve point of its middle segment.
fn midpoint(path: &[(Point, Point)]) -> Point {
    if path.len() == 2 {
        let (p0, p1, p2, p3) = (path[0].0, path[0].1, path[1].0, path[1].1);
        Point::new(
            (p0.x + 3.0 * p1.x + 3.0 * p2.x + p3.x) / 8.0,
            (p0.y + 3.0 * p1.y + 3.0 * p2.y + p3.y) / 8.0,
        )
    } else {
        path[path.len() / 2].1
    }
}

fn node(model: &Model, i: usize, n: &GNode, xy: Point, size: Point, blamed: bool) -> Markup {
    // The worst problem on an edge touching the node: failing outlines it red, untested amber.
    let touching = || model.edges.iter().filter(|e| e.from == i || e.to == i);
    let problem = if touching().any(|e| e.status == "failing") {
        Some("failing")
    } else if touching().any(|e| is_problem(&e.status)) {
        Some("untested")
    } else {
        None
    };
    let (x, y, w, h) = (xy.x, xy.y, size.x, size.y);
    let shape: Markup = match n.kind {
        Kind::Service => html! {
            rect.node-shape x=(f(x)) y=(f(y)) width=(f(w)) height=(f(h)) rx="6" {}
        },
        Kind::Group => html! {
            rect.node-shape x=(f(x + 5.0)) y=(f(y - 5.0)) width=(f(w)) height=(f(h)) rx="4" {}
            rect.node-shape x=(f(x)) y=(f(y)) width=(f(w)) height=(f(h)) rx="4" {}
        },
        Kind::Database => {
            let ry = 5.0;
            let d = format!(
                "M{} {} a{} {} 0 0 0 {} 0 v{} a{} {} 0 0 1 -{} 0 z",
                f(x),
                f(y + ry),
                f(w / 2.0),
                f(ry),
                f(w),
                f(h - 2.0 * ry),
                f(w / 2.0),
                f(ry),
                f(w)
            );
            html! {
                path.node-shape d=(d) {}
                ellipse.node-shape cx=(f(x + w / 2.0)) cy=(f(y + ry)) rx=(f(w / 2.0)) ry=(f(ry)) {}
            }
        }
        Kind::Messaging => {
            let k = 12.0;
            let pts = format!(
                "{},{} {},{} {},{} {},{} {},{} {},{}",
                f(x + k),
                f(y),
                f(x + w - k),
                f(y),
                f(x + w),
                f(y + h / 2.0),
                f(x + w - k),
                f(y + h),
                f(x + k),
                f(y + h),
                f(x),
                f(y + h / 2.0)
            );
            html! { polygon.node-shape points=(pts) {} }
        }
        Kind::External => html! {
            ellipse.node-shape cx=(f(x + w / 2.0)) cy=(f(y + h / 2.0)) rx=(f(w / 2.0)) ry=(f(h / 2.0)) stroke-dasharray="5 3" {}
        },
    };
    let self_status = model
        .edges
        .iter()
        .find(|e| e.from == i && e.to == i)
        .map(|e| e.status.as_str());
    html! {
        g class={ "node " (n.kind.as_str()) @if let Some(p) = problem { " problem " (p) } @if blamed { " blamed" } } data-node=(n.id) {
            title {
                (label(&n.id)) " (" (n.kind.as_str())
                @if n.members > 1 { ", " (n.members) " nodes" }
                ")"
                @if let Some(s) = self_status { "; calls within: " (s) }
                @if blamed { "; blamed for calls slower than the baseline" }
            }
            (shape)
            text x=(f(x + w / 2.0)) y=(f(y + h / 2.0 + 4.0)) text-anchor="middle" { (node_text(n)) }
        }
    }
}
