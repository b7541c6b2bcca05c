//! The bug report of one failure (`tracecov bug TRACE_ID [--span SPAN_ID]`): Markdown for a
//! tracker, JSON for scripts, and the trace itself as a redacted OTLP/JSON attachment.
//!
//! Owns `BugReport` and its renderings. Everything is built from spans handed in (the trace, and
//! any traces linked to it the caller has), through the same analysis as the run report, so a
//! bug report and the report of its run always agree. Pure except `attach`, which writes to the
//! `Write` it is given.
//!
//! The JSON form is the failure's object exactly as in the JSON report, at top level, with `run`
//! (`{"id", "name"}`, or null for a trace in no run) and `path` (span ids from the failing span
//! down to the span the failure is placed on) added (DESIGN, `tracecov bug`).

use std::fmt::Write as _;
use std::io;

use serde::Serialize;

use crate::graph::{AnalysisOptions, Forest, analyze_forest};
use crate::model::{Span, SpanId, SpanKind, StatusCode, TraceId};
use crate::redact::Redactor;
use crate::report::{self, ReportOptions, RunInfo};

use super::{Failure, classify, grpc_code, grpc_name};

/// Why there is no bug report to write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BugError {
    #[error("trace {0} holds no spans")]
    NoSpans(TraceId),
    #[error("trace {0} holds no failure and breaks no expectation")]
    NoFailure(TraceId),
    #[error(
        "trace {trace} holds no failure placed on (or starting at) span {span}, nor a broken expectation on it"
    )]
    NoFailureAtSpan { trace: TraceId, span: SpanId },
}

/// One span on the path from the failing span to where the failure is placed.
#[derive(Debug, Clone, PartialEq)]
pub struct PathStep {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub service: String,
    pub kind: SpanKind,
    /// Redacted.
    pub name: String,
    pub duration_ms: Option<f64>,
    pub error: bool,
    /// `HTTP 500`, `gRPC DEADLINE_EXCEEDED`, or none.
    pub code: Option<String>,
    /// The origin of the walk (the deepest span in error).
    pub origin: bool,
}

/// The resource facts that matter for a bug: which build of a service, in which environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFacts {
    pub service: String,
    pub version: Option<String>,
    pub environment: Option<String>,
}

/// A bug report, ready to render.
#[derive(Debug, Clone, PartialEq)]
pub struct BugReport {
    /// The failure as in the JSON report (redacted, with its link).
    pub failure: report::Failure,
    pub run: Option<RunInfo>,
    pub path: Vec<PathStep>,
    /// The services on the path, in path order, each once.
    pub services: Vec<ServiceFacts>,
    /// The link to the failing span (the test case, or the failing request).
    pub failing_link: String,
    /// The failing span's duration.
    pub failing_ms: Option<f64>,
}

/// The bug report of a broken expectation (`tracecov bug TRACE --span SPAN` on a violation's
/// span): what was expected, what happened, and the path from the test down to that span.
#[derive(Debug, Clone, PartialEq)]
pub struct ViolationBug {
    /// The violation as in the JSON report (redacted, with its link).
    pub violation: report::violations::Violation,
    pub run: Option<RunInfo>,
    /// From the test's span (or the trace's root when the trace holds no test) down to the
    /// violation's span.
    pub path: Vec<PathStep>,
    pub services: Vec<ServiceFacts>,
}

/// What `tracecov bug` writes about: a failure, or a broken expectation.
#[derive(Debug, Clone, PartialEq)]
pub enum Bug {
    Failure(Box<BugReport>),
    Violation(Box<ViolationBug>),
}

impl Bug {
    pub fn markdown(&self) -> String {
        match self {
            Bug::Failure(b) => bug_markdown(b),
            Bug::Violation(v) => violation_markdown(v),
        }
    }

    pub fn json(&self) -> String {
        match self {
            Bug::Failure(b) => bug_json(b),
            Bug::Violation(v) => violation_json(v),
        }
    }
}

/// The violation of `trace_id` on `span`, or the trace's first, from a run's violations.
pub fn pick_violation(
    violations: &[crate::expect::Violation],
    trace_id: TraceId,
    span: Option<SpanId>,
) -> Option<&crate::expect::Violation> {
    violations.iter().find(|v| {
        v.trace_id == *trace_id.as_bytes() && span.is_none_or(|s| v.span_id == *s.as_bytes())
    })
}

