//! Test-only: a full disk, simulated with SQLite's own limit on a database's size.
//!
//! `PRAGMA max_page_count` makes SQLite answer SQLITE_FULL when a write would grow the database
//! past it: the very error a full disk gives, raised by SQLite where a full disk would be noticed,
//! so the whole failure path (rolled back transactions, refused exports, logs, metrics, recovery)
//! runs as it does for real. The limit is per connection, so it is kept here for the whole process
//! and every connection that writes applies it before it writes (`apply`); nothing is applied
//! until a limit was first set, so outside tests this costs one atomic load.
//!
//! Set only by `serve`'s hidden `--test-full-file FILE` (see `watch`). Being process-wide, it is
//! not for tests that share a process with others: the integration test drives the real binary.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::Connection;

/// The limit in pages; `NEVER` until one is set, `NONE` once the space "returned".
static PAGES: AtomicU64 = AtomicU64::new(NEVER);
const NEVER: u64 = 0;
const NONE: u64 = u64::MAX;

/// SQLite's largest page count: no limit.
const SQLITE_MAX_PAGES: i64 = 0xffff_fffe;

/// Limits every connection's database to `pages` (SQLite keeps it at least at the current size,
/// so 1 means "full now"), or lifts the limit (`None`).
pub fn set_limit(pages: Option<u64>) {
    PAGES.store(
        pages.map_or(NONE, |p| p.clamp(1, NONE - 1)),
        Ordering::Relaxed,
    );
}

/// Applies the limit to `conn`, before it writes.
pub(crate) fn apply(conn: &Connection) -> rusqlite::Result<()> {
    match PAGES.load(Ordering::Relaxed) {
        NEVER => Ok(()),
        NONE => conn.pragma_update(None, "max_page_count", SQLITE_MAX_PAGES),
        pages => conn.pragma_update(
            None,
            "max_page_count",
            i64::try_from(pages).unwrap_or(SQLITE_MAX_PAGES),
        ),
    }
}

/// Follows `file` on a thread of its own: a number in it is the limit in pages; an empty or
/// missing file, or 0, lifts it. Read every 20 ms, so a test changes the disk's room by writing
/// the file, and waits for what the server does about it.
pub fn watch(file: PathBuf) {
    let read = move || {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        set_limit(text.trim().parse().ok().filter(|&p: &u64| p > 0));
    };
    read();
    let spawned = std::thread::Builder::new()
        .name("tracecov-test-full".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(20));
                read();
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot follow --test-full-file");
    }
}
