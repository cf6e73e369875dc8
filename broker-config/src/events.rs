//! Event bindings: trigger records and the subject rules they must follow.
//!
//! Invariant: no two subject triggers capture overlapping subjects, and no trigger captures a
//! subject Squall itself uses, so every event message belongs to exactly one trigger.

use serde::{Deserialize, Serialize};

/// What a trigger listens to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TriggerSource {
    /// Every message published on a subject matching `subject` (wildcards allowed).
    Subject { subject: String },
    /// Every put or delete of a key matching `key` (wildcards allowed) in KV bucket `bucket`.
    Kv { bucket: String, key: String },
}

/// What the triggers bucket holds per trigger, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerRecord {
    pub name: String,
    pub function: String,
    pub source: TriggerSource,
    pub created_at_ms: u64,
}

impl TriggerRecord {
    /// The JSON stored in the bucket.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a TriggerRecord always encodes")
    }

    /// Reads a bucket value.
    pub fn decode(bytes: &[u8]) -> Result<TriggerRecord, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The stream subject filter of this trigger's consumer.
    pub fn filter_subject(&self) -> String {
        match &self.source {
            TriggerSource::Subject { subject } => subject.clone(),
            TriggerSource::Kv { bucket, key } => format!("$KV.{bucket}.{key}"),
        }
    }
}

/// Subject prefixes Squall owns; a trigger may not capture them.
pub const RESERVED_PREFIXES: &[&str] = &[
    "jobs",
    "results",
    "dlq",
    "dlq-destinations",
    "schedules",
    "cron",
    "squall",
    "$JS",
    "$KV",
    "$O",
    "$SYS",
    "_INBOX",
];

/// Why a subject pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("subject pattern is empty")]
    Empty,
    #[error("subject pattern {0:?} is longer than 256 characters")]
    TooLong(String),
    #[error("subject pattern {0:?} has an empty token, a space or a control character")]
    Malformed(String),
    #[error("subject pattern {0:?} has '>' before its last token, or a wildcard inside a token")]
    BadWildcard(String),
    #[error(
        "subject pattern {pattern:?} captures subjects under {prefix:?}, which Squall reserves"
    )]
    Reserved { pattern: String, prefix: String },
}

/// Checks a NATS subject pattern: tokens separated by '.', `*` for one token, `>` for the rest.
pub fn validate_subject_pattern(pattern: &str) -> Result<(), SubjectError> {
    if pattern.is_empty() {
        return Err(SubjectError::Empty);
    }
    if pattern.len() > 256 {
        return Err(SubjectError::TooLong(pattern.to_string()));
    }
    let tokens: Vec<&str> = pattern.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SubjectError::Malformed(pattern.to_string()));
        }
        let wild_inside = token.len() > 1 && (token.contains('*') || token.contains('>'));
        if wild_inside || (*token == ">" && i + 1 != tokens.len()) {
            return Err(SubjectError::BadWildcard(pattern.to_string()));
        }
    }
    // Every `$` subject (the server's own APIs: JetStream, KV, object stores, system, services,
    // MQTT, …) and every inbox prefix (`_INBOX`, and each role's `_INBOX_<role>`) is reserved,
    // not only the ones listed.
    let first = tokens[0];
    if first.starts_with('$') || first.starts_with("_INBOX") {
        return Err(SubjectError::Reserved {
            pattern: pattern.to_string(),
            prefix: first.to_string(),
        });
    }
    for prefix in RESERVED_PREFIXES {
        if subjects_overlap(pattern, &format!("{prefix}.>")) || pattern == *prefix {
            return Err(SubjectError::Reserved {
                pattern: pattern.to_string(),
                prefix: prefix.to_string(),
            });
        }
    }
    Ok(())
}

/// The prefix of the buckets Squall keeps (registry, keys, state, …): no trigger may watch them.
pub const RESERVED_BUCKET_PREFIX: &str = "squall_";

/// Why a key-value trigger's bucket was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BucketError {
    #[error("bucket name {0:?} must be 1 to 64 ASCII letters, digits, '-' or '_'")]
    Malformed(String),
    #[error("bucket {0:?} is one of Squall's own (squall_*), which triggers may not watch")]
    Reserved(String),
}

