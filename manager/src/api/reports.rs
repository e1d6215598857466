//! `POST /api/v1/reports`: store a scan report once per `Idempotency-Key`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

use super::{ApiError, ApiResult, AppState, Body};
use crate::report::Report;
use crate::store::{NewReport, Role, Store};

/// Longest idempotency key accepted.
pub const MAX_KEY_BYTES: usize = 200;

/// 201 `{"id"}` for a new report, 200 with the same id when the key was seen.
pub async fn post_report<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let (who, body) = body.require(Role::Appliance)?;
    let key = headers
        .get("idempotency-key")
        .ok_or_else(|| ApiError::bad_request("missing Idempotency-Key header"))?
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| {
            !k.is_empty() && k.len() <= MAX_KEY_BYTES && k.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_BYTES} printable ASCII characters"
            ))
        })?
        .to_string();
    let report = Report::parse(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    // Valid JSON is valid UTF-8 (serde_json checks it while parsing).
    let text = std::str::from_utf8(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let stored = state
        .store
        .insert_report(&NewReport {
            appliance: &who.name,
            key: &key,
            body: text,
            report: &report,
            now: crate::time::now(),
        })
        .await?;
    let status = if stored.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(serde_json::json!({ "id": stored.id }))))
}
