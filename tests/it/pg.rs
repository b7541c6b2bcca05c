//! A throwaway PostgreSQL for tests: Debian's `postgresql` binaries (`initdb`, `pg_ctl` under
//! `/usr/lib/postgresql/*/bin`) run a temporary cluster on a free loopback port, its socket and
//! data in a temporary directory, stopped (`pg_ctl stop -m immediate`) and removed on drop.
//!
//! `initdb` refuses to run as root, and CI runs as root: then every command runs as the
//! `postgres` user (`runuser -u postgres --`), which owns the temporary directory.
//!
//! Starting a cluster costs an `initdb` (about a second): `PgCluster::shared` hands every test of
//! one process the same cluster, each with a database of its own (`PgCluster::database`); a test
//! that stops and restarts PostgreSQL takes a cluster of its own with `PgCluster::start`.
//!
//! Tests call `PgCluster::shared()` / `start()` and skip (returning `None`, after one printed
//! message) only when no PostgreSQL binaries exist; any other failure fails the test.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once, Weak};

/// Where Debian puts each major version's server binaries.
const PG_LIB: &str = "/usr/lib/postgresql";

pub struct PgCluster {
    bin: PathBuf,
    /// Holds `data/` and `sock/`; removed on drop, after the server stopped.
    dir: tempfile::TempDir,
    pub port: u16,
    /// Run the binaries as the `postgres` user (this process is root).
    as_postgres: bool,
}

/// The newest installed version's `bin` directory holding both `initdb` and `pg_ctl`.
pub fn find_binaries() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(PG_LIB)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn skip_message() {
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        eprintln!(
            "skipping the PostgreSQL tests: no initdb/pg_ctl under {PG_LIB}/*/bin \
             (install Debian's postgresql package to run them)"
        )
    });
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A loopback port free when asked (another process may take it before it is used).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `psql` options for scripted use: no `~/.psqlrc`, no chatter, bare rows, stop at the first
/// error.
const PSQL_QUIET: [&str; 6] = ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"];

