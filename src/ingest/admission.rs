//! Admission of OTLP exports by the memory they will take, decided before their bodies are read.
//!
//! Main types: `Admission` (one per server, shared by both receivers), `Reservation` (what one
//! export holds).
//!
//! Key design decisions:
//! - One budget of bytes (`--max-request-memory`) for every export in flight. An export reserves
//!   its cost before its body is read: its length (`Content-Length`, or the gRPC message's length
//!   prefix, which arrives in the first bytes) times its encoding's cost per byte, what its body, the decoded
//!   request, the converted spans and their store encoding take together at their peak. A body of
//!   unknown length reserves as it arrives; a gzip body grows its reservation as it inflates.
//! - No room: the export is answered at once, retryable (HTTP 503 with `Retry-After`, gRPC
//!   UNAVAILABLE), with nothing more of its body read. Nothing waits for room, so a flood of
//!   large exports costs the server its budget and not a byte more.
//! - The reservation is held until the export is answered, through its wait in the ingest queue:
//!   queued spans are inside the budget too.
//! - Every export reserves at least `MIN_RESERVATION`, which bounds how many can be in flight at
//!   once (the budget divided by it) however small they are.
//! - One export larger than the whole budget is still admitted when nothing else is in flight
//!   (taking all of it), so a legal request under `--max-body` is never refused forever.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// How an export's body is encoded, which sets what it costs per byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Protobuf,
    Json,
}

impl Wire {
    /// What an export costs in memory per byte of its (uncompressed) body at its peak: the body
    /// itself, the decoded OTLP request, the converted spans and their store encoding, alive
    /// together for part of the export's life. `scripts/bench-request-memory` (BENCHMARKS.md,
    /// "Request memory") measures one 12 MiB OTLP/JSON export of ordinary HTTP client spans
    /// raising a fresh server's peak by about 6 times its size, and the same spans as 5.4 MiB of
    /// protobuf by 8 to 10 times (protobuf is denser, so each byte decodes to more); both
    /// include the store's own first growth, which later exports do not pay again.
    pub fn cost_per_byte(self) -> usize {
        match self {
            Wire::Protobuf => 8,
            Wire::Json => 5,
        }
    }
}

/// The least any export reserves (bounds the number in flight).
pub const MIN_RESERVATION: usize = 64 * 1024;

/// The default `--max-request-memory`.
pub const DEFAULT_BUDGET: usize = 320 * 1024 * 1024;

/// Permits count KiB, so a budget of terabytes still fits the semaphore.
const UNIT: usize = 1024;

/// The memory budget of exports in flight. Cheap to clone.
#[derive(Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

struct Inner {
    permits: Arc<Semaphore>,
    capacity_units: u32,
    /// Exports refused for want of room (retryable).
    refused: AtomicU64,
}

/// Memory held by one export until it is answered.
pub struct Reservation {
    permit: OwnedSemaphorePermit,
    inner: Arc<Inner>,
    wire: Wire,
}

/// No room for an export now; its client should retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server is busy with other exports (request memory is full), retry later")]
pub struct NoRoom;

impl Admission {
    /// A budget of `bytes` (at least one `MIN_RESERVATION`).
    pub fn new(bytes: usize) -> Self {
        let units = (bytes.max(MIN_RESERVATION) / UNIT).min(Semaphore::MAX_PERMITS) as u32;
        Self {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(units as usize)),
                capacity_units: units,
                refused: AtomicU64::new(0),
            }),
        }
    }

    /// Reserves the cost of a body of `body_bytes` (uncompressed, or as received when unknown),
    /// or says there is no room.
    pub fn try_admit(&self, body_bytes: usize, wire: Wire) -> Result<Reservation, NoRoom> {
        let units = self.inner.units_for(body_bytes, wire);
        match self.inner.permits.clone().try_acquire_many_owned(units) {
            Ok(permit) => Ok(Reservation {
                permit,
                inner: self.inner.clone(),
                wire,
            }),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => {
                self.inner.refused.fetch_add(1, Ordering::Relaxed);
                Err(NoRoom)
            }
        }
    }

    /// The budget, in bytes.
    pub fn capacity_bytes(&self) -> u64 {
        u64::from(self.inner.capacity_units) * UNIT as u64
    }

    /// Bytes reserved by exports in flight now.
    pub fn reserved_bytes(&self) -> u64 {
        let free = self.inner.permits.available_permits() as u64;
        (u64::from(self.inner.capacity_units) - free.min(u64::from(self.inner.capacity_units)))
            * UNIT as u64
    }

    /// Exports refused for want of room since start.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn units_for(&self, body_bytes: usize, wire: Wire) -> u32 {
        let bytes = body_bytes
            .saturating_mul(wire.cost_per_byte())
            .max(MIN_RESERVATION);
        (bytes.div_ceil(UNIT).min(self.capacity_units as usize)) as u32
    }
}

