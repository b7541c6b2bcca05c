//! Flaky hops and trends over hand-made digests: the definitions of `flaky` and `trend` held to
//! small windows whose answers can be counted by eye. The store and the real analysis are
//! exercised end to end in `tests/it/history.rs`.

use std::collections::BTreeMap;

use super::digest::RunDigest;
use super::flaky::{FlakyHop, WindowRun, flaky};
use super::trend::{Judge, TrendItem, trend};
use crate::coverage::{Declared, Expected, Status};

const CHARGE: (&str, &str, &str) = ("checkout", "payments", "POST /charge");
const STOCK: (&str, &str, &str) = ("checkout", "inventory", "GET /stock");

/// A run where `tests` crossed `CHARGE` and `STOCK`, and `failing` tests failed on `CHARGE`.
fn run(tests: &[&str], failing: &[&str]) -> RunDigest {
    let failures: Vec<_> = failing
        .iter()
        .map(|t| (Some(*t), "callee_error", CHARGE.0, CHARGE.1, CHARGE.2))
        .collect();
    RunDigest::from_parts(
        &[
            (CHARGE.0, CHARGE.1, CHARGE.2, tests),
            (STOCK.0, STOCK.1, STOCK.2, tests),
        ],
        &failures,
    )
}

fn names(n: usize) -> Vec<(String, String)> {
    (1..=n)
        .map(|i| (format!("r{i}"), format!("run-{i}")))
        .collect()
}

fn window<'a>(names: &'a [(String, String)], digests: &'a [RunDigest]) -> Vec<WindowRun<'a>> {
    names
        .iter()
        .zip(digests)
        .map(|((id, name), digest)| WindowRun { id, name, digest })
        .collect()
}

#[test]
fn a_hop_failing_in_alternate_runs_is_flaky_with_its_counts() {
    let both = ["test_paid", "test_stock"];
    let digests: Vec<RunDigest> = (1..=6)
        .map(|i| {
            if i % 2 == 1 {
                run(&both, &["test_paid"])
            } else {
                run(&both, &[])
            }
        })
        .collect();
    let names = names(6);
    let hops = flaky(&window(&names, &digests));
    assert_eq!(
        hops,
        [FlakyHop {
            caller: "checkout".into(),
            callee: "payments".into(),
            operation: "POST /charge".into(),
            runs: 6,
            failed_runs: 3,
            flips: 5,
            classes: BTreeMap::from([("callee_error".to_owned(), 3)]),
            tests: vec!["test_paid".into()],
            last_failed_run: ("r5".into(), "run-5".into()),
        }]
    );
}

#[test]
fn a_steady_failure_is_not_flaky() {
    let digests: Vec<RunDigest> = (0..5)
        .map(|_| run(&["test_paid"], &["test_paid"]))
        .collect();
    let names = names(5);
    assert!(flaky(&window(&names, &digests)).is_empty());
}

#[test]
fn one_test_always_failing_where_another_always_passes_is_not_flaky() {
    // test_declined fails on the hop every time; test_paid crosses it and passes every time:
    // the same tests never both failed and passed there.
    let digests: Vec<RunDigest> = (0..4)
        .map(|_| run(&["test_declined", "test_paid"], &["test_declined"]))
        .collect();
    let names = names(4);
    assert!(flaky(&window(&names, &digests)).is_empty());
}

#[test]
fn a_test_failing_elsewhere_still_passed_through_the_hop() {
    // Run 2: test_paid failed, but on the stock hop; the charge hop held for it.
    let first = run(&["test_paid"], &["test_paid"]);
    let second = RunDigest::from_parts(
        &[
            (CHARGE.0, CHARGE.1, CHARGE.2, &["test_paid"]),
            (STOCK.0, STOCK.1, STOCK.2, &["test_paid"]),
        ],
        &[(Some("test_paid"), "timeout", STOCK.0, STOCK.1, STOCK.2)],
    );
    let names = names(2);
    let hops = flaky(&window(&names, &[first, second]));
    // (The stock hop, failing in run 2 only, is flaky too.)
    let charge = hops
        .iter()
        .find(|h| h.operation == "POST /charge")
        .unwrap_or_else(|| panic!("{hops:?}"));
    assert_eq!((charge.runs, charge.failed_runs), (2, 1));
}

