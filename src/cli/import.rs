//! `tracecov import FILE…`: recorded trace files into a run, in the embedded store (`--data`) or
//! in a running `tracecov serve` (`--server`, over OTLP/HTTP like any SDK), with the OTLP/JSON
//! log records they hold (the Collector's file exporter writes logs lines beside trace lines).
//!
//! Reading and converting the files is `crate::import`'s job; this module decides which run the
//! spans join and delivers them.
//!
//! Key design decisions:
//! - **Runs by the resource attribute, in both modes.** Every span's resource gets
//!   `tracecov.run.id` set to the run's id (replacing one the file carried) before it is written,
//!   so the normal assignment path (`runs::RunAssigner`, rule 1) files its trace under the run —
//!   exactly what happens to a live `tracecov run`'s spans, and the only way that works over
//!   OTLP. The `--data` mode therefore writes through `ingest::Writer` with the assigner as its
//!   commit hook, as `serve` does. Traces keep their own ids; a re-import stores no span twice
//!   (the store ignores exact re-deliveries) and moves its traces to the run it names.
//! - **Which run.** Without `--run`, a file's spans join the newest run named after the file
//!   (its name without the directory), created on the first span when there is none, so
//!   importing a file twice gives one run. `--run` names one run for all files: an existing run's
//!   id or name, or `latest`, else a new run of that name. A file that yields no span makes no run.
//! - **Log records follow their trace, not a run.** A record carries no resource to stamp and is
//!   kept with its trace (the store files it by trace id), so it needs no run of its own: it
//!   joins whichever run its trace's spans name, whether they come before it, after it, or from
//!   another file. `--data` queues records through the writer like spans (`submit_logs`, the
//!   same commit and durability); `--server` posts them to `/v1/logs`. Records without a trace
//!   id are dropped and counted, as the receivers drop them.
//! - **Runs this command creates are closed at once.** A trace with `tracecov.run.id` joins its
//!   run open or closed, and a closed run cannot catch unrelated traffic (an open explicit run on
//!   a server would take every trace that arrives without a run id while the import runs).
//! - **Bounded memory.** The importer hands over batches of at most `import::BATCH_SPANS`; at
//!   most [`IN_FLIGHT`] batches wait for the writer, and the stamped resource copies are cached by
//!   the original's address with a cap of [`STAMP_CACHE`] entries.
//! - **The import never deletes.** `--data` starts the writer with retention off: the store's
//!   retention is `serve`'s to enforce, with the limits it was given.
//!
//! Exit status: 2 when a file could not be read or is not valid in its format (after keeping the
//! spans read before the problem), or when the store or server failed; 0 otherwise, also when
//! some records were skipped (the summary says how many, and where the first was).

pub(crate) mod to_otlp;

use std::collections::{HashMap, VecDeque};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use prost::Message as _;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::source::{api_error, urlencode};
use crate::config;
use crate::graph::AnalysisOptions;
use crate::import::{self, Format, Progress};
use crate::ingest::{CommitHook, IngestQueue, Writer, WriterConfig, now_ns};
use crate::model::{Attributes, KeyValue, Resource, Span, TracedLog};
use crate::runs::{self, RUN_ID_ATTR, RunAssigner, RunKind};
use crate::store::{Durability, Reader, Retention, Store, WriteSummary};

/// Batches handed to the writer before waiting for the oldest to commit.
const IN_FLIGHT: usize = 8;

/// Stamped resource copies kept; a file has one resource per service or process, so this is
/// only reached by pathological input, and clearing the cache then costs a few copies.
const STAMP_CACHE: usize = 4096;

/// How long `--server` mode retries a server that answers "busy, retry later".
const BUSY_RETRY_FOR: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Args)]
#[command(after_long_help = "\
Examples:
  tracecov import traces.json                      # a run named traces.json in ./tracecov-data
  tracecov import --run nightly a.json b.jsonl.gz  # both files into the run `nightly`
  tracecov import --format zipkin dump.txt         # skip format detection
  tracecov import --server http://127.0.0.1:4320 trace.json
  tracecov import incident.jsonl                   # trace and log lines from a Collector file
  tracecov report --run traces.json                # then read the report of the run")]
