//! `tracecov serve`: binds the three listeners, opens the store, starts the writer and the
//! receivers, and shuts all of it down in order.
//!
//! Shutdown order matters for "loses nothing": the receivers stop accepting and finish their
//! in-flight exports (each waiting for its commit), then the last queue handle is dropped, the
//! writer drains what is left and checkpoints the store, and only then does `wait` return.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::ServeConfig;
use crate::ingest::{self, IngestQueue, Writer};
use crate::results::settle::{self, SettleCounters};
use crate::runs::{EmbeddedRuns, RunAssigner, RunRegistry};
use crate::shared::{SharedDb, SharedReads, SharedRuns, publish};
use crate::store::{Reader, Store};
use crate::web;

/// The addresses actually bound (port 0 resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addrs {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub ui: SocketAddr,
    /// Whether the listeners serve TLS (their URLs are then `https://`).
    pub tls: bool,
}

impl Addrs {
    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
    pub fn otlp_http_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.http)
    }
    pub fn otlp_grpc_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.grpc)
    }
    pub fn ui_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.ui)
    }
}

/// The three bound listeners. Binding is separate from serving so tests (and `run`) can bind
/// port 0 and learn the addresses before anything starts.
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
    pub ui: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &ServeConfig) -> anyhow::Result<Self> {
        let bind = |addr: SocketAddr, what: &'static str, flag: &'static str| async move {
            TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "cannot listen for {what} on {addr} (is another collector running? choose \
                     another address with {flag})"
                )
            })
        };
        Ok(Self {
            grpc: bind(config.grpc_addr, "OTLP/gRPC", "--grpc-addr").await?,
            http: bind(config.http_addr, "OTLP/HTTP", "--http-addr").await?,
            ui: bind(config.ui_addr, "the UI and API", "--ui-addr").await?,
        })
    }

    pub fn addrs(&self) -> anyhow::Result<Addrs> {
        Ok(Addrs {
            grpc: self.grpc.local_addr()?,
            http: self.http.local_addr()?,
            ui: self.ui.local_addr()?,
            tls: false,
        })
    }
}

/// What the web layer needs from a running server.
#[derive(Clone)]
pub struct AppState {
    pub reader: Reader,
    pub config: Arc<ServeConfig>,
    /// How reports are built: analysis options, the expected topology, links, redaction.
    pub report: Arc<crate::query::ReportContext>,
    pub queue_counters: Arc<ingest::IngestCounters>,
    /// `GET /metrics`, with its cache of the latest run's analysis.
    pub metrics: Arc<crate::metrics::Exporter>,
    /// What the UI keeps between requests (the runs page's per-run summaries).
    pub ui: Arc<crate::web::ui::UiCache>,
    /// The settle worker's backlog and progress.
    pub results: Arc<SettleCounters>,
    pub addrs: Addrs,
    /// Where runs are opened and closed: the embedded store, or the shared database.
    pub runs: Arc<dyn RunRegistry>,
    /// The deployment's shared database (`--shared-db`), for its health.
    pub shared: Option<Arc<SharedDb>>,
    /// How the deployment's other instances are asked (`--shared-db`): views of a trace they
    /// hold are forwarded to them.
    pub peers: Option<crate::shared::peers::Peers>,
}

/// The report context a server's configuration describes.
pub fn report_context(
    config: &ServeConfig,
    addrs: Addrs,
) -> anyhow::Result<crate::query::ReportContext> {
    let mut ctx = crate::query::ReportContext::default();
    ctx.analysis.test_services = config.test_services.clone();
    ctx.settle = Some(config.settle);
    ctx.cache = Some(Arc::default());
    let base = config.public_url.clone().unwrap_or_else(|| addrs.ui_url());
    ctx.report.links = config
        .trace_links
        .clone()
        .unwrap_or_else(|| crate::links::LinkTemplate::tracecov(&base));
    ctx.report.redactor = config.redactor.clone();
    if let Some(path) = &config.manifest {
        let manifest = crate::coverage::load_manifest(path)?;
        ctx = ctx.with_manifest(manifest)?;
    } else if let Some(manifest) = &config.builtin_manifest {
        ctx = ctx.with_manifest(manifest.clone())?;
    }
    Ok(ctx)
}

