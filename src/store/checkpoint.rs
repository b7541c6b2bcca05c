//! The checkpointer: copies the write-ahead log back into the database file on its own thread
//! and connection, so the writer thread spends its time on commits.
//!
//! A key design decision: SQLite's automatic checkpoint runs inside the commit that crosses its
//! threshold, on the writer thread, and was 40% of that thread's time (reading the WAL, writing
//! the database file, two fsyncs). A PASSIVE checkpoint on another connection runs alongside new
//! commits instead. What it cannot do is wrap the log back to its start: SQLite does that when a
//! write transaction begins with every frame already copied, and under load the next commit has
//! always begun before a background checkpoint ends. So every `Limits::restart_every_bytes` of
//! commits the writer checkpoints once itself, between two commits, after any background one in
//! progress: by then nearly everything is copied, it copies the rest, and its next commit starts
//! the log over. The WAL stays bounded under any load (unless a reader holds a snapshot open
//! for that long, as with SQLite's own checkpoints).
//!
//! Both thresholds count the log itself (its frames, as SQLite reports them after each commit),
//! not the span bytes committed: a commit of one small span still writes whole pages, and
//! counting spans let two clients exporting one span at a time grow the log to gigabytes. The
//! writer's connection also sets `journal_size_limit`, so a log that grew during a long reader
//! snapshot is cut back once it starts over.
//!
//! Durability does not depend on any of this: a commit is durable once it is in the WAL. A
//! checkpoint that fails (on a full disk the database file cannot grow to take the log's pages)
//! is said once and summarised (`Outage`), not logged at every commit, and tried again as usual.

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;

use super::outage::{self, Outage, Say};
use super::{Durability, StoreError, configure};

/// When checkpoints run, in bytes of write-ahead log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Wake the background checkpointer each time the log grew this much.
    pub wake_every_bytes: u64,
    /// Have the writer finish a checkpoint and restart the log once it is this long.
    pub restart_every_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            wake_every_bytes: 8 << 20,
            restart_every_bytes: 32 << 20,
        }
    }
}

pub(crate) struct Checkpointer {
    /// Wakes the thread; dropping it stops the thread.
    wake: Option<SyncSender<()>>,
    handle: Option<JoinHandle<()>>,
    /// Held while either thread checkpoints, so the writer's checkpoint waits for a running
    /// background one instead of finding SQLite's checkpoint lock taken and giving up. It holds
    /// what both know of failing checkpoints, so a full disk is told once, not once a thread.
    gate: Arc<Mutex<Outage>>,
    limits: Limits,
    /// Frames in the log after the writer's last commit (its WAL hook writes it).
    frames: Arc<std::sync::atomic::AtomicU64>,
    /// The log's length when the thread was last woken.
    woken_at: u64,
}

/// Bytes a WAL frame takes: a page and its 24-byte header.
const FRAME_BYTES: u64 = super::PAGE_SIZE as u64 + 24;

