//! `checkout`: turns a cart into a paid order.
//!
//! Placing an order reads the cart (HTTP), reserves stock in inventory (gRPC), charges payments
//! (HTTP), publishes an `OrderPlaced` event to the `orders` queue and asks notifications for
//! the confirmation email. A failed confirmation email does not fail the order (it is paid; the
//! email can be resent), so that error stays an error and not a failure. Under
//! `checkout:bad-response` the order replies carry `orderId` instead of `order_id`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Extension, Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{Method, StatusCode};
use opentelemetry::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::broker::Broker;
use super::cart::Item;
use super::inventory::OrderPlaced;
use super::pb;
use super::pb::inventory_client::InventoryClient;
use super::telemetry::{
    ApiError, HttpClient, Outbound, SpanCx, Telemetry, grpc_client_call, read_json,
    read_json_quietly,
};
use super::{Addrs, Fault, Faults};

struct Checkout {
    telemetry: Telemetry,
    http: HttpClient,
    inventory: InventoryClient<Channel>,
    inventory_addr: SocketAddr,
    cart_url: String,
    payments_url: String,
    notifications_url: String,
    broker: Broker,
    rename_order_id: bool,
    /// `payments:double-charge`: every charge is sent twice.
    double_charge: bool,
    orders: Mutex<HashMap<String, Order>>,
    next_order: AtomicU64,
}

#[derive(Clone, Serialize)]
struct Order {
    order_id: String,
    email: String,
    status: &'static str,
    total_cents: i64,
    payment_id: String,
    confirmation_email: &'static str,
}

pub(crate) fn spawn(
    listener: TcpListener,
    telemetry: Telemetry,
    faults: &Faults,
    addrs: &Addrs,
    broker: Broker,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let addr = listener.local_addr()?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", addrs.inventory))?
        .connect_lazy();
    let state = Arc::new(Checkout {
        telemetry: telemetry.clone(),
        http: HttpClient::new(telemetry.clone(), super::HTTP_TIMEOUT)?,
        inventory: InventoryClient::new(channel),
        inventory_addr: addrs.inventory,
        cart_url: format!("http://{}", addrs.cart),
        payments_url: format!("http://{}", addrs.payments),
        notifications_url: format!("http://{}", addrs.notifications),
        broker,
        rename_order_id: faults.has(Fault::CheckoutBadResponse),
        double_charge: faults.has(Fault::PaymentsDoubleCharge),
        orders: Mutex::new(HashMap::new()),
        next_order: AtomicU64::new(1),
    });
    let router = Router::new()
        .route("/orders", post(place_order))
        .route("/orders/{order_id}", get(view_order))
        .route("/orders/{order_id}/confirmation", post(resend_confirmation))
        .with_state(state);
    Ok(super::serve_http(
        "checkout",
        listener,
        super::traced(router, telemetry, addr),
        shutdown,
    ))
}

impl Checkout {
    /// An order as the gateway reads it; `checkout:bad-response` renames one field.
    fn reply(&self, order: &Order) -> Value {
        let mut value = json!({
            "order_id": order.order_id,
            "status": order.status,
            "total_cents": order.total_cents,
            "payment_id": order.payment_id,
            "confirmation_email": order.confirmation_email,
        });
        if self.rename_order_id
            && let Some(map) = value.as_object_mut()
            && let Some(id) = map.remove("order_id")
        {
            map.insert("orderId".to_owned(), id);
        }
        value
    }

    fn order(&self, order_id: &str) -> Result<Order, ApiError> {
        self.orders
            .lock()
            .map_err(|_| ApiError::new(500, "internal", "order state poisoned"))?
            .get(order_id)
            .cloned()
            .ok_or_else(|| ApiError::new(404, "unknown_order", format!("no order {order_id}")))
    }

    fn save(&self, order: Order) -> Result<(), ApiError> {
        self.orders
            .lock()
            .map_err(|_| ApiError::new(500, "internal", "order state poisoned"))?
            .insert(order.order_id.clone(), order);
        Ok(())
    }

    /// Asks notifications for the confirmation email; the error is for the caller to weigh.
    async fn send_confirmation(&self, cx: &Context, order: &Order) -> Result<(), String> {
        let out = Outbound::new(
            Method::POST,
            format!("{}/emails", self.notifications_url),
            "/emails",
        )
        .json(json!({
            "to": order.email,
            "template": "order_confirmation",
            "order_id": order.order_id,
        }));
        let response = self
            .http
            .send(cx, out)
            .await
            .map_err(|e| format!("cannot reach notifications: {e}"))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            let body = read_json_quietly(response).await;
            Err(format!(
                "notifications answered {status}: {}",
                body["message"].as_str().unwrap_or("no message")
            ))
        }
    }
}

#[derive(Deserialize)]
struct PlaceOrder {
    cart_id: String,
    email: String,
    card: String,
}

#[derive(Deserialize)]
struct CartReply {
    items: Vec<Item>,
}

