//! `diff` over a real store: the answer made from the runs' history digests and failures
//! (`query::diff_runs`) held to the answer made from their full analyses
//! (`query::diff_analysed`), for every pair of a small suite's runs and in every state the
//! records can be in — kept, missing (an older store, another configuration), made again, a
//! run whose spans aged out, a run with a trace pending — under the contexts that change the
//! expected set or what is reported (no source, a manifest with a mock, a baseline, other
//! latency thresholds, redaction and links).
//!
//! The suite: three runs of one suite, 24 tests each through `driver -> web`, `web -> api`
//! (`api -> db` below it) and `web -> payments`. The second run fails three tests on the charge
//! (an exception as evidence), fails a request outside any test, and its api answers four times
//! slower; the third has a silent failure, a call to an external address, a
//! payments mock instead of payments, and no database.

use std::collections::BTreeSet;

use crate::history::ChangeKind;
use crate::query::{self, ReportContext};
use crate::runs::RunAssigner;
use crate::store::{Durability, Reader, Retention, Store};

/// Tests per run: enough calls on `web -> api` for a p95 to be judged (20).
const TESTS: usize = 24;

const FAILED: &str = "test.case.result.status=fail status=error";

/// How a run of the suite differs from a healthy one.
#[derive(Default)]
struct Shape {
    /// Tests whose charge fails.
    failing: &'static [usize],
    /// A test that fails with no span in error below it.
    silent: Option<usize>,
    /// How long api takes to answer, in milliseconds.
    api_ms: u64,
    /// api queries the database.
    db: bool,
    /// web calls an external rates service by address.
    rates: bool,
    /// The node answering the charge.
    payments: &'static str,
    /// A request outside any test fails.
    background_failure: bool,
}

/// The run's spans as a fixture (`blame::tests::parse`'s format), every span naming the run and
/// the suite on its resource.
fn fixture(run: &str, shape: &Shape) -> String {
    let mut lines = Vec::new();
    for i in 0..TESTS {
        let t = format!("{run}-{i:02}");
        let fails = shape.failing.contains(&i);
        let failed = fails || shape.silent == Some(i);
        let api = shape.api_ms;
        let (code, err) = if fails {
            (500, " status=error")
        } else {
            (200, "")
        };
        lines.push(format!(
            "{t}:t - driver internal test_{i:02} 0..300 test.case.name=test_{i:02} {}",
            if failed { FAILED } else { "" }
        ));
        lines.push(format!(
            "{t}:c t driver client \"GET /shop\" 1..290 http.request.method=GET url.template=/shop http.response.status_code={code}{err}"
        ));
        lines.push(format!(
            "{t}:w c web server \"GET /shop\" 2..289 http.request.method=GET http.route=/shop http.response.status_code={code}{err}"
        ));
        lines.push(format!(
            "{t}:a w web client \"GET /items\" 3..{} http.request.method=GET url.template=/items http.response.status_code=200",
            5 + api
        ));
        lines.push(format!(
            "{t}:b a api server \"GET /items\" 4..{} http.request.method=GET http.route=/items http.response.status_code=200",
            4 + api
        ));
        if shape.db {
            lines.push(format!(
                "{t}:q b api client \"SELECT items\" 5..6 db.system.name=postgresql db.namespace=shop db.operation.name=SELECT db.collection.name=items"
            ));
        }
        lines.push(format!(
            "{t}:p w web client \"POST /charge\" 200..240 http.request.method=POST url.template=/charge http.response.status_code={code}{err}"
        ));
        let evidence = if fails {
            " status.message=\"card declined\" exception=\"CardError|card declined for order 7|5\" log=\"17|charge failed: card declined|6\""
        } else {
            ""
        };
        lines.push(format!(
            "{t}:s p {} server \"POST /charge\" 201..239 http.request.method=POST http.route=/charge http.response.status_code={code}{err}{evidence}",
            shape.payments
        ));
        if shape.rates {
            lines.push(format!(
                "{t}:r w web client \"GET /rates\" 250..260 http.request.method=GET url.full=\"http://rates.example:8080/rates?token=s3cret\" http.response.status_code=200"
            ));
        }
    }
    if shape.background_failure {
        lines.push(format!(
            "{run}-bg:h - web server \"GET /health\" 0..5 http.request.method=GET http.route=/health http.response.status_code=503 status=error status.message=\"database password=hunter2 rejected\""
        ));
    }
    let resource = format!(" resource.tracecov.run.id={run} resource.tracecov.suite=shop");
    lines.iter().map(|l| format!("{l}{resource}\n")).collect()
}