/// The ids from the test's span down to `at`: up through `at`'s parents to the nearest span in
/// `tests` (or the trace's root), then `test` in front when the walk did not reach it (a
/// consumer's trace that joined its test through a link).
pub fn path_to(
    forest: &Forest<'_>,
    at: (TraceId, SpanId),
    tests: &std::collections::HashSet<(TraceId, SpanId)>,
    test: Option<(TraceId, SpanId)>,
) -> Vec<(TraceId, SpanId)> {
    let Some(r) = forest.resolve(at.0, at.1) else {
        return vec![at];
    };
    let tree = forest.tree(r.tree);
    let mut up = vec![at];
    if !tests.contains(&at) {
        for ix in tree.ancestors(r.span) {
            let id = (at.0, tree.span(ix).span_id);
            up.push(id);
            if tests.contains(&id) {
                break;
            }
        }
    }
    if let Some(t) = test.filter(|t| !up.contains(t)) {
        up.push(t);
    }
    up.reverse();
    up
}

/// The bug report of `violation` (as the report writes it), its path from `path` (see
/// `path_to`), written from `spans`.
pub fn violation_bug(
    violation: report::violations::Violation,
    path: &[(TraceId, SpanId)],
    spans: &[Span],
    run: Option<&RunInfo>,
    opts: &ReportOptions,
) -> ViolationBug {
    let forest = Forest::build(spans);
    let (path, services) = path_steps(&forest, path, None, &opts.redactor);
    ViolationBug {
        violation,
        run: run.cloned(),
        path,
        services,
    }
}

/// Builds the bug report for the failure of `trace_id` placed on (or starting at) `span`, or the
/// first failure of the trace. `spans` holds the trace, and may hold traces linked to it.
pub fn bug_report(
    spans: &[Span],
    trace_id: TraceId,
    span: Option<SpanId>,
    analysis: &AnalysisOptions,
    run: Option<&RunInfo>,
    opts: &ReportOptions,
) -> Result<BugReport, BugError> {
    if !spans.iter().any(|s| s.trace_id == trace_id) {
        return Err(BugError::NoSpans(trace_id));
    }
    let forest = Forest::build(spans);
    let mut graph = analyze_forest(&forest, analysis);
    let blame = super::analyze(&forest, &mut graph);
    let failure = pick(&blame.failures, trace_id, span)?;
    Ok(bug_report_for(failure, spans, run, opts))
}

/// The failure of `trace_id` placed on (or starting at) `span`, or its first failure.
pub fn pick(
    failures: &[Failure],
    trace_id: TraceId,
    span: Option<SpanId>,
) -> Result<&Failure, BugError> {
    let mut failures = failures.iter().filter(|f| f.trace_id == trace_id);
    match span {
        None => failures.next().ok_or(BugError::NoFailure(trace_id)),
        Some(id) => failures
            .find(|f| f.placed_span == id || f.failing_span == id)
            .ok_or(BugError::NoFailureAtSpan {
                trace: trace_id,
                span: id,
            }),
    }
}

/// The bug report of a failure found before (a run's blame), written from the spans of the
/// traces on its path (`spans`; more do no harm).
pub fn bug_report_for(
    failure: &Failure,
    spans: &[Span],
    run: Option<&RunInfo>,
    opts: &ReportOptions,
) -> BugReport {
    let forest = Forest::build(spans);
    let (path, services) = path_steps(&forest, &failure.path, failure.origin, &opts.redactor);
    let failing = forest
        .resolve(failure.trace_id, failure.failing_span)
        .map(|f| forest.span(f));
    BugReport {
        failure: report::failure(failure, opts),
        run: run.cloned(),
        path,
        services,
        failing_link: opts.links.render(failure.trace_id, failure.failing_span),
        failing_ms: failing.and_then(duration_ms),
    }
}

/// The spans at `ids` that the forest holds, as path steps (redacted), and the services they
/// cross, each once in path order.
fn path_steps(
    forest: &Forest<'_>,
    ids: &[(TraceId, SpanId)],
    origin: Option<(TraceId, SpanId)>,
    r: &Redactor,
) -> (Vec<PathStep>, Vec<ServiceFacts>) {
    let mut path = Vec::new();
    let mut services: Vec<ServiceFacts> = Vec::new();
    for &(t, s) in ids {
        let Some(at) = forest.resolve(t, s) else {
            continue;
        };
        let span = forest.span(at);
        let code = match (classify::http_status(span), grpc_code(&span.attributes)) {
            (_, Some(g)) => Some(format!("gRPC {}", grpc_name(g))),
            (Some(h), None) => Some(format!("HTTP {h}")),
            (None, None) => None,
        };
        path.push(PathStep {
            trace_id: t,
            span_id: s,
            service: r.text(span.service()),
            kind: span.kind,
            name: r.text(&span.name),
            duration_ms: duration_ms(span),
            error: crate::graph::semconv::in_error(span) || span.status.code == StatusCode::Error,
            code,
            origin: origin == Some((t, s)),
        });
        if !services.iter().any(|f| f.service == r.text(span.service())) {
            let attrs = &span.resource.attributes;
            services.push(ServiceFacts {
                service: r.text(span.service()),
                version: attrs.str("service.version").map(|v| r.text(v)),
                environment: attrs
                    .first_str(&["deployment.environment.name", "deployment.environment"])
                    .map(|v| r.text(v)),
            });
        }
    }
    (path, services)
}