pub struct ImportArgs {
    /// Trace files: OTLP/JSON (one ExportTraceServiceRequest, or JSON lines as the OpenTelemetry
    /// Collector's file exporter writes them), Jaeger JSON (the /api/traces answer or the UI's
    /// download), or Zipkin v2 JSON (an array of spans, or of traces). Any of them may be
    /// gzip-compressed. OTLP/JSON logs (ExportLogsServiceRequest lines, in their own file or
    /// among the trace lines) are imported too, kept with their traces as evidence; records
    /// without a trace id are skipped and counted.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The files' format, instead of detecting it from their content: otlp-json, jaeger or zipkin.
    #[arg(long, value_name = "FORMAT", value_parser = parse_format)]
    pub format: Option<Format>,
    /// Import every file into this run: an existing run's id or name, `latest`, or the name of a
    /// new run. Without it, each file joins the run named after the file (created when needed).
    #[arg(long, value_name = "NAME")]
    pub run: Option<String>,
    /// The embedded store's directory (created when missing).
    #[arg(long, env = "TRACECOV_DATA", default_value = config::DEFAULT_DATA_DIR, conflicts_with = "server")]
    pub data: PathBuf,
    /// A running `tracecov serve` (its UI/API address, e.g. http://127.0.0.1:4320): the spans
    /// are sent to its OTLP/HTTP receiver instead of written to a store on disk.
    #[arg(long, env = "TRACECOV_SERVER")]
    pub server: Option<String>,
    /// With --server: the bearer token its API requires (its --token).
    #[arg(
        long,
        env = "TRACECOV_TOKEN",
        hide_env_values = true,
        requires = "server"
    )]
    pub token: Option<String>,
    /// With --server: the bearer token its OTLP receivers require (its --ingest-token).
    #[arg(
        long,
        env = "TRACECOV_INGEST_TOKEN",
        hide_env_values = true,
        requires = "server"
    )]
    pub ingest_token: Option<String>,
    /// With --server: also trust the certificate authorities in this PEM file, besides the
    /// system's, when it is an https:// URL (the CA that signed the server's --tls-cert).
    #[arg(
        long = "tls-ca",
        value_name = "FILE",
        env = "TRACECOV_TLS_CA",
        requires = "server"
    )]
    pub tls_ca: Option<PathBuf>,
    /// A test-driver service whose root spans are test cases; repeatable. Only used to assign
    /// traces here: give it to `tracecov report` too.
    #[arg(long = "test-service", value_name = "NAME", value_delimiter = ',')]
    pub test_services: Vec<String>,
}

fn parse_format(text: &str) -> Result<Format, String> {
    text.parse()
        .map_err(|e: import::UnknownFormat| e.to_string())
}

pub async fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let handle = Handle::current();
    // Reading files and waiting for the writer block: keep them off the async workers.
    tokio::task::spawn_blocking(move || import_files(&args, &handle)).await?
}

/// How a run name is looked up before a new run is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// `--run`: an id, a name, or `latest`.
    IdNameOrLatest,
    /// A file's name: that exact name only (a file called `latest` is not the latest run).
    ExactName,
}

/// A run spans are being imported into.
#[derive(Debug, Clone)]
struct OpenedRun {
    id: String,
    name: String,
}

/// Where spans go: the embedded store or a server.
trait Target {
    /// The run `name` designates, or a new (closed, see the module docs) run of that name.
    fn open_run(&mut self, name: &str, lookup: Lookup) -> anyhow::Result<OpenedRun>;
    /// Delivers spans; they are durable at the latest when `flush` returns.
    fn send(&mut self, spans: Vec<Span>) -> anyhow::Result<()>;
    /// Delivers log records, durable like spans at the latest when `flush` returns.
    fn send_logs(&mut self, logs: Vec<TracedLog>) -> anyhow::Result<()>;
    fn flush(&mut self) -> anyhow::Result<()>;
    /// Waits for everything to be written and releases the store.
    fn finish(self: Box<Self>) -> anyhow::Result<()>;
}

