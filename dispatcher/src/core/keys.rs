//! API keys: the key store this dispatcher accepts, kept current by a KV watch, how keys are
//! made and hashed, and what each key may do (`Grant`: scopes, functions, a request rate).

use crate::core::rate_limit::{Rate, RateLimiter};
use async_nats::jetstream::kv;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
pub use squall_api::operations::Scope;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq as _;

/// The access key id of the admin key in AWS Signature V4.
pub const ADMIN_KEY_NAME: &str = "admin";

/// The shortest admin key accepted from the environment.
pub const MIN_KEY_LEN: usize = 16;

/// What the keys bucket holds per key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The functions the key may invoke and read (names and `prefix*`); empty: all. Records
    /// written before keys had limits have none, and read as unlimited.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
    /// Requests per second, per dispatcher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<f64>,
    /// The token bucket's size (with `rate_per_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl KeyRecord {
    /// What a key of this record may do.
    pub fn grant(&self) -> Grant {
        Grant {
            name: self.name.clone(),
            scopes: self.scopes.clone(),
            functions: FunctionLimit::parse(&self.functions)
                .unwrap_or_else(|_| FunctionLimit::none()),
            rate: self
                .rate_per_s
                .filter(|r| r.is_finite() && *r > 0.0)
                .map(|per_s| match self.burst {
                    Some(burst) => Rate::with_burst(per_s, burst),
                    None => Rate::per_second(per_s),
                }),
        }
    }
}

/// One entry of a key's function limit: a whole name, or a prefix (`orders-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Name(String),
    Prefix(String),
}

/// The functions a key may invoke and read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionLimit {
    /// `None`: every function.
    patterns: Option<Vec<Pattern>>,
}

/// Why a function limit is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither a function name nor a prefix of one followed by * (such as orders-*)")]
pub struct BadPattern(pub String);

impl FunctionLimit {
    /// Every function.
    pub fn all() -> FunctionLimit {
        FunctionLimit { patterns: None }
    }

    /// No function at all (what an unreadable limit falls back to: never wider than meant).
    pub fn none() -> FunctionLimit {
        FunctionLimit {
            patterns: Some(Vec::new()),
        }
    }

    /// Names and `prefix*` patterns; an empty list is every function.
    pub fn parse(entries: &[String]) -> Result<FunctionLimit, BadPattern> {
        if entries.is_empty() {
            return Ok(FunctionLimit::all());
        }
        let valid = |text: &str| {
            !text.is_empty()
                && text.len() <= 64
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        let mut patterns = Vec::new();
        for entry in entries {
            let pattern = match entry.strip_suffix('*') {
                Some(prefix) if valid(prefix) => Pattern::Prefix(prefix.to_string()),
                None if valid(entry) => Pattern::Name(entry.clone()),
                _ => return Err(BadPattern(entry.clone())),
            };
            patterns.push(pattern);
        }
        Ok(FunctionLimit {
            patterns: Some(patterns),
        })
    }

    /// The names and `prefix*` patterns, as a key record and the API spell them; empty: all.
    pub fn to_strings(&self) -> Vec<String> {
        self.patterns
            .iter()
            .flatten()
            .map(|pattern| match pattern {
                Pattern::Name(name) => name.clone(),
                Pattern::Prefix(prefix) => format!("{prefix}*"),
            })
            .collect()
    }

    /// Whether every function is allowed.
    pub fn is_all(&self) -> bool {
        self.patterns.is_none()
    }

    /// Whether `function` (a bare name; a `name:qualifier` is judged by its name) is allowed.
    pub fn allows(&self, function: &str) -> bool {
        let name = function.split_once(':').map_or(function, |(name, _)| name);
        match &self.patterns {
            None => true,
            Some(patterns) => patterns.iter().any(|pattern| match pattern {
                Pattern::Name(allowed) => allowed == name,
                Pattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
            }),
        }
    }
}

/// What the key a request presents may do.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// The key's name (`admin` for the admin key).
    pub name: String,
    pub scopes: Vec<Scope>,
    pub functions: FunctionLimit,
    /// Requests per second on this dispatcher; `None`: unlimited.
    pub rate: Option<Rate>,
}

impl Grant {
    /// The admin key's (and every request's when keys are off): everything, unlimited.
    pub fn admin() -> Grant {
        Grant {
            name: ADMIN_KEY_NAME.to_string(),
            scopes: vec![Scope::Admin],
            functions: FunctionLimit::all(),
            rate: None,
        }
    }

