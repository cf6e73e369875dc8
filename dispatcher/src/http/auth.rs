//! API keys and scopes: who may call which route, for which functions, how often; the layer
//! every group of routes but the open one passes, and the `Caller` extractor behind it.
//!
//! Invariants: keys are stored only as SHA-256 hashes, in the `squall_keys` bucket that every
//! dispatcher follows (so a revocation reaches every replica); a presented key is compared
//! with every known hash in constant time; when no admin key is configured, the API is open
//! (and `main` refuses to listen beyond loopback unless anonymous access was asked for). A key
//! limited to some functions is refused, by name and before any lookup, every route whose
//! path names another function (403 whether or not it exists), and every route that shows all
//! functions at once; an invocation of another function is answered as unknown (404).

use crate::core::keys::{Grant, Keys};
use crate::core::rate_limit::retry_after_secs;
use crate::http::error::ApiError;
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use squall_api::ErrorCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// A key with this scope (or `admin`) that is not limited to some functions: the route
    /// shows every function at once (the fleet, usage, metrics).
    EveryFunction(Scope),
}

/// The key a request presents: `Authorization: Bearer <key>`.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

/// Why a request may not use a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No valid key: 401.
    NoKey,
    /// A valid key without this scope: 403.
    MissingScope(Scope),
    /// A key limited to some functions, and the route names another one: 403.
    Function(String),
    /// A key limited to some functions, and the route shows every function: 403.
    EveryFunction,
    /// The key's request rate is spent: 429, with the wait.
    RateLimited(Duration),
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        match refusal {
            Refusal::NoKey => ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "this route needs an API key: send Authorization: Bearer <key>",
            ),
            Refusal::MissingScope(scope) => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                format!(
                    "this key lacks the {} scope this route needs",
                    scope.as_str()
                ),
            )
            .with("scope", scope.as_str()),
            Refusal::Function(function) => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                format!("this key is not allowed function {function:?}"),
            )
            .with("function", function),
            Refusal::EveryFunction => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "this route shows every function; a key limited to some functions may not read it",
            ),
            Refusal::RateLimited(wait) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                "this key made more requests than its rate allows; retry after Retry-After",
            )
            .retry_after(retry_after_secs(wait)),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let challenge = self == Refusal::NoKey;
        let mut response = ApiError::from(self).into_response();
        if challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Whether a request presenting `presented` may use a route that needs `needed`; counts the
/// request against the key's rate when it may. Keys off: everything, unlimited.
pub fn check_key(
    keys: &Keys,
    presented: Option<&str>,
    needed: Access,
) -> Result<Arc<Grant>, Refusal> {
    if !keys.enabled() || needed == Access::Open {
        return Ok(keys.open_grant());
    }
    let grant = presented
        .and_then(|key| keys.grant_of(key))
        .ok_or(Refusal::NoKey)?;
    match needed {
        Access::Scope(scope) | Access::EveryFunction(scope) if !grant.has(scope) => {
            return Err(Refusal::MissingScope(scope))
        }
        Access::EveryFunction(_) if !grant.functions.is_all() => {
            return Err(Refusal::EveryFunction)
        }
        _ => {}
    }
    keys.take(&grant, Instant::now())
        .map_err(Refusal::RateLimited)?;
    Ok(grant)
}

/// Whether `request` may use a route that needs `needed` (see `check_key`).
pub fn check(keys: &Keys, request: &Request, needed: Access) -> Result<Arc<Grant>, Refusal> {
    check_key(keys, bearer(request.headers()), needed)
}

/// Whether `grant` may reach `function` (a name, or `name:qualifier`).
pub fn allow_function(grant: &Grant, function: &str) -> Result<(), Refusal> {
    match grant.functions.allows(function) {
        true => Ok(()),
        false => Err(Refusal::Function(function.to_string())),
    }
}

/// The grant of the key `request` presents (everything when keys are off), without counting
/// the request against its rate.
pub fn grant(keys: &Keys, request: &Request) -> Option<Arc<Grant>> {
    if !keys.enabled() {
        return Some(keys.open_grant());
    }
    bearer(request.headers()).and_then(|key| keys.grant_of(key))
}

/// The routes whose path's `{name}` is a function's name.
const FUNCTION_ROUTES: &str = "/v1/functions/{name}";

/// The layer of a group of routes that need `access` (see `routes`): checks the key, its
/// scope, its rate and, on a route under `/v1/functions/{name}`, that the key may reach that
/// function; hands the grant on to the handler (`Caller`).
pub async fn require(
    State((keys, access)): State<(Arc<Keys>, Access)>,
    request: Request,
    next: Next,
) -> Response {
    let grant = match check(&keys, &request, access) {
        Ok(grant) => grant,
        Err(refused) => return refused.into_response(),
    };
    let (mut parts, body) = request.into_parts();
    let names_a_function = parts
        .extensions
        .get::<MatchedPath>()
        .is_some_and(|path| path.as_str().starts_with(FUNCTION_ROUTES));
    if names_a_function && !grant.functions.is_all() {
        if let Ok(params) = RawPathParams::from_request_parts(&mut parts, &()).await {
            if let Some((_, name)) = params.iter().find(|(key, _)| *key == "name") {
                if let Err(refused) = allow_function(&grant, name) {
                    return refused.into_response();
                }
            }
        }
    }
    parts.extensions.insert(Caller(grant));
    next.run(Request::from_parts(parts, body)).await
}

/// What the caller's key may do, as the auth layer found it.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<Grant>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::internal_message("a route behind no key check asked for its caller".into())
        })
    }
}

impl Caller {
    /// Whether the key may reach `function`.
    pub fn allows(&self, function: &str) -> bool {
        self.0.functions.allows(function)
    }
}
