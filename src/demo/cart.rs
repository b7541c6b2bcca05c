//! `cart`: shopping carts in memory, keyed by a cart id the client chooses.
//!
//! Under `cart:422` cart has moved on to a newer request schema (`qty` instead of `quantity`)
//! that the gateway does not send, so it refuses every item the gateway adds: the contract
//! between them broke, not either service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::telemetry::{ApiError, Telemetry};
use super::{Fault, Faults};

#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Item {
    pub sku: String,
    pub quantity: i64,
}

struct Carts {
    carts: Mutex<HashMap<String, Vec<Item>>>,
}

/// The request body of the schema the gateway speaks.
#[derive(Deserialize)]
struct AddItem {
    sku: String,
    quantity: i64,
}

impl From<AddItem> for Item {
    fn from(b: AddItem) -> Item {
        Item {
            sku: b.sku,
            quantity: b.quantity,
        }
    }
}

/// The newer schema cart expects under `cart:422`.
#[derive(Deserialize)]
struct AddItemV2 {
    sku: String,
    qty: i64,
}

impl From<AddItemV2> for Item {
    fn from(b: AddItemV2) -> Item {
        Item {
            sku: b.sku,
            quantity: b.qty,
        }
    }
}

pub(crate) fn spawn(
    listener: TcpListener,
    telemetry: Telemetry,
    faults: &Faults,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let addr = listener.local_addr()?;
    let state = Arc::new(Carts {
        carts: Mutex::new(HashMap::new()),
    });
    let add = if faults.has(Fault::Cart422) {
        post(add_item::<AddItemV2>)
    } else {
        post(add_item::<AddItem>)
    };
    let router = Router::new()
        .route("/carts/{cart_id}/items", add)
        .route("/carts/{cart_id}", get(view_cart))
        .with_state(state);
    Ok(super::serve_http(
        "cart",
        listener,
        super::traced(router, telemetry, addr),
        shutdown,
    ))
}

fn rejected(rejection: JsonRejection) -> ApiError {
    ApiError::new(422, "invalid_request", rejection.body_text())
}

impl Carts {
    fn add(&self, cart_id: String, item: Item) -> Result<Value, ApiError> {
        if item.quantity <= 0 {
            return Err(ApiError::new(
                422,
                "invalid_quantity",
                "quantity must be positive",
            ));
        }
        let mut carts = self
            .carts
            .lock()
            .map_err(|_| ApiError::new(500, "internal", "cart state poisoned"))?;
        let items = carts.entry(cart_id.clone()).or_default();
        match items.iter_mut().find(|i| i.sku == item.sku) {
            Some(existing) => existing.quantity += item.quantity,
            None => items.push(item),
        }
        Ok(json!({"cart_id": cart_id, "items": items}))
    }
}

/// `POST /carts/{id}/items` in either schema: the body is decoded as `B`, a wrong one rejected.
async fn add_item<B: DeserializeOwned + Into<Item>>(
    State(carts): State<Arc<Carts>>,
    Path(cart_id): Path<String>,
    body: Result<Json<B>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(item) = body.map_err(rejected)?;
    let cart = carts.add(cart_id, item.into())?;
    Ok((StatusCode::CREATED, Json(cart)))
}

async fn view_cart(
    State(carts): State<Arc<Carts>>,
    Path(cart_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let carts = carts
        .carts
        .lock()
        .map_err(|_| ApiError::new(500, "internal", "cart state poisoned"))?;
    let items = carts.get(&cart_id).cloned().unwrap_or_default();
    Ok(Json(json!({"cart_id": cart_id, "items": items})))
}
