//! The dead-letter routes: list, show, remove and replay what the mover recorded.

use crate::core::broker::Broker;
use crate::core::invoke::Invoker;
use crate::core::registry::Registry;
use crate::core::submit::Submitter;
use crate::core::submit::{new_traceparent, Job};
use crate::core::view::rfc3339;
use crate::http::answer::accepted;
use crate::http::error::ApiError;
use crate::http::extract::{ApiQuery, FunctionName, InvocationId};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use base64::Engine;
use futures::StreamExt;
use squall_api::invocations::Accepted;
use squall_api::operations::{
    Attempt, DeadLetter as DeadLetterView, DeadLetterList, DeadLetterSummary, DlqParams, Replay,
    ReplayedAll,
};
use squall_api::ErrorBody;
use squall_api::ErrorCode;
use squall_broker::dlq::DeadLetter;
use squall_broker::time::now_ms;
use squall_broker::{headers as h, InvocationStatus};
use std::time::Duration;

/// The most dead letters one listing returns.
pub const MAX_LISTED: usize = 1000;

/// `summary` with its version's number, while the function retains that version.
fn numbered(registry: &Registry, mut summary: DeadLetterSummary) -> DeadLetterSummary {
    summary.version_number = registry.version_number(&summary.function, &summary.version);
    summary
}

fn summary_view(letter: &DeadLetter) -> DeadLetterSummary {
    DeadLetterSummary {
        id: letter.invocation_id.clone(),
        invocation_id: letter.invocation_id.clone(),
        function: letter.function.clone(),
        version: letter.version.clone(),
        version_number: None,
        status: letter.status,
        kind: letter.last_kind(),
        attempts: letter.attempts.len(),
        created_at: rfc3339(letter.created_at_ms),
        dead_lettered_at: rfc3339(letter.dead_lettered_at_ms),
    }
}

fn full_view(letter: &DeadLetter) -> DeadLetterView {
    let (payload, payload_base64) = match std::str::from_utf8(&letter.payload) {
        Ok(text) => (Some(text.to_string()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(&letter.payload)),
        ),
    };
    DeadLetterView {
        summary: summary_view(letter),
        payload,
        payload_base64,
        headers: letter.headers.iter().cloned().collect(),
        attempt_history: letter
            .attempts
            .iter()
            .map(|a| Attempt {
                attempt: a.attempt,
                kind: a.kind,
                message: a.message.clone(),
                started_at: (a.started_at_ms > 0).then(|| rfc3339(a.started_at_ms)),
                finished_at: (a.finished_at_ms > 0).then(|| rfc3339(a.finished_at_ms)),
                duration_ms: a.duration_us as f64 / 1000.0,
                worker: a.worker.clone(),
            })
            .collect(),
    }
}

/// Every dead letter whose subject matches `filter`, with its stream sequence, oldest first.
async fn scan(broker: &Broker, filter: String) -> Result<Vec<(u64, DeadLetter)>, ApiError> {
    use async_nats::jetstream::consumer::pull::OrderedConfig;
    let failed = |e: &dyn std::fmt::Display| {
        ApiError::broker("cannot read the dead-letter queue", e.to_string())
    };
    let mut consumer = broker
        .topology
        .dlq
        .create_consumer(OrderedConfig {
            filter_subject: filter,
            ..Default::default()
        })
        .await
        .map_err(|e| failed(&e))?;
    let pending = consumer.info().await.map_err(|e| failed(&e))?.num_pending as usize;
    let mut messages = consumer.messages().await.map_err(|e| failed(&e))?;
    let mut letters = Vec::new();
    for _ in 0..pending.min(MAX_LISTED) {
        let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
        let Ok(Some(Ok(message))) = next else { break };
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        match DeadLetter::decode(&message.payload) {
            Ok(letter) => letters.push((sequence, letter)),
            Err(error) => tracing::warn!(message = "skipping an unreadable dead letter", %error),
        }
    }
    Ok(letters)
}