fn import_files(args: &ImportArgs, handle: &Handle) -> anyhow::Result<ExitCode> {
    let mut target: Box<dyn Target> = match &args.server {
        Some(url) => Box::new(ServerTarget::connect(
            url,
            args.token.as_deref(),
            args.ingest_token.as_deref(),
            args.tls_ca.as_deref(),
            handle.clone(),
        )?),
        None => Box::new(DataTarget::open(&args.data, args.test_services.clone())?),
    };
    // With `--run`, the one run every file joins, once the first span has opened it.
    let mut shared: Option<RunSlot> = None;
    let mut runs_used: Vec<OpenedRun> = Vec::new();
    let mut failed_files = 0usize;
    for path in &args.files {
        let (name, lookup) = match &args.run {
            Some(run) => (run.clone(), Lookup::IdNameOrLatest),
            None => (run_name_for(path), Lookup::ExactName),
        };
        let mut slot = if args.run.is_some() {
            shared.take()
        } else {
            None
        };
        let mut progress = Progress::new(path.display().to_string());
        let result = {
            // Both sinks deliver to the target; each borrows it only while it runs.
            let target = std::cell::RefCell::new(&mut *target);
            let slot = &mut slot;
            let progress = &mut progress;
            let mut logs = |batch: Vec<TracedLog>| -> anyhow::Result<()> {
                target.borrow_mut().send_logs(batch)
            };
            let mut sink = |mut batch: Vec<Span>| -> anyhow::Result<()> {
                let mut target = target.borrow_mut();
                let mut run = match slot.take() {
                    Some(run) => run,
                    None => RunSlot::new(target.open_run(&name, lookup)?),
                };
                for span in &mut batch {
                    run.stamper.stamp(span);
                }
                *slot = Some(run);
                let n = batch.len();
                target.send(batch)?;
                progress.add(n);
                Ok(())
            };
            import::import_file_with_logs(path, args.format, &mut sink, &mut logs)
        };
        // What was delivered must be durable before the summary says it was imported.
        let flushed = target.flush();
        let summary = match &result {
            Ok(summary) => summary,
            Err(e) => &*e.summary,
        };
        progress.finish(summary);
        if let Err(e) = &result {
            failed_files += 1;
            eprintln!("tracecov: {e}");
            if e.summary.spans > 0 || e.summary.log_records > 0 {
                eprintln!(
                    "tracecov: the {} read before the problem were imported",
                    e.summary.counts()
                );
            }
        }
        flushed.with_context(|| format!("importing {}", path.display()))?;
        let without_trace = match summary.logs_without_trace {
            0 => String::new(),
            n => format!("; {n} log records without a trace id skipped"),
        };
        match &slot {
            Some(run) => {
                println!(
                    "{}: {} into run {} ({}){without_trace}",
                    path.display(),
                    summary.counts(),
                    run.run.name,
                    run.run.id
                );
                if !runs_used.iter().any(|r| r.id == run.run.id) {
                    runs_used.push(run.run.clone());
                }
            }
            // Records of traces stored before (or later) still join those traces.
            None if summary.log_records > 0 => println!(
                "{}: no spans, {} log records (kept with their traces), no run{without_trace}",
                path.display(),
                summary.log_records
            ),
            None => println!("{}: no spans, no run{without_trace}", path.display()),
        }
        if args.run.is_some() {
            shared = slot;
        }
    }
    target.finish()?;
    if let Some(run) = runs_used.last() {
        let source = match &args.server {
            Some(url) => format!(" --server {url}"),
            None if args.data.as_os_str() == config::DEFAULT_DATA_DIR => String::new(),
            None => format!(" --data {}", args.data.display()),
        };
        eprintln!(
            "tracecov: see the report with `tracecov report --run {}{source}`",
            shell_word(&run.name)
        );
    }
    Ok(if failed_files > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// The run name a file stands for: its name without the directory.
fn run_name_for(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Quotes a run name for a shell command line when it needs it.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@+".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A run and the stamper that puts its id on resources.
struct RunSlot {
    run: OpenedRun,
    stamper: Stamper,
}

impl RunSlot {
    fn new(run: OpenedRun) -> Self {
        Self {
            stamper: Stamper::new(&run.id),
            run,
        }
    }
}

/// Replaces each span's resource by a copy carrying `tracecov.run.id`.
struct Stamper {
    run_id: String,
    /// Original resource's address → (the original, its stamped copy). The original is held so
    /// its address cannot be reused by another resource while the entry exists.
    cache: HashMap<*const Resource, (Arc<Resource>, Arc<Resource>)>,
}

impl Stamper {
    fn new(run_id: &str) -> Self {
        Self {
            run_id: run_id.to_owned(),
            cache: HashMap::new(),
        }
    }

    fn stamp(&mut self, span: &mut Span) {
        let key = Arc::as_ptr(&span.resource);
        if let Some((_, stamped)) = self.cache.get(&key) {
            span.resource = stamped.clone();
            return;
        }
        if self.cache.len() >= STAMP_CACHE {
            self.cache.clear();
        }
        // A run id the file carried (an export of another store's run) gives way to ours.
        let mut attrs: Vec<KeyValue> = span
            .resource
            .attributes
            .iter()
            .filter(|kv| kv.key != RUN_ID_ATTR)
            .cloned()
            .collect();
        attrs.push(KeyValue::new(RUN_ID_ATTR, self.run_id.as_str()));
        let stamped = Arc::new(Resource::new(Attributes(attrs)));
        let original = std::mem::replace(&mut span.resource, stamped.clone());
        self.cache.insert(key, (original, stamped));
    }
}

type Ack = oneshot::Receiver<Result<WriteSummary, String>>;

/// Computes the results of every trace that lacks them, with a progress bar on a terminal and
/// one line otherwise.
pub(crate) fn compute_results(reader: &Reader, opts: &AnalysisOptions) -> anyhow::Result<()> {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} computing trace results {human_pos}/{human_len} [{elapsed}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
        bar.set_style(style);
        bar
    });
    let done = crate::results::settle::complete_all(reader, opts, |done, total| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    })
    .context("computing trace results")?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if done > 0 {
        eprintln!("tracecov: computed the results of {done} traces");
    }
    Ok(())
}