/// Says what is open to others when a listener binds beyond loopback without a token.
fn warn_about_exposure(config: &ServeConfig, addrs: Addrs) {
    let open = |addr: SocketAddr| !addr.ip().is_loopback();
    if config.ingest_token.is_none() && (open(addrs.grpc) || open(addrs.http)) {
        tracing::warn!(
            "the OTLP receivers listen beyond this machine without --ingest-token: anyone who \
             can reach them can write spans into your runs"
        );
    }
    if config.token.is_none() && open(addrs.ui) {
        tracing::warn!(
            "the UI and API listen beyond this machine without --token: anyone who can reach \
             them can read every stored span (unredacted through the export API) and open or \
             close runs"
        );
    }
    if config.tls.is_none()
        && (config.token.is_some() || config.ingest_token.is_some())
        && [addrs.grpc, addrs.http, addrs.ui].into_iter().any(open)
    {
        tracing::warn!(
            "tokens travel in clear text beyond this machine without --tls-cert/--tls-key"
        );
    }
}

/// A started server.
pub struct Server {
    pub addrs: Addrs,
    /// The deployment's shared database, when this instance is one of many.
    pub shared: Option<Arc<SharedDb>>,
    pub reader: Reader,
    pub queue: IngestQueue,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    /// One per `--forward` destination, and the shared database's heartbeat; they end at
    /// shutdown and are waited for apart from `tasks`, whose first end stops the server.
    forward_tasks: Vec<JoinHandle<()>>,
    writer: Option<Writer>,
    /// The settle worker and its stop flag; it stops before the writer closes the store.
    settler: Option<(std::thread::JoinHandle<()>, Arc<AtomicBool>)>,
}

/// How often the settle worker looks for traces that settled.
const SETTLE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

impl Server {
    /// Opens the store (and joins the shared database, with `--shared-db`) and starts serving
    /// on `listeners`.
    pub async fn start(config: ServeConfig, listeners: Listeners) -> anyhow::Result<Server> {
        let mut addrs = listeners.addrs()?;
        addrs.tls = config.tls.is_some();
        warn_about_exposure(&config, addrs);
        // Before any HTTP client is built (crate::tls says why).
        crate::tls::install_provider();
        let shared = match &config.shared {
            Some(s) => Some(
                SharedDb::connect(s, config.advertise_otlp.as_deref())
                    .await
                    .context("cannot join the shared database (--shared-db)")?,
            ),
            None => None,
        };
        let registry: Arc<dyn RunRegistry> = match &shared {
            Some(db) => Arc::new(SharedRuns::new(db.clone())),
            None => Arc::new(EmbeddedRuns),
        };
        let data_dir = config.data_dir.clone();
        let durability = config.durability;
        let (test_services, hook_registry) = (config.test_services.clone(), registry.clone());
        let publishing = shared
            .as_ref()
            .map(|db| (db.instance_url().to_owned(), db.target().to_owned()));
        // Off the async workers: SQLite, and a shared registry that blocks on the runtime.
        let (store, assigner) = tokio::task::spawn_blocking(move || {
            let store = crate::store::Store::open(&data_dir, durability)
                .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
            // One of a deployment's instances records what its results change for publication;
            // a store used alone keeps no such record.
            store
                .reader()
                .with_conn(|c| match &publishing {
                    Some((instance, target)) => publish::install(c, instance, target),
                    None => publish::uninstall(c),
                })
                .context("cannot prepare the store's publication to the shared database")?;
            let mut assigner =
                RunAssigner::open(&data_dir, test_services)?.with_registry(hook_registry);
            // Assignments a previous process could not make (its spans are stored).
            if let Err(e) = assigner.retry_pending(&store.reader()) {
                tracing::error!(error = %e, "assigning traces left from before the restart failed");
            }
            anyhow::Ok((store, assigner))
        })
        .await??;
        Self::start_with_store(config, listeners, store, assigner, addrs, registry, shared)
    }