impl PgCluster {
    /// The cluster every test of this process shares while any of them holds it.
    pub fn shared() -> Option<Arc<PgCluster>> {
        static SHARED: Mutex<Weak<PgCluster>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cluster) = shared.upgrade() {
            return Some(cluster);
        }
        let cluster = Arc::new(Self::start()?);
        *shared = Arc::downgrade(&cluster);
        Some(cluster)
    }

    /// A cluster of the caller's own, running; `None` (after saying so once) when PostgreSQL is
    /// not installed.
    pub fn start() -> Option<PgCluster> {
        let Some(bin) = find_binaries() else {
            skip_message();
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("tracecov-pg")
            .tempdir()
            .unwrap();
        let as_postgres = is_root();
        std::fs::create_dir(dir.path().join("sock")).unwrap();
        if as_postgres {
            let out = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "chown: {}", text(&out));
        }
        let mut cluster = PgCluster {
            bin,
            dir,
            port: 0,
            as_postgres,
        };
        let out = cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data_dir(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--no-locale",
                "-E",
                "UTF8",
            ],
        );
        assert!(out.status.success(), "initdb failed: {}", text(&out));
        // Another process may take the free port between our look and the server's bind: then
        // the start fails and another port is tried.
        for _ in 0..5 {
            cluster.port = free_port();
            let out = cluster.pg_ctl_start();
            if out.status.success() {
                return Some(cluster);
            }
            eprintln!(
                "postgres did not start on port {}: {}",
                cluster.port,
                text(&out)
            );
        }
        panic!("postgres would not start: see the log above");
    }

    /// A cluster of the caller's own that serves TLS with `cert` and `key` (PEM files) and,
    /// through pg_hba.conf, refuses any TCP connection that is not TLS, so that a client
    /// connected at all proved it spoke TLS. `None` as `start`.
    pub fn start_tls(cert: &Path, key: &Path) -> Option<PgCluster> {
        let cluster = Self::start()?;
        let data = cluster.dir.path().join("data");
        std::fs::copy(cert, data.join("server.crt")).unwrap();
        std::fs::copy(key, data.join("server.key")).unwrap();
        // PostgreSQL refuses a key others may read, or owned by another user than its own.
        let out = Command::new("chmod")
            .arg("600")
            .arg(data.join("server.key"))
            .output()
            .unwrap();
        assert!(out.status.success(), "chmod: {}", text(&out));
        if cluster.as_postgres {
            let out = Command::new("chown")
                .arg("postgres:postgres")
                .arg(data.join("server.crt"))
                .arg(data.join("server.key"))
                .output()
                .unwrap();
            assert!(out.status.success(), "chown: {}", text(&out));
        }
        // Written in place: the file keeps its owner.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        // `ssl` and pg_hba.conf take effect on a reload; `psql` (sslmode=prefer) speaks TLS.
        for sql in [
            "ALTER SYSTEM SET ssl = on",
            "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
            "ALTER SYSTEM SET ssl_key_file = 'server.key'",
        ] {
            cluster.psql_local(sql);
        }
        cluster.psql_local("SELECT pg_reload_conf()");
        // The postmaster reloads on its own time: wait until a new session sees TLS on.
        let deadline = std::time::Instant::now() + crate::common::PATIENCE;
        while cluster.psql_local("SHOW ssl") != "on" {
            assert!(
                std::time::Instant::now() < deadline,
                "postgres never turned ssl on"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Some(cluster)
    }

    /// Runs SQL in the `postgres` database over the cluster's Unix socket (which pg_hba.conf
    /// always trusts, TLS or not).
    fn psql_local(&self, sql: &str) -> String {
        let sock = self.dir.path().join("sock").display().to_string();
        let port = self.port.to_string();
        let mut args = PSQL_QUIET.to_vec();
        args.extend([
            "-h", &sock, "-U", "postgres", "-p", &port, "-d", "postgres", "-c", sql,
        ]);
        let out = self.run("psql", &args);
        assert!(out.status.success(), "psql {sql:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        // The temporary directory, not the caller's (which `postgres` may not be able to read).
        cmd.args(args).current_dir(self.dir.path());
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()))
    }

    /// Starts the server and waits (`pg_ctl -w`: it polls until connections are accepted) until
    /// it is ready.
    fn pg_ctl_start(&self) -> Output {
        // Not `synchronous_commit=off`: `stop` is an immediate shutdown (a crash), which then
        // lost the last commits (a test's database, the schema) when it came within the WAL
        // writer's delay of them. Without fsync, a commit's WAL write costs no disk sync.
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} \
             -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().join("sock").display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                "120",
                "-D",
                &self.data_dir(),
                "-l",
                &log,
                "-o",
                &options,
            ],
        )
    }

    /// Stops the server at once (as a crash would), keeping its data.
    pub fn stop(&self) {
        let out = self.run(
            "pg_ctl",
            &["stop", "-w", "-m", "immediate", "-D", &self.data_dir()],
        );
        assert!(out.status.success(), "pg_ctl stop: {}", text(&out));
    }

    /// Starts the stopped server again on the same port.
    pub fn restart(&self) {
        let out = self.pg_ctl_start();
        assert!(out.status.success(), "pg_ctl start: {}", text(&out));
    }

    /// Freezes the server (SIGSTOP to the postmaster and its backends): connections stay open
    /// and nothing answers, as with a database host that hangs.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    /// Sends `sig` to the postmaster (the first line of `postmaster.pid`) and its children,
    /// by id.
    fn signal(&self, sig: &str) {
        let Ok(pidfile) = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
        else {
            return;
        };
        let Some(main) = pidfile.lines().next().map(str::trim) else {
            return;
        };
        let children = std::fs::read_to_string(format!("/proc/{main}/task/{main}/children"))
            .unwrap_or_default();
        // One at a time: a backend may have exited since the list was read.
        for pid in std::iter::once(main).chain(children.split_whitespace()) {
            let _ = Command::new("kill").arg(sig).arg(pid).output();
        }
    }

    /// The URL of database `db` as `--shared-db` takes it.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A new, empty database of its own for the caller: its URL.
    pub fn database(&self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        self.psql(&format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Runs SQL in the `postgres` database through `psql`, returning its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("postgres", sql)
    }

    /// Runs SQL in database `db` (a name, or a URL from `database`).
    pub fn psql_in(&self, db: &str, sql: &str) -> String {
        let db = db.rsplit('/').next().unwrap_or(db);
        let out = Command::new(self.bin.join("psql"))
            .args(PSQL_QUIET)
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-p",
                &self.port.to_string(),
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.port != 0 {
            // A test that failed while the server was frozen must not leave it stopped for good.
            self.signal("-CONT");
            // Already stopped by a test is fine: pg_ctl says so and nothing is left running.
            let _ = self.run(
                "pg_ctl",
                &["stop", "-w", "-m", "immediate", "-D", &self.data_dir()],
            );
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
