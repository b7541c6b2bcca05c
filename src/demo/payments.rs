//! `payments`: charges cards and writes them to a ledger.
//!
//! The card `4000 0000 0000 0002` is always declined (402, an answer the checkout expects).
//! Under `payments:500` every ledger write fails and the charge answers 500 with the exception
//! on the server span: the callee itself is at fault.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::telemetry::{ApiError, Telemetry};
use super::{Fault, Faults};

/// The test card number that is always declined.
pub(crate) const DECLINED_CARD: &str = "4000000000000002";

struct Payments {
    ledger_broken: bool,
    ledger: Mutex<Vec<(String, i64)>>,
    next_id: AtomicU64,
}

pub(crate) fn spawn(
    listener: TcpListener,
    telemetry: Telemetry,
    faults: &Faults,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let addr = listener.local_addr()?;
    let state = Arc::new(Payments {
        ledger_broken: faults.has(Fault::Payments500),
        ledger: Mutex::new(Vec::new()),
        next_id: AtomicU64::new(1),
    });
    let router = Router::new()
        .route("/charge", post(charge))
        .with_state(state);
    Ok(super::serve_http(
        "payments",
        listener,
        super::traced(router, telemetry, addr),
        shutdown,
    ))
}

#[derive(Deserialize)]
struct Charge {
    order_id: String,
    amount_cents: i64,
    card: String,
}

async fn charge(
    State(payments): State<Arc<Payments>>,
    Json(charge): Json<Charge>,
) -> Result<Json<Value>, ApiError> {
    if charge.amount_cents <= 0 {
        return Err(ApiError::new(
            400,
            "invalid_amount",
            "amount must be positive",
        ));
    }
    // The ledger entry is written before the card is authorized, so a broken ledger fails
    // every charge, declined cards included.
    if payments.ledger_broken {
        return Err(ApiError::new(
            500,
            "internal",
            format!(
                "ledger write failed: currency mismatch (order {} in EUR, ledger in USD)",
                charge.order_id
            ),
        )
        .with_exception("LedgerError"));
    }
    payments
        .ledger
        .lock()
        .map_err(|_| ApiError::new(500, "internal", "ledger poisoned"))?
        .push((charge.order_id.clone(), charge.amount_cents));
    if charge.card.replace(' ', "") == DECLINED_CARD {
        return Err(ApiError::new(402, "card_declined", "the card was declined"));
    }
    let id = payments.next_id.fetch_add(1, Ordering::Relaxed);
    Ok(Json(json!({
        "payment_id": format!("pay-{id:05}"),
        "order_id": charge.order_id,
        "amount_cents": charge.amount_cents,
    })))
}
