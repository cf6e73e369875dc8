//! Job submission, shared by HTTP invokes, batches, cron ticks, triggers and replays: the
//! invocation id's claim, the trace context, the job's headers, the acked publish and the index.

use crate::http::error::ApiError;
use crate::index::Accepted;
use crate::AppState;
use axum::http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use squall_broker::headers as h;
use squall_broker::names::jobs_subject;
use squall_broker::time::now_ms;
use tracing::Instrument as _;

/// The request header that makes an invoke idempotent.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;

/// The `Idempotency-Key` header's text, or the 400 that explains what a key may be.
pub(crate) fn checked_idempotency_key(key: &HeaderValue) -> Result<&str, ApiError> {
    key.to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
                ),
            )
        })
}

/// Creates `kv_key` holding `value` in the idempotency bucket unless it exists; returns the value
/// it holds and whether it existed.
pub(crate) async fn claim_idempotency_value(
    state: &AppState,
    kv_key: &str,
    value: String,
) -> Result<(String, bool), ApiError> {
    let store = &state.broker.topology.idempotency;
    match store.create(kv_key, value.clone().into()).await {
        Ok(_) => Ok((value, false)),
        Err(e) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {
            let value = store
                .get(kv_key)
                .await
                .map_err(|e| ApiError::broker("cannot read the idempotency key", e))?
                .ok_or_else(|| {
                    ApiError::broker(
                        "cannot read the idempotency key",
                        "it expired while being read; retry",
                    )
                })?;
            Ok((String::from_utf8_lossy(&value).into_owned(), true))
        }
        Err(e) => Err(ApiError::broker("cannot record the idempotency key", e)),
    }
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

/// Claims `kv_key` for a new invocation id, or reads the id it already names.
pub(crate) async fn claim_kv_key(
    state: &AppState,
    kv_key: &str,
) -> Result<(String, u64, bool), ApiError> {
    let id = uuid::Uuid::now_v7().to_string();
    let (value, repeated) =
        claim_idempotency_value(state, kv_key, format!("{id} {}", now_ms())).await?;
    let (id, created) = value.split_once(' ').unwrap_or((&value, "0"));
    Ok((id.to_string(), created.parse().unwrap_or(0), repeated))
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

/// Publishes a job and waits for JetStream to accept it, then records it in the local index.
/// Through a leader election the same job is sent again (the stream drops the duplicates)
/// until the publish budget ends; only then is the answer a 503 with `Retry-After`.
/// With span export on, the job carries the trace context of its `squall.publish` span.
pub async fn submit(state: &AppState, job: Job<'_>, payload: bytes::Bytes) -> Result<(), ApiError> {
    let span = tracing::info_span!(
        "squall.publish",
        otel.kind = "producer",
        squall.function = %job.function,
        squall.invocation_id = %job.id,
        squall.source = %job.source,
    );
    let traceparent =
        squall_telemetry::traceparent_of(&span).unwrap_or_else(|| job.traceparent.to_string());
    submit_traced(state, job, &traceparent, payload)
        .instrument(span)
        .await
}

async fn submit_traced(
    state: &AppState,
    job: Job<'_>,
    traceparent: &str,
    payload: bytes::Bytes,
) -> Result<(), ApiError> {
    squall_broker::publish::publish_acked(
        &state.broker.topology.jetstream,
        &jobs_subject(job.function),
        job_headers(&job, traceparent),
        payload,
        &state.broker.publish,
    )
    .await
    .map_err(|e| ApiError::publish("the invocation was not accepted", e))?;
    record_accepted(state, &job);
    Ok(())
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

/// Counts a job JetStream stored and records it in the local index as queued.
pub(crate) fn record_accepted(state: &AppState, job: &Job<'_>) {
    let accepted = Accepted {
        function: job.function.to_string(),
        created_at_ms: job.created_at_ms,
    };
    state.metrics.accepted(job.function, job.source);
    if let Err(error) = state.index.insert(job.id, &accepted) {
        tracing::warn!(message = "cannot index an accepted invocation", invocation_id = %job.id, %error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
