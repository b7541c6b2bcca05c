//! Identity: merging per-trace results gives the report that analysing all the spans at once
//! gives. The analysis fixtures of `graph` and `blame` call `assert_merge_identity` on every
//! fixture they check; the tests here add the recorded traces of `tests/fixtures` and a
//! generated run.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;

use super::*;
use crate::graph::Forest;
use crate::model::Span;
use crate::report::{self, ReportOptions, RunInfo};

/// Per-trace results the way the settle worker computes them: each trace with the traces linked
/// to it either way.
pub(crate) fn per_trace(spans: &[Span], opts: &AnalysisOptions) -> Vec<TraceResult> {
    let mut by_trace: BTreeMap<TraceId, Vec<Span>> = BTreeMap::new();
    for s in spans {
        by_trace.entry(s.trace_id).or_default().push(s.clone());
    }
    let mut adjacent: HashMap<TraceId, BTreeSet<TraceId>> = HashMap::new();
    for s in spans {
        for l in &s.links {
            if l.trace_id != s.trace_id && by_trace.contains_key(&l.trace_id) {
                adjacent.entry(s.trace_id).or_default().insert(l.trace_id);
                adjacent.entry(l.trace_id).or_default().insert(s.trace_id);
            }
        }
    }
    let mut out = Vec::new();
    for &id in by_trace.keys() {
        let mut component = BTreeSet::new();
        let mut queue = VecDeque::from([id]);
        while let Some(t) = queue.pop_front() {
            if component.insert(t) {
                queue.extend(adjacent.get(&t).into_iter().flatten().copied());
            }
        }
        let spans: Vec<Span> = component
            .iter()
            .flat_map(|t| by_trace[t].iter().cloned())
            .collect();
        let mine = compute(&spans, opts)
            .into_iter()
            .find(|r| r.trace() == Some(id))
            .expect("a result for every trace");
        // What is stored is what is read back.
        let decoded = TraceResult::decode(&mine.encode()).unwrap();
        assert_eq!(decoded, mine);
        out.push(decoded);
    }
    out
}

fn json_report(graph: &crate::graph::RunGraph, blame: &crate::blame::Blame) -> String {
    let info = RunInfo {
        id: "run".to_owned(),
        name: "run".to_owned(),
    };
    let opts = ReportOptions::default();
    let r = report::build_with(&info, graph, blame, &opts);
    serde_json::to_string_pretty(&r).unwrap()
}

/// The edges of a graph with everything they hold (counts, classes, tests, latency sketches,
/// error examples).
fn edges(g: &crate::graph::RunGraph) -> Vec<(String, String, crate::graph::Edge)> {
    g.edges()
        .map(|e| (e.caller.id.clone(), e.callee.id.clone(), e.edge.clone()))
        .collect()
}

/// Asserts that merging the per-trace results of `spans` reports exactly what analysing them
/// all at once reports (graph with its latency sketches, classes and examples, tests, failures,
/// diagnostics), in any order, and after every trace's contribution was replaced.
pub(crate) fn assert_merge_identity(spans: &[Span], opts: &AnalysisOptions) {
    let forest = Forest::build(spans);
    let mut whole = crate::graph::analyze_forest(&forest, opts);
    let whole_blame = crate::blame::analyze(&forest, &mut whole);
    let results = per_trace(spans, opts);
    let (merged, merged_blame) = merge(&results, opts);
    assert_eq!(
        json_report(&merged, &merged_blame),
        json_report(&whole, &whole_blame),
        "merged per-trace results differ from the whole-run analysis"
    );
    assert_eq!(edges(&merged), edges(&whole), "edges differ");
    assert_eq!(merged.tests(), whole.tests(), "tests differ");
    assert_eq!(
        merged_blame.failures, whole_blame.failures,
        "failures differ"
    );
    // Arrival order does not matter: results merged in reverse give the same graph.
    let mut reversed = results.clone();
    reversed.reverse();
    let (again, again_blame) = merge(&reversed, opts);
    assert_eq!(
        json_report(&again, &again_blame),
        json_report(&merged, &merged_blame)
    );
    // A stored rollup survives every trace being re-opened: its contribution taken away and
    // added again, one trace at a time, and through its stored form.
    let mut rollup = Rollup::of_all(&results);
    for r in &results {
        rollup.subtract(r);
        rollup.add(&Rollup::of(r));
    }
    // Stored, the test cases go to rows of their own.
    let mut stored = Rollup::decode(&rollup.encode()).unwrap();
    for (key, (name, failed)) in rollup.test_cases() {
        stored.put_test_case(*key, name.clone(), *failed);
    }
    let (replaced, replaced_blame) = stored.graph(opts);
    assert_eq!(edges(&replaced), edges(&whole), "edges after replacing");
    assert_eq!(
        json_report(&replaced, &replaced_blame),
        json_report(&whole, &whole_blame),
        "report after replacing every trace"
    );
}

