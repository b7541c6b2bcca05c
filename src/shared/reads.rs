//! The reads of a deployment (`results::Deployment` over PostgreSQL): the other instances'
//! published shares of rollups, facts and examples (`shared::publish` writes them), and the
//! runs a lookup may answer with, copied into the embedded store; and history's records of each
//! run kept for the whole deployment (`run_digests`, schema V4), with the history keeper's
//! lease.
//!
//! Called from blocking threads (the API's blocking pool, the CLI's reads never: they have no
//! deployment), through `SharedDb::block_on`: bounded, and failing at once while the database
//! is degraded, so a question asked during an outage gets a clear error, never a partial
//! answer presented as whole.

use std::sync::Arc;

use rusqlite::Connection;

use super::SharedDb;
use super::peers::Peers;
use super::publish::PublishedTests;
use super::runs::{RUN_COLUMNS, run_row};
use crate::model::{Span, TraceId};
use crate::results::deployment::ExampleRow;
use crate::results::{Deployment, KeptHistory, Rollup, RunLookup};
use crate::runs;
use crate::store::StoreError;

/// The most runs `RunLookup::Named` copies for one name (names repeat: `nightly`).
const SAME_NAME: i64 = 100;

/// How long the history keeper's lease lasts unless renewed: an instance that stops keeping
/// (killed, cut off from the database) is replaced after this.
const KEEPER_LEASE_S: f64 = 10.0;

/// The sorted stamps of a run's shares (`$RUN` and `$FP` replaced by the query's parameters):
/// the list a history record is kept under (schema.rs, V4).
const SHARES: &str = "(SELECT COALESCE(array_agg(s.stamp ORDER BY s.stamp), '{}')
   FROM instance_rollups s WHERE s.run_id = $RUN AND s.fingerprint = $FP)";

fn shares_of(run: &str, fp: &str) -> String {
    SHARES.replace("$RUN", run).replace("$FP", fp)
}

pub struct SharedReads {
    db: Arc<SharedDb>,
    /// How the spans other instances hold are asked for.
    peers: Peers,
}

impl SharedReads {
    pub fn new(db: Arc<SharedDb>, peers: Peers) -> Self {
        Self { db, peers }
    }
}

