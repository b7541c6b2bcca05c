//! Integration coverage: the expected topology, held against what a run's tests exercised.
//!
//! Owns the sources of the expected topology (the `tracecov.yaml` manifest, Pact files, OpenAPI
//! documents, and graphs: a baseline run, background traffic, or everything the store has seen),
//! matching operations across route syntaxes, the status of every edge and interface, the CI
//! gate, and test impact. The manifest's format is documented in `docs/manifest.md`.
//!
//! The flow, for the CLI:
//! 1. `load_manifest` (or `parse_manifest`), `Manifest::load_contracts`, `load_pact`,
//!    `load_openapi`: files in, `SourceError` (file, line, reason) out when one is malformed;
//!    `Manifest::analysis_options` feeds `graph::analyze`, and `Manifest::unknown_names`
//!    warns about names no trace shows.
//! 2. `expected(&Sources{..})`: the expected topology, by DESIGN's rules.
//! 3. `coverage(&run_graph, &expected, &failing_hops(&run_graph))`: statuses and numbers;
//!    `report::apply_coverage` puts them in the report.
//! 4. `check_gate_usable` then `gate`; `impact` for `tracecov impact`.
//!
//! Everything here but the `load_*` functions is pure: no I/O, no clock. The loaders read only
//! the files they are given.

mod error;
mod expected;
mod gate;
mod impact;
mod manifest;
mod openapi;
mod pact;
mod route;
mod status;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use error::{NameWarning, SourceError};
pub use expected::{Expected, Sources, expected};
pub use gate::{
    Condition, GateConditions, GateRefused, GateResult, Violation, check_gate_usable, gate,
};
pub use impact::impact;
pub use manifest::{Manifest, OpenApiRef, load_manifest, parse_manifest};
pub use openapi::{load_openapi, parse_openapi};
pub use pact::{load_pact, parse_pact};
pub use status::{
    Counts, Coverage, EdgeCoverage, HopKey, InterfaceCoverage, Item, Status, Summary, coverage,
    failing_hops,
};

/// The caller of an interface expected from any caller.
pub const ANY_CALLER: &str = "*";

/// The demo shop's manifest, built into the binary so `tracecov demo` runs from any directory.
pub const DEMO_MANIFEST: &str = include_str!("../demo/tracecov.yaml");

/// The name the demo manifest goes by in messages.
pub const DEMO_MANIFEST_NAME: &str = "tracecov demo (built-in tracecov.yaml)";

/// One expectation as a source states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// `None`: any caller.
    pub caller: Option<String>,
    pub callee: String,
    /// `None`: the edge itself.
    pub operation: Option<String>,
    pub critical: bool,
}

/// What kind of contract a file was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContractKind {
    /// The Pact specification version from the file's metadata (`2.0.0` when it has none).
    Pact { version: String },
    /// The document's `openapi` version.
    OpenApi { version: String },
}

/// A loaded Pact file or OpenAPI document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contract {
    pub file: PathBuf,
    pub kind: ContractKind,
    pub declared: Vec<Declared>,
}

/// The demo's manifest, parsed. It is part of the binary and tested, so it always parses.
pub fn demo_manifest() -> Manifest {
    parse_manifest(DEMO_MANIFEST, std::path::Path::new(DEMO_MANIFEST_NAME))
        .expect("the built-in demo manifest parses")
}
