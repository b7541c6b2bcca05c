//! The shop's integration suite, run by the test-driver service `shop-tests`.
//!
//! Every test case is a root span named after the test, with `test.case.name` and, when it
//! ends, `test.case.result.status` (`pass`/`fail`; status ERROR and the reason on failure). Its
//! HTTP calls into the gateway are CLIENT spans below it, so the driver → gateway hop exists; one
//! case publishes an order event straight to the `orders` queue (a PRODUCER span below it) and
//! waits for the consumer to acknowledge it.
//! The cases run concurrently and never share data: each signs up its own user and fills its
//! own cart, named after the test and the run. Negative tests expect their error answers (a
//! wrong password, a declined card, a sold-out product) and pass when they get them.

use std::collections::BTreeSet;

use http::Method;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use serde_json::{Value, json};

use super::broker::Broker;
use super::inventory::{OrderPlaced, SOLD_OUT_SKU};
use super::payments::DECLINED_CARD;
use super::telemetry::{HttpClient, Outbound, Telemetry, read_json_quietly, set_error};

/// The outcome of one test case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    pub name: &'static str,
    pub passed: bool,
    /// Why it failed; empty when it passed.
    pub message: String,
    /// The trace id of the test case span, 32 lowercase hex digits.
    pub trace_id: String,
}

/// The outcome of a suite run, in the suite's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SuiteResult {
    pub tests: Vec<TestResult>,
}

impl SuiteResult {
    /// The names of the failed test cases.
    pub fn failed(&self) -> BTreeSet<&'static str> {
        self.tests
            .iter()
            .filter(|t| !t.passed)
            .map(|t| t.name)
            .collect()
    }

    pub fn passed_count(&self) -> usize {
        self.tests.iter().filter(|t| t.passed).count()
    }

    pub fn all_passed(&self) -> bool {
        self.tests.iter().all(|t| t.passed)
    }

    pub fn get(&self, name: &str) -> Option<&TestResult> {
        self.tests.iter().find(|t| t.name == name)
    }
}

const PASSWORD: &str = "correct horse battery staple";
const GOOD_CARD: &str = "4242424242424242";
/// The driver waits longer than any chain of calls below it takes.
const DRIVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a published event may wait for its consumer.
const EVENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) struct Driver {
    telemetry: Telemetry,
    http: HttpClient,
    gateway: String,
    broker: Broker,
}

impl Driver {
    pub fn new(telemetry: Telemetry, gateway: String, broker: Broker) -> anyhow::Result<Self> {
        Ok(Self {
            http: HttpClient::new(telemetry.clone(), DRIVER_TIMEOUT)?,
            telemetry,
            gateway,
            broker,
        })
    }

    /// Runs every test case concurrently.
    pub async fn run_all(&self, run: u64) -> SuiteResult {
        let cases = TestCase::ALL.iter().map(|&case| self.run_one(case, run));
        SuiteResult {
            tests: futures::future::join_all(cases).await,
        }
    }

    async fn run_one(&self, case: TestCase, run: u64) -> TestResult {
        let name = case.name();
        let cx = self.telemetry.start(
            &Context::new(),
            name,
            SpanKind::Internal,
            vec![
                KeyValue::new("test.case.name", name),
                KeyValue::new("test.suite.name", "shop"),
                KeyValue::new("code.function.name", format!("shop::{name}")),
            ],
        );
        let t = TestCtx {
            driver: self,
            cx: &cx,
            tag: format!("{}-r{run}", name.replace('_', "-")),
        };
        let outcome = case.run(&t).await;
        let span = cx.span();
        let trace_id = span.span_context().trace_id().to_string();
        let (passed, message) = match outcome {
            Ok(()) => {
                span.set_attribute(KeyValue::new("test.case.result.status", "pass"));
                span.set_status(Status::Ok);
                (true, String::new())
            }
            Err(message) => {
                span.set_attribute(KeyValue::new("test.case.result.status", "fail"));
                set_error(&cx, message.clone());
                (false, message)
            }
        };
        span.end();
        TestResult {
            name,
            passed,
            message,
            trace_id,
        }
    }
}

/// The test cases, in the suite's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TestCase {
    Signup,
    Login,
    LoginBadPassword,
    PasswordResetEmail,
    BrowseProducts,
    ProductDetails,
    AddToCart,
    ViewCart,
    CheckoutPaid,
    CheckoutCardDeclined,
    CheckoutOutOfStock,
    OrderConfirmationEmail,
    ViewOrder,
    OrderEventFulfilled,
}