fn duration_ms(span: &Span) -> Option<f64> {
    (span.end_ns != 0 && span.end_ns >= span.start_ns)
        .then(|| ((span.end_ns - span.start_ns) as f64 / 1e3).round() / 1e3)
}

/// A report object (a failure, a violation) at top level with `run` and `path` added.
#[derive(Serialize)]
struct WithRunAndPath<'a, T: Serialize> {
    #[serde(flatten)]
    subject: &'a T,
    run: Option<RunJson<'a>>,
    path: Vec<String>,
}

#[derive(Serialize)]
struct RunJson<'a> {
    id: &'a str,
    name: &'a str,
}

fn with_run_and_path<T: Serialize>(
    subject: &T,
    run: Option<&RunInfo>,
    path: &[PathStep],
) -> String {
    let doc = WithRunAndPath {
        subject,
        run: run.map(|r| RunJson {
            id: &r.id,
            name: &r.name,
        }),
        path: path.iter().map(|p| p.span_id.to_hex()).collect(),
    };
    // Plain structs of strings and numbers: serializing cannot fail.
    let mut out =
        report::json_escape_controls(serde_json::to_string_pretty(&doc).unwrap_or_default());
    out.push('\n');
    out
}

/// The bug report as JSON: the failure's report object at top level, plus `run` and `path`.
pub fn bug_json(bug: &BugReport) -> String {
    with_run_and_path(&bug.failure, bug.run.as_ref(), &bug.path)
}

/// A violation's bug report as JSON: the violation's report object at top level, plus `run` and
/// `path` (span ids from the test's span down to the violation's).
pub fn violation_json(bug: &ViolationBug) -> String {
    with_run_and_path(&bug.violation, bug.run.as_ref(), &bug.path)
}

/// Text for inline code in Markdown: backticks would end the span early.
fn code(text: &str) -> String {
    format!("`{}`", text.replace('`', "'"))
}

/// Text for a Mermaid label in double quotes.
fn mermaid(text: &str) -> String {
    text.replace('"', "#quot;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else if v < 1.0 {
        // Sub-millisecond hops are common on one machine: keep their digits.
        format!("{v:.3} ms")
    } else {
        format!("{v:.1} ms")
    }
}

