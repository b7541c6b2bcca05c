//! The database a deployment's instances share (`serve --shared-db postgres://…`; DESIGN, "Many
//! instances, one deployment"). In progress (issue 20): the connection pool, the schema and its
//! migrations, the instance's registration and heartbeat, the connection's health, run
//! assignment decided in PostgreSQL (`runs::SharedRuns`), this instance's results published
//! (`publish`: its share of each run's rollup, its facts and examples, its per-trace results,
//! from an outbox the embedded store keeps), and the reads that add the other instances'
//! shares and copy the deployment's runs (`reads::SharedReads`, the `results::Deployment`), and
//! asking another instance for the spans it holds of a trace (`peers`): for the views of a trace
//! held elsewhere (`web::proxy`), and to analyse a trace split between instances or linked to
//! traces on others, which the instance that learns of it tells the instances concerned
//! (`stale_traces`, through `publish`). History's records of a run (its digest and failures)
//! are kept in the database for the whole deployment (`run_digests`, read and written by
//! `reads`), each with the stamps of the rollup shares it was made from: every write of a share
//! takes a new number (`publish`), so a record is fresh while its run's shares carry the same
//! numbers. One instance at a time (the history keeper's lease) makes finished runs' records in
//! the background.
//!
//! Main types: `SharedDb` (pool, health, this instance), `DbHealth` (ok, or degraded and why:
//! what `/api/health` and `/metrics` report), `SharedRuns` (the `runs::RunRegistry` over
//! PostgreSQL), `SharedReads` (the `results::Deployment` over PostgreSQL).
//!
//! Key design decisions:
//! - tokio-postgres through a deadpool pool, on the server's own Tokio runtime. The callers that
//!   must block (run assignment on the writer thread, the runs API on the blocking pool) enter
//!   it with `Handle::block_on`, never from an async worker.
//! - A lost connection is never fatal and never a panic: the failing call returns an error, the
//!   health turns degraded with the reason, and the heartbeat task probes again with a growing
//!   pause until a query succeeds. While degraded, callers fail at once rather than each waiting
//!   for a connect timeout, so the writer thread (which assigns runs after every commit) is
//!   never held up by a dead database: its traces wait in `pending_assignments` and are
//!   assigned at a later commit, after the database is back.
//! - The URL may hold a password: it is kept as a `config::Secret`, and messages name only the
//!   host, port and database.
//! - TLS as libpq's `sslmode` and `sslrootcert` in the URL ask (`tls`), over rustls: a
//!   certificate refused is said with the database's address and the TLS settings
//!   (`SharedError::Tls`), at start or in the health.
//!
//! Must not: hold spans (they stay on the instance that received them), or make an export's
//! acknowledgement wait for PostgreSQL.

mod health;
pub mod peers;
pub mod publish;
mod reads;
mod runs;
mod schema;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_util::sync::CancellationToken;

pub use health::{DbHealth, Degraded};
pub use reads::SharedReads;
pub use runs::SharedRuns;
pub use schema::{MIGRATIONS, Migration};

use crate::config::SharedDbConfig;

/// How long a connection may take to be made, and a pooled one to be had: past it the database
/// counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call that blocks a thread (run assignment, opening a run) may take: a database
/// that accepted the connection and then stopped answering must not hold the writer thread.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections each instance holds at most.
const POOL_SIZE: usize = 8;
/// The first pause before probing a database that stopped answering; it doubles up to the
/// heartbeat interval.
const FIRST_RETRY: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("{0}")]
    Config(String),
    #[error("the shared database is unreachable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("shared database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("the shared database is degraded ({0}); retrying in the background")]
    Degraded(String),
    #[error("the shared database did not answer within {0:?}")]
    Timeout(Duration),
    /// The server's TLS certificate was refused (`sslmode`, `sslrootcert`): said with the
    /// database's address and the TLS settings, which the driver's own words lack.
    #[error("{0}")]
    Tls(String),
    #[error(
        "the shared database's schema is at version {found}, newer than this tracecov's {known}: upgrade tracecov"
    )]
    NewerSchema { found: i32, known: i32 },
}

impl SharedError {
    /// Whether the error says the database could not be reached (as opposed to a query it
    /// refused): only those make the health degraded.
    pub fn is_connection(&self) -> bool {
        match self {
            SharedError::Pool(_)
            | SharedError::Degraded(_)
            | SharedError::Timeout(_)
            | SharedError::Tls(_) => true,
            // A server's error has a SQLSTATE code; a lost or refused connection has none.
            SharedError::Postgres(e) => e.is_closed() || e.code().is_none(),
            SharedError::Config(_) | SharedError::NewerSchema { .. } => false,
        }
    }
}

