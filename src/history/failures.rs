//! `RunFailures`: a run's failures in full, as `diff` reports them, kept beside the run's
//! `RunDigest` so that a diff reads two small records rather than turning two rollups into
//! graphs.
//!
//! The digest keeps of each failure what `flaky` and the trends read (its test, class and hop);
//! a diff lists the failures themselves — trace and span ids, summary, evidence, collateral and
//! trace link — so it needs everything the report writes of them. They are kept apart from the
//! digest because they can be large (stack traces, log bodies, a run where every test failed),
//! and a question over a hundred runs' digests must not read them.
//!
//! Key design decision: the record is the failures as `Rollup::graph` gave them (hops named by
//! the whole run's address map, `failed_here` counted over the run), unredacted and without
//! trace links: redaction and links are the reader's options, applied by `report::failure` when
//! the diff is written, exactly as for a report. What only a walk through the spans needs (the
//! raw callee before the address map named it) is not kept.
//!
//! Encoded with postcard after a version number; a record of another version, or one that does
//! not decode, is made again from the rollup, never migrated. Pure: no I/O; `history::store`
//! keeps it.

use serde::{Deserialize, Serialize};

use crate::blame::{self, Blame, ErrorClass, Evidence, ExceptionInfo, HopName, LogEvidence};
use crate::model::{SpanId, TraceId};

/// Bumped when what the record holds changes: stored records of another version are made again.
pub const FAILURES_VERSION: u32 = 1;

/// A run's failures, in the order its report lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFailures {
    bytes: Vec<u8>,
    failures: Vec<blame::Failure>,
}

/// One failure as stored: `blame::Failure` without the raw hop target.
#[derive(Serialize, Deserialize)]
struct Stored {
    trace: [u8; 16],
    failing_span: [u8; 8],
    placed_trace: [u8; 16],
    placed_span: [u8; 8],
    test: Option<String>,
    /// `ErrorClass::as_str`: a name, so that a reordering of the classes cannot misread one.
    class: String,
    /// (caller, callee, operation).
    hop: Option<(String, String, String)>,
    blamed: Option<String>,
    status_message: Option<String>,
    http_status: Option<i64>,
    rpc_status: Option<String>,
    /// (type, message, stacktrace).
    exception: Option<(String, String, String)>,
    client_ns: Option<u64>,
    server_ns: Option<u64>,
    /// (time, severity, body).
    logs: Vec<(u64, String, String)>,
    no_error_recorded: Vec<[u8; 8]>,
    collateral: Vec<[u8; 8]>,
    path: Vec<([u8; 16], [u8; 8])>,
    origin: Option<([u8; 16], [u8; 8])>,
    circuit_open: bool,
    cut_short: bool,
    failed_here: u64,
}

fn stored(f: &blame::Failure) -> Stored {
    let e = &f.evidence;
    Stored {
        trace: *f.trace_id.as_bytes(),
        failing_span: *f.failing_span.as_bytes(),
        placed_trace: *f.placed_trace.as_bytes(),
        placed_span: *f.placed_span.as_bytes(),
        test: f.test.clone(),
        class: f.class.as_str().to_owned(),
        hop: f
            .hop
            .as_ref()
            .map(|h| (h.caller.clone(), h.callee.clone(), h.operation.clone())),
        blamed: f.blamed.clone(),
        status_message: e.status_message.clone(),
        http_status: e.http_status,
        rpc_status: e.rpc_status.clone(),
        exception: e
            .exception
            .as_ref()
            .map(|x| (x.kind.clone(), x.message.clone(), x.stacktrace.clone())),
        client_ns: e.client_ns,
        server_ns: e.server_ns,
        logs: e
            .logs
            .iter()
            .map(|l| (l.time_ns, l.severity.clone(), l.body.clone()))
            .collect(),
        no_error_recorded: e.no_error_recorded.iter().map(|s| *s.as_bytes()).collect(),
        collateral: f.collateral.iter().map(|s| *s.as_bytes()).collect(),
        path: f
            .path
            .iter()
            .map(|(t, s)| (*t.as_bytes(), *s.as_bytes()))
            .collect(),
        origin: f.origin.map(|(t, s)| (*t.as_bytes(), *s.as_bytes())),
        circuit_open: f.circuit_open,
        cut_short: f.cut_short,
        failed_here: f.failed_here as u64,
    }
}

