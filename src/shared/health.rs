//! The shared database's health as this instance sees it: ok, or degraded since when and why.
//! Set by whatever talks to the database (a failed connection makes it degraded, the heartbeat's
//! next success makes it ok), read by `/api/health` and `/metrics`. Each change is logged once.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why and since when the shared database is not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Degraded {
    pub problem: String,
    pub since_ns: u64,
}

#[derive(Debug, Default)]
pub struct DbHealth {
    /// `None` while the database answers. A std mutex: held only to copy or swap the value,
    /// never across an await.
    state: Mutex<Option<Degraded>>,
    /// Failed attempts since the process started (connections, heartbeats).
    failures: AtomicU64,
    /// Changes of this instance's results not yet published (`shared::publish`), as of the
    /// publisher's last pass.
    unpublished: AtomicU64,
    /// Traces whose run assignment waits for the database, as of the publisher's last pass.
    unassigned: AtomicU64,
}

impl DbHealth {
    /// The current problem, if any.
    pub fn degraded(&self) -> Option<Degraded> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub fn unpublished(&self) -> u64 {
        self.unpublished.load(Ordering::Relaxed)
    }

    pub fn unassigned(&self) -> u64 {
        self.unassigned.load(Ordering::Relaxed)
    }

    /// What the publisher found waiting at its last pass.
    pub fn set_backlog(&self, unpublished: u64, unassigned: u64) {
        self.unpublished.store(unpublished, Ordering::Relaxed);
        self.unassigned.store(unassigned, Ordering::Relaxed);
    }

    /// A call to the database could not reach it.
    pub fn failed(&self, error: &impl std::fmt::Display) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.is_none() {
            tracing::error!(
                error = %error,
                "the shared database stopped answering; retrying in the background"
            );
            *state = Some(Degraded {
                problem: error.to_string(),
                since_ns: crate::ingest::now_ns(),
            });
        }
    }

    /// The database answered.
    pub fn succeeded(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = state.take() {
            let secs = crate::ingest::now_ns().saturating_sub(d.since_ns) / 1_000_000_000;
            tracing::info!(after_secs = secs, "the shared database answers again");
        }
    }
}
