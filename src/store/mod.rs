//! The durable span store: SQLite (rusqlite, bundled) in WAL mode under the data directory.
//!
//! Owns the schema, the write path (`Store::write`) and reads (`Reader`). Main types: `Store`, the
//! single writer; `Reader`, a small pool of read connections that may be used from many threads.
//!
//! Key design decisions:
//! - One writer connection on one thread (ingest's writer): SQLite serializes writers anyway, and
//!   batching many exports into one transaction (group commit) is what makes it fast.
//! - A span row is keyed by (trace id, span id, content hash). An exact re-delivery (a client's
//!   retry) is ignored, so writes are idempotent; a *different* span reusing an id is kept, because
//!   duplicate ids are something analysis must see and report, not something storage may hide.
//! - Resources are stored once per distinct content and referenced by id: an export typically has
//!   one resource for hundreds of spans.
//! - Retention ages count from when a span was received (`received_ns`), never from the span's
//!   own timestamps: imported traces are often years old.
//!
//! This module does no networking and knows nothing of OTLP.

mod codec;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::model::{Resource, Span, SpanId, TraceId};

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

/// How long and how much to keep.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Traces whose last span was received longer ago than this are removed.
    pub max_age: std::time::Duration,
    /// When the stored span bytes exceed this, the oldest traces (by receipt) are removed first.
    pub max_bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age: std::time::Duration::from_secs(30 * 24 * 3600),
            max_bytes: 20 * 1024 * 1024 * 1024,
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
}

