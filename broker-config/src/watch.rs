//! Watches of part of a KV bucket through a named ordered consumer: its create request names the filter in its subject, so a user allowed only that filter (a process with credentials of one function) may watch it.
//!
//! async-nats' own watches create unnamed consumers, whose filter travels only in the request's
//! body, so the broker cannot tell a watch of one key from a watch of the whole bucket.

use async_nats::jetstream::consumer::{push, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::kv::{self, Entry, Operation};
use futures::{Stream, StreamExt};
use std::str::FromStr;

/// Why a watch could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot create the watch's consumer: {0}")]
    Create(String),
    #[error("the watch failed: {0}")]
    Watch(String),
}

/// Follows the keys of `bucket` that match `keys` (one key, or a prefix ending in `.>`) from
/// `deliver` on, as entries like async-nats' `kv::Store::watch` yields.
pub async fn watch_named(
    client: &async_nats::Client,
    bucket: &kv::Store,
    keys: &str,
    deliver: DeliverPolicy,
) -> Result<impl Stream<Item = Result<Entry, WatchError>> + Send + Unpin, WatchError> {
    let prefix = bucket.prefix.clone();
    let name = bucket.name.clone();
    let consumer = bucket
        .stream
        .create_consumer(push::OrderedConfig {
            name: Some(format!("watch_{}", uuid::Uuid::new_v4().simple())),
            deliver_subject: client.new_inbox(),
            description: Some("squall watch".into()),
            filter_subject: format!("{prefix}{keys}"),
            replay_policy: ReplayPolicy::Instant,
            deliver_policy: deliver,
            ..Default::default()
        })
        .await
        .map_err(|error| WatchError::Create(error.to_string()))?;
    let mut seen_current = consumer.cached_info().num_pending == 0;
    let messages = consumer
        .messages()
        .await
        .map_err(|error| WatchError::Create(error.to_string()))?;
    Ok(messages.map(move |message| {
        let message = message.map_err(|error| WatchError::Watch(error.to_string()))?;
        let info = message
            .info()
            .map_err(|error| WatchError::Watch(error.to_string()))?;
        let operation = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get("KV-Operation"))
            .and_then(|op| Operation::from_str(op.as_str()).ok())
            .unwrap_or(Operation::Put);
        if info.pending == 0 {
            seen_current = true;
        }
        let key = message
            .subject
            .strip_prefix(prefix.as_str())
            .unwrap_or(message.subject.as_str())
            .to_string();
        Ok(Entry {
            bucket: name.clone(),
            key,
            value: message.payload.clone(),
            revision: info.stream_sequence,
            delta: info.pending,
            created: info.published,
            operation,
            seen_current,
        })
    }))
}
