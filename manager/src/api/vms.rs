//! The hypervisor side of the API (admin only): connections (`/api/v1/hypervisors`), the VM
//! inventory (`/api/v1/vms`, one VM with its scans and inventory events at
//! `/api/v1/vms/{uuid}`), VM scans (`POST /api/v1/vms/{uuid}/scan`), VM jobs with their disk
//! jobs (`/api/v1/vm-jobs`) and the log of backups begun and ended (`/api/v1/vm-jobs/log`).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;

use super::{authenticate, json_body, ApiError, ApiResult, AppState, Body};
use crate::store::overlays::CopyMethod;
use crate::store::vms::DEFAULT_MAX_BACKUPS;
use crate::store::{Role, Store, StoreError};

/// Most VM jobs listed.
const VM_JOBS_LISTED: i64 = 1000;

#[derive(Deserialize)]
struct NewHypervisor {
    name: String,
    uri: String,
    max_backups: Option<i64>,
    nbd_listen: Option<String>,
    method: Option<String>,
}

/// `GET /api/v1/hypervisors`.
pub async fn list_hypervisors<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    authenticate(&state.store, &headers, Role::Admin).await?;
    let rows = state.store.list_hypervisors().await?;
    Ok(Json(serde_json::json!({ "hypervisors": rows })))
}

/// `POST /api/v1/hypervisors` -> 201 `{"name"}`, 409 when the name is taken. The connection
/// is not tried here: `serve`'s inventory task records whether it answers (`last_error`).
pub async fn add_hypervisor<S: Store>(
    State(state): State<AppState<S>>,
    body: Body,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let (_, body) = body.require(Role::Admin)?;
    let h: NewHypervisor = json_body(&body)?;
    if h.name.is_empty() || h.name.len() > 100 || h.name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "name must be 1 to 100 printable characters",
        ));
    }
    if !h.uri.contains(':') || h.uri.len() > 1000 {
        return Err(ApiError::bad_request("uri must be a libvirt URI"));
    }
    let max = h.max_backups.unwrap_or(DEFAULT_MAX_BACKUPS);
    if !(1..=1000).contains(&max) {
        return Err(ApiError::bad_request("max_backups must be 1 to 1000"));
    }
    let method = match h.method.as_deref() {
        None => CopyMethod::Auto,
        Some(m) => CopyMethod::parse(m)
            .ok_or_else(|| ApiError::bad_request("method must be auto, backup or snapshot"))?,
    };
    match state
        .store
        .add_hypervisor(
            &h.name,
            &h.uri,
            max,
            h.nbd_listen.as_deref(),
            crate::time::now(),
        )
        .await
    {
        Ok(()) => {
            state.store.set_hypervisor_method(&h.name, method).await?;
            Ok((
                StatusCode::CREATED,
                Json(serde_json::json!({ "name": h.name })),
            ))
        }
        Err(StoreError::Conflict(what)) => Err(ApiError(StatusCode::CONFLICT, what)),
        Err(e) => Err(e.into()),
    }
}

/// `DELETE /api/v1/hypervisors/{name}` -> 204, 404.
pub async fn remove_hypervisor<S: Store>(
    State(state): State<AppState<S>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    authenticate(&state.store, &headers, Role::Admin).await?;
    if state
        .store
        .remove_hypervisor(&name, crate::time::now())
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no hypervisor {name:?}"),
        ))
    }
}

/// `GET /api/v1/vms`: the inventory with each VM's last scan.
pub async fn list_vms<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    authenticate(&state.store, &headers, Role::Admin).await?;
    let rows = state.store.list_vms().await?;
    Ok(Json(serde_json::json!({ "vms": rows })))
}

/// VM jobs with their disk jobs, as JSON.
async fn jobs_json<S: Store>(store: &S, uuid: Option<&str>) -> ApiResult<Vec<serde_json::Value>> {
    let jobs = store.list_vm_jobs(uuid, VM_JOBS_LISTED).await?;
    let mut out = Vec::with_capacity(jobs.len());
    for j in jobs {
        let disks = store.disk_jobs(j.id).await?;
        let mut v = serde_json::to_value(&j).unwrap_or_default();
        v["disks"] = serde_json::to_value(disks).unwrap_or_default();
        // Internal clean-up record: not part of the API.
        if let Some(o) = v.as_object_mut() {
            o.remove("backup");
        }
        out.push(v);
    }
    Ok(out)
}

/// `GET /api/v1/vms/{uuid}`: one VM (UUID or name), its scans (VM jobs with their disks'
/// reports) and its inventory events.
pub async fn vm<S: Store>(
    State(state): State<AppState<S>>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    authenticate(&state.store, &headers, Role::Admin).await?;
    let Some(vm) = state.store.find_vm(&key).await? else {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no VM {key:?}")));
    };
    let jobs = jobs_json(&state.store, Some(&vm.uuid)).await?;
    let events = state.store.vm_events(&vm.uuid).await?;
    Ok(Json(
        serde_json::json!({ "vm": vm, "jobs": jobs, "events": events }),
    ))
}

#[derive(Deserialize, Default)]
struct ScanBody {
    appliance: Option<String>,
}

/// `POST /api/v1/vms/{uuid}/scan` -> 201 `{"id"}` (the VM job), 404 for an unknown VM.
pub async fn scan_vm<S: Store>(
    State(state): State<AppState<S>>,
    Path(key): Path<String>,
    body: Body,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let (_, body) = body.require(Role::Admin)?;
    let scan: ScanBody = if body.is_empty() {
        ScanBody::default()
    } else {
        json_body(&body)?
    };
    let Some(vm) = state.store.find_vm(&key).await? else {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no VM {key:?}")));
    };
    let id = state
        .store
        .enqueue_vm_job(&vm.uuid, scan.appliance.as_deref(), crate::time::now())
        .await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id }))))
}

/// `GET /api/v1/vm-jobs`: VM jobs, newest first, with their disk jobs.
pub async fn list_vm_jobs<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    authenticate(&state.store, &headers, Role::Admin).await?;
    let jobs = jobs_json(&state.store, None).await?;
    Ok(Json(serde_json::json!({ "vm_jobs": jobs })))
}

/// `GET /api/v1/vm-overlays`: the disk-only snapshots whose overlays are not committed back
/// yet.
pub async fn list_overlays<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    authenticate(&state.store, &headers, Role::Admin).await?;
    let rows = state.store.list_overlays().await?;
    Ok(Json(serde_json::json!({ "overlays": rows })))
}

/// `GET /api/v1/vm-jobs/log`: every backup begun and ended, in order.
pub async fn vm_job_log<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    authenticate(&state.store, &headers, Role::Admin).await?;
    let log = state.store.vm_job_log().await?;
    Ok(Json(serde_json::json!({ "log": log })))
}
