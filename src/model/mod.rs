//! The project's own data types: spans, ids, attribute values, resources.
//!
//! Everything here is plain data with no I/O and no knowledge of any wire format. Ingest and the
//! importers produce these types; the store keeps them; analysis reads them.

mod ids;
mod span;

pub use ids::{IdError, SpanId, TraceId};
pub use span::{
    Attributes, Event, KeyValue, Link, LogRecord, Resource, Scope, Span, SpanKind, Status,
    StatusCode, TracedLog, UNKNOWN_SERVICE, Value,
};
