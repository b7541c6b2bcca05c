//! `EncodedSpans`: spans already in the store's encoding, with their content hashes.
//!
//! A key design decision: encoding and hashing happen where the spans are produced (the
//! receivers, one export at a time, on as many threads as there are exports), not on the single
//! writer thread, whose time is the ingest limit. The writer is left with SQLite work alone.
//!
//! This module does no I/O.

use std::collections::HashMap;
use std::sync::Arc;

use super::codec;
use crate::model::{Resource, Span, SpanId, TraceId, TracedLog};

/// One span's key and where its encoding lies in the batch's buffer.
#[derive(Debug, Clone)]
pub(crate) struct EncodedSpan {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub hash: u64,
    /// Index into `EncodedSpans::resources`.
    pub resource: usize,
    pub start: usize,
    pub end: usize,
}

/// One log record's key and where its encoding lies in the batch's buffer.
#[derive(Debug, Clone)]
pub(crate) struct EncodedLog {
    pub trace_id: TraceId,
    /// None for a record that names no span (kept with its trace, evidence on no span).
    pub span_id: Option<SpanId>,
    pub hash: u64,
    pub start: usize,
    pub end: usize,
}

/// One distinct resource of a batch, encoded.
#[derive(Debug, Clone)]
pub(crate) struct EncodedResource {
    pub hash: u64,
    pub data: Vec<u8>,
    pub service: String,
}

/// Spans encoded for `Store::write_encoded`. Building one is pure CPU work that can run on any
/// thread; it does not need the store.
#[derive(Debug, Clone, Default)]
pub struct EncodedSpans {
    pub(crate) spans: Vec<EncodedSpan>,
    pub(crate) resources: Vec<EncodedResource>,
    /// Log records (OTLP logs with a trace id), kept with their traces.
    pub(crate) logs: Vec<EncodedLog>,
    /// Resource content hash → indexes in `resources` (more than one only when two contents
    /// share a hash): an export may carry many resources.
    resource_index: HashMap<u64, Vec<usize>>,
    /// Every span's encoding, back to back: one allocation per batch, not one per span.
    buf: Vec<u8>,
}

/// A guess at a span's encoded size, to size the buffer once in the common case.
const TYPICAL_SPAN_BYTES: usize = 512;

impl EncodedSpans {
    /// Encodes and hashes `spans`.
    pub fn encode<'a>(spans: impl IntoIterator<Item = &'a Span>) -> Self {
        let spans = spans.into_iter();
        let mut out = Self {
            spans: Vec::with_capacity(spans.size_hint().0),
            resources: Vec::new(),
            logs: Vec::new(),
            resource_index: HashMap::new(),
            buf: Vec::with_capacity(spans.size_hint().0 * TYPICAL_SPAN_BYTES),
        };
        // Spans of one export share an `Arc<Resource>`: compare pointers before encoding one.
        let mut last: Option<(*const Resource, usize)> = None;
        for span in spans {
            let ptr = Arc::as_ptr(&span.resource);
            let resource = match last {
                Some((p, i)) if p == ptr => i,
                _ => {
                    let i = out.resource_index(&span.resource);
                    last = Some((ptr, i));
                    i
                }
            };
            let start = out.buf.len();
            codec::encode_span(span, &mut out.buf);
            let end = out.buf.len();
            out.spans.push(EncodedSpan {
                trace_id: span.trace_id,
                span_id: span.span_id,
                hash: codec::content_hash(&out.buf[start..end]),
                resource,
                start,
                end,
            });
        }
        out
    }

    /// Encodes and hashes log records (a batch of logs holds no spans).
    pub fn encode_logs<'a>(logs: impl IntoIterator<Item = &'a TracedLog>) -> Self {
        let mut out = Self::default();
        for log in logs {
            let start = out.buf.len();
            codec::encode_log(&log.record, &mut out.buf);
            let end = out.buf.len();
            out.logs.push(EncodedLog {
                trace_id: log.trace_id,
                span_id: log.span_id,
                hash: codec::content_hash(&out.buf[start..end]),
                start,
                end,
            });
        }
        out
    }

    /// The stored encoding of the log record at `log`.
    pub(crate) fn log_data(&self, log: &EncodedLog) -> &[u8] {
        &self.buf[log.start..log.end]
    }

    /// The index of `resource` in this batch, adding it when its content is new here.
    fn resource_index(&mut self, resource: &Resource) -> usize {
        let mut data = Vec::new();
        codec::encode_resource(resource, &mut data);
        let hash = codec::content_hash(&data);
        let same = self.resource_index.entry(hash).or_default();
        if let Some(&i) = same.iter().find(|&&i| self.resources[i].data == data) {
            return i;
        }
        self.resources.push(EncodedResource {
            hash,
            data,
            service: resource.service().to_owned(),
        });
        same.push(self.resources.len() - 1);
        self.resources.len() - 1
    }

    /// The stored encoding of the span at `span`.
    pub(crate) fn data(&self, span: &EncodedSpan) -> &[u8] {
        &self.buf[span.start..span.end]
    }

    /// The number of spans and log records.
    pub fn len(&self) -> usize {
        self.spans.len() + self.logs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty() && self.logs.is_empty()
    }

    /// The bytes held, for memory accounting.
    pub fn encoded_bytes(&self) -> usize {
        self.buf.len()
    }
}
