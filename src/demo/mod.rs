//! The demo shop: a small instrumented system, its integration suite, and faults to inject.
//!
//! It is real in every part tracecov looks at. Seven services, each a server on its own loopback
//! port with its own OpenTelemetry tracer provider (own `service.name` and `service.version`, no
//! `service.namespace`), export OTLP/HTTP through the SDK's batch processor and propagate W3C
//! trace context on every call (inventory exports its log records through the SDK's logs
//! pipeline as well):
//!
//! ```text
//! shop-tests ─HTTP─> gateway ─HTTP─> users ─SQL─> db:sqlite/users
//!            ─send─> queue:memory/orders ─process─> inventory
//!                            ─HTTP─> cart
//!                            ─gRPC─> inventory            (tracecov.demo.v1.Inventory)
//!                            ─HTTP─> notifications ─HTTP─> ext:email-provider (no spans)
//!                            ─HTTP─> checkout ─HTTP─> cart, payments, notifications
//!                                             ─gRPC─> inventory
//!                                             ─send─> queue:memory/orders ─process─> inventory
//! ```
//!
//! `start` binds and starts everything, `Shop::run_suite` runs the concurrent test cases (spans
//! of the `shop-tests` service with `test.case.name` and `test.case.result.status`), and
//! `Shop::shutdown` stops the servers and flushes every provider.
//!
//! The module owns no analysis: what tracecov should conclude from each fault is written down
//! in `expected_failures` and checked by the blame tests, not computed here.

mod broker;
mod cart;
mod checkout;
mod gateway;
mod inventory;
mod notifications;
mod payments;
mod suite;
mod telemetry;
mod users;

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use telemetry::Telemetry;

pub use suite::{SuiteResult, TestResult};

/// The generated code of `proto/tracecov/demo/v1/shop.proto`.
pub(crate) mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("tracecov.demo.v1");
}

/// The test-driver service every test case span belongs to.
pub const TEST_SERVICE: &str = "shop-tests";

/// The services that report spans (the email provider reports none).
pub const SERVICES: [&str; 8] = [
    TEST_SERVICE,
    "gateway",
    "users",
    "cart",
    "checkout",
    "payments",
    "inventory",
    "notifications",
];

/// How long a gRPC caller waits for inventory before giving up with DEADLINE_EXCEEDED: room
/// enough above `INVENTORY_LAG` for a busy CI machine's scheduling delays (at 250 ms, a lagging
/// call on a loaded machine now and then missed it and failed a test `inventory:lag` must keep
/// green).
const INVENTORY_DEADLINE: Duration = Duration::from_millis(400);
/// How long inventory takes under `inventory:slow`: well past `INVENTORY_DEADLINE`.
const INVENTORY_SLOW: Duration = Duration::from_millis(750);
/// How much longer inventory takes under `inventory:lag`: well within `INVENTORY_DEADLINE`, so
/// no test fails, and far above the healthy calls' few milliseconds, so the p95 of every
/// interface into inventory grows past any regression threshold.
const INVENTORY_LAG: Duration = Duration::from_millis(80);
/// The HTTP client timeout between services.
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