/// The dead letter of invocation `id`, with its stream sequence.
async fn find(broker: &Broker, id: &str) -> Result<(u64, DeadLetter), ApiError> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let not_found = || {
        ApiError::not_found(
            ErrorCode::DeadLetterNotFound,
            format!("no dead letter for invocation {id}"),
        )
    };
    match broker
        .topology
        .dlq
        .get_last_raw_message_by_subject(&format!("dlq.*.{id}"))
        .await
    {
        Ok(message) => {
            let letter = DeadLetter::decode(&message.payload)
                .map_err(|e| ApiError::internal("dead letter", e))?;
            Ok((message.sequence, letter))
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Err(not_found()),
        Err(e) => Err(ApiError::broker("cannot read the dead-letter queue", e)),
    }
}

/// The `function` filter of `params`, checked.
fn function_filter(params: DlqParams) -> Result<Option<FunctionName>, ApiError> {
    Ok(params.function.map(FunctionName::parse).transpose()?)
}

const ID: &str = "Invocation id (UUIDv7) of the dead-lettered invocation.";

/// List dead letters (at most 1000, oldest first).
#[utoipa::path(get, path = "/v1/dlq", tag = "dead letters", params(DlqParams), responses(
    (status = 200, description = "Dead letters.", body = DeadLetterList),
    (status = 400, description = "Invalid function name or parameter.", body = ErrorBody)))]
pub async fn list(
    State(registry): State<Registry>,
    State(submitter): State<Submitter>,
    ApiQuery(params): ApiQuery<DlqParams>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let filter = match function_filter(params)? {
        Some(name) => format!("dlq.{name}.*"),
        None => "dlq.*.*".to_string(),
    };
    let letters = scan(&submitter.broker, filter).await?;
    Ok(Json(DeadLetterList {
        dead_letters: letters
            .iter()
            .map(|(_, l)| numbered(&registry, summary_view(l)))
            .collect(),
    }))
}

/// Show a dead letter: payload, headers and every attempt's error and timing.
#[utoipa::path(get, path = "/v1/dlq/{id}", tag = "dead letters",
    params(("id" = String, Path, description = ID, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The dead letter.", body = DeadLetterView),
        (status = 400, description = "Not a UUID.", body = ErrorBody),
        (status = 404, description = "No dead letter for this invocation.", body = ErrorBody)))]
pub async fn show(
    State(registry): State<Registry>,
    State(submitter): State<Submitter>,
    id: InvocationId,
) -> Result<Json<DeadLetterView>, ApiError> {
    let (_, letter) = find(&submitter.broker, &id).await?;
    let mut view = full_view(&letter);
    view.summary = numbered(&registry, view.summary);
    Ok(Json(view))
}

/// Remove a dead letter.
#[utoipa::path(delete, path = "/v1/dlq/{id}", tag = "dead letters",
    params(("id" = String, Path, description = ID, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 204, description = "Removed."),
        (status = 400, description = "Not a UUID.", body = ErrorBody),
        (status = 404, description = "No dead letter for this invocation.", body = ErrorBody)))]
