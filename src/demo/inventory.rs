//! `inventory`: products and stock over gRPC (`tracecov.demo.v1.Inventory`, tonic), and the
//! consumer of the `orders` queue.
//!
//! The poster is sold out, so reserving it answers FAILED_PRECONDITION (the out-of-stock test
//! expects that). Under `inventory:slow` every gRPC method takes longer than its callers'
//! deadline; under `inventory:lag` each takes 80 ms longer, inside its server span and well
//! within the deadline, so only the latency shows it. The consumer starts each CONSUMER span as a child of the producer's context and
//! links it to the producer too: the pairing tracecov reads either way. Under
//! `inventory:consumer-error` the consumer cannot commit any order: it logs the exception as an
//! OTLP log record of its span and drops the message, leaving the span's status unset (as many
//! consumers do), so the log record is the only trace of the error.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use opentelemetry::KeyValue;
use opentelemetry::trace::{Link, SpanKind, TraceContextExt as _};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::broker::{self, Broker, Message};
use super::pb;
use super::pb::inventory_server::{Inventory, InventoryServer};
use super::telemetry::{Telemetry, grpc_server_call, record_exception, set_error};
use super::{Fault, Faults};

/// The product that is never in stock.
pub(crate) const SOLD_OUT_SKU: &str = "poster";

struct Stock {
    telemetry: Telemetry,
    addr: SocketAddr,
    /// How long every gRPC method waits before answering (`inventory:slow`, `inventory:lag`).
    delay: Option<std::time::Duration>,
    /// `inventory:consumer-error`: every order event fails to commit and is dropped.
    consumer_fails: bool,
    products: Mutex<BTreeMap<String, pb::Product>>,
    reservations: AtomicU64,
    /// Orders whose reservation the consumer committed.
    fulfilled: Mutex<Vec<String>>,
}

fn catalog() -> BTreeMap<String, pb::Product> {
    [
        ("mug", "Tracecov mug", 1200, 1_000_000),
        ("tshirt", "Span t-shirt", 2500, 1_000_000),
        ("sticker", "Hop sticker", 300, 1_000_000),
        (SOLD_OUT_SKU, "Call-graph poster", 1800, 0),
    ]
    .into_iter()
    .map(|(sku, name, price_cents, stock)| {
        (
            sku.to_owned(),
            pb::Product {
                sku: sku.to_owned(),
                name: name.to_owned(),
                price_cents,
                stock,
            },
        )
    })
    .collect()
}

/// Starts the gRPC server and the queue consumer.
pub(crate) fn spawn(
    listener: TcpListener,
    telemetry: Telemetry,
    faults: &Faults,
    orders: mpsc::Receiver<Message>,
    broker: Broker,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let addr = listener.local_addr()?;
    let stock = Arc::new(Stock {
        telemetry,
        addr,
        delay: if faults.has(Fault::InventorySlow) {
            Some(super::INVENTORY_SLOW)
        } else if faults.has(Fault::InventoryLag) {
            Some(super::INVENTORY_LAG)
        } else {
            None
        },
        consumer_fails: faults.has(Fault::InventoryConsumerError),
        products: Mutex::new(catalog()),
        reservations: AtomicU64::new(0),
        fulfilled: Mutex::new(Vec::new()),
    });
    let token = shutdown.clone();
    let service = InventoryServer::new(Service(stock.clone()));
    let server = tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                token.cancelled_owned(),
            )
            .await
        {
            tracing::warn!(service = "inventory", error = %e, "demo service stopped");
        }
    });
    let consumer = tokio::spawn(consume(stock, orders, broker, shutdown));
    Ok(vec![server, consumer])
}

struct Service(Arc<Stock>);

impl Stock {
    async fn maybe_slow(&self) {
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
    }

