//! The bounded queue between the receivers and the store, and the writer thread behind it.
//!
//! Main types: `IngestQueue` (cloned into every receiver), `Writer` (the thread's handle).
//!
//! Key design decisions:
//! - Memory is bounded by *spans*, not by requests: a semaphore holds one permit per queued span.
//!   A receiver that cannot get its permits at once answers "retry later" (gRPC UNAVAILABLE, HTTP
//!   503 with `Retry-After`), which OTLP clients treat as retryable. Nothing waits unboundedly.
//! - An export is acknowledged only after the transaction holding its spans has committed: a
//!   client that saw success may see the process killed the next instant and lose nothing.
//! - Group commit: the writer takes every export waiting in the queue into one transaction, so
//!   under load the cost of a commit is shared by many exports.
//! - Receivers encode their spans for the store before queueing them (`EncodedSpans`), so the
//!   writer thread, which all exports share, does only SQLite work.
//! - The writer is a plain thread, not an async task: SQLite calls block, and must not stall the
//!   runtime's workers.
//! - A failed commit refuses its exports as retryable and nothing else: the transaction is rolled
//!   back, the next group commit tries again, and the first success ends the failure. While
//!   commits fail (a full disk), the log says once what is wrong and then sums up at most once an
//!   interval (`store::outage`); `IngestCounters` tells metrics and `/api/health`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::model::{Span, TracedLog};
use crate::store::outage::{self, Outage, Say};
use crate::store::{EncodedSpans, Retention, Store, StoreError, WriteSummary};

/// Why an export could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("ingest queue is full, retry later")]
    Full,
    #[error("collector is shutting down")]
    Closed,
}

/// Counters shared by the receivers and the writer, read by the API and metrics.
#[derive(Debug, Default)]
pub struct IngestCounters {
    /// OTLP log records queued (they carried a trace id), stored, and dropped because they
    /// carried none (accepted, as OTLP asks, but evidence on nothing).
    pub logs_accepted: AtomicU64,
    pub logs_stored: AtomicU64,
    pub logs_without_trace: AtomicU64,
    pub logs_refused_full: AtomicU64,
    pub spans_accepted: AtomicU64,
    pub spans_stored: AtomicU64,
    pub spans_duplicate: AtomicU64,
    pub spans_rejected_invalid: AtomicU64,
    /// Spans of exports refused because the queue was full (their clients retry them).
    pub spans_refused_full: AtomicU64,
    pub exports_refused_full: AtomicU64,
    pub exports_refused_bad: AtomicU64,
    pub exports_refused_too_large: AtomicU64,
    pub commits: AtomicU64,
    /// Commits that failed; their exports were refused as retryable.
    pub write_failures: AtomicU64,
    /// Exports, and their spans, refused because their commit failed.
    pub exports_refused_store: AtomicU64,
    pub spans_refused_store: AtomicU64,
    /// What is wrong while commits fail (`None` while they succeed), for `/api/health`.
    pub store_failing: Mutex<Option<StoreFailing>>,
    /// Spans waiting for the writer now: queued by `submit`, released once their commit is
    /// answered. A counter rather than the semaphore itself, so readers (metrics) hold no part of
    /// the queue and cannot keep the writer alive at shutdown.
    pub queued_spans: AtomicU64,
    /// The queue's bound, in spans.
    pub queue_capacity_spans: AtomicU64,
}

/// Why the store refuses writes now.
#[derive(Debug, Clone)]
pub struct StoreFailing {
    /// In plain words, e.g. "the disk holding DIR is full".
    pub problem: String,
    /// When the first failed commit of this run of failures was tried (ns since the epoch).
    pub since_ns: u64,
}

impl IngestCounters {
    /// Whether the last commit succeeded (or none was tried yet).
    pub fn store_writable(&self) -> bool {
        self.store_failing().is_none()
    }