impl Checkpointer {
    /// Starts the thread; `writer` is the writer's connection, whose commits it follows.
    pub(crate) fn start(
        path: &Path,
        writer: &mut Connection,
        durability: Durability,
        limits: Limits,
    ) -> Result<Self, StoreError> {
        let frames = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = frames.clone();
        // Registered after `wal_autocheckpoint` is set: that pragma replaces the hook.
        writer.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
            seen.store(pages.max(0) as u64, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }))?;
        // A log that grew past twice the restart length is cut back when it starts over.
        writer.pragma_update(
            None,
            "journal_size_limit",
            (limits.restart_every_bytes * 2) as i64,
        )?;
        let conn = Connection::open(path)?;
        configure(&conn, durability)?;
        // One pending wake-up is enough: a checkpoint copies everything committed before it.
        let (wake, rx) = sync_channel(1);
        let gate = Arc::new(Mutex::new(Outage::new(outage::SUMMARY_EVERY)));
        let (thread_gate, thread_frames) = (gate.clone(), frames.clone());
        let handle = std::thread::Builder::new()
            .name("tracecov-checkpoint".into())
            .spawn(move || run(conn, rx, thread_gate, thread_frames))
            .map_err(|_| StoreError::Closed)?;
        Ok(Self {
            wake: Some(wake),
            handle: Some(handle),
            gate,
            limits,
            frames,
            woken_at: 0,
        })
    }

    /// The write-ahead log's length after the writer's last commit.
    pub(crate) fn wal_bytes(&self) -> u64 {
        self.frames.load(std::sync::atomic::Ordering::Relaxed) * FRAME_BYTES
    }

    /// Called by the writer after each commit, with its own connection and no transaction open.
    pub(crate) fn committed(&mut self, writer: &Connection) {
        let wal = self.wal_bytes();
        if wal < self.woken_at {
            // The log started over.
            self.woken_at = 0;
        }
        if wal - self.woken_at >= self.limits.wake_every_bytes {
            self.woken_at = wal;
            if let Some(wake) = &self.wake {
                // Full means a wake-up is already pending, and it will see these commits too;
                // disconnected means the thread is gone, and the writer's own checkpoints below
                // still keep the log bounded.
                let _ = wake.try_send(());
            }
        }
        if wal >= self.limits.restart_every_bytes {
            // After any background checkpoint in progress. When every frame was copied, the
            // next commit starts the log over; when a reader's old snapshot kept some, or it
            // failed, it is tried again after the next commit.
            checkpoint(writer, &self.gate, &self.frames);
        }
    }

    /// Stops the thread after its current checkpoint.
    pub(crate) fn stop(&mut self) {
        self.wake.take();
        if let Some(handle) = self.handle.take()
            && handle.join().is_err()
        {
            tracing::error!("checkpoint thread panicked");
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a PASSIVE checkpoint. Whether it copied every frame (so that the next commit starts the
/// log over) is SQLite's business: when a reader's old snapshot kept some, the next try copies
/// them.
fn passive(conn: &Connection) -> Result<(), rusqlite::Error> {
    // The row is (busy, frames in the log, frames copied).
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

/// Runs a PASSIVE checkpoint on `conn` once no other is running, and logs what the gate's
/// `Outage` says about it.
fn checkpoint(conn: &Connection, gate: &Mutex<Outage>, frames: &std::sync::atomic::AtomicU64) {
    let mut failing = gate.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let result = passive(conn);
    let now = std::time::Instant::now();
    let wal_mib = (frames.load(std::sync::atomic::Ordering::Relaxed) * FRAME_BYTES) >> 20;
    match result {
        Ok(_) => {
            if let Some(Say::Ended(t)) = failing.succeeded(now) {
                tracing::info!(
                    wal_mib,
                    "checkpoints work again after {} ({} failed)",
                    outage::for_people(t.lasted),
                    t.failures
                );
            }
        }
        Err(e) => {
            let e = StoreError::from(e);
            match failing.failed(now, 0) {
                Some(Say::Began) if e.is_disk_full() => tracing::warn!(
                    wal_mib,
                    "checkpoints fail: the disk is too full for the database file to take the write-ahead log, which grows until there is room; nothing committed is lost"
                ),
                Some(Say::Began) => tracing::warn!(
                    error = %e,
                    wal_mib,
                    "checkpoints fail: the write-ahead log grows until they succeed; nothing committed is lost"
                ),
                Some(Say::Still(t)) => tracing::warn!(
                    error = %e,
                    wal_mib,
                    "checkpoints still failing: {} failed in {}",
                    t.failures,
                    outage::for_people(t.lasted)
                ),
                _ => {}
            }
        }
    }
}

fn run(
    conn: Connection,
    wake: Receiver<()>,
    gate: Arc<Mutex<Outage>>,
    frames: Arc<std::sync::atomic::AtomicU64>,
) {
    while wake.recv().is_ok() {
        checkpoint(&conn, &gate, &frames);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{Attributes, KeyValue, Resource, Span, SpanId, TraceId};
    use crate::store::{Stats, Store};

    /// One small span per commit: each commit writes whole pages, so counting span bytes let
    /// the log grow about a hundred times past its limit (two clients exporting one span at a
    /// time once made an 8 GB log). The log's own length decides now.
    #[test]
    fn one_span_commits_keep_the_wal_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            wake_every_bytes: 256 << 10,
            restart_every_bytes: 1 << 20,
        };
        let mut store = Store::open_with(dir.path(), Durability::Process, limits).unwrap();
        let resource = Arc::new(Resource::new(Attributes(vec![KeyValue::new(
            "service.name",
            "a",
        )])));
        let mut max_wal = 0;
        for n in 1..=1_500u64 {
            let trace = TraceId::from_bytes(u128::from(n).to_be_bytes()).unwrap();
            let mut s = Span::new(trace, SpanId::from_bytes(n.to_be_bytes()).unwrap(), "op");
            s.resource = resource.clone();
            store.write([&s], n).unwrap();
            max_wal = max_wal.max(store.checkpointer.wal_bytes());
        }
        // 1,500 commits of several 16 KiB pages each: about 70 MB of log without the limit.
        let file = std::fs::metadata(dir.path().join("tracecov.sqlite-wal"))
            .unwrap()
            .len();
        assert!(max_wal < 2 << 20, "the log reached {max_wal} bytes");
        assert!(file < 3 << 20, "the log file grew to {file} bytes");
        assert_eq!(store.reader().stats().unwrap().spans, 1_500);
    }

    #[test]
    fn the_wal_stays_bounded_and_every_span_survives_checkpointing() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            wake_every_bytes: 64 << 10,
            restart_every_bytes: 256 << 10,
        };
        let mut store = Store::open_with(dir.path(), Durability::Process, limits).unwrap();
        let resource = Arc::new(Resource::new(Attributes(vec![KeyValue::new(
            "service.name",
            "a",
        )])));
        let padding = "p".repeat(1_000);
        let mut n = 0u64;
        for round in 0..40u64 {
            let spans: Vec<Span> = (0..100u64)
                .map(|k| {
                    n += 1;
                    let trace =
                        TraceId::from_bytes((u128::from(round * 10 + k % 10) + 1).to_be_bytes())
                            .unwrap();
                    let mut s =
                        Span::new(trace, SpanId::from_bytes(n.to_be_bytes()).unwrap(), "op");
                    s.attributes.push("padding", padding.as_str());
                    s.resource = resource.clone();
                    s
                })
                .collect();
            store.write(&spans, round).unwrap();
        }
        // About 4 MB of spans was committed (over 10 MB of WAL frames when the log never
        // starts over); it must have been copied back and restarted every 256 KB of spans or so.
        let wal = std::fs::metadata(dir.path().join("tracecov.sqlite-wal"))
            .unwrap()
            .len();
        assert!(wal < 2 << 20, "WAL grew to {wal} bytes");
        let reader = store.reader();
        assert_eq!(
            reader.stats().unwrap(),
            Stats {
                spans: 4_000,
                traces: 400,
                services: 1
            }
        );
        store.close().unwrap();
        let store = Store::open(dir.path(), Durability::Process).unwrap();
        let t = TraceId::from_bytes(1u128.to_be_bytes()).unwrap();
        assert_eq!(store.reader().trace(t).unwrap().len(), 10);
    }
}