    /// Whether it holds `scope` (or admin, which holds them all).
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
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

/// A stored key as this dispatcher holds it: its hash and grant.
type StoredKey = ([u8; 32], Arc<Grant>);

/// The keys this dispatcher knows: the admin key from its environment and the bucket's.
pub struct Keys {
    /// Hash of `SQUALL_ADMIN_KEY`; `None` means authentication is off.
    admin: Option<[u8; 32]>,
    /// Name → (hash, grant), following the bucket.
    stored: RwLock<HashMap<String, StoredKey>>,
    /// The admin key itself (the SigV4 secret of access key id `admin`).
    admin_secret: Option<String>,
    /// Name → (secret, grant) of the keys made for SigV4.
    signing: RwLock<HashMap<String, (String, Arc<Grant>)>>,
    /// The grant of the admin key, and of every request when keys are off.
    admin_grant: Arc<Grant>,
    /// The request rate of each key that has one, on this dispatcher.
    rates: RateLimiter<String>,
    pub metrics_open: bool,
}

impl Keys {
    pub fn new(admin_key: Option<&str>, metrics_open: bool) -> Keys {
        Keys {
            admin: admin_key.map(hash_key),
            stored: RwLock::new(HashMap::new()),
            admin_secret: admin_key.map(str::to_string),
            signing: RwLock::new(HashMap::new()),
            admin_grant: Arc::new(Grant::admin()),
            rates: RateLimiter::default(),
            metrics_open,
        }
    }

    /// Whether keys are required at all.
    pub fn enabled(&self) -> bool {
        self.admin.is_some()
    }

    /// What every request may do when keys are off: everything.
    pub fn open_grant(&self) -> Arc<Grant> {
        self.admin_grant.clone()
    }

    /// The grant of `key`, if it is known. Every stored hash is compared, always.
    pub fn grant_of(&self, key: &str) -> Option<Arc<Grant>> {
        let presented = hash_key(key);
        let mut found = None;
        if let Some(admin) = &self.admin {
            if bool::from(admin.ct_eq(&presented)) {
                found = Some(self.admin_grant.clone());
            }
        }
        let stored = self.stored.read().expect("keys lock");
        for (hash, grant) in stored.values() {
            if bool::from(hash.ct_eq(&presented)) && found.is_none() {
                found = Some(grant.clone());
            }
        }
        found
    }

    /// The scopes of `key`, if it is known.
    pub fn scopes_of(&self, key: &str) -> Option<Vec<Scope>> {
        self.grant_of(key).map(|grant| grant.scopes.clone())
    }

    /// Counts one request of `grant` against its rate, at `now`; past the rate, how long until
    /// the next one would be allowed. A key without a rate is never refused.
    pub fn take(&self, grant: &Grant, now: Instant) -> Result<(), Duration> {
        match grant.rate {
            None => Ok(()),
            Some(rate) => self.rates.take(grant.name.clone(), rate, now),
        }
    }

    /// The SigV4 secret and grant of access key id `name`: the admin key for `admin`, else a
    /// key made with `"sigv4": true`.
    pub fn signing_key(&self, name: &str) -> Option<(String, Arc<Grant>)> {
        if name == ADMIN_KEY_NAME {
            return self
                .admin_secret
                .clone()
                .map(|secret| (secret, self.admin_grant.clone()));
        }
        self.signing.read().expect("keys lock").get(name).cloned()
    }

