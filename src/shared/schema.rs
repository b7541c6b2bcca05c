//! The shared database's schema, as numbered migrations applied in order on start.
//!
//! Each instance runs `migrate` when it starts: inside one transaction holding a transaction-level
//! advisory lock, it reads `tracecov_migrations` and applies what is missing, recording each
//! version. Instances that start together queue on the lock; the first applies, the others find
//! the versions recorded and apply nothing. A failed migration rolls back whole. A database at a
//! version this tracecov does not know (a newer one migrated it) is refused.
//!
//! A migration, once released, is never edited: a change is a new migration.

use deadpool_postgres::Object;

use super::SharedError;

/// One step of the schema.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// The advisory lock key migrations are applied under ("tracecov" in ASCII): one number every
/// version of tracecov agrees on.
const MIGRATION_LOCK: i64 = 0x7472_6163_6563_6f76;

/// Every migration, in order, each applied once (`tracecov_migrations` records them). Never edit
/// one that has shipped: add the next.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "deployment: instances, runs, per-trace results, aggregates, history",
        sql: V1,
    },
    Migration {
        version: 2,
        name: "each instance's share of rollups and store-wide facts",
        sql: V2,
    },
    Migration {
        version: 3,
        name: "traces whose results another instance's traces change",
        sql: V3,
    },
    Migration {
        version: 4,
        name: "history digests and failures kept for the deployment",
        sql: V4,
    },
    Migration {
        version: 5,
        name: "version 1's whole-deployment aggregates, never used, dropped",
        sql: V5,
    },
];

/// Times of the tracecov data model (`*_ns`) are nanoseconds since the epoch as the instance
/// that wrote them saw them, like the embedded store's; the instances' liveness uses the
/// database's own clock (`timestamptz`), so that skew between instances does not make one look
/// dead.
const V1: &str = "
-- Every instance of the deployment (`--instance-url`, how the others reach it), alive while its
-- heartbeat is recent.
CREATE TABLE instances (
    url             TEXT PRIMARY KEY,
    advertise_otlp  TEXT,
    version         TEXT NOT NULL,
    started_at      TIMESTAMPTZ NOT NULL,
    heartbeat_at    TIMESTAMPTZ NOT NULL,
    stopped_at      TIMESTAMPTZ
);

-- Runs, as the embedded store's `runs`; a CI run id names one run in the whole deployment.
CREATE TABLE runs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('explicit', 'ci', 'auto', 'import')),
    ci_run_id   TEXT UNIQUE,
    suite       TEXT,
    ci_job      TEXT,
    created_ns  BIGINT NOT NULL,
    closed_ns   BIGINT,
    last_ns     BIGINT NOT NULL
);
CREATE INDEX runs_by_name ON runs (name, created_ns);
CREATE INDEX runs_by_suite ON runs ((COALESCE(suite, ci_job, 'default')), created_ns);
CREATE INDEX runs_open ON runs (kind, created_ns) WHERE closed_ns IS NULL;

-- Which run each trace belongs to, decided here under concurrency (`shared::SharedRuns`).
CREATE TABLE trace_runs (
    trace_id  BYTEA PRIMARY KEY,
    run_id    TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    explicit  BOOLEAN NOT NULL,
    last_ns   BIGINT NOT NULL
);
CREATE INDEX trace_runs_by_run ON trace_runs (run_id);