/// The bug report as Markdown for GitHub or GitLab: title, summary, the failing hop and class,
/// test and run, the path as an indented list and a Mermaid flowchart, evidence, timings, the
/// services' versions and environments, and trace links.
pub fn bug_markdown(bug: &BugReport) -> String {
    let f = &bug.failure;
    let mut out = String::new();
    let subject = f.test.as_deref().unwrap_or("a request");
    let place = match &f.hop {
        Some(h) => format!(" at {} -> {} ({})", h.caller, h.callee, h.operation),
        None => String::new(),
    };
    let _ = writeln!(out, "# {subject} failed: {}{place}\n", f.class);
    let _ = writeln!(out, "{}\n", f.summary);

    out.push_str("| | |\n|---|---|\n");
    if let Some(h) = &f.hop {
        let _ = writeln!(
            out,
            "| Failing hop | {} → {}, {} |",
            code(&h.caller),
            code(&h.callee),
            code(&h.operation)
        );
    }
    let _ = writeln!(out, "| Class | {} |", code(&f.class));
    if let Some(b) = &f.blamed {
        let _ = writeln!(out, "| Blamed | {} |", code(b));
    }
    if let Some(t) = &f.test {
        let _ = writeln!(out, "| Test | {} |", code(t));
    }
    match &bug.run {
        Some(run) => {
            let _ = writeln!(out, "| Run | {} ({}) |", run.name, code(&run.id));
        }
        None => out.push_str("| Run | none |\n"),
    }
    let _ = writeln!(out, "| Trace | {} |", code(&f.trace_id));
    let _ = writeln!(out, "| Span | {} |", code(&f.span_id));

    out.push_str("\n## Path\n\n");
    let last = bug.path.len().saturating_sub(1);
    write_path(&mut out, &bug.path, |depth, step| {
        let mut marks = String::new();
        if f.evidence
            .no_error_recorded
            .contains(&step.span_id.to_hex())
        {
            marks.push_str(" — recorded no error, stepped through");
        }
        if step.origin && depth != last {
            marks.push_str(" — origin of the errors");
        }
        if depth == last {
            marks.push_str(" — **failure placed here**");
        }
        marks
    });
    write_flowchart(&mut out, &bug.path);

    out.push_str("\n## Evidence\n\n");
    let e = &f.evidence;
    let mut any = false;
    if let Some(m) = &e.status_message {
        let _ = writeln!(out, "- Status message: {}", code(m));
        any = true;
    }
    if let Some(h) = e.http_status {
        let _ = writeln!(out, "- HTTP status: {h}");
        any = true;
    }
    if let Some(g) = &e.rpc_status {
        let _ = writeln!(out, "- gRPC status: {}", code(g));
        any = true;
    }
    if let Some(x) = &e.exception {
        let _ = writeln!(
            out,
            "- Exception: {}{}",
            code(x.kind.as_deref().unwrap_or("exception")),
            x.message
                .as_deref()
                .map(|m| format!(": {}", code(m)))
                .unwrap_or_default()
        );
        if let Some(st) = &x.stacktrace {
            let _ = writeln!(out, "\n```\n{}\n```", st.replace("```", "'''"));
        }
        any = true;
    }
    if !e.logs.is_empty() {
        let service = bug
            .path
            .last()
            .map_or("the service", |p| p.service.as_str());
        let _ = writeln!(
            out,
            "- Logged by {} on the span the failure is placed on:",
            code(service)
        );
        for l in &e.logs {
            let at = l.time_unix_nano.parse().map(utc).unwrap_or_default();
            if l.body.contains('\n') {
                let body = l.body.trim_end().replace("```", "'''");
                let _ = writeln!(
                    out,
                    "  - {} at {at}:\n\n    ```\n    {}\n    ```",
                    code(&l.severity),
                    body.replace('\n', "\n    ")
                );
            } else {
                let _ = writeln!(out, "  - {} at {at}: {}", code(&l.severity), code(&l.body));
            }
        }
        any = true;
    }
    for id in &e.no_error_recorded {
        let Some(i) = bug.path.iter().position(|p| p.span_id.to_hex() == *id) else {
            continue;
        };
        let call = &bug.path[i];
        let above = i.checked_sub(1).map(|a| &bug.path[a]);
        let below = bug.path.get(i + 1);
        // A span in another service than its caller is the callee's side of the call.
        let (from, to) = match above {
            Some(a) if a.service != call.service => (a.service.as_str(), call.service.as_str()),
            _ => (
                call.service.as_str(),
                below.map_or("its callee", |b| b.service.as_str()),
            ),
        };
        let _ = writeln!(
            out,
            "- The call from {} to {} ({}) recorded no error, but the failure started below it: \
             the walk stepped through it.",
            code(from),
            code(to),
            code(&call.name)
        );
        any = true;
    }
    if !f.collateral.is_empty() {
        let ids: Vec<String> = f.collateral.iter().map(|c| code(c)).collect();
        let _ = writeln!(
            out,
            "- Consequences (errors caused by this one): {}",
            ids.join(", ")
        );
        any = true;
    }
    if !any {
        out.push_str("- No span below the test reported an error.\n");
    }

    out.push_str("\n## Timings\n\n");
    if let Some(c) = e.client_ms {
        let _ = writeln!(out, "- Failing hop, caller's side: {}", ms(c));
    }
    if let Some(s) = e.server_ms {
        let _ = writeln!(out, "- Failing hop, callee's side: {}", ms(s));
    }
    if let Some(t) = bug.failing_ms {
        let what = if f.test.is_some() { "Test" } else { "Request" };
        let _ = writeln!(out, "- {what}: {}", ms(t));
    }

    write_services(&mut out, &bug.services);

    out.push_str("\n## Links\n\n");
    let _ = writeln!(out, "- [The span the failure is placed on]({})", f.link);
    let _ = writeln!(out, "- [The failing span]({})", bug.failing_link);
    out
}