fn fixture_spans(rel: &str) -> Vec<Span> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    let mut spans = Vec::new();
    crate::import::import_file(&path, None, &mut |batch: Vec<Span>| {
        spans.extend(batch);
        Ok(())
    })
    .unwrap();
    spans
}

#[test]
fn recorded_traces_merge_to_the_whole_run_report() {
    let names = [
        "zipkin-lens/ascend.json",
        "zipkin-lens/envoy.json",
        "zipkin-lens/messaging-kafka.json",
        "zipkin-lens/messaging.json",
        "zipkin-lens/messaging2.json",
        "zipkin-lens/simple-db-p6.json",
        "zipkin-lens/skew.json",
        "zipkin-lens/smartthings-mobile-web-install.json",
        "zipkin-lens/yelp.json",
        "otlp-json/spec-example.json",
        "otlp-json/hotrod-n-plus-one.jsonl",
    ];
    let mut all = Vec::new();
    for name in names {
        let spans = fixture_spans(name);
        assert!(!spans.is_empty(), "{name}");
        assert_merge_identity(&spans, &AnalysisOptions::default());
        all.extend(spans);
    }
    // All of them as one run: addresses and services learned in one file resolve calls in
    // another, as they do when analysed together.
    assert_merge_identity(&all, &AnalysisOptions::default());
}

#[test]
fn a_generated_run_of_50_000_spans_merges_to_the_whole_run_report() {
    let spans = crate::bench::analysis::generate(50_000);
    assert!(spans.len() >= 50_000);
    assert_merge_identity(&spans, &AnalysisOptions::default());
}

/// A call to an address that only a later trace's server span names: per trace, the caller's
/// trace cannot know whose address it is; merged, it must land on that service.
#[test]
fn an_address_learned_in_another_trace_resolves_at_merge() {
    let (spans, opts) = crate::graph::fixture::parse(
        "t1:a - web client GET 0..40 server.address=cart server.port=8080 http.request.method=GET status=error http.response.status_code=503
         t2:b - cart server \"GET /x\" 0..10 server.address=cart server.port=8080 http.route=/x",
    );
    let results = per_trace(&spans, &opts);
    let alone = &results[0];
    assert_eq!(
        alone.nodes[alone.hops[0].callee as usize].0,
        "ext:cart:8080"
    );
    let (merged, _) = merge(&results, &opts);
    let edges: Vec<String> = merged
        .edges()
        .map(|e| format!("{} -> {}", e.caller.id, e.callee.id))
        .collect();
    assert_eq!(edges, ["web -> cart"]);
    assert_merge_identity(&spans, &opts);
}

#[test]
fn the_fingerprint_follows_the_configuration() {
    let plain = AnalysisOptions::default();
    let driver = AnalysisOptions {
        test_services: vec!["driver".to_owned()],
        ..AnalysisOptions::default()
    };
    assert_eq!(
        fingerprint(&plain),
        fingerprint(&AnalysisOptions::default())
    );
    assert_ne!(fingerprint(&plain), fingerprint(&driver));
    let aliased = AnalysisOptions {
        aliases: vec![("cart:8080".to_owned(), "cart".to_owned())],
        ..AnalysisOptions::default()
    };
    assert_ne!(fingerprint(&plain), fingerprint(&aliased));
    let expecting = AnalysisOptions {
        expectations: vec![crate::expect::Expectation {
            name: "no N+1".to_owned(),
            tests: None,
            caller: None,
            callee: None,
            operation: None,
            calls: None,
            repeated: Some(5),
            duration_ms: None,
            attributes: Vec::new(),
        }],
        ..AnalysisOptions::default()
    };
    assert_ne!(
        fingerprint(&plain),
        fingerprint(&expecting),
        "results are judged against the expectations"
    );
}

