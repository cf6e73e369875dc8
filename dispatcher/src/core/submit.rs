//! Job submission, shared by HTTP invokes, batches, cron ticks, triggers and replays: the
//! invocation id's claim, the trace context, the job's headers, the acked publish and the index.

use crate::core::broker::Broker;
use crate::core::metrics::Metrics;
use crate::core::registry::RegistryCache;
use crate::index::{Accepted, Index};
use axum::http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use squall_broker::headers as h;
use squall_broker::names::{consumer_name, jobs_subject};
use squall_broker::publish::PublishError;
use squall_broker::time::now_ms;
use std::sync::Arc;
use tracing::Instrument as _;

/// The request header that makes an invoke idempotent.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;

/// Why a job was not submitted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters")]
    InvalidIdempotencyKey,
    /// The broker could not be reached or refused a read or write.
    #[error("{context}: {error}")]
    Broker {
        context: &'static str,
        error: String,
    },
    /// JetStream did not store the job.
    #[error("the invocation was not accepted: {0}")]
    Publish(#[source] PublishError),
    /// The function already has as many jobs queued or running as its backlog limit allows
    /// (its spec's `max_backlog`, or the dispatcher's `--max-backlog`).
    #[error("function {function} has as many jobs waiting or running as its backlog limit allows; try again once its workers catch up")]
    BacklogFull { function: String },
}

impl SubmitError {
    fn broker(context: &'static str, error: impl std::fmt::Display) -> SubmitError {
        SubmitError::Broker {
            context,
            error: error.to_string(),
        }
    }
}

/// The `Idempotency-Key` header's text, checked.
pub(crate) fn checked_idempotency_key(key: &HeaderValue) -> Result<&str, SubmitError> {
    key.to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or(SubmitError::InvalidIdempotencyKey)
}

/// What submitting a job needs: the broker, the accepted-invocation index, the metrics, and
/// the registry's cache (for a function's own backlog limit).
#[derive(Clone)]
pub struct Submitter {
    pub broker: Broker,
    pub index: Index,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<RegistryCache>,
}

/// Whether `adding` more jobs would take a backlog of `backlog` jobs past `limit` (pure).
pub fn backlog_full(backlog: u64, adding: u64, limit: u64) -> bool {
    backlog.saturating_add(adding) > limit
}

/// The idempotency bucket's key of a CloudEvent made into an invocation of `function`: its
/// `source` and `id` (namespaced apart from `Idempotency-Key`s).
pub(crate) fn event_key(
    function: &str,
    attributes: &crate::core::cloudevents::Attributes,
) -> String {
    let text = format!(
        "cloudevent\n{function}\n{}\n{}",
        attributes.source, attributes.id
    );
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The most caller headers carried into a job.
const MAX_FORWARDED_HEADERS: usize = 32;

/// The caller's own `X-…` headers, which travel with the job and reach the function in
/// `ctx.event.headers` (and are kept in a dead letter).
pub(crate) fn forwarded_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-"))
        .filter_map(|(name, value)| {
            Some((
                canonical_header(name.as_str()),
                value.to_str().ok()?.to_string(),
            ))
        })
        .take(MAX_FORWARDED_HEADERS)
        .collect()
}

/// `x-tenant-id` → `X-Tenant-Id`, the spelling NATS clients usually use.
fn canonical_header(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

pub(crate) fn is_valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() == 4
        && parts[0].len() == 2
        && parts[1].len() == 32
        && parts[2].len() == 16
        && parts[3].len() == 2
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
        && parts[1] != "0".repeat(32)
        && parts[2] != "0".repeat(16)
}

pub fn new_traceparent() -> String {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

/// One job to publish.
pub struct Job<'a> {
    pub function: &'a str,
    /// The version current at acceptance; the worker runs exactly this one.
    pub version: &'a str,
    pub id: &'a str,
    pub created_at_ms: u64,
    pub traceparent: &'a str,
    /// What created it: `http`, `replay`, ….
    pub source: &'a str,
    /// Headers carried over (a replay keeps the original job's own headers).
    pub extra_headers: Vec<(String, String)>,
    /// The waiting dispatcher's direct-reply subject, on a synchronous job.
    pub reply_to: Option<&'a str>,
}

/// The NATS headers of a job: its carried-over headers, then Squall's own, with the invocation id
/// as `Nats-Msg-Id` only (so a repeated publish is dropped as a duplicate).
pub(crate) fn job_headers(job: &Job<'_>, traceparent: &str) -> async_nats::HeaderMap {
    let mut job_headers = async_nats::HeaderMap::new();
    for (name, value) in &job.extra_headers {
        job_headers.append(name.as_str(), value.as_str());
    }
    // The id travels once, as `Nats-Msg-Id` (below): workers read it from there.
    job_headers.insert(h::CREATED_AT, job.created_at_ms.to_string().as_str());
    job_headers.insert(h::SOURCE, job.source);
    job_headers.insert(h::VERSION, job.version);
    job_headers.insert(h::TRACEPARENT, traceparent);
    job_headers.insert(h::NATS_MSG_ID, job.id);
    if let Some(reply_to) = job.reply_to {
        job_headers.insert(h::REPLY_TO, reply_to);
    }
    job_headers
}

