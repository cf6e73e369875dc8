//! The key routes: `/v1/keys` (create, list, delete) and `/v1/whoami`.

use crate::core::keys::{
    hash_key, new_key, KeyRecord, KeyRing, KeysBucket, TraceUrl, ADMIN_KEY_NAME,
};
use crate::http::auth::scopes;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, Name, OfKey};
use async_nats::jetstream::kv;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::Json;
use futures::StreamExt as _;
pub use squall_api::operations::Scope;
use squall_api::operations::{CreatedKey, KeyInfo, KeyList, NewKey, WhoAmI};
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
    Json(WhoAmI {
        scopes: scopes(&keys, &request),
        auth_required: keys.enabled(),
        trace_url,
    })
}

/// Create an API key with scopes (admin, invoke, read); the key is answered once, only its
/// hash is kept.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = NewKey, responses(
    (status = 201, description = "The key, shown this once.", body = CreatedKey),
    (status = 400, description = "Invalid name, body or scope.", body = ErrorBody),
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
    let key = new_key().map_err(|e| ApiError::internal("cannot make a random key", e))?;
    let record = KeyRecord {
        name: body.name.clone(),
        scopes,
        sha256: hex::encode(hash_key(&key)),
        created_at_ms: now_ms(),
        sigv4_secret: body.sigv4.then(|| key.clone()),
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
            name: record.name,
            scopes: record.scopes,
            key,
        }),
    ))
}

/// List keys: names and scopes, never the keys.
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
