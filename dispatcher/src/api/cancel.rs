//! Cancelling invocations: `DELETE /v1/invocations/{id}` and a function's whole queued backlog.
//!
//! A cancellation first stores the id in the `squall_cancels` bucket, which every worker
//! follows (a worker drops a marked job instead of running it, and does not store the outcome
//! of one that was running), then stores the terminal `cancelled` result under the
//! invocation's one terminal message id. RESULTS keeps the first terminal result it sees, so a
//! cancellation racing a completion ends the invocation in exactly one state: whichever was
//! stored first, which is what the answer reports.

use crate::api::invocations::{forget, lookup_result};
use crate::core::registry::load_record;
use crate::core::view::invocation_view;
use crate::core::waiter::Outcome;
use crate::http::error::ApiError;
use crate::http::extract::{ApiQuery, FunctionName, InvocationId};
use crate::index::Accepted;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use futures::StreamExt;
use squall_api::invocations::{CancelBacklogParams, CancelledBacklog, Invocation};
use squall_api::ErrorBody;
use squall_broker::names::{jobs_subject, results_subject};
use squall_broker::time::now_ms;
use squall_broker::{headers as h, publish, InvocationStatus, ResultMeta};
use std::sync::Arc;

type Shared = State<Arc<AppState>>;

/// The body of a `cancelled` result.
const CANCELLED_BODY: &[u8] = b"cancelled by request";
/// How many cancellations of a backlog are in flight at once.
const BACKLOG_PARALLEL: usize = 64;
/// The most queued jobs one backlog request cancels; a larger backlog needs another request.
pub const MAX_BACKLOG: usize = 100_000;

/// What a cancellation request finds, from the local index and the latest result record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Neither this dispatcher nor RESULTS knows the id.
    Unknown,
    /// It already ended in this state.
    Ended(InvocationStatus),
    /// Queued, retrying or running: cancel it.
    Cancel(Target),
}

/// The invocation a cancellation ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub function: String,
    pub created_at_ms: u64,
    /// Attempts made so far (0 when none reported a result yet).
    pub attempts: u32,
    /// The version its latest result ran, when one did.
    pub version: Option<String>,
}

/// Decides what cancelling an invocation means, from what this dispatcher accepted and the
/// invocation's latest result record.
pub fn decide(accepted: Option<&Accepted>, latest: Option<&ResultMeta>) -> Decision {
    match (accepted, latest) {
        (_, Some(meta)) if meta.status.is_terminal() => Decision::Ended(meta.status),
        (_, Some(meta)) => Decision::Cancel(Target {
            function: meta.function.clone(),
            created_at_ms: meta.created_at_ms,
            attempts: meta.attempt,
            version: Some(meta.version.clone()),
        }),
        (Some(accepted), None) => Decision::Cancel(Target {
            function: accepted.function.clone(),
            created_at_ms: accepted.created_at_ms,
            attempts: 0,
            version: None,
        }),
        (None, None) => Decision::Unknown,
    }
}

/// How a cancellation ended.
enum Ended {
    /// The invocation is `cancelled` by this request (the result stored by it, or by a worker
    /// that saw the mark first, or by a concurrent cancellation).
    Cancelled(Outcome),
    /// It had already ended otherwise (a worker finished it first), or was cancelled before
    /// this request looked: the stored terminal result.
    Before(Outcome),
}