/// A fault injected into the shop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// No fault (`none`): selecting only this runs the healthy shop.
    None,
    /// `payments:500`: every charge fails inside payments with an exception.
    Payments500,
    /// `email:down`: the email provider's port is closed.
    EmailDown,
    /// `cart:422`: cart expects a newer request schema than the gateway sends.
    Cart422,
    /// `users:401`: users no longer accepts the gateway's service credentials.
    Users401,
    /// `inventory:slow`: inventory answers after its callers' deadline.
    InventorySlow,
    /// `checkout:bad-response`: checkout renames `order_id` in its order replies.
    CheckoutBadResponse,
    /// `inventory:consumer-error`: inventory's queue consumer logs an exception and drops every
    /// order event, its span status left unset.
    InventoryConsumerError,
    /// `inventory:lag`: every inventory gRPC method takes `INVENTORY_LAG` longer, within its
    /// callers' deadline: no test fails, the run is only slower (a latency regression).
    InventoryLag,
    /// `payments:double-charge`: checkout sends every charge twice (a retry after an answer it
    /// did not wait for); payments charges both, every test still passes: only an expectation
    /// (`calls {max: 1}`) sees it.
    PaymentsDoubleCharge,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Payments500 => "payments:500",
            Fault::EmailDown => "email:down",
            Fault::Cart422 => "cart:422",
            Fault::Users401 => "users:401",
            Fault::InventorySlow => "inventory:slow",
            Fault::CheckoutBadResponse => "checkout:bad-response",
            Fault::InventoryConsumerError => "inventory:consumer-error",
            Fault::InventoryLag => "inventory:lag",
            Fault::PaymentsDoubleCharge => "payments:double-charge",
        }
    }

    /// One sentence for people: what this fault does to the shop.
    pub fn description(self) -> &'static str {
        match self {
            Fault::None => "no fault",
            Fault::Payments500 => "payments fails every charge with HTTP 500",
            Fault::EmailDown => "the email provider is down (its port is closed)",
            Fault::Cart422 => "cart rejects the gateway's requests with 422 (schema mismatch)",
            Fault::Users401 => "users rejects the gateway's service credentials with 401",
            Fault::InventorySlow => "inventory answers after its callers' gRPC deadline",
            Fault::CheckoutBadResponse => {
                "checkout renames a field in its replies, so the gateway cannot decode them"
            }
            Fault::InventoryConsumerError => {
                "inventory's queue consumer logs an error and drops every order event"
            }
            Fault::InventoryLag => {
                "inventory answers 80 ms later than usual, within its callers' deadline"
            }
            Fault::PaymentsDoubleCharge => "checkout charges every order twice; no test notices",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown fault name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault {0:?}: expected none, {names}", names = fault_names())]
pub struct UnknownFault(pub String);

fn fault_names() -> String {
    all_faults()
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for Fault {
    type Err = UnknownFault;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        std::iter::once(Fault::None)
            .chain(all_faults())
            .find(|f| f.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownFault(s.to_owned()))
    }
}

/// The default scenario of `tracecov demo`: a failing callee and an unreachable external.
pub fn default_faults() -> Vec<Fault> {
    vec![Fault::Payments500, Fault::EmailDown]
}

/// Every real fault (not `Fault::None`).
pub fn all_faults() -> Vec<Fault> {
    vec![
        Fault::Payments500,
        Fault::EmailDown,
        Fault::Cart422,
        Fault::Users401,
        Fault::InventorySlow,
        Fault::CheckoutBadResponse,
        Fault::InventoryConsumerError,
        Fault::InventoryLag,
        Fault::PaymentsDoubleCharge,
    ]
}

/// The test cases that must fail when `faults` are injected; every other test case passes.
///
/// Where each fault must be blamed (DESIGN's failing-hop blame; the blame tests assert it):
///
/// | fault | failing tests | failing hop (caller → callee, operation) | class |
/// |---|---|---|---|
/// | `payments:500` | checkout_paid, checkout_card_declined, order_confirmation_email, view_order | checkout → payments, `POST /charge` | `callee_error` (blamed: payments; exception `LedgerError` "ledger write failed: currency mismatch") |
/// | `email:down` | password_reset_email, order_confirmation_email | notifications → `ext:email-provider`, `POST /v3/mail/send` (client span, no server span) | `unreachable` (connection refused) |
/// | `cart:422` | add_to_cart, view_cart, checkout_paid, checkout_card_declined, checkout_out_of_stock, order_confirmation_email, view_order | gateway → cart, `POST /carts/{cart_id}/items` | `rejected_request` |
/// | `users:401` | signup, login, login_bad_password, password_reset_email | gateway → users (`POST /users`, `POST /sessions`, `POST /password-resets`) | `auth` |
/// | `inventory:slow` | browse_products, product_details, checkout_paid, checkout_card_declined, checkout_out_of_stock, order_confirmation_email, view_order | gateway → inventory (`ListProducts`, `GetProduct`) and checkout → inventory (`Reserve`): DEADLINE_EXCEEDED | `timeout` (blamed: inventory) |
/// | `checkout:bad-response` | checkout_paid, order_confirmation_email, view_order | gateway → checkout, `POST /orders` (200 answered, then a `serde_json::Error` in the gateway's server span) | `response_rejected` |
/// | `inventory:consumer-error` | order_event_fulfilled | `queue:memory/orders` → inventory, `orders` (the consumer span's status is unset; its ERROR log record puts it in error, and the walk crosses the test's producer span, which recorded no outcome) | `callee_error` (blamed: inventory; exception `LedgerLockError` from the log record) |
/// | `inventory:lag` | none: every call into inventory answers 80 ms later, within the deadline | no failure; against a run without it, a latency regression on gateway → inventory (`ListProducts`, `GetProduct`), checkout → inventory (`Reserve`) and the interfaces that waited for them, each blamed on inventory | — |
///
/// Errors that are not failures, for the error counts: `login_bad_password` expects users'
/// 401, `checkout_card_declined` payments' 402, `checkout_out_of_stock` inventory's
/// FAILED_PRECONDITION; under `inventory:consumer-error`, the orders checkout publishes are dropped
/// too, errors below tests that pass (they check the checkout's answer, not the fulfilment); under
/// `email:down`, `checkout_paid` and `view_order` still pass while
/// checkout → notifications fails below them (the order is paid, its email is retried later).
/// With several faults, a test fails at the first faulty hop on its path (under the default
/// scenario, `order_confirmation_email` fails at payments before it reaches the email).
pub fn expected_failures(faults: &[Fault]) -> BTreeSet<&'static str> {
    let mut out = BTreeSet::new();
    for fault in faults {
        let tests: &[&'static str] = match fault {
            Fault::None => &[],
            Fault::Payments500 => &[
                "checkout_paid",
                "checkout_card_declined",
                "order_confirmation_email",
                "view_order",
            ],
            Fault::EmailDown => &["password_reset_email", "order_confirmation_email"],
            Fault::Cart422 => &[
                "add_to_cart",
                "view_cart",
                "checkout_paid",
                "checkout_card_declined",
                "checkout_out_of_stock",
                "order_confirmation_email",
                "view_order",
            ],
            Fault::Users401 => &[
                "signup",
                "login",
                "login_bad_password",
                "password_reset_email",
            ],
            Fault::InventorySlow => &[
                "browse_products",
                "product_details",
                "checkout_paid",
                "checkout_card_declined",
                "checkout_out_of_stock",
                "order_confirmation_email",
                "view_order",
            ],
            Fault::CheckoutBadResponse => {
                &["checkout_paid", "order_confirmation_email", "view_order"]
            }
            Fault::InventoryConsumerError => &["order_event_fulfilled"],
            // Slower, not broken: a latency regression, which fails no test.
            Fault::InventoryLag => &[],
            // Charged twice, and every test passes: an expectation's violation, not a failure.
            Fault::PaymentsDoubleCharge => &[],
        };
        out.extend(tests.iter().copied());
    }
    out
}

