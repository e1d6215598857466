//! The signature database for appliances: `GET /api/v1/signatures` (version, digest, files) and
//! `GET /api/v1/signatures/bundle` (the files as one tar archive, `crate::signatures::bundle`).
//! Both take an appliance token (an admin token works too); 404 while no database is set.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::auth::identify;
use super::{ApiError, ApiResult, AppState};
use crate::store::Store;

/// Header of the bundle naming its version.
pub const VERSION_HEADER: &str = "x-coldscan-signatures-version";
/// Header of the bundle naming its database digest.
pub const SHA256_HEADER: &str = "x-coldscan-signatures-sha256";

fn none_set() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "no signature database is set on this manager (coldscan-manager signatures set)".into(),
    )
}

/// `GET /api/v1/signatures` -> `{"version","sha256","size","created","files":[...]}`.
pub async fn current<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    identify(&state.store, &headers).await?;
    let set = state
        .store
        .current_signatures()
        .await?
        .ok_or_else(none_set)?;
    Ok(Json(serde_json::json!({
        "version": set.version,
        "sha256": set.sha256,
        "size": set.size,
        "created": crate::time::rfc3339(set.created),
        "files": set.files,
    })))
}

/// `GET /api/v1/signatures/bundle` -> the current set as `application/x-tar`, with its version
/// and digest in headers.
pub async fn bundle<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    identify(&state.store, &headers).await?;
    let set = state
        .store
        .current_signatures()
        .await?
        .ok_or_else(none_set)?;
    let files = state.store.signature_files(set.id).await?;
    let tar = crate::signatures::bundle::write(&files);
    let mut response = tar.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    // Versions are printable ASCII (checked when set), so valid header values.
    if let Ok(v) = HeaderValue::from_str(&set.version) {
        h.insert(VERSION_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&set.sha256) {
        h.insert(SHA256_HEADER, v);
    }
    Ok(response)
}
