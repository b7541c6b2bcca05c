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

/// What `/metrics` answers a scraper that asks for OpenMetrics (Prometheus does, in its `Accept`
/// header): OpenMetrics text, with exemplars (its counters are `…_total`, its end is `# EOF`).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What `/metrics` answers anyone else (a browser, curl, an older scraper): the classic
/// Prometheus text format, which has no exemplars.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How many of the latest run's most recent traces the exemplars are picked from: their stored
/// results are read (never their spans), so a scrape's cost stays bounded.
pub const EXEMPLAR_TRACES: usize = 256;

/// Whether a scrape's `Accept` header asks for OpenMetrics (and does not refuse it with `q=0`).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|part| {
            let mut params = part.split(';').map(str::trim);
            params
                .next()
                .is_some_and(|t| t.eq_ignore_ascii_case("application/openmetrics-text"))
                && !params.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f64>().ok())
                        .is_some_and(|q| q <= 0.0)
                })
        })
    })
}

/// OpenMetrics text as the classic Prometheus text format: no exemplars, no `# UNIT` or
/// `# EOF` lines, and a counter family named by its `_total` samples, as that format wants.
pub fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)))
        {
            let (tag, rest) = rest;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let tail = if tag == "# TYPE " && tail == "unknown" {
                "untyped"
            } else {
                tail
            };
            let name = if counters.contains(name) {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            out.push_str(&format!("{tag}{name} {tail}\n"));
            continue;
        }
        if line.starts_with('#') {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        out.push_str(without_exemplar(line));
        out.push('\n');
    }
    out
}

/// A sample line without its exemplar (` # {…} value`): the label set is skipped quote-aware,
/// since a label value may hold ` # `.
fn without_exemplar(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut i = 0;
    if let Some(open) = line.find(['{', ' ']).filter(|&at| bytes[at] == b'{') {
        i = open + 1;
        let mut quoted = false;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if quoted => i += 1,
                b'"' => quoted = !quoted,
                b'}' if !quoted => break,
                _ => {}
            }
            i += 1;
        }
    }
    match line[i.min(line.len())..].find(" # ") {
        Some(at) => &line[..i + at],
        None => line,
    }
}

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

    /// The whole exposition: OpenMetrics ending in `# EOF` when `openmetrics`, else the classic
    /// Prometheus text format (`classic`).
    pub async fn scrape(self: &Arc<Self>, openmetrics: bool) -> String {
        let text = self.scrape_openmetrics().await;
        if openmetrics { text } else { classic(&text) }
    }

    async fn scrape_openmetrics(self: &Arc<Self>) -> String {
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
        let mut service_graph = String::new();
        match latest_run(&self.reader, &self.report) {
            Ok(Some((run, analysed, own))) => {
                run::register(&mut registry, &run, &analysed);
                // Exemplars are a convenience: without them the series are still right.
                let hops = crate::query::recent_hops(
                    &self.reader,
                    &run,
                    &self.report,
                    EXEMPLAR_TRACES,
                )
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "metrics: reading the exemplars' hops failed");
                    Vec::new()
                });
                let graph = own.as_ref().unwrap_or(&analysed.graph);
                service_graph = run::service_graph(graph, &hops);
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
        let mut out = service_graph;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_is_served_only_to_a_scraper_that_asks_for_it() {
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,\
                          text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(wants_openmetrics(Some("application/openmetrics-text")));
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0")));
    }

    #[test]
    fn the_classic_format_names_counters_by_their_samples_and_drops_exemplars() {
        let om = "# HELP requests Calls\n# TYPE requests counter\n\
                  requests_total{client=\"a # {b}\",server=\"c\"} 4 # {trace_id=\"t\",span_id=\"s\"} 1\n\
                  # HELP up Up\n# TYPE up gauge\n# UNIT up seconds\nup 1\n\
                  # TYPE odd unknown\nodd 2\n\
                  lat_bucket{le=\"+Inf\"} 3 # {trace_id=\"t\",span_id=\"s\"} 0.5\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP requests_total Calls\n# TYPE requests_total counter\n\
             requests_total{client=\"a # {b}\",server=\"c\"} 4\n\
             # HELP up Up\n# TYPE up gauge\nup 1\n\
             # TYPE odd untyped\nodd 2\n\
             lat_bucket{le=\"+Inf\"} 3\n"
        );
    }
}