/// Checks a `--shared-db` URL: a `postgres://` or `postgresql://` URL naming a host and a
/// database, with libpq's TLS parameters (`sslmode`, `sslrootcert`; see `tls`). Returns the
/// connection settings and the TLS ones.
pub fn parse_url(url: &str) -> Result<(tokio_postgres::Config, tls::PgTls), String> {
    let url = url.trim();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(
            "--shared-db must be a PostgreSQL URL: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
                .to_owned(),
        );
    }
    let (url, tls) = tls::split_url(url)?;
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| format!("--shared-db is not a valid PostgreSQL URL: {e}"))?;
    config.ssl_mode(tls.tokio_mode());
    if config.get_hosts().is_empty() {
        return Err("--shared-db names no host: postgres://USER@HOST:PORT/DATABASE".to_owned());
    }
    if config.get_dbname().is_none_or(str::is_empty) {
        return Err("--shared-db names no database: postgres://USER@HOST:PORT/DATABASE".to_owned());
    }
    if config.get_user().is_none_or(str::is_empty) {
        return Err("--shared-db names no user: postgres://USER@HOST:PORT/DATABASE".to_owned());
    }
    Ok((config, tls))
}

/// `host:port/database` of a connection, for messages (never the password).
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => String::new(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or(""))
}

/// The shared database as one instance sees it.
pub struct SharedDb {
    pool: Pool,
    /// The runtime the pool's connections live on, for callers on plain threads.
    runtime: tokio::runtime::Handle,
    health: Arc<DbHealth>,
    /// This instance's `--instance-url`: its key in `instances`.
    instance_url: String,
    /// What `/api/health` reports as the deployment's OTLP endpoint.
    advertise_otlp: Option<String>,
    /// `host:port/database`, for messages.
    target: String,
    /// The connection's TLS settings, for messages.
    tls: tls::PgTls,
    /// The migrations this instance applied when it started (none when another had).
    migrated: Vec<i32>,
}

