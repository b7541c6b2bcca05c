//! Runs: one execution of a test suite, and which traces belong to it.
//!
//! Owns the `runs` and `trace_runs` tables (beside the span store, in the same SQLite file), the
//! assignment of arriving traces to runs, and the run lifecycle (open, close, settled).
//!
//! Assignment, in DESIGN's order, decided when a trace's spans arrive:
//! 1. a span whose resource carries `tracecov.run.id` → that run (created if unknown);
//! 2. else `cicd.pipeline.run.id` → the run of that CI id (created, named after it, if unknown), so
//!    parallel jobs of one pipeline merge into one run;
//! 3. else the single open explicit run (`tracecov run`, `POST /api/runs`), when exactly one is open;
//! 4. else, when the trace holds a test case, an automatic run that opens with the first such trace
//!    and closes after 5 quiet minutes;
//! 5. else no run (background traffic; a later span may still assign it).
//!
//! An assignment is kept once made, except that an explicit id (1 or 2) arriving later wins over
//! an implicit one (3 or 4): the id is the user's word.
//!
//! Key design decision: assignment runs on the writer thread as a commit hook with its own
//! connection, so it is decided in arrival order and before the export is acknowledged, without
//! the span store knowing runs exist.
//!
//! Who decides is a `RunRegistry`: `EmbeddedRuns` (these tables, in the assignment's own
//! transaction: one process, the default) or `shared::SharedRuns` (PostgreSQL, shared by the
//! instances of a deployment, `serve --shared-db`). Either way the decision is recorded here
//! too, where everything else reads runs; `POST /api/runs` and its close go through the same
//! registry.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::model::{Span, TraceId};
use crate::store::StoreError;
use crate::store::outage::{self, Outage, Say};

/// How long an automatic run stays open without a new test trace.
pub const AUTO_RUN_QUIET: Duration = Duration::from_secs(5 * 60);

pub const RUN_ID_ATTR: &str = "tracecov.run.id";
pub const CI_RUN_ID_ATTR: &str = "cicd.pipeline.run.id";
/// The resource attribute naming a run's suite (DESIGN, "History across runs").
pub const SUITE_ATTR: &str = "tracecov.suite";
/// The CI job's name as the OpenTelemetry CI/CD conventions put it on a resource: the suite of a
/// run that names none, after `tracecov.suite`.
pub const CI_PIPELINE_NAME_ATTR: &str = "cicd.pipeline.name";
/// The suite of a run nothing names.
pub const DEFAULT_SUITE: &str = "default";
/// Environment variables holding the CI job's name, in the order they are read (GitHub Actions,
/// GitLab CI, Jenkins): `tracecov run` passes the first set one as the run's CI job.
pub const CI_JOB_ENV: [&str; 3] = ["GITHUB_WORKFLOW", "CI_JOB_NAME", "JOB_NAME"];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    ci_run_id   TEXT UNIQUE,
    created_ns  INTEGER NOT NULL,
    closed_ns   INTEGER,
    last_ns     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_name ON runs (name);
-- `suite` (named by `--suite` or `tracecov.suite`) and `ci_job` (the CI job's name) are added by
-- `init_schema` to stores made before suites; a run's suite is the first of them set, else
-- 'default'.
CREATE TABLE IF NOT EXISTS trace_runs (
    trace_id     BLOB PRIMARY KEY,
    run_id       TEXT NOT NULL,
    explicit     INTEGER NOT NULL,
    last_ns      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trace_runs_by_run ON trace_runs (run_id);
-- A run's most recent traces, without sorting all of them (`/metrics`' exemplars).
CREATE INDEX IF NOT EXISTS trace_runs_by_run_last ON trace_runs (run_id, last_ns);
-- Traces whose spans were committed and whose run assignment has not succeeded yet: written in
-- the spans' own transaction, removed in the assignment's, retried until it succeeds (also after
-- a restart). An export is never refused for its assignment, and no assignment is lost.
CREATE TABLE IF NOT EXISTS pending_assignments (
    trace_id     BLOB PRIMARY KEY,
    received_ns  INTEGER NOT NULL
) WITHOUT ROWID;
-- Traces of a run that retention removed, so that its report can say part of it aged out.
CREATE TABLE IF NOT EXISTS run_aged_out (
    run_id  TEXT PRIMARY KEY,
    traces  INTEGER NOT NULL
) WITHOUT ROWID;
";

/// How a run came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// Opened by `tracecov run` or `POST /api/runs`.
    Explicit,
    /// Named by a CI pipeline run id, or by a `tracecov.run.id` nobody opened.
    Ci,
    /// Opened by the first test trace that arrived with no run.
    Auto,
    /// Created by `tracecov import` for a file.
    Import,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Explicit => "explicit",
            RunKind::Ci => "ci",
            RunKind::Auto => "auto",
            RunKind::Import => "import",
        }
    }
    /// The kind a stored name stands for (an unknown name reads as explicit).
    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "ci" => RunKind::Ci,
            "auto" => RunKind::Auto,
            "import" => RunKind::Import,
            _ => RunKind::Explicit,
        }
    }
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Run {
    pub id: String,
    pub name: String,
    pub kind: RunKind,
    pub created_ns: u64,
    pub closed_ns: Option<u64>,
    /// When a span of the run last arrived (or the run was opened).
    pub last_ns: u64,
    pub traces: u64,
    /// Traces of the run that retention removed.
    pub aged_out: u64,
    /// The suite the run belongs to (DESIGN: `--suite`, else `tracecov.suite`, else the CI
    /// job's name, else `default`).
    pub suite: String,
}

