//! The HTTP API under `/api/v1` (`docs/openapi.json`) and `GET /healthz`.
//!
//! Every call but `/healthz` needs `Authorization: Bearer TOKEN`: missing, unknown or revoked
//! tokens get 401, a token of the wrong role 403, and nothing is stored in either case. Errors
//! are JSON `{"error": "..."}`.

mod auth;
mod jobs;
mod listings;
mod quarantine;
mod reports;
mod signatures;
mod vms;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};

use crate::store::{Store, StoreError};

pub use auth::authenticate;
pub use listings::health as listings_health;

/// Default page size of listings.
pub const DEFAULT_PAGE: i64 = 100;
/// Largest page size of listings.
pub const MAX_PAGE: i64 = 1000;

/// What every handler sees.
#[derive(Debug, Clone)]
pub struct AppState<S> {
    /// The database.
    pub store: S,
    /// Lease given when a claim does not ask for one (seconds).
    pub default_lease: i64,
    /// Longest lease a claim may ask for (seconds).
    pub max_lease: i64,
    /// Largest request body (bytes): larger ones get 413.
    pub body_limit: usize,
}

/// An API error: status and message.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl ApiError {
    /// 400.
    pub fn bad_request(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        eprintln!("coldscan-manager: {e}");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "database error".into())
    }
}

/// Handler result.
pub type ApiResult<T> = Result<T, ApiError>;

/// The API routes, with bodies limited to `body_limit` bytes (413 beyond).
pub fn router<S: Store>(state: AppState<S>, body_limit: usize) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/reports", post(reports::post_report::<S>))
        .route("/api/v1/heartbeat", post(listings::heartbeat::<S>))
        .route("/api/v1/scans", get(listings::scans::<S>))
        .route("/api/v1/scans/{id}", get(listings::scan::<S>))
        .route("/api/v1/detections", get(listings::detections::<S>))
        .route("/api/v1/not-scanned", get(listings::not_scanned::<S>))
        .route("/api/v1/targets", get(listings::targets::<S>))
        .route("/api/v1/appliances", get(listings::appliances::<S>))
        .route("/api/v1/deliveries", get(listings::deliveries::<S>))
        .route(
            "/api/v1/jobs",
            post(jobs::enqueue::<S>).get(jobs::list::<S>),
        )
        .route("/api/v1/jobs/claim", post(jobs::claim::<S>))
        .route("/api/v1/jobs/{id}/complete", post(jobs::complete::<S>))
        .route("/api/v1/signatures", get(signatures::current::<S>))
        .route("/api/v1/signatures/bundle", get(signatures::bundle::<S>))
        .route(
            "/api/v1/quarantines",
            post(quarantine::quarantine::<S>).get(quarantine::list::<S>),
        )
        .route(
            "/api/v1/quarantines/release",
            post(quarantine::release::<S>),
        )
        .route(
            "/api/v1/hypervisors",
            get(vms::list_hypervisors::<S>).post(vms::add_hypervisor::<S>),
        )
        .route(
            "/api/v1/hypervisors/{name}",
            delete(vms::remove_hypervisor::<S>),
        )
        .route("/api/v1/vms", get(vms::list_vms::<S>))
        .route("/api/v1/vms/{uuid}", get(vms::vm::<S>))
        .route("/api/v1/vms/{uuid}/scan", post(vms::scan_vm::<S>))
        .route("/api/v1/vm-jobs", get(vms::list_vm_jobs::<S>))
        .route("/api/v1/vm-jobs/log", get(vms::vm_job_log::<S>))
        .route("/api/v1/vm-overlays", get(vms::list_overlays::<S>))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such resource".into())
}

/// The body of an authenticated request. The token is checked before the body is read, so that
/// a request without a valid token costs no buffering (401 at once); the body is then read up
/// to [`AppState::body_limit`] bytes. Unlike axum's own `Bytes` extractor, a refusal is a JSON
/// error like every other: 413 naming the limit, or 400.
#[derive(Debug)]
pub struct Body {
    /// Who sent it (a valid token, of any role: see [`Body::require`]).
    pub who: crate::store::TokenIdentity,
    /// The body.
    pub bytes: Bytes,
}

impl Body {
    /// The sender and the body if the sender's token has `role` (403 otherwise).
    pub fn require(
        self,
        role: crate::store::Role,
    ) -> ApiResult<(crate::store::TokenIdentity, Bytes)> {
        Ok((auth::require(self.who, role)?, self.bytes))
    }
}

impl<S: Store> FromRequest<AppState<S>> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState<S>) -> Result<Body, ApiError> {
        let who = auth::identify(&state.store, req.headers()).await?;
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(Body { who, bytes }),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body is over the limit of {} bytes (serve --body-limit)",
                    state.body_limit
                ),
            )),
            Err(e) => Err(ApiError(
                e.status(),
                format!("reading the request body: {}", e.body_text()),
            )),
        }
    }
}

/// Parses a JSON body, mapping every failure to 400 (or 413) with a clear message.
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
}
