//! `users`: accounts in a real SQLite database (in memory), each query a database CLIENT span.
//!
//! Only the gateway may call it, with its service credentials in `authorization`. Under
//! `users:401` the accepted credentials have been rotated and the gateway's are refused.
//!
//! Passwords are stored as a keyed hash that is good enough for a demo and nothing else.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Extension, State};
use axum::routing::post;
use axum::{Json, Router};
use http::{HeaderMap, StatusCode};
use opentelemetry::trace::{SpanKind, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::telemetry::{ApiError, SpanCx, Telemetry, record_exception, set_error};
use super::{Fault, Faults};

/// The gateway's service credentials.
pub(crate) const GATEWAY_CREDENTIALS: &str = "Bearer svc-gateway-2f9c";
/// What users accepts under `users:401`: rotated without telling the gateway.
const ROTATED_CREDENTIALS: &str = "Bearer svc-gateway-81d0";

const DB_NAMESPACE: &str = "users";

struct Users {
    telemetry: Telemetry,
    /// One connection behind a std mutex: queries on an in-memory database take microseconds,
    /// and a query never awaits while holding it.
    db: Mutex<Connection>,
    accepted_credentials: &'static str,
    sessions: AtomicU64,
}

pub(crate) fn spawn(
    listener: TcpListener,
    telemetry: Telemetry,
    faults: &Faults,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let addr = listener.local_addr()?;
    let db = Connection::open_in_memory()?;
    db.execute_batch(
        "CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            email TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            password_hash TEXT NOT NULL
        );
        CREATE TABLE password_resets (
            token TEXT PRIMARY KEY,
            user_id INTEGER NOT NULL
        );",
    )?;
    let state = Arc::new(Users {
        telemetry: telemetry.clone(),
        db: Mutex::new(db),
        accepted_credentials: if faults.has(Fault::Users401) {
            ROTATED_CREDENTIALS
        } else {
            GATEWAY_CREDENTIALS
        },
        sessions: AtomicU64::new(0),
    });
    let router = Router::new()
        .route("/users", post(create_user))
        .route("/sessions", post(create_session))
        .route("/password-resets", post(create_password_reset))
        .with_state(state);
    Ok(super::serve_http(
        "users",
        listener,
        super::traced(router, telemetry, addr),
        shutdown,
    ))
}

impl Users {
    fn check_credentials(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let given = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given == Some(self.accepted_credentials) {
            Ok(())
        } else {
            Err(ApiError::new(
                401,
                "invalid_service_credentials",
                "the caller's service credentials are not accepted",
            ))
        }
    }

    /// Runs one statement in a database CLIENT span under `parent`.
    fn query<T>(
        &self,
        parent: &Context,
        operation: &'static str,
        table: &'static str,
        sql: &'static str,
        run: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, ApiError> {
        let cx = self.telemetry.start(
            parent,
            format!("{operation} {table}"),
            SpanKind::Client,
            vec![
                KeyValue::new("db.system.name", "sqlite"),
                KeyValue::new("db.namespace", DB_NAMESPACE),
                KeyValue::new("db.operation.name", operation),
                KeyValue::new("db.collection.name", table),
                KeyValue::new("db.query.text", sql),
            ],
        );
        let result = match self.db.lock() {
            Ok(conn) => run(&conn),
            Err(_) => Err(rusqlite::Error::InvalidQuery),
        };
        if let Err(e) = &result {
            let message = e.to_string();
            // Constraint violations are the caller's problem (a taken email), not the database's:
            // they are answered as 409 and recorded as exceptions all the same.
            cx.span()
                .set_attribute(KeyValue::new("error.type", "rusqlite::Error"));
            record_exception(&cx, "rusqlite::Error", &message);
            set_error(&cx, message);
        }
        cx.span().end();
        result.map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                ApiError::new(409, "email_taken", "an account with this email exists")
            }
            other => ApiError::new(500, "database_error", other.to_string())
                .with_exception("rusqlite::Error"),
        })
    }
}

fn password_hash(email: &str, password: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (email, password, "tracecov-demo").hash(&mut h);
    format!("{:016x}", h.finish())
}

#[derive(Deserialize)]
struct NewUser {
    email: String,
    name: String,
    password: String,
}

async fn create_user(
    State(users): State<Arc<Users>>,
    Extension(SpanCx(cx)): Extension<SpanCx>,
    headers: HeaderMap,
    Json(user): Json<NewUser>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    users.check_credentials(&headers)?;
    let hash = password_hash(&user.email, &user.password);
    let id = users.query(
        &cx,
        "INSERT",
        "users",
        "INSERT INTO users (email, name, password_hash) VALUES (?1, ?2, ?3)",
        |db| {
            db.execute(
                "INSERT INTO users (email, name, password_hash) VALUES (?1, ?2, ?3)",
                params![user.email, user.name, hash],
            )?;
            Ok(db.last_insert_rowid())
        },
    )?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "email": user.email, "name": user.name})),
    ))
}

#[derive(Deserialize)]
struct Login {
    email: String,
    password: String,
}

async fn create_session(
    State(users): State<Arc<Users>>,
    Extension(SpanCx(cx)): Extension<SpanCx>,
    headers: HeaderMap,
    Json(login): Json<Login>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    users.check_credentials(&headers)?;
    let row: Option<(i64, String)> = users.query(
        &cx,
        "SELECT",
        "users",
        "SELECT id, password_hash FROM users WHERE email = ?1",
        |db| {
            db.query_row(
                "SELECT id, password_hash FROM users WHERE email = ?1",
                params![login.email],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        },
    )?;
    match row {
        Some((id, hash)) if hash == password_hash(&login.email, &login.password) => {
            let n = users.sessions.fetch_add(1, Ordering::Relaxed);
            Ok((
                StatusCode::CREATED,
                Json(json!({"user_id": id, "token": format!("sess-{id}-{n}")})),
            ))
        }
        _ => Err(ApiError::new(
            401,
            "invalid_password",
            "wrong email or password",
        )),
    }
}

#[derive(Deserialize)]
struct ResetRequest {
    email: String,
}

async fn create_password_reset(
    State(users): State<Arc<Users>>,
    Extension(SpanCx(cx)): Extension<SpanCx>,
    headers: HeaderMap,
    Json(reset): Json<ResetRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    users.check_credentials(&headers)?;
    let user: Option<(i64, String)> = users.query(
        &cx,
        "SELECT",
        "users",
        "SELECT id, name FROM users WHERE email = ?1",
        |db| {
            db.query_row(
                "SELECT id, name FROM users WHERE email = ?1",
                params![reset.email],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        },
    )?;
    let Some((id, name)) = user else {
        return Err(ApiError::new(
            404,
            "unknown_email",
            "no account with this email",
        ));
    };
    let token = format!(
        "reset-{id}-{}",
        users.sessions.fetch_add(1, Ordering::Relaxed)
    );
    users.query(
        &cx,
        "INSERT",
        "password_resets",
        "INSERT INTO password_resets (token, user_id) VALUES (?1, ?2)",
        |db| {
            db.execute(
                "INSERT INTO password_resets (token, user_id) VALUES (?1, ?2)",
                params![token, id],
            )
        },
    )?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"user_id": id, "name": name, "email": reset.email, "reset_token": token})),
    ))
}
