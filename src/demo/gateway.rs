//! `gateway`: the shop's public API, the only service the test suite talks to.
//!
//! It relays the answers a client is meant to see (a wrong password, a declined card, an empty
//! shelf) and turns every other upstream trouble into 502 (504 when an upstream ran out of
//! time), recording why on its server span. It decodes what checkout answers into its own
//! `OrderReply` after the client span has ended, so a reply it cannot use shows up as a decode
//! exception in the gateway's own span right after a successful call.

use std::net::SocketAddr;
use std::sync::Arc;

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

use super::Addrs;
use super::pb;
use super::pb::inventory_client::InventoryClient;
use super::telemetry::{
    ApiError, HttpClient, Outbound, SpanCx, Telemetry, TransportError, grpc_client_call, read_json,
    read_json_quietly,
};
use super::users::GATEWAY_CREDENTIALS;

struct Gateway {
    telemetry: Telemetry,
    http: HttpClient,
    inventory: InventoryClient<Channel>,
    inventory_addr: SocketAddr,
    users_url: String,
    cart_url: String,
    checkout_url: String,
    notifications_url: String,
}

pub(crate) fn spawn(
    listener: TcpListener,
    telemetry: Telemetry,
    addrs: &Addrs,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let addr = listener.local_addr()?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", addrs.inventory))?
        .connect_lazy();
    let state = Arc::new(Gateway {
        telemetry: telemetry.clone(),
        http: HttpClient::new(telemetry.clone(), super::HTTP_TIMEOUT)?,
        inventory: InventoryClient::new(channel),
        inventory_addr: addrs.inventory,
        users_url: format!("http://{}", addrs.users),
        cart_url: format!("http://{}", addrs.cart),
        checkout_url: format!("http://{}", addrs.checkout),
        notifications_url: format!("http://{}", addrs.notifications),
    });
    let router = Router::new()
        .route("/api/signup", post(signup))
        .route("/api/login", post(login))
        .route("/api/password-reset", post(password_reset))
        .route("/api/products", get(list_products))
        .route("/api/products/{sku}", get(get_product))
        .route("/api/carts/{cart_id}/items", post(add_to_cart))
        .route("/api/carts/{cart_id}", get(view_cart))
        .route("/api/checkout", post(checkout))
        .route("/api/orders/{order_id}", get(view_order))
        .route(
            "/api/orders/{order_id}/confirmation",
            post(resend_confirmation),
        )
        .with_state(state);
    Ok(super::serve_http(
        "gateway",
        listener,
        super::traced(router, telemetry, addr),
        shutdown,
    ))
}

type Reply = Result<(StatusCode, Json<Value>), ApiError>;

/// Which upstream error answers are the client's to see.
enum Relay<'a> {
    Never,
    /// These status codes, as they came.
    Statuses(&'a [u16]),
    /// This status code only with this `error` code in the body.
    StatusWithCode(u16, &'a str),
}

impl Gateway {
    /// Calls an HTTP upstream and returns its 2xx status and response (body unread), or the
    /// answer the client gets instead.
    async fn call(
        &self,
        cx: &Context,
        upstream: &'static str,
        out: Outbound<'_>,
        relay: Relay<'_>,
    ) -> Result<(StatusCode, reqwest::Response), ApiError> {
        let response = self
            .http
            .send(cx, out)
            .await
            .map_err(|e| unreachable_upstream(upstream, &e))?;
        let status = response.status();
        if status.is_success() {
            return Ok((status, response));
        }
        // The error body is read after the client span ended, like any body.
        let body = read_json_quietly(response).await;
        let error = body["error"].as_str().unwrap_or("");
        let relayed = match relay {
            Relay::Never => false,
            Relay::Statuses(codes) => codes.contains(&status.as_u16()),
            Relay::StatusWithCode(code, wanted) => status.as_u16() == code && error == wanted,
        };
        if relayed {
            return Err(ApiError {
                status,
                code: relay_code(error),
                message: body["message"].as_str().unwrap_or_default().to_owned(),
                exception: None,
            });
        }
        let (code, kind) = if status == StatusCode::GATEWAY_TIMEOUT {
            (504, "upstream_timeout")
        } else {
            (502, "upstream_error")
        };
        Err(ApiError::new(
            code,
            kind,
            format!(
                "{upstream} answered {status}: {}",
                body["message"].as_str().unwrap_or("no message")
            ),
        ))
    }

    /// `call`, then the 2xx body decoded as `T` in the gateway's own span.
    async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        cx: &Context,
        upstream: &'static str,
        out: Outbound<'_>,
        relay: Relay<'_>,
    ) -> Result<(StatusCode, T), ApiError> {
        let (status, response) = self.call(cx, upstream, out, relay).await?;
        let value = read_json(cx, response).await.map_err(|e| {
            ApiError::new(
                502,
                "bad_upstream_response",
                format!("cannot use the answer of {upstream}: {}", e.message),
            )
        })?;
        Ok((status, value))
    }

    fn users(&self, method: Method, path: &'static str, body: Value) -> Outbound<'static> {
        Outbound::new(method, format!("{}{path}", self.users_url), path)
            .header("authorization", GATEWAY_CREDENTIALS)
            .json(body)
    }
}

/// The client-facing error codes are fixed strings; an upstream's code is mapped onto them.
fn relay_code(upstream: &str) -> &'static str {
    match upstream {
        "email_taken" => "email_taken",
        "invalid_password" => "invalid_password",
        "unknown_email" => "unknown_email",
        "payment_declined" => "payment_declined",
        "out_of_stock" => "out_of_stock",
        "unknown_order" => "unknown_order",
        _ => "upstream_error",
    }
}