impl Run {
    /// Closed explicitly, or an automatic run quiet for `AUTO_RUN_QUIET`.
    pub fn is_closed(&self, now_ns: u64) -> bool {
        self.closed_ns.is_some()
            || (self.kind == RunKind::Auto
                && now_ns.saturating_sub(self.last_ns) >= AUTO_RUN_QUIET.as_nanos() as u64)
    }

    /// No span of the run arrived for `quiet`, or the run is closed: its traces are settled.
    pub fn is_settled(&self, now_ns: u64, quiet: Duration) -> bool {
        self.closed_ns.is_some() || now_ns.saturating_sub(self.last_ns) >= quiet.as_nanos() as u64
    }
}

/// Forgets a trace that retention removes: its run assignment goes, and, when the run's results
/// did not keep what the trace contributed (`results_kept`: it aged out before its results were
/// computed), its run counts it as aged out.
pub fn forget_trace(
    conn: &Connection,
    trace_id: &[u8],
    results_kept: bool,
) -> Result<(), StoreError> {
    let run: Option<String> = conn
        .prepare_cached("SELECT run_id FROM trace_runs WHERE trace_id = ?1")?
        .query_row(params![trace_id], |r| r.get(0))
        .optional()?;
    if let Some(run) = run {
        if !results_kept {
            conn.prepare_cached(
                "INSERT INTO run_aged_out (run_id, traces) VALUES (?1, 1)
                 ON CONFLICT (run_id) DO UPDATE SET traces = traces + 1",
            )?
            .execute(params![run])?;
        }
        conn.prepare_cached("DELETE FROM trace_runs WHERE trace_id = ?1")?
            .execute(params![trace_id])?;
    }
    Ok(())
}

/// Deletes a run and its assignments (`--history-age`; the results it kept go first, in
/// `results::settle::drop_run`).
pub fn drop_run(conn: &Connection, run: &str) -> Result<(), StoreError> {
    for sql in [
        "DELETE FROM trace_runs WHERE run_id = ?1",
        "DELETE FROM run_aged_out WHERE run_id = ?1",
        "DELETE FROM runs WHERE id = ?1",
    ] {
        conn.prepare_cached(sql)?.execute(params![run])?;
    }
    Ok(())
}

pub fn init_schema(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(SCHEMA)?;
    let has_suite: bool = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('runs') WHERE name = 'suite'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has_suite {
        // Two connections may open an old store at once: whichever adds the columns second finds
        // them there.
        let added = conn.execute_batch(
            "BEGIN IMMEDIATE;
             ALTER TABLE runs ADD COLUMN suite TEXT;
             ALTER TABLE runs ADD COLUMN ci_job TEXT;
             COMMIT;",
        );
        if let Err(e) = added {
            let _ = conn.execute_batch("ROLLBACK");
            let now_has: bool = conn.query_row(
                "SELECT COUNT(*) FROM pragma_table_info('runs') WHERE name = 'suite'",
                [],
                |r| r.get::<_, i64>(0).map(|n| n > 0),
            )?;
            if !now_has {
                return Err(e.into());
            }
        }
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS runs_by_suite
           ON runs (COALESCE(suite, ci_job, 'default'), created_ns);",
    )?;
    Ok(())
}

/// A new run id: time-ordered and unique within this process and across restarts.
pub(crate) fn new_run_id(now_ns: u64) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed) & 0xfff;
    format!("r{:013x}{:03x}", now_ns / 1_000, seq)
}

fn run_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Run> {
    Ok(Run {
        id: row.get(0)?,
        name: row.get(1)?,
        kind: RunKind::parse(&row.get::<_, String>(2)?),
        created_ns: row.get::<_, i64>(3)? as u64,
        closed_ns: row.get::<_, Option<i64>>(4)?.map(|v| v as u64),
        last_ns: row.get::<_, i64>(5)? as u64,
        traces: row.get::<_, i64>(6)? as u64,
        aged_out: row.get::<_, i64>(7)? as u64,
        suite: row.get(8)?,
    })
}

/// A run's suite as SQL over the `runs` row `r`.
const SUITE_OF: &str = "COALESCE(r.suite, r.ci_job, 'default')";

const RUN_COLUMNS: &str = "r.id, r.name, r.kind, r.created_ns, r.closed_ns, r.last_ns,
    (SELECT COUNT(*) FROM trace_runs t WHERE t.run_id = r.id),
    (SELECT COALESCE(MAX(a.traces), 0) FROM run_aged_out a WHERE a.run_id = r.id),
    COALESCE(r.suite, r.ci_job, 'default')";

/// What names a new run's suite: `--suite` (or the API's `"suite"`), and the CI job's name, which
/// counts only when no span names the suite.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SuiteNames {
    pub suite: Option<String>,
    pub ci_job: Option<String>,
}

impl SuiteNames {
    /// A suite given by name.
    pub fn named(suite: impl Into<String>) -> Self {
        Self {
            suite: Some(suite.into()),
            ci_job: None,
        }
    }

    /// The CI job's name from this process's environment (`CI_JOB_ENV`), if any is set.
    pub fn ci_job_from_env() -> Option<String> {
        CI_JOB_ENV
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .map(|v| v.trim().to_owned())
            .find(|v| !v.is_empty())
    }
}

/// Opens a run. Also used by the import command for the run a file becomes.
pub fn create_run(
    conn: &Connection,
    name: &str,
    kind: RunKind,
    suite: &SuiteNames,
    now_ns: u64,
) -> Result<Run, StoreError> {
    let id = new_run_id(now_ns);
    conn.execute(
        "INSERT INTO runs (id, name, kind, created_ns, last_ns, suite, ci_job)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6)",
        params![
            id,
            name,
            kind.as_str(),
            now_ns as i64,
            suite.suite.as_deref().filter(|s| !s.is_empty()),
            suite.ci_job.as_deref().filter(|s| !s.is_empty())
        ],
    )?;
    get_run(conn, &id)?.ok_or(StoreError::Closed)
}