/// `--data`: the embedded store, written through the ingest writer with run assignment as its
/// commit hook, the same path `serve` takes.
struct DataTarget {
    /// How results are computed at the end of the import (the test-driver services given).
    analysis: AnalysisOptions,
    reader: Reader,
    queue: Option<IngestQueue>,
    writer: Option<Writer>,
    in_flight: VecDeque<Ack>,
    /// The first run assignment failure, reported by the hook, which cannot return one.
    assign_error: Arc<Mutex<Option<String>>>,
}

impl DataTarget {
    fn open(dir: &Path, test_services: Vec<String>) -> anyhow::Result<Self> {
        let store = Store::open(dir, Durability::Process)
            .with_context(|| format!("cannot open the store in {}", dir.display()))?;
        let analysis = AnalysisOptions {
            test_services: test_services.clone(),
            ..AnalysisOptions::default()
        };
        let mut assigner = RunAssigner::open(dir, test_services)?;
        let assign_error = Arc::new(Mutex::new(None));
        let seen = assign_error.clone();
        let hook: CommitHook = Box::new(move |spans, now| {
            if let Err(e) = assigner.assign(spans, now)
                && let Ok(mut first) = seen.lock()
            {
                first.get_or_insert_with(|| e.to_string());
            }
        });
        let config = WriterConfig {
            retention: Retention {
                // In nanoseconds, as retention computes its cutoff: nothing is old enough.
                max_age: Duration::from_nanos(u64::MAX),
                max_bytes: u64::MAX,
                max_history_age: Duration::from_nanos(u64::MAX),
            },
            retention_every: Duration::MAX,
            ..WriterConfig::default()
        };
        let (queue, writer) = Writer::start(store, config, vec![hook]);
        Ok(Self {
            analysis,
            reader: Reader::new(dir),
            queue: Some(queue),
            writer: Some(writer),
            in_flight: VecDeque::new(),
            assign_error,
        })
    }