impl TestCase {
    pub const ALL: [TestCase; 14] = [
        TestCase::Signup,
        TestCase::Login,
        TestCase::LoginBadPassword,
        TestCase::PasswordResetEmail,
        TestCase::BrowseProducts,
        TestCase::ProductDetails,
        TestCase::AddToCart,
        TestCase::ViewCart,
        TestCase::CheckoutPaid,
        TestCase::CheckoutCardDeclined,
        TestCase::CheckoutOutOfStock,
        TestCase::OrderConfirmationEmail,
        TestCase::ViewOrder,
        TestCase::OrderEventFulfilled,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TestCase::Signup => "signup",
            TestCase::Login => "login",
            TestCase::LoginBadPassword => "login_bad_password",
            TestCase::PasswordResetEmail => "password_reset_email",
            TestCase::BrowseProducts => "browse_products",
            TestCase::ProductDetails => "product_details",
            TestCase::AddToCart => "add_to_cart",
            TestCase::ViewCart => "view_cart",
            TestCase::CheckoutPaid => "checkout_paid",
            TestCase::CheckoutCardDeclined => "checkout_card_declined",
            TestCase::CheckoutOutOfStock => "checkout_out_of_stock",
            TestCase::OrderConfirmationEmail => "order_confirmation_email",
            TestCase::ViewOrder => "view_order",
            TestCase::OrderEventFulfilled => "order_event_fulfilled",
        }
    }

    async fn run(self, t: &TestCtx<'_>) -> Result<(), String> {
        match self {
            TestCase::Signup => {
                let user = t.signup_user().await?;
                ensure(user["id"].is_i64(), "signup answered without a user id")
            }
            TestCase::Login => {
                let email = t.signup().await?;
                let session = t.login(&email, PASSWORD, 200).await?;
                ensure(
                    session["token"].is_string(),
                    "login answered without a token",
                )
            }
            TestCase::LoginBadPassword => {
                let email = t.signup().await?;
                let answer = t.login(&email, "not the password", 401).await?;
                ensure_eq(&answer["error"], "invalid_password", "error code")
            }
            TestCase::PasswordResetEmail => {
                let email = t.signup().await?;
                let answer = t
                    .expect(
                        Method::POST,
                        "/api/password-reset",
                        "/api/password-reset".to_owned(),
                        Some(json!({"email": email})),
                        202,
                    )
                    .await?;
                ensure(
                    answer["sent"] == json!(true),
                    "the reset email was not sent",
                )
            }
            TestCase::BrowseProducts => {
                let answer = t
                    .expect(
                        Method::GET,
                        "/api/products",
                        "/api/products".to_owned(),
                        None,
                        200,
                    )
                    .await?;
                let skus: Vec<&str> = answer["products"]
                    .as_array()
                    .map(|ps| ps.iter().filter_map(|p| p["sku"].as_str()).collect())
                    .unwrap_or_default();
                ensure(
                    skus.contains(&"mug") && skus.contains(&SOLD_OUT_SKU),
                    &format!("the catalog lacks products: {skus:?}"),
                )
            }
            TestCase::ProductDetails => {
                let product = t
                    .expect(
                        Method::GET,
                        "/api/products/{sku}",
                        "/api/products/mug".to_owned(),
                        None,
                        200,
                    )
                    .await?;
                ensure_eq(&product["name"], "Tracecov mug", "product name")
            }
            TestCase::AddToCart => {
                let cart = t.add_item("mug", 2).await?;
                ensure(
                    cart["items"] == json!([{"sku": "mug", "quantity": 2}]),
                    &format!("unexpected cart {cart}"),
                )
            }
            TestCase::ViewCart => {
                t.add_item("mug", 1).await?;
                t.add_item("sticker", 3).await?;
                let cart = t
                    .expect(
                        Method::GET,
                        "/api/carts/{cart_id}",
                        format!("/api/carts/{}", t.tag),
                        None,
                        200,
                    )
                    .await?;
                let lines = cart["items"].as_array().map_or(0, Vec::len);
                ensure(lines == 2, &format!("expected 2 cart lines, got {lines}"))
            }
            TestCase::CheckoutPaid => {
                t.add_item("mug", 1).await?;
                let order = t.checkout(GOOD_CARD, 201).await?;
                ensure_eq(&order["status"], "paid", "order status")
            }
            TestCase::CheckoutCardDeclined => {
                t.add_item("mug", 1).await?;
                let answer = t.checkout(DECLINED_CARD, 402).await?;
                ensure_eq(&answer["error"], "payment_declined", "error code")
            }
            TestCase::CheckoutOutOfStock => {
                t.add_item(SOLD_OUT_SKU, 1).await?;
                let answer = t.checkout(GOOD_CARD, 409).await?;
                ensure_eq(&answer["error"], "out_of_stock", "error code")
            }
            TestCase::OrderConfirmationEmail => {
                t.add_item("tshirt", 1).await?;
                let order = t.checkout(GOOD_CARD, 201).await?;
                let id = order_id(&order)?;
                let answer = t
                    .expect(
                        Method::POST,
                        "/api/orders/{order_id}/confirmation",
                        format!("/api/orders/{id}/confirmation"),
                        None,
                        200,
                    )
                    .await?;
                ensure_eq(&answer["confirmation_email"], "sent", "confirmation email")
            }
            TestCase::ViewOrder => {
                t.add_item("sticker", 2).await?;
                let order = t.checkout(GOOD_CARD, 201).await?;
                let id = order_id(&order)?;
                let seen = t
                    .expect(
                        Method::GET,
                        "/api/orders/{order_id}",
                        format!("/api/orders/{id}"),
                        None,
                        200,
                    )
                    .await?;
                ensure_eq(&seen["order_id"], id, "order id")?;
                ensure_eq(&seen["status"], "paid", "order status")
            }
            TestCase::OrderEventFulfilled => {
                // An upstream system's event, published the way it would be, then the wait for
                // inventory to take it.
                let order = OrderPlaced {
                    order_id: format!("ord-{}", t.tag),
                    reservation_id: format!("rsv-{}", t.tag),
                };
                let id = format!("msg-{}", t.tag);
                let body = serde_json::to_vec(&order).map_err(|e| e.to_string())?;
                let broker = &t.driver.broker;
                broker
                    .publish(&t.driver.telemetry, t.cx, id.clone(), body)
                    .await?;
                match broker.outcome(&id, EVENT_TIMEOUT).await {
                    Some(true) => Ok(()),
                    Some(false) => Err(format!(
                        "order event {id} was dropped by its consumer: order {} not fulfilled",
                        order.order_id
                    )),
                    None => Err(format!(
                        "order event {id} was not processed within {EVENT_TIMEOUT:?}"
                    )),
                }
            }
        }
    }
}