async fn place_order(
    State(c): State<Arc<Checkout>>,
    Extension(SpanCx(cx)): Extension<SpanCx>,
    Json(req): Json<PlaceOrder>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // 1. What is in the cart.
    let out = Outbound::new(
        Method::GET,
        format!("{}/carts/{}", c.cart_url, req.cart_id),
        "/carts/{cart_id}",
    );
    let response =
        c.http.send(&cx, out).await.map_err(|e| {
            ApiError::new(502, "cart_unreachable", format!("cannot reach cart: {e}"))
        })?;
    if !response.status().is_success() {
        return Err(ApiError::new(
            502,
            "cart_error",
            format!("cart answered {}", response.status()),
        ));
    }
    let cart: CartReply = read_json(&cx, response)
        .await
        .map_err(|e| ApiError::new(502, "cart_error", e.message))?;
    if cart.items.is_empty() {
        return Err(ApiError::new(400, "empty_cart", "the cart is empty"));
    }

    // 2. Hold the stock.
    let order_id = format!("ord-{:05}", c.next_order.fetch_add(1, Ordering::Relaxed));
    let reserve = pb::ReserveRequest {
        order_id: order_id.clone(),
        items: cart
            .items
            .iter()
            .map(|i| pb::LineItem {
                sku: i.sku.clone(),
                quantity: i.quantity,
            })
            .collect(),
    };
    let mut client = c.inventory.clone();
    let reservation = grpc_client_call(
        &c.telemetry,
        &cx,
        c.inventory_addr,
        "Reserve",
        super::INVENTORY_DEADLINE,
        reserve,
        |r| async move { client.reserve(r).await },
    )
    .await
    .map_err(|status| match status.code() {
        tonic::Code::FailedPrecondition => {
            ApiError::new(409, "out_of_stock", status.message().to_owned())
        }
        tonic::Code::DeadlineExceeded => ApiError::new(
            504,
            "inventory_timeout",
            format!("inventory did not answer in time: {}", status.message()),
        ),
        _ => ApiError::new(
            502,
            "inventory_error",
            format!("inventory failed: {}", status.message()),
        ),
    })?;

    // 3. Charge (twice under `payments:double-charge`: the first answer is dropped unread).
    let charge = || {
        Outbound::new(
            Method::POST,
            format!("{}/charge", c.payments_url),
            "/charge",
        )
        .json(json!({
            "order_id": order_id,
            "amount_cents": reservation.total_cents,
            "card": req.card,
        }))
    };
    let unreachable = |e| {
        ApiError::new(
            502,
            "payments_unreachable",
            format!("cannot reach payments: {e}"),
        )
    };
    if c.double_charge {
        let first = c.http.send(&cx, charge()).await.map_err(unreachable)?;
        if first.status() == StatusCode::PAYMENT_REQUIRED {
            return Err(ApiError::new(
                402,
                "payment_declined",
                "the payment was declined",
            ));
        }
    }
    let response = c.http.send(&cx, charge()).await.map_err(unreachable)?;
    let status = response.status();
    if status == StatusCode::PAYMENT_REQUIRED {
        return Err(ApiError::new(
            402,
            "payment_declined",
            "the payment was declined",
        ));
    }
    if !status.is_success() {
        let body = read_json_quietly(response).await;
        return Err(ApiError::new(
            502,
            "payment_failed",
            format!(
                "payment failed: payments answered {status}: {}",
                body["message"].as_str().unwrap_or("no message")
            ),
        ));
    }
    let payment: Value = read_json(&cx, response)
        .await
        .map_err(|e| ApiError::new(502, "payment_failed", e.message))?;

    // 4. Tell the warehouse.
    let event = OrderPlaced {
        order_id: order_id.clone(),
        reservation_id: reservation.reservation_id,
    };
    let body =
        serde_json::to_vec(&event).map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
    c.broker
        .publish(&c.telemetry, &cx, order_id.clone(), body)
        .await
        .map_err(|e| ApiError::new(503, "queue_unavailable", e))?;

    // 5. Confirm by email; a failure leaves a paid order whose email is to be resent.
    let mut order = Order {
        order_id,
        email: req.email,
        status: "paid",
        total_cents: reservation.total_cents,
        payment_id: payment["payment_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        confirmation_email: "pending",
    };
    order.confirmation_email = match c.send_confirmation(&cx, &order).await {
        Ok(()) => "sent",
        Err(e) => {
            tracing::debug!(order = %order.order_id, error = %e, "confirmation email failed");
            "failed"
        }
    };
    let reply = c.reply(&order);
    c.save(order)?;
    Ok((StatusCode::CREATED, Json(reply)))
}

async fn view_order(
    State(c): State<Arc<Checkout>>,
    Path(order_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let order = c.order(&order_id)?;
    Ok(Json(c.reply(&order)))
}

async fn resend_confirmation(
    State(c): State<Arc<Checkout>>,
    Extension(SpanCx(cx)): Extension<SpanCx>,
    Path(order_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut order = c.order(&order_id)?;
    c.send_confirmation(&cx, &order)
        .await
        .map_err(|e| ApiError::new(502, "confirmation_failed", e))?;
    order.confirmation_email = "sent";
    c.save(order.clone())?;
    Ok(Json(json!({
        "order_id": order.order_id,
        "confirmation_email": order.confirmation_email,
    })))
}
