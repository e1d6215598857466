//! Bearer-token authentication and roles.

use axum::http::{HeaderMap, StatusCode};

use super::{ApiError, ApiResult};
use crate::store::{Role, Store, TokenIdentity};

/// The token's identity if `headers` carry a valid token of `role`: 401 for a missing, unknown
/// or revoked token, 403 for the wrong role.
pub async fn authenticate<S: Store>(
    store: &S,
    headers: &HeaderMap,
    role: Role,
) -> ApiResult<TokenIdentity> {
    require(identify(store, headers).await?, role)
}

/// The identity of a valid token of any role (401 otherwise).
pub async fn identify<S: Store>(store: &S, headers: &HeaderMap) -> ApiResult<TokenIdentity> {
    let unauthorized = |msg: &str| ApiError(StatusCode::UNAUTHORIZED, msg.to_string());
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer token"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("Authorization must be: Bearer TOKEN"))?;
    store
        .token_by_hash(&crate::tokens::hash(token))
        .await?
        .ok_or_else(|| unauthorized("unknown or revoked token"))
}

/// `identity` if it has `role`, else 403.
pub fn require(identity: TokenIdentity, role: Role) -> ApiResult<TokenIdentity> {
    if identity.role != role {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("this call needs a token of role {}", role.as_str()),
        ));
    }
    Ok(identity)
}
