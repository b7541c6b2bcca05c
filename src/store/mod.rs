//! The durable span store: SQLite (rusqlite, bundled) in WAL mode under the data directory.
//!
//! Owns the schema, the write path (`Store::write`, `Store::write_encoded`) and reads (`Reader`).
//! Main types: `Store`, the single writer; `EncodedSpans`, spans encoded for it on any thread;
//! `Reader`, a small pool of read connections that may be used from many threads.
//!
//! Key design decisions:
//! - One writer connection on one thread (ingest's writer): SQLite serializes writers anyway, and
//!   batching many exports into one transaction (group commit) is what makes it fast. Encoding
//!   happens before (`EncodedSpans`), checkpointing beside it (`checkpoint`), so that thread does
//!   nothing but commits.
//! - The table layout makes a commit write few pages: see `SCHEMA`.
//! - A span is unique by (trace, span id, content). An exact re-delivery (a client's retry) is
//!   ignored, so writes are idempotent; a *different* span reusing an id is kept, because
//!   duplicate ids are something analysis must see and report, not something storage may hide.
//!   The content hash in the key only narrows the search: bytes are compared, and different
//!   content that shares a hash (by chance or crafted) takes the next free hash value, as a
//!   resource does.
//! - Resources are stored once per distinct content and referenced by id: an export typically has
//!   one resource for hundreds of spans.
//! - Retention ages count from when a span was received (`received_ns`), never from the span's
//!   own timestamps: imported traces are often years old.
//!
//! This module does no networking and knows nothing of OTLP.

mod batch;
mod checkpoint;
mod codec;
pub mod outage;
pub mod simulated_full;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::model::{LogRecord, Resource, Span, SpanId, TraceId};

pub use batch::EncodedSpans;
pub use codec::CorruptRow;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Corrupt(#[from] CorruptRow),
    #[error("the store is closed")]
    Closed,
    /// The writer thread could not set up its timer (out of file descriptors, say).
    #[error("the store's writer cannot wait for work: {0}")]
    Waiter(std::io::Error),
    /// The shared database (`serve --shared-db`) failed or could not be reached.
    #[error("{0}")]
    Shared(String),
    #[error(
        "the store in {path} has format version {found}, this tracecov reads version {expected}; \
         move it aside or point --data elsewhere"
    )]
    Version {
        path: PathBuf,
        found: i64,
        expected: i64,
    },
}

impl StoreError {
    /// Whether SQLite found no room to write: the disk (or the quota) holding the store is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DiskFull
        )
    }

    /// What is wrong when writes to the store in `dir` fail with this error, in plain words.
    pub fn write_problem(&self, dir: &Path) -> String {
        if self.is_disk_full() {
            format!("the disk holding {} is full", dir.display())
        } else {
            format!("writing to the store in {} fails: {self}", dir.display())
        }
    }
}

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// WAL with `synchronous=NORMAL`: a committed export survives the process being killed at any
    /// instant (the data is in the operating system's hands); a power cut may lose the last
    /// transactions. The default: it is what "the process crashed" needs, at a fraction of the cost.
    Process,
    /// `synchronous=FULL`: every commit is fsynced, surviving power loss too.
    Power,
}

/// `--history-age`'s default: a year.
pub const DEFAULT_HISTORY_AGE: std::time::Duration =
    std::time::Duration::from_secs(365 * 24 * 3600);

/// How long and how much to keep.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Traces whose last span was received longer ago than this are removed.
    pub max_age: std::time::Duration,
    /// When the stored span bytes exceed this, the oldest traces (by receipt) are removed first.
    pub max_bytes: u64,
    /// Runs whose newest span arrived longer ago than this are removed with what they kept
    /// (`--history-age`); their rollups outlive their spans until then.
    pub max_history_age: std::time::Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age: std::time::Duration::from_secs(30 * 24 * 3600),
            max_bytes: 20 * 1024 * 1024 * 1024,
            max_history_age: DEFAULT_HISTORY_AGE,
        }
    }
}

/// What a write did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteSummary {
    /// Spans newly stored.
    pub inserted: u64,
    /// Spans that were already stored, byte for byte (re-deliveries).
    pub duplicates: u64,
    /// Log records newly stored.
    pub logs_inserted: u64,
}

/// Totals for `/api/stats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub spans: u64,
    pub traces: u64,
    pub services: u64,
}

/// The schema's version, kept in SQLite's `user_version`. Bump it when the tables or the
/// encoding change incompatibly; a store written by another version is refused, not misread.
const SCHEMA_VERSION: i64 = 1;