-- Where each trace's spans are kept: one row per instance that received some. A trace with two
-- rows reached two instances (the balancer's ring changed) and its results are merged.
CREATE TABLE trace_instances (
    trace_id     BYTEA NOT NULL,
    instance     TEXT NOT NULL REFERENCES instances (url) ON DELETE CASCADE,
    received_ns  BIGINT NOT NULL,
    PRIMARY KEY (trace_id, instance)
);
CREATE INDEX trace_instances_by_instance ON trace_instances (instance, received_ns);

-- Per-trace results (DESIGN, \"Results kept per trace\"), computed by the instance holding the
-- spans: postcard-encoded `results::TraceResult` under the configuration's fingerprint.
CREATE TABLE trace_results (
    trace_id     BYTEA NOT NULL,
    instance     TEXT NOT NULL,
    fingerprint  BIGINT NOT NULL,
    received_ns  BIGINT NOT NULL,
    data         BYTEA NOT NULL,
    PRIMARY KEY (trace_id, instance, fingerprint)
);

-- Which trace links to which, so a late trace has its linkers recomputed.
CREATE TABLE trace_links (
    from_trace  BYTEA NOT NULL,
    to_trace    BYTEA NOT NULL,
    PRIMARY KEY (to_trace, from_trace)
);

-- Per run and fingerprint, the sum of its traces' results ('' for traces of no run), with the
-- stamp history's digests are made against, and its test cases.
CREATE TABLE run_rollups (
    run_id       TEXT NOT NULL,
    fingerprint  BIGINT NOT NULL,
    stamp        BIGINT NOT NULL,
    data         BYTEA NOT NULL,
    PRIMARY KEY (run_id, fingerprint)
);
CREATE TABLE run_tests (
    run_id       TEXT NOT NULL,
    fingerprint  BIGINT NOT NULL,
    trace_id     BYTEA NOT NULL,
    span_id      BYTEA NOT NULL,
    name         TEXT NOT NULL,
    failed       BOOLEAN NOT NULL,
    PRIMARY KEY (run_id, fingerprint, trace_id, span_id)
);
CREATE TABLE trace_rollups (
    trace_id     BYTEA NOT NULL,
    instance     TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    fingerprint  BIGINT NOT NULL,
    PRIMARY KEY (trace_id, instance)
);
CREATE TABLE run_aged_out (
    run_id  TEXT PRIMARY KEY,
    traces  BIGINT NOT NULL
);

-- Store-wide aggregates: every fact the results hold with how many hold it (the expected set
-- \"everything seen\"), and an example trace per fact and run.
CREATE TABLE seen (
    fact  BYTEA PRIMARY KEY,
    n     BIGINT NOT NULL
);
CREATE TABLE seen_examples (
    fact      BYTEA NOT NULL,
    run_id    TEXT NOT NULL,
    trace_id  BYTEA NOT NULL,
    span_id   BYTEA NOT NULL,
    test      TEXT,
    PRIMARY KEY (fact, run_id)
);

-- History: per run and fingerprint, its digest as of its rollup's stamp.
CREATE TABLE run_digests (
    run_id       TEXT NOT NULL,
    fingerprint  BIGINT NOT NULL,
    stamp        BIGINT NOT NULL,
    data         BYTEA NOT NULL,
    PRIMARY KEY (run_id, fingerprint)
);
";

/// What each instance publishes of its embedded store (`shared::publish`), summed by readers:
/// a run's rollup is the sum of its instances' shares, as the embedded rollup is the sum of its
/// traces' results, so every instance keeps its share with the machinery of a single process
/// (replacing a re-opened trace's contribution, aging out) and nothing is merged under
/// concurrency in the database. Version 1's `run_rollups`, `run_tests`, `seen` and
/// `seen_examples` (one row for the whole deployment) were never used (dropped by version 5).
const V2: &str = "
-- An instance's share of a run's rollup: `results::Rollup` postcard-encoded without its test
-- cases, which are `tests` (postcard: [((trace id, span id), (name, failed))]).
CREATE TABLE instance_rollups (
    run_id       TEXT NOT NULL,
    fingerprint  BIGINT NOT NULL,
    instance     TEXT NOT NULL,
    data         BYTEA NOT NULL,
    tests        BYTEA NOT NULL,
    PRIMARY KEY (run_id, fingerprint, instance)
);

-- The facts an instance's stored results hold, with how many hold them.
CREATE TABLE instance_seen (
    instance  TEXT NOT NULL,
    fact      BYTEA NOT NULL,
    n         BIGINT NOT NULL,
    PRIMARY KEY (instance, fact)
);

-- An instance's example trace per fact and run.
CREATE TABLE instance_seen_examples (
    instance  TEXT NOT NULL,
    fact      BYTEA NOT NULL,
    run_id    TEXT NOT NULL,
    trace_id  BYTEA NOT NULL,
    span_id   BYTEA NOT NULL,
    test      TEXT,
    PRIMARY KEY (instance, fact, run_id)
);
";

/// What crosses instances: a trace split between instances (two `trace_instances` rows) and
/// traces linked across them need the other side's spans, and whoever learns of such a relation
/// tells each instance concerned, which recomputes its trace (`shared::publish`).
const V3: &str = "
-- A trace `instance` holds whose results must be computed again, with the spans other
-- instances hold: its trace reached another instance too, or a trace linked to it arrived
-- there. Written by whichever instance learns it, consumed (deleted) by `instance`.
CREATE TABLE stale_traces (
    instance  TEXT NOT NULL,
    trace_id  BYTEA NOT NULL,
    PRIMARY KEY (instance, trace_id)
);
CREATE INDEX trace_links_from ON trace_links (from_trace);
";

/// History's records of a run (its digest and failures, `history::store`) kept for the whole
/// deployment. A run's rollup is the sum of its instances' shares, so it changes exactly when a
/// share is written or removed: every write of a share takes a new number from one sequence
/// (`stamp`), and the sorted list of a run's share stamps names the rollup it sums to. A record
/// is kept with the list it was made under and is fresh while the list is the same. Numbers are
/// never reused, so a list never comes back once it changed, whatever order instances commit
/// in, and no row is shared between instances' publications (nothing to lock or deadlock on).
/// Version 1's `run_digests` (one stamp per run, never written) is replaced.
const V4: &str = "
CREATE SEQUENCE rollup_share_stamps;
ALTER TABLE instance_rollups
    ADD COLUMN stamp BIGINT NOT NULL DEFAULT nextval('rollup_share_stamps');

-- Per run and fingerprint, its history digest and failures (`history::RunDigest`,
-- `history::RunFailures`, encoded with their version) made from the rollup whose shares had
-- the stamps `shares` (sorted).
DROP TABLE run_digests;
CREATE TABLE run_digests (
    run_id       TEXT NOT NULL,
    fingerprint  BIGINT NOT NULL,
    shares       BIGINT[] NOT NULL,
    digest       BYTEA NOT NULL,
    failures     BYTEA NOT NULL,
    PRIMARY KEY (run_id, fingerprint)
);

-- Which instance makes finished runs' records in the background (a lease it renews while it
-- lives; another takes it over once it lapses).
CREATE TABLE history_keeper (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    instance  TEXT NOT NULL,
    until     TIMESTAMPTZ NOT NULL
);
";

/// Version 1 laid out whole-deployment aggregates (one row per run or fact for every instance)
/// that version 2's per-instance shares replaced before any was written: dropped, so that the
/// schema holds only what tracecov reads.
const V5: &str = "
DROP TABLE run_rollups;
DROP TABLE run_tests;
DROP TABLE trace_rollups;
DROP TABLE run_aged_out;
DROP TABLE seen;
DROP TABLE seen_examples;
";

/// Applies what is missing, under the advisory lock, in one transaction; returns the versions
/// applied.
pub(super) async fn migrate(client: &mut Object) -> Result<Vec<i32>, SharedError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS tracecov_migrations (
             version     INTEGER PRIMARY KEY,
             name        TEXT NOT NULL,
             applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let found: Option<i32> = tx
        .query_one("SELECT MAX(version) FROM tracecov_migrations", &[])
        .await?
        .get(0);
    let found = found.unwrap_or(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if found > known {
        return Err(SharedError::NewerSchema { found, known });
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO tracecov_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await?;
        applied.push(m.version);
    }
    tx.commit().await?;
    Ok(applied)
}
