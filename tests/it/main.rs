//! The one integration-test binary: the real server on port 0, real clients. One module a topic.

mod bad_input;
mod common;
mod coverage;
mod crash;
mod demo;
mod otlp_clients;
mod otlp_json;
mod python_sdk;
