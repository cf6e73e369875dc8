//! The key routes: `/v1/keys` (create, list, delete) and `/v1/whoami`.

use crate::core::keys::{
    hash_key, new_key, FunctionLimit, KeyRecord, KeyRing, KeysBucket, TraceUrl, ADMIN_KEY_NAME,
};
use crate::http::auth::grant;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, Name, OfKey};
use async_nats::jetstream::kv;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::Json;
use futures::StreamExt as _;
pub use squall_api::operations::Scope;
use squall_api::operations::{CreatedKey, KeyInfo, KeyLimits, KeyList, NewKey, WhoAmI};
use squall_api::ErrorBody;
use squall_api::ErrorCode;
use squall_broker::time::now_ms;

/// What the presented key may do (its scopes), so a client offers only what it may; and the
/// trace viewer's link the console shows.
#[utoipa::path(get, path = "/v1/whoami", tag = "keys", responses(
    (status = 200, description = "The key's scopes.", body = WhoAmI)))]
pub async fn whoami(
    State(KeyRing(keys)): State<KeyRing>,
    State(TraceUrl(trace_url)): State<TraceUrl>,
    request: Request,
) -> Json<WhoAmI> {
    let grant = grant(&keys, &request);
    Json(WhoAmI {
        scopes: grant.as_ref().map(|g| g.scopes.clone()).unwrap_or_default(),
        auth_required: keys.enabled(),
        trace_url,
        functions: grant.map(|g| g.functions.to_strings()).unwrap_or_default(),
    })
}

/// The limits a key record carries, as the API shows them.
fn limits_of(record: &KeyRecord) -> KeyLimits {
    KeyLimits {
        functions: record.functions.clone(),
        rate_per_s: record.rate_per_s,
        burst: record.burst,
    }
}

/// The largest `rate_per_s` and `burst` a key may carry.
const MAX_RATE_PER_S: f64 = 1_000_000.0;
const MAX_BURST: u32 = 1_000_000;

/// Checks a new key's limits: function names and `prefix*` patterns (not for an admin key,
/// which may mint any key), a positive rate, and a burst only with a rate.
fn check_limits(body: &NewKey, scopes: &[Scope]) -> Result<(), ApiError> {
    let invalid = |message: String| ApiError::bad_request(ErrorCode::InvalidKey, message);
    FunctionLimit::parse(&body.functions).map_err(|e| invalid(format!("functions: {e}")))?;
    if !body.functions.is_empty() && scopes.contains(&Scope::Admin) {
        return Err(invalid(
            "an admin key cannot be limited to functions: it may make any key; give invoke or read"
                .into(),
        ));
    }
    match body.rate_per_s {
        Some(rate) if !(rate.is_finite() && rate > 0.0 && rate <= MAX_RATE_PER_S) => {
            return Err(invalid(format!(
                "rate_per_s must be a number above 0 and at most {MAX_RATE_PER_S}, got {rate}"
            )))
        }
        None if body.burst.is_some() => return Err(invalid("burst needs rate_per_s".into())),
        _ => {}
    }
    if let Some(burst) = body.burst.filter(|b| !(1..=MAX_BURST).contains(b)) {
        return Err(invalid(format!(
            "burst must be from 1 to {MAX_BURST}, got {burst}"
        )));
    }
    Ok(())
}

/// Create an API key with scopes (admin, invoke, read), optionally limited to some functions
/// (`"functions": ["orders-*", "billing"]`) and to a request rate (`rate_per_s`, `burst`);
/// the key is answered once, only its hash is kept.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = NewKey, responses(
    (status = 201, description = "The key, shown this once.", body = CreatedKey),
    (status = 400, description = "Invalid name, body, scope, function pattern or rate.", body = ErrorBody),
    (status = 409, description = "A key with this name exists.", body = ErrorBody),
    (status = 413, description = "The body is too large.", body = ErrorBody)))]