    fn apply(&self, entry: &kv::Entry) {
        let mut signing = self.signing.write().expect("keys lock");
        signing.remove(&entry.key);
        if entry.operation == kv::Operation::Put {
            if let Ok(record) = serde_json::from_slice::<KeyRecord>(&entry.value) {
                if let Some(secret) = &record.sigv4_secret {
                    signing.insert(
                        record.name.clone(),
                        (secret.clone(), Arc::new(record.grant())),
                    );
                }
            }
        }
        drop(signing);
        let mut stored = self.stored.write().expect("keys lock");
        match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<KeyRecord>(&entry.value) {
                Ok(record) => {
                    let mut hash = [0u8; 32];
                    if hex::decode_to_slice(&record.sha256, &mut hash).is_ok() {
                        let grant = Arc::new(record.grant());
                        stored.insert(record.name, (hash, grant));
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
pub async fn follow(keys: Arc<Keys>, bucket: async_nats::jetstream::kv::Store) {
    loop {
        let result = async {
            let mut watch = bucket.watch_with_history(">").await?;
            while let Some(entry) = watch.next().await {
                keys.apply(&entry?);
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

/// The keys this dispatcher accepts, as a handler takes them.
#[derive(Clone)]
pub struct KeyRing(pub Arc<Keys>);

/// The keys bucket, as the key routes take it.
#[derive(Clone)]
pub struct KeysBucket(pub async_nats::jetstream::kv::Store);

/// The trace viewer's link the console shows (`--trace-url`), as `/v1/whoami` takes it.
#[derive(Clone)]
pub struct TraceUrl(pub Option<String>);

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(name: &str, scopes: Vec<Scope>) -> Grant {
        Grant {
            name: name.into(),
            scopes,
            functions: FunctionLimit::all(),
            rate: None,
        }
    }

    #[test]
    fn a_function_limit_allows_names_and_prefixes_and_nothing_else() {
        let limit = FunctionLimit::parse(&["orders-*".into(), "billing".into()]).unwrap();
        for allowed in [
            "orders-eu",
            "orders-",
            "billing",
            "billing:live",
            "orders-x:3",
        ] {
            assert!(limit.allows(allowed), "{allowed}");
        }
        for refused in ["billing2", "order", "bill", "ORDERS-eu", "x-orders-eu", ""] {
            assert!(!limit.allows(refused), "{refused}");
        }
        assert!(FunctionLimit::parse(&[]).unwrap().allows("anything"));
        assert!(FunctionLimit::parse(&[]).unwrap().is_all());
        assert!(!limit.is_all());
        assert!(!FunctionLimit::none().allows("anything"));
        for bad in ["*", "a*b", "or ders-*", "a.b", "**", ""] {
            assert_eq!(
                FunctionLimit::parse(&[bad.to_string()]),
                Err(BadPattern(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_key_record_written_before_limits_reads_as_unlimited() {
        let old = r#"{"name":"ci","scopes":["invoke"],"sha256":"00","created_at_ms":1}"#;
        let record: KeyRecord = serde_json::from_str(old).unwrap();
        let grant = record.grant();
        assert!(grant.functions.is_all());
        assert_eq!(grant.rate, None);
        // And a limited one keeps its limits through a round trip.
        let limited = KeyRecord {
            functions: vec!["orders-*".into()],
            rate_per_s: Some(2.0),
            burst: Some(4),
            ..record
        };
        let text = serde_json::to_string(&limited).unwrap();
        let back: KeyRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, limited);
        let grant = back.grant();
        assert!(grant.functions.allows("orders-eu") && !grant.functions.allows("billing"));
        assert_eq!(grant.rate, Some(Rate::with_burst(2.0, 4)));
    }

    #[test]
    fn a_keys_rate_refuses_past_its_burst_and_other_keys_keep_theirs() {
        let keys = Keys::new(Some("admin-key-0123456789"), false);
        let limited = Grant {
            rate: Some(Rate::with_burst(1.0, 2)),
            ..grant("ci", vec![Scope::Invoke])
        };
        let now = Instant::now();
        assert_eq!(keys.take(&limited, now), Ok(()));
        assert_eq!(keys.take(&limited, now), Ok(()));
        assert_eq!(keys.take(&limited, now), Err(Duration::from_secs(1)));
        let admin = keys.grant_of("admin-key-0123456789").unwrap();
        for _ in 0..100 {
            assert_eq!(keys.take(&admin, now), Ok(()));
        }
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
        keys.stored.write().unwrap().insert(
            "ci".into(),
            (hash_key(&key), Arc::new(grant("ci", vec![Scope::Invoke]))),
        );
        assert_eq!(keys.scopes_of(&key), Some(vec![Scope::Invoke]));
        assert_eq!(keys.scopes_of(&key[..key.len() - 1]), None);
    }

    #[test]
    fn a_hash_matches_only_itself_whichever_byte_differs() {
        let keys = Keys::new(None, true);
        let hash = hash_key("sq_stored");
        keys.stored.write().unwrap().insert(
            "ci".into(),
            (hash, Arc::new(grant("ci", vec![Scope::Read]))),
        );
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
