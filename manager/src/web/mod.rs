//! The web page (`GET /`): server-rendered HTML (maud, no build step, no script). An admin
//! logs in with an admin token (`POST /login`, a form: never a token in the URL) and gets a
//! session cookie (`HttpOnly; SameSite=Strict`, 256 random bits, stored as a hash, 12 hours).
//! Every POST of a logged-in page carries the session's CSRF form token, checked in constant
//! time; SameSite=Strict keeps the cookie off cross-site requests as a second line.

mod pages;
mod quarantine;
mod vms;

use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::api::AppState;
use crate::store::{Role, Session, Store};

/// Session cookie name.
pub const COOKIE: &str = "coldscan_session";

/// Session lifetime.
pub const SESSION_SECS: i64 = 12 * 3600;

/// The page's routes.
pub fn router<S: Store>(state: AppState<S>) -> Router {
    Router::new()
        .route("/", get(index::<S>))
        .route("/vms", get(vms_page::<S>))
        .route("/login", post(login::<S>))
        .route("/logout", post(logout::<S>))
        .route("/jobs", post(enqueue::<S>))
        .route("/quarantine", post(quarantine::act::<S>))
        .with_state(state)
}

/// The session cookie's value.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

async fn session<S: Store>(store: &S, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = cookie(headers)?;
    let hash = crate::tokens::hash(&id);
    store
        .session(&hash, crate::time::now())
        .await
        .ok()
        .flatten()
        .map(|s| (hash, s))
}

fn html(markup: maud::Markup) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
            ),
        ],
        markup.into_string(),
    )
        .into_response()
}

async fn index<S: Store>(State(state): State<AppState<S>>, headers: HeaderMap) -> Response {
    match session(&state.store, &headers).await {
        None => html(pages::login(None)),
        Some((_, s)) => match pages::dashboard(&state.store, &s).await {
            Ok(m) => html(m),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        },
    }
}

async fn vms_page<S: Store>(State(state): State<AppState<S>>, headers: HeaderMap) -> Response {
    match session(&state.store, &headers).await {
        None => html(pages::login(None)),
        Some((_, s)) => match vms::vms_page(&state.store, &s).await {
            Ok(m) => html(m),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        },
    }
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login<S: Store>(
    State(state): State<AppState<S>>,
    Form(form): Form<LoginForm>,
) -> Response {
    let identity = state
        .store
        .token_by_hash(&crate::tokens::hash(form.token.trim()))
        .await
        .ok()
        .flatten();
    let Some(identity) = identity.filter(|i| i.role == Role::Admin) else {
        return (
            StatusCode::UNAUTHORIZED,
            html(pages::login(Some("That is not a valid admin token."))),
        )
            .into_response();
    };
    let (Ok(id), Ok(csrf)) = (crate::tokens::random_hex(), crate::tokens::random_hex()) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let expires = crate::time::now() + SESSION_SECS;
    if state
        .store
        .create_session(&crate::tokens::hash(&id), identity.id, &csrf, expires)
        .await
        .is_err()
    {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_SECS}"),
        )],
        Redirect::to("/"),
    )
        .into_response()
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some((hash, s)) = session(&state.store, &headers).await {
        if crate::tokens::same(&s.csrf, &form.csrf) {
            let _ = state.store.delete_session(&hash, crate::time::now()).await;
        }
    }
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
        )],
        Redirect::to("/"),
    )
        .into_response()
}

#[derive(Deserialize)]
struct EnqueueForm {
    csrf: String,
    target: String,
    appliance: Option<String>,
}

async fn enqueue<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Form(form): Form<EnqueueForm>,
) -> Response {
    let Some((_, s)) = session(&state.store, &headers).await else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    if !crate::tokens::same(&s.csrf, &form.csrf) {
        return (StatusCode::FORBIDDEN, "bad form token").into_response();
    }
    let target = form.target.trim();
    if target.is_empty() || target.len() > 4096 {
        return (StatusCode::BAD_REQUEST, "target must be 1 to 4096 bytes").into_response();
    }
    let appliance = form
        .appliance
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty());
    match state
        .store
        .enqueue_job(target, appliance, crate::time::now())
        .await
    {
        Ok(_) => Redirect::to("/#jobs").into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