/// A violation's bug report as Markdown: title, what was expected and what happened, the test
/// and run, the path from the test down to the offending span (list and Mermaid flowchart), the
/// services' versions and environments, and the link.
pub fn violation_markdown(bug: &ViolationBug) -> String {
    let v = &bug.violation;
    let mut out = String::new();
    let subject = v.test.as_deref().unwrap_or("a request");
    let place = match &v.hop {
        Some(h) => format!(" at {} -> {} ({})", h.caller, h.callee, h.operation),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "# {subject} broke the expectation \"{}\"{place}\n",
        v.expectation
    );
    let _ = writeln!(
        out,
        "{}\n\nA broken expectation is not a failure: the test may have passed. It says the \
         test's traces did not do what the manifest's `expect:` asks.\n",
        v.summary
    );
    out.push_str("| | |\n|---|---|\n");
    let _ = writeln!(out, "| Expectation | {} |", code(&v.expectation));
    let _ = writeln!(out, "| Expected | {} |", v.expected.replace('|', "\\|"));
    let _ = writeln!(out, "| Observed | {} |", v.observed.replace('|', "\\|"));
    match &v.hop {
        Some(h) => {
            let _ = writeln!(
                out,
                "| Hop | {} → {}, {} |",
                code(&h.caller),
                code(&h.callee),
                code(&h.operation)
            );
        }
        None => out.push_str("| Hop | none: the call was never made |\n"),
    }
    if let Some(t) = &v.test {
        let _ = writeln!(out, "| Test | {} |", code(t));
    }
    match &bug.run {
        Some(run) => {
            let _ = writeln!(out, "| Run | {} ({}) |", run.name, code(&run.id));
        }
        None => out.push_str("| Run | none |\n"),
    }
    let _ = writeln!(out, "| Trace | {} |", code(&v.trace_id));
    let _ = writeln!(out, "| Span | {} |", code(&v.span_id));

    out.push_str("\n## Path\n\n");
    let last = bug.path.len().saturating_sub(1);
    // For `repeated` the span is the one the repeated calls were made under.
    let at = match &v.hop {
        None => " — **the test that never made the call**",
        Some(_) => " — **expectation broken here**",
    };
    write_path(&mut out, &bug.path, |depth, _| {
        if depth == last {
            at.to_owned()
        } else {
            String::new()
        }
    });
    write_flowchart(&mut out, &bug.path);
    write_services(&mut out, &bug.services);
    out.push_str("\n## Links\n\n");
    let _ = writeln!(out, "- [The span that broke the expectation]({})", v.link);
    out
}

/// The path as an indented list, one step a level deeper than the one before, each with its
/// code, duration and error, then what `marks` says of it.
fn write_path(out: &mut String, path: &[PathStep], marks: impl Fn(usize, &PathStep) -> String) {
    for (depth, step) in path.iter().enumerate() {
        let mut facts: Vec<String> = Vec::new();
        facts.extend(step.code.clone());
        facts.extend(step.duration_ms.map(ms));
        if step.error {
            facts.push("error".to_owned());
        }
        let _ = writeln!(
            out,
            "{}- {} {} {} ({}){}",
            "  ".repeat(depth),
            code(&step.service),
            step.kind.as_str(),
            code(&step.name),
            facts.join(", "),
            marks(depth, step)
        );
    }
}

/// The path as a Mermaid flowchart, its last step outlined.
fn write_flowchart(out: &mut String, path: &[PathStep]) {
    out.push_str("\n```mermaid\nflowchart TD\n");
    for (i, step) in path.iter().enumerate() {
        let mut label = format!("{}: {}", step.service, step.name);
        if let Some(c) = &step.code {
            label.push_str("<br/>");
            label.push_str(c);
        }
        let label = mermaid(&label).replace("#lt;br/#gt;", "<br/>");
        let _ = writeln!(out, "  s{i}[\"{label}\"]");
        if i > 0 {
            let _ = writeln!(out, "  s{} --> s{i}", i - 1);
        }
    }
    if !path.is_empty() {
        out.push_str("  classDef failed fill:#fdd,stroke:#c00\n");
        let _ = writeln!(out, "  class s{} failed", path.len() - 1);
    }
    out.push_str("```\n");
}

/// The `## Services` section: each service's version and environment.
fn write_services(out: &mut String, services: &[ServiceFacts]) {
    out.push_str("\n## Services\n\n");
    for s in services {
        let _ = writeln!(
            out,
            "- {}: version {}, environment {}",
            code(&s.service),
            s.version.as_deref().map_or("unknown".to_owned(), code),
            s.environment.as_deref().map_or("unknown".to_owned(), code),
        );
    }
}

/// A time in nanoseconds since the epoch as UTC `YYYY-MM-DD HH:MM:SS.mmm UTC`: log records are
/// found again by their time.
fn utc(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let millis = ns / 1_000_000 % 1000;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{millis:03} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Writes the spans (the trace) redacted, as OTLP/JSON lines: the `--attach` file.
pub fn attach(spans: &[Span], redactor: &Redactor, out: &mut dyn io::Write) -> io::Result<()> {
    crate::import::write_otlp_json_lines(&redactor.redact_spans(spans), out)
}
