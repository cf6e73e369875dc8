//! API keys and scopes: who may call which route, the key store, and `/v1/keys`.
//!
//! Invariants: keys are stored only as SHA-256 hashes, in the `squall_keys` bucket that every
//! dispatcher follows (so a revocation reaches every replica); a presented key is compared
//! with every known hash in constant time; when no admin key is configured, the API is open
//! (and `main` refuses to listen beyond loopback unless anonymous access was asked for).

use crate::core::keys::Keys;
use crate::http::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use squall_api::ErrorCode;
use std::sync::Arc;

pub use squall_api::operations::Scope;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (probes, the OpenAPI document).
    Open,
    /// Any valid key (unknown routes: a caller without a key learns nothing).
    AnyKey,
    /// A key with this scope, or `admin`.
    Scope(Scope),
}

fn bearer(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

/// Why a request may not use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No valid key: 401.
    NoKey,
    /// A valid key without this scope: 403.
    MissingScope(Scope),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::NoKey => {
                let mut response = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::Unauthorized,
                    "this route needs an API key: send Authorization: Bearer <key>",
                )
                .into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                response
            }
            Refusal::MissingScope(scope) => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                format!(
                    "this key lacks the {} scope this route needs",
                    scope.as_str()
                ),
            )
            .with("scope", scope.as_str())
            .into_response(),
        }
    }
}

/// Whether `request` may use a route that needs `needed`.
pub fn check(keys: &Keys, request: &Request, needed: Access) -> Result<(), Refusal> {
    if !keys.enabled() || needed == Access::Open {
        return Ok(());
    }
    let scopes = bearer(request)
        .and_then(|key| keys.scopes_of(key))
        .ok_or(Refusal::NoKey)?;
    match needed {
        Access::Scope(scope) if !scopes.contains(&scope) && !scopes.contains(&Scope::Admin) => {
            Err(Refusal::MissingScope(scope))
        }
        _ => Ok(()),
    }
}

/// The scopes of the key `request` presents: `admin` when keys are off, none without a
/// known key.
pub fn scopes(keys: &Keys, request: &Request) -> Vec<Scope> {
    if !keys.enabled() {
        return vec![Scope::Admin];
    }
    bearer(request)
        .and_then(|key| keys.scopes_of(key))
        .unwrap_or_default()
}

/// The layer of a group of routes that need `access` (see `routes`).
pub async fn require(
    State((keys, access)): State<(Arc<Keys>, Access)>,
    request: Request,
    next: Next,
) -> Response {
    match check(&keys, &request, access) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}