impl Deployment for SharedReads {
    fn others_rollups(&self, run_ids: &[String], fp: i64) -> Result<Vec<Rollup>, StoreError> {
        let me = self.db.instance_url();
        let rows = self.db.block_on(async {
            let client = self.db.client().await?;
            Ok(client
                .query(
                    "SELECT run_id, instance, data, tests FROM instance_rollups
                     WHERE run_id = ANY($1) AND fingerprint = $2 AND instance <> $3
                     ORDER BY run_id, instance",
                    &[&run_ids, &fp, &me],
                )
                .await?)
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (run, instance): (String, String) = (row.get(0), row.get(1));
            let rollup = Rollup::decode(row.get(2)).map_err(|e| {
                StoreError::Shared(format!(
                    "the share of run {run:?} published by {instance} does not decode ({e}): is that instance another version of tracecov?"
                ))
            })?;
            let tests: PublishedTests = postcard::from_bytes(row.get(3)).map_err(|e| {
                StoreError::Shared(format!(
                    "the test cases of run {run:?} published by {instance} do not decode ({e})"
                ))
            })?;
            let mut rollup = rollup;
            for (key, (name, failed)) in tests {
                rollup.put_test_case(key, name, failed);
            }
            out.push(rollup);
        }
        Ok(out)
    }

    fn others_facts(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let me = self.db.instance_url();
        let rows = self.db.block_on(async {
            let client = self.db.client().await?;
            Ok(client
                .query(
                    "SELECT DISTINCT fact FROM instance_seen WHERE instance <> $1 AND n > 0",
                    &[&me],
                )
                .await?)
        })?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn others_examples(&self) -> Result<Vec<ExampleRow>, StoreError> {
        let me = self.db.instance_url();
        let rows = self.db.block_on(async {
            let client = self.db.client().await?;
            Ok(client
                .query(
                    "SELECT fact, run_id, trace_id, span_id, test FROM instance_seen_examples
                     WHERE instance <> $1",
                    &[&me],
                )
                .await?)
        })?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect())
    }

    fn mirror_runs(&self, local: &Connection, lookup: RunLookup<'_>) -> Result<(), StoreError> {
        let rows = self.db.block_on(async {
            let client = self.db.client().await?;
            let rows = match lookup {
                RunLookup::Named(what) if what.is_empty() || what == "latest" => {
                    client
                        .query(
                            &format!(
                                "SELECT {RUN_COLUMNS} FROM runs ORDER BY created_ns DESC, id DESC LIMIT 1"
                            ),
                            &[],
                        )
                        .await?
                }
                RunLookup::Named(what) => {
                    client
                        .query(
                            &format!(
                                "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 OR name = $1
                                 ORDER BY created_ns DESC LIMIT $2"
                            ),
                            &[&what, &SAME_NAME],
                        )
                        .await?
                }
                RunLookup::Before(run) => {
                    client
                        .query(
                            &format!(
                                "SELECT {RUN_COLUMNS} FROM runs
                                 WHERE COALESCE(suite, ci_job, 'default') = $1 AND created_ns <= $2
                                 ORDER BY created_ns DESC LIMIT 3"
                            ),
                            &[&run.suite, &(run.created_ns as i64)],
                        )
                        .await?
                }
                RunLookup::Suite(suite, last) => {
                    client
                        .query(
                            &format!(
                                "SELECT {RUN_COLUMNS} FROM runs
                                 WHERE COALESCE(suite, ci_job, 'default') = $1
                                 ORDER BY created_ns DESC LIMIT $2"
                            ),
                            &[&suite, &(last as i64)],
                        )
                        .await?
                }
                RunLookup::All => {
                    client
                        .query(&format!("SELECT {RUN_COLUMNS} FROM runs"), &[])
                        .await?
                }
            };
            Ok(rows)
        })?;
        if rows.is_empty() {
            return Ok(());
        }
        // One write transaction for them all, taking the write lock first.
        local.execute_batch("BEGIN IMMEDIATE")?;
        let copied = rows
            .iter()
            .try_for_each(|row| runs::mirror_run(local, &run_row(row)));
        match copied {
            Ok(()) => local.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = local.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
        Ok(())
    }

    fn crosses(&self, local: &Connection, trace: TraceId) -> Result<bool, StoreError> {
        Ok(local
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM deployment_traces WHERE trace_id = ?1)")?
            .query_row([&trace.as_bytes()[..]], |r| r.get(0))?)
    }

    fn elsewhere(&self, trace: TraceId) -> Result<Vec<String>, StoreError> {
        let me = self.db.instance_url();
        let id = &trace.as_bytes()[..];
        let rows = self.db.block_on(async {
            let client = self.db.client().await?;
            Ok(client
                .query(
                    "SELECT instance FROM trace_instances WHERE trace_id = $1 AND instance <> $2
                     ORDER BY instance",
                    &[&id, &me],
                )
                .await?)
        })?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn computes(&self, others: &[String]) -> bool {
        // The first holder by URL: every holder agrees without asking the others.
        others.iter().all(|o| self.db.instance_url() < o.as_str())
    }

    fn spans_elsewhere(&self, trace: TraceId, holders: &[String]) -> Result<Vec<Span>, StoreError> {
        self.db.run(async {
            let mut spans = Vec::new();
            for holder in holders {
                let more = self
                    .peers
                    .spans(trace, holder)
                    .await
                    .map_err(|e| StoreError::Shared(e.to_string()))?;
                crate::store::merge_spans(&mut spans, more);
            }
            Ok(spans)
        })
    }

    fn linking_elsewhere(&self, trace: TraceId) -> Result<Vec<TraceId>, StoreError> {
        let id = &trace.as_bytes()[..];
        let rows = self.db.block_on(async {
            let client = self.db.client().await?;
            Ok(client
                .query(
                    "SELECT from_trace FROM trace_links WHERE to_trace = $1",
                    &[&id],
                )
                .await?)
        })?;
        Ok(rows
            .iter()
            .filter_map(|r| TraceId::from_slice(r.get(0)).ok())
            .collect())
    }

    fn trace_run(&self, trace: TraceId) -> Result<Option<String>, StoreError> {
        let id = &trace.as_bytes()[..];
        let row = self.db.block_on(async {
            let client = self.db.client().await?;
            Ok(client
                .query_opt("SELECT run_id FROM trace_runs WHERE trace_id = $1", &[&id])
                .await?)
        })?;
        Ok(row.map(|r| r.get(0)))
    }

    fn run_traces(&self, runs: &[String]) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = self.db.block_on(async {
            let client = self.db.client().await?;
            Ok(client
                .query(
                    "SELECT run_id, count(*) FROM trace_runs WHERE run_id = ANY($1) GROUP BY run_id",
                    &[&runs],
                )
                .await?)
        })?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    fn history(
        &self,
        local: &Connection,
        runs: &[String],
        fp: i64,
        failures: bool,
    ) -> Result<Vec<KeptHistory>, StoreError> {
        // One statement: the shares' stamps and the records as of one moment.
        let sql = format!(
            "SELECT k.run_id, cur.shares,
                    CASE WHEN d.shares = cur.shares THEN d.digest END,
                    CASE WHEN d.shares = cur.shares AND $3 THEN d.failures END
             FROM UNNEST($1::text[]) WITH ORDINALITY AS k(run_id, n)
             CROSS JOIN LATERAL (SELECT {} AS shares) cur
             LEFT JOIN run_digests d ON d.run_id = k.run_id AND d.fingerprint = $2
             ORDER BY k.n",
            shares_of("k.run_id", "$2")
        );
        let rows = self.db.block_on(async {
            let client = self.db.client().await?;
            Ok(client.query(&sql, &[&runs, &fp, &failures]).await?)
        })?;
        let mut unpublished = local.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM shared_outbox
                            WHERE kind = 'rollup' AND run = ?1 AND fp = ?2)",
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let run: String = row.get(0);
            let mut kept = KeptHistory {
                shares: row.get(1),
                digest: row.get(2),
                failures: row.get(3),
            };
            if kept.digest.is_some()
                && unpublished.query_row(rusqlite::params![run, fp], |r| r.get::<_, bool>(0))?
            {
                kept.digest = None;
                kept.failures = None;
            }
            out.push(kept);
        }
        Ok(out)
    }

