//! The dead-letter queue: the mover that records jobs which exhausted their deliveries, and the
//! `/v1/dlq` API to list, show, replay and remove dead letters.

use crate::api::invocations::accepted;
use crate::core::registry::load_record;
use crate::core::submit::{new_traceparent, submit, Job};
use crate::core::view::rfc3339;
use crate::http::error::ApiError;
use crate::http::extract::{ApiQuery, FunctionName, InvocationId};
use crate::AppState;
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
use squall_broker::dlq::{self, AttemptRecord, DeadLetter, CRASH_MESSAGE};
use squall_broker::names::results_subject;
use squall_broker::time::now_ms;
use squall_broker::topology::dlq_mover_consumer;
use squall_broker::{headers as h, ErrorKind, InvocationStatus, ResultMeta};
use std::sync::Arc;
use std::time::Duration;

/// The most dead letters one listing returns.
pub const MAX_LISTED: usize = 1000;

/// What JetStream says when a job ran out of deliveries.
/// The most queued jobs a function delete dead-letters in one request.
pub const MAX_SWEPT: usize = 100_000;

/// Dead-letters every job still queued for a deleted function, so none is left without an
/// outcome. Returns how many were moved.
pub async fn sweep_deleted_function(state: &AppState, function: &str) -> anyhow::Result<usize> {
    use async_nats::jetstream::stream::RawMessageErrorKind;
    let subject = squall_broker::names::jobs_subject(function);
    let mut next = 1;
    let mut moved = 0;
    while moved < MAX_SWEPT {
        match state
            .topology
            .jobs
            .get_first_raw_message_by_subject(&subject, next)
            .await
        {
            Ok(job) => {
                remove_job(state, job.sequence, Removal::FunctionDeleted).await?;
                next = job.sequence + 1;
                moved += 1;
            }
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
            Err(e) => anyhow::bail!("cannot read queued jobs of {function}: {e}"),
        }
    }
    Ok(moved)
}

#[derive(Debug, serde::Deserialize)]
struct MaxDeliveries {
    stream_seq: u64,
    deliveries: u64,
}

