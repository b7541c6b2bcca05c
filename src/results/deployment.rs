//! What a reader adds from the other instances of a deployment (`serve --shared-db`; DESIGN,
//! "Many instances, one deployment").
//!
//! Each instance keeps its own traces' results, rollups and facts in its embedded store as a
//! single process does, and publishes them (`shared::publish`). A question about the deployment
//! is this instance's answer, read and completed locally as always (a settled trace without
//! results is computed by the reader), plus the other instances' published shares: rollups and
//! facts are sums, so the sum of the instances' shares is what one process that received every
//! trace would hold. Runs are decided in the shared database; a lookup first copies the runs it
//! may answer with into the embedded store, where `runs` finds them.
//!
//! The implementation lives in `shared/` (the only module that talks to PostgreSQL); this trait
//! keeps `results` and `query` free of it. Every method blocks.

use rusqlite::Connection;

use crate::model::{Span, TraceId};
use crate::runs::Run;
use crate::store::StoreError;

use super::Rollup;

/// A recorded example of a fact: (fact, run, trace id, span id, test).
pub type ExampleRow = (Vec<u8>, String, Vec<u8>, Vec<u8>, Option<String>);

/// Which runs a lookup may answer with.
#[derive(Debug, Clone, Copy)]
pub enum RunLookup<'a> {
    /// A run id, a run name, or `latest`.
    Named(&'a str),
    /// The runs of `run`'s suite before it (`previous`).
    Before(&'a Run),
    /// The newest runs of a suite, at most this many.
    Suite(&'a str, usize),
    /// Every run (the runs list).
    All,
}

/// What a deployment keeps of a run for history (`history::store`), as `Deployment::history`
/// finds it.
#[derive(Debug, Clone, Default)]
pub struct KeptHistory {
    /// The stamps of the run's published shares now (sorted): what a record made now is kept
    /// under.
    pub shares: Vec<i64>,
    /// The run's digest and failures, encoded, when kept under `shares` (fresh) and nothing of
    /// the run waits here for publication; failures only when asked for.
    pub digest: Option<Vec<u8>>,
    pub failures: Option<Vec<u8>>,
}

pub trait Deployment: Send + Sync {
    /// The other instances' shares of the rollups of `runs` (`""`: the traces of no run) under
    /// the fingerprint `fp`, with their test cases.
    fn others_rollups(&self, runs: &[String], fp: i64) -> Result<Vec<Rollup>, StoreError>;

    /// The facts the other instances' stored results hold (`results::seen`).
    fn others_facts(&self) -> Result<Vec<Vec<u8>>, StoreError>;

    /// The other instances' examples of facts.
    fn others_examples(&self) -> Result<Vec<ExampleRow>, StoreError>;

    /// Copies into `local` the deployment's runs that `lookup` may answer with.
    fn mirror_runs(&self, local: &Connection, lookup: RunLookup<'_>) -> Result<(), StoreError>;

    /// Whether this instance's trace `trace` is known to cross instances: other instances hold
    /// spans of it too, or traces linked to it. Its results are then computed with their spans
    /// (`elsewhere`, `spans_elsewhere`), and only by one of its holders (`computes`). Read from
    /// `local`, where the deployment records what it learnt.
    fn crosses(&self, local: &Connection, trace: TraceId) -> Result<bool, StoreError>;

    /// The other instances holding spans of `trace`, sorted.
    fn elsewhere(&self, trace: TraceId) -> Result<Vec<String>, StoreError>;

    /// Whether this instance, holding spans of a trace that `others` hold too, is the one that
    /// computes its results and serves its views (the others contribute nothing for it, so it
    /// is counted once).
    fn computes(&self, others: &[String]) -> bool;

    /// The spans of `trace` that the instances `holders` keep, asked of each.
    fn spans_elsewhere(&self, trace: TraceId, holders: &[String]) -> Result<Vec<Span>, StoreError>;

    /// The traces other instances hold that link to `trace`.
    fn linking_elsewhere(&self, trace: TraceId) -> Result<Vec<TraceId>, StoreError>;

    /// The run the deployment put `trace` in.
    fn trace_run(&self, trace: TraceId) -> Result<Option<String>, StoreError>;

    /// The traces the deployment put in each of `runs` (a split trace once), by run.
    fn run_traces(&self, runs: &[String]) -> Result<Vec<(String, u64)>, StoreError>;

    /// The traces of `run` that other instances hold and have no fresh results for under the
    /// fingerprint `fp` (as far as they published).
    fn pending_elsewhere(&self, run: &str, fp: i64) -> Result<u64, StoreError>;

    /// For each of `runs`, in order, the stamps of its rollup's shares now and the history
    /// records the deployment keeps of it when they were made under those stamps; a run whose
    /// share here changed since it was published (`local` says) gets none, so that this
    /// instance never answers older than its own store. `failures`: read those too.
    fn history(
        &self,
        local: &Connection,
        runs: &[String],
        fp: i64,
        failures: bool,
    ) -> Result<Vec<KeptHistory>, StoreError>;

    /// Keeps a run's history records, made from its rollup when its shares' stamps were
    /// `shares`, unless the shares moved since or they are kept already.
    fn keep_history(
        &self,
        run: &str,
        fp: i64,
        shares: &[i64],
        digest: &[u8],
        failures: &[u8],
    ) -> Result<(), StoreError>;

    /// When this instance is the deployment's history keeper (one at a time, by a lease it
    /// takes or renews here): up to `limit` runs, newest first, that are finished (closed, or
    /// no span since `settled_before`) and have published shares but no fresh records of the
    /// versions `versions` (digest's, failures'), with their shares' stamps. Else none.
    fn history_to_make(
        &self,
        fp: i64,
        settled_before: u64,
        versions: (u32, u32),
        limit: usize,
    ) -> Result<Vec<(String, Vec<i64>)>, StoreError>;
}
