//! The way in: OTLP receivers (gRPC and HTTP), OTLP/JSON decoding, conversion of wire types into
//! the project's `Span`, the bounded queue to the store's writer, and OTLP forwarding of what was
//! acknowledged (`forward`).
//!
//! Invariants: OTLP wire types go no further than this module; ingest never waits on the disk
//! except through the bounded queue; no input panics the process (bad input is answered with a
//! precise status and the receiver keeps serving).

pub mod admission;
pub mod convert;
pub mod forward;
pub mod grpc;
pub mod http;
pub mod otlp_json;
mod queue;

pub use forward::{ForwardConfig, ForwardCounters, ForwardTarget, Forwarder};
pub use queue::{
    CommitHook, IngestCounters, IngestError, IngestQueue, SubmitError, Writer, WriterConfig, now_ns,
};
