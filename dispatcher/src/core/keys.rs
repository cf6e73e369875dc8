//! API keys: the key store this dispatcher accepts, kept current by a KV watch, and how keys are made and hashed.

use async_nats::jetstream::kv;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
pub use squall_api::operations::Scope;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use subtle::ConstantTimeEq as _;

/// The access key id of the admin key in AWS Signature V4.
pub const ADMIN_KEY_NAME: &str = "admin";

/// The shortest admin key accepted from the environment.
pub const MIN_KEY_LEN: usize = 16;

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
