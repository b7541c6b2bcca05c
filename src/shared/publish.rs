//! Publishing this instance's results to the shared database: its share of every run's rollup
//! (with the test cases), the facts its results hold and their examples, and each trace's
//! stored result with where its spans are (`trace_results`, `trace_instances`).
//!
//! Key design decisions:
//! - Results are computed and stored in the embedded store exactly as in a single process (the
//!   settle worker, readers, retention), and published afterwards: an export is acknowledged
//!   when its spans are durable locally, and a database that does not answer only delays
//!   publication. What is not published yet is recorded durably in the embedded store, in the
//!   very transaction that changes it: SQLite triggers on `rollup_stamps` (moved by every
//!   rewrite of a rollup), `trace_results`, `seen` and `seen_examples` append the changed key to
//!   `shared_outbox`. The publisher reads a batch of keys, reads their current values, writes
//!   them in one PostgreSQL transaction, and only then deletes those outbox rows (by id, so a
//!   change made meanwhile stays queued). A crash or an outage leaves the rows; publishing again
//!   is idempotent (current values replace whatever was there).
//! - Triggers rather than calls in `results::settle`: every path that writes results (the
//!   settle worker, a reader storing what it computed, retention, `--history-age`) is covered
//!   without each knowing about the deployment, and a store used alone carries no outbox
//!   (`uninstall` at the start of a serve without `--shared-db`).
//! - Whole values, not deltas: an instance's share of a rollup is rewritten whole when it
//!   changed (at most once a pass, whatever number of traces settled), so PostgreSQL never sums
//!   under concurrency and a lost or repeated publication cannot count anything twice.
//!
//! Must not: make an export or a settle pass wait for PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use tokio_util::sync::CancellationToken;

use super::{SharedDb, SharedError};
use crate::ingest::IngestQueue;
use crate::results::settle;
use crate::store::{Reader, StoreError};

/// How often the publisher looks for changes.
const PUBLISH_EVERY: Duration = Duration::from_millis(200);

/// Outbox rows published per PostgreSQL transaction.
const BATCH: i64 = 2_000;

const TRIGGERS: &[(&str, &str, &str)] = &[
    // (name, event on table, what it queues)
    (
        "shared_outbox_rollup_insert",
        "AFTER INSERT ON rollup_stamps",
        "('rollup', NULL, new.run_id, new.fingerprint)",
    ),
    (
        "shared_outbox_rollup_update",
        "AFTER UPDATE ON rollup_stamps",
        "('rollup', NULL, new.run_id, new.fingerprint)",
    ),
    (
        "shared_outbox_rollup_delete",
        "AFTER DELETE ON rollup_stamps",
        "('rollup', NULL, old.run_id, old.fingerprint)",
    ),
    (
        "shared_outbox_trace_insert",
        "AFTER INSERT ON trace_results",
        "('trace', new.trace_id, NULL, NULL)",
    ),
    (
        "shared_outbox_trace_update",
        "AFTER UPDATE ON trace_results",
        "('trace', new.trace_id, NULL, NULL)",
    ),
    (
        "shared_outbox_trace_delete",
        "AFTER DELETE ON trace_results",
        "('trace', old.trace_id, NULL, NULL)",
    ),
    // A trace's first span: where it is kept is published at once, not when it settles, so that
    // its views reach it and a trace split between instances is noticed early.
    (
        "shared_outbox_trace_arrival",
        "AFTER INSERT ON traces",
        "('trace', new.trace_id, NULL, NULL)",
    ),
    // A run removed by `--history-age` (the only way a run leaves the store), with its last
    // span's time: it leaves the deployment too, unless it received spans since elsewhere.
    (
        "shared_outbox_run_delete",
        "AFTER DELETE ON runs",
        "('run', NULL, old.id, old.last_ns)",
    ),
    (
        "shared_outbox_fact_insert",
        "AFTER INSERT ON seen",
        "('fact', new.fact, NULL, NULL)",
    ),
    (
        "shared_outbox_fact_update",
        "AFTER UPDATE ON seen",
        "('fact', new.fact, NULL, NULL)",
    ),
    (
        "shared_outbox_fact_delete",
        "AFTER DELETE ON seen",
        "('fact', old.fact, NULL, NULL)",
    ),
    (
        "shared_outbox_example_insert",
        "AFTER INSERT ON seen_examples",
        "('example', new.fact, new.run_id, NULL)",
    ),
    (
        "shared_outbox_example_update",
        "AFTER UPDATE ON seen_examples",
        "('example', new.fact, new.run_id, NULL)",
    ),
    (
        "shared_outbox_example_delete",
        "AFTER DELETE ON seen_examples",
        "('example', old.fact, old.run_id, NULL)",
    ),
];