    fn wait_oldest(&mut self) -> anyhow::Result<()> {
        if let Some(ack) = self.in_flight.pop_front() {
            match ack.blocking_recv() {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => bail!("the store refused a write: {e}"),
                Err(_) => bail!("the store's writer stopped"),
            }
        }
        if let Some(e) = self.assign_error.lock().ok().and_then(|e| e.clone()) {
            bail!("cannot assign traces to the run: {e}");
        }
        Ok(())
    }
}

impl Target for DataTarget {
    fn open_run(&mut self, name: &str, lookup: Lookup) -> anyhow::Result<OpenedRun> {
        let run = self.reader.with_conn(|conn| {
            let found = match lookup {
                Lookup::IdNameOrLatest => runs::find_run(conn, name)?,
                Lookup::ExactName => runs::find_run_named(conn, name)?,
            };
            match found {
                Some(run) => Ok(run),
                None => {
                    let now = now_ns();
                    let run = runs::create_run(
                        conn,
                        name,
                        RunKind::Import,
                        &runs::SuiteNames::default(),
                        now,
                    )?;
                    runs::close_run(conn, &run.id, now)?;
                    Ok(run)
                }
            }
        })?;
        Ok(OpenedRun {
            id: run.id,
            name: run.name,
        })
    }

    fn send(&mut self, spans: Vec<Span>) -> anyhow::Result<()> {
        while self.in_flight.len() >= IN_FLIGHT {
            self.wait_oldest()?;
        }
        let queue = self.queue.as_ref().context("the store is closed")?;
        // The queue is this command's alone and holds far more than `IN_FLIGHT` batches, so it
        // cannot be full here.
        let ack = queue
            .submit(spans)
            .map_err(|e| anyhow::anyhow!("cannot queue spans for the store: {e}"))?;
        self.in_flight.push_back(ack);
        Ok(())
    }

    fn send_logs(&mut self, logs: Vec<TracedLog>) -> anyhow::Result<()> {
        while self.in_flight.len() >= IN_FLIGHT {
            self.wait_oldest()?;
        }
        let queue = self.queue.as_ref().context("the store is closed")?;
        // The same writer, the same commit: a record is as durable as the spans beside it.
        let ack = queue
            .submit_logs(logs)
            .map_err(|e| anyhow::anyhow!("cannot queue log records for the store: {e}"))?;
        self.in_flight.push_back(ack);
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        self.wait_oldest()
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.flush()?;
        // Results are computed before the import ends, so the first report merges them instead
        // of analysing spans (and a store written before results existed is brought up to date).
        compute_results(&self.reader, &self.analysis)?;
        // Dropping the last queue handle lets the writer drain and close the store.
        self.queue = None;
        if let Some(writer) = self.writer.take() {
            writer.join().context("closing the store")?;
        }
        Ok(())
    }
}

/// `--server`: a running `tracecov serve`, its JSON API for runs and its OTLP/HTTP receiver for
/// spans and log records. Runs on a blocking thread, so each request blocks on the runtime's
/// handle.
struct ServerTarget {
    base: String,
    traces_url: String,
    logs_url: String,
    http: reqwest::Client,
    /// `Authorization` for OTLP exports (`--ingest-token`); the client's default carries the
    /// API's.
    ingest_auth: Option<String>,
    handle: Handle,
}

impl ServerTarget {
    fn connect(
        url: &str,
        token: Option<&str>,
        ingest_token: Option<&str>,
        tls_ca: Option<&std::path::Path>,
        handle: Handle,
    ) -> anyhow::Result<Self> {
        let mut target = Self {
            base: url.trim_end_matches('/').to_owned(),
            traces_url: String::new(),
            logs_url: String::new(),
            http: super::client::api_client(token, tls_ca)?,
            ingest_auth: ingest_token.map(|t| format!("Bearer {t}")),
            handle,
        };
        let (status, health) = target.call(target.http.get(target.api("/api/health")))?;
        if !status.is_success() {
            bail!(
                "the tracecov server at {} answered {status} to /api/health",
                target.base
            );
        }
        let otlp = health["otlp_http"]
            .as_str()
            .context("the server's /api/health names no otlp_http receiver")?;
        target.traces_url = format!("{}/v1/traces", otlp.trim_end_matches('/'));
        target.logs_url = format!("{}/v1/logs", otlp.trim_end_matches('/'));
        Ok(target)
    }