fn unreachable_upstream(upstream: &str, e: &TransportError) -> ApiError {
    let code = if e.kind == "timeout" { 504 } else { 502 };
    ApiError::new(
        code,
        "upstream_unreachable",
        format!("cannot reach {upstream}: {e}"),
    )
}

fn grpc_error(status: tonic::Status) -> ApiError {
    match status.code() {
        tonic::Code::NotFound => ApiError::new(404, "unknown_product", status.message()),
        tonic::Code::DeadlineExceeded => ApiError::new(
            504,
            "upstream_timeout",
            format!("inventory did not answer in time: {}", status.message()),
        ),
        _ => ApiError::new(
            502,
            "upstream_error",
            format!("inventory failed: {}", status.message()),
        ),
    }
}

async fn signup(
    State(g): State<Arc<Gateway>>,
    Extension(SpanCx(cx)): Extension<SpanCx>,
    Json(body): Json<Value>,
) -> Reply {
    let out = g.users(Method::POST, "/users", body);
    let (_, user): (_, Value) = g
        .call_json(&cx, "users", out, Relay::Statuses(&[409]))
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

async fn login(
    State(g): State<Arc<Gateway>>,
    Extension(SpanCx(cx)): Extension<SpanCx>,
    Json(body): Json<Value>,
) -> Reply {
    let out = g.users(Method::POST, "/sessions", body);
    let (_, session): (_, Value) = g
        .call_json(
            &cx,
            "users",
            out,
            Relay::StatusWithCode(401, "invalid_password"),
        )
        .await?;
    Ok((StatusCode::OK, Json(session)))
}

#[derive(Deserialize)]
struct ResetRequest {
    email: String,
}

#[derive(Deserialize)]
struct ResetReply {
    reset_token: String,
}

async fn password_reset(
    State(g): State<Arc<Gateway>>,
    Extension(SpanCx(cx)): Extension<SpanCx>,
    Json(req): Json<ResetRequest>,
) -> Reply {
    let out = g.users(
        Method::POST,
        "/password-resets",
        json!({"email": req.email}),
    );
    let (_, reset): (_, ResetReply) = g
        .call_json(&cx, "users", out, Relay::Statuses(&[404]))
        .await?;
    let out = Outbound::new(
        Method::POST,
        format!("{}/emails", g.notifications_url),
        "/emails",
    )
    .json(json!({"to": req.email, "template": "password_reset", "token": reset.reset_token}));
    let (_, sent): (_, Value) = g.call_json(&cx, "notifications", out, Relay::Never).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"sent": true, "message_id": sent["message_id"]})),
    ))
}

async fn list_products(
    State(g): State<Arc<Gateway>>,
    Extension(SpanCx(cx)): Extension<SpanCx>,
) -> Reply {
    let mut client = g.inventory.clone();
    let reply = grpc_client_call(
        &g.telemetry,
        &cx,
        g.inventory_addr,
        "ListProducts",
        super::INVENTORY_DEADLINE,
        pb::ListProductsRequest {},
        |r| async move { client.list_products(r).await },
    )
    .await
    .map_err(grpc_error)?;
    let products: Vec<Value> = reply.products.iter().map(product_json).collect();
    Ok((StatusCode::OK, Json(json!({"products": products}))))
}

