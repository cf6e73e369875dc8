//! Standard Webhooks signatures of destination and callback POSTs: `webhook-id`,
//! `webhook-timestamp` and `webhook-signature` (`v1,<base64 HMAC-SHA256 of
//! "{id}.{timestamp}.{body}">`), with `whsec_<base64>` secrets, one signature per secret so a
//! rotation has two secrets valid at once.
//!
//! Each function signs with keys of its own, so the receivers of one function cannot sign
//! events of another. With operator secrets configured (`--webhook-secret`), a function's key
//! is derived from each of them and the random key its record keeps, so the registry's
//! contents alone cannot sign, and rotating the operator secrets rotates every function's key;
//! without any, the record's random key is the function's key. Pure: the caller reads the clock.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

/// The environment variable of the operator's secrets (`--webhook-secret`).
pub const ENV_WEBHOOK_SECRETS: &str = "SQUALL_WEBHOOK_SECRETS";
/// The event's id: the same for every try of a delivery (a receiver's idempotency key).
pub const ID_HEADER: &str = "webhook-id";
/// When this try was sent, in Unix seconds.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// The signatures, space-separated: `v1,<base64>` per key.
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// How a symmetric secret is written (the specification's serialization).
const SECRET_PREFIX: &str = "whsec_";
/// The specification's bounds of a symmetric secret, in bytes.
const MIN_SECRET: usize = 24;
const MAX_SECRET: usize = 64;
/// Operator secrets at once: the current one, and the previous one during a rotation.
pub const MAX_SECRETS: usize = 2;
/// What a function key is derived for, so an operator secret used elsewhere yields other keys.
const DERIVATION_LABEL: &[u8] = b"squall destination signing key\0";

/// A signing key: raw bytes, written `whsec_<base64>`. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Reads `whsec_<base64>` (24 to 64 bytes).
    pub fn parse(text: &str) -> Result<Secret, String> {
        let Some(encoded) = text.strip_prefix(SECRET_PREFIX) else {
            return Err(format!(
                "a webhook secret is written {SECRET_PREFIX}<base64>; this one does not start with {SECRET_PREFIX}"
            ));
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| {
                format!("a webhook secret's part after {SECRET_PREFIX} is not base64: {e}")
            })?;
        if !(MIN_SECRET..=MAX_SECRET).contains(&bytes.len()) {
            return Err(format!(
                "a webhook secret has {MIN_SECRET} to {MAX_SECRET} bytes, this one {} (for example: echo {SECRET_PREFIX}$(openssl rand -base64 32))",
                bytes.len()
            ));
        }
        Ok(Secret(bytes))
    }

    /// The key a function's record keeps (hex, as deploys write it; any other text is taken
    /// as its bytes); `None` for a record that has none.
    pub fn from_record(stored: &str) -> Option<Secret> {
        if stored.is_empty() {
            return None;
        }
        Some(Secret(
            hex::decode(stored).unwrap_or_else(|_| stored.as_bytes().to_vec()),
        ))
    }

    /// `whsec_<base64>`.
    pub fn encode(&self) -> String {
        format!(
            "{SECRET_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(&self.0)
        )
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The operator's secrets, newest first: none, one, or two during a rotation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets(Vec<Secret>);

impl Secrets {
    /// A comma-separated list of at most two `whsec_` secrets, the current one first.
    pub fn parse(text: &str) -> Result<Secrets, String> {
        let secrets = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Secret::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if secrets.len() > MAX_SECRETS {
            return Err(format!(
                "at most {MAX_SECRETS} webhook secrets (the current one, then the previous one during a rotation), got {}",
                secrets.len()
            ));
        }
        Ok(Secrets(secrets))
    }

    /// The keys a function signs with, the current one first: one per operator secret,
    /// derived from it and the key the function's record keeps, or that key itself when the
    /// operator configured none. Empty for a record without a key.
    pub fn function_keys(&self, stored: &str) -> Vec<Secret> {
        let Some(own) = Secret::from_record(stored) else {
            return Vec::new();
        };
        if self.0.is_empty() {
            return vec![own];
        }
        self.0
            .iter()
            .map(|operator| {
                let mut mac = operator.mac();
                mac.update(DERIVATION_LABEL);
                mac.update(&own.0);
                Secret(mac.finalize().into_bytes().to_vec())
            })
            .collect()
    }
}

/// The `webhook-signature` value: `v1,<base64>` for each key, space-separated, over
/// `{id}.{timestamp}.{body}`.
pub fn sign(keys: &[Secret], id: &str, timestamp: u64, body: &[u8]) -> String {
    keys.iter()
        .map(|key| {
            let mut mac = key.mac();
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_specifications_published_example() {
        // The example the Standard Webhooks libraries test against.
        let key = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign(
                std::slice::from_ref(&key),
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(key.encode(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert_eq!(format!("{key:?}"), "Secret(..)");
    }

    #[test]
    fn a_rotation_sends_one_signature_per_key_current_first() {
        let a = Secret::parse(&format!("whsec_{}", "A".repeat(32))).unwrap();
        let b = Secret::parse(&format!("whsec_{}", "B".repeat(32))).unwrap();
        let both = sign(&[b.clone(), a.clone()], "id", 7, b"{}");
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(
            parts,
            [sign(&[b], "id", 7, b"{}"), sign(&[a], "id", 7, b"{}")]
        );
        assert_eq!(sign(&[], "id", 7, b"{}"), "");
    }

    #[test]
    fn secrets_are_checked() {
        assert!(Secrets::parse("").unwrap().0.is_empty());
        let two = format!("whsec_{0},whsec_{1}", "A".repeat(32), "B".repeat(32));
        assert_eq!(Secrets::parse(&two).unwrap().0.len(), 2);
        let three = format!("{two},whsec_{}", "C".repeat(32));
        assert!(Secrets::parse(&three).unwrap_err().contains("at most 2"));
        assert!(Secrets::parse("plain-text-secret").is_err());
        assert!(Secrets::parse("whsec_%%%").is_err());
        // 18 bytes: below the specification's 24.
        assert!(Secrets::parse(&format!("whsec_{}", "A".repeat(24))).is_err());
    }

    #[test]
    fn function_keys_are_the_records_key_or_derived_per_function_and_operator_secret() {
        let stored_f = "11".repeat(32);
        let stored_g = "22".repeat(32);
        let none = Secrets::default();
        let own = none.function_keys(&stored_f);
        assert_eq!(own, [Secret(vec![0x11; 32])]);
        assert!(none.function_keys("").is_empty());

        let old = Secrets::parse(&format!("whsec_{}", "A".repeat(32))).unwrap();
        let rotating = Secrets::parse(&format!(
            "whsec_{},whsec_{}",
            "B".repeat(32),
            "A".repeat(32)
        ))
        .unwrap();
        let f_old = old.function_keys(&stored_f);
        let f_rotating = rotating.function_keys(&stored_f);
        assert_eq!(f_rotating.len(), 2);
        // During a rotation the previous key still signs, beside the new one.
        assert_eq!(f_rotating[1], f_old[0]);
        assert_ne!(f_rotating[0], f_old[0]);
        // Keys differ per function and from the record's own key.
        assert_ne!(old.function_keys(&stored_g)[0], f_old[0]);
        assert_ne!(f_old[0], own[0]);
        assert_eq!(f_old[0].0.len(), 32);
    }
}