/// Checks the bucket a key-value trigger watches: a plain bucket name, not one of Squall's
/// (`squall_registry` holds secrets, `squall_keys` the API keys' hashes, `squall_state` every
/// function's state).
pub fn validate_kv_bucket(bucket: &str) -> Result<(), BucketError> {
    let plain = !bucket.is_empty()
        && bucket.len() <= 64
        && bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !plain {
        return Err(BucketError::Malformed(bucket.to_string()));
    }
    let prefix = RESERVED_BUCKET_PREFIX.len();
    if bucket.len() >= prefix && bucket[..prefix].eq_ignore_ascii_case(RESERVED_BUCKET_PREFIX) {
        return Err(BucketError::Reserved(bucket.to_string()));
    }
    Ok(())
}

/// Whether some subject matches both patterns.
pub fn subjects_overlap(a: &str, b: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
    let mut i = 0;
    loop {
        match (a.get(i), b.get(i)) {
            (None, None) => return true,
            // '>' needs at least one more token, which the other side has here.
            (Some(&">"), Some(_)) | (Some(_), Some(&">")) => return true,
            (Some(x), Some(y)) if *x == "*" || *y == "*" || x == y => i += 1,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_follows_nats_wildcards() {
        assert!(subjects_overlap("events.orders.>", "events.orders.created"));
        assert!(subjects_overlap("events.*.created", "events.orders.>"));
        assert!(subjects_overlap("a.b", "a.b"));
        assert!(subjects_overlap(">", "x"));
        assert!(!subjects_overlap("events.orders.>", "events.orders"));
        assert!(!subjects_overlap("events.orders.*", "events.users.*"));
        assert!(!subjects_overlap("a.*", "a.b.c"));
        assert!(!subjects_overlap("a.b", "a.b.c"));
    }

    #[test]
    fn patterns_are_checked_and_reserved_subjects_refused() {
        assert!(validate_subject_pattern("events.orders.>").is_ok());
        assert!(validate_subject_pattern("events.*.created").is_ok());
        assert_eq!(validate_subject_pattern(""), Err(SubjectError::Empty));
        assert!(matches!(
            validate_subject_pattern("events..x"),
            Err(SubjectError::Malformed(_))
        ));
        assert!(matches!(
            validate_subject_pattern("events.>.x"),
            Err(SubjectError::BadWildcard(_))
        ));
        assert!(matches!(
            validate_subject_pattern("events.a*"),
            Err(SubjectError::BadWildcard(_))
        ));
        for bad in [
            "jobs.hello",
            ">",
            "*.hello",
            "$KV.b.k",
            "cron.x",
            "$SRV.PING",
            "$MQTT.sess.x",
            "_INBOX_dispatcher.squall-reply.d.id",
            "_INBOX_client.x",
        ] {
            assert!(
                matches!(
                    validate_subject_pattern(bad),
                    Err(SubjectError::Reserved { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn kv_triggers_may_not_watch_squalls_own_buckets() {
        assert_eq!(validate_kv_bucket("orders"), Ok(()));
        assert_eq!(validate_kv_bucket("my_squall_data"), Ok(()));
        for own in [
            "squall_keys",
            "squall_registry",
            "squall_state",
            "SQUALL_keys",
        ] {
            assert_eq!(
                validate_kv_bucket(own),
                Err(BucketError::Reserved(own.into()))
            );
        }
        for bad in ["", "a.b", "a*", "a>", "a b", "$KV"] {
            assert!(matches!(
                validate_kv_bucket(bad),
                Err(BucketError::Malformed(_))
            ));
        }
    }

    #[test]
    fn records_round_trip_as_json() {
        let record = TriggerRecord {
            name: "orders".into(),
            function: "hello".into(),
            source: TriggerSource::Kv {
                bucket: "config".into(),
                key: "app.*".into(),
            },
            created_at_ms: 5,
        };
        let back = TriggerRecord::decode(&record.encode()).unwrap();
        assert_eq!(back, record);
        assert_eq!(back.filter_subject(), "$KV.config.app.*");
    }
}