    fn products(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<String, pb::Product>>, Status> {
        self.products
            .lock()
            .map_err(|_| Status::internal("stock state poisoned"))
    }
}

#[tonic::async_trait]
impl Inventory for Service {
    async fn list_products(
        &self,
        request: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        let stock = &self.0;
        grpc_server_call(
            &stock.telemetry,
            stock.addr,
            "ListProducts",
            request,
            |_, _| async {
                stock.maybe_slow().await;
                Ok(pb::ListProductsResponse {
                    products: stock.products()?.values().cloned().collect(),
                })
            },
        )
        .await
    }

    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::Product>, Status> {
        let stock = &self.0;
        grpc_server_call(
            &stock.telemetry,
            stock.addr,
            "GetProduct",
            request,
            |_, req| async move {
                stock.maybe_slow().await;
                stock
                    .products()?
                    .get(&req.sku)
                    .cloned()
                    .ok_or_else(|| Status::not_found(format!("no product {:?}", req.sku)))
            },
        )
        .await
    }

    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        let stock = &self.0;
        grpc_server_call(
            &stock.telemetry,
            stock.addr,
            "Reserve",
            request,
            |_, req| async move {
                stock.maybe_slow().await;
                if req.items.is_empty() {
                    return Err(Status::invalid_argument("nothing to reserve"));
                }
                let mut products = stock.products()?;
                // Check every line before taking anything, so a refused order holds no stock.
                let mut total = 0;
                for item in &req.items {
                    let product = products
                        .get(&item.sku)
                        .ok_or_else(|| Status::not_found(format!("no product {:?}", item.sku)))?;
                    if product.stock < item.quantity {
                        return Err(Status::failed_precondition(format!(
                            "out of stock: {} ({} left, {} wanted)",
                            item.sku, product.stock, item.quantity
                        )));
                    }
                    total += product.price_cents * item.quantity;
                }
                for item in &req.items {
                    if let Some(product) = products.get_mut(&item.sku) {
                        product.stock -= item.quantity;
                    }
                }
                let n = stock.reservations.fetch_add(1, Ordering::Relaxed);
                Ok(pb::ReserveResponse {
                    reservation_id: format!("rsv-{n:05}-{}", req.order_id),
                    total_cents: total,
                })
            },
        )
        .await
    }
}

/// The order event checkout publishes.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct OrderPlaced {
    pub order_id: String,
    pub reservation_id: String,
}

async fn consume(
    stock: Arc<Stock>,
    mut orders: mpsc::Receiver<Message>,
    broker: Broker,
    shutdown: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            m = orders.recv() => m,
            () = shutdown.cancelled() => None,
        };
        let Some(message) = message else { break };
        let id = message.id.clone();
        let handled = process(&stock, message);
        broker.processed(&id, handled);
    }
}

/// Handles one order event in a CONSUMER span; true when the order was committed.
fn process(stock: &Stock, message: Message) -> bool {
    let producer = stock.telemetry.extract_map(&message.headers);
    let producer_span = producer.span().span_context().clone();
    let links = if producer_span.is_valid() {
        vec![Link::with_context(producer_span)]
    } else {
        Vec::new()
    };
    let cx = stock.telemetry.start_with_links(
        &producer,
        format!("process {}", broker::ORDERS),
        SpanKind::Consumer,
        vec![
            KeyValue::new("messaging.system", broker::SYSTEM),
            KeyValue::new("messaging.destination.name", broker::ORDERS),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.operation.name", "process"),
            KeyValue::new("messaging.message.id", message.id.clone()),
            KeyValue::new("messaging.consumer.group.name", "inventory"),
        ],
        links,
    );
    let handled = match serde_json::from_slice::<OrderPlaced>(&message.body) {
        Ok(order) if stock.consumer_fails => {
            // Logged and dropped; the span's status stays unset.
            stock.telemetry.log_error(
                &cx,
                &format!(
                    "dropping order event {}: cannot commit reservation",
                    order.order_id
                ),
                "LedgerLockError",
                &format!(
                    "reservation {} is locked by another writer",
                    order.reservation_id
                ),
            );
            false
        }
        Ok(order) => {
            if let Ok(mut fulfilled) = stock.fulfilled.lock() {
                fulfilled.push(order.order_id);
            }
            true
        }
        Err(e) => {
            let text = format!("cannot decode order event: {e}");
            record_exception(&cx, "serde_json::Error", &text);
            set_error(&cx, text);
            false
        }
    };
    cx.span().end();
    handled
}
