//! The crate's one integration-test binary: a module per topic (one binary links faster than a
//! binary per file).

mod demo;
