//! The page's signature and quarantine sections: the current signature database, the domains in
//! quarantine with a release button (the undo), a form to quarantine a domain, and the action
//! log. `POST /quarantine` takes the form (session + CSRF token, like every page form).

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use crate::api::AppState;
use crate::libvirt::quarantine::{self, Actor};
use crate::libvirt::{blocking, Hypervisor};
use crate::store::{Session, Store, StoreResult};
use crate::time::rfc3339;

/// Log entries shown.
const LOG_ROWS: i64 = 50;

/// The signature database and quarantine sections.
pub async fn sections<S: Store>(store: &S, session: &Session) -> StoreResult<Markup> {
    let current = store.current_signatures().await?;
    let active = store.list_quarantines().await?;
    let log = store.quarantine_log(LOG_ROWS).await?;
    Ok(html! {
        h2 id="signatures" { "Signatures for appliances" }
        @match &current {
            Some(set) => p {
                "Version " strong { (set.version) } " (sha256 " code { (set.sha256) } "), "
                (set.files.len()) " file(s), " (set.size) " bytes, set " (rfc3339(set.created))
                ". Daemon appliances load it between jobs."
            },
            None => p { "None set: appliances use their own signatures (coldscan-manager signatures set)." },
        }
        h2 id="quarantine" { "Quarantine" }
        form method="post" action="/quarantine" {
            input type="hidden" name="csrf" value=(session.csrf);
            input type="hidden" name="action" value="quarantine";
            label { "libvirt URI " input type="text" name="uri" value="qemu:///system" required; }
            " "
            label { "Domain (name or UUID) " input type="text" name="domain" required; }
            " "
            button type="submit" id="quarantine" { "Quarantine" }
        }
        table {
            tr { th { "domain" } th { "uuid" } th { "uri" } th { "since" } th { "by" } th { "reason" } th { "" } }
            @for q in &active {
                tr { td.found { (q.name) } td { (q.uuid) } td { (q.uri) } td { (rfc3339(q.since)) }
                     td { (q.actor) } td { (q.reason) }
                     td { form method="post" action="/quarantine" {
                         input type="hidden" name="csrf" value=(session.csrf);
                         input type="hidden" name="action" value="release";
                         input type="hidden" name="uri" value=(q.uri);
                         input type="hidden" name="domain" value=(q.uuid);
                         button type="submit" class="release" { "Release" }
                     } } }
            }
        }
        table {
            tr { th { "when" } th { "action" } th { "domain" } th { "uuid" } th { "by" } th { "reason" } th { "before" } th { "after" } }
            @for l in &log {
                tr { td { (rfc3339(l.at)) } td { (l.action) } td { (l.name) } td { (l.uuid) }
                     td { (l.actor) } td { (l.reason) } td { code { (l.before) } } td { code { (l.after) } } }
            }
        }
    })
}

/// The quarantine form.
#[derive(Deserialize)]
pub struct QuarantineForm {
    csrf: String,
    action: String,
    uri: String,
    domain: String,
}

/// `POST /quarantine`: quarantine or release, then back to the section.
pub async fn act<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Form(form): Form<QuarantineForm>,
) -> Response {
    let Some((_, s)) = super::session(&state.store, &headers).await else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    if !crate::tokens::same(&s.csrf, &form.csrf) {
        return (StatusCode::FORBIDDEN, "bad form token").into_response();
    }
    let (uri, domain) = (form.uri.trim(), form.domain.trim());
    if uri.is_empty() || uri.len() > 1024 || domain.is_empty() {
        return (StatusCode::BAD_REQUEST, "give a libvirt URI and a domain").into_response();
    }
    let actor = Actor {
        who: s.name.clone(),
        reason: "web page".into(),
    };
    let owned = uri.to_string();
    let hv = match blocking(move || Hypervisor::connect(&owned)).await {
        Ok(hv) => std::sync::Arc::new(hv),
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let done = match form.action.as_str() {
        "quarantine" => quarantine::quarantine(&hv, domain, &state.store, &actor).await,
        "release" => quarantine::release(&hv, domain, &state.store, &actor).await,
        _ => return (StatusCode::BAD_REQUEST, "unknown action").into_response(),
    };
    match done {
        Ok(_) => Redirect::to("/#quarantine").into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
