//! Run assignment decided in the shared database (`runs::RunRegistry` over PostgreSQL), safe
//! under concurrency: every instance of a deployment decides the same way.
//!
//! The rules are the embedded ones (`runs`' module doc); what makes them safe when several
//! instances decide at once:
//! - a `tracecov.run.id` or CI run id becomes a run by `INSERT … ON CONFLICT DO NOTHING` on a
//!   unique key (`id`, `ci_run_id`), then a read: the instance that loses the race waits for the
//!   winner's commit and reads its run, so one CI run id makes one run;
//! - an automatic run is found or made under a transaction-level advisory lock, so two instances
//!   seeing their first test traces at once open one;
//! - a batch's trace rows are read `FOR UPDATE` in one statement and written in one
//!   `INSERT … SELECT FROM UNNEST … ON CONFLICT DO UPDATE` whose `WHERE` never lets an implicit
//!   decision replace an explicit one another instance committed meanwhile; the row as it
//!   stands after the write is the decision. A batch costs a fixed number of round trips plus
//!   one or two per run it names for the first time;
//! - rows are locked in trace id order (the batch arrives sorted) and runs are touched last, in
//!   id order, so overlapping batches queue instead of deadlocking.
//!
//! Each decided run is then copied into the embedded store (`runs::mirror_run`), where the rest
//! of tracecov reads runs today.

use std::collections::BTreeMap;
use std::sync::Arc;

use rusqlite::Connection;
use tokio_postgres::Row;

use super::{SharedDb, SharedError};
use crate::runs::{
    self, AUTO_RUN_QUIET, Assigned, Run, RunKind, RunRegistry, RunRow, SuiteNames, TraceFacts,
};
use crate::store::StoreError;

/// The advisory lock key automatic runs are opened under ("auto-run").
const AUTO_RUN_LOCK: i64 = 0x6175_746f_2d72_756e;

pub(super) const RUN_COLUMNS: &str =
    "id, name, kind, ci_run_id, created_ns, closed_ns, last_ns, suite, ci_job";

/// The `RunRegistry` of a deployment.
pub struct SharedRuns {
    db: Arc<SharedDb>,
}

impl SharedRuns {
    pub fn new(db: Arc<SharedDb>) -> Self {
        Self { db }
    }
}

impl From<SharedError> for StoreError {
    fn from(e: SharedError) -> Self {
        StoreError::Shared(e.to_string())
    }
}

pub(super) fn run_row(row: &Row) -> RunRow {
    RunRow {
        id: row.get(0),
        name: row.get(1),
        kind: RunKind::parse(row.get(2)),
        ci_run_id: row.get(3),
        created_ns: row.get::<_, i64>(4) as u64,
        closed_ns: row.get::<_, Option<i64>>(5).map(|v| v as u64),
        last_ns: row.get::<_, i64>(6) as u64,
        suite: row.get(7),
        ci_job: row.get(8),
    }
}

/// A run id no other run has: `runs::new_run_id` is unique within one process, so across
/// instances a clash is possible, if unlikely; the insert says so and another id is drawn.
async fn insert_new_run(
    tx: &deadpool_postgres::Transaction<'_>,
    name: &str,
    kind: RunKind,
    suite: &SuiteNames,
    now_ns: u64,
) -> Result<String, SharedError> {
    let clean = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    loop {
        let id = runs::new_run_id(now_ns);
        let inserted = tx
            .execute(
                "INSERT INTO runs (id, name, kind, created_ns, last_ns, suite, ci_job)
                 VALUES ($1, $2, $3, $4, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
                &[
                    &id,
                    &name,
                    &kind.as_str(),
                    &(now_ns as i64),
                    &clean(&suite.suite),
                    &clean(&suite.ci_job),
                ],
            )
            .await?;
        if inserted == 1 {
            return Ok(id);
        }
    }
}

/// What one trace's facts lead to, before the run rows are touched.
struct Decision {
    run: String,
    explicit: bool,
}

/// A `(trace_id, run_id, explicit)` row as the trace's decision.
fn keyed_decision(r: &Row) -> (Vec<u8>, Decision) {
    (
        r.get(0),
        Decision {
            run: r.get(1),
            explicit: r.get(2),
        },
    )
}

/// One trace of a batch on its way to its `trace_runs` row.
struct Wanted<'a> {
    key: &'a [u8],
    /// Its row as the locking read found it: run, explicit.
    current: Option<(String, bool)>,
    want: Decision,
}