/// Runs the dead-letter mover until the process ends. Every dispatcher runs one; they share one
/// durable consumer on a work-queue stream, so each exhausted job is handled once, and the DLQ
/// record is de-duplicated by invocation id besides.
pub async fn run_mover(state: Arc<AppState>) {
    loop {
        if let Err(error) = mover(&state).await {
            tracing::warn!(message = "dead-letter mover failed; restarting", error = %error);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn mover(state: &AppState) -> anyhow::Result<()> {
    let consumer = dlq_mover_consumer(&state.topology.advisories).await?;
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
        match serde_json::from_slice::<MaxDeliveries>(&message.payload) {
            Ok(advisory) => {
                if let Err(error) = move_to_dlq(state, &advisory).await {
                    // Not acknowledged: the advisory comes back and the move is retried.
                    tracing::warn!(message = "cannot dead-letter an exhausted job; will retry",
                        stream_seq = advisory.stream_seq, error = %error);
                    continue;
                }
            }
            Err(error) => {
                tracing::warn!(message = "ignoring an unreadable advisory", error = %error)
            }
        }
        let _ = message.ack().await;
    }
    Ok(())
}

/// Why a job is taken out of JOBS by a dispatcher rather than acknowledged by a worker.
#[derive(Debug, Clone, Copy)]
pub enum Removal {
    /// JetStream gave up after this many deliveries without an outcome: its workers died.
    Exhausted { deliveries: u32 },
    /// Its function was deleted before the job ran.
    FunctionDeleted,
}

async fn move_to_dlq(state: &AppState, advisory: &MaxDeliveries) -> anyhow::Result<()> {
    let deliveries = advisory.deliveries.clamp(1, u64::from(u32::MAX)) as u32;
    remove_job(
        state,
        advisory.stream_seq,
        Removal::Exhausted { deliveries },
    )
    .await
}

/// Takes the job at `stream_seq` out of JOBS so that its invocation still ends in exactly one
/// terminal state: when it has none yet, writes one (`dead_lettered`, kind `crash` or `load`)
/// and a dead letter; a dead letter is also written when the worker recorded a dead end but
/// could not store the record. Safe to repeat.
pub async fn remove_job(state: &AppState, stream_seq: u64, removal: Removal) -> anyhow::Result<()> {
    use async_nats::jetstream::stream::RawMessageErrorKind;
    let jobs = &state.topology.jobs;
    let job = match jobs.get_raw_message(stream_seq).await {
        Ok(job) => job,
        // Already moved (or acknowledged at the last moment): nothing to do.
        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(()),
        Err(e) => anyhow::bail!("cannot read job {stream_seq}: {e}"),
    };
    let function = job
        .subject
        .as_str()
        .strip_prefix("jobs.")
        .unwrap_or_default()
        .to_string();
    let published_ms = (job.time.unix_timestamp_nanos() / 1_000_000) as u64;
    let header = |name: &str| job.headers.get(name).map(|v| v.as_str().to_string());
    let id = squall_broker::record::job_invocation_id(header).unwrap_or_else(|| {
        squall_broker::record::derived_invocation_id(published_ms, job.sequence)
    });
    let created_at_ms = header(h::CREATED_AT)
        .and_then(|v| v.parse().ok())
        .unwrap_or(published_ms);
    let history = dlq::result_history(&state.topology.results, &function, &id).await;
    let recorded = history
        .iter()
        .map(|(meta, _)| meta.attempt)
        .max()
        .unwrap_or(0);
    let (attempts, kind, reason) = match removal {
        Removal::Exhausted { deliveries } => (
            deliveries.max(recorded),
            ErrorKind::Crash,
            CRASH_MESSAGE.to_string(),
        ),
        Removal::FunctionDeleted => (
            recorded + 1,
            ErrorKind::Load,
            format!("function {function} was deleted before this invocation ran"),
        ),
    };
    let version = match history.last() {
        Some((meta, _)) => meta.version.clone(),
        None => match FunctionName::parse(function.clone()) {
            Ok(name) => load_record(state, &name)
                .await
                .map(|record| record.version)
                .unwrap_or_default(),
            Err(_) => String::new(),
        },
    };
    let terminal = history
        .last()
        .filter(|(meta, _)| meta.status.is_terminal())
        .map(|(m, _)| m.status);
    let status = match terminal {
        // Finished normally; only the acknowledgement was lost. Nothing to dead-letter.
        Some(InvocationStatus::Succeeded | InvocationStatus::Failed) => {
            jobs.delete_message(stream_seq).await?;
            return Ok(());
        }
        Some(status) => status,
        None => {
            let now = now_ms();
            let meta = ResultMeta {
                invocation_id: id.clone(),
                function: function.clone(),
                version: version.clone(),
                status: InvocationStatus::DeadLettered,
                attempt: attempts,
                error_kind: Some(kind),
                created_at_ms,
                started_at_ms: now,
                finished_at_ms: now,
                duration_us: 0,
                cpu_us: 0,
                kv_ops: 0,
                kv_bytes: 0,
                logs: Vec::new(),
                worker: String::new(),
                trace_id: squall_broker::record::trace_id_of(
                    &header(h::TRACEPARENT).unwrap_or_default(),
                ),
            };
            let mut headers = meta.to_headers();
            headers.insert(h::NATS_MSG_ID, meta.message_id().as_str());
            let reply = header(h::REPLY_TO)
                .filter(|to| squall_broker::names::is_reply_subject(to, &id))
                .map(|to| (to, headers.clone()));
            squall_broker::publish::publish_acked(
                &state.topology.jetstream,
                &results_subject(&function, &id),
                headers,
                reason.clone().into(),
                &squall_broker::publish::PublishPolicy::default(),
            )
            .await?;
            // A synchronous caller still waiting hears of the crash at once.
            if let Some((to, headers)) = reply {
                let _ = state
                    .client
                    .publish_with_headers(to, headers, reason.clone().into())
                    .await;
            }
            InvocationStatus::DeadLettered
        }
    };
    let mut letter = DeadLetter::builder(&id, &function, &version, created_at_ms)
        .status(status)
        .job(Some(&job.headers), &job.payload)
        .history(&history);
    if terminal.is_none() {
        if let Removal::FunctionDeleted = removal {
            let now = now_ms();
            letter = letter.attempt(AttemptRecord {
                attempt: attempts,
                kind: Some(kind),
                message: reason.clone(),
                started_at_ms: now,
                finished_at_ms: now,
                duration_us: 0,
                worker: String::new(),
            });
        }
    }
    let letter = letter.build(attempts, now_ms());
    dlq::publish_dead_letter(&state.topology.jetstream, &letter).await?;
    jobs.delete_message(stream_seq).await?;
    tracing::info!(message = "job dead-lettered", function = %function, invocation_id = %id, attempts, reason = %reason);
    Ok(())
}

/// `summary` with its version's number, while the function retains that version.
fn numbered(state: &AppState, mut summary: DeadLetterSummary) -> DeadLetterSummary {
    summary.version_number =
        crate::core::registry::version_number(state, &summary.function, &summary.version);
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
async fn scan(state: &AppState, filter: String) -> Result<Vec<(u64, DeadLetter)>, ApiError> {
    use async_nats::jetstream::consumer::pull::OrderedConfig;
    let broker = |e: &dyn std::fmt::Display| {
        ApiError::broker("cannot read the dead-letter queue", e.to_string())
    };
    let mut consumer = state
        .topology
        .dlq
        .create_consumer(OrderedConfig {
            filter_subject: filter,
            ..Default::default()
        })
        .await
        .map_err(|e| broker(&e))?;
    let pending = consumer.info().await.map_err(|e| broker(&e))?.num_pending as usize;
    let mut messages = consumer.messages().await.map_err(|e| broker(&e))?;
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
async fn find(state: &AppState, id: &str) -> Result<(u64, DeadLetter), ApiError> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let not_found = || {
        ApiError::not_found(
            "dead_letter_not_found",
            format!("no dead letter for invocation {id}"),
        )
    };
    match state
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
    params.function.map(FunctionName::parse).transpose()
}

const ID: &str = "Invocation id (UUIDv7) of the dead-lettered invocation.";

/// List dead letters (at most 1000, oldest first).
#[utoipa::path(get, path = "/v1/dlq", tag = "dead letters", params(DlqParams), responses(
    (status = 200, description = "Dead letters.", body = DeadLetterList),
    (status = 400, description = "Invalid function name or parameter.", body = ErrorBody)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    ApiQuery(params): ApiQuery<DlqParams>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let filter = match function_filter(params)? {
        Some(name) => format!("dlq.{name}.*"),
        None => "dlq.*.*".to_string(),
    };
    let letters = scan(&state, filter).await?;
    Ok(Json(DeadLetterList {
        dead_letters: letters
            .iter()
            .map(|(_, l)| numbered(&state, summary_view(l)))
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
    State(state): State<Arc<AppState>>,
    id: InvocationId,
) -> Result<Json<DeadLetterView>, ApiError> {
    let (_, letter) = find(&state, &id).await?;
    let mut view = full_view(&letter);
    view.summary = numbered(&state, view.summary);
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
    State(state): State<Arc<AppState>>,
    id: InvocationId,
) -> Result<StatusCode, ApiError> {
    let (sequence, _) = find(&state, &id).await?;
    state
        .topology
        .dlq
        .delete_message(sequence)
        .await
        .map_err(|e| ApiError::broker("cannot delete the dead letter", e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Submits a dead letter again as a new invocation linked to the original, then removes it
/// from the DLQ. Returns the new invocation id.
async fn replay_one(
    state: &AppState,
    sequence: u64,
    letter: &DeadLetter,
) -> Result<String, ApiError> {
    let record = load_record(state, &FunctionName::parse(letter.function.clone())?).await?;
    let id = uuid::Uuid::now_v7().to_string();
    let mut extra_headers: Vec<(String, String)> = letter
        .headers
        .iter()
        .filter(|(name, _)| !h::is_reserved(name) && name != h::TRACEPARENT)
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
    submit(state, job, letter.payload.clone().into()).await?;
    if let Err(error) = state.topology.dlq.delete_message(sequence).await {
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
    State(state): State<Arc<AppState>>,
    id: InvocationId,
) -> Result<Response, ApiError> {
    let (sequence, letter) = find(&state, &id).await?;
    let new_id = replay_one(&state, sequence, &letter).await?;
    Ok(accepted(&new_id, InvocationStatus::Queued, Some(&id)))
}

/// Replay every dead letter of a function as new invocations.
#[utoipa::path(post, path = "/v1/dlq/replay", tag = "dead letters", params(DlqParams), responses(
    (status = 202, description = "Replayed.", body = ReplayedAll),
    (status = 400, description = "Missing or invalid function.", body = ErrorBody),
    (status = 404, description = "Unknown function.", body = ErrorBody)))]
pub async fn replay_all(
    State(state): State<Arc<AppState>>,
    ApiQuery(params): ApiQuery<DlqParams>,
) -> Result<(StatusCode, Json<ReplayedAll>), ApiError> {
    let name = function_filter(params)?.ok_or_else(|| {
        ApiError::bad_request("missing_function", "bulk replay needs ?function=<name>")
    })?;
    load_record(&state, &name).await?;
    let letters = scan(&state, format!("dlq.{name}.*")).await?;
    let mut replayed = Vec::new();
    for (sequence, letter) in &letters {
        let new_id = replay_one(&state, *sequence, letter).await?;
        replayed.push(Replay {
            replay_of: letter.invocation_id.clone(),
            invocation_id: new_id,
        });
    }
    Ok((StatusCode::ACCEPTED, Json(ReplayedAll { replayed })))
}
