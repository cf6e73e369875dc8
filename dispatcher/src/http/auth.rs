//! API keys and scopes: who may call which route, the key store, and `/v1/keys`.
//!
//! Invariants: keys are stored only as SHA-256 hashes, in the `squall_keys` bucket that every
//! dispatcher follows (so a revocation reaches every replica); a presented key is compared
//! with every known hash in constant time; when no admin key is configured, the API is open
//! (and `main` refuses to listen beyond loopback unless anonymous access was asked for).

use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, Name, OfKey};
use crate::AppState;
use async_nats::jetstream::kv;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use squall_api::operations::{CreatedKey, KeyInfo, KeyList, NewKey, WhoAmI};
use squall_api::ErrorBody;
use squall_broker::time::now_ms;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use subtle::ConstantTimeEq as _;

/// The access key id of the admin key in AWS Signature V4.
pub const ADMIN_KEY_NAME: &str = "admin";

/// The shortest admin key accepted from the environment.
pub const MIN_KEY_LEN: usize = 16;

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

/// What the keys bucket holds per key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub name: String,
    pub scopes: Vec<Scope>,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    pub created_at_ms: u64,
    /// The key itself, kept only for a key made with `"sigv4": true`: an AWS Signature V4 is an
    /// HMAC keyed by the secret, so verifying one needs the secret, not a hash of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigv4_secret: Option<String>,
}

/// The hash a key is stored and compared as.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The prefix of every key the dispatcher makes.
pub const KEY_PREFIX: &str = "sq_";
/// How many random bytes a key the dispatcher makes carries.
pub const KEY_BYTES: usize = 32;

/// A new random key: `sq_` and 64 hex digits (256 bits from the OS's generator).
pub fn new_key() -> Result<String, getrandom::Error> {
    let mut random = [0u8; KEY_BYTES];
    getrandom::fill(&mut random)?;
    Ok(format!("{KEY_PREFIX}{}", hex::encode(random)))
}

/// A stored key as this dispatcher holds it: its hash and scopes.
type StoredKey = ([u8; 32], Vec<Scope>);

/// The keys this dispatcher knows: the admin key from its environment and the bucket's.
pub struct Keys {
    /// Hash of `SQUALL_ADMIN_KEY`; `None` means authentication is off.
    admin: Option<[u8; 32]>,
    /// Name → (hash, scopes), following the bucket.
    stored: RwLock<HashMap<String, StoredKey>>,
    /// The admin key itself (the SigV4 secret of access key id `admin`).
    admin_secret: Option<String>,
    /// Name → (secret, scopes) of the keys made for SigV4.
    signing: RwLock<HashMap<String, (String, Vec<Scope>)>>,
    pub metrics_open: bool,
}

impl Keys {
    pub fn new(admin_key: Option<&str>, metrics_open: bool) -> Keys {
        Keys {
            admin: admin_key.map(hash_key),
            stored: RwLock::new(HashMap::new()),
            admin_secret: admin_key.map(str::to_string),
            signing: RwLock::new(HashMap::new()),
            metrics_open,
        }
    }

    /// Whether keys are required at all.
    pub fn enabled(&self) -> bool {
        self.admin.is_some()
    }

    /// The scopes of `key`, if it is known. Every stored hash is compared, always.
    pub fn scopes_of(&self, key: &str) -> Option<Vec<Scope>> {
        let presented = hash_key(key);
        let mut found = None;
        if let Some(admin) = &self.admin {
            if bool::from(admin.ct_eq(&presented)) {
                found = Some(vec![Scope::Admin]);
            }
        }
        let stored = self.stored.read().expect("keys lock");
        for (hash, scopes) in stored.values() {
            if bool::from(hash.ct_eq(&presented)) && found.is_none() {
                found = Some(scopes.clone());
            }
        }
        found
    }

    /// The SigV4 secret and scopes of access key id `name`: the admin key for `admin`, else a
    /// key made with `"sigv4": true`.
    pub fn signing_key(&self, name: &str) -> Option<(String, Vec<Scope>)> {
        if name == ADMIN_KEY_NAME {
            return self
                .admin_secret
                .clone()
                .map(|secret| (secret, vec![Scope::Admin]));
        }
        self.signing.read().expect("keys lock").get(name).cloned()
    }