/// The runs of `suite`, newest first, at most `last`.
pub fn suite_runs(conn: &Connection, suite: &str, last: usize) -> Result<Vec<Run>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RUN_COLUMNS} FROM runs r WHERE {SUITE_OF} = ?1
         ORDER BY r.created_ns DESC, r.id DESC LIMIT ?2"
    ))?;
    let runs = stmt
        .query_map(params![suite, last as i64], run_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(runs)
}

/// The run of `run`'s suite made before it: what `previous` means.
pub fn previous_run(conn: &Connection, run: &Run) -> Result<Option<Run>, StoreError> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {RUN_COLUMNS} FROM runs r WHERE {SUITE_OF} = ?1
                   AND (r.created_ns < ?2 OR (r.created_ns = ?2 AND r.id < ?3))
                 ORDER BY r.created_ns DESC, r.id DESC LIMIT 1"
            ),
            params![run.suite, run.created_ns as i64, run.id],
            run_from_row,
        )
        .optional()?)
}

/// The runs of `suite` as (id, name, created_ns), newest first, at most `last`; with `until`
/// (a run's created_ns and id), only that run and those made before it. Lighter than
/// `suite_runs`: no trace counts, which a window of a hundred large runs would pay for.
pub fn suite_run_heads(
    conn: &Connection,
    suite: &str,
    until: Option<(u64, &str)>,
    last: usize,
) -> Result<Vec<(String, String, u64)>, StoreError> {
    let (until_ns, until_id) = until.map_or((i64::MAX, ""), |(ns, id)| (ns as i64, id));
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT r.id, r.name, r.created_ns FROM runs r WHERE {SUITE_OF} = ?1
           AND (r.created_ns < ?2 OR (r.created_ns = ?2 AND (?3 = '' OR r.id <= ?3)))
         ORDER BY r.created_ns DESC, r.id DESC LIMIT ?4"
    ))?;
    let rows = stmt
        .query_map(params![suite, until_ns, until_id, last as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Every suite with its number of runs and its newest run's creation time, newest first.
pub fn list_suites(conn: &Connection) -> Result<Vec<(String, u64, u64)>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {SUITE_OF}, COUNT(*), MAX(r.created_ns) FROM runs r
         GROUP BY 1 ORDER BY 3 DESC"
    ))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn close_run(conn: &Connection, id: &str, now_ns: u64) -> Result<Option<Run>, StoreError> {
    conn.execute(
        "UPDATE runs SET closed_ns = COALESCE(closed_ns, ?2) WHERE id = ?1",
        params![id, now_ns as i64],
    )?;
    get_run(conn, id)
}

pub fn get_run(conn: &Connection, id: &str) -> Result<Option<Run>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {RUN_COLUMNS} FROM runs r WHERE r.id = ?1"),
            params![id],
            run_from_row,
        )
        .optional()?)
}

/// Every run, newest first.
pub fn list_runs(conn: &Connection) -> Result<Vec<Run>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {RUN_COLUMNS} FROM runs r ORDER BY r.created_ns DESC, r.id DESC"
    ))?;
    let runs = stmt
        .query_map([], run_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(runs)
}

/// Resolves what a user typed after `--run`: an id, a name (the newest run of that name),
/// `latest` (the newest run), or `previous` (the run of the latest run's suite before it; see
/// `previous_run` for `previous` next to another run).
pub fn find_run(conn: &Connection, what: &str) -> Result<Option<Run>, StoreError> {
    if what == "previous" {
        return match find_run(conn, "latest")? {
            Some(latest) => previous_run(conn, &latest),
            None => Ok(None),
        };
    }
    if what == "latest" {
        return Ok(conn
            .query_row(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs r ORDER BY r.created_ns DESC, r.id DESC LIMIT 1"
                ),
                [],
                run_from_row,
            )
            .optional()?);
    }
    if let Some(run) = get_run(conn, what)? {
        return Ok(Some(run));
    }
    find_run_named(conn, what)
}

/// The newest run named exactly `name` (no id or `latest` resolution): how `tracecov import` finds
/// the run a file's name already stands for, so a re-import joins it instead of opening another.
pub fn find_run_named(conn: &Connection, name: &str) -> Result<Option<Run>, StoreError> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {RUN_COLUMNS} FROM runs r WHERE r.name = ?1
                 ORDER BY r.created_ns DESC, r.id DESC LIMIT 1"
            ),
            params![name],
            run_from_row,
        )
        .optional()?)
}

/// The traces of a run.
pub fn run_traces(conn: &Connection, run_id: &str) -> Result<Vec<TraceId>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT trace_id FROM trace_runs WHERE run_id = ?1")?;
    let ids = stmt
        .query_map(params![run_id], |r| r.get::<_, Vec<u8>>(0))?
        .filter_map(|r| r.ok())
        .filter_map(|b| TraceId::from_slice(&b).ok())
        .collect();
    Ok(ids)
}

/// The `limit` traces of a run that received a span last, the most recent first.
pub fn recent_run_traces(
    conn: &Connection,
    run_id: &str,
    limit: usize,
) -> Result<Vec<TraceId>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT trace_id FROM trace_runs WHERE run_id = ?1 ORDER BY last_ns DESC LIMIT ?2",
    )?;
    let ids = stmt
        .query_map(params![run_id, limit as i64], |r| r.get::<_, Vec<u8>>(0))?
        .filter_map(|r| r.ok())
        .filter_map(|b| TraceId::from_slice(&b).ok())
        .collect();
    Ok(ids)
}