/// Every test case of the suite, in the order they are started.
pub fn test_names() -> Vec<&'static str> {
    suite::TestCase::ALL.iter().map(|t| t.name()).collect()
}

/// How to start the shop.
#[derive(Debug, Clone)]
pub struct ShopConfig {
    /// The OTLP/HTTP base URL every service exports to, such as `http://127.0.0.1:4318`
    /// (`/v1/traces` is appended).
    pub otlp_endpoint: String,
    /// The faults to inject; empty or only `Fault::None` runs the healthy shop.
    pub faults: Vec<Fault>,
    /// Extra resource attributes for every service (for example `tracecov.run.id`).
    /// `service.name` and `service.namespace` among them are ignored: they would change the
    /// services' node ids.
    pub resource_attributes: Vec<(String, String)>,
}

impl ShopConfig {
    /// The default scenario exporting to `otlp_endpoint`.
    pub fn new(otlp_endpoint: impl Into<String>) -> Self {
        Self {
            otlp_endpoint: otlp_endpoint.into(),
            faults: default_faults(),
            resource_attributes: Vec::new(),
        }
    }
}

/// The set of active faults, asked by the services.
#[derive(Debug, Clone, Default)]
pub(crate) struct Faults(BTreeSet<Fault>);

impl Faults {
    pub fn has(&self, fault: Fault) -> bool {
        self.0.contains(&fault)
    }
}