/// Totals for `/api/stats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub spans: u64,
    pub traces: u64,
    pub services: u64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS resources (
    id    INTEGER PRIMARY KEY,
    hash  INTEGER NOT NULL UNIQUE,
    data  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS spans (
    trace_id     BLOB NOT NULL,
    span_id      BLOB NOT NULL,
    hash         INTEGER NOT NULL,
    resource_id  INTEGER NOT NULL,
    received_ns  INTEGER NOT NULL,
    data         BLOB NOT NULL,
    PRIMARY KEY (trace_id, span_id, hash)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS traces (
    trace_id           BLOB PRIMARY KEY,
    first_received_ns  INTEGER NOT NULL,
    last_received_ns   INTEGER NOT NULL,
    spans              INTEGER NOT NULL,
    bytes              INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS traces_by_last_received ON traces (last_received_ns);
CREATE TABLE IF NOT EXISTS services (
    name           TEXT PRIMARY KEY,
    first_seen_ns  INTEGER NOT NULL,
    last_seen_ns   INTEGER NOT NULL
) WITHOUT ROWID;
";

pub(crate) fn db_path(dir: &Path) -> PathBuf {
    dir.join("tracecov.sqlite")
}

fn configure(conn: &Connection, durability: Durability) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = match durability {
        Durability::Process => "NORMAL",
        Durability::Power => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    Ok(())
}

/// The single writer.
pub struct Store {
    conn: Connection,
    dir: PathBuf,
    /// Resource content hash → row id, so a batch does not ask SQLite for each span's resource.
    resource_ids: HashMap<u64, i64>,
    /// Scratch buffer reused for every span's encoding.
    buf: Vec<u8>,
}

impl Store {
    /// Opens (creating when needed) the store under `dir`.
    pub fn open(dir: &Path, durability: Durability) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let conn = Connection::open(db_path(dir))?;
        configure(&conn, durability)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn,
            dir: dir.to_owned(),
            resource_ids: HashMap::new(),
            buf: Vec::with_capacity(1024),
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
        let tx = self.conn.transaction()?;
        let mut summary = WriteSummary::default();
        // Per-trace tallies for the `traces` table: one upsert per trace, not per span.
        let mut traces: HashMap<TraceId, (u64, u64)> = HashMap::new();
        let mut services: Vec<&'a str> = Vec::new();
        {
            let mut insert_span = tx.prepare_cached(
                "INSERT OR IGNORE INTO spans (trace_id, span_id, hash, resource_id, received_ns, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut find_resource =
                tx.prepare_cached("SELECT id FROM resources WHERE hash = ?1")?;
            let mut insert_resource =
                tx.prepare_cached("INSERT INTO resources (hash, data) VALUES (?1, ?2)")?;
            let mut last_resource: Option<(*const Resource, i64)> = None;
            for span in spans {
                // Spans of one export share an `Arc<Resource>`: compare pointers before hashing.
                let ptr = Arc::as_ptr(&span.resource);
                let resource_id = match last_resource {
                    Some((p, id)) if p == ptr => id,
                    _ => {
                        let data = codec::encode_resource(&span.resource);
                        let hash = codec::content_hash(&data) as i64;
                        let id = match self.resource_ids.get(&(hash as u64)) {
                            Some(id) => *id,
                            None => {
                                let id = match find_resource
                                    .query_row(params![hash], |r| r.get::<_, i64>(0))
                                    .optional()?
                                {
                                    Some(id) => id,
                                    None => {
                                        insert_resource.execute(params![hash, data])?;
                                        tx.last_insert_rowid()
                                    }
                                };
                                self.resource_ids.insert(hash as u64, id);
                                id
                            }
                        };
                        if !services.contains(&span.service()) {
                            services.push(span.service());
                        }
                        last_resource = Some((ptr, id));
                        id
                    }
                };
                codec::encode_span(span, &mut self.buf);
                let hash = codec::content_hash(&self.buf) as i64;
                let n = insert_span.execute(params![
                    &span.trace_id.as_bytes()[..],
                    &span.span_id.as_bytes()[..],
                    hash,
                    resource_id,
                    received_ns as i64,
                    &self.buf
                ])?;
                if n == 1 {
                    summary.inserted += 1;
                    let entry = traces.entry(span.trace_id).or_default();
                    entry.0 += 1;
                    entry.1 += self.buf.len() as u64;
                } else {
                    summary.duplicates += 1;
                }
            }
            let mut upsert_trace = tx.prepare_cached(
                "INSERT INTO traces (trace_id, first_received_ns, last_received_ns, spans, bytes)
                 VALUES (?1, ?2, ?2, ?3, ?4)
                 ON CONFLICT (trace_id) DO UPDATE SET
                   last_received_ns = excluded.last_received_ns,
                   spans = spans + excluded.spans,
                   bytes = bytes + excluded.bytes",
            )?;
            for (trace_id, (count, bytes)) in &traces {
                upsert_trace.execute(params![
                    &trace_id.as_bytes()[..],
                    received_ns as i64,
                    *count as i64,
                    *bytes as i64
                ])?;
            }
            let mut upsert_service = tx.prepare_cached(
                "INSERT INTO services (name, first_seen_ns, last_seen_ns) VALUES (?1, ?2, ?2)
                 ON CONFLICT (name) DO UPDATE SET last_seen_ns = excluded.last_seen_ns",
            )?;
            for name in services {
                upsert_service.execute(params![name, received_ns as i64])?;
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
        let cutoff = now_ns.saturating_sub(retention.max_age.as_nanos() as u64) as i64;
        let tx = self.conn.transaction()?;
        let mut removed = 0u64;
        // By age: every trace whose newest span arrived before the cutoff.
        let old: Vec<Vec<u8>> = {
            let mut stmt = tx.prepare("SELECT trace_id FROM traces WHERE last_received_ns < ?1")?;
            stmt.query_map(params![cutoff], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        for id in &old {
            delete_trace(&tx, id)?;
            removed += 1;
        }
        // By size: drop oldest-received traces until under the limit.
        let mut total: i64 =
            tx.query_row("SELECT COALESCE(SUM(bytes), 0) FROM traces", [], |r| {
                r.get(0)
            })?;
        if total as u64 > retention.max_bytes {
            let victims: Vec<(Vec<u8>, i64)> = {
                let mut stmt =
                    tx.prepare("SELECT trace_id, bytes FROM traces ORDER BY last_received_ns")?;
                let mut out = Vec::new();
                let mut rows = stmt.query([])?;
                while let Some(row) = rows.next()? {
                    if total as u64 <= retention.max_bytes {
                        break;
                    }
                    let bytes: i64 = row.get(1)?;
                    total -= bytes;
                    out.push((row.get(0)?, bytes));
                }
                out
            };
            for (id, _) in &victims {
                delete_trace(&tx, id)?;
                removed += 1;
            }
        }
        tx.commit()?;
        Ok(removed)
    }

    /// Checkpoints the WAL into the main database file; called on clean shutdown so the data
    /// directory is one tidy file afterwards.
    pub fn close(self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        self.conn.close().map_err(|(_, e)| StoreError::Sqlite(e))
    }
}

fn delete_trace(tx: &rusqlite::Transaction<'_>, trace_id: &[u8]) -> Result<(), StoreError> {
    tx.execute("DELETE FROM spans WHERE trace_id = ?1", params![trace_id])?;
    tx.execute("DELETE FROM traces WHERE trace_id = ?1", params![trace_id])?;
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
            }),
        }
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
        let out = f(&conn);
        if let Ok(mut pool) = self.inner.pool.lock()
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

    /// Every stored span of a trace, ordered by start time. Empty when the trace is unknown.
    pub fn trace(&self, trace_id: TraceId) -> Result<Vec<Span>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT span_id, resource_id, data FROM spans WHERE trace_id = ?1",
            )?;
            let mut rows = stmt.query(params![&trace_id.as_bytes()[..]])?;
            let mut spans = Vec::new();
            let mut scopes = codec::ScopeCache::default();
            while let Some(row) = rows.next()? {
                let span_id: Vec<u8> = row.get(0)?;
                let span_id = SpanId::from_slice(&span_id).map_err(|e| CorruptRow {
                    what: "span id",
                    reason: e.to_string(),
                })?;
                let resource = self.resource(conn, row.get(1)?)?;
                let data: Vec<u8> = row.get(2)?;
                spans.push(codec::decode_span(
                    trace_id,
                    span_id,
                    resource,
                    &data,
                    &mut scopes,
                )?);
            }
            spans.sort_by_key(|s| (s.start_ns, s.span_id));
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
        };
        assert_eq!(store.enforce_retention(keep_all, 6_000).unwrap(), 0);
        let by_age = Retention {
            max_age: std::time::Duration::from_nanos(2_000),
            max_bytes: u64::MAX,
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
        };
        // Over the size limit: the oldest (T2) goes first, then T1, until under the limit.
        assert_eq!(store.enforce_retention(by_size, 7_000).unwrap(), 2);
        assert_eq!(reader.stats().unwrap().traces, 0);
    }
}