    /// What is wrong while commits fail.
    pub fn store_failing(&self) -> Option<StoreFailing> {
        self.store_failing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set_store_failing(&self, failing: Option<StoreFailing>) {
        *self
            .store_failing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = failing;
    }
}

/// Called after every commit with the spans it made durable (trace settling listens here).
pub type CommitHook = Box<dyn FnMut(&[&Span], u64) + Send>;

struct Job {
    /// The spans themselves, kept only when commit hooks want to see them.
    spans: Vec<Span>,
    /// The spans in the store's encoding, made on the submitting thread.
    encoded: EncodedSpans,
    _permit: OwnedSemaphorePermit,
    /// Taken when the answer is sent.
    ack: Option<oneshot::Sender<Result<WriteSummary, String>>>,
}

/// The receivers' side: cheap to clone.
#[derive(Clone)]
pub struct IngestQueue {
    tx: mpsc::Sender<Job>,
    permits: Arc<Semaphore>,
    capacity_spans: usize,
    /// Whether jobs carry their spans to the writer (for commit hooks) or only the encoding.
    keep_spans: bool,
    pub counters: Arc<IngestCounters>,
}

/// Settings of the writer thread.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// The most spans waiting in memory for the writer.
    pub queue_spans: usize,
    pub retention: Retention,
    /// How often retention runs.
    pub retention_every: Duration,
    /// Test-only: sleep this long before each commit, to make the queue fill up.
    pub test_delay: Duration,
    /// While commits fail, at most one line this often sums up the failures.
    pub failure_summary_every: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            queue_spans: 262_144,
            retention: Retention::default(),
            retention_every: Duration::from_secs(60),
            test_delay: Duration::ZERO,
            failure_summary_every: outage::SUMMARY_EVERY,
        }
    }
}

/// Exports grouped into one transaction at most; beyond this the next group waits its turn.
const MAX_GROUP_SPANS: usize = 65_536;

impl IngestQueue {
    /// The number of spans the queue can hold.
    pub fn capacity_spans(&self) -> usize {
        self.capacity_spans
    }

    /// Spans waiting for the writer now.
    pub fn depth_spans(&self) -> usize {
        self.capacity_spans
            .saturating_sub(self.permits.available_permits())
    }

    /// Queues `spans` for the writer without waiting. The returned receiver resolves once they
    /// are committed (or the write failed).
    pub fn submit(
        &self,
        spans: Vec<Span>,
    ) -> Result<oneshot::Receiver<Result<WriteSummary, String>>, SubmitError> {
        let keep = self.keep_spans;
        self.enqueue(spans.len(), Items::Spans, move || {
            // Encoding and hashing are the part of a write that needs no database: done here,
            // on the receivers' threads and in parallel, they cost the single writer nothing.
            let encoded = EncodedSpans::encode(&spans);
            // Without hooks the spans are done with: freeing their many small allocations here
            // keeps that off the writer thread too, and halves what a queued export holds.
            (if keep { spans } else { Vec::new() }, encoded)
        })
    }

    /// Queues log records (each with a trace id) like spans: the same bound, the same commit
    /// before the answer.
    pub fn submit_logs(
        &self,
        logs: Vec<TracedLog>,
    ) -> Result<oneshot::Receiver<Result<WriteSummary, String>>, SubmitError> {
        self.enqueue(logs.len(), Items::Logs, move || {
            (Vec::new(), EncodedSpans::encode_logs(&logs))
        })
    }

    /// Takes `n` places in the queue (one per span or log record), then queues what `make`
    /// encodes.
    fn enqueue(
        &self,
        n: usize,
        items: Items,
        make: impl FnOnce() -> (Vec<Span>, EncodedSpans),
    ) -> Result<oneshot::Receiver<Result<WriteSummary, String>>, SubmitError> {
        // An export larger than the whole queue still gets in when the queue is empty, so a big
        // but legal request is never refused forever.
        let want = n.clamp(1, self.capacity_spans) as u32;
        let permit = match self.permits.clone().try_acquire_many_owned(want) {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                self.refused_full(n, items);
                return Err(SubmitError::Full);
            }
            Err(tokio::sync::TryAcquireError::Closed) => return Err(SubmitError::Closed),
        };
        let (spans, encoded) = make();
        let (ack, rx) = oneshot::channel();
        let job = Job {
            spans,
            encoded,
            _permit: permit,
            ack: Some(ack),
        };
        match self.tx.try_send(job) {
            Ok(()) => {
                let accepted = match items {
                    Items::Spans => &self.counters.spans_accepted,
                    Items::Logs => &self.counters.logs_accepted,
                };
                accepted.fetch_add(n as u64, Ordering::Relaxed);
                self.counters
                    .queued_spans
                    .fetch_add(n as u64, Ordering::Relaxed);
                Ok(rx)
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.refused_full(n, items);
                Err(SubmitError::Full)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SubmitError::Closed),
        }
    }

    fn refused_full(&self, n: usize, items: Items) {
        self.counters
            .exports_refused_full
            .fetch_add(1, Ordering::Relaxed);
        let refused = match items {
            Items::Spans => &self.counters.spans_refused_full,
            Items::Logs => &self.counters.logs_refused_full,
        };
        refused.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Queues log records and waits until they are durable.
    pub async fn write_logs(&self, logs: Vec<TracedLog>) -> Result<WriteSummary, IngestError> {
        committed(self.submit_logs(logs)?).await
    }

    /// Queues `spans` and waits until they are durable.
    pub async fn write(&self, spans: Vec<Span>) -> Result<WriteSummary, IngestError> {
        committed(self.submit(spans)?).await
    }
}