    fn apply(&self, entry: &kv::Entry) {
        let mut signing = self.signing.write().expect("keys lock");
        signing.remove(&entry.key);
        if entry.operation == kv::Operation::Put {
            if let Ok(KeyRecord {
                name,
                scopes,
                sigv4_secret: Some(secret),
                ..
            }) = serde_json::from_slice::<KeyRecord>(&entry.value)
            {
                signing.insert(name, (secret, scopes));
            }
        }
        drop(signing);
        let mut stored = self.stored.write().expect("keys lock");
        match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<KeyRecord>(&entry.value) {
                Ok(record) => {
                    let mut hash = [0u8; 32];
                    if hex::decode_to_slice(&record.sha256, &mut hash).is_ok() {
                        stored.insert(record.name, (hash, record.scopes));
                    }
                }
                Err(error) => {
                    tracing::warn!(message = "ignoring an unreadable key record", key = %entry.key, %error)
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => {
                stored.remove(&entry.key);
            }
        }
    }
}

/// Follows the keys bucket forever, so creations and revocations reach this dispatcher.
pub async fn follow(state: Arc<AppState>) {
    loop {
        let result = async {
            let mut watch = state.keys_bucket.watch_with_history(">").await?;
            while let Some(entry) = watch.next().await {
                state.keys.apply(&entry?);
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(error) = result {
            tracing::warn!(message = "keys watch failed; restarting", error = %error);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
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
                    "unauthorized",
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
                "forbidden",
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
pub fn check(state: &AppState, request: &Request, needed: Access) -> Result<(), Refusal> {
    if !state.keys.enabled() || needed == Access::Open {
        return Ok(());
    }
    let scopes = bearer(request)
        .and_then(|key| state.keys.scopes_of(key))
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
pub fn scopes(state: &AppState, request: &Request) -> Vec<Scope> {
    if !state.keys.enabled() {
        return vec![Scope::Admin];
    }
    bearer(request)
        .and_then(|key| state.keys.scopes_of(key))
        .unwrap_or_default()
}

/// What the presented key may do (its scopes), so a client offers only what it may; and the
/// trace viewer's link the console shows.
#[utoipa::path(get, path = "/v1/whoami", tag = "keys", responses(
    (status = 200, description = "The key's scopes.", body = WhoAmI)))]
pub async fn whoami(State(state): State<Arc<AppState>>, request: Request) -> Json<WhoAmI> {
    Json(WhoAmI {
        scopes: scopes(&state, &request),
        auth_required: state.keys.enabled(),
        trace_url: state.config.trace_url.clone(),
    })
}

/// The layer of a group of routes that need `access` (see `routes`).
pub async fn require(
    State((state, access)): State<(Arc<AppState>, Access)>,
    request: Request,
    next: Next,
) -> Response {
    match check(&state, &request, access) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// Create an API key with scopes (admin, invoke, read); the key is answered once, only its
/// hash is kept.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = NewKey, responses(
    (status = 201, description = "The key, shown this once.", body = CreatedKey),
    (status = 400, description = "Invalid name, body or scope.", body = ErrorBody),
    (status = 409, description = "A key with this name exists.", body = ErrorBody),
    (status = 413, description = "The body is too large.", body = ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<NewKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    Name::<OfKey>::parse(body.name.clone())?;
    if body.name == ADMIN_KEY_NAME {
        return Err(ApiError::bad_request(
            "invalid_name",
            "the name admin is the admin key's access key id in AWS Signature V4; choose another",
        ));
    }
    if body.scopes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_scope",
            "give at least one scope: admin, invoke or read",
        ));
    }
    let mut scopes = Vec::new();
    for scope in &body.scopes {
        let parsed = Scope::parse(scope).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_scope",
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
    match state.keys_bucket.create(&body.name, value.into()).await {
        Ok(_) => {}
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "key_exists",
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
pub async fn list(State(state): State<Arc<AppState>>) -> Result<Json<KeyList>, ApiError> {
    let mut keys = state
        .keys_bucket
        .keys()
        .await
        .map_err(|e| ApiError::broker("cannot list keys", e))?;
    let mut views = Vec::new();
    while let Some(name) = keys.next().await {
        let name = name.map_err(|e| ApiError::broker("cannot list keys", e))?;
        if let Ok(Some(value)) = state.keys_bucket.get(&name).await {
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
    State(state): State<Arc<AppState>>,
    name: Name<OfKey>,
) -> Result<StatusCode, ApiError> {
    let name = name.as_str();
    match state.keys_bucket.get(name).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(ApiError::not_found(
                "key_not_found",
                format!("no key named {name:?}"),
            ))
        }
        Err(e) => return Err(ApiError::broker("cannot read the key", e)),
    }
    state
        .keys_bucket
        .delete(name)
        .await
        .map_err(|e| ApiError::broker("cannot delete the key", e))?;
    tracing::info!(message = "API key revoked", key_name = %name);
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_by_hash_and_scopes_follow_the_record() {
        let keys = Keys::new(Some("admin-key-0123456789"), true);
        assert_eq!(
            keys.scopes_of("admin-key-0123456789"),
            Some(vec![Scope::Admin])
        );
        assert_eq!(keys.scopes_of("admin-key-012345678"), None);
        let key = new_key().unwrap();
        keys.stored
            .write()
            .unwrap()
            .insert("ci".into(), (hash_key(&key), vec![Scope::Invoke]));
        assert_eq!(keys.scopes_of(&key), Some(vec![Scope::Invoke]));
        assert_eq!(keys.scopes_of(&key[..key.len() - 1]), None);
    }

    #[test]
    fn a_hash_matches_only_itself_whichever_byte_differs() {
        let keys = Keys::new(None, true);
        let hash = hash_key("sq_stored");
        keys.stored
            .write()
            .unwrap()
            .insert("ci".into(), (hash, vec![Scope::Read]));
        assert_eq!(keys.scopes_of("sq_stored"), Some(vec![Scope::Read]));
        // The comparison itself, at the first and the last byte.
        for at in [0, 31] {
            let mut other = hash;
            other[at] ^= 1;
            assert!(!bool::from(hash.ct_eq(&other)), "byte {at}");
        }
        assert!(bool::from(hash.ct_eq(&hash_key("sq_stored"))));
    }

    #[test]
    fn new_keys_are_sq_and_256_random_bits_in_hex() {
        let key = new_key().unwrap();
        assert_eq!(key.len(), 67, "{key}");
        assert!(key.len() >= MIN_KEY_LEN);
        let hex_digits = key.strip_prefix(KEY_PREFIX).expect("sq_ prefix");
        let bytes = hex::decode(hex_digits).expect("lowercase hex");
        assert_eq!(bytes.len(), 32);
        assert_eq!(hex::encode(&bytes), hex_digits);
        assert_ne!(new_key().unwrap(), key, "two keys never repeat");
    }
}