fn ensure(condition: bool, message: &str) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(message.to_owned())
    }
}

fn ensure_eq(got: &Value, want: &str, what: &str) -> Result<(), String> {
    ensure(
        got.as_str() == Some(want),
        &format!("{what}: expected {want:?}, got {got}"),
    )
}

fn order_id(order: &Value) -> Result<&str, String> {
    order["order_id"]
        .as_str()
        .ok_or_else(|| format!("the order has no id: {order}"))
}

/// One running test case: its span, and names no other test case uses.
struct TestCtx<'a> {
    driver: &'a Driver,
    cx: &'a Context,
    /// The test's own user and cart name (`view-cart-r0`).
    tag: String,
}

impl TestCtx<'_> {
    /// Calls the gateway in a CLIENT span below the test case and reads the JSON answer.
    async fn call(
        &self,
        method: Method,
        template: &'static str,
        path: String,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let mut out = Outbound::new(
            method.clone(),
            format!("{}{path}", self.driver.gateway),
            template,
        );
        if let Some(body) = body {
            out = out.json(body);
        }
        let response = self
            .driver
            .http
            .send(self.cx, out)
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status().as_u16();
        Ok((status, read_json_quietly(response).await))
    }

    /// `call`, failing the test unless the answer has status `want`.
    async fn expect(
        &self,
        method: Method,
        template: &'static str,
        path: String,
        body: Option<Value>,
        want: u16,
    ) -> Result<Value, String> {
        let (status, answer) = self
            .call(method.clone(), template, path.clone(), body)
            .await?;
        if status == want {
            Ok(answer)
        } else {
            Err(format!(
                "{method} {path}: expected {want}, got {status}: {}",
                answer["message"].as_str().unwrap_or("no message")
            ))
        }
    }

    fn email(&self) -> String {
        format!("{}@shop.test", self.tag)
    }

    async fn signup_user(&self) -> Result<Value, String> {
        self.expect(
            Method::POST,
            "/api/signup",
            "/api/signup".to_owned(),
            Some(json!({"email": self.email(), "name": self.tag, "password": PASSWORD})),
            201,
        )
        .await
    }

    /// Signs up the test's user and returns its email.
    async fn signup(&self) -> Result<String, String> {
        self.signup_user().await?;
        Ok(self.email())
    }

    async fn login(&self, email: &str, password: &str, want: u16) -> Result<Value, String> {
        self.expect(
            Method::POST,
            "/api/login",
            "/api/login".to_owned(),
            Some(json!({"email": email, "password": password})),
            want,
        )
        .await
    }

    async fn add_item(&self, sku: &str, quantity: i64) -> Result<Value, String> {
        self.expect(
            Method::POST,
            "/api/carts/{cart_id}/items",
            format!("/api/carts/{}/items", self.tag),
            Some(json!({"sku": sku, "quantity": quantity})),
            201,
        )
        .await
    }

    async fn checkout(&self, card: &str, want: u16) -> Result<Value, String> {
        self.expect(
            Method::POST,
            "/api/checkout",
            "/api/checkout".to_owned(),
            Some(json!({"cart_id": self.tag, "email": self.email(), "card": card})),
            want,
        )
        .await
    }
}
