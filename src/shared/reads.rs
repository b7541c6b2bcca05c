//! The reads of a deployment (`results::Deployment` over PostgreSQL): the other instances'
//! published shares of rollups, facts and examples (`shared::publish` writes them), and the
//! runs a lookup may answer with, copied into the embedded store.
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
use crate::results::{Deployment, Rollup, RunLookup};
use crate::runs;
use crate::store::StoreError;

/// The most runs `RunLookup::Named` copies for one name (names repeat: `nightly`).
const SAME_NAME: i64 = 100;

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