/// The failure a stored one stands for; `None` when an id or the class does not read back
/// (the record is then made again).
fn failure(s: Stored) -> Option<blame::Failure> {
    let trace = |b: [u8; 16]| TraceId::from_bytes(b).ok();
    let span = |b: [u8; 8]| SpanId::from_bytes(b).ok();
    let pair = |(t, s): ([u8; 16], [u8; 8])| Some((trace(t)?, span(s)?));
    let class = ErrorClass::ALL
        .into_iter()
        .find(|c| c.as_str() == s.class)?;
    Some(blame::Failure {
        trace_id: trace(s.trace)?,
        failing_span: span(s.failing_span)?,
        placed_trace: trace(s.placed_trace)?,
        placed_span: span(s.placed_span)?,
        test: s.test,
        class,
        hop: s.hop.map(|(caller, callee, operation)| HopName {
            caller,
            callee,
            operation,
        }),
        blamed: s.blamed,
        evidence: Evidence {
            status_message: s.status_message,
            http_status: s.http_status,
            rpc_status: s.rpc_status,
            exception: s
                .exception
                .map(|(kind, message, stacktrace)| ExceptionInfo {
                    kind,
                    message,
                    stacktrace,
                }),
            client_ns: s.client_ns,
            server_ns: s.server_ns,
            logs: s
                .logs
                .into_iter()
                .map(|(time_ns, severity, body)| LogEvidence {
                    time_ns,
                    severity,
                    body,
                })
                .collect(),
            no_error_recorded: s
                .no_error_recorded
                .into_iter()
                .map(span)
                .collect::<Option<_>>()?,
        },
        collateral: s.collateral.into_iter().map(span).collect::<Option<_>>()?,
        path: s.path.into_iter().map(pair).collect::<Option<_>>()?,
        origin: match s.origin {
            Some(o) => Some(pair(o)?),
            None => None,
        },
        circuit_open: s.circuit_open,
        cut_short: s.cut_short,
        failed_here: usize::try_from(s.failed_here).ok()?,
        hop_target: None,
    })
}

impl RunFailures {
    /// The failures of a run's blame (as `Rollup::graph` gives it).
    pub fn of(blame: &Blame) -> RunFailures {
        let list: Vec<Stored> = blame.failures.iter().map(stored).collect();
        let mut bytes = FAILURES_VERSION.to_le_bytes().to_vec();
        // Encoding plain owned data into a Vec cannot fail.
        bytes.extend(postcard::to_stdvec(&list).unwrap_or_default());
        RunFailures {
            bytes,
            failures: blame
                .failures
                .iter()
                .map(|f| blame::Failure {
                    hop_target: None,
                    ..f.clone()
                })
                .collect(),
        }
    }

    /// A stored record, when it is of this version and reads back whole.
    pub fn decode(bytes: Vec<u8>) -> Option<Self> {
        let (version, body) = bytes.split_first_chunk::<4>()?;
        if u32::from_le_bytes(*version) != FAILURES_VERSION {
            return None;
        }
        let list: Vec<Stored> = postcard::from_bytes(body).ok()?;
        let failures = list.into_iter().map(failure).collect::<Option<_>>()?;
        Some(RunFailures { bytes, failures })
    }

    /// The encoded record, as it is stored.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The failures, in the report's order.
    pub fn failures(&self) -> &[blame::Failure] {
        &self.failures
    }

    /// The failures as a `Blame`, for building a report.
    pub fn blame(&self) -> Blame {
        Blame::from_failures(self.failures.clone())
    }
}