/// A running shop. Call `shutdown` when done: it is what exports the last spans (dropping a
/// tracer provider also flushes, but blocks the async thread that drops it).
pub struct Shop {
    gateway_url: String,
    faults: Vec<Fault>,
    driver: suite::Driver,
    broker: broker::Broker,
    /// Every provider, the driver's included, so shutdown can flush them all.
    telemetry: Vec<Telemetry>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// Numbers suite runs so a second run on the same shop signs up fresh users.
    runs: AtomicU64,
}

/// Starts every service of the shop on free loopback ports, exporting to
/// `config.otlp_endpoint`. Must be called inside a tokio runtime.
pub async fn start(config: ShopConfig) -> anyhow::Result<Shop> {
    let faults = Faults(
        config
            .faults
            .iter()
            .copied()
            .filter(|f| *f != Fault::None)
            .collect(),
    );
    let shutdown = CancellationToken::new();
    let telemetry = |service: &'static str| {
        Telemetry::new(service, &config.otlp_endpoint, &config.resource_attributes)
            .with_context(|| format!("cannot set up the tracer provider of {service}"))
    };

    // Bind everything first: each service learns its peers' addresses before any starts.
    let gateway_l = bind("gateway").await?;
    let users_l = bind("users").await?;
    let cart_l = bind("cart").await?;
    let checkout_l = bind("checkout").await?;
    let payments_l = bind("payments").await?;
    let inventory_l = bind("inventory").await?;
    let notifications_l = bind("notifications").await?;
    let email_l = bind("the email provider").await?;
    let addr = |l: &TcpListener| l.local_addr().context("reading a bound address");
    let addrs = Addrs {
        gateway: addr(&gateway_l)?,
        users: addr(&users_l)?,
        cart: addr(&cart_l)?,
        checkout: addr(&checkout_l)?,
        payments: addr(&payments_l)?,
        inventory: addr(&inventory_l)?,
        notifications: addr(&notifications_l)?,
        email: addr(&email_l)?,
    };

    let mut tasks = Vec::new();
    let mut providers = Vec::new();
    let (broker, orders) = broker::Broker::new();

    if faults.has(Fault::EmailDown) {
        // Closing the listener leaves a port nothing answers on: connection refused.
        drop(email_l);
    } else {
        tasks.push(notifications::spawn_email_provider(
            email_l,
            shutdown.clone(),
        ));
    }

    let t = telemetry("users")?;
    providers.push(t.clone());
    tasks.push(users::spawn(users_l, t, &faults, shutdown.clone())?);

    let t = telemetry("cart")?;
    providers.push(t.clone());
    tasks.push(cart::spawn(cart_l, t, &faults, shutdown.clone())?);

    let t = telemetry("payments")?;
    providers.push(t.clone());
    tasks.push(payments::spawn(payments_l, t, &faults, shutdown.clone())?);

    // Inventory logs through OpenTelemetry too: its consumer's errors exist only as log records.
    let t = Telemetry::with_logs(
        "inventory",
        &config.otlp_endpoint,
        &config.resource_attributes,
    )
    .context("cannot set up the tracer and logger providers of inventory")?;
    providers.push(t.clone());
    tasks.extend(inventory::spawn(
        inventory_l,
        t,
        &faults,
        orders,
        broker.clone(),
        shutdown.clone(),
    )?);

    let t = telemetry("notifications")?;
    providers.push(t.clone());
    tasks.push(notifications::spawn(
        notifications_l,
        t,
        addrs.email,
        shutdown.clone(),
    )?);

    let t = telemetry("checkout")?;
    providers.push(t.clone());
    tasks.push(checkout::spawn(
        checkout_l,
        t,
        &faults,
        &addrs,
        broker.clone(),
        shutdown.clone(),
    )?);

    let t = telemetry("gateway")?;
    providers.push(t.clone());
    tasks.push(gateway::spawn(gateway_l, t, &addrs, shutdown.clone())?);

    let t = telemetry(TEST_SERVICE)?;
    providers.push(t.clone());
    let gateway_url = format!("http://{}", addrs.gateway);
    let driver = suite::Driver::new(t, gateway_url.clone(), broker.clone())?;

    Ok(Shop {
        gateway_url,
        faults: faults.0.into_iter().collect(),
        driver,
        broker,
        telemetry: providers,
        shutdown,
        tasks,
        runs: AtomicU64::new(0),
    })
}