/// A store holding the suite, every trace's results computed; `healthy` received `age_ns` ago,
/// the others now.
fn suite(dir: &std::path::Path, healthy_age_ns: u64) -> (Store, Reader) {
    let mut store = Store::open(dir, Durability::Process).unwrap();
    let mut assigner = RunAssigner::open(dir, Vec::new()).unwrap();
    let now = crate::ingest::now_ns();
    let runs = [
        (
            "healthy",
            Shape {
                api_ms: 10,
                db: true,
                payments: "payments",
                ..Shape::default()
            },
            now - healthy_age_ns,
        ),
        (
            "broken",
            Shape {
                failing: &[0, 1, 2],
                api_ms: 40,
                db: true,
                payments: "payments",
                background_failure: true,
                ..Shape::default()
            },
            now - 2_000,
        ),
        (
            "mixed",
            Shape {
                silent: Some(5),
                api_ms: 10,
                rates: true,
                payments: "payments-mock",
                ..Shape::default()
            },
            now - 1_000,
        ),
    ];
    for (run, shape, received) in &runs {
        let (spans, _) = crate::blame::tests::parse(&fixture(run, shape));
        store.write(&spans, *received).unwrap();
        assigner
            .assign(&spans.iter().collect::<Vec<_>>(), *received)
            .unwrap();
    }
    let reader = store.reader();
    crate::results::settle::complete_all(&reader, &Default::default(), |_, _| {}).unwrap();
    (store, reader)
}

/// The contexts the suite is diffed in.
fn contexts() -> Vec<(&'static str, ReportContext)> {
    let manifest = crate::coverage::parse_manifest(
        r#"
version: 1
services:
  payments-mock:
    mock_of: payments
edges:
  - driver -> web
  - caller: web
    callee: api
    interfaces: [GET /items]
  - caller: web
    callee: payments
    critical: true
    interfaces: [POST /charge, POST /refund]
  - api -> db:postgresql/shop
  - caller: "*"
    callee: api
    interfaces: ["GET /items/:id"]
"#,
        std::path::Path::new("tracecov.yaml"),
    )
    .unwrap();
    let report = crate::report::ReportOptions {
        redactor: crate::redact::Redactor::disabled(),
        links: crate::links::LinkTemplate::preset("jaeger", "http://jaeger:16686").unwrap(),
    };
    vec![
        ("no source", ReportContext::default()),
        (
            "a manifest with a mock",
            ReportContext::default().with_manifest(manifest).unwrap(),
        ),
        (
            "a baseline",
            ReportContext {
                baselines: vec!["healthy".into()],
                ..ReportContext::default()
            },
        ),
        (
            "other latency thresholds",
            ReportContext {
                latency: crate::regressions::Thresholds::new(Some(1.2), Some(1.0)).unwrap(),
                ..ReportContext::default()
            },
        ),
        (
            "no redaction, Jaeger links",
            ReportContext {
                report,
                ..ReportContext::default()
            },
        ),
    ]
}

const PAIRS: [(&str, &str); 6] = [
    ("healthy", "broken"),
    ("broken", "healthy"),
    ("broken", "mixed"),
    ("mixed", "broken"),
    ("healthy", "mixed"),
    ("previous", "mixed"),
];

/// Every pair in every context: the digests' answer is the full analyses'. Returns the kinds
/// of change seen.
fn holds_to_the_full_analyses(reader: &Reader, state: &str) -> BTreeSet<ChangeKind> {
    let mut kinds = BTreeSet::new();
    for (what, ctx) in contexts() {
        for (base, run) in PAIRS {
            let full = query::diff_analysed(reader, base, run, &ctx).unwrap();
            let from_digests = query::diff_runs(reader, base, run, &ctx).unwrap();
            assert_eq!(
                from_digests, full,
                "diff {base} -> {run} with {what}, {state}: the digests' answer (left) is not the \
                 full analyses' (right)"
            );
            kinds.extend(full.changes.iter().map(|c| c.change));
        }
    }
    kinds
}

fn count(reader: &Reader, table: &str) -> i64 {
    reader
        .with_conn(|c| Ok(c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?))
        .unwrap()
}

fn delete(reader: &Reader, table: &str) {
    reader
        .with_conn(|c| Ok(c.execute(&format!("DELETE FROM {table}"), [])?))
        .unwrap();
}