/// What one batch's transaction already established, so that the batch's traces of one run
/// cost no more round trips for the run than the first of them did.
#[derive(Default)]
struct Known {
    /// Explicit runs made sure of (inserted or found).
    explicit: std::collections::HashSet<String>,
    /// CI run ids to their runs.
    ci: std::collections::HashMap<String, String>,
    /// The single open explicit run, once looked up (`Some(None)`: there is none).
    open: Option<Option<String>>,
    /// The automatic run, once decided.
    auto: Option<String>,
}

/// The batch's traces already assigned, locked for the transaction: one round trip for the
/// batch, the rows locked in trace id order (so two instances locking overlapping batches take
/// the locks in the same order).
async fn current_runs(
    tx: &deadpool_postgres::Transaction<'_>,
    traces: &[TraceFacts],
) -> Result<std::collections::HashMap<Vec<u8>, (String, bool)>, SharedError> {
    let keys: Vec<&[u8]> = traces.iter().map(|f| &f.trace_id.as_bytes()[..]).collect();
    let rows = tx
        .query(
            "SELECT trace_id, run_id, explicit FROM trace_runs WHERE trace_id = ANY($1)
             ORDER BY trace_id FOR UPDATE",
            &[&keys],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, Vec<u8>>(0), (r.get(1), r.get(2))))
        .collect())
}

/// The run one trace's facts lead to (`None`: no run), before its `trace_runs` row is written.
/// Only the runs are looked up or made here, at most once per run per batch (`known`).
async fn wanted_run(
    tx: &deadpool_postgres::Transaction<'_>,
    f: &TraceFacts,
    current: Option<&(String, bool)>,
    now: i64,
    known: &mut Known,
) -> Result<Option<Decision>, SharedError> {
    let (run, explicit) = match (&f.explicit_run, &f.ci_run) {
        (Some(id), _) => {
            if !known.explicit.contains(id) {
                tx.execute(
                    "INSERT INTO runs (id, name, kind, created_ns, last_ns) VALUES ($1, $1, 'ci', $2, $2)
                     ON CONFLICT (id) DO NOTHING",
                    &[id, &now],
                )
                .await?;
                known.explicit.insert(id.clone());
            }
            (id.clone(), true)
        }
        (None, Some(ci)) => match known.ci.get(ci) {
            Some(run) => (run.clone(), true),
            None => {
                // The loser of a race waits here for the winner's commit, then finds its run.
                let id = runs::new_run_id(now as u64);
                tx.execute(
                    "INSERT INTO runs (id, name, kind, ci_run_id, created_ns, last_ns)
                     VALUES ($1, $2, 'ci', $2, $3, $3) ON CONFLICT (ci_run_id) DO NOTHING",
                    &[&id, ci, &now],
                )
                .await?;
                let row = tx
                    .query_one("SELECT id FROM runs WHERE ci_run_id = $1", &[ci])
                    .await?;
                let run: String = row.get(0);
                known.ci.insert(ci.clone(), run.clone());
                (run, true)
            }
        },
        (None, None) => match current {
            Some((run, _)) => (run.clone(), false),
            None => {
                let open = match &known.open {
                    Some(open) => open.clone(),
                    None => {
                        let open = single_open_explicit(tx).await?;
                        known.open = Some(open.clone());
                        open
                    }
                };
                match open {
                    Some(run) => (run, false),
                    None if f.has_test => match &known.auto {
                        Some(run) => (run.clone(), false),
                        None => {
                            let run = auto_run(tx, now).await?;
                            known.auto = Some(run.clone());
                            (run, false)
                        }
                    },
                    None => return Ok(None),
                }
            }
        },
    };
    Ok(Some(Decision { run, explicit }))
}

/// Whether a trace's row stays as it is (only its `last_ns` moves): it already names the run
/// wanted, or it is explicit and the wanted run is not.
fn row_stands(current: Option<&(String, bool)>, want: &Decision) -> bool {
    match current {
        Some((run, explicit)) => (*explicit && !want.explicit) || *run == want.run,
        None => false,
    }
}

