//! Cancelling invocations: `DELETE /v1/invocations/{id}` and a function's whole queued backlog.
//!
//! A cancellation first stores the id in the `squall_cancels` bucket, which every worker
//! follows (a worker drops a marked job instead of running it, and does not store the outcome
//! of one that was running), then stores the terminal `cancelled` result under the
//! invocation's one terminal message id. RESULTS keeps the first terminal result it sees, so a
//! cancellation racing a completion ends the invocation in exactly one state: whichever was
//! stored first, which is what the answer reports.

use crate::core::cancel::{cancel, decide, queued_jobs, Decision, Ended, Target, BACKLOG_PARALLEL};
use crate::core::invoke::Invoker;
use crate::core::registry::Registry;
use crate::core::view::finished_view;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::extract::{ApiQuery, FunctionName, InvocationId};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use futures::StreamExt;
use squall_api::invocations::{CancelBacklogParams, CancelledBacklog, Invocation};
use squall_api::ErrorBody;
use squall_api::ErrorCode;
use squall_broker::InvocationStatus;

fn already_ended(id: &str, status: InvocationStatus) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::AlreadyFinished,
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
    State(invoker): State<Invoker>,
    State(registry): State<Registry>,
    caller: Caller,
    id: InvocationId,
) -> Result<Json<Invocation>, ApiError> {
    let accepted = invoker
        .submitter
        .index
        .get(&id)
        .map_err(|e| ApiError::internal("invocation index", e))?;
    let function = accepted.as_ref().map(|a| a.function.as_str());
    let latest = invoker.lookup(&id, function).await?;
    // An invocation of a function the key may not reach is unknown to it.
    let reachable = latest
        .as_ref()
        .map(|o| o.meta.function.as_str())
        .or(function)
        .is_none_or(|function| caller.allows(function));
    let decision = match reachable {
        true => decide(accepted.as_ref(), latest.as_ref().map(|o| &o.meta)),
        false => Decision::Unknown,
    };
    let target = match decision {
        Decision::Unknown => {
            return Err(ApiError::not_found(
                ErrorCode::InvocationNotFound,
                format!("no invocation with id {}", &*id),
            ))
        }
        Decision::Ended(status) => return Err(already_ended(&id, status)),
        Decision::Cancel(target) => target,
    };
    match cancel(&invoker, &registry, &id, &target).await? {
        Ended::Cancelled(outcome) => {
            tracing::info!(message = "invocation cancelled", function = %target.function, invocation_id = %&*id);
            Ok(Json(finished_view(&outcome)))
        }
        Ended::Before(outcome) => Err(already_ended(&id, outcome.meta.status)),
    }
}

/// Cancels every queued invocation of a function: the jobs no worker has started yet (at most
/// 100 000 per request). Running and retrying invocations are left alone; cancel those by id.
/// It needs the admin scope: it ends work that other callers submitted.
#[utoipa::path(delete, path = "/v1/functions/{name}/invocations", tag = "invocations",
    params(("name" = String, Path, description = "Function name.", pattern = "^[A-Za-z0-9_-]{1,64}$"), CancelBacklogParams),
    responses(
        (status = 200, description = "How many were cancelled.", body = CancelledBacklog),
        (status = 400, description = "`status` is missing or not `queued`.", body = ErrorBody),
        (status = 404, description = "Unknown function.", body = ErrorBody),
        (status = 503, description = "The broker did not answer.", body = ErrorBody)))]
pub async fn cancel_backlog(
    State(invoker): State<Invoker>,
    State(registry): State<Registry>,
    name: FunctionName,
    ApiQuery(query): ApiQuery<CancelBacklogParams>,
) -> Result<Json<CancelledBacklog>, ApiError> {
    match query.status.as_deref() {
        Some("queued") => {}
        Some(other) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                format!("status must be queued (the jobs no worker has started), not {other:?}"),
            ))
        }
        None => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                "cancelling a backlog needs ?status=queued",
            ))
        }
    }
    let record = registry.load(&name).await?;
    let queued = queued_jobs(&invoker.submitter.broker, &record.name).await?;
    let version = Some(record.version.clone());
    let results = futures::stream::iter(queued)
        .map(|(id, created_at_ms)| {
            let target = Target {
                function: record.name.clone(),
                created_at_ms,
                attempts: 0,
                version: version.clone(),
            };
            let (invoker, registry) = (invoker.clone(), registry.clone());
            async move {
                // A job cancelled (or finished) earlier may still wait in the queue.
                if let Some(latest) = invoker.lookup(&id, Some(&target.function)).await? {
                    if latest.meta.status.is_terminal() {
                        return Ok(Ended::Before(latest));
                    }
                }
                Ok::<_, ApiError>(cancel(&invoker, &registry, &id, &target).await?)
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