/// Cancels invocation `id` of `target`: marks it for the workers, then stores its terminal
/// `cancelled` result unless another terminal result was stored first.
async fn cancel(state: &AppState, id: &str, target: &Target) -> Result<Ended, ApiError> {
    let marker = serde_json::json!({ "function": target.function, "at_ms": now_ms() });
    state
        .topology
        .cancels
        .put(id, marker.to_string().into())
        .await
        .map_err(|e| ApiError::broker("cannot record the cancellation", e))?;
    let version = target.version.clone().unwrap_or_else(|| {
        state
            .registry
            .get(&target.function)
            .map(|record| record.version.clone())
            .unwrap_or_default()
    });
    let now = now_ms();
    let meta = ResultMeta {
        invocation_id: id.to_string(),
        function: target.function.clone(),
        version,
        status: InvocationStatus::Cancelled,
        attempt: target.attempts,
        error_kind: None,
        created_at_ms: target.created_at_ms,
        started_at_ms: now,
        finished_at_ms: now,
        duration_us: 0,
        cpu_us: 0,
        kv_ops: 0,
        kv_bytes: 0,
        logs: Vec::new(),
        worker: String::new(),
        trace_id: String::new(),
    };
    let mut headers = meta.to_headers();
    headers.insert(h::NATS_MSG_ID, meta.message_id().as_str());
    let ack = publish::publish_acked(
        &state.topology.jetstream,
        &results_subject(&target.function, id),
        headers,
        CANCELLED_BODY.into(),
        &publish::PublishPolicy::default(),
    )
    .await
    .map_err(|e| ApiError::broker("cannot record the cancelled result", e))?;
    let ended = if ack.duplicate {
        // Another terminal result was stored first; the acknowledgement names it.
        let stored = state
            .topology
            .results
            .direct_get(ack.sequence)
            .await
            .map_err(|e| ApiError::broker("cannot read the stored result", e))?;
        let meta = ResultMeta::from_headers(&stored.headers)
            .map_err(|e| ApiError::internal("result record", e))?;
        let outcome = Outcome {
            meta,
            body: stored.payload,
        };
        // A worker that saw the mark before this result was stored records `cancelled` too.
        if outcome.meta.status == InvocationStatus::Cancelled {
            Ended::Cancelled(outcome)
        } else {
            Ended::Before(outcome)
        }
    } else {
        let outcome = Outcome {
            meta,
            body: CANCELLED_BODY.into(),
        };
        // A synchronous request waiting here hears of it at once (others: from their worker).
        state.waiter.deliver(&outcome);
        Ended::Cancelled(outcome)
    };
    forget(state, id);
    Ok(ended)
}

fn already_ended(id: &str, status: InvocationStatus) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "already_finished",
        format!(
            "invocation {id} already ended as {}; only a queued, retrying or running invocation can be cancelled",
            status.as_str()
        ),
    )
    .with("status", status.as_str())
}

/// Cancels an invocation that is queued, waiting for a retry, or running. A queued or retrying
/// one never runs again; a running one is marked (a cooperative function sees it through the
/// `cancelled` host call and may stop early) and ends `cancelled` whatever it returns.
#[utoipa::path(delete, path = "/v1/invocations/{id}", tag = "invocations",
    params(("id" = String, Path, description = "Invocation id (UUIDv7).", pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The invocation, now `cancelled`.", body = Invocation),
        (status = 400, description = "Not a UUID.", body = ErrorBody),
        (status = 404, description = "Unknown invocation.", body = ErrorBody),
        (status = 409, description = "It already ended; `status` says how.", body = ErrorBody),
        (status = 503, description = "The broker did not answer.", body = ErrorBody)))]
pub async fn cancel_invocation(
    State(state): Shared,
    id: InvocationId,
) -> Result<Json<Invocation>, ApiError> {
    let accepted = state
        .index
        .get(&id)
        .map_err(|e| ApiError::internal("invocation index", e))?;
    let function = accepted.as_ref().map(|a| a.function.as_str());
    let latest = lookup_result(&state, &id, function).await?;
    let target = match decide(accepted.as_ref(), latest.as_ref().map(|o| &o.meta)) {
        Decision::Unknown => {
            return Err(ApiError::not_found(
                "invocation_not_found",
                format!("no invocation with id {}", &*id),
            ))
        }
        Decision::Ended(status) => return Err(already_ended(&id, status)),
        Decision::Cancel(target) => target,
    };
    match cancel(&state, &id, &target).await? {
        Ended::Cancelled(outcome) => {
            tracing::info!(message = "invocation cancelled", function = %target.function, invocation_id = %&*id);
            Ok(Json(invocation_view(&outcome.meta, &outcome.body)))
        }
        Ended::Before(outcome) => Err(already_ended(&id, outcome.meta.status)),
    }
}

/// Cancels every queued invocation of a function: the jobs no worker has started yet (at most
/// 100 000 per request). Running and retrying invocations are left alone; cancel those by id.
#[utoipa::path(delete, path = "/v1/functions/{name}/invocations", tag = "invocations",
    params(("name" = String, Path, description = "Function name.", pattern = "^[A-Za-z0-9_-]{1,64}$"), CancelBacklogParams),
    responses(
        (status = 200, description = "How many were cancelled.", body = CancelledBacklog),
        (status = 400, description = "`status` is missing or not `queued`.", body = ErrorBody),
        (status = 404, description = "Unknown function.", body = ErrorBody),
        (status = 503, description = "The broker did not answer.", body = ErrorBody)))]