/// Waits for a queued job's commit.
async fn committed(
    rx: oneshot::Receiver<Result<WriteSummary, String>>,
) -> Result<WriteSummary, IngestError> {
    match rx.await {
        Ok(Ok(summary)) => Ok(summary),
        Ok(Err(e)) => Err(IngestError::Store(e)),
        Err(_) => Err(IngestError::Submit(SubmitError::Closed)),
    }
}

/// What a queued job holds, for the counters.
#[derive(Debug, Clone, Copy)]
enum Items {
    Spans,
    Logs,
}

/// Why an export was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error("store write failed: {0}")]
    Store(String),
}

/// The writer thread. Dropping every `IngestQueue` clone lets it drain and stop; `join` waits
/// for that and closes the store.
pub struct Writer {
    handle: Option<JoinHandle<Result<(), StoreError>>>,
}

impl Writer {
    /// Starts the writer over `store`, returning the queue receivers submit to.
    pub fn start(
        store: Store,
        config: WriterConfig,
        hooks: Vec<CommitHook>,
    ) -> (IngestQueue, Writer) {
        let capacity = config.queue_spans.max(1);
        // The channel bound is a backstop; the span semaphore is the real limit.
        let (tx, rx) = mpsc::channel(capacity.min(16_384));
        let counters = Arc::new(IngestCounters::default());
        counters
            .queue_capacity_spans
            .store(capacity as u64, Ordering::Relaxed);
        let queue = IngestQueue {
            tx,
            permits: Arc::new(Semaphore::new(capacity)),
            capacity_spans: capacity,
            keep_spans: !hooks.is_empty(),
            counters: counters.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("tracecov-writer".into())
            .spawn(move || writer_loop(store, rx, config, hooks, counters))
            .expect("spawning the writer thread");
        (
            queue,
            Writer {
                handle: Some(handle),
            },
        )
    }

    /// Waits for the writer to drain the queue and close the store.
    pub fn join(mut self) -> Result<(), StoreError> {
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(StoreError::Closed),
            None => Ok(()),
        }
    }
}

pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn writer_loop(
    mut store: Store,
    mut rx: mpsc::Receiver<Job>,
    config: WriterConfig,
    mut hooks: Vec<CommitHook>,
    counters: Arc<IngestCounters>,
) -> Result<(), StoreError> {
    let mut last_retention = Instant::now();
    let mut failing = Outage::new(config.failure_summary_every);
    let mut retention_failing = Outage::new(config.failure_summary_every);
    retain(&mut store, config.retention, &mut retention_failing);
    // Only for waiting on the queue with a deadline, so that retention also runs while no
    // export arrives (an idle server still ages its store out).
    let waiter = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(StoreError::Waiter)?;
    loop {
        let due = config
            .retention_every
            .saturating_sub(last_retention.elapsed());
        let first = match waiter.block_on(async { tokio::time::timeout(due, rx.recv()).await }) {
            Ok(Some(job)) => job,
            Ok(None) => break,
            Err(_) => {
                last_retention = Instant::now();
                retain(&mut store, config.retention, &mut retention_failing);
                continue;
            }
        };
        let mut jobs = vec![first];
        let mut n = jobs[0].encoded.len();
        while n < MAX_GROUP_SPANS {
            match rx.try_recv() {
                Ok(job) => {
                    n += job.encoded.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        if !config.test_delay.is_zero() {
            std::thread::sleep(config.test_delay);
        }
        let received = now_ns();
        let batches: Vec<&EncodedSpans> = jobs.iter().map(|j| &j.encoded).collect();
        let result = store.write_encoded(&batches, received);
        match &result {
            Ok(summary) => {
                counters
                    .spans_stored
                    .fetch_add(summary.inserted, Ordering::Relaxed);
                counters
                    .logs_stored
                    .fetch_add(summary.logs_inserted, Ordering::Relaxed);
                counters
                    .spans_duplicate
                    .fetch_add(summary.duplicates, Ordering::Relaxed);
                counters.commits.fetch_add(1, Ordering::Relaxed);
                if !counters.store_writable() {
                    counters.set_store_failing(None);
                }
                tell(failing.succeeded(Instant::now()), None, "");
                if !hooks.is_empty() {
                    let all: Vec<&Span> = jobs.iter().flat_map(|j| j.spans.iter()).collect();
                    for hook in &mut hooks {
                        hook(&all, received);
                    }
                }
            }
            Err(e) => {
                counters.write_failures.fetch_add(1, Ordering::Relaxed);
                counters
                    .exports_refused_store
                    .fetch_add(jobs.len() as u64, Ordering::Relaxed);
                counters
                    .spans_refused_store
                    .fetch_add(n as u64, Ordering::Relaxed);
                let problem = e.write_problem(store.dir());
                if counters.store_writable() {
                    counters.set_store_failing(Some(StoreFailing {
                        problem: problem.clone(),
                        since_ns: received,
                    }));
                }
                tracing::debug!(error = %e, spans = n, "store write failed");
                tell(
                    failing.failed(Instant::now(), jobs.len() as u64),
                    Some(e),
                    &problem,
                );
            }
        }
        // Free the queue's permits before answering: a client that sends its next export as soon
        // as this one is acknowledged must find the room its acknowledged spans held (answering
        // first let a busy machine refuse that next export with "queue is full").
        let acks: Vec<_> = jobs.iter_mut().filter_map(|j| j.ack.take()).collect();
        drop(jobs);
        counters.queued_spans.fetch_sub(n as u64, Ordering::Relaxed);
        for ack in acks {
            let per_job = match &result {
                Ok(_) => Ok(WriteSummary::default()),
                // What the client reads: the store's path is none of its business.
                Err(e) if e.is_disk_full() => Err("no room left on the collector's disk".into()),
                Err(e) => Err(e.to_string()),
            };
            // A client that went away no longer waits for its answer; that is fine.
            let _ = ack.send(per_job);
        }
        if last_retention.elapsed() >= config.retention_every {
            last_retention = Instant::now();
            retain(&mut store, config.retention, &mut retention_failing);
        }
    }
    match failing.at_exit(Instant::now()) {
        Some(Say::Still(t)) => {
            let problem = counters
                .store_failing()
                .map_or_else(|| "store writes fail".to_owned(), |f| f.problem);
            tracing::warn!(
                "stopping while {problem}: {} exports were refused in {} ({} commits); nothing acknowledged is lost",
                t.refused,
                outage::for_people(t.lasted),
                t.failures
            );
        }
        ended => tell(ended, None, ""),
    }
    store.close()
}

/// Logs what the writer's `Outage` says: `error` and `problem` (in plain words) are those of the
/// failed commit, when one failed.
fn tell(say: Option<Say>, error: Option<&StoreError>, problem: &str) {
    let full = error.is_some_and(StoreError::is_disk_full);
    let error = error.map(ToString::to_string).unwrap_or_default();
    match say {
        Some(Say::Began) => {
            let until = if full {
                "space is freed there"
            } else {
                "a commit succeeds again (tried with every export)"
            };
            tracing::error!(
                error,
                "{problem}: exports are refused with 503/UNAVAILABLE (retryable) until {until}; tracecov then carries on by itself, and nothing acknowledged is lost"
            );
        }
        Some(Say::Still(t)) => tracing::warn!(
            error,
            "store writes still failing ({problem}): {} exports refused in {} ({} commits{})",
            t.refused,
            outage::for_people(t.lasted),
            t.failures,
            if t.succeeded > 0 {
                format!(", {} succeeded in between", t.succeeded)
            } else {
                String::new()
            }
        ),
        Some(Say::Ended(t)) => tracing::info!(
            "store writable again after {}: {} exports were refused meanwhile ({} commits), to be retried by their clients",
            outage::for_people(t.lasted),
            t.refused,
            t.failures
        ),
        None => {}
    }
}

/// Runs retention, saying a failure once and summing up while it lasts (with a short
/// `--retention-every` it would otherwise say one a commit).
fn retain(store: &mut Store, retention: Retention, failing: &mut Outage) {
    let now = Instant::now();
    match store.enforce_retention(retention, now_ns()) {
        Ok(removed) => {
            if let Some(Say::Ended(t)) = failing.succeeded(now) {
                tracing::info!(
                    "retention works again after {} ({} tries failed)",
                    outage::for_people(t.lasted),
                    t.failures
                );
            }
            if removed > 0 {
                tracing::info!(traces = removed, "retention removed traces");
            }
        }
        Err(e) => match failing.failed(now, 0) {
            Some(Say::Began) => tracing::warn!(
                error = %e,
                "retention failed; traces past the limits stay until it succeeds"
            ),
            Some(Say::Still(t)) => tracing::warn!(
                error = %e,
                "retention still failing: {} tries failed in {}",
                t.failures,
                outage::for_people(t.lasted)
            ),
            _ => tracing::debug!(error = %e, "retention failed"),
        },
    }
}
