//! `GET /metrics`: what tracecov knows, as Prometheus series (OpenMetrics text, written with the
//! `prometheus-client` crate).
//!
//! Main types: `Exporter` (one per server, held by the web layer), and the pure builders
//! `run::register` (the service graph and coverage of one analysed run) and `health::register`
//! (ingest, store, settling and forwarding).
//!
//! Key design decisions:
//! - The run series describe the **latest run** (`--run latest`), not every stored trace: the
//!   analysis of a run is what reports already do, and analysing the whole store on every scrape
//!   would cost a core. So `traces_service_graph_request_total` counts the latest run's calls: it
//!   grows while that run is being filled and restarts (a counter reset to Prometheus) when a new
//!   run begins; `increase()` over a range, or the instant value, reads it.
//! - A registry is built afresh for every scrape: the values are a snapshot of an analysis, not
//!   something the code increments as it goes. The analysed part (the run and the store's size)
//!   is cached for `CACHE_TTL`, built on the blocking pool, and built once however many scrapes
//!   arrive together; the counters of ingest and forwarding are atomics, read fresh every time.
//! - In a deployment (`serve --shared-db`), each instance counts in the service-graph counters
//!   only its own share of the latest run (the traces it holds), so that Prometheus summing
//!   over the instances gets the run's calls once, as for any horizontally scaled exporter; the
//!   coverage gauges describe the whole run, identical on every instance (dashboards take their
//!   `max`).
//! - This module reads the store and the counters and never writes anything.

pub mod health;
pub mod run;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::ingest::{ForwardCounters, IngestCounters};
use crate::query::ReportContext;
use crate::results::settle::SettleCounters;
use crate::store::Reader;

/// What `/metrics` answers with: OpenMetrics text, which Prometheus negotiates and parses (its
/// counters are `…_total`, its end is `# EOF`).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long an analysis of the latest run serves scrapes: a 1 s scrape interval must not
/// re-analyse the run every second.
pub const CACHE_TTL: Duration = Duration::from_secs(3);