/// The run a trace belongs to, if any.
pub fn trace_run(conn: &Connection, trace_id: TraceId) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT run_id FROM trace_runs WHERE trace_id = ?1",
            params![&trace_id.as_bytes()[..]],
            |r| r.get(0),
        )
        .optional()?)
}

/// Every trace id in the store.
pub fn all_traces(conn: &Connection) -> Result<Vec<TraceId>, StoreError> {
    let mut stmt = conn.prepare("SELECT trace_id FROM traces")?;
    let ids = stmt
        .query_map([], |r| r.get::<_, Vec<u8>>(0))?
        .filter_map(|r| r.ok())
        .filter_map(|b| TraceId::from_slice(&b).ok())
        .collect();
    Ok(ids)
}

/// Every trace id in the store that belongs to no run (background traffic outside runs).
pub fn traces_without_run(conn: &Connection) -> Result<Vec<TraceId>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT t.trace_id FROM traces t LEFT JOIN trace_runs r ON r.trace_id = t.trace_id
         WHERE r.trace_id IS NULL",
    )?;
    let ids = stmt
        .query_map([], |r| r.get::<_, Vec<u8>>(0))?
        .filter_map(|r| r.ok())
        .filter_map(|b| TraceId::from_slice(&b).ok())
        .collect();
    Ok(ids)
}

/// Does this span mark a test case by one of the shapes DESIGN recognizes?
pub fn looks_like_test(span: &Span, test_services: &[String]) -> bool {
    span.attributes.get("test.case.name").is_some()
        || crate::graph::is_pytest_session_root(span)
        || test_services.iter().any(|s| s == span.service())
}

/// What one commit's spans say about one trace: what a `RunRegistry` decides its run from.
#[derive(Debug, Clone)]
pub struct TraceFacts {
    pub trace_id: TraceId,
    /// `tracecov.run.id` on a resource.
    pub explicit_run: Option<String>,
    /// `cicd.pipeline.run.id` on a resource or a span.
    pub ci_run: Option<String>,
    /// A span of the trace marks a test case.
    pub has_test: bool,
    /// `tracecov.suite`, and the CI pipeline's name, from the resources.
    pub suite: SuiteNames,
}

impl TraceFacts {
    fn new(trace_id: TraceId) -> Self {
        Self {
            trace_id,
            explicit_run: None,
            ci_run: None,
            has_test: false,
            suite: SuiteNames::default(),
        }
    }
}

/// A trace's run as a registry decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    pub run: String,
    /// Named by the spans' own id (`tracecov.run.id`, `cicd.pipeline.run.id`): an implicit
    /// decision (the open run, an automatic run) never moves the trace again.
    pub explicit: bool,
    /// The trace stays in the run the embedded store already has it in: only times move.
    pub kept: bool,
}

/// Where runs are opened and closed and where an arriving trace's run is decided: the embedded
/// store's own tables (`EmbeddedRuns`, one process, the default) or a database every instance
/// of a deployment shares (`shared::SharedRuns`, `serve --shared-db`).
///
/// Whatever decides, the decision is also recorded in the embedded store (`trace_runs`, and the
/// run's row in `runs`), in the transaction `RunAssigner` passes as `local`: everything that
/// reads runs (reports, settling, rollups, the API) reads them there. Calls block; they are made
/// on the writer thread (`decide`) and on the blocking pool (`open_run`, `close_run`).
pub trait RunRegistry: Send + Sync {
    /// The run of each trace of `traces` (in order; `None`: no run, background traffic),
    /// decided in DESIGN's order (see the module's doc) and made to exist, with the runs it
    /// names copied into `local`.
    fn decide(
        &self,
        local: &rusqlite::Transaction<'_>,
        traces: &[TraceFacts],
        now_ns: u64,
    ) -> Result<Vec<Option<Assigned>>, StoreError>;

    /// Opens a run (`POST /api/runs`), known to `local` when this returns.
    fn open_run(
        &self,
        local: &Connection,
        name: &str,
        kind: RunKind,
        suite: &SuiteNames,
        now_ns: u64,
    ) -> Result<Run, StoreError>;

    /// Closes a run (`POST /api/runs/{id}/close`); `None` when no such run.
    fn close_run(
        &self,
        local: &Connection,
        id: &str,
        now_ns: u64,
    ) -> Result<Option<Run>, StoreError>;
}

/// The embedded store decides: runs live in its own tables, decided in the assignment's
/// transaction. Exactly the single-process behaviour.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbeddedRuns;

impl RunRegistry for EmbeddedRuns {
    fn decide(
        &self,
        local: &rusqlite::Transaction<'_>,
        traces: &[TraceFacts],
        now_ns: u64,
    ) -> Result<Vec<Option<Assigned>>, StoreError> {
        traces
            .iter()
            .map(|f| decide_embedded(local, f, now_ns))
            .collect()
    }

    fn open_run(
        &self,
        local: &Connection,
        name: &str,
        kind: RunKind,
        suite: &SuiteNames,
        now_ns: u64,
    ) -> Result<Run, StoreError> {
        create_run(local, name, kind, suite, now_ns)
    }

    fn close_run(
        &self,
        local: &Connection,
        id: &str,
        now_ns: u64,
    ) -> Result<Option<Run>, StoreError> {
        close_run(local, id, now_ns)
    }
}