/// The edges and interfaces of a graph, as the expected set reads them.
fn topology(g: &crate::graph::RunGraph) -> Vec<String> {
    let mut out = Vec::new();
    for e in g.edges() {
        for i in &e.edge.interfaces {
            out.push(format!(
                "{} -> {} {}",
                e.caller.id, e.callee.id, i.operation
            ));
        }
    }
    let nodes: Vec<String> = g.nodes().map(|n| format!("node {}", n.id)).collect();
    out.extend(nodes);
    out
}

/// "Everything seen" from the store-wide facts, and the stored rollup, equal merging every
/// stored result, before and after retention removes traces.
#[test]
fn everything_seen_follows_the_stored_results_through_retention() {
    use crate::store::{Durability, Retention, Store};
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), Durability::Process).unwrap();
    let now = crate::ingest::now_ns();
    let old = fixture_spans("zipkin-lens/smartthings-mobile-web-install.json");
    let recent: Vec<Span> = [
        "zipkin-lens/messaging-kafka.json",
        "zipkin-lens/simple-db-p6.json",
    ]
    .iter()
    .flat_map(|n| fixture_spans(n))
    .collect();
    store.write(&old, 1).unwrap();
    store.write(&recent, now).unwrap();
    let reader = store.reader();
    reader.with_conn(crate::runs::init_schema).unwrap();
    let opts = AnalysisOptions::default();
    settle::complete_all(&reader, &opts, |_, _| {}).unwrap();

    let check = |what: &str| {
        let ids = reader.with_conn(crate::runs::all_traces).unwrap();
        let all = settle::results_of(&reader, &ids, &opts, None).unwrap();
        let seen = settle::everything(&reader, &opts, None).unwrap();
        assert_eq!(
            topology(&merge(&seen, &opts).0),
            topology(&merge(&all, &opts).0),
            "{what}"
        );
        // The rollup kept beside the results (these traces have no run) is their merge.
        let kept = reader
            .with_conn(|c| settle::load_rollup(c, "", fingerprint(&opts)))
            .unwrap()
            .unwrap();
        let (g, b) = kept.graph(&opts);
        let (mg, mb) = merge(&all, &opts);
        assert_eq!(json_report(&g, &b), json_report(&mg, &mb), "rollup {what}");
        assert_eq!(edges(&g), edges(&mg), "rollup {what}");
    };
    check("before retention");
    let removed = store
        .enforce_retention(
            Retention {
                max_age: std::time::Duration::from_secs(3600),
                max_bytes: u64::MAX,
                ..Retention::default()
            },
            now,
        )
        .unwrap();
    assert!(removed >= 1);
    check("after retention");
    // The smartthings trace's own services are gone from what is seen.
    let seen = settle::everything(&reader, &opts, None).unwrap();
    let g = merge(&seen, &opts).0;
    assert!(
        g.nodes().all(|n| n.id != "platformapi" && n.id != "bookie"),
        "{:?}",
        topology(&g)
    );
    assert!(g.nodes().any(|n| n.id == "servicea"), "{:?}", topology(&g));
}

/// Traces that link nowhere, analysed together as the settle worker batches them, get exactly
/// the results each gets alone.
#[test]
fn unlinked_traces_analysed_together_get_the_results_they_get_alone() {
    let mut spans = fixture_spans("zipkin-lens/smartthings-mobile-web-install.json");
    spans.extend(fixture_spans("zipkin-lens/simple-db-p6.json"));
    spans.extend(fixture_spans("zipkin-lens/skew.json"));
    spans.extend(crate::bench::analysis::generate(5_000));
    // An address one trace's server answers on and another trace calls: alone, the caller's
    // trace cannot name it; together it could, and must not.
    let (more, _) = crate::graph::fixture::parse(
        "t1:a - web client GET 0..40 server.address=cart server.port=8080 http.request.method=GET
         t2:b - cart server \"GET /x\" 0..10 server.address=cart server.port=8080 http.route=/x",
    );
    spans.extend(more);
    let linked: BTreeSet<TraceId> = spans
        .iter()
        .flat_map(|s| s.links.iter().map(move |l| [s.trace_id, l.trace_id]))
        .flatten()
        .collect();
    let unlinked: Vec<Span> = spans
        .into_iter()
        .filter(|s| !linked.contains(&s.trace_id))
        .collect();
    let opts = AnalysisOptions::default();
    let alone = per_trace(&unlinked, &opts);
    let together = compute(&unlinked, &opts);
    assert!(together.len() > 100);
    assert_eq!(together, alone);
}