async fn get_product(
    State(g): State<Arc<Gateway>>,
    Extension(SpanCx(cx)): Extension<SpanCx>,
    Path(sku): Path<String>,
) -> Reply {
    let mut client = g.inventory.clone();
    let product = grpc_client_call(
        &g.telemetry,
        &cx,
        g.inventory_addr,
        "GetProduct",
        super::INVENTORY_DEADLINE,
        pb::GetProductRequest { sku },
        |r| async move { client.get_product(r).await },
    )
    .await
    .map_err(grpc_error)?;
    Ok((StatusCode::OK, Json(product_json(&product))))
}

fn product_json(p: &pb::Product) -> Value {
    json!({
        "sku": p.sku,
        "name": p.name,
        "price_cents": p.price_cents,
        "in_stock": p.stock > 0,
    })
}

async fn add_to_cart(
    State(g): State<Arc<Gateway>>,
    Extension(SpanCx(cx)): Extension<SpanCx>,
    Path(cart_id): Path<String>,
    Json(body): Json<Value>,
) -> Reply {
    // The gateway speaks cart's original schema: `sku` and `quantity`.
    let item = json!({"sku": body["sku"], "quantity": body["quantity"]});
    let out = Outbound::new(
        Method::POST,
        format!("{}/carts/{cart_id}/items", g.cart_url),
        "/carts/{cart_id}/items",
    )
    .json(item);
    let (_, cart): (_, Value) = g.call_json(&cx, "cart", out, Relay::Never).await?;
    Ok((StatusCode::CREATED, Json(cart)))
}

async fn view_cart(
    State(g): State<Arc<Gateway>>,
    Extension(SpanCx(cx)): Extension<SpanCx>,
    Path(cart_id): Path<String>,
) -> Reply {
    let out = Outbound::new(
        Method::GET,
        format!("{}/carts/{cart_id}", g.cart_url),
        "/carts/{cart_id}",
    );
    let (_, cart): (_, Value) = g.call_json(&cx, "cart", out, Relay::Never).await?;
    Ok((StatusCode::OK, Json(cart)))
}

/// An order as the gateway understands checkout's replies.
#[derive(Deserialize, Serialize)]
struct OrderReply {
    order_id: String,
    status: String,
    total_cents: i64,
    confirmation_email: String,
}

async fn checkout(
    State(g): State<Arc<Gateway>>,
    Extension(SpanCx(cx)): Extension<SpanCx>,
    Json(body): Json<Value>,
) -> Reply {
    let out = Outbound::new(
        Method::POST,
        format!("{}/orders", g.checkout_url),
        "/orders",
    )
    .json(body);
    let (status, order): (_, OrderReply) = g
        .call_json(&cx, "checkout", out, Relay::Statuses(&[400, 402, 409]))
        .await?;
    Ok((status, Json(json!(order))))
}

async fn view_order(
    State(g): State<Arc<Gateway>>,
    Extension(SpanCx(cx)): Extension<SpanCx>,
    Path(order_id): Path<String>,
) -> Reply {
    let out = Outbound::new(
        Method::GET,
        format!("{}/orders/{order_id}", g.checkout_url),
        "/orders/{order_id}",
    );
    let (_, order): (_, OrderReply) = g
        .call_json(&cx, "checkout", out, Relay::Statuses(&[404]))
        .await?;
    Ok((StatusCode::OK, Json(json!(order))))
}

#[derive(Deserialize, Serialize)]
struct ConfirmationReply {
    confirmation_email: String,
}

async fn resend_confirmation(
    State(g): State<Arc<Gateway>>,
    Extension(SpanCx(cx)): Extension<SpanCx>,
    Path(order_id): Path<String>,
) -> Reply {
    let out = Outbound::new(
        Method::POST,
        format!("{}/orders/{order_id}/confirmation", g.checkout_url),
        "/orders/{order_id}/confirmation",
    );
    let (_, reply): (_, ConfirmationReply) = g
        .call_json(&cx, "checkout", out, Relay::Statuses(&[404]))
        .await?;
    Ok((StatusCode::OK, Json(json!(reply))))
}
