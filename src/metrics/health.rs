//! tracecov's own health: spans received, stored and refused (by reason), the ingest queue, the
//! store's size, how far runs are from settling, and what forwarding sent and dropped.
//!
//! Counters come from the atomics the receivers and the writer already keep; the store snapshot
//! is read on the blocking pool with the analysed part of a scrape.

use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::registry::Registry;

use crate::ingest::forward::DropReason;
use crate::ingest::{ForwardCounters, IngestCounters};
use crate::store::{Reader, StoreError};

use super::{counter, counters, gauge};

/// What the store holds, read once per analysed build.
#[derive(Debug, Clone, Default)]
pub struct StoreSnapshot {
    pub spans: u64,
    pub traces: u64,
    pub bytes: u64,
    /// Seconds since a span of the latest run last arrived; none without a run.
    pub latest_quiet_secs: Option<f64>,
    /// Runs whose traces have not settled yet.
    pub unsettled_runs: u64,
    pub open_runs: u64,
}

impl StoreSnapshot {
    pub fn read(reader: &Reader, now_ns: u64, settle: Duration) -> Result<Self, StoreError> {
        let stats = reader.stats()?;
        let bytes = reader.stored_bytes()?;
        let runs = reader.with_conn(crate::runs::list_runs)?;
        let latest = reader.with_conn(|c| crate::runs::find_run(c, "latest"))?;
        Ok(Self {
            spans: stats.spans,
            traces: stats.traces,
            bytes,
            latest_quiet_secs: latest.map(|r| now_ns.saturating_sub(r.last_ns) as f64 / 1e9),
            unsettled_runs: runs
                .iter()
                .filter(|r| !r.is_settled(now_ns, settle))
                .count() as u64,
            open_runs: runs.iter().filter(|r| !r.is_closed(now_ns)).count() as u64,
        })
    }
}

/// The store's series.
pub fn register_store(registry: &mut Registry, s: &StoreSnapshot, settle: Duration) {
    gauge(
        registry,
        "tracecov_store_spans",
        "Spans in the store",
        s.spans as f64,
    );
    gauge(
        registry,
        "tracecov_store_traces",
        "Traces in the store",
        s.traces as f64,
    );
    gauge(
        registry,
        "tracecov_store_size_bytes",
        "Stored span bytes (what --retention-size bounds)",
        s.bytes as f64,
    );
    // Settling: a run's traces are final once no span arrived for `--settle`. The lag is how long
    // the latest run has been quiet; while it is below the settle period, reports of that run
    // may still change.
    if let Some(q) = s.latest_quiet_secs {
        gauge(
            registry,
            "tracecov_settle_lag_seconds",
            "Seconds since a span of the latest run last arrived; its traces are settled once this passes tracecov_settle_period_seconds",
            q,
        );
    }
    gauge(
        registry,
        "tracecov_settle_period_seconds",
        "The quiet period after which a trace is settled (--settle)",
        settle.as_secs_f64(),
    );
    gauge(
        registry,
        "tracecov_runs_unsettled",
        "Runs with traces that have not settled yet",
        s.unsettled_runs as f64,
    );
    gauge(
        registry,
        "tracecov_runs_open",
        "Runs not closed yet",
        s.open_runs as f64,
    );
}

/// The receivers' and the writer's counters.
pub fn register_counters(registry: &mut Registry, c: &IngestCounters) {
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    counter(
        registry,
        "tracecov_spans_received",
        "Spans accepted into the ingest queue",
        get(&c.spans_accepted),
    );
    counter(
        registry,
        "tracecov_spans_stored",
        "Spans committed to the store (exact re-deliveries not counted)",
        get(&c.spans_stored),
    );
    counter(
        registry,
        "tracecov_logs_received",
        "OTLP log records with a trace id accepted into the ingest queue",
        get(&c.logs_accepted),
    );
    counter(
        registry,
        "tracecov_logs_stored",
        "Log records committed to the store with their trace (exact re-deliveries not counted)",
        get(&c.logs_stored),
    );
    counters(
        registry,
        "tracecov_logs_dropped",
        "Log records not kept, by reason: no_trace (accepted, but they carry no trace id), queue_full (retryable)",
        [
            (
                vec![("reason", "no_trace".to_owned())],
                get(&c.logs_without_trace),
            ),
            (
                vec![("reason", "queue_full".to_owned())],
                get(&c.logs_refused_full),
            ),
        ],
    );
    counter(
        registry,
        "tracecov_spans_duplicate",
        "Spans received again with the same content (stored once)",
        get(&c.spans_duplicate),
    );
    counters(
        registry,
        "tracecov_spans_refused",
        "Spans not stored, by reason: invalid_id (partial success), queue_full and store_unwritable (retryable)",
        [
            (
                vec![("reason", "invalid_id".to_owned())],
                get(&c.spans_rejected_invalid),
            ),
            (
                vec![("reason", "queue_full".to_owned())],
                get(&c.spans_refused_full),
            ),
            (
                vec![("reason", "store_unwritable".to_owned())],
                get(&c.spans_refused_store),
            ),
        ],
    );
    counters(
        registry,
        "tracecov_exports_refused",
        "OTLP exports refused, by reason: queue_full and store_unwritable (retryable: their commit failed), bad_request (undecodable, bad content type), too_large",
        [
            (
                vec![("reason", "queue_full".to_owned())],
                get(&c.exports_refused_full),
            ),
            (
                vec![("reason", "store_unwritable".to_owned())],
                get(&c.exports_refused_store),
            ),
            (
                vec![("reason", "bad_request".to_owned())],
                get(&c.exports_refused_bad),
            ),
            (
                vec![("reason", "too_large".to_owned())],
                get(&c.exports_refused_too_large),
            ),
        ],
    );
    counter(
        registry,
        "tracecov_store_commits",
        "Store transactions committed by the writer",
        get(&c.commits),
    );
    counter(
        registry,
        "tracecov_store_write_failures",
        "Store transactions of the writer that failed (a full disk); their exports were refused as retryable",
        get(&c.write_failures),
    );
    gauge(
        registry,
        "tracecov_store_writable",
        "1 while the store takes writes, 0 from a failed commit until one succeeds again (e.g. while its disk is full)",
        if c.store_writable() { 1.0 } else { 0.0 },
    );
    gauge(
        registry,
        "tracecov_ingest_queue_spans",
        "Spans waiting in the ingest queue for the store",
        get(&c.queued_spans) as f64,
    );
    gauge(
        registry,
        "tracecov_ingest_queue_capacity_spans",
        "The ingest queue's bound (--queue-spans); a full queue refuses exports as retryable",
        get(&c.queue_capacity_spans) as f64,
    );
}