/// Makes the embedded store record what it changes for publication. The first time for this
/// instance and database (or after it published elsewhere), everything the store holds is
/// queued. Blocking.
pub fn install(conn: &Connection, instance: &str, target: &str) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let out = (|| {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS shared_outbox (
                 id     INTEGER PRIMARY KEY,
                 kind   TEXT NOT NULL,
                 key    BLOB,
                 run    TEXT,
                 fp     INTEGER
             );
             CREATE TABLE IF NOT EXISTS shared_published_to (
                 instance  TEXT NOT NULL,
                 target    TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS deployment_traces (
                 trace_id  BLOB PRIMARY KEY
             );",
        )?;
        for (name, event, row) in TRIGGERS {
            conn.execute_batch(&format!(
                "CREATE TRIGGER IF NOT EXISTS {name} {event} BEGIN
                   INSERT INTO shared_outbox (kind, key, run, fp) VALUES {row};
                 END;"
            ))?;
        }
        let known: Option<(String, String)> = conn
            .query_row(
                "SELECT instance, target FROM shared_published_to",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if known.as_ref().map(|(i, t)| (i.as_str(), t.as_str())) != Some((instance, target)) {
            // Another instance name or database: everything is published again.
            conn.execute_batch(
                "DELETE FROM shared_outbox;
                 INSERT INTO shared_outbox (kind, run, fp)
                   SELECT 'rollup', run_id, fingerprint FROM run_rollups;
                 INSERT INTO shared_outbox (kind, key)
                   SELECT 'trace', trace_id FROM trace_results
                   UNION SELECT 'trace', trace_id FROM traces;
                 DELETE FROM deployment_traces;
                 INSERT INTO shared_outbox (kind, key) SELECT 'fact', fact FROM seen;
                 INSERT INTO shared_outbox (kind, key, run)
                   SELECT 'example', fact, run_id FROM seen_examples;
                 DELETE FROM shared_published_to;",
            )?;
            conn.execute(
                "INSERT INTO shared_published_to (instance, target) VALUES (?1, ?2)",
                params![instance, target],
            )?;
        }
        Ok(())
    })();
    match out {
        Ok(()) => {
            conn.execute_batch("COMMIT")?;
            Ok(())
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Stops recording changes for publication (a serve without `--shared-db`): a store used alone
/// keeps no outbox. Its next `install` publishes everything again. Blocking.
pub fn uninstall(conn: &Connection) -> Result<(), StoreError> {
    let installed: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'shared_outbox')",
        [],
        |r| r.get(0),
    )?;
    if !installed {
        return Ok(());
    }
    let mut sql = String::from("BEGIN IMMEDIATE;");
    for (name, _, _) in TRIGGERS {
        sql.push_str(&format!("DROP TRIGGER IF EXISTS {name};"));
    }
    sql.push_str(
        "DROP TABLE IF EXISTS shared_outbox; DROP TABLE IF EXISTS shared_published_to;
         DROP TABLE IF EXISTS deployment_traces; COMMIT;",
    );
    conn.execute_batch(&sql).inspect_err(|_| {
        let _ = conn.execute_batch("ROLLBACK");
    })?;
    Ok(())
}

/// A rollup share's current value: the rollup and its test cases, encoded; `None` once gone.
type Share = Option<(Vec<u8>, Vec<u8>)>;
/// A trace's stored result: fingerprint, received, the result encoded.
type StoredResult = Option<(i64, i64, Vec<u8>)>;
/// An example's trace, span and test.
type ExampleValue = Option<(Vec<u8>, Vec<u8>, Option<String>)>;
/// An outbox row: id, kind, key, run, fingerprint.
type Queued = (i64, String, Option<Vec<u8>>, Option<String>, Option<i64>);

/// One batch of changes with their current values.
#[derive(Default)]
struct Batch {
    /// The last outbox row read: rows up to it are done once the batch is published.
    last: i64,
    rows: usize,
    /// (run, fingerprint, (rollup, test cases) or gone)
    rollups: Vec<(String, i64, Share)>,
    /// (trace, (fingerprint, received, result) or gone, last received while stored)
    traces: Vec<(Vec<u8>, StoredResult, Option<i64>)>,
    /// (trace, trace it links to): the links of the traces in `traces`.
    links: Vec<(Vec<u8>, Vec<u8>)>,
    facts: Vec<(Vec<u8>, Option<i64>)>,
    /// (fact, run, (trace, span, test) or gone)
    examples: Vec<(Vec<u8>, String, ExampleValue)>,
    /// (run, its last span's time): runs `--history-age` removed here.
    expired: Vec<(String, i64)>,
}

/// The test cases of a rollup as published: postcard of [((trace, span), (name, failed))].
pub(super) type PublishedTests = Vec<(([u8; 16], [u8; 8]), (String, bool))>;

fn read_batch(conn: &Connection) -> Result<Batch, StoreError> {
    // One read transaction: a rollup and its test cases as of one moment.
    conn.execute_batch("BEGIN")?;
    let out = read_batch_in(conn);
    let _ = conn.execute_batch("COMMIT");
    out
}

fn read_batch_in(conn: &Connection) -> Result<Batch, StoreError> {
    let mut batch = Batch::default();
    let rows: Vec<Queued> = conn
        .prepare_cached("SELECT id, kind, key, run, fp FROM shared_outbox ORDER BY id LIMIT ?1")?
        .query_map(params![BATCH], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?;
    batch.rows = rows.len();
    let mut done = std::collections::HashSet::new();
    for (id, kind, key, run, fp) in rows {
        batch.last = id;
        if !done.insert((kind.clone(), key.clone(), run.clone(), fp)) {
            continue;
        }
        match (kind.as_str(), key, run, fp) {
            ("rollup", _, Some(run), Some(fp)) => {
                let value = settle::load_rollup(conn, &run, fp)?.map(|r| {
                    let tests: PublishedTests = r
                        .test_cases()
                        .map(|(k, (name, failed))| (*k, (name.clone(), *failed)))
                        .collect();
                    (r.encode(), postcard::to_stdvec(&tests).unwrap_or_default())
                });
                batch.rollups.push((run, fp, value));
            }
            ("trace", Some(trace), _, _) => {
                let value = conn
                    .prepare_cached(
                        "SELECT fingerprint, received_ns, data FROM trace_results WHERE trace_id = ?1",
                    )?
                    .query_row(params![trace], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?;
                let received = conn
                    .prepare_cached("SELECT last_received_ns FROM traces WHERE trace_id = ?1")?
                    .query_row(params![trace], |r| r.get(0))
                    .optional()?;
                let links: Vec<Vec<u8>> = conn
                    .prepare_cached("SELECT to_trace FROM trace_links WHERE from_trace = ?1")?
                    .query_map(params![trace], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                batch
                    .links
                    .extend(links.into_iter().map(|to| (trace.clone(), to)));
                batch.traces.push((trace, value, received));
            }
            ("fact", Some(fact), _, _) => {
                let n = conn
                    .prepare_cached("SELECT n FROM seen WHERE fact = ?1")?
                    .query_row(params![fact], |r| r.get(0))
                    .optional()?;
                batch.facts.push((fact, n));
            }
            ("example", Some(fact), Some(run), _) => {
                let value = conn
                    .prepare_cached(
                        "SELECT trace_id, span_id, test FROM seen_examples
                         WHERE fact = ?1 AND run_id = ?2",
                    )?
                    .query_row(params![fact, run], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()?;
                batch.examples.push((fact, run, value));
            }
            ("run", _, Some(run), Some(last_ns)) => batch.expired.push((run, last_ns)),
            // A row this version does not know (none is written): dropped with the batch.
            _ => {}
        }
    }
    Ok(batch)
}

async fn publish(db: &SharedDb, batch: &Batch) -> Result<(), SharedError> {
    let me = db.instance_url();
    let mut client = db.client().await?;
    let tx = client.transaction().await?;
    let put_rollup = tx
        .prepare(
            "INSERT INTO instance_rollups (run_id, fingerprint, instance, data, tests)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (run_id, fingerprint, instance)
             DO UPDATE SET data = EXCLUDED.data, tests = EXCLUDED.tests,
               stamp = nextval('rollup_share_stamps')",
        )
        .await?;
    let drop_rollup = tx
        .prepare(
            "DELETE FROM instance_rollups WHERE run_id = $1 AND fingerprint = $2 AND instance = $3",
        )
        .await?;
    for (run, fp, value) in &batch.rollups {
        match value {
            Some((data, tests)) => {
                tx.execute(&put_rollup, &[run, fp, &me, data, tests])
                    .await?
            }
            None => tx.execute(&drop_rollup, &[run, fp, &me]).await?,
        };
    }
    // The batch's traces in four statements whatever their number: their old results and
    // places dropped, their current ones written from arrays.
    let mut traces: Vec<&[u8]> = Vec::with_capacity(batch.traces.len());
    let (mut res_traces, mut res_data) = (Vec::<&[u8]>::new(), Vec::<&[u8]>::new());
    let (mut res_fps, mut res_at) = (Vec::<i64>::new(), Vec::<i64>::new());
    let (mut at_traces, mut at_received): (Vec<&[u8]>, Vec<i64>) = Default::default();
    let mut unplaced: Vec<&[u8]> = Vec::new();
    for (trace, value, received) in &batch.traces {
        traces.push(trace);
        if let Some((fp, at, data)) = value {
            res_traces.push(trace);
            res_fps.push(*fp);
            res_at.push(*at);
            res_data.push(data);
        }
        match received {
            Some(at) => {
                at_traces.push(trace);
                at_received.push(*at);
            }
            None => unplaced.push(trace),
        }
    }
    if !traces.is_empty() {
        tx.execute(
            "DELETE FROM trace_results WHERE instance = $2 AND trace_id = ANY($1)",
            &[&traces, &me],
        )
        .await?;
    }
    if !res_traces.is_empty() {
        tx.execute(
            "INSERT INTO trace_results (trace_id, instance, fingerprint, received_ns, data)
             SELECT t.trace_id, $2, t.fp, t.at, t.data
               FROM UNNEST($1::bytea[], $3::bigint[], $4::bigint[], $5::bytea[])
                 AS t(trace_id, fp, at, data)",
            &[&res_traces, &me, &res_fps, &res_at, &res_data],
        )
        .await?;
    }
    // Only rows that are new or whose trace received spans since come back: only their
    // relations need telling (a result published again tells nobody, or instances would keep
    // telling each other).
    let placed: Vec<Vec<u8>> = if at_traces.is_empty() {
        Vec::new()
    } else {
        tx.query(
            "INSERT INTO trace_instances (trace_id, instance, received_ns)
             SELECT t.trace_id, $2, t.at FROM UNNEST($1::bytea[], $3::bigint[]) AS t(trace_id, at)
             ON CONFLICT (trace_id, instance) DO UPDATE SET received_ns = EXCLUDED.received_ns
             WHERE trace_instances.received_ns <> EXCLUDED.received_ns
             RETURNING trace_id",
            &[&at_traces, &me, &at_received],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    if !unplaced.is_empty() {
        tx.execute(
            "DELETE FROM trace_instances WHERE instance = $2 AND trace_id = ANY($1)",
            &[&unplaced, &me],
        )
        .await?;
        // A trace no instance holds any more (aged out everywhere) links nowhere: its links go
        // with its last holder's place, so `trace_links` does not outgrow the deployment.
        tx.execute(
            "DELETE FROM trace_links l WHERE l.from_trace = ANY($1)
               AND NOT EXISTS (SELECT 1 FROM trace_instances i WHERE i.trace_id = l.from_trace)",
            &[&unplaced],
        )
        .await?;
    }
    let placed: Vec<&[u8]> = placed.iter().map(Vec::as_slice).collect();
    let (from, to): (Vec<&[u8]>, Vec<&[u8]>) = batch
        .links
        .iter()
        .map(|(f, t)| (f.as_slice(), t.as_slice()))
        .unzip();
    let new_links: Vec<&[u8]> = if from.is_empty() {
        Vec::new()
    } else {
        let rows = tx
            .query(
                "INSERT INTO trace_links (from_trace, to_trace)
                 SELECT * FROM unnest($1::bytea[], $2::bytea[])
                 ON CONFLICT DO NOTHING RETURNING from_trace",
                &[&from, &to],
            )
            .await?;
        let new: std::collections::HashSet<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
        batch
            .links
            .iter()
            .filter(|(f, _)| new.contains(f))
            .map(|(f, _)| f.as_slice())
            .collect()
    };
    let tell = !placed.is_empty() || !new_links.is_empty();
    if tell {
        tx.execute(TELL, &[&placed, &me, &new_links]).await?;
    }
    let (mut fact_keys, mut fact_ns, mut facts_gone): (Vec<&[u8]>, Vec<i64>, Vec<&[u8]>) =
        Default::default();
    for (fact, n) in &batch.facts {
        match n {
            Some(n) => {
                fact_keys.push(fact);
                fact_ns.push(*n);
            }
            None => facts_gone.push(fact),
        }
    }
    if !fact_keys.is_empty() {
        tx.execute(
            "INSERT INTO instance_seen (instance, fact, n)
             SELECT $1, t.fact, t.n FROM UNNEST($2::bytea[], $3::bigint[]) AS t(fact, n)
             ON CONFLICT (instance, fact) DO UPDATE SET n = EXCLUDED.n",
            &[&me, &fact_keys, &fact_ns],
        )
        .await?;
    }
    if !facts_gone.is_empty() {
        tx.execute(
            "DELETE FROM instance_seen WHERE instance = $1 AND fact = ANY($2)",
            &[&me, &facts_gone],
        )
        .await?;
    }
    // Examples: (fact, run) pairs, so the gone ones are matched pairwise from two arrays.
    let (mut put_facts, mut put_runs) = (Vec::<&[u8]>::new(), Vec::<&str>::new());
    let (mut put_traces, mut put_spans) = (Vec::<&[u8]>::new(), Vec::<&[u8]>::new());
    let mut put_tests = Vec::<Option<&str>>::new();
    let (mut gone_facts, mut gone_runs) = (Vec::<&[u8]>::new(), Vec::<&str>::new());
    for (fact, run, value) in &batch.examples {
        match value {
            Some((trace, span, test)) => {
                put_facts.push(fact);
                put_runs.push(run);
                put_traces.push(trace);
                put_spans.push(span);
                put_tests.push(test.as_deref());
            }
            None => {
                gone_facts.push(fact);
                gone_runs.push(run);
            }
        }
    }
    if !put_facts.is_empty() {
        tx.execute(
            "INSERT INTO instance_seen_examples (instance, fact, run_id, trace_id, span_id, test)
             SELECT $1, t.fact, t.run_id, t.trace_id, t.span_id, t.test
               FROM UNNEST($2::bytea[], $3::text[], $4::bytea[], $5::bytea[], $6::text[])
                 AS t(fact, run_id, trace_id, span_id, test)
             ON CONFLICT (instance, fact, run_id) DO UPDATE SET trace_id = EXCLUDED.trace_id,
               span_id = EXCLUDED.span_id, test = EXCLUDED.test",
            &[
                &me,
                &put_facts,
                &put_runs,
                &put_traces,
                &put_spans,
                &put_tests,
            ],
        )
        .await?;
    }
    if !gone_facts.is_empty() {
        tx.execute(
            "DELETE FROM instance_seen_examples e
              USING UNNEST($2::bytea[], $3::text[]) AS g(fact, run_id)
              WHERE e.instance = $1 AND e.fact = g.fact AND e.run_id = g.run_id",
            &[&me, &gone_facts, &gone_runs],
        )
        .await?;
    }
    for (run, last_ns) in &batch.expired {
        // Removed from the deployment with what every instance published of it, unless spans
        // reached it elsewhere since this instance last saw it.
        let gone = tx
            .execute(
                "DELETE FROM runs WHERE id = $1 AND last_ns <= $2",
                &[run, last_ns],
            )
            .await?;
        if gone > 0 {
            tx.execute("DELETE FROM instance_rollups WHERE run_id = $1", &[run])
                .await?;
            tx.execute("DELETE FROM run_digests WHERE run_id = $1", &[run])
                .await?;
            tx.execute(
                "DELETE FROM instance_seen_examples WHERE run_id = $1",
                &[run],
            )
            .await?;
        }
    }
    tx.commit().await?;
    if tell {
        // Told again once committed: of two instances placing related rows at once, neither
        // transaction sees the other's, but whichever commits last sees both here. (No lock
        // serializes them: publishing stays concurrent across instances.)
        client.execute(TELL, &[&placed, &me, &new_links]).await?;
    }
    Ok(())
}

/// Tells the instances concerned (`stale_traces`) about traces placed here ($1, new or with new
/// spans) and this instance's traces with links published for the first time ($3): each trace
/// whose results now need spans another instance holds is recomputed by its holder, with them.
const TELL: &str = "
INSERT INTO stale_traces (instance, trace_id)
SELECT DISTINCT instance, trace_id FROM (
    -- a trace placed here that another instance holds too (split): both holders
    SELECT o.instance, o.trace_id FROM trace_instances o
     WHERE o.trace_id = ANY($1) AND o.instance <> $2
    UNION ALL
    SELECT $2, o.trace_id FROM trace_instances o
     WHERE o.trace_id = ANY($1) AND o.instance <> $2
    -- traces elsewhere linking to a trace placed here: them, and it
    UNION ALL
    SELECT h.instance, l.from_trace FROM trace_links l
      JOIN trace_instances h ON h.trace_id = l.from_trace
     WHERE l.to_trace = ANY($1) AND h.instance <> $2
    UNION ALL
    SELECT $2, l.to_trace FROM trace_links l
      JOIN trace_instances h ON h.trace_id = l.from_trace
     WHERE l.to_trace = ANY($1) AND h.instance <> $2
    -- traces elsewhere a trace placed here or newly linking links to: them, and it
    UNION ALL
    SELECT h.instance, l.to_trace FROM trace_links l
      JOIN trace_instances h ON h.trace_id = l.to_trace
     WHERE (l.from_trace = ANY($1) OR l.from_trace = ANY($3)) AND h.instance <> $2
    UNION ALL
    SELECT $2, l.from_trace FROM trace_links l
      JOIN trace_instances h ON h.trace_id = l.to_trace
     WHERE (l.from_trace = ANY($1) OR l.from_trace = ANY($3)) AND h.instance <> $2
) told
ORDER BY 1, 2
ON CONFLICT DO NOTHING";

/// Takes what other instances told this one (`stale_traces`): each trace is recorded as
/// crossing instances (`deployment_traces`) and its stored results made stale, so the settle
/// worker computes them again with the spans the others hold. The rows are deleted only after
/// the store recorded them.
async fn take_told(db: &SharedDb, reader: &Reader) -> Result<(), SharedError> {
    let me = db.instance_url().to_owned();
    let client = db.client().await?;
    let rows = client
        .query(
            "SELECT trace_id FROM stale_traces WHERE instance = $1 LIMIT 10000",
            &[&me],
        )
        .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let traces: Vec<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
    let local_traces = traces.clone();
    local(reader, move |c| {
        c.execute_batch("BEGIN IMMEDIATE")?;
        let out = (|| {
            let mut cross =
                c.prepare_cached("INSERT OR IGNORE INTO deployment_traces (trace_id) VALUES (?1)")?;
            let mut stale = c.prepare_cached(
                "UPDATE trace_results SET received_ns = -1 WHERE trace_id = ?1 AND received_ns >= 0",
            )?;
            for t in &local_traces {
                cross.execute(params![t])?;
                stale.execute(params![t])?;
            }
            Ok(())
        })();
        match out {
            Ok(()) => Ok(c.execute_batch("COMMIT")?),
            Err(e) => {
                let _ = c.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    })
    .await
    .map_err(|e| SharedError::Config(format!("recording what other instances told: {e}")))?;
    client
        .execute(
            "DELETE FROM stale_traces WHERE instance = $1 AND trace_id = ANY($2)",
            &[&me, &traces],
        )
        .await?;
    Ok(())
}

/// What waits in the store: changes not published yet, and traces whose run assignment waits
/// for the database. Blocking.
pub fn backlog(reader: &Reader) -> Result<(u64, u64), StoreError> {
    reader.with_conn(count_backlog)
}

fn count_backlog(conn: &Connection) -> Result<(u64, u64), StoreError> {
    let outbox: i64 = conn.query_row("SELECT COUNT(*) FROM shared_outbox", [], |r| r.get(0))?;
    let unassigned: i64 =
        conn.query_row("SELECT COUNT(*) FROM pending_assignments", [], |r| r.get(0))?;
    Ok((outbox as u64, unassigned as u64))
}

/// Runs `f` with a read connection on the blocking pool.
async fn local<T: Send + 'static>(
    reader: &Reader,
    f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let reader = reader.clone();
    tokio::task::spawn_blocking(move || reader.with_conn(f))
        .await
        .map_err(|_| StoreError::Closed)?
}

/// One pass: publishes every change queued, a batch at a time, while the database answers.
async fn pass(db: &SharedDb, reader: &Reader, queue: &IngestQueue) -> Result<(), String> {
    let (_, unassigned) = local(reader, count_backlog)
        .await
        .map_err(|e| e.to_string())?;
    if unassigned > 0 {
        // Traces that arrived while the database did not answer wait for a commit to be
        // assigned (`runs::RunAssigner::after_commit`): an empty one, now that it answers.
        if let Err(e) = queue.write(Vec::new()).await {
            tracing::debug!(error = %e, "asking the writer to assign waiting traces failed");
        }
    }
    close_runs_closed_elsewhere(db, reader)
        .await
        .map_err(|e| e.to_string())?;
    take_told(db, reader).await.map_err(|e| e.to_string())?;
    loop {
        let batch = local(reader, read_batch).await.map_err(|e| e.to_string())?;
        if batch.rows == 0 {
            break;
        }
        let published = tokio::time::timeout(super::CALL_TIMEOUT, publish(db, &batch))
            .await
            .unwrap_or(Err(SharedError::Timeout(super::CALL_TIMEOUT)));
        if let Err(e) = published {
            if e.is_connection() {
                db.health().failed(&e);
            }
            return Err(e.to_string());
        }
        let last = batch.last;
        local(reader, move |c| {
            c.prepare_cached("DELETE FROM shared_outbox WHERE id <= ?1")?
                .execute(params![last])?;
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?;
        if (batch.rows as i64) < BATCH {
            break;
        }
    }
    Ok(())
}

/// Closes here the explicit runs another instance closed: a closed run's traces are settled at
/// once (`results::settle::pending`), so every instance computes their results as soon as the
/// run is closed through any of them, not a settle period later. Explicit runs only: they are
/// the ones closed, and few are open at a time (CI runs are never closed).
async fn close_runs_closed_elsewhere(db: &SharedDb, reader: &Reader) -> Result<(), StoreError> {
    let open: Vec<String> = local(reader, |c| {
        let mut stmt = c.prepare_cached(
            "SELECT id FROM runs WHERE kind = 'explicit' AND closed_ns IS NULL LIMIT 1000",
        )?;
        let ids = stmt.query_map([], |r| r.get(0))?;
        Ok(ids.collect::<Result<_, _>>()?)
    })
    .await?;
    if open.is_empty() {
        return Ok(());
    }
    let client = db.client().await?;
    let rows = client
        .query(
            &format!(
                "SELECT {} FROM runs WHERE id = ANY($1) AND closed_ns IS NOT NULL",
                super::runs::RUN_COLUMNS
            ),
            &[&open],
        )
        .await
        .map_err(SharedError::from)?;
    let closed: Vec<crate::runs::RunRow> = rows.iter().map(super::runs::run_row).collect();
    if closed.is_empty() {
        return Ok(());
    }
    local(reader, move |c| {
        closed
            .iter()
            .try_for_each(|run| crate::runs::mirror_run(c, run))
    })
    .await
}

/// Publishes what the embedded store changes until `shutdown`, and once more then (when the
/// database answers). While the database is degraded it waits for the heartbeat to find it
/// back; failures are logged once while they last.
pub fn spawn_publisher(
    db: Arc<SharedDb>,
    reader: Reader,
    queue: IngestQueue,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            let stopping = tokio::select! {
                _ = shutdown.cancelled() => true,
                _ = tokio::time::sleep(PUBLISH_EVERY) => false,
            };
            if db.health().degraded().is_none() {
                match pass(&db, &reader, &queue).await {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!("publishing results to the shared database works again");
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "publishing results to the shared database failed; they stay queued in the store and are retried");
                    }
                    Err(e) => tracing::debug!(error = %e, "publishing results still fails"),
                }
            }
            if let Ok((unpublished, unassigned)) = local(&reader, count_backlog).await {
                db.health().set_backlog(unpublished, unassigned);
            }
            if stopping {
                break;
            }
        }
    })
}