pub async fn create(
    State(KeysBucket(bucket)): State<KeysBucket>,
    ApiJson(body): ApiJson<NewKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    Name::<OfKey>::parse(body.name.clone())?;
    if body.name == ADMIN_KEY_NAME {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidName,
            "the name admin is the admin key's access key id in AWS Signature V4; choose another",
        ));
    }
    if body.scopes.is_empty() {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidScope,
            "give at least one scope: admin, invoke or read",
        ));
    }
    let mut scopes = Vec::new();
    for scope in &body.scopes {
        let parsed = Scope::parse(scope).ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidScope,
                format!("unknown scope {scope:?}; the scopes are admin, invoke and read"),
            )
        })?;
        if !scopes.contains(&parsed) {
            scopes.push(parsed);
        }
    }
    check_limits(&body, &scopes)?;
    let key = new_key().map_err(|e| ApiError::internal("cannot make a random key", e))?;
    let record = KeyRecord {
        name: body.name.clone(),
        scopes,
        sha256: hex::encode(hash_key(&key)),
        created_at_ms: now_ms(),
        sigv4_secret: body.sigv4.then(|| key.clone()),
        functions: body.functions.clone(),
        rate_per_s: body.rate_per_s,
        burst: body.burst,
    };
    let value = serde_json::to_vec(&record).map_err(|e| ApiError::internal("key record", e))?;
    match bucket.create(&body.name, value.into()).await {
        Ok(_) => {}
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::KeyExists,
                format!("a key named {:?} exists; delete it first", body.name),
            ))
        }
        Err(e) => return Err(ApiError::broker("cannot store the key", e)),
    }
    tracing::info!(message = "API key created", key_name = %record.name);
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            created_at: crate::core::view::rfc3339(record.created_at_ms),
            limits: limits_of(&record),
            name: record.name,
            scopes: record.scopes,
            key,
        }),
    ))
}

/// List keys: names, scopes and limits, never the keys.
#[utoipa::path(get, path = "/v1/keys", tag = "keys", responses(
    (status = 200, description = "The keys.", body = KeyList)))]
pub async fn list(State(KeysBucket(bucket)): State<KeysBucket>) -> Result<Json<KeyList>, ApiError> {
    let mut keys = bucket
        .keys()
        .await
        .map_err(|e| ApiError::broker("cannot list keys", e))?;
    let mut views = Vec::new();
    while let Some(name) = keys.next().await {
        let name = name.map_err(|e| ApiError::broker("cannot list keys", e))?;
        if let Ok(Some(value)) = bucket.get(&name).await {
            if let Ok(record) = serde_json::from_slice::<KeyRecord>(&value) {
                views.push(KeyInfo {
                    created_at: crate::core::view::rfc3339(record.created_at_ms),
                    limits: limits_of(&record),
                    name: record.name,
                    scopes: record.scopes,
                });
            }
        }
    }
    views.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(KeyList { keys: views }))
}

/// Revoke a key, on every dispatcher.
#[utoipa::path(delete, path = "/v1/keys/{name}", tag = "keys",
    params(("name" = String, Path, description = "Key name.", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 204, description = "Revoked."),
        (status = 400, description = "Invalid name.", body = ErrorBody),
        (status = 404, description = "Unknown key.", body = ErrorBody)))]
pub async fn delete(
    State(KeysBucket(bucket)): State<KeysBucket>,
    name: Name<OfKey>,
) -> Result<StatusCode, ApiError> {
    let name = name.as_str();
    match bucket.get(name).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(ApiError::not_found(
                ErrorCode::KeyNotFound,
                format!("no key named {name:?}"),
            ))
        }
        Err(e) => return Err(ApiError::broker("cannot read the key", e)),
    }
    bucket
        .delete(name)
        .await
        .map_err(|e| ApiError::broker("cannot delete the key", e))?;
    tracing::info!(message = "API key revoked", key_name = %name);
    Ok(StatusCode::NO_CONTENT)
}
