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
}