#[test]
fn runs_that_did_not_cross_the_hop_do_not_count() {
    let quiet = RunDigest::from_parts(&[(STOCK.0, STOCK.1, STOCK.2, &["test_paid"])], &[]);
    let digests = vec![
        run(&["test_paid"], &["test_paid"]),
        quiet.clone(),
        run(&["test_paid"], &[]),
        quiet,
    ];
    let names = names(4);
    let hops = flaky(&window(&names, &digests));
    assert_eq!(hops.len(), 1);
    assert_eq!(
        (hops[0].runs, hops[0].failed_runs, hops[0].flips),
        (2, 1, 1)
    );
    assert_eq!(hops[0].last_failed_run.0, "r1");
}

#[test]
fn failures_outside_any_test_alone_never_make_a_hop_flaky() {
    let failing = RunDigest::from_parts(
        &[(CHARGE.0, CHARGE.1, CHARGE.2, &[])],
        &[(None, "callee_error", CHARGE.0, CHARGE.1, CHARGE.2)],
    );
    let passing = RunDigest::from_parts(&[(CHARGE.0, CHARGE.1, CHARGE.2, &[])], &[]);
    let names = names(2);
    assert!(flaky(&window(&names, &[failing, passing])).is_empty());
}

#[test]
fn the_hop_that_flipped_most_comes_first() {
    // The charge hop flips every run; the stock hop fails once, in the middle.
    let t = ["test_paid"];
    let stock_fails = |charge_fails: bool| {
        let mut f = vec![(Some("test_paid"), "timeout", STOCK.0, STOCK.1, STOCK.2)];
        if charge_fails {
            f.push((
                Some("test_paid"),
                "callee_error",
                CHARGE.0,
                CHARGE.1,
                CHARGE.2,
            ));
        }
        RunDigest::from_parts(
            &[
                (CHARGE.0, CHARGE.1, CHARGE.2, &t),
                (STOCK.0, STOCK.1, STOCK.2, &t),
            ],
            &f,
        )
    };
    let digests = vec![
        run(&t, &["test_paid"]),
        run(&t, &[]),
        stock_fails(true),
        run(&t, &[]),
        run(&t, &["test_paid"]),
    ];
    let names = names(5);
    let order: Vec<(String, u64)> = flaky(&window(&names, &digests))
        .into_iter()
        .map(|h| (h.callee, h.flips))
        .collect();
    assert_eq!(
        order,
        [("payments".to_owned(), 4), ("inventory".to_owned(), 2)]
    );
}

#[test]
fn a_digest_survives_encoding_and_finds_its_items_by_name() {
    let d = run(&["b", "a"], &["a"]);
    let back = RunDigest::decode(d.as_bytes().to_vec()).expect("decodes");
    assert_eq!(back, d);
    let charge = back.interface(CHARGE.0, CHARGE.1, CHARGE.2).unwrap();
    assert_eq!(charge.tests().collect::<Vec<_>>(), ["a", "b"]);
    assert!(charge.crossed_by("b") && !charge.crossed_by("c"));
    assert!(back.interface("checkout", "payments", "GET /").is_none());
    assert_eq!(back.interfaces_from("checkout").count(), 2);
    assert_eq!(back.interfaces_from("payments").count(), 0);
    assert_eq!(
        back.failures().collect::<Vec<_>>(),
        [super::digest::FailureRef {
            test: Some("a"),
            class: "callee_error",
            caller: CHARGE.0,
            callee: CHARGE.1,
            operation: CHARGE.2,
        }]
    );
    let item = charge.item;
    assert_eq!(
        (item.calls, item.errors, item.p95_ns, item.tested),
        (2, 1, Some(1_000_000), true)
    );
    // Another version is not read as this one, and damaged bytes are not read at all.
    let mut old = d.as_bytes().to_vec();
    old[0] ^= 1;
    assert!(RunDigest::decode(old).is_none());
    let bytes = d.as_bytes();
    for cut in [3, 9, bytes.len() / 2] {
        assert!(
            RunDigest::decode(bytes[..cut].to_vec()).is_none(),
            "cut at {cut}"
        );
    }
    let mut bad_name = bytes.to_vec();
    // The first interface record's caller, pointed past the names.
    let n_names = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    let names_len =
        u32::from_le_bytes(bytes[4 + 4 * n_names..8 + 4 * n_names].try_into().unwrap()) as usize;
    let first_record = 8 + 4 * n_names + names_len + 4;
    bad_name[first_record..first_record + 4].copy_from_slice(&1000u32.to_le_bytes());
    assert!(RunDigest::decode(bad_name).is_none());
}