/// Per `--forward` destination (label `destination`, the URL as given): what was delivered,
/// retried, dropped by reason, and what waits. Nothing when no destination is configured.
pub fn register_forwarding(
    registry: &mut Registry,
    destinations: &[std::sync::Arc<ForwardCounters>],
) {
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    if destinations.is_empty() {
        return;
    }
    let dest = |d: &ForwardCounters| vec![("destination", d.destination.clone())];
    counters(
        registry,
        "tracecov_forward_spans_sent",
        "Spans delivered to a --forward destination",
        destinations.iter().map(|d| (dest(d), get(&d.spans_sent))),
    );
    counters(
        registry,
        "tracecov_forward_exports_sent",
        "Exports delivered to a --forward destination",
        destinations.iter().map(|d| (dest(d), get(&d.exports_sent))),
    );
    counters(
        registry,
        "tracecov_forward_retries",
        "Attempts after the first to deliver an export",
        destinations.iter().map(|d| (dest(d), get(&d.retries))),
    );
    let by_reason = |spans: bool| {
        destinations.iter().flat_map(move |d| {
            DropReason::ALL.into_iter().map(move |r| {
                let mut labels = dest(d);
                labels.push(("reason", r.as_str().to_owned()));
                let n = if spans {
                    d.spans_dropped(r)
                } else {
                    d.exports_dropped(r)
                };
                (labels, n)
            })
        })
    };
    counters(
        registry,
        "tracecov_forward_dropped_spans",
        "Spans a --forward destination did not get, by reason: queue_full (too slow), failed (retries ran out or refused), shutdown",
        by_reason(true),
    );
    counters(
        registry,
        "tracecov_forward_dropped_exports",
        "Exports a --forward destination did not get, by reason",
        by_reason(false),
    );
    super::gauges(
        registry,
        "tracecov_forward_queue_bytes",
        "Bytes of exports waiting for a --forward destination (bounded by --forward-queue)",
        destinations
            .iter()
            .map(|d| (dest(d), get(&d.queued_bytes) as f64)),
    );
    super::gauges(
        registry,
        "tracecov_forward_queue_exports",
        "Exports waiting for a --forward destination",
        destinations
            .iter()
            .map(|d| (dest(d), get(&d.queued_exports) as f64)),
    );
}

/// The request memory budget and the listeners' connections.
pub fn register_limits(registry: &mut Registry, limits: &super::Limits) {
    counter(
        registry,
        "tracecov_exports_refused_memory",
        "OTLP exports refused before their body was read because the request memory budget (--max-request-memory) had no room (retryable)",
        limits.admission.refused(),
    );
    gauge(
        registry,
        "tracecov_request_memory_bytes",
        "Memory reserved by OTLP exports in flight (bodies, decoded requests and queued spans)",
        limits.admission.reserved_bytes() as f64,
    );
    gauge(
        registry,
        "tracecov_request_memory_limit_bytes",
        "The request memory budget (--max-request-memory)",
        limits.admission.capacity_bytes() as f64,
    );
    super::gauges(
        registry,
        "tracecov_open_connections",
        "Connections each listener holds open (at most --max-connections; more wait to be accepted)",
        limits.connections.iter().map(|(listener, g)| {
            (
                vec![("listener", (*listener).to_owned())],
                g.open.load(Ordering::Relaxed) as f64,
            )
        }),
    );
}
