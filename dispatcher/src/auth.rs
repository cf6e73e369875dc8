//! API keys and scopes: who may call which route, the key store, and `/v1/keys`.
//!
//! Invariants: keys are stored only as SHA-256 hashes, in the `squall_keys` bucket that every
//! dispatcher follows (so a revocation reaches every replica); a presented key is compared
//! with every known hash in constant time; when no admin key is configured, the API is open
//! (and `main` refuses to listen beyond loopback unless anonymous access was asked for).

use crate::error::ApiError;
use crate::AppState;
use async_nats::jetstream::kv;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use squall_broker::time::now_ms;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use subtle::ConstantTimeEq as _;

/// The shortest admin key accepted from the environment.
pub const MIN_KEY_LEN: usize = 16;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Deploy, delete, schedules, triggers, dead letters, secrets, keys; and everything else.
    Admin,
    /// Invoke, and read invocations and results.
    Invoke,
    /// List and show functions, fleet, stats, usage.
    Read,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Invoke => "invoke",
            Scope::Read => "read",
        }
    }
}

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

/// The access rule of `method path`. `metrics_open` keeps `/metrics` open.
pub fn access(method: &Method, path: &str, metrics_open: bool) -> Access {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match segments.as_slice() {
        ["healthz"] | ["readyz"] | ["v1", "openapi.json"] => Access::Open,
        ["metrics"] if metrics_open => Access::Open,
        ["metrics"] => Access::Scope(Scope::Read),
        ["v1", "functions"] => Access::Scope(Scope::Read),
        ["v1", "functions", _] if method == Method::GET => Access::Scope(Scope::Read),
        ["v1", "functions", _] => Access::Scope(Scope::Admin),
        ["v1", "functions", _, "stats"] => Access::Scope(Scope::Read),
        ["v1", "functions", _, "invocations"] | ["v1", "functions", _, "batch"] => {
            Access::Scope(Scope::Invoke)
        }
        ["v1", "functions", _, "secrets"] => Access::Scope(Scope::Admin),
        ["v1", "invocations", ..] => Access::Scope(Scope::Invoke),
        ["v1", "fleet"] | ["v1", "usage"] => Access::Scope(Scope::Read),
        ["v1", "schedules", ..]
        | ["v1", "triggers", ..]
        | ["v1", "dlq", ..]
        | ["v1", "keys", ..] => Access::Scope(Scope::Admin),
        _ => Access::AnyKey,
    }
}

/// What the keys bucket holds per key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub name: String,
    pub scopes: Vec<Scope>,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    pub created_at_ms: u64,
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
    pub metrics_open: bool,
}

impl Keys {
    pub fn new(admin_key: Option<&str>, metrics_open: bool) -> Keys {
        Keys {
            admin: admin_key.map(hash_key),
            stored: RwLock::new(HashMap::new()),
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

    fn apply(&self, entry: &kv::Entry) {
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

/// Refuses a request without a key (401) or without the route's scope (403).
pub async fn require_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if !state.keys.enabled() {
        return next.run(request).await;
    }
    let needed = access(
        request.method(),
        request.uri().path(),
        state.keys.metrics_open,
    );
    if needed == Access::Open {
        return next.run(request).await;
    }
    let Some(scopes) = bearer(&request).and_then(|key| state.keys.scopes_of(key)) else {
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
        return response;
    };
    if let Access::Scope(scope) = needed {
        if !scopes.contains(&scope) && !scopes.contains(&Scope::Admin) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this key lacks the {} scope this route needs",
                    scope.as_str()
                ),
            )
            .with("scope", scope.as_str())
            .into_response();
        }
    }
    next.run(request).await
}

/// The body of `POST /v1/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    pub scopes: Vec<String>,
}

fn checked_key_name(name: &str) -> Result<(), ApiError> {
    squall_broker::validate_function_name(name).map_err(|e| {
        ApiError::bad_request(
            "invalid_name",
            e.to_string().replace("function name", "key name"),
        )
    })
}

