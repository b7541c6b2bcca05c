//! The shop's message queue: an in-process broker with one destination, `orders`.
//!
//! A message carries its body and headers, and the producer's trace context travels in those
//! headers as it would through Kafka or RabbitMQ; the queue itself reports no spans. The broker
//! also counts published and processed messages so a suite run can wait for the asynchronous
//! consumer before it reports (its spans belong to the tests that published), and keeps each
//! message's outcome (acknowledged, or dropped by the consumer) for a publisher that waits for it,
//! as a test does that publishes an event and then checks it was handled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::{SpanKind, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use tokio::sync::{Notify, mpsc};

use super::telemetry::{Telemetry, record_exception, set_error};

/// `messaging.system` of the shop's queue: not a product, so a name of its own.
pub(crate) const SYSTEM: &str = "memory";
pub(crate) const ORDERS: &str = "orders";

/// Messages waiting for the consumer; a publisher waits when the queue is full.
const CAPACITY: usize = 256;

#[derive(Debug)]
pub(crate) struct Message {
    pub id: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

/// The publishing side, and the counters.
#[derive(Clone)]
pub(crate) struct Broker {
    tx: mpsc::Sender<Message>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    published: AtomicU64,
    processed: AtomicU64,
    /// Each processed message's outcome by id: true when the consumer acknowledged it.
    outcomes: Mutex<HashMap<String, bool>>,
    changed: Notify,
}

impl Broker {
    pub fn new() -> (Self, mpsc::Receiver<Message>) {
        let (tx, rx) = mpsc::channel(CAPACITY);
        (
            Self {
                tx,
                counts: Arc::default(),
            },
            rx,
        )
    }

    /// Publishes to `orders` in a PRODUCER span under `parent`, the span's context injected
    /// into the message headers.
    pub async fn publish(
        &self,
        telemetry: &Telemetry,
        parent: &Context,
        id: String,
        body: Vec<u8>,
    ) -> Result<(), String> {
        let cx = telemetry.start(
            parent,
            format!("send {ORDERS}"),
            SpanKind::Producer,
            vec![
                KeyValue::new("messaging.system", SYSTEM),
                KeyValue::new("messaging.destination.name", ORDERS),
                KeyValue::new("messaging.operation.type", "send"),
                KeyValue::new("messaging.operation.name", "send"),
                KeyValue::new("messaging.message.id", id.clone()),
                KeyValue::new("messaging.message.body.size", body.len() as i64),
            ],
        );
        let headers = telemetry.inject_map(&cx);
        let result = self
            .tx
            .send(Message { id, headers, body })
            .await
            .map_err(|_| "the orders queue is closed".to_owned());
        match &result {
            Ok(()) => {
                self.counts.published.fetch_add(1, Ordering::SeqCst);
            }
            Err(message) => {
                record_exception(&cx, "QueueClosed", message);
                set_error(&cx, message.clone());
            }
        }
        cx.span().end();
        result
    }

    /// Called by the consumer after each message: `handled` when it acknowledged the message,
    /// false when it dropped it.
    pub fn processed(&self, id: &str, handled: bool) {
        if let Ok(mut outcomes) = self.counts.outcomes.lock() {
            outcomes.insert(id.to_owned(), handled);
        }
        self.counts.processed.fetch_add(1, Ordering::SeqCst);
        self.counts.changed.notify_waiters();
    }

    /// Waits until the message `id` was processed, at most `limit`: its outcome (true when it
    /// was acknowledged), or None when the consumer has not taken it by then.
    pub async fn outcome(&self, id: &str, limit: Duration) -> Option<bool> {
        let counts = &self.counts;
        let done = async {
            loop {
                let changed = counts.changed.notified();
                if let Some(&handled) = counts.outcomes.lock().ok()?.get(id) {
                    return Some(handled);
                }
                changed.await;
            }
        };
        tokio::time::timeout(limit, done).await.ok().flatten()
    }

    /// Waits until every published message was processed, at most `limit`.
    pub async fn wait_idle(&self, limit: Duration) {
        let counts = &self.counts;
        let idle = async {
            loop {
                let changed = counts.changed.notified();
                if counts.processed.load(Ordering::SeqCst)
                    >= counts.published.load(Ordering::SeqCst)
                {
                    return;
                }
                changed.await;
            }
        };
        let _ = tokio::time::timeout(limit, idle).await;
    }
}