/// One trace's run, decided in the embedded store: an explicit id wins, else the trace keeps
/// the run it has, else the single open run, else an automatic run for a test trace.
fn decide_embedded(
    tx: &rusqlite::Transaction<'_>,
    f: &TraceFacts,
    now_ns: u64,
) -> Result<Option<Assigned>, StoreError> {
    let key = &f.trace_id.as_bytes()[..];
    let current: Option<(String, bool)> = tx
        .query_row(
            "SELECT run_id, explicit FROM trace_runs WHERE trace_id = ?1",
            params![key],
            |r| Ok((r.get(0)?, r.get::<_, i64>(1)? != 0)),
        )
        .optional()?;
    let (run_id, explicit) = match (&f.explicit_run, &f.ci_run) {
        (Some(id), _) => (ensure_run_id(tx, id, now_ns)?, true),
        (None, Some(ci)) => (ensure_ci_run(tx, ci, now_ns)?, true),
        (None, None) => match &current {
            Some((run, _)) => (run.clone(), false),
            None => match single_open_explicit(tx)? {
                Some(run) => (run, false),
                None if f.has_test => (auto_run(tx, now_ns)?, false),
                None => return Ok(None),
            },
        },
    };
    name_suite(tx, &run_id, &f.suite)?;
    let keep_current = matches!(&current, Some((_, true))) && !explicit
        || matches!(&current, Some((run, _)) if *run == run_id);
    Ok(Some(match current {
        Some((run, was_explicit)) if keep_current => Assigned {
            run,
            explicit: was_explicit,
            kept: true,
        },
        _ => Assigned {
            run: run_id,
            explicit,
            kept: false,
        },
    }))
}

/// Records a decided run of a trace in the embedded store and moves the run's `last_ns`.
fn record(
    tx: &rusqlite::Transaction<'_>,
    trace_id: TraceId,
    assigned: &Assigned,
    now_ns: u64,
) -> Result<(), StoreError> {
    let key = &trace_id.as_bytes()[..];
    if assigned.kept {
        tx.execute(
            "UPDATE trace_runs SET last_ns = ?2 WHERE trace_id = ?1",
            params![key, now_ns as i64],
        )?;
    } else {
        // A trace whose results were stored under another run (or none: its assignment waited
        // for the shared database while it settled) has them computed again, which moves its
        // contribution to its run's rollup.
        let before: Option<String> = tx
            .prepare_cached("SELECT run_id FROM trace_runs WHERE trace_id = ?1")?
            .query_row(params![key], |r| r.get(0))
            .optional()?;
        if before.as_deref() != Some(assigned.run.as_str()) {
            tx.prepare_cached("UPDATE trace_results SET received_ns = -1 WHERE trace_id = ?1")?
                .execute(params![key])?;
        }
        tx.execute(
            "INSERT INTO trace_runs (trace_id, run_id, explicit, last_ns) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (trace_id) DO UPDATE SET run_id = excluded.run_id,
               explicit = excluded.explicit, last_ns = excluded.last_ns",
            params![key, assigned.run, assigned.explicit as i64, now_ns as i64],
        )?;
    }
    touch_run(tx, &assigned.run, now_ns)
}

/// Assigns arriving traces to runs; runs on the writer thread as a commit hook.
pub struct RunAssigner {
    conn: Connection,
    test_services: Vec<String>,
    /// Where runs are decided: the embedded store unless `serve --shared-db`.
    registry: std::sync::Arc<dyn RunRegistry>,
    /// Failures of `after_commit`, said once and summed up while they last.
    failing: Outage,
}

impl RunAssigner {
    /// The commit hook's work: assigns the traces of the spans a commit made durable at `now_ns`,
    /// then the ones still waiting from earlier failures. A failure is logged, not returned: the
    /// export is acknowledged either way, since the spans are durable and so is the record that
    /// their traces still need a run (`pending_assignments`), retried at every commit.
    pub fn after_commit(&mut self, spans: &[&Span], now_ns: u64, reader: &crate::store::Reader) {
        let result = self.assign(spans, now_ns).and_then(|()| {
            if self.has_pending()? {
                self.retry_pending(reader)?;
            }
            Ok(())
        });
        let now = std::time::Instant::now();
        match result {
            Ok(()) => {
                if let Some(Say::Ended(t)) = self.failing.succeeded(now) {
                    tracing::info!(
                        "assigning traces to runs works again after {} ({} commits failed); the waiting ones are assigned",
                        outage::for_people(t.lasted),
                        t.failures
                    );
                }
            }
            Err(e) => match self.failing.failed(now, 0) {
                Some(Say::Began) => tracing::error!(
                    error = %e,
                    "assigning traces to runs failed; retrying with every commit"
                ),
                Some(Say::Still(t)) => tracing::warn!(
                    error = %e,
                    "assigning traces to runs still fails: {} commits failed in {}",
                    t.failures,
                    outage::for_people(t.lasted)
                ),
                _ => tracing::debug!(error = %e, "assigning traces to runs still fails"),
            },
        }
    }