/// Traces shared out among threads (more shares than threads, each taken by whichever thread is
/// free) get the results one thread computing them all gives them: none lost, none twice, linked
/// traces included.
#[test]
fn traces_shared_among_threads_get_the_results_one_thread_gives() {
    use crate::store::{Durability, Store};
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), Durability::Process).unwrap();
    let mut spans = crate::bench::analysis::generate(5_000);
    spans.extend(fixture_spans("zipkin-lens/messaging-kafka.json"));
    let (linked, _) = crate::graph::fixture::parse(
        "t1:a - web producer send 0..10
         t2:b - worker consumer process 20..30 link=t1:a",
    );
    spans.extend(linked);
    store.write(&spans, 1).unwrap();
    let reader = store.reader();
    let ids = reader.with_conn(crate::runs::all_traces).unwrap();
    let opts = AnalysisOptions::default();
    let by_trace = |mut v: Vec<(TraceId, super::TraceResult, i64)>| {
        v.sort_by_key(|(t, _, _)| *t);
        v
    };
    let one = by_trace(settle::compute_traces(&reader, &ids, &opts).unwrap());
    assert_eq!(one.len(), ids.len());
    for threads in [2, 3] {
        let shared = by_trace(settle::compute_on(&reader, &ids, &opts, threads).unwrap());
        assert!(shared == one, "{threads} threads");
    }
}

/// Retention removes a run's old trace with its run assignment, and the run's report says part of
/// it aged out (before, the run still counted the removed trace).
#[test]
fn a_run_whose_trace_aged_out_says_so() {
    use crate::model::{Attributes, KeyValue, Resource};
    use crate::runs::RunAssigner;
    use crate::store::{Durability, Retention, Store};
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), Durability::Process).unwrap();
    let mut assigner = RunAssigner::open(dir.path(), Vec::new()).unwrap();
    let resource = std::sync::Arc::new(Resource::new(Attributes(vec![
        KeyValue::new("service.name", "shop"),
        KeyValue::new(crate::runs::RUN_ID_ATTR, "aging"),
    ])));
    let trace = |n: u8, received: u64| {
        let mut s = Span::new(
            TraceId::from_bytes([n; 16]).unwrap(),
            SpanId::from_bytes([n; 8]).unwrap(),
            "work",
        );
        s.resource = resource.clone();
        s.end_ns = 10;
        (vec![s], received)
    };
    let now = crate::ingest::now_ns();
    for (spans, received) in [trace(1, 1), trace(2, now)] {
        store.write(&spans, received).unwrap();
        assigner
            .assign(&spans.iter().collect::<Vec<_>>(), received)
            .unwrap();
    }
    let reader = store.reader();
    let run = crate::query::resolve_run(&reader, "aging").unwrap();
    assert_eq!((run.traces, run.aged_out), (2, 0));
    store
        .enforce_retention(
            Retention {
                max_age: std::time::Duration::from_secs(3600),
                max_bytes: u64::MAX,
                ..Retention::default()
            },
            now,
        )
        .unwrap();
    let run = crate::query::resolve_run(&reader, "aging").unwrap();
    assert_eq!((run.traces, run.aged_out), (1, 1));
    let ctx = crate::query::ReportContext::default();
    let report = crate::query::run_report(&reader, &run, &ctx).unwrap();
    assert_eq!(report.run.traces, 1);
    assert_eq!(report.run.aged_out_traces, 1);
    assert!(crate::report::text(&report).contains("1 more traces of this run were removed"));
}

