//! tracecov: an OTLP collector for test runs.
//!
//! Spans come in at `ingest`, are kept by `store`, and are served by `web`; `server` wires them
//! together and `cli` turns command lines into calls of this library. See ARCHITECTURE.md for the
//! map and its invariants.

pub mod bench;
pub mod blame;
pub mod cli;
pub mod config;
pub mod coverage;
pub mod demo;
pub mod expect;
pub mod graph;
pub mod history;
pub mod import;
pub mod ingest;
pub mod links;
pub mod metrics;
pub mod model;
pub mod net;
pub mod query;
pub mod redact;
pub mod regressions;
pub mod report;
pub mod results;
pub mod runs;
pub mod server;
pub mod shared;
pub mod store;
pub mod tls;
pub mod web;