// The layout is chosen so that a batch of new spans writes few pages. Trace ids are random, so
// any B-tree keyed by them is written at random places, and every page touched is a page the
// commit writes to the WAL and a checkpoint writes again. So:
// - `traces` gives each trace a `seq` (its rowid: new traces get increasing numbers) and is the
//   one table whose unique index is keyed by the random trace id: one entry per trace, not per
//   span, and only read when a trace already exists.
// - `spans` is a rowid table, appended in receipt order; its unique key `(trace_seq, span_id,
//   hash)` is the idempotency check and the way to a trace's spans, and since seqs grow it also
//   grows at its right edge. (Keyed directly by trace id, as a WITHOUT ROWID table of ~500-byte
//   rows, an insert into a random trace split wide leaf pages across the whole table.)
// A seq may be reused after retention deletes the newest trace; its spans go in the same
// transaction, so nothing ever points at the wrong trace.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS resources (
    id    INTEGER PRIMARY KEY,
    hash  INTEGER NOT NULL UNIQUE,
    data  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS traces (
    seq                INTEGER PRIMARY KEY,
    trace_id           BLOB NOT NULL UNIQUE,
    first_received_ns  INTEGER NOT NULL,
    last_received_ns   INTEGER NOT NULL,
    spans              INTEGER NOT NULL,
    bytes              INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS traces_by_last_received ON traces (last_received_ns);
CREATE TABLE IF NOT EXISTS spans (
    id           INTEGER PRIMARY KEY,
    trace_seq    INTEGER NOT NULL,
    span_id      BLOB NOT NULL,
    hash         INTEGER NOT NULL,
    resource_id  INTEGER NOT NULL,
    received_ns  INTEGER NOT NULL,
    data         BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS spans_by_key ON spans (trace_seq, span_id, hash);
-- Log records that carry a trace id (OTLP logs), kept with their trace like its spans: evidence
-- on the span they name (span_id empty for none). Same identity rule as spans.
CREATE TABLE IF NOT EXISTS logs (
    id           INTEGER PRIMARY KEY,
    trace_seq    INTEGER NOT NULL,
    span_id      BLOB NOT NULL,
    hash         INTEGER NOT NULL,
    received_ns  INTEGER NOT NULL,
    data         BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS logs_by_key ON logs (trace_seq, span_id, hash);
-- Per-trace results (`results/`): computed when a trace settles, from its spans and the
-- configuration whose fingerprint they record; stale once the trace received a span after
-- `received_ns`. Keyed by trace id, because a trace's seq may be reused after retention.
CREATE TABLE IF NOT EXISTS trace_results (
    trace_id     BLOB PRIMARY KEY,
    received_ns  INTEGER NOT NULL,
    fingerprint  INTEGER NOT NULL,
    data         BLOB NOT NULL
) WITHOUT ROWID;
-- Every fact (service, learned address, hop key) the stored results hold, with how many hold
-- it (`results::seen`): the expected set of everything seen without reading every result.
CREATE TABLE IF NOT EXISTS seen (
    fact  BLOB PRIMARY KEY,
    n     INTEGER NOT NULL
) WITHOUT ROWID;
-- Per run and fingerprint, the sum of its traces' stored results (`results::rollup`), kept in
-- the transactions that store or remove results; run '' holds the traces of no run.
CREATE TABLE IF NOT EXISTS run_rollups (
    run_id       TEXT NOT NULL,
    fingerprint  INTEGER NOT NULL,
    data         BLOB NOT NULL,
    PRIMARY KEY (run_id, fingerprint)
) WITHOUT ROWID;
-- The test cases of each rollup, one row a test case: kept apart from the rollup's row so that
-- storing a trace's results writes its own test cases, not the run's.
CREATE TABLE IF NOT EXISTS run_tests (
    run_id       TEXT NOT NULL,
    fingerprint  INTEGER NOT NULL,
    trace_id     BLOB NOT NULL,
    span_id      BLOB NOT NULL,
    name         TEXT NOT NULL,
    failed       INTEGER NOT NULL,
    PRIMARY KEY (run_id, fingerprint, trace_id, span_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS run_tests_by_trace ON run_tests (trace_id);
-- Which rollup a trace's stored result was added to, so replacing or removing the result takes
-- it away from the same one even if the trace changed runs since.
CREATE TABLE IF NOT EXISTS trace_rollups (
    trace_id     BLOB PRIMARY KEY,
    run_id       TEXT NOT NULL,
    fingerprint  INTEGER NOT NULL
) WITHOUT ROWID;
-- Per fingerprint, a time before which every trace has fresh results (or is marked stale):
-- written by whoever completed them (`results::settle`), so that finding the traces without
-- results reads only those received since, not the whole store.
CREATE TABLE IF NOT EXISTS settle_marks (
    fingerprint  INTEGER PRIMARY KEY,
    low_ns       INTEGER NOT NULL
);
-- For each hop fact of `seen`, per run ('' for no run), the latest trace that crossed it: the
-- `example` of an untested item (a real request another run or the background made).
CREATE TABLE IF NOT EXISTS seen_examples (
    fact         BLOB NOT NULL,
    run_id       TEXT NOT NULL,
    trace_id     BLOB NOT NULL,
    span_id      BLOB NOT NULL,
    test         TEXT,
    PRIMARY KEY (fact, run_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_examples_by_trace ON seen_examples (trace_id);
-- Per run and fingerprint, the results generation of the transaction that last rewrote its
-- rollup (`results::settle`): what a run's history digest was made from.
CREATE TABLE IF NOT EXISTS rollup_stamps (
    run_id       TEXT NOT NULL,
    fingerprint  INTEGER NOT NULL,
    stamp        INTEGER NOT NULL,
    PRIMARY KEY (run_id, fingerprint)
) WITHOUT ROWID;
-- Per run and fingerprint, what history reads of it (`history::RunDigest`), made from its rollup
-- as of `stamp`: fresh while that is the rollup's stamp in `rollup_stamps`.
CREATE TABLE IF NOT EXISTS run_digests (
    run_id       TEXT NOT NULL,
    fingerprint  INTEGER NOT NULL,
    stamp        INTEGER NOT NULL,
    data         BLOB NOT NULL,
    PRIMARY KEY (run_id, fingerprint)
) WITHOUT ROWID;
-- Per run and fingerprint, the run's failures in full (`history::RunFailures`), made with its
-- digest from the same rollup and fresh by the same rule: what `diff` lists of them. Apart from
-- the digests, which a question over many runs reads whole.
CREATE TABLE IF NOT EXISTS run_failures (
    run_id       TEXT NOT NULL,
    fingerprint  INTEGER NOT NULL,
    stamp        INTEGER NOT NULL,
    data         BLOB NOT NULL,
    PRIMARY KEY (run_id, fingerprint)
) WITHOUT ROWID;
-- Bumped by every transaction that stores or removes results: what a cached analysis was made
-- from (`query::AnalysisCache`).
CREATE TABLE IF NOT EXISTS results_generation (
    id  INTEGER PRIMARY KEY,
    n   INTEGER NOT NULL
);
-- Results made stale by a linked trace that arrived after them.
CREATE INDEX IF NOT EXISTS trace_results_stale ON trace_results (trace_id) WHERE received_ns < 0;
-- Which trace links to which (from their results), so a trace that arrives late has the traces
-- that linked to it recomputed with it.
CREATE TABLE IF NOT EXISTS trace_links (
    from_trace  BLOB NOT NULL,
    to_trace    BLOB NOT NULL,
    PRIMARY KEY (to_trace, from_trace)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS services (
    name           TEXT PRIMARY KEY,
    first_seen_ns  INTEGER NOT NULL,
    last_seen_ns   INTEGER NOT NULL
) WITHOUT ROWID;
";

pub(crate) const PAGE_SIZE: i64 = 16_384;

pub(crate) fn db_path(dir: &Path) -> PathBuf {
    dir.join("tracecov.sqlite")
}

pub(crate) fn configure(conn: &Connection, durability: Durability) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // 16 KiB pages: a span row is ~500 bytes, so 4 KiB pages held only a handful and every
    // commit paid per-page costs (WAL frame headers and checksums, a write call per page, page
    // cache lookups) four times as often. Only takes effect when the database is created.
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = match durability {
        Durability::Process => "NORMAL",
        Durability::Power => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    Ok(())
}

/// Brings an existing store's tables up to this version before it is only read (`--data` mode of
/// the CLI): tables added since it was written (per-trace results and what goes with them) are
/// created empty, and a store of an incompatible version is refused as on open.
pub fn prepare_for_reading(dir: &Path) -> Result<(), StoreError> {
    let conn = Connection::open(db_path(dir))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    create_schema(&conn, dir)
}

/// Creates the tables in a new store, or checks that an existing one has this version's format.
fn create_schema(conn: &Connection, dir: &Path) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let tables: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table'",
        [],
        |r| r.get(0),
    )?;
    // A store with tables but no version predates versioning: its spans table has another shape.
    let found = if version == 0 && tables > 0 {
        -1
    } else {
        version
    };
    if found != 0 && found != SCHEMA_VERSION {
        return Err(StoreError::Version {
            path: dir.to_owned(),
            found,
            expected: SCHEMA_VERSION,
        });
    }
    conn.execute_batch(SCHEMA)?;
    // The run tables live in the same file, and retention removes traces from them.
    crate::runs::init_schema(conn)?;
    // Only when it changes: opening a store then writes nothing, so a server restarted on a
    // full disk starts (and refuses exports as retryable until there is room) instead of failing.
    if version != SCHEMA_VERSION {
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    Ok(())
}

/// What one commit adds to a trace's row.
struct TraceTally {
    seq: i64,
    spans: i64,
    /// Log records newly stored (they re-open the trace like spans, but are not spans).
    logs: i64,
    bytes: i64,
}

/// The single writer.
pub struct Store {
    conn: Connection,
    dir: PathBuf,
    checkpointer: checkpoint::Checkpointer,
    /// Resource content → row id, so a batch does not ask SQLite for each span's resource.
    resource_ids: HashMap<Vec<u8>, i64>,
}

impl Store {
    /// Opens (creating when needed) the store under `dir`.
    pub fn open(dir: &Path, durability: Durability) -> Result<Self, StoreError> {
        Self::open_with(dir, durability, checkpoint::Limits::default())
    }

    pub(crate) fn open_with(
        dir: &Path,
        durability: Durability,
        limits: checkpoint::Limits,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let mut conn = Connection::open(db_path(dir))?;
        configure(&conn, durability)?;
        create_schema(&conn, dir)?;
        // The checkpointer thread copies the WAL into the database; the writer never does it
        // inside a commit.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpointer =
            checkpoint::Checkpointer::start(&db_path(dir), &mut conn, durability, limits)?;
        Ok(Self {
            conn,
            dir: dir.to_owned(),
            checkpointer,
            resource_ids: HashMap::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A pool of readers on the same database.
    pub fn reader(&self) -> Reader {
        Reader::new(&self.dir)
    }

    /// Stores `spans` in one transaction. When this returns `Ok`, the spans are committed.
    pub fn write<'a>(
        &mut self,
        spans: impl IntoIterator<Item = &'a Span>,
        received_ns: u64,
    ) -> Result<WriteSummary, StoreError> {
        let batch = EncodedSpans::encode(spans);
        self.write_encoded(&[&batch], received_ns)
    }

    /// Stores already encoded batches in one transaction (group commit). When this returns
    /// `Ok`, every span of every batch is committed.
    pub fn write_encoded(
        &mut self,
        batches: &[&EncodedSpans],
        received_ns: u64,
    ) -> Result<WriteSummary, StoreError> {
        let result = self.write_in_transaction(batches, received_ns);
        match &result {
            Ok(_) => self.checkpointer.committed(&self.conn),
            Err(_) => {
                self.roll_back();
                // The transaction rolled back, and with it any resource rows it added.
                self.resource_ids.clear();
            }
        }
        result
    }

    /// Makes sure no transaction is left open after a failed one. A COMMIT that fails for want
    /// of room leaves its transaction open (SQLite leaves the rollback to the caller), and the
    /// rollback on drop may itself have failed: the next write must find the connection ready.
    fn roll_back(&self) {
        if !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::debug!(error = %e, "rolling back a failed write failed; retried before the next");
        }
    }

    fn write_in_transaction(
        &mut self,
        batches: &[&EncodedSpans],
        received_ns: u64,
    ) -> Result<WriteSummary, StoreError> {
        let received = received_ns as i64;
        self.roll_back();
        simulated_full::apply(&self.conn)?;
        // IMMEDIATE: take the write lock first, waiting under the busy timeout. A deferred
        // transaction reads first, and fails at once (no wait) when another connection (the
        // settle worker storing results) committed between its first read and its first write.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut summary = WriteSummary::default();
        // Per-trace tallies: one row update per trace and commit, not per span.
        let mut traces: HashMap<TraceId, TraceTally> = HashMap::new();
        {
            let mut find_trace = tx.prepare_cached("SELECT seq FROM traces WHERE trace_id = ?1")?;
            let mut insert_trace = tx.prepare_cached(
                "INSERT INTO traces (trace_id, first_received_ns, last_received_ns, spans, bytes)
                 VALUES (?1, ?2, ?2, 0, 0)",
            )?;
            let mut insert_span = tx.prepare_cached(
                "INSERT OR IGNORE INTO spans
                   (trace_seq, span_id, hash, resource_id, received_ns, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut same_span = tx.prepare_cached(
                "SELECT data FROM spans WHERE trace_seq = ?1 AND span_id = ?2 AND hash = ?3",
            )?;
            let mut insert_log = tx.prepare_cached(
                "INSERT OR IGNORE INTO logs (trace_seq, span_id, hash, received_ns, data)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut same_log = tx.prepare_cached(
                "SELECT data FROM logs WHERE trace_seq = ?1 AND span_id = ?2 AND hash = ?3",
            )?;
            let mut upsert_service = tx.prepare_cached(
                "INSERT INTO services (name, first_seen_ns, last_seen_ns) VALUES (?1, ?2, ?2)
                 ON CONFLICT (name) DO UPDATE SET last_seen_ns = excluded.last_seen_ns",
            )?;
            let mut services: Vec<&str> = Vec::new();
            let mut resource_ids: Vec<i64> = Vec::new();
            for batch in batches {
                resource_ids.clear();
                for r in &batch.resources {
                    resource_ids.push(resource_id(&tx, &mut self.resource_ids, r.hash, &r.data)?);
                    if !services.contains(&r.service.as_str()) {
                        services.push(&r.service);
                    }
                }
                for span in &batch.spans {
                    let tally = tally_of(
                        &mut traces,
                        span.trace_id,
                        &mut find_trace,
                        &mut insert_trace,
                        received,
                    )?;
                    let data = batch.data(span);
                    let key = (tally.seq, &span.span_id.as_bytes()[..]);
                    let stored = insert_probing(
                        span.hash,
                        data,
                        |hash| {
                            Ok(insert_span.execute(params![
                                key.0,
                                key.1,
                                hash as i64,
                                resource_ids[span.resource],
                                received,
                                data
                            ])? == 1)
                        },
                        |hash| {
                            Ok(same_span
                                .query_row(params![key.0, key.1, hash as i64], |r| r.get(0))
                                .optional()?)
                        },
                    )?;
                    if stored {
                        summary.inserted += 1;
                        tally.spans += 1;
                        tally.bytes += data.len() as i64;
                    } else {
                        summary.duplicates += 1;
                    }
                }
                for log in &batch.logs {
                    let tally = tally_of(
                        &mut traces,
                        log.trace_id,
                        &mut find_trace,
                        &mut insert_trace,
                        received,
                    )?;
                    let data = batch.log_data(log);
                    let span_id: &[u8] = log.span_id.as_ref().map_or(&[], |s| &s.as_bytes()[..]);
                    let stored = insert_probing(
                        log.hash,
                        data,
                        |hash| {
                            Ok(insert_log.execute(params![
                                tally.seq,
                                span_id,
                                hash as i64,
                                received,
                                data
                            ])? == 1)
                        },
                        |hash| {
                            Ok(same_log
                                .query_row(params![tally.seq, span_id, hash as i64], |r| r.get(0))
                                .optional()?)
                        },
                    )?;
                    if stored {
                        summary.logs_inserted += 1;
                        tally.logs += 1;
                        tally.bytes += data.len() as i64;
                    }
                }
            }
            let mut update_trace = tx.prepare_cached(
                "UPDATE traces SET last_received_ns = ?2, spans = spans + ?3, bytes = bytes + ?4
                 WHERE seq = ?1",
            )?;
            let mut pending_assignment = tx.prepare_cached(
                "INSERT OR REPLACE INTO pending_assignments (trace_id, received_ns) VALUES (?1, ?2)",
            )?;
            // A trace that only received re-deliveries keeps its age: retention counts from the
            // last span (or log record) that was new, and a new one re-opens its results.
            for (trace_id, tally) in traces.iter().filter(|(_, t)| t.spans > 0 || t.logs > 0) {
                update_trace.execute(params![tally.seq, received, tally.spans, tally.bytes])?;
                // Its run assignment (`runs::RunAssigner`) is owed until it succeeds.
                if tally.spans > 0 {
                    pending_assignment.execute(params![&trace_id.as_bytes()[..], received])?;
                }
            }
            for name in services {
                upsert_service.execute(params![name, received])?;
            }
        }
        tx.commit()?;
        Ok(summary)
    }

    /// Removes traces past the retention limits, oldest received first. Returns the number of
    /// traces removed.
    pub fn enforce_retention(
        &mut self,
        retention: Retention,
        now_ns: u64,
    ) -> Result<u64, StoreError> {
        self.roll_back();
        simulated_full::apply(&self.conn)?;
        let result = self.retain(retention, now_ns);
        if result.is_err() {
            self.roll_back();
        }
        result
    }

    fn retain(&mut self, retention: Retention, now_ns: u64) -> Result<u64, StoreError> {
        let cutoff = now_ns.saturating_sub(retention.max_age.as_nanos() as u64) as i64;
        // IMMEDIATE: take the write lock first, waiting under the busy timeout. A deferred
        // transaction reads first, and fails at once (no wait) when another connection (the
        // settle worker storing results) committed between its first read and its first write.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut removed = 0u64;
        let mut rollups = crate::results::settle::RollupEdits::default();
        // History first: runs older than the history age go with their remaining traces.
        let history_cutoff = now_ns.saturating_sub(retention.max_history_age.as_nanos() as u64);
        let (expired, seqs) = crate::results::settle::expired_runs(&tx, history_cutoff)?;
        for seq in seqs {
            delete_trace(&tx, seq, &mut rollups)?;
            removed += 1;
        }
        for run in &expired {
            crate::results::settle::drop_run(&tx, run, &mut rollups)?;
        }
        // By age: every trace whose newest span arrived before the cutoff.
        let old: Vec<i64> = {
            let mut stmt = tx.prepare("SELECT seq FROM traces WHERE last_received_ns < ?1")?;
            stmt.query_map(params![cutoff], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        for seq in old {
            delete_trace(&tx, seq, &mut rollups)?;
            removed += 1;
        }
        // By size, as the store takes on disk (spans with their indexes, results, rollups): drop
        // oldest-received traces until under the limit. A trace's share of the disk is its span
        // bytes scaled by the store's whole-to-spans ratio.
        let spans_bytes: i64 =
            tx.query_row("SELECT COALESCE(SUM(bytes), 0) FROM traces", [], |r| {
                r.get(0)
            })?;
        let pages: i64 = tx.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = tx.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        // An empty store still takes a page per table and index (and the header page).
        let fixed: i64 = tx.query_row(
            "SELECT COUNT(*) + 1 FROM sqlite_master WHERE rootpage > 0",
            [],
            |r| r.get(0),
        )?;
        let data_pages = (pages - free - fixed).max(0);
        let scale = if spans_bytes > 0 {
            ((data_pages * PAGE_SIZE) as f64 / spans_bytes as f64).max(1.0)
        } else {
            1.0
        };
        let mut total = fixed * PAGE_SIZE + (spans_bytes as f64 * scale) as i64;
        if total as u64 > retention.max_bytes {
            let victims: Vec<i64> = {
                let mut stmt =
                    tx.prepare("SELECT seq, bytes FROM traces ORDER BY last_received_ns")?;
                let mut out = Vec::new();
                let mut rows = stmt.query([])?;
                while let Some(row) = rows.next()? {
                    if total as u64 <= retention.max_bytes {
                        break;
                    }
                    let bytes: i64 = row.get(1)?;
                    total -= (bytes as f64 * scale) as i64;
                    out.push(row.get(0)?);
                }
                out
            };
            for seq in victims {
                delete_trace(&tx, seq, &mut rollups)?;
                removed += 1;
            }
        }
        rollups.write(&tx)?;
        tx.commit()?;
        Ok(removed)
    }

    /// Checkpoints the WAL into the main database file; called on clean shutdown so the data
    /// directory is one tidy file afterwards.
    ///
    /// A checkpoint that fails (on a full disk the database file cannot take the log's pages)
    /// does not fail the close: everything committed is in the log, which the next open reads.
    /// Failing here made a server stopped after a full disk exit with an error although it had
    /// lost nothing.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.checkpointer.stop();
        self.roll_back();
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            let e = StoreError::from(e);
            tracing::warn!(
                error = %e,
                "the write-ahead log stays beside the database ({}); it is read at the next start, and nothing committed is lost",
                if e.is_disk_full() { "no room to copy it in" } else { "copying it in failed" },
            );
        }
        self.conn.close().map_err(|(_, e)| StoreError::Sqlite(e))
    }
}

// A trace's spans (0) and its log records that name a span (1), in one statement: one read of
// the store per trace, and the records come from the same snapshot as the spans. (As a second
// statement, the records cost a few percent of per-trace analysis even in a store without any,
// `tracecov bench logs`.)
//
// The seq is found in subqueries, not by `traces JOIN spans ... WHERE trace_id = ?1`: SQLite
// plans such a join with the bound id as a possible filter on a table it might scan, which marks
// the statement to be prepared again whenever the id is bound anew, and rusqlite clears the
// bindings each time a cached statement is put back, so every trace read paid a full parse and
// plan. Here the id only meets the unique index that consumes it. Being one statement, it never
// mixes two traces when retention frees a seq and a new trace takes it.
const TRACE_READ: &str = "
    SELECT 0, span_id, resource_id, data FROM spans
     WHERE trace_seq = (SELECT seq FROM traces WHERE trace_id = ?1)
    UNION ALL
    SELECT 1, span_id, NULL, data FROM logs
     WHERE trace_seq = (SELECT seq FROM traces WHERE trace_id = ?1) AND length(span_id) = 8";

/// Adds to `spans` (one trace's) the spans `more` of it read elsewhere (another instance of a
/// deployment), a span id already there not twice (an export the balancer sent to two
/// instances; a different span reusing an id is kept, as the store keeps it), in the order
/// `Reader::trace` reads them.
pub fn merge_spans(spans: &mut Vec<Span>, more: Vec<Span>) {
    if more.is_empty() {
        return;
    }
    let mut here: HashMap<SpanId, Vec<usize>> = HashMap::new();
    for (i, s) in spans.iter().enumerate() {
        here.entry(s.span_id).or_default().push(i);
    }
    let new: Vec<Span> = more
        .into_iter()
        .filter(|s| {
            !here
                .get(&s.span_id)
                .is_some_and(|at| at.iter().any(|&i| spans[i] == *s))
        })
        .collect();
    spans.extend(new);
    spans.sort_by_key(|s| (s.start_ns, s.span_id));
}

/// Attaches log records to the spans they name, by time. Records naming a span not stored are
/// evidence on nothing (and stay in the store).
fn attach_logs(spans: &mut [Span], mut by_span: HashMap<SpanId, Vec<LogRecord>>) {
    if by_span.is_empty() {
        return;
    }
    for span in spans.iter_mut() {
        if let Some(mut logs) = by_span.remove(&span.span_id) {
            logs.sort_by_key(|l| l.time_ns);
            span.logs = logs;
        }
    }
}

/// The tally of `trace_id` in this commit, its row found or made the first time.
fn tally_of<'m>(
    traces: &'m mut HashMap<TraceId, TraceTally>,
    trace_id: TraceId,
    find_trace: &mut rusqlite::CachedStatement<'_>,
    insert_trace: &mut rusqlite::CachedStatement<'_>,
    received: i64,
) -> Result<&'m mut TraceTally, StoreError> {
    Ok(match traces.entry(trace_id) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => {
            let id = &trace_id.as_bytes()[..];
            let seq = match find_trace
                .query_row(params![id], |r| r.get::<_, i64>(0))
                .optional()?
            {
                Some(seq) => seq,
                None => insert_trace.insert(params![id, received])?,
            };
            e.insert(TraceTally {
                seq,
                spans: 0,
                logs: 0,
                bytes: 0,
            })
        }
    })
}

/// Hash values tried for one content before giving up (each one taken by different content).
const MAX_PROBES: u64 = 64;

/// Stores a span or log record under its ids unless the same bytes are already there. The hash
/// only narrows the search: an item is a duplicate when a stored one has the same ids and the
/// same bytes; another whose content happens to (or was made to) share the hash takes the next
/// free hash value. `insert` tries one hash value (true when stored); `stored_at` reads what a
/// hash value holds. Returns whether the item was new.
fn insert_probing(
    hash: u64,
    data: &[u8],
    mut insert: impl FnMut(u64) -> Result<bool, StoreError>,
    mut stored_at: impl FnMut(u64) -> Result<Option<Vec<u8>>, StoreError>,
) -> Result<bool, StoreError> {
    let mut hash = hash;
    for _ in 0..MAX_PROBES {
        if insert(hash)? {
            return Ok(true);
        }
        if stored_at(hash)?.as_deref() == Some(data) {
            return Ok(false);
        }
        hash = hash.wrapping_add(1);
    }
    // Every probed value holds different content with these ids: treat it as stored rather
    // than fail the export (only crafted input gets here).
    Ok(false)
}

/// The row id of the resource with this content, storing it when new. `cache` (content →
/// row id) spares a query per export: resources never change once stored. The hash only
/// narrows the search: a stored resource is this one when its bytes are, and different content
/// that shares the hash takes the next free hash value.
fn resource_id(
    tx: &rusqlite::Transaction<'_>,
    cache: &mut HashMap<Vec<u8>, i64>,
    hash: u64,
    data: &[u8],
) -> Result<i64, StoreError> {
    if let Some(id) = cache.get(data) {
        return Ok(*id);
    }
    let mut hash = hash;
    for _ in 0..MAX_PROBES {
        let found: Option<(i64, Vec<u8>)> = tx
            .prepare_cached("SELECT id, data FROM resources WHERE hash = ?1")?
            .query_row(params![hash as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let id = match found {
            Some((id, stored)) if stored == data => id,
            Some(_) => {
                hash = hash.wrapping_add(1);
                continue;
            }
            None => {
                tx.prepare_cached("INSERT INTO resources (hash, data) VALUES (?1, ?2)")?
                    .execute(params![hash as i64, data])?;
                tx.last_insert_rowid()
            }
        };
        cache.insert(data.to_vec(), id);
        return Ok(id);
    }
    Err(StoreError::Corrupt(codec::CorruptRow {
        what: "resource",
        reason: format!("{MAX_PROBES} different resources share one content hash"),
    }))
}

fn delete_trace(
    tx: &rusqlite::Transaction<'_>,
    seq: i64,
    rollups: &mut crate::results::settle::RollupEdits,
) -> Result<(), StoreError> {
    let trace_id: Option<Vec<u8>> = tx
        .prepare_cached("SELECT trace_id FROM traces WHERE seq = ?1")?
        .query_row(params![seq], |r| r.get(0))
        .optional()?;
    if let Some(id) = trace_id {
        let kept = crate::results::settle::age_out(tx, &id, rollups)?;
        crate::runs::forget_trace(tx, &id, kept)?;
    }
    tx.prepare_cached(
        "DELETE FROM trace_results WHERE trace_id = (SELECT trace_id FROM traces WHERE seq = ?1)",
    )?
    .execute(params![seq])?;
    tx.prepare_cached(
        "DELETE FROM trace_links WHERE from_trace = (SELECT trace_id FROM traces WHERE seq = ?1)",
    )?
    .execute(params![seq])?;
    tx.prepare_cached("DELETE FROM spans WHERE trace_seq = ?1")?
        .execute(params![seq])?;
    tx.prepare_cached("DELETE FROM logs WHERE trace_seq = ?1")?
        .execute(params![seq])?;
    tx.prepare_cached("DELETE FROM traces WHERE seq = ?1")?
        .execute(params![seq])?;
    Ok(())
}

/// Read access from any thread. Connections are pooled: opening one costs a file open and a
/// schema read, which a request should not pay each time.
#[derive(Clone)]
pub struct Reader {
    inner: Arc<ReaderInner>,
}

struct ReaderInner {
    path: PathBuf,
    pool: Mutex<Vec<Connection>>,
    /// Decoded resources by row id: they never change once written.
    resources: Mutex<HashMap<i64, Arc<Resource>>>,
    /// The other instances of the deployment this store's server belongs to (`serve
    /// --shared-db`), set once at start. Carried by the reader because every question goes
    /// through it: `results` and `query` add what the others hold without a new parameter.
    deployment: std::sync::OnceLock<Arc<dyn crate::results::Deployment>>,
}

/// Readers kept open for reuse; more may be open at once, the rest are closed after use.
const READER_POOL: usize = 8;

impl Reader {
    pub fn new(dir: &Path) -> Self {
        Self {
            inner: Arc::new(ReaderInner {
                path: db_path(dir),
                pool: Mutex::new(Vec::new()),
                resources: Mutex::new(HashMap::new()),
                deployment: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Makes this reader (and its clones) answer for the whole deployment. Set once; a later
    /// call is ignored.
    pub fn set_deployment(&self, deployment: Arc<dyn crate::results::Deployment>) {
        let _ = self.inner.deployment.set(deployment);
    }

    /// The deployment this store belongs to, when it is one of many.
    pub fn deployment(&self) -> Option<&Arc<dyn crate::results::Deployment>> {
        self.inner.deployment.get()
    }

    /// Runs `f` with a pooled read connection. Blocking: call from a blocking context.
    pub fn with_conn<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self
            .inner
            .pool
            .lock()
            .map_err(|_| StoreError::Closed)?
            .pop();
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.inner.path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(std::time::Duration::from_secs(10))?;
                c
            }
        };
        // Readers write too (the settle worker's results, runs opened through the API).
        let out = simulated_full::apply(&conn)
            .map_err(StoreError::from)
            .and_then(|()| f(&conn));
        // A write that failed for want of room may leave its transaction open: a pooled
        // connection holding one would fail every later write and, by keeping its snapshot,
        // every checkpoint. Rolled back, or else not kept.
        let clean = conn.is_autocommit() || conn.execute_batch("ROLLBACK").is_ok();
        if clean
            && let Ok(mut pool) = self.inner.pool.lock()
            && pool.len() < READER_POOL
        {
            pool.push(conn);
        }
        out
    }

    fn resource(&self, conn: &Connection, id: i64) -> Result<Arc<Resource>, StoreError> {
        if let Some(r) = self
            .inner
            .resources
            .lock()
            .map_err(|_| StoreError::Closed)?
            .get(&id)
        {
            return Ok(r.clone());
        }
        let data: Vec<u8> = conn.query_row(
            "SELECT data FROM resources WHERE id = ?1",
            params![id],
            |r| r.get(0),
        )?;
        let resource = Arc::new(codec::decode_resource(&data)?);
        self.inner
            .resources
            .lock()
            .map_err(|_| StoreError::Closed)?
            .insert(id, resource.clone());
        Ok(resource)
    }

    /// Every stored span of a trace, ordered by start time, with the log records that name it.
    /// Empty when the trace is unknown.
    /// The spans of a trace wherever its deployment keeps them: this store's, and, for a trace
    /// this instance does not hold or that crosses instances, those the other instances hold
    /// (`results::Deployment`). Without a deployment, `trace`.
    pub fn trace_anywhere(&self, trace_id: TraceId) -> Result<Vec<Span>, StoreError> {
        let mut spans = self.trace(trace_id)?;
        let Some(d) = self.deployment() else {
            return Ok(spans);
        };
        if !spans.is_empty() && !self.with_conn(|c| d.crosses(c, trace_id))? {
            return Ok(spans);
        }
        let others = d.elsewhere(trace_id)?;
        if !others.is_empty() {
            merge_spans(&mut spans, d.spans_elsewhere(trace_id, &others)?);
        }
        Ok(spans)
    }

    pub fn trace(&self, trace_id: TraceId) -> Result<Vec<Span>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(TRACE_READ)?;
            let mut rows = stmt.query(params![&trace_id.as_bytes()[..]])?;
            let mut spans = Vec::new();
            let mut logs: HashMap<SpanId, Vec<LogRecord>> = HashMap::new();
            let mut scopes = codec::ScopeCache::default();
            while let Some(row) = rows.next()? {
                let is_log = row.get::<_, i64>(0)? == 1;
                let span_id: Vec<u8> = row.get(1)?;
                let data: Vec<u8> = row.get(3)?;
                if is_log {
                    if let Ok(span_id) = SpanId::from_slice(&span_id) {
                        logs.entry(span_id)
                            .or_default()
                            .push(codec::decode_log(&data)?);
                    }
                    continue;
                }
                let span_id = SpanId::from_slice(&span_id).map_err(|e| CorruptRow {
                    what: "span id",
                    reason: e.to_string(),
                })?;
                let resource = self.resource(conn, row.get(2)?)?;
                spans.push(codec::decode_span(
                    trace_id,
                    span_id,
                    resource,
                    &data,
                    &mut scopes,
                )?);
            }
            spans.sort_by_key(|s| (s.start_ns, s.span_id));
            attach_logs(&mut spans, logs);
            Ok(spans)
        })
    }

    pub fn stats(&self) -> Result<Stats, StoreError> {
        self.with_conn(|conn| {
            let (spans, traces): (i64, i64) = conn.query_row(
                "SELECT COALESCE(SUM(spans), 0), COUNT(*) FROM traces",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let services: i64 =
                conn.query_row("SELECT COUNT(*) FROM services", [], |r| r.get(0))?;
            Ok(Stats {
                spans: spans as u64,
                traces: traces as u64,
                services: services as u64,
            })
        })
    }

    /// The size of the stored span bytes, for size-based retention and metrics.
    pub fn stored_bytes(&self) -> Result<u64, StoreError> {
        self.with_conn(|conn| {
            let b: i64 = conn.query_row("SELECT COALESCE(SUM(bytes), 0) FROM traces", [], |r| {
                r.get(0)
            })?;
            Ok(b as u64)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attributes, KeyValue};

    fn span(trace: &str, id: &str, service: &Arc<Resource>) -> Span {
        let mut s = Span::new(
            TraceId::from_hex(trace).unwrap(),
            SpanId::from_hex(id).unwrap(),
            "op",
        );
        s.resource = service.clone();
        s
    }

    fn resource(name: &str) -> Arc<Resource> {
        Arc::new(Resource::new(Attributes(vec![KeyValue::new(
            "service.name",
            name,
        )])))
    }

    const T1: &str = "11111111111111111111111111111111";
    const T2: &str = "22222222222222222222222222222222";

    #[test]
    fn redelivery_is_idempotent_but_a_different_span_with_the_same_id_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Durability::Process).unwrap();
        let r = resource("a");
        let a = span(T1, "0000000000000001", &r);
        let s = store.write(std::slice::from_ref(&a), 1).unwrap();
        assert_eq!(s.inserted, 1);
        let s = store.write(std::slice::from_ref(&a), 2).unwrap();
        assert_eq!((s.inserted, s.duplicates), (0, 1));
        let mut b = a.clone();
        b.name = "other".into();
        store.write(&[b], 3).unwrap();
        let reader = store.reader();
        assert_eq!(reader.trace(a.trace_id).unwrap().len(), 2);
        assert_eq!(
            reader.stats().unwrap(),
            Stats {
                spans: 2,
                traces: 1,
                services: 1
            }
        );
    }

    #[test]
    fn one_group_commit_of_several_exports_counts_each_span_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Durability::Process).unwrap();
        let (ra, rb) = (resource("a"), resource("b"));
        let first = vec![
            span(T1, "0000000000000001", &ra),
            span(T2, "0000000000000001", &rb),
            span(T1, "0000000000000002", &ra),
        ];
        // A client's retry of the same export lands in the same commit as the original.
        let retry = first.clone();
        let later = vec![span(T2, "0000000000000002", &rb)];
        let batches: Vec<EncodedSpans> = [&first, &retry, &later]
            .into_iter()
            .map(|spans| EncodedSpans::encode(spans.iter()))
            .collect();
        let refs: Vec<&EncodedSpans> = batches.iter().collect();
        let summary = store.write_encoded(&refs, 10).unwrap();
        assert_eq!((summary.inserted, summary.duplicates), (4, 3));
        let reader = store.reader();
        assert_eq!(
            reader.stats().unwrap(),
            Stats {
                spans: 4,
                traces: 2,
                services: 2
            }
        );
        let t2 = reader.trace(TraceId::from_hex(T2).unwrap()).unwrap();
        assert_eq!(t2.len(), 2);
        assert!(t2.iter().all(|s| s.service() == "b"));
        // Bytes are counted for stored spans only, once each.
        let bytes: u64 = first
            .iter()
            .chain(&later)
            .map(|s| {
                let e = EncodedSpans::encode([s]);
                e.encoded_bytes() as u64
            })
            .sum();
        assert_eq!(reader.stored_bytes().unwrap(), bytes);
    }

    #[test]
    fn a_store_in_another_format_is_refused_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        {
            // The shape of the first, unversioned development format.
            let conn = Connection::open(db_path(dir.path())).unwrap();
            conn.execute_batch(
                "CREATE TABLE spans (trace_id BLOB, span_id BLOB, hash INTEGER,
                 PRIMARY KEY (trace_id, span_id, hash)) WITHOUT ROWID;",
            )
            .unwrap();
        }
        let err = Store::open(dir.path(), Durability::Process).err().unwrap();
        assert!(
            matches!(err, StoreError::Version { found: -1, .. }),
            "{err}"
        );
        // A store this version wrote opens again.
        let fresh = tempfile::tempdir().unwrap();
        Store::open(fresh.path(), Durability::Process)
            .unwrap()
            .close()
            .unwrap();
        Store::open(fresh.path(), Durability::Process).unwrap();
    }

    #[test]
    fn reopening_restores_everything() {
        let dir = tempfile::tempdir().unwrap();
        let r = resource("a");
        let spans = vec![
            span(T1, "0000000000000001", &r),
            span(T1, "0000000000000002", &r),
        ];
        {
            let mut store = Store::open(dir.path(), Durability::Process).unwrap();
            store.write(&spans, 1).unwrap();
            store.close().unwrap();
        }
        let store = Store::open(dir.path(), Durability::Process).unwrap();
        let back = store.reader().trace(spans[0].trace_id).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].service(), "a");
    }

    #[test]
    fn retention_counts_from_receipt_and_removes_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Durability::Process).unwrap();
        let r = resource("a");
        // Span timestamps are decades old; only the receipt time may matter.
        let mut old_span = span(T1, "0000000000000001", &r);
        old_span.start_ns = 1;
        store.write(&[old_span], 1_000).unwrap();
        store
            .write(&[span(T2, "0000000000000001", &r)], 5_000)
            .unwrap();
        let keep_all = Retention {
            max_age: std::time::Duration::from_nanos(10_000),
            max_bytes: u64::MAX,
            ..Retention::default()
        };
        assert_eq!(store.enforce_retention(keep_all, 6_000).unwrap(), 0);
        let by_age = Retention {
            max_age: std::time::Duration::from_nanos(2_000),
            max_bytes: u64::MAX,
            ..Retention::default()
        };
        assert_eq!(store.enforce_retention(by_age, 6_000).unwrap(), 1);
        let reader = store.reader();
        assert!(
            reader
                .trace(TraceId::from_hex(T1).unwrap())
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            reader.trace(TraceId::from_hex(T2).unwrap()).unwrap().len(),
            1
        );

        store
            .write(&[span(T1, "0000000000000003", &r)], 7_000)
            .unwrap();
        let by_size = Retention {
            max_age: std::time::Duration::from_secs(1),
            max_bytes: 1,
            ..Retention::default()
        };
        // Over the size limit: the oldest (T2) goes first, then T1, until under the limit.
        assert_eq!(store.enforce_retention(by_size, 7_000).unwrap(), 2);
        assert_eq!(reader.stats().unwrap().traces, 0);
    }

    /// Log records are kept with their trace: attached to the span they name when it is read,
    /// stored once however often they are delivered, a late one re-opens the trace (its
    /// `last_received_ns` moves), and retention removes them with it.
    #[test]
    fn log_records_live_and_die_with_their_trace() {
        use crate::model::{LogRecord, TracedLog};
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Durability::Process).unwrap();
        let r = resource("a");
        let s = span(T1, "0000000000000001", &r);
        store.write(std::slice::from_ref(&s), 1_000).unwrap();
        let log = TracedLog {
            trace_id: s.trace_id,
            span_id: Some(s.span_id),
            record: LogRecord {
                time_ns: 5,
                severity_number: LogRecord::ERROR,
                body: "boom".into(),
                ..LogRecord::default()
            },
        };
        let logs = EncodedSpans::encode_logs([&log, &log]);
        let summary = store.write_encoded(&[&logs], 2_000).unwrap();
        assert_eq!(summary.logs_inserted, 1);
        assert_eq!(
            store.write_encoded(&[&logs], 3_000).unwrap().logs_inserted,
            0
        );
        let reader = store.reader();
        let back = reader.trace(s.trace_id).unwrap();
        assert_eq!(back[0].logs, vec![log.record.clone()]);
        let last: i64 = store
            .conn
            .query_row("SELECT last_received_ns FROM traces", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            last, 2_000,
            "a new record re-opens the trace, a re-delivery does not"
        );
        let by_age = Retention {
            max_age: std::time::Duration::from_nanos(1),
            max_bytes: u64::MAX,
            ..Retention::default()
        };
        assert_eq!(store.enforce_retention(by_age, 9_000).unwrap(), 1);
        let left: i64 = store
            .conn
            .query_row("SELECT COUNT(*) FROM logs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
    }

    /// Regression: every trace read prepared its statements afresh (a join with the trace id
    /// bound was planned again on each new binding), 16 % of the CPU of computing results.
    /// Reading other traces on the same connection must reuse the prepared statement as it is.
    #[test]
    fn reading_traces_reuses_its_prepared_statements() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Durability::Process).unwrap();
        let r = resource("a");
        let (a, b) = (
            span(T1, "0000000000000001", &r),
            span(T2, "0000000000000002", &r),
        );
        store.write([&a, &b], 1_000).unwrap();
        let log = crate::model::TracedLog {
            trace_id: a.trace_id,
            span_id: Some(a.span_id),
            record: LogRecord {
                severity_number: LogRecord::ERROR,
                body: "boom".into(),
                ..LogRecord::default()
            },
        };
        store
            .write_encoded(&[&EncodedSpans::encode_logs([&log])], 2_000)
            .unwrap();
        let reader = store.reader();
        for (t, logs) in [(a.trace_id, 1), (b.trace_id, 0)].repeat(2) {
            let spans = reader.trace(t).unwrap();
            assert_eq!((spans.len(), spans[0].logs.len()), (1, logs));
        }
        reader
            .with_conn(|c| {
                let stmt = c.prepare_cached(TRACE_READ)?;
                assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
                Ok(())
            })
            .unwrap();
    }

    /// Two different spans with the same ids whose content hashes collide (a crafted collision
    /// once made an acknowledged span vanish as a "duplicate"), and two different resources
    /// sharing a hash: all are stored and read back as they were; an exact re-delivery is still
    /// a duplicate.
    #[test]
    fn colliding_hashes_never_drop_a_span_or_mix_resources() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Durability::Process).unwrap();
        let a = span(T1, "0000000000000001", &resource("cart"));
        let mut b = span(T1, "0000000000000001", &resource("payments"));
        b.name = "a different span with the same ids".to_owned();
        let first = EncodedSpans::encode([&a]);
        let mut second = EncodedSpans::encode([&b]);
        second.spans[0].hash = first.spans[0].hash;
        second.resources[0].hash = first.resources[0].hash;
        assert_eq!(store.write_encoded(&[&first], 1).unwrap().inserted, 1);
        let w = store.write_encoded(&[&second], 2).unwrap();
        assert_eq!((w.inserted, w.duplicates), (1, 0));
        // A fresh writer (no cached resource ids) finds each resource by its bytes.
        drop(store);
        let mut store = Store::open(dir.path(), Durability::Process).unwrap();
        let w = store.write_encoded(&[&second], 3).unwrap();
        assert_eq!((w.inserted, w.duplicates), (0, 1), "an exact re-delivery");
        let mut spans = store
            .reader()
            .trace(TraceId::from_hex(T1).unwrap())
            .unwrap();
        spans.sort_by(|x, y| x.name.cmp(&y.name));
        let got: Vec<(&str, &str)> = spans
            .iter()
            .map(|s| (s.name.as_str(), s.service()))
            .collect();
        assert_eq!(
            got,
            [
                ("a different span with the same ids", "payments"),
                (a.name.as_str(), "cart")
            ]
        );
    }

    /// A write refused for want of room (SQLITE_FULL, as on a full disk; here SQLite's own limit
    /// on the database's size) stores none of its spans and leaves the writer ready: once there
    /// is room again, the same write succeeds, with no restart.
    #[test]
    fn a_write_refused_for_want_of_room_stores_nothing_and_the_next_one_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Durability::Process).unwrap();
        let r = resource("a");
        store.write(&[span(T1, "0000000000000001", &r)], 1).unwrap();
        let padding = "p".repeat(2_000);
        let batch: Vec<Span> = (0..200u64)
            .map(|i| {
                let mut s = span(&format!("{:032x}", i + 100), "0000000000000001", &r);
                s.attributes.push("padding", padding.as_str());
                s
            })
            .collect();
        // No room past the current size.
        store.conn.pragma_update(None, "max_page_count", 1).unwrap();
        let err = store.write(&batch, 2).unwrap_err();
        assert!(err.is_disk_full(), "{err}");
        assert_eq!(
            err.write_problem(dir.path()),
            format!("the disk holding {} is full", dir.path().display())
        );
        assert!(
            store.conn.is_autocommit(),
            "the failed transaction is still open"
        );
        assert_eq!(store.reader().stats().unwrap().spans, 1);
        // Room again.
        store
            .conn
            .pragma_update(None, "max_page_count", 0xffff_fffe_i64)
            .unwrap();
        assert_eq!(store.write(&batch, 3).unwrap().inserted, 200);
        assert_eq!(store.reader().stats().unwrap().spans, 201);
        store.close().unwrap();
    }

    /// A reader's write that failed with its transaction open (as a COMMIT refused on a full
    /// disk leaves it) must not go back to the pool holding the write lock: the span writer
    /// would then wait out its busy timeout and fail at every commit.
    #[test]
    fn a_failed_write_through_a_reader_never_keeps_the_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Durability::Process).unwrap();
        let reader = store.reader();
        let failed = reader.with_conn(|c| {
            c.execute_batch("BEGIN IMMEDIATE")?;
            Err::<(), _>(StoreError::Closed)
        });
        assert!(failed.is_err());
        let started = std::time::Instant::now();
        let r = resource("a");
        store.write(&[span(T1, "0000000000000001", &r)], 1).unwrap();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "the writer waited {:?} for the lock",
            started.elapsed()
        );
        assert_eq!(reader.stats().unwrap().spans, 1);
    }

    /// The size limit counts what the store takes on disk, not only span bytes: a limit above
    /// the span bytes but below the disk they take still removes the oldest traces (it used to
    /// remove nothing while the disk filled).
    #[test]
    fn size_retention_counts_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Durability::Process).unwrap();
        let r = resource("a");
        let padding = "p".repeat(2_000);
        // Enough traces that their pages outweigh the empty store's page per table and index.
        const TRACES: u64 = 800;
        for i in 0..TRACES {
            let trace = format!("{:032x}", i + 1);
            let mut s = span(&trace, "0000000000000001", &r);
            s.attributes.push("padding", padding.as_str());
            store.write(&[s], 1_000 + i).unwrap();
        }
        let spans_bytes: i64 = store
            .conn
            .query_row("SELECT SUM(bytes) FROM traces", [], |r| r.get(0))
            .unwrap();
        let pages: i64 = store
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        let on_disk = pages * PAGE_SIZE;
        assert!(
            on_disk > spans_bytes * 5 / 4,
            "{on_disk} on disk, {spans_bytes} of spans"
        );
        // Between the span bytes and what they take on disk.
        let limit = Retention {
            max_age: std::time::Duration::from_secs(3600),
            max_bytes: (spans_bytes + (on_disk - spans_bytes) / 4) as u64,
            ..Retention::default()
        };
        let removed = store.enforce_retention(limit, 2_000).unwrap();
        assert!(
            removed > 0 && removed < TRACES,
            "{removed} removed with {on_disk} bytes on disk, {spans_bytes} of spans"
        );
        // The oldest went first.
        let reader = store.reader();
        assert!(
            reader
                .trace(TraceId::from_hex(&format!("{:032x}", 1)).unwrap())
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            reader
                .trace(TraceId::from_hex(&format!("{TRACES:032x}")).unwrap())
                .unwrap()
                .len(),
            1
        );
    }
}