/// `POST /v1/keys`: creates a key and answers it once; only its hash is kept.
pub async fn create(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let body: NewKey = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_key",
            format!("key body must be JSON {{name, scopes}}: {e}"),
        )
    })?;
    checked_key_name(&body.name)?;
    if body.scopes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_scope",
            "give at least one scope: admin, invoke or read",
        ));
    }
    let mut scopes = Vec::new();
    for scope in &body.scopes {
        let parsed = match scope.as_str() {
            "admin" => Scope::Admin,
            "invoke" => Scope::Invoke,
            "read" => Scope::Read,
            other => {
                return Err(ApiError::bad_request(
                    "invalid_scope",
                    format!("unknown scope {other:?}; the scopes are admin, invoke and read"),
                ))
            }
        };
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
        Json(serde_json::json!({
            "name": record.name,
            "scopes": record.scopes,
            "key": key,
            "created_at": crate::view::rfc3339(record.created_at_ms),
        })),
    )
        .into_response())
}

/// `GET /v1/keys`: names and scopes, never the keys.
pub async fn list(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
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
                views.push(serde_json::json!({
                    "name": record.name,
                    "scopes": record.scopes,
                    "created_at": crate::view::rfc3339(record.created_at_ms),
                }));
            }
        }
    }
    views.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(Json(serde_json::json!({ "keys": views })).into_response())
}

/// `DELETE /v1/keys/{name}`: revokes a key on every dispatcher.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    checked_key_name(&name)?;
    match state.keys_bucket.get(&name).await {
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
        .delete(&name)
        .await
        .map_err(|e| ApiError::broker("cannot delete the key", e))?;
    tracing::info!(message = "API key revoked", key_name = %name);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_the_scope_the_issue_names() {
        use Access::*;
        let get = Method::GET;
        let cases = [
            (Method::GET, "/healthz", Open),
            (get.clone(), "/readyz", Open),
            (get.clone(), "/v1/openapi.json", Open),
            (get.clone(), "/metrics", Open),
            (Method::PUT, "/v1/functions/f", Scope(self::Scope::Admin)),
            (Method::DELETE, "/v1/functions/f", Scope(self::Scope::Admin)),
            (get.clone(), "/v1/functions/f", Scope(self::Scope::Read)),
            (get.clone(), "/v1/functions", Scope(self::Scope::Read)),
            (
                get.clone(),
                "/v1/functions/f/stats",
                Scope(self::Scope::Read),
            ),
            (
                Method::POST,
                "/v1/functions/f/invocations",
                Scope(self::Scope::Invoke),
            ),
            (
                Method::POST,
                "/v1/functions/f/batch",
                Scope(self::Scope::Invoke),
            ),
            (
                get.clone(),
                "/v1/invocations/x/output",
                Scope(self::Scope::Invoke),
            ),
            (get.clone(), "/v1/invocations", Scope(self::Scope::Invoke)),
            (get.clone(), "/v1/fleet", Scope(self::Scope::Read)),
            (get.clone(), "/v1/usage", Scope(self::Scope::Read)),
            (get.clone(), "/v1/schedules", Scope(self::Scope::Admin)),
            (Method::PUT, "/v1/triggers/t", Scope(self::Scope::Admin)),
            (Method::POST, "/v1/dlq/x/replay", Scope(self::Scope::Admin)),
            (Method::POST, "/v1/keys", Scope(self::Scope::Admin)),
            (
                Method::PUT,
                "/v1/functions/f/secrets",
                Scope(self::Scope::Admin),
            ),
            (get.clone(), "/nowhere", AnyKey),
        ];
        for (method, path, want) in cases {
            assert_eq!(access(&method, path, true), want, "{method} {path}");
        }
        assert_eq!(access(&get, "/metrics", false), Scope(self::Scope::Read));
    }

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