impl SharedDb {
    /// Connects, applies the migrations this version knows (once across instances starting
    /// together) and registers this instance. Fails when the database cannot be reached:
    /// an instance does not start without the deployment it belongs to.
    pub async fn connect(
        config: &SharedDbConfig,
        advertise_otlp: Option<&str>,
    ) -> Result<Arc<SharedDb>, SharedError> {
        let (mut pg, tls) = parse_url(&config.url.0).map_err(SharedError::Config)?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        pg.application_name("tracecov");
        let target = describe(&pg);
        let connector = tls.connector().map_err(SharedError::Config)?;
        let manager = Manager::from_config(
            pg,
            connector,
            ManagerConfig {
                // A connection the server closed (a restart) is found closed and replaced.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| SharedError::Config(format!("cannot make the connection pool: {e}")))?;
        let mut db = SharedDb {
            pool,
            runtime: tokio::runtime::Handle::current(),
            health: Arc::new(DbHealth::default()),
            instance_url: config.instance_url.clone(),
            advertise_otlp: advertise_otlp.map(str::to_owned),
            target,
            tls,
            migrated: Vec::new(),
        };
        db.migrated = db.migrate().await?;
        if !db.migrated.is_empty() {
            tracing::info!(versions = ?db.migrated, database = %db.target, "applied schema migrations");
        }
        db.register().await?;
        Ok(Arc::new(db))
    }

    /// Applies the migrations not yet applied; returns their versions (empty when another
    /// instance did, or did already).
    pub async fn migrate(&self) -> Result<Vec<i32>, SharedError> {
        let mut client = self.client().await?;
        schema::migrate(&mut client).await
    }

    /// The migrations this instance applied when it started.
    pub fn migrations_applied(&self) -> &[i32] {
        &self.migrated
    }

    /// The connection's state, for `/api/health` and `/metrics`.
    pub fn health(&self) -> &Arc<DbHealth> {
        &self.health
    }

    pub fn instance_url(&self) -> &str {
        &self.instance_url
    }

    /// `host:port/database`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// `sslmode=…[, sslrootcert=…]`: how the connection is protected, for the banner.
    pub fn tls_settings(&self) -> String {
        self.tls.describe()
    }

    /// A pooled connection; a failure to get one makes the health degraded.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, SharedError> {
        self.pool.get().await.map_err(|e| {
            let e = self.explained(SharedError::from(e));
            self.health.failed(&e);
            e
        })
    }

    /// `e`, or, when its cause is the server's TLS certificate being refused, an error that
    /// says so with the database's address and the TLS settings (never the URL).
    fn explained(&self, e: SharedError) -> SharedError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if crate::tls::is_certificate_error(s) {
                return SharedError::Tls(format!(
                    "the shared database {} presented a TLS certificate that was refused ({}): \
                     {s}; sslrootcert must hold the certificate of the CA that signed it, and \
                     with verify-full the URL's host must be one the certificate names",
                    self.target,
                    self.tls.describe()
                ));
            }
            source = s.source();
        }
        e
    }

    /// Runs `work` on the pool's runtime from a thread that may block (the writer thread, the
    /// blocking pool), for at most `CALL_TIMEOUT`. Fails at once while the database is known to
    /// be down; a connection failure or a timeout of `work` makes it so.
    pub(crate) fn block_on<T>(
        &self,
        work: impl Future<Output = Result<T, SharedError>>,
    ) -> Result<T, SharedError> {
        if let Some(d) = self.health.degraded() {
            return Err(SharedError::Degraded(d.problem));
        }
        let result = self.runtime.block_on(async {
            tokio::time::timeout(CALL_TIMEOUT, work)
                .await
                .unwrap_or(Err(SharedError::Timeout(CALL_TIMEOUT)))
        });
        if let Err(e) = &result
            && e.is_connection()
        {
            self.health.failed(e);
        }
        result
    }

    /// Runs `work` (which bounds itself, as `peers` calls do) on the pool's runtime from a thread
    /// that may block, whatever the database's health: asking another instance needs no
    /// database.
    pub(crate) fn run<T>(&self, work: impl Future<Output = T>) -> T {
        self.runtime.block_on(work)
    }

    /// Records this instance in `instances`, started now.
    async fn register(&self) -> Result<(), SharedError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO instances (url, advertise_otlp, version, started_at, heartbeat_at)
                 VALUES ($1, $2, $3, now(), now())
                 ON CONFLICT (url) DO UPDATE SET advertise_otlp = EXCLUDED.advertise_otlp,
                   version = EXCLUDED.version, started_at = now(), heartbeat_at = now(),
                   stopped_at = NULL",
                &[
                    &self.instance_url,
                    &self.advertise_otlp,
                    &env!("CARGO_PKG_VERSION"),
                ],
            )
            .await?;
        Ok(())
    }

    /// One heartbeat: this instance is alive (registered again if its row went away).
    async fn heartbeat(&self) -> Result<(), SharedError> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| self.explained(SharedError::from(e)))?;
        client
            .execute(
                "INSERT INTO instances (url, advertise_otlp, version, started_at, heartbeat_at)
                 VALUES ($1, $2, $3, now(), now())
                 ON CONFLICT (url) DO UPDATE SET heartbeat_at = now(), stopped_at = NULL",
                &[
                    &self.instance_url,
                    &self.advertise_otlp,
                    &env!("CARGO_PKG_VERSION"),
                ],
            )
            .await?;
        Ok(())
    }

    /// Beats every `every` until `shutdown`; while the database fails, probes again after a
    /// pause that doubles from 100 ms up to `every`, and says when it is back. At shutdown the
    /// instance is marked stopped (when the database answers).
    pub fn spawn_heartbeat(
        self: &Arc<Self>,
        every: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let db = self.clone();
        tokio::spawn(async move {
            let mut pause = every;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
                // Bounded: a database that hangs must turn the health degraded, not freeze it.
                let beat = tokio::time::timeout(CALL_TIMEOUT, db.heartbeat())
                    .await
                    .unwrap_or(Err(SharedError::Timeout(CALL_TIMEOUT)));
                match beat {
                    Ok(()) => {
                        db.health.succeeded();
                        pause = every;
                    }
                    Err(e) => {
                        db.health.failed(&e);
                        pause = if pause >= every {
                            FIRST_RETRY.min(every)
                        } else {
                            (pause * 2).min(every)
                        };
                    }
                }
            }
            if let Ok(client) = db.pool.get().await {
                let _ = client
                    .execute(
                        "UPDATE instances SET stopped_at = now() WHERE url = $1",
                        &[&db.instance_url],
                    )
                    .await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_db_urls_are_checked() {
        let (ok, _) = parse_url("postgres://tracecov:secret@db.internal:5433/tracecov").unwrap();
        assert_eq!(describe(&ok), "db.internal:5433/tracecov");
        assert!(parse_url("postgresql://u@h/d").is_ok());
        for (bad, says) in [
            ("mysql://u@h/d", "must be a PostgreSQL URL"),
            ("postgres://u@h", "names no database"),
            ("postgres://h/d", "names no user"),
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