    fn keep_history(
        &self,
        run: &str,
        fp: i64,
        shares: &[i64],
        digest: &[u8],
        failures: &[u8],
    ) -> Result<(), StoreError> {
        // Written only while the shares are still those it was made under, and not over a
        // record kept under them already (of this version): instances making the same run's
        // record at once write it once, and a late writer never puts an older one back.
        let sql = format!(
            "INSERT INTO run_digests (run_id, fingerprint, shares, digest, failures)
             SELECT $1::text, $2::bigint, $3::bigint[], $4::bytea, $5::bytea WHERE $3 = {}
             ON CONFLICT (run_id, fingerprint) DO UPDATE
               SET shares = EXCLUDED.shares, digest = EXCLUDED.digest,
                   failures = EXCLUDED.failures
               WHERE (run_digests.shares, substr(run_digests.digest, 1, 4),
                      substr(run_digests.failures, 1, 4))
                     IS DISTINCT FROM (EXCLUDED.shares, substr(EXCLUDED.digest, 1, 4),
                                       substr(EXCLUDED.failures, 1, 4))",
            shares_of("$1", "$2")
        );
        let shares = shares.to_vec();
        self.db.block_on(async {
            let client = self.db.client().await?;
            client
                .execute(&sql, &[&run, &fp, &shares, &digest, &failures])
                .await?;
            Ok(())
        })?;
        Ok(())
    }

    fn history_to_make(
        &self,
        fp: i64,
        settled_before: u64,
        versions: (u32, u32),
        limit: usize,
    ) -> Result<Vec<(String, Vec<i64>)>, StoreError> {
        let me = self.db.instance_url();
        let (digest_v, failures_v) = (
            versions.0.to_le_bytes().to_vec(),
            versions.1.to_le_bytes().to_vec(),
        );
        let sql = format!(
            "SELECT r.id, cur.shares FROM runs r
             CROSS JOIN LATERAL (SELECT {} AS shares) cur
             LEFT JOIN run_digests d ON d.run_id = r.id AND d.fingerprint = $1
             WHERE (r.closed_ns IS NOT NULL OR r.last_ns <= $2)
               AND cardinality(cur.shares) > 0
               AND (d.run_id IS NULL OR d.shares <> cur.shares
                    OR substr(d.digest, 1, 4) <> $3 OR substr(d.failures, 1, 4) <> $4)
             ORDER BY r.created_ns DESC, r.id
             LIMIT $5",
            shares_of("r.id", "$1")
        );
        let rows = self.db.block_on(async {
            let client = self.db.client().await?;
            let keeper = client
                .query_opt(
                    "INSERT INTO history_keeper (id, instance, until)
                     VALUES (1, $1, now() + make_interval(secs => $2))
                     ON CONFLICT (id) DO UPDATE
                       SET instance = EXCLUDED.instance, until = EXCLUDED.until
                       WHERE history_keeper.instance = EXCLUDED.instance
                          OR history_keeper.until < now()
                     RETURNING instance",
                    &[&me, &KEEPER_LEASE_S],
                )
                .await?;
            if keeper.is_none() {
                return Ok(Vec::new());
            }
            Ok(client
                .query(
                    &sql,
                    &[
                        &fp,
                        &(settled_before.min(i64::MAX as u64) as i64),
                        &digest_v,
                        &failures_v,
                        &(limit.min(i64::MAX as usize) as i64),
                    ],
                )
                .await?)
        })?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn pending_elsewhere(&self, run: &str, fp: i64) -> Result<u64, StoreError> {
        let me = self.db.instance_url();
        let row = self.db.block_on(async {
            let client = self.db.client().await?;
            Ok(client
                .query_one(
                    "SELECT count(*) FROM trace_runs tr
                     JOIN trace_instances ti ON ti.trace_id = tr.trace_id
                     WHERE tr.run_id = $1 AND ti.instance <> $2
                       AND NOT EXISTS (
                           SELECT 1 FROM trace_results r
                           WHERE r.trace_id = ti.trace_id AND r.instance = ti.instance
                             AND r.fingerprint = $3 AND r.received_ns >= ti.received_ns)",
                    &[&run, &me, &fp],
                )
                .await?)
        })?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}