    /// Whether assignments of earlier commits are still waiting (one failed).
    pub fn has_pending(&self) -> Result<bool, StoreError> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM pending_assignments)",
            [],
            |r| r.get(0),
        )?)
    }

    /// Assigns the traces whose assignment is still waiting, reading their spans back from
    /// the store. Returns how many were assigned.
    pub fn retry_pending(&mut self, reader: &crate::store::Reader) -> Result<u64, StoreError> {
        let pending: Vec<(Vec<u8>, i64)> = {
            let mut stmt = self
                .conn
                .prepare("SELECT trace_id, received_ns FROM pending_assignments")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        let mut done = 0;
        for (id, received) in pending {
            let Ok(trace) = TraceId::from_slice(&id) else {
                continue;
            };
            let spans = reader.trace(trace)?;
            if spans.is_empty() {
                // Removed by retention meanwhile: nothing to assign.
                self.conn.execute(
                    "DELETE FROM pending_assignments WHERE trace_id = ?1",
                    params![id],
                )?;
                continue;
            }
            self.assign(&spans.iter().collect::<Vec<_>>(), received as u64)?;
            done += 1;
        }
        Ok(done)
    }

    pub fn open(dir: &Path, test_services: Vec<String>) -> Result<Self, StoreError> {
        let conn = Connection::open(crate::store::db_path(dir))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        init_schema(&conn)?;
        Ok(Self {
            conn,
            test_services,
            registry: std::sync::Arc::new(EmbeddedRuns),
            failing: Outage::new(outage::SUMMARY_EVERY),
        })
    }

    /// Decides runs through `registry` instead of the embedded store alone.
    pub fn with_registry(mut self, registry: std::sync::Arc<dyn RunRegistry>) -> Self {
        self.registry = registry;
        self
    }

    /// Records the runs of the traces in `spans`, which just arrived at `now_ns`.
    pub fn assign(&mut self, spans: &[&Span], now_ns: u64) -> Result<(), StoreError> {
        let mut facts: HashMap<TraceId, TraceFacts> = HashMap::new();
        for span in spans {
            let f = facts
                .entry(span.trace_id)
                .or_insert_with(|| TraceFacts::new(span.trace_id));
            if f.explicit_run.is_none() {
                f.explicit_run = span.resource.attributes.str(RUN_ID_ATTR).map(str::to_owned);
            }
            if f.ci_run.is_none() {
                f.ci_run = span
                    .resource
                    .attributes
                    .str(CI_RUN_ID_ATTR)
                    .or_else(|| span.attributes.str(CI_RUN_ID_ATTR))
                    .map(str::to_owned);
            }
            f.has_test |= looks_like_test(span, &self.test_services);
            let resource = &span.resource.attributes;
            if f.suite.suite.is_none() {
                f.suite.suite = resource.str(SUITE_ATTR).map(str::to_owned);
            }
            if f.suite.ci_job.is_none() {
                f.suite.ci_job = resource.str(CI_PIPELINE_NAME_ATTR).map(str::to_owned);
            }
        }
        // In trace id order: a shared registry locks its rows in this order, so two instances
        // deciding overlapping batches do not deadlock.
        let mut facts: Vec<TraceFacts> = facts.into_values().collect();
        facts.sort_by_key(|f| f.trace_id);
        // A commit that failed for want of room may have left its transaction open.
        if !self.conn.is_autocommit() {
            self.conn.execute_batch("ROLLBACK")?;
        }
        crate::store::simulated_full::apply(&self.conn)?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let decided = self.registry.decide(&tx, &facts, now_ns)?;
        for (f, assigned) in facts.iter().zip(decided) {
            // Done with this trace once this transaction commits.
            tx.execute(
                "DELETE FROM pending_assignments WHERE trace_id = ?1",
                params![&f.trace_id.as_bytes()[..]],
            )?;
            if let Some(assigned) = assigned {
                record(&tx, f.trace_id, &assigned, now_ns)?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// A run as a shared registry holds it, to be copied into the embedded store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    pub id: String,
    pub name: String,
    pub kind: RunKind,
    pub ci_run_id: Option<String>,
    pub created_ns: u64,
    pub closed_ns: Option<u64>,
    pub last_ns: u64,
    pub suite: Option<String>,
    pub ci_job: Option<String>,
}

/// Copies a run decided elsewhere into the embedded store, so that everything reading runs
/// there finds it: later times win, a close is kept, a suite once named stays.
pub fn mirror_run(local: &Connection, run: &RunRow) -> Result<(), StoreError> {
    if let Some(ci) = &run.ci_run_id {
        // The shared database's run of a CI id is the one: a local run made while the store
        // was used alone lets go of the id.
        local
            .prepare_cached("UPDATE runs SET ci_run_id = NULL WHERE ci_run_id = ?1 AND id <> ?2")?
            .execute(params![ci, run.id])?;
    }
    local
        .prepare_cached(
            "INSERT INTO runs (id, name, kind, ci_run_id, created_ns, closed_ns, last_ns, suite, ci_job)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind,
               ci_run_id = excluded.ci_run_id,
               closed_ns = COALESCE(runs.closed_ns, excluded.closed_ns),
               last_ns = MAX(runs.last_ns, excluded.last_ns),
               suite = COALESCE(runs.suite, excluded.suite),
               ci_job = COALESCE(runs.ci_job, excluded.ci_job)",
        )?
        .execute(params![
            run.id,
            run.name,
            run.kind.as_str(),
            run.ci_run_id,
            run.created_ns as i64,
            run.closed_ns.map(|v| v as i64),
            run.last_ns as i64,
            run.suite,
            run.ci_job
        ])?;
    Ok(())
}

/// Fills in what the spans say of `run`'s suite where nothing said it before: `--suite` (or a
/// first span's `tracecov.suite`) is kept once set.
fn name_suite(
    tx: &rusqlite::Transaction<'_>,
    run: &str,
    names: &SuiteNames,
) -> Result<(), StoreError> {
    if let Some(suite) = names.suite.as_deref().filter(|s| !s.is_empty()) {
        tx.prepare_cached("UPDATE runs SET suite = ?2 WHERE id = ?1 AND suite IS NULL")?
            .execute(params![run, suite])?;
    }
    if let Some(job) = names.ci_job.as_deref().filter(|s| !s.is_empty()) {
        tx.prepare_cached("UPDATE runs SET ci_job = ?2 WHERE id = ?1 AND ci_job IS NULL")?
            .execute(params![run, job])?;
    }
    Ok(())
}

fn touch_run(tx: &rusqlite::Transaction<'_>, run: &str, now_ns: u64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE runs SET last_ns = MAX(last_ns, ?2) WHERE id = ?1",
        params![run, now_ns as i64],
    )?;
    Ok(())
}

/// A `tracecov.run.id` nobody opened through the API still makes a run, named after the id.
fn ensure_run_id(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    now_ns: u64,
) -> Result<String, StoreError> {
    tx.execute(
        "INSERT OR IGNORE INTO runs (id, name, kind, created_ns, last_ns) VALUES (?1, ?1, 'ci', ?2, ?2)",
        params![id, now_ns as i64],
    )?;
    Ok(id.to_owned())
}

fn ensure_ci_run(
    tx: &rusqlite::Transaction<'_>,
    ci: &str,
    now_ns: u64,
) -> Result<String, StoreError> {
    if let Some(id) = tx
        .query_row(
            "SELECT id FROM runs WHERE ci_run_id = ?1",
            params![ci],
            |r| r.get(0),
        )
        .optional()?
    {
        return Ok(id);
    }
    let id = new_run_id(now_ns);
    tx.execute(
        "INSERT INTO runs (id, name, kind, ci_run_id, created_ns, last_ns) VALUES (?1, ?2, 'ci', ?2, ?3, ?3)",
        params![id, ci, now_ns as i64],
    )?;
    Ok(id)
}

/// The one open explicit run, when there is exactly one.
fn single_open_explicit(tx: &rusqlite::Transaction<'_>) -> Result<Option<String>, StoreError> {
    let mut stmt = tx.prepare_cached(
        "SELECT id FROM runs WHERE kind = 'explicit' AND closed_ns IS NULL LIMIT 2",
    )?;
    let open: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(if open.len() == 1 {
        open.into_iter().next()
    } else {
        None
    })
}

/// The open automatic run, or a new one when the last went quiet.
fn auto_run(tx: &rusqlite::Transaction<'_>, now_ns: u64) -> Result<String, StoreError> {
    let quiet = AUTO_RUN_QUIET.as_nanos() as i64;
    if let Some(id) = tx
        .query_row(
            "SELECT id FROM runs WHERE kind = 'auto' AND closed_ns IS NULL AND ?1 - last_ns < ?2
             ORDER BY created_ns DESC LIMIT 1",
            params![now_ns as i64, quiet],
            |r| r.get::<_, String>(0),
        )
        .optional()?
    {
        return Ok(id);
    }
    // Close the automatic runs that went quiet, so listings say so.
    tx.execute(
        "UPDATE runs SET closed_ns = last_ns + ?2 WHERE kind = 'auto' AND closed_ns IS NULL AND ?1 - last_ns >= ?2",
        params![now_ns as i64, quiet],
    )?;
    let id = new_run_id(now_ns);
    let name = format!("auto-{}", id.trim_start_matches('r'));
    tx.execute(
        "INSERT INTO runs (id, name, kind, created_ns, last_ns) VALUES (?1, ?2, 'auto', ?3, ?3)",
        params![id, name, now_ns as i64],
    )?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attributes, KeyValue, Resource, SpanId};
    use std::sync::Arc;

    fn span(trace: u8, resource: &[(&str, &str)], attrs: &[(&str, &str)]) -> Span {
        let mut s = Span::new(
            TraceId::from_bytes([trace; 16]).unwrap(),
            SpanId::from_bytes([trace; 8]).unwrap(),
            "op",
        );
        let mut r = vec![KeyValue::new("service.name", "svc")];
        r.extend(resource.iter().map(|(k, v)| KeyValue::new(*k, *v)));
        s.resource = Arc::new(Resource::new(Attributes(r)));
        for (k, v) in attrs {
            s.attributes.push(*k, *v);
        }
        s
    }

    fn setup() -> (tempfile::TempDir, RunAssigner) {
        let dir = tempfile::tempdir().unwrap();
        crate::store::Store::open(dir.path(), crate::store::Durability::Process).unwrap();
        let a = RunAssigner::open(dir.path(), vec!["driver".into()]).unwrap();
        (dir, a)
    }

    fn run_of(a: &RunAssigner, trace: u8) -> Option<String> {
        trace_run(&a.conn, TraceId::from_bytes([trace; 16]).unwrap()).unwrap()
    }

    #[test]
    fn explicit_id_then_ci_id_then_open_run_then_auto_then_none() {
        let (_d, mut a) = setup();
        let opened = create_run(
            &a.conn,
            "suite",
            RunKind::Explicit,
            &SuiteNames::default(),
            1,
        )
        .unwrap();
        a.assign(&[&span(1, &[(RUN_ID_ATTR, "given")], &[])], 10)
            .unwrap();
        assert_eq!(run_of(&a, 1).as_deref(), Some("given"));
        a.assign(&[&span(2, &[(CI_RUN_ID_ATTR, "pipeline-7")], &[])], 10)
            .unwrap();
        a.assign(&[&span(3, &[(CI_RUN_ID_ATTR, "pipeline-7")], &[])], 11)
            .unwrap();
        let ci = run_of(&a, 2).unwrap();
        assert_eq!(run_of(&a, 3), Some(ci.clone()), "parallel jobs merge");
        assert_eq!(find_run(&a.conn, "pipeline-7").unwrap().unwrap().id, ci);
        a.assign(&[&span(4, &[], &[])], 12).unwrap();
        assert_eq!(
            run_of(&a, 4),
            Some(opened.id.clone()),
            "the single open run"
        );
        close_run(&a.conn, &opened.id, 13).unwrap();
        a.assign(&[&span(5, &[], &[("test.case.name", "t")])], 14)
            .unwrap();
        let auto = run_of(&a, 5).unwrap();
        assert_eq!(
            get_run(&a.conn, &auto).unwrap().unwrap().kind,
            RunKind::Auto
        );
        a.assign(&[&span(6, &[], &[])], 15).unwrap();
        assert_eq!(run_of(&a, 6), None, "background traffic with no run open");
        // A late explicit id wins over the implicit assignment.
        a.assign(&[&span(5, &[(RUN_ID_ATTR, "given")], &[])], 16)
            .unwrap();
        assert_eq!(run_of(&a, 5).as_deref(), Some("given"));
    }

    #[test]
    fn automatic_runs_close_after_five_quiet_minutes() {
        let (_d, mut a) = setup();
        let t0 = 1_000_000_000;
        a.assign(&[&span(1, &[], &[("test.case.name", "t")])], t0)
            .unwrap();
        a.assign(&[&span(2, &[], &[("test.case.name", "t")])], t0 + 1)
            .unwrap();
        assert_eq!(run_of(&a, 1), run_of(&a, 2));
        let later = t0 + AUTO_RUN_QUIET.as_nanos() as u64 + 10;
        a.assign(&[&span(3, &[], &[("test.case.name", "t")])], later)
            .unwrap();
        assert_ne!(run_of(&a, 1), run_of(&a, 3));
        let first = get_run(&a.conn, &run_of(&a, 1).unwrap()).unwrap().unwrap();
        assert!(first.closed_ns.is_some());
        // A test-driver service's traces count as test traces too.
        close_run(&a.conn, &run_of(&a, 3).unwrap(), later).unwrap();
        let mut driver = span(4, &[], &[]);
        driver.resource = Arc::new(Resource::new(Attributes(vec![KeyValue::new(
            "service.name",
            "driver",
        )])));
        a.assign(&[&driver], later + 1).unwrap();
        assert!(run_of(&a, 4).is_some());
    }

    #[test]
    fn a_runs_suite_is_its_flag_else_the_spans_attribute_else_the_ci_job_else_default() {
        let (_d, mut a) = setup();
        let flagged = create_run(
            &a.conn,
            "a",
            RunKind::Explicit,
            &SuiteNames::named("api"),
            1,
        )
        .unwrap();
        assert_eq!(flagged.suite, "api");
        let ci = SuiteNames {
            suite: None,
            ci_job: Some("integration".into()),
        };
        let job = create_run(&a.conn, "b", RunKind::Explicit, &ci, 2).unwrap();
        assert_eq!(
            job.suite, "integration",
            "the CI job's name when nothing else"
        );
        // The span's attribute wins over the CI job's name, never over the flag.
        a.assign(
            &[&span(
                1,
                &[(RUN_ID_ATTR, &job.id), (SUITE_ATTR, "e2e")],
                &[],
            )],
            3,
        )
        .unwrap();
        assert_eq!(get_run(&a.conn, &job.id).unwrap().unwrap().suite, "e2e");
        a.assign(
            &[&span(
                2,
                &[(RUN_ID_ATTR, &flagged.id), (SUITE_ATTR, "e2e")],
                &[],
            )],
            3,
        )
        .unwrap();
        assert_eq!(get_run(&a.conn, &flagged.id).unwrap().unwrap().suite, "api");
        // Runs made by spans take the suite from them; the CI pipeline's name is the fallback.
        a.assign(
            &[&span(
                3,
                &[(CI_RUN_ID_ATTR, "p1"), (CI_PIPELINE_NAME_ATTR, "nightly")],
                &[],
            )],
            4,
        )
        .unwrap();
        assert_eq!(find_run(&a.conn, "p1").unwrap().unwrap().suite, "nightly");
        a.assign(&[&span(4, &[(RUN_ID_ATTR, "plain")], &[])], 5)
            .unwrap();
        assert_eq!(
            find_run(&a.conn, "plain").unwrap().unwrap().suite,
            DEFAULT_SUITE
        );
    }

    #[test]
    fn previous_is_the_run_of_the_same_suite_before() {
        let (_d, a) = setup();
        let api = SuiteNames::named("api");
        let ui = SuiteNames::named("ui");
        let a1 = create_run(&a.conn, "a1", RunKind::Explicit, &api, 1).unwrap();
        let u1 = create_run(&a.conn, "u1", RunKind::Explicit, &ui, 2).unwrap();
        let a2 = create_run(&a.conn, "a2", RunKind::Explicit, &api, 3).unwrap();
        let u2 = create_run(&a.conn, "u2", RunKind::Explicit, &ui, 4).unwrap();
        assert_eq!(previous_run(&a.conn, &a2).unwrap().unwrap().id, a1.id);
        assert_eq!(previous_run(&a.conn, &u2).unwrap().unwrap().id, u1.id);
        assert!(previous_run(&a.conn, &a1).unwrap().is_none());
        assert_eq!(find_run(&a.conn, "previous").unwrap().unwrap().id, u1.id);
        let listed: Vec<String> = suite_runs(&a.conn, "api", 10)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(listed, [a2.id.clone(), a1.id.clone()], "newest first");
        assert_eq!(suite_runs(&a.conn, "api", 1).unwrap().len(), 1);
        let suites: Vec<String> = list_suites(&a.conn)
            .unwrap()
            .into_iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(suites, ["ui", "api"]);
    }

    #[test]
    fn run_lookup_by_id_name_and_latest() {
        let (_d, a) = setup();
        let r1 = create_run(
            &a.conn,
            "nightly",
            RunKind::Explicit,
            &SuiteNames::default(),
            1,
        )
        .unwrap();
        let r2 = create_run(
            &a.conn,
            "nightly",
            RunKind::Explicit,
            &SuiteNames::default(),
            2,
        )
        .unwrap();
        assert_eq!(find_run(&a.conn, &r1.id).unwrap().unwrap().id, r1.id);
        assert_eq!(find_run(&a.conn, "nightly").unwrap().unwrap().id, r2.id);
        assert_eq!(find_run(&a.conn, "latest").unwrap().unwrap().id, r2.id);
        assert!(find_run(&a.conn, "nope").unwrap().is_none());
    }
}
