//! The one integration-test binary: the real server on port 0, real clients. One module a topic.

mod bad_input;
mod blame;
mod cli;
mod common;
mod coverage;
mod crash;
mod dashboards;
mod demo;
mod disk_full;
mod exposure;
mod flask;
mod formats;
mod forward;
mod graph_e2e;
mod import;
mod limits;
mod metrics;
mod otlp_clients;
mod otlp_json;
mod pytest_plugin;
mod python_sdk;
mod results;
mod run_assignment;
mod tokens;
mod ui;
mod verdicts;