/// A run's results outlive its spans: once computed, retention removes the spans but the run's
/// report still holds what they showed (and counts nothing as aged out); the history age then
/// removes the run with everything kept of it.
#[test]
fn a_runs_results_outlive_its_spans_until_the_history_age() {
    use crate::model::{Attributes, KeyValue, Resource};
    use crate::runs::RunAssigner;
    use crate::store::{Durability, Retention, Store};
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), Durability::Process).unwrap();
    let mut assigner = RunAssigner::open(dir.path(), Vec::new()).unwrap();
    let (mut spans, _) = crate::graph::fixture::parse(
        "t1:a - web client \"GET /x\" 0..40 peer.service=api http.request.method=GET http.response.status_code=200
         t1:b a api server \"GET /x\" 5..30 http.route=/x http.response.status_code=200
         t2:c - web client \"GET /x\" 0..40 peer.service=api http.request.method=GET http.response.status_code=500
         t2:d c api server \"GET /x\" 5..30 http.route=/x http.response.status_code=500
         t3:e - web client \"GET /x\" 0..40 peer.service=api http.request.method=GET http.response.status_code=200
         t3:f e api server \"GET /x\" 5..30 http.route=/x http.response.status_code=200",
    );
    let t3 = TraceId::from_hex_padded("74330000000000000000000000000000").unwrap();
    for s in &mut spans {
        let mut attrs = s.resource.attributes.0.clone();
        // The third trace is an earlier run of the suite, to diff against.
        let run = if s.trace_id == t3 { "earlier" } else { "kept" };
        attrs.push(KeyValue::new(crate::runs::RUN_ID_ATTR, run));
        s.resource = std::sync::Arc::new(Resource::new(Attributes(attrs)));
    }
    let now = crate::ingest::now_ns();
    let hour = std::time::Duration::from_secs(3600);
    let received = now - 2 * hour.as_nanos() as u64;
    store.write(&spans, received).unwrap();
    assigner
        .assign(&spans.iter().collect::<Vec<_>>(), received)
        .unwrap();
    let reader = store.reader();
    let ctx = crate::query::ReportContext {
        settle: Some(std::time::Duration::ZERO),
        ..Default::default()
    };
    let run = crate::query::resolve_run(&reader, "kept").unwrap();
    let before = crate::query::run_report(&reader, &run, &ctx).unwrap();
    assert_eq!(before.run.traces, 2);
    assert_eq!(before.edges.len(), 1, "{before:#?}");
    let diff_before = crate::query::diff_runs(&reader, "earlier", "kept", &ctx).unwrap();
    assert_eq!(diff_before.failures.new.len(), 1);
    // The suite's history of the edge (its digests made and kept here).
    let item = crate::history::TrendItem {
        caller: "web".into(),
        callee: "api".into(),
        operation: None,
    };
    let trend = || {
        let window = crate::history::window(&reader, None, None, 20).unwrap();
        crate::history::trend_of(&reader, &window, &item, &ctx, None).unwrap()
    };
    let history_before = trend();
    assert_eq!(
        history_before
            .iter()
            .map(|p| (p.calls, p.errors))
            .collect::<Vec<_>>(),
        [(1, 0), (2, 1)]
    );

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
    let traces: i64 = reader
        .with_conn(|c| Ok(c.query_row("SELECT COUNT(*) FROM traces", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(traces, 0, "the spans aged out");
    let run = crate::query::resolve_run(&reader, "kept").unwrap();
    assert_eq!(run.aged_out, 0, "nothing the run learned was lost");
    let after = crate::query::run_report(&reader, &run, &ctx).unwrap();
    assert_eq!(
        crate::report::to_json(&after),
        crate::report::to_json(&before),
        "the report of a run whose spans are gone"
    );
    assert_eq!(
        crate::query::diff_runs(&reader, "earlier", "kept", &ctx).unwrap(),
        diff_before,
        "the diff of runs whose spans are gone"
    );
    assert_eq!(
        trend(),
        history_before,
        "the history of runs whose spans are gone"
    );
    // Made again from the rollups alone, as after a new digest version.
    reader
        .with_conn(|c| Ok(c.execute("DELETE FROM run_digests", [])?))
        .unwrap();
    assert_eq!(
        trend(),
        history_before,
        "digests made from rollups that outlived their spans"
    );

    // The history age removes the run and what it kept.
    store
        .enforce_retention(
            Retention {
                max_age: hour,
                max_bytes: u64::MAX,
                max_history_age: hour,
            },
            now,
        )
        .unwrap();
    assert!(crate::query::resolve_run(&reader, "kept").is_err());
    let left: i64 = reader
        .with_conn(|c| {
            Ok(c.query_row(
                "SELECT (SELECT COUNT(*) FROM run_rollups) + (SELECT COUNT(*) FROM run_tests)
                      + (SELECT COUNT(*) FROM trace_rollups) + (SELECT COUNT(*) FROM run_digests)
                      + (SELECT COUNT(*) FROM rollup_stamps)",
                [],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert_eq!(left, 0);
}