    fn api(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a JSON API request; the body is parsed when it is JSON.
    fn call(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
        self.handle.block_on(async {
            let resp = req
                .send()
                .await
                .with_context(|| format!("cannot reach the tracecov server at {}", self.base))?;
            let status = resp.status();
            let body = resp.text().await?;
            let json = serde_json::from_str(&body)
                .unwrap_or_else(|_| serde_json::Value::String(body.clone()));
            Ok((status, json))
        })
    }

    fn expect_success(
        &self,
        what: &str,
        (status, body): (reqwest::StatusCode, serde_json::Value),
    ) -> anyhow::Result<serde_json::Value> {
        if !status.is_success() {
            let message = api_error(&body.to_string()).unwrap_or_else(|| body.to_string());
            bail!("{what}: the server answered {status}: {message}");
        }
        Ok(body)
    }

    fn find_run(&self, name: &str, lookup: Lookup) -> anyhow::Result<Option<serde_json::Value>> {
        match lookup {
            Lookup::IdNameOrLatest => {
                let answer = self.call(
                    self.http
                        .get(self.api(&format!("/api/runs/{}", urlencode(name)))),
                )?;
                if answer.0 == reqwest::StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                self.expect_success("looking up the run", answer).map(Some)
            }
            Lookup::ExactName => {
                let answer = self.call(self.http.get(self.api("/api/runs")))?;
                let list = self.expect_success("listing runs", answer)?;
                // Newest first, as the API lists them.
                Ok(list
                    .as_array()
                    .and_then(|runs| runs.iter().find(|r| r["name"] == name))
                    .cloned())
            }
        }
    }

    /// Posts one OTLP request of spans, splitting it when the server finds it too large and
    /// retrying while the server says it is busy.
    fn post_spans(&self, spans: &[Span]) -> anyhow::Result<()> {
        self.post(spans, &Signal::SPANS)
    }

    /// Posts log records as `post_spans` posts spans.
    fn post_logs(&self, logs: &[TracedLog]) -> anyhow::Result<()> {
        self.post(logs, &Signal::LOGS)
    }

    fn post<T>(&self, items: &[T], signal: &Signal<T>) -> anyhow::Result<()> {
        let body = (signal.encode)(items);
        let url = match signal.kind {
            SignalKind::Spans => &self.traces_url,
            SignalKind::Logs => &self.logs_url,
        };
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut req = self
                .http
                .post(url)
                .header("content-type", "application/x-protobuf")
                .body(body.clone());
            if let Some(auth) = &self.ingest_auth {
                req = req.header(reqwest::header::AUTHORIZATION, auth);
            }
            let (status, answer) = self.handle.block_on(async {
                let resp = req
                    .send()
                    .await
                    .with_context(|| format!("cannot reach the OTLP receiver at {url}"))?;
                let status = resp.status();
                anyhow::Ok((status, resp.bytes().await?))
            })?;
            if status.is_success() {
                if let Some((rejected, message)) = (signal.rejected)(answer)
                    && rejected > 0
                {
                    bail!("the server rejected {rejected} {}: {message}", signal.noun);
                }
                return Ok(());
            }
            if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE && items.len() > 1 {
                let (a, b) = items.split_at(items.len() / 2);
                self.post(a, signal)?;
                return self.post(b, signal);
            }
            let busy = matches!(
                status,
                reqwest::StatusCode::SERVICE_UNAVAILABLE | reqwest::StatusCode::TOO_MANY_REQUESTS
            );
            if busy && started.elapsed() < BUSY_RETRY_FOR {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            let text = String::from_utf8_lossy(&answer);
            bail!(
                "the OTLP receiver at {url} answered {status}: {}",
                text.trim()
            );
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum SignalKind {
    Spans,
    Logs,
}

/// What differs between posting spans and posting log records: the receiver's path, the
/// request and the response's partial success.
struct Signal<T> {
    kind: SignalKind,
    noun: &'static str,
    encode: fn(&[T]) -> Vec<u8>,
    /// The rejected count and message of a success answer's partial success, when it has one.
    rejected: fn(bytes::Bytes) -> Option<(i64, String)>,
}

impl Signal<Span> {
    const SPANS: Self = Self {
        kind: SignalKind::Spans,
        noun: "spans",
        encode: |spans| to_otlp::request(spans).encode_to_vec(),
        rejected: |answer| {
            use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
            let p = ExportTraceServiceResponse::decode(answer)
                .unwrap_or_default()
                .partial_success?;
            Some((p.rejected_spans, p.error_message))
        },
    };
}

impl Signal<TracedLog> {
    const LOGS: Self = Self {
        kind: SignalKind::Logs,
        noun: "log records",
        encode: |logs| to_otlp::logs_request(logs).encode_to_vec(),
        rejected: |answer| {
            use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
            let p = ExportLogsServiceResponse::decode(answer)
                .unwrap_or_default()
                .partial_success?;
            Some((p.rejected_log_records, p.error_message))
        },
    };
}

impl Target for ServerTarget {
    fn open_run(&mut self, name: &str, lookup: Lookup) -> anyhow::Result<OpenedRun> {
        let run = match self.find_run(name, lookup)? {
            Some(run) => run,
            None => {
                let answer = self.call(
                    self.http
                        .post(self.api("/api/runs"))
                        .json(&serde_json::json!({ "name": name })),
                )?;
                let run = self.expect_success("opening a run", answer)?;
                let id = run["id"].as_str().context("the server gave no run id")?;
                let closed = self.call(
                    self.http
                        .post(self.api(&format!("/api/runs/{}/close", urlencode(id))))
                        .header("x-tracecov", "1"),
                )?;
                self.expect_success("closing the new run", closed)?;
                run
            }
        };
        let id = run["id"]
            .as_str()
            .context("the server's run has no id")?
            .to_owned();
        let name = run["name"].as_str().unwrap_or(&id).to_owned();
        Ok(OpenedRun { id, name })
    }

    fn send(&mut self, spans: Vec<Span>) -> anyhow::Result<()> {
        // The receiver answers after the spans are committed, so each batch is durable here.
        self.post_spans(&spans)
    }

    fn send_logs(&mut self, logs: Vec<TracedLog>) -> anyhow::Result<()> {
        self.post_logs(&logs)
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SpanId, TraceId};

    fn span_with(resource: &Arc<Resource>) -> Span {
        let mut s = Span::new(
            TraceId::from_bytes([1; 16]).unwrap(),
            SpanId::from_bytes([2; 8]).unwrap(),
            "op",
        );
        s.resource = resource.clone();
        s
    }

    #[test]
    fn stamping_replaces_a_carried_run_id_and_shares_one_copy_per_resource() {
        let original = Arc::new(Resource::new(Attributes(vec![
            KeyValue::new("service.name", "cart"),
            KeyValue::new(RUN_ID_ATTR, "r-from-another-store"),
        ])));
        let mut stamper = Stamper::new("r-here");
        let (mut a, mut b) = (span_with(&original), span_with(&original));
        stamper.stamp(&mut a);
        stamper.stamp(&mut b);
        assert!(Arc::ptr_eq(&a.resource, &b.resource));
        assert_eq!(a.service(), "cart");
        let ids: Vec<&str> = a
            .resource
            .attributes
            .iter()
            .filter(|kv| kv.key == RUN_ID_ATTR)
            .filter_map(|kv| kv.value.as_str())
            .collect();
        assert_eq!(ids, ["r-here"]);
    }

    #[test]
    fn a_run_is_named_after_the_file_without_its_directory() {
        assert_eq!(
            run_name_for(Path::new("/tmp/x/smartthings.json")),
            "smartthings.json"
        );
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("yelp.json"), "yelp.json");
    }
}
