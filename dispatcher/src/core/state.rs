//! Functions' own state (`squall_state`) as the dispatcher touches it: a deleted function's keys
//! are purged, so a function deployed later under the same name starts with none.

use crate::core::broker::{Broker, BrokerError};
use futures::StreamExt as _;
use squall_broker::names::STATE_BUCKET;
use std::time::Duration;

/// How long the purge marker of a deleted function's key stays: long enough for every worker's
/// cache (a watch on the bucket) to hear of it, then it goes too.
const PURGE_MARKER_TTL: Duration = Duration::from_secs(60);

/// The most keys one deletion purges; a function with more keeps the rest (logged).
pub const MAX_PURGED_KEYS: usize = 1_000_000;

/// The bucket key a state message holds (its subject is `$KV.squall_state.<key>`), unless the
/// message is a delete or purge marker (`KV-Operation`), which needs no purge.
fn live_key(message: &async_nats::jetstream::Message) -> Option<String> {
    let deleted = message
        .headers
        .as_ref()
        .and_then(|h| h.get("KV-Operation"))
        .is_some();
    let prefix = format!("$KV.{STATE_BUCKET}.");
    let key = message.subject.as_str().strip_prefix(&prefix)?;
    (!deleted).then(|| key.to_string())
}

/// Purges every key of `function` (`<function>.<key>`) from the state bucket; answers how many.
/// Each key gets a purge marker, which the workers' caches follow, so none keeps serving the
/// old value to a function deployed later under the same name.
pub async fn purge_function_state(broker: &Broker, function: &str) -> Result<usize, BrokerError> {
    use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
    let state = &broker.topology.state;
    let failed = |e: &dyn std::fmt::Display| {
        BrokerError::new("cannot read the function's state", e.to_string())
    };
    let mut consumer = state
        .stream
        .create_consumer(OrderedConfig {
            filter_subject: format!("$KV.{STATE_BUCKET}.{function}.>"),
            deliver_policy: DeliverPolicy::LastPerSubject,
            headers_only: true,
            ..Default::default()
        })
        .await
        .map_err(|e| failed(&e))?;
    let pending = consumer.info().await.map_err(|e| failed(&e))?.num_pending as usize;
    let mut messages = consumer.messages().await.map_err(|e| failed(&e))?;
    let mut keys = Vec::new();
    for _ in 0..pending.min(MAX_PURGED_KEYS) {
        let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
        let Ok(Some(Ok(message))) = next else { break };
        keys.extend(live_key(&message));
    }
    if pending > MAX_PURGED_KEYS {
        tracing::warn!(
            message =
                "a deleted function has more state keys than one deletion purges; the rest stay",
            function,
            keys = pending,
            purged = MAX_PURGED_KEYS
        );
    }
    for key in &keys {
        state
            .purge_with_ttl(key, PURGE_MARKER_TTL)
            .await
            .map_err(|e| BrokerError::new("cannot purge the function's state", e))?;
    }
    Ok(keys.len())
}