    fn start_with_store(
        config: ServeConfig,
        listeners: Listeners,
        store: Store,
        mut assigner: RunAssigner,
        addrs: Addrs,
        registry: Arc<dyn RunRegistry>,
        shared: Option<Arc<SharedDb>>,
    ) -> anyhow::Result<Server> {
        let reader = store.reader();
        let hook_reader = reader.clone();
        let hook: ingest::CommitHook =
            Box::new(move |spans, now| assigner.after_commit(spans, now, &hook_reader));
        let (queue, writer) = Writer::start(store, config.writer.clone(), vec![hook]);
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        let (forwarder, mut forward_tasks) = ingest::Forwarder::start(&config.forward, &shutdown);
        // The instances of a deployment share the API token: it is what one shows another.
        let trust = crate::tls::Trust::new(config.tls_ca.as_deref())?;
        let peers =
            crate::shared::peers::Peers::new(config.token.as_ref().map(|t| t.0.clone()), &trust)?;
        if let (Some(db), Some(s)) = (&shared, &config.shared) {
            // Waited for like the forwarding tasks: they end at shutdown, never on their own.
            forward_tasks.push(db.spawn_heartbeat(s.heartbeat_every, shutdown.clone()));
            forward_tasks.push(publish::spawn_publisher(
                db.clone(),
                reader.clone(),
                queue.clone(),
                shutdown.clone(),
            ));
            // Every question read through this reader adds the other instances' shares.
            reader.set_deployment(Arc::new(SharedReads::new(db.clone(), peers.clone())));
        }

        // One memory budget for both receivers' exports, and a bound on each listener's
        // connections.
        let admission = ingest::admission::Admission::new(config.max_request_memory);
        let gauges: [Arc<crate::net::ConnectionGauge>; 3] = Default::default();
        let limited = |listener, gauge: &Arc<crate::net::ConnectionGauge>| {
            crate::net::Limited::new(listener, config.max_connections, gauge.clone())
        };
        let tls = match &config.tls {
            Some(files) => Some(crate::net::Tls::load(&files.cert, &files.key)?),
            None => None,
        };
        // gRPC needs HTTP/2, which TLS clients ask for by ALPN (grpc-go refuses a server that
        // does not answer "h2").
        let grpc_listener = crate::net::Incoming::new(
            limited(listeners.grpc, &gauges[0]).with_nodelay(),
            tls.as_ref(),
            &[b"h2"],
        )?;
        let web = [&b"h2"[..], &b"http/1.1"[..]];
        let http_listener =
            crate::net::Incoming::new(limited(listeners.http, &gauges[1]), tls.as_ref(), &web)?;
        let ui_listener =
            crate::net::Incoming::new(limited(listeners.ui, &gauges[2]), tls.as_ref(), &web)?;
        let ingest_token = config
            .ingest_token
            .as_ref()
            .map(|t| web::auth::Token::new(&t.0, tls.is_some()));
        let api_token = config
            .token
            .as_ref()
            .map(|t| web::auth::Token::new(&t.0, tls.is_some()));

        let token = shutdown.clone();
        let q = queue.clone();
        let f = forwarder.clone();
        let a = admission.clone();
        let max = config.max_body_bytes;
        let t = ingest_token.clone();
        tasks.push(tokio::spawn(async move {
            ingest::grpc::serve(grpc_listener, q, f, a, t, max, token.cancelled_owned())
                .await
                .context("OTLP/gRPC receiver failed")
        }));

        let token = shutdown.clone();
        let mut router = ingest::http::router(
            queue.clone(),
            forwarder.clone(),
            admission.clone(),
            config.max_body_bytes,
        );
        if let Some(t) = ingest_token {
            router = router.layer(axum::middleware::from_fn_with_state(
                t,
                web::auth::ingest_guard,
            ));
        }
        let router = router
            .layer(axum::middleware::from_fn_with_state(
                config.cors_origins.clone(),
                web::cors::guard,
            ))
            .layer(axum::middleware::from_fn_with_state(
                web::exposure::Exposure::new(
                    addrs.http,
                    config.public_url.as_deref(),
                    &config.allow_hosts,
                    false,
                ),
                web::exposure::guard,
            ))
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                config.request_timeout,
            ));
        tasks.push(tokio::spawn(async move {
            axum::serve(http_listener, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .context("OTLP/HTTP receiver failed")
        }));

        let token = shutdown.clone();
        let report = Arc::new(report_context(&config, addrs)?);
        let settle_stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(SettleCounters::default());
        let settler = {
            let (reader, opts) = (reader.clone(), report.analysis.clone());
            let (quiet, counters, stop) = (config.settle, results.clone(), settle_stop.clone());
            // History's digests of finished runs, made beside the settle worker and stopped
            // with it: the settle thread joins it once it has stopped itself.
            let keeper = {
                let (reader, ctx, stop) = (reader.clone(), report.clone(), stop.clone());
                std::thread::Builder::new()
                    .name("tracecov-history".to_owned())
                    .spawn(move || crate::history::keep_digests(reader, ctx, quiet, stop))
                    .context("starting the history keeper")?
            };
            std::thread::Builder::new()
                .name("tracecov-settle".to_owned())
                .spawn(move || {
                    settle::run_worker(reader, opts, quiet, SETTLE_EVERY, counters, stop);
                    let _ = keeper.join();
                })
                .context("starting the settle worker")?
        };
        let mut metrics = crate::metrics::Exporter::new(
            reader.clone(),
            report.clone(),
            queue.counters.clone(),
            forwarder.counters(),
            config.settle,
            results.clone(),
        )
        .with_limits(crate::metrics::Limits {
            admission,
            connections: vec![
                ("otlp_grpc", gauges[0].clone()),
                ("otlp_http", gauges[1].clone()),
                ("ui", gauges[2].clone()),
            ],
        });
        if let Some(db) = &shared {
            metrics = metrics.with_shared_db(db.health().clone());
        }
        let metrics = Arc::new(metrics);
        let state = AppState {
            reader: reader.clone(),
            config: Arc::new(config.clone()),
            report,
            queue_counters: queue.counters.clone(),
            metrics,
            ui: Arc::default(),
            results,
            addrs,
            runs: registry,
            shared: shared.clone(),
            peers: shared.is_some().then_some(peers),
        };
        let request_timeout = state.config.request_timeout;
        let exposure = web::exposure::Exposure::new(
            addrs.ui,
            state.config.public_url.as_deref(),
            &state.config.allow_hosts,
            true,
        );
        let mut router = web::router(state);
        if let Some(t) = api_token {
            router = router.layer(axum::middleware::from_fn_with_state(
                t,
                web::auth::api_guard,
            ));
        }
        let router = router
            .layer(axum::middleware::from_fn_with_state(
                exposure,
                web::exposure::guard,
            ))
            // The body only: an analysis may take its time, a client's upload may not.
            .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
                request_timeout,
            ));
        tasks.push(tokio::spawn(async move {
            axum::serve(ui_listener, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .context("UI/API server failed")
        }));

        Ok(Server {
            addrs,
            shared,
            reader,
            queue,
            shutdown,
            tasks,
            forward_tasks,
            writer: Some(writer),
            settler: Some((settler, settle_stop)),
        })
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, finishes in-flight exports, drains the queue and closes the store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the server stops (after the shutdown token is cancelled, or a listener
    /// fails), then drains and closes the store.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut first_err = None;
        // Any task ending (normally only after shutdown) stops the others too.
        let tasks = std::mem::take(&mut self.tasks);
        let (first, _, rest) = futures::future::select_all(tasks).await;
        self.shutdown.cancel();
        let results = std::iter::once(first).chain(futures::future::join_all(rest).await);
        for r in results {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(e) => {
                    first_err.get_or_insert(anyhow::anyhow!("server task failed: {e}"));
                }
            }
        }
        // Forwarding stops with the receivers: what is still queued for a destination is dropped
        // (and counted) rather than waited for.
        for task in std::mem::take(&mut self.forward_tasks) {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a forwarding task failed");
            }
        }
        if let Some((settler, stop)) = self.settler.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = tokio::task::spawn_blocking(move || settler.join()).await;
        }
        // The receivers are done: dropping the last queue handle lets the writer drain and stop.
        drop(self.queue);
        if let Some(writer) = self.writer.take() {
            tokio::task::spawn_blocking(move || writer.join())
                .await?
                .context("closing the store")?;
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
