//! Benchmarks that ship with the binary (`tracecov bench …`), so anyone can reproduce the figures
//! in BENCHMARKS.md with one command. Each prints its baseline measured in the same run and the
//! ratio; none of them is a test.

pub mod analysis;
pub mod expectations;
pub mod history;
pub mod ingest;
pub mod logs;
pub mod results;
pub mod served;
pub mod shared;
pub mod shared_history;
pub mod ui;