/// Writes the batch's `trace_runs` rows in three statements, whatever the batch's size: rows
/// that stand get their `last_ns` moved; the others are inserted or replaced by one
/// `INSERT … SELECT FROM UNNEST … ON CONFLICT DO UPDATE`, whose `WHERE` keeps an explicit
/// assignment another instance committed since the locking read (that trace had no row to lock
/// then) against an implicit one of ours; the rows so kept are read back. Returns each trace's
/// decision as its row stands after the writes.
async fn write_trace_runs(
    tx: &deadpool_postgres::Transaction<'_>,
    wanted: Vec<Wanted<'_>>,
    now: i64,
) -> Result<std::collections::HashMap<Vec<u8>, Decision>, SharedError> {
    let mut out = std::collections::HashMap::with_capacity(wanted.len());
    let mut stand_keys: Vec<&[u8]> = Vec::new();
    let (mut keys, mut run_ids, mut explicits): (Vec<&[u8]>, Vec<String>, Vec<bool>) =
        Default::default();
    for Wanted { key, current, want } in wanted {
        if row_stands(current.as_ref(), &want) {
            stand_keys.push(key);
            let (run, explicit) = current.expect("a row that stands exists");
            out.insert(key.to_vec(), Decision { run, explicit });
        } else {
            keys.push(key);
            run_ids.push(want.run);
            explicits.push(want.explicit);
        }
    }
    if !stand_keys.is_empty() {
        tx.execute(
            "UPDATE trace_runs SET last_ns = GREATEST(last_ns, $2) WHERE trace_id = ANY($1)",
            &[&stand_keys, &now],
        )
        .await?;
    }
    if keys.is_empty() {
        return Ok(out);
    }
    let rows = tx
        .query(
            "INSERT INTO trace_runs (trace_id, run_id, explicit, last_ns)
             SELECT t.trace_id, t.run_id, t.explicit, $4
               FROM UNNEST($1::bytea[], $2::text[], $3::bool[]) AS t(trace_id, run_id, explicit)
             ON CONFLICT (trace_id) DO UPDATE SET run_id = EXCLUDED.run_id,
               explicit = EXCLUDED.explicit, last_ns = GREATEST(trace_runs.last_ns, EXCLUDED.last_ns)
               WHERE EXCLUDED.explicit OR NOT trace_runs.explicit
             RETURNING trace_id, run_id, explicit",
            &[&keys, &run_ids, &explicits, &now],
        )
        .await?;
    out.extend(rows.iter().map(keyed_decision));
    // `RETURNING` yields no row where the `WHERE` kept the other instance's decision.
    if rows.len() < keys.len() {
        let kept: Vec<&[u8]> = keys.into_iter().filter(|k| !out.contains_key(*k)).collect();
        let rows = tx
            .query(
                "SELECT trace_id, run_id, explicit FROM trace_runs WHERE trace_id = ANY($1)",
                &[&kept],
            )
            .await?;
        out.extend(rows.iter().map(keyed_decision));
    }
    Ok(out)
}

async fn single_open_explicit(
    tx: &deadpool_postgres::Transaction<'_>,
) -> Result<Option<String>, SharedError> {
    let open = tx
        .query(
            "SELECT id FROM runs WHERE kind = 'explicit' AND closed_ns IS NULL LIMIT 2",
            &[],
        )
        .await?;
    Ok(if open.len() == 1 {
        Some(open[0].get(0))
    } else {
        None
    })
}

/// The open automatic run, or a new one when the last went quiet; one instance at a time.
async fn auto_run(
    tx: &deadpool_postgres::Transaction<'_>,
    now: i64,
) -> Result<String, SharedError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUTO_RUN_LOCK])
        .await?;
    let quiet = AUTO_RUN_QUIET.as_nanos() as i64;
    if let Some(row) = tx
        .query_opt(
            "SELECT id FROM runs WHERE kind = 'auto' AND closed_ns IS NULL AND $1 - last_ns < $2
             ORDER BY created_ns DESC LIMIT 1",
            &[&now, &quiet],
        )
        .await?
    {
        return Ok(row.get(0));
    }
    tx.execute(
        "UPDATE runs SET closed_ns = last_ns + $2
         WHERE kind = 'auto' AND closed_ns IS NULL AND $1 - last_ns >= $2",
        &[&now, &quiet],
    )
    .await?;
    let id = loop {
        let id = runs::new_run_id(now as u64);
        let name = format!("auto-{}", id.trim_start_matches('r'));
        let inserted = tx
            .execute(
                "INSERT INTO runs (id, name, kind, created_ns, last_ns)
                 VALUES ($1, $2, 'auto', $3, $3) ON CONFLICT (id) DO NOTHING",
                &[&id, &name, &now],
            )
            .await?;
        if inserted == 1 {
            break id;
        }
    };
    Ok(id)
}