pub async fn cancel_backlog(
    State(state): Shared,
    name: FunctionName,
    ApiQuery(query): ApiQuery<CancelBacklogParams>,
) -> Result<Json<CancelledBacklog>, ApiError> {
    match query.status.as_deref() {
        Some("queued") => {}
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("status must be queued (the jobs no worker has started), not {other:?}"),
            ))
        }
        None => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "cancelling a backlog needs ?status=queued",
            ))
        }
    }
    let record = load_record(&state, &name).await?;
    let queued = queued_jobs(&state, &record.name).await?;
    let version = Some(record.version.clone());
    let results = futures::stream::iter(queued)
        .map(|(id, created_at_ms)| {
            let target = Target {
                function: record.name.clone(),
                created_at_ms,
                attempts: 0,
                version: version.clone(),
            };
            let state = state.clone();
            async move {
                // A job cancelled (or finished) earlier may still wait in the queue.
                if let Some(latest) = lookup_result(&state, &id, Some(&target.function)).await? {
                    if latest.meta.status.is_terminal() {
                        return Ok(Ended::Before(latest));
                    }
                }
                cancel(&state, &id, &target).await
            }
        })
        .buffer_unordered(BACKLOG_PARALLEL)
        .collect::<Vec<_>>()
        .await;
    let (mut cancelled, mut already_finished) = (0, 0);
    for result in results {
        match result? {
            Ended::Cancelled(_) => cancelled += 1,
            Ended::Before(_) => already_finished += 1,
        }
    }
    tracing::info!(message = "queued invocations cancelled", function = %record.name, cancelled, already_finished);
    Ok(Json(CancelledBacklog {
        function: record.name,
        cancelled,
        already_finished,
    }))
}

/// The ids and creation times of `function`'s jobs that its consumer has not delivered yet,
/// read one by one with direct gets (JOBS is a work queue: no second consumer may read it).
async fn queued_jobs(state: &AppState, function: &str) -> Result<Vec<(String, u64)>, ApiError> {
    use async_nats::jetstream::stream::DirectGetErrorKind;
    let jobs = &state.topology.jobs;
    // Jobs after the last one the consumer delivered were never started.
    let delivered = match jobs
        .consumer_info(squall_broker::names::consumer_name(function))
        .await
    {
        Ok(info) => info.delivered.stream_sequence,
        Err(_) => 0,
    };
    let subject = jobs_subject(function);
    let mut next = delivered + 1;
    let mut queued = Vec::new();
    while queued.len() < MAX_BACKLOG {
        let message = match jobs.direct_get_next_for_subject(&subject, Some(next)).await {
            Ok(message) => message,
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => break,
            Err(e) => {
                return Err(ApiError::broker(
                    "cannot read the function's queued jobs",
                    e,
                ))
            }
        };
        next = message.sequence + 1;
        let published_ms = (message.time.unix_timestamp_nanos() / 1_000_000) as u64;
        let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_string());
        let id = squall_broker::record::job_invocation_id(header).unwrap_or_else(|| {
            squall_broker::record::derived_invocation_id(published_ms, message.sequence)
        });
        let created = header(h::CREATED_AT)
            .and_then(|v| v.parse().ok())
            .unwrap_or(published_ms);
        queued.push((id, created));
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(status: InvocationStatus) -> ResultMeta {
        ResultMeta {
            invocation_id: "i".into(),
            function: "f".into(),
            version: "sha256:ab".into(),
            status,
            attempt: 2,
            error_kind: None,
            created_at_ms: 7,
            started_at_ms: 8,
            finished_at_ms: 9,
            duration_us: 1,
            cpu_us: 1,
            kv_ops: 0,
            kv_bytes: 0,
            logs: Vec::new(),
            worker: "w".into(),
            trace_id: String::new(),
        }
    }

    #[test]
    fn an_ended_invocation_is_not_cancelled_and_says_how_it_ended() {
        for status in InvocationStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
        {
            assert_eq!(decide(None, Some(&result(status))), Decision::Ended(status));
        }
    }

    #[test]
    fn a_queued_or_retrying_invocation_is_cancelled_with_what_is_known_of_it() {
        let accepted = Accepted {
            function: "f".into(),
            created_at_ms: 5,
        };
        assert_eq!(
            decide(Some(&accepted), None),
            Decision::Cancel(Target {
                function: "f".into(),
                created_at_ms: 5,
                attempts: 0,
                version: None,
            })
        );
        assert_eq!(
            decide(None, Some(&result(InvocationStatus::Retrying))),
            Decision::Cancel(Target {
                function: "f".into(),
                created_at_ms: 7,
                attempts: 2,
                version: Some("sha256:ab".into()),
            })
        );
        assert_eq!(decide(None, None), Decision::Unknown);
    }
}