#[test]
fn a_trend_names_each_runs_status_calls_and_errors_oldest_first() {
    let digests = vec![
        run(&["test_paid"], &[]),
        run(&["test_paid"], &["test_paid"]),
        RunDigest::from_parts(&[(STOCK.0, STOCK.1, STOCK.2, &["test_paid"])], &[]),
        RunDigest::from_parts(&[(CHARGE.0, CHARGE.1, CHARGE.2, &[])], &[]),
    ];
    let names = names(4);
    let runs: Vec<(WindowRun<'_>, u64)> = window(&names, &digests)
        .into_iter()
        .zip([10, 20, 30, 40])
        .collect();
    let item = TrendItem {
        caller: CHARGE.0.into(),
        callee: CHARGE.1.into(),
        operation: Some(CHARGE.2.into()),
    };
    // No source configured: everything seen is expected.
    let nothing = Expected::new();
    let unconfigured = Judge {
        expected: &nothing,
        configured: false,
    };
    let points = trend(&runs, &item, &unconfigured);
    let got: Vec<(&str, u64, Option<Status>, u64, u64)> = points
        .iter()
        .map(|p| (p.run.as_str(), p.created_ns, p.status, p.calls, p.errors))
        .collect();
    assert_eq!(
        got,
        [
            ("r1", 10, Some(Status::Covered), 1, 0),
            ("r2", 20, Some(Status::Failing), 1, 1),
            ("r3", 30, Some(Status::Untested), 0, 0),
            ("r4", 40, Some(Status::Untested), 1, 0),
        ]
    );
    assert_eq!(points[2].p95_ns, None, "no call, no p95");
    let edge = TrendItem {
        operation: None,
        ..item.clone()
    };
    let statuses: Vec<Option<Status>> = trend(&runs, &edge, &unconfigured)
        .iter()
        .map(|p| p.status)
        .collect();
    assert_eq!(
        statuses,
        [
            Some(Status::Covered),
            Some(Status::Failing),
            Some(Status::Untested),
            Some(Status::Untested)
        ]
    );

    // A manifest that declares only the stock edge: the charge hop is unexpected where it was
    // crossed, and not listed where it was not.
    let mut declared = Expected::new();
    declared.add(&Declared {
        caller: Some("checkout".into()),
        callee: "inventory".into(),
        operation: None,
        critical: false,
    });
    let configured = Judge {
        expected: &declared,
        configured: true,
    };
    let statuses: Vec<Option<Status>> = trend(&runs, &item, &configured)
        .iter()
        .map(|p| p.status)
        .collect();
    assert_eq!(
        statuses,
        [
            Some(Status::Unexpected),
            Some(Status::Unexpected),
            None,
            Some(Status::Unexpected)
        ]
    );
}

#[test]
fn a_mock_answering_in_the_real_callees_place_makes_it_stubbed() {
    let d = RunDigest::from_parts(
        &[("checkout", "payments-mock", "POST /charge", &["test_paid"])],
        &[],
    );
    let names = names(1);
    let runs: Vec<(WindowRun<'_>, u64)> = window(&names, std::slice::from_ref(&d))
        .into_iter()
        .map(|w| (w, 1))
        .collect();
    let mut mocks = Expected::new();
    mocks.add_mock("payments-mock", "payments");
    let judge = Judge {
        expected: &mocks,
        configured: false,
    };
    let edge = TrendItem {
        caller: "checkout".into(),
        callee: "payments".into(),
        operation: None,
    };
    assert_eq!(trend(&runs, &edge, &judge)[0].status, Some(Status::Stubbed));
}

/// Writes a fixture's spans into the store as part of run `run` of suite `suite`.
fn store_fixture(dir: &std::path::Path, run: &str, suite: &str, fixture: &str) {
    use crate::model::{Attributes, KeyValue, Resource};
    let (mut spans, _) = crate::graph::fixture::parse(fixture);
    for s in &mut spans {
        let mut attrs: Vec<KeyValue> = s.resource.attributes.0.clone();
        attrs.push(KeyValue::new(crate::runs::RUN_ID_ATTR, run));
        attrs.push(KeyValue::new(crate::runs::SUITE_ATTR, suite));
        s.resource = std::sync::Arc::new(Resource::new(Attributes(attrs)));
    }
    let mut store = crate::store::Store::open(dir, crate::store::Durability::Process).unwrap();
    let mut assigner = crate::runs::RunAssigner::open(dir, Vec::new()).unwrap();
    store.write(&spans, crate::ingest::now_ns()).unwrap();
    assigner
        .assign(&spans.iter().collect::<Vec<_>>(), crate::ingest::now_ns())
        .unwrap();
    drop(assigner);
    let reader = store.reader();
    crate::results::settle::complete_all(&reader, &Default::default(), |_, _| {}).unwrap();
    drop(reader);
    store.close().unwrap();
}

const PAID: &str = "
t1:a - checkout internal test_paid 0..40 test.case.name=test_paid
t1:b a checkout client POST 1..30 http.request.method=POST
t1:c b payments server \"POST /charge\" 2..28 http.request.method=POST http.route=/charge
";

const STOCKED: &str = "
t2:a - checkout internal test_stock 0..40 test.case.name=test_stock
t2:b a checkout client GET 1..30 http.request.method=GET
t2:c b inventory server \"GET /stock\" 2..28 http.request.method=GET http.route=/stock
";

#[test]
fn a_runs_digest_is_kept_until_its_rollup_changes() {
    let dir = tempfile::tempdir().unwrap();
    store_fixture(dir.path(), "r1", "shop", PAID);
    let reader = crate::store::Reader::new(dir.path());
    let ctx = crate::query::ReportContext::default();
    let fp = crate::results::fingerprint(&ctx.analysis);
    let window = super::window(&reader, None, None, 20).unwrap();
    assert_eq!(window.suite, "shop", "the latest run's suite");
    assert_eq!(window.runs.len(), 1);
    let first = super::digests(&reader, &window.runs, &ctx, None).unwrap();
    assert!(
        first[0]
            .interface("checkout", "payments", "POST /charge")
            .is_some()
    );
    let (stamp, kept) = reader
        .with_conn(|c| super::store::load(c, "r1", fp))
        .unwrap();
    assert!(stamp > 0, "the rollup's transaction stamped it");
    assert_eq!(kept.as_ref(), Some(&first[0]), "kept with its stamp");

    // Another trace of the run settles: the rollup is rewritten, the digest is stale and made
    // again with the new hop.
    store_fixture(dir.path(), "r1", "shop", STOCKED);
    let (newer, kept) = reader
        .with_conn(|c| super::store::load(c, "r1", fp))
        .unwrap();
    assert!(newer > stamp);
    assert!(kept.is_none(), "a digest older than its rollup is not read");
    let again = super::digests(&reader, &window.runs, &ctx, None).unwrap();
    assert!(
        again[0]
            .interface("checkout", "inventory", "GET /stock")
            .is_some()
    );
    assert!(
        reader
            .with_conn(|c| super::store::load(c, "r1", fp))
            .unwrap()
            .1
            .is_some()
    );

    // The history keeper's pass makes what is missing or stale, once.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let now = crate::ingest::now_ns();
    assert_eq!(
        super::digest_pass(&reader, &ctx, now, 10, &stop).unwrap(),
        0
    );
    store_fixture(
        dir.path(),
        "r2",
        "shop",
        PAID.replace("t1:", "t3:").as_str(),
    );
    assert_eq!(
        super::digest_pass(&reader, &ctx, 0, 10, &stop).unwrap(),
        0,
        "a run not quiet since the cutoff waits"
    );
    let now = crate::ingest::now_ns();
    assert_eq!(
        super::digest_pass(&reader, &ctx, now, 10, &stop).unwrap(),
        1
    );
    assert!(
        reader
            .with_conn(|c| super::store::load(c, "r2", fp))
            .unwrap()
            .1
            .is_some()
    );
    assert_eq!(
        super::digest_pass(&reader, &ctx, now, 10, &stop).unwrap(),
        0
    );

    // Suites without runs are named in the error.
    let err = super::window(&reader, Some("nope"), None, 20).unwrap_err();
    assert!(err.to_string().contains("\"nope\""), "{err}");
}