impl Reservation {
    /// Grows the reservation to cover a body of `body_bytes`, or says there is no room (the
    /// reservation keeps what it had; the export should be refused as retryable).
    pub fn try_grow_to(&mut self, body_bytes: usize) -> Result<(), NoRoom> {
        let want = self.inner.units_for(body_bytes, self.wire);
        let have = self.permit.num_permits() as u32;
        if want <= have {
            return Ok(());
        }
        match self
            .inner
            .permits
            .clone()
            .try_acquire_many_owned(want - have)
        {
            Ok(more) => {
                self.permit.merge(more);
                Ok(())
            }
            Err(_) => {
                self.inner.refused.fetch_add(1, Ordering::Relaxed);
                Err(NoRoom)
            }
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.permit.num_permits() * UNIT
    }
}

/// Why a gzip body could not be inflated.
#[derive(Debug)]
pub enum Inflate {
    /// It inflates past the size limit.
    TooLarge,
    /// The budget has no room for what it inflates to.
    NoRoom(NoRoom),
    /// It is not gzip.
    Invalid(std::io::Error),
}

/// Inflates a gzip body into at most `limit` bytes within `reservation`, grown a step at a time
/// as it inflates: a bomb is cut off at the limit or when the budget has no more room, never
/// inflated whole. CPU work: call it off the async workers.
pub fn inflate(raw: &[u8], limit: usize, reservation: &mut Reservation) -> Result<Bytes, Inflate> {
    use std::io::Read as _;
    // Small steps: a small body reserves no more than the minimum.
    const STEP: usize = 64 * 1024;
    let mut out = Vec::new();
    let mut decoder = flate2::read::MultiGzDecoder::new(raw);
    loop {
        let before = out.len();
        reservation
            .try_grow_to(before + STEP)
            .map_err(Inflate::NoRoom)?;
        (&mut decoder)
            .take(STEP as u64)
            .read_to_end(&mut out)
            .map_err(Inflate::Invalid)?;
        if out.len() > limit {
            return Err(Inflate::TooLarge);
        }
        if out.len() - before < STEP {
            return Ok(Bytes::from(out));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const J: usize = 5;

    #[test]
    fn admits_until_the_budget_is_spent_and_frees_on_drop() {
        let a = Admission::new(10 * 1024 * 1024);
        let first = a.try_admit(1024 * 1024, Wire::Json).unwrap();
        assert_eq!(first.bytes(), J * 1024 * 1024);
        let second = a.try_admit(1024 * 1024, Wire::Json).unwrap();
        assert_eq!(a.try_admit(1024 * 1024, Wire::Json).err(), Some(NoRoom));
        assert_eq!(a.refused(), 1);
        drop(first);
        let _third = a.try_admit(1024 * 1024, Wire::Json).unwrap();
        drop(second);
        assert_eq!(a.reserved_bytes(), (J * 1024 * 1024) as u64);
    }

    #[test]
    fn small_exports_reserve_the_minimum_which_bounds_how_many_are_in_flight() {
        let a = Admission::new(4 * MIN_RESERVATION);
        let held: Vec<_> = (0..4)
            .map(|_| a.try_admit(10, Wire::Json).unwrap())
            .collect();
        assert!(a.try_admit(10, Wire::Json).is_err());
        drop(held);
        assert_eq!(a.reserved_bytes(), 0);
    }

    #[test]
    fn an_export_larger_than_the_budget_gets_in_alone() {
        let a = Admission::new(MIN_RESERVATION * 2);
        let big = a.try_admit(100 * 1024 * 1024, Wire::Protobuf).unwrap();
        assert_eq!(big.bytes() as u64, a.capacity_bytes());
        assert!(a.try_admit(1, Wire::Json).is_err());
    }

    #[test]
    fn growing_takes_only_the_difference_and_keeps_what_it_had_when_refused() {
        let a = Admission::new(20 * MIN_RESERVATION);
        let mut r = a.try_admit(0, Wire::Json).unwrap();
        assert_eq!(r.bytes(), MIN_RESERVATION);
        r.try_grow_to(2 * MIN_RESERVATION / J).unwrap();
        let grown = r.bytes();
        assert!(grown >= 2 * MIN_RESERVATION - UNIT);
        let _other = a.try_admit(15 * MIN_RESERVATION / J, Wire::Json).unwrap();
        assert_eq!(r.try_grow_to(10 * MIN_RESERVATION), Err(NoRoom));
        assert_eq!(r.bytes(), grown);
    }
}
