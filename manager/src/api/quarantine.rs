//! Quarantine of libvirt domains from the API (admin): `GET /api/v1/quarantines` lists the
//! domains in quarantine and the action log, `POST /api/v1/quarantines` isolates a domain,
//! `POST /api/v1/quarantines/release` undoes it (`crate::libvirt::quarantine`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;

use super::{authenticate, json_body, ApiError, ApiResult, AppState, Body};
use crate::libvirt::quarantine::{self, Actor, QuarantineError};
use crate::libvirt::{blocking, Hypervisor};
use crate::store::{Role, Store};

/// Most log entries listed.
const LOG_LIMIT: i64 = 200;

#[derive(Deserialize)]
struct Target {
    /// libvirt URI (`qemu:///system`).
    uri: String,
    /// Domain name or UUID.
    domain: String,
    /// Why (for the log).
    #[serde(default)]
    reason: String,
}

fn api_error(e: QuarantineError) -> ApiError {
    match e {
        QuarantineError::Store(e) => e.into(),
        QuarantineError::Libvirt(crate::libvirt::LibvirtError::NotFound(m)) => {
            ApiError(StatusCode::NOT_FOUND, m)
        }
        other => ApiError(StatusCode::BAD_GATEWAY, other.to_string()),
    }
}

async fn act<S: Store>(
    state: AppState<S>,
    body: Body,
    release: bool,
) -> ApiResult<Json<serde_json::Value>> {
    let (who, body) = body.require(Role::Admin)?;
    let target: Target = json_body(&body)?;
    if target.uri.is_empty() || target.uri.len() > 1024 || target.domain.is_empty() {
        return Err(ApiError::bad_request(
            "give a libvirt uri (at most 1024 bytes) and a domain",
        ));
    }
    let actor = Actor {
        who: who.name,
        reason: target.reason.chars().take(1024).collect(),
    };
    let uri = target.uri.clone();
    let hv = blocking(move || Hypervisor::connect(&uri))
        .await
        .map(std::sync::Arc::new)
        .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, e.to_string()))?;
    let outcome = if release {
        quarantine::release(&hv, &target.domain, &state.store, &actor).await
    } else {
        quarantine::quarantine(&hv, &target.domain, &state.store, &actor).await
    }
    .map_err(api_error)?;
    Ok(Json(serde_json::to_value(outcome).unwrap_or_default()))
}

/// `POST /api/v1/quarantines` `{"uri","domain","reason"?}` -> 200 with what was done.
pub async fn quarantine<S: Store>(
    State(state): State<AppState<S>>,
    body: Body,
) -> ApiResult<Json<serde_json::Value>> {
    act(state, body, false).await
}

/// `POST /api/v1/quarantines/release` `{"uri","domain"}` -> 200 with what was done.
pub async fn release<S: Store>(
    State(state): State<AppState<S>>,
    body: Body,
) -> ApiResult<Json<serde_json::Value>> {
    act(state, body, true).await
}

/// `GET /api/v1/quarantines` -> `{"quarantines":[...],"log":[...]}`.
pub async fn list<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    authenticate(&state.store, &headers, Role::Admin).await?;
    let active = state.store.list_quarantines().await?;
    let log = state.store.quarantine_log(LOG_LIMIT).await?;
    Ok(Json(
        serde_json::json!({ "quarantines": active, "log": log }),
    ))
}