impl Submitter {
    /// Creates `kv_key` holding `value` in the idempotency bucket unless it exists; returns the
    /// value it holds and whether it existed.
    pub(crate) async fn claim_idempotency_value(
        &self,
        kv_key: &str,
        value: String,
    ) -> Result<(String, bool), SubmitError> {
        let store = &self.broker.topology.idempotency;
        match store.create(kv_key, value.clone().into()).await {
            Ok(_) => Ok((value, false)),
            Err(e) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {
                let value = store
                    .get(kv_key)
                    .await
                    .map_err(|e| SubmitError::broker("cannot read the idempotency key", e))?
                    .ok_or_else(|| {
                        SubmitError::broker(
                            "cannot read the idempotency key",
                            "it expired while being read; retry",
                        )
                    })?;
                Ok((String::from_utf8_lossy(&value).into_owned(), true))
            }
            Err(e) => Err(SubmitError::broker("cannot record the idempotency key", e)),
        }
    }

    /// Claims `kv_key` for a new invocation id, or reads the id it already names. Returns the
    /// id, its creation time, and whether the key was claimed before.
    pub(crate) async fn claim_kv_key(
        &self,
        kv_key: &str,
    ) -> Result<(String, u64, bool), SubmitError> {
        let id = uuid::Uuid::now_v7().to_string();
        let (value, repeated) = self
            .claim_idempotency_value(kv_key, format!("{id} {}", now_ms()))
            .await?;
        let (id, created) = value.split_once(' ').unwrap_or((&value, "0"));
        Ok((id.to_string(), created.parse().unwrap_or(0), repeated))
    }

    /// Maps `(function, key)` to one invocation id for the idempotency window: the first
    /// request creates the mapping atomically in KV (so concurrent dispatchers agree), later
    /// ones read it. Returns the id, its creation time, and whether the key was seen before.
    pub(crate) async fn claim_idempotency_key(
        &self,
        function: &str,
        key: &str,
    ) -> Result<(String, u64, bool), SubmitError> {
        let kv_key = hex::encode(Sha256::digest(format!("{function}\n{key}").as_bytes()));
        self.claim_kv_key(&kv_key).await
    }

    /// Publishes a job and waits for JetStream to accept it, then records it in the local
    /// index. Through a leader election the same job is sent again (the stream drops the
    /// duplicates) until the publish budget ends. With span export on, the job carries the
    /// trace context of its `squall.publish` span.
    pub async fn submit(&self, job: Job<'_>, payload: bytes::Bytes) -> Result<(), SubmitError> {
        let span = tracing::info_span!(
            "squall.publish",
            otel.kind = "producer",
            squall.function = %job.function,
            squall.invocation_id = %job.id,
            squall.source = %job.source,
        );
        let traceparent =
            squall_telemetry::traceparent_of(&span).unwrap_or_else(|| job.traceparent.to_string());
        self.submit_traced(job, &traceparent, payload)
            .instrument(span)
            .await
    }

    /// Refuses `adding` jobs of `function` when its spec's `max_backlog` would be passed. Only
    /// a function whose spec lowers the dispatcher's limit pays this read of its consumer; for
    /// every function JOBS itself refuses a job beyond the dispatcher's limit (the stream's
    /// per-subject limit), exactly, whoever publishes. This check reads the count before
    /// publishing, so concurrent submitters may pass the spec's limit by the jobs they have in
    /// flight at that moment, never the stream's.
    pub(crate) async fn check_backlog(
        &self,
        function: &str,
        adding: usize,
    ) -> Result<(), SubmitError> {
        let Some(limit) = self.registry.get(function).and_then(|r| r.max_backlog) else {
            return Ok(());
        };
        let info = self
            .broker
            .topology
            .jobs
            .consumer_info(consumer_name(function))
            .await
            .map_err(|e| SubmitError::broker("cannot read the function's backlog", e))?;
        let backlog = info.num_pending + info.num_ack_pending as u64;
        if backlog_full(backlog, adding as u64, limit) {
            return Err(SubmitError::BacklogFull {
                function: function.to_string(),
            });
        }
        Ok(())
    }

    async fn submit_traced(
        &self,
        job: Job<'_>,
        traceparent: &str,
        payload: bytes::Bytes,
    ) -> Result<(), SubmitError> {
        self.check_backlog(job.function, 1).await?;
        squall_broker::publish::publish_acked(
            &self.broker.topology.jetstream,
            &jobs_subject(job.function),
            job_headers(&job, traceparent),
            payload,
            &self.broker.publish,
        )
        .await
        .map_err(|error| match error {
            PublishError::SubjectFull(_) => SubmitError::BacklogFull {
                function: job.function.to_string(),
            },
            error => SubmitError::Publish(error),
        })?;
        self.record_accepted(&job);
        Ok(())
    }

    /// Counts a job JetStream stored and records it in the local index as queued.
    pub(crate) fn record_accepted(&self, job: &Job<'_>) {
        let accepted = Accepted {
            function: job.function.to_string(),
            created_at_ms: job.created_at_ms,
        };
        self.metrics.accepted(job.function, job.source);
        if let Err(error) = self.index.insert(job.id, &accepted) {
            tracing::warn!(message = "cannot index an accepted invocation", invocation_id = %job.id, %error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_is_full_when_the_new_jobs_would_pass_its_limit() {
        assert!(!backlog_full(0, 1, 1));
        assert!(backlog_full(1, 1, 1));
        assert!(!backlog_full(97, 3, 100));
        assert!(backlog_full(98, 3, 100));
    }

    #[test]
    fn traceparent_format_is_checked() {
        assert!(is_valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"
        ));
        assert!(!is_valid_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(is_valid_traceparent(&new_traceparent()));
    }
}
