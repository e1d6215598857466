//! Heartbeats and the admin listings: scans, one scan's report, detections, not-scanned files,
//! targets, appliances, webhook deliveries. Listings are newest first and paginated: pass the
//! answer's `next` as `?after=` for the following page (`next` is null on the last page).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;

use super::{authenticate, json_body, ApiError, ApiResult, AppState, Body, DEFAULT_PAGE, MAX_PAGE};
use crate::store::{Filter, HeartbeatRow, Role, Store};

/// Seconds without a heartbeat after which an appliance is shown as `stale`.
pub const STALE_AFTER_SECS: i64 = 300;

/// Most disks listed in one heartbeat.
const MAX_DISKS: usize = 4096;

/// Pagination and filter parameters.
#[derive(Debug, Default, Deserialize)]
pub struct Page {
    /// Cursor: the previous page's `next`.
    after: Option<String>,
    /// Page size (default 100, at most 1000).
    limit: Option<i64>,
    /// Filter by target.
    target: Option<String>,
    /// Filter by signature (detections).
    signature: Option<String>,
    /// Filter by reason (not scanned).
    reason: Option<String>,
    /// Filter by scan id.
    scan: Option<i64>,
}

impl Page {
    fn limit(&self) -> i64 {
        self.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
    }

    fn before(&self) -> ApiResult<Option<i64>> {
        self.after
            .as_deref()
            .map(|a| {
                a.parse::<i64>()
                    .map_err(|_| ApiError::bad_request("after must be an id from `next`"))
            })
            .transpose()
    }
}

/// The `next` cursor: the last id when the page is full.
fn next_cursor(ids: impl Iterator<Item = i64>, len: usize, limit: i64) -> Option<String> {
    let last = ids.last()?;
    (i64::try_from(len).unwrap_or(0) >= limit).then(|| last.to_string())
}

#[derive(Deserialize)]
struct HeartbeatBody {
    status: String,
    version: String,
    #[serde(default)]
    disks: Vec<String>,
    /// The manager's version of the signature database it scans with, if it fetched one.
    #[serde(default)]
    signatures: Option<String>,
}

/// `POST /api/v1/heartbeat` -> 204.
pub async fn heartbeat<S: Store>(
    State(state): State<AppState<S>>,
    body: Body,
) -> ApiResult<StatusCode> {
    let (who, body) = body.require(Role::Appliance)?;
    let hb: HeartbeatBody = json_body(&body)?;
    if hb.disks.len() > MAX_DISKS
        || hb.status.len() > 1024
        || hb.version.len() > 1024
        || hb.signatures.as_ref().is_some_and(|s| s.len() > 1024)
    {
        return Err(ApiError::bad_request("heartbeat too large"));
    }
    let disks = serde_json::to_string(&hb.disks).unwrap_or_else(|_| "[]".into());
    state
        .store
        .heartbeat(&HeartbeatRow {
            name: &who.name,
            now: crate::time::now(),
            version: &hb.version,
            status: &hb.status,
            disks: &disks,
            signatures: hb.signatures.as_deref(),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/scans`.
pub async fn scans<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Query(page): Query<Page>,
) -> ApiResult<Json<serde_json::Value>> {
    authenticate(&state.store, &headers, Role::Admin).await?;
    let rows = state.store.list_scans(page.before()?, page.limit()).await?;
    let next = next_cursor(rows.iter().map(|r| r.id), rows.len(), page.limit());
    Ok(Json(serde_json::json!({ "scans": rows, "next": next })))
}

/// `GET /api/v1/scans/{id}`: the report as posted, plus `id` and `appliance`.
pub async fn scan<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> ApiResult<Json<serde_json::Value>> {
    authenticate(&state.store, &headers, Role::Admin).await?;
    let (appliance, report) = state
        .store
        .scan_report(id)
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no scan {id}")))?;
    let mut value: serde_json::Value = serde_json::from_str(&report)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if let Some(map) = value.as_object_mut() {
        map.insert("id".into(), id.into());
        map.insert("appliance".into(), appliance.into());
    }
    Ok(Json(value))
}

/// `GET /api/v1/detections?target=&signature=&scan=`.
pub async fn detections<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Query(page): Query<Page>,
) -> ApiResult<Json<serde_json::Value>> {
    authenticate(&state.store, &headers, Role::Admin).await?;
    let filter = Filter {
        target: page.target.clone(),
        kind: page.signature.clone(),
        scan: page.scan,
    };
    let rows = state
        .store
        .list_detections(&filter, page.before()?, page.limit())
        .await?;
    let next = next_cursor(rows.iter().map(|r| r.id), rows.len(), page.limit());
    Ok(Json(
        serde_json::json!({ "detections": rows, "next": next }),
    ))
}

/// `GET /api/v1/not-scanned?target=&reason=&scan=`.
pub async fn not_scanned<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Query(page): Query<Page>,
) -> ApiResult<Json<serde_json::Value>> {
    authenticate(&state.store, &headers, Role::Admin).await?;
    let filter = Filter {
        target: page.target.clone(),
        kind: page.reason.clone(),
        scan: page.scan,
    };
    let rows = state
        .store
        .list_not_scanned(&filter, page.before()?, page.limit())
        .await?;
    let next = next_cursor(rows.iter().map(|r| r.id), rows.len(), page.limit());
    Ok(Json(
        serde_json::json!({ "not_scanned": rows, "next": next }),
    ))
}

/// `GET /api/v1/targets`: by name; `after` is a target name.
pub async fn targets<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Query(page): Query<Page>,
) -> ApiResult<Json<serde_json::Value>> {
    authenticate(&state.store, &headers, Role::Admin).await?;
    let rows = state
        .store
        .list_targets(page.after.as_deref(), page.limit())
        .await?;
    let full = i64::try_from(rows.len()).unwrap_or(0) >= page.limit();
    let next = if full {
        rows.last().map(|r| r.target.clone())
    } else {
        None
    };
    Ok(Json(serde_json::json!({ "targets": rows, "next": next })))
}

/// `GET /api/v1/appliances`, with `health`: `ok`, `stale` (no heartbeat for 5 minutes) or
/// `never`.
pub async fn appliances<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    authenticate(&state.store, &headers, Role::Admin).await?;
    let now = crate::time::now();
    let rows: Vec<serde_json::Value> = state
        .store
        .list_appliances()
        .await?
        .into_iter()
        .map(|a| {
            serde_json::json!({
                "name": a.name,
                "last_heartbeat": a.last_heartbeat.map(crate::time::rfc3339),
                "version": a.version,
                "status": a.status,
                "disks": a.disks.and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok()),
                "signatures": a.signatures,
                "health": health(a.last_heartbeat, now),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "appliances": rows })))
}

/// `ok`, `stale` or `never`.
pub fn health(last_heartbeat: Option<i64>, now: i64) -> &'static str {
    match last_heartbeat {
        None => "never",
        Some(t) if now - t > STALE_AFTER_SECS => "stale",
        Some(_) => "ok",
    }
}

/// `GET /api/v1/deliveries`: the webhook delivery log.
pub async fn deliveries<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Query(page): Query<Page>,
) -> ApiResult<Json<serde_json::Value>> {
    authenticate(&state.store, &headers, Role::Admin).await?;
    let rows = state
        .store
        .list_deliveries(page.before()?, page.limit())
        .await?;
    let next = next_cursor(rows.iter().map(|r| r.id), rows.len(), page.limit());
    Ok(Json(
        serde_json::json!({ "deliveries": rows, "next": next }),
    ))
}