impl Shop {
    /// The gateway's base URL (the shop's front door).
    pub fn gateway_url(&self) -> &str {
        &self.gateway_url
    }

    /// The faults this shop runs with (without `Fault::None`).
    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }

    /// Runs every test case concurrently and waits until the order queue is drained, so the
    /// asynchronous consumers' spans belong to the run too.
    pub async fn run_suite(&self) -> SuiteResult {
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        let result = self.driver.run_all(run).await;
        self.broker.wait_idle(Duration::from_secs(5)).await;
        result
    }

    /// Stops every service, then flushes and shuts down every tracer provider: when this
    /// returns, every span has been exported (or the export failed, which is returned).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.broker.wait_idle(Duration::from_secs(5)).await;
        self.shutdown.cancel();
        let aborts: Vec<_> = self.tasks.iter().map(JoinHandle::abort_handle).collect();
        let stopped = futures::future::join_all(self.tasks);
        if tokio::time::timeout(Duration::from_secs(3), stopped)
            .await
            .is_err()
        {
            // A connection that would not close must not keep the spans from leaving.
            for abort in aborts {
                abort.abort();
            }
        }
        let providers = self.telemetry;
        tokio::task::spawn_blocking(move || {
            let mut first_err = None;
            for t in &providers {
                if let Err(e) = t.shutdown() {
                    first_err.get_or_insert(e);
                }
            }
            match first_err {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })
        .await
        .context("the provider shutdown task failed")?
    }
}

/// Where each service listens.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Addrs {
    pub gateway: SocketAddr,
    pub users: SocketAddr,
    pub cart: SocketAddr,
    pub checkout: SocketAddr,
    pub payments: SocketAddr,
    pub inventory: SocketAddr,
    pub notifications: SocketAddr,
    pub email: SocketAddr,
}

async fn bind(what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", 0))
        .await
        .with_context(|| format!("cannot listen for {what} on 127.0.0.1"))
}

/// Serves an axum router until `shutdown` fires.
pub(crate) fn serve_http(
    name: &'static str,
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            tracing::warn!(service = name, error = %e, "demo service stopped");
        }
    })
}

/// The instrumented axum router of a shop service: every route gets a SERVER span.
pub(crate) fn traced(router: axum::Router, telemetry: Telemetry, addr: SocketAddr) -> axum::Router {
    router.route_layer(axum::middleware::from_fn_with_state(
        telemetry::HttpServerTelemetry { telemetry, addr },
        telemetry::http_server_span,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_round_trip() {
        for fault in std::iter::once(Fault::None).chain(all_faults()) {
            assert_eq!(fault.to_string().parse::<Fault>(), Ok(fault));
        }
        assert_eq!("none".parse::<Fault>(), Ok(Fault::None));
        let err = "payments:503".parse::<Fault>().unwrap_err();
        assert!(err.to_string().contains("inventory:slow"), "{err}");
    }

    #[test]
    fn every_fault_but_the_latency_one_fails_some_tests_and_spares_others() {
        let names: BTreeSet<&str> = test_names().into_iter().collect();
        assert!(names.len() >= 12);
        assert!(expected_failures(&[Fault::None]).is_empty());
        assert!(expected_failures(&[Fault::InventoryLag]).is_empty());
        assert!(expected_failures(&[Fault::PaymentsDoubleCharge]).is_empty());
        for fault in all_faults() {
            let failing = expected_failures(&[fault]);
            if matches!(fault, Fault::InventoryLag | Fault::PaymentsDoubleCharge) {
                continue;
            }
            assert!(!failing.is_empty(), "{fault}");
            assert!(failing.is_subset(&names), "{fault}: {failing:?}");
            assert!(failing.len() < names.len(), "{fault}");
        }
    }
}