#[test]
fn a_diff_from_digests_is_the_diff_from_the_full_analyses() {
    let dir = tempfile::tempdir().unwrap();
    let hour = std::time::Duration::from_secs(3600);
    let (mut store, reader) = suite(dir.path(), 2 * hour.as_nanos() as u64);

    // No digest kept yet: the first diff makes and keeps them.
    assert_eq!(count(&reader, "run_failures"), 0);
    let kinds = holds_to_the_full_analyses(&reader, "records made on the way");
    assert_eq!(
        count(&reader, "run_failures"),
        3,
        "each run's failures kept"
    );
    assert_eq!(count(&reader, "run_digests"), 3);
    // The suite shows every way an item changes, so each way is held to the full analyses.
    for kind in [
        ChangeKind::NewlyFailing,
        ChangeKind::Fixed,
        ChangeKind::NewlyUntested,
        ChangeKind::Appeared,
        ChangeKind::Disappeared,
        ChangeKind::Slower,
        ChangeKind::Faster,
    ] {
        assert!(kinds.contains(&kind), "no {kind:?} among {kinds:?}");
    }
    let d = query::diff_runs(&reader, "healthy", "broken", &ReportContext::default()).unwrap();
    assert_eq!(d.failures.new.len(), 4, "{:#?}", d.failures);
    assert!(
        d.failures
            .new
            .iter()
            .any(|f| f.evidence.exception.is_some() && f.flaky),
        "{:#?}",
        d.failures.new
    );
    assert!(d.failures.new.iter().any(|f| f.test.is_none()));

    // Read back as kept.
    holds_to_the_full_analyses(&reader, "records kept");

    // An older store: digests, but no failures kept beside them.
    delete(&reader, "run_failures");
    holds_to_the_full_analyses(&reader, "failures missing");
    // Neither kept (a new version, another configuration).
    delete(&reader, "run_failures");
    delete(&reader, "run_digests");
    holds_to_the_full_analyses(&reader, "nothing kept");

    // The healthy run's spans age out; its rollup and records stay.
    let now = crate::ingest::now_ns();
    store
        .enforce_retention(
            Retention {
                max_age: hour,
                max_bytes: u64::MAX,
                ..Retention::default()
            },
            now,
        )
        .unwrap();
    let healthy = query::resolve_run(&reader, "healthy").unwrap();
    assert_eq!(
        reader
            .with_conn(|c| crate::runs::run_traces(c, &healthy.id))
            .unwrap()
            .len(),
        0,
        "the healthy run's spans aged out"
    );
    holds_to_the_full_analyses(&reader, "the healthy run's spans aged out");
    delete(&reader, "run_failures");
    delete(&reader, "run_digests");
    holds_to_the_full_analyses(&reader, "the healthy run's spans aged out, nothing kept");

    // A late span re-opens one of the mixed run's traces: its kept records are stale until its
    // results are computed again, which both answers do first.
    let (late, _) = crate::blame::tests::parse(
        "mixed-03:x w web client \"GET /items\" 280..281 http.request.method=GET url.template=/items http.response.status_code=503 status=error resource.tracecov.run.id=mixed resource.tracecov.suite=shop",
    );
    store.write(&late, crate::ingest::now_ns()).unwrap();
    holds_to_the_full_analyses(&reader, "a trace of the mixed run pending");
}

#[test]
fn a_runs_failures_read_back_as_they_were_kept() {
    use super::failures::{FAILURES_VERSION, RunFailures};
    let (spans, opts) = crate::blame::tests::parse(&fixture(
        "r",
        &Shape {
            failing: &[0, 1],
            silent: Some(2),
            api_ms: 10,
            payments: "payments",
            background_failure: true,
            ..Shape::default()
        },
    ));
    let (_, blame) = crate::results::merge(&crate::results::compute(&spans, &opts), &opts);
    assert_eq!(blame.failures.len(), 4);
    assert!(
        blame
            .failures
            .iter()
            .any(|f| f.evidence.exception.is_some() && !f.evidence.logs.is_empty()),
        "the evidence read back holds an exception and log records"
    );
    let kept = RunFailures::of(&blame);
    let back = RunFailures::decode(kept.as_bytes().to_vec()).expect("reads back");
    assert_eq!(back.failures(), blame.failures.as_slice());
    assert_eq!(back, kept);

    // Another version, a cut record, bytes that are no record: made again, never misread.
    let mut other = kept.as_bytes().to_vec();
    other[..4].copy_from_slice(&(FAILURES_VERSION + 1).to_le_bytes());
    assert_eq!(RunFailures::decode(other), None);
    let bytes = kept.as_bytes();
    for cut in [0, 3, 4, bytes.len() / 2, bytes.len() - 1] {
        assert_eq!(
            RunFailures::decode(bytes[..cut].to_vec()),
            None,
            "cut at {cut}"
        );
    }
    assert_eq!(RunFailures::decode(vec![0xff; 64]), None);
}
