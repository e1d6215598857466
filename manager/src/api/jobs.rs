//! The job queue: `POST /api/v1/jobs` (admin) queues a target, `POST /api/v1/jobs/claim`
//! (appliance) hands the oldest open job out under a lease, `POST /api/v1/jobs/{id}/complete`
//! ends it. A job whose lease ran out (its appliance died) is handed out again.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::{authenticate, json_body, ApiError, ApiResult, AppState, Body, DEFAULT_PAGE, MAX_PAGE};
use crate::store::{Completion, JobOutcome, Role, Store};

#[derive(Deserialize)]
struct NewJob {
    target: String,
    appliance: Option<String>,
}

/// `POST /api/v1/jobs` -> 201 `{"id"}`.
pub async fn enqueue<S: Store>(
    State(state): State<AppState<S>>,
    body: Body,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let (_, body) = body.require(Role::Admin)?;
    let job: NewJob = json_body(&body)?;
    if job.target.is_empty() || job.target.len() > 4096 {
        return Err(ApiError::bad_request("target must be 1 to 4096 bytes"));
    }
    let id = state
        .store
        .enqueue_job(&job.target, job.appliance.as_deref(), crate::time::now())
        .await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id }))))
}

#[derive(Deserialize, Default)]
struct ClaimBody {
    lease_seconds: Option<i64>,
}

/// `POST /api/v1/jobs/claim` -> 200 `{"id","target","lease_expires"}` or 204.
pub async fn claim<S: Store>(State(state): State<AppState<S>>, body: Body) -> ApiResult<Response> {
    let (who, body) = body.require(Role::Appliance)?;
    let claim: ClaimBody = if body.is_empty() {
        ClaimBody::default()
    } else {
        json_body(&body)?
    };
    let lease = claim
        .lease_seconds
        .unwrap_or(state.default_lease)
        .clamp(1, state.max_lease);
    let now = crate::time::now();
    match state.store.claim_job(&who.name, now, now + lease).await? {
        Some(job) => Ok(Json(serde_json::json!({
            "id": job.id,
            "target": job.target,
            "lease_expires": crate::time::rfc3339(job.lease_expires),
        }))
        .into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

#[derive(Deserialize)]
struct CompleteBody {
    report: Option<i64>,
    error: Option<String>,
}

/// `POST /api/v1/jobs/{id}/complete` with `{"report":ID}` or `{"error":"..."}` -> 204; 404
/// for an unknown job, 409 for a job this appliance does not hold.
pub async fn complete<S: Store>(
    State(state): State<AppState<S>>,
    Path(id): Path<i64>,
    body: Body,
) -> ApiResult<StatusCode> {
    let (who, body) = body.require(Role::Appliance)?;
    let done: CompleteBody = json_body(&body)?;
    let outcome = match (done.report, done.error) {
        (Some(r), None) => JobOutcome::Report(r),
        (None, Some(e)) => JobOutcome::Error(e.chars().take(4096).collect()),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of report and error",
            ))
        }
    };
    match state
        .store
        .complete_job(id, &who.name, &outcome, crate::time::now())
        .await?
    {
        Completion::Done => Ok(StatusCode::NO_CONTENT),
        Completion::NotFound => Err(ApiError(StatusCode::NOT_FOUND, format!("no job {id}"))),
        Completion::NotHeld => Err(ApiError(
            StatusCode::CONFLICT,
            format!("job {id} is not held by {}", who.name),
        )),
    }
}

#[derive(Deserialize, Default)]
pub struct JobPage {
    after: Option<i64>,
    limit: Option<i64>,
}

/// `GET /api/v1/jobs` (admin): the queue, newest first.
pub async fn list<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Query(page): Query<JobPage>,
) -> ApiResult<Json<serde_json::Value>> {
    authenticate(&state.store, &headers, Role::Admin).await?;
    let limit = page.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let rows = state.store.list_jobs(page.after, limit).await?;
    let next = (i64::try_from(rows.len()).unwrap_or(0) >= limit)
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(Json(serde_json::json!({ "jobs": rows, "next": next })))
}