impl SharedRuns {
    async fn decide_all(
        &self,
        traces: &[TraceFacts],
        now_ns: u64,
    ) -> Result<(Vec<Option<Assigned>>, Vec<RunRow>), SharedError> {
        let now = now_ns as i64;
        let mut client = self.db.client().await?;
        let tx = client.transaction().await?;
        let mut decided = Vec::with_capacity(traces.len());
        // Per run, the suite names the batch's first trace of it gave (kept once set).
        let mut touched: BTreeMap<String, SuiteNames> = BTreeMap::new();
        let mut known = Known::default();
        let current = current_runs(&tx, traces).await?;
        let mut wanted = Vec::with_capacity(traces.len());
        for f in traces {
            let key = &f.trace_id.as_bytes()[..];
            let now_current = current.get(key);
            if let Some(want) = wanted_run(&tx, f, now_current, now, &mut known).await? {
                wanted.push(Wanted {
                    key,
                    current: now_current.cloned(),
                    want,
                });
            }
        }
        let mut written = write_trace_runs(&tx, wanted, now).await?;
        for f in traces {
            let d = written.remove(&f.trace_id.as_bytes()[..]);
            decided.push(d.map(|d| {
                let names = touched.entry(d.run.clone()).or_default();
                names.suite = names.suite.take().or_else(|| f.suite.suite.clone());
                names.ci_job = names.ci_job.take().or_else(|| f.suite.ci_job.clone());
                Assigned {
                    run: d.run,
                    explicit: d.explicit,
                    kept: false,
                }
            }));
        }
        let mut rows = Vec::with_capacity(touched.len());
        for (run, names) in &touched {
            let row = tx
                .query_one(
                    &format!(
                        "UPDATE runs SET last_ns = GREATEST(last_ns, $2),
                           suite = COALESCE(suite, NULLIF($3, '')),
                           ci_job = COALESCE(ci_job, NULLIF($4, ''))
                         WHERE id = $1 RETURNING {RUN_COLUMNS}"
                    ),
                    &[run, &now, &names.suite, &names.ci_job],
                )
                .await?;
            rows.push(run_row(&row));
        }
        tx.commit().await?;
        Ok((decided, rows))
    }
}

impl RunRegistry for SharedRuns {
    fn decide(
        &self,
        local: &rusqlite::Transaction<'_>,
        traces: &[TraceFacts],
        now_ns: u64,
    ) -> Result<Vec<Option<Assigned>>, StoreError> {
        if traces.is_empty() {
            return Ok(Vec::new());
        }
        let (decided, rows) = self.db.block_on(self.decide_all(traces, now_ns))?;
        for row in &rows {
            runs::mirror_run(local, row)?;
        }
        Ok(decided)
    }

    fn open_run(
        &self,
        local: &Connection,
        name: &str,
        kind: RunKind,
        suite: &SuiteNames,
        now_ns: u64,
    ) -> Result<Run, StoreError> {
        let row = self.db.block_on(async {
            let mut client = self.db.client().await?;
            let tx = client.transaction().await?;
            let id = insert_new_run(&tx, name, kind, suite, now_ns).await?;
            let row = tx
                .query_one(
                    &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"),
                    &[&id],
                )
                .await?;
            tx.commit().await?;
            Ok(run_row(&row))
        })?;
        runs::mirror_run(local, &row)?;
        runs::get_run(local, &row.id)?.ok_or(StoreError::Closed)
    }

    fn close_run(
        &self,
        local: &Connection,
        id: &str,
        now_ns: u64,
    ) -> Result<Option<Run>, StoreError> {
        let row = self.db.block_on(async {
            let client = self.db.client().await?;
            let row = client
                .query_opt(
                    &format!(
                        "UPDATE runs SET closed_ns = COALESCE(closed_ns, $2) WHERE id = $1
                         RETURNING {RUN_COLUMNS}"
                    ),
                    &[&id, &(now_ns as i64)],
                )
                .await?;
            Ok(row.as_ref().map(run_row))
        })?;
        match row {
            Some(row) => {
                runs::mirror_run(local, &row)?;
                runs::get_run(local, id)
            }
            // Not a run of the deployment (made while this store was used alone): closed here.
            None => runs::close_run(local, id, now_ns),
        }
    }
}