pub async fn remove(
    State(_registry): State<Registry>,
    State(invoker): State<Invoker>,
    id: InvocationId,
) -> Result<StatusCode, ApiError> {
    let submitter = &invoker.submitter;
    let (sequence, letter) = find(&submitter.broker, &id).await?;
    submitter
        .broker
        .topology
        .dlq
        .delete_message(sequence)
        .await
        .map_err(|e| ApiError::broker("cannot delete the dead letter", e))?;
    // Its stored input goes with it (the bucket's age limit removes it otherwise).
    if let Some(stored) = stored_input(&letter) {
        if let Err(error) = invoker.payloads.delete(&letter.function, &stored).await {
            tracing::warn!(message = "cannot delete a removed dead letter's stored input",
                invocation_id = %letter.invocation_id, error = %error);
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The input a dead letter's job had stored in its function's payload bucket, if any.
fn stored_input(letter: &DeadLetter) -> Option<squall_broker::payloads::PayloadRef> {
    letter
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(h::PAYLOAD))
        .and_then(|(_, value)| squall_broker::payloads::PayloadRef::parse(value))
}

/// Submits a dead letter again as a new invocation linked to the original, then removes it
/// from the DLQ. Returns the new invocation id.
async fn replay_one(
    registry: &Registry,
    submitter: &Submitter,
    sequence: u64,
    letter: &DeadLetter,
) -> Result<String, ApiError> {
    let record = registry
        .load(&FunctionName::parse(letter.function.clone())?)
        .await?;
    let id = uuid::Uuid::now_v7().to_string();
    let mut extra_headers: Vec<(String, String)> = letter
        .headers
        .iter()
        // The stored input's reference travels on: the replay reads the same input.
        .filter(|(name, _)| {
            (!h::is_reserved(name) && name != h::TRACEPARENT)
                || name.eq_ignore_ascii_case(h::PAYLOAD)
        })
        .cloned()
        .collect();
    extra_headers.push((h::REPLAY_OF.to_string(), letter.invocation_id.clone()));
    let traceparent = new_traceparent();
    let job = Job {
        function: &letter.function,
        version: &record.version,
        id: &id,
        created_at_ms: now_ms(),
        traceparent: &traceparent,
        source: "replay",
        extra_headers,
        reply_to: None,
    };
    submitter.submit(job, letter.payload.clone().into()).await?;
    if let Err(error) = submitter.broker.topology.dlq.delete_message(sequence).await {
        tracing::warn!(message = "replayed dead letter could not be removed", invocation_id = %letter.invocation_id, %error);
    }
    tracing::info!(message = "dead letter replayed", function = %letter.function, replay_of = %letter.invocation_id, invocation_id = %id);
    Ok(id)
}

/// Replay a dead letter as a new invocation linked to the original (header
/// `Squall-Replay-Of`); the dead letter is removed.
#[utoipa::path(post, path = "/v1/dlq/{id}/replay", tag = "dead letters",
    params(("id" = String, Path, description = ID, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 202, description = "The new invocation.", body = Accepted),
        (status = 400, description = "Not a UUID.", body = ErrorBody),
        (status = 404, description = "No dead letter, or its function is no longer deployed.", body = ErrorBody)))]
pub async fn replay(
    State(registry): State<Registry>,
    State(submitter): State<Submitter>,
    id: InvocationId,
) -> Result<Response, ApiError> {
    let (sequence, letter) = find(&submitter.broker, &id).await?;
    let new_id = replay_one(&registry, &submitter, sequence, &letter).await?;
    Ok(accepted(&new_id, InvocationStatus::Queued, Some(&id)))
}

/// Replay every dead letter of a function as new invocations.
#[utoipa::path(post, path = "/v1/dlq/replay", tag = "dead letters", params(DlqParams), responses(
    (status = 202, description = "Replayed.", body = ReplayedAll),
    (status = 400, description = "Missing or invalid function.", body = ErrorBody),
    (status = 404, description = "Unknown function.", body = ErrorBody)))]
pub async fn replay_all(
    State(registry): State<Registry>,
    State(submitter): State<Submitter>,
    ApiQuery(params): ApiQuery<DlqParams>,
) -> Result<(StatusCode, Json<ReplayedAll>), ApiError> {
    let name = function_filter(params)?.ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::MissingFunction,
            "bulk replay needs ?function=<name>",
        )
    })?;
    registry.load(&name).await?;
    let letters = scan(&submitter.broker, format!("dlq.{name}.*")).await?;
    let mut replayed = Vec::new();
    for (sequence, letter) in &letters {
        let new_id = replay_one(&registry, &submitter, *sequence, letter).await?;
        replayed.push(Replay {
            replay_of: letter.invocation_id.clone(),
            invocation_id: new_id,
        });
    }
    Ok((StatusCode::ACCEPTED, Json(ReplayedAll { replayed })))
}
