//! `notifications`: sends emails through an external email provider, and the provider itself.
//!
//! The provider stands for a third-party API: a plain axum server with no instrumentation at
//! all, so tracecov only ever sees it through notifications' CLIENT spans, which name it with
//! `service.peer.name` = `email-provider` (node `ext:email-provider`). Under `email:down` its
//! port is closed and every send fails with connection refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Extension, State};
use axum::routing::post;
use axum::{Json, Router};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::telemetry::{ApiError, HttpClient, Outbound, SpanCx, Telemetry, read_json};

/// The peer name of the uninstrumented email provider.
pub(crate) const EMAIL_PROVIDER: &str = "email-provider";

struct Notifications {
    http: HttpClient,
    provider_url: String,
}

pub(crate) fn spawn(
    listener: TcpListener,
    telemetry: Telemetry,
    email_provider: SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let addr = listener.local_addr()?;
    let state = Arc::new(Notifications {
        http: HttpClient::new(telemetry.clone(), super::HTTP_TIMEOUT)?,
        provider_url: format!("http://{email_provider}"),
    });
    let router = Router::new()
        .route("/emails", post(send_email))
        .with_state(state);
    Ok(super::serve_http(
        "notifications",
        listener,
        super::traced(router, telemetry, addr),
        shutdown,
    ))
}

#[derive(Deserialize)]
struct EmailRequest {
    to: String,
    template: String,
    #[serde(default)]
    order_id: Option<String>,
}

#[derive(Deserialize)]
struct ProviderReply {
    message_id: String,
}

async fn send_email(
    State(n): State<Arc<Notifications>>,
    Extension(SpanCx(cx)): Extension<SpanCx>,
    Json(req): Json<EmailRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let subject = match (req.template.as_str(), &req.order_id) {
        ("order_confirmation", Some(order)) => format!("Your order {order} is confirmed"),
        ("password_reset", _) => "Reset your password".to_owned(),
        (other, _) => {
            return Err(ApiError::new(
                400,
                "unknown_template",
                format!("no email template {other:?}"),
            ));
        }
    };
    let out = Outbound::new(
        Method::POST,
        format!("{}/v3/mail/send", n.provider_url),
        "/v3/mail/send",
    )
    .peer_service(EMAIL_PROVIDER)
    .json(json!({"to": req.to, "subject": subject}));
    let response = n.http.send(&cx, out).await.map_err(|e| {
        ApiError::new(
            502,
            "email_provider_unreachable",
            format!("cannot reach the email provider: {e}"),
        )
    })?;
    let status = response.status();
    if !status.is_success() {
        return Err(ApiError::new(
            502,
            "email_provider_error",
            format!("the email provider answered {status}"),
        ));
    }
    let reply: ProviderReply = read_json(&cx, response)
        .await
        .map_err(|e| ApiError::new(502, "email_provider_error", e.message))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"message_id": reply.message_id, "to": req.to})),
    ))
}

/// Starts the uninstrumented email provider on `listener`.
pub(crate) fn spawn_email_provider(
    listener: TcpListener,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let sent = Arc::new(AtomicU64::new(0));
    let router = Router::new()
        .route("/v3/mail/send", post(provider_send))
        .with_state(sent);
    super::serve_http("email-provider", listener, router, shutdown)
}

async fn provider_send(State(sent): State<Arc<AtomicU64>>) -> (StatusCode, Json<Value>) {
    let n = sent.fetch_add(1, Ordering::Relaxed);
    (
        StatusCode::ACCEPTED,
        Json(json!({"message_id": format!("msg-{n:06}")})),
    )
}