/// Labels as (name, value) pairs: each family names its own.
pub type Labels = Vec<(&'static str, String)>;

/// A float gauge.
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// Builds `/metrics` for one server.
pub struct Exporter {
    reader: Reader,
    report: Arc<ReportContext>,
    ingest: Arc<IngestCounters>,
    forward: Vec<Arc<ForwardCounters>>,
    settle: Duration,
    /// The settle worker's backlog and progress, read fresh at every scrape.
    results: Arc<SettleCounters>,
    ttl: Duration,
    /// The analysed part of the last scrape. A Tokio mutex held across the build, so scrapes that
    /// arrive while one is building wait for it rather than each starting their own.
    cached: tokio::sync::Mutex<Option<Cached>>,
    /// Builds of the analysed part that failed (a store error); the scrape then has only the rest.
    build_failures: AtomicU64,
    /// The request memory budget and each listener's connections (a server's; none in tests
    /// that build an exporter alone).
    limits: Option<Limits>,
    /// The shared database's health (`serve --shared-db`).
    shared_db: Option<Arc<crate::shared::DbHealth>>,
}

/// What bounds a server's intake, for its health series.
pub struct Limits {
    pub admission: crate::ingest::admission::Admission,
    /// Per listener (`otlp_grpc`, `otlp_http`, `ui`), its open connections and their bound.
    pub connections: Vec<(&'static str, Arc<crate::net::ConnectionGauge>)>,
}

struct Cached {
    at: Instant,
    text: Arc<str>,
}

impl Exporter {
    pub fn new(
        reader: Reader,
        report: Arc<ReportContext>,
        ingest: Arc<IngestCounters>,
        forward: Vec<Arc<ForwardCounters>>,
        settle: Duration,
        results: Arc<SettleCounters>,
    ) -> Self {
        Self {
            reader,
            report,
            ingest,
            forward,
            settle,
            results,
            ttl: CACHE_TTL,
            cached: tokio::sync::Mutex::new(None),
            build_failures: AtomicU64::new(0),
            limits: None,
            shared_db: None,
        }
    }

    /// Adds the shared database's health to the health series.
    pub fn with_shared_db(mut self, health: Arc<crate::shared::DbHealth>) -> Self {
        self.shared_db = Some(health);
        self
    }

    /// Adds the server's intake bounds to the health series.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// The whole exposition, ending in `# EOF`.
    pub async fn scrape(self: &Arc<Self>) -> String {
        let analysed = {
            let mut cached = self.cached.lock().await;
            match &*cached {
                Some(c) if c.at.elapsed() < self.ttl => c.text.clone(),
                _ => {
                    let me = self.clone();
                    let text: Arc<str> =
                        match tokio::task::spawn_blocking(move || me.analysed()).await {
                            Ok(text) => text.into(),
                            Err(e) => {
                                tracing::error!(error = %e, "building the metrics failed");
                                self.build_failures.fetch_add(1, Ordering::Relaxed);
                                Arc::from("")
                            }
                        };
                    *cached = Some(Cached {
                        at: Instant::now(),
                        text: text.clone(),
                    });
                    text
                }
            }
        };
        let mut registry = Registry::default();
        health::register_counters(&mut registry, &self.ingest);
        health::register_forwarding(&mut registry, &self.forward);
        if let Some(limits) = &self.limits {
            health::register_limits(&mut registry, limits);
        }
        if let Some(db) = &self.shared_db {
            gauge(
                &mut registry,
                "tracecov_shared_db_up",
                "1 while the shared database (--shared-db) answers, 0 while it is degraded",
                if db.degraded().is_none() { 1.0 } else { 0.0 },
            );
            counter(
                &mut registry,
                "tracecov_shared_db_failures",
                "Attempts to reach the shared database that failed",
                db.failures(),
            );
        }
        gauge(
            &mut registry,
            "tracecov_settle_backlog_traces",
            "Traces waiting for their results: settled ones not computed yet, and ones still receiving spans",
            self.results.backlog.load(Ordering::Relaxed) as f64,
        );
        counter(
            &mut registry,
            "tracecov_trace_results_computed",
            "Traces whose results were computed and stored by the settle worker",
            self.results.computed.load(Ordering::Relaxed),
        );
        counter(
            &mut registry,
            "tracecov_trace_results_spans",
            "Spans of the traces whose results the settle worker computed and stored",
            self.results.spans.load(Ordering::Relaxed),
        );
        gauge(
            &mut registry,
            "tracecov_settle_busy_seconds",
            "Time the settle worker has spent computing and storing results since start (spans over busy time is its throughput)",
            self.results.busy_ns.load(Ordering::Relaxed) as f64 / 1e9,
        );
        counter(
            &mut registry,
            "tracecov_metrics_build_failures",
            "Builds of the analysed metrics that failed (the scrape then lacks the run series)",
            self.build_failures.load(Ordering::Relaxed),
        );
        let mut out = String::with_capacity(analysed.len() + 8192);
        out.push_str(&analysed);
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &registry);
        let _ = encode_eof(&mut out);
        without_controls(out)
    }

    /// The part that reads the store and analyses the latest run (blocking).
    ///
    /// Label values come from span text (node ids, operations, test names); the exposition
    /// format escapes only `\\`, `"` and newlines, so `without_controls` drops the rest.
    fn analysed(&self) -> String {
        let started = Instant::now();
        let mut registry = Registry::default();
        let now = crate::ingest::now_ns();
        match health::StoreSnapshot::read(&self.reader, now, self.settle) {
            Ok(snapshot) => health::register_store(&mut registry, &snapshot, self.settle),
            Err(e) => {
                tracing::warn!(error = %e, "metrics: reading the store failed");
                self.build_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        match latest_run(&self.reader, &self.report) {
            Ok(Some((run, analysed, own))) => {
                run::register(&mut registry, &run, &analysed, own.as_ref())
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "metrics: analysing the latest run failed");
                self.build_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        gauge(
            &mut registry,
            "tracecov_metrics_build_seconds",
            "How long the last build of the analysed metrics took",
            started.elapsed().as_secs_f64(),
        );
        let mut out = String::new();
        let _ = encode_registry(&mut out, &registry);
        out
    }
}

/// The latest run (of the whole deployment, in one), its analysis, and in a deployment this
/// instance's share of its graph.
type Latest = (
    crate::runs::Run,
    std::sync::Arc<crate::query::Analysed>,
    Option<crate::graph::RunGraph>,
);

fn latest_run(
    reader: &Reader,
    ctx: &ReportContext,
) -> Result<Option<Latest>, crate::query::QueryError> {
    let run = match crate::query::resolve_run(reader, "latest") {
        Ok(run) => run,
        Err(crate::query::QueryError::NoSuchRun(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let analysed = crate::query::analyse_run(reader, &run, ctx)?;
    let own = match reader.deployment() {
        Some(_) => {
            use crate::results::settle;
            let ids = std::slice::from_ref(&run.id);
            let before = crate::query::store_before(ctx);
            let whole = settle::rollup_of(reader, ids, &ctx.analysis, before)?;
            let own = settle::own_rollup_of(reader, ids, &ctx.analysis, before)?;
            Some(own.graph_named_by(&whole, &ctx.analysis).0)
        }
        None => None,
    };
    Ok(Some((run, analysed, own)))
}

/// The exposition text without control characters other than newlines: they can only come
/// from span text in label values, and a terminal or a log showing the scrape would act on them.
fn without_controls(text: String) -> String {
    if !text.chars().any(|c| c.is_control() && c != '\n') {
        return text;
    }
    text.chars()
        .filter(|&c| !c.is_control() || c == '\n')
        .collect()
}

/// Registers one unlabelled counter.
pub(crate) fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

/// Registers one unlabelled gauge.
pub(crate) fn gauge(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let g = FloatGauge::default();
    g.set(value);
    registry.register(name, help, g);
}

/// Registers a counter family; samples with equal labels add up.
pub(crate) fn counters(
    registry: &mut Registry,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) {
    let family = Family::<Labels, Counter>::default();
    for (labels, v) in samples {
        family.get_or_create(&labels).inc_by(v);
    }
    registry.register(name, help, family);
}

/// Registers a gauge family; samples with equal labels add up.
pub(crate) fn gauges(
    registry: &mut Registry,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, f64)>,
) {
    let family = Family::<Labels, FloatGauge>::default();
    for (labels, v) in samples {
        family.get_or_create(&labels).inc_by(v);
    }
    registry.register(name, help, family);
}
